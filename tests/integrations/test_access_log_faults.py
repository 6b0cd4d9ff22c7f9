"""The ASGI access log where requests and apps leave the common path: header fields on
several lines, work after the response's end, WebSocket apps that never answer."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

from kafka_asgi.integrations import access_log, access_log_event
from kafka_asgi.integrations.asgi import AccessLogMiddleware
from kafka_asgi.integrations.event_logger import get_event_logger
from kafka_asgi.integrations.testing import InMemoryProducer, capture_events
from tests.support.asgi import websocket_session

pytestmark = pytest.mark.anyio

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{SPAN}-01".encode()


@pytest.fixture
def events() -> Iterator[InMemoryProducer]:
    with capture_events() as producer:
        yield producer


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def logging_app(scope: Any, receive: Any, send: Any) -> None:
    get_event_logger(scope).log("orders", {"n": 1})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_tracestate_on_several_lines_is_one_list(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    app = AccessLogMiddleware(logging_app)
    async with client(app) as c:
        await c.get(
            "/",
            headers=[
                (b"traceparent", TRACEPARENT),
                (b"tracestate", b"congo=t61rcWkgMzE"),
                (b"tracestate", b"rojo=00f067aa0ba902b7"),
            ],
        )
    (order,) = events.events_for("orders")
    assert order.header("traceparent") == TRACEPARENT
    # RFC 9110, section 5.3: both lines, in order (the WSGI servers' join).
    assert order.header("tracestate") == b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    (access,) = events.json_values("access-log")
    assert (access["trace_id"], access["span_id"]) == (TRACE, SPAN)


async def test_a_traceparent_on_two_lines_starts_no_trace(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    other = b"00-11111111111111111111111111111111-2222222222222222-01"
    app = AccessLogMiddleware(logging_app)
    async with client(app) as c:
        await c.get("/", headers=[(b"traceparent", TRACEPARENT), (b"traceparent", other)])
    (access,) = events.json_values("access-log")
    assert access["trace_id"] is None and access["span_id"] is None
    (order,) = events.events_for("orders")
    assert "traceparent" not in dict(order.headers)


async def test_the_timestamp_is_the_response_end_not_the_app_return(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    answered: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        answered.append(time.time())
        # Work after the last chunk, as Starlette's background tasks do.
        await anyio.sleep(0.5)

    async with client(AccessLogMiddleware(app)) as c:
        await c.get("/")
    (access,) = events.json_values("access-log")
    assert abs(access["timestamp"] / 1000 - answered[0]) < 0.2
    assert access["duration_ms"] < 200


@pytest.mark.parametrize("how", ["raises", "returns"])
async def test_a_websocket_app_without_a_handshake_is_logged_as_the_servers_500(
    anyio_backend: str, events: InMemoryProducer, how: str
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        if how == "raises":
            raise RuntimeError("before accepting")

    with pytest.raises(RuntimeError) if how == "raises" else _nothing():
        await websocket_session(AccessLogMiddleware(app), "/ws", [])
    (access,) = events.json_values("access-log")
    assert access["type"] == "websocket"
    assert access["status"] == 500


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def http_scope(headers: list[tuple[bytes, bytes]], http_version: str = "1.1") -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": http_version,
        "method": "POST",
        "scheme": "http",
        "path": "/upload",
        "query_string": b"",
        "headers": headers,
        "client": ("10.0.0.9", 4000),
    }


def body_of(size: int) -> Any:
    """A receive giving ``size`` bytes in two chunks, as a chunked or HTTP/2+ body."""
    chunks = [
        {"type": "http.request", "body": b"x" * (size - size // 2), "more_body": True},
        {"type": "http.request", "body": b"x" * (size // 2), "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    return receive


async def reading_app(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def discard(message: Any) -> None:
    pass


@pytest.fixture(params=["template", "orjson"])
def json_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "template":
        monkeypatch.setattr(access_log_event, "ORJSON_DUMPS", None)
    elif access_log_event.ORJSON_DUMPS is None:
        pytest.skip("orjson (the extra) is not installed")
    return str(request.param)


@pytest.mark.parametrize(
    ("headers", "http_version"),
    [
        # A Content-Length h11 lets through, beyond an int64: orjson refused the event.
        ([(b"content-length", b"9" * 20)], "1.1"),
        # RFC 9112, section 6.3: Transfer-Encoding overrides Content-Length.
        ([(b"content-length", b"5"), (b"transfer-encoding", b"chunked")], "1.1"),
        # HTTP/3, as HTTP/2, frames the body itself: no Content-Length to go by.
        ([], "3"),
    ],
    ids=["content-length-beyond-int64", "content-length-and-chunked", "http3"],
)
async def test_request_bytes_are_what_was_read_where_no_length_holds(
    anyio_backend: str, json_path: str, headers: list[tuple[bytes, bytes]], http_version: str
) -> None:
    producer = InMemoryProducer()
    app = AccessLogMiddleware(reading_app, producer=producer)
    await app(http_scope(headers, http_version), body_of(100), discard)
    (event,) = producer.json_values("access-log")
    assert event["request_bytes"] == 100
    assert app.stats()["dropped"] == 0


async def test_a_response_with_trailers_ends_with_them(anyio_backend: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"data"})
        await anyio.sleep(0.3)  # a gRPC-style status computed after the body
        await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")]})

    producer = InMemoryProducer()
    await AccessLogMiddleware(app, producer=producer)(http_scope([]), body_of(2), discard)
    (event,) = producer.json_values("access-log")
    assert event["duration_ms"] >= 250 and event["response_bytes"] == 4


@pytest.mark.parametrize("nanoseconds", [4_500, 1_234_500, 2_000_499, 999_999_500])
async def test_both_json_paths_round_the_duration_alike(
    anyio_backend: str, json_path: str, monkeypatch: pytest.MonkeyPatch, nanoseconds: int
) -> None:
    clock = iter([1_000_000_000, 1_000_000_000 + nanoseconds, 1_000_000_000 + nanoseconds])
    monkeypatch.setattr(access_log, "_perf_ns", lambda: next(clock))
    producer = InMemoryProducer()
    await AccessLogMiddleware(reading_app, producer=producer)(
        http_scope([(b"content-length", b"2")]), body_of(2), discard
    )
    (event,) = producer.json_values("access-log")
    # Half a microsecond up, as the orjson path always did.
    assert event["duration_ms"] == (nanoseconds + 500) // 1000 / 1000


@pytest.mark.parametrize(
    ("peer", "trusted", "forwarded", "expected"),
    [
        # Proxies that add the port to the entry (uvicorn strips it too).
        (("10.0.0.1", 80), ["10.0.0.1"], "1.2.3.4:5678", "1.2.3.4"),
        (("10.0.0.1", 80), ["10.0.0.1"], "[2001:db8::7]:443", "2001:db8::7"),
        (("10.0.0.1", 80), ["10.0.0.1"], "1.2.3.4, 10.0.0.2:80", "10.0.0.2"),
        (("10.0.0.1", 80), ["10.0.0.1", "10.0.0.2"], "1.2.3.4, 10.0.0.2:80", "1.2.3.4"),
        (("10.0.0.1", 80), ["10.0.0.1"], "2001:db8::8", "2001:db8::8"),
        # A Unix socket's peer (no address): a proxy when every peer is trusted.
        (None, ["*"], "1.2.3.4", "1.2.3.4"),
        (None, ["10.0.0.1"], "1.2.3.4", None),
    ],
)
async def test_forwarded_client_addresses(
    anyio_backend: str,
    peer: tuple[str, int] | None,
    trusted: list[str],
    forwarded: str,
    expected: str | None,
) -> None:
    producer = InMemoryProducer()
    scope = http_scope([(b"x-forwarded-for", forwarded.encode())])
    scope["client"] = peer
    app = AccessLogMiddleware(reading_app, producer=producer, trusted_proxies=trusted)
    await app(scope, body_of(2), discard)
    (event,) = producer.json_values("access-log")
    assert event["client"] == expected


def _reading_starlette(log: list[str]) -> Any:
    """A Starlette app whose POST reads the body, under the access log."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def upload(request: Request) -> PlainTextResponse:
        try:
            body = await request.body()
        except Exception as exc:
            log.append(type(exc).__name__)
            raise
        return PlainTextResponse(str(len(body)))

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("the app's own failure")

    class Chunks:
        """Two chunks; no async generator, which a send failing midway would leave to
        the collector to close."""

        def __init__(self) -> None:
            self.left = [b"first", b"second"]

        def __aiter__(self) -> Chunks:
            return self

        async def __anext__(self) -> bytes:
            if not self.left:
                raise StopAsyncIteration
            return self.left.pop(0)

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(Chunks())

    return Starlette(
        routes=[
            Route("/upload", upload, methods=["POST"]),
            Route("/boom", boom, methods=["POST"]),
            Route("/stream", stream, methods=["POST"]),
        ],
        middleware=[Middleware(AccessLogMiddleware, topic="access")],
    )


def _gone_after(chunks: int) -> Any:
    """A receive giving ``chunks`` parts of a body, then the client's disconnect."""
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent < chunks:
            sent += 1
            return {"type": "http.request", "body": b"x" * 10, "more_body": True}
        return {"type": "http.disconnect"}

    return receive


def _failing_send(after: int) -> Any:
    """The send of an ASGI 2.4 server whose client has gone: OSError after ``after``
    messages."""
    count = 0

    async def send(message: Any) -> None:
        nonlocal count
        count += 1
        if count > after:
            raise OSError("the client closed the connection")

    return send


async def test_a_client_gone_before_the_response_is_logged_499_as_nginx_does(
    anyio_backend: str, json_path: str, events: InMemoryProducer
) -> None:
    from starlette.requests import ClientDisconnect

    log: list[str] = []
    app = _reading_starlette(log)
    scope = {**http_scope([(b"content-length", b"1000")]), "path": "/upload"}
    with pytest.raises(ClientDisconnect):  # still raised, for the server
        await app(scope, _gone_after(2), discard)
    assert log == ["ClientDisconnect"]
    # The app's own failure before answering stays the server's 500.
    with pytest.raises(RuntimeError):
        await app({**http_scope([]), "path": "/boom"}, body_of(4), discard)
    # An ASGI 2.4 server's send failing on the start message: nothing was answered.
    scope24 = {**http_scope([]), "path": "/stream", "asgi": {"spec_version": "2.4"}}
    with pytest.raises(ClientDisconnect):
        await app(scope24, body_of(4), _failing_send(0))
    # Failing after the body began: the status the client got, and the bytes handed over.
    with pytest.raises(ClientDisconnect):
        await app(scope24, body_of(4), _failing_send(2))
    upload, boom, at_start, midway = events.json_values("access")
    assert (upload["status"], upload["path"], upload["response_bytes"]) == (499, "/upload", 0)
    assert boom["status"] == 500
    assert (at_start["status"], at_start["response_bytes"]) == (499, 0)
    assert (midway["status"], midway["response_bytes"]) == (200, len(b"firstsecond"))


@contextlib.asynccontextmanager
async def _uvicorn(app: Any) -> AsyncIterator[int]:
    """``app`` served by uvicorn on a free port (yielded) until the block ends."""
    import uvicorn

    from tests.support.ports import free_port
    from tests.support.timing import eventually, scaled

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="critical")
    server = uvicorn.Server(config)
    with anyio.fail_after(scaled(30)):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            assert await eventually(lambda: server.started, 10)
            yield port
            server.should_exit = True


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn runs on asyncio
async def test_a_client_gone_mid_upload_under_uvicorn_is_logged_499(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    from tests.support.timing import eventually

    log: list[str] = []
    async with _uvicorn(_reading_starlette(log)) as port:
        # A 1,000-byte upload of which 10 bytes come, then the client leaves.
        stream = await anyio.connect_tcp("127.0.0.1", port)
        await stream.send(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
        )
        await anyio.sleep(0.2)  # the app is reading the body meanwhile
        await stream.aclose()
        assert await eventually(lambda: bool(events.json_values("access")), 10)
        # A whole upload on a new connection: answered and logged as usual.
        async with httpx.AsyncClient() as http:
            r = await http.post(f"http://127.0.0.1:{port}/upload", content=b"y" * 1000)
        assert r.text == "1000"
    gone, whole = events.json_values("access")
    assert log == ["ClientDisconnect"]
    assert (gone["status"], gone["request_bytes"], gone["response_bytes"]) == (499, 1000, 0)
    assert (whole["status"], whole["response_bytes"]) == (200, 4)


async def _long_poll(scope: Any, receive: Any, send: Any) -> None:
    """A raw ASGI long poll: reads the request, waits for the client, and returns
    without answering once it has gone (as servers allow after http.disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _answers_after_disconnect(scope: Any, receive: Any, send: Any) -> None:
    """Hears the client go, and answers anyway (the server drops it)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b"late"})


async def _reads_after_answering(scope: Any, receive: Any, send: Any) -> None:
    """Answers, then calls receive: http.disconnect there only says the response is done."""
    assert (await receive())["type"] == "http.request"
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"made"})
    assert (await receive())["type"] == "http.disconnect"


def _then_disconnect() -> Any:
    """A receive giving the whole (empty) request, then the client's disconnect."""
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    return receive


@pytest.mark.parametrize(
    "headers",
    [[], [(b"content-length", b"0")], [(b"transfer-encoding", b"chunked")]],
    ids=["no-body", "content-length", "chunked"],
)
async def test_an_app_that_heard_the_client_go_before_answering_is_logged_499(
    anyio_backend: str,
    json_path: str,
    events: InMemoryProducer,
    headers: list[tuple[bytes, bytes]],
) -> None:
    scope = {**http_scope(headers), "method": "GET", "path": "/poll"}
    for app in (_long_poll, _answers_after_disconnect, _reads_after_answering):
        await AccessLogMiddleware(app, topic="access")(dict(scope), _then_disconnect(), discard)
    returned, answered, done = events.json_values("access")
    # Returned without a response after http.disconnect: the server sent nothing (uvicorn
    # sends its 500 only to a client still there).
    assert (returned["status"], returned["response_bytes"]) == (499, 0)
    # Answered after it: the server dropped the response.
    assert (answered["status"], answered["response_bytes"]) == (499, 0)
    # http.disconnect after the response was complete: the request was served.
    assert (done["status"], done["response_bytes"]) == (201, 4)


async def test_an_app_returning_without_an_answer_to_a_client_still_there_is_a_500(
    anyio_backend: str, json_path: str, events: InMemoryProducer
) -> None:
    async def returns(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the request; the client stays

    scope = {**http_scope([]), "method": "GET", "path": "/nothing"}
    await AccessLogMiddleware(returns, topic="access")(scope, _then_disconnect(), discard)
    (event,) = events.json_values("access")
    assert (event["status"], event["response_bytes"]) == (500, 0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn runs on asyncio
async def test_a_long_poll_whose_client_left_under_uvicorn_is_logged_499(
    anyio_backend: str, events: InMemoryProducer
) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tests.support.timing import eventually

    async def poll(request: Request) -> PlainTextResponse:
        # The long poll of Starlette's docs: wait until there is news or the client left.
        while not await request.is_disconnected():
            if request.query_params.get("news"):
                return PlainTextResponse("news")
            await anyio.sleep(0.02)
        return PlainTextResponse("nobody left to tell")

    app = Starlette(
        routes=[Route("/poll", poll)],
        middleware=[Middleware(AccessLogMiddleware, topic="access")],
    )
    async with _uvicorn(app) as port:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        await stream.send(b"GET /poll HTTP/1.1\r\nHost: t\r\n\r\n")
        await anyio.sleep(0.2)  # the app polls meanwhile
        await stream.aclose()
        assert await eventually(lambda: bool(events.json_values("access")), 10)
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://127.0.0.1:{port}/poll?news=1")
        assert r.text == "news"
    gone, answered = events.json_values("access")
    # Before: 200 and the 19 bytes uvicorn dropped.
    assert (gone["status"], gone["response_bytes"]) == (499, 0)
    assert (answered["status"], answered["response_bytes"]) == (200, 4)
