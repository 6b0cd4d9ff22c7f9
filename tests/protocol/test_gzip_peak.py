"""A hostile gzip batch: the peak memory of decompressing it is bounded, not only
the result (issue 11, point 5, seventh defect).

gzip output is produced a step at a time and decompression stops at the limit, so
a small batch that inflates far beyond ``max_decompressed_size`` costs about the
limit in memory, not twice it (the whole output at once, then a joined copy).
Measured with tracemalloc (Python's allocations: zlib's output buffers are).
"""

from __future__ import annotations

import gzip
import tracemalloc

import pytest

from kafka_asgi.protocol.compression import Compression, decompress
from kafka_asgi.protocol.errors import ProtocolError
from kafka_asgi.protocol.records import decode_batches, encode_batch

MiB = 1 << 20
LIMIT = 16 * MiB
INFLATED = 64 * MiB  # 4x the limit, from about 65 KB of gzip


def _peak(call: object) -> int:
    assert callable(call)
    tracemalloc.start()
    try:
        try:
            call()
        except ProtocolError as exc:
            assert "max_size" in str(exc)
        else:
            raise AssertionError("the bomb was decompressed")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_gzip_bomb_payload_peaks_near_the_limit() -> None:
    bomb = gzip.compress(b"\0" * INFLATED, 9)
    assert len(bomb) < 100_000
    peak = _peak(lambda: decompress(Compression.GZIP, bomb, LIMIT))
    assert peak < LIMIT * 1.2, f"peak {peak / MiB:.1f} MiB for a {LIMIT / MiB:.0f} MiB limit"


def test_gzip_bomb_batch_peaks_near_the_limit() -> None:
    batch = encode_batch([(None, b"\0" * INFLATED, (), 0)], compression=Compression.GZIP)
    assert len(batch) < 200_000
    peak = _peak(lambda: decode_batches(batch, max_decompressed_size=LIMIT))
    assert peak < LIMIT * 1.2, f"peak {peak / MiB:.1f} MiB for a {LIMIT / MiB:.0f} MiB limit"


@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, MiB + 1, 3 * MiB + 7])
def test_gzip_still_decodes_whole_streams(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    two_members = gzip.compress(data) + gzip.compress(b"tail")
    assert decompress(Compression.GZIP, two_members, size + 4) == data + b"tail"
    with pytest.raises(ProtocolError, match="max_size"):
        decompress(Compression.GZIP, two_members, size + 3)
    with pytest.raises(ProtocolError, match="truncated"):
        decompress(Compression.GZIP, gzip.compress(data)[:-9], size + 4)
