"""Between a running Producer and its spill store (see kafka_asgi.producer.spill).

What the producer calls, all from the event loop and none of them awaiting:

* :meth:`SpillSeam.intercept` from the one place records fail: records that
  could be delivered later (Kafka unreachable, ``delivery_timeout`` reached, the
  producer closing, a retriable error) are queued for the disk instead of being
  reported; records a ``send()`` awaits are never spilled (their caller gets the
  error); records read back from disk settle their frame's :class:`FrameTicket`.
* :meth:`SpillSeam.overflow` from the send path, for a record of a topic that has
  records on disk (so it goes behind them, keeping the order per partition and
  key), or when the memory buffer is full.
* :meth:`SpillSeam.run` in the producer's task group: a writer (encodes frames and
  appends them off the event loop, ``anyio.to_thread``) and a replayer (reads
  frames back, off the loop, and hands their records to the producer while its
  memory buffer has room, so live traffic keeps its share).

A topic with records queued or on disk is *spilling*: its new records go to the
disk too, until the replayer has read the last of them back.  While records adopted
from a dead producer's directory are still to be read the first time, every topic
spills (:attr:`SpillSeam.adopting`): their topics are not known until read.  When a
topic starts spilling, the records it still has in memory (older than the ones now queued)
are moved to the disk first (:attr:`SpillSeam.evacuate`, done by the producer at
the end of the cycle or the callback that started it, or before it accepts the
next record of that topic, whichever comes first); those of its batches that
must stay in memory (in flight, perhaps written, awaited by a ``send()``) get a
*held* copy on disk (:meth:`SpillSeam.hold`, see kafka_asgi.producer.spill).

Durability while spilling: records handed to the seam are written (``os.write``,
to the page cache: a SIGKILL cannot lose them, a power cut can until fsync) before
the call that handed them over returns, so ``send_nowait`` of a spilling topic
returns with its record on disk.  Only fsync runs in a worker thread (the
``spill_fsync`` policy).  The exceptions, in memory until written: records behind
a full disk budget with ``spill_when_full="block"``, records of a topic whose
evacuation is pending, records handed over before the store is open, and records
handed over by a callback reporting records the seam could not write (written by
the writer just after: see :meth:`SpillSeam.write_now`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc

from kafka_asgi.network.host import keep_running, withdraw_stray_cancellation
from kafka_asgi.protocol.errors import KafkaError, UnknownTopicOrPartitionError
from kafka_asgi.protocol.records import RecordTuple
from kafka_asgi.protocol.spill import SpillFrame, encode_frame

from .accumulator import Delivery, PendingRecord, Waiters
from .errors import (
    BufferFullError,
    DeliveryTimeoutError,
    ProducerClosedError,
    SpillDamagedError,
    SpillError,
    SpillFullError,
    SpillMovedError,
)
from .options import ProducerOptions
from .spill import ReadResult, Segment, SpillStore, _PartialAppendError

__all__ = [
    "FRAME_RECORDS",
    "WHEN_FULL",
    "FrameTicket",
    "SpillHost",
    "SpillSeam",
    "spill_seam",
]

logger = logging.getLogger("kafka_asgi.producer")

WHEN_FULL = ("drop_newest", "block")
# Records per frame: they share its header; each is its own batch, so damage to a
# frame costs the records damaged, not the frame (kafka_asgi.protocol.spill).
FRAME_RECORDS = 64
_READ_BYTES = 256 * 1024
_PROBE_INTERVAL = 1.0
# How long a read interrupted by a stray cancellation is waited for.
_READ_WAIT = 30.0
# close(timeout): the part of ``timeout`` kept for closing the store (its fsyncs),
# at most _CLOSE_FLOOR seconds.
_CLOSE_SHARE = 0.2
_CLOSE_FLOOR = 0.5
_CLOSE_MIN = 0.1


@dataclass(frozen=True, slots=True)
class SpillHost:
    """What the seam uses of the producer (bound methods of it)."""

    replay_room: Callable[[], int]
    """Records the producer can take from the disk now."""
    inject: Callable[[str, int, RecordTuple, FrameTicket], None]
    """Hand one record read back to the producer (its ticket as its Delivery)."""
    report_dropped: Callable[[str, int, list[PendingRecord], KafkaError], None]
    """Report records as failed (error_handle, on_delivery, the failed counter)."""
    spilling_changed: Callable[[], None]
    """The set of spilling topics changed."""
    evacuate_now: Callable[[], None]
    """Move the memory records of the topics in ``SpillSeam.evacuate`` to the disk now,
    if the producer is not in the middle of a cycle or a callback (else it does it
    at their end)."""
    inherited: Callable[[int], None] = lambda n: None
    """Records read back for the first time from a dead producer's directory (see
    kafka_asgi.producer.spill), about to be handed over: accepted by this producer
    now (stats().enqueued), as the send methods' records were when they went to disk."""


class _Countdown:
    """Stands in for a Delivery's event: the producer "sets" it once per record."""

    __slots__ = ("ticket",)

    def __init__(self, ticket: FrameTicket) -> None:
        self.ticket = ticket

    def set(self) -> None:
        self.ticket.settled(None)


class FrameTicket(Delivery):
    """Rides with every record of one frame read back from disk (as its Delivery);
    when all of them are settled the frame is acknowledged or read again."""

    __slots__ = (
        "attempts",
        "count",
        "failed",
        "failed_at",
        "held",
        "left",
        "offset",
        "partition",
        "reported",
        "seam",
        "seg",
        "topic",
    )

    def __init__(
        self, seam: SpillSeam, seg: Segment, offset: int, count: int, attempts: int, topic: str
    ) -> None:
        # No anyio.Event: the producer's event.set() calls count records down.
        self.event = cast(anyio.Event, _Countdown(self))
        self.metadata: Any = None
        self.error: KafkaError | None = None
        self.abandoned = False  # the seam settles every ticket
        self.seam = seam
        self.seg = seg
        self.offset = offset
        self.left = count
        self.count = count
        self.attempts = attempts
        self.topic = topic
        self.partition = -1
        self.failed: list[PendingRecord] = []
        # The partition each failed record was sent to (a frame of partition -1
        # spreads its records over partitions): it goes back to the same one.
        self.failed_at: list[int] = []
        self.reported = False
        """One of its records failed for good and was reported: the frame is never
        read again whole (that record would be sent and reported once more)."""
        self.held = False
        """A held copy's ticket: its records count in the topic's backlog until settled."""

    def settled(self, failed: tuple[PendingRecord, KafkaError] | None) -> None:
        if failed is not None:
            self.failed.append(failed[0])
            self.failed_at.append(self.partition)
            self.error = failed[1]
        self.left -= 1
        if self.left == 0:
            self.seam._frame_settled(self)


def _unreachable_kind(error: KafkaError) -> bool:
    """Errors that say nothing about the records, only that Kafka was not there."""
    return isinstance(
        error, (DeliveryTimeoutError, ProducerClosedError, SpillMovedError, BufferFullError)
    )


def spill_seam(opts: ProducerOptions) -> SpillSeam | None:
    """The seam for a producer with these options (None without ``spill_dir``)."""
    if opts.spill_dir is None:
        return None
    store = SpillStore(
        opts.spill_dir,
        max_bytes=opts.spill_max_bytes,
        segment_bytes=opts.spill_segment_bytes,
        fsync=opts.spill_fsync,
    )
    handle = opts.error_handle

    def on_error(error: KafkaError) -> None:
        if handle is not None:
            handle("", -1, [], error, False)

    return SpillSeam(
        store,
        when_full=opts.spill_when_full,
        queue_limit=max(1000, opts.max_buffering),
        replay_limit=max(FRAME_RECORDS, opts.max_buffering // 2),
        on_error=on_error,
    )


def _counts_as_replay_failure(error: KafkaError) -> bool:
    """Errors that say the records themselves cannot go (bounded by max_replays): a
    permanent error, or a topic Kafka does not know.  Transient ones (a leader or
    coordinator moving, Kafka away) are retried without a bound, as a buffer should."""
    if _unreachable_kind(error):
        return False
    return not error.retriable or isinstance(error, UnknownTopicOrPartitionError)


class SpillSeam:
    """The producer's side of the spill: queues, writer, replayer, counters."""

    def __init__(
        self,
        store: SpillStore,
        *,
        when_full: str,
        queue_limit: int,
        replay_limit: int,
        max_replays: int = 3,
        on_error: Callable[[KafkaError], None] | None = None,
    ) -> None:
        self.store = store
        self.when_full = when_full
        self.queue_limit = queue_limit
        self.replay_limit = replay_limit
        self.max_replays = max_replays
        self.on_error = on_error
        self.spilling: set[str] = set()
        self.evacuate: list[str] = []
        """Topics that started spilling: the producer moves their memory records here."""
        self.kafka_ok = True
        self.ready = False
        self.adopting = False
        """Dead producers' records are still to be read back the first time: every
        topic spills (their topics are not known until read), so that no new record
        overtakes an older one of its key waiting in their directories."""
        self.broken: KafkaError | None = None
        # Per topic: queued items [partition, attempts, records, older], oldest first;
        # older: failed records put while their topic's evacuation is pending (they
        # were ahead of the memory records it moves: they go before them).
        self._queues: dict[str, deque[list[Any]]] = {}
        self._front: dict[str, list[list[Any]]] | None = None
        # During an evacuation: the records handed over for its topics before it began
        # (newer than the ones it moves), written after them.
        self._newer: dict[str, list[list[Any]]] = {}
        self._backlog: dict[str, int] = {}  # records queued or on disk, not read back
        self._queued = 0
        self._replaying = 0  # records handed to the producer, not settled
        self._settle: list[tuple[Segment, int, bool]] = []
        # Per frame given back (keyed by its Segment, not id(): an id is reused once
        # the segment is gone, and every segment's first frame is at the same offset),
        # until it is settled for good.
        self._attempts: dict[tuple[Segment, int], int] = {}
        # Frames read again after part of them was delivered (bounded by max_replays).
        self._rereads: dict[tuple[Segment, int], int] = {}
        # Frames of adopted directories read back (their records counted as inherited
        # once, not again when a frame given back is read again), until settled for good.
        self._inherited: set[tuple[Segment, int]] = set()
        self._unread = False
        # Records were lost to damage since the backlogs were last squared (_square).
        self._damaged = False
        # Frames given back for another read (see _replayer).
        self._given_back = 0
        self._work: anyio.Event | None = None
        self._room: anyio.Event | None = None
        self._probe_at = 0.0
        self._host: SpillHost | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._chunks: list[tuple[str, int, int, list[PendingRecord]]] = []
        # write_now is running (its drops are being reported); a record a callback
        # hands over meanwhile is written by the writer after it (_deferred), not by
        # a write_now nested in the report: a callback sending each dropped record
        # again would recurse without end while the budget stays used up.
        self._writing = False
        self._deferred = False
        # Counters (stats()).
        self.spilled = 0
        self.spilled_bytes = 0
        self.replayed = 0
        self.dropped = 0
        self.lost = 0
        self.last_error: KafkaError | None = None

    # ------------------------------------------------------------------ producer side

    def stats(self) -> dict[str, Any]:
        """The spill's fields of ProducerStats."""
        store = self.store
        return {
            "spilled": self.spilled,
            "spilled_bytes": self.spilled_bytes,
            "replayed": self.replayed,
            "spill_dropped": self.dropped,
            "spill_lost": self.lost,
            "spill_queued": self._queued,
            "spill_backlog_bytes": store.backlog_bytes if self.ready and not store.closed else 0,
            "spill_error": self.last_error,
        }

    @property
    def queued(self) -> int:
        """Records in memory waiting to be written."""
        return self._queued

    @property
    def replaying(self) -> int:
        return self._replaying

    def full(self) -> bool:
        """The write queue is at its limit: new records wait (send_buffered) or fail."""
        return self._queued >= self.queue_limit

    def usable(self) -> bool:
        return self.broken is None

    def takes(self, topic: str, memory_full: bool) -> bool:
        """A new record of ``topic`` goes to the disk (behind its backlog, or for room)."""
        return self.broken is None and (memory_full or self.adopting or topic in self.spilling)

    def spills(self, topic: str) -> bool:
        """New records of ``topic`` go to the disk (its backlog, or a dead producer's)."""
        return self.adopting or topic in self.spilling

    def overflow(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        partition: int | None,
        ts_ms: int,
    ) -> None:
        """Queue one new record for the disk (raises BufferFullError when the queue is full)."""
        if self._queued >= self.queue_limit:
            raise BufferFullError(
                f"buffer overflow: the memory buffer is full and {self._queued} records "
                "wait to be written to spill_dir; the disk is slower than the senders"
            )
        self._put(topic, -1 if partition is None else partition, 0, [(key, value, headers, ts_ms)])
        if self.evacuate and self._host is not None:
            # Its older records still in memory go to the disk first, then this one.
            self._host.evacuate_now()

    def intercept(
        self,
        topic: str,
        partition: int,
        records: list[PendingRecord],
        waiters: Waiters | None,
        error: KafkaError,
    ) -> tuple[list[PendingRecord], Waiters | None] | None:
        """Take the failed records the disk can keep; return the rest to report."""
        spillable = self.broken is None and (_unreachable_kind(error) or error.retriable)
        if isinstance(error, DeliveryTimeoutError):
            self.kafka_ok = False
        if not waiters:
            if not spillable:
                return records, waiters
            self._put(topic, partition, 0, records, older=True)
            return None
        by_index = dict(waiters)
        keep: list[PendingRecord] = []
        keep_waiters: Waiters = []
        live: list[PendingRecord] = []
        for i, record in enumerate(records):
            d = by_index.get(i)
            if d is None or d.abandoned:
                # No send() waits for it (or its caller stopped waiting): the disk keeps
                # it as a send_nowait record.
                if spillable:
                    live.append(record)
                else:
                    keep.append(record)
            elif isinstance(d, FrameTicket):
                if spillable:
                    d.partition = partition  # where its failed records go back
                    d.settled((record, error))
                    self._read_back_failed(topic, error)
                else:
                    # A permanent error: reported like any record, and the frame done.
                    keep.append(record)
                    d.reported = True
                    d.settled(None)
            else:
                keep_waiters.append((len(keep), d))
                keep.append(record)
        if live:
            self._put(topic, partition, 0, live, older=True)
        if not keep:
            return None
        return keep, keep_waiters or None

    def _read_back_failed(self, topic: str, error: KafkaError) -> None:
        """A record read back from the disk failed, to go there again: the records of
        its topic in memory behind it (read back after it) must not reach Kafka
        first.  They are moved back too, before the producer sends again (their
        frames are read again in their place; see _frame_settled)."""
        if isinstance(error, SpillMovedError):
            return  # moved by an evacuation: the rest of the topic goes with it
        if topic not in self.spilling:
            self.spilling.add(topic)
            if self._host is not None:
                self._host.spilling_changed()
        if topic not in self.evacuate:
            self.evacuate.append(topic)

    def begin_evacuation(self) -> list[str]:
        """The topics to move to disk now.  The disk gets their records in the order
        they had in memory: the failed ones queued since they started spilling first
        (written now), then the memory's, batch by batch (moved, or a held copy:
        :meth:`hold` writes the moved ones before it), then those handed over since."""
        topics, self.evacuate = self.evacuate, []
        self._front = {}
        for topic in topics:
            q = self._queues.get(topic)
            if q:
                self._queues[topic] = deque(i for i in q if i[3])
                self._newer[topic] = [i for i in q if not i[3]]
        self.write_now()
        return topics

    def end_evacuation(self) -> None:
        front, self._front = self._front, None
        newer, self._newer = self._newer, {}
        for topic in {*(front or ()), *newer}:
            q = self._queues.get(topic) or deque()
            self._queues[topic] = deque([*q, *(front or {}).get(topic, ()), *newer.get(topic, ())])
        self.write_now()

    def _write_front(self, topic: str) -> None:
        """Write the records an evacuation moved so far for ``topic`` (before a held
        copy of the batch after them)."""
        items = self._front.pop(topic, None) if self._front is not None else None
        if items:
            q = self._queues.get(topic) or deque()
            self._queues[topic] = deque([*q, *items])
            self.write_now()

    def hold(self, topic: str, partition: int, records: list[PendingRecord]) -> list[FrameTicket]:
        """Write held copies of ``records`` (of a batch that stays in memory); a ticket
        per frame, in order, for the batch's records as their Delivery (the first
        64 records ride with the first ticket...).  Fewer tickets than frames when
        the budget or the disk fails (the records left have no copy)."""
        tickets: list[FrameTicket] = []
        if not self.ready or self.broken is not None:
            return tickets
        self._write_front(topic)
        for i in range(0, len(records), FRAME_RECORDS):
            chunk = records[i : i + FRAME_RECORDS]
            try:
                placed = self.store.append_held(
                    encode_frame(topic, partition, cast(list[RecordTuple], chunk))
                )
            except OSError as exc:
                where = str(self.store.root)
                self._error(SpillError(f"cannot write to spill_dir {where!r}: {exc}"))
                break
            if placed is None:
                break
            seg, offset = placed
            n = len(chunk)
            ticket = FrameTicket(self, seg, offset, n, 0, topic)
            ticket.held = True
            tickets.append(ticket)
            self._replaying += n
            # The topic spills until the copy is settled: newer records go behind it.
            self._backlog[topic] = self._backlog.get(topic, 0) + n
        if self.store.sync_due():
            self._kick()
        return tickets

    def _put(
        self,
        topic: str,
        partition: int,
        attempts: int,
        records: list[PendingRecord],
        *,
        older: bool = False,
    ) -> None:
        n = len(records)
        self._queued += n
        if topic not in self.spilling:
            self.spilling.add(topic)
            self.evacuate.append(topic)
            if self._host is not None:
                self._host.spilling_changed()
        self._backlog[topic] = self._backlog.get(topic, 0) + n
        if self._front is not None:
            items = self._front.setdefault(topic, [])
            items.append([partition, attempts, list(records), False])
            return
        q = self._queues.get(topic)
        if q is None:
            q = self._queues[topic] = deque()
        if q:
            last = q[-1]
            if (
                last[0] == partition
                and last[1] == attempts
                and last[3] == older
                and len(last[2]) < FRAME_RECORDS
            ):
                last[2].extend(records)
                self.write_now()
                return
        q.append([partition, attempts, list(records), older])
        self.write_now()

    def _kick(self) -> None:
        if self._work is not None:
            self._work.set()

    def _frame_settled(self, ticket: FrameTicket) -> None:
        seg, offset = ticket.seg, ticket.offset
        failed = ticket.failed
        error = ticket.error
        count = ticket.count
        self._replaying -= count
        if ticket.held:
            # Its topic kept spilling while the copy was on disk: now the copy is done
            # (or given back, then counted again below as any frame read back).
            ticket.held = False
            self._read_back(ticket.topic, count)
        if not failed:
            self.kafka_ok = True
            self._settled_for_good(seg, offset)
            self._stop_spilling(ticket.topic)  # a probe delivered its topic's last frame
            self._square()
        elif error is not None and _unreachable_kind(error) and len(failed) == count:
            # Kafka went away again: read the frame again later, in its place.
            self._give_back(seg, offset)
            self._unread = True
            self._mark_backlog(ticket.topic, count)
        else:
            key = (seg, offset)
            attempts = ticket.attempts
            transient = error is None or not _counts_as_replay_failure(error)
            if not transient:
                attempts = self._attempts.get(key, ticket.attempts) + 1
            rereads = self._rereads.get(key, 0)
            if attempts > self.max_replays:
                assert error is not None
                self._settled_for_good(seg, offset)
                if self._host is not None:
                    self._host.report_dropped(ticket.topic, ticket.partition, failed, error)
            elif len(failed) == count:
                self._attempts[key] = attempts
                self._give_back(seg, offset)
                self._unread = True
                self._mark_backlog(ticket.topic, count)
            elif transient and rereads < self.max_replays and not ticket.reported:
                # Some were delivered, the others failed only for Kafka's sake (a
                # timeout, a leader moving): the frame is read again in its place, its
                # delivered records with it (at-least-once), so the failed ones stay
                # ahead of the frames read after it (the order per key).  Not when one
                # was reported (a permanent error): read again, it was reported again
                # at every read (its records spread over partitions, a frame written
                # by overflow, partition -1).
                self._rereads[key] = rereads + 1
                self._give_back(seg, offset)
                self._unread = True
                self._mark_backlog(ticket.topic, count)
            else:
                # Only the others go back to disk (a new frame, its attempts in its
                # header): behind the frames read after this one.
                self._settled_for_good(seg, offset)
                by_partition: dict[int, list[PendingRecord]] = {}
                for partition, record in zip(ticket.failed_at, failed, strict=True):
                    by_partition.setdefault(partition, []).append(record)
                for partition, records in by_partition.items():
                    self._put(ticket.topic, partition, attempts, records)
        self._kick()

    def _settled_for_good(self, seg: Segment, offset: int) -> None:
        """The frame at ``offset`` is settled for good (acknowledged on disk)."""
        key = (seg, offset)
        self._rereads.pop(key, None)
        self._attempts.pop(key, None)
        self._inherited.discard(key)
        self._settle.append((seg, offset, True))

    def _give_back(self, seg: Segment, offset: int) -> None:
        """The frame at ``offset`` is to be read again, before the frames after it."""
        self._settle.append((seg, offset, False))
        self._given_back += 1

    def _mark_backlog(self, topic: str, n: int) -> None:
        self._backlog[topic] = self._backlog.get(topic, 0) + n
        if topic not in self.spilling:
            self.spilling.add(topic)
            self.evacuate.append(topic)
            if self._host is not None:
                self._host.spilling_changed()

    def _read_back(self, topic: str, n: int) -> None:
        left = self._backlog.get(topic, 0) - n
        if left > 0:
            self._backlog[topic] = left
            return
        self._backlog.pop(topic, None)
        if self.kafka_ok:
            self._stop_spilling(topic)
        # Otherwise a probe read the topic's last frame back while Kafka seemed away:
        # its new records keep going to the disk, behind that frame, until the probe
        # is answered (a record accepted for a spilling topic is on disk when
        # send_nowait returns, probe or not).

    def _square(self) -> None:
        """Drop the backlogs that records lost to damage left: those were never read
        back, and the damage does not say whose they were, so their topics would spill
        for the rest of the process. Once nothing is queued, unread on disk, given back
        or in flight, whatever backlog is left is theirs."""
        if (
            not self._damaged
            or self._replaying
            or self._queued
            or any(self._queues.values())
            or any(not ok for _, _, ok in self._settle)  # given back: read again
            or self._front is not None
            or self._newer
            or self.store.has_unread()
        ):
            return
        self._damaged = False
        stale, self._backlog = list(self._backlog), {}
        if self.kafka_ok:
            for topic in stale:
                self._stop_spilling(topic)

    def _stop_spilling(self, topic: str) -> None:
        """New records of ``topic`` stay in memory again, if nothing of it is on disk."""
        if topic in self.spilling and not self._backlog.get(topic) and not self._queues.get(topic):
            self.spilling.discard(topic)
            if self._host is not None:
                self._host.spilling_changed()

    async def wait_room(self, limit: float) -> bool:
        """Wait (at most ``limit`` s) until the write queue has room; False on timeout."""
        with anyio.move_on_after(limit):
            while self._queued >= self.queue_limit and self.broken is None:
                if self._room is None:
                    self._room = anyio.Event()
                await self._room.wait()
            return True
        return False

    def _notify_room(self) -> None:
        room = self._room
        if room is not None and self._queued < self.queue_limit:
            self._room = None
            room.set()

    # ------------------------------------------------------------------ tasks

    async def run(self, host: SpillHost, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Open the store, then write and replay until cancelled."""
        self._host = host
        self._work = anyio.Event()
        task_status.started()
        try:
            await anyio.to_thread.run_sync(self.store.open)
        except OSError as exc:
            if self.store.closed:  # the producer closed first: nothing to report
                return
            self._fail(SpillError(f"spill_dir {str(self.store.root)!r} is not usable: {exc}"))
            return
        self.ready = True
        for path, cause in self.store.left_alone:
            self._error(
                SpillError(
                    "an entry of spill_dir cannot be read: left as it is, its records not "
                    "replayed (the next producer to open spill_dir tries it again): "
                    + _naming(path, cause)
                )
            )
        self._unread = bool(self.store.adopted)
        if self.store.adopted_unread():
            self.adopting = True
            host.spilling_changed()
        self.write_now()  # what was handed over while the store opened
        async with anyio.create_task_group() as tg:
            self._tg = tg
            # Each goes on after a bug or a stray cancellation (keep_running).
            tasks = ((self._writer, "the spill writer"), (self._replayer, "the replayer"))
            for body, what in tasks:
                tg.start_soon(
                    keep_running,
                    body,
                    tg,
                    what,
                    "kafka_asgi producer",
                    name=f"kafka_asgi spill.{body.__name__}",
                )

    def _fail(self, error: SpillError) -> None:
        """The spill cannot be used: report what was queued, take nothing more."""
        self.broken = error
        self.adopting = False
        self._error(error)
        self._drop_queued(error)
        self._notify_room()
        if self._host is not None:
            self.spilling.clear()
            self._host.spilling_changed()

    def _error(self, error: KafkaError) -> None:
        self.last_error = error
        logger.error("kafka_asgi producer: %s", error)
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:
                logger.exception("kafka_asgi producer: error_handle raised")

    def _drop_queued(self, error: KafkaError) -> None:
        queues, self._queues = self._queues, {}
        for topic, q in queues.items():
            for partition, _, records, _ in q:
                self._dropped(topic, partition, records, error)

    def _dropped(
        self, topic: str, partition: int, records: list[PendingRecord], error: KafkaError
    ) -> None:
        n = len(records)
        self._queued -= n
        self.dropped += n
        self._read_back(topic, n)
        self._notify_room()
        if self._host is not None:
            self._host.report_dropped(topic, partition, records, error)

    def _take(self) -> list[tuple[str, int, int, list[PendingRecord]]]:
        """Queued items to write now (oldest first per topic)."""
        out: list[tuple[str, int, int, list[PendingRecord]]] = []
        held = self.evacuate  # their older records are not queued yet
        for topic, q in self._queues.items():
            if topic in held:
                continue
            while q:
                partition, attempts, records, _ = q.popleft()
                out.append((topic, partition, attempts, records))
        self._queues = {t: q for t, q in self._queues.items() if q}
        return out

    def write_now(self) -> None:
        """Write what is queued (not held for an evacuation), on the caller's thread:
        ``os.write`` only, so the records survive a SIGKILL of the process once this
        returns.  Records that do not fit the budget are dropped and reported
        (``drop_newest``) or wait in memory for room (``block``, the writer retries).
        Called again from the report of those records (a callback sending a record
        of a spilling topic), it leaves the write to the writer (see _writing)."""
        if not self.ready or self.broken is not None or self._chunks or not self._queues:
            return
        if self._writing:
            self._deferred = True
            self._kick()
            return
        self._writing = True
        try:
            self._write_queued()
        finally:
            self._writing = False

    def _write_queued(self) -> None:
        items = self._take()
        if not items:
            return
        chunks = [
            (topic, partition, attempts, records[i : i + FRAME_RECORDS])
            for topic, partition, attempts, records in items
            for i in range(0, len(records), FRAME_RECORDS)
        ]
        frames = [
            encode_frame(topic, partition, cast(list[RecordTuple], records), attempts=attempts)
            for topic, partition, attempts, records in chunks
        ]
        failure: SpillError | None = None
        try:
            written = self.store.append(frames)
        except OSError as exc:
            failure = SpillError(f"cannot write to spill_dir {str(self.store.root)!r}: {exc}")
            # Frames written before the failure (a segment filled, then the next
            # could not be opened) are on disk and will be replayed: they are
            # spilled, and stay in their topic's backlog, not reported as dropped.
            written = exc.written if isinstance(exc, _PartialAppendError) else 0
        for _, _, _, records in chunks[:written]:
            self._queued -= len(records)
            self.spilled += len(records)
        self.spilled_bytes += sum(len(f) for f in frames[:written])
        if written:
            self._unread = True
        rest = chunks[written:]
        if failure is not None:
            self._error(failure)
            for topic, partition, _, records in rest:
                self._dropped(topic, partition, records, failure)
        elif rest:
            if self.when_full == "drop_newest":
                error = SpillFullError(
                    f"spill_max_bytes={self.store.max_bytes} is used up: the newest "
                    "records were dropped"
                )
                self.last_error = error
                for topic, partition, _, records in rest:
                    self._dropped(topic, partition, records, error)
            else:
                # "block": kept (the senders wait for room) until acks free the disk.
                self._chunks = rest
        self._notify_room()
        if rest or self.store.sync_due():
            self._kick()

    async def _writer(self) -> None:
        """Acks, fsync and, with ``block``, the records waiting for disk room: the
        seam's work in worker threads."""
        policy = self.store.fsync
        period = policy if not isinstance(policy, str) else math.inf
        while True:
            if self._deferred:
                # Handed over by a callback of a drop report (see write_now); a
                # checkpoint, as a callback may send each dropped record again.
                self._deferred = False
                self.write_now()
                await anyio.lowlevel.checkpoint()
            await self._write_settled()
            if self.store.sync_due():
                try:
                    await anyio.to_thread.run_sync(self.store.background_sync)
                except OSError as exc:
                    self._error(SpillError(f"cannot fsync spill_dir: {exc}"))
            if self._chunks:
                await anyio.sleep(0.1)
                self._retry_blocked()
                continue
            if not self._settle and not self._deferred:
                self._work = anyio.Event()
                with anyio.move_on_after(period):
                    await self._work.wait()

    def _retry_blocked(self) -> None:
        """``block``: the records that found no room go first when there is some."""
        chunks, self._chunks = self._chunks, []
        for topic, partition, attempts, records in reversed(chunks):
            self._queues.setdefault(topic, deque()).appendleft(
                [partition, attempts, records, False]
            )
        self.write_now()

    async def _write_settled(self, abandon: bool = False) -> None:
        """Write the acks of the frames settled since last time (frees the disk).
        ``abandon``: a cancellation leaves the write to its thread (close(), bounded)."""
        if self._settle:
            outcomes, self._settle = self._settle, []
            try:
                await anyio.to_thread.run_sync(
                    self.store.settle, outcomes, abandon_on_cancel=abandon
                )
            except OSError as exc:
                self._error(SpillError(f"cannot write an ack file in spill_dir: {exc}"))
            except anyio.get_cancelled_exc_class():
                if abandon:
                    self._error(
                        SpillError(
                            f"the producer closed before the outcomes of {len(outcomes)} "
                            "frame(s) read back were written to spill_dir (the disk did not "
                            "answer in time; left to a thread): a frame delivered whose "
                            "acknowledgement is not written is sent again by the next "
                            "producer on spill_dir"
                        )
                    )
                raise

    async def _replayer(self) -> None:
        host = self._host
        assert host is not None
        while True:
            if not self._unread:
                await anyio.sleep(0.05)
                continue
            room = min(host.replay_room(), self.replay_limit - self._replaying)
            if not self.kafka_ok:
                # Probe with one frame at a time while Kafka seemed away.
                now = anyio.current_time()
                if self._replaying or now < self._probe_at:
                    await anyio.sleep(0.05)
                    continue
                self._probe_at = now + _PROBE_INTERVAL
                read_bytes = 1
            elif room <= 0 or (room < FRAME_RECORDS and self._replaying):
                await anyio.sleep(0.02)
                continue
            else:
                # A record takes at least ~8 bytes on disk: this reads at most about
                # twice the room (so memory stays within max_buffering and a read).
                read_bytes = max(1, min(_READ_BYTES, room * 16))
            if any(not ok for _, _, ok in self._settle):
                # A frame was given back: it is read again before the frames after it,
                # so nothing is read until the store has it back (the writer's work).
                self._kick()
                await anyio.sleep(0.01)
                continue
            given_back = self._given_back
            try:
                result = await self._read(read_bytes)
            except OSError as exc:
                self._error(SpillError(f"cannot read spill_dir: {exc}"))
                await anyio.sleep(1.0)
                continue
            self._unread = result.more or bool(self._settle and not self.kafka_ok)
            if self.store.sync_due():
                self._kick()  # the read sealed the segment being written: fsync it
            for path, damage in result.damage:
                self._damaged = True
                if damage.records:
                    self.lost += damage.records
                what = f"{damage.records} record(s)" if damage.records else "records"
                self._error(
                    SpillDamagedError(
                        f"spill segment {path.name}: {damage.length} bytes at offset "
                        f"{damage.offset} unreadable ({damage.reason}); {what} lost",
                        str(path),
                        damage.records,
                    )
                )
            for path, cause in result.unreadable:
                self._damaged = True  # its records are not read back: as damage, squared
                self._error(
                    SpillDamagedError(
                        "a spill segment cannot be read: passed over, its records not "
                        "replayed (left on disk: the next producer to open spill_dir "
                        "tries it again): " + _naming(path, cause),
                        str(path),
                        None,
                    )
                )
            if (result.damage or result.unreadable) and not result.frames:
                self._square()  # the damage was the last of the backlog
            if self._given_back != given_back and result.frames:
                # A frame was given back while this read ran: the frames just read may
                # be behind it (newer records of its keys); they go back too, unread.
                for seg, frame in result.frames:
                    self._settle.append((seg, frame.offset, False))
                self._unread = True
                self._kick()
                continue
            self._hand_over(host, result.frames)
            if self.adopting and not any(not ok for _, _, ok in self._settle):
                self._adopted_read(host)
            await anyio.lowlevel.checkpoint()

    def _adopted_read(self, host: SpillHost) -> None:
        """The dead producers' records were all read back once (those given back
        later count in their topics' backlogs): from now on a topic spills only for
        its own backlog.  Those in memory go out ahead of the new records of their
        partitions."""
        if not self.store.adopted_unread():
            self.adopting = False
            host.spilling_changed()

    def _hand_over(self, host: SpillHost, frames: list[tuple[Segment, SpillFrame]]) -> None:
        """Hand the records of one read to the producer, each frame with its ticket.
        Whatever raises part way (a bug in the producer), every frame of the read is
        accounted for: a record the producer refused fails (its frame replayed up
        to max_replays, then reported with it), a frame cut short settles with the
        records it did not hand over failed, and the frames after it are given back
        unread, in their place. (An exception used to leave the frame unsettled and
        off its topic's backlog, the read's other frames lost to this process, and
        their records counted as replaying for good: with Kafka away, no probe ran
        again.)"""
        own = self.store.own
        handed = 0  # frames with a ticket, which settles them
        ticket: FrameTicket | None = None
        records: list[RecordTuple] = []
        reached = 0  # records of ``ticket`` handed over or failed
        try:
            for seg, frame in frames:
                n = len(frame.records)
                if seg.directory != own and (seg, frame.offset) not in self._inherited:
                    # A dead producer's records, read for the first time: never part
                    # of this process's backlog (which counts only what it put on
                    # disk or gave back), so they are not taken off it. Taken off,
                    # they ended a topic's spilling while its own records were still
                    # on disk, and new ones went through memory ahead of them.
                    self._inherited.add((seg, frame.offset))
                    host.inherited(n)
                else:
                    self._read_back(frame.topic, n)
                ticket = FrameTicket(self, seg, frame.offset, n, frame.attempts, frame.topic)
                records, reached = frame.records, 0
                handed += 1
                self._replaying += n
                self.replayed += n
                for record in records:
                    reached += 1
                    try:
                        host.inject(frame.topic, frame.partition, record, ticket)
                    except Exception as exc:
                        ticket.settled((_pending(record), _refused(exc)))
            ticket = None
        finally:
            if handed < len(frames):
                for seg, frame in frames[handed:]:
                    self._settle.append((seg, frame.offset, False))
                self._unread = True
                self._kick()
            if ticket is not None and reached < len(records):
                cut_short = KafkaError(
                    "the replayer stopped before handing this record read back from "
                    "spill_dir to the producer"
                )
                for record in records[reached:]:
                    ticket.settled((_pending(record), cut_short))

    async def _read(self, read_bytes: int) -> ReadResult:
        """``store.read(read_bytes)`` on a worker thread.  A stray cancellation
        meanwhile (see kafka_asgi.network.host) does not lose the frames it read: the
        read finishes in its thread, and they are taken once it has."""
        done = threading.Event()
        outcome: list[ReadResult | OSError] = []

        def read() -> None:
            try:
                outcome.append(self.store.read(read_bytes))
            except OSError as exc:
                outcome.append(exc)
            finally:
                done.set()

        try:
            await anyio.to_thread.run_sync(read)
        except anyio.get_cancelled_exc_class() as exc:
            if not withdraw_stray_cancellation(
                exc, self._tg, "the replayer", "kafka_asgi producer"
            ):
                raise
            # Bounded as the read is (a disk that stopped answering is not waited for).
            await anyio.to_thread.run_sync(done.wait, _READ_WAIT)
        if not outcome:  # still reading after _READ_WAIT, or not an OSError
            raise OSError("a spill_dir read interrupted by a cancellation did not finish")
        result = outcome[0]
        if isinstance(result, OSError):
            raise result
        return result

    async def close(self, timeout: float) -> None:  # noqa: ASYNC109
        """Write what is queued and settled, then close the store, within ``timeout``
        (shielded: a cancelled caller still gets them written).  A disk that stops
        answering is not waited for: its thread is left behind (the store closes its
        files and releases its locks when the disk answers) and what could not be
        written is reported.  Closing the store (its fsyncs) gets what is left of
        ``timeout``: at least a fifth of it, up to half a second, kept back from the
        writes."""
        self.evacuate = []  # everything left was just queued, oldest first
        start = anyio.current_time()
        reserve = min(_CLOSE_FLOOR, timeout * _CLOSE_SHARE)
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout - reserve):
            if self.ready and self.broken is None:
                await self._write_settled(abandon=True)
                while (self._queues or self._chunks) and self.broken is None:
                    before = self._queued
                    if self._chunks:
                        self._retry_blocked()
                    else:
                        self.write_now()
                    if self._queued == before:
                        break  # "block" and still no room: reported below
                    await anyio.lowlevel.checkpoint()
        error = SpillError("the producer closed before these records were written to spill_dir")
        chunks, self._chunks = self._chunks, []
        for topic, partition, _, records in chunks:
            self._dropped(topic, partition, records, error)
        self._drop_queued(error)
        # Whether or not it finished opening: an open still running in its thread
        # (cancelled meanwhile, it goes on) is closed once it is done, and one not
        # begun yet is refused, so no directory stays locked behind the producer.
        # Never less than _CLOSE_MIN: a scope cancelled before its thread starts
        # would not close the store at all (its locks held for the process's life).
        left = max(reserve, _CLOSE_MIN, timeout - (anyio.current_time() - start))
        with anyio.CancelScope(shield=True), anyio.move_on_after(left) as scope:
            try:
                await anyio.to_thread.run_sync(self.store.close, abandon_on_cancel=True)
            except OSError as exc:
                self._error(SpillError(f"closing spill_dir: {exc}"))
        if scope.cancelled_caught:
            self._error(
                SpillError(
                    f"closing spill_dir did not finish within {timeout}s (the disk did not "
                    "answer; left to a thread): its files are closed and its locks "
                    "released when it does, and a record on disk not synced may be lost "
                    "to a power cut"
                )
            )


def _pending(record: RecordTuple) -> PendingRecord:
    """A record read back, as the producer reports records."""
    return (*record[:2], _hdrs(record[2]), record[3])


def _refused(exc: Exception) -> KafkaError:
    """What a record read back failed with when the producer raised ``exc`` for it."""
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, (TypeError, ValueError)):  # its serializers
        return KafkaError(str(exc))
    logger.error(
        "kafka_asgi producer: a record read back from spill_dir could not be handed over",
        exc_info=exc,
    )
    error = KafkaError(
        "a record read back from spill_dir could not be handed to the producer: "
        f"{type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return error


def _hdrs(headers: Any) -> list[tuple[str, bytes | None]] | None:
    return list(headers) if headers else None


def _naming(path: Path, error: OSError) -> str:
    """``error``, with ``path`` if it does not name it already."""
    if error.filename is not None and os.fsdecode(error.filename) == str(path):
        return str(error)
    return f"{str(path)!r}: {error}"
