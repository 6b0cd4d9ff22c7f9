"""Kafka record batches: encode magic 2, decode magic 0, 1 and 2.

The format is described in the Kafka documentation, "Message format"
(https://kafka.apache.org/documentation/#messageformat); magic 2 came with
KIP-98 (idempotence and transactions) and headers with KIP-82.

API
---

``encode_batch(records, *, base_offset=0, compression=Compression.NONE,
producer_id=-1, producer_epoch=-1, base_sequence=-1, transactional=False,
partition_leader_epoch=-1, timestamp_type=CREATE_TIME, compression_level=None)
-> bytes``
    Encode one magic-2 batch.  ``records`` is a non-empty sequence of
    ``(key, value, headers, timestamp_ms)`` tuples: key and value are bytes or
    None, headers is None or a sequence of ``(str, bytes | None)`` pairs.  The
    batch's base timestamp is the first record's.  Bad input raises TypeError or
    ValueError naming the record and field.  This is the producer's hot path.

``set_producer_state(batch, *, producer_id, producer_epoch, base_sequence,
transactional=None) -> bytes``
    The same batch with other idempotence fields (and a new CRC), without
    re-encoding its records: a retried batch must keep its sequence numbers
    (KIP-98), and a producer whose epoch was bumped must rewrite them.

``decode_batches(data, *, verify_crc=True, max_decompressed_size=256 MiB) -> DecodedBatches``
    Decode every complete batch (magic 2) or legacy message (magic 0/1, one
    :class:`RecordBatch` per top-level message, a compressed wrapper holding its
    inner messages) in a buffer such as the ``records`` of a Fetch partition.
    A partial batch at the end (a Fetch response cut at ``max_bytes``) is not an
    error: it is left out and ``DecodedBatches.truncated`` is True.  Any
    malformed input raises :class:`ProtocolError`, and nothing else; so does a
    compressed batch that would inflate beyond ``max_decompressed_size``.

``estimate_record_size(key, value, headers) -> int``
    An upper bound of the bytes one record adds to a batch (for batch sizing);
    ``BATCH_OVERHEAD`` is the size of the batch header.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from .compression import (
    MAX_DECOMPRESSED_SIZE,
    Compression,
    compress,
    decompress,
    fix_legacy_lz4_header,
)
from .crc import crc32, crc32c
from .errors import KafkaError, ProtocolError

__all__ = [
    "BATCH_OVERHEAD",
    "CREATE_TIME",
    "LOG_APPEND_TIME",
    "ControlType",
    "DecodedBatches",
    "Header",
    "Record",
    "RecordBatch",
    "RecordTuple",
    "TimestampType",
    "decode_batches",
    "encode_batch",
    "encode_batch_columns",
    "estimate_record_size",
    "set_producer_state",
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
    """One decoded record.  ``headers`` is a tuple of (key, value) pairs."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]


_ATTR_CODEC_MASK = 0x07
_ATTR_TIMESTAMP_TYPE = 0x08
_ATTR_TRANSACTIONAL = 0x10
_ATTR_CONTROL = 0x20
_ATTR_DELETE_HORIZON = 0x40  # KIP-534: base timestamp holds the delete horizon


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

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & _ATTR_CODEC_MASK)

    @property
    def timestamp_type(self) -> TimestampType:
        return TimestampType((self.attributes & _ATTR_TIMESTAMP_TYPE) >> 3)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _ATTR_CONTROL)

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
    """

    truncated: bool = False
    remainder: int = 0


# --- varints (zigzag, as in protobuf) ----------------------------------------

# Most lengths, offset deltas and timestamp deltas are small: encode them by
# table lookup.  The table covers every value whose record fields are short.
_TABLE_SIZE = 1 << 14
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1


def _zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_VARINT: list[bytes] = [_zigzag(n) for n in range(_TABLE_SIZE)]
# Single-byte zigzag decoding.
_UNZIG: list[int] = [(b >> 1) ^ -(b & 1) for b in range(128)]
# Two-byte zigzag decoding, indexed by the 14 payload bits.
_UNZIG2: list[int] = [(z >> 1) ^ -(z & 1) for z in range(1 << 14)]


def _varint(n: int) -> bytes:
    if 0 <= n < _TABLE_SIZE:
        return _VARINT[n]
    if not _INT32_MIN <= n <= _INT32_MAX:
        raise ValueError(f"{n} does not fit in a varint")
    return _zigzag(n)


def _varlong(n: int) -> bytes:
    if 0 <= n < _TABLE_SIZE:
        return _VARINT[n]
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise ValueError(f"{n} does not fit in a varlong")
    return _zigzag(n)


def _read_varint(data: bytes, pos: int, max_bytes: int = 10) -> tuple[int, int]:
    """Zigzag varint at ``pos`` -> (value, next position).  Raises IndexError if cut."""
    z = 0
    shift = 0
    for _ in range(max_bytes):
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
    raise ProtocolError(f"varint longer than {max_bytes} bytes")


# --- encoding ----------------------------------------------------------------

# baseOffset .. crc, then attributes .. recordCount (the part the CRC covers
# starts at attributes).
_HEAD = struct.Struct(">qiibI")
_TAIL = struct.Struct(">hiqqqhii")
_BATCH = struct.Struct(">qiibIhiqqqhii")
BATCH_OVERHEAD = _BATCH.size  # 61
_CRC_START = _HEAD.size  # 21
_LENGTH_BASE = BATCH_OVERHEAD - 12  # batchLength counts from partitionLeaderEpoch


def estimate_record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[Header] | None
) -> int:
    """Upper bound of the bytes one record adds to an uncompressed batch."""
    # length (5) + attributes (1) + timestamp delta (10) + offset delta (5)
    # + key length (5) + value length (5) + header count (5)
    size = 36
    if key is not None:
        size += len(key)
    if value is not None:
        size += len(value)
    if headers:
        for hk, hv in headers:
            size += 10 + len(hk) * 4 + (len(hv) if hv is not None else 0)
    return size


def _encode_headers(headers: Sequence[Header]) -> bytes:
    parts = [_varint(len(headers))]
    for hk, hv in headers:
        kb = hk.encode()
        parts.append(_varint(len(kb)))
        parts.append(kb)
        if hv is None:
            parts.append(b"\x01")
        else:
            parts.append(_varint(len(hv)))
            parts.append(hv)
    return b"".join(parts)


def _encode_headers_fast(headers: Sequence[Header]) -> bytes:
    # Table lookups only: a long key or value raises IndexError, and the caller
    # falls back to the checked encoder.
    table = _VARINT
    out = table[len(headers)]
    for hk, hv in headers:
        kb = hk.encode()
        if hv is None:
            out += b"%s%s\x01" % (table[len(kb)], kb)
        else:
            out += b"%s%s%s%s" % (table[len(kb)], kb, table[len(hv)], hv)
    return out


def _encode_records_fast(records: Sequence[RecordTuple], base_ts: int) -> tuple[bytes, int]:
    """Records section of a batch and its largest timestamp delta.

    Optimistic: assumes well-formed input with small lengths and fewer than
    ``_TABLE_SIZE`` records; anything else raises, and the caller falls back to
    :func:`_encode_records_checked`.
    """
    table = _VARINT
    size = _TABLE_SIZE
    out: list[bytes] = []
    ext = out.extend
    max_delta = 0
    encode_headers = _encode_headers_fast
    # Records made in the same millisecond share their delta: computed once per run.
    last_ts = base_ts
    tsd = b"\x00"
    for i, (key, value, headers, ts) in enumerate(records):
        if ts != last_ts:
            last_ts = ts
            d = ts - base_ts
            if d > max_delta:
                max_delta = d
            tsd = table[d] if 0 < d < size else _varlong(d)
        if key is None:
            if value is not None and not headers:
                # The common case (no key, no headers): one % format per record.
                vl = len(value)
                head = b"\x00%s%s\x01%s" % (tsd, table[i], table[vl])
                ext((table[len(head) + vl + 1], head, value, b"\x00"))
                continue
            kp = b"\x01"
        else:
            kp = table[len(key)] + key
        vp = b"\x01" if value is None else table[len(value)] + value
        hp = encode_headers(headers) if headers else b"\x00"
        rec = b"\x00%s%s%s%s%s" % (tsd, table[i], kp, vp, hp)
        ext((table[len(rec)], rec))
    return b"".join(out), max_delta


def _check_bytes(value: object, where: str) -> bytes | None:
    if value is None or isinstance(value, (bytes, bytearray, memoryview)):
        return None if value is None else bytes(value)
    raise TypeError(f"{where} must be bytes or None, got {type(value).__name__}: {value!r:.80}")


def _encode_records_checked(records: Sequence[RecordTuple], base_ts: int) -> tuple[bytes, int]:
    """Slow twin of :func:`_encode_records_fast` that validates every field."""
    out: list[bytes] = []
    max_delta = 0
    for i, record in enumerate(records):
        if not isinstance(record, (tuple, list)) or len(record) != 4:
            raise TypeError(
                f"records[{i}] must be a (key, value, headers, timestamp_ms) tuple, "
                f"got {record!r:.80}"
            )
        key, value, headers, ts = record
        key = _check_bytes(key, f"records[{i}] key")
        value = _check_bytes(value, f"records[{i}] value")
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise TypeError(f"records[{i}] timestamp must be an int (ms), got {ts!r:.80}")
        if not _INT64_MIN <= ts <= _INT64_MAX:
            raise ValueError(f"records[{i}] timestamp {ts} does not fit in an int64")
        d = ts - base_ts
        max_delta = max(max_delta, d)
        hp = b"\x00"
        if headers is not None and (
            not isinstance(headers, Sequence) or isinstance(headers, (str, bytes, bytearray))
        ):
            raise TypeError(
                f"records[{i}] headers must be a sequence of (str, bytes | None) pairs or None, "
                f"got {headers!r:.80}"
            )
        if headers:
            checked: list[Header] = []
            for j, pair in enumerate(headers):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise TypeError(
                        f"records[{i}] headers[{j}] must be a (str, bytes | None) pair, "
                        f"got {pair!r:.80}"
                    )
                hk, hv = pair
                if not isinstance(hk, str):
                    raise TypeError(
                        f"records[{i}] headers[{j}] key must be str, got {type(hk).__name__}"
                    )
                checked.append((hk, _check_bytes(hv, f"records[{i}] headers[{j}] value")))
            hp = _encode_headers(checked)
        kp = b"\x01" if key is None else _varint(len(key)) + key
        vp = b"\x01" if value is None else _varint(len(value)) + value
        rec = b"".join((b"\x00", _varlong(d), _varint(i), kp, vp, hp))
        out.append(_varint(len(rec)))
        out.append(rec)
    return b"".join(out), max_delta


def _options(compression: Compression | int, timestamp_type: TimestampType | int) -> Compression:
    try:
        codec = Compression(compression)
    except ValueError:
        raise ValueError(f"unknown compression {compression!r}") from None
    if timestamp_type not in (0, 1):
        raise ValueError(
            f"timestamp_type must be CREATE_TIME or LOG_APPEND_TIME, got {timestamp_type!r}"
        )
    return codec


def encode_batch(
    records: Sequence[RecordTuple],
    *,
    base_offset: int = 0,
    compression: Compression | int = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    partition_leader_epoch: int = -1,
    timestamp_type: TimestampType | int = CREATE_TIME,
    compression_level: int | None = None,
) -> bytes:
    """Encode ``records`` as one magic-2 record batch (see the module docstring)."""
    count = len(records)
    if count == 0:
        raise ValueError("a record batch needs at least one record")
    codec = _options(compression, timestamp_type)
    first = records[0]
    if not isinstance(first, (tuple, list)) or len(first) != 4:
        raise TypeError(
            f"records[0] must be a (key, value, headers, timestamp_ms) tuple, got {first!r:.80}"
        )
    base_ts = first[3]
    if not isinstance(base_ts, int) or isinstance(base_ts, bool):
        raise TypeError(f"records[0] timestamp must be an int (ms), got {base_ts!r:.80}")
    try:
        body, max_delta = _encode_records_fast(records, base_ts)
    except KafkaError:
        raise
    except Exception:
        body, max_delta = _encode_records_checked(records, base_ts)
    try:
        return _assemble(
            body,
            count,
            base_ts,
            max_delta,
            codec,
            compression_level,
            base_offset,
            producer_id,
            producer_epoch,
            base_sequence,
            transactional,
            partition_leader_epoch,
            timestamp_type,
        )
    except struct.error as exc:
        # Name the record if one of them is at fault.
        _encode_records_checked(records, base_ts)
        raise ValueError(
            "batch field out of range (base_offset/producer_id/timestamps: int64, "
            "partition_leader_epoch/base_sequence: int32, producer_epoch: int16): "
            f"base_offset={base_offset!r}, producer_id={producer_id!r}, "
            f"producer_epoch={producer_epoch!r}, base_sequence={base_sequence!r}, "
            f"partition_leader_epoch={partition_leader_epoch!r}, "
            f"timestamps={base_ts!r}..{base_ts + max_delta!r}: {exc}"
        ) from None


def _assemble(
    body: bytes,
    count: int,
    base_ts: int,
    max_delta: int,
    codec: Compression,
    compression_level: int | None,
    base_offset: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    transactional: bool,
    partition_leader_epoch: int,
    timestamp_type: TimestampType | int,
) -> bytes:
    """Header, CRC and (compressed) records section: the per-batch work."""
    if codec is not Compression.NONE:
        body = compress(codec, body, compression_level)
    attributes = codec | (timestamp_type << 3) | (_ATTR_TRANSACTIONAL if transactional else 0)
    tail = _TAIL.pack(
        attributes,
        count - 1,
        base_ts,
        base_ts + max_delta,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    )
    head = _HEAD.pack(
        base_offset,
        _LENGTH_BASE + len(body),
        partition_leader_epoch,
        2,
        crc32c(body, crc32c(tail)),
    )
    return b"".join((head, tail, body))


_NS_PER_MS = 1_000_000


def encode_batch_columns(
    values: Sequence[bytes | None],
    timestamps_ns: Sequence[int],
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[Sequence[Header] | None] | None = None,
    *,
    base_offset: int = 0,
    compression: Compression | int = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    partition_leader_epoch: int = -1,
    timestamp_type: TimestampType | int = CREATE_TIME,
    compression_level: int | None = None,
) -> bytes:
    """:func:`encode_batch` for records held as parallel lists (the producer's shape).

    ``values[i]``, ``keys[i]`` and ``headers[i]`` (``keys``/``headers`` None: none
    of the records has one) and ``timestamps_ns[i]``, nanoseconds since the epoch
    (the batch carries them in milliseconds, rounded down).  The same batch as
    ``encode_batch`` makes of the matching tuples; records without key or headers
    are encoded a column at a time rather than one by one.
    """
    count = len(values)
    if count == 0:
        raise ValueError("a record batch needs at least one record")
    if (
        len(timestamps_ns) != count
        or (keys is not None and len(keys) != count)
        or (headers is not None and len(headers) != count)
    ):
        raise ValueError(
            f"columns of different lengths: {count} values, {len(timestamps_ns)} timestamps"
            + ("" if keys is None else f", {len(keys)} keys")
            + ("" if headers is None else f", {len(headers)} headers")
        )
    codec = _options(compression, timestamp_type)
    try:
        if keys is None and headers is None:
            body, base_ts, max_ts = _encode_values(values, timestamps_ns)
            max_delta = max_ts - base_ts
        else:
            body, base_ts, max_delta = _encode_columns_fast(values, timestamps_ns, keys, headers)
    except KafkaError:
        raise
    except Exception:
        pass  # something out of the ordinary: the general path checks and names it
    else:
        try:
            return _assemble(
                body,
                count,
                base_ts,
                max_delta,
                codec,
                compression_level,
                base_offset,
                producer_id,
                producer_epoch,
                base_sequence,
                transactional,
                partition_leader_epoch,
                timestamp_type,
            )
        except struct.error:
            pass  # the general path raises the ValueError that names the field
    stamps: list[int] = []
    for i, ns in enumerate(timestamps_ns):
        if not isinstance(ns, int) or isinstance(ns, bool):
            raise TypeError(f"timestamps_ns[{i}] must be an int (ns), got {ns!r:.80}")
        stamps.append(ns // _NS_PER_MS)
    records: list[RecordTuple] = [
        (
            None if keys is None else keys[i],
            values[i],
            None if headers is None else headers[i],
            ms,
        )
        for i, ms in enumerate(stamps)
    ]
    return encode_batch(
        records,
        base_offset=base_offset,
        compression=codec,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        transactional=transactional,
        partition_leader_epoch=partition_leader_epoch,
        timestamp_type=timestamp_type,
        compression_level=compression_level,
    )


def _encode_columns_fast(
    values: Sequence[bytes | None],
    stamps: Sequence[int],
    keys: Sequence[bytes | None] | None,
    headers: Sequence[Sequence[Header] | None] | None,
) -> tuple[bytes, int, int]:
    """:func:`_encode_records_fast` over columns: (section, base ms, largest delta)."""
    table = _VARINT
    size = _TABLE_SIZE
    out: list[bytes] = []
    ext = out.extend
    encode_headers = _encode_headers_fast
    base_ts = stamps[0] // _NS_PER_MS
    max_delta = 0
    # Records made in the same millisecond share their delta: one division per run.
    lo = base_ts * _NS_PER_MS
    hi = lo + _NS_PER_MS
    tsd = b"\x00"
    for i, value in enumerate(values):
        ns = stamps[i]
        if not lo <= ns < hi:
            ms = ns // _NS_PER_MS
            lo = ms * _NS_PER_MS
            hi = lo + _NS_PER_MS
            d = ms - base_ts
            if d > max_delta:
                max_delta = d
            tsd = table[d] if 0 <= d < size else _varlong(d)
        key = None if keys is None else keys[i]
        hdrs = None if headers is None else headers[i]
        kp = b"\x01" if key is None else table[len(key)] + key
        vp = b"\x01" if value is None else table[len(value)] + value
        hp = encode_headers(hdrs) if hdrs else b"\x00"
        rec = b"\x00%s%s%s%s%s" % (tsd, table[i], kp, vp, hp)
        ext((table[len(rec)], rec))
    return b"".join(out), base_ts, max_delta


# Tables for _encode_values, grown on demand up to _COLUMN_LIMIT entries.
_COLUMN_LIMIT = 1 << 15
# zigzag(i) + b"\x01": a record's offset delta, then its null key.
_OFFSET_NULL_KEY: list[bytes] = []
# _LENGTHS[c][vl]: b"\x00" (the header count ending the record before) + the
# length of a record whose value has vl bytes and whose timestamp and offset
# deltas take c bytes together.
_LENGTHS: dict[int, list[bytes]] = {}


def _lengths(c: int, size: int) -> list[bytes]:
    table = _LENGTHS.get(c)
    if table is None:
        table = _LENGTHS[c] = []
    for vl in range(len(table), size):
        # attributes, key length (-1) and header count: 3 bytes.
        table.append(b"\x00" + _zigzag(3 + c + len(_VARINT[vl]) + vl))
    return table


def _encode_values(values: Sequence[bytes | None], stamps: Sequence[int]) -> tuple[bytes, int, int]:
    """Records section of records with a value, no key and no headers, column-wise.

    Returns (section, first timestamp, last timestamp) in milliseconds.  Each record
    is five pieces of one ``b"".join``: its length (after the previous record's
    header count), attributes and timestamp delta (shared by a run of records of
    the same millisecond), offset delta and null key, value length, value; the
    pieces of a column are written by slice assignment, without a Python-level loop
    per record.  Optimistic: raises on anything else (a None value, a value or
    batch beyond the tables, timestamps out of order) and the caller falls back.
    """
    n = len(values)
    lens = list(map(len, values))  # type: ignore[arg-type]  # TypeError for a None value
    if n > _COLUMN_LIMIT or max(lens) >= _TABLE_SIZE:
        raise ValueError("beyond the tables")
    if not isinstance(stamps, list):
        stamps = list(stamps)
    if stamps != sorted(stamps):
        raise ValueError("timestamps out of order")
    offsets = _OFFSET_NULL_KEY
    if len(offsets) < n:
        offsets.extend(_zigzag(i) + b"\x01" for i in range(len(offsets), n))
    out: list[bytes | None] = [None] * (5 * n + 1)
    out[2::5] = offsets[:n]
    out[3::5] = map(_VARINT.__getitem__, lens)
    out[4::5] = values
    size = max(lens) + 1
    base_ms = stamps[0] // _NS_PER_MS
    ms = base_ms
    a = 0
    while a < n:
        ms = stamps[a] // _NS_PER_MS
        b = bisect_left(stamps, (ms + 1) * _NS_PER_MS, a)
        tsd = _varlong(ms - base_ms)
        out[5 * a + 1 : 5 * b + 1 : 5] = [b"\x00" + tsd] * (b - a)
        # Offset deltas take 1 byte below 64, 2 below 8192, 3 beyond (zigzag).
        s = a
        while s < b:
            e = b if s >= 8192 else min(b, 64 if s < 64 else 8192)
            c = len(tsd) + (1 if s < 64 else 2 if s < 8192 else 3)
            out[5 * s : 5 * e : 5] = map(_lengths(c, size).__getitem__, lens[s:e])
            s = e
        a = b
    first = out[0]
    assert first is not None
    out[0] = first[1:]
    out[-1] = b"\x00"
    return b"".join(out), base_ms, ms  # type: ignore[arg-type]


_PRODUCER_STATE = struct.Struct(">qhi")
_PRODUCER_STATE_POS = 43
_ATTRIBUTES = struct.Struct(">h")


def set_producer_state(
    batch: bytes,
    *,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    transactional: bool | None = None,
) -> bytes:
    """Rewrite the producer id, epoch and base sequence of an encoded magic-2 batch."""
    if len(batch) < BATCH_OVERHEAD or batch[16] != 2:
        raise ValueError("not an encoded magic-2 record batch")
    buf = bytearray(batch)
    try:
        _PRODUCER_STATE.pack_into(
            buf, _PRODUCER_STATE_POS, producer_id, producer_epoch, base_sequence
        )
    except struct.error as exc:
        raise ValueError(
            f"producer_id={producer_id!r} (int64), producer_epoch={producer_epoch!r} (int16), "
            f"base_sequence={base_sequence!r} (int32): {exc}"
        ) from None
    if transactional is not None:
        (attributes,) = _ATTRIBUTES.unpack_from(buf, _CRC_START)
        attributes = (
            attributes | _ATTR_TRANSACTIONAL if transactional else attributes & ~_ATTR_TRANSACTIONAL
        )
        _ATTRIBUTES.pack_into(buf, _CRC_START, attributes)
    struct.pack_into(">I", buf, 17, crc32c(memoryview(buf)[_CRC_START:]))
    return bytes(buf)


# --- decoding ----------------------------------------------------------------

_OFFSET_LENGTH = struct.Struct(">qi")
_LEGACY_V0 = struct.Struct(">qiIbb")  # offset, size, crc, magic, attributes
_LEGACY_V1_TS = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_CONTROL_KEY = struct.Struct(">hh")
_NO_HEADERS: tuple[Header, ...] = ()
_LEGACY_V0_MIN = 14  # crc, magic, attributes, key length, value length
_LEGACY_V1_MIN = 22  # ... plus timestamp


def decode_batches(
    data: bytes | bytearray | memoryview,
    *,
    verify_crc: bool = True,
    max_decompressed_size: int = MAX_DECOMPRESSED_SIZE,
) -> DecodedBatches:
    """Decode every complete batch in ``data`` (see the module docstring)."""
    buf = data if isinstance(data, bytes) else bytes(data)
    result = DecodedBatches()
    pos = 0
    end = len(buf)
    try:
        while pos < end:
            if end - pos < 12:
                result.truncated = True
                result.remainder = end - pos
                break
            _, length = _OFFSET_LENGTH.unpack_from(buf, pos)
            if length < _LEGACY_V0_MIN:
                raise ProtocolError(f"record batch at byte {pos}: invalid length {length}")
            batch_end = pos + 12 + length
            if batch_end > end:
                result.truncated = True
                result.remainder = end - pos
                break
            magic = buf[pos + 16]
            if magic == 2:
                result.append(_decode_v2(buf, pos, batch_end, verify_crc, max_decompressed_size))
            elif magic == 0 or magic == 1:
                result.append(
                    _decode_legacy(buf, pos, batch_end, verify_crc, max_decompressed_size)
                )
            else:
                raise ProtocolError(f"record batch at byte {pos}: unknown magic {magic}")
            pos = batch_end
    except ProtocolError:
        raise
    except KafkaError as exc:
        # e.g. UnsupportedCodecError: a batch we cannot read is still data we
        # could not decode; keep the message that names the extra to install.
        raise ProtocolError(str(exc)) from exc
    except (IndexError, struct.error, ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise ProtocolError(f"malformed record batch at byte {pos}: {exc}") from None
    return result


def _decode_v2(buf: bytes, pos: int, end: int, verify_crc: bool, max_size: int) -> RecordBatch:
    if end - pos < BATCH_OVERHEAD:
        raise ProtocolError(f"record batch at byte {pos}: length {end - pos - 12} too small")
    (
        base_offset,
        _,
        leader_epoch,
        _,
        crc,
        attributes,
        last_offset_delta,
        base_ts,
        max_ts,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    ) = _BATCH.unpack_from(buf, pos)
    if verify_crc:
        actual = crc32c(memoryview(buf)[pos + _CRC_START : end])
        if actual != crc:
            raise ProtocolError(
                f"record batch at offset {base_offset}: CRC-32C mismatch "
                f"(stored {crc:#010x}, computed {actual:#010x})"
            )
    if count < 0:
        raise ProtocolError(f"record batch at offset {base_offset}: negative record count {count}")
    codec = attributes & _ATTR_CODEC_MASK
    start = pos + BATCH_OVERHEAD
    if codec:
        body = decompress(codec, buf[start:end], max_size)
        start = 0
        body_end = len(body)
    else:
        body = buf
        body_end = end
    log_append = attributes & _ATTR_TIMESTAMP_TYPE
    records = _decode_records(
        body, start, body_end, count, base_offset, max_ts if log_append else base_ts, not log_append
    )
    control_type = None
    if attributes & _ATTR_CONTROL:
        if not records or records[0].key is None or len(records[0].key) < 4:
            raise ProtocolError(f"control batch at offset {base_offset} has no valid control key")
        _, control_type = _CONTROL_KEY.unpack_from(records[0].key)
        if control_type in (0, 1):
            control_type = ControlType(control_type)
    return RecordBatch(
        base_offset,
        leader_epoch,
        2,
        crc,
        attributes,
        last_offset_delta,
        base_ts,
        max_ts,
        producer_id,
        producer_epoch,
        base_sequence,
        records,
        control_type,
    )


def _decode_records(
    data: bytes,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_ts: int,
    add_delta: bool,
) -> list[Record]:
    """Decode ``count`` records filling exactly data[pos:end].

    With ``add_delta`` False (log-append time), every record's timestamp is
    ``base_ts``: the broker then sets the batch's max timestamp and readers use
    it for all records.
    """
    unzig = _UNZIG
    unzig2 = _UNZIG2
    read = _read_varint
    no_headers = _NO_HEADERS
    new = tuple.__new__
    records: list[Record] = []
    append = records.append
    for _ in range(count):
        b = data[pos]
        if b < 0x80:
            rlen = unzig[b]
            pos += 1
        elif data[pos + 1] < 0x80:
            rlen = unzig2[(b & 0x7F) | (data[pos + 1] << 7)]
            pos += 2
        else:
            rlen, pos = read(data, pos, 5)
        rend = pos + rlen
        if rlen <= 0 or rend > end:
            raise ProtocolError(f"record length {rlen} exceeds its batch")
        pos += 1  # record attributes: unused
        b = data[pos]
        if b < 0x80:
            ts = unzig[b]
            pos += 1
        elif data[pos + 1] < 0x80:
            ts = unzig2[(b & 0x7F) | (data[pos + 1] << 7)]
            pos += 2
        else:
            ts, pos = read(data, pos, 10)
        b = data[pos]
        if b < 0x80:
            offset_delta = unzig[b]
            pos += 1
        elif data[pos + 1] < 0x80:
            offset_delta = unzig2[(b & 0x7F) | (data[pos + 1] << 7)]
            pos += 2
        else:
            offset_delta, pos = read(data, pos, 5)
        b = data[pos]
        if b < 0x80:
            n = unzig[b]
            pos += 1
        elif data[pos + 1] < 0x80:
            n = unzig2[(b & 0x7F) | (data[pos + 1] << 7)]
            pos += 2
        else:
            n, pos = read(data, pos, 5)
        if n < 0:
            if n != -1:
                raise ProtocolError(f"negative key length {n}")
            key = None
        else:
            key = data[pos : pos + n]
            pos += n
        b = data[pos]
        if b < 0x80:
            n = unzig[b]
            pos += 1
        elif data[pos + 1] < 0x80:
            n = unzig2[(b & 0x7F) | (data[pos + 1] << 7)]
            pos += 2
        else:
            n, pos = read(data, pos, 5)
        if n < 0:
            if n != -1:
                raise ProtocolError(f"negative value length {n}")
            value = None
        else:
            value = data[pos : pos + n]
            pos += n
        b = data[pos]
        if b == 0:
            headers = no_headers
            pos += 1
        else:
            headers, pos = _decode_headers(data, pos)
        if pos != rend:
            raise ProtocolError(f"record fields do not add up to its length {rlen}")
        # tuple.__new__ skips the keyword handling of Record's generated __new__.
        append(
            new(
                Record,
                (
                    base_offset + offset_delta,
                    base_ts + ts if add_delta else base_ts,
                    key,
                    value,
                    headers,
                ),
            )
        )
    if pos != end:
        raise ProtocolError(f"{end - pos} bytes left after the {count} records of the batch")
    return records


def _decode_headers(data: bytes, pos: int) -> tuple[tuple[Header, ...], int]:
    count, pos = _read_varint(data, pos, 5)
    if count < 0:
        raise ProtocolError(f"negative header count {count}")
    headers = []
    for _ in range(count):
        n, pos = _read_varint(data, pos, 5)
        if n < 0 or pos + n > len(data):
            raise ProtocolError(f"invalid header key length {n}")
        hk = data[pos : pos + n].decode()
        pos += n
        n, pos = _read_varint(data, pos, 5)
        if n < 0:
            if n != -1:
                raise ProtocolError(f"negative header value length {n}")
            hv = None
        else:
            if pos + n > len(data):
                raise ProtocolError(f"header value length {n} exceeds the record")
            hv = data[pos : pos + n]
            pos += n
        headers.append((hk, hv))
    return tuple(headers), pos


def _legacy_bytes(buf: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
    (n,) = _INT32.unpack_from(buf, pos)
    pos += 4
    if n < 0:
        if n != -1:
            raise ProtocolError(f"negative length {n} in a legacy message")
        return None, pos
    if pos + n > end:
        raise ProtocolError(f"length {n} exceeds its legacy message")
    return buf[pos : pos + n], pos + n


class _LegacyMessage(NamedTuple):
    offset: int
    crc: int
    magic: int
    attributes: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def _read_legacy(buf: bytes, pos: int, end: int, verify_crc: bool) -> _LegacyMessage:
    offset, size, crc, magic, attributes = _LEGACY_V0.unpack_from(buf, pos)
    if size < (_LEGACY_V1_MIN if magic == 1 else _LEGACY_V0_MIN):
        raise ProtocolError(f"legacy message at offset {offset}: size {size} too small")
    if verify_crc:
        actual = crc32(memoryview(buf)[pos + 16 : end])
        if actual != crc:
            raise ProtocolError(
                f"legacy message at offset {offset}: CRC-32 mismatch "
                f"(stored {crc:#010x}, computed {actual:#010x})"
            )
    p = pos + 18
    timestamp = -1
    if magic == 1:
        (timestamp,) = _LEGACY_V1_TS.unpack_from(buf, p)
        p += 8
    key, p = _legacy_bytes(buf, p, end)
    value, p = _legacy_bytes(buf, p, end)
    if p != end:
        raise ProtocolError(f"legacy message at offset {offset}: size {size} does not match fields")
    return _LegacyMessage(offset, crc, magic, attributes & 0xFF, timestamp, key, value)


def _decode_legacy(buf: bytes, pos: int, end: int, verify_crc: bool, max_size: int) -> RecordBatch:
    msg = _read_legacy(buf, pos, end, verify_crc)
    codec = msg.attributes & _ATTR_CODEC_MASK
    log_append = msg.magic == 1 and msg.attributes & _ATTR_TIMESTAMP_TYPE
    if not codec:
        records = [Record(msg.offset, msg.timestamp, msg.key, msg.value, _NO_HEADERS)]
    else:
        if msg.value is None:
            raise ProtocolError(f"compressed legacy message at offset {msg.offset} has no value")
        payload = msg.value
        if codec == Compression.LZ4 and msg.magic == 0:
            payload = fix_legacy_lz4_header(payload)
        inner_buf = decompress(codec, payload, max_size)
        inner = []
        p = 0
        inner_end = len(inner_buf)
        while p < inner_end:
            if inner_end - p < 12:
                raise ProtocolError("truncated message inside a compressed legacy message")
            _, size = _OFFSET_LENGTH.unpack_from(inner_buf, p)
            if size < _LEGACY_V0_MIN or p + 12 + size > inner_end:
                raise ProtocolError(f"invalid size {size} inside a compressed legacy message")
            m = _read_legacy(inner_buf, p, p + 12 + size, verify_crc)
            if m.attributes & _ATTR_CODEC_MASK:
                raise ProtocolError("nested compression in a legacy message")
            if m.magic not in (0, 1):
                raise ProtocolError(f"unknown magic {m.magic} inside a compressed legacy message")
            inner.append(m)
            p += 12 + size
        if not inner:
            raise ProtocolError(f"compressed legacy message at offset {msg.offset} is empty")
        # Magic 1 (KIP-31): inner offsets are relative and the wrapper carries
        # the absolute offset of the last inner message.
        shift = msg.offset - inner[-1].offset if msg.magic == 1 else 0
        records = [
            Record(
                m.offset + shift,
                msg.timestamp if log_append else m.timestamp,
                m.key,
                m.value,
                _NO_HEADERS,
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
