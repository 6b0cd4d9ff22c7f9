"""required_acks=1 without idempotence: records in flight when the broker dies are
retried within max_retry (issue 11, point 5, sixth defect).

A scripted peer (tests/support/fake_peer.py) reads the first Produce request and
drops the connection without answering, as a broker that dies with the request
in flight; the next connection answers.  The producer retries (at-least-once, as
the Java client does with retries), instead of reporting ConnectionClosedError.
The batch may then be stored twice: idempotence removes such duplicates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.network.errors import ConnectionClosedError
from kafka_asgi.protocol.messages.produce import (
    PartitionProduceResponse,
    ProduceResponse,
    TopicProduceResponse,
)
from tests.support.fake_peer import Peer, all_versions, fake_broker, one_broker_metadata
from tests.support.timing import scaled

pytestmark = pytest.mark.anyio

TOPIC = "events"
_PRODUCE = 0
_METADATA = 3


def _dies_once(produced: list[int]) -> Callable[[Peer], Awaitable[None]]:
    """Answers like a one-broker Kafka, but drops the connection of the first Produce
    request without answering it (``produced`` counts the Produce requests read)."""

    async def script(peer: Peer) -> None:
        port = peer.stream.extra(anyio.abc.SocketAttribute.local_port)
        while True:
            api_key, version, correlation_id, _ = await peer.read_request_body()
            if api_key == _PRODUCE:
                produced.append(version)
                if len(produced) == 1:
                    await peer.stream.aclose()  # the broker died, the request in flight
                    return
                response = ProduceResponse(
                    responses=[
                        TopicProduceResponse(
                            name=TOPIC,
                            partition_responses=[
                                PartitionProduceResponse(index=0, base_offset=len(produced) - 1)
                            ],
                        )
                    ]
                )
                await peer.respond(correlation_id, response, version)
            elif api_key == _METADATA:
                metadata = one_broker_metadata(TOPIC, port)
                await peer.respond(correlation_id, metadata, version)
            else:
                await peer.respond(correlation_id, all_versions(), version)

    return script


async def test_in_flight_records_are_retried_when_the_broker_dies(anyio_backend: str) -> None:
    produced: list[int] = []
    async with fake_broker(_dies_once(produced)) as port:
        async with Producer(
            f"127.0.0.1:{port}", required_acks=1, max_retry=3, retry_backoff=0.05
        ) as producer:
            with anyio.fail_after(scaled(20)):
                metadata = await producer.send(TOPIC, b"v")
            stats = producer.stats()
    assert len(produced) == 2  # sent again after the connection died
    assert metadata.offset == 1
    assert (stats.delivered, stats.failed) == (1, 0)
    assert stats.retried == 1
    assert isinstance(stats.last_error, ConnectionClosedError)


async def test_max_retry_zero_still_reports_them(anyio_backend: str) -> None:
    produced: list[int] = []
    async with fake_broker(_dies_once(produced)) as port:
        async with Producer(
            f"127.0.0.1:{port}", required_acks=1, max_retry=0, retry_backoff=0.05
        ) as producer:
            with anyio.fail_after(scaled(20)):
                with pytest.raises(ConnectionClosedError):
                    await producer.send(TOPIC, b"v")
    assert len(produced) == 1
