"""The producer's buffers: records per topic, then per partition, then batches.

The path of a record (see ARCHITECTURE.md):

1. ``send_nowait`` appends the value and ``time_ns()`` to its topic's two
   parallel lists (:class:`TopicBuffer`): no object per record, so nothing for the
   garbage collector to track, and the division to milliseconds happens once per
   run of records in the encoder
   (:func:`~kafka_asgi.protocol.records.encode_batch_columns`).  Nothing else
   happens per record on the caller's side: no partitioning, no lock, no await.
   The records that carry more (a key, headers, an explicit partition, or a sync
   ``send()`` waiting for its result) also leave an *extra*
   ``(index in the lists, key, headers, partition, Delivery)``.
2. The flusher swaps the topic's lists for empty ones and :func:`place`\\ s its
   records on partitions (:class:`PartitionBuffer`, the same columns, plus keys and
   headers columns once a record has one).  Records without a key, with a
   built-in partitioner, go to the topic's *sticky* partition (KIP-480) in
   slices, without looking at them one by one; the rest are placed one by one.
   ``(key, value, headers, timestamp_ms)`` tuples are only made for the callbacks
   that receive them (``error_handle``, ``on_delivery``).
3. A partition's pending records become a :class:`Batch` (:func:`cut`) when they
   reach the batch size, or when the flusher sends them.  Without idempotence a
   partition sends one batch at a time, in order, so a retried batch can never be
   overtaken; with it, up to ``max_in_flight`` batches, kept in order by their
   sequence numbers (idempotence.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

from kafka_asgi.protocol.errors import KafkaError, UnknownTopicOrPartitionError
from kafka_asgi.protocol.records import BATCH_OVERHEAD

from .errors import PartitionerError, RecordTooLargeError
from .partitioner import crc32_partition, murmur2_partition

__all__ = [
    "NEVER_ACKED",
    "RECORD_OVERHEAD",
    "Batch",
    "CheckedRecord",
    "Delivery",
    "PartitionBuffer",
    "PendingRecord",
    "TopicBuffer",
    "batch_bytes",
    "cut",
    "cut_moving_on",
    "header_size",
    "largest_record",
    "place",
    "record_bytes",
    "records_bytes",
    "records_of",
    "too_large",
]

Header = tuple[str, bytes | None]
PendingRecord = tuple[bytes | None, bytes | None, list[Header] | None, int]
"""(key, value, headers, timestamp_ms): a record handed to the producer and not yet
delivered, as the error callback receives it (the protocol layer's decoded record is
:class:`kafka_asgi.protocol.records.Record`; the consumer hands out ``ConsumerRecord``)."""
CheckedRecord = tuple[
    str, bytes | None, bytes | None, list[tuple[str, bytes | None]] | None, int | None, int | None
]
"""(topic, value, key, headers, partition, timestamp_ms): a record's arguments as
``Producer.check_record`` returns them, checked and converted."""
Values = list[bytes | None]
Keys = list[bytes | None]
HeadersColumn = list[list[Header] | None]
Extra = tuple[int, bytes | None, list[Header] | None, int | None, "Delivery | None"]
"""(index in the topic's lists, key, headers, explicit partition, Delivery)."""
_NS_PER_MS = 1_000_000


def records_of(
    values: Values, stamps: list[int], keys: Keys | None, headers: HeadersColumn | None
) -> list[PendingRecord]:
    """The records of columns as tuples (for the callbacks; not on the hot path)."""
    n = len(values)
    return [
        (
            keys[i] if keys is not None else None,
            values[i],
            headers[i] if headers is not None else None,
            stamps[i] // _NS_PER_MS,
        )
        for i in range(n)
    ]


RECORD_OVERHEAD = 16
"""Bytes a small record adds to a batch beyond its key and value (length, attributes,
timestamp and offset deltas, key/value lengths, header count: about 8 to 16)."""


def header_size(headers: list[Header]) -> int:
    """Bytes the headers add to a record (an upper bound)."""
    size = 0
    for k, v in headers:
        size += 10 + len(k) * 4 + (len(v) if v is not None else 0)
    return size


def record_bytes(value: bytes | None, key: bytes | None, headers: list[Header] | None) -> int:
    """Bytes a record adds to a batch, at most (what ``max_request_size`` is checked
    against when it is handed over)."""
    size = RECORD_OVERHEAD + (len(value) if value is not None else 0)
    if key is not None:
        size += len(key)
    if headers is not None:
        size += header_size(headers)
    return size


def records_bytes(records: list[PendingRecord]) -> int:
    """What ``records`` count in ``max_buffering_bytes``: :func:`record_bytes` without
    the per-record overhead (value, key and headers), as the send methods counted
    them when they were accepted; given back as they leave memory."""
    size = -RECORD_OVERHEAD * len(records)
    for key, value, headers, _ in records:
        size += record_bytes(value, key, headers)
    return size


def batch_bytes(b: Batch) -> int:
    """:func:`records_bytes` of a batch's records, read from its columns."""
    size = sum(len(v) for v in b.values if v is not None)
    if b.keys is not None:
        size += sum(len(k) for k in b.keys if k is not None)
    if b.headers is not None:
        size += sum(header_size(h) for h in b.headers if h is not None)
    return size


def largest_record(max_request_size: int) -> int:
    """The most bytes a record may take (by :func:`record_bytes`) for a batch holding
    it alone to fit in ``max_request_size``."""
    return max_request_size - BATCH_OVERHEAD - 20


def too_large(topic: str, size: int, max_request_size: int) -> RecordTooLargeError:
    return RecordTooLargeError(
        f"a record of about {size} bytes for topic {topic!r} cannot fit in a request "
        f"of max_request_size={max_request_size} bytes"
    )


NEVER_ACKED = float("-inf")  # PartitionBuffer.acked_at before any acknowledgement


class Delivery:
    """Where the flusher leaves the outcome of one sync ``send()``."""

    __slots__ = ("abandoned", "error", "event", "metadata", "unheard")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.metadata: Any = None
        self.error: KafkaError | None = None
        # The caller stopped waiting (its own timeout, a cancellation, or
        # delivery_timeout): a failure must then be told some other way.
        self.abandoned = False
        # A failure told only to the caller (no error_handle, no on_delivery): where
        # to log it from, (topic, partition, retriable), should the caller's own
        # cancellation win over it in the step it came (reports.py, _unheard).
        self.unheard: tuple[str, int, bool] | None = None


Waiters = list[tuple[int, Delivery]]
"""(index of the record in its list, Delivery) for the records someone awaits."""


class Batch:
    """Records of one partition that travel together, with their retry state."""

    __slots__ = (
        "attempts",
        "base_seq",
        "behind_disk",
        "born",
        "data",
        "done",
        "halves",
        "headers",
        "inflight",
        "keys",
        "maybe_written",
        "nbytes",
        "not_before",
        "part",
        "pid_gen",
        "sent",
        "stalls",
        "stamps",
        "values",
        "waiters",
        "zbody",
        "zbusy",
    )

    def __init__(
        self,
        part: PartitionBuffer,
        values: Values,
        stamps: list[int],
        keys: Keys | None,
        headers: HeadersColumn | None,
        nbytes: int,
        waiters: Waiters | None,
    ) -> None:
        self.part = part
        # Parallel lists; keys/headers None when no record has one.  Timestamps in ns.
        self.values = values
        self.stamps = stamps
        self.keys = keys
        self.headers = headers
        self.nbytes = nbytes
        self.waiters = waiters
        self.data: bytes | None = None
        self.attempts = 0
        self.not_before = 0.0
        # When the batch was made (anyio clock): its records were all handed over
        # before, so delivery_timeout counted from here never reports one early.
        self.born = anyio.current_time()
        # Tries that found no broker to connect to (they do not count as attempts).
        self.stalls = 0
        # Idempotence (KIP-98): the producer id generation and first sequence number
        # this batch was stamped with; -1 until it is first sent.
        self.pid_gen = -1
        self.base_seq = -1
        self.sent = False
        self.inflight = False  # in a Produce request awaiting its response now
        self.maybe_written = False
        self.done = False
        # An older batch of its partition went to the spill while this one stayed in
        # memory: it must not be retried from memory (reports.py, _follow_disk).
        self.behind_disk = False
        # Set when the batch was split: its two halves, which settle independently
        # (with idempotence both may be in flight, and either retried after the other
        # is acknowledged), so whoever waits for this batch waits for both.
        self.halves: tuple[Batch, Batch] | None = None
        # A slow codec's large batch is compressed on a worker thread (sender.py):
        # zbusy while that runs, then zbody holds (compressed records section, base
        # timestamp, largest delta) until the batch is encoded around it.
        self.zbody: tuple[bytes, int, int] | None = None
        self.zbusy = False

    def records(self) -> list[PendingRecord]:
        return records_of(self.values, self.stamps, self.keys, self.headers)

    def slice(self, start: int, stop: int, nbytes: int) -> Batch:
        """Records ``start:stop`` as a new batch (waiters not carried over)."""
        keys = self.keys
        headers = self.headers
        return Batch(
            self.part,
            self.values[start:stop],
            self.stamps[start:stop],
            None if keys is None else keys[start:stop],
            None if headers is None else headers[start:stop],
            nbytes,
            None,
        )


class PartitionBuffer:
    """Records placed on one partition: pending ones, then cut batches."""

    __slots__ = (
        "acked_at",
        "acked_seq",
        "batches",
        "headers",
        "index",
        "inflight",
        "keys",
        "nbytes",
        "next_seq",
        "pending",
        "pid_gen",
        "probing",
        "stamps",
        "topic",
        "unresolved",
        "waiters",
    )

    def __init__(self, topic: TopicBuffer, index: int) -> None:
        self.topic = topic
        self.index = index
        # Pending records: values, timestamps (ns), and keys/headers once one has some.
        self.pending: Values = []
        self.stamps: list[int] = []
        self.keys: Keys | None = None
        self.headers: HeadersColumn | None = None
        self.nbytes = 0
        self.waiters: Waiters | None = None
        self.batches: deque[Batch] = deque()
        # Batches of this partition in Produce requests awaiting their response.
        self.inflight = 0
        # Idempotence (KIP-98), under producer id generation pid_gen: the next
        # sequence number to give out, the one after the last acknowledged batch,
        # and (>= 0) the sequence number after a batch that failed maybe written
        # while later ones were out (unresolved until one of them is acknowledged,
        # or none is left).
        self.next_seq = 0
        self.acked_seq = 0
        self.pid_gen = -1
        self.unresolved = -1
        # When the leader last acknowledged a batch of this partition under pid_gen
        # (anyio clock; -inf: none yet). Until one is, or once STATE_TRUSTED_FOR has
        # passed since, one batch at a time (see Idempotence._may_send_new).
        self.acked_at = NEVER_ACKED
        # A batch was refused as out of order where the broker may have it (its
        # producer state reloaded after a restart keeps only the last batch): the
        # partition sends nothing until DescribeProducers says how far it has us.
        self.probing = False

    def __repr__(self) -> str:
        return f"<PartitionBuffer {self.topic.name}[{self.index}]>"


class TopicBuffer:
    """Records of one topic not yet placed on a partition."""

    __slots__ = (
        "available",
        "count",
        "extras",
        "fetching",
        "meta",
        "mixed",
        "name",
        "nbytes",
        "partitions",
        "rr",
        "stamps",
        "sticky",
        "sticky_count",
        "taken",
        "values",
        "wake_bytes",
    )

    def __init__(self, name: str, wake_bytes: int) -> None:
        self.name = name
        # Parallel lists: values and time_ns() (or the given timestamp, in ns).
        self.values: Values = []
        self.stamps: list[int] = []
        self.nbytes = 0
        # send_nowait wakes the flusher when nbytes reaches this; then it is raised
        # out of reach until the flusher takes the records (one wake-up, not many).
        self.wake_bytes = wake_bytes
        self.extras: list[Extra] | None = None
        # True when records must be placed one by one (an extra, or a partitioner
        # that looks at every record).
        self.mixed = False
        self.partitions: list[PartitionBuffer] = []
        self.count = 0  # partitions the topic has now (the list keeps any it had)
        self.available: list[int] = []
        self.meta: object = None
        self.sticky = -1
        self.sticky_count = 0  # records placed on the sticky partition since it was chosen
        self.rr = 0
        self.fetching = False
        # Records that ever left the front of ``values`` (placed, or reported): a
        # position in values plus this names one record however the list shrinks.
        self.taken = 0

    def __repr__(self) -> str:
        return f"<TopicBuffer {self.name} {len(self.values)} records>"

    def set_partition_count(self, count: int) -> None:
        """Place records on ``count`` partitions from now on.

        Kafka only adds partitions; fewer means the topic was deleted and made
        again: the buffers of the lost partitions stay (their batches fail there).
        """
        parts = self.partitions
        while len(parts) < count:
            parts.append(PartitionBuffer(self, len(parts)))
        self.count = count
        if self.sticky >= count:
            self.sticky = -1

    def next_sticky(self) -> PartitionBuffer:
        """Move the sticky partition on (KIP-480: a new one for each new batch).

        Prefers a partition with a leader and nothing queued or in flight, so that
        records without a key go where they can leave at once.
        """
        parts = self.partitions
        self.sticky_count = 0
        candidates = self.available or range(self.count)
        n = len(candidates)
        current = self.sticky
        fallback = -1
        # Start after the current sticky partition's position among the candidates.
        start = 0
        for pos, index in enumerate(candidates):
            if index > current:
                start = pos
                break
        for step in range(n):
            index = candidates[(start + step) % n]
            if index == current and n > 1:
                continue
            p = parts[index]
            if not p.inflight and not p.batches:
                self.sticky = index
                return p
            if fallback < 0:
                fallback = index
        self.sticky = fallback if fallback >= 0 else (current if current >= 0 else 0)
        return parts[self.sticky]


def cut(p: PartitionBuffer) -> Batch:
    """Make ``p``'s pending records a batch, queued behind its earlier batches."""
    batch = Batch(p, p.pending, p.stamps, p.keys, p.headers, p.nbytes, p.waiters)
    p.pending = []
    p.stamps = []
    p.keys = None
    p.headers = None
    p.nbytes = 0
    p.waiters = None
    p.batches.append(batch)
    return batch


def cut_moving_on(p: PartitionBuffer) -> Batch:
    """:func:`cut`, and if ``p`` was its topic's sticky partition, the topic's next
    keyless records go to another one (KIP-480: stick until a batch is made)."""
    batch = cut(p)
    t = p.topic
    if t.sticky == p.index:
        t.next_sticky()
    return batch


Failed = list[tuple[PendingRecord, Delivery | None, KafkaError]]


def place(
    t: TopicBuffer,
    values: Values,
    stamps: list[int],
    nbytes: int,
    extras: list[Extra] | None,
    mixed: bool,
    partitioner: str | Callable[[bytes | None, int], int],
    cap: int,
    batch_num: int,
    active: set[PartitionBuffer],
) -> Failed:
    """Put the records ``values``/``stamps``/``extras`` (drained from ``t``) on
    ``t``'s partitions.

    A partition whose pending bytes reach ``cap`` is cut into a batch; records
    without a key move to another partition every ``batch_num``.  Partitions
    that receive records are added to ``active``.  Returns the records that could
    not be placed (a partitioner error, a partition the topic lacks), with the error.
    """
    if not t.count or not values:
        return []
    if not mixed and (partitioner == "murmur2" or partitioner == "crc32"):
        _place_sticky(t, values, stamps, nbytes, cap, batch_num, active)
        return []
    return _place_each(t, values, stamps, extras, partitioner, cap, batch_num, active)


def _sticky(t: TopicBuffer) -> PartitionBuffer:
    if 0 <= t.sticky < t.count:
        return t.partitions[t.sticky]
    return t.next_sticky()


def _place_sticky(
    t: TopicBuffer,
    values: Values,
    stamps: list[int],
    nbytes: int,
    cap: int,
    batch_num: int,
    active: set[PartitionBuffer],
) -> None:
    """Records without a key or headers: whole slices to the sticky partition."""
    n = len(values)
    # Sizes are known per topic, not per record: slices are cut by the average
    # (records of one topic are usually alike).  Encoding checks the real size.
    per = nbytes // n + 1 + RECORD_OVERHEAD
    i = 0
    while i < n:
        p = _sticky(t)
        room = (cap - p.nbytes) // per
        if room <= 0:
            if p.pending:
                cut(p)
                t.next_sticky()
                continue
            room = 1
        # After batch_num records the next partition takes over, so that a burst
        # is spread (and sent in parallel) rather than piled on one partition.
        room = min(room, batch_num - t.sticky_count)
        if room <= 0:
            t.next_sticky()
            continue
        if i == 0 and room >= n:
            chunk = values
            times = stamps
        else:
            chunk = values[i : i + room]
            times = stamps[i : i + room]
        taken = len(chunk)
        if p.pending:
            p.pending += chunk
            p.stamps += times
            if p.keys is not None:
                p.keys += [None] * taken
            if p.headers is not None:
                p.headers += [None] * taken
        else:
            p.pending = chunk
            p.stamps = times
        p.nbytes += taken * per
        t.sticky_count += taken
        active.add(p)
        i += taken
        if p.nbytes >= cap:
            cut(p)
            t.next_sticky()


def _place_each(
    t: TopicBuffer,
    values: Values,
    stamps: list[int],
    extras: list[Extra] | None,
    partitioner: str | Callable[[bytes | None, int], int],
    cap: int,
    batch_num: int,
    active: set[PartitionBuffer],
) -> Failed:
    """Records one by one: keys hashed, extras honoured, in order."""
    parts = t.partitions
    count = t.count
    failed: Failed = []
    if partitioner == "murmur2":
        hash_key: Callable[[bytes, int], int] | None = murmur2_partition
    elif partitioner == "crc32":
        hash_key = crc32_partition
    else:
        hash_key = None
    custom = partitioner if callable(partitioner) else None
    round_robin = partitioner == "round_robin"
    ex = extras or []
    ei = 0
    next_extra = ex[0][0] if ex else -1
    sticky = _sticky(t) if hash_key is not None else None
    overhead = RECORD_OVERHEAD
    for i, value in enumerate(values):
        delivery: Delivery | None = None
        explicit: int | None = None
        key: bytes | None = None
        headers: list[Header] | None = None
        if i == next_extra:
            _, key, headers, explicit, delivery = ex[ei]
            ei += 1
            next_extra = ex[ei][0] if ei < len(ex) else -1
        if explicit is not None:
            if explicit >= count:
                failed.append(
                    (
                        (key, value, headers, stamps[i] // _NS_PER_MS),
                        delivery,
                        UnknownTopicOrPartitionError(
                            f"topic {t.name!r} has no partition {explicit} (it has {count})"
                        ),
                    )
                )
                continue
            p = parts[explicit]
        elif custom is not None:
            try:
                index = custom(key, count)
            except Exception as exc:
                failed.append(
                    (
                        (key, value, headers, stamps[i] // _NS_PER_MS),
                        delivery,
                        PartitionerError(f"partitioner failed: {exc!r}"),
                    )
                )
                continue
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
                failed.append(
                    (
                        (key, value, headers, stamps[i] // _NS_PER_MS),
                        delivery,
                        PartitionerError(
                            f"partitioner returned {index!r} for topic {t.name!r}, "
                            f"which has partitions 0..{count - 1}"
                        ),
                    )
                )
                continue
            p = parts[index]
        elif round_robin:
            p = parts[t.rr % count]
            t.rr += 1
        elif key is None:
            assert sticky is not None
            if t.sticky_count >= batch_num:
                sticky = t.next_sticky()
            t.sticky_count += 1
            p = sticky
        else:
            assert hash_key is not None
            p = parts[hash_key(key, count)]
        size = overhead + (len(value) if value is not None else 0)
        if key is not None:
            size += len(key)
        if headers:
            size += header_size(headers)
        if p.nbytes and p.nbytes + size > cap:
            cut(p)
            if p is sticky:
                sticky = t.next_sticky()
                if key is None and explicit is None and custom is None and not round_robin:
                    t.sticky_count = 1
                    p = sticky
                    if p.nbytes and p.nbytes + size > cap:
                        cut(p)
        pending = p.pending
        if delivery is not None:
            if p.waiters is None:
                p.waiters = []
            p.waiters.append((len(pending), delivery))
        keys = p.keys
        if keys is not None:
            keys.append(key)
        elif key is not None:
            p.keys = [None] * len(pending)
            p.keys.append(key)
        column = p.headers
        if column is not None:
            column.append(headers)
        elif headers is not None:
            p.headers = [None] * len(pending)
            p.headers.append(headers)
        pending.append(value)
        p.stamps.append(stamps[i])
        p.nbytes += size
        active.add(p)
    return failed
