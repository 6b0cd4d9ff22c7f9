"""AccessLogMiddleware and the request-scoped EventLogger, against in-memory producers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from kafka_asgi.integrations.asgi import AccessLogMiddleware, EventLogger
from kafka_asgi.integrations.fastapi import KafkaLogger, kafka_lifespan
from kafka_asgi.integrations.starlette import event_logger
from kafka_asgi.integrations.testing import InMemoryProducer, capture_events
from tests.support.asgi import run_lifespan, websocket_session

pytestmark = pytest.mark.anyio


def make_fastapi(middleware: bool = True, **middleware_options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int, kafka: KafkaLogger) -> dict[str, Any]:
        kafka.log("item-views", {"item": item_id})
        return {"item": item_id}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    @app.get("/sync")
    def sync_view(kafka: KafkaLogger) -> str:
        # A def endpoint runs in a worker thread.
        kafka.log("sync", b"raw")
        return "ok"

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                await anyio.sleep(0.01)
                yield b"x" * (i + 1)

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/health")
    async def health() -> str:
        return "ok"

    if middleware:
        app.add_middleware(AccessLogMiddleware, **middleware_options)
    return app


def client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 5555), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kwargs)


@pytest.fixture
def events() -> Iterator[InMemoryProducer]:
    with capture_events() as producer:
        yield producer


async def test_one_event_per_request_with_its_fields(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    async with client(make_fastapi(topic="access")) as c:
        r = await c.get("/items/42?x=1&y=2", headers={"user-agent": "pytest-ua"})
    assert r.status_code == 200
    (event,) = events.json_values("access")
    assert event["type"] == "http"
    assert event["method"] == "GET"
    assert event["scheme"] == "http"
    assert event["path"] == "/items/42"
    assert event["route"] == "/items/{item_id}"
    assert event["query"] == "x=1&y=2"
    assert event["status"] == 200
    assert event["response_bytes"] == len(r.content)
    assert event["request_bytes"] == 0
    assert event["client"] == "10.0.0.7"
    assert event["user_agent"] == "pytest-ua"
    assert event["http_version"] == "1.1"
    assert event["close_code"] is None
    assert 0 <= event["duration_ms"] < 5000
    assert abs(event["timestamp"] / 1000 - __import__("time").time()) < 60
    # Generated request id, echoed to the client and stamped on the handler's event.
    rid = r.headers["x-request-id"]
    assert len(rid) == 32 and event["request_id"] == rid
    (view,) = events.events_for("item-views")
    assert view.json() == {"request_id": rid, "route": "/items/{item_id}", "item": 42}
    assert view.header("request_id") == rid.encode()
    assert view.header("route") == b"/items/{item_id}"


async def test_incoming_request_id_is_kept_unless_unsafe(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    async with client(make_fastapi(topic="access")) as c:
        r1 = await c.get("/health", headers={"x-request-id": "abc-123"})
        r2 = await c.get("/health", headers={"x-request-id": "x" * 500})
    assert r1.headers["x-request-id"] == "abc-123"
    assert r2.headers["x-request-id"] != "x" * 500
    ids = [e["request_id"] for e in events.json_values("access")]
    assert ids == ["abc-123", r2.headers["x-request-id"]]


async def test_request_bytes_declared_and_chunked(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 10
        yield b"b" * 7

    async with client(make_fastapi(topic="access")) as c:
        r1 = await c.post("/echo", content=b"z" * 123)
        r2 = await c.post("/echo", content=body())  # chunked: no content-length
    assert r1.json() == {"n": 123} and r2.json() == {"n": 17}
    assert [e["request_bytes"] for e in events.json_values("access")] == [123, 17]


async def test_streaming_response(anyio_backend: str, events: InMemoryProducer) -> None:
    async with client(make_fastapi(topic="access")) as c:
        r = await c.get("/stream")
    assert r.content == b"x" * 15
    (event,) = events.json_values("access")
    assert event["response_bytes"] == 15
    assert event["route"] == "/stream"
    assert event["duration_ms"] >= 40  # five 10 ms chunks: measured to the last one


async def test_app_error_is_logged_as_500_and_still_raised(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    async with client(make_fastapi(topic="access")) as c:
        r = await c.get("/boom")
    assert r.status_code == 500
    (event,) = events.json_values("access")
    assert event["status"] == 500 and event["route"] == "/boom"


async def test_sync_endpoint_logs_from_a_thread(anyio_backend: str) -> None:
    producer = InMemoryProducer()
    app = make_fastapi(topic="access")
    app.router.lifespan_context = kafka_lifespan(producer_factory=lambda: producer)
    async with run_lifespan(app), client(app) as c:
        r = await c.get("/sync")
        await producer.wait_for(1, topic="sync")
    assert r.text == '"ok"'
    (event,) = producer.events_for("sync")
    assert event.value == b"raw"
    assert event.header("request_id") == r.headers["x-request-id"].encode()


async def test_options_fields_extra_enrich_key_serializer(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    def enrich(scope: Any, event: dict[str, Any]) -> None:
        event["tenant"] = dict(scope["headers"]).get(b"x-tenant", b"").decode()

    def serializer(event: dict[str, Any]) -> bytes:
        return b"custom:" + json.dumps(event, sort_keys=True).encode()

    app = make_fastapi(
        topic="access",
        fields=["status", "path", "request_id"],
        extra={"service": "shop"},
        enrich=enrich,
        key="path",
        serializer=serializer,
    )
    async with client(app) as c:
        r = await c.get("/health", headers={"x-tenant": "acme"})
    (event,) = events.events_for("access")
    assert event.key == b"/health"
    assert event.value is not None and event.value.startswith(b"custom:")
    body = json.loads(event.value[len(b"custom:") :])
    assert body == {
        "status": 200,
        "path": "/health",
        "request_id": r.headers["x-request-id"],
        "service": "shop",
        "tenant": "acme",
    }


async def test_exclusions_and_sampling(anyio_backend: str, events: InMemoryProducer) -> None:
    app = make_fastapi(topic="access", exclude_paths=["/health", "/items/*"])
    async with client(app) as c:
        await c.get("/health")
        r = await c.get("/items/1")
        await c.get("/stream")
    assert "x-request-id" not in r.headers
    assert [e["path"] for e in events.json_values("access")] == ["/stream"]

    events.clear()
    app = make_fastapi(topic="access", sample_rate=0.0)
    async with client(app) as c:
        r = await c.get("/health")
    assert r.status_code == 200 and "x-request-id" in r.headers
    assert events.events_for("access") == []


async def test_full_buffer_or_no_producer_never_changes_the_response(
    anyio_backend: str,
) -> None:
    mw: list[AccessLogMiddleware] = []

    def app_with(producer: InMemoryProducer | None) -> Any:
        outer = AccessLogMiddleware(
            make_fastapi(middleware=False),
            topic="outer",
            cluster="nowhere-registered",
            producer=producer,
        )
        mw.append(outer)
        return outer

    full = InMemoryProducer()
    full.buffer_full = True
    for app in (app_with(full), app_with(None)):
        async with client(app) as c:
            r = await c.get("/items/3")
            assert r.status_code == 200 and r.json() == {"item": 3}
            r = await c.get("/stream")
            assert r.content == b"x" * 15
    assert [m.stats() for m in mw] == [{"emitted": 0, "dropped": 2, "sampled_out": 0}] * 2


async def test_failing_enrich_is_a_drop_not_an_error(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    def enrich(scope: Any, event: dict[str, Any]) -> None:
        raise KeyError("oops")

    app = AccessLogMiddleware(make_fastapi(middleware=False), topic="access", enrich=enrich)
    async with client(app) as c:
        r = await c.get("/health")
    assert r.status_code == 200
    assert app.stats()["dropped"] == 1 and events.events_for("access") == []


@pytest.mark.parametrize(
    ("trusted", "xff", "expected"),
    [
        ((), "1.1.1.1", "10.0.0.7"),  # no trusted proxy: the peer address
        (["10.0.0.7"], "1.1.1.1", "1.1.1.1"),
        (["10.0.0.7"], "6.6.6.6, 1.1.1.1", "1.1.1.1"),  # only the last hop is vouched for
        (["10.0.0.0/8"], "6.6.6.6, 1.1.1.1, 10.2.3.4", "1.1.1.1"),
        ("*", "6.6.6.6, 1.1.1.1", "6.6.6.6"),  # every hop trusted: the first one
        (["10.0.0.7"], "10.0.0.7", "10.0.0.7"),
        (["192.168.0.1"], "1.1.1.1", "10.0.0.7"),  # the peer is not a trusted proxy
        (["*"], "6.6.6.6, 1.1.1.1", "6.6.6.6"),  # "*" as an entry (uvicorn's list form)
        (["::ffff:10.0.0.7"], "1.1.1.1", "1.1.1.1"),  # written as a dual-stack peer
    ],
)
async def test_client_address_and_trusted_proxies(
    anyio_backend: str, events: InMemoryProducer, trusted: Any, xff: str, expected: str
) -> None:
    app = make_fastapi(topic="access", trusted_proxies=trusted)
    async with client(app) as c:
        await c.get("/health", headers={"x-forwarded-for": xff})
    (event,) = events.json_values("access")
    assert event["client"] == expected


def starlette_app() -> Starlette:
    async def page(request: Any) -> PlainTextResponse:
        assert isinstance(request.state.kafka, EventLogger)
        event_logger(request).log("pages", {"page": request.path_params["name"]})
        return PlainTextResponse("hello")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        event_logger(websocket).log("ws-events", {"hello": True})
        text = await websocket.receive_text()
        await websocket.send_text(text * 2)
        await websocket.close(code=4001)

    async def ws_denied(websocket: WebSocket) -> None:
        await websocket.close()

    return Starlette(
        routes=[
            Route("/pages/{name}", page),
            WebSocketRoute("/ws/{room}", ws),
            WebSocketRoute("/denied", ws_denied),
        ],
        middleware=[Middleware(AccessLogMiddleware, topic="access")],
    )


async def test_starlette_http_and_websocket_sessions(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    app = starlette_app()
    async with client(app) as c:
        r = await c.get("/pages/about")
    sent = await websocket_session(
        app,
        "/ws/lobby",
        [{"type": "websocket.receive", "text": "hi"}],
        headers=[(b"x-request-id", b"ws-1")],
    )
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert (b"x-request-id", b"ws-1") in sent[0]["headers"]
    denied = await websocket_session(app, "/denied", [])
    assert [m["type"] for m in denied] == ["websocket.close"]

    http, session, refused = events.json_values("access")
    assert http["route"] == "/pages/{name}" and http["status"] == 200
    assert events.json_values("pages") == [
        {"request_id": r.headers["x-request-id"], "route": "/pages/{name}", "page": "about"}
    ]
    assert session["type"] == "websocket"
    assert session["scheme"] == "ws"
    assert session["route"] == "/ws/{room}"
    assert session["status"] == 101
    assert session["close_code"] == 4001
    assert session["request_id"] == "ws-1"
    assert session["client"] == "10.0.0.9"
    assert session["request_bytes"] == 2 and session["response_bytes"] == 4
    assert events.json_values("ws-events") == [
        {"request_id": "ws-1", "route": "/ws/{room}", "hello": True}
    ]
    # Refused before accept: an HTTP 403, no WebSocket and no close code.
    assert refused["status"] == 403 and refused["close_code"] is None


async def test_head_response_counts_no_body_bytes(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    # The app answers HEAD as GET (Starlette does); the server sends the headers only,
    # so the event counts no body, as nginx's $body_bytes_sent does.
    async with client(starlette_app()) as c:
        got = await c.get("/pages/about")
        head = await c.head("/pages/about")
    assert got.content == b"hello" and head.status_code == 200
    get_event, head_event, *_ = events.json_values("access")
    assert get_event["method"] == "GET" and get_event["response_bytes"] == 5
    assert head_event["method"] == "HEAD" and head_event["response_bytes"] == 0
    assert head_event["status"] == 200


async def test_websocket_closed_by_the_client(anyio_backend: str, events: InMemoryProducer) -> None:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            await websocket.send(
                {
                    "type": "websocket.send",
                    "text": message.get("text"),
                    "bytes": message.get("bytes"),
                }
            )

    app = AccessLogMiddleware(Starlette(routes=[WebSocketRoute("/echo", echo)]), topic="access")
    await websocket_session(
        app,
        "/echo",
        [
            {"type": "websocket.receive", "text": "abc"},
            {"type": "websocket.receive", "bytes": b"12345"},
            {"type": "websocket.disconnect", "code": 1001},
        ],
    )
    (session,) = events.json_values("access")
    assert session["close_code"] == 1001 and session["status"] == 101
    assert session["request_bytes"] == 8 and session["response_bytes"] == 8


@pytest.mark.parametrize(
    ("options", "exc", "match"),
    [
        ({"topic": ""}, ValueError, "topic"),
        ({"fields": ["status", "nope"]}, ValueError, "nope"),
        ({"fields": "status"}, TypeError, "fields"),
        ({"sample_rate": 1.5}, ValueError, "sample_rate"),
        ({"exclude_paths": ["health"]}, ValueError, "health"),
        ({"exclude_paths": "/health"}, TypeError, "exclude_paths"),
        ({"key": "nope"}, ValueError, "nope"),
        ({"key": 3}, TypeError, "key"),
        ({"enrich": "x"}, TypeError, "enrich"),
        ({"trusted_proxies": "10.0.0.1"}, ValueError, "trusted_proxies"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, ValueError, "trusted_proxies"),
        # A host name or a pattern never matches a peer's address: refused, not ignored.
        ({"trusted_proxies": ["localhost"]}, ValueError, "'localhost'"),
        ({"trusted_proxies": ["10.0.0.*"]}, ValueError, "'10.0.0.\\*'"),
        ({"trusted_proxies": None}, TypeError, "trusted_proxies"),
        ({"trusted_proxies": [7]}, TypeError, "trusted_proxies"),
        # Every event would be dropped.
        ({"serializer": None}, TypeError, "serializer must be callable, not None"),
        ({"websockets": "no"}, TypeError, "websockets must be True or False, not 'no'"),
        ({"echo_request_id": 1}, TypeError, "echo_request_id"),
        ({"trust_request_id": None}, TypeError, "trust_request_id"),
        ({"request_id_header": ""}, ValueError, "request_id_header"),
        # Echoed in every response: a name HTTP does not allow would break each one.
        ({"request_id_header": "x request id"}, ValueError, "'x request id'"),
        ({"request_id_header": "x-id:"}, ValueError, "'x-id:'"),
        # A topic Kafka cannot have: every event would be refused.
        ({"topic": "access logs"}, ValueError, "invalid topic name 'access logs'"),
        ({"topic": 5}, TypeError, "topic must be a str"),
        ({"exclude_paths": 5}, TypeError, "exclude_paths must be a collection of paths, not 5"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], exc: type[Exception], match: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    with pytest.raises(exc, match=match):
        AccessLogMiddleware(app, **options)


async def test_event_logger_without_middleware_and_bad_topic(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    app = FastAPI()

    @app.get("/x")
    async def x(kafka: KafkaLogger) -> str:
        with pytest.raises(ValueError, match="topic"):
            kafka.log("", {})
        assert kafka.log("t", [1, 2]) is True
        return kafka.request_id

    async with client(app) as c:
        r = await c.get("/x")
    (event,) = events.events_for("t")
    assert event.json() == [1, 2]  # not a mapping: stamped in headers only
    assert event.header("request_id") == r.json().encode()
    assert event.header("route") == b"/x"


async def test_template_fast_path_matches_the_general_path(anyio_backend: str) -> None:
    """Default options format the event straight into JSON; ``fields=`` (all of them)
    takes the dict-and-serializer path. Both must produce the same event."""
    from kafka_asgi.integrations.asgi import ACCESS_LOG_FIELDS

    extra = {"service": "50% off", "n": 1}
    fast = make_fastapi(topic="fast", extra=extra)
    slow = make_fastapi(topic="slow", extra=extra, fields=list(ACCESS_LOG_FIELDS))
    with capture_events() as events:
        for app in (fast, slow):
            async with client(app) as c:
                await c.get(
                    "/items/7?q=%22caf%C3%A9%22",
                    headers={
                        "x-request-id": "same-id",
                        "user-agent": 'ua "quoted" é'.encode("latin-1"),
                    },
                )
        (a,) = events.json_values("fast")
        (b,) = events.json_values("slow")
    for e in (a, b):
        e.pop("duration_ms")
        e.pop("timestamp")
    assert a == b
    assert a["service"] == "50% off" and a["user_agent"] == 'ua "quoted" é'
    assert a["route"] == "/items/{item_id}" and a["request_id"] == "same-id"
    assert list(a) == [f for f in ACCESS_LOG_FIELDS if f not in ("duration_ms", "timestamp")] + [
        "service",
        "n",
    ]


class _Scope(dict):  # type: ignore[type-arg]
    """A scope that can be weakly referenced (a plain dict cannot)."""


async def test_scope_is_freed_when_the_exchange_is_over(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    """The request's EventLogger lets go of the scope at the end (keeping the route
    for late events): the scope holds the logger, so keeping it would make a cycle and
    leave every scope to the cyclic collector."""
    import gc
    import weakref

    loggers: list[EventLogger] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = "/things/{id}"
        loggers.append(scope["state"]["kafka"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:  # pragma: no cover - the app never reads
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    mw = AccessLogMiddleware(app, topic="access")
    scope = _Scope(
        type="http",
        method="GET",
        path="/things/1",
        query_string=b"",
        headers=[(b"host", b"x")],
        client=("10.0.0.1", 1),
    )
    ref = weakref.ref(scope)
    gc.disable()
    try:
        await mw(scope, receive, send)
        del scope
        assert ref() is None
    finally:
        gc.enable()
    (logger,) = loggers
    assert logger.route == "/things/{id}"
    assert logger.log("late", {"n": 1}) is True
    assert events.json_values("late") == [
        {"request_id": logger.request_id, "route": "/things/{id}", "n": 1}
    ]
    (event,) = events.json_values("access")
    assert event["route"] == "/things/{id}" and event["status"] == 204


async def test_producer_from_the_lifespan_state(anyio_backend: str) -> None:
    """Without producer=, the middleware takes the cluster's producer from the lifespan
    state the server copies into each request's scope."""
    in_state = InMemoryProducer()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:  # pragma: no cover - the app never reads
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    mw = AccessLogMiddleware(app, topic="access", cluster="from-state")
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [],
        "state": {"kafka_producers": {"from-state": in_state}},
    }
    await mw(scope, receive, send)
    (event,) = in_state.json_values("access")
    assert event["path"] == "/" and event["response_bytes"] == 2
    assert mw.stats() == {"emitted": 1, "dropped": 0, "sampled_out": 0}


async def _call(app: Any, path: str = "/") -> list[dict[str, Any]]:
    """One HTTP request through ``app`` driven by hand; the messages the server got."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("10.0.0.7", 5555),
        "server": ("testserver", 80),
        "extensions": {"http.response.pathsend": {}},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_shared_start_message_gets_one_request_id_per_response(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    # A plain ASGI app sending the same start message every time: each response
    # carries its own request id once, and the app's message is left as it was (the
    # code before stored each id in it, so the third response had three).
    start = {"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = AccessLogMiddleware(app, topic="access")
    echoed = []
    for _ in range(3):
        first = (await _call(wrapped))[0]
        ids = [v for n, v in first["headers"] if n == b"x-request-id"]
        assert len(ids) == 1
        echoed.append(ids[0].decode())
    assert start["headers"] == [(b"x-app", b"1")]
    assert echoed == [e["request_id"] for e in events.json_values("access")]
    assert len(set(echoed)) == 3


async def test_the_apps_own_request_id_header_wins(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"X-Request-ID", b"app-made")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    first = (await _call(AccessLogMiddleware(app, topic="access")))[0]
    assert [v for n, v in first["headers"] if n.lower() == b"x-request-id"] == [b"app-made"]
    assert len(events.json_values("access")) == 1


async def test_a_pathsend_response_counts_the_files_bytes(
    anyio_backend: str, events: InMemoryProducer, tmp_path: Any
) -> None:
    # Starlette's FileResponse hands the file to the server when it offers the
    # extension: no body message passes the middleware.
    served = tmp_path / "report.csv"
    served.write_bytes(b"x" * 12_345)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(served)})

    sent = await _call(AccessLogMiddleware(app, topic="access"))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.pathsend"]
    (event,) = events.json_values("access")
    assert event["response_bytes"] == 12_345
    assert event["status"] == 200


def test_a_dual_stack_peer_matches_its_ipv4_network() -> None:
    options = AccessLogMiddleware(lambda *a: None, trusted_proxies=["10.0.0.0/8"])
    assert options.resolve_client("::ffff:10.0.0.7", "1.1.1.1") == "1.1.1.1"
    assert options.resolve_client("::ffff:11.0.0.7", "1.1.1.1") == "::ffff:11.0.0.7"
