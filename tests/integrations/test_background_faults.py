"""Thread hand-off faults: a background producer whose thread fails, and an event
racing ThreadSafeSender.close(). Each event is delivered or counted as dropped."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import anyio
import pytest

from kafka_asgi.integrations import background
from kafka_asgi.integrations.event_logger import EventLogger
from kafka_asgi.integrations.testing import InMemoryProducer
from kafka_asgi.integrations.threads import BackgroundProducer, ThreadSafeSender
from kafka_asgi.producer import BufferFullError


def test_a_failed_start_drops_what_waits_and_refuses_what_follows() -> None:
    # The thread ended with one log line, and every event after it went into the
    # early queue that nothing drained: send_nowait returned, log() said True, and
    # the loss showed only at exit.
    release = threading.Event()

    def factory() -> Any:
        release.wait(5)
        raise OSError("TLS file missing")

    bg = BackgroundProducer(cluster="bg-fails", producer_factory=factory)
    try:
        for i in range(3):
            bg.send_nowait("t", b"%d" % i)  # queued while it starts
        release.set()
        assert bg._done.wait(5)
        # Counted when the thread ended, not at exit.
        assert bg.dropped == 3 and bg.queued == 0
        with pytest.raises(BufferFullError, match=r"failed to start.*TLS file missing"):
            bg.send_nowait("t", b"late")
        assert bg.dropped == 4 and bg.queued == 0
        logger = EventLogger(None, "rid-1", "bg-fails", send=bg.send_nowait)
        assert logger.log("orders", {"id": 1}) is False
        assert logger.dropped == 1 and bg.dropped == 5
    finally:
        release.set()
        bg.stop()
    assert bg.dropped == 5


def test_taken_events_dropped_later_are_told_to_their_sender() -> None:
    # Events the early queue took, then dropped as the thread failed: their sender
    # (the logging handler keeps totals) counted them as sent. Each is told once,
    # through its on_drop; one refused at the call is told by the exception alone.
    release = threading.Event()

    def factory() -> Any:
        release.wait(5)
        raise OSError("TLS file missing")

    told: list[bytes] = []
    bg = BackgroundProducer(cluster="bg-told", producer_factory=factory)
    try:
        for i in range(3):
            value = b"%d" % i
            bg.send_nowait("t", value, on_drop=lambda value=value: told.append(value))
        release.set()
        assert bg._done.wait(5)
        assert told == [b"0", b"1", b"2"]
        with pytest.raises(BufferFullError):
            bg.send_nowait("t", b"late", on_drop=lambda: told.append(b"late"))
    finally:
        release.set()
        bg.stop()
    assert told == [b"0", b"1", b"2"] and bg.dropped == 4


def test_an_event_queued_as_the_thread_fails_is_counted() -> None:
    # The event goes into the early queue just after the failing thread's last look
    # at it: the sender sees the failure and drops the event itself.
    release = threading.Event()

    def factory() -> Any:
        release.wait(5)
        raise OSError("no such host")

    bg = BackgroundProducer(cluster="bg-fails-late", producer_factory=factory)
    bg.start_soon()  # the thread waits in the factory
    done = bg._done

    class LateQueue(queue.Queue[Any]):
        def put_nowait(self, item: Any) -> None:
            release.set()
            assert done.wait(5)
            super().put_nowait(item)

    bg._early = LateQueue(10)
    try:
        with pytest.raises(BufferFullError, match="failed to start"):
            bg.send_nowait("t", b"x")
        assert bg.dropped == 1 and bg.queued == 0
    finally:
        release.set()
        bg.stop()
    assert bg.dropped == 1


def test_a_failed_background_producer_is_started_again_after_the_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = InMemoryProducer()
    calls = 0

    def factory() -> InMemoryProducer:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("Kafka down at boot")
        return producer

    monkeypatch.setattr(background, "RESTART_DELAY", 3600.0)
    bg = BackgroundProducer(cluster="bg-restart", producer_factory=factory)
    try:
        with pytest.raises(RuntimeError, match="failed to start"):
            bg.ensure_started()
        with pytest.raises(BufferFullError, match="tried again 3600s after"):
            bg.send_nowait("t", b"refused")
        bg.start_soon()
        assert calls == 1  # not before the delay
        monkeypatch.setattr(background, "RESTART_DELAY", 0.0)
        bg.send_nowait("t", b"after")  # starts it again, and waits for it
        bg.ensure_started()
    finally:
        bg.stop()
    assert calls == 2
    assert [e.value for e in producer.events] == [b"after"]
    assert bg.dropped == 1


class SlowCheckProducer(InMemoryProducer):
    """Its check (run in the sending thread) waits: close() runs on the loop meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.in_check = threading.Event()
        self.release = threading.Event()

    def check_record(self, *args: Any, **kwargs: Any) -> Any:
        self.in_check.set()
        assert self.release.wait(5)
        return super().check_record(*args, **kwargs)


def test_an_event_sent_as_the_sender_closes_is_refused_and_counted() -> None:
    # It passed the "loop running" look before close() and was appended after
    # close()'s final drain: send_nowait returned, the event stayed in the queue.
    producer = SlowCheckProducer()
    sender = ThreadSafeSender(producer)
    results: list[str] = []

    def send() -> None:
        try:
            sender.send_nowait("t", b"v")
        except BufferFullError:
            results.append("refused")
        else:
            results.append("queued")

    async def main() -> None:
        sender.bind()
        t = threading.Thread(target=send)
        t.start()
        assert await anyio.to_thread.run_sync(producer.in_check.wait, 5)
        sender.close()  # the lifespan's shutdown, on the loop
        producer.release.set()
        await anyio.to_thread.run_sync(t.join)

    try:
        anyio.run(main)
    finally:
        producer.release.set()
    assert results == ["refused"]
    assert sender.dropped == 1 and sender.queued == 0 and producer.events == []


def test_a_restart_that_gave_up_waiting_replaces_the_thread_once_it_ends() -> None:
    # restart() joins the thread within a limit; past it, the thread went on to end by
    # itself and was never replaced: events queued behind it for good.
    made: list[InMemoryProducer] = []

    class SlowToClose(InMemoryProducer):
        async def aclose(self) -> None:
            await anyio.sleep(0.6)  # a close_timeout spent on a Kafka that is down
            await super().aclose()

    def factory() -> InMemoryProducer:
        made.append(SlowToClose())
        return made[-1]

    bg = BackgroundProducer(
        cluster="restart-wedge",
        producer_factory=factory,
        shutdown_timeout=0.1,
        startup_timeout=0.1,
    )
    try:
        bg.send_nowait("t", b"before")
        bg.ensure_started(2.0)
        bg.restart(timeout=0.2)  # gives up: the old thread is still closing
        time.sleep(1.0)  # it has ended by now, by itself
        bg.send_nowait("t", b"during")  # starts the next thread
        deadline = time.monotonic() + 5.0
        while len(made) < 2 or [e.value for e in made[-1].events] != [b"during"]:
            assert time.monotonic() < deadline, (len(made), bg.queued)
            time.sleep(0.05)
        bg.send_nowait("t", b"after")
        made[-1].wait_for_sync(2, timeout=3)
    finally:
        bg.stop(5.0)
    assert [e.value for e in made[0].events] == [b"before"]
    assert [e.value for e in made[1].events] == [b"during", b"after"]
    assert bg.dropped == 0
