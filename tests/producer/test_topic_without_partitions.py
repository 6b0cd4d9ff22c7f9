"""A topic whose metadata lists no partitions (and no error) does not spin the loop.

Found by review: ``_drain`` could not place the records and started a metadata
fetch on every cycle; ``KafkaClient.fetch_metadata`` answered it from its cache
without asking a broker, so the fetch ended at once and the next began: the event
loop spun, and the records were held until ``aclose()``.  Now the records wait as
for an unreachable broker (backing off from retry_backoff to 1 s, each try asking
a broker again) and are reported once their delivery_timeout has passed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.producer import DeliveryTimeoutError
from kafka_asgi.protocol.messages import MetadataResponse
from kafka_asgi.protocol.messages.metadata import (
    MetadataResponseBroker,
    MetadataResponseTopic,
)
from tests.support.fake_client import FakeClient
from tests.support.fake_peer import Peer, all_versions, fake_broker
from tests.support.producers import Reports, make
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.anyio

DELIVERY_TIMEOUT = 1.0
# What a report may come after delivery_timeout: a flush_time and the scheduler.
LATE = 0.5
_METADATA = 3
_API_VERSIONS = 18


async def test_records_for_a_topic_without_partitions_are_reported_and_later_ones_go(
    anyio_backend: str,
) -> None:
    fake = FakeClient()
    fake.add_topic("z", 0)
    reports = Reports()
    producer = make(
        fake,
        reports,
        delivery_timeout=DELIVERY_TIMEOUT,
        flush_time=0.05,
        close_timeout=0.5,
        enable_idempotence=False,
    )
    async with producer:
        started = anyio.current_time()
        producer.send_nowait("z", b"a")
        assert await eventually(lambda: bool(reports.errors), DELIVERY_TIMEOUT + 2.0, interval=0.01)
        waited = anyio.current_time() - started
        ((_, _, records, error, _),) = reports.errors
        assert isinstance(error, DeliveryTimeoutError), error
        assert "lists no partitions" in str(error)
        assert [r[1] for r in records] == [b"a"]
        assert DELIVERY_TIMEOUT <= waited < DELIVERY_TIMEOUT + scaled(LATE)
        # Backed off (retry_backoff 0.01 s doubling to 1 s): a handful of fetches,
        # not one per cycle.
        assert 2 <= fake.fetches < 20, fake.fetches

        # Once the topic has partitions, its records go.
        fake.add_topic("z", 1)
        producer.send_nowait("z", b"b")
        with anyio.fail_after(scaled(3.0)):
            await producer.flush()
    assert [r.value for r in fake.records("z", 0)] == [b"b"]
    assert len(reports.errors) == 1


async def test_idle_topic_without_partitions_is_not_polled(anyio_backend: str) -> None:
    # Once its records are reported, nothing asks for the topic again until new
    # records come.
    fake = FakeClient()
    fake.add_topic("z", 0)
    reports = Reports()
    async with make(
        fake, reports, delivery_timeout=0.3, flush_time=0.02, close_timeout=0.5
    ) as producer:
        producer.send_nowait("z", b"a")
        assert await eventually(lambda: bool(reports.errors), 3.0, interval=0.01)
        await anyio.sleep(0.1)
        fetches = fake.fetches
        await anyio.sleep(1.5)
        assert fake.fetches == fetches


def _peer(requests: list[float]) -> Callable[[Peer], Awaitable[None]]:
    """Answers ApiVersions, and Metadata with topic "z" listed without partitions."""

    async def script(peer: Peer) -> None:
        port = peer.stream.extra(anyio.abc.SocketAttribute.local_port)
        while True:
            api_key, version, correlation_id, _ = await peer.read_request_body()
            if api_key == _METADATA:
                requests.append(time.monotonic())
                response = MetadataResponse(
                    brokers=[MetadataResponseBroker(node_id=0, host="127.0.0.1", port=port)],
                    cluster_id="fake",
                    controller_id=0,
                    topics=[MetadataResponseTopic(name="z", partitions=[])],
                )
                await peer.respond(correlation_id, response, version)
            elif api_key == _API_VERSIONS:
                await peer.respond(correlation_id, all_versions(), version)
            else:
                await anyio.sleep_forever()

    return script


async def test_kafka_client_asks_a_broker_again_for_a_topic_without_partitions(
    anyio_backend: str,
) -> None:
    # The real KafkaClient over a scripted peer: each try is a Metadata request (the
    # cache does not answer for a topic without partitions), with backoff between
    # them, and the record is reported at its delivery_timeout.
    requests: list[float] = []
    reports = Reports()
    async with fake_broker(_peer(requests)) as port:
        async with Producer(
            f"127.0.0.1:{port}",
            delivery_timeout=DELIVERY_TIMEOUT,
            retry_backoff=0.05,
            flush_time=0.02,
            close_timeout=1.0,
            enable_idempotence=False,
            error_handle=reports.error_handle,
        ) as producer:
            producer.send_nowait("z", b"a")
            started = time.monotonic()
            assert await eventually(lambda: bool(reports.errors), DELIVERY_TIMEOUT + 3.0)
            assert time.monotonic() - started < DELIVERY_TIMEOUT + scaled(LATE) + 0.5
            ((_, _, records, error, _),) = reports.errors
            assert isinstance(error, DeliveryTimeoutError), error
            assert "lists no partitions" in str(error)
            assert [r[1] for r in records] == [b"a"]
            asked = [t for t in requests if t >= started]
            # 0.05 s doubling to 1 s over 1 s: about five tries, each one asked of the
            # broker; far from one per event-loop cycle.
            assert 3 <= len(asked) <= 30, len(asked)
