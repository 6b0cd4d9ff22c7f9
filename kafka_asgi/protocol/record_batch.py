"""The record batch's shape: the decoded types and the byte layout of magic 2.

Kafka's documentation, "Message format" (https://kafka.apache.org/documentation/#messageformat)
lays a magic-2 batch out as::

    baseOffset: int64                 ┐ not covered by the CRC
    batchLength: int32                │ (counts the bytes after itself)
    partitionLeaderEpoch: int32       │
    magic: int8 (2)                   │
    crc: uint32 (CRC-32C)             ┘
    attributes: int16                 ┐ covered by the CRC, to the end of the batch
    lastOffsetDelta: int32            │
    baseTimestamp: int64              │
    maxTimestamp: int64               │
    producerId: int64                 │ (KIP-98: idempotence and transactions)
    producerEpoch: int16              │
    baseSequence: int32               │
    records: [Record] (int32 count)   ┘

The named offsets below are those fields' positions from the batch's first byte.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from kafka_asgi.protocol.compression import Compression

__all__ = [
    "ATTR_CODEC_MASK",
    "ATTR_CONTROL",
    "ATTR_TIMESTAMP_TYPE",
    "ATTR_TRANSACTIONAL",
    "BATCH_OVERHEAD",
    "CREATE_TIME",
    "DECODED_HEADER_OVERHEAD",
    "DECODED_RECORD_OVERHEAD",
    "LOG_APPEND_TIME",
    "ControlType",
    "DecodedBatches",
    "Header",
    "Record",
    "RecordBatch",
    "RecordTuple",
    "TimestampType",
]


class TimestampType(IntEnum):
    """Bit 3 of the batch attributes."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


CREATE_TIME = TimestampType.CREATE_TIME
LOG_APPEND_TIME = TimestampType.LOG_APPEND_TIME


class ControlType(IntEnum):
    """Type field of the key of a control record (KIP-98 transaction markers)."""

    ABORT = 0
    COMMIT = 1


Header = tuple[str, bytes | None]
RecordTuple = tuple[bytes | None, bytes | None, Sequence[Header] | None, int]
"""One record to encode: (key, value, headers, timestamp_ms)."""


class Record(NamedTuple):
    """One decoded record of a batch.  ``headers`` is a tuple of (key, value) pairs.

    The protocol layer's record: the consumer hands out ``ConsumerRecord`` (this plus
    its topic and partition), and the producer takes plain arguments.
    """

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]


NO_HEADERS: tuple[Header, ...] = ()

# What a decoded record costs beyond its bytes on the wire: the objects it becomes by
# the time a consumer returns it (a Record, then a ConsumerRecord, an offset and a
# timestamp int, a list slot for each). Measured with tracemalloc on CPython 3.11,
# 64-bit: 100,000 records with null key and value held 284 bytes each after
# decode_batches and select_records, of which about 12 are their records section,
# counted already. Without it, a compressed batch of such records (7 bytes each, any
# producer may write one) spent a fortieth of what it took.
DECODED_RECORD_OVERHEAD = 272

# What a decoded header costs beyond its bytes on the wire: its (key, value) tuple, its
# slot in the record's headers tuple, and its key's str and value's bytes objects.
# Measured with tracemalloc on CPython 3.11, 64-bit: 100,000 headers of a 2-byte key
# and a 2-byte value (or a 6-byte key and an 8-byte value) held 143 bytes each beyond
# their bytes after decode_batches; ("", None), whose key and value are shared
# objects, held 61. A header takes two bytes on the wire: without it, a record of
# ("", None) headers spent a thirty-second of what it took (uncompressed) and a
# compressed batch of them next to nothing.
DECODED_HEADER_OVERHEAD = 144

# Attribute bits (int16 at ATTRIBUTES_OFFSET).
ATTR_CODEC_MASK = 0x07
ATTR_TIMESTAMP_TYPE = 0x08
ATTR_TIMESTAMP_TYPE_SHIFT = 3
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
ATTR_DELETE_HORIZON = 0x40  # KIP-534: base timestamp holds the delete horizon

MAGIC_V2 = 2

# The whole header, the part before the CRC'd region, and the part after it.
BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
HEAD = struct.Struct(">qiibI")  # baseOffset .. crc
TAIL = struct.Struct(">hiqqqhii")  # attributes .. record count
BATCH_OVERHEAD = BATCH_HEADER.size  # 61
# Every batch, of any magic, starts with (offset: int64, length: int32): the "log
# overhead" that says how many bytes follow.
LOG_OVERHEAD = struct.Struct(">qi")
LOG_OVERHEAD_SIZE = LOG_OVERHEAD.size  # 12
# batchLength counts from partitionLeaderEpoch: the batch size minus the log overhead.
LENGTH_OF_HEADER = BATCH_OVERHEAD - LOG_OVERHEAD_SIZE

# Byte offsets from the start of a batch.
MAGIC_OFFSET = 16  # baseOffset (8) + batchLength (4) + partitionLeaderEpoch (4)
CRC_OFFSET = MAGIC_OFFSET + 1
ATTRIBUTES_OFFSET = HEAD.size  # 21: where the CRC'd region starts
LAST_OFFSET_DELTA_OFFSET = ATTRIBUTES_OFFSET + 2  # 23: after the int16 attributes
# producerId: after attributes, lastOffsetDelta, baseTimestamp and maxTimestamp (43).
PRODUCER_STATE_OFFSET = ATTRIBUTES_OFFSET + struct.calcsize(">hiqq")
PRODUCER_STATE = struct.Struct(">qhi")  # producerId, producerEpoch, baseSequence

CONTROL_KEY = struct.Struct(">hh")  # version, type: the key of a control record


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """One decoded batch with all its header fields.

    Legacy (magic 0/1) messages are reported as batches too: ``base_offset`` and
    ``last_offset_delta`` span their records, ``base_timestamp`` and
    ``max_timestamp`` are the (wrapper) message's timestamp (-1 for magic 0),
    and the producer fields and ``partition_leader_epoch`` are -1.
    """

    base_offset: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records: list[Record]
    control_type: int | None = None
    """For a control batch, the type of its marker (a :class:`ControlType` when known)."""
    resume_offset: int | None = None
    """When the decoder stopped inside this batch (more records than one batch may
    decode to, see ``decode_batches``), the offset of the first record it left out:
    where the next fetch starts. None when ``records`` holds the whole batch."""

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & ATTR_CODEC_MASK)

    @property
    def timestamp_type(self) -> TimestampType:
        return TimestampType((self.attributes & ATTR_TIMESTAMP_TYPE) >> ATTR_TIMESTAMP_TYPE_SHIFT)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1


class DecodedBatches(list[RecordBatch]):
    """The batches decoded from a buffer.

    ``truncated`` is True when the buffer ended in a partial batch, which was
    left out; ``remainder`` is the number of bytes of that partial batch.
    ``limited`` is True when whole batches were left out because they would have
    taken those decoded past the ``max_total_size`` asked of ``decode_batches``, or
    when the last batch was decoded in part (its ``resume_offset``); ``size`` is the
    bytes of records decoded (the records sections, decompressed; a plain legacy
    message's key and value, a compressed one's inner messages, decompressed), plus
    ``DECODED_RECORD_OVERHEAD`` for each record decoded and ``DECODED_HEADER_OVERHEAD``
    for each of their headers. ``skipped`` is the number of batches left out,
    undecoded, because they end before the ``fetch_offset`` asked of
    ``decode_batches``: none of their records could be returned.
    """

    truncated: bool = False
    remainder: int = 0
    limited: bool = False
    size: int = 0
    skipped: int = 0
