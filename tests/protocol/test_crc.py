"""CRC-32C (native and pure-Python fallback) and CRC-32 against published vectors."""

from __future__ import annotations

import importlib.util
import sys
import zlib
from types import ModuleType

import crc32c as crc32c_package
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_asgi.protocol import crc
from kafka_asgi.protocol.crc import crc32, crc32c_python

# RFC 3720 appendix B.4 (iSCSI) test patterns, plus the usual "123456789" check value.
CRC32C_VECTORS = [
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"", 0),
]


def _load_crc_without_native(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh copy of kafka_asgi.protocol.crc loaded while `crc32c` cannot be imported."""
    monkeypatch.setitem(sys.modules, "crc32c", None)
    spec = importlib.util.find_spec("kafka_asgi.protocol.crc")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("data", "expected"), CRC32C_VECTORS)
def test_native_crc32c_vectors(data: bytes, expected: int) -> None:
    assert crc.has_native_crc32c
    assert crc.crc32c(data) == expected


@pytest.mark.parametrize(("data", "expected"), CRC32C_VECTORS)
def test_python_crc32c_vectors(data: bytes, expected: int) -> None:
    assert crc32c_python(data) == expected


def test_fallback_is_used_when_package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load_crc_without_native(monkeypatch)
    assert module.has_native_crc32c is False
    assert module.crc32c is module.crc32c_python
    for data, expected in CRC32C_VECTORS:
        assert module.crc32c(data) == expected


def test_incremental_crc32c() -> None:
    data = b"The quick brown fox jumps over the lazy dog"
    whole = crc.crc32c(data)
    assert crc.crc32c(data[10:], crc.crc32c(data[:10])) == whole
    assert crc32c_python(data[10:], crc32c_python(data[:10])) == whole


@given(st.binary(max_size=600), st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_python_matches_native(data: bytes, start: int) -> None:
    assert crc32c_python(data, start) == crc32c_package.crc32c(data, start)


def test_crc32c_accepts_memoryview_and_bytearray() -> None:
    assert crc.crc32c(memoryview(b"123456789")) == 0xE3069283
    assert crc32c_python(bytearray(b"123456789")) == 0xE3069283


def test_crc32_is_ieee() -> None:
    # The CRC-32 check value of "123456789" (ISO-HDLC / zlib).
    assert crc32(b"123456789") == 0xCBF43926
    assert crc32(b"abc", crc32(b"12")) == zlib.crc32(b"12abc")
