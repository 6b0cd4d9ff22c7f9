"""A client quota on the real broker (KIP-219): the broker answers a producer over
its quota with throttle_time_ms, then reads nothing more from it for that long; the
producer sends that broker nothing meanwhile (the logic alone, against the in-memory
client: tests/producer/test_throttle.py)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.to_thread
import pytest
from prometheus_client import CollectorRegistry

from kafka_asgi import Producer
from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.integrations.prometheus import register
from kafka_asgi.producer.hooks import ProduceRequestInfo, ProducerHooks
from tests.support.quotas import quota_client
from tests.support.readers import read_back

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

# A broker of the module's own, measuring rates over 2 windows of 1 s (Kafka's
# default, 11 windows, averages a burst over 10 s: 500 KB would stay under 100 KB/s).
OWN_BROKER_PROPERTIES = {"quota.window.num": "2", "quota.window.size.seconds": "1"}

RATE = 100_000  # bytes/s: the quota
RECORDS = 500
VALUE = 1000  # bytes: 500 KB in all, about 5 s at the quota
BATCH = 16 * 1024  # some thirty requests, one at a time (acks=1)
# The pause starts when the producer reads the response, a little before the hook
# is told; a request started within this of the pause's end counts as after it.
SLACK = 0.05
THROTTLE_METRIC = "kafka_asgi_producer_throttle_seconds_total"


class Requests(ProducerHooks):
    def __init__(self) -> None:
        self.started: list[tuple[float, int]] = []  # (time, node)
        self.finished: list[tuple[float, int, int]] = []  # (time, node, throttle_time_ms)

    def request_started(self, info: ProduceRequestInfo) -> Any:
        self.started.append((time.monotonic(), info.node))

    def request_finished(
        self, token: Any, info: ProduceRequestInfo, error: BaseException | None
    ) -> None:
        assert error is None, error
        self.finished.append((time.monotonic(), info.node, info.throttle_time_ms))


async def test_a_quota_holds_the_next_request_for_the_throttle_time(
    own_broker: Any, anyio_backend: str
) -> None:
    bootstrap = own_broker.addresses().plaintext
    client_id, topic = await quota_client(own_broker, "quota", producer_byte_rate=RATE)
    hooks = Requests()
    registry = CollectorRegistry()
    sent = [b"%06d" % i + b"x" * (VALUE - 6) for i in range(RECORDS)]
    async with Producer(
        bootstrap, client_id=client_id, batch_size=BATCH, flush_time=0.01
    ) as producer:
        producer.add_hooks(hooks)
        register(producer, registry=registry)
        for value in sent:
            producer.send_nowait(topic, value)
        await producer.flush(timeout=120)
        stats = producer.stats()
    throttled = [(at, node, ms) for at, node, ms in hooks.finished if ms > 0]
    print(
        f"\n[{anyio_backend}] {len(hooks.started)} requests, {len(throttled)} throttled,"
        f" {stats.throttle_time_ms} ms asked in all"
    )
    assert throttled, "the quota never throttled the producer"
    assert stats.throttle_time_ms == sum(ms for _, _, ms in throttled)
    assert registry.get_sample_value(THROTTLE_METRIC) == stats.throttle_time_ms / 1000
    # Nothing went to the broker during a pause it asked for (before: the next
    # request went at once, to wait in a socket the broker did not read).
    for at, node, ms in throttled:
        early = [s - at for s, n in hooks.started if n == node and at < s < at + ms / 1000 - SLACK]
        assert not early, (ms, early)
    assert stats.delivered == RECORDS and stats.failed == 0
    read = await anyio.to_thread.run_sync(read_back, bootstrap, topic, 1, RECORDS)
    assert [v for _, _, v, _ in read[0]] == sent


async def test_a_request_quota_throttling_metadata_is_counted(
    own_broker: Any, anyio_backend: str
) -> None:
    """A request quota (request_percentage: broker time per window) throttles every
    kind of request; here only Metadata is sent. What the broker asks for shows in
    stats().throttle_time_ms and in Prometheus's counter, though no Produce request
    (no hook) ever saw it (before, the counter was fed by the Produce hook only)."""
    bootstrap = own_broker.addresses().plaintext
    client_id, topic = await quota_client(own_broker, "request-quota", request_percentage=0.01)
    hooks = Requests()
    registry = CollectorRegistry()
    async with (
        KafkaClient(bootstrap, client_id=client_id) as client,
        Producer(client=client) as producer,
    ):
        assert producer.client is client
        producer.add_hooks(hooks)
        register(producer, registry=registry)
        requests = 0
        with anyio.fail_after(60):
            while producer.stats().throttle_time_ms == 0:
                await client.refresh(topics=[topic])
                requests += 1
        stats = producer.stats()
        counted = registry.get_sample_value(THROTTLE_METRIC)
    print(
        f"\n[{anyio_backend}] throttled after {requests} metadata requests:"
        f" {stats.throttle_time_ms} ms asked"
    )
    assert hooks.started == []  # no Produce request
    assert stats.throttle_time_ms > 0
    assert counted == stats.throttle_time_ms / 1000
