"""Client quotas (KIP-219): a broker's throttle_time_ms holds the producer's requests
to that broker for that long (against the in-memory FakeClient; the real broker with
a quota: tests/producer/test_throttle_broker.py)."""

from __future__ import annotations

import anyio
import pytest

from tests.support.fake_client import FakeClient
from tests.support.producers import running

pytestmark = pytest.mark.anyio


def _fake() -> FakeClient:
    fake = FakeClient()
    fake.add_topic("one", 1, leader=0)
    fake.add_topic("other", 1, leader=1)
    return fake


async def _sent(producer: object, fake: FakeClient, topic: str, n: int) -> float:
    """Send one record to ``topic``, flush; the anyio time its request went."""
    producer.send_nowait(topic, b"v")  # type: ignore[attr-defined]
    with anyio.fail_after(10):
        await producer.flush()  # type: ignore[attr-defined]
    assert len(fake.sent_at) == n
    return fake.sent_at[-1]


async def test_a_throttled_broker_gets_nothing_until_its_throttle_time_is_over(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = _fake()
    fake.produce_throttles.append(2000)
    async with running(fake, flush_time=0.005) as producer:
        first = await _sent(producer, fake, "one", 1)
        answered = anyio.current_time()
        # Another broker is not throttled: its request goes at once.
        other = await _sent(producer, fake, "other", 2)
        assert other - answered < 1.5
        # The throttled one: not before 2 s after it asked (before: at once).
        again = await _sent(producer, fake, "one", 3)
        stats = producer.stats()
    assert again - first >= 2.0
    assert stats.throttle_time_ms == 2000
    assert stats.delivered == 3 and stats.failed == 0
    assert any("throttles this client" in r.getMessage() for r in caplog.records)


async def test_a_throttle_is_bounded_by_request_timeout(anyio_backend: str) -> None:
    # However long a broker asks (here 2^31 - 1 ms, 24 days), the pause is at most
    # request_timeout: every wait is bounded.
    fake = _fake()
    fake.request_timeout = 1.0  # the client's, which bounds the pause
    fake.produce_throttles.append(2**31 - 1)
    async with running(fake, flush_time=0.005, request_timeout=1.0) as producer:
        first = await _sent(producer, fake, "one", 1)
        again = await _sent(producer, fake, "one", 2)
        stats = producer.stats()
    assert 1.0 <= again - first < 5.0
    assert stats.throttle_time_ms == 2**31 - 1


async def test_before_produce_v6_the_broker_delays_its_answer_itself(
    anyio_backend: str,
) -> None:
    # Produce v1 to v5 (Kafka before 2.0): the response came after the throttle time
    # already; the producer counts it and sends on.
    fake = _fake()
    fake.produce_version = 5
    fake.produce_throttles.append(2000)
    async with running(fake, flush_time=0.005) as producer:
        first = await _sent(producer, fake, "one", 1)
        again = await _sent(producer, fake, "one", 2)
        stats = producer.stats()
    assert again - first < 1.5
    assert stats.throttle_time_ms == 2000
