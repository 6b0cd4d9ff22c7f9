"""A ``logging.Handler`` that ships log records to Kafka as JSON events.

``emit`` never waits on the network, the event loop or the producer. Where a record
goes, in this order:

1. the handler's own producer, when it was given ``bootstrap=`` (a plain script, a
   WSGI app): a :class:`~kafka_asgi.integrations.background.BackgroundProducer` on
   its own thread, started by the first record and flushed when the main thread ends
   (see :func:`~kafka_asgi.integrations.background.at_exit`) or by ``close()``;
2. the thread-safe sender of a kafka_asgi lifespan running for ``cluster`` in this
   process (from any thread);
3. a ``Producer`` registered under ``cluster`` (``cluster_name=``), when the record
   is logged on its event loop's thread (not another thread's loop);
4. else the handler's own bounded queue, handed over as soon as a lifespan's sender
   is registered (or at the next record that finds a producer).

Every record is counted once: ``sent`` (a producer took it), ``dropped`` (never
reached a producer: refused by the handler, or taken by the thread hand-off and
dropped there, e.g. the producer's buffer full when the hand-off's queue was drained);
of ``sent``, the own producer's records not delivered by ``close()`` are
``undelivered`` (``left_behind``: those left with its thread when the join gave up
waiting for it). What could not be shipped is reported with one warning at
``close()``; never raised into the logging call.

::

    import logging
    from kafka_asgi.integrations.logging import KafkaLogHandler

    # A script or a WSGI app: the handler runs its own producer.
    logging.getLogger("myapp").addHandler(KafkaLogHandler("app-logs", bootstrap="host:9092"))
    # Inside an app whose kafka_asgi lifespan runs the producer: no bootstrap.
    logging.getLogger("myapp").addHandler(KafkaLogHandler("app-logs"))
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
import os
import threading
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from kafka_asgi.cluster.metadata import check_topic
from kafka_asgi.integrations.background import BackgroundProducer, at_exit, cancel_at_exit
from kafka_asgi.integrations.event_logger import default_serializer
from kafka_asgi.integrations.sender import (
    ThreadSafeSender,
    add_sender_listener,
    get_sender,
    in_event_loop,
    remove_sender_listener,
)
from kafka_asgi.producer import Producer, ProducerNotRegisteredError, get_producer

__all__ = ["KafkaLogHandler", "log_serializer"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)).keys()
) | {"message", "asctime", "taskName"}


_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _finite(value: Any) -> Any:
    """``value`` with every float NaN or infinity as a string (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE.get(value, "NaN")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def log_serializer(event: dict[str, Any]) -> bytes:
    """The handler's default: :func:`~kafka_asgi.integrations.event_logger.default_serializer`,
    with a float NaN or infinity (a record's ``extra=`` may hold one) written as the
    string "NaN", "Infinity" or "-Infinity" rather than refused: a log call has no
    caller to refuse it to."""
    try:
        return default_serializer(event)
    except ValueError as exc:
        try:
            finite = _finite(event)
        except RecursionError:  # a cycle: refused as default_serializer refused it
            raise exc from None
        return default_serializer(finite)


_HANDLERS: weakref.WeakSet[KafkaLogHandler] = weakref.WeakSet()


def _forget_parent_records() -> None:
    """In a forked child: the records a handler queued, and its counts, are the
    parent's (gunicorn --preload logs while importing the app in the master). Each
    worker shipping its copy would store them once per worker; the parent ships or
    counts them."""
    for handler in list(_HANDLERS):
        handler._pending.clear()
        handler._taken = handler._refused = handler._lost = 0
        handler.undelivered = handler.left_behind = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_records)


class KafkaLogHandler(logging.Handler):
    """Ship each record as one JSON event to ``topic`` on the producer of ``cluster``.

    Event fields: ``timestamp`` (ms since the epoch), ``level``, ``logger``,
    ``message`` (the handler's formatter output if one is set, else the record's
    message), ``module``, ``function``, ``line``, ``thread``, ``process``,
    ``exception`` (formatted traceback, if any), ``stack`` (if ``stack_info``), every
    ``extra=`` attribute of the record, then the handler's static ``extra`` fields.

    ``bootstrap`` (with ``producer_options`` and ``close_timeout``, the final flush's
    deadline) gives the handler a producer of its own; without it the handler ships
    through the producer running for ``cluster`` (see the module docstring).
    ``max_queue`` bounds the records kept while no producer runs in the process.

    Counts (each record in one of ``sent`` and ``dropped``): ``sent``, records a
    producer took; ``dropped``, records that never reached one, whether the handler
    refused them (``refused``: queue full, producer buffer full, serializer failure,
    still queued at ``close()``) or the thread hand-off took them and dropped them
    later (``lost_in_handoff``: its producer refused them when its queue was drained,
    or they waited for a producer thread that failed or stopped). The own producer's
    records not delivered by ``close()`` (failed, unsent at its deadline, or
    ``left_behind`` with its thread when the join gave up) are ``undelivered``, out of
    ``sent``.
    Records of kafka_asgi's own loggers are skipped unless ``include_own_logs``
    (shipping the producer's own "Kafka unreachable" warnings through the producer
    would feed back into it).
    """

    def __init__(
        self,
        topic: str,
        *,
        cluster: str = "default",
        level: int | str = logging.NOTSET,
        max_queue: int = 10_000,
        key: Callable[[logging.LogRecord], bytes | str | None] | None = None,
        extra: Mapping[str, Any] | None = None,
        serializer: Callable[[dict[str, Any]], bytes | str] = log_serializer,
        include_own_logs: bool = False,
        bootstrap: str | None = None,
        producer_options: Mapping[str, Any] | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        check_topic(topic)  # every record would be refused otherwise
        if not isinstance(cluster, str) or not cluster:
            raise ValueError(f"cluster must be a non-empty str, not {cluster!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a positive int, not {max_queue!r}")
        for name, fn in (("key", key), ("serializer", serializer)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, not {fn!r}")
        if (
            isinstance(close_timeout, bool)
            or not isinstance(close_timeout, (int, float))
            or not math.isfinite(close_timeout)
            or close_timeout < 0
        ):
            # Checked here: the handler's producer would name its own option.
            raise ValueError(
                f"close_timeout must be a finite number of seconds >= 0, not {close_timeout!r}"
            )
        super().__init__(level)
        self.topic = topic
        self.cluster = cluster
        self.max_queue = max_queue
        self.key = key
        self.extra = dict(extra) if extra else None
        self.serializer = serializer
        self.include_own_logs = include_own_logs
        self._taken = 0  # handed to a send_nowait that took them (under self.lock)
        self._refused = 0  # refused here, or by the send_nowait called (under self.lock)
        # Taken, then dropped by the hand-off: told through on_drop, on the producer's
        # thread, which must not take self.lock (logging.shutdown holds it around
        # close(), while close() waits for that thread).
        self._lost = 0
        self._lost_lock = threading.Lock()
        self.undelivered = 0
        self.left_behind = 0
        self._closed = False
        # With the context each record was logged in: handed over in it, so that a
        # producer with inject_trace_context=True injects the trace of the request that
        # logged it, not that of the thread that hands it over later.
        self._pending: deque[tuple[bytes | str, bytes | str | None, contextvars.Context]] = deque()
        _HANDLERS.add(self)
        self._local = threading.local()
        self._own: BackgroundProducer | None = None
        self._stop_at_exit: Callable[[], None] | None = None
        if bootstrap is not None:
            # A cluster name of its own: a lifespan may later run the app's "default".
            self._own = BackgroundProducer(
                cluster=f"kafka_asgi.logging.{topic}.{id(self):x}",
                bootstrap=bootstrap,
                producer_options=producer_options,
                shutdown_timeout=close_timeout,
                thread_queue_size=max_queue,
            )
            # Flushed when the main thread ends, not only by close() at logging.shutdown:
            # by then (atexit) host names can no longer be resolved (see at_exit).
            stop = weakref.WeakMethod(self._own.stop)

            def stop_own() -> None:
                found = stop()
                if found is not None:
                    found()

            self._stop_at_exit = stop_own
            at_exit(stop_own)
            self._own_send = functools.partial(self._own.send_nowait, on_drop=self._lost_one)
        elif producer_options is not None:
            raise TypeError("producer_options needs bootstrap= (the handler's own producer)")
        me = weakref.ref(self)

        def on_sender(cluster: str, sender: ThreadSafeSender) -> None:
            handler = me()
            if handler is not None and cluster == handler.cluster and handler._pending:
                with handler.lock:  # type: ignore[union-attr]
                    handler._drain(handler._via(sender))

        self._listener = on_sender
        if self._own is None:
            add_sender_listener(on_sender)

    def event(self, record: logging.LogRecord) -> dict[str, Any]:
        """The event for ``record`` (override to change its shape)."""
        event: dict[str, Any] = {
            "timestamp": int(record.created * 1000),
            "level": record.levelname,
            "logger": record.name,
            "message": self.format(record) if self.formatter else record.getMessage(),
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "thread": record.threadName,
            "process": record.process,
        }
        if record.exc_info and record.exc_info[0] is not None:
            event["exception"] = "".join(traceback.format_exception(*record.exc_info))
        elif record.exc_text:
            event["exception"] = record.exc_text
        if record.stack_info:
            event["stack"] = record.stack_info
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRS and name not in event:
                event[name] = value
        if self.extra:
            event.update(self.extra)
        return event

    def filter(self, record: logging.LogRecord) -> Any:
        # kafka_asgi's own records are refused here, before Handler.handle takes the
        # handler's lock: at exit logging.shutdown holds that lock around close(),
        # which waits for the own producer's thread, and that thread logs its final
        # flush ("still unsent", ...); taking the lock there would stall both until
        # the join gave up, and the records close() should count would be lost.
        # While closing, they are refused even with include_own_logs, for that reason.
        if record.name.startswith("kafka_asgi") and (not self.include_own_logs or self._closed):
            return False
        # Any record of the own producer's thread, for the same reason and to keep the
        # producer from shipping its own traffic: asyncio's debug lines ("Close <loop>",
        # "poll took"), a warning of asyncio, anyio or ssl during the final flush.
        own = self._own
        if own is not None and own.on_its_thread():
            return False
        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        # A record logged while this thread is inside emit (a serializer or the
        # producer logging) would recurse; it is skipped, not counted.
        if getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            try:
                value = self.serializer(self.event(record))
                key = self.key(record) if self.key is not None else None
            except Exception:
                self._refused += 1
                self.handleError(record)
                return
            self._ship(value, key)
        finally:
            self._local.busy = False

    def _ship(self, value: bytes | str, key: bytes | str | None) -> None:
        # logging.Handler.handle holds self.lock around emit: the pending queue and
        # the counters are only touched under it.
        if self._own is not None:
            self._send(self._own_send, value, key)
            return
        send = self._route()
        if send is None:
            if len(self._pending) >= self.max_queue:
                self._refused += 1
            else:
                self._pending.append((value, key, contextvars.copy_context()))
            return
        if self._pending:
            self._drain(send)
        self._send(send, value, key)

    def _route(self) -> Callable[..., None] | None:
        """Where a record logged now, on this thread, can go without waiting."""
        sender = get_sender(self.cluster)
        if sender is not None:
            return self._via(sender)
        if in_event_loop():
            try:
                producer = get_producer(self.cluster)
            except ProducerNotRegisteredError:
                return None
            if isinstance(producer, Producer) and producer.loop_thread != threading.get_ident():
                # Another thread's loop (asyncio.run in a worker): kept, as on a thread
                # with no loop, until the producer's own thread can hand it over.
                return None
            send: Callable[..., None] = producer.send_nowait
            return send
        return None

    def _via(self, sender: ThreadSafeSender) -> Callable[..., None]:
        """``sender.send_nowait``, telling this handler of a record it drops later."""
        return functools.partial(sender.send_nowait, on_drop=self._lost_one)

    def _lost_one(self) -> None:
        with self._lost_lock:
            self._lost += 1

    @property
    def sent(self) -> int:
        """Records a producer took (handed over, and not dropped by the hand-off)."""
        return self._taken - self._lost

    @property
    def dropped(self) -> int:
        """Records that never reached a producer: :attr:`refused` + :attr:`lost_in_handoff`."""
        return self._refused + self._lost

    @property
    def refused(self) -> int:
        """Records the handler could not hand over (its queue full, the send refused,
        the serializer failed, still queued at ``close()``)."""
        return self._refused

    @property
    def lost_in_handoff(self) -> int:
        """Records the thread hand-off took and dropped later (see the class)."""
        return self._lost

    def _drain(self, send: Callable[..., None]) -> None:
        while self._pending:
            value, key, context = self._pending.popleft()
            context.run(self._send, send, value, key)

    def _send(self, send: Callable[..., None], value: bytes | str, key: bytes | str | None) -> None:
        try:
            send(self.topic, value, key)
        except Exception:
            self._refused += 1
        else:
            self._taken += 1

    @property
    def pending(self) -> int:
        """Records waiting for a producer to start in this process."""
        own = self._own
        return own.queued if own is not None else len(self._pending)

    def flush(self) -> None:
        """Hand the records kept while no producer ran to one, if one is reachable now."""
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                send = self._route()
                if send is not None:
                    self._drain(send)

    def close(self) -> None:
        """Flush; stop the handler's own producer (within ``close_timeout``); count and
        report what could not be shipped. ``logging.shutdown`` calls this at exit."""
        if self._closed:
            return
        self._closed = True
        remove_sender_listener(self._listener)
        self.flush()
        own = self._own
        if own is not None:
            if self._stop_at_exit is not None:
                cancel_at_exit(self._stop_at_exit)
            own.stop()
            # Every record the own producer took: delivered, failed, still held at its
            # deadline, or left with its thread when the join gave up (then the stats
            # are a snapshot, and what its hand-off queue holds is counted too).
            stats = own.final_stats
            failed = getattr(stats, "failed", 0) if stats is not None else 0
            if own.left_behind:
                self.left_behind = own.left_behind
                self.undelivered += failed + own.left_behind
            elif stats is not None:
                self.undelivered += (
                    failed + getattr(stats, "buffered", 0) + getattr(stats, "in_flight", 0)
                )
        with self.lock:  # type: ignore[union-attr]
            left = len(self._pending)
            self._pending.clear()
            self._refused += left
        if self.dropped or self.undelivered:
            refused, lost = self._refused, self._lost
            logging.getLogger("kafka_asgi.integrations").warning(
                "kafka_asgi: KafkaLogHandler(%r) could not ship %d record(s) "
                "(%d never reached a producer%s: %d refused by the handler, %d dropped by "
                "the thread hand-off; %d not delivered%s); %d shipped",
                self.topic,
                refused + lost + self.undelivered,
                refused + lost,
                f" - no producer ran for cluster {self.cluster!r}" if left else "",
                refused,
                lost,
                self.undelivered,
                f", {self.left_behind} of them left with the producer's thread, still "
                "running when the join gave up"
                if self.left_behind
                else "",
                self._taken - lost - self.undelivered,
            )
        super().close()
