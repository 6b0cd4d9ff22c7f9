"""Property tests: record batches round-trip, and bad bytes only ever raise ProtocolError."""

from __future__ import annotations

import tracemalloc
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatch as AioBatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafka_asgi.protocol.compression import Compression
from kafka_asgi.protocol.errors import ProtocolError
from kafka_asgi.protocol.records import (
    DecodedBatches,
    Record,
    RecordTuple,
    decode_batches,
    encode_batch,
)

INT16 = st.integers(-(2**15), 2**15 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
small_bytes = st.binary(max_size=40)
# Mostly short fields (the fast path), sometimes long ones (multi-byte varints).
field = st.one_of(st.none(), small_bytes, st.binary(min_size=100, max_size=400))
headers = st.one_of(
    st.none(),
    st.lists(st.tuples(st.text(max_size=12), st.one_of(st.none(), small_bytes)), max_size=4),
)


@st.composite
def record_lists(draw: Any) -> list[RecordTuple]:
    base = draw(st.integers(-(2**40), 2**45))
    deltas = st.one_of(st.just(0), st.integers(-100, 100), st.integers(-(2**40), 2**40))
    return draw(
        st.lists(
            st.tuples(field, field, headers, deltas.map(lambda d: base + d)),
            min_size=1,
            max_size=30,
        )
    )


batch_options = st.fixed_dictionaries(
    {
        "base_offset": st.integers(0, 2**62),
        "compression": st.sampled_from(list(Compression)),
        "producer_id": st.integers(-1, 2**62),
        "producer_epoch": INT16,
        "base_sequence": INT32,
        "transactional": st.booleans(),
        "partition_leader_epoch": INT32,
    }
)


def _expected(records: list[RecordTuple], base_offset: int) -> list[Record]:
    return [
        Record(base_offset + i, ts, key, value, tuple(hs or ()))
        for i, (key, value, hs, ts) in enumerate(records)
    ]


@given(record_lists(), batch_options)
@settings(max_examples=300, deadline=None)
def test_round_trip(records: list[RecordTuple], options: dict[str, Any]) -> None:
    data = encode_batch(records, **options)
    batches = decode_batches(data)
    assert not batches.truncated
    [batch] = batches
    assert batch.records == _expected(records, options["base_offset"])
    assert batch.compression is options["compression"]
    assert batch.base_offset == options["base_offset"]
    assert batch.last_offset_delta == len(records) - 1
    assert batch.producer_id == options["producer_id"]
    assert batch.producer_epoch == options["producer_epoch"]
    assert batch.base_sequence == options["base_sequence"]
    assert batch.is_transactional is options["transactional"]
    assert batch.partition_leader_epoch == options["partition_leader_epoch"]
    assert batch.base_timestamp == records[0][3]
    assert batch.max_timestamp == max(records[0][3], *(r[3] for r in records))


@given(record_lists())
@settings(max_examples=100, deadline=None)
def test_aiokafka_reads_what_we_write(records: list[RecordTuple]) -> None:
    reader = AioBatch(encode_batch(records))
    assert reader.validate_crc()
    got = [
        (r.offset, r.timestamp, r.key, r.value, tuple(tuple(h) for h in r.headers)) for r in reader
    ]
    assert got == [tuple(r) for r in _expected(records, 0)]


def _decode_quietly(data: bytes, verify_crc: bool = True) -> None:
    try:
        decode_batches(data, verify_crc=verify_crc)
    except ProtocolError:
        pass


@given(st.binary(max_size=300), st.booleans())
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes(data: bytes, verify_crc: bool) -> None:
    _decode_quietly(data, verify_crc)


@given(st.binary(min_size=12, max_size=300), st.sampled_from([0, 1, 2]), st.booleans())
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_behind_a_plausible_header(
    body: bytes, magic: int, verify_crc: bool
) -> None:
    # A length that matches and a known magic, so the parser gets past the framing.
    data = (0).to_bytes(8, "big") + (len(body) + 5).to_bytes(4, "big")
    data += b"\xff\xff\xff\xff" + bytes([magic]) + body
    _decode_quietly(data, verify_crc)


@given(record_lists(), st.sampled_from(list(Compression)), st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_truncated_batch_is_reported_not_raised(
    records: list[RecordTuple], codec: Compression, data: st.DataObject
) -> None:
    whole = encode_batch(records, compression=codec)
    second = encode_batch(records, base_offset=len(records), compression=codec)
    cut = data.draw(st.integers(1, len(second) - 1))
    batches = decode_batches(whole + second[:cut])
    assert [b.base_offset for b in batches] == [0]
    assert batches.truncated and batches.remainder == cut


@given(record_lists(), st.sampled_from(list(Compression)), st.data(), st.booleans())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_flipped_bytes_raise_only_protocol_error(
    records: list[RecordTuple], codec: Compression, data: st.DataObject, verify_crc: bool
) -> None:
    original = encode_batch(records, compression=codec)
    buf = bytearray(original)
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(buf) - 1), st.integers(1, 255)), min_size=1, max_size=4
        )
    )
    for pos, mask in flips:
        buf[pos] ^= mask
    corrupted = bytes(buf)
    framing_intact = corrupted[8:12] == original[8:12] and corrupted[16] == original[16]
    covered_changed = corrupted[21:] != original[21:]
    try:
        decode_batches(corrupted, verify_crc=verify_crc)
    except ProtocolError:
        return
    # Same length and magic, changed bytes under the CRC: must have been caught.
    assert not (verify_crc and framing_intact and covered_changed)


@given(
    st.lists(st.tuples(field, field), min_size=1, max_size=10),
    st.sampled_from([0, 1]),
    st.sampled_from([0, 1, 2, 3]),
    st.data(),
)
@settings(max_examples=300, deadline=None)
def test_flipped_legacy_bytes_raise_only_protocol_error(
    messages: list[tuple[bytes | None, bytes | None]], magic: int, codec: int, data: st.DataObject
) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from aiokafka.record.legacy_records import LegacyRecordBatchBuilder

    if magic == 0 and codec == 3:
        codec = 1
    builder = LegacyRecordBatchBuilder(magic=magic, compression_type=codec, batch_size=1 << 30)
    for i, (key, value) in enumerate(messages):
        builder.append(i, timestamp=1000 + i, key=key, value=value if value is not None else b"")
    buf = bytearray(builder.build())
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(buf) - 1), st.integers(1, 255)), min_size=1, max_size=4
        )
    )
    for pos, mask in flips:
        buf[pos] ^= mask
    _decode_quietly(bytes(buf), verify_crc=data.draw(st.booleans()))


@given(
    st.lists(st.tuples(field, field), min_size=1, max_size=10),
    st.sampled_from([0, 1]),
    st.sampled_from(list(Compression)),
    st.data(),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_flipped_bytes_under_small_bounds_raise_only_protocol_error(
    messages: list[tuple[bytes | None, bytes | None]],
    magic: int,
    codec: Compression,
    data: st.DataObject,
) -> None:
    # The paths the bounds take: a batch or wrapper decoded in part from a fetch
    # offset, and one after the first held to what is left of max_total_size.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from aiokafka.record.legacy_records import LegacyRecordBatchBuilder

    legacy_codec = Compression.GZIP if codec is Compression.ZSTD else codec
    if magic == 0 and legacy_codec is Compression.LZ4:
        legacy_codec = Compression.GZIP
    builder = LegacyRecordBatchBuilder(
        magic=magic, compression_type=legacy_codec, batch_size=1 << 30
    )
    for i, (key, value) in enumerate(messages):
        builder.append(i, timestamp=1000 + i, key=key, value=value if value is not None else b"")
    n = len(messages)
    wrapper = bytearray(builder.build())
    wrapper[:8] = (2 * n - 1).to_bytes(8, "big")
    records = [(k, v, None, 1000) for k, v in messages]
    buf = bytearray(
        encode_batch(records, compression=codec)
        + wrapper
        + encode_batch(records, base_offset=2 * n, compression=codec)
    )
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(buf) - 1), st.integers(1, 255)), min_size=0, max_size=3
        )
    )
    for pos, mask in flips:
        buf[pos] ^= mask
    try:
        decode_batches(
            bytes(buf),
            verify_crc=data.draw(st.booleans()),
            max_decompressed_size=data.draw(st.sampled_from([1, 300, 1000, 1 << 20])),
            max_total_size=data.draw(st.sampled_from([None, 1, 300, 1000, 3000])),
            fetch_offset=data.draw(st.integers(-1, 3 * n)),
            always_decode_first=data.draw(st.booleans()),
        )
    except ProtocolError:
        pass


# Many headers to a record, often ("", None): the cheapest on the wire (2 bytes).
many_headers = st.lists(
    st.tuples(
        st.one_of(st.just(""), st.text(max_size=12)),
        st.one_of(st.none(), st.just(b""), small_bytes),
    ),
    max_size=64,
)


@given(
    st.lists(st.tuples(field, field, many_headers, st.just(1000)), min_size=1, max_size=20),
    st.sampled_from(list(Compression)),
)
@settings(max_examples=150, deadline=None)
def test_decoded_memory_is_bounded_by_the_decoded_size(
    records: list[RecordTuple], compression: Compression
) -> None:
    # What the decode budget counts (DecodedBatches.size) bounds what the decoded
    # batch holds, headers included: a record of ("", None) headers held 30 times its
    # size when only their bytes were counted.
    data = encode_batch(records, compression=compression)
    tracemalloc.start()
    try:
        batches: DecodedBatches = decode_batches(data)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(batches[0].records) == len(records)
    # The batch's own objects (the list, the RecordBatch, its ints) beside its records.
    assert held <= 2 * batches.size + 1024
