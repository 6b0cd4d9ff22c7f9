"""The producer's side of the disk spill: what :class:`SpillSeam` calls back (the
methods of :class:`~kafka_asgi.producer.spill_seam.SpillHost`), and moving a topic's
memory records to the disk when it starts spilling.  A part of ``Producer``, as
sender.py, idempotence.py and reports.py are (see state.py)."""

from __future__ import annotations

from typing import Any

from .accumulator import Batch, Delivery, PendingRecord, Waiters, cut, records_bytes
from .errors import BufferFullError, SpillMovedError
from .spill_seam import FRAME_RECORDS, SpillSeam
from .state import ProducerState

__all__ = ["SpillSupport"]


class SpillSupport(ProducerState):
    """Replayed records in, dropped ones reported, spilling topics off the fast path."""

    def _replay_room(self) -> int:
        if self._state != "running":
            return 0
        if self._held_bytes >= self._max_buffering_bytes // 2:
            # Replayed records pass the bounds (they were accepted once): read none
            # while half the bytes are held, as while half the records are (a read is
            # bounded in bytes by the replayer).
            return 0
        return self._max_buffering // 2 - self._held

    def _replay_record(self, topic: str, partition: int, record: Any, ticket: Delivery) -> None:
        key, value, headers, ts = record
        self._enqueue(topic, value, key, headers, None if partition < 0 else partition, ts, ticket)
        # Sent at once, as a sync send() is: the replayer reads again once they are.
        self._force_at = 0.0
        self._wake()

    def _report_dropped(
        self, topic: str, partition: int, records: list[PendingRecord], error: Any
    ) -> None:
        self._held += len(records)  # reported as failed, as if held until now
        self._held_bytes += records_bytes(records)
        # Not offered to the spill again, which dropped them; the spill stays in
        # place for the callbacks (a record they send for a spilling topic goes to
        # the disk behind its backlog, not through memory ahead of it).
        self._report_failure(topic, partition, records, None, error, False, intercept=False)

    def _respill(self) -> None:
        """Records of the spilling topics go through _enqueue (and then to the disk):
        ``_topics``, the fast path's dict, leaves them out."""
        spill = self._spill
        if self._state != "running" or spill is None:
            return
        if spill.adopting:
            self._topics = {}  # every topic spills while a dead producer's records wait
        elif spill.spilling:
            self._topics = {n: t for n, t in self._buffers.items() if n not in spill.spilling}
        else:
            self._topics = self._buffers
        if spill.evacuate:
            self._wake()

    def _evacuate_now(self) -> None:
        """SpillHost.evacuate_now: the send path found a topic whose evacuation is
        pending; do it now unless a callback runs (the producer may be iterating its
        batches: the flusher's cycle does it then, woken by _respill)."""
        if self._in_callback == 0 and self._state == "running" and self._spill is not None:
            self._evacuate()

    def _evacuate(self) -> None:
        """Move the memory records of topics that started spilling to the disk
        (in order, ahead of their records queued there).  Batches that must stay in
        memory (in flight, perhaps written, awaited by a send()) get a held copy on
        disk of their records that no send() awaits (spill_seam.SpillSeam.hold)."""
        spill = self._spill
        assert spill is not None
        moved = SpillMovedError("moved to spill_dir behind its topic's backlog")
        topics = spill.begin_evacuation()
        try:
            for name in topics:
                t = self._buffers.get(name)
                if t is None:
                    continue
                for p in t.partitions:
                    if p.pending:
                        cut(p)
                    for b in list(p.batches):
                        if (
                            b.inflight
                            or b.maybe_written
                            or (b.waiters and any(d.__class__ is Delivery for _, d in b.waiters))
                        ):
                            self._hold_copy(spill, b)
                            continue
                        self._fail_batch(b, moved, True)
                if not (t.extras and any(e[4].__class__ is Delivery for e in t.extras)):
                    self._fail_topic(t, moved)
        finally:
            spill.end_evacuation()

    def _hold_copy(self, spill: SpillSeam, b: Batch) -> None:
        """A held copy on disk of the records of ``b`` no waiter watches (its
        replayed records are on disk already, a send() gets its own outcome)."""
        records = b.records()
        taken = {i for i, _ in b.waiters} if b.waiters else set()
        free = [i for i in range(len(records)) if i not in taken]
        if not free:
            return
        tickets = spill.hold(b.part.topic.name, b.part.index, [records[i] for i in free])
        waiters: Waiters = list(b.waiters or [])
        for k, ticket in enumerate(tickets):
            waiters.extend((i, ticket) for i in free[k * FRAME_RECORDS : (k + 1) * FRAME_RECORDS])
        waiters.sort(key=_index)
        b.waiters = waiters or None

    async def _room_or_spill(self, spill: SpillSeam, topic: str) -> None:
        """send_buffered with the buffer full or ``topic`` spilling: wait for the
        buffer while Kafka is there (only slower than the senders), else for room in
        the write queue (the record then goes to the disk)."""
        if spill.kafka_ok and not spill.spills(topic) and self._held >= self._max_buffering:
            await self._wait_for_room()
        if not (spill.full() and self.options.wait_on_buffer_full):
            return
        if self._held >= self._max_buffering or spill.spills(topic):
            limit = self.options.wait_buffer_timeout
            if not await spill.wait_room(limit):
                raise BufferFullError(
                    f"buffer overflow: {spill.queued} records still wait to be written to "
                    f"spill_dir after wait_buffer_timeout={limit}s"
                )


def _index(waiter: tuple[int, Delivery]) -> int:
    return waiter[0]
