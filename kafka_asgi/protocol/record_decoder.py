"""Decoding record batches: magic 2 here, magic 0 and 1 in :mod:`.legacy`.

See :mod:`kafka_asgi.protocol.records` for the API; the layout is in
:mod:`kafka_asgi.protocol.record_batch`.  The record loop decodes the common one-
and two-byte varints inline by table lookup: this is the consumer's hot path.
"""

from __future__ import annotations

import struct

from kafka_asgi.protocol.compression import (
    MAX_DECOMPRESSED_SIZE,
    decompress,
    decompress_within,
)
from kafka_asgi.protocol.crc import crc32c
from kafka_asgi.protocol.errors import KafkaError, ProtocolError
from kafka_asgi.protocol.legacy import LEGACY_MIN_SIZE, decode_legacy
from kafka_asgi.protocol.record_batch import (
    ATTR_CODEC_MASK,
    ATTR_CONTROL,
    ATTR_TIMESTAMP_TYPE,
    ATTRIBUTES_OFFSET,
    BATCH_HEADER,
    BATCH_OVERHEAD,
    CONTROL_KEY,
    DECODED_HEADER_OVERHEAD,
    DECODED_RECORD_OVERHEAD,
    HEAD,
    LAST_OFFSET_DELTA_OFFSET,
    LOG_OVERHEAD,
    LOG_OVERHEAD_SIZE,
    MAGIC_OFFSET,
    MAGIC_V2,
    NO_HEADERS,
    ControlType,
    DecodedBatches,
    Header,
    Record,
    RecordBatch,
)
from kafka_asgi.protocol.varint import (
    MAX_VARINT_BYTES,
    MAX_VARLONG_BYTES,
    UNZIGZAG_1,
    UNZIGZAG_2,
    read_zigzag,
)

__all__ = [
    "DECODED_HEADER_OVERHEAD",
    "DECODED_RECORD_OVERHEAD",
    "decode_batches",
    "first_batch_compressed",
]

_INT32 = struct.Struct(">i")


class _OverBudget(Exception):
    """A record's headers would take its batch past what it may cost: raised from the
    record loop before they are built, and caught in ``_decode_v2``."""

    def __init__(self, count: int) -> None:
        self.count = count


def decode_batches(
    data: bytes | bytearray | memoryview,
    *,
    verify_crc: bool = True,
    max_decompressed_size: int = MAX_DECOMPRESSED_SIZE,
    max_total_size: int | None = None,
    fetch_offset: int = -1,
    always_decode_first: bool = True,
) -> DecodedBatches:
    """Decode every complete batch in ``data`` (see the module docstring).

    A record costs its bytes (decompressed) plus ``DECODED_RECORD_OVERHEAD``, and
    ``DECODED_HEADER_OVERHEAD`` for each of its headers. One
    batch may cost ``max_decompressed_size``: a batch whose records would cost more
    is decoded in part, as many records as fit (at least one) from its first at or
    after ``fetch_offset``; its ``resume_offset`` is the first record left out, and
    decoding stops there (``DecodedBatches.limited``). A record whose headers alone
    would cost more than ``max_decompressed_size`` can never be returned: it raises
    ProtocolError.

    With ``max_total_size``, the first batch is decoded as above, and each batch
    after it only if its records cost no more than what is left of
    ``max_total_size``: it is decompressed no further than that, and when it would
    cost more, it and the rest are left out (``DecodedBatches.limited``), to be read
    from the next offset. ``always_decode_first=False`` holds the first batch to
    ``max_total_size`` too (a later partition of a response whose budget another
    partition has begun to spend).

    With a ``fetch_offset`` of 0 or more, a batch that ends before it is stepped over,
    neither decoded nor counted (``DecodedBatches.skipped``); its CRC is still checked."""
    buf = data if isinstance(data, bytes) else bytes(data)
    result = DecodedBatches()
    pos = 0
    end = len(buf)
    spent = [0]
    try:
        while pos < end:
            # What the next batch may cost: None for the first one, decoded whatever
            # it costs (up to max_decompressed_size) so that a fetch moves on.
            room = None
            if max_total_size is not None and (result or not always_decode_first):
                room = min(max_total_size - spent[0], max_decompressed_size)
                if room <= 0:
                    result.limited = True
                    break
            if end - pos < LOG_OVERHEAD_SIZE:
                result.truncated = True
                result.remainder = end - pos
                break
            _, length = LOG_OVERHEAD.unpack_from(buf, pos)
            if length < LEGACY_MIN_SIZE[0]:
                raise ProtocolError(f"record batch at byte {pos}: invalid length {length}")
            batch_end = pos + LOG_OVERHEAD_SIZE + length
            if batch_end > end:
                result.truncated = True
                result.remainder = end - pos
                break
            magic = buf[pos + MAGIC_OFFSET]
            if fetch_offset >= 0 and _ends_before(buf, pos, batch_end, magic, fetch_offset):
                # Its records would all be dropped: it is neither decoded nor counted,
                # nor the first batch. A broker returns the batch holding the fetch
                # offset first; one before it is old data a broker should not send.
                # Its lastOffsetDelta is under the CRC: a damaged one is reported,
                # not taken for an old batch, and the records with it.
                if verify_crc and magic == MAGIC_V2:
                    _verify_crc(buf, pos, batch_end)
                result.skipped += 1
                pos = batch_end
                continue
            if magic == MAGIC_V2:
                decode = _decode_v2
            elif magic == 0 or magic == 1:
                decode = decode_legacy
            else:
                raise ProtocolError(f"record batch at byte {pos}: unknown magic {magic}")
            decoded = decode(
                buf,
                pos,
                batch_end,
                verify_crc,
                max_decompressed_size,
                spent,
                fetch_offset,
                room,
            )
            if decoded is None:
                result.limited = True
                break
            result.append(decoded)
            if decoded.resume_offset is not None:
                result.limited = True
                break
            pos = batch_end
    except ProtocolError:
        raise
    except KafkaError as exc:
        # e.g. UnsupportedCodecError: a batch we cannot read is still data we
        # could not decode; keep the message that names the extra to install.
        raise ProtocolError(str(exc)) from exc
    except (IndexError, struct.error, ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise ProtocolError(f"malformed record batch at byte {pos}: {exc}") from None
    result.size = spent[0]
    return result


# Where a legacy (magic 0/1) message's int8 attributes are: offset, size, crc, magic.
_LEGACY_ATTRIBUTES_OFFSET = MAGIC_OFFSET + 1


def first_batch_compressed(data: bytes | bytearray | memoryview) -> bool:
    """Whether the first batch (or legacy message) in ``data`` is compressed, by its
    attributes; False when ``data`` is too short to tell.  A producer compresses its
    batches alike, so this usually says how the rest of ``data`` is compressed too
    (not always: several producers may write a partition, with different codecs)."""
    if len(data) <= ATTRIBUTES_OFFSET + 1:
        return False
    magic = data[MAGIC_OFFSET]
    if magic == MAGIC_V2:
        # The int16 attributes, big-endian: the codec is in the low byte.
        return bool(data[ATTRIBUTES_OFFSET + 1] & ATTR_CODEC_MASK)
    if magic == 0 or magic == 1:
        return bool(data[_LEGACY_ATTRIBUTES_OFFSET] & ATTR_CODEC_MASK)
    return False


def _ends_before(buf: bytes, pos: int, end: int, magic: int, offset: int) -> bool:
    """Whether the batch or legacy message in ``buf[pos:end]`` ends before ``offset``,
    by its header: a magic-2 batch's base offset plus lastOffsetDelta, a legacy
    message's own offset (a compressed one's is its last inner message's, as Kafka's
    ``AbstractLegacyRecordBatch.lastOffset()`` reads it). Not for a batch too short
    for its header or of an unknown magic: the decoder reports those."""
    (last, _) = LOG_OVERHEAD.unpack_from(buf, pos)
    if magic == MAGIC_V2:
        if end - pos < BATCH_OVERHEAD:
            return False
        (delta,) = _INT32.unpack_from(buf, pos + LAST_OFFSET_DELTA_OFFSET)
        last += delta
    elif magic != 0 and magic != 1:
        return False
    return bool(last < offset)


def _verify_crc(buf: bytes, pos: int, end: int) -> None:
    """Check the CRC-32C of the magic-2 batch in ``buf[pos:end]`` (at least its header)."""
    base_offset, _, _, _, crc = HEAD.unpack_from(buf, pos)
    actual = crc32c(memoryview(buf)[pos + ATTRIBUTES_OFFSET : end])
    if actual != crc:
        raise ProtocolError(
            f"record batch at offset {base_offset}: CRC-32C mismatch "
            f"(stored {crc:#010x}, computed {actual:#010x})"
        )


def _decode_v2(
    buf: bytes,
    pos: int,
    end: int,
    verify_crc: bool,
    max_size: int,
    spent: list[int],
    fetch_offset: int,
    room: int | None,
) -> RecordBatch | None:
    """The batch in ``buf[pos:end]``, in part when its records would cost more than
    ``max_size`` (see decode_batches); adds what they cost to ``spent[0]``. With
    ``room``, the whole batch or None, when its records would cost more than that."""
    if end - pos < BATCH_OVERHEAD:
        raise ProtocolError(
            f"record batch at byte {pos}: length {end - pos - LOG_OVERHEAD_SIZE} too small"
        )
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
    ) = BATCH_HEADER.unpack_from(buf, pos)
    if verify_crc:
        _verify_crc(buf, pos, end)
    if count < 0:
        raise ProtocolError(f"record batch at offset {base_offset}: negative record count {count}")
    codec = attributes & ATTR_CODEC_MASK
    start = pos + BATCH_OVERHEAD
    if room is not None:
        # Its records' objects first (the count is in the header): what is left bounds
        # the section, and a compressed one is inflated no further than that.
        room -= count * DECODED_RECORD_OVERHEAD
        if room < 0 or (not codec and end - start > room):
            return None
    if codec:
        if room is None:
            body = decompress(codec, buf[start:end], max_size)
        else:
            inflated = decompress_within(codec, buf[start:end], room)
            if inflated is None:
                return None
            body = inflated
        start = 0
        body_end = len(body)
    else:
        body = buf
        body_end = end
    log_append = attributes & ATTR_TIMESTAMP_TYPE
    ts = max_ts if log_append else base_ts
    section = body_end - start
    resume_offset = None
    # Headers are counted as they come (a record's count is read before any of them is
    # built): the objects they become are tens of times their bytes.
    if room is None:
        # One bound for a batch, the records section and the objects its records and
        # their headers become: the section is within it (decompress), and as many
        # records as fit in the rest.
        budget = max_size - section
        records: list[Record] | None = None
        if count <= max(1, budget // DECODED_RECORD_OVERHEAD):
            allowed = max(0, budget - count * DECODED_RECORD_OVERHEAD) // DECODED_HEADER_OVERHEAD
            try:
                records, headers = _decode_records(
                    body, start, body_end, count, base_offset, ts, not log_append, allowed
                )
            except _OverBudget:
                pass  # decoded again in part, as far as the headers leave room
        if records is None:
            records, resume_offset, headers = _decode_records_from(
                body,
                start,
                body_end,
                count,
                base_offset,
                ts,
                not log_append,
                fetch_offset,
                budget,
                max_size // DECODED_HEADER_OVERHEAD,
            )
    else:
        # ``room`` is what is left past the records' objects and their section.
        try:
            records, headers = _decode_records(
                body,
                start,
                body_end,
                count,
                base_offset,
                ts,
                not log_append,
                (room - section) // DECODED_HEADER_OVERHEAD,
            )
        except _OverBudget:
            return None
    spent[0] += section + len(records) * DECODED_RECORD_OVERHEAD + headers * DECODED_HEADER_OVERHEAD
    if records and records[-1].offset > base_offset + last_offset_delta:
        # Past the batch's own end: a consumer moves on from that end and would get
        # those offsets again from the next batch.
        raise ProtocolError(
            f"record batch at offset {base_offset}: record offset {records[-1].offset} past"
            f" the batch's last offset {base_offset + last_offset_delta}"
        )
    control_type = None
    # A control batch with no record is no marker: the log cleaner keeps an emptied
    # batch's header (its producer's last one, for the producer state), so a compacted
    # transactional topic holds them. It yields nothing and is stepped over, as Java's
    # consumer does.
    if attributes & ATTR_CONTROL and records:
        if records[0].key is None or len(records[0].key) < CONTROL_KEY.size:
            raise ProtocolError(f"control batch at offset {base_offset} has no valid control key")
        _, control_type = CONTROL_KEY.unpack_from(records[0].key)
        if control_type in (ControlType.ABORT, ControlType.COMMIT):
            control_type = ControlType(control_type)
    return RecordBatch(
        base_offset,
        leader_epoch,
        MAGIC_V2,
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
        resume_offset,
    )


def _decode_records(
    data: bytes,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_ts: int,
    add_delta: bool,
    allowed: int,
) -> tuple[list[Record], int]:
    """Decode ``count`` records filling exactly data[pos:end], and how many headers
    they hold: at most ``allowed``, else _OverBudget is raised before the headers of
    the record that would pass it are built.

    With ``add_delta`` False (log-append time), every record's timestamp is
    ``base_ts``: the broker then sets the batch's max timestamp and readers use
    it for all records.
    """
    left = allowed
    unzig = UNZIGZAG_1
    unzig2 = UNZIGZAG_2
    read = read_zigzag
    no_headers = NO_HEADERS
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
            rlen, pos = read(data, pos, MAX_VARINT_BYTES)
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
            ts, pos = read(data, pos, MAX_VARLONG_BYTES)
        b = data[pos]
        if b < 0x80:
            offset_delta = unzig[b]
            pos += 1
        elif data[pos + 1] < 0x80:
            offset_delta = unzig2[(b & 0x7F) | (data[pos + 1] << 7)]
            pos += 2
        else:
            offset_delta, pos = read(data, pos, MAX_VARINT_BYTES)
        b = data[pos]
        if b < 0x80:
            n = unzig[b]
            pos += 1
        elif data[pos + 1] < 0x80:
            n = unzig2[(b & 0x7F) | (data[pos + 1] << 7)]
            pos += 2
        else:
            n, pos = read(data, pos, MAX_VARINT_BYTES)
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
            n, pos = read(data, pos, MAX_VARINT_BYTES)
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
            headers, pos = _decode_headers(data, pos, rend, left)
            left -= len(headers)
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
    return records, allowed - left


def _decode_records_from(
    data: bytes,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_ts: int,
    add_delta: bool,
    first_offset: int,
    budget: int,
    max_headers: int,
) -> tuple[list[Record], int | None, int]:
    """The ``count`` records filling data[pos:end] that ``budget`` bytes hold (each
    costing DECODED_RECORD_OVERHEAD and DECODED_HEADER_OVERHEAD a header; the first
    whatever it costs), from the first at or after ``first_offset``; the offset of the
    first record left out after them (None when they reach the end), and how many
    headers they hold. The records before ``first_offset`` are stepped over by their
    length, not built: a fetch that resumes inside a batch gets the whole batch again
    (KIP-74 returns whole batches). A first record of more than ``max_headers``
    headers raises ProtocolError: no fetch could return it."""
    records: list[Record] = []
    headers = 0
    left = budget
    previous = base_offset - 1
    for _ in range(count):
        rlen, rstart = read_zigzag(data, pos, MAX_VARINT_BYTES)
        rend = rstart + rlen
        if rlen <= 0 or rend > end:
            raise ProtocolError(f"record length {rlen} exceeds its batch")
        _, p = read_zigzag(data, rstart + 1, MAX_VARLONG_BYTES)  # attributes, timestamp
        offset_delta, _ = read_zigzag(data, p, MAX_VARINT_BYTES)
        offset = base_offset + offset_delta
        # Where the next fetch resumes must be past every record returned.
        if offset <= previous:
            raise ProtocolError(
                f"record batch at offset {base_offset}: record offset {offset} after {previous}"
            )
        previous = offset
        if offset >= first_offset:
            if not records:
                allowed = max_headers
            elif left < DECODED_RECORD_OVERHEAD:
                return records, offset, headers
            else:
                allowed = (left - DECODED_RECORD_OVERHEAD) // DECODED_HEADER_OVERHEAD
            try:
                one, n = _decode_records(
                    data, pos, rend, 1, base_offset, base_ts, add_delta, allowed
                )
            except _OverBudget as exc:
                if records:
                    return records, offset, headers
                raise ProtocolError(
                    f"record batch at offset {base_offset}: record {offset} has {exc.count} "
                    f"headers, more than a batch may decode to ({max_headers})"
                ) from None
            records += one
            headers += n
            left -= DECODED_RECORD_OVERHEAD + n * DECODED_HEADER_OVERHEAD
        pos = rend
    if pos != end:
        raise ProtocolError(f"{end - pos} bytes left after the {count} records of the batch")
    return records, None, headers


def _decode_headers(
    data: bytes, pos: int, end: int, allowed: int
) -> tuple[tuple[Header, ...], int]:
    """The headers of the record ending at ``end``: each field is checked against
    the record's end, not the buffer's, and the count against what the record can
    hold, so a record cannot make more of them than its own bytes describe, then
    against ``allowed`` (_OverBudget), before any is built."""
    count, pos = read_zigzag(data, pos, MAX_VARINT_BYTES)
    if count < 0:
        raise ProtocolError(f"negative header count {count}")
    # A header takes at least two bytes (an empty key's length, a null value's).
    if count > (end - pos) // 2:
        raise ProtocolError(f"header count {count} exceeds the record")
    if count > allowed:
        raise _OverBudget(count)
    headers = []
    for _ in range(count):
        n, pos = read_zigzag(data, pos, MAX_VARINT_BYTES)
        if n < 0 or pos + n > end:
            raise ProtocolError(f"invalid header key length {n}")
        hk = data[pos : pos + n].decode()
        pos += n
        n, pos = read_zigzag(data, pos, MAX_VARINT_BYTES)
        if n < 0:
            if n != -1:
                raise ProtocolError(f"negative header value length {n}")
            hv = None
        else:
            if pos + n > end:
                raise ProtocolError(f"header value length {n} exceeds the record")
            hv = data[pos : pos + n]
            pos += n
        headers.append((hk, hv))
    return tuple(headers), pos
