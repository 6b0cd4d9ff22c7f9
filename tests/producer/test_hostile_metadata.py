"""Metadata from the wire is input: hostile Metadata responses (issue 11, point 5).

A scripted peer (tests/support/fake_peer.py) answers ApiVersions like Kafka and
Metadata with what no broker sends: a broker port outside 1..65535, a partition
index outside the topic's partition count.  The client rejects such metadata
where it decodes it (kafka_asgi/cluster/metadata.py) with a KafkaError (a broker
with no usable address is left out, and a request for it fails so); the producer
reports the records promptly, logs no traceback, and send() does not hang.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.consumer import BasicConsumer
from kafka_asgi.protocol.errors import KafkaError
from kafka_asgi.protocol.messages import MetadataResponse
from kafka_asgi.protocol.messages.metadata import (
    MetadataResponseBroker,
    MetadataResponsePartition,
    MetadataResponseTopic,
)
from tests.support.fake_peer import Peer, all_versions, fake_broker
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.anyio

TOPIC = "events"
_METADATA = 3
_API_VERSIONS = 18
# The producer must answer long before its delivery_timeout (the hang of the defect).
DELIVERY_TIMEOUT = 60.0
PROMPT = 10.0


def _partition(index: int) -> MetadataResponsePartition:
    return MetadataResponsePartition(
        partition_index=index, leader_id=0, replica_nodes=[0], isr_nodes=[0]
    )


def _peer(metadata: Callable[[int], MetadataResponse]) -> Callable[[Peer], Awaitable[None]]:
    """Answers ApiVersions, and every Metadata request with ``metadata(own_port)``;
    nothing else."""

    async def script(peer: Peer) -> None:
        port = peer.stream.extra(anyio.abc.SocketAttribute.local_port)
        while True:
            api_key, version, correlation_id, _ = await peer.read_request_body()
            if api_key == _METADATA:
                await peer.respond(correlation_id, metadata(port), version)
            elif api_key == _API_VERSIONS:
                await peer.respond(correlation_id, all_versions(), version)
            else:  # Produce, Fetch...: never answered (a client that needs one hangs)
                await anyio.sleep_forever()

    return script


def bad_port(port: int) -> MetadataResponse:
    return MetadataResponse(
        brokers=[MetadataResponseBroker(node_id=0, host="127.0.0.1", port=70000)],
        cluster_id="fake",
        controller_id=0,
        topics=[MetadataResponseTopic(name=TOPIC, partitions=[_partition(0)])],
    )


def bad_partition(port: int) -> MetadataResponse:
    # One partition, numbered 5: a partitioner picking among "1 partition" gets 0,
    # which the topic does not have.
    return MetadataResponse(
        brokers=[MetadataResponseBroker(node_id=0, host="127.0.0.1", port=port)],
        cluster_id="fake",
        controller_id=0,
        topics=[MetadataResponseTopic(name=TOPIC, partitions=[_partition(5)])],
    )


def duplicate_partition(port: int) -> MetadataResponse:
    return MetadataResponse(
        brokers=[MetadataResponseBroker(node_id=0, host="127.0.0.1", port=port)],
        cluster_id="fake",
        controller_id=0,
        topics=[MetadataResponseTopic(name=TOPIC, partitions=[_partition(0), _partition(0)])],
    )


CASES = {
    "port-70000": (bad_port, "port"),
    "partition-outside-count": (bad_partition, "partition 5"),
    "partition-twice": (duplicate_partition, "partition 0 twice"),
}


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("kafka_asgi") and r.exc_info
    ]


@pytest.mark.parametrize("case", list(CASES))
async def test_producer_reports_hostile_metadata_promptly(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    metadata, words = CASES[case]
    caplog.set_level(logging.DEBUG, logger="kafka_asgi")
    async with fake_broker(_peer(metadata)) as port:
        async with Producer(
            f"127.0.0.1:{port}",
            delivery_timeout=DELIVERY_TIMEOUT,
            retry_backoff=0.05,
            close_timeout=1.0,
        ) as producer:
            started = time.monotonic()
            with anyio.fail_after(scaled(PROMPT)):
                with pytest.raises(KafkaError) as info:
                    await producer.send(TOPIC, b"v")
            assert time.monotonic() - started < scaled(PROMPT)
            assert words in str(info.value)
            assert not isinstance(info.value, (IndexError, KeyError))
            assert producer.stats().failed == 1
            # The flusher keeps working (the same bad metadata, the same report).
            producer.send_nowait(TOPIC, b"w")
            assert await eventually(lambda: producer.stats().failed == 2, PROMPT)
    # No crash logged (the unhandled second record is reported by one ERROR line).
    assert _tracebacks(caplog) == []


@pytest.mark.parametrize("case", list(CASES))
async def test_consumer_raises_a_kafka_error_for_hostile_metadata(
    anyio_backend: str, case: str
) -> None:
    metadata, words = CASES[case]
    async with fake_broker(_peer(metadata)) as port:
        async with BasicConsumer(f"127.0.0.1:{port}", retry_backoff=0.05) as consumer:
            with anyio.fail_after(scaled(PROMPT)):
                with pytest.raises(KafkaError) as info:
                    await consumer.fetch(TOPIC, 0, 0, max_wait=0.1)
            assert words in str(info.value)
