"""A producer on its own event loop in a daemon thread, for code with no event loop.

WSGI servers (and plain scripts) run no event loop; :class:`BackgroundProducer` runs
one in a daemon thread, started lazily in the process that uses it (a pre-fork
server's workers each start their own after the fork, never inheriting the parent's),
with :func:`~kafka_asgi.integrations.lifespan.producer_lifespan` and its
:class:`~kafka_asgi.integrations.sender.ThreadSafeSender` on it.

:meth:`BackgroundProducer.send_nowait` is the non-blocking front door, callable from
any thread: before the thread's producer is up (the first milliseconds of a worker)
events wait in a bounded queue of their own and are handed over the moment its
sender is registered. :meth:`BackgroundProducer.stop` flushes within the lifespan's
``shutdown_timeout`` and counts what it could not hand over. A thread that ends on its
own (the producer could not start) drops and counts what waits at that moment, then
refuses events until a start tried again :data:`RESTART_DELAY` seconds later.

:func:`restart_for` stops the running ones of a cluster and lets their next event start
them again: ``capture_events()`` calls it when a capture begins and ends, as a lifespan
takes the producer to use (the capture's, or its own) once, when it starts.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import anyio

from kafka_asgi.integrations.lifespan import LifespanOptions, run_producer
from kafka_asgi.integrations.overrides import override_for
from kafka_asgi.integrations.producer_api import Headers, ProducerLike
from kafka_asgi.integrations.sender import (
    ThreadSafeSender,
    add_sender_listener,
    call_on_drop,
    call_soon_threadsafe,
    get_sender,
)
from kafka_asgi.producer import BufferFullError
from kafka_asgi.producer.validation import check_wait

__all__ = ["RESTART_DELAY", "BackgroundProducer", "at_exit", "cancel_at_exit", "restart_for"]

logger = logging.getLogger("kafka_asgi.integrations")

_Item = tuple[str, "bytes | str | None", "bytes | str | None", Headers, "int | None", "int | None"]
# An event of the early queue with the context of the thread that sent it: handed over
# in that context, so that a producer with inject_trace_context=True injects the trace
# of the request that sent it, not that of the thread handing it over (the loop's, with
# none, or another request's). Then its sender's on_drop, if it gave one.
_Early = tuple[_Item, contextvars.Context, "Callable[[], object] | None"]

RESTART_DELAY = 30.0
"""Seconds after the thread failed before the next event (or ``start_soon``) starts it
again: a missing TLS file or a wrong address should not cost a thread and an error log
line per request, and a Kafka that was down at boot should not cost the process."""

# Every background producer of the process, for restart_for().
_instances: weakref.WeakSet[BackgroundProducer] = weakref.WeakSet()
_instances_lock = threading.Lock()


# Callbacks for the end of the main thread, newest first (see at_exit).
_exit_calls: list[Callable[[], object]] = []
_exit_lock = threading.Lock()
_exit_hooked = False


def _run_exit_calls() -> None:
    while True:
        with _exit_lock:
            if not _exit_calls:
                return
            call = _exit_calls.pop()
        try:
            call()
        except Exception:
            logger.exception("kafka_asgi: exit callback %r failed", call)


def at_exit(call: Callable[[], object]) -> None:
    """Run ``call`` when the process exits normally, while threads can still resolve host
    names: a background producer's final flush may have to open a connection.

    ``atexit`` callbacks run after threading's shutdown, which shuts concurrent.futures
    down; asyncio's ``getaddrinfo`` then fails ("cannot schedule new futures after
    shutdown"), so a broker named by host name could not be reached. Threading's own
    exit hook (what concurrent.futures uses; reversed order, so registered after it to
    run first) comes before that, when the main thread has ended. ``atexit`` remains
    the fallback, for Pythons without that hook and for calls added after it ran.
    """
    global _exit_hooked
    with _exit_lock:
        _exit_calls.append(call)
        if _exit_hooked:
            return
        _exit_hooked = True
    try:
        import concurrent.futures.thread  # noqa: F401  # registers its hook: ours runs first
    except RuntimeError:  # imported first during threading's shutdown: too late for both
        pass

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_run_exit_calls)
        except RuntimeError:  # threading's shutdown has begun: atexit's turn comes later
            pass
    atexit.register(_run_exit_calls)


def cancel_at_exit(call: Callable[[], object]) -> None:
    """Forget ``call`` given to :func:`at_exit` (if it is still waiting)."""
    with _exit_lock:
        if call in _exit_calls:
            _exit_calls.remove(call)


def restart_for(cluster: str, timeout: float | None = None) -> None:
    """Restart the background producers of ``cluster`` running in this process: each
    hands what it holds to its producer and flushes it (within ``shutdown_timeout``),
    and its next event starts it again, with the producer a lifespan takes now.

    For ``capture_events()``, which calls it when a capture begins (the producer of a
    thread started before is not the capture's) and ends (the capture's must not get
    the events of later tests). Waits as :meth:`BackgroundProducer.stop` does.
    """
    with _instances_lock:
        found = [bg for bg in _instances if bg.cluster == cluster]
    for bg in found:
        bg.restart(timeout)


class BackgroundProducer:
    """A producer running on its own event loop in a daemon thread (WSGI deployments).

    ``producer_lifespan_kwargs`` are the options of
    :class:`~kafka_asgi.integrations.lifespan.LifespanOptions` (bootstrap, producer
    options, cluster, startup/shutdown behaviour); the cluster name must be free in
    the process. :meth:`send_nowait` never blocks; :meth:`ensure_started` waits until
    the producer is up (and raises if it could not start); :meth:`stop` flushes and
    joins the thread, both bounded. A forked child starts its own thread on first use.

    ``dropped`` counts events refused here (early queue full, sent after stop or while
    the producer could not start) and those waiting when its thread failed;
    ``final_stats`` holds the producer's stats once stopped (a snapshot taken then, if
    a stop or restart gave up waiting for its thread); ``left_behind`` counts the events
    such a stop left with the thread still running: queued for its producer, or held
    by it and not delivered yet. An event :meth:`send_nowait` took and that is dropped
    later is also told to its sender through the ``on_drop`` it gave.
    """

    def __init__(self, **producer_lifespan_kwargs: Any) -> None:
        # Validated here, in the caller's thread, not in the background thread.
        self.options = LifespanOptions.from_kwargs("BackgroundProducer", producer_lifespan_kwargs)
        self.cluster: str = self.options.cluster
        self.dropped = 0
        self.final_stats: Any = None
        self.left_behind = 0
        self.sender: ThreadSafeSender | None = None
        self._lock = threading.Lock()
        self._reset()
        me = weakref.ref(self)

        def on_sender(cluster: str, sender: ThreadSafeSender) -> None:
            owner = me()
            if owner is not None:
                owner._on_sender(cluster, sender)

        def after_fork() -> None:
            owner = me()
            if owner is not None:
                owner._lock = threading.Lock()  # another thread may have held it
                owner._reset()

        add_sender_listener(on_sender)
        os.register_at_fork(after_in_child=after_fork)
        with _instances_lock:
            _instances.add(self)

    def _reset(self) -> None:
        """Forget any thread (a forked child has none of its parent's)."""
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_ident: int | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._stop_requested = threading.Event()
        self._stop: Callable[[], None] | None = None
        self._error: BaseException | None = None
        self._override: ProducerLike | None = None  # capture_events' producer at start
        # A restart() whose thread outlived its wait: the thread is replaced once it ends.
        self._replace = False
        # When the thread ended without stop(): events are refused from then on, and
        # the thread starts again RESTART_DELAY s later.
        self._failed_at: float | None = None
        self._early: queue.Queue[_Early] = queue.Queue(self.options.thread_queue_size)
        self._stopped = False
        self.sender = None
        self._producer: ProducerLike | None = None

    # -- starting ---------------------------------------------------------------------------

    def start_soon(self) -> None:
        """Start the thread in this process if it is not running (again, if it failed
        :data:`RESTART_DELAY` seconds ago or more); never waits."""
        if self._thread is not None and self._pid == os.getpid() and not self._replace:
            failed_at = self._failed_at
            if failed_at is None or time.monotonic() - failed_at < RESTART_DELAY:
                return
        with self._lock:
            if self._pid != os.getpid():
                self._reset()
            if self._replace and not self._stopped and self._done.is_set():
                # A restart() that gave up waiting for the thread: it has ended since.
                self._forget_thread()
            failed_at = self._failed_at
            if (
                failed_at is not None
                and not self._stopped
                # The failed thread writes to self until it sets _done.
                and self._done.is_set()
                and time.monotonic() - failed_at >= RESTART_DELAY
            ):
                logger.info(
                    "kafka_asgi: starting the background producer for %r again", self.cluster
                )
                self._forget_thread()
            if self._thread is None and not self._stopped:
                self._pid = os.getpid()
                # Taken here, in the thread whose event asks for the start: the new
                # thread's lifespan begins later, maybe after that event's capture ended.
                self._override = override_for(self.cluster)
                self._thread = threading.Thread(
                    target=self._run, name=f"kafka-asgi-producer-{self.cluster}", daemon=True
                )
                self._thread.start()

    def ensure_started(self, timeout: float | None = 10.0) -> ThreadSafeSender:
        """Start if needed and wait (at most ``timeout`` s, None: 10) until the producer
        is up."""
        limit = check_wait("timeout", timeout)
        sender = self.sender
        if sender is not None and self._ready.is_set() and self._pid == os.getpid():
            return sender
        if limit is None:
            limit = 10.0
        self.start_soon()
        ready = self._ready
        if not ready.wait(limit):
            raise TimeoutError(f"background producer for {self.cluster!r} not up after {limit}s")
        if self._error is not None:
            raise RuntimeError(
                f"background producer for {self.cluster!r} failed to start: {self._error}"
            ) from self._error
        sender = self.sender
        if sender is None:
            raise RuntimeError(f"background producer for {self.cluster!r} was stopped")
        return sender

    # -- sending ----------------------------------------------------------------------------

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
        """Queue one event from any thread; BufferFullError (counted) when it cannot be.

        ``on_drop()`` is called if the event, once taken, is dropped later (the producer
        refused it when it was handed over, or it still waited when the thread failed or
        stopped): see :meth:`ThreadSafeSender.send_nowait`."""
        sender = self.sender
        if sender is not None:
            sender.send_nowait(topic, value, key, headers, partition, timestamp, on_drop=on_drop)
            return
        if self._stopped:
            self.dropped += 1
            raise BufferFullError(f"background producer for {self.cluster!r} is stopped")
        self.start_soon()
        if self._failed_at is not None:
            # Nothing would drain the early queue until the next start.
            self.dropped += 1
            raise self._start_failure()
        entry: _Early = (
            (topic, value, key, headers, partition, timestamp),
            contextvars.copy_context(),
            on_drop,
        )
        try:
            self._early.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
            raise BufferFullError(
                f"background producer for {self.cluster!r} not up yet and its queue is full "
                f"({self.options.thread_queue_size} events)"
            ) from None
        # The sender may have been registered (and the early queue drained) between the
        # first look and the put: hand over what is there now.
        sender = self.sender
        if sender is not None:
            self._hand_over(sender)
        elif self._failed_at is not None:
            # The thread failed meanwhile, and its last look at the early queue may have
            # come before the put: this event is lost. Raised for if it was still there;
            # else the thread dropped it, and counted it and told its sender then.
            if self._drop_early(entry):
                raise self._start_failure()
        elif self._thread is None or (self._replace and self._done.is_set()):
            # restart() forgot the thread the start above found, or the thread a restart
            # gave up on ended meanwhile; either looked at the early queue before the
            # put: nothing would take this event.
            self.start_soon()

    def _start_failure(self) -> BufferFullError:
        error = self._error
        return BufferFullError(
            f"background producer for {self.cluster!r} "
            + ("stopped on its own" if error is None else f"failed to start ({error!r})")
            + f"; it is tried again {RESTART_DELAY:g}s after the failure"
        )

    def _on_sender(self, cluster: str, sender: ThreadSafeSender) -> None:
        # Called on the loop thread by register_sender, before the reachability check.
        if cluster != self.cluster or threading.get_ident() != self._thread_ident:
            return
        self.sender = sender
        self._hand_over(sender)

    def _hand_over(self, sender: ThreadSafeSender) -> None:
        get = self._early.get_nowait
        refused = 0
        last: Exception | None = None
        while True:
            try:
                item, context, on_drop = get()
            except queue.Empty:
                break
            try:
                context.run(sender.send_nowait, *item, on_drop=on_drop)
            except BufferFullError as exc:
                # From another thread the sender counted it (its queue full, its loop
                # gone); on the loop's thread it came from the producer (its buffer
                # full), and nobody else counts it.
                if threading.get_ident() == self._thread_ident:
                    refused += 1
                    last = exc
                if on_drop is not None:  # its sender was told it was taken
                    call_on_drop(on_drop)
            except Exception as exc:
                # Refused by the producer's checks (bad input, a record too large),
                # on any thread: its caller was told it was queued.
                refused += 1
                last = exc
                if on_drop is not None:
                    call_on_drop(on_drop)
        if refused:
            self.dropped += refused
            logger.warning(
                "kafka_asgi: the producer for cluster %r refused %d event(s) queued before"
                " it was up: %r",
                self.cluster,
                refused,
                last,
            )

    def on_its_thread(self) -> bool:
        """Whether the caller runs on this producer's thread (its event loop's)."""
        return self._thread_ident == threading.get_ident()

    @property
    def queued(self) -> int:
        """Events waiting for the producer to come up."""
        return self._early.qsize()

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Flush (within ``shutdown_timeout``) and stop the thread, waiting at most
        ``timeout`` seconds (default: shutdown_timeout + startup_timeout + 5).

        Events that never reached the producer are counted in ``dropped`` and logged.
        """
        limit = self._join_limit(timeout)
        with self._lock:
            thread = self._thread
            mine = self._pid == os.getpid()
            self._stopped = True
        if thread is not None and mine:
            self._end_thread(thread, limit, "")
        self.sender = None
        self._thread = None
        self._drop_early()

    def restart(self, timeout: float | None = None) -> None:
        """Stop the thread as :meth:`stop` does (what the producer holds flushed to it),
        and let the next event start a new one; nothing to do when none runs here.

        Events sent meanwhile still go to the old producer until its lifespan ends
        (then are counted as refused); those that waited for it in the early queue
        go to the new one, started at once for them.
        """
        limit = self._join_limit(timeout)
        with self._lock:
            thread = self._thread
            if thread is None or self._pid != os.getpid() or self._stopped:
                return
        # Not replaced while it runs on: it still writes to self, and a second thread
        # beside it would share its state. Replaced once it has ended (start_soon).
        if not self._end_thread(thread, limit, "; replaced once it ends"):
            self._replace = True
            return
        with self._lock:
            if self._thread is not thread:  # stop() or another restart came first
                return
            self._forget_thread()
        # A send_nowait that found the old thread still there queued its event without
        # starting one; it starts one itself if it queued after the reset above.
        if self._early.qsize():
            self.start_soon()

    def _join_limit(self, timeout: float | None) -> float:
        limit = check_wait("timeout", timeout)
        if limit is None:
            limit = self.options.shutdown_timeout + self.options.startup_timeout + 5.0
        return limit

    def _end_thread(self, thread: threading.Thread, limit: float, note: str) -> bool:
        """Ask ``thread`` to stop (its lifespan flushes the producer) and join it within
        ``limit``; False (logged) if it still runs then."""
        self._stop_requested.set()
        stop = self._stop
        if stop is not None:
            stop()
        thread.join(limit)
        if thread.is_alive():
            self.left_behind = left = self._held_now()
            logger.warning(
                "kafka_asgi: background producer for %r still running after %.1fs%s; "
                "%d event(s) left with it, not delivered so far",
                self.cluster,
                limit,
                note,
                left,
            )
            return False
        return True

    def _held_now(self) -> int:
        """Events queued for the running producer or held by it, undelivered, as seen
        from this thread (the producer's stats() read while its loop runs: a snapshot,
        kept as ``final_stats``, which its thread replaces if it ends)."""
        sender = self.sender
        held = sender.queued if sender is not None else 0
        producer = self._producer
        if producer is not None:
            try:
                stats = producer.stats()
            except Exception:  # read from another thread: the count is all we want
                logger.exception("kafka_asgi: reading the producer's stats failed")
            else:
                self.final_stats = stats
                held += getattr(stats, "buffered", 0) + getattr(stats, "in_flight", 0)
        return held

    def _forget_thread(self) -> None:
        """Let the next start make a new thread (the last one has ended; lock held)."""
        self._thread = None
        self._stop = None
        self._error = None
        self._failed_at = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._stop_requested = threading.Event()
        self.sender = None
        self._producer = None
        self._replace = False

    def _drop_early(self, raised_for: _Early | None = None) -> bool:
        """Count and log the events that wait for a producer that will not take them,
        and tell their senders, but that of ``raised_for`` (its sender is told by an
        exception); whether ``raised_for`` was among them."""
        left = 0
        found = False
        while True:
            try:
                entry = self._early.get_nowait()
            except queue.Empty:
                break
            left += 1
            on_drop = entry[2]
            if entry is raised_for:
                found = True
            elif on_drop is not None:
                call_on_drop(on_drop)
        if left:
            self.dropped += left
            error = self._error
            logger.warning(
                "kafka_asgi: %d event(s) for cluster %r never reached a producer (%s)",
                left,
                self.cluster,
                "it did not start in time" if error is None else f"it failed: {error!r}",
            )
        return found

    def _run(self) -> None:
        self._thread_ident = threading.get_ident()
        # A start tried again replaces these once _done is set; set this run's own.
        ready, done = self._ready, self._done
        try:
            anyio.run(self._main)
        except BaseException as exc:
            self._error = exc
            producer = self._producer
            if producer is not None:
                # What it took and could not deliver is counted from these (its loop
                # has ended: read from this thread, they stay as they are).
                try:
                    self.final_stats = producer.stats()
                except Exception:
                    logger.exception("kafka_asgi: reading the producer's stats failed")
            logger.error(
                "kafka_asgi: background producer thread for %r ended: %r; events are "
                "refused until it is started again, %gs from now",
                self.cluster,
                exc,
                RESTART_DELAY,
            )
        finally:
            self.sender = None
            if not self._stop_requested.is_set():
                # Before the drop: a send_nowait that put its event after the drop sees
                # this and drops it itself.
                self._failed_at = time.monotonic()
                self._drop_early()
            ready.set()
            done.set()
            if self._replace and self._early.qsize():
                # A restart() gave up waiting for this thread: the events queued since
                # are for the next one.
                self.start_soon()

    async def _main(self) -> None:
        stop = anyio.Event()
        schedule = call_soon_threadsafe()
        self._stop = lambda: schedule(stop.set)
        started = time.monotonic()
        async with run_producer(self.options, self._override) as producer:
            self._producer = producer
            self.sender = get_sender(self.cluster)
            self._hand_over_if_ready()
            self._ready.set()
            logger.debug(
                "kafka_asgi: background producer for %r up in %.3fs (pid %d)",
                self.cluster,
                time.monotonic() - started,
                os.getpid(),
            )
            if not self._stop_requested.is_set():
                await stop.wait()
        self.final_stats = producer.stats()

    def _hand_over_if_ready(self) -> None:
        sender = self.sender
        if sender is not None:
            self._hand_over(sender)
