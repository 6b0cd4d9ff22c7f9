"""kafka_asgi.django faults: settings without a producer, streaming responses that
raise, are replaced or are never iterated, request bodies without Content-Length.
Each request gives exactly one access-log event."""

from __future__ import annotations

import asyncio
import gc
import io
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any
from wsgiref.handlers import SimpleHandler

import pytest
from django.core.asgi import get_asgi_application as django_asgi_application
from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse, StreamingHttpResponse
from django.test import Client, RequestFactory, override_settings
from django.urls import path

from kafka_asgi.django import KafkaMiddleware
from kafka_asgi.integrations import django as kdjango
from kafka_asgi.integrations.testing import InMemoryProducer, capture_events
from kafka_asgi.producer import register_producer, unregister_producer
from tests.integrations import django_testapp  # configures Django first

CLUSTER = "django-faults"


def _stop_background(cluster: str = CLUSTER) -> None:
    """Flush and stop the cluster's background producer: every event it took is in
    the producer afterwards (so a count is final)."""
    bg = kdjango._background.pop(cluster, None)
    if bg is not None:
        bg.stop()


@pytest.fixture
def producer() -> Iterator[InMemoryProducer]:
    made = InMemoryProducer()
    conf = {
        "CLUSTER": CLUSTER,
        "PRODUCER_FACTORY": lambda: made,
        "ACCESS_LOG": {"topic": "access"},
    }
    try:
        with override_settings(KAFKA_ASGI=conf, ROOT_URLCONF=__name__):
            yield made
    finally:
        _stop_background()


def export(request: Any) -> StreamingHttpResponse:
    def rows() -> Iterator[bytes]:
        raise RuntimeError("database gone")
        yield b""  # a generator

    return StreamingHttpResponse(rows())


def report(request: Any) -> StreamingHttpResponse:
    response = StreamingHttpResponse(iter([b"a,b\n", b"1,2\n"]), content_type="text/csv")
    response["ETag"] = '"v1"'
    return response


def read_in_parts(request: Any) -> HttpResponse:
    size = 0
    while chunk := request.read(2):
        size += len(chunk)
    return HttpResponse(str(size).encode())


urlpatterns = [
    path("export", export),
    path("report.csv", report),
    path("read-in-parts", read_in_parts),
    path("echo", django_testapp.echo),
]


# -- settings ---------------------------------------------------------------------------


def test_settings_without_bootstrap_or_factory_are_improperly_configured() -> None:
    # No error at all: the first request started a background producer whose thread
    # failed, and every event after it was lost.
    conf = {
        "CLUSTER": "no-bootstrap",
        "PRODUCER_OPTIONS": {"compression": "lz4"},
        "ACCESS_LOG": {"topic": "access"},
    }
    try:
        with override_settings(KAFKA_ASGI=conf):
            # Made without complaint: a lifespan may still bring the producer.
            middleware = KafkaMiddleware(lambda request: HttpResponse(b"ok"))
            with pytest.raises(ImproperlyConfigured, match=r"KAFKA_ASGI\['BOOTSTRAP'\]"):
                middleware(RequestFactory().get("/"))
        assert "no-bootstrap" not in kdjango._background
    finally:
        _stop_background("no-bootstrap")


def test_a_producer_from_elsewhere_needs_no_bootstrap() -> None:
    """capture_events' producer (through a background producer) and a producer the
    app registered itself (used as it is) both take the events."""
    try:
        for cluster, use in (("captured", capture_events), ("registered", None)):
            conf = {"CLUSTER": cluster, "ACCESS_LOG": {"topic": "access"}}
            middleware = None
            if use is not None:
                with use(cluster) as events, override_settings(KAFKA_ASGI=conf):
                    middleware = KafkaMiddleware(lambda request: HttpResponse(b"ok"))
                    assert middleware(RequestFactory().get("/a")).status_code == 200
                    _stop_background(cluster)
            else:
                events = InMemoryProducer()
                register_producer(cluster, events)
                try:
                    with override_settings(KAFKA_ASGI=conf):
                        middleware = KafkaMiddleware(lambda request: HttpResponse(b"ok"))
                        assert middleware(RequestFactory().get("/a")).status_code == 200
                finally:
                    unregister_producer(cluster, events)
            assert [e["path"] for e in events.json_values("access")] == ["/a"], cluster
    finally:
        _stop_background("captured")
        _stop_background("registered")


# -- streaming responses ----------------------------------------------------------------


def test_a_stream_that_raises_before_its_first_chunk_is_logged_as_500(
    producer: InMemoryProducer,
) -> None:
    # A WSGI server that has sent nothing answers 500; the event said 200.
    out = io.BytesIO()
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/export",
        "SERVER_NAME": "t",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    handler = SimpleHandler(io.BytesIO(), out, io.StringIO(), environ)
    handler.traceback_limit = 0
    handler.run(get_wsgi_application())
    assert out.getvalue().split(b"\r\n")[0].endswith(b"500 Internal Server Error")
    _stop_background()
    (event,) = producer.json_values("access")
    assert event["status"] == 500 and event["response_bytes"] == 0


def test_a_stream_that_raises_after_a_chunk_keeps_its_status(producer: InMemoryProducer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"abc"
        raise RuntimeError("database gone")

    response = KafkaMiddleware(lambda request: StreamingHttpResponse(chunks()))(
        RequestFactory().get("/half")
    )
    parts = iter(response)
    assert next(parts) == b"abc"
    with pytest.raises(RuntimeError, match="database gone"):  # unchanged
        next(parts)
    response.close()
    _stop_background()
    (event,) = producer.json_values("access")
    assert event["status"] == 200 and event["response_bytes"] == 3


def test_a_stream_replaced_by_a_304_outside_ours_is_logged(producer: InMemoryProducer) -> None:
    # ConditionalGetMiddleware returns a 304 in place of our response, which is never
    # iterated nor closed: the event was never sent, nor counted.
    outside = [
        "django.middleware.http.ConditionalGetMiddleware",
        "kafka_asgi.django.KafkaMiddleware",
    ]
    with override_settings(MIDDLEWARE=outside):
        response = Client().get("/report.csv", HTTP_IF_NONE_MATCH='"v1"')
        assert response.status_code == 304
        response.close()
    _stop_background()
    (event,) = producer.json_values("access")
    assert event["path"] == "/report.csv" and event["response_bytes"] == 0
    # The middleware outside ours made the 304: ours saw, and logs, the view's status
    # (as the README says), as it does for a response that is not streamed.
    assert event["status"] == 200


def _sync_chunks() -> Iterator[bytes]:
    yield b"ab"
    yield b"cde"


async def _async_chunks() -> AsyncIterator[bytes]:
    yield b"ab"
    yield b"cde"


async def _read(content: Any, first_only: bool) -> list[bytes]:
    parts = []
    async for part in content:
        parts.append(part)
        if first_only:
            break
    return parts


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("how", "sent"), [("iterated", 5), ("closed early", 2), ("never iterated", 0)]
)
def test_each_streaming_response_gives_exactly_one_event(
    producer: InMemoryProducer, kind: str, how: str, sent: int
) -> None:
    chunks: Any = _sync_chunks() if kind == "sync" else _async_chunks()
    response = KafkaMiddleware(lambda request: StreamingHttpResponse(chunks))(
        RequestFactory().get("/s")
    )
    if how != "never iterated":
        first_only = how == "closed early"
        if kind == "sync":
            parts = []
            for part in response.streaming_content:
                parts.append(part)
                if first_only:
                    break
        else:
            parts = asyncio.run(_read(response.streaming_content, first_only))
        assert b"".join(parts) == b"abcde"[:sent]
    response.close()
    response.close()  # a second close sends nothing more
    _stop_background()
    (event,) = producer.json_values("access")
    assert event["response_bytes"] == sent and event["status"] == 200


def test_a_counted_stream_leaves_no_cycle(producer: InMemoryProducer) -> None:
    """The request is freed as soon as its response is (the stream replaces
    request.close until it has sent its event)."""
    middleware = KafkaMiddleware(lambda request: StreamingHttpResponse(_sync_chunks()))
    request = RequestFactory().get("/s")
    alive = weakref.ref(request)
    gc.disable()
    try:
        response = middleware(request)
        assert b"".join(response) == b"abcde"
        response.close()
        assert "close" not in vars(request)
        del request, response
        assert alive() is None
    finally:
        gc.enable()


# -- request bodies ---------------------------------------------------------------------


def _run_asgi(path: str, body: list[bytes]) -> bytes:
    """A POST without Content-Length (chunked) through Django's own ASGI handler."""
    app = django_asgi_application()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(body) - 1}
        for i, part in enumerate(body)
    ]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(10)  # the client stays; the handler cancels this wait
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize(("path", "answer"), [("/echo", b"12345"), ("/read-in-parts", b"5")])
def test_an_asgi_body_without_content_length_counts_what_was_read(
    producer: InMemoryProducer, path: str, answer: bytes
) -> None:
    # The event said request_bytes 0 though the view read 5 bytes.
    assert _run_asgi(path, [b"12", b"345"]) == answer
    _stop_background()
    (event,) = producer.json_values("access")
    assert event["request_bytes"] == 5
