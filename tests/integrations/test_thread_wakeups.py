"""ThreadSafeSender: while events keep coming from another thread, the loop drains them
on a timer instead of being woken for each one (asyncio); none is lost or reordered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio
import pytest

from kafka_asgi.integrations import sender as sender_module
from kafka_asgi.integrations.testing import InMemoryProducer
from kafka_asgi.integrations.threads import ThreadSafeSender


def run_with_counted_wakeups(
    monkeypatch: pytest.MonkeyPatch, backend: str, events: int, pause: float
) -> tuple[InMemoryProducer, ThreadSafeSender, int]:
    wakeups = 0
    real = sender_module.call_soon_threadsafe

    def counting() -> Callable[[Callable[[], object]], None]:
        schedule = real()

        def counted(fn: Callable[[], object]) -> None:
            nonlocal wakeups
            wakeups += 1
            schedule(fn)

        return counted

    monkeypatch.setattr(sender_module, "call_soon_threadsafe", counting)
    producer = InMemoryProducer()
    sender = ThreadSafeSender(producer)

    async def main() -> None:
        sender.bind()

        def worker() -> None:
            for i in range(events):
                sender.send_nowait("t", b"%d" % i)
                time.sleep(pause)  # lets the loop run between events

        t = threading.Thread(target=worker)
        t.start()
        await anyio.to_thread.run_sync(t.join)
        with anyio.fail_after(30):
            await producer.wait_for(events, topic="t")
        await anyio.sleep(sender_module.DRAIN_INTERVAL * 3)  # the timer stops by itself
        sender.close()

    anyio.run(main, backend=backend)
    return producer, sender, wakeups


def test_a_stream_of_events_wakes_the_loop_a_few_times(monkeypatch: pytest.MonkeyPatch) -> None:
    # A long interval, so that a loaded machine's slow sleeps still fall inside it.
    monkeypatch.setattr(sender_module, "DRAIN_INTERVAL", 0.05)
    producer, sender, wakeups = run_with_counted_wakeups(monkeypatch, "asyncio", 200, 0.0002)
    assert [e.value for e in producer.events] == [b"%d" % i for i in range(200)]
    assert sender.dropped == 0 and sender.queued == 0
    # At least 40 ms of sending (200 pauses of 0.2 ms): about one wake-up per interval
    # at most, where waking for each event would be 200.
    assert 1 <= wakeups <= 40, wakeups


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_events_after_a_quiet_spell_still_arrive(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    # Pauses longer than the interval: each event finds the drain stopped and wakes it
    # (trio always does: it has no timer here).
    monkeypatch.setattr(sender_module, "DRAIN_INTERVAL", 0.001)
    producer, sender, wakeups = run_with_counted_wakeups(monkeypatch, backend, 20, 0.02)
    assert [e.value for e in producer.events] == [b"%d" % i for i in range(20)]
    assert sender.dropped == 0 and wakeups >= 2
