"""What a fetch returns, and the choice of records from the batches of a Fetch partition.

No I/O here: :func:`select_records` turns decoded batches into the records a consumer
should see, as the Java consumer does (``CompletedFetch`` in kafka-clients): control
batches are never returned, records before the fetch offset are dropped, and in
``read_committed`` the batches of aborted transactions are left out (KIP-98).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, NamedTuple

from kafka_asgi.protocol.records import ControlType, Header, RecordBatch, TimestampType

__all__ = [
    "EARLIEST",
    "LATEST",
    "AbortedTransaction",
    "ConsumerRecord",
    "FetchResult",
    "IsolationLevel",
    "select_records",
]

EARLIEST: Final = -2
"""``list_offset`` timestamp (and start position) meaning the log start offset."""
LATEST: Final = -1
"""``list_offset`` timestamp (and start position) meaning the end of the log: the high
watermark in ``read_uncommitted``, the last stable offset in ``read_committed``."""


class IsolationLevel(str, Enum):
    """Which records a fetch may see (the IsolationLevel field of Fetch and ListOffsets)."""

    READ_UNCOMMITTED = "read_uncommitted"
    READ_COMMITTED = "read_committed"

    @property
    def wire_value(self) -> int:
        return 1 if self is IsolationLevel.READ_COMMITTED else 0

    @classmethod
    def parse(cls, value: object) -> IsolationLevel:
        if isinstance(value, IsolationLevel):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        raise ValueError(
            f"isolation_level must be 'read_uncommitted' or 'read_committed', got {value!r}"
        )


class ConsumerRecord(NamedTuple):
    """One record as a consumer sees it."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    """Milliseconds since the epoch (create time or log-append time, see timestamp_type);
    -1 for a magic-0 message, which has none."""
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp_type: TimestampType = TimestampType.CREATE_TIME


@dataclass(frozen=True, slots=True)
class AbortedTransaction:
    """An aborted transaction overlapping the fetched range (Fetch v4+, read_committed)."""

    producer_id: int
    first_offset: int


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of fetching one partition."""

    topic: str
    partition: int
    records: list[ConsumerRecord]
    next_offset: int
    """Where the next fetch should start: past every batch this response held, including
    control batches, aborted batches and batches emptied by compaction, none of which
    yield records."""
    high_watermark: int
    last_stable_offset: int
    """-1 when the broker did not report it."""
    log_start_offset: int
    """-1 when the broker did not report it."""
    aborted_transactions: tuple[AbortedTransaction, ...] = ()
    truncated: bool = False
    """True when the response held records not returned: a partial batch at its end
    (cut at max_bytes), whole batches past the consumer's ``max_decoded_bytes``, or the
    rest of a batch of more records than one batch may decode to (256 MiB, counting
    each record's objects). The next fetch from ``next_offset`` reads them."""

    @property
    def end_offset(self) -> int:
        """The end of the log for this fetch's isolation level as the broker reported it:
        the last stable offset when known, else the high watermark."""
        return self.last_stable_offset if self.last_stable_offset >= 0 else self.high_watermark


def _is_abort_marker(batch: RecordBatch) -> bool:
    return batch.is_control and batch.control_type == ControlType.ABORT


def select_records(
    topic: str,
    partition: int,
    batches: Iterable[RecordBatch],
    fetch_offset: int,
    *,
    read_committed: bool = False,
    aborted_transactions: Sequence[AbortedTransaction] = (),
) -> tuple[list[ConsumerRecord], int]:
    """The records to return from ``batches`` and the next offset to fetch.

    In read_committed, the broker lists the aborted transactions that overlap the
    fetched range, each with its producer id and first offset.  Walking the batches in
    offset order, a transaction becomes "open and aborted" for its producer once a
    batch reaches its first offset; that producer's transactional batches are then
    skipped until its ABORT marker (a control batch) closes the transaction.  This is
    the Java consumer's algorithm, which needs no look-ahead.
    """
    pending = sorted(aborted_transactions, key=lambda t: t.first_offset) if read_committed else []
    pending_index = 0
    aborted_producers: set[int] = set()
    records: list[ConsumerRecord] = []
    append = records.append
    next_offset = fetch_offset
    for batch in batches:
        producer_id = batch.producer_id
        if read_committed and producer_id >= 0:
            last = batch.last_offset
            while pending_index < len(pending) and pending[pending_index].first_offset <= last:
                aborted_producers.add(pending[pending_index].producer_id)
                pending_index += 1
            if _is_abort_marker(batch):
                aborted_producers.discard(producer_id)
            elif batch.is_transactional and producer_id in aborted_producers:
                next_offset = max(next_offset, batch.next_offset)
                continue
        if not batch.is_control:
            timestamp_type = batch.timestamp_type
            for r in batch.records:
                # A fetch returns whole batches: the one holding fetch_offset may
                # start before it (and a compressed legacy message always does).
                if r.offset >= fetch_offset:
                    append(
                        ConsumerRecord(
                            topic,
                            partition,
                            r.offset,
                            r.timestamp,
                            r.key,
                            r.value,
                            r.headers,
                            timestamp_type,
                        )
                    )
        resume = batch.resume_offset
        next_offset = max(next_offset, batch.next_offset if resume is None else resume)
    return records, next_offset
