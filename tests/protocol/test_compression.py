"""Compression codecs: round trips, interoperability with aiokafka's codecs, bad input."""

from __future__ import annotations

import gzip
import os
import random
import struct
import sys
import zlib

import cramjam
import pytest
from aiokafka import codec as aiokafka_codec

import kafka_asgi.protocol.compression as compression_module
from kafka_asgi.protocol.compression import (
    INSTALL_HINT,
    Compression,
    _xxh32_short,
    compress,
    decompress,
    decompress_within,
    ensure_available,
    fix_legacy_lz4_header,
)
from kafka_asgi.protocol.errors import ProtocolError, UnsupportedCodecError

CODECS = list(Compression)
COMPRESSED = [c for c in Compression if c is not Compression.NONE]
CRAMJAM_CODECS = [Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]

PAYLOADS = [
    b"",
    b"x",
    b"hello kafka " * 50,
    os.urandom(1000),
    # Larger than one xerial snappy block (32 KiB) and one lz4 block (64 KiB).
    (b"0123456789abcdef" * 5000) + os.urandom(70_000),
]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}B")
def test_round_trip(codec: Compression, payload: bytes) -> None:
    encoded = compress(codec, payload)
    assert decompress(codec, encoded) == payload


def test_codec_ids_are_kafkas() -> None:
    assert [(c.name, int(c)) for c in Compression] == [
        ("NONE", 0),
        ("GZIP", 1),
        ("SNAPPY", 2),
        ("LZ4", 3),
        ("ZSTD", 4),
    ]


def test_gzip_is_a_gzip_stream_and_deterministic() -> None:
    data = b"abc" * 1000
    encoded = compress(Compression.GZIP, data)
    assert encoded[:2] == b"\x1f\x8b"
    assert gzip.decompress(encoded) == data
    assert compress(Compression.GZIP, data) == encoded
    assert len(compress(Compression.GZIP, data, level=1)) > 0


def test_gzip_multiple_members() -> None:
    data = gzip.compress(b"first ") + gzip.compress(b"second")
    assert decompress(Compression.GZIP, data) == b"first second"


def test_gzip_members_across_feed_boundaries() -> None:
    """Members of every size, some straddling the slices zlib is fed, some inside
    one: the same bytes as the standard library's reading."""
    rng = random.Random(7)
    parts = [os.urandom(rng.choice([0, 1, 100, 70_000, 200_000])) for _ in range(40)]
    data = b"".join(gzip.compress(p, compresslevel=rng.choice([0, 1, 9])) for p in parts)
    assert decompress(Compression.GZIP, data) == gzip.decompress(data) == b"".join(parts)
    with pytest.raises(ProtocolError, match="truncated gzip"):
        decompress(Compression.GZIP, data[:-3])


def test_gzip_input_is_fed_to_zlib_in_bounded_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """zlib copies the input it was given and did not use (at each member's end, at
    each output step): fed the whole payload, a batch of 20-byte empty members (valid
    gzip, which a broker accepts) took time quadratic in its size, seconds per MiB on
    the event loop. Each call now gets at most one slice."""
    fed: list[int] = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self, wbits: int) -> None:
            self._d = real(wbits)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            fed.append(len(data))
            return self._d.decompress(data, max_length)

        def __getattr__(self, name: str) -> object:
            return getattr(self._d, name)

    monkeypatch.setattr(compression_module.zlib, "decompressobj", Spy)
    data = gzip.compress(b"hello" * 1000, mtime=0) + gzip.compress(b"", mtime=0) * 30_000
    assert len(data) > 8 * compression_module._GZIP_FEED
    assert decompress(Compression.GZIP, data) == b"hello" * 1000
    assert len(fed) >= 30_001
    assert max(fed) <= compression_module._GZIP_FEED


def test_snappy_writes_xerial_framing_in_32k_blocks() -> None:
    data = os.urandom(40_000)
    encoded = compress(Compression.SNAPPY, data)
    assert encoded[:16] == b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    pos = 16
    blocks = []
    while pos < len(encoded):
        (size,) = struct.unpack_from(">i", encoded, pos)
        blocks.append(bytes(cramjam.snappy.decompress_raw(encoded[pos + 4 : pos + 4 + size])))
        pos += 4 + size
    assert [len(b) for b in blocks] == [32 * 1024, 40_000 - 32 * 1024]
    assert b"".join(blocks) == data


@pytest.mark.parametrize("xerial", [True, False])
def test_snappy_reads_xerial_and_raw(xerial: bool) -> None:
    data = b"some snappy data " * 4000
    theirs = bytes(aiokafka_codec.snappy_encode(data, xerial_compatible=xerial))
    assert theirs.startswith(b"\x82SNAPPY\x00") is xerial
    assert decompress(Compression.SNAPPY, theirs) == data


@pytest.mark.parametrize(
    ("codec", "encode", "decode"),
    [
        (Compression.GZIP, aiokafka_codec.gzip_encode, aiokafka_codec.gzip_decode),
        (Compression.SNAPPY, aiokafka_codec.snappy_encode, aiokafka_codec.snappy_decode),
        (Compression.LZ4, aiokafka_codec.lz4_encode, aiokafka_codec.lz4_decode),
        (Compression.ZSTD, aiokafka_codec.zstd_encode, aiokafka_codec.zstd_decode),
    ],
)
def test_interoperates_with_aiokafka_codecs(
    codec: Compression, encode: object, decode: object
) -> None:
    assert callable(encode) and callable(decode)
    data = b"interop " * 10_000 + os.urandom(100)
    assert decompress(codec, encode(data)) == data
    assert decode(compress(codec, data)) == data


def test_lz4_is_a_standard_frame() -> None:
    encoded = compress(Compression.LZ4, b"frame" * 100)
    assert encoded[:4] == b"\x04\x22\x4d\x18"
    flg = encoded[4]
    # KIP-57: version 01, independent blocks; no content checksum or size.
    assert flg >> 6 == 0b01
    assert flg & 0x20
    assert not flg & 0x0D
    assert bytes(cramjam.lz4.decompress(encoded)) == b"frame" * 100


def _lz4_blocks(frame: bytes) -> tuple[int, list[tuple[bool, bytes]]]:
    """(block maximum, [(stored, block bytes)]) of a frame without checksums."""
    assert frame[:4] == b"\x04\x22\x4d\x18"
    assert frame[4] == 0x60  # version 1, independent blocks, nothing optional
    block_max = 1 << (8 + 2 * (frame[5] >> 4))
    pos = 7
    blocks = []
    while True:
        (word,) = struct.unpack_from("<I", frame, pos)
        pos += 4
        if word == 0:
            break
        size = word & 0x7FFFFFFF
        blocks.append((bool(word & 0x80000000), frame[pos : pos + size]))
        pos += size
    assert pos == len(frame)
    return block_max, blocks


@pytest.mark.parametrize(
    ("size", "block_max"),
    [
        (0, 64 << 10),
        (1, 64 << 10),
        (64 << 10, 64 << 10),
        ((64 << 10) + 1, 256 << 10),
        ((256 << 10) + 1, 1 << 20),
        (1 << 20, 1 << 20),
        ((1 << 20) + 1, 4 << 20),
        ((4 << 20) + 1, 4 << 20),
        (9 << 20, 4 << 20),
    ],
)
def test_lz4_frame_takes_the_smallest_block_maximum_that_holds_it(
    size: int, block_max: int
) -> None:
    data = (b"GET /api/items?page=7 200 1432 0.004 " * (size // 37 + 1))[:size]
    frame = compress(Compression.LZ4, data)
    got_max, blocks = _lz4_blocks(frame)
    assert got_max == block_max
    assert len(blocks) == -(-size // block_max)
    # Each block decompresses alone (KIP-57: Kafka's reader needs independent blocks).
    chunks = [data[i : i + block_max] for i in range(0, size, block_max)]
    out = [
        block if stored else bytes(cramjam.lz4.decompress_block(block, output_len=len(chunk)))
        for (stored, block), chunk in zip(blocks, chunks, strict=True)
    ]
    assert b"".join(out) == data
    assert bytes(cramjam.lz4.decompress(frame)) == data
    assert decompress(Compression.LZ4, frame) == data


def test_lz4_stores_incompressible_blocks() -> None:
    data = os.urandom(300_000)
    block_max, blocks = _lz4_blocks(compress(Compression.LZ4, data))
    assert block_max == 1 << 20
    assert blocks == [(True, data)]
    assert decompress(Compression.LZ4, compress(Compression.LZ4, data)) == data


def test_lz4_one_block_is_smaller_than_64k_blocks() -> None:
    # What the single block buys over cramjam's frame compressor (64 KiB blocks).
    data = b"".join(
        b'{"method":"GET","path":"/items/%d","status":200,"ms":%d}' % (i, i % 97)
        for i in range(20_000)
    )
    c = cramjam.lz4.Compressor(level=0, content_checksum=False, block_linked=False)
    c.compress(data)
    assert len(compress(Compression.LZ4, data)) < len(bytes(c.finish()))


@pytest.mark.parametrize("level", [3, 9, 17])
def test_lz4_high_levels_are_lz4hc(level: int) -> None:
    data = b"".join(b"user=%d path=/x/%d " % (i % 500, i % 37) for i in range(20_000))
    hc = compress(Compression.LZ4, data, level)
    assert hc[4] & 0x20  # independent blocks
    assert len(hc) < len(compress(Compression.LZ4, data))
    assert decompress(Compression.LZ4, hc) == data


@pytest.mark.parametrize("codec", COMPRESSED)
@pytest.mark.parametrize(
    "garbage",
    [b"\x00", b"not compressed at all", os.urandom(64), b"\x82SNAPPY\x00\x00\x00\x00\x01"],
    ids=["one-byte", "text", "random", "xerial-header-only-partial"],
)
def test_garbage_raises_protocol_error(codec: Compression, garbage: bytes) -> None:
    if codec is Compression.SNAPPY and garbage == b"\x00":
        # A valid raw snappy stream: uncompressed length 0.
        assert decompress(codec, garbage) == b""
        return
    with pytest.raises(ProtocolError):
        decompress(codec, garbage)


@pytest.mark.parametrize("codec", COMPRESSED)
def test_truncated_raises_protocol_error(codec: Compression) -> None:
    encoded = compress(codec, os.urandom(5000))
    for cut in (1, len(encoded) // 2, len(encoded) - 1):
        with pytest.raises(ProtocolError):
            decompress(codec, encoded[:cut])


def test_xerial_bad_block_length() -> None:
    header = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    with pytest.raises(ProtocolError, match="block length"):
        decompress(Compression.SNAPPY, header + struct.pack(">i", 1000) + b"abc")
    with pytest.raises(ProtocolError, match="block length"):
        decompress(Compression.SNAPPY, header + struct.pack(">i", -5))
    with pytest.raises(ProtocolError, match="block length"):
        decompress(Compression.SNAPPY, header + b"\x00\x00")


def test_unknown_codec() -> None:
    with pytest.raises(ProtocolError, match="7"):
        decompress(7, b"abc")
    with pytest.raises(ValueError, match="7"):
        compress(7, b"abc")
    with pytest.raises(ValueError, match="9"):
        ensure_available(9)


@pytest.mark.parametrize("codec", CRAMJAM_CODECS)
def test_missing_cramjam_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, codec: Compression
) -> None:
    encoded = compress(codec, b"data")
    monkeypatch.setitem(sys.modules, "cramjam", None)
    for call in (
        lambda: compress(codec, b"data"),
        lambda: decompress(codec, encoded),
        lambda: ensure_available(codec),
    ):
        with pytest.raises(UnsupportedCodecError) as info:
            call()
        assert INSTALL_HINT in str(info.value)
        assert codec.name.lower() in str(info.value)
    assert INSTALL_HINT == "pip install kafka-asgi[compression]"


def test_gzip_and_none_need_no_cramjam(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cramjam", None)
    for codec in (Compression.NONE, Compression.GZIP):
        ensure_available(codec)
        assert decompress(codec, compress(codec, b"plain")) == b"plain"


# xxHash32 reference values (seed 0) from the xxHash project's sanity checks.
@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", 0x02CC5D05), (b"a", 0x550D7456), (b"abc", 0x32D153FF)],
)
def test_xxh32_short(data: bytes, expected: int) -> None:
    assert _xxh32_short(data) == expected


@pytest.mark.parametrize("level", [None, 1, 9])
@pytest.mark.parametrize("size", [0, 10, 70_000])
def test_xxh32_matches_lz4_frame_header_checksums(level: int | None, size: int) -> None:
    # Independent check: the LZ4 library stores byte 1 of xxh32(descriptor).
    for checksum in (False, True):
        c = cramjam.lz4.Compressor(level=level, content_checksum=checksum)
        c.compress(os.urandom(size))
        frame = bytes(c.finish())
        desc_end = 6 + (8 if frame[4] & 0x08 else 0) + (4 if frame[4] & 0x01 else 0)
        assert (_xxh32_short(frame[4:desc_end]) >> 8) & 0xFF == frame[desc_end]


def test_legacy_lz4_header_checksum_fix() -> None:
    data = b"old kafka lz4 " * 300
    frame = bytes(cramjam.lz4.compress(data))
    flg = frame[4]
    assert not flg & 0x09  # no content size, no dictionary id: descriptor is 2 bytes
    # Kafka before 0.10 hashed the magic number as well (KAFKA-3160).
    broken_hc = (_xxh32_short(frame[0:6]) >> 8) & 0xFF
    assert broken_hc != frame[6]
    broken = frame[:6] + bytes((broken_hc,)) + frame[7:]
    with pytest.raises(ProtocolError):
        decompress(Compression.LZ4, broken)
    assert fix_legacy_lz4_header(broken) == frame
    assert decompress(Compression.LZ4, fix_legacy_lz4_header(broken)) == data
    with pytest.raises(ProtocolError):
        fix_legacy_lz4_header(b"\x00\x01\x02\x03\x04\x05\x06")
    with pytest.raises(ProtocolError):
        fix_legacy_lz4_header(frame[:6])


@pytest.mark.parametrize("codec", COMPRESSED)
def test_decompressed_size_is_bounded(codec: Compression) -> None:
    # 8 MiB of zeros compresses to a few KiB: a small "bomb".
    bomb = compress(codec, bytes(8 * 1024 * 1024))
    assert len(bomb) < 512 * 1024
    with pytest.raises(ProtocolError, match="max_size=1048576"):
        decompress(codec, bomb, max_size=1024 * 1024)
    assert decompress(codec, bomb, max_size=8 * 1024 * 1024) == bytes(8 * 1024 * 1024)
    with pytest.raises(ProtocolError, match="max_size"):
        decompress(codec, bomb, max_size=8 * 1024 * 1024 - 1)


@pytest.mark.parametrize("codec", COMPRESSED)
def test_decompress_within_says_too_large_with_none_and_bad_data_with_an_error(
    codec: Compression,
) -> None:
    data = compress(codec, bytes(1 << 20))
    assert decompress_within(codec, data, (1 << 20) - 1) is None
    assert decompress_within(codec, data, 1 << 20) == bytes(1 << 20)
    with pytest.raises(ProtocolError):
        decompress_within(codec, data[: len(data) // 2], 1 << 20)


def test_default_bound() -> None:
    from kafka_asgi.protocol.compression import MAX_DECOMPRESSED_SIZE

    assert MAX_DECOMPRESSED_SIZE == 256 * 1024 * 1024
