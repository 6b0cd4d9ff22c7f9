"""Encoding record batches (magic 2): the producer's hot path.

See :mod:`kafka_asgi.protocol.records` for the API; the layout is in
:mod:`kafka_asgi.protocol.record_batch`.  Every encoder has an optimistic fast path
(table lookups for the common short lengths, no per-field checks beyond taking
only exact bytes) and, when that raises on unusual input, a checked path that
names the record and field at fault.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import pairwise

from kafka_asgi.protocol.compression import Compression, compress
from kafka_asgi.protocol.crc import crc32c
from kafka_asgi.protocol.errors import EncodeError, KafkaError
from kafka_asgi.protocol.record_batch import (
    ATTR_TIMESTAMP_TYPE_SHIFT,
    ATTR_TRANSACTIONAL,
    ATTRIBUTES_OFFSET,
    BATCH_OVERHEAD,
    CRC_OFFSET,
    CREATE_TIME,
    HEAD,
    LENGTH_OF_HEADER,
    MAGIC_OFFSET,
    MAGIC_V2,
    PRODUCER_STATE,
    PRODUCER_STATE_OFFSET,
    TAIL,
    Header,
    RecordTuple,
    TimestampType,
)
from kafka_asgi.protocol.varint import (
    INT64_MAX,
    INT64_MIN,
    ZIGZAG_BYTES,
    ZIGZAG_TABLE_SIZE,
    encode_varint,
    encode_varlong,
    zigzag,
)

__all__ = [
    "assemble_batch",
    "encode_batch",
    "encode_batch_columns",
    "encode_records_section",
    "estimate_record_size",
    "set_producer_state",
]


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
    parts = [encode_varint(len(headers))]
    for hk, hv in headers:
        kb = hk.encode()
        parts.append(encode_varint(len(kb)))
        parts.append(kb)
        if hv is None:
            parts.append(b"\x01")
        else:
            parts.append(encode_varint(len(hv)))
            parts.append(hv)
    return b"".join(parts)


def _encode_headers_fast(headers: Sequence[Header]) -> bytes:
    # Table lookups only: a long key or value raises IndexError, and the caller
    # falls back to the checked encoder.
    table = ZIGZAG_BYTES
    out = table[len(headers)]
    for hk, hv in headers:
        kb = hk.encode()
        if hv is None:
            out += b"%s%s\x01" % (table[len(kb)], kb)
        elif hv.__class__ is bytes:
            out += b"%s%s%s%s" % (table[len(kb)], kb, table[len(hv)], hv)
        else:
            raise _not_bytes(hv)
    return out


def _not_bytes(value: object) -> TypeError:
    """What the fast encoders raise for a field that is not exactly bytes.

    They write len() as the field's length and the object's buffer as its bytes:
    the same count for bytes only (a memoryview's len() counts items, not bytes,
    and would make a batch with a valid CRC that no one can decode).  The checked
    path copies buffers to bytes and refuses the rest, naming the field.
    """
    return TypeError(f"not bytes: {type(value).__name__}")


def _encode_records_fast(records: Sequence[RecordTuple], base_ts: int) -> tuple[bytes, int]:
    """Records section of a batch and its largest timestamp delta.

    Optimistic: assumes well-formed input with small lengths and fewer than
    ``ZIGZAG_TABLE_SIZE`` records; anything else raises, and the caller falls back to
    :func:`_encode_records_checked`.
    """
    table = ZIGZAG_BYTES
    size = ZIGZAG_TABLE_SIZE
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
            tsd = table[d] if 0 < d < size else encode_varlong(d)
        if value.__class__ is bytes:
            # One % format per record; the value is joined as it is.
            vl = len(value)
            if key is None:
                head = b"\x00%s%s\x01%s" % (tsd, table[i], table[vl])
            elif key.__class__ is bytes:
                head = b"\x00%s%s%s%s%s" % (tsd, table[i], table[len(key)], key, table[vl])
            else:
                raise _not_bytes(key)
            if headers:
                hp = encode_headers(headers)
                ext((table[len(head) + vl + len(hp)], head, value, hp))
            else:
                ext((table[len(head) + vl + 1], head, value, b"\x00"))
            continue
        if value is not None:
            raise _not_bytes(value)
        if key is None:
            kp = b"\x01"
        elif key.__class__ is bytes:
            kp = table[len(key)] + key
        else:
            raise _not_bytes(key)
        hp = encode_headers(headers) if headers else b"\x00"
        rec = b"\x00%s%s%s\x01%s" % (tsd, table[i], kp, hp)
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
        if not INT64_MIN <= ts <= INT64_MAX:
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
        kp = b"\x01" if key is None else encode_varint(len(key)) + key
        vp = b"\x01" if value is None else encode_varint(len(value)) + value
        rec = b"".join((b"\x00", encode_varlong(d), encode_varint(i), kp, vp, hp))
        out.append(encode_varint(len(rec)))
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
    except EncodeError:
        # A value out of range: the checked path names the record and field.
        body, max_delta = _encode_records_checked(records, base_ts)
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
    compressed: bool = False,
) -> bytes:
    """Header, CRC and (compressed) records section: the per-batch work.
    ``compressed``: ``body`` is compressed with ``codec`` already."""
    if codec is not Compression.NONE and not compressed:
        body = compress(codec, body, compression_level)
    attributes = (
        codec
        | (timestamp_type << ATTR_TIMESTAMP_TYPE_SHIFT)
        | (ATTR_TRANSACTIONAL if transactional else 0)
    )
    tail = TAIL.pack(
        attributes,
        count - 1,
        base_ts,
        base_ts + max_delta,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    )
    head = HEAD.pack(
        base_offset,
        LENGTH_OF_HEADER + len(body),
        partition_leader_epoch,
        MAGIC_V2,
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
    # None for a value out of range or anything out of the ordinary: the general
    # path below checks and names the record and field.
    section = encode_records_section(values, timestamps_ns, keys, headers)
    if section is not None:
        body, base_ts, max_delta = section
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


def encode_records_section(
    values: Sequence[bytes | None],
    timestamps_ns: Sequence[int],
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[Sequence[Header] | None] | None = None,
) -> tuple[bytes, int, int] | None:
    """The uncompressed records section :func:`encode_batch_columns` would write, as
    (section, first timestamp in ms, largest timestamp delta); None for input only
    its checked path takes (it then names the fault).

    With :func:`assemble_batch`, a batch in two steps: the section here, its
    compression elsewhere (a worker thread), the header around it last.
    """
    count = len(values)
    if (
        count == 0
        or len(timestamps_ns) != count
        or (keys is not None and len(keys) != count)
        or (headers is not None and len(headers) != count)
    ):
        return None
    try:
        if keys is None and headers is None:
            body, base_ts, max_ts = _encode_values(values, timestamps_ns)
            return body, base_ts, max_ts - base_ts
        return _encode_columns_fast(values, timestamps_ns, keys, headers)
    except EncodeError:
        return None  # a value out of range
    except KafkaError:
        raise
    except Exception:
        return None  # something out of the ordinary


def assemble_batch(
    section: bytes,
    count: int,
    base_ts: int,
    max_delta: int,
    *,
    compression: Compression | int = Compression.NONE,
    compressed: bool = False,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """The batch of ``count`` records around a records section from
    :func:`encode_records_section` (``compressed``: already compressed with
    ``compression``); the bytes :func:`encode_batch_columns` makes of the same records.
    A field out of its range raises ValueError naming the values."""
    try:
        return _assemble(
            section,
            count,
            base_ts,
            max_delta,
            _options(compression, CREATE_TIME),
            None,
            0,
            producer_id,
            producer_epoch,
            base_sequence,
            False,
            -1,
            CREATE_TIME,
            compressed,
        )
    except struct.error:
        raise ValueError(
            f"batch fields out of range: count={count}, base_ts={base_ts},"
            f" max_delta={max_delta}, producer_id={producer_id},"
            f" producer_epoch={producer_epoch}, base_sequence={base_sequence}"
        ) from None


def _encode_columns_fast(
    values: Sequence[bytes | None],
    stamps: Sequence[int],
    keys: Sequence[bytes | None] | None,
    headers: Sequence[Sequence[Header] | None] | None,
) -> tuple[bytes, int, int]:
    """:func:`_encode_records_fast` over columns: (section, base ms, largest delta)."""
    table = ZIGZAG_BYTES
    size = ZIGZAG_TABLE_SIZE
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
            tsd = table[d] if 0 <= d < size else encode_varlong(d)
        key = None if keys is None else keys[i]
        hdrs = None if headers is None else headers[i]
        if value.__class__ is bytes:
            # As in _encode_records_fast.
            vl = len(value)
            if key is None:
                head = b"\x00%s%s\x01%s" % (tsd, table[i], table[vl])
            elif key.__class__ is bytes:
                head = b"\x00%s%s%s%s%s" % (tsd, table[i], table[len(key)], key, table[vl])
            else:
                raise _not_bytes(key)
            if hdrs:
                hp = encode_headers(hdrs)
                ext((table[len(head) + vl + len(hp)], head, value, hp))
            else:
                ext((table[len(head) + vl + 1], head, value, b"\x00"))
            continue
        if value is not None:
            raise _not_bytes(value)
        if key is None:
            kp = b"\x01"
        elif key.__class__ is bytes:
            kp = table[len(key)] + key
        else:
            raise _not_bytes(key)
        hp = encode_headers(hdrs) if hdrs else b"\x00"
        rec = b"\x00%s%s%s\x01%s" % (tsd, table[i], kp, hp)
        ext((table[len(rec)], rec))
    return b"".join(out), base_ts, max_delta


# Tables for _encode_values, grown on demand (up to _COLUMN_LIMIT entries). A table
# is never changed once published: growing one makes a longer copy and publishes that
# (one assignment). Producers in several threads (a WSGI worker's background producer
# beside another) may encode at once, and a list extended in place by one thread
# while another extends it too would hold entries at the wrong index.
_COLUMN_LIMIT = 1 << 15
# zigzag(i) + b"\x01": a record's offset delta, then its null key.
_OFFSET_NULL_KEY: list[bytes] = []
# _LENGTHS[c][vl]: b"\x00" (the header count ending the record before) + the
# length of a record whose value has vl bytes and whose timestamp and offset
# deltas take c bytes together.
_LENGTHS: dict[int, list[bytes]] = {}
# _ATTRIBUTES_DELTA[d]: a record's attributes (0) and timestamp delta d (ms), up to
# _TWO_BYTES entries (batches spanning longer take runs).
_ATTRIBUTES_DELTA: list[bytes] = []
# Deltas below each bound take 1, 2 bytes (zigzag varints); up to 3 below the tables'
# sizes: the bounds where a record's timestamp and offset deltas change length.
_ONE_BYTE = 64
_TWO_BYTES = 8192


def _extended(
    table: list[bytes], need: int, limit: int, entry: Callable[[int], bytes]
) -> list[bytes]:
    """A new list: ``table``'s entries, then ``entry(i)`` for the next indexes up to at
    least ``need``, twice ``table``'s length where ``limit`` allows (a copy per
    doubling, not per entry). ``table`` itself is left as it is."""
    end = max(need, min(2 * len(table), limit))
    return [*table, *map(entry, range(len(table), end))]


def _lengths(c: int, size: int) -> list[bytes]:
    table = _LENGTHS.get(c, [])
    if len(table) < size:
        # attributes, key length (-1) and header count: 3 bytes.
        table = _LENGTHS[c] = _extended(
            table,
            size,
            ZIGZAG_TABLE_SIZE,
            lambda vl: b"\x00" + zigzag(3 + c + len(ZIGZAG_BYTES[vl]) + vl),
        )
    return table


def _offsets_null_key(n: int) -> list[bytes]:
    global _OFFSET_NULL_KEY
    table = _OFFSET_NULL_KEY
    if len(table) < n:
        table = _OFFSET_NULL_KEY = _extended(table, n, _COLUMN_LIMIT, lambda i: zigzag(i) + b"\x01")
    return table


def _attributes_delta(span: int) -> list[bytes]:
    global _ATTRIBUTES_DELTA
    table = _ATTRIBUTES_DELTA
    if len(table) <= span:
        table = _ATTRIBUTES_DELTA = _extended(
            table, span + 1, _TWO_BYTES, lambda d: b"\x00" + ZIGZAG_BYTES[d]
        )
    return table


def _delta_size(d: int) -> int:
    """Bytes of the zigzag varint of ``d``, 0 <= d < ZIGZAG_TABLE_SIZE."""
    return 1 if d < _ONE_BYTE else 2 if d < _TWO_BYTES else 3


def _encode_values(values: Sequence[bytes | None], stamps: Sequence[int]) -> tuple[bytes, int, int]:
    """Records section of records with a value, no key and no headers, column-wise.

    Returns (section, first timestamp, last timestamp) in milliseconds.  Each record
    is five pieces of one ``b"".join``: its length (after the previous record's
    header count), attributes and timestamp delta, offset delta and null key, value
    length, value; the pieces of a column are written by slice assignment, without a
    Python-level loop per record.  Optimistic: raises on anything else (a None value,
    a value or batch beyond the tables, timestamps out of order) and the caller falls
    back.

    Timestamps are written by runs of one millisecond when there are few (a busy
    producer's batch), else a delta per record from one list comprehension (records
    spread over time, as a web worker's events at a few hundred a second: a run per
    record would cost a few Python statements each).
    """
    n = len(values)
    lens = list(map(len, values))  # type: ignore[arg-type]  # TypeError for a None value
    longest = max(lens)
    if n > _COLUMN_LIMIT or longest >= ZIGZAG_TABLE_SIZE:
        raise ValueError("beyond the tables")
    # len() is the byte count of bytes only (see _not_bytes): one pass in C, about the
    # cost of the max() above.
    if list(map(type, values)).count(bytes) != n:
        raise TypeError("a value that is not bytes")
    if not isinstance(stamps, list):
        stamps = list(stamps)
    if stamps != sorted(stamps):
        raise ValueError("timestamps out of order")
    out: list[bytes | None] = [None] * (5 * n + 1)
    out[2::5] = _offsets_null_key(n)[:n]
    out[3::5] = map(ZIGZAG_BYTES.__getitem__, lens)
    out[4::5] = values
    size = longest + 1
    base_ms = stamps[0] // _NS_PER_MS
    ms = stamps[-1] // _NS_PER_MS
    span = ms - base_ms
    if span < _TWO_BYTES and span * 16 > n:
        # Many milliseconds for the records: a run each would cost more than a delta
        # per record.  (s - lo) // 1e6 is each record's ms less base_ms, on small ints.
        table = _attributes_delta(span)
        lo = base_ms * _NS_PER_MS
        deltas = [(s - lo) // _NS_PER_MS for s in stamps]
        out[1::5] = map(table.__getitem__, deltas)
        # The record length's table changes where either delta grows a byte: at most
        # five ranges of records (deltas are sorted, as are the offsets).
        cuts = {
            0,
            n,
            min(n, _ONE_BYTE),
            min(n, _TWO_BYTES),
            bisect_left(deltas, _ONE_BYTE),
            bisect_left(deltas, _TWO_BYTES),
        }
        for s, e in pairwise(sorted(cuts)):
            c = _delta_size(deltas[s]) + _delta_size(s)
            out[5 * s : 5 * e : 5] = map(_lengths(c, size).__getitem__, lens[s:e])
    else:
        a = 0
        while a < n:
            run_ms = stamps[a] // _NS_PER_MS
            b = bisect_left(stamps, (run_ms + 1) * _NS_PER_MS, a)
            tsd = encode_varlong(run_ms - base_ms)
            out[5 * a + 1 : 5 * b + 1 : 5] = [b"\x00" + tsd] * (b - a)
            # Offset deltas take 1 byte below 64, 2 below 8192, 3 beyond (zigzag).
            s = a
            while s < b:
                e = b if s >= _TWO_BYTES else min(b, _ONE_BYTE if s < _ONE_BYTE else _TWO_BYTES)
                c = len(tsd) + _delta_size(s)
                out[5 * s : 5 * e : 5] = map(_lengths(c, size).__getitem__, lens[s:e])
                s = e
            a = b
    first = out[0]
    assert first is not None
    out[0] = first[1:]
    out[-1] = b"\x00"
    return b"".join(out), base_ms, ms  # type: ignore[arg-type]


_ATTRIBUTES = struct.Struct(">h")
_CRC = struct.Struct(">I")


def set_producer_state(
    batch: bytes,
    *,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    transactional: bool | None = None,
) -> bytes:
    """Rewrite the producer id, epoch and base sequence of an encoded magic-2 batch."""
    if len(batch) < BATCH_OVERHEAD or batch[MAGIC_OFFSET] != MAGIC_V2:
        raise ValueError("not an encoded magic-2 record batch")
    buf = bytearray(batch)
    try:
        PRODUCER_STATE.pack_into(
            buf, PRODUCER_STATE_OFFSET, producer_id, producer_epoch, base_sequence
        )
    except struct.error as exc:
        raise ValueError(
            f"producer_id={producer_id!r} (int64), producer_epoch={producer_epoch!r} (int16), "
            f"base_sequence={base_sequence!r} (int32): {exc}"
        ) from None
    if transactional is not None:
        (attributes,) = _ATTRIBUTES.unpack_from(buf, ATTRIBUTES_OFFSET)
        attributes = (
            attributes | ATTR_TRANSACTIONAL if transactional else attributes & ~ATTR_TRANSACTIONAL
        )
        _ATTRIBUTES.pack_into(buf, ATTRIBUTES_OFFSET, attributes)
    _CRC.pack_into(buf, CRC_OFFSET, crc32c(memoryview(buf)[ATTRIBUTES_OFFSET:]))
    return bytes(buf)
