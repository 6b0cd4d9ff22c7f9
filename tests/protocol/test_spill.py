"""Spill segment frames: golden bytes, round trips, and damage that is skipped, never misread."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafka_asgi.protocol.crc import crc32c_python
from kafka_asgi.protocol.records import RecordTuple, encode_batch
from kafka_asgi.protocol.spill import (
    ACK_SIZE,
    FRAME_HEADER,
    FRAME_MAGIC,
    SpillFrame,
    decode_acks,
    decode_frames,
    encode_ack,
    encode_frame,
    encode_one,
)

TS = 1_700_000_000_000


def _aiokafka_batch(records: list[RecordTuple]) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for i, (key, value, headers, ts) in enumerate(records):
        builder.append(i, timestamp=ts, key=key, value=value, headers=list(headers or []))
    return bytes(builder.build())


def test_golden_frame_from_independent_sources() -> None:
    # The batches (one per record) from aiokafka's encoder, the header CRC from the
    # pure-Python CRC-32C.
    records: list[RecordTuple] = [
        (b"k", b"v", [("h", b"x")], TS),
        (None, b"second", None, TS + 5),
    ]
    body = b"".join(_aiokafka_batch([r]) for r in records)
    rest = struct.pack(">IIiHH", len(body), 2, 3, 1, 5) + b"topic"
    expected = FRAME_MAGIC + struct.pack(">I", crc32c_python(rest)) + rest + body
    assert encode_frame("topic", 3, records, attempts=1) == expected


def test_frame_of_one_multi_record_batch_is_still_read() -> None:
    # As earlier versions wrote them: one batch for the whole frame.
    records: list[RecordTuple] = [(b"k%d" % i, b"v", None, TS + i) for i in range(3)]
    batch = encode_batch(records)
    rest = struct.pack(">IIiHH", len(batch), 3, 0, 0, 1) + b"t"
    frame = FRAME_MAGIC + struct.pack(">I", crc32c_python(rest)) + rest + batch
    scan = decode_frames(frame)
    assert scan.damage == [] and scan.frames[0].records == records
    torn = decode_frames(frame[:-2])
    assert torn.frames == [] and [d.records for d in torn.damage] == [3]


record_st = st.tuples(
    st.one_of(st.none(), st.binary(max_size=20), st.binary(min_size=16_384, max_size=16_390)),
    st.one_of(st.none(), st.binary(max_size=300)),
    st.one_of(
        st.none(),
        st.lists(
            st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=8))),
            max_size=3,
        ),
    ),
    st.integers(0, 2**50),
)


@settings(max_examples=300)
@given(record_st)
def test_encode_one_is_encode_batch(record: RecordTuple) -> None:
    # The spill's own one-record encoder is a shortcut: pinned to the general one.
    assert encode_one(record) == encode_batch([record])


def test_encode_one_names_bad_input_as_encode_batch_does() -> None:
    with pytest.raises(TypeError):
        encode_one(("key", b"v", None, TS))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_one((None, b"v", None, 1 << 64))


def test_golden_hex() -> None:
    frame = encode_frame("t", 3, [(b"k", b"v", [("h", b"x")], TS)], attempts=1)
    assert frame.hex() == (
        "d54b534613419cb00000004a0000000100000003000100017400000000000000000000003e"
        "ffffffff025e93538d0000000000000000018bcfe568000000018bcfe56800ffffffffffff"
        "ffffffffffffffff0000000118000000026b02760202680278"
    )


def test_round_trip_several_frames() -> None:
    a = [(b"k%d" % i, b"v" * i, None, TS + i) for i in range(10)]
    b: list[RecordTuple] = [(None, None, [("a", None), ("b", b"")], TS)]
    data = encode_frame("alpha", -1, a) + encode_frame("b.eta", 7, b, attempts=65535)
    scan = decode_frames(data, base=8)
    assert scan.damage == []
    assert scan.consumed == len(data)
    assert [(f.topic, f.partition, f.attempts) for f in scan.frames] == [
        ("alpha", -1, 0),
        ("b.eta", 7, 65535),
    ]
    assert scan.frames[0].records == a
    assert scan.frames[1].records == [(None, None, [("a", None), ("b", b"")], TS)]
    assert scan.frames[0].offset == 8
    assert (
        scan.frames[1].offset
        == scan.frames[0].end
        == 8 + len(data) - len(encode_frame("b.eta", 7, b, attempts=65535))
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("", 0), "topic"),
        (("t" * 250, 0), "topic"),
        (("t", -2), "partition"),
        (("t", 1 << 31), "partition"),
    ],
)
def test_encode_rejects_bad_values(args: tuple[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_frame(*args, [(None, b"v", None, TS)])


def test_encode_rejects_bad_attempts_and_empty() -> None:
    with pytest.raises(ValueError, match="attempts"):
        encode_frame("t", 0, [(None, b"v", None, TS)], attempts=70000)
    with pytest.raises(ValueError, match="at least one record"):
        encode_frame("t", 0, [])


def _three() -> tuple[bytes, list[bytes]]:
    frames = [
        encode_frame("t", 0, [(b"a", b"1", None, TS)]),
        encode_frame("t", 1, [(b"b", b"2", None, TS), (b"c", b"3", None, TS)]),
        encode_frame("u", 0, [(None, b"4" * 30, None, TS)]),
    ]
    return b"".join(frames), frames


def _batch_bounds(frames: list[bytes]) -> list[tuple[int, int, list[int]]]:
    """(frame start, body start, ends of its batches) in the joined frames."""
    out = []
    start = 0
    for f in frames:
        topic_len = struct.unpack_from(">H", f, FRAME_HEADER - 2)[0]
        body = start + FRAME_HEADER + topic_len
        ends = []
        pos = body
        while pos < start + len(f):
            pos += 12 + struct.unpack_from(">i", f, pos - start + 8)[0]
            ends.append(pos)
        out.append((start, body, ends))
        start += len(f)
    return out


def test_truncated_at_every_byte_loses_only_the_cut_record() -> None:
    data, frames = _three()
    layout = _batch_bounds(frames)
    for cut in range(len(data) + 1):
        scan = decode_frames(data[:cut])
        got = sum(len(f.records) for f in scan.frames)
        # Every record whose batch ends before the cut is read back, no other.
        whole = sum(1 for _, _, ends in layout for e in ends if e <= cut)
        assert got == whole, cut
        assert scan.consumed == cut, cut
        cut_frame = [(s, b, ends) for s, b, ends in layout if s < cut < ends[-1]]
        if not cut_frame:
            assert scan.damage == [], cut
            continue
        _, body, ends = cut_frame[0]
        assert len(scan.damage) == 1, cut
        if cut >= body:
            # Its header was whole: the loss is exact (the records cut off).
            assert scan.damage[0].records == sum(1 for e in ends if e > cut), cut
        else:
            assert scan.damage[0].records is None, cut


def test_a_segment_cut_in_a_record_loses_that_record_only() -> None:
    records: list[RecordTuple] = [(b"k%d" % i, b"v" * 50, None, TS + i) for i in range(64)]
    frame = encode_frame("t", 2, records)
    scan = decode_frames(frame[: len(frame) - 30])
    assert [d.records for d in scan.damage] == [1]
    assert scan.frames[0].records == records[:63]
    assert (scan.frames[0].partition, scan.frames[0].topic) == (2, "t")


def test_partial_tail_is_left_for_the_next_read() -> None:
    data, frames = _three()
    cut = len(frames[0]) + 10
    scan = decode_frames(data[:cut], base=8, at_eof=False)
    assert scan.damage == []
    assert scan.consumed == len(frames[0])
    rest = decode_frames(data[scan.consumed :], base=8 + scan.consumed)
    assert [f.offset for f in rest.frames] == [8 + len(frames[0]), 8 + len(frames[0] + frames[1])]


def test_every_flipped_byte_is_detected() -> None:
    data, frames = _three()
    layout = _batch_bounds(frames)
    written = [r for f in decode_frames(data).frames for r in f.records]
    for pos in range(len(data)):
        in_body = any(b <= pos < ends[-1] for _, b, ends in layout)
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= flip
            scan = decode_frames(bytes(bad))
            got = [r for f in scan.frames for r in f.records]
            # Never a record that was not written, in the order written.
            rest = iter(written)
            assert all(any(r == w for w in rest) for r in got), (pos, flip)
            assert len(scan.damage) == 1, (pos, flip)
            if in_body:
                # A byte of a batch: that batch's record lost, counted exactly.
                assert len(got) == 3 and scan.damage[0].records == 1, (pos, flip)
            else:
                # A frame header: that frame is skipped (its count unknown).
                assert scan.damage[0].records is None, (pos, flip)


def test_garbage_between_frames_is_skipped_and_resynced() -> None:
    _, frames = _three()
    junk = b"\x00junk" + FRAME_MAGIC + b"\x01" * 40
    scan = decode_frames(frames[0] + junk + frames[1] + frames[2])
    assert len(scan.frames) == 3
    assert sum(d.length for d in scan.damage) == len(junk)
    assert all(d.records is None for d in scan.damage)


def test_resync_across_chunks_finds_a_split_magic() -> None:
    data, _ = _three()
    blob = b"xx" + data
    # Read in chunks of 5 bytes, as a reader with a tiny buffer would.
    found: list[SpillFrame] = []
    pos = 0
    buf = b""
    while pos < len(blob) or buf:
        chunk = blob[pos : pos + 5]
        pos += len(chunk)
        buf += chunk
        eof = pos >= len(blob)
        scan = decode_frames(buf, base=pos - len(buf), at_eof=eof)
        found += scan.frames
        buf = buf[scan.consumed :]
        if eof:
            break
    assert [f.records for f in found] == [f.records for f in decode_frames(data).frames]


def test_acks_round_trip_and_torn_entries() -> None:
    data = encode_ack(8) + encode_ack(1 << 31) + encode_ack(99)
    assert decode_acks(data) == {8, 1 << 31, 99}
    assert decode_acks(data[:-1]) == {8, 1 << 31}
    bad = bytearray(data)
    bad[ACK_SIZE + 1] ^= 0x10
    assert decode_acks(bytes(bad)) == {8, 99}


field = st.one_of(st.none(), st.binary(max_size=30))
records_st = st.lists(
    st.tuples(
        field,
        field,
        st.one_of(st.none(), st.lists(st.tuples(st.text(max_size=5), field), max_size=2)),
        st.integers(0, 2**41),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records_st, min_size=1, max_size=4), st.data())
def test_fuzz_damage_never_misreads(batches: list[Any], data: Any) -> None:
    frames = [encode_frame("topic", i, b) for i, b in enumerate(batches)]
    blob = bytearray(b"".join(frames))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    written = {i: _as_written(b) for i, b in enumerate(batches)}
    scan = decode_frames(bytes(blob[:cut]))
    for frame in scan.frames:
        # A frame's records (all, or those that survived) in the order written.
        whole = written[frame.partition]
        got = _as_written(frame.records)
        rest = iter(whole)
        assert all(any(r == w for w in rest) for r in got)  # a subsequence of whole
    assert scan.consumed == cut


def _as_written(records: list[Any]) -> list[Any]:
    # Headers come back as a list of tuples, None when there were none.
    return [(k, v, list(h) if h else None, ts) for k, v, h, ts in records]


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(blob: bytes) -> None:
    for eof in (True, False):
        scan = decode_frames(blob, at_eof=eof)
        assert 0 <= scan.consumed <= len(blob)
        assert scan.frames == []
