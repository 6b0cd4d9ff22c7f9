"""The producer's state, shared by the modules that make up :class:`Producer`.

``Producer`` (producer.py: lifecycle, the send methods, the buffer and the flusher)
is assembled from three parts that work on this one state:

* :class:`~kafka_asgi.producer.sender.Sender`: ready batches to Produce requests,
  their responses, retries and backoff;
* :class:`~kafka_asgi.producer.idempotence.Idempotence`: the producer id and the
  sequence numbers of KIP-98;
* :class:`~kafka_asgi.producer.reports.Reports`: every record's outcome
  (acknowledged or reported), and the counters.

This class only declares the attributes (``Producer.__init__`` sets them) and,
for the type checker, the methods one part calls on another.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc

from kafka_asgi.cluster.metadata import TopicMetadata
from kafka_asgi.cluster.throttle import Throttles
from kafka_asgi.network.errors import ConnectError, TLSError
from kafka_asgi.network.host import TaskHost, keep_running, withdraw_stray_cancellation
from kafka_asgi.protocol.compression import Compression
from kafka_asgi.protocol.errors import KafkaError

from .accumulator import Batch, Delivery, PartitionBuffer, PendingRecord, TopicBuffer, Waiters
from .hooks import ProducerHooks
from .options import ErrorHandle, OnDelivery, ProducerOptions
from .spill_seam import SpillSeam

__all__ = ["STALL_BACKOFF_CAP", "ProducerClient", "ProducerState", "unreachable"]

# Longest pause between tries while no broker can be reached (they start at
# retry_backoff and double): a broker back from a restart is found within this.
STALL_BACKOFF_CAP = 1.0
# The shortest pause between tries while waiting for a broker or for partitions:
# retry_backoff may be 0, and a try that fails at once must not spin the event loop.
STALL_BACKOFF_MIN = 0.01


def unreachable(error: KafkaError) -> bool:
    """No broker could be connected to: nothing was written, no broker answered.

    Such tries do not count against max_retry; the records wait (up to
    delivery_timeout) for a broker to come back.  A TLS handshake failure is
    excluded: it is a configuration problem more often than an outage.
    """
    return isinstance(error, ConnectError) and not isinstance(error, TLSError)


class ProducerClient(Protocol):
    """What the producer uses of KafkaClient (an in-memory double can stand in)."""

    # Client quotas (KIP-219): the pauses brokers asked for, noted by send_built, and
    # their sum.
    throttles: Throttles

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
        handshake_timeout: float | None = None,
    ) -> Any: ...

    async def send_built(
        self,
        node_id: int | None,
        api_key: int,
        build: Any,
        *,
        min_version: int | None = None,
        max_version: int | None = None,
        expect_response: bool = True,
        request_timeout: float | None = None,
        handshake_timeout: float | None = None,
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


class ProducerState:
    """Attributes of a producer (set in ``Producer.__init__``)."""

    options: ProducerOptions
    _client: ProducerClient
    _own_client: bool

    # Buffer and flusher.
    _topics: dict[str, TopicBuffer]
    _buffers: dict[str, TopicBuffer]
    _active: set[PartitionBuffer]
    _held: int
    _held_bytes: int
    _max_buffering_bytes: int
    _max_buffering: int
    _batch_num: int
    _batch_size: int
    _max_request_size: int
    _max_value: int
    _cap: int
    _woken: bool
    _wake_event: anyio.Event | None
    _room_event: anyio.Event | None
    _room_bytes: int
    _progress_event: anyio.Event | None
    _next_flush: float
    _force_at: float
    _force_pending: bool
    _retry_at: float
    _waiting_logged_at: float  # anyio clock: the last 'records wait' warning

    # Settings.
    _acks: int
    _timeout_ms: int
    _request_wait: float
    _backoff: float
    _max_retry: int
    _delivery_timeout: float
    _idempotent: bool
    # Turned on by default (enable_idempotence=None): dropped if the cluster refuses
    # the first producer id.
    _idempotence_implicit: bool
    _codec: Compression
    _level: int | None
    # Batches of at least this many bytes are compressed on a worker thread (None:
    # every batch on the event loop), _OFFLOAD_THREADS at a time, in the order
    # queued: (batch, its records section) waiting for a worker.
    _offload_min: int | None
    _zlimiter: anyio.CapacityLimiter | None
    _zqueue: deque[tuple[Batch, tuple[bytes, int, int]]]
    _zworkers: int
    _partitioner: Any
    _value_serializer: Any
    _key_serializer: Any
    _on_delivery: OnDelivery | None
    _error_handle: ErrorHandle | None

    # Lifecycle.
    _state: str  # new, running, closing, closed
    _host: TaskHost | None
    _tg: anyio.abc.TaskGroup | None
    _node_inflight: dict[int, int]

    # Idempotence (KIP-98): producer id, epoch, and a generation number that
    # changes whenever they do (sequence numbers restart at 0 per partition).
    _pid: int
    _pid_epoch: int
    _pid_gen: int
    _pid_error: KafkaError | None
    _pid_wanted: anyio.Event | None
    _epoch_bumps: int
    # Refusals as out of order that DescribeProducers showed written (see _probe).
    _seq_probes_resolved: int
    # Batches a partition may have in flight: max_in_flight with idempotence, else 1.
    _part_limit: int
    # Per broker, an event set once the latest Produce request started to it has
    # reached the connection: the next one waits for it (requests keep their order).
    _node_gate: dict[int, anyio.Event]

    # Counters.
    _delivered: int
    _failed: int
    _retried: int
    _inflight_records: int
    _bytes_sent: int
    _batches_sent: int
    _last_error: KafkaError | None

    # Observers (hooks.py): None unless an integration installed some.
    _hooks: ProducerHooks | None
    _inject: Any
    # Disk spill (spill_seam.py), None without spill_dir.
    _spill: SpillSeam | None
    # > 0 while a user callback (error_handle, on_delivery) runs: the producer may be
    # in the middle of a loop over its batches then (spill evacuation waits).
    _in_callback: int = 0

    def _stray_cancellation(self, exc: BaseException, what: str) -> bool:
        """``what`` (a task of the producer's task group) was cancelled: True if the
        producer did not ask for it, which is then logged and withdrawn so that the
        task goes on (see kafka_asgi.network.host.withdraw_stray_cancellation)."""
        return withdraw_stray_cancellation(
            exc, self._tg, what, "kafka_asgi producer", self._state == "closed"
        )

    async def _keep_running(self, body: Callable[[], Awaitable[object]], what: str) -> None:
        """``body()``, run again if a bug or a stray cancellation ends it (see
        kafka_asgi.network.host.keep_running)."""
        await keep_running(
            body, self._tg, what, "kafka_asgi producer", lambda: self._state == "closed"
        )

    if TYPE_CHECKING:
        # Defined by one part, called by another.
        def _wake(self) -> None: ...

        def _stamp(self, b: Batch) -> None: ...

        @staticmethod
        def _rewind(p: PartitionBuffer, seq: int) -> None: ...

        def _reset_producer_id(self, error: KafkaError) -> None: ...

        def _seq_failed(self, b: Batch, error: KafkaError) -> None: ...

        def _seq_acked(self, b: Batch) -> None: ...

        def _release_seq(self, b: Batch, error: KafkaError) -> None: ...

        def _may_send_new(self, p: PartitionBuffer, out: int, gen: int, now: float) -> bool: ...

        def _leader(self, p: PartitionBuffer) -> int: ...

        def _attempt_failed(
            self,
            b: Batch,
            error: KafkaError,
            maybe_written: bool,
            *,
            retriable: bool | None = None,
            unreachable: bool = False,
        ) -> None: ...

        def _requeue(self, b: Batch, error: KafkaError) -> None: ...

        def _producer_state_error(
            self, b: Batch, code: int, error: KafkaError, log_start: int
        ) -> None: ...

        def _complete(self, b: Batch, base_offset: int, log_append_time: int) -> None: ...

        def _fail_batch(self, b: Batch, error: KafkaError, retriable: bool) -> None: ...

        def _follow_disk(self, b: Batch) -> bool: ...

        def _report_failure(
            self,
            topic: str,
            partition: int,
            records: list[PendingRecord],
            waiters: Waiters | None,
            error: KafkaError,
            retriable: bool,
            *,
            intercept: bool = True,
        ) -> bool: ...

        def _progress(self) -> None: ...

        def _expire_waiting(
            self, t: TopicBuffer, marks: list[tuple[float, int]], now: float, error: KafkaError
        ) -> None: ...

        def _fail_topic(
            self, t: TopicBuffer, error: KafkaError, count: int | None = None
        ) -> None: ...

        def _enqueue(
            self,
            topic: str,
            value: object,
            key: object,
            headers: object,
            partition: object,
            timestamp: object,
            delivery: Delivery | None,
        ) -> None: ...

        async def _wait_for_room(self) -> None: ...

        def _fail_topic(
            self, t: TopicBuffer, error: KafkaError, count: int | None = None
        ) -> None: ...
