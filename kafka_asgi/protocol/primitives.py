"""Kafka's primitive wire types: fixed-width integers, varints, strings, bytes, arrays, UUIDs.

Two string/bytes/array encodings exist (protocol guide, "Protocol Primitive Types"):
the classic one with an int16/int32 length prefix, and the compact one of flexible
versions (KIP-482) whose length is an unsigned varint holding ``length + 1`` so that
0 can mean null.

Reading goes through :class:`Reader`, which raises :class:`ProtocolError` for every
malformed or truncated input. Writing is done with module-level functions that return
``bytes`` (or append to a ``list[bytes]``) so the generated message code can build a
request with a single ``b"".join``.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kafka_asgi.protocol.errors import EncodeError, ProtocolError
from kafka_asgi.protocol.varint import (
    MAX_VARINT_BYTES,
    MAX_VARLONG_BYTES,
    encode_uvarint,
    encode_varint,
    encode_varlong,
    read_uvarint,
    uvarint_size,
)

__all__ = [
    "ZERO_UUID",
    "EncodeError",
    "Reader",
    "encode_compact_nullable_string",
    "encode_compact_string",
    "encode_nullable_string",
    "encode_string",
    "encode_uvarint",
    "encode_varint",
    "encode_varlong",
    "pack_bool",
    "pack_float64",
    "pack_int8",
    "pack_int16",
    "pack_int32",
    "pack_int64",
    "pack_uint16",
    "pack_uint32",
    "uvarint_size",
    "write_bytes",
    "write_compact_bytes",
    "write_compact_nullable_bytes",
    "write_nullable_bytes",
]


ZERO_UUID = uuid.UUID(int=0)

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")

pack_int8 = _I8.pack
pack_int16 = _I16.pack
pack_int32 = _I32.pack
pack_int64 = _I64.pack
pack_uint16 = _U16.pack
pack_uint32 = _U32.pack
pack_float64 = _F64.pack

_TRUE = b"\x01"
_FALSE = b"\x00"
ZERO_BYTE = b"\x00"
NULL_INT16 = b"\xff\xff"
NULL_INT32 = b"\xff\xff\xff\xff"

_INT16_MAX = 0x7FFF
_INT32_MAX = 0x7FFFFFFF
_UINT32_MAX = 0xFFFFFFFF
_UINT64_MAX = 0xFFFFFFFFFFFFFFFF


def pack_bool(value: bool) -> bytes:
    return _TRUE if value else _FALSE


def _utf8(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodeError(f"string is not encodable as UTF-8: {value!r}") from exc


def encode_string(value: str) -> bytes:
    """Classic STRING: int16 length then UTF-8 bytes."""
    data = _utf8(value)
    if len(data) > _INT16_MAX:
        raise EncodeError(f"string of {len(data)} bytes exceeds the 32767-byte limit")
    return _I16.pack(len(data)) + data


def encode_nullable_string(value: str | None) -> bytes:
    """Classic NULLABLE_STRING: length -1 for null."""
    if value is None:
        return NULL_INT16
    return encode_string(value)


def encode_compact_string(value: str) -> bytes:
    """COMPACT_STRING: unsigned varint ``length + 1`` then UTF-8 bytes."""
    data = _utf8(value)
    if len(data) > _INT16_MAX:
        # Kafka limits compact strings to the same 32767 bytes as classic ones.
        raise EncodeError(f"string of {len(data)} bytes exceeds the 32767-byte limit")
    return encode_uvarint(len(data) + 1) + data


def encode_compact_nullable_string(value: str | None) -> bytes:
    """COMPACT_NULLABLE_STRING: 0 for null."""
    if value is None:
        return _FALSE
    return encode_compact_string(value)


def _check_bytes(value: bytes) -> int:
    size = len(value)
    if size > _INT32_MAX:
        raise EncodeError(f"byte string of {size} bytes exceeds the int32 length prefix")
    return size


def write_bytes(out: list[bytes], value: bytes) -> None:
    """Classic BYTES (int32 length); the payload is appended as is, never copied here."""
    out.append(_I32.pack(_check_bytes(value)))
    out.append(value)


def write_nullable_bytes(out: list[bytes], value: bytes | None) -> None:
    if value is None:
        out.append(NULL_INT32)
    else:
        write_bytes(out, value)


def write_compact_bytes(out: list[bytes], value: bytes) -> None:
    out.append(encode_uvarint(_check_bytes(value) + 1))
    out.append(value)


def write_compact_nullable_bytes(out: list[bytes], value: bytes | None) -> None:
    if value is None:
        out.append(_FALSE)
    else:
        write_compact_bytes(out, value)


def pack_int32_array(values: Sequence[int]) -> bytes:
    """The elements of an int32 array, without its length."""
    return struct.pack(f">{len(values)}i", *values)


def pack_int64_array(values: Sequence[int]) -> bytes:
    return struct.pack(f">{len(values)}q", *values)


def pack_int16_array(values: Sequence[int]) -> bytes:
    return struct.pack(f">{len(values)}h", *values)


def pack_int8_array(values: Sequence[int]) -> bytes:
    return struct.pack(f">{len(values)}b", *values)


_T = TypeVar("_T")


class Reader:
    """Cursor over a bytes-like object; every read either succeeds or raises ProtocolError.

    ``pos`` is the absolute offset of the next byte to read.
    """

    __slots__ = ("_buf", "_end", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        if isinstance(data, memoryview) and (data.ndim != 1 or data.itemsize != 1):
            data = data.cast("B")
        self._buf = data
        self._end = len(data)
        if not 0 <= pos <= self._end:
            raise ProtocolError(f"start offset {pos} outside a buffer of {self._end} bytes")
        self.pos = pos

    @property
    def remaining(self) -> int:
        return self._end - self.pos

    def _truncated(self, what: str, need: int) -> ProtocolError:
        return ProtocolError(
            f"truncated data: {what} needs {need} bytes at offset {self.pos}, "
            f"{self._end - self.pos} left"
        )

    def _take(self, size: int, what: str) -> int:
        """Advance over ``size`` bytes and return the start offset."""
        start = self.pos
        end = start + size
        if end > self._end:
            raise self._truncated(what, size)
        self.pos = end
        return start

    # -- fixed width -------------------------------------------------------------------

    def int8(self) -> int:
        pos = self.pos
        try:
            (value,) = _I8.unpack_from(self._buf, pos)
        except struct.error:
            raise self._truncated("int8", 1) from None
        self.pos = pos + 1
        return int(value)

    def int16(self) -> int:
        pos = self.pos
        try:
            (value,) = _I16.unpack_from(self._buf, pos)
        except struct.error:
            raise self._truncated("int16", 2) from None
        self.pos = pos + 2
        return int(value)

    def int32(self) -> int:
        pos = self.pos
        try:
            (value,) = _I32.unpack_from(self._buf, pos)
        except struct.error:
            raise self._truncated("int32", 4) from None
        self.pos = pos + 4
        return int(value)

    def int64(self) -> int:
        pos = self.pos
        try:
            (value,) = _I64.unpack_from(self._buf, pos)
        except struct.error:
            raise self._truncated("int64", 8) from None
        self.pos = pos + 8
        return int(value)

    def uint16(self) -> int:
        pos = self.pos
        try:
            (value,) = _U16.unpack_from(self._buf, pos)
        except struct.error:
            raise self._truncated("uint16", 2) from None
        self.pos = pos + 2
        return int(value)

    def uint32(self) -> int:
        pos = self.pos
        try:
            (value,) = _U32.unpack_from(self._buf, pos)
        except struct.error:
            raise self._truncated("uint32", 4) from None
        self.pos = pos + 4
        return int(value)

    def float64(self) -> float:
        pos = self.pos
        try:
            (value,) = _F64.unpack_from(self._buf, pos)
        except struct.error:
            raise self._truncated("float64", 8) from None
        self.pos = pos + 8
        return float(value)

    def boolean(self) -> bool:
        pos = self.pos
        if pos >= self._end:
            raise self._truncated("boolean", 1)
        self.pos = pos + 1
        # Any non-zero byte reads as true (protocol guide, BOOLEAN).
        return self._buf[pos] != 0

    def fixed(self, codec: struct.Struct) -> tuple[Any, ...]:
        """Several consecutive fixed-width fields read by one precompiled Struct."""
        pos = self.pos
        try:
            values = codec.unpack_from(self._buf, pos)
        except struct.error:
            raise self._truncated(f"fields {codec.format!r}", codec.size) from None
        self.pos = pos + codec.size
        return values

    def uuid(self) -> uuid.UUID:
        start = self._take(16, "uuid")
        return uuid.UUID(bytes=bytes(self._buf[start : start + 16]))

    def raw(self, size: int) -> bytes:
        """The next ``size`` bytes, copied."""
        if size < 0:
            raise ProtocolError(f"negative length {size} at offset {self.pos}")
        start = self._take(size, "raw bytes")
        return bytes(self._buf[start : start + size])

    def skip(self, size: int) -> None:
        if size < 0:
            raise ProtocolError(f"negative length {size} at offset {self.pos}")
        self._take(size, "skipped field")

    # -- varints -----------------------------------------------------------------------

    def _uvarint(self, max_bytes: int, what: str) -> int:
        try:
            value, self.pos = read_uvarint(self._buf, self.pos, max_bytes)
        except IndexError:
            raise ProtocolError(f"truncated {what} at offset {self.pos}") from None
        except ProtocolError:
            raise ProtocolError(
                f"{what} longer than {max_bytes} bytes at offset {self.pos}"
            ) from None
        return value

    def uvarint(self) -> int:
        """Unsigned varint of at most 32 bits (lengths, tags, tag counts)."""
        pos = self.pos
        if pos < self._end:
            byte = self._buf[pos]
            if byte < 0x80:
                self.pos = pos + 1
                return byte
        value = self._uvarint(MAX_VARINT_BYTES, "unsigned varint")
        if value > _UINT32_MAX:
            raise ProtocolError(f"unsigned varint {value} exceeds 32 bits")
        return value

    def uvarlong(self) -> int:
        return self._uvarint(MAX_VARLONG_BYTES, "unsigned varlong")

    def varint(self) -> int:
        value = self._uvarint(MAX_VARINT_BYTES, "varint")
        if value > _UINT32_MAX:
            raise ProtocolError(f"varint {value} exceeds 32 bits")
        return (value >> 1) ^ -(value & 1)

    def varlong(self) -> int:
        value = self._uvarint(MAX_VARLONG_BYTES, "varlong")
        if value > _UINT64_MAX:
            raise ProtocolError(f"varlong {value} exceeds 64 bits")
        return (value >> 1) ^ -(value & 1)

    # -- strings -----------------------------------------------------------------------

    def _text(self, size: int) -> str:
        start = self._take(size, "string")
        try:
            return str(self._buf[start : start + size], "utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"string at offset {start} is not valid UTF-8") from exc

    def string(self) -> str:
        size = self.int16()
        if size < 0:
            raise ProtocolError(f"null or negative length {size} for a non-nullable string")
        return self._text(size)

    def nullable_string(self) -> str | None:
        size = self.int16()
        if size == -1:
            return None
        if size < 0:
            raise ProtocolError(f"negative string length {size}")
        return self._text(size)

    def compact_string(self) -> str:
        size = self.uvarint() - 1
        if size < 0:
            raise ProtocolError("null for a non-nullable compact string")
        return self._text(size)

    def compact_nullable_string(self) -> str | None:
        size = self.uvarint() - 1
        if size < 0:
            return None
        return self._text(size)

    # -- bytes -------------------------------------------------------------------------

    def bytes_(self) -> bytes:
        size = self.int32()
        if size < 0:
            raise ProtocolError(f"null or negative length {size} for non-nullable bytes")
        return self.raw(size)

    def nullable_bytes(self) -> bytes | None:
        size = self.int32()
        if size == -1:
            return None
        if size < 0:
            raise ProtocolError(f"negative bytes length {size}")
        return self.raw(size)

    def compact_bytes(self) -> bytes:
        size = self.uvarint() - 1
        if size < 0:
            raise ProtocolError("null for non-nullable compact bytes")
        return self.raw(size)

    def compact_nullable_bytes(self) -> bytes | None:
        size = self.uvarint() - 1
        if size < 0:
            return None
        return self.raw(size)

    # -- arrays ------------------------------------------------------------------------

    def _check_count(self, count: int, min_element_size: int) -> int:
        # Refuse counts the remaining bytes cannot possibly hold: a forged length must
        # not make a decoder loop (or allocate) for billions of elements.
        if count * min_element_size > self._end - self.pos:
            raise ProtocolError(
                f"array of {count} elements cannot fit in the {self._end - self.pos} "
                f"bytes left at offset {self.pos}"
            )
        return count

    def array_length(self, min_element_size: int = 1) -> int:
        count = self.int32()
        if count < 0:
            raise ProtocolError(f"null or negative length {count} for a non-nullable array")
        return self._check_count(count, min_element_size)

    def nullable_array_length(self, min_element_size: int = 1) -> int:
        """The element count, or -1 for a null array."""
        count = self.int32()
        if count == -1:
            return -1
        if count < 0:
            raise ProtocolError(f"negative array length {count}")
        return self._check_count(count, min_element_size)

    def compact_array_length(self, min_element_size: int = 1) -> int:
        count = self.uvarint() - 1
        if count < 0:
            raise ProtocolError("null for a non-nullable compact array")
        return self._check_count(count, min_element_size)

    def compact_nullable_array_length(self, min_element_size: int = 1) -> int:
        """The element count, or -1 for a null array."""
        count = self.uvarint() - 1
        if count < 0:
            return -1
        return self._check_count(count, min_element_size)

    def _fixed_array(self, count: int, code: str, size: int) -> list[int]:
        start = self._take(count * size, "array")
        return list(struct.unpack_from(f">{count}{code}", self._buf, start))

    def int8_array(self, count: int) -> list[int]:
        return self._fixed_array(count, "b", 1)

    def int16_array(self, count: int) -> list[int]:
        return self._fixed_array(count, "h", 2)

    def int32_array(self, count: int) -> list[int]:
        return self._fixed_array(count, "i", 4)

    def int64_array(self, count: int) -> list[int]:
        return self._fixed_array(count, "q", 8)

    def items(self, read: Callable[[Reader, int], _T], version: int, count: int) -> list[_T]:
        """``count`` consecutive structs, each parsed by ``read(reader, version)``."""
        return [read(self, version) for _ in range(count)]

    def nullable_items(
        self, read: Callable[[Reader, int], _T], version: int, count: int
    ) -> list[_T] | None:
        """Like :meth:`items`, with a count of -1 meaning a null array."""
        if count < 0:
            return None
        return [read(self, version) for _ in range(count)]

    # -- tagged fields (KIP-482) -------------------------------------------------------

    def tag_count(self) -> int:
        # Each tagged field takes at least two bytes (tag and size).
        return self._check_count(self.uvarint(), 2)

    def tag_header(self) -> tuple[int, int]:
        """The next tag number and its payload size."""
        tag = self.uvarint()
        size = self.uvarint()
        if size > self._end - self.pos:
            raise self._truncated(f"tagged field {tag}", size)
        return tag, size

    def expect_end(self, end: int, what: str) -> None:
        """Check that a length-delimited item ended exactly where its length said."""
        if self.pos != end:
            raise ProtocolError(
                f"{what}: declared size ends at offset {end} but its content ended at {self.pos}"
            )

    def skip_tagged_fields(self) -> None:
        for _ in range(self.tag_count()):
            _tag, size = self.tag_header()
            self.pos += size
