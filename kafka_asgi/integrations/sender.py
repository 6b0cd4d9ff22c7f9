"""Handing events from other threads to a producer that lives on an event loop.

A producer's structures belong to its event loop's thread. Code on other threads
(WSGI views, sync views that ASGI servers run in a thread pool, ``logging`` calls
from anywhere) goes through a :class:`ThreadSafeSender`: on the loop's own thread
``send_nowait`` calls the producer directly; from any other thread it puts the event
in a bounded queue and schedules a drain on the loop, never waiting for the loop.
The lifespans register one sender per cluster name (:func:`get_sender`).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable

from kafka_asgi.integrations.producer_api import Headers, ProducerLike
from kafka_asgi.producer import BufferFullError

__all__ = [
    "ThreadSafeSender",
    "add_sender_listener",
    "call_soon_threadsafe",
    "get_sender",
    "in_event_loop",
    "register_sender",
    "remove_sender_listener",
    "unregister_sender",
]

logger = logging.getLogger("kafka_asgi.integrations")

_Item = tuple[str, "bytes | str | None", "bytes | str | None", Headers, "int | None", "int | None"]


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
    Events the drain cannot hand to the producer (its buffer full) count there too.
    """

    def __init__(self, producer: ProducerLike, *, max_queue: int = 10_000) -> None:
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a positive int, not {max_queue!r}")
        self.producer = producer
        self.max_queue = max_queue
        self.dropped = 0
        self._queue: queue.Queue[_Item] = queue.Queue(max_queue)
        self._loop_thread: int | None = None
        self._schedule: Callable[[Callable[[], object]], None] | None = None
        self._scheduled = False
        self._last_warning = 0.0

    def bind(self) -> None:
        """Attach to the running event loop (call from the producer's loop)."""
        self._schedule = call_soon_threadsafe()
        self._loop_thread = threading.get_ident()

    def close(self) -> None:
        """Detach and hand over what other threads queued (call from the loop)."""
        self._loop_thread = None
        self._schedule = None
        self._drain()

    def send_nowait(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        if threading.get_ident() == self._loop_thread:
            self.producer.send_nowait(topic, value, key, headers, partition, timestamp)
            return
        schedule = self._schedule
        if schedule is None:
            self.dropped += 1
            raise BufferFullError(
                "the producer's event loop is not running (not started, or shut down)"
            )
        try:
            self._queue.put_nowait((topic, value, key, headers, partition, timestamp))
        except queue.Full:
            self.dropped += 1
            raise BufferFullError(f"thread hand-off queue full ({self.max_queue} events)") from None
        # Queue first, flag second: a drain that already cleared the flag will see
        # this event, or this thread sees the cleared flag and schedules a new drain.
        if not self._scheduled:
            self._scheduled = True
            schedule(self._drain_soon)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _drain_soon(self) -> None:
        self._scheduled = False
        self._drain()

    def _drain(self) -> None:
        get = self._queue.get_nowait
        send = self.producer.send_nowait
        while True:
            try:
                item = get()
            except queue.Empty:
                return
            try:
                send(*item)
            except Exception as exc:
                self.dropped += 1
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
