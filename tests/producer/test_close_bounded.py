"""aclose() returns within close_timeout, whatever the broker does.

The broker here is a scripted TCP peer (tests/network/fake_peer.py): it answers
ApiVersions and Metadata like Kafka, then stops reading, or stops mid-stream. A
real broker never stops reading while keeping its connections open; a peer that
does is the only way to make our writes block.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.network.connection import BrokerConnection
from kafka_asgi.network.errors import ConnectionClosedError
from kafka_asgi.producer import ProducerClosedError
from kafka_asgi.protocol.messages import MetadataResponse, ProduceRequest
from kafka_asgi.protocol.messages.produce import (
    PartitionProduceData,
    PartitionProduceResponse,
    ProduceResponse,
    TopicProduceData,
    TopicProduceResponse,
)
from kafka_asgi.protocol.records import encode_batch
from tests.support.fake_peer import Peer, all_versions, fake_broker, one_broker_metadata
from tests.support.timing import scaled

pytestmark = pytest.mark.anyio

TOPIC = "events"
CLOSE_TIMEOUT = 1.0
SLACK = scaled(0.5)
# Far longer than close_timeout: a close that waits for a request to time out fails.
REQUEST_TIMEOUT = 20.0
PARTITIONS = 8
_METADATA = 3
_PRODUCE = 0


def _metadata(port: int) -> MetadataResponse:
    # Several partitions: several requests in flight at once.
    return one_broker_metadata(TOPIC, port, PARTITIONS)


def _small_receive_buffer(peer: Peer) -> None:
    # A tiny window: once it is full the client's writes block (a broker that
    # accepted the connection and stopped reading).
    raw = peer.stream.extra(anyio.abc.SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def _broker(port_box: list[int], produce_answers: int) -> Callable[[Peer], Awaitable[None]]:
    """A peer answering ApiVersions and Metadata, ``produce_answers`` Produce
    requests (acknowledged), then reading nothing more, ever."""
    answered = [0]

    async def script(peer: Peer) -> None:
        if not produce_answers:
            _small_receive_buffer(peer)
        while True:
            api_key, version, correlation_id, _ = await peer.read_request_body()
            if api_key == _PRODUCE:
                if answered[0] >= produce_answers:
                    await anyio.sleep_forever()
                answered[0] += 1
                await peer.respond(
                    correlation_id,
                    ProduceResponse(
                        responses=[
                            TopicProduceResponse(
                                name=TOPIC,
                                partition_responses=[
                                    PartitionProduceResponse(index=i, base_offset=0)
                                    for i in range(PARTITIONS)
                                ],
                            )
                        ]
                    ),
                    version,
                )
            elif api_key == _METADATA:
                await peer.respond(correlation_id, _metadata(port_box[0]), version)
            else:
                await peer.respond(correlation_id, all_versions(), version)

    return script


class Outcomes:
    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.error_handle_records = 0

    def on_delivery(self, error: Any, metadata: Any, *args: Any) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1

    def error_handle(self, topic: str, partition: int, records: list[Any], *args: Any) -> None:
        self.error_handle_records += len(records)


async def _produce_then_close(bootstrap: str, count: int, size: int) -> tuple[float, Outcomes]:
    outcomes = Outcomes()
    producer = Producer(
        bootstrap,
        close_timeout=CLOSE_TIMEOUT,
        request_timeout=REQUEST_TIMEOUT,
        max_buffering=count,
        on_delivery=outcomes.on_delivery,
        error_handle=outcomes.error_handle,
    )
    with anyio.fail_after(CLOSE_TIMEOUT + REQUEST_TIMEOUT):
        await producer.start()
        value = b"x" * size
        for _ in range(count):
            producer.send_nowait(TOPIC, value)
        # Let the flusher start its requests (and fill the socket buffers).
        await anyio.sleep(0.5)
        started = time.monotonic()
        await producer.aclose()
        elapsed = time.monotonic() - started
    assert outcomes.delivered + outcomes.failed == count
    assert producer.stats().delivered + producer.stats().failed == count
    assert outcomes.delivered + outcomes.error_handle_records == count
    return elapsed, outcomes


@pytest.mark.parametrize("answers", [0, 2])
async def test_close_is_bounded_when_the_broker_stops_reading(
    anyio_backend: str, answers: int
) -> None:
    port_box: list[int] = []
    async with fake_broker(_broker(port_box, answers)) as port:
        port_box.append(port)
        # 40 MB: far more than the socket buffers hold, in 1 MB requests.
        elapsed, outcomes = await _produce_then_close(f"127.0.0.1:{port}", 40_000, 1000)
    assert elapsed < CLOSE_TIMEOUT + SLACK
    assert outcomes.failed > 0
    if answers:
        assert outcomes.delivered > 0


async def test_close_is_bounded_when_the_broker_is_down(anyio_backend: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    elapsed, outcomes = await _produce_then_close(f"127.0.0.1:{port}", 1000, 100)
    assert elapsed < CLOSE_TIMEOUT + SLACK
    assert outcomes.failed == 1000


async def test_aclose_timeout_bounds_the_close_in_place_of_close_timeout(
    anyio_backend: str,
) -> None:
    """aclose(timeout=...): a caller with a deadline of its own (a lifespan's
    shutdown_timeout) closes within it, not within close_timeout; what is left is
    reported as at any close."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    errors: list[BaseException] = []
    producer = Producer(
        f"127.0.0.1:{port}",
        close_timeout=20.0,
        on_delivery=lambda error, *rest: errors.append(error),
    )
    with anyio.fail_after(10):
        await producer.start()
        for _ in range(10):
            producer.send_nowait(TOPIC, b"x")
        with pytest.raises(ValueError, match="timeout"):
            await producer.aclose(timeout=-1.0)
        started = time.monotonic()
        await producer.aclose(timeout=0.3)
        elapsed = time.monotonic() - started
    assert elapsed < 0.3 + SLACK
    assert len(errors) == 10
    assert all(isinstance(e, ProducerClosedError) for e in errors)
    assert "aclose(timeout=0.3)" in str(errors[0])


async def test_connection_and_client_close_while_a_write_blocks(anyio_backend: str) -> None:
    port_box: list[int] = []
    async with fake_broker(_broker(port_box, 0)) as port:
        port_box.append(port)
        batch = encode_batch([(None, b"y" * 900_000, None, 0)])
        request = ProduceRequest(
            acks=1,
            timeout_ms=1000,
            topic_data=[
                TopicProduceData(
                    name=TOPIC, partition_data=[PartitionProduceData(index=0, records=batch)]
                )
            ],
        )
        failures: list[BaseException] = []

        async def produce(send: Callable[[], Awaitable[Any]]) -> None:
            try:
                await send()
            except ConnectionClosedError as exc:
                failures.append(exc)

        with anyio.fail_after(REQUEST_TIMEOUT):
            async with BrokerConnection("127.0.0.1", port, request_timeout=REQUEST_TIMEOUT) as conn:
                async with anyio.create_task_group() as tg:
                    for _ in range(8):
                        tg.start_soon(produce, lambda: conn.request(request, 3))
                    await anyio.sleep(0.5)
                    assert conn.in_flight == 8
                    started = time.monotonic()
                    await conn.aclose()
                # Every request (some of them in a blocked write) has ended.
                assert time.monotonic() - started < SLACK
            assert len(failures) == 8

            failures.clear()
            async with anyio.create_task_group() as tg:
                async with KafkaClient(
                    f"127.0.0.1:{port}", request_timeout=REQUEST_TIMEOUT
                ) as client:
                    await client.refresh()
                    for _ in range(8):
                        tg.start_soon(produce, lambda: client.send(0, request))
                    await anyio.sleep(0.5)
                    started = time.monotonic()
            assert time.monotonic() - started < SLACK
            assert len(failures) == 8
