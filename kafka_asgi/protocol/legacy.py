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

from kafka_asgi.protocol.compression import Compression, decompress, fix_legacy_lz4_header
from kafka_asgi.protocol.crc import crc32
from kafka_asgi.protocol.errors import ProtocolError
from kafka_asgi.protocol.record_batch import (
    ATTR_CODEC_MASK,
    ATTR_TIMESTAMP_TYPE,
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


def _inner_messages(wrapper: _Message, max_size: int, verify_crc: bool) -> list[_Message]:
    """The messages inside a compressed wrapper message."""
    codec = wrapper.attributes & ATTR_CODEC_MASK
    if wrapper.value is None:
        raise ProtocolError(f"compressed legacy message at offset {wrapper.offset} has no value")
    payload = wrapper.value
    if codec == Compression.LZ4 and wrapper.magic == 0:
        payload = fix_legacy_lz4_header(payload)
    inner_buf = decompress(codec, payload, max_size)
    inner = []
    p = 0
    inner_end = len(inner_buf)
    while p < inner_end:
        if inner_end - p < LOG_OVERHEAD_SIZE:
            raise ProtocolError("truncated message inside a compressed legacy message")
        _, size = LOG_OVERHEAD.unpack_from(inner_buf, p)
        message_end = p + LOG_OVERHEAD_SIZE + size
        if size < LEGACY_MIN_SIZE[0] or message_end > inner_end:
            raise ProtocolError(f"invalid size {size} inside a compressed legacy message")
        m = _read_message(inner_buf, p, message_end, verify_crc)
        if m.attributes & ATTR_CODEC_MASK:
            raise ProtocolError("nested compression in a legacy message")
        if m.magic not in (0, 1):
            raise ProtocolError(f"unknown magic {m.magic} inside a compressed legacy message")
        inner.append(m)
        p = message_end
    if not inner:
        raise ProtocolError(f"compressed legacy message at offset {wrapper.offset} is empty")
    return inner


def decode_legacy(buf: bytes, pos: int, end: int, verify_crc: bool, max_size: int) -> RecordBatch:
    """The magic 0/1 message in ``buf[pos:end]`` as one batch (its inner messages, when
    compressed).  Raises ProtocolError, IndexError or struct.error on malformed bytes
    (decode_batches turns the last two into ProtocolError)."""
    msg = _read_message(buf, pos, end, verify_crc)
    log_append = msg.magic == 1 and msg.attributes & ATTR_TIMESTAMP_TYPE
    if not msg.attributes & ATTR_CODEC_MASK:
        records = [Record(msg.offset, msg.timestamp, msg.key, msg.value, NO_HEADERS)]
    else:
        inner = _inner_messages(msg, max_size, verify_crc)
        # Magic 1 (KIP-31): inner offsets are relative and the wrapper carries
        # the absolute offset of the last inner message.
        shift = msg.offset - inner[-1].offset if msg.magic == 1 else 0
        records = [
            Record(
                m.offset + shift,
                msg.timestamp if log_append else m.timestamp,
                m.key,
                m.value,
                NO_HEADERS,
            )
            for m in inner
        ]
    base = records[0].offset
    return RecordBatch(
        base,
        -1,
        msg.magic,
        msg.crc,
        msg.attributes,
        records[-1].offset - base,
        msg.timestamp,
        msg.timestamp,
        -1,
        -1,
        -1,
        records,
    )
