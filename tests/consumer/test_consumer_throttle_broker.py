"""A consumer quota on the real broker (KIP-219): the broker answers a consumer over
its quota with throttle_time_ms (and no records), then reads nothing more from it for
that long; BasicConsumer sends that broker nothing meanwhile, as the Java client does
(the producer's side: tests/producer/test_throttle_broker.py)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.to_thread
import pytest

from kafka_asgi import Producer
from kafka_asgi.consumer import BasicConsumer
from kafka_asgi.network.connection import BrokerConnection
from kafka_asgi.protocol.errors import KafkaError
from kafka_asgi.protocol.messages.fetch import FetchRequest
from kafka_asgi.protocol.messages.list_offsets import ListOffsetsRequest
from tests.support.quotas import quota_client

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

# A broker of the module's own, measuring rates over 2 windows of 1 s (Kafka's
# default, 11 windows, averages a burst over 10 s).
OWN_BROKER_PROPERTIES = {"quota.window.num": "2", "quota.window.size.seconds": "1"}

RATE = 100_000  # bytes/s: the quota
RECORDS = 500
VALUE = 1000  # bytes: 500 KB in all, about 5 s at the quota
FETCH_BYTES = 32 * 1024  # some fifteen fetches
# Batches this small: a fetch returns at least one whole batch (KIP-74), and one
# larger than the quota allows over its windows (200 KB) is refused for ever.
BATCH = 16 * 1024
# The pause starts when the consumer reads the response, a little before the wrapper
# below sees it return; a request started within this of the pause's end counts as
# after it.
SLACK = 0.05
# The consumer's own requests, whose throttle times are summed below (a consumer
# quota throttles only these; the client holds back every request to the broker).
OWN = (FetchRequest.API_KEY, ListOffsetsRequest.API_KEY)


class Recorder:
    """Wraps BrokerConnection.request, where a request is written (after any pause
    the client waits out): when each request started, and what each answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started: list[tuple[float, int | None, int]] = []  # (time, node, api key)
        # (time, node, throttle ms) of the consumer's own requests
        self.answered: list[tuple[float, int | None, int]] = []
        request = BrokerConnection.request

        async def recorded(conn: BrokerConnection, message: Any, *args: Any, **kwargs: Any) -> Any:
            api_key = message.API_KEY
            self.started.append((time.monotonic(), conn.node_id, api_key))
            response = await request(conn, message, *args, **kwargs)
            if api_key in OWN:
                self.answered.append((time.monotonic(), conn.node_id, response.throttle_time_ms))
            return response

        monkeypatch.setattr(BrokerConnection, "request", recorded)


async def _produce(bootstrap: str, topic: str, values: list[bytes], batch_size: int) -> None:
    async with Producer(bootstrap, required_acks=-1, batch_size=batch_size) as producer:
        for value in values:  # (another client id: not throttled)
            producer.send_nowait(topic, value)
        await producer.flush(timeout=60)
        assert producer.stats().delivered == len(values)


async def test_a_quota_holds_the_next_fetch_for_the_throttle_time(
    own_broker: Any, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = own_broker.addresses().plaintext
    client_id, topic = await quota_client(own_broker, "consumer-quota", consumer_byte_rate=RATE)
    sent = [b"%06d" % i + b"x" * (VALUE - 6) for i in range(RECORDS)]
    await _produce(bootstrap, topic, sent, BATCH)

    async with BasicConsumer(bootstrap, client_id=client_id) as consumer:
        recorder = Recorder(monkeypatch)
        with anyio.fail_after(120):
            read = [
                r.value
                async for r in consumer.follow(
                    topic, 0, stop_at_end=True, max_bytes=FETCH_BYTES, max_wait=0.1
                )
            ]
        asked = consumer.throttle_time_ms

    throttled = [(at, node, ms) for at, node, ms in recorder.answered if ms > 0]
    fetches = [(s, n) for s, n, key in recorder.started if key == FetchRequest.API_KEY]
    print(
        f"\n[{anyio_backend}] {len(fetches)} fetches, {len(throttled)} throttled,"
        f" {asked} ms asked in all"
    )
    assert throttled, "the quota never throttled the consumer"
    # Nothing went to the broker during a pause it asked for, a metadata request no
    # more than a fetch (before: the next fetch went at once, to wait in a socket the
    # broker did not read).
    for at, node, ms in throttled:
        early = [
            (s - at, key)
            for s, n, key in recorder.started
            if n == node and at < s < at + ms / 1000 - SLACK
        ]
        assert not early, (ms, early)
    assert asked == sum(ms for _, _, ms in throttled)
    assert read == sent  # every record, once, in order


async def test_a_fetch_the_quota_never_lets_through_gives_up_after_request_timeout(
    own_broker: Any, anyio_backend: str
) -> None:
    """One batch larger than the quota allows over its windows: the broker answers
    every fetch of it throttled, with no partitions. The fetch raises, naming the
    quota, after request_timeout (before: ProtocolError at the first answer, "no
    partition 0")."""
    bootstrap = own_broker.addresses().plaintext
    client_id, topic = await quota_client(own_broker, "consumer-quota", consumer_byte_rate=RATE)
    await _produce(bootstrap, topic, [b"y" * VALUE] * RECORDS, 1 << 20)  # one 500 KB batch
    async with BasicConsumer(bootstrap, client_id=client_id, request_timeout=3.0) as consumer:
        start = time.monotonic()
        with anyio.fail_after(30), pytest.raises(KafkaError, match="throttled every fetch"):
            await consumer.fetch(topic, 0, 0, max_bytes=FETCH_BYTES, max_wait=0.1)
        took = time.monotonic() - start
        assert consumer.throttle_time_ms > 0
    assert 3.0 <= took < 20, took
