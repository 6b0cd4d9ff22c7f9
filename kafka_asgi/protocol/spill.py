"""Spill segments: records written to local disk while Kafka cannot take them.

A segment file is a fixed file header followed by frames, each frame Kafka record
batches (magic 2, CRC-32C checked, the encoding of :func:`encode_batch`), one
batch per record, with the topic and partition they belong to::

    file header   b"KASPILL" 0x01                                     8 bytes
    frame         magic      b"\\xd5KSF"                               4
                  header_crc CRC-32C of the 16 bytes after it + topic  4 (uint32)
                  body_len   bytes of the record batches               4 (uint32)
                  count      records in the frame                      4 (uint32)
                  partition  -1 when the record was not placed yet     4 (int32)
                  attempts   times these records were replayed         2 (uint16)
                  topic_len                                            2 (uint16)
                  topic      UTF-8                                     topic_len
                  batches    magic-2 record batches, one per record    body_len

Every byte of a frame is checked before a record of it is believed: the header
by its own CRC, each batch by Kafka's CRC-32C (attributes to the end) and by the
fields before that CRC (base offset 0, a length within the frame, leader epoch
-1, magic 2), and the records read must not outnumber ``count``.

One batch per record (not one batch per frame) is what makes damage cost one
record: a frame cut by the end of the file (a torn write) or with a flipped byte
still yields every whole batch whose own CRC holds, and only the records of the
others are lost.  Because the frame header (CRC-checked) says how many records
the frame had, that loss is counted exactly and reported as a :class:`Damage`
next to a :class:`SpillFrame` holding the records that were recovered.  When the
header itself is damaged or cut, the reader looks for the next frame magic and
reports the bytes it skipped (the count is then unknown).  A reader never
misreads a record: each one it returns passed its batch's CRC-32C.  (A frame
holding one batch of several records, as written by earlier versions, is read
the same way; its damage costs that whole batch.)

An *ack file* beside a segment records which frames were acknowledged: 8-byte
entries (the frame's offset in the segment, then the CRC-32C of those 4 bytes);
a torn last entry is ignored (its frame is then shipped again: at-least-once).

API
---

``encode_frame(topic, partition, records, *, attempts=0) -> bytes``
``decode_frames(data, *, base=0, at_eof=True) -> SegmentScan``
``encode_ack(offset) -> bytes`` and ``decode_acks(data) -> set[int]``
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from .crc import crc32c
from .errors import KafkaError, ProtocolError
from .record_batch import HEAD, LENGTH_OF_HEADER, LOG_OVERHEAD_SIZE, MAGIC_V2, TAIL
from .records import RecordTuple, decode_batches, encode_batch
from .varint import ZIGZAG_BYTES

__all__ = [
    "ACK_SIZE",
    "FRAME_HEADER",
    "FRAME_MAGIC",
    "SEGMENT_HEADER",
    "Damage",
    "SegmentScan",
    "SpillFrame",
    "decode_acks",
    "decode_frames",
    "encode_ack",
    "encode_frame",
    "encode_one",
]

SEGMENT_HEADER = b"KASPILL\x01"
FRAME_MAGIC = b"\xd5KSF"
_HEADER = struct.Struct(
    ">4sIIIiHH"
)  # magic, header_crc, body_len, count, partition, attempts, topic_len
FRAME_HEADER = _HEADER.size  # 24
_CRC_FROM = 8  # the header CRC covers bytes 8.. of the header, then the topic
_ACK = struct.Struct(">II")
ACK_SIZE = _ACK.size
_BATCH_PREFIX = struct.Struct(">qii")  # base_offset, batch_length, partition_leader_epoch
# What a batch of a spill frame starts with, after 8 zero bytes and its length.
_EPOCH_MAGIC = b"\xff\xff\xff\xff\x02"
_EPOCH_AT = LOG_OVERHEAD_SIZE
_ZERO_OFFSET = bytes(8)
# The tail of a one-record batch as encode_batch writes it (no compression, create
# time, no producer id): attributes, last offset delta, two timestamps, ids, count.
_TAIL_FIXED = (0, 0)
_NO_PRODUCER = (-1, -1, -1, 1)
_MAX_TOPIC = 249
# A frame larger than this is taken for a damaged header (a segment never holds one).
_MAX_BODY = 1 << 30


@dataclass(frozen=True, slots=True)
class SpillFrame:
    """One frame read back: its records as ``(key, value, headers, timestamp_ms)``."""

    offset: int
    """Byte offset of the frame in its segment (what an ack names)."""
    end: int
    topic: str
    partition: int
    attempts: int
    records: list[RecordTuple]


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes of a segment that held no readable frame."""

    offset: int
    length: int
    records: int | None
    """Records lost, when the frame's header was sound enough to say; else None."""
    reason: str


@dataclass(slots=True)
class SegmentScan:
    """The outcome of :func:`decode_frames` over one buffer."""

    frames: list[SpillFrame] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    consumed: int = 0
    """Bytes of the buffer read (frames and damage); with ``at_eof=False`` a
    partial frame at the end is left unconsumed for the next read."""


def encode_frame(
    topic: str,
    partition: int,
    records: Sequence[RecordTuple],
    *,
    attempts: int = 0,
) -> bytes:
    """One frame holding ``records`` (non-empty) of ``topic``/``partition``, each
    record its own batch."""
    name = topic.encode()
    if not 0 < len(name) <= _MAX_TOPIC:
        raise ValueError(f"topic must be 1 to {_MAX_TOPIC} bytes, got {topic!r}")
    if not -1 <= partition <= 0x7FFFFFFF:
        raise ValueError(f"partition must be -1 (not placed) or >= 0, got {partition!r}")
    if not 0 <= attempts <= 0xFFFF:
        raise ValueError(f"attempts must be 0..65535, got {attempts!r}")
    if not records:
        raise ValueError("a spill frame needs at least one record")
    body = b"".join([encode_one(r) for r in records])
    rest = struct.pack(">IIiHH", len(body), len(records), partition, attempts, len(name)) + name
    return b"".join((FRAME_MAGIC, struct.pack(">I", crc32c(rest)), rest, body))


def encode_one(record: RecordTuple) -> bytes:
    """``encode_batch([record])``, the spill's unit, without its per-batch generality
    (the equivalence is pinned by a test); anything unusual goes to encode_batch."""
    try:
        key, value, headers, ts = record
        table = ZIGZAG_BYTES
        kp = b"\x01" if key is None else table[len(key)] + key
        vp = b"\x01" if value is None else table[len(value)] + value
        if headers:
            hp = table[len(headers)]
            for hk, hv in headers:
                kb = hk.encode()
                hp += table[len(kb)] + kb + (b"\x01" if hv is None else table[len(hv)] + hv)
        else:
            hp = b"\x00"
        # attributes 0, timestamp delta 0, offset delta 0
        rec = b"\x00\x00\x00" + kp + vp + hp
        body = table[len(rec)] + rec
        tail = TAIL.pack(*_TAIL_FIXED, ts, ts, *_NO_PRODUCER)
        head = HEAD.pack(0, LENGTH_OF_HEADER + len(body), -1, MAGIC_V2, crc32c(body, crc32c(tail)))
    except Exception:
        # Long fields (past the varint table), bad types or values: the checked encoder
        # encodes them or names the fault.
        return encode_batch([record])
    return head + tail + body


def decode_frames(
    data: bytes | bytearray | memoryview, *, base: int = 0, at_eof: bool = True
) -> SegmentScan:
    """Read the frames of ``data`` (a segment's bytes after its file header, or a
    chunk of them starting at segment offset ``base``).

    Never raises for bad bytes: damaged frames are skipped and listed.  With
    ``at_eof=False`` a frame that runs past the end of ``data`` is not damage but
    left for the next call (``consumed`` stops before it).
    """
    buf = bytes(data)
    end = len(buf)
    scan = SegmentScan()
    pos = 0
    while pos < end:
        if end - pos < FRAME_HEADER:
            if at_eof:
                scan.damage.append(Damage(base + pos, end - pos, None, "torn frame header"))
                pos = end
            break
        magic, header_crc, body_len, count, partition, attempts, topic_len = _HEADER.unpack_from(
            buf, pos
        )
        if magic != FRAME_MAGIC:
            pos = _resync(scan, buf, pos, base, at_eof, "no frame magic")
            continue
        topic_end = pos + FRAME_HEADER + topic_len
        if topic_len > _MAX_TOPIC:
            pos = _resync(scan, buf, pos, base, at_eof, "frame header damaged (topic length)")
            continue
        if topic_end > end:
            if at_eof:
                scan.damage.append(Damage(base + pos, end - pos, None, "torn frame header"))
                pos = end
            break
        if crc32c(memoryview(buf)[pos + _CRC_FROM : topic_end]) != header_crc:
            pos = _resync(scan, buf, pos, base, at_eof, "frame header CRC mismatch")
            continue
        frame_end = topic_end + body_len
        if body_len > _MAX_BODY or partition < -1 or topic_len == 0:
            pos = _resync(scan, buf, pos, base, at_eof, "frame header out of range")
            continue
        if frame_end > end:
            if not at_eof:
                break
            # A torn write: the whole batches before the cut are recovered.
            try:
                topic = buf[pos + FRAME_HEADER : topic_end].decode()
            except UnicodeDecodeError:
                records: list[RecordTuple] = []
            else:
                records, _ = _frame_records(buf, topic_end, end, count)
            scan.damage.append(
                Damage(
                    base + pos,
                    end - pos,
                    count - len(records),
                    "torn frame (cut by the end of the segment)",
                )
            )
            if records:
                scan.frames.append(
                    SpillFrame(base + pos, base + end, topic, partition, attempts, records)
                )
            pos = end
            break
        try:
            topic = buf[pos + FRAME_HEADER : topic_end].decode()
        except UnicodeDecodeError as exc:
            scan.damage.append(Damage(base + pos, frame_end - pos, count, f"bad frame: {exc}"))
            pos = frame_end
            continue
        records, problem = _frame_records(buf, topic_end, frame_end, count)
        if problem is not None:
            scan.damage.append(
                Damage(base + pos, frame_end - pos, count - len(records), f"bad frame: {problem}")
            )
        if records:
            scan.frames.append(
                SpillFrame(base + pos, base + frame_end, topic, partition, attempts, records)
            )
        pos = frame_end
    scan.consumed = pos
    return scan


def _frame_records(
    buf: bytes, start: int, end: int, count: int
) -> tuple[list[RecordTuple], str | None]:
    """The records of the whole, sound batches in ``buf[start:end]`` (a frame's
    body, or what is left of it) and, when some of the ``count`` are missing, why."""
    body = memoryview(buf)[start:end]
    try:
        # The common case: every batch whole and sound, decoded in one call.
        records = _batches_records(body)
    except ProtocolError:
        pass
    else:
        if len(records) == count:
            return records, None
    data = bytes(body)
    records = []
    problem: str | None = None
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < _BATCH_PREFIX.size:
            problem = "record batch cut short"
            break
        base_offset, length, leader_epoch = _BATCH_PREFIX.unpack_from(data, pos)
        batch_end = pos + LOG_OVERHEAD_SIZE + length
        if base_offset != 0 or leader_epoch != -1 or length < LENGTH_OF_HEADER:
            problem = (
                f"record batch base_offset {base_offset}, length {length} or leader "
                f"epoch {leader_epoch} is not what a spill frame holds"
            )
            pos = _next_batch(data, pos)
            continue
        if batch_end > n:
            problem = "record batch cut short"
            pos = _next_batch(data, pos)
            continue
        try:
            records.extend(_batches_records(memoryview(data)[pos:batch_end]))
        except ProtocolError as exc:
            problem = str(exc)
            # Its length may be the damaged byte: the next batch is looked for, not
            # trusted (whatever is found there must pass its own CRC).
            pos = _next_batch(data, pos)
            continue
        pos = batch_end
    if len(records) > count:
        return [], f"the frame holds more records than its header's {count}"
    if problem is None and len(records) < count:
        problem = f"{len(records)} records where the frame header says {count}"
    return records, problem


def _next_batch(data: bytes, pos: int) -> int:
    """The start of the next thing after ``pos`` that looks like a spill batch
    (base offset 0, leader epoch -1, magic 2), or the end of ``data``."""
    at = pos + 1
    while True:
        found = data.find(_EPOCH_MAGIC, at + _EPOCH_AT)
        if found < 0:
            return len(data)
        start = found - _EPOCH_AT
        if data[start : start + 8] == _ZERO_OFFSET:
            return start
        at = start + 1


def _batches_records(body: memoryview) -> list[RecordTuple]:
    """Records of the magic-2 batches filling ``body`` exactly (ProtocolError if not)."""
    try:
        decoded = decode_batches(body)
    except KafkaError as exc:
        raise ProtocolError(str(exc)) from None
    if decoded.truncated or not decoded:
        raise ProtocolError("record batch cut short")
    out: list[RecordTuple] = []
    for batch in decoded:
        if batch.magic != 2 or batch.base_offset != 0 or batch.partition_leader_epoch != -1:
            raise ProtocolError("not a batch a spill frame holds")
        out.extend((r.key, r.value, list(r.headers) or None, r.timestamp) for r in batch.records)
    return out


def _resync(scan: SegmentScan, buf: bytes, pos: int, base: int, at_eof: bool, reason: str) -> int:
    """Skip to the next frame magic after ``pos`` (or the end), recording the damage."""
    found = buf.find(FRAME_MAGIC, pos + 1)
    if found >= 0:
        nxt = found
    elif at_eof:
        nxt = len(buf)
    else:
        # The next magic may begin in the last 3 bytes and end in the next chunk.
        nxt = max(pos + 1, len(buf) - len(FRAME_MAGIC) + 1)
    if scan.damage and scan.damage[-1].offset + scan.damage[-1].length == base + pos:
        last = scan.damage.pop()
        scan.damage.append(Damage(last.offset, last.length + nxt - pos, None, last.reason))
    else:
        scan.damage.append(Damage(base + pos, nxt - pos, None, reason))
    return nxt


def encode_ack(offset: int) -> bytes:
    """The ack-file entry naming the frame at ``offset``."""
    head = struct.pack(">I", offset)
    return head + struct.pack(">I", crc32c(head))


def decode_acks(data: bytes | bytearray | memoryview) -> set[int]:
    """The frame offsets named by the whole entries of an ack file (bad ones skipped)."""
    buf = bytes(data)
    acked: set[int] = set()
    for pos in range(0, len(buf) - ACK_SIZE + 1, ACK_SIZE):
        offset, crc = _ACK.unpack_from(buf, pos)
        if crc32c(buf[pos : pos + 4]) == crc:
            acked.add(offset)
    return acked
