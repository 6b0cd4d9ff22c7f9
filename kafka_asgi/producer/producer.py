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
broker, up to ``max_in_flight`` of them outstanding per broker; a partition has at
most one batch in flight, so retries never reorder its records.

Every record handed over ends in exactly one of: acknowledged (``delivered``),
or reported to ``error_handle``/``on_delivery`` (``failed``), including at close.
``aclose()`` (or leaving ``async with``) flushes within ``close_timeout``, then
reports what is left.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import anyio
import anyio.abc
import anyio.lowlevel

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.cluster.metadata import TopicMetadata
from kafka_asgi.cluster.options import split_client_options
from kafka_asgi.network.errors import ConnectError, NetworkError, RequestTimeout, TLSError
from kafka_asgi.protocol.errors import (
    BrokerNotAvailableError,
    KafkaError,
    LeaderNotAvailableError,
    ProtocolError,
    error_for_code,
)
from kafka_asgi.protocol.messages import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProduceRequest,
    ProduceResponse,
)
from kafka_asgi.protocol.messages.produce import (
    PartitionProduceData,
    PartitionProduceResponse,
    TopicProduceData,
)
from kafka_asgi.protocol.records import (
    BATCH_OVERHEAD,
    encode_batch_columns,
    set_producer_state,
)

from .accumulator import (
    RECORD_OVERHEAD,
    Batch,
    Delivery,
    Extra,
    PartitionBuffer,
    Record,
    TopicBuffer,
    Waiters,
    cut,
    cut_moving_on,
    header_size,
    place,
    records_of,
)
from .errors import (
    BufferFullError,
    DeliveryTimeoutError,
    ProducerClosedError,
    RecordTooLargeError,
)
from .options import ProducerOptions
from .registry import register_producer, unregister_producer

__all__ = ["Producer", "ProducerStats", "RecordMetadata"]

logger = logging.getLogger("kafka_asgi.producer")

_time_ns = time.time_ns
_INF = math.inf
_NEVER = 1 << 62
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_INT64_MAX = (1 << 63) - 1
# Produce v3 is the first to carry magic-2 record batches (KIP-98).
_PRODUCE_MIN_VERSION = 3
# Codes whose meaning is "the broker may have written the batch" (the leader
# appended it, then waiting for the replicas failed): not retried without
# idempotence, for a retry could duplicate.
_MAYBE_WRITTEN_CODES = frozenset({7, 20})  # REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND
_TOO_LARGE_CODES = frozenset({10, 18})  # MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE
_DUPLICATE_SEQUENCE = 46
# OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID: the
# broker lost or rejects our producer state; KIP-360: start a new one and resend.
_PRODUCER_STATE_CODES = frozenset({45, 47, 59})
_SEQ_MASK = 0x7FFFFFFF  # sequence numbers wrap from Int32.MAX to 0 (KIP-98)
# Longest pause between tries while no broker can be reached (they start at
# retry_backoff and double): a broker back from a restart is found within this.
_STALL_BACKOFF_CAP = 1.0


def _unreachable(error: KafkaError) -> bool:
    """No broker could be connected to: nothing was written, no broker answered.

    Such tries do not count against max_retry; the records wait (up to
    delivery_timeout) for a broker to come back.  A TLS handshake failure is
    excluded: it is a configuration problem more often than an outage.
    """
    return isinstance(error, ConnectError) and not isinstance(error, TLSError)


class RecordMetadata(NamedTuple):
    """Where Kafka stored a record.  ``offset`` is -1 when unknown (acks=0, or a
    batch the broker had already stored); ``timestamp`` is the record's, or the
    broker's log-append time when the topic uses LogAppendTime."""

    topic: str
    partition: int
    offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """Counters since the producer was made (records unless named otherwise)."""

    enqueued: int
    """Records accepted by the send methods."""
    delivered: int
    """Acknowledged by Kafka (or written, with acks=0)."""
    failed: int
    """Reported to error_handle/on_delivery as not delivered."""
    retried: int
    """Record sends repeated after a retriable error."""
    buffered: int
    """Held now and not in flight."""
    in_flight: int
    """In Produce requests awaiting their response now."""
    bytes_sent: int
    """Bytes of acknowledged record batches."""
    batches_sent: int
    """Acknowledged record batches."""
    last_error: KafkaError | None
    """The latest error reported for a record."""


class _Client(Protocol):
    """What the producer uses of KafkaClient (an in-memory double can stand in)."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def cached_topic(self, topic: str) -> TopicMetadata | None: ...

    def request_refresh(self) -> None: ...

    def note_error(self, error: KafkaError) -> bool: ...

    async def confirm_writes(self, timeout: float | None = None) -> None: ...  # noqa: ASYNC109

    async def fetch_metadata(self, topic: str) -> TopicMetadata: ...

    async def send(
        self,
        node_id: int,
        request: Any,
        *,
        min_version: int | None = None,
        max_version: int | None = None,
        expect_response: bool = True,
        request_timeout: float | None = None,
    ) -> Any: ...

    async def send_any(
        self,
        request: Any,
        *,
        min_version: int | None = None,
        max_version: int | None = None,
        expect_response: bool = True,
        request_timeout: float | None = None,
    ) -> Any: ...


def _as_bytes(value: object, what: str, serializer: Any) -> bytes | None:
    """The bytes of a value or key that is not already ``bytes``."""
    if value is None:
        return None
    if serializer is not None and not isinstance(value, (bytes, bytearray, memoryview)):
        try:
            out = serializer(value)
        except Exception as exc:
            raise TypeError(f"{what}_serializer failed on {value!r:.80}: {exc!r}") from exc
        if isinstance(out, str):
            return out.encode()
        if not isinstance(out, (bytes, bytearray, memoryview)):
            raise TypeError(f"{what}_serializer must return bytes, returned {type(out).__name__}")
        return bytes(out)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(
        f"{what} must be bytes, str or None, not {type(value).__name__} "
        f"(set {what}_serializer, e.g. {what}_serializer='json', to send other objects)"
    )


def _coerce_headers(headers: object) -> list[tuple[str, bytes | None]] | None:
    if isinstance(headers, Mapping):
        items: Any = headers.items()
    elif isinstance(headers, (list, tuple)):
        items = headers
    else:
        raise TypeError(
            "headers must be a mapping or a sequence of (str, bytes | str | None) pairs, "
            f"not {type(headers).__name__}"
        )
    out: list[tuple[str, bytes | None]] = []
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError(f"each header must be a (name, value) pair, not {item!r:.80}")
        name, value = item
        if not isinstance(name, str):
            raise TypeError(f"header name must be a str, not {name!r:.80}")
        if value is not None and value.__class__ is not bytes:
            if isinstance(value, str):
                value = value.encode()
            elif isinstance(value, (bytearray, memoryview)):
                value = bytes(value)
            else:
                raise TypeError(
                    f"header {name!r} value must be bytes, str or None, not {type(value).__name__}"
                )
        out.append((name, value))
    return out or None


class Producer:
    """Ship records to Kafka in batches, from async (``send_nowait``) or sync
    (``await send``) callers.  See :mod:`kafka_asgi.producer.options` for options.

    Use ``async with Producer("host:9092", **options) as producer:``, or ``await
    producer.start()`` and ``await producer.aclose()`` from the same task (an ASGI
    lifespan does that).  The send methods must be called from the event loop's
    thread.
    """

    def __init__(self, bootstrap: Any = None, **options: Any) -> None:
        client: Any = options.pop("client", None)
        client_options, rest = split_client_options(options)
        # Both a client option and a producer setting (Produce timeout, retry pause).
        for name in ("request_timeout", "retry_backoff"):
            if name in client_options:
                rest[name] = client_options[name]
                if client is not None:
                    del client_options[name]
        if client is not None:
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
        self._client: _Client = client

        # Hot path state (read by send_nowait on every call).
        self._topics: dict[str, TopicBuffer] = {}  # empty unless accepting records
        self._held = 0  # records from acceptance until delivered or reported
        self._max_buffering = opts.max_buffering
        self._batch_num = opts.batch_num
        self._batch_size = opts.batch_size
        self._max_request_size = opts.max_request_size
        # The largest value a record without key or headers may have.
        self._max_value = opts.max_request_size - BATCH_OVERHEAD - RECORD_OVERHEAD - 20
        self._woken = False
        self._wake_event: anyio.Event | None = None

        self._buffers: dict[str, TopicBuffer] = {}  # every topic seen
        self._active: set[PartitionBuffer] = set()
        self._cap = min(opts.batch_size, opts.max_request_size - BATCH_OVERHEAD - 64)
        self._acks = opts.required_acks
        self._timeout_ms = min(int(opts.request_timeout * 1000), 0x7FFFFFFF)
        # The client waits a little longer than the broker may take, so a slow
        # acknowledgement arrives as REQUEST_TIMED_OUT rather than a lost connection.
        self._request_wait = opts.request_timeout + 5.0
        self._backoff = opts.retry_backoff
        self._max_retry = opts.max_retry
        self._delivery_timeout = opts.delivery_timeout
        self._idempotent = opts.enable_idempotence
        self._codec = opts.compression
        self._level = opts.compression_level
        self._partitioner = opts.partitioner
        self._value_serializer = opts.value_serializer
        self._key_serializer = opts.key_serializer
        self._on_delivery = opts.on_delivery
        self._error_handle = opts.error_handle

        self._state = "new"  # new, running, closing, closed
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._next_flush = _INF
        self._force_at = _INF
        self._force_pending = False
        self._retry_at = _INF
        self._node_inflight: dict[int, int] = {}
        self._room_event: anyio.Event | None = None
        self._progress_event: anyio.Event | None = None

        # Idempotence (KIP-98): producer id, epoch, and a generation number that
        # changes whenever they do (sequence numbers restart at 0 per partition).
        self._pid = -1
        self._pid_epoch = -1
        self._pid_gen = 0
        self._pid_error: KafkaError | None = None
        self._pid_wanted: anyio.Event | None = None

        # Counters.
        self._delivered = 0
        self._failed = 0
        self._retried = 0
        self._inflight_records = 0
        self._bytes_sent = 0
        self._batches_sent = 0
        self._last_error: KafkaError | None = None

    def __repr__(self) -> str:
        return f"<Producer {self._state} held={self._held}>"

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
        ProducerAlreadyRegisteredError if another one holds it).
        """
        if self._state != "new":
            raise ProducerClosedError(f"a producer can be started once (it is {self._state})")
        name = self.options.cluster_name
        if name is not None:
            register_producer(name, self)
        try:
            async with AsyncExitStack() as stack:
                host = await stack.enter_async_context(anyio.create_task_group())
                await host.start(self._runner)
                self._stack = stack.pop_all()
        except BaseException:
            if name is not None:
                unregister_producer(name, self)
            self._state = "closed"
            raise
        self._state = "running"
        self._topics = self._buffers

    async def _runner(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Own the client and the background tasks until aclose() stops them.

        Shielded from the cancellation of the task that started the producer (a
        server cancelling its lifespan, say), so that aclose() can still deliver
        what is buffered; aclose() then cancels the background tasks itself.
        """
        with anyio.CancelScope(shield=True):
            if self._own_client:
                await self._client.start()
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    self._next_flush = anyio.current_time() + self.options.flush_time
                    await tg.start(self._flusher)
                    if self._idempotent:
                        self._pid_wanted = anyio.Event()
                        self._pid_wanted.set()
                        tg.start_soon(self._producer_id_task)
                    task_status.started()
            finally:
                if self._own_client:
                    # Not cancelled: aclose() stops the task group above, not this scope.
                    await self._client.aclose()

    async def aclose(self) -> None:
        """Flush within ``close_timeout``, report what is left, stop (same task as start).

        Returns within ``close_timeout`` (plus a fraction of a second to close the
        connections), even when Kafka is unreachable or has stopped reading: requests
        still in flight are cancelled, which closes their connections (see
        kafka_asgi.network.connection). The final flush runs even if the calling task
        is being cancelled.
        """
        if self._state in ("closing", "closed"):
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        self._topics = {}  # send_nowait now fails on its slow path
        timeout = self.options.close_timeout
        try:
            # Shielded: a lifespan being cancelled still gets its final flush, and
            # move_on_after bounds it.
            with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
                await self._flush_all()
        finally:
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
            stack, self._stack = self._stack, None
            try:
                if stack is not None:
                    # Waits for the runner (shielded itself) to close the client.
                    await stack.aclose()
            finally:
                self._state = "closed"
                self._abort_all(
                    ProducerClosedError(
                        f"the producer closed before this record was delivered "
                        f"(close_timeout={timeout}s)"
                    )
                )
                if self.options.cluster_name is not None:
                    unregister_producer(self.options.cluster_name, self)

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

        Raises BufferFullError when ``max_buffering`` records are held,
        RecordTooLargeError for a record larger than ``max_request_size``,
        ProducerClosedError when not running, TypeError/ValueError for bad input.
        The outcome goes to ``on_delivery``/``error_handle``.
        """
        t = self._topics.get(topic)
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
        values = t.values
        values.append(value)
        t.stamps.append(_time_ns())
        self._held += 1
        nbytes = t.nbytes + n
        t.nbytes = nbytes
        if nbytes >= t.wake_bytes or len(values) == self._batch_num:
            t.wake_bytes = _NEVER
            self._wake()

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
        if self._held >= self._max_buffering:
            await self._wait_for_room()
        delivery = Delivery()
        self._enqueue(topic, value, key, headers, partition, timestamp, delivery)
        force_at = anyio.current_time() + self.options.linger
        if force_at < self._force_at:
            self._force_at = force_at
        self._wake()
        limit = self.options.delivery_timeout
        with anyio.move_on_after(limit):
            await delivery.event.wait()
        if not delivery.event.is_set():
            raise DeliveryTimeoutError(
                f"no acknowledgement for the record to {topic!r} within {limit}s; it is "
                "still in the producer and will be reported to on_delivery/error_handle"
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
        if self._held >= self._max_buffering:
            await self._wait_for_room()
        self.send_nowait(topic, value, key, headers, partition, timestamp)

    # The timeout parameter is the public contract (as Java's flush(timeout)).
    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send everything buffered now and wait until each of those records is
        acknowledged or reported (at most ``timeout``, default ``delivery_timeout``;
        then DeliveryTimeoutError, the records staying in the producer)."""
        if self._state != "running":
            if self._held == 0:
                return
            raise ProducerClosedError(f"cannot flush a {self._state} producer")
        limit = self.options.delivery_timeout if timeout is None else timeout
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
            raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
        with anyio.move_on_after(limit):
            await self._flush_all()
            return
        raise DeliveryTimeoutError(
            f"flush did not finish within {limit}s ({self._held} records still held)"
        )

    def stats(self) -> ProducerStats:
        """Counters (a snapshot)."""
        return ProducerStats(
            enqueued=self._held + self._delivered + self._failed,
            delivered=self._delivered,
            failed=self._failed,
            retried=self._retried,
            buffered=self._held - self._inflight_records,
            in_flight=self._inflight_records,
            bytes_sent=self._bytes_sent,
            batches_sent=self._batches_sent,
            last_error=self._last_error,
        )

    # ------------------------------------------------------------------ enqueue (slow path)

    def _buffer_full(self) -> BufferFullError:
        return BufferFullError(
            f"buffer overflow: {self._held} records held (max_buffering="
            f"{self._max_buffering}); Kafka is slow or unreachable"
        )

    def _too_large(self, topic: str, size: int) -> RecordTooLargeError:
        return RecordTooLargeError(
            f"a record of about {size} bytes for topic {topic!r} cannot fit in a request "
            f"of max_request_size={self._max_request_size} bytes"
        )

    def _topic(self, topic: object) -> TopicBuffer:
        if self._state != "running":
            if self._state == "new":
                raise ProducerClosedError(
                    "the producer is not started: use 'async with Producer(...)' or "
                    "'await producer.start()' first"
                )
            raise ProducerClosedError(f"the producer is {self._state}")
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, not {type(topic).__name__}")
        if not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
            raise ValueError(
                f"invalid topic name {topic!r}: 1 to 249 characters of a-z, A-Z, 0-9, '.', "
                "'_' and '-'"
            )
        t = self._buffers.get(topic)
        if t is None:
            t = self._buffers[topic] = TopicBuffer(topic, self._batch_size)
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
        if self._held >= self._max_buffering:
            raise self._buffer_full()
        t = self._topics.get(topic)
        if t is None:
            t = self._topic(topic)
        if value.__class__ is not bytes:
            value = _as_bytes(value, "value", self._value_serializer)
        if key is not None and key.__class__ is not bytes:
            key = _as_bytes(key, "key", self._key_serializer)
        hdrs = None if headers is None else _coerce_headers(headers)
        if timestamp is None:
            ts = _time_ns()
        elif isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise TypeError(
                f"timestamp must be an int (milliseconds since the epoch) or None, "
                f"not {type(timestamp).__name__}"
            )
        elif not 0 <= timestamp <= _INT64_MAX:
            raise ValueError(f"timestamp must be >= 0 (milliseconds), not {timestamp!r}")
        else:
            ts = timestamp * 1_000_000  # kept in ns, as the clock's
        if partition is not None:
            if isinstance(partition, bool) or not isinstance(partition, int):
                raise TypeError(f"partition must be an int or None, not {partition!r}")
            if partition < 0:
                raise ValueError(f"partition must be >= 0, not {partition!r}")
        assert value is None or isinstance(value, bytes)
        assert key is None or isinstance(key, bytes)
        size = RECORD_OVERHEAD + (len(value) if value is not None else 0)
        if key is not None:
            size += len(key)
        if hdrs is not None:
            size += header_size(hdrs)
        if size > self._max_request_size - BATCH_OVERHEAD - 20:
            raise self._too_large(topic, size)
        values = t.values
        if partition is not None or delivery is not None or key is not None or hdrs is not None:
            if t.extras is None:
                t.extras = []
            t.extras.append((len(values), key, hdrs, partition, delivery))
            t.mixed = True
        values.append(value)
        t.stamps.append(ts)
        self._held += 1
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

    async def _wait_for_room(self) -> None:
        if not self.options.wait_on_buffer_full:
            raise self._buffer_full()
        if self._state != "running":
            raise ProducerClosedError(f"the producer is {self._state}")
        limit = self.options.wait_buffer_timeout
        with anyio.move_on_after(limit):
            while self._held >= self._max_buffering:
                if self._state != "running":
                    raise ProducerClosedError(f"the producer is {self._state}")
                if self._room_event is None:
                    self._room_event = anyio.Event()
                self._wake()
                await self._room_event.wait()
            return
        raise BufferFullError(
            f"buffer overflow: still {self._held} records held (max_buffering="
            f"{self._max_buffering}) after waiting wait_buffer_timeout={limit}s"
        )

    # ------------------------------------------------------------------ flusher

    async def _flusher(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._wake_event = anyio.Event()
        task_status.started()
        while True:
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
        self._notify_room()

    def _notify_room(self) -> None:
        room = self._room_event
        if room is not None and self._held < self._max_buffering:
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
        t.drains += 1
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

    def _leader(self, p: PartitionBuffer) -> int:
        meta = self._client.cached_topic(p.topic.name)
        if meta is None:
            return -1
        pm = meta.partitions.get(p.index)
        return -1 if pm is None else pm.leader

    def _dispatch(self, now: float, force: bool) -> None:
        """Send the ready batches: one request per leader, within max_in_flight."""
        by_node: dict[int, list[Batch]] = {}
        retry_at = _INF
        batch_num = self._batch_num
        batch_size = self._batch_size
        for p in list(self._active):
            if force and p.pending and p.batches:
                # Cut records behind a batch still in flight or waiting to be
                # retried: a batch's age (delivery_timeout) counts from its cut, so
                # records must not sit uncut through a long outage.
                cut_moving_on(p)
            if p.inflight:
                continue
            if p.batches:
                b = p.batches[0]
                if b.not_before > now:
                    if b.not_before < retry_at:
                        retry_at = b.not_before
                    continue
            elif p.pending:
                if force or len(p.pending) >= batch_num or p.nbytes >= batch_size:
                    b = cut_moving_on(p)
                else:
                    continue
            else:
                self._active.discard(p)
                continue
            leader = self._leader(p)
            if leader < 0:
                self._client.request_refresh()
                self._attempt_failed(
                    b,
                    LeaderNotAvailableError(
                        f"no leader known for {p.topic.name!r} partition {p.index}"
                    ),
                    False,
                )
                if not b.done and b.not_before < retry_at:
                    retry_at = b.not_before
                continue
            group = by_node.get(leader)
            if group is None:
                by_node[leader] = [b]
            else:
                group.append(b)
        self._retry_at = retry_at
        if not by_node:
            return
        if self._idempotent and self._pid < 0:
            error = self._pid_error
            if error is not None:
                stalled = _unreachable(error)
                for group in by_node.values():
                    for b in group:
                        self._attempt_failed(b, error, False, unreachable=stalled)
            return
        for node, group in by_node.items():
            self._send_to(node, group)

    def _send_to(self, node: int, batches: list[Batch]) -> None:
        """Start Produce requests to ``node`` for ``batches`` (as slots allow)."""
        slots = self.options.max_in_flight - self._node_inflight.get(node, 0)
        limit = self._max_request_size
        i = 0
        n = len(batches)
        while i < n and slots > 0:
            request_batches: list[Batch] = []
            size = 0
            while i < n:
                b = self._encode(batches[i])
                if b is None:
                    i += 1
                    continue
                batches[i] = b  # the first half, if it was split
                assert b.data is not None
                if request_batches and size + len(b.data) > limit:
                    break
                request_batches.append(b)
                size += len(b.data)
                i += 1
            if not request_batches:
                break
            slots -= 1
            self._start_request(node, request_batches)

    def _encode(self, b: Batch) -> Batch | None:
        """Encode (and for idempotence stamp) ``b``; the batch to send in its place
        (its first half when it had to be split), or None if it failed."""
        p = b.part
        try:
            if self._idempotent:
                gen = self._pid_gen
                if b.data is None or b.pid_gen != gen:
                    if p.pid_gen != gen:
                        p.pid_gen = gen
                        p.next_seq = 0
                    b.base_seq = p.next_seq
                    b.pid_gen = gen
                    p.next_seq = (p.next_seq + len(b.values)) & _SEQ_MASK
                    if b.data is not None:
                        # Encoded for an earlier producer id: only the stamp changes.
                        b.data = set_producer_state(
                            b.data,
                            producer_id=self._pid,
                            producer_epoch=self._pid_epoch,
                            base_sequence=b.base_seq,
                        )
            if b.data is None:
                # Without idempotence the producer id, epoch and sequence stay -1.
                b.data = encode_batch_columns(
                    b.values,
                    b.stamps,
                    b.keys,
                    b.headers,
                    compression=self._codec,
                    compression_level=self._level,
                    producer_id=self._pid,
                    producer_epoch=self._pid_epoch,
                    base_sequence=b.base_seq,
                )
        except KafkaError as exc:
            self._fail_batch(b, exc, False)
            return None
        except (TypeError, ValueError) as exc:
            self._fail_batch(b, KafkaError(f"cannot encode the batch: {exc}"), False)
            return None
        if len(b.data) > self._max_request_size and len(b.values) > 1:
            # The size estimate was short (records of very different sizes).
            return self._encode(self._split(b))
        return b

    def _encode_ahead(self) -> None:
        """Encode the next batch of partitions in flight, while the broker works."""
        if self._idempotent and self._pid < 0:
            return
        for p in list(self._active):
            if p.inflight and len(p.batches) > 1:
                b = p.batches[1]
                if b.data is None or (self._idempotent and b.pid_gen != self._pid_gen):
                    self._encode(b)

    def _split(self, b: Batch) -> Batch:
        """Replace ``b`` (not in flight) by its two halves; the first half."""
        p = b.part
        index = p.batches.index(b)
        del p.batches[index]
        if b.base_seq >= 0 and b.pid_gen == p.pid_gen:
            self._rewind(p, b.base_seq)
        n = len(b.values)
        half = n // 2
        first = b.slice(0, half, b.nbytes // 2)
        second = b.slice(half, n, b.nbytes - b.nbytes // 2)
        if b.waiters:
            first.waiters = [(i, d) for i, d in b.waiters if i < half] or None
            second.waiters = [(i - half, d) for i, d in b.waiters if i >= half] or None
        for half_batch in (first, second):
            half_batch.attempts = b.attempts
            half_batch.maybe_written = b.maybe_written
            half_batch.born = b.born
            half_batch.stalls = b.stalls
        p.batches.insert(index, second)
        p.batches.insert(index, first)
        b.done = True
        b.replaced_by = second
        return first

    @staticmethod
    def _rewind(p: PartitionBuffer, seq: int) -> None:
        """Sequence numbers from ``seq`` on were not used: give them out again (KIP-98:
        the broker wants them contiguous), to the batches queued from there."""
        p.next_seq = seq
        for queued in p.batches:
            if queued.base_seq >= 0 and not queued.sent and queued.pid_gen == p.pid_gen:
                queued.pid_gen = -1  # restamped (set_producer_state) when sent

    def _start_request(self, node: int, batches: list[Batch]) -> None:
        topics: dict[str, list[PartitionProduceData]] = {}
        count = 0
        for b in batches:
            p = b.part
            p.inflight = True
            b.sent = True
            count += len(b.values)
            parts = topics.get(p.topic.name)
            if parts is None:
                parts = topics[p.topic.name] = []
            parts.append(PartitionProduceData(index=p.index, records=b.data))
        request = ProduceRequest(
            transactional_id=None,
            acks=self._acks,
            timeout_ms=self._timeout_ms,
            topic_data=[TopicProduceData(name=n, partition_data=d) for n, d in topics.items()],
        )
        self._node_inflight[node] = self._node_inflight.get(node, 0) + 1
        self._inflight_records += count
        assert self._tg is not None
        self._tg.start_soon(self._request, node, batches, request, count)

    async def _request(
        self, node: int, batches: list[Batch], request: ProduceRequest, count: int
    ) -> None:
        try:
            try:
                response = await self._client.send(
                    node,
                    request,
                    min_version=_PRODUCE_MIN_VERSION,
                    expect_response=self._acks != 0,
                    request_timeout=self._request_wait,
                )
            except ConnectError as exc:
                # Never connected: nothing was written.
                self._settle(batches, count, node)
                for b in batches:
                    self._attempt_failed(b, exc, False, unreachable=_unreachable(exc))
            except (NetworkError, ProtocolError) as exc:
                # The connection broke, or the answer was late or unreadable, after
                # the request may have been written.
                self._settle(batches, count, node)
                for b in batches:
                    self._attempt_failed(b, exc, True)
            except KafkaError as exc:
                # Raised before anything was written: no common API version, a node
                # the metadata no longer has (stale: refresh and retry), ...
                self._settle(batches, count, node)
                stale = isinstance(exc, BrokerNotAvailableError)
                if stale:
                    self._client.request_refresh()
                for b in batches:
                    self._attempt_failed(b, exc, False, retriable=True if stale else None)
            except Exception as exc:
                logger.exception("kafka_asgi producer: unexpected error sending to node %d", node)
                self._settle(batches, count, node)
                for b in batches:
                    error = KafkaError(f"unexpected error sending to node {node}: {exc!r}")
                    self._attempt_failed(b, error, True)
            else:
                self._settle(batches, count, node)
                if response is None:
                    for b in batches:
                        self._complete(b, -1, -1)
                else:
                    self._handle_response(response, batches)
        finally:
            self._wake()

    def _settle(self, batches: list[Batch], count: int, node: int) -> None:
        """The request is over: its partitions and node slot are free again."""
        self._node_inflight[node] -= 1
        self._inflight_records -= count
        for b in batches:
            b.part.inflight = False

    def _handle_response(self, response: ProduceResponse, batches: list[Batch]) -> None:
        results: dict[tuple[str, int], PartitionProduceResponse] = {}
        for topic in response.responses:
            for part in topic.partition_responses:
                results[(topic.name, part.index)] = part
        for b in batches:
            p = b.part
            pr = results.get((p.topic.name, p.index))
            if pr is None:
                self._attempt_failed(b, KafkaError(f"the broker did not answer for {p!r}"), True)
                continue
            code = pr.error_code
            if code == 0:
                self._complete(b, pr.base_offset, pr.log_append_time_ms)
            elif code == _DUPLICATE_SEQUENCE and self._idempotent:
                # KIP-98: the broker already has this batch (an earlier attempt got
                # through); its offset is not known any more.
                self._complete(b, -1, -1)
            else:
                error = error_for_code(code)(pr.error_message)
                if code in _TOO_LARGE_CODES and len(b.values) > 1:
                    # The topic's max.message.bytes is lower than our batch: halve it.
                    self._split(b)
                elif code in _PRODUCER_STATE_CODES and self._idempotent:
                    self._reset_producer_id(error)
                    self._attempt_failed(b, error, False, retriable=True)
                else:
                    self._attempt_failed(b, error, code in _MAYBE_WRITTEN_CODES)

    def _attempt_failed(
        self,
        b: Batch,
        error: KafkaError,
        maybe_written: bool,
        *,
        retriable: bool | None = None,
        unreachable: bool = False,
    ) -> None:
        """One try of ``b`` failed: back off and retry, or report it."""
        if b.done:
            return
        if unreachable:
            self._stalled(b, error)
            return
        if maybe_written:
            b.maybe_written = True
        b.attempts += 1
        can_retry = error.retriable if retriable is None else retriable
        if (
            not can_retry
            or (maybe_written and not self._idempotent)
            or (b.attempts > self._max_retry)
        ):
            self._fail_batch(b, error, can_retry and not b.maybe_written)
            return
        b.not_before = anyio.current_time() + self._backoff
        if b.not_before < self._retry_at:
            self._retry_at = b.not_before
        self._retried += len(b.values)
        self._client.note_error(error)

    def _stalled(self, b: Batch, error: KafkaError) -> None:
        """No broker could be reached for ``b``: keep it until delivery_timeout has
        passed since it was made (as Java's delivery.timeout.ms), retrying with a
        capped exponential backoff; this does not use up max_retry."""
        now = anyio.current_time()
        deadline = b.born + self._delivery_timeout
        if now >= deadline:
            expired = DeliveryTimeoutError(
                f"not delivered within delivery_timeout={self._delivery_timeout}s "
                f"(no broker reachable: {error})"
            )
            self._fail_batch(b, expired, not b.maybe_written)
            return
        cap = max(_STALL_BACKOFF_CAP, self._backoff)
        delay = min(self._backoff * (1 << min(b.stalls, 16)), cap)
        b.stalls += 1
        # Wake at the deadline at the latest, to report the batch on time.
        b.not_before = min(now + delay, deadline)
        if b.not_before < self._retry_at:
            self._retry_at = b.not_before
        self._retried += len(b.values)

    def _complete(self, b: Batch, base_offset: int, log_append_time: int) -> None:
        p = b.part
        if p.batches and p.batches[0] is b:
            p.batches.popleft()
        b.done = True
        stamps = b.stamps
        n = len(stamps)
        self._held -= n
        self._delivered += n
        assert b.data is not None
        self._bytes_sent += len(b.data)
        self._batches_sent += 1
        topic = p.topic.name
        index = p.index
        if b.waiters:
            for i, d in b.waiters:
                d.metadata = RecordMetadata(
                    topic,
                    index,
                    base_offset + i if base_offset >= 0 else -1,
                    log_append_time if log_append_time >= 0 else stamps[i] // 1_000_000,
                )
                d.event.set()
        callback = self._on_delivery
        if callback is not None:
            for i, (key, value, headers, ts) in enumerate(b.records()):
                meta = RecordMetadata(
                    topic,
                    index,
                    base_offset + i if base_offset >= 0 else -1,
                    log_append_time if log_append_time >= 0 else ts,
                )
                try:
                    callback(None, meta, key, value, headers)
                except Exception:
                    logger.exception("kafka_asgi producer: on_delivery raised")
        self._progress()

    def _fail_batch(self, b: Batch, error: KafkaError, retriable: bool) -> None:
        p = b.part
        if p.batches and p.batches[0] is b:
            p.batches.popleft()
        else:
            try:
                p.batches.remove(b)
            except ValueError:
                pass
        b.done = True
        if self._idempotent and b.base_seq >= 0 and b.pid_gen == self._pid_gen:
            if b.maybe_written:
                # Whether the broker has these sequence numbers is unknown: the
                # partition's next batch would be out of order (or a duplicate).
                self._reset_producer_id(error)
            elif p.pid_gen == b.pid_gen:
                # Not written: its numbers go to the batches after it.
                self._rewind(p, b.base_seq)
        self._report_failure(p.topic.name, p.index, b.records(), b.waiters, error, retriable)

    def _report_failure(
        self,
        topic: str,
        partition: int,
        records: list[Record],
        waiters: Waiters | None,
        error: KafkaError,
        retriable: bool,
    ) -> None:
        n = len(records)
        self._held -= n
        self._failed += n
        self._last_error = error
        if waiters:
            for _, d in waiters:
                d.error = copy.copy(error)
                d.event.set()
        handled = False
        if self._error_handle is not None:
            handled = True
            try:
                self._error_handle(topic, partition, records, error, retriable)
            except Exception:
                logger.exception("kafka_asgi producer: error_handle raised")
        callback = self._on_delivery
        if callback is not None:
            handled = True
            for key, value, headers, ts in records:
                try:
                    callback(error, RecordMetadata(topic, partition, -1, ts), key, value, headers)
                except Exception:
                    logger.exception("kafka_asgi producer: on_delivery raised")
        if not handled and not waiters:
            logger.error(
                "kafka_asgi producer: %d record(s) for %s[%d] not delivered (retriable=%s): %s",
                n,
                topic,
                partition,
                retriable,
                error,
            )
        self._progress()

    def _progress(self) -> None:
        """Records left the producer: wake whoever waits for room or for a flush."""
        if self._room_event is not None:
            # The flusher announces the room (_notify_room), after it has sent the
            # next batches: the writers it wakes then run after those writes.
            self._wake()
        event = self._progress_event
        if event is not None:
            self._progress_event = None
            event.set()

    # ------------------------------------------------------------------ metadata, ids

    async def _fetch_topic(self, t: TopicBuffer) -> None:
        """Get a topic's metadata for its first records (retried, then reported).

        While no broker answers at all, the records wait (reported once
        delivery_timeout has passed since they were handed over) and the tries do
        not count against max_retry.
        """
        attempt = 0
        stalls = 0
        limit = 2 * self._request_wait
        # (time, n): the first n records of t.values were handed over by then.
        marks: list[tuple[float, int]] = [(anyio.current_time(), len(t.values))]
        try:
            while True:
                try:
                    with anyio.fail_after(limit):
                        await self._client.fetch_metadata(t.name)
                    return
                except TimeoutError:
                    error: KafkaError = RequestTimeout(
                        f"metadata for topic {t.name!r} not received within {limit}s"
                    )
                except KafkaError as exc:
                    error = exc
                if _unreachable(error) or isinstance(error, RequestTimeout):
                    # A metadata request writes nothing: waiting for a broker is safe.
                    now = anyio.current_time()
                    self._expire_waiting(t, marks, now, error)
                    marks.append((now, len(t.values)))
                    delay = min(
                        self._backoff * (1 << min(stalls, 16)),
                        max(_STALL_BACKOFF_CAP, self._backoff),
                    )
                    stalls += 1
                    due = marks[0][0] + self._delivery_timeout - now
                    await anyio.sleep(max(0.0, min(delay, due)))
                    continue
                attempt += 1
                if not error.retriable or attempt > self._max_retry:
                    self._fail_topic(t, error)
                    return
                await anyio.sleep(self._backoff)
        finally:
            t.fetching = False
            self._wake()
            self._progress()

    def _expire_waiting(
        self, t: TopicBuffer, marks: list[tuple[float, int]], now: float, error: KafkaError
    ) -> None:
        """Report the records of ``t`` (waiting for its metadata) handed over
        delivery_timeout ago or earlier; drop the marks they used."""
        horizon = now - self._delivery_timeout
        count = 0
        while marks and marks[0][0] <= horizon:
            count = max(count, marks.pop(0)[1])
        count = min(count, len(t.values))
        if count:
            marks[:] = [(at, n - count) for at, n in marks if n > count]
            expired = DeliveryTimeoutError(
                f"not delivered within delivery_timeout={self._delivery_timeout}s "
                f"(metadata for topic {t.name!r} not received: {error})"
            )
            self._fail_topic(t, expired, count)

    def _fail_topic(self, t: TopicBuffer, error: KafkaError, count: int | None = None) -> None:
        """Report the records of ``t`` not yet placed (the first ``count`` of them)."""
        if count is not None and count < len(t.values):
            self._fail_topic_prefix(t, error, count)
            return
        values, t.values = t.values, []
        stamps, t.stamps = t.stamps, []
        t.nbytes = 0
        t.wake_bytes = self._batch_size
        extras, t.extras = t.extras, None
        t.mixed = False
        if values:
            self._report_unplaced(t, values, stamps, extras, error)

    def _fail_topic_prefix(self, t: TopicBuffer, error: KafkaError, count: int) -> None:
        values = t.values[:count]
        del t.values[:count]
        stamps = t.stamps[:count]
        del t.stamps[:count]
        # An estimate (as when records are added): it only decides wake-ups.
        t.nbytes = max(0, t.nbytes - sum(RECORD_OVERHEAD + len(v) for v in values if v is not None))
        mine: list[Extra] | None = None
        if t.extras:
            mine = [e for e in t.extras if e[0] < count]
            t.extras = [(e[0] - count, *e[1:]) for e in t.extras if e[0] >= count] or None
        self._report_unplaced(t, values, stamps, mine, error)

    def _report_unplaced(
        self,
        t: TopicBuffer,
        values: list[bytes | None],
        stamps: list[int],
        extras: list[Extra] | None,
        error: KafkaError,
    ) -> None:
        """Report records of ``t`` never placed on a partition (``extras`` index them)."""
        keys: list[bytes | None] | None = None
        headers: list[list[tuple[str, bytes | None]] | None] | None = None
        waiters: Waiters | None = None
        if extras:
            keys = [None] * len(values)
            headers = [None] * len(values)
            for i, key, hdrs, _, _ in extras:
                keys[i] = key
                headers[i] = hdrs
            waiters = [(e[0], e[4]) for e in extras if e[4] is not None] or None
        records = records_of(values, stamps, keys, headers)
        self._report_failure(t.name, -1, records, waiters, error, error.retriable)

    async def _producer_id_task(self) -> None:
        """Get (and after a reset, get again) a producer id: InitProducerId (KIP-98)."""
        failures = 0
        while True:
            assert self._pid_wanted is not None
            await self._pid_wanted.wait()
            try:
                with anyio.fail_after(2 * self._request_wait):
                    response: InitProducerIdResponse = await self._client.send_any(
                        InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000),
                        request_timeout=self._request_wait,
                    )
                if response.error_code:
                    raise error_for_code(response.error_code)("InitProducerId")
            except TimeoutError:
                self._pid_error = RequestTimeout("InitProducerId timed out")
            except KafkaError as exc:
                self._pid_error = exc
            else:
                self._pid = response.producer_id
                self._pid_epoch = response.producer_epoch
                self._pid_gen += 1
                self._pid_error = None
                self._pid_wanted = anyio.Event()
                failures = 0
                self._wake()
                continue
            failures += 1
            logger.debug("InitProducerId failed: %s", self._pid_error)
            self._wake()
            # While no broker is reachable, look again at least every second, so
            # that records waiting for the id go soon after a broker comes back.
            cap = _STALL_BACKOFF_CAP if _unreachable(self._pid_error) else 5.0
            await anyio.sleep(min(self._backoff * (2 ** min(failures, 6)), max(cap, self._backoff)))

    def _reset_producer_id(self, error: KafkaError) -> None:
        if self._pid < 0:
            return
        logger.warning("kafka_asgi producer: new producer id after %s", error)
        self._pid = -1
        self._pid_epoch = -1
        if self._pid_wanted is not None:
            self._pid_wanted.set()

    # ------------------------------------------------------------------ flush, close

    def _cut_all(self) -> list[Batch]:
        """Cut every partition's pending records; return every unfinished batch."""
        out: list[Batch] = []
        for p in list(self._active):
            if p.pending:
                cut_moving_on(p)
            out.extend(p.batches)
        return out

    async def _flush_all(self) -> None:
        """Wait until everything held now is delivered or reported."""
        self._cycle(True)
        targets = self._cut_all()
        self._dispatch(anyio.current_time(), True)
        waiting = [t for t in self._buffers.values() if t.values]
        while True:
            for i, b in enumerate(targets):
                while b.replaced_by is not None:
                    b = b.replaced_by
                targets[i] = b
            targets = [b for b in targets if not b.done]
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
                return
            if self._state == "closed":
                return
            if self._progress_event is None:
                self._progress_event = anyio.Event()
            event = self._progress_event
            self._wake()
            with anyio.move_on_after(self.options.flush_time):
                await event.wait()

    def _abort_all(self, error: KafkaError) -> None:
        """Report every record still held (the producer is closed)."""
        for t in list(self._buffers.values()):
            self._fail_topic(t, error)
            for p in t.partitions:
                if p.pending:
                    cut(p)
                in_flight = p.inflight
                p.inflight = False
                while p.batches:
                    b = p.batches[0]
                    # A batch in flight (or once lost in flight) may be stored.
                    self._fail_batch(b, error, not (b.maybe_written or in_flight))
                    in_flight = False
        self._active.clear()
        self._inflight_records = 0
        self._node_inflight.clear()
        room = self._room_event
        if room is not None:
            self._room_event = None
            room.set()
