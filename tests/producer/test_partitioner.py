"""Key placement: murmur2 as the Java client (checked against kafka-python's port of
Utils.murmur2), crc32 as lua-resty-kafka (ngx.crc32_short is the IEEE CRC-32)."""

from __future__ import annotations

import warnings
import zlib

from hypothesis import given
from hypothesis import strategies as st

with warnings.catch_warnings():
    # kafka-python's import uses importlib.resources.read_text, deprecated in 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from kafka_asgi.producer import crc32_partition, murmur2, murmur2_partition


@given(st.binary(max_size=200))
def test_murmur2_matches_kafka_python(key: bytes) -> None:
    assert murmur2(key) == kafka_python_murmur2(key) & 0xFFFFFFFF


@given(st.binary(min_size=0, max_size=64), st.integers(min_value=1, max_value=1000))
def test_murmur2_partition_is_java_to_positive_modulo(key: bytes, count: int) -> None:
    # Java: Utils.toPositive(Utils.murmur2(key)) % numPartitions
    assert murmur2_partition(key, count) == (kafka_python_murmur2(key) & 0x7FFFFFFF) % count


def test_murmur2_known_values() -> None:
    # Values from the Java client's UtilsTest.testMurmur2.
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for key, signed in cases.items():
        assert murmur2(key) == signed & 0xFFFFFFFF, key


def test_crc32_partition() -> None:
    # The CRC-32 check value (IEEE 802.3): crc32("123456789") = 0xCBF43926.
    assert crc32_partition(b"123456789", 1 << 32) == 0xCBF43926
    assert crc32_partition(b"123456789", 7) == 0xCBF43926 % 7
    assert crc32_partition(b"", 5) == 0
    for key in (b"a", b"user-1", b"\xff" * 10):
        assert crc32_partition(key, 12) == zlib.crc32(key) % 12
