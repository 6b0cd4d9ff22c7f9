"""Record batches against independent encoders/decoders (aiokafka, kafka-python)."""

from __future__ import annotations

import os
import struct
import tracemalloc
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatch as AioBatch
from aiokafka.record.default_records import DefaultRecordBatchBuilder as AioBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder as AioLegacyBuilder

with warnings.catch_warnings():
    # kafka-python's import uses importlib.resources.read_text, deprecated in 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatch as KpBatch
    from kafka.record.default_records import DefaultRecordBatchBuilder as KpBuilder
    from kafka.record.legacy_records import LegacyRecordBatchBuilder as KpLegacyBuilder

from kafka_asgi.consumer.results import select_records
from kafka_asgi.protocol.compression import Compression, _xxh32_short, compress
from kafka_asgi.protocol.crc import crc32c
from kafka_asgi.protocol.errors import ProtocolError
from kafka_asgi.protocol.records import (
    BATCH_OVERHEAD,
    CREATE_TIME,
    DECODED_HEADER_OVERHEAD,
    DECODED_RECORD_OVERHEAD,
    LOG_APPEND_TIME,
    ControlType,
    DecodedBatches,
    Record,
    RecordBatch,
    RecordTuple,
    TimestampType,
    assemble_batch,
    decode_batches,
    encode_batch,
    estimate_record_size,
    first_batch_compressed,
    set_producer_state,
)
from kafka_asgi.protocol.varint import zigzag

TS = 1_700_000_000_000

CASES: dict[str, list[RecordTuple]] = {
    "plain": [(b"key-%d" % i, b"value-%d" % i, None, TS + i) for i in range(5)],
    "null-key": [(None, b"v1", None, TS), (None, b"v2", None, TS)],
    "null-value": [(b"tombstone", None, None, TS), (b"k2", None, [], TS + 1)],
    "null-key-and-value": [(None, None, None, TS)],
    "empty-key-and-value": [(b"", b"", None, TS)],
    "headers": [
        (b"k", b"v", [("trace-id", b"abc123"), ("empty", b""), ("null", None)], TS),
        (None, b"v2", [("unicode-\u00e9\u4e2d", b"\x00\xff")], TS + 7),
        (b"k3", b"v3", [("dup", b"1"), ("dup", b"2")], TS + 7),
    ],
    "timestamps-out-of-order": [
        (None, b"a", None, TS),
        (None, b"b", None, TS - 5000),
        (None, b"c", None, TS + 10**9),
        (None, b"d", None, 0),
    ],
    "big-values": [
        (b"k" * 20_000, os.urandom(70_000), [("h", os.urandom(17_000))], TS),
        (None, b"small", None, TS),
    ],
    "many-records": [(None, b"%d" % i, None, TS + (i % 3)) for i in range(17_000)],
    "mixed": [
        (None, b"x" * 100, None, TS),
        (b"k", b"y" * 300, [("a", b"b")], TS + 200),
        (None, None, None, TS + 20_000),
        (b"z" * 200, b"", [("n", None)], TS - 1),
    ],
}


def _aiokafka_batch(
    records: Sequence[RecordTuple],
    compression: int = 0,
    producer: tuple[int, int, int] = (-1, -1, -1),
    transactional: bool = False,
) -> bytes:
    builder = AioBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=int(transactional),
        producer_id=producer[0],
        producer_epoch=producer[1],
        base_sequence=producer[2],
        batch_size=1 << 30,
    )
    for i, (key, value, headers, ts) in enumerate(records):
        assert builder.append(i, timestamp=ts, key=key, value=value, headers=list(headers or []))
    return bytes(builder.build())


def _kafka_python_batch(records: Sequence[RecordTuple], compression: int = 0) -> bytes:
    builder = KpBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for i, (key, value, headers, ts) in enumerate(records):
        assert builder.append(i, timestamp=ts, key=key, value=value, headers=list(headers or []))
    return bytes(builder.build())


def _expected_records(records: Sequence[RecordTuple], base_offset: int = 0) -> list[Record]:
    return [
        Record(base_offset + i, ts, key, value, tuple(headers or ()))
        for i, (key, value, headers, ts) in enumerate(records)
    ]


def _their_records(reader: Any) -> list[Record]:
    return [
        Record(r.offset, r.timestamp, r.key, r.value, tuple(tuple(h) for h in r.headers))
        for r in reader
    ]


# --- magic 2, uncompressed: byte-exact ---------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_uncompressed_bytes_equal_aiokafka(case: str) -> None:
    records = CASES[case]
    assert encode_batch(records) == _aiokafka_batch(records)


@pytest.mark.parametrize("case", ["plain", "null-key", "null-value", "headers", "mixed"])
def test_uncompressed_bytes_equal_kafka_python(case: str) -> None:
    records = CASES[case]
    # kafka-python writes partitionLeaderEpoch 0 where aiokafka and Java write -1.
    assert encode_batch(records, partition_leader_epoch=0) == _kafka_python_batch(records)


def test_producer_fields_and_transactional_equal_aiokafka() -> None:
    records = CASES["headers"]
    ours = encode_batch(
        records, producer_id=123456789012, producer_epoch=7, base_sequence=42, transactional=True
    )
    assert ours == _aiokafka_batch(records, producer=(123456789012, 7, 42), transactional=True)


def test_base_offset_and_leader_epoch_only_change_uncovered_fields() -> None:
    records = CASES["plain"]
    plain = encode_batch(records)
    moved = encode_batch(records, base_offset=1_000_000_000_000, partition_leader_epoch=17)
    assert moved[:8] == struct.pack(">q", 1_000_000_000_000)
    assert moved[12:16] == struct.pack(">i", 17)
    # The CRC covers neither field (it starts at the attributes).
    assert moved[16:] == plain[16:]
    assert moved[8:12] == plain[8:12]


def test_header_layout() -> None:
    records = [(b"k", b"v", None, TS), (None, b"w", None, TS + 3)]
    data = encode_batch(records, base_offset=10, producer_id=5, producer_epoch=1, base_sequence=9)
    fields = struct.unpack_from(">qiibIhiqqqhii", data)
    assert (
        fields
        == (
            10,  # base offset
            len(data) - 12,  # batch length
            -1,  # partition leader epoch
            2,  # magic
            crc32c(data[21:]),
            0,  # attributes
            1,  # last offset delta
            TS,  # base timestamp
            TS + 3,  # max timestamp
            5,
            1,
            9,
            2,  # record count
        )
    )
    assert BATCH_OVERHEAD == 61


# --- magic 2, decoded by their readers and ours ---------------------------------


@pytest.mark.parametrize("case", CASES)
def test_their_readers_read_our_batches(case: str) -> None:
    records = CASES[case]
    data = encode_batch(records, base_offset=100)
    for reader_cls in (AioBatch, KpBatch):
        reader = reader_cls(data)
        assert reader.validate_crc()
        assert reader.base_offset == 100
        assert _their_records(reader) == _expected_records(records, 100)


@pytest.mark.parametrize("case", CASES)
def test_we_read_their_batches(case: str) -> None:
    records = CASES[case]
    for data in (_aiokafka_batch(records), _kafka_python_batch(records)):
        [batch] = decode_batches(data)
        assert batch.records == _expected_records(records)
        assert batch.base_timestamp == records[0][3]
        assert batch.max_timestamp == max(r[3] for r in records)
        assert batch.last_offset_delta == len(records) - 1


# --- compression -----------------------------------------------------------------

COMPRESSED = [Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]
COMPRESSIBLE = {
    "plain": [(b"key-%d" % i, b"value " * 20 + b"%d" % i, None, TS + i) for i in range(200)],
    "headers-null-key-null-value": [
        (None, b"repeat " * 50, [("trace", b"t" * 20), ("null", None)], TS),
        (b"tombstone", None, [("h", b"v")], TS + 1),
        (None, None, None, TS + 2),
        (b"k", b"repeat " * 50, None, TS + 3),
    ],
    "large": [(None, b"0123456789" * 1000 + os.urandom(50), None, TS) for _ in range(30)],
}


@pytest.mark.parametrize("codec", COMPRESSED)
@pytest.mark.parametrize("case", COMPRESSIBLE)
def test_compressed_interop(codec: Compression, case: str) -> None:
    records = COMPRESSIBLE[case]
    # aiokafka compresses lz4 with LZ4HC level 9; our default is lz4's fast
    # compressor (as the Java client's default), so ask for level 9 here.
    level = 9 if codec is Compression.LZ4 else None
    ours = encode_batch(records, compression=codec, base_offset=7, compression_level=level)
    theirs = _aiokafka_batch(records, compression=codec)
    # aiokafka falls back to no compression when it does not help: make sure
    # this test compares compressed batches.
    assert struct.unpack_from(">h", theirs, 21)[0] & 7 == codec
    assert struct.unpack_from(">h", ours, 21)[0] & 7 == codec

    reader = AioBatch(ours)
    assert reader.validate_crc()
    assert reader.compression_type == codec
    assert _their_records(reader) == _expected_records(records, 7)

    [batch] = decode_batches(theirs)
    assert batch.compression is codec
    assert batch.records == _expected_records(records)
    [batch] = decode_batches(ours)
    assert batch.records == _expected_records(records, 7)

    if codec is not Compression.GZIP:
        # snappy, lz4 and zstd are deterministic with the same settings
        # (xerial 32 KiB blocks, lz4 independent blocks, zstd level 3).
        # aiokafka's gzip headers carry the current time.
        assert ours[8:] == theirs[8:]
    # Our default settings give a batch their reader takes too.
    assert _their_records(AioBatch(encode_batch(records, compression=codec))) == _expected_records(
        records
    )


def test_gzip_interop_with_kafka_python() -> None:
    records = COMPRESSIBLE["plain"]
    [batch] = decode_batches(_kafka_python_batch(records, compression=Compression.GZIP))
    assert batch.records == _expected_records(records)
    reader = KpBatch(encode_batch(records, compression=Compression.GZIP))
    assert _their_records(reader) == _expected_records(records)


# --- decoded fields --------------------------------------------------------------


def test_decoded_header_fields() -> None:
    records = CASES["mixed"]
    data = encode_batch(
        records,
        base_offset=500,
        producer_id=99,
        producer_epoch=3,
        base_sequence=1000,
        transactional=True,
        partition_leader_epoch=12,
        compression=Compression.GZIP,
    )
    [batch] = decode_batches(data)
    assert isinstance(batch, RecordBatch)
    assert (batch.base_offset, batch.last_offset_delta) == (500, 3)
    assert (batch.last_offset, batch.next_offset) == (503, 504)
    assert batch.partition_leader_epoch == 12
    assert batch.magic == 2
    assert batch.crc == crc32c(data[21:])
    assert batch.compression is Compression.GZIP
    assert batch.timestamp_type is TimestampType.CREATE_TIME
    assert batch.is_transactional and not batch.is_control
    assert batch.control_type is None
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (99, 3, 1000)
    assert (batch.base_timestamp, batch.max_timestamp) == (TS, TS + 20_000)


def test_log_append_time() -> None:
    records = [(None, b"a", None, TS), (None, b"b", None, TS + 10)]
    data = encode_batch(records, timestamp_type=LOG_APPEND_TIME)
    assert struct.unpack_from(">h", data, 21)[0] == 0x08
    # A broker using log-append time rewrites the max timestamp; readers then
    # give every record that timestamp.
    patched = bytearray(data)
    struct.pack_into(">q", patched, 35, TS + 99_999)
    struct.pack_into(">I", patched, 17, crc32c(bytes(patched[21:])))
    [batch] = decode_batches(bytes(patched))
    assert batch.timestamp_type is LOG_APPEND_TIME
    assert [r.timestamp for r in batch.records] == [TS + 99_999, TS + 99_999]
    assert [r.timestamp for r in AioBatch(bytes(patched))] == [TS + 99_999, TS + 99_999]
    [plain] = decode_batches(encode_batch(records, timestamp_type=CREATE_TIME))
    assert [r.timestamp for r in plain.records] == [TS, TS + 10]


def _control_batch(marker: int, offset: int = 77) -> bytes:
    # Written like a transaction coordinator would: a control batch holding one
    # record whose key is (version 0, type) and value (version 0, coordinator epoch).
    key = struct.pack(">hh", 0, marker)
    value = struct.pack(">hi", 0, 5)
    data = bytearray(
        encode_batch(
            [(key, value, None, TS)],
            base_offset=offset,
            producer_id=4,
            producer_epoch=0,
            transactional=True,
        )
    )
    struct.pack_into(">h", data, 21, 0x10 | 0x20)
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    return bytes(data)


@pytest.mark.parametrize(("marker", "expected"), [(0, ControlType.ABORT), (1, ControlType.COMMIT)])
def test_control_batches(marker: int, expected: ControlType) -> None:
    data = _control_batch(marker)
    [batch] = decode_batches(data)
    assert batch.is_control and batch.is_transactional
    assert batch.control_type is expected
    assert batch.records[0].offset == 77
    # aiokafka agrees that this is a control batch.
    assert AioBatch(data).is_control_batch


def test_control_batch_unknown_type_kept_as_int() -> None:
    [batch] = decode_batches(_control_batch(3))
    assert batch.control_type == 3
    assert not isinstance(batch.control_type, ControlType)


def test_control_batch_without_key_is_malformed() -> None:
    data = bytearray(encode_batch([(None, b"x", None, TS)]))
    struct.pack_into(">h", data, 21, 0x20)
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    with pytest.raises(ProtocolError, match="control"):
        decode_batches(bytes(data))


def _empty_control_batch(base_offset: int, last_offset_delta: int) -> bytes:
    # As Kafka's log cleaner writes the header it keeps of an emptied batch (a
    # producer's last, RETAIN_EMPTY): transactional, control, no record.
    header = bytearray(
        struct.pack(
            ">qiibIhiqqqhii",
            base_offset,
            61 - 12,  # the header alone
            0,  # partition leader epoch
            2,  # magic
            0,  # crc, set below
            0x10 | 0x20,  # transactional, control
            last_offset_delta,
            TS,
            TS,
            4,  # producer id
            0,  # producer epoch
            -1,
            0,  # no record
        )
    )
    struct.pack_into(">I", header, 17, crc32c(bytes(header[21:])))
    return bytes(header)


@pytest.mark.parametrize("read_committed", [False, True], ids=["uncommitted", "committed"])
def test_empty_control_batch_is_stepped_over(read_committed: bool) -> None:
    # A compacted transactional topic holds such headers once old markers are cleaned.
    # The decoder refused them ("no valid control key"): every fetch at that offset
    # raised, and a consumer could never read past it.
    after = encode_batch([(None, b"next", None, TS)], base_offset=18)
    batches = decode_batches(_empty_control_batch(15, 2) + after)
    empty = batches[0]
    assert (empty.base_offset, empty.is_control, empty.control_type, empty.records) == (
        15,
        True,
        None,
        [],
    )
    assert AioBatch(_empty_control_batch(15, 2)).is_control_batch  # aiokafka agrees
    records, next_offset = select_records("t", 0, batches, 15, read_committed=read_committed)
    assert [(r.offset, r.value) for r in records] == [(18, b"next")]
    assert next_offset == 19
    # Alone, it still moves the consumer past its offsets.
    assert select_records(
        "t", 0, decode_batches(_empty_control_batch(15, 2)), 15, read_committed=read_committed
    ) == ([], 18)


# --- several batches, partial tail, memoryview -------------------------------------


def test_several_batches_and_partial_tail() -> None:
    a = encode_batch(CASES["plain"], base_offset=0)
    b = encode_batch(CASES["headers"], base_offset=5, compression=Compression.LZ4)
    c = encode_batch(CASES["null-key"], base_offset=8)
    whole = a + b + c
    batches = decode_batches(whole)
    assert [x.base_offset for x in batches] == [0, 5, 8]
    assert not batches.truncated and batches.remainder == 0
    for cut in (1, 11, 12, 17, 60, 61, len(c) - 1):
        partial = decode_batches(a + b + c[:cut])
        assert [x.base_offset for x in partial] == [0, 5]
        assert partial.truncated
        assert partial.remainder == cut
    for view in (memoryview(whole), bytearray(whole), memoryview(b"xx" + whole)[2:]):
        assert decode_batches(view) == batches
    empty = decode_batches(b"")
    assert empty == [] and not empty.truncated


def test_bad_crc_is_rejected_unless_disabled() -> None:
    data = bytearray(encode_batch(CASES["plain"]))
    data[-2] ^= 0x01  # the last byte of the last value (the header count follows)
    with pytest.raises(ProtocolError, match="CRC"):
        decode_batches(bytes(data))
    [batch] = decode_batches(bytes(data), verify_crc=False)
    assert batch.records[-1].value == b"value-5"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.__setitem__(16, 3), "magic"),
        (lambda d: struct.pack_into(">i", d, 8, 5), "length"),
        (lambda d: struct.pack_into(">i", d, 8, -1), "length"),
        (lambda d: struct.pack_into(">i", d, 8, 40), "too small"),
        (lambda d: struct.pack_into(">i", d, 57, -2), "count"),
        (lambda d: struct.pack_into(">i", d, 57, 999), "malformed record batch"),
        (lambda d: struct.pack_into(">i", d, 57, 1), "left after"),
        (lambda d: struct.pack_into(">h", d, 21, 6), "compression"),
    ],
    ids=[
        "magic",
        "length-5",
        "length-neg",
        "length-40",
        "count-neg",
        "count-big",
        "count-small",
        "codec",
    ],
)
def test_malformed_headers_raise_protocol_error(mutate: Any, message: str) -> None:
    data = bytearray(encode_batch(CASES["plain"]))
    mutate(data)
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    with pytest.raises(ProtocolError, match=message):
        decode_batches(bytes(data))


def _peak_raising(call: Callable[[], object], message: str) -> int:
    """Peak traced allocation of ``call``, which must raise ProtocolError(message)."""
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match=message):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_header_count_the_record_cannot_hold_is_rejected_before_any_header() -> None:
    # A record claiming 7 bytes, null key and value, then 2**32 headers, and 256 KiB
    # of ("", None) pairs after it: checked against the buffer rather than the
    # record, they became 128Ki header tuples (about 10 MiB) before the record
    # length mismatch was seen.
    pairs = 256 << 10
    record = zigzag(7) + b"\x00\x00\x00\x01\x01" + zigzag(2**32) + b"\x00\x01" * (pairs // 2)
    data = assemble_batch(record, 1, TS, 0)
    assert _peak_raising(lambda: decode_batches(data), "header count") < 64 << 10
    # A count the record can hold, with a header running past the record's end.
    record = zigzag(9) + b"\x00\x00\x00\x01\x01" + zigzag(1) + zigzag(6) + b"abcdef\x01"
    with pytest.raises(ProtocolError, match="header key length 6"):
        decode_batches(assemble_batch(record, 1, TS, 0))


def _held(call: Callable[[], DecodedBatches]) -> tuple[DecodedBatches, int]:
    """What ``call`` returns and the memory it holds (traced) once it has returned."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def _header_records(count: int, headers: int, base: int = 0) -> list[RecordTuple]:
    return [(None, None, [("", None)] * headers, TS + i) for i in range(base, base + count)]


def test_headers_count_toward_the_decoded_size() -> None:
    # ("", None) headers take 2 bytes each on the wire and a tuple and a slot each once
    # decoded (about 64 bytes): charged only their bytes, a record of 50,000 of them
    # (100 KB) spent 100 KB of a budget and held 3 MB.
    data = encode_batch(_header_records(1, 50_000))
    batches, held = _held(lambda: decode_batches(data, max_total_size=1 << 20))
    assert len(batches[0].records[0].headers) == 50_000
    assert batches.size == len(data) - BATCH_OVERHEAD + DECODED_RECORD_OVERHEAD + (
        50_000 * DECODED_HEADER_OVERHEAD
    )
    assert held <= batches.size


def test_a_record_whose_headers_alone_pass_the_batch_bound_is_refused_unbuilt() -> None:
    # Compressed, 4 KB of wire held 2M headers (128 MiB) for a bound of 4 MiB. No
    # fetch could return such a record: it is malformed for this bound, and nothing
    # of it is built.
    bound = 4 << 20
    n = (bound - 100) // 2
    data = encode_batch(
        [(None, None, [("", None)] * n, TS)], base_offset=40, compression=Compression.GZIP
    )
    assert len(data) < 8 << 10
    peak = _peak_raising(
        lambda: decode_batches(data, max_decompressed_size=bound, max_total_size=bound),
        f"record 40 has {n} headers",
    )
    # The section, decompressed (and copied once): not the 128 MiB of headers.
    assert peak < 3 * bound
    # Whatever its section's size: headers alone within the bound are decoded.
    fits = bound // DECODED_HEADER_OVERHEAD
    data = encode_batch([(None, b"v" * bound, [("", None)] * fits, TS)])
    [batch] = decode_batches(data, max_decompressed_size=bound)
    assert len(batch.records[0].headers) == fits


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP], ids=["none", "gzip"])
def test_headers_decode_a_first_batch_in_part_resumed_by_the_next_fetch(
    compression: Compression,
) -> None:
    # Six records of 100 headers each, in a bound that holds two of them: the third
    # is where the next fetch starts, and that fetch gets the next two.
    cost = DECODED_RECORD_OVERHEAD + 100 * DECODED_HEADER_OVERHEAD
    data = encode_batch(_header_records(6, 100), base_offset=10, compression=compression)
    bound = 2 * cost + 2 * 1024
    [batch] = decode_batches(data, max_decompressed_size=bound, fetch_offset=10)
    assert [r.offset for r in batch.records] == [10, 11]
    assert batch.resume_offset == 12
    batches = decode_batches(data, max_decompressed_size=bound, fetch_offset=12)
    assert [r.offset for r in batches[0].records] == [12, 13]
    assert batches[0].resume_offset == 14
    assert batches.size <= bound
    # The records before the fetch offset are not built, nor counted.
    [batch] = decode_batches(data, max_decompressed_size=bound, fetch_offset=15)
    assert [r.offset for r in batch.records] == [15]
    assert batch.resume_offset is None
    # A first record is returned whatever its headers cost within the bound.
    [batch] = decode_batches(data, max_decompressed_size=cost, fetch_offset=11)
    assert [r.offset for r in batch.records] == [11]
    assert batch.resume_offset == 12


def test_headers_leave_a_later_batch_whole_past_what_is_left() -> None:
    # The second batch's section (1.2 KB) fits in what is left of max_total_size; its
    # 600 headers' objects do not: it is left whole for the next fetch.
    first = encode_batch(_header_records(1, 0))
    second = encode_batch(_header_records(1, 600), base_offset=1)
    budget = 64 << 10
    assert len(second) + DECODED_RECORD_OVERHEAD < budget < 600 * DECODED_HEADER_OVERHEAD
    batches = decode_batches(first + second, max_total_size=budget, fetch_offset=0)
    assert [b.base_offset for b in batches] == [0]
    assert batches.limited
    # Next, it comes first, and is decoded whatever is left.
    batches = decode_batches(second, max_total_size=budget, fetch_offset=1)
    assert len(batches[0].records[0].headers) == 600
    assert batches.size > budget
    # With room for them, it is decoded behind the first, its headers charged.
    batches = decode_batches(first + second, max_total_size=budget * 2, fetch_offset=0)
    assert [b.base_offset for b in batches] == [0, 1]
    assert (
        batches.size
        == len(first + second)
        - 2 * BATCH_OVERHEAD
        + 2 * (DECODED_RECORD_OVERHEAD)
        + 600 * DECODED_HEADER_OVERHEAD
    )


# --- set_producer_state --------------------------------------------------------------


def test_set_producer_state_matches_fresh_encoding() -> None:
    records = CASES["headers"]
    original = encode_batch(records, compression=Compression.SNAPPY)
    patched = set_producer_state(original, producer_id=1234, producer_epoch=2, base_sequence=77)
    assert patched == encode_batch(
        records,
        compression=Compression.SNAPPY,
        producer_id=1234,
        producer_epoch=2,
        base_sequence=77,
    )
    txn = set_producer_state(
        patched, producer_id=1234, producer_epoch=3, base_sequence=77, transactional=True
    )
    assert txn == encode_batch(
        records,
        compression=Compression.SNAPPY,
        producer_id=1234,
        producer_epoch=3,
        base_sequence=77,
        transactional=True,
    )
    assert set_producer_state(
        txn, producer_id=1234, producer_epoch=3, base_sequence=77, transactional=False
    ) == set_producer_state(original, producer_id=1234, producer_epoch=3, base_sequence=77)
    [batch] = decode_batches(txn)
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (1234, 3, 77)


def test_set_producer_state_bad_input() -> None:
    with pytest.raises(ValueError, match="magic-2"):
        set_producer_state(b"short", producer_id=1, producer_epoch=1, base_sequence=1)
    data = encode_batch(CASES["plain"])
    with pytest.raises(ValueError, match="producer_epoch=70000"):
        set_producer_state(data, producer_id=1, producer_epoch=70000, base_sequence=1)


# --- encode input validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "error", "message"),
    [
        ([], ValueError, "at least one"),
        ([("k", b"v", None, TS)], TypeError, r"records\[0\] key must be bytes or None, got str"),
        ([(None, b"v", None, TS), (None, "v", None, TS)], TypeError, r"records\[1\] value"),
        ([(None, b"v", None, 1.5)], TypeError, r"records\[0\] timestamp"),
        ([(None, b"v", None, TS), (None, b"v", None, "x")], TypeError, r"records\[1\] timestamp"),
        (
            [(None, b"v", None, TS), (None, b"v", None, 2**63)],
            ValueError,
            r"records\[1\] timestamp",
        ),
        ([(None, b"v", None)], TypeError, r"records\[0\] must be a"),
        ([(None, b"v", None, TS), (None, b"v", None)], TypeError, r"records\[1\] must be a"),
        ([(None, b"v", [("k", "str")], TS)], TypeError, r"records\[0\] headers\[0\] value"),
        (
            [(None, b"v", [(b"k", b"v")], TS)],
            TypeError,
            r"records\[0\] headers\[0\] key must be str",
        ),
        ([(None, b"v", [("k",)], TS)], TypeError, r"records\[0\] headers\[0\] must be a"),
        ([(None, b"v", "abc", TS)], TypeError, r"records\[0\] headers must be"),
        ([(None, b"v", 5, TS)], TypeError, r"records\[0\] headers must be"),
    ],
)
def test_encode_rejects_bad_records(records: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        encode_batch(records)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compression": 9}, "compression"),
        ({"timestamp_type": 2}, "timestamp_type"),
        ({"base_offset": 2**63}, "base_offset"),
        ({"producer_epoch": 2**15}, "producer_epoch"),
        ({"base_sequence": 2**31}, "base_sequence"),
    ],
)
def test_encode_rejects_bad_fields(kwargs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_batch([(None, b"v", None, TS)], **kwargs)


def test_encode_accepts_bytes_like() -> None:
    records = [(bytearray(b"k"), memoryview(b"value"), [("h", bytearray(b"x"))], TS)]
    [batch] = decode_batches(encode_batch(records))  # type: ignore[arg-type]
    assert batch.records == [Record(0, TS, b"k", b"value", (("h", b"x"),))]


def test_estimate_record_size_is_an_upper_bound() -> None:
    for records in CASES.values():
        body = len(encode_batch(records)) - BATCH_OVERHEAD
        assert body <= sum(estimate_record_size(k, v, h) for k, v, h, _ in records)


# --- legacy message sets (magic 0 and 1) -------------------------------------------------

LEGACY_RECORDS = [
    (b"k1", b"v1", TS),
    (None, b"v2", TS + 1),
    (b"k3", None, TS + 2),
    (b"", b"repeat " * 30, TS + 3),
]


def _legacy(builder_cls: Any, magic: int, codec: int, records: Any = LEGACY_RECORDS) -> bytes:
    builder = builder_cls(magic=magic, compression_type=codec, batch_size=1 << 30)
    for i, (key, value, ts) in enumerate(records):
        assert builder.append(i, timestamp=ts, key=key, value=value) is not None
    data = bytearray(builder.build())
    if codec and magic == 1:
        # As a broker stores it: the wrapper holds the absolute offset of the
        # last inner message (the producer leaves 0 there).
        struct.pack_into(">q", data, 0, len(records) - 1)
    return bytes(data)


def _legacy_expected(magic: int, base: int = 0) -> list[Record]:
    return [
        Record(base + i, ts if magic == 1 else -1, k, v, ())
        for i, (k, v, ts) in enumerate(LEGACY_RECORDS)
    ]


@pytest.mark.parametrize("magic", [0, 1])
def test_legacy_uncompressed_from_kafka_python(magic: int) -> None:
    batches = decode_batches(_legacy(KpLegacyBuilder, magic, 0))
    # One batch per top-level legacy message.
    assert [b.records for b in batches] == [[r] for r in _legacy_expected(magic)]
    for b in batches:
        assert b.magic == magic
        assert b.partition_leader_epoch == -1 and b.producer_id == -1
        assert b.compression is Compression.NONE


# aiokafka refuses lz4 with magic 0: see test_legacy_v0_lz4_broken_checksum.
LEGACY_CODECS = [
    pytest.param(
        magic, builder, codec, id=f"v{magic}-{builder.__module__.split('.')[0]}-{codec.name}"
    )
    for magic in (0, 1)
    for builder, codec in [
        (KpLegacyBuilder, Compression.GZIP),
        (AioLegacyBuilder, Compression.GZIP),
        (AioLegacyBuilder, Compression.SNAPPY),
        (AioLegacyBuilder, Compression.LZ4),
    ]
    if not (magic == 0 and codec is Compression.LZ4)
]


@pytest.mark.parametrize(("magic", "builder", "codec"), LEGACY_CODECS)
def test_legacy_compressed(magic: int, builder: Any, codec: Compression) -> None:
    data = _legacy(builder, magic, codec)
    [batch] = decode_batches(data)
    assert batch.magic == magic
    assert batch.compression is codec
    assert batch.records == _legacy_expected(magic)
    assert batch.crc == zlib.crc32(data[16:])


def test_first_batch_compressed_reads_the_codec_of_every_magic() -> None:
    # The consumer's choice of where to decode a response rests on it: it must say
    # what the decoder finds.
    samples = [encode_batch([(None, b"v" * 100, None, 0)] * 3, compression=c) for c in Compression]
    samples += [_legacy(KpLegacyBuilder, magic, 0) for magic in (0, 1)]
    for param in LEGACY_CODECS:
        magic, builder, codec = param.values
        samples.append(_legacy(builder, magic, codec))
    for data in samples:
        batch = decode_batches(data)[0]
        assert first_batch_compressed(data) == (batch.compression is not Compression.NONE)
        assert first_batch_compressed(memoryview(data)) == first_batch_compressed(data)
    assert not first_batch_compressed(b"")
    assert not first_batch_compressed(samples[1][:22])


def test_legacy_v1_wrapper_offsets_are_relative() -> None:
    # KIP-31: the wrapper carries the absolute offset of the last inner message.
    data = bytearray(_legacy(KpLegacyBuilder, 1, Compression.GZIP))
    struct.pack_into(">q", data, 0, 1003)
    [batch] = decode_batches(bytes(data))
    assert [r.offset for r in batch.records] == [1000, 1001, 1002, 1003]
    assert (batch.base_offset, batch.last_offset_delta) == (1000, 3)


def test_legacy_v0_inner_offsets_are_absolute() -> None:
    inner = _legacy(KpLegacyBuilder, 0, 0)
    inner_offsets = bytearray(inner)
    pos = 0
    while pos < len(inner_offsets):
        (offset, size) = struct.unpack_from(">qi", inner_offsets, pos)
        struct.pack_into(">q", inner_offsets, pos, 500 + offset)
        pos += 12 + size
    wrapper_value = zlib.compress(bytes(inner_offsets), wbits=31)
    body = struct.pack(">bb", 0, Compression.GZIP) + struct.pack(">i", -1)
    body += struct.pack(">i", len(wrapper_value)) + wrapper_value
    message = struct.pack(">I", zlib.crc32(body)) + body
    data = struct.pack(">qi", 503, len(message)) + message
    [batch] = decode_batches(data)
    assert [r.offset for r in batch.records] == [500, 501, 502, 503]


def test_legacy_v1_log_append_time_wrapper() -> None:
    data = bytearray(_legacy(KpLegacyBuilder, 1, Compression.GZIP))
    data[17] |= 0x08
    struct.pack_into(">q", data, 18, TS + 5555)
    struct.pack_into(">I", data, 12, zlib.crc32(bytes(data[16:])))
    [batch] = decode_batches(bytes(data))
    assert batch.timestamp_type is LOG_APPEND_TIME
    assert [r.timestamp for r in batch.records] == [TS + 5555] * 4


@pytest.mark.parametrize("magic", [0, 1])
def test_legacy_crc_checked(magic: int) -> None:
    for codec in (0, Compression.GZIP):
        data = bytearray(_legacy(KpLegacyBuilder, magic, codec))
        data[-1] ^= 0x40
        with pytest.raises(ProtocolError, match="CRC-32"):
            decode_batches(bytes(data))


def test_legacy_partial_tail() -> None:
    data = _legacy(KpLegacyBuilder, 1, 0)
    batches = decode_batches(data[:-3])
    assert len(batches) == 3 and batches.truncated


def test_mixed_legacy_and_v2_in_one_buffer() -> None:
    data = _legacy(KpLegacyBuilder, 1, Compression.GZIP) + encode_batch(
        CASES["plain"], base_offset=4
    )
    batches = decode_batches(data)
    assert [b.magic for b in batches] == [1, 2]
    assert [r.offset for b in batches for r in b.records] == list(range(9))


def test_legacy_v0_lz4_broken_checksum() -> None:
    # Kafka 0.8/0.9 clients hashed the lz4 magic number into the frame header
    # checksum (KAFKA-3160); magic-0 messages keep that checksum.
    inner = _legacy(KpLegacyBuilder, 0, 0)
    frame = bytearray(compress(Compression.LZ4, inner))
    broken_hc = (_xxh32_short(bytes(frame[0:6])) >> 8) & 0xFF
    assert broken_hc != frame[6]
    frame[6] = broken_hc
    body = struct.pack(">bb", 0, Compression.LZ4) + struct.pack(">i", -1)
    body += struct.pack(">i", len(frame)) + bytes(frame)
    message = struct.pack(">I", zlib.crc32(body)) + body
    data = struct.pack(">qi", 3, len(message)) + message
    [batch] = decode_batches(data)
    assert batch.records == _legacy_expected(0)


@pytest.mark.parametrize("codec", COMPRESSED)
def test_decompressed_size_bound(codec: Compression) -> None:
    records = [(None, bytes(100_000), None, TS) for _ in range(20)]
    data = encode_batch(records, compression=codec)
    assert len(data) < 100_000
    with pytest.raises(ProtocolError, match="max_size"):
        decode_batches(data, max_decompressed_size=1_000_000)
    [batch] = decode_batches(data, max_decompressed_size=3_000_000)
    assert len(batch.records) == 20


@pytest.mark.parametrize("codec", [Compression.NONE, *COMPRESSED])
def test_decoding_stops_once_the_batches_decoded_reach_max_total_size(codec: Compression) -> None:
    one = [(None, bytes(100_000), None, TS) for _ in range(3)]  # 300 kB of records each
    data = b"".join(encode_batch(one, compression=codec, base_offset=3 * i) for i in range(4))
    everything = decode_batches(data)
    assert len(everything) == 4 and not everything.limited
    assert 1_200_000 <= everything.size < 1_210_000

    # Stops before the batch that would take those decoded past the bound.
    part = decode_batches(data, max_total_size=700_000)
    assert [b.base_offset for b in part] == [0, 3]
    assert part.limited and not part.truncated
    assert 600_000 <= part.size < 605_000
    assert [b.base_offset for b in decode_batches(data, max_total_size=500_000)] == [0]
    # The first batch always, whatever the bound: a fetch must move on.
    first = decode_batches(data, max_total_size=1)
    assert [b.base_offset for b in first] == [0] and first.limited
    # A bound the batches do not reach leaves nothing out.
    assert not decode_batches(data, max_total_size=1_210_000).limited


def test_legacy_messages_count_their_keys_and_values_toward_max_total_size() -> None:
    records = [(b"k", b"x" * 1000, TS + i) for i in range(6)]
    data = _legacy(KpLegacyBuilder, 1, 0, records)
    one = 1001 + DECODED_RECORD_OVERHEAD
    assert decode_batches(data).size == 6 * one
    part = decode_batches(data, max_total_size=2 * one)
    assert [b.base_offset for b in part] == [0, 1] and part.limited
    part = decode_batches(data, max_total_size=2 * one - 1)
    assert [b.base_offset for b in part] == [0] and part.limited


def _null_legacy(n: int) -> list[tuple[None, None, int]]:
    return [(None, None, TS + i) for i in range(n)]


def test_legacy_messages_count_their_objects_toward_max_total_size() -> None:
    # Compressed wrappers of 2000 messages with null key and value: they counted
    # nothing, so a budget stopped none of them.
    wrapper = bytearray(_legacy(KpLegacyBuilder, 1, Compression.GZIP, _null_legacy(2000)))
    data = b""
    for i in range(3):
        struct.pack_into(">q", wrapper, 0, 2000 * i + 1999)  # its last message's offset
        data += wrapper
    assert [b.base_offset for b in decode_batches(data)] == [0, 2000, 4000]
    part = decode_batches(data, max_total_size=100_000)
    assert [b.base_offset for b in part] == [0] and part.limited
    # And their inner messages, decompressed (34 bytes each), as a magic-2 batch
    # counts its records section.
    assert part.size == 2000 * (DECODED_RECORD_OVERHEAD + 34)


def _null_records(n: int) -> list[RecordTuple]:
    # Null key and value: about 7 bytes each on the wire, some 280 once decoded.
    return [(None, None, None, TS + i) for i in range(n)]


def test_each_record_costs_its_objects_toward_max_total_size() -> None:
    n = 4000
    data = b"".join(
        encode_batch(_null_records(n), base_offset=n * i, compression=Compression.GZIP)
        for i in range(3)
    )
    everything = decode_batches(data)
    assert len(everything) == 3 and not everything.limited
    assert everything.size > 3 * n * DECODED_RECORD_OVERHEAD
    # The first batch alone costs more than the bound (its section is about 40 kB).
    part = decode_batches(data, max_total_size=400_000)
    assert [b.base_offset for b in part] == [0] and part.limited


def _traced(call: Callable[[], DecodedBatches]) -> tuple[DecodedBatches, int]:
    tracemalloc.start()
    try:
        return call(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_batch_of_more_records_than_one_batch_may_cost_is_decoded_in_part() -> None:
    n, limit = 20_000, 1 << 20
    data = encode_batch(_null_records(n), base_offset=100, compression=Compression.GZIP)
    # Whole, the batch took 3.4 MiB (170 bytes a record) to a bound of 1 MiB.
    part, peak = _traced(lambda: decode_batches(data, max_decompressed_size=limit))
    assert peak < limit
    whole = decode_batches(data)
    assert len(whole[0].records) == n and whole[0].resume_offset is None
    [batch] = part
    assert part.limited and part.size <= limit and batch.resume_offset == 100 + len(batch.records)
    # Fetched again from where it stopped, record after record, none lost or repeated.
    offset, seen = 100, []
    while True:
        part = decode_batches(data, max_decompressed_size=limit, fetch_offset=offset)
        assert part.size <= limit
        records, offset = select_records("t", 0, part, offset)
        seen += [r.offset for r in records]
        if not part.limited:
            break
        assert offset == part[0].resume_offset
    assert seen == list(range(100, 100 + n)) and offset == 100 + n


def test_a_batch_decoded_in_part_returns_one_record_at_least() -> None:
    data = encode_batch(_null_records(5), base_offset=7)
    part = decode_batches(data, max_decompressed_size=1, fetch_offset=9)
    assert [r.offset for r in part[0].records] == [9] and part[0].resume_offset == 10
    assert select_records("t", 0, part, 9)[1] == 10


@pytest.mark.parametrize("codec", COMPRESSED)
def test_a_batch_after_the_first_inflates_no_further_than_what_is_left(codec: Compression) -> None:
    # A 16 MiB record after a small batch, to a bound of 1 MiB: the second batch took
    # the 256 MiB one batch may, whatever was left of the bound.
    small = encode_batch([(None, b"x" * 1000, None, TS)])
    bomb = encode_batch([(None, bytes(16 << 20), None, TS)], base_offset=1, compression=codec)
    part, peak = _traced(lambda: decode_batches(small + bomb, max_total_size=1 << 20))
    assert [b.base_offset for b in part] == [0] and part.limited and not part.truncated
    assert part.size < 2000 and peak < 3 << 20, f"peak {peak / (1 << 20):.1f} MiB"
    # Left whole for the next fetch, where it is the first batch.
    again = decode_batches(bomb, max_total_size=1 << 20, fetch_offset=1)
    assert [len(r.value or b"") for b in again for r in b.records] == [16 << 20]


def test_a_batch_after_the_first_is_decoded_whole_or_left_whole() -> None:
    # Records that would cost more than is left are not decoded in part: the batch
    # is left for the next fetch, nothing of it skipped.
    n = 1000
    data = b"".join(
        encode_batch(_null_records(n), base_offset=n * i, compression=Compression.GZIP)
        for i in range(2)
    )
    one = decode_batches(data[: len(data) // 2]).size
    for bound in (one + 1, 2 * one - 1):
        part = decode_batches(data, max_total_size=bound)
        assert [len(b.records) for b in part] == [n] and part.limited
        assert select_records("t", 0, part, 0)[1] == n
    assert not decode_batches(data, max_total_size=2 * one).limited


def test_always_decode_first_false_holds_the_first_batch_to_the_bound() -> None:
    data = encode_batch(_null_records(10)) + encode_batch(_null_records(10), base_offset=10)
    one = decode_batches(data[: len(data) // 2]).size
    for bound in (1, one - 1):
        none = decode_batches(data, max_total_size=bound, always_decode_first=False)
        assert list(none) == [] and none.limited and none.size == 0
    part = decode_batches(data, max_total_size=one, always_decode_first=False)
    assert [b.base_offset for b in part] == [0] and part.limited


def _stored_wrapper(magic: int, records: Any, base: int = 0) -> bytes:
    """A gzip wrapper of ``records`` as a broker stores it at ``base``: the wrapper
    holds its last message's absolute offset, the inner messages their absolute
    offsets (magic 0) or 0, 1, ... (magic 1, KIP-31)."""
    last = base + len(records) - 1
    if magic == 1:
        data = bytearray(_legacy(KpLegacyBuilder, 1, Compression.GZIP, records))
        struct.pack_into(">q", data, 0, last)
        return bytes(data)
    inner = bytearray(_legacy(KpLegacyBuilder, 0, 0, records))
    pos = 0
    while pos < len(inner):
        (offset, size) = struct.unpack_from(">qi", inner, pos)
        struct.pack_into(">q", inner, pos, base + offset)
        pos += 12 + size
    value = zlib.compress(bytes(inner), wbits=31)
    body = struct.pack(">bbii", 0, Compression.GZIP, -1, len(value)) + value
    message = struct.pack(">I", zlib.crc32(body)) + body
    return struct.pack(">qi", last, len(message)) + message


@pytest.mark.parametrize("magic", [0, 1])
def test_a_legacy_wrapper_of_more_records_than_one_batch_may_cost_is_decoded_in_part(
    magic: int,
) -> None:
    # 20,000 null messages (a 50 kB wrapper) were all decoded whatever the bound of
    # one batch: 5.4 MB of records to a bound of 1 MiB, as magic-2 batches were before.
    n, limit = 20_000, 1 << 20
    data = _stored_wrapper(magic, _null_legacy(n), base=100)
    part, peak = _traced(lambda: decode_batches(data, max_decompressed_size=limit))
    # The bound, and the inner messages once more while gzip joins its output (the
    # whole wrapper took 6.9 MB).
    assert peak < 3 * limit, f"peak {peak / (1 << 20):.1f} MiB"
    [batch] = part
    assert part.limited and part.size <= limit and batch.resume_offset == 100 + len(batch.records)
    assert [r.offset for r in batch.records] == list(range(100, 100 + len(batch.records)))
    assert (batch.base_offset, batch.last_offset) == (100, 100 + n - 1)
    # Fetched again from where it stopped, record after record, none lost or repeated.
    offset, seen = 100, []
    while True:
        part = decode_batches(data, max_decompressed_size=limit, fetch_offset=offset)
        assert part.size <= limit
        records, offset = select_records("t", 0, part, offset)
        seen += [r.offset for r in records]
        if not part.limited:
            break
        assert offset == part[0].resume_offset
    assert seen == list(range(100, 100 + n)) and offset == 100 + n


def test_a_legacy_wrapper_after_the_first_inflates_no_further_than_what_is_left() -> None:
    # A 16 MiB message in a gzip wrapper after a small batch, to a bound of 1 MiB:
    # it was decompressed and decoded whole (up to 256 MiB) whatever was left.
    small = encode_batch([(None, b"x" * 1000, None, TS)])
    bomb = _stored_wrapper(1, [(None, bytes(16 << 20), TS)], base=1)
    part, peak = _traced(lambda: decode_batches(small + bomb, max_total_size=1 << 20))
    assert [b.base_offset for b in part] == [0] and part.limited and not part.truncated
    assert part.size < 2000 and peak < 3 << 20, f"peak {peak / (1 << 20):.1f} MiB"
    # So are 2,000 null messages, 612 kB once decoded, after 500 kB of a 1 MB bound.
    first = encode_batch([(None, bytes(500_000), None, TS)])
    wrapper = _stored_wrapper(0, _null_legacy(2000), base=1)
    part = decode_batches(first + wrapper, max_total_size=1_000_000)
    assert [b.base_offset for b in part] == [0] and part.limited
    assert len(decode_batches(first + wrapper, max_total_size=1_200_000)) == 2


def test_batches_that_end_before_the_fetch_offset_are_stepped_over() -> None:
    # A broker returns the batch holding the fetch offset first; older ones (a broker
    # gone wrong) were decoded, counted, and taken for the first batch, so that the
    # one holding the offset was left for a next fetch that got the same answer.
    old = [
        encode_batch([(None, bytes(16 << 20), None, TS)], compression=Compression.GZIP),
        _legacy(KpLegacyBuilder, 1, 0, [(None, b"x" * 1000, TS)]),  # at offset 0
        _stored_wrapper(1, _null_legacy(10), base=1),  # 1 to 10
        _stored_wrapper(0, _null_legacy(10), base=11),  # 11 to 20
    ]
    data = b"".join(old) + encode_batch(_null_records(3), base_offset=21)
    part, peak = _traced(lambda: decode_batches(data, max_total_size=1, fetch_offset=21))
    assert [b.base_offset for b in part] == [21] and part.skipped == 4
    assert part.size == 3 * (7 + DECODED_RECORD_OVERHEAD) and peak < 1 << 20
    assert select_records("t", 0, part, 21)[1] == 24
    # The batch holding the offset is decoded whole, whatever it starts with.
    part = decode_batches(data, fetch_offset=20)
    assert [b.base_offset for b in part] == [11, 21] and part.skipped == 3
    assert [r.offset for r in select_records("t", 0, part, 20)[0]] == [20, 21, 22, 23]
    assert decode_batches(data).skipped == 0
    # A lastOffsetDelta damaged to look old is reported, not taken for an old batch.
    damaged = bytearray(encode_batch(_null_records(3), base_offset=21))
    struct.pack_into(">i", damaged, 23, -100)
    with pytest.raises(ProtocolError, match="CRC-32C"):
        decode_batches(bytes(damaged), fetch_offset=21)


def test_a_batch_decoded_in_part_whose_offsets_do_not_increase_is_malformed() -> None:
    # Offsets 7, 8, 8, 10, 11: decoded in part from 8, it stopped at the second 8 and
    # said to resume there, so the next fetch returned record 8 again, for ever.
    data = bytearray(encode_batch(_null_records(5), base_offset=7))
    data[BATCH_OVERHEAD + 2 * 7 + 3] = zigzag(1)[0]  # the third record's offset delta
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    assert [r.offset for r in decode_batches(bytes(data))[0].records] == [7, 8, 8, 10, 11]
    with pytest.raises(ProtocolError, match="record offset 8 after 8"):
        decode_batches(bytes(data), max_decompressed_size=1, fetch_offset=8)


def test_a_record_past_its_batch_last_offset_is_malformed() -> None:
    # Offsets 7..11 in a batch whose header ends at 10: the consumer moved on from 11
    # and returned 11 again with the next batch's first record.
    data = bytearray(encode_batch(_null_records(5), base_offset=7))
    struct.pack_into(">i", data, 23, 3)  # lastOffsetDelta: 4 -> 3
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    with pytest.raises(ProtocolError, match="record offset 11 past the batch's last offset 10"):
        decode_batches(bytes(data))
