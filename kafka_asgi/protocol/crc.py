"""Checksums used by Kafka record formats.

* CRC-32C (Castagnoli) protects magic-2 record batches (KIP-98).  The ``crc32c``
  package computes it in C (with SSE4.2/ARMv8 instructions where present); when
  that package cannot be imported, a table-driven pure-Python version gives the
  same answers, only slower.
* CRC-32 (IEEE, the one ``zlib`` computes) protects legacy magic-0/1 messages.
"""

from __future__ import annotations

import zlib
from typing import Protocol

__all__ = ["crc32", "crc32c", "crc32c_python", "has_native_crc32c"]

_Buffer = bytes | bytearray | memoryview


class _Checksum(Protocol):
    def __call__(self, data: _Buffer, value: int = 0, /) -> int: ...


# Reflected form of the Castagnoli polynomial 0x1EDC6F41 (RFC 3720, appendix B.4).
_CASTAGNOLI_REFLECTED = 0x82F63B78


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CASTAGNOLI_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc32c_python(data: _Buffer, value: int = 0) -> int:
    """CRC-32C of ``data`` continuing from ``value`` (0 to start), in pure Python."""
    table = _TABLE
    crc = value ^ 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _load_native() -> _Checksum | None:
    try:
        from crc32c import crc32c as native
    except ImportError:
        return None
    return native


_native = _load_native()

#: True when the C implementation from the ``crc32c`` package is in use.
has_native_crc32c: bool = _native is not None

#: CRC-32C of a buffer, continuing from ``value``: ``crc32c(data, value=0) -> int``.
crc32c: _Checksum = _native if _native is not None else crc32c_python


def crc32(data: _Buffer, value: int = 0) -> int:
    """CRC-32 (IEEE 802.3) of ``data``, as legacy Kafka messages carry it."""
    return zlib.crc32(data, value)
