"""Thread hand-off: ThreadSafeSender and BackgroundProducer (the WSGI case)."""

from __future__ import annotations

import math
import threading
import time
from contextvars import copy_context
from typing import Any
from unittest import mock

import anyio
import pytest

from kafka_asgi.integrations.asgi import producer_lifespan
from kafka_asgi.integrations.event_logger import EventLogger
from kafka_asgi.integrations.testing import InMemoryProducer
from kafka_asgi.integrations.threads import BackgroundProducer, ThreadSafeSender, get_sender
from kafka_asgi.producer import (
    BufferFullError,
    Producer,
    get_producer,
    register_producer,
    unregister_producer,
)

pytestmark = pytest.mark.anyio


async def test_events_from_many_threads_reach_the_producer(anyio_backend: str) -> None:
    producer = InMemoryProducer()
    async with producer_lifespan(cluster="thr", producer_factory=lambda: producer):
        sender = get_sender("thr")
        assert sender is not None
        sender.send_nowait("t", b"on-loop")  # the loop's own thread: direct
        assert producer.events[-1].value == b"on-loop"

        def worker(n: int) -> None:
            for i in range(200):
                sender.send_nowait("t", f"{n}:{i}".encode(), key=str(n))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        await anyio.to_thread.run_sync(lambda: [t.join() for t in threads])
        await producer.wait_for(801, topic="t")
    values = [e.value for e in producer.events[1:]]
    assert sorted(values) == sorted(f"{n}:{i}".encode() for n in range(4) for i in range(200))
    # Per-thread order is kept.
    for n in range(4):
        mine = [v for v in values if v is not None and v.startswith(f"{n}:".encode())]
        assert mine == [f"{n}:{i}".encode() for i in range(200)]
    assert sender.dropped == 0


async def test_queued_events_are_handed_over_at_shutdown(anyio_backend: str) -> None:
    producer = InMemoryProducer()
    async with producer_lifespan(cluster="thr2", producer_factory=lambda: producer):
        sender = get_sender("thr2")
        assert sender is not None
        # Queued from a thread with no chance for the loop to drain before shutdown.
        await anyio.to_thread.run_sync(sender.send_nowait, "t", b"late")
    assert [e.value for e in producer.events] == [b"late"]
    with pytest.raises(BufferFullError, match="not running"):
        sender.send_nowait("t", b"after close")


def test_full_queue_raises_and_counts() -> None:
    sender = ThreadSafeSender(InMemoryProducer(), max_queue=2)

    async def main() -> None:
        sender.bind()
        # Block the loop so nothing drains while the other thread fills the queue.
        results: list[str] = []

        def fill() -> None:
            for i in range(3):
                try:
                    sender.send_nowait("t", b"%d" % i)
                    results.append("ok")
                except BufferFullError:
                    results.append("full")

        t = threading.Thread(target=fill)
        t.start()
        t.join()
        assert results == ["ok", "ok", "full"]
        assert sender.dropped == 1 and sender.queued == 2
        sender.close()
        assert sender.queued == 0

    anyio.run(main)
    with pytest.raises(ValueError, match="max_queue"):
        ThreadSafeSender(InMemoryProducer(), max_queue=0)


def test_producer_refusals_in_the_drain_are_counted() -> None:
    producer = InMemoryProducer(max_buffering=1)
    sender = ThreadSafeSender(producer)

    async def main() -> None:
        sender.bind()
        t = threading.Thread(target=lambda: [sender.send_nowait("t", b"x") for _ in range(3)])
        t.start()
        t.join()
        sender.close()

    anyio.run(main)
    assert len(producer.events) == 1 and sender.dropped == 2


def test_early_events_the_producer_refuses_are_counted() -> None:
    # Events queued before the producer is up go to it from the loop's thread, where
    # the sender hands them straight over: a refusal there (the producer's buffer
    # full) was counted nowhere, and stop() reported nothing lost.
    producer = InMemoryProducer(max_buffering=2)
    bg = BackgroundProducer(cluster="bg-early", producer_factory=lambda: producer)
    for i in range(5):
        bg.send_nowait("t", b"%d" % i)
    sender = bg.ensure_started()
    bg.stop()
    assert len(producer.events) == 2
    assert bg.dropped + sender.dropped == 3


def test_background_producer_for_wsgi() -> None:
    producer = InMemoryProducer()
    bg = BackgroundProducer(cluster="bg", producer_factory=lambda: producer)
    sender = bg.ensure_started()
    assert bg.ensure_started() is sender  # cheap and idempotent in the same process
    assert get_producer("bg") is producer
    for i in range(50):
        sender.send_nowait("t", b"%d" % i)
    bg.stop()
    assert [e.value for e in producer.events] == [b"%d" % i for i in range(50)]
    assert producer.closed and producer.flushes >= 1
    with pytest.raises(LookupError):
        get_producer("bg")


@pytest.mark.parametrize(
    ("timeout", "exc"), [(math.nan, ValueError), (-1, ValueError), ("5", TypeError)]
)
def test_background_producer_bad_timeouts_are_named(timeout: Any, exc: type[Exception]) -> None:
    # Before: Event.wait and Thread.join took NaN or a string, and raised their own
    # error (or none) deep in the threading module.
    producer = InMemoryProducer()
    bg = BackgroundProducer(cluster="bg-timeouts", producer_factory=lambda: producer)
    with pytest.raises(exc, match=rf"timeout must be None or a number of seconds.*{timeout!r}"):
        bg.ensure_started(timeout=timeout)
    bg.ensure_started()
    # Started: the quick path checks it too.
    with pytest.raises(exc, match=rf"timeout must be None or a number of seconds.*{timeout!r}"):
        bg.ensure_started(timeout=timeout)
    with pytest.raises(exc, match=rf"timeout must be None or a number of seconds.*{timeout!r}"):
        bg.stop(timeout=timeout)
    bg.stop()
    assert producer.closed


def test_background_producer_startup_failure_is_raised() -> None:
    bg = BackgroundProducer(
        cluster="bg-fail",
        producer_factory=lambda: InMemoryProducer(reachable=False),
        on_unreachable="fail",
    )
    with pytest.raises(RuntimeError, match="failed to start"):
        bg.ensure_started()


def test_bad_events_from_other_threads_raise_at_the_call() -> None:
    # They were queued as given and checked on the loop: refused there, counted, logged
    # once a minute, while the caller (EventLogger.log from a WSGI view) saw success.
    producer = InMemoryProducer(value_serializer="json")
    sender = ThreadSafeSender(producer)
    raised: list[str] = []
    buffer = bytearray(b"original")

    def from_a_thread() -> None:
        for args, kwargs in (
            (("a/b", b"x"), {}),
            (("t", b"x"), {"key": 5}),
            (("t", "\ud800"), {}),
            (("t", b"x"), {"headers": {"h": 1}}),
            (("t", b"x" * (2 << 20)), {}),
        ):
            try:
                sender.send_nowait(*args, **kwargs)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                raised.append(type(exc).__name__)
        sender.send_nowait("t", buffer)  # type: ignore[arg-type]
        buffer[:] = b"mutated!"
        sender.send_nowait("t", {"n": 1})  # type: ignore[arg-type]

    async def main() -> None:
        sender.bind()
        t = threading.Thread(target=from_a_thread)
        t.start()
        await anyio.to_thread.run_sync(t.join)
        sender.close()

    anyio.run(main)
    assert raised == ["ValueError", "TypeError", "ValueError", "TypeError", "RecordTooLargeError"]
    assert [e.value for e in producer.events] == [b"original", b'{"n":1}']
    assert sender.dropped == 0


def test_early_events_refused_by_the_producers_checks_are_counted() -> None:
    # An event queued before the producer was up is handed over by whichever thread
    # finds the sender there (a request thread, when the sender came up between its
    # look and its put): a bad one raised in the sender's check on that thread and
    # went uncounted, though its caller was told it was queued.
    producer = InMemoryProducer()
    bg = BackgroundProducer(cluster="bg-early-bad", producer_factory=lambda: producer)
    sender = bg.ensure_started()
    bg._early.put_nowait((("a/b", b"bad topic", None, None, None, None), copy_context(), None))
    bg._early.put_nowait((("t", b"good", None, None, None, None), copy_context(), None))
    bg._hand_over(sender)  # from this thread, not the loop's
    bg.stop()
    assert [e.value for e in producer.events] == [b"good"]
    assert bg.dropped == 1


def test_a_mock_producer_gets_the_events_from_other_threads() -> None:
    # A Mock answers every attribute: its check_record's answer (a Mock) was queued in
    # place of the event, and the drain dropped every one.
    producer = mock.MagicMock()
    sender = ThreadSafeSender(producer)

    async def main() -> None:
        sender.bind()
        t = threading.Thread(target=lambda: sender.send_nowait("t", b"x", key=b"k"))
        t.start()
        await anyio.to_thread.run_sync(t.join)
        sender.close()

    anyio.run(main)
    producer.send_nowait.assert_called_once_with("t", b"x", b"k", None, None, None)
    assert sender.dropped == 0


async def test_threads_logging_through_the_shutdown_never_call_the_producer(
    anyio_backend: str,
) -> None:
    """Sync endpoints still logging while the lifespan shuts down: their events go
    through the sender (the producer is only ever called on the loop's thread), and
    those logged during the final flush are delivered, not dropped."""
    loop_thread = threading.get_ident()
    callers: list[int] = []
    flushing = threading.Event()

    class SlowFlush(InMemoryProducer):
        def send_nowait(self, *args: Any, **kwargs: Any) -> None:
            callers.append(threading.get_ident())
            super().send_nowait(*args, **kwargs)

        async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
            flushing.set()
            await anyio.sleep(0.2)
            await super().flush(timeout)

    stop = threading.Event()
    results: list[tuple[bool, bool]] = []

    def endpoint() -> None:
        log = EventLogger(None, "rid", "shutdown-window")
        while not stop.is_set():
            during = flushing.is_set()
            results.append((during, log.log("t", b"x")))
            time.sleep(0.002)

    producer = SlowFlush()
    threads = [threading.Thread(target=endpoint) for _ in range(3)]
    try:
        async with producer_lifespan(
            cluster="shutdown-window", producer_factory=lambda: producer, shutdown_timeout=5
        ):
            for t in threads:
                t.start()
            await anyio.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert callers and set(callers) == {loop_thread}
    assert any(ok for during, ok in results if during)
    assert len(producer.events) == sum(ok for _, ok in results)


def test_event_logger_refuses_to_call_a_producer_from_another_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Producer registered without a lifespan (no thread-safe sender): log() from a
    thread that runs no event loop drops the event instead of calling the producer."""
    calls: list[int] = []
    monkeypatch.setattr(Producer, "send_nowait", lambda self, *a, **k: calls.append(1))
    producer = Producer("127.0.0.1:1")
    register_producer("no-sender", producer)
    try:
        log = EventLogger(None, "rid", "no-sender")
        assert log.log("t", b"x") is False
        assert log.dropped == 1
    finally:
        unregister_producer("no-sender", producer)
    assert calls == []


async def test_event_logger_refuses_a_producer_of_another_threads_event_loop(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Producer registered by cluster_name, no lifespan: a thread running an event
    loop of its own (asyncio.run / trio.run in a worker) is refused as a thread with no
    loop is; the producer's own thread still calls it directly."""
    calls: list[int] = []
    monkeypatch.setattr(
        Producer, "send_nowait", lambda self, *a, **k: calls.append(threading.get_ident())
    )
    results: list[bool] = []

    async def foreign_loop() -> None:
        log = EventLogger(None, "rid", "other-loop")
        results.append(log.log("t", b"from another loop"))
        results.append(log.dropped == 1)

    async with Producer("127.0.0.1:1", cluster_name="other-loop") as producer:
        assert producer.loop_thread == threading.get_ident()
        await anyio.to_thread.run_sync(lambda: anyio.run(foreign_loop, backend=anyio_backend))
        assert EventLogger(None, "rid", "other-loop").log("t", b"on its loop")
    assert results == [False, True]
    assert calls == [threading.get_ident()]


async def test_injected_trace_context_is_the_sending_threads(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inject_trace_context=True, events from threads each in its own span: each record
    carries its own thread's trace (not that of whichever thread woke the drain), and
    one logged outside any span carries none."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("app")
    seen: dict[bytes, dict[str, bytes]] = {}
    enqueue = Producer._enqueue

    def spy(self: Producer, topic: str, value: Any, key: Any, headers: Any, *rest: Any) -> Any:
        seen[value] = {k: v for k, v in headers or ()}
        return enqueue(self, topic, value, key, headers, *rest)

    monkeypatch.setattr(Producer, "_enqueue", spy)
    expected: dict[bytes, str | None] = {}
    barrier = threading.Barrier(5)

    def request(i: int) -> None:
        log = EventLogger(None, f"rid{i}", "inject")
        value = f"req{i}".encode()
        if i == 4:
            expected[value] = None
            barrier.wait()
            assert log.log("t", value)
            return
        with tracer.start_as_current_span(f"request-{i}") as span:
            expected[value] = format(span.get_span_context().trace_id, "032x")
            barrier.wait()
            assert log.log("t", value)

    async with producer_lifespan(
        cluster="inject",
        bootstrap="127.0.0.1:1",
        startup_timeout=0.1,
        shutdown_timeout=0.1,
        producer_options={"inject_trace_context": True, "close_timeout": 0.1},
    ):
        threads = [threading.Thread(target=request, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        await anyio.to_thread.run_sync(lambda: [t.join() for t in threads])
    # Leaving the lifespan handed every queued event to the producer.
    got = {}
    for value, headers in seen.items():
        traceparent = headers.get("traceparent")
        got[value] = None if traceparent is None else traceparent.decode().split("-")[1]
    assert got == expected


def test_events_queued_before_the_background_producer_is_up_carry_their_own_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """inject_trace_context=True, a WSGI worker's first requests: their events wait in
    the early queue until the producer's thread is up, then are handed over on that
    thread. Each carries its own request's trace (not the loop thread's, which has
    none), and one sent outside any span carries none."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("app")
    seen: dict[bytes, dict[str, bytes]] = {}
    send_nowait = Producer.send_nowait

    def spy(self: Producer, topic: str, value: Any, key: Any, headers: Any, *rest: Any) -> None:
        # What the producer takes, its trace context injected (or not).
        seen[value] = {k: v for k, v in headers or ()}
        send_nowait(self, topic, value, key, headers, *rest)

    monkeypatch.setattr(Producer, "send_nowait", spy)
    gate = threading.Event()

    def factory() -> Producer:
        gate.wait(5)  # the thread is not up before every request has sent
        return Producer("127.0.0.1:1", inject_trace_context=True, close_timeout=0.1)

    bg = BackgroundProducer(
        cluster="early-trace", producer_factory=factory, startup_timeout=0.1, shutdown_timeout=0.1
    )
    expected: dict[bytes, str | None] = {}

    def request(i: int) -> None:
        value = f"req{i}".encode()
        if i == 3:
            expected[value] = None
            bg.send_nowait("t", value)
            return
        with tracer.start_as_current_span(f"request-{i}") as span:
            expected[value] = format(span.get_span_context().trace_id, "032x")
            bg.send_nowait("t", value)

    try:
        threads = [threading.Thread(target=request, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert bg.queued == 4  # all in the early queue
        gate.set()
        bg.ensure_started()
    finally:
        gate.set()
        bg.stop()
    got = {}
    for value, headers in seen.items():
        traceparent = headers.get("traceparent")
        got[value] = None if traceparent is None else traceparent.decode().split("-")[1]
    assert got == expected
