"""Throttles: the pauses brokers ask of a client (KIP-219), shared by the producer and
the consumer (their real-broker tests: tests/producer/test_throttle_broker.py and
tests/consumer/test_consumer_throttle_broker.py)."""

from __future__ import annotations

import logging

import anyio
import pytest

from kafka_asgi.cluster.throttle import Throttles

pytestmark = pytest.mark.anyio

log = logging.getLogger("tests.throttle")


async def test_a_muted_broker_waits_out_its_pause_and_others_do_not(anyio_backend: str) -> None:
    throttles = Throttles(log, "consumer", "requests to it wait", "throttle_time_ms")
    throttles.note(1, 300, True, 30.0)
    start = anyio.current_time()
    await throttles.wait(2)  # another broker: at once
    assert anyio.current_time() - start < 0.1
    await throttles.wait(1)
    assert anyio.current_time() - start >= 0.3
    await throttles.wait(1)  # over: at once, and forgotten
    assert 1 not in throttles.paused
    assert throttles.asked_ms == 300


async def test_an_old_version_only_counts_and_a_long_pause_is_capped(anyio_backend: str) -> None:
    throttles = Throttles(
        log, "producer", "Produce requests to it wait", "stats().throttle_time_ms"
    )
    throttles.note(1, 5000, False, 30.0)  # the broker delayed its response instead
    assert throttles.paused == {}
    throttles.note(1, 2**31 - 1, True, 0.2)  # whatever a broker asks: at most the cap
    start = anyio.current_time()
    with anyio.fail_after(5):
        await throttles.wait(1)
    assert 0.15 <= anyio.current_time() - start < 1.0
    assert throttles.asked_ms == 5000 + 2**31 - 1


async def test_a_shorter_pause_does_not_cut_a_longer_one(anyio_backend: str) -> None:
    throttles = Throttles(log, "consumer", "requests to it wait", "throttle_time_ms")
    throttles.note(1, 400, True, 30.0)
    throttles.note(1, 100, True, 30.0)
    start = anyio.current_time()
    await throttles.wait(1)
    assert anyio.current_time() - start >= 0.35


async def test_one_warning_a_minute(anyio_backend: str, caplog: pytest.LogCaptureFixture) -> None:
    throttles = Throttles(log, "consumer", "requests to it wait", "throttle_time_ms")
    with caplog.at_level(logging.WARNING, logger="tests.throttle"):
        for _ in range(5):
            throttles.note(3, 10, True, 30.0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "kafka_asgi consumer: broker 3 throttles this client" in messages[0]
    assert "requests to it wait (10 ms asked so far, throttle_time_ms)" in messages[0]
