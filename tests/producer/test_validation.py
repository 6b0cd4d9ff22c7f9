"""The real Producer and the in-memory one apply the same argument rules.

Both go through kafka_asgi.producer.validation; here the same bad inputs are sent
to each and the exceptions (type and message) compared, and the serializers give
the same bytes.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from kafka_asgi.integrations.testing import InMemoryProducer
from kafka_asgi.producer import Producer
from tests.support.fake_client import FakeClient

pytestmark = pytest.mark.anyio


class Unserializable:
    def __repr__(self) -> str:
        return "<Unserializable>"


def failing_serializer(value: Any) -> bytes:
    raise RuntimeError("cannot serialize")


BAD_INPUTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("topic-int", {"topic": 3}, {}),
    ("topic-empty", {"topic": ""}, {}),
    ("topic-space", {"topic": "a b"}, {}),
    ("topic-dot", {"topic": "."}, {}),
    ("topic-too-long", {"topic": "x" * 250}, {}),
    ("topic-unhashable", {"topic": ["t"]}, {}),
    ("value-int", {"value": 12}, {}),
    ("value-float", {"value": 1.5}, {}),
    ("key-float", {"key": 1.5}, {}),
    ("key-object", {"key": Unserializable()}, {}),
    ("headers-str", {"headers": "h"}, {}),
    ("headers-int", {"headers": 5}, {}),
    ("headers-short-pair", {"headers": [("a",)]}, {}),
    ("headers-list-pair", {"headers": [["a", b"x"]]}, {}),
    ("header-name", {"headers": {1: b"x"}}, {}),
    ("header-value", {"headers": {"a": 1}}, {}),
    # Lone surrogates (os.fsdecode, surrogateescape) have no UTF-8 form.
    ("value-surrogate", {"value": "a\udcff"}, {}),
    ("key-surrogate", {"key": "\ud800"}, {}),
    ("header-name-surrogate", {"headers": {"\ud800": b"x"}}, {}),
    ("header-value-surrogate", {"headers": [("a", "\udcff")]}, {}),
    ("serializer-returns-surrogate", {"value": 5}, {"value_serializer": lambda v: "\ud800"}),
    ("partition-negative", {"partition": -1}, {}),
    ("partition-bool", {"partition": True}, {}),
    ("partition-str", {"partition": "0"}, {}),
    ("partition-float", {"partition": 1.5}, {}),
    ("partition-beyond-int32", {"partition": 1 << 31}, {}),
    ("timestamp-str", {"timestamp": "now"}, {}),
    ("timestamp-negative", {"timestamp": -1}, {}),
    ("timestamp-bool", {"timestamp": True}, {}),
    ("timestamp-huge", {"timestamp": 1 << 63}, {}),
    ("serializer-raises", {"value": {"a": 1}}, {"value_serializer": failing_serializer}),
    ("serializer-returns-int", {"value": {"a": 1}}, {"value_serializer": lambda v: 5}),
    ("json-unserializable", {"value": Unserializable()}, {"value_serializer": "json"}),
    ("key-serializer-raises", {"key": 7}, {"key_serializer": failing_serializer}),
    # JSON has no NaN or infinities: "NaN" on the wire would be refused by consumers.
    ("json-nan", {"value": {"a": math.nan}}, {"value_serializer": "json"}),
    ("json-inf-key", {"key": [math.inf]}, {"key_serializer": "json"}),
    # Several bad arguments: both fail on the same one first.
    ("value-and-partition", {"value": 1, "partition": -1}, {}),
    ("headers-and-timestamp", {"headers": 5, "timestamp": "x"}, {}),
    ("topic-and-value", {"topic": 3, "value": 1}, {}),
]


async def _real_error(kwargs: dict[str, Any], options: dict[str, Any], method: str) -> Exception:
    client = FakeClient()
    client.add_topic("t", 3)
    async with Producer(client=client, **options) as producer:
        args: dict[str, Any] = {"topic": "t", "value": b"v", **kwargs}
        with pytest.raises(Exception) as info:
            if method == "send":
                await producer.send(**args)
            else:
                producer.send_nowait(**args)
        assert producer.stats().enqueued == 0
    return info.value


async def _fake_error(kwargs: dict[str, Any], options: dict[str, Any], method: str) -> Exception:
    fake = InMemoryProducer(**options)
    args: dict[str, Any] = {"topic": "t", "value": b"v", **kwargs}
    with pytest.raises(Exception) as info:
        if method == "send":
            await fake.send(**args)
        else:
            fake.send_nowait(**args)
    assert fake.events == []
    return info.value


@pytest.mark.parametrize("method", ["send_nowait", "send"])
@pytest.mark.parametrize(
    ("kwargs", "options"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
async def test_same_bad_input_same_exception(
    anyio_backend: str, kwargs: dict[str, Any], options: dict[str, Any], method: str
) -> None:
    real = await _real_error(kwargs, options, method)
    fake = await _fake_error(kwargs, options, method)
    assert isinstance(real, (TypeError, ValueError)), repr(real)
    assert (type(fake), str(fake)) == (type(real), str(real))


GOOD_INPUTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("bytes", {"value": b"v", "key": b"k"}, {}),
    ("str", {"value": "vé", "key": "k"}, {}),
    ("bytearray-memoryview", {"value": bytearray(b"v"), "key": memoryview(b"k")}, {}),
    ("null-value", {"value": None}, {}),
    (
        "json",
        {"value": {"a": [1, "é"]}, "key": 5},
        {"value_serializer": "json", "key_serializer": "json"},
    ),
    ("callable-str", {"value": 12}, {"value_serializer": str}),
    ("bytes-skip-serializer", {"value": b"raw"}, {"value_serializer": "json"}),
    ("headers", {"headers": {"a": "x", "b": None, "c": bytearray(b"y")}}, {}),
    ("header-pairs", {"headers": [("a", b"1"), ("a", "2")]}, {}),
]


@pytest.mark.parametrize(
    ("kwargs", "options"), [c[1:] for c in GOOD_INPUTS], ids=[c[0] for c in GOOD_INPUTS]
)
async def test_same_input_same_bytes(
    anyio_backend: str, kwargs: dict[str, Any], options: dict[str, Any]
) -> None:
    client = FakeClient()
    client.add_topic("t", 1)
    async with Producer(client=client, **options) as producer:
        await producer.send("t", partition=0, timestamp=1000, **{"value": b"v", **kwargs})
    stored = client.logs[("t", 0)][0]
    fake = InMemoryProducer(**options)
    fake.send_nowait("t", partition=0, timestamp=1000, **{"value": b"v", **kwargs})
    event = fake.events[0]
    assert (event.value, event.key, event.headers) == (stored.value, stored.key, stored.headers)
    assert event.timestamp == stored.timestamp == 1000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value": "a\udcff"}, r"value 'a\\udcff' cannot be encoded as UTF-8"),
        ({"headers": {"\ud800": b"x"}}, r"header name '\\ud800' cannot be encoded as UTF-8"),
        ({"headers": {"a": "\udcff"}}, r"header 'a' value '\\udcff' cannot be encoded"),
    ],
)
async def test_unencodable_text_is_refused_at_the_call_and_spoils_no_batch(
    anyio_backend: str, kwargs: dict[str, Any], message: str
) -> None:
    # A header name used to be encoded with the batch: one bad name failed every
    # record of its batch.  Now each is refused at its call, naming the value.
    client = FakeClient()
    client.add_topic("t", 1)
    async with Producer(client=client, flush_time=60) as producer:
        producer.send_nowait("t", b"before")
        with pytest.raises(ValueError, match=message):
            producer.send_nowait("t", **{"value": b"v", **kwargs})
        producer.send_nowait("t", b"after")
        await producer.flush()
        assert producer.stats().failed == 0
    assert [r.value for r in client.logs[("t", 0)]] == [b"before", b"after"]


def _cyclic() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        ({"a": math.nan}, "Out of range float values are not JSON compliant"),
        ([math.inf], "Out of range float values are not JSON compliant"),
        (-math.inf, "Out of range float values are not JSON compliant"),
        (_cyclic(), "Circular reference detected"),
    ],
)
async def test_json_refuses_what_json_cannot_carry_as_value_error(
    anyio_backend: str, value: Any, cause: str
) -> None:
    # Before: NaN and infinities went out as "NaN"/"Infinity" (not JSON), and a
    # value the serializer refused was a TypeError whatever the reason.
    client = FakeClient()
    client.add_topic("t", 1)
    async with Producer(client=client, value_serializer="json") as producer:
        with pytest.raises(ValueError, match=f"value_serializer failed on .*{cause}"):
            producer.send_nowait("t", value)
        assert producer.stats().enqueued == 0
    with pytest.raises(ValueError, match=f"value_serializer failed on .*{cause}"):
        InMemoryProducer(value_serializer="json").send_nowait("t", value)


def test_bad_serializer_option_same_exception() -> None:
    with pytest.raises(TypeError) as real:
        Producer(client=FakeClient(), value_serializer=5)
    with pytest.raises(TypeError) as fake:
        InMemoryProducer(value_serializer=5)
    assert str(fake.value) == str(real.value)


@pytest.mark.parametrize(
    ("timeout", "exc"),
    [(math.nan, ValueError), (-1, ValueError), ("5", TypeError), (True, TypeError)],
)
async def test_flush_bad_timeout_same_exception(
    anyio_backend: str, timeout: Any, exc: type[Exception]
) -> None:
    # Before: NaN reached anyio ("deadline must not be NaN", not naming the argument),
    # and the in-memory producer took NaN and failed on "5" with a comparison's error.
    client = FakeClient()
    client.add_topic("t", 3)
    async with Producer(client=client) as producer:
        with pytest.raises(exc) as real:
            await producer.flush(timeout=timeout)
    # A closed producer with nothing held checks it too.
    with pytest.raises(exc):
        await producer.flush(timeout=timeout)
    with pytest.raises(exc) as fake:
        await InMemoryProducer().flush(timeout=timeout)
    assert "timeout must be None or a number of seconds" in str(real.value)
    assert repr(timeout) in str(real.value)
    assert str(fake.value) == str(real.value)
