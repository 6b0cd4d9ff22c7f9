"""Trace context in the access-log middlewares, with the in-memory producer: the fast
(template) and general (dict) paths agree, WebSocket sessions and the request logger
carry the trace, and trace_context=False leaves it all out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket

from kafka_asgi.integrations import AccessLogMiddleware
from kafka_asgi.integrations.access_log_event import ACCESS_LOG_FIELDS, AccessLogOptions
from kafka_asgi.integrations.event_logger import get_event_logger
from kafka_asgi.integrations.fastapi import KafkaLogger
from kafka_asgi.integrations.testing import capture_events

pytestmark = pytest.mark.anyio

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def make_app(**options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{n}")
    async def item(n: int, kafka: KafkaLogger) -> dict[str, int]:
        kafka.log("views", {"n": n})
        kafka.log("own", b"raw", headers={"traceparent": b"mine"})
        return {"n": n}

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hi")
        await socket.close()

    app.add_middleware(AccessLogMiddleware, topic="access", **options)
    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.parametrize("traceparent", [TRACEPARENT, None, "00-nonsense"])
async def test_template_and_general_path_agree(anyio_backend: str, traceparent: str | None) -> None:
    headers = {"x-request-id": "rid"} | ({"traceparent": traceparent} if traceparent else {})
    with capture_events() as events:
        for app in (make_app(), make_app(fields=list(ACCESS_LOG_FIELDS))):
            async with client(app) as c:
                await c.get("/items/1", headers=headers)
        fast, slow = events.json_values("access")
    for e in (fast, slow):
        e.pop("duration_ms")
        e.pop("timestamp")
    assert fast == slow
    assert list(fast)[-2:] == ["trace_id", "span_id"]
    if traceparent == TRACEPARENT:
        assert (fast["trace_id"], fast["span_id"]) == (TRACE, PARENT)
    else:
        assert fast["trace_id"] is None and fast["span_id"] is None


async def test_request_logger_headers(anyio_backend: str) -> None:
    with capture_events() as events:
        async with client(make_app()) as c:
            await c.get("/items/1", headers={"traceparent": TRACEPARENT, "tracestate": "a=b"})
            await c.get("/items/2")
        first, second = events.events_for("views")
        (own, _) = events.events_for("own")
    assert first.header("traceparent") == TRACEPARENT.encode()
    assert first.header("tracestate") == b"a=b"
    assert "traceparent" not in dict(second.headers)
    # A traceparent the handler sets itself is the only one.
    assert [h for h in own.headers if h[0] == "traceparent"] == [("traceparent", b"mine")]


async def test_trace_context_off(anyio_backend: str) -> None:
    with capture_events() as events:
        for app in (
            make_app(trace_context=False),
            make_app(trace_context=False, extra={"svc": "x"}, key="request_id"),
        ):
            async with client(app) as c:
                await c.get("/items/1", headers={"traceparent": TRACEPARENT})
        for event in events.json_values("access"):
            assert "trace_id" not in event and "span_id" not in event
        for view in events.events_for("views"):
            assert "traceparent" not in dict(view.headers)


def test_trace_options_are_checked() -> None:
    with pytest.raises(ValueError, match="trace_context=True"):
        AccessLogOptions(trace_context=False, fields=["path", "trace_id"])
    with pytest.raises(ValueError, match="trace_context=True"):
        AccessLogOptions(trace_context=False, key="span_id")
    with pytest.raises(TypeError, match="trace_context"):
        AccessLogOptions(trace_context="no")  # type: ignore[arg-type]


async def test_websocket_session_carries_the_trace(anyio_backend: str) -> None:
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"t"), (b"traceparent", TRACEPARENT.encode())],
        "client": ("10.0.0.9", 4321),
        "subprotocols": [],
    }
    script = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return script.pop(0) if script else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with capture_events() as events:
        await make_app()(scope, receive, send)
        (session,) = events.json_values("access")
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert session["type"] == "websocket"
    assert (session["trace_id"], session["span_id"]) == (TRACE, PARENT)


def test_logger_without_middleware_takes_the_header() -> None:
    scope: dict[str, Any] = {"type": "http", "headers": [(b"traceparent", TRACEPARENT.encode())]}
    logger = get_event_logger(scope)
    assert logger.trace is not None and logger.trace[:2] == (TRACE, PARENT)
