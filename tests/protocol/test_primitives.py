"""Wire primitives: known encodings from the protocol guide, round trips, bad input."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafka_asgi.protocol.errors import EncodeError, ProtocolError
from kafka_asgi.protocol.primitives import (
    Reader,
    encode_compact_nullable_string,
    encode_compact_string,
    encode_nullable_string,
    encode_string,
    encode_uvarint,
    encode_varint,
    encode_varlong,
    pack_bool,
    pack_float64,
    pack_int8,
    pack_int16,
    pack_int32,
    pack_int64,
    pack_uint16,
    pack_uint32,
    uvarint_size,
    write_bytes,
    write_compact_bytes,
    write_compact_nullable_bytes,
    write_nullable_bytes,
)

INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)


# Zigzag examples from the protocol guide / protobuf encoding documentation.
@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (-1, b"\x01"),
        (1, b"\x02"),
        (-2, b"\x03"),
        (63, b"\x7e"),
        (-64, b"\x7f"),
        (64, b"\x80\x01"),
        (300, b"\xd8\x04"),
        (2147483647, b"\xfe\xff\xff\xff\x0f"),
        (-2147483648, b"\xff\xff\xff\xff\x0f"),
    ],
)
def test_varint_known_values(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert Reader(encoded).varint() == value


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],
)
def test_uvarint_known_values(value: int, encoded: bytes) -> None:
    assert encode_uvarint(value) == encoded
    assert uvarint_size(value) == len(encoded)
    assert Reader(encoded).uvarint() == value


@given(INT32)
def test_varint_round_trip(value: int) -> None:
    data = encode_varint(value)
    r = Reader(data)
    assert r.varint() == value
    assert r.remaining == 0


@given(INT64)
def test_varlong_round_trip(value: int) -> None:
    data = encode_varlong(value)
    assert len(data) <= 10
    r = Reader(data)
    assert r.varlong() == value
    assert r.remaining == 0


@given(st.integers(0, (1 << 32) - 1))
def test_uvarint_round_trip(value: int) -> None:
    data = encode_uvarint(value)
    assert len(data) == uvarint_size(value) <= 5
    assert Reader(data).uvarint() == value


def test_varint_range_checks() -> None:
    with pytest.raises(EncodeError):
        encode_varint(1 << 31)
    with pytest.raises(EncodeError):
        encode_varlong(-(1 << 63) - 1)
    with pytest.raises(EncodeError):
        encode_uvarint(-1)


def test_overlong_varints_are_rejected() -> None:
    with pytest.raises(ProtocolError):
        Reader(b"\xff\xff\xff\xff\xff\x01").uvarint()
    with pytest.raises(ProtocolError):
        Reader(b"\xff" * 10 + b"\x01").varlong()
    with pytest.raises(ProtocolError):
        Reader(b"\x80\x80").uvarint()


def test_strings_classic_and_compact() -> None:
    assert encode_string("abc") == b"\x00\x03abc"
    assert encode_nullable_string(None) == b"\xff\xff"
    assert encode_compact_string("abc") == b"\x04abc"
    assert encode_compact_nullable_string(None) == b"\x00"
    assert encode_compact_string("") == b"\x01"
    assert Reader(b"\x00\x03abc").string() == "abc"
    assert Reader(b"\xff\xff").nullable_string() is None
    assert Reader(b"\x04abc").compact_string() == "abc"
    assert Reader(b"\x00").compact_nullable_string() is None
    assert Reader(b"\x00\x02\xc3\xa9").string() == "é"


def test_null_where_not_nullable_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        Reader(b"\xff\xff").string()
    with pytest.raises(ProtocolError):
        Reader(b"\x00").compact_string()
    with pytest.raises(ProtocolError):
        Reader(b"\xff\xff\xff\xff").bytes_()
    with pytest.raises(ProtocolError):
        Reader(b"\xff\xff\xff\xff").array_length()


def test_string_too_long_to_encode() -> None:
    with pytest.raises(EncodeError, match="32767"):
        encode_string("x" * 40000)
    with pytest.raises(EncodeError):
        encode_string("\ud800")  # a lone surrogate has no UTF-8 form


def test_invalid_utf8_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="UTF-8"):
        Reader(b"\x00\x02\xff\xfe").string()


def test_bytes_and_uuid() -> None:
    out: list[bytes] = []
    write_bytes(out, b"xyz")
    write_nullable_bytes(out, None)
    write_compact_bytes(out, b"")
    write_compact_nullable_bytes(out, None)
    u = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
    out.append(u.bytes)
    data = b"".join(out)
    r = Reader(data)
    assert r.bytes_() == b"xyz"
    assert r.nullable_bytes() is None
    assert r.compact_bytes() == b""
    assert r.compact_nullable_bytes() is None
    assert r.uuid() == u
    assert r.remaining == 0


def test_fixed_width_integers_match_struct() -> None:
    data = b"".join(
        (
            pack_int8(-5),
            pack_int16(-300),
            pack_int32(70000),
            pack_int64(-(1 << 40)),
            pack_uint16(65535),
            pack_uint32(4000000000),
            pack_float64(2.5),
            pack_bool(True),
        )
    )
    assert data == struct.pack(
        ">bhiqHId?", -5, -300, 70000, -(1 << 40), 65535, 4000000000, 2.5, True
    )
    r = Reader(memoryview(data))
    assert [r.int8(), r.int16(), r.int32(), r.int64(), r.uint16(), r.uint32()] == [
        -5,
        -300,
        70000,
        -(1 << 40),
        65535,
        4000000000,
    ]
    assert r.float64() == 2.5
    assert r.boolean() is True


def test_array_counts_are_bounded_by_remaining_bytes() -> None:
    # 2**31-1 elements announced, 4 bytes left: refused before any element is read.
    with pytest.raises(ProtocolError, match="cannot fit"):
        Reader(b"\x7f\xff\xff\xff\x00\x00\x00\x00").array_length(4)
    with pytest.raises(ProtocolError, match="cannot fit"):
        Reader(b"\xff\xff\xff\xff\x0f").compact_array_length()
    assert Reader(b"\xff\xff\xff\xff").nullable_array_length() == -1
    assert Reader(b"\x00").compact_nullable_array_length() == -1


def test_tagged_fields_are_skipped() -> None:
    # two unknown tags: tag 5 with 3 bytes, tag 70 with 1 byte; then one more byte.
    data = b"\x02" + b"\x05\x03abc" + b"\x46\x01z" + b"!"
    r = Reader(data)
    r.skip_tagged_fields()
    assert r.raw(1) == b"!"
    with pytest.raises(ProtocolError):
        Reader(b"\x01\x05\x09abc").skip_tagged_fields()  # size beyond the data


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_reader_raises_only_protocol_error(data: bytes) -> None:
    readers = [
        "int8",
        "int16",
        "int32",
        "int64",
        "uint16",
        "uint32",
        "float64",
        "boolean",
        "uuid",
        "uvarint",
        "uvarlong",
        "varint",
        "varlong",
        "string",
        "nullable_string",
        "compact_string",
        "compact_nullable_string",
        "bytes_",
        "nullable_bytes",
        "compact_bytes",
        "compact_nullable_bytes",
        "array_length",
        "nullable_array_length",
        "compact_array_length",
        "compact_nullable_array_length",
        "skip_tagged_fields",
    ]
    for name in readers:
        r = Reader(data)
        try:
            while r.remaining:
                getattr(r, name)()
        except ProtocolError:
            pass


def test_truncation_messages_say_what_was_missing() -> None:
    with pytest.raises(ProtocolError, match="int32"):
        Reader(b"\x00\x01").int32()
    with pytest.raises(ProtocolError, match="string"):
        Reader(b"\x00\x05ab").string()
