"""kafka_asgi.Producer: buffer records, send them in batches, report every outcome.

Modes, as in lua-resty-kafka:

* async mode, ``send_nowait(topic, value, ...)``: appends to a bounded buffer and
  returns, never awaiting; the flusher task sends in the background.  Outcomes go
  to ``on_delivery`` (per record) and ``error_handle`` (per failed batch).
* sync mode, ``await send(...)``: the same path, plus a wait for the record's
  RecordMetadata (or its error).

The flusher (one task) wakes when a topic has ``batch_num`` records or
``batch_size`` bytes waiting, every ``flush_time``, on ``flush()``, on a sync
``send()`` (after ``linger``) and when a response frees a partition.  It places
records on partitions (accumulator.py), groups the partitions that are ready by
leader, encodes one RecordBatch per partition and sends one ProduceRequest per
broker, up to ``max_in_flight`` of them outstanding per broker.  Without
idempotence a partition has at most one batch in flight, so retries never reorder
its records; with it, up to ``max_in_flight``, kept in order by their sequence
numbers (idempotence.py).

Every record handed over ends in exactly one of: acknowledged (``delivered``),
or reported to ``error_handle``/``on_delivery`` (``failed``), including at close.
``aclose()`` (or leaving ``async with``) flushes within ``close_timeout``, then
reports what is left.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.network.config import timeout_ms
from kafka_asgi.network.host import TaskHost
from kafka_asgi.protocol.errors import KafkaError
from kafka_asgi.protocol.records import BATCH_OVERHEAD

from .accumulator import (
    RECORD_OVERHEAD,
    Batch,
    CheckedRecord,
    Delivery,
    PartitionBuffer,
    PendingRecord,
    TopicBuffer,
    Waiters,
    cut,
    cut_moving_on,
    largest_record,
    place,
    record_bytes,
    too_large,
)
from .errors import (
    BufferFullError,
    DeliveryTimeoutError,
    ProducerClosedError,
    RecordTooLargeError,
)
from .hooks import ProducerHooks, call_hook, combine, trace_injector, without
from .idempotence import Idempotence
from .options import (
    SHARED_CLIENT_OPTIONS,
    ProducerOptions,
    split_producer_options,
)
from .registry import register_producer, unregister_producer
from .reports import ProducerStats, RecordMetadata, Reports
from .sender import Sender, offload_threshold
from .spill_host import SpillSupport
from .spill_seam import SpillHost, spill_seam
from .state import ProducerClient
from .validation import (
    as_bytes,
    check_partition,
    check_record,
    check_topic,
    check_wait,
    coerce_headers,
    timestamp_ns,
)

__all__ = ["Producer", "ProducerStats", "RecordMetadata"]

logger = logging.getLogger("kafka_asgi.producer")

_time_ns = time.time_ns
_INF = math.inf
_NEVER = 1 << 62
# Longest wait for the client to close its connections when the producer closes.
_CLIENT_CLOSE_WAIT = 5.0


def _unsettled(batches: list[Batch]) -> list[Batch]:
    """The batches not yet settled among ``batches``, a split one standing for its
    halves (and theirs, split again): with idempotence either half may still be
    retried after the other is acknowledged."""
    out: list[Batch] = []
    todo = batches[::-1]
    while todo:
        b = todo.pop()
        if b.halves is not None:
            todo.extend(b.halves[::-1])
        elif not b.done:
            out.append(b)
    return out


class Producer(Sender, Idempotence, Reports, SpillSupport):
    """Ship records to Kafka in batches, from async (``send_nowait``) or sync
    (``await send``) callers.  See :mod:`kafka_asgi.producer.options` for options.

    Use ``async with Producer("host:9092", **options) as producer:``, or ``await
    producer.start()`` and ``await producer.aclose()`` (from any task, inside a
    timeout if wished: the background tasks run in a host task of their own).
    The send methods must be called from the event loop's thread.
    """

    def __init__(self, bootstrap: Any = None, **options: Any) -> None:
        client: Any = options.pop("client", None)
        client_options, rest = split_producer_options(options)
        if client is not None:
            for name in SHARED_CLIENT_OPTIONS:
                client_options.pop(name, None)
            if client_options:
                raise TypeError(
                    f"client options ({', '.join(sorted(client_options))}) cannot be "
                    "combined with client=: configure that client instead"
                )
            client_opts = getattr(client, "options", None)
            config = getattr(client_opts, "connection", None)
            if config is not None:
                rest.setdefault("request_timeout", config.request_timeout)
            backoff = getattr(client_opts, "retry_backoff", None)
            if backoff is not None:
                rest.setdefault("retry_backoff", backoff)
        elif bootstrap is None:
            raise TypeError("Producer needs bootstrap servers, e.g. Producer('host:9092')")
        self.options = opts = ProducerOptions.from_options(rest)
        self._own_client = client is None
        if client is None:
            client = KafkaClient(bootstrap, **client_options)
        self._client: ProducerClient = client

        # Hot path state (read by send_nowait on every call).
        self._topics: dict[str, TopicBuffer] = {}  # empty unless accepting records
        self._held = 0  # records from acceptance until delivered or reported
        self._max_buffering = opts.max_buffering
        # Bytes of those records: value, key and headers (accumulator.records_bytes;
        # the per-record overhead is left out so that send_nowait pays one add).
        self._held_bytes = 0
        self._max_buffering_bytes = opts.max_buffering_bytes
        self._batch_num = opts.batch_num
        self._batch_size = opts.batch_size
        self._max_request_size = opts.max_request_size
        # The largest record (accumulator.record_bytes), and the largest value a
        # record without key or headers may have.
        self._largest = largest_record(opts.max_request_size)
        self._max_value = self._largest - RECORD_OVERHEAD
        self._woken = False
        self._wake_event: anyio.Event | None = None

        self._buffers: dict[str, TopicBuffer] = {}  # every topic seen
        self._active: set[PartitionBuffer] = set()
        self._cap = min(opts.batch_size, opts.max_request_size - BATCH_OVERHEAD - 64)
        self._acks = opts.required_acks
        self._timeout_ms = timeout_ms(opts.request_timeout)
        # The client waits a little longer than the broker may take, so a slow
        # acknowledgement arrives as REQUEST_TIMED_OUT rather than a lost connection.
        self._request_wait = opts.request_timeout + 5.0
        self._backoff = opts.retry_backoff
        self._max_retry = opts.max_retry
        self._delivery_timeout = opts.delivery_timeout
        self._idempotent = opts.idempotence
        self._idempotence_implicit = self._idempotent and opts.enable_idempotence is None
        self._codec = opts.compression
        self._level = opts.compression_level
        self._offload_min = offload_threshold(self._codec)
        self._zlimiter = None
        self._zqueue = deque()
        self._zworkers = 0
        self._partitioner = opts.partitioner
        self._value_serializer = opts.value_serializer
        self._key_serializer = opts.key_serializer
        self._on_delivery = opts.on_delivery
        self._error_handle = opts.error_handle

        self._state = "new"  # new, running, closing, closed
        self._loop_thread: int | None = None  # see loop_thread
        # Set once aclose() has finished closing (records reported, spill closed).
        self._closed: anyio.Event | None = None
        self._host: TaskHost | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._next_flush = _INF
        self._force_at = _INF
        self._force_pending = False
        self._retry_at = _INF
        self._waiting_logged_at = -_INF
        self._node_inflight: dict[int, int] = {}
        self._node_gate: dict[int, anyio.Event] = {}
        self._room_event: anyio.Event | None = None
        self._room_bytes = 0  # the fewest bytes a waiter for _room_event needs
        self._progress_event: anyio.Event | None = None

        # Idempotence (KIP-98): producer id, epoch, and a generation number that
        # changes whenever they do (sequence numbers restart at 0 per partition).
        self._pid = -1
        self._pid_epoch = -1
        self._pid_gen = 0
        self._pid_error: KafkaError | None = None
        self._pid_wanted: anyio.Event | None = None
        self._epoch_bumps = 0
        self._seq_probes_resolved = 0
        # Batches in flight per partition: the sequence numbers keep them in order.
        self._part_limit = opts.max_in_flight if self._idempotent else 1

        # Counters.
        self._delivered = 0
        self._failed = 0
        self._retried = 0
        self._inflight_records = 0
        self._bytes_sent = 0
        self._batches_sent = 0
        self._last_error: KafkaError | None = None
        # Records accepted that held + delivered + failed leave out (stats().enqueued),
        # counted off the fast path: +1 for a record handed to the disk by the send
        # path or taken from memory by the disk, or read for the first time from a
        # dead producer's directory (_count_inherited: accepted then), -1 for one
        # read back into memory or reported as dropped by the disk (as failed: see
        # _report_spill_dropped).
        self._off_memory = 0
        # Disk spill (kafka_asgi.producer.spill_seam), None without spill_dir.
        self._spill = spill_seam(opts)

        # Observers (kafka_asgi.integrations.otel / .prometheus): None costs one test
        # per batch and per request, nothing per send_nowait record.
        self._hooks: ProducerHooks | None = None
        self._inject: Any = None
        if opts.inject_trace_context:
            self._inject = inject = trace_injector()
            plain = self.send_nowait

            def send_nowait(
                topic: str,
                value: Any,
                key: Any = None,
                headers: Any = None,
                partition: int | None = None,
                timestamp: int | None = None,
            ) -> None:
                plain(topic, value, key, inject(headers), partition, timestamp)

            # Only producers that asked for it pay for the injection.
            setattr(self, "send_nowait", send_nowait)  # noqa: B010

    def __repr__(self) -> str:
        return f"<Producer {self._state} held={self._held}>"

    @property
    def trace_injector(self) -> Callable[[Any], Any] | None:
        """With ``inject_trace_context=True``, the ``headers -> headers`` function that
        ``send_nowait`` applies in the caller's context (else None). Code that hands
        records to the producer later, on another thread, applies it where the record
        was sent and calls ``Producer.send_nowait(producer, ...)``, which does not."""
        inject: Callable[[Any], Any] | None = self._inject
        return inject

    @property
    def loop_thread(self) -> int | None:
        """``threading.get_ident()`` of the thread whose event loop runs the producer
        (the one ``start()`` ran on); None before ``start()``. Its methods may be called
        on that thread only: they touch the loop's structures without locks, and an
        event loop of another thread (``asyncio.run`` in a worker thread, say) is not
        its loop. Other threads hand records to that loop (the integrations' thread-safe
        sender, ``anyio.from_thread``)."""
        return self._loop_thread

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the client and the background tasks (flusher; producer id).

        Opens no connection: a broker that is down does not fail the start, records
        are buffered and retried (and reported if they cannot be delivered).
        With ``cluster_name`` set, registers the producer under that name (raising
        ProducerAlreadyRegisteredError if another one holds it).  Raises
        ProducerClosedError if ``aclose()`` was called meanwhile (from another task).
        """
        if self._state != "new":
            raise ProducerClosedError(f"a producer can be started once (it is {self._state})")
        # Before the registration below: a thread that finds the producer by its name
        # checks it is on this one before calling it.
        self._loop_thread = threading.get_ident()
        name = self.options.cluster_name
        if name is not None:
            register_producer(name, self)
        # The background tasks live in a host task of their own: start() and
        # aclose() may be awaited from any task, inside fail_after/move_on_after.
        host = TaskHost("kafka_asgi producer")
        try:
            await host.start(self._runner)
        except BaseException:
            if name is not None:
                unregister_producer(name, self)
            self._state = "closed"
            raise
        if self._state == "closed":
            # aclose() ran while the tasks started (from another task): it found
            # nothing to flush and returned, so it falls to us to stop them.
            try:
                if self._tg is not None:
                    self._tg.cancel_scope.cancel()
                await host.aclose(_CLIENT_CLOSE_WAIT + 1.0)
                if self._spill is not None:  # nothing was handed over: a quick close
                    with anyio.CancelScope(shield=True):
                        await self._spill.close(5.0)
            finally:
                if name is not None:
                    unregister_producer(name, self)
            raise ProducerClosedError("the producer was closed while it started")
        self._host = host
        self._state = "running"
        self._topics = self._buffers

    async def _runner(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Own the client and the background tasks until aclose() stops them.

        Runs in the producer's host task (kafka_asgi.network.host), so the
        cancellation of the task that started the producer (a server cancelling
        its lifespan, say) does not reach it: aclose() can still deliver what is
        buffered, then cancels the background tasks itself.
        """
        if self._own_client:
            await self._client.start()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._next_flush = anyio.current_time() + self.options.flush_time
                await tg.start(self._flusher)
                if self._spill is not None:
                    host = SpillHost(
                        self._replay_room,
                        self._replay_record,
                        self._report_spill_dropped,
                        self._respill,
                        self._evacuate_now,
                        self._count_inherited,
                    )
                    await tg.start(self._spill.run, host)
                if self._idempotent:
                    self._pid_wanted = anyio.Event()
                    self._pid_wanted.set()
                    tg.start_soon(
                        self._keep_running,
                        self._producer_id_task,
                        "the producer-id task",
                        name="kafka_asgi producer._producer_id_task",
                    )
                task_status.started()
        finally:
            if self._state == "running":
                # Not stopped by aclose(): the group was cancelled (this task
                # cancelled from outside, say, or a task failing; each withstands a
                # cancellation of its own, see _stray_cancellation).  Nothing is
                # sent until aclose() reports it.
                logger.error(
                    "kafka_asgi producer: its background tasks stopped while it runs;"
                    " records are held until aclose() reports them"
                )
            if self._own_client:
                # Bounded, and not cancelled by the host stopping.
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CLIENT_CLOSE_WAIT):
                    await self._client.aclose()

    # The timeout parameter is the public contract (as Java's close(Duration)).
    async def aclose(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Flush within ``close_timeout`` (or ``timeout`` seconds when given: a caller
        with a deadline of its own, such as a lifespan's ``shutdown_timeout``),
        report what is left, stop.

        Returns within that time (plus a fraction of a second to close the
        connections, and with a spill, up to 5 s to write what is left to disk, so
        that a close out of time keeps the records rather than reporting them lost),
        even when Kafka is unreachable or has stopped reading: requests
        still in flight are cancelled, which closes their connections (see
        kafka_asgi.network.connection). The final flush runs even if the calling task
        is being cancelled.
        """
        wait = check_wait("timeout", timeout)
        if self._state in ("closing", "closed"):
            closed = self._closed
            if closed is not None:
                # Another task is closing: return once it has, as it does.  Bounded:
                # its steps are (close_timeout, then shielded and bounded ones), and
                # it sets this in a finally.
                await closed.wait()
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        self._closed = closed = anyio.Event()
        self._topics = {}  # send_nowait now fails on its slow path
        limit = self.options.close_timeout if wait is None else wait
        why = f"close_timeout={limit}s" if wait is None else f"aclose(timeout={limit})"
        try:
            # Shielded: a lifespan being cancelled still gets its final flush, and
            # move_on_after bounds it.
            with anyio.CancelScope(shield=True), anyio.move_on_after(limit):
                await self._flush_all()
        finally:
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
            host, self._host = self._host, None
            try:
                if host is not None:
                    # Waits (shielded, bounded) for the runner to close the client.
                    await host.aclose(_CLIENT_CLOSE_WAIT + 1.0)
            finally:
                self._state = "closed"
                self._abort_all(
                    ProducerClosedError(
                        f"the producer closed before this record was delivered ({why})"
                    )
                )
                try:
                    if self._spill is not None:
                        # What is left in memory was queued for the disk just above;
                        # shielded (and bounded) as the flush is: a cancelled caller
                        # must not leave it unwritten.
                        with anyio.CancelScope(shield=True):
                            await self._spill.close(5.0)
                finally:
                    try:
                        if self.options.cluster_name is not None:
                            unregister_producer(self.options.cluster_name, self)
                    finally:
                        closed.set()

    # ------------------------------------------------------------------ sending

    def send_nowait(
        self,
        topic: str,
        value: bytes | str | Any,
        key: bytes | str | Any = None,
        headers: Any = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Buffer one record; never awaits, never blocks.

        Raises BufferFullError when ``max_buffering`` records are held or the record
        would take the bytes held past ``max_buffering_bytes``, RecordTooLargeError
        for a record larger than ``max_request_size`` or ``max_buffering_bytes``,
        ValueError for a ``partition`` the topic does not have (when its metadata is
        known already; else it is reported through ``error_handle``),
        ProducerClosedError when not running, TypeError/ValueError for bad input.
        The outcome goes to ``on_delivery``/``error_handle``.
        """
        try:
            t = self._topics.get(topic)
        except TypeError:  # unhashable, so not a str: _enqueue names it
            t = None
        if (
            t is None
            or value.__class__ is not bytes
            or key is not None
            or headers is not None
            or partition is not None
            or timestamp is not None
            or self._held >= self._max_buffering
        ):
            # Everything but the plainest record; raises BufferFullError first.
            self._enqueue(topic, value, key, headers, partition, timestamp, None)
            return
        n = len(value)
        if n > self._max_value:
            raise self._too_large(topic, n + RECORD_OVERHEAD)
        held_bytes = self._held_bytes + n
        if held_bytes > self._max_buffering_bytes:
            self._enqueue(topic, value, key, headers, partition, timestamp, None)
            return
        values = t.values
        values.append(value)
        t.stamps.append(_time_ns())
        self._held += 1
        self._held_bytes = held_bytes
        nbytes = t.nbytes + n
        t.nbytes = nbytes
        if nbytes >= t.wake_bytes or len(values) == self._batch_num:
            t.wake_bytes = _NEVER
            self._wake()

    def check_record(
        self,
        topic: str,
        value: bytes | str | Any,
        key: bytes | str | Any = None,
        headers: Any = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> CheckedRecord:
        """What ``send_nowait`` checks and converts, buffering nothing: ``(topic, value,
        key, headers, partition, timestamp in ms)`` as bytes and plain values, which
        ``send_nowait`` then takes as they are; TypeError/ValueError (RecordTooLargeError)
        for what it would refuse.  Thread-safe: for code that hands records to the
        producer later (the integrations' thread hand-off checks them in the thread
        that sends, so bad input raises there, and a bytearray is copied there)."""
        return check_record(
            topic,
            value,
            key,
            headers,
            partition,
            timestamp,
            self._value_serializer,
            self._key_serializer,
            self._max_request_size,
            self._buffers,  # the names checked before
        )

    async def send(
        self,
        topic: str,
        value: bytes | str | Any,
        key: bytes | str | Any = None,
        headers: Any = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordMetadata:
        """Send one record and return its metadata once Kafka acknowledged it.

        Raises the Kafka error that made it fail (after retries), BufferFullError
        (or waits for room with ``wait_on_buffer_full``), DeliveryTimeoutError
        after ``delivery_timeout`` (the record is then still in the producer).
        Concurrent calls for one partition share a batch.
        """
        hooks = self._hooks
        if hooks is None:
            return await self._send(topic, value, key, headers, partition, timestamp)
        token = call_hook(hooks.send_started, topic, partition)
        try:
            metadata = await self._send(topic, value, key, headers, partition, timestamp)
        except BaseException as exc:
            call_hook(hooks.send_finished, token, None, exc)
            raise
        call_hook(hooks.send_finished, token, metadata, None)
        return metadata

    async def _send(
        self,
        topic: str,
        value: Any,
        key: Any,
        headers: Any,
        partition: int | None,
        timestamp: int | None,
    ) -> RecordMetadata:
        if self._held >= self._max_buffering or self._held_bytes >= self._max_buffering_bytes:
            await self._wait_for_room()
        if self._inject is not None:
            headers = self._inject(headers)
        delivery = Delivery()
        while True:
            try:
                self._enqueue(topic, value, key, headers, partition, timestamp, delivery)
                break
            except BufferFullError as exc:
                # Room for a record but not for this one's bytes: wait for those
                # (the record is converted again then).
                if exc.nbytes == 0:
                    raise
                await self._wait_for_room(exc.nbytes)
        force_at = anyio.current_time() + self.options.linger
        if force_at < self._force_at:
            self._force_at = force_at
        self._wake()
        limit = self.options.delivery_timeout
        try:
            with anyio.move_on_after(limit):
                await delivery.event.wait()
        except BaseException:
            if delivery.event.is_set():
                # The outcome came in the step the caller's own cancellation did: the
                # cancellation wins, so a failure would reach no one.
                self._unheard(delivery)
            raise
        finally:
            if not delivery.event.is_set():
                # No one reads the outcome from here: a failure is reported as a
                # send_nowait one is (error_handle, on_delivery, else logged).
                delivery.abandoned = True
        if not delivery.event.is_set():
            raise DeliveryTimeoutError(
                f"no acknowledgement for the record to {topic!r} within {limit}s; it is "
                "still in the producer; if it fails, on_delivery/error_handle are told (it is "
                "logged without them)"
            )
        if delivery.error is not None:
            raise delivery.error
        metadata: RecordMetadata = delivery.metadata
        return metadata

    async def send_buffered(
        self,
        topic: str,
        value: bytes | str | Any,
        key: bytes | str | Any = None,
        headers: Any = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """``send_nowait``, but with ``wait_on_buffer_full=True`` waits for room
        (up to ``wait_buffer_timeout``, then BufferFullError) instead of failing."""
        spill = self._spill
        if (
            self._held >= self._max_buffering
            or self._held_bytes >= self._max_buffering_bytes
            or (spill is not None and (spill.spilling or spill.adopting))
        ):
            if spill is None or not spill.usable():
                await self._wait_for_room()
            else:
                await self._room_or_spill(spill, topic)
        while True:
            try:
                self.send_nowait(topic, value, key, headers, partition, timestamp)
                return
            except BufferFullError as exc:
                # Room for a record but not for this one's bytes (as in _send).
                if exc.nbytes == 0:
                    raise
                await self._wait_for_room(exc.nbytes)

    # The timeout parameter is the public contract (as Java's flush(timeout)).
    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send everything buffered now and wait until each of those records is
        acknowledged or reported (at most ``timeout``, default ``delivery_timeout``;
        then DeliveryTimeoutError, the records staying in the producer).  If
        ``aclose()`` (another task) stops the producer meanwhile, returns (or raises
        ProducerClosedError, when it stopped before the records were settled) only
        once it has reported the records it did not deliver."""
        limit = check_wait("timeout", timeout)
        if limit is None:
            limit = self.options.delivery_timeout
        if self._state != "running":
            if self._held == 0:
                return
            closed = self._closed
            if closed is not None:
                # aclose() in another task reports what it cannot deliver: not
                # before that is done (bounded here by the flush's own timeout).
                with anyio.move_on_after(limit):
                    await closed.wait()
            raise ProducerClosedError(f"cannot flush a {self._state} producer")
        with anyio.move_on_after(limit):
            if await self._flush_all():
                closed = self._closed
                if self._state != "running" and closed is not None:
                    # aclose() (another task) reported the records: its spill writes
                    # those it queued for the disk, which is part of reporting them.
                    await closed.wait()
                return
            # aclose() (another task) took over: the records not delivered by its
            # final flush are reported when it ends; never return before.
            closed = self._closed
            if closed is not None:
                await closed.wait()
            raise ProducerClosedError(
                "the producer closed during flush(): the records not delivered were "
                "reported (on_delivery, error_handle, or the log)"
            )
        raise DeliveryTimeoutError(
            f"flush did not finish within {limit}s ({self._held} records still held)"
        )

    def add_hooks(self, hooks: ProducerHooks) -> None:
        """Install ``hooks`` (a :class:`~kafka_asgi.producer.hooks.ProducerHooks`):
        told of every Produce request, delivered batch, failure and retry from now on."""
        if not isinstance(hooks, ProducerHooks):
            raise TypeError(f"hooks must be a ProducerHooks, not {hooks!r}")
        self._hooks = combine(self._hooks, hooks)

    def remove_hooks(self, hooks: ProducerHooks) -> None:
        """Uninstall ``hooks`` (no error if they are not installed)."""
        self._hooks = without(self._hooks, hooks)

    @property
    def client(self) -> ProducerClient:
        """The client this producer sends through: its own, or the one given as
        ``client=`` (shared by several producers, with one ``throttle_time_ms`` sum)."""
        return self._client

    @property
    def idempotent(self) -> bool:
        """Whether the producer sends with idempotence (KIP-98): ``enable_idempotence``,
        or its default's choice; False after the cluster refused the default's
        producer id (see ``enable_idempotence``)."""
        return self._idempotent

    def stats(self) -> ProducerStats:
        """Counters (a snapshot)."""
        return ProducerStats(
            # Every record accepted is held, or was delivered or failed, or went to
            # the disk since (each move between memory and disk is in _off_memory).
            enqueued=self._held + self._delivered + self._failed + self._off_memory,
            delivered=self._delivered,
            failed=self._failed,
            retried=self._retried,
            buffered=self._held - self._inflight_records,
            buffered_bytes=self._held_bytes,
            in_flight=self._inflight_records,
            bytes_sent=self._bytes_sent,
            batches_sent=self._batches_sent,
            last_error=self._last_error,
            throttle_time_ms=self._client.throttles.asked_ms,
            **({} if self._spill is None else self._spill.stats()),
        )

    def _count_inherited(self, n: int) -> None:
        """SpillHost.inherited: records a dead producer left on disk, read back for the
        first time (handed over next, each taking its -1 as any record read back)."""
        self._off_memory += n

    def _report_spill_dropped(
        self, topic: str, partition: int, records: list[PendingRecord], error: KafkaError
    ) -> None:
        """SpillHost.report_dropped: records leaving the disk, counted as failed now."""
        self._off_memory -= len(records)
        self._report_dropped(topic, partition, records, error)

    # ------------------------------------------------------------------ enqueue (slow path)

    def _buffer_full(self, size: int = 0) -> BufferFullError:
        if self._held < self._max_buffering:
            record = f" and a record of {size} bytes" if size else ""
            exc = BufferFullError(
                f"buffer overflow: {self._held_bytes} bytes held{record} (max_buffering_bytes="
                f"{self._max_buffering_bytes}); Kafka is slow or unreachable"
            )
            exc.nbytes = size
            return exc
        return BufferFullError(
            f"buffer overflow: {self._held} records held (max_buffering="
            f"{self._max_buffering}); Kafka is slow or unreachable"
        )

    def _too_large(self, topic: str, size: int) -> RecordTooLargeError:
        return too_large(topic, size, self._max_request_size)

    def _topic(self, topic: object) -> TopicBuffer:
        if self._state != "running":
            if self._state == "new":
                raise ProducerClosedError(
                    "the producer is not started: use 'async with Producer(...)' or "
                    "'await producer.start()' first"
                )
            raise ProducerClosedError(f"the producer is {self._state}")
        topic = check_topic(topic)
        t = self._buffers.get(topic)
        if t is None:
            t = self._buffers[topic] = TopicBuffer(topic, self._batch_size)
            if self._topics is not self._buffers:
                self._respill()  # the fast path's dict is a copy while topics spill
        return t

    def _enqueue(
        self,
        topic: str,
        value: object,
        key: object,
        headers: object,
        partition: object,
        timestamp: object,
        delivery: Delivery | None,
    ) -> None:
        """Every record that is not the plainest kind (or the first of its topic)."""
        spill = self._spill
        # Records read back from spill_dir (their Delivery is a FrameTicket) may go
        # over max_buffering by one read: the replayer only reads while there is room.
        replayed = delivery is not None and delivery.__class__ is not Delivery
        if self._held >= self._max_buffering and not replayed and (spill is None or delivery):
            raise self._buffer_full()
        t = self._topics.get(topic) if topic.__class__ is str else None
        if t is None:
            t = self._topic(topic)
        # Checked in the order of validation.coerce_record (the in-memory producer's).
        if value.__class__ is not bytes:
            value = as_bytes(value, "value", self._value_serializer)
        if key is not None and key.__class__ is not bytes:
            key = as_bytes(key, "key", self._key_serializer)
        hdrs = None if headers is None else coerce_headers(headers)
        ts = _time_ns() if timestamp is None else timestamp_ns(timestamp)
        part: int | None = None
        if partition is not None:
            part = index = check_partition(partition)
            meta = self._client.cached_topic(t.name)
            if (
                index is not None
                and meta is not None
                and meta.partitions
                and index >= meta.partition_count
            ):
                # Known now: refused here, not reported later.  A topic whose metadata
                # is not known yet has the record reported through error_handle.
                raise ValueError(
                    f"partition {index} of topic {t.name!r} does not exist: the topic "
                    f"has {meta.partition_count} partitions (0..{meta.partition_count - 1})"
                )
        assert value is None or isinstance(value, bytes)
        assert key is None or isinstance(key, bytes)
        size = record_bytes(value, key, hdrs)
        if size > self._largest:
            raise self._too_large(topic, size)
        nbytes = size - RECORD_OVERHEAD  # as records_bytes counts it
        if nbytes > self._max_buffering_bytes:
            raise RecordTooLargeError(
                f"a record of {nbytes} bytes (value, key and headers) for topic {topic!r} "
                f"is larger than max_buffering_bytes={self._max_buffering_bytes}"
            )
        full = self._held >= self._max_buffering
        bytes_full = self._held_bytes + nbytes > self._max_buffering_bytes
        if spill is not None and delivery is None and spill.takes(topic, full or bytes_full):
            # Behind the records of its topic already on their way to the disk.
            spill.overflow(topic, key, value, hdrs, part, ts // 1_000_000)
            self._off_memory += 1
            return
        if (full or bytes_full) and not replayed:
            raise self._buffer_full(nbytes if bytes_full else 0)
        values = t.values
        if part is not None or delivery is not None or key is not None or hdrs is not None:
            if t.extras is None:
                t.extras = []
            t.extras.append((len(values), key, hdrs, part, delivery))
            t.mixed = True
        values.append(value)
        t.stamps.append(ts)
        self._held += 1
        self._held_bytes += nbytes
        if replayed:
            self._off_memory -= 1  # accepted once already, before it went to the disk
        nbytes = t.nbytes + size
        t.nbytes = nbytes
        if nbytes >= t.wake_bytes or len(values) >= self._batch_num:
            t.wake_bytes = _NEVER
            self._wake()

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            event = self._wake_event
            if event is not None:
                event.set()

    async def _wait_for_room(self, nbytes: int = 0) -> None:
        if not self.options.wait_on_buffer_full:
            raise self._buffer_full(nbytes)
        if self._state != "running":
            raise ProducerClosedError(f"the producer is {self._state}")
        limit = self.options.wait_buffer_timeout
        with anyio.move_on_after(limit):
            while (
                self._held >= self._max_buffering
                or self._held_bytes + nbytes > self._max_buffering_bytes
                or self._held_bytes >= self._max_buffering_bytes
            ):
                if self._state != "running":
                    raise ProducerClosedError(f"the producer is {self._state}")
                if self._room_event is None:
                    self._room_event = anyio.Event()
                    self._room_bytes = nbytes
                else:
                    self._room_bytes = min(self._room_bytes, nbytes)
                self._wake()
                await self._room_event.wait()
            return
        raise BufferFullError(
            f"buffer overflow: still {self._held} records held (max_buffering="
            f"{self._max_buffering}), {self._held_bytes} bytes (max_buffering_bytes="
            f"{self._max_buffering_bytes}) after waiting wait_buffer_timeout={limit}s"
        )

    # ------------------------------------------------------------------ flusher

    async def _flusher(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._wake_event = anyio.Event()
        task_status.started()
        while True:
            try:
                if self._woken:
                    await anyio.lowlevel.checkpoint()
                else:
                    deadline = min(self._next_flush, self._force_at, self._retry_at)
                    delay = deadline - anyio.current_time()
                    if delay > 0:
                        with anyio.move_on_after(delay):
                            await self._wake_event.wait()
                    else:
                        await anyio.lowlevel.checkpoint()
            except anyio.get_cancelled_exc_class() as exc:
                if not self._stray_cancellation(exc, "the flusher"):
                    raise
            self._woken = False
            self._wake_event = anyio.Event()
            try:
                self._cycle(False)
                # Let the requests just started be written before encoding the
                # batches that follow them (the broker works meanwhile).
                await anyio.lowlevel.checkpoint()
                self._encode_ahead()
            except Exception:
                # A bug must not stop deliveries (nor cancel the application's tasks).
                logger.exception("kafka_asgi producer: flusher cycle failed")
                await anyio.sleep(self._backoff or 0.1)

    def _cycle(self, force: bool) -> None:
        """Place buffered records on partitions and send what is ready."""
        if self._spill is not None and self._spill.evacuate:
            self._evacuate()
        now = anyio.current_time()
        if now >= self._next_flush:
            self._force_pending = True
            self._next_flush = now + self.options.flush_time
        if now >= self._force_at:
            self._force_pending = True
            self._force_at = _INF
        undrained = False
        # A copy: a callback run while placing records may send to a new topic.
        for t in list(self._buffers.values()):
            if t.values and not self._drain(t):
                undrained = True
        if self._force_pending:
            force = True
            # Records of a topic still waiting for its metadata are sent as soon
            # as it arrives (its task wakes us), not a flush_time later.
            self._force_pending = undrained
        self._dispatch(now, force)
        if self._spill is not None and self._spill.evacuate:
            self._evacuate()  # topics that started spilling during this cycle
        self._notify_room()

    def _notify_room(self) -> None:
        room = self._room_event
        if (
            room is not None
            and self._held < self._max_buffering
            and self._held_bytes < self._max_buffering_bytes
            and self._held_bytes + self._room_bytes <= self._max_buffering_bytes
        ):
            self._room_event = None
            room.set()

    def _drain(self, t: TopicBuffer) -> bool:
        """Place ``t``'s records on partitions; False if its metadata is missing."""
        meta = self._client.cached_topic(t.name)
        if meta is None or not meta.partitions:
            if not t.fetching and self._tg is not None:
                t.fetching = True
                self._tg.start_soon(self._fetch_topic, t)
            return False
        if meta is not t.meta:
            t.meta = meta
            t.set_partition_count(meta.partition_count)
            t.available = meta.available_partitions()
        values, t.values = t.values, []
        stamps, t.stamps = t.stamps, []
        nbytes, t.nbytes = t.nbytes, 0
        t.wake_bytes = self._batch_size
        extras, t.extras = t.extras, None
        mixed, t.mixed = t.mixed, False
        t.taken += len(values)
        failed = place(
            t,
            values,
            stamps,
            nbytes,
            extras,
            mixed,
            self._partitioner,
            self._cap,
            self._batch_num,
            self._active,
        )
        for record, delivery, error in failed:
            waiters: Waiters | None = [(0, delivery)] if delivery is not None else None
            self._report_failure(t.name, -1, [record], waiters, error, False)
        return True

    # ------------------------------------------------------------------ flush, close

    def _cut_all(self) -> list[Batch]:
        """Cut every partition's pending records; return every unfinished batch."""
        out: list[Batch] = []
        for p in list(self._active):
            if p.pending:
                cut_moving_on(p)
            out.extend(p.batches)
        return out

    async def _flush_all(self) -> bool:
        """Wait until everything held now is delivered or reported: True; False if
        the producer stopped first (aclose() reports the rest)."""
        self._cycle(True)
        targets = self._cut_all()
        self._dispatch(anyio.current_time(), True)
        waiting = [t for t in self._buffers.values() if t.values]
        while True:
            targets = _unsettled(targets)
            still: list[TopicBuffer] = []
            for t in waiting:
                if t.values and (t.fetching or self._client.cached_topic(t.name) is None):
                    still.append(t)
                    continue
                # Its metadata came (or its records failed): place what it has.
                self._cycle(True)
                for p in t.partitions:
                    if p.pending:
                        cut(p)
                    targets.extend(b for b in p.batches if not b.done)
                self._dispatch(anyio.current_time(), True)
            waiting = still
            if not targets and not waiting:
                if self._acks == 0:
                    # Written is not yet read: make sure the brokers have the requests
                    # before flush() returns (and before aclose() closes the sockets).
                    await self._client.confirm_writes()
                return True
            if self._state == "closed":
                return False
            tg = self._tg
            if tg is not None and tg.cancel_scope.cancel_called:
                # The background tasks stopped (see _runner; aclose() cancels them
                # only after this flush): nothing will be sent.
                if self._state != "running":
                    return False  # aclose() reports what is held
                raise ProducerClosedError(
                    f"the producer's background tasks stopped while it runs: {self._held}"
                    " records held (aclose() reports them)"
                )
            if self._progress_event is None:
                self._progress_event = anyio.Event()
            event = self._progress_event
            self._wake()
            with anyio.move_on_after(self.options.flush_time):
                await event.wait()
