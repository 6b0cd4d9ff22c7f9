"""Partitioners: which partition a record goes to.

Built in:

``"murmur2"`` (the default)
    A keyed record goes to ``murmur2(key) & 0x7fffffff % partition_count``, the
    placement of the Java client's default partitioner (``Utils.murmur2`` with seed
    ``0x9747b28c``, ``Utils.toPositive``), of librdkafka's ``murmur2_random``, of
    aiokafka and of kafka-python: a key lands on the same partition whichever of
    these clients wrote it.
``"crc32"``
    lua-resty-kafka's default: ``ngx.crc32_short(key) % partition_count``, where
    ``ngx.crc32_short`` is the standard CRC-32 (IEEE 802.3, as zlib computes it).
``"round_robin"``
    Every record, keyed or not, to the next partition of its topic in turn.

With ``"murmur2"`` and ``"crc32"``, records without a key are spread the way
KIP-480 (sticky partitioner) does: all of them go to one partition until its batch
is sent, then to the next, so that a few full batches go out instead of many small
ones.  That part lives in the accumulator; this module places keys.

A callable ``partitioner(key, partition_count) -> int`` receives every record's
key (bytes, or None for a record without one) and returns a partition number.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

__all__ = [
    "BUILTIN_PARTITIONERS",
    "PartitionerFunc",
    "crc32_partition",
    "murmur2",
    "murmur2_partition",
]

PartitionerFunc = Callable[[bytes | None, int], int]

BUILTIN_PARTITIONERS = ("murmur2", "crc32", "round_robin")

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """32-bit MurmurHash2 of ``data`` as Kafka's Java client computes it (unsigned)."""
    n = len(data)
    h = (_SEED ^ n) & _MASK
    n4 = n >> 2
    if n4:
        words = _WORDS.get(n4)
        if words is None:
            # Keys have few distinct lengths: one Struct per length reads the
            # little-endian 32-bit blocks in a single C call.
            words = struct.Struct(f"<{n4}I")
            if len(_WORDS) < 1024:
                _WORDS[n4] = words
        for k in words.unpack_from(data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    rem = n & 3
    if rem:
        i = n4 << 2
        if rem == 3:
            h ^= data[i + 2] << 16
        if rem >= 2:
            h ^= data[i + 1] << 8
        h ^= data[i]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


# The hash of a key is computed in pure Python (about a microsecond); keys such as
# user or tenant ids repeat, so positive hashes are kept in a bounded dict.
_CACHE_MAX = 65536
_murmur_cache: dict[bytes, int] = {}


def murmur2_partition(key: bytes, partition_count: int) -> int:
    """The Java client's partition for ``key``: ``toPositive(murmur2(key)) % count``."""
    h = _murmur_cache.get(key)
    if h is None:
        h = murmur2(key) & 0x7FFFFFFF
        if len(_murmur_cache) >= _CACHE_MAX:
            _murmur_cache.clear()
        _murmur_cache[key] = h
    return h % partition_count


def crc32_partition(key: bytes, partition_count: int) -> int:
    """lua-resty-kafka's partition for ``key``: ``crc32(key) % count``."""
    return zlib.crc32(key) % partition_count
