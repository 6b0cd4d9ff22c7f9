"""Variable-length integers: Kafka's one implementation of them.

Two kinds (protocol guide, "Protocol Primitive Types"): the unsigned varint of
flexible versions (KIP-482: compact lengths, tag counts, tags) and the signed,
zigzag-encoded varint/varlong of record batches (record fields and headers),
both in protobuf's base-128 layout: 7 bits a byte, low bits first, the high bit
set on every byte but the last.  Zigzag maps 0, -1, 1, -2, ... to 0, 1, 2, 3, ...
so that small negative numbers stay short.

The record encoder and decoder are the hot path, so the common small values go
through tables: ``ZIGZAG_BYTES[n]`` is the encoding of ``n`` for 0 <= n <
``ZIGZAG_TABLE_SIZE`` (every length of a short key, value or record, every offset
delta of a batch of up to that many records), and ``UNZIGZAG_1``/``UNZIGZAG_2``
decode one- and two-byte encodings.
"""

from __future__ import annotations

from kafka_asgi.protocol.errors import EncodeError, ProtocolError

__all__ = [
    "UNZIGZAG_1",
    "UNZIGZAG_2",
    "ZIGZAG_BYTES",
    "ZIGZAG_TABLE_SIZE",
    "encode_uvarint",
    "encode_varint",
    "encode_varlong",
    "read_uvarint",
    "read_zigzag",
    "uvarint_size",
    "zigzag",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1

# Bytes a varint of 32 / 64 bits takes at most (7 payload bits a byte).
MAX_VARINT_BYTES = 5
MAX_VARLONG_BYTES = 10


def _base128(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def zigzag(n: int) -> bytes:
    """The zigzag varint of a 64-bit signed ``n``, unchecked (the caller checked the
    range).  For an ``n`` in the int32 range it is also the 32-bit varint's encoding."""
    return _base128((n << 1) ^ (n >> 63))


# Tables for the hot path (see the module docstring): 2**14 entries, the values
# whose zigzag encoding takes at most two bytes... and some more.
ZIGZAG_TABLE_SIZE = 1 << 14
ZIGZAG_BYTES: list[bytes] = [zigzag(n) for n in range(ZIGZAG_TABLE_SIZE)]
# Decoding of a one-byte encoding, indexed by that byte (< 0x80).
UNZIGZAG_1: list[int] = [(b >> 1) ^ -(b & 1) for b in range(0x80)]
# Decoding of a two-byte encoding, indexed by its 14 payload bits.
UNZIGZAG_2: list[int] = [(z >> 1) ^ -(z & 1) for z in range(1 << 14)]

# One-byte unsigned varints are by far the most common (lengths, tag counts).
_SMALL_UVARINT = tuple(bytes((i,)) for i in range(0x80))


def encode_uvarint(value: int) -> bytes:
    """Unsigned varint (protobuf base-128) of a value in 0 .. 2**64-1."""
    if 0 <= value < 0x80:
        return _SMALL_UVARINT[value]
    if value < 0 or value > UINT64_MAX:
        raise EncodeError(f"unsigned varint out of range: {value!r}")
    return _base128(value)


def uvarint_size(value: int) -> int:
    """Number of bytes :func:`encode_uvarint` produces for ``value``."""
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def encode_varint(value: int) -> bytes:
    """Signed 32-bit varint, zigzag encoded (record fields, header counts and lengths)."""
    if 0 <= value < ZIGZAG_TABLE_SIZE:
        return ZIGZAG_BYTES[value]
    if not INT32_MIN <= value <= INT32_MAX:
        raise EncodeError(f"varint out of int32 range: {value!r}")
    return zigzag(value)


def encode_varlong(value: int) -> bytes:
    """Signed 64-bit varint, zigzag encoded (a record's timestamp delta)."""
    if 0 <= value < ZIGZAG_TABLE_SIZE:
        return ZIGZAG_BYTES[value]
    if not INT64_MIN <= value <= INT64_MAX:
        raise EncodeError(f"varlong out of int64 range: {value!r}")
    return zigzag(value)


def read_uvarint(data: bytes | bytearray | memoryview, pos: int, max_bytes: int) -> tuple[int, int]:
    """Unsigned varint at ``pos`` -> (value, next position).

    Raises IndexError when ``data`` ends first (the caller says what was cut) and
    ProtocolError when it runs longer than ``max_bytes``.
    """
    result = 0
    shift = 0
    for _ in range(max_bytes):
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise ProtocolError(f"varint longer than {max_bytes} bytes")


def read_zigzag(
    data: bytes | bytearray | memoryview, pos: int, max_bytes: int = MAX_VARLONG_BYTES
) -> tuple[int, int]:
    """Zigzag varint at ``pos`` -> (value, next position); see :func:`read_uvarint`."""
    z, pos = read_uvarint(data, pos, max_bytes)
    return (z >> 1) ^ -(z & 1), pos
