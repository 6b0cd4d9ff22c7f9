"""Handing events from other threads to a producer that lives on an event loop.

A producer's structures belong to its event loop's thread. Code on other threads
(WSGI views, sync views that ASGI servers run in a thread pool, ``logging`` calls
from anywhere) goes through a :class:`ThreadSafeSender`: on the loop's own thread
``send_nowait`` calls the producer directly; from any other thread it puts the event
in a bounded queue and schedules a drain on the loop, never waiting for the loop.
The lifespans register one sender per cluster name (:func:`get_sender`).

While events keep coming, the drain looks again every :data:`DRAIN_INTERVAL` on its
own (asyncio) instead of being woken by each one: a wake-up from another thread is a
write to the loop's self-pipe and a hand-over of the GIL, which cost a WSGI request
more than everything else the access log does.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kafka_asgi.integrations.producer_api import Headers, ProducerLike
from kafka_asgi.producer import BufferFullError

__all__ = [
    "DRAIN_INTERVAL",
    "ThreadSafeSender",
    "add_sender_listener",
    "call_on_drop",
    "call_soon_threadsafe",
    "get_sender",
    "in_event_loop",
    "register_sender",
    "remove_sender_listener",
    "unregister_sender",
]

logger = logging.getLogger("kafka_asgi.integrations")

_Item = tuple[str, "bytes | str | None", "bytes | str | None", Headers, "int | None", "int | None"]
# What the queue holds: an _Item, or an _Item with its owner's on_drop after it.
_Queued = tuple[Any, ...]

DRAIN_INTERVAL = 0.002
"""Seconds between drains while events from other threads keep coming (asyncio)."""

_NOT_RUNNING = "the producer's event loop is not running (not started, or shut down)"


def call_soon_threadsafe() -> Callable[[Callable[[], object]], None]:
    """A function that schedules a callback on the current event loop from any thread.

    Non-blocking on both backends (anyio.from_thread.run_sync would wait for the loop).
    """
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio

        token = trio.lowlevel.current_trio_token()

        def schedule_trio(fn: Callable[[], object]) -> None:
            try:
                token.run_sync_soon(fn)
            except trio.RunFinishedError:
                pass

        return schedule_trio

    def schedule_asyncio(fn: Callable[[], object]) -> None:
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # loop closed: the drain task is gone, nothing to wake
            pass

    return schedule_asyncio


class ThreadSafeSender:
    """``send_nowait`` for a loop-bound producer, callable from any thread.

    :meth:`bind` (on the loop) makes it live; :meth:`close` (on the loop) hands over
    what is still queued and stops it. Events from other threads wait in a queue of
    at most ``max_queue`` events, drained by one callback scheduled on the loop per
    batch (not per event); when the queue is full, ``send_nowait`` raises
    BufferFullError (the same signal as a full producer) and ``dropped`` counts it.
    Events the drain cannot hand to the producer (its buffer full) count there too,
    and their sender hears of it through the ``on_drop`` it gave ``send_nowait``, if
    any (a sender that keeps totals of its own: the logging handler).
    """

    def __init__(self, producer: ProducerLike, *, max_queue: int = 10_000) -> None:
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a positive int, not {max_queue!r}")
        self.producer = producer
        self.max_queue = max_queue
        self.dropped = 0
        # The producer's own checks, run in the sending thread (Producer and
        # InMemoryProducer have them; another producer-like object's events are
        # checked on the loop, where a refusal is counted and logged). Looked up on
        # the class: a test's Mock answers every attribute, and its answer queued in
        # place of the event would drop every event.
        check = getattr(type(producer), "check_record", None)
        self._check: Callable[..., tuple[Any, ...]] | None = (
            functools.partial(check, producer) if callable(check) else None
        )
        # inject_trace_context=True: the producer's send_nowait injects the context
        # current where it runs, which for a queued event is the drain on the loop, in
        # the context of whichever thread first woke it (another request's trace). The
        # context is injected here instead, in the sending thread, and the drain calls
        # the class's send_nowait, which injects nothing.
        self._handoff: Callable[..., None] | None = None
        inject = None
        if isinstance(getattr(type(producer), "trace_injector", None), property):
            inject = producer.trace_injector  # type: ignore[attr-defined]
        if callable(inject) and self._check is not None:
            self._handoff = functools.partial(type(producer).send_nowait, producer)
            self._check = _injecting(self._check, inject)
        # A deque: append and popleft are atomic (no condition to notify, as
        # queue.Queue has); the length is checked before each append.
        self._queue: deque[_Queued] = deque()
        # Only against close(): a thread that saw the loop running could otherwise
        # append after close()'s final drain, an event neither handed over nor counted.
        # Held for an attribute read and an append, never across a wait.
        self._closing = threading.Lock()
        self._loop_thread: int | None = None
        self._schedule: Callable[[Callable[[], object]], None] | None = None
        self._call_later: Callable[[float, Callable[[], object]], Any] | None = None
        self._timer: Any = None
        self._scheduled = False
        self._last_warning = 0.0

    def bind(self) -> None:
        """Attach to the running event loop (call from the producer's loop)."""
        self._schedule = call_soon_threadsafe()
        self._call_later = _call_later()
        self._loop_thread = threading.get_ident()

    def close(self) -> None:
        """Detach and hand over what other threads queued (call from the loop)."""
        with self._closing:
            self._loop_thread = None
            self._schedule = None
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._scheduled = False
        self._drain()

    def drain(self) -> None:
        """Hand what other threads queued to the producer now (call from the loop)."""
        self._drain()

    def send_nowait(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
        *,
        on_drop: Callable[[], object] | None = None,
    ) -> None:
        """Hand one event to the producer (on its loop's thread) or queue it for the
        loop; BufferFullError (counted) when it cannot be. ``on_drop()`` is called, on
        the loop's thread, if an event this call queued is dropped later (the producer
        refused it at the drain): the caller was told it was taken, and is told so
        once it is not. Nothing is called for an event this call raised for."""
        if threading.get_ident() == self._loop_thread:
            self.producer.send_nowait(topic, value, key, headers, partition, timestamp)
            return
        if self._schedule is None:
            self.dropped += 1
            raise BufferFullError(_NOT_RUNNING)
        events = self._queue
        # Threads racing past this check at once may each add one: at most max_queue
        # plus the number of sending threads.
        if len(events) >= self.max_queue:
            self.dropped += 1
            raise BufferFullError(f"thread hand-off queue full ({self.max_queue} events)")
        check = self._check
        if check is None:
            item: _Queued = (topic, value, key, headers, partition, timestamp)
        else:
            # Bad input raises here, at the call, as on the loop's thread; what is
            # queued is converted (a bytearray copied, a serializer run) now.
            item = check(topic, value, key, headers, partition, timestamp)
        if on_drop is not None:
            item = (*item, on_drop)
        with self._closing:
            # Looked at again: close() may have run on the loop while the check ran.
            schedule = self._schedule
            if schedule is not None:
                events.append(item)
        if schedule is None:
            self.dropped += 1
            raise BufferFullError(_NOT_RUNNING)
        # Queue first, flag second: a drain that already cleared the flag will see
        # this event, or this thread sees the cleared flag and schedules a new drain.
        if not self._scheduled:
            self._scheduled = True
            schedule(self._drain_soon)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _drain_soon(self) -> None:
        self._timer = None
        if self._loop_thread is None:  # closed; close() drained
            return
        call_later = self._call_later
        if self._drain() and call_later is not None:
            # Events are coming: look again shortly, still flagged as scheduled, so
            # that the threads sending them need not wake the loop for each.
            self._timer = call_later(DRAIN_INTERVAL, self._drain_soon)
            return
        self._scheduled = False
        self._drain()  # one queued just before the flag was cleared

    def _drain(self) -> int:
        """Hand what is queued to the producer; the number of events taken."""
        take = self._queue.popleft
        send = self._handoff or self.producer.send_nowait
        taken = 0
        while True:
            try:
                item = take()
            except IndexError:
                return taken
            taken += 1
            try:
                if len(item) == 6:
                    send(*item)
                else:
                    send(*item[:6])
            except Exception as exc:
                self.dropped += 1
                if len(item) > 6:
                    call_on_drop(item[6])
                now = time.monotonic()
                if now - self._last_warning > 60.0:
                    self._last_warning = now
                    logger.warning(
                        "kafka_asgi: dropped an event from another thread for topic %r: %s "
                        "(%d dropped so far)",
                        item[0],
                        exc,
                        self.dropped,
                    )


def call_on_drop(on_drop: Callable[[], object]) -> None:
    """Call an event's ``on_drop``; its failure is logged, never raised into the drain
    (the events after it would be lost)."""
    try:
        on_drop()
    except Exception:
        logger.exception("kafka_asgi: an on_drop callback failed")


def _injecting(
    check: Callable[..., tuple[Any, ...]], inject: Callable[[Any], Any]
) -> Callable[..., tuple[Any, ...]]:
    """``check`` with the trace context of the calling thread injected first."""

    def checked(
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None,
        headers: Headers,
        partition: int | None,
        timestamp: int | None,
    ) -> tuple[Any, ...]:
        return check(topic, value, key, inject(headers), partition, timestamp)

    return checked


def _call_later() -> Callable[[float, Callable[[], object]], Any] | None:
    """The running asyncio loop's ``call_later`` (on the loop's thread); None on trio,
    whose drain is then woken for each batch of events as it comes."""
    import asyncio

    try:
        return asyncio.get_running_loop().call_later
    except RuntimeError:
        return None


def in_event_loop() -> bool:
    """Whether this thread is running an event loop (asyncio or trio) right now."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return True
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


_senders: dict[str, ThreadSafeSender] = {}
_senders_lock = threading.Lock()
_listeners: list[Callable[[str, ThreadSafeSender], None]] = []

# A forked child must not hand events to its parent's loop (no thread runs it here).
os.register_at_fork(after_in_child=_senders.clear)


def register_sender(cluster: str, sender: ThreadSafeSender) -> None:
    """Register the sender of the producer a lifespan runs for ``cluster``; the
    listeners hear of it at once (on the producer's loop, the caller's thread)."""
    with _senders_lock:
        if cluster in _senders:
            raise ValueError(f"a thread-safe sender is already registered for {cluster!r}")
        _senders[cluster] = sender
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(cluster, sender)
        except Exception:
            logger.exception("kafka_asgi: a sender listener failed for cluster %r", cluster)


def unregister_sender(cluster: str, sender: ThreadSafeSender) -> None:
    with _senders_lock:
        if _senders.get(cluster) is sender:
            del _senders[cluster]


def get_sender(cluster: str = "default") -> ThreadSafeSender | None:
    """The thread-safe sender of the producer a lifespan runs for ``cluster``, if any."""
    return _senders.get(cluster)


def add_sender_listener(listener: Callable[[str, ThreadSafeSender], None]) -> None:
    """Call ``listener(cluster, sender)`` whenever a sender is registered (the logging
    handler hands over the records it kept while no producer ran). It must not block."""
    with _senders_lock:
        _listeners.append(listener)


def remove_sender_listener(listener: Callable[[str, ThreadSafeSender], None]) -> None:
    with _senders_lock:
        if listener in _listeners:
            _listeners.remove(listener)
