"""select_records: which records of a Fetch partition a consumer sees (no broker needed)."""

from __future__ import annotations

import dataclasses

import pytest

from kafka_asgi.consumer.results import AbortedTransaction, ConsumerRecord, select_records
from kafka_asgi.protocol.compression import Compression
from kafka_asgi.protocol.records import (
    ControlType,
    Record,
    RecordBatch,
    TimestampType,
    decode_batches,
    encode_batch,
)

TRANSACTIONAL = 0x10
CONTROL = 0x20


def data_batch(base: int, count: int, *, pid: int = -1, transactional: bool = False) -> RecordBatch:
    records = [
        Record(base + i, 1000 + base + i, f"k{base + i}".encode(), f"v{base + i}".encode(), ())
        for i in range(count)
    ]
    return RecordBatch(
        base_offset=base,
        partition_leader_epoch=0,
        magic=2,
        crc=0,
        attributes=TRANSACTIONAL if transactional else 0,
        last_offset_delta=count - 1,
        base_timestamp=1000 + base,
        max_timestamp=1000 + base + count - 1,
        producer_id=pid,
        producer_epoch=0 if pid >= 0 else -1,
        base_sequence=0 if pid >= 0 else -1,
        records=records,
    )


def marker(offset: int, pid: int, kind: ControlType) -> RecordBatch:
    key = b"\x00\x00" + int(kind).to_bytes(2, "big")
    return RecordBatch(
        base_offset=offset,
        partition_leader_epoch=0,
        magic=2,
        crc=0,
        attributes=TRANSACTIONAL | CONTROL,
        last_offset_delta=0,
        base_timestamp=5000,
        max_timestamp=5000,
        producer_id=pid,
        producer_epoch=0,
        base_sequence=-1,
        records=[Record(offset, 5000, key, b"\x00\x00\x00\x00\x00\x00", ())],
        control_type=kind,
    )


def offsets(records: list[ConsumerRecord]) -> list[int]:
    return [r.offset for r in records]


def test_plain_batches_all_records_with_topic_and_partition() -> None:
    batches = [data_batch(0, 3), data_batch(3, 2)]
    records, next_offset = select_records("t", 4, batches, 0)
    assert offsets(records) == [0, 1, 2, 3, 4]
    assert next_offset == 5
    first = records[0]
    assert (first.topic, first.partition, first.key, first.value, first.timestamp) == (
        "t",
        4,
        b"k0",
        b"v0",
        1000,
    )
    assert first.timestamp_type is TimestampType.CREATE_TIME


def test_records_before_fetch_offset_in_first_batch_are_dropped() -> None:
    records, next_offset = select_records("t", 0, [data_batch(10, 5), data_batch(15, 1)], 12)
    assert offsets(records) == [12, 13, 14, 15]
    assert next_offset == 16


def test_no_batches_keeps_the_fetch_offset() -> None:
    assert select_records("t", 0, [], 42) == ([], 42)


def test_control_batches_are_never_returned_but_advance_the_offset() -> None:
    batches = [data_batch(0, 2, pid=7, transactional=True), marker(2, 7, ControlType.COMMIT)]
    for read_committed in (False, True):
        records, next_offset = select_records("t", 0, batches, 0, read_committed=read_committed)
        assert offsets(records) == [0, 1]
        assert next_offset == 3


def test_read_uncommitted_returns_aborted_records() -> None:
    batches = [data_batch(0, 2, pid=7, transactional=True), marker(2, 7, ControlType.ABORT)]
    aborted = [AbortedTransaction(7, 0)]
    records, next_offset = select_records("t", 0, batches, 0, aborted_transactions=aborted)
    assert offsets(records) == [0, 1]
    assert next_offset == 3


def test_read_committed_leaves_out_aborted_transaction() -> None:
    batches = [
        data_batch(0, 2),  # non-transactional
        data_batch(2, 2, pid=7, transactional=True),  # aborted
        data_batch(4, 1, pid=8, transactional=True),  # committed, interleaved
        data_batch(5, 1, pid=7, transactional=True),  # aborted (same transaction)
        marker(6, 7, ControlType.ABORT),
        marker(7, 8, ControlType.COMMIT),
        data_batch(8, 1, pid=7, transactional=True),  # next transaction of 7: committed
        marker(9, 7, ControlType.COMMIT),
    ]
    records, next_offset = select_records(
        "t", 0, batches, 0, read_committed=True, aborted_transactions=[AbortedTransaction(7, 2)]
    )
    assert offsets(records) == [0, 1, 4, 8]
    assert next_offset == 10


def test_aborted_transaction_only_applies_from_its_first_offset() -> None:
    # Producer 7 committed a transaction at 0..1, then aborted one starting at 3.
    batches = [
        data_batch(0, 2, pid=7, transactional=True),
        marker(2, 7, ControlType.COMMIT),
        data_batch(3, 2, pid=7, transactional=True),
        marker(5, 7, ControlType.ABORT),
    ]
    records, next_offset = select_records(
        "t", 0, batches, 0, read_committed=True, aborted_transactions=[AbortedTransaction(7, 3)]
    )
    assert offsets(records) == [0, 1]
    assert next_offset == 6


def test_aborted_list_order_does_not_matter_and_idempotent_batches_are_kept() -> None:
    batches = [
        data_batch(0, 1, pid=5, transactional=True),
        data_batch(1, 1, pid=6, transactional=True),
        data_batch(2, 1, pid=9),  # idempotent but not transactional: never aborted
        marker(3, 6, ControlType.ABORT),
        marker(4, 5, ControlType.ABORT),
    ]
    aborted = [AbortedTransaction(6, 1), AbortedTransaction(5, 0)]
    records, next_offset = select_records(
        "t", 0, batches, 0, read_committed=True, aborted_transactions=aborted
    )
    assert offsets(records) == [2]
    assert next_offset == 5


def test_aborted_batch_before_fetch_offset_still_skipped() -> None:
    # The fetch starts inside an aborted transaction; the batch holding the fetch
    # offset is aborted, so nothing from it is returned.
    batches = [data_batch(0, 4, pid=3, transactional=True), marker(4, 3, ControlType.ABORT)]
    records, next_offset = select_records(
        "t", 0, batches, 2, read_committed=True, aborted_transactions=[AbortedTransaction(3, 0)]
    )
    assert records == []
    assert next_offset == 5


def test_empty_batch_left_by_compaction_advances_the_offset() -> None:
    empty = dataclasses.replace(data_batch(0, 0), last_offset_delta=9)
    records, next_offset = select_records("t", 0, [empty, data_batch(10, 1)], 0)
    assert offsets(records) == [10]
    assert next_offset == 11


@pytest.mark.parametrize("codec", list(Compression))
def test_decoded_batches_every_codec(codec: Compression) -> None:
    raw = encode_batch(
        [
            (b"a", b"1", [("h", b"x")], 1_700_000_000_000),
            (None, b"2", None, 1_700_000_000_001),
            (b"c", None, [("h", None)], 1_700_000_000_002),
        ],
        base_offset=100,
        compression=codec,
    )
    raw += encode_batch([(b"d", b"4", None, 1_700_000_000_003)], base_offset=103)
    # Cut the last batch in the middle, as a response cut at max_bytes would.
    batches = decode_batches(raw[:-5])
    assert batches.truncated
    records, next_offset = select_records("topic", 2, batches, 101)
    assert [(r.offset, r.key, r.value, r.headers, r.timestamp) for r in records] == [
        (101, None, b"2", (), 1_700_000_000_001),
        (102, b"c", None, (("h", None),), 1_700_000_000_002),
    ]
    assert next_offset == 103
