"""Legacy message sets (magic 0 and 1): decoding only.

Brokers still hold, and may return in a Fetch, messages written before magic 2
(Kafka's documentation, "Message format", section "Old Message Format")::

    offset: int64
    messageSize: int32                 (the bytes after this field)
    crc: uint32                        (CRC-32 of everything after it)
    magic: int8                        (0, or 1 since KIP-31/KIP-32)
    attributes: int8                   (bits 0-2 compression, bit 3 timestamp type)
    timestamp: int64                   (magic 1 only)
    key: bytes (int32 length, -1 for null)
    value: bytes (int32 length, -1 for null)

A compressed message holds, as its value, a compressed message set of inner
messages.  Each top-level message is reported as one :class:`RecordBatch`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from kafka_asgi.protocol.compression import (
    Compression,
    decompress,
    decompress_within,
    fix_legacy_lz4_header,
)
from kafka_asgi.protocol.crc import crc32
from kafka_asgi.protocol.errors import ProtocolError
from kafka_asgi.protocol.record_batch import (
    ATTR_CODEC_MASK,
    ATTR_TIMESTAMP_TYPE,
    DECODED_RECORD_OVERHEAD,
    LOG_OVERHEAD,
    LOG_OVERHEAD_SIZE,
    NO_HEADERS,
    Record,
    RecordBatch,
)

__all__ = ["LEGACY_MIN_SIZE", "decode_legacy"]

# offset, messageSize, crc, magic, attributes
_HEADER = struct.Struct(">qiIbb")
_TIMESTAMP = struct.Struct(">q")
_LENGTH = struct.Struct(">i")
# Where the CRC'd bytes start (magic) and where the fields after attributes start.
_CRC_START = LOG_OVERHEAD_SIZE + 4
_FIELDS_START = _HEADER.size
# The smallest messageSize: crc, magic, attributes, key length, value length ...
LEGACY_MIN_SIZE = {0: 4 + 1 + 1 + 4 + 4}
# ... and, for magic 1, the timestamp.
LEGACY_MIN_SIZE[1] = LEGACY_MIN_SIZE[0] + _TIMESTAMP.size


def _bytes_field(buf: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
    (n,) = _LENGTH.unpack_from(buf, pos)
    pos += _LENGTH.size
    if n < 0:
        if n != -1:
            raise ProtocolError(f"negative length {n} in a legacy message")
        return None, pos
    if pos + n > end:
        raise ProtocolError(f"length {n} exceeds its legacy message")
    return buf[pos : pos + n], pos + n


class _Message(NamedTuple):
    offset: int
    crc: int
    magic: int
    attributes: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def _read_message(buf: bytes, pos: int, end: int, verify_crc: bool) -> _Message:
    offset, size, crc, magic, attributes = _HEADER.unpack_from(buf, pos)
    if size < LEGACY_MIN_SIZE[1 if magic == 1 else 0]:
        raise ProtocolError(f"legacy message at offset {offset}: size {size} too small")
    if verify_crc:
        actual = crc32(memoryview(buf)[pos + _CRC_START : end])
        if actual != crc:
            raise ProtocolError(
                f"legacy message at offset {offset}: CRC-32 mismatch "
                f"(stored {crc:#010x}, computed {actual:#010x})"
            )
    p = pos + _FIELDS_START
    timestamp = -1
    if magic == 1:
        (timestamp,) = _TIMESTAMP.unpack_from(buf, p)
        p += _TIMESTAMP.size
    key, p = _bytes_field(buf, p, end)
    value, p = _bytes_field(buf, p, end)
    if p != end:
        raise ProtocolError(f"legacy message at offset {offset}: size {size} does not match fields")
    return _Message(offset, crc, magic, attributes & 0xFF, timestamp, key, value)


def _scan(inner_buf: bytes, wrapper_offset: int) -> tuple[int, int, int]:
    """How many messages the message set inside a compressed wrapper holds, and the
    first and last one's offsets: their sizes checked, nothing built (a wrapper of
    tiny messages holds millions)."""
    count = first = last = 0
    p = 0
    end = len(inner_buf)
    while p < end:
        if end - p < LOG_OVERHEAD_SIZE:
            raise ProtocolError("truncated message inside a compressed legacy message")
        last, size = LOG_OVERHEAD.unpack_from(inner_buf, p)
        if not count:
            first = last
        p += LOG_OVERHEAD_SIZE + size
        if size < LEGACY_MIN_SIZE[0] or p > end:
            raise ProtocolError(f"invalid size {size} inside a compressed legacy message")
        count += 1
    if not count:
        raise ProtocolError(f"compressed legacy message at offset {wrapper_offset} is empty")
    return count, first, last


def _inner_records(
    wrapper: _Message,
    inner_buf: bytes,
    verify_crc: bool,
    shift: int,
    from_offset: int | None,
    limit: int,
) -> tuple[list[Record], int | None]:
    """The records of the messages inside a compressed wrapper, their offsets shifted
    by ``shift``. With ``from_offset``, at most ``limit`` of them from the first at or
    after it, and the offset of the first left out after them (None when they reach
    the end); the messages before it are stepped over, not read."""
    log_append = wrapper.magic == 1 and wrapper.attributes & ATTR_TIMESTAMP_TYPE
    records: list[Record] = []
    previous = None
    p = 0
    end = len(inner_buf)
    while p < end:
        offset, size = LOG_OVERHEAD.unpack_from(inner_buf, p)
        message_end = p + LOG_OVERHEAD_SIZE + size
        offset += shift
        if from_offset is not None:
            # Where the next fetch resumes must be past every record returned.
            if previous is not None and offset <= previous:
                raise ProtocolError(
                    f"compressed legacy message at offset {wrapper.offset}: inner offset "
                    f"{offset} after {previous}"
                )
            previous = offset
            if offset < from_offset:
                p = message_end
                continue
            if len(records) == limit:
                return records, offset
        m = _read_message(inner_buf, p, message_end, verify_crc)
        if m.attributes & ATTR_CODEC_MASK:
            raise ProtocolError("nested compression in a legacy message")
        if m.magic not in (0, 1):
            raise ProtocolError(f"unknown magic {m.magic} inside a compressed legacy message")
        timestamp = wrapper.timestamp if log_append else m.timestamp
        records.append(Record(offset, timestamp, m.key, m.value, NO_HEADERS))
        p = message_end
    return records, None


def decode_legacy(
    buf: bytes,
    pos: int,
    end: int,
    verify_crc: bool,
    max_size: int,
    spent: list[int],
    fetch_offset: int,
    room: int | None,
) -> RecordBatch | None:
    """The magic 0/1 message in ``buf[pos:end]`` as one batch (its inner messages, when
    compressed), costed and bounded as decode_batches does a magic-2 batch: a plain
    message costs its key and value, a compressed one its inner messages
    (decompressed), and each record ``DECODED_RECORD_OVERHEAD`` more, added to
    ``spent[0]``. A wrapper whose records would cost more than ``max_size`` is decoded
    in part, from its first record at or after ``fetch_offset`` (``resume_offset``).
    With ``room``, the whole message or None when it would cost more than that.

    Raises ProtocolError, IndexError or struct.error on malformed bytes
    (decode_batches turns the last two into ProtocolError)."""
    msg = _read_message(buf, pos, end, verify_crc)
    codec = msg.attributes & ATTR_CODEC_MASK
    if not codec:
        cost = len(msg.key or b"") + len(msg.value or b"") + DECODED_RECORD_OVERHEAD
        if room is not None and cost > room:
            return None
        spent[0] += cost
        record = Record(msg.offset, msg.timestamp, msg.key, msg.value, NO_HEADERS)
        return _batch(msg, [record], msg.offset, 0, None)
    if msg.value is None:
        raise ProtocolError(f"compressed legacy message at offset {msg.offset} has no value")
    payload = msg.value
    if codec == Compression.LZ4 and msg.magic == 0:
        payload = fix_legacy_lz4_header(payload)
    if room is None:
        inner_buf = decompress(codec, payload, max_size)
    else:
        # It holds one message at least: what is left past its objects bounds the
        # decompression.
        if room < DECODED_RECORD_OVERHEAD:
            return None
        inflated = decompress_within(codec, payload, room - DECODED_RECORD_OVERHEAD)
        if inflated is None:
            return None
        inner_buf = inflated
    count, first, last = _scan(inner_buf, msg.offset)
    if room is None:
        # One bound for the inner messages and the objects their records become, as for
        # a magic-2 batch: the messages are within it, and as many records as fit in
        # the rest.
        fit = max(1, (max_size - len(inner_buf)) // DECODED_RECORD_OVERHEAD)
    elif len(inner_buf) + count * DECODED_RECORD_OVERHEAD > room:
        return None
    else:
        fit = count
    # Magic 1 (KIP-31): inner offsets are relative and the wrapper carries
    # the absolute offset of the last inner message.
    shift = msg.offset - last if msg.magic == 1 else 0
    records, resume_offset = _inner_records(
        msg, inner_buf, verify_crc, shift, fetch_offset if count > fit else None, fit
    )
    spent[0] += len(inner_buf) + len(records) * DECODED_RECORD_OVERHEAD
    return _batch(msg, records, first + shift, last - first, resume_offset)


def _batch(
    msg: _Message,
    records: list[Record],
    base_offset: int,
    last_offset_delta: int,
    resume_offset: int | None,
) -> RecordBatch:
    return RecordBatch(
        base_offset,
        -1,
        msg.magic,
        msg.crc,
        msg.attributes,
        last_offset_delta,
        msg.timestamp,
        msg.timestamp,
        -1,
        -1,
        -1,
        records,
        None,
        resume_offset,
    )
