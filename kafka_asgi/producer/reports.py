"""Every record's outcome: acknowledged, or reported as failed; and the counters.

Each record handed to the producer ends in exactly one of these, including at
close: ``on_delivery`` (per record) and ``error_handle`` (per failed batch), the
waiting ``send()``, and the counters of :class:`ProducerStats`.  A failure no
callback or caller receives is logged at ERROR, never dropped silently.
"""

from __future__ import annotations

import copy
import itertools
import logging
from dataclasses import dataclass
from typing import NamedTuple

from kafka_asgi.protocol.errors import KafkaError

from .accumulator import (
    RECORD_OVERHEAD,
    Batch,
    Delivery,
    Extra,
    PendingRecord,
    TopicBuffer,
    Waiters,
    batch_bytes,
    cut,
    records_bytes,
    records_of,
)
from .errors import DeliveryTimeoutError, SpillMovedError
from .hooks import call_hook
from .state import ProducerState

__all__ = ["ProducerStats", "RecordMetadata", "Reports"]

logger = logging.getLogger("kafka_asgi.producer")


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
    """The latest error: of a record reported as failed, or of a try that failed
    (a broker unreachable during an outage, a retriable broker error, a metadata
    request or InitProducerId that failed), even while the records still wait."""
    throttle_time_ms: int = 0
    """Milliseconds the brokers asked this producer's client to wait, summed over
    their responses (client quotas, KIP-219: Produce, and Metadata, InitProducerId...
    under a request quota): requests to a broker wait that long before they go. A
    client shared by several producers (``client=``) has one sum."""
    buffered_bytes: int = 0
    """Bytes of the records held now, in flight or not (what ``max_buffering_bytes``
    bounds)."""
    spilled: int = 0
    """Records written to ``spill_dir`` (each time one was)."""
    spilled_bytes: int = 0
    """Bytes of the frames written to ``spill_dir``."""
    replayed: int = 0
    """Records read back from ``spill_dir`` and handed to the sender."""
    spill_dropped: int = 0
    """Records the spill could not keep (budget used up, disk error), reported."""
    spill_lost: int = 0
    """Records in damaged segment frames (reported with SpillDamagedError)."""
    spill_queued: int = 0
    """Records in memory waiting to be written to ``spill_dir``."""
    spill_backlog_bytes: int = 0
    """Bytes on disk not read back yet."""
    spill_error: KafkaError | None = None
    """The latest spill error (disk full, unwritable directory, damaged frame)."""


class Reports(ProducerState):
    """Completing and failing batches and records, and telling the waiters."""

    # Records accepted that are not held, delivered or failed (see Producer.__init__).
    _off_memory: int

    def _complete(self, b: Batch, base_offset: int, log_append_time: int) -> None:
        p = b.part
        if b.done:
            return
        if p.batches and p.batches[0] is b:
            p.batches.popleft()
        else:
            # With idempotence, a later batch of the partition can be answered first.
            try:
                p.batches.remove(b)
            except ValueError:
                pass
        b.done = True
        if self._idempotent:
            self._seq_acked(b)
        stamps = b.stamps
        n = len(stamps)
        self._held -= n
        self._held_bytes -= batch_bytes(b)
        self._delivered += n
        assert b.data is not None
        self._bytes_sent += len(b.data)
        self._batches_sent += 1
        if self._spill is not None:
            self._spill.kafka_ok = True
        topic = p.topic.name
        index = p.index
        if self._hooks is not None:
            call_hook(self._hooks.batch_delivered, topic, index, n, len(b.data))
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
            self._in_callback += 1  # a send_nowait from it defers spill evacuation
            try:
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
            finally:
                self._in_callback -= 1
        self._progress()

    def _fail_batch(self, b: Batch, error: KafkaError, retriable: bool) -> None:
        p = b.part
        batches = p.batches
        later: list[Batch] | None = None
        if batches and batches[0] is b:
            batches.popleft()
            if batches and self._spill is not None:
                later = list(batches)
        else:
            try:
                index = batches.index(b)
            except ValueError:
                pass
            else:
                del batches[index]
                if self._spill is not None and index < len(batches):
                    later = list(itertools.islice(batches, index, None))
        b.done = True
        if self._idempotent:
            # Not written: its numbers go to the batches after it (or the epoch is
            # bumped); maybe written: resolved by the batches after it.
            self._seq_failed(b, error)
        spilled = self._report_failure(
            p.topic.name, p.index, b.records(), b.waiters, error, retriable
        )
        if spilled and later:
            # Those stay in memory for now (in flight, perhaps written): retried from
            # there, they would reach Kafka before this one, which the disk sends.
            for q in later:
                q.behind_disk = True

    def _follow_disk(self, b: Batch) -> bool:
        """``b`` failed an attempt after an older batch of its partition went to the
        spill (``behind_disk``): to keep the order per key, its records follow that
        one to the disk (a held copy is given back and read in its place) instead of
        being retried from memory, where, after an epoch bump, Kafka would take them
        first.  False when a ``send()`` awaits one of them (that caller gets its
        outcome from memory) or the disk cannot take them (spill_dir failed)."""
        spill = self._spill
        if b.done or spill is None or not spill.usable():
            return False
        if b.waiters and any(d.__class__ is Delivery and not d.abandoned for _, d in b.waiters):
            return False
        self._fail_batch(b, SpillMovedError("moved to spill_dir behind an older batch"), True)
        return True

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
    ) -> bool:
        """Report failed records, or give the spill those that can wait: True if it
        took any.  ``intercept=False``: the spill itself reports them (it dropped
        them); records sent from the callbacks still go through it."""
        spill = self._spill
        if spill is not None and intercept:
            # Records that can wait go to the disk instead of being reported.
            kept = spill.intercept(topic, partition, records, waiters, error)
            if kept is None:
                self._held -= len(records)
                self._held_bytes -= records_bytes(records)
                self._off_memory += len(records)
                self._progress()
                return True
            taken = len(records) - len(kept[0])
            self._held -= taken
            self._held_bytes -= records_bytes(records) - records_bytes(kept[0])
            self._off_memory += taken
            records, waiters = kept
        else:
            taken = 0
        n = len(records)
        self._held -= n
        self._held_bytes -= records_bytes(records)
        self._failed += n
        self._last_error = error
        if self._hooks is not None:
            call_hook(self._hooks.records_failed, topic, partition, n, error)
        if waiters:
            for _, d in waiters:
                d.error = copy.copy(error)
                d.event.set()
        handled = False
        self._in_callback += 1  # a send_nowait from a callback defers spill evacuation
        try:
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
                        callback(
                            error, RecordMetadata(topic, partition, -1, ts), key, value, headers
                        )
                    except Exception:
                        logger.exception("kafka_asgi producer: on_delivery raised")
        finally:
            self._in_callback -= 1
        # Without callbacks, the records no send() is still waiting for are logged
        # (those of send_nowait, and of a send() that stopped waiting).
        told = 0
        if waiters:
            for _, d in waiters:
                if not d.abandoned:
                    told += 1
                    if not handled and d.__class__ is Delivery:
                        d.unheard = (topic, partition, retriable)
        if not handled and told < n:
            self._log_not_delivered(topic, partition, n - told, retriable, error)
        self._progress()
        return taken > 0

    def _unheard(self, d: Delivery) -> None:
        """The ``send()`` waiting on ``d`` was cancelled in the loop step its record's
        failure was told to it (its caller never reads it): reported as an abandoned
        waiter's failure is (_report_failure: the callbacks had it, else logged)."""
        where = d.unheard
        error = d.error
        if where is not None and error is not None:
            d.unheard = None
            topic, partition, retriable = where
            self._log_not_delivered(topic, partition, 1, retriable, error)

    @staticmethod
    def _log_not_delivered(
        topic: str, partition: int, count: int, retriable: bool, error: KafkaError
    ) -> None:
        logger.error(
            "kafka_asgi producer: %d record(s) for %s[%d] not delivered (retriable=%s): %s",
            count,
            topic,
            partition,
            retriable,
            error,
        )

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

    def _expire_waiting(
        self, t: TopicBuffer, marks: list[tuple[float, int]], now: float, error: KafkaError
    ) -> None:
        """Report the records of ``t`` (waiting for its metadata) handed over
        delivery_timeout ago or earlier; drop the marks they used.

        A mark is (time, end): the records before position ``end`` (counted from
        the topic's first record, ``t.taken`` + index) were handed over by then.
        Positions, not counts of ``t.values``: records may leave it meanwhile (moved
        to the disk by an evacuation) and others come (read back from it), and
        those must get their own delivery_timeout, not their predecessors'."""
        horizon = now - self._delivery_timeout
        end = t.taken
        while marks and marks[0][0] <= horizon:
            end = max(end, marks.pop(0)[1])
        count = min(end - t.taken, len(t.values))
        if count > 0:
            expired = DeliveryTimeoutError(
                f"not delivered within delivery_timeout={self._delivery_timeout}s "
                f"(metadata for topic {t.name!r} not received: {error})"
            )
            self._fail_topic(t, expired, count)
        # Marks whose records all left (the ones above, or moved to the disk): the
        # first one left sets the next wake-up.
        while marks and marks[0][1] <= t.taken:
            del marks[0]

    def _fail_topic(self, t: TopicBuffer, error: KafkaError, count: int | None = None) -> None:
        """Report the records of ``t`` not yet placed (the first ``count`` of them)."""
        if count is not None and count < len(t.values):
            self._fail_topic_prefix(t, error, count)
            return
        values, t.values = t.values, []
        t.taken += len(values)
        stamps, t.stamps = t.stamps, []
        t.nbytes = 0
        t.wake_bytes = self._batch_size
        extras, t.extras = t.extras, None
        t.mixed = False
        if values:
            self._report_unplaced(t, values, stamps, extras, error)

    def _fail_topic_prefix(self, t: TopicBuffer, error: KafkaError, count: int) -> None:
        t.taken += count
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

    def _abort_all(self, error: KafkaError) -> None:
        """Report every record still held (the producer is closed)."""
        for t in list(self._buffers.values()):
            for p in t.partitions:
                if p.pending:
                    cut(p)
                p.inflight = 0
                while p.batches:
                    b = p.batches[0]
                    in_flight = b.inflight
                    b.inflight = False
                    # A batch in flight (or once lost in flight) may be stored.
                    self._fail_batch(b, error, not (b.maybe_written or in_flight))
            # After the placed ones, which are older (the spill keeps this order).
            self._fail_topic(t, error)
        self._active.clear()
        self._inflight_records = 0
        self._node_inflight.clear()
        room = self._room_event
        if room is not None:
            self._room_event = None
            room.set()
