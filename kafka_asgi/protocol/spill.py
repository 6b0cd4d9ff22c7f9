"""Spill segments: records written to local disk while Kafka cannot take them.

A segment file is a fixed file header followed by frames, each frame one Kafka
record batch (magic 2, CRC-32C checked, encoded by :func:`encode_batch`) with the
topic and partition it belongs to::

    file header   b"KASPILL" 0x01                                     8 bytes
    frame         magic      b"\\xd5KSF"                               4
                  header_crc CRC-32C of the 16 bytes after it + topic  4 (uint32)
                  body_len   bytes of the record batch                 4 (uint32)
                  count      records in the batch                      4 (uint32)
                  partition  -1 when the record was not placed yet     4 (int32)
                  attempts   times these records were replayed         2 (uint16)
                  topic_len                                            2 (uint16)
                  topic      UTF-8                                     topic_len
                  batch      a magic-2 record batch                    body_len

Every byte of a frame is checked before a record of it is believed: the header
by its own CRC, the batch by Kafka's CRC-32C (attributes to the end) and by the
fields before that CRC (base offset 0, length matching ``body_len``, leader epoch
-1, magic 2,
record count matching ``count``).  A frame that fails a check is skipped and
reported as a :class:`Damage`: when its header is sound the count of lost records
is known exactly; when the header itself is damaged the reader looks for the next
frame magic and reports the bytes it skipped.  A frame cut by the end of the file
(a torn write) is reported the same way, so a reader never misreads a record.

An *ack file* beside a segment records which frames were acknowledged: 8-byte
entries (the frame's offset in the segment, then the CRC-32C of those 4 bytes);
a torn last entry is ignored (its frame is then shipped again: at-least-once).

API
---

``encode_frame(topic, partition, records, *, attempts=0, compression=NONE) -> bytes``
``decode_frames(data, *, base=0, at_eof=True) -> SegmentScan``
``encode_ack(offset) -> bytes`` and ``decode_acks(data) -> set[int]``
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from .compression import Compression
from .crc import crc32c
from .errors import KafkaError, ProtocolError
from .record_batch import LOG_OVERHEAD_SIZE
from .records import RecordTuple, decode_batches, encode_batch

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
    compression: Compression | int = Compression.NONE,
) -> bytes:
    """One frame holding ``records`` (non-empty) of ``topic``/``partition``."""
    name = topic.encode()
    if not 0 < len(name) <= _MAX_TOPIC:
        raise ValueError(f"topic must be 1 to {_MAX_TOPIC} bytes, got {topic!r}")
    if not -1 <= partition <= 0x7FFFFFFF:
        raise ValueError(f"partition must be -1 (not placed) or >= 0, got {partition!r}")
    if not 0 <= attempts <= 0xFFFF:
        raise ValueError(f"attempts must be 0..65535, got {attempts!r}")
    batch = encode_batch(records, compression=compression)
    rest = struct.pack(">IIiHH", len(batch), len(records), partition, attempts, len(name)) + name
    return b"".join((FRAME_MAGIC, struct.pack(">I", crc32c(rest)), rest, batch))


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
            scan.damage.append(
                Damage(base + pos, end - pos, count, "torn frame (cut by the end of the segment)")
            )
            pos = end
            break
        try:
            topic = buf[pos + FRAME_HEADER : topic_end].decode()
            records = _batch_records(buf[topic_end:frame_end], count)
        except (ProtocolError, UnicodeDecodeError) as exc:
            scan.damage.append(Damage(base + pos, frame_end - pos, count, f"bad frame: {exc}"))
            pos = frame_end
            continue
        scan.frames.append(
            SpillFrame(base + pos, base + frame_end, topic, partition, attempts, records)
        )
        pos = frame_end
    scan.consumed = pos
    return scan


def _batch_records(batch: bytes, count: int) -> list[RecordTuple]:
    if len(batch) < _BATCH_PREFIX.size:
        raise ProtocolError("record batch too short")
    # The bytes before the batch's own CRC, which does not cover them.
    base_offset, length, leader_epoch = _BATCH_PREFIX.unpack_from(batch)
    if base_offset != 0 or length != len(batch) - LOG_OVERHEAD_SIZE or leader_epoch != -1:
        raise ProtocolError(
            f"record batch base_offset {base_offset}, length {length} or leader epoch "
            f"{leader_epoch} is not what a spill frame holds"
        )
    try:
        decoded = decode_batches(batch)
    except KafkaError as exc:
        raise ProtocolError(str(exc)) from None
    if len(decoded) != 1 or decoded.truncated or decoded[0].magic != 2:
        raise ProtocolError("frame does not hold exactly one magic-2 batch")
    records = decoded[0].records
    if len(records) != count:
        raise ProtocolError(f"batch holds {len(records)} records, frame header says {count}")
    return [(r.key, r.value, list(r.headers) or None, r.timestamp) for r in records]


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
