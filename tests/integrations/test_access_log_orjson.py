"""The default HTTP access-log event: orjson (the extra) and the pure-Python template
produce the same event, for every shape the fast paths cover."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kafka_asgi.integrations import access_log_event
from kafka_asgi.integrations.access_log import AccessLogMiddleware
from kafka_asgi.integrations.testing import InMemoryProducer

pytest.importorskip("orjson")
pytestmark = pytest.mark.anyio

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def app(scope: Any, receive: Any, send: Any) -> None:
    scope["route"] = "/items/{id}"
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": "é\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"!"})


async def receive() -> dict[str, Any]:  # pragma: no cover - the app never reads
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    pass


def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": '/items/"café"\\\t',
        "query_string": "q=%22x%22&é=1".encode(),
        "headers": [
            (b"user-agent", 'ua "quoted" \\ é\x01'.encode("latin-1")),
            (b"x-request-id", b"same-id"),
            (b"content-length", b"12"),
            *headers,
        ],
        "client": ("10.0.0.9", 4000),
    }


async def event(
    monkeypatch: pytest.MonkeyPatch, pure: bool, headers: list[tuple[bytes, bytes]], **options: Any
) -> tuple[bytes, AccessLogMiddleware]:
    if pure:
        monkeypatch.setattr(access_log_event, "ORJSON_DUMPS", None)
    else:
        monkeypatch.undo()
        assert access_log_event.ORJSON_DUMPS is not None
    producer = InMemoryProducer()
    mw = AccessLogMiddleware(app, topic="t", producer=producer, **options)
    await mw(scope(headers), receive, send)
    (record,) = producer.events_for("t")
    assert isinstance(record.value, bytes)
    return record.value, mw


@pytest.mark.parametrize(
    ("options", "headers"),
    [
        ({}, []),
        ({}, [(b"traceparent", TRACEPARENT)]),
        ({"trace_context": False}, [(b"traceparent", TRACEPARENT)]),
        ({"extra": {"service": "50% off", "n": 1, "tags": ["a"]}}, []),
        ({"extra": {"service": "s"}, "trace_context": False}, []),
    ],
)
async def test_orjson_and_template_events_are_equal(
    anyio_backend: str,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    headers: list[tuple[bytes, bytes]],
) -> None:
    fast, fast_mw = await event(monkeypatch, False, headers, **options)
    pure, pure_mw = await event(monkeypatch, True, headers, **options)
    a, b = json.loads(fast), json.loads(pure)
    # Both to the microsecond; the two requests did not take the same time.
    for e in (a, b):
        duration = e.pop("duration_ms")
        assert duration >= 0 and round(duration, 3) == duration
    assert abs(a.pop("timestamp") - b.pop("timestamp")) < 60_000
    assert a == b
    assert list(a) == list(b)  # the same field order
    assert a["path"] == '/items/"café"\\\t' and a["user_agent"] == 'ua "quoted" \\ é\x01'
    assert a["route"] == "/items/{id}" and a["request_id"] == "same-id"
    assert a["status"] == 201 and a["response_bytes"] == len("é\n!".encode())
    assert a["request_bytes"] == 12 and a["query"] == "q=%22x%22&é=1".encode().decode("latin-1")
    if options.get("trace_context", True):
        traced = bool(headers)
        assert a["trace_id"] == ("0af7651916cd43dd8448eb211c80319c" if traced else None)
        assert a["span_id"] == ("b7ad6b7169203331" if traced else None)
    else:
        assert "trace_id" not in a and "span_id" not in a
    for key, value in options.get("extra", {}).items():
        assert a[key] == value
    assert fast_mw.stats() == pure_mw.stats() == {"emitted": 1, "dropped": 0, "sampled_out": 0}


async def test_duration_to_the_microsecond_on_both_paths(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for pure in (False, True):
        value, _ = await event(monkeypatch, pure, [])
        duration = json.loads(value)["duration_ms"]
        assert duration >= 0 and round(duration, 3) == duration


async def test_unencodable_path_is_a_drop_on_both_paths(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for pure in (False, True):
        if pure:
            monkeypatch.setattr(access_log_event, "ORJSON_DUMPS", None)
        producer = InMemoryProducer()
        mw = AccessLogMiddleware(app, topic="t", producer=producer)
        bad = scope([])
        bad["path"] = "/\udcff"  # a lone surrogate: no UTF-8 for it
        await mw(bad, receive, send)
        assert producer.events_for("t") == []
        assert mw.stats() == {"emitted": 0, "dropped": 1, "sampled_out": 0}
