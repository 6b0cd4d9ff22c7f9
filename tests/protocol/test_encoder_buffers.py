"""Buffers other than bytes through the record encoders' fast paths.

Those paths write len() as a field's length and the object's buffer as its bytes:
one count for bytes, not for a memoryview whose items are wider than a byte (len()
counts items).  Such a field must reach the checked path, which copies a memoryview
to bytes and refuses an array, so that no batch is written with a valid CRC that
cannot be decoded.
"""

from __future__ import annotations

from array import array
from typing import Any

import pytest

from kafka_asgi.protocol.record_batch import Record
from kafka_asgi.protocol.record_decoder import decode_batches
from kafka_asgi.protocol.record_encoder import (
    assemble_batch,
    encode_batch,
    encode_batch_columns,
    encode_records_section,
)

_MS = 1_000_000


def _wide() -> memoryview:
    view = memoryview(array("i", [1, 2, 3]))
    assert (len(view), view.nbytes) == (3, 12)
    return view


def _decoded(data: bytes) -> list[Record]:
    (batch,) = decode_batches(data)
    return list(batch.records)


# Each case: (key, value, headers) of the second of three records; the others are
# plain, so that the fast path has begun the batch when it meets the buffer.
_CASES: dict[str, tuple[Any, Any, Any]] = {
    "value": (None, _wide(), None),
    "value with a key": (b"k", _wide(), None),
    "value with headers": (None, _wide(), [("h", b"1")]),
    "key": (_wide(), b"v", None),
    "key of a null value": (_wide(), None, None),
    "header value": (b"k", b"v", [("h", _wide())]),
}


def _plain(field: Any) -> Any:
    return bytes(field) if isinstance(field, memoryview) else field


def _expected(case: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
    key, value, headers = case
    hdrs = tuple((k, _plain(v)) for k, v in headers or ())
    return _plain(key), _plain(value), hdrs


@pytest.mark.parametrize("name", list(_CASES))
def test_encode_batch_writes_a_wide_memoryview_as_its_bytes(name: str) -> None:
    key, value, headers = _CASES[name]
    records = [(b"a", b"1", None, 5), (key, value, headers, 6), (None, b"3", None, 7)]
    got = [(r.key, r.value, r.headers) for r in _decoded(encode_batch(records))]
    assert got == [(b"a", b"1", ()), _expected(_CASES[name]), (None, b"3", ())]


@pytest.mark.parametrize("name", list(_CASES))
def test_encode_batch_columns_writes_a_wide_memoryview_as_its_bytes(name: str) -> None:
    key, value, headers = _CASES[name]
    values = [b"1", value, b"3"]
    stamps = [5 * _MS, 6 * _MS, 7 * _MS]
    keys = None if key is None else [b"a", key, None]
    hdrs = None if headers is None else [None, headers, None]
    data = encode_batch_columns(values, stamps, keys, hdrs)
    got = [(r.key, r.value, r.headers) for r in _decoded(data)]
    want_key_a = None if keys is None else b"a"
    assert got == [(want_key_a, b"1", ()), _expected(_CASES[name]), (None, b"3", ())]


def test_plain_values_column_takes_a_wide_memoryview() -> None:
    # Values only (no keys, no headers): the column-wise encoder, one pass per column.
    values: list[Any] = [b"x" * 70, _wide(), b"y"]
    stamps = [5 * _MS, 5 * _MS, 6 * _MS]
    got = [r.value for r in _decoded(encode_batch_columns(values, stamps))]
    assert got == [b"x" * 70, bytes(_wide()), b"y"]
    section = encode_records_section(values, stamps)
    if section is not None:  # None: left to encode_batch_columns' checked path
        body, base_ts, max_delta = section
        data = assemble_batch(body, len(values), base_ts, max_delta)
        assert [r.value for r in _decoded(data)] == got


def test_a_memoryview_of_bytes_encodes_as_the_bytes_do() -> None:
    view: Any = memoryview(b"abc")
    assert encode_batch([(view, view, [("h", view)], 5)]) == encode_batch(
        [(b"abc", b"abc", [("h", b"abc")], 5)]
    )
    assert encode_batch_columns([view], [0]) == encode_batch_columns([b"abc"], [0])


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ((None, array("i", [7]), None, 5), r"records\[1\] value"),
        ((None, array("b", [7]), None, 5), r"records\[1\] value"),
        ((array("i", [7]), b"v", None, 5), r"records\[1\] key"),
        ((b"k", b"v", [("h", array("i", [7]))], 5), r"records\[1\] headers\[0\] value"),
    ],
)
def test_encode_batch_refuses_an_array(record: tuple[Any, Any, Any, int], field: str) -> None:
    # As the checked path always did: an array is not bytes.
    with pytest.raises(TypeError, match=field + ".* array"):
        encode_batch([(None, b"0", None, 5), record])


@pytest.mark.parametrize("keyed", [False, True])
def test_encode_batch_columns_refuses_an_array(keyed: bool) -> None:
    keys = [b"k", b"k"] if keyed else None
    values: list[Any] = [b"0", array("i", [7])]
    with pytest.raises(TypeError, match=r"records\[1\] value.* array"):
        encode_batch_columns(values, [0, 0], keys)
