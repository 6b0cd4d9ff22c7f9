"""Compression codecs of Kafka record batches.

The codec id lives in the low three bits of a batch's attributes (the same bits
in legacy messages): 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd (zstd needs magic 2,
KIP-110).  gzip uses the standard library; snappy, lz4 and zstd come from
``cramjam``, installed by the ``compression`` extra.  Asking for a codec whose
library is missing raises :class:`UnsupportedCodecError`.

Wire formats, as the Java client writes and reads them:

* gzip: a gzip stream (RFC 1952), not a bare zlib stream.
* snappy: the Java client wraps raw snappy blocks in the framing of the
  ``snappy-java`` library ("xerial" framing): the magic ``\\x82SNAPPY\\x00``, two
  big-endian int32 version numbers, then blocks each prefixed by a big-endian
  int32 length.  librdkafka and older clients may send a single raw snappy
  block, so the decoder accepts both.
* lz4: the standard LZ4 frame format (KAFKA-3160 fixed the header checksum for
  magic >= 1; magic-0 messages keep the broken checksum, see
  :func:`fix_legacy_lz4_header`).  Kafka's reader needs independent blocks
  (KIP-57); at the fast levels (the default), a frame's block maximum is the smallest of
  64 KiB, 256 KiB, 1 MiB and 4 MiB that holds the whole records section, so a
  batch up to 4 MiB is one block (smaller than 64 KiB blocks would make it,
  and compressed in one call that releases the GIL).
* zstd: a standard zstd frame.
"""

from __future__ import annotations

import struct
import zlib
from enum import IntEnum
from types import ModuleType

from .errors import ProtocolError, UnsupportedCodecError

__all__ = [
    "MAX_DECOMPRESSED_SIZE",
    "Compression",
    "check_level",
    "compress",
    "decompress",
    "decompress_within",
    "ensure_available",
    "fix_legacy_lz4_header",
]

INSTALL_HINT = "pip install kafka-asgi[compression]"


class Compression(IntEnum):
    """Codec ids, as stored in the attributes of a batch or legacy message."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


_XERIAL_MAGIC = b"\x82SNAPPY\x00"
# Header = magic + int32 version + int32 minimum compatible version.
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
# Block size used by snappy-java's SnappyOutputStream, which Kafka uses.
_XERIAL_BLOCK_SIZE = 32 * 1024
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
# The Java client's default lz4 level (9, KIP-390) selects lz4's fast
# compressor, not LZ4HC level 9; here no level, or 0-2 as in lz4's frame API, is
# that fast compressor, and 3 up is LZ4HC.
_LZ4_HC_LEVEL = 3
# The frames written at the fast levels: FLG 0x60 (version 1, independent
# blocks, no block or content checksum, no content size), and BD per block
# maximum (4 = 64 KiB ... 7 = 4 MiB); their headers are made below _xxh32_short.
_LZ4_FLG_FAST = 0x60
_LZ4_BLOCK_MAXIMA = ((64 << 10, 0x40), (256 << 10, 0x50), (1 << 20, 0x60), (4 << 20, 0x70))
_LZ4_END_MARK = b"\x00\x00\x00\x00"
_LZ4_STORED = 0x80000000  # a block size with this bit: the block is stored as is
_le32 = struct.Struct("<I")
# The Java client's default zstd level (KIP-390), also zstd's own default.
_ZSTD_LEVEL = 3

_int32 = struct.Struct(">i")
# zlib's wbits: the largest window (15), plus 32 to accept a gzip or a zlib header.
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS
# An LZ4 frame (lz4 frame format spec): magic, then the descriptor FLG, BD, the
# optional content size and dictionary id, then the header checksum byte.
_LZ4_FLG_POS = len(_LZ4_MAGIC)
_LZ4_FLG_CONTENT_SIZE = 0x08  # an 8-byte content size follows BD
_LZ4_FLG_DICT_ID = 0x01  # a 4-byte dictionary id follows
_LZ4_MIN_HEADER = len(_LZ4_MAGIC) + 3  # FLG, BD, header checksum


def _cramjam(codec: Compression) -> ModuleType:
    # Imported on each use (cheap once loaded) so a missing library is reported
    # where the codec is requested, not when kafka_asgi is imported.
    try:
        import cramjam
    except ImportError:
        raise UnsupportedCodecError(
            f"{codec.name.lower()} compression needs the cramjam library: {INSTALL_HINT}"
        ) from None
    return cramjam


def _as_codec(codec: int) -> Compression:
    try:
        return Compression(codec)
    except ValueError:
        raise ProtocolError(f"unknown compression codec id {codec!r}") from None


def ensure_available(codec: int) -> None:
    """Raise UnsupportedCodecError now if ``codec`` cannot be used (e.g. at producer start)."""
    try:
        c = Compression(codec)
    except ValueError:
        raise ValueError(f"unknown compression codec {codec!r}") from None
    if c in (Compression.SNAPPY, Compression.LZ4, Compression.ZSTD):
        _cramjam(c)


def compress(codec: int, data: bytes | memoryview, level: int | None = None) -> bytes:
    """Compress ``data`` with ``codec`` into the wire format Kafka expects."""
    try:
        c = Compression(codec)
    except ValueError:
        raise ValueError(f"unknown compression codec {codec!r}") from None
    if c is Compression.NONE:
        return bytes(data)
    if c is Compression.GZIP:
        # wbits=31 selects the gzip container (zlib writes mtime 0, so the
        # output is deterministic).
        z = zlib.compressobj(-1 if level is None else level, zlib.DEFLATED, 31)
        return z.compress(data) + z.flush()
    cramjam = _cramjam(c)
    if c is Compression.SNAPPY:
        raw = cramjam.snappy.compress_raw
        parts = [_XERIAL_HEADER]
        for start in range(0, len(data), _XERIAL_BLOCK_SIZE):
            block = bytes(raw(data[start : start + _XERIAL_BLOCK_SIZE]))
            parts.append(_int32.pack(len(block)))
            parts.append(block)
        return b"".join(parts)
    if c is Compression.LZ4:
        if level is None or level < _LZ4_HC_LEVEL:
            return _lz4_fast(cramjam, data)
        # LZ4HC: cramjam's frame compressor, with independent blocks and no content
        # checksum, like the Java client's KafkaLZ4BlockOutputStream (KIP-57).
        compressor = cramjam.lz4.Compressor(
            level=level,
            content_checksum=False,
            block_linked=False,
        )
        compressor.compress(data)
        return bytes(compressor.finish())
    return bytes(cramjam.zstd.compress(data, _ZSTD_LEVEL if level is None else level))


def _lz4_fast(cramjam: ModuleType, data: bytes | memoryview) -> bytes:
    """An LZ4 frame of independent blocks from lz4's fast compressor.

    cramjam's frame compressor holds the GIL while it works and writes blocks of
    at most 64 KiB; its block compressor releases the GIL (other threads, such as a
    WSGI server's, run meanwhile) and takes the whole batch, so the output is about
    14% smaller on log-like records.  The frame around the blocks is the format's
    plain container.
    """
    n = len(data)
    block_max, header = _LZ4_FRAME_HEADERS[-1]
    for size, head in _LZ4_FRAME_HEADERS:
        if n <= size:
            block_max, header = size, head
            break
    compress_block = cramjam.lz4.compress_block
    parts: list[bytes | memoryview] = [header]
    view = memoryview(data)
    for start in range(0, n, block_max):
        chunk = view[start : start + block_max]
        block = compress_block(chunk, store_size=False)
        if len(block) < len(chunk):
            parts.append(_le32.pack(len(block)))
            parts.append(block)
        else:
            # Incompressible: stored, as the format allows (and lz4's own frame does).
            parts.append(_le32.pack(len(chunk) | _LZ4_STORED))
            parts.append(chunk)
    parts.append(_LZ4_END_MARK)
    return b"".join(parts)


# The levels each codec accepts (the Java client's ranges, KIP-390; zlib's -1 is
# its default, 0 stores).  snappy has none.
_LEVELS = {
    Compression.GZIP: (-1, 9),
    Compression.LZ4: (0, 17),
    Compression.ZSTD: (-131072, 22),
}


def check_level(codec: int, level: int | None) -> None:
    """Raise ValueError, naming the value, if ``codec`` cannot take ``level``."""
    if level is None:
        return
    c = Compression(codec)
    bounds = _LEVELS.get(c)
    if bounds is None:
        raise ValueError(
            f"compression_level={level!r}: {c.name.lower()} has no compression level "
            "(leave it None)"
        )
    low, high = bounds
    if not low <= level <= high:
        raise ValueError(
            f"compression_level={level!r} is out of range for {c.name.lower()} ({low} to {high})"
        )


#: Default bound of a decompressed payload: far above any real batch (the
#: broker's default message.max.bytes is 1 MiB compressed), low enough that a
#: small "compression bomb" cannot take the process's memory.
MAX_DECOMPRESSED_SIZE = 256 * 1024 * 1024


def decompress(
    codec: int,
    data: bytes | bytearray | memoryview,
    max_size: int = MAX_DECOMPRESSED_SIZE,
) -> bytes:
    """Decompress a payload.

    Malformed input, or output larger than ``max_size`` bytes, raises
    ProtocolError; a missing codec library raises UnsupportedCodecError.
    """
    c = _as_codec(codec)
    if not isinstance(data, bytes):
        data = bytes(data)
    if c is Compression.NONE:
        return data
    if c is Compression.GZIP:
        return _gunzip(data, max_size)
    cramjam = _cramjam(c)
    try:
        if c is Compression.SNAPPY:
            return _unsnappy(cramjam, data, max_size)
        module = cramjam.lz4 if c is Compression.LZ4 else cramjam.zstd
        return _bounded(module, data, max_size, c)
    except cramjam.DecompressionError as exc:
        raise ProtocolError(f"invalid {c.name.lower()} data: {exc}") from None
    except (ValueError, OverflowError, MemoryError) as exc:
        raise ProtocolError(f"invalid {c.name.lower()} data: {exc}") from None


def decompress_within(
    codec: int, data: bytes | bytearray | memoryview, max_size: int
) -> bytes | None:
    """``decompress``, but None, not an error, when the output would be larger than
    ``max_size``: for a caller that leaves such a payload for later (a batch that
    does not fit in what is left of a fetch's decoding budget)."""
    try:
        return decompress(codec, data, max_size)
    except _TooLarge:
        return None


class _TooLarge(ProtocolError):
    """Output past max_size (decompress_within tells it from malformed input)."""


def _too_large(codec: Compression, max_size: int) -> ProtocolError:
    return _TooLarge(
        f"{codec.name.lower()} data decompresses to more than max_size={max_size} bytes"
    )


def _bounded(module: ModuleType, data: bytes, max_size: int, codec: Compression) -> bytes:
    # lz4 and zstd frames need not state their decompressed size: decompress
    # into a buffer that grows up to max_size, so a bomb stops at the bound.
    size = min(max_size, max(len(data) * 4, 1 << 16))
    while True:
        buf = bytearray(size)
        try:
            n = module.decompress_into(data, buf)
        except Exception as exc:
            # cramjam reports a full output buffer as this io error.
            if "failed to write whole buffer" not in str(exc):
                raise
            if size >= max_size:
                raise _too_large(codec, max_size) from None
            size = min(max_size, size * 4)
            continue
        return bytes(memoryview(buf)[:n])


# gzip output is produced this much at a time: a "bomb" stops within one step of
# max_size, holding about max_size, not a multiple of it. Output that fits is joined
# from its chunks at the end, so it peaks at about twice its size.
_GZIP_STEP = 1 << 20


# ... and fed this much at a time: zlib copies what is left of its input into
# ``unused_data`` at each member's end and into ``unconsumed_tail`` at each output
# step, so whole-input feeding made a payload of many members (an empty gzip member
# is 20 bytes) or a long one cost time quadratic in its length.
_GZIP_FEED = 1 << 16


def _gunzip(data: bytes, max_size: int) -> bytes:
    out: list[bytes] = []
    total = 0
    view = memoryview(data)
    end = len(data)
    pos = 0  # data[:pos] was given to zlib
    try:
        # A gzip file may hold several members one after the other (RFC 1952 2.2).
        while True:
            d = zlib.decompressobj(_GZIP_OR_ZLIB)
            while not d.eof:
                src: bytes | memoryview = d.unconsumed_tail
                if not src:
                    src = view[pos : pos + _GZIP_FEED]
                    pos += len(src)
                chunk = d.decompress(src, min(_GZIP_STEP, max_size - total + 1))
                total += len(chunk)
                if total > max_size:
                    raise _too_large(Compression.GZIP, max_size)
                if not chunk and not src and not d.eof:
                    raise ProtocolError("truncated gzip data")
                if chunk:
                    out.append(chunk)
            pos -= len(d.unused_data)  # (at most one feed: the next member's start)
            if pos >= end:
                break
    except zlib.error as exc:
        raise ProtocolError(f"invalid gzip data: {exc}") from None
    if len(out) == 1:
        return out[0]
    return b"".join(out)


def _unsnappy(cramjam: ModuleType, data: bytes, max_size: int) -> bytes:
    snappy = cramjam.snappy
    if not data.startswith(_XERIAL_MAGIC):
        blocks = [data]
    else:
        if len(data) < len(_XERIAL_HEADER):
            raise ProtocolError("truncated xerial snappy header")
        pos = len(_XERIAL_HEADER)
        end = len(data)
        blocks = []
        while pos < end:
            if pos + _int32.size > end:
                raise ProtocolError("truncated xerial snappy block length")
            (size,) = _int32.unpack_from(data, pos)
            pos += _int32.size
            if size < 0 or pos + size > end:
                raise ProtocolError(f"xerial snappy block length {size} exceeds the data")
            blocks.append(data[pos : pos + size])
            pos += size
    # Raw snappy states its decompressed length up front: check it before
    # decompressing anything.
    if sum(snappy.decompress_raw_len(b) for b in blocks) > max_size:
        raise _too_large(Compression.SNAPPY, max_size)
    return b"".join(bytes(snappy.decompress_raw(b)) for b in blocks)


# --- legacy lz4 (magic 0) ---------------------------------------------------

_P1 = 2654435761
_P2 = 2246822519
_P3 = 3266489917
_P4 = 668265263
_P5 = 374761393
_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _xxh32_short(data: bytes, seed: int = 0) -> int:
    # xxHash32 for inputs under 16 bytes: enough for an LZ4 frame descriptor
    # (at most 11 bytes).
    if len(data) >= 16:
        raise ValueError("only short inputs are supported")
    h = (seed + _P5 + len(data)) & _M32
    pos = 0
    while pos + 4 <= len(data):
        (word,) = struct.unpack_from("<I", data, pos)
        h = (_rotl((h + word * _P3) & _M32, 17) * _P4) & _M32
        pos += 4
    while pos < len(data):
        h = (_rotl((h + data[pos] * _P5) & _M32, 11) * _P1) & _M32
        pos += 1
    h ^= h >> 15
    h = (h * _P2) & _M32
    h ^= h >> 13
    h = (h * _P3) & _M32
    h ^= h >> 16
    return h


def _lz4_header(flg: int, bd: int) -> bytes:
    # The header checksum is the second byte of the descriptor's xxHash32.
    return _LZ4_MAGIC + bytes((flg, bd, (_xxh32_short(bytes((flg, bd))) >> 8) & 0xFF))


_LZ4_FRAME_HEADERS = tuple((size, _lz4_header(_LZ4_FLG_FAST, bd)) for size, bd in _LZ4_BLOCK_MAXIMA)


def fix_legacy_lz4_header(data: bytes) -> bytes:
    """Rewrite the header checksum of an lz4 frame written by a pre-0.10 client.

    Kafka before KIP-57/KAFKA-3160 hashed the magic number together with the
    frame descriptor; magic-0 messages still carry that checksum, which a
    standard LZ4 reader rejects.  Return the frame with a correct checksum.
    """
    if len(data) < _LZ4_MIN_HEADER or not data.startswith(_LZ4_MAGIC):
        raise ProtocolError("invalid lz4 frame header")
    flg = data[_LZ4_FLG_POS]
    desc_len = (
        2  # FLG, BD
        + (8 if flg & _LZ4_FLG_CONTENT_SIZE else 0)
        + (4 if flg & _LZ4_FLG_DICT_ID else 0)
    )
    hc_pos = _LZ4_FLG_POS + desc_len
    if len(data) <= hc_pos:
        raise ProtocolError("truncated lz4 frame header")
    # The header checksum is the second byte of the descriptor's xxHash32.
    hc = (_xxh32_short(data[_LZ4_FLG_POS:hc_pos]) >> 8) & 0xFF
    return data[:hc_pos] + bytes((hc,)) + data[hc_pos + 1 :]
