"""kafka_asgi.django in-process: settings, KafkaMiddleware (sync and async chains),
request.kafka, the ASGI lifespan wrapper. Django's async runs on asyncio only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, Client, override_settings

from kafka_asgi.django import KafkaMiddleware, get_asgi_application, kafka_settings
from kafka_asgi.integrations import django as kdjango
from kafka_asgi.integrations.access_log_event import ACCESS_LOG_FIELDS
from kafka_asgi.integrations.middleware_stats import middleware_totals
from kafka_asgi.integrations.testing import InMemoryProducer, capture_events
from tests.integrations import django_testapp  # noqa: F401 - configures Django first
from tests.support.asgi import run_lifespan


@pytest.fixture
def bg_producer() -> Iterator[InMemoryProducer]:
    """What a WSGI process gets: a background producer (in memory here)."""
    producer = InMemoryProducer()
    conf = {"PRODUCER_FACTORY": lambda: producer, "ACCESS_LOG": {"topic": "access"}}
    with override_settings(KAFKA_ASGI=conf):
        yield producer
    bg = kdjango._background.pop("default", None)
    if bg is not None:
        bg.stop()


def test_sync_chain_logs_access_and_view_events(bg_producer: InMemoryProducer) -> None:
    c = Client()
    r = c.get("/items/5?a=b", HTTP_USER_AGENT="ua/1", HTTP_X_REQUEST_ID="rid-5")
    assert r.status_code == 200 and r["X-Request-ID"] == "rid-5"
    r2 = c.post("/echo", data=b"12345", content_type="application/octet-stream")
    assert r2.content == b"12345"
    r3 = c.get("/stream")
    assert b"".join(r3.streaming_content) == b"y" * 10
    r3.close()
    bg_producer.wait_for_sync(3, topic="access")
    bg_producer.wait_for_sync(1, topic="item-views")
    first, second, third = bg_producer.json_values("access")
    assert first["method"] == "GET" and first["path"] == "/items/5"
    assert first["route"] == "items/<int:item_id>"
    assert first["query"] == "a=b" and first["status"] == 200
    assert first["user_agent"] == "ua/1" and first["request_id"] == "rid-5"
    assert first["response_bytes"] == len(r.content)
    assert first["client"] == "127.0.0.1"
    assert second["request_bytes"] == 5 and second["response_bytes"] == 5
    assert third["response_bytes"] == 10 and third["route"] == "stream"
    assert bg_producer.json_values("item-views") == [
        {"request_id": "rid-5", "route": "items/<int:item_id>", "item": 5}
    ]


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("options", "headers"),
    [
        ({}, {}),
        ({}, {"HTTP_TRACEPARENT": TRACEPARENT}),
        ({"trace_context": False}, {"HTTP_TRACEPARENT": TRACEPARENT}),
        ({"extra": {"service": "50% off", "n": 1}}, {}),
    ],
)
def test_default_event_template_matches_the_general_path(
    options: dict[str, Any], headers: dict[str, str]
) -> None:
    """The default event is formatted into the JSON template; ``fields`` (or enrich,
    key...) takes the general path. Both write the same event."""
    producer = InMemoryProducer()
    traced = options.get("trace_context", True)
    every = [f for f in ACCESS_LOG_FIELDS if traced or f not in ("trace_id", "span_id")]
    try:
        for fields in (None, every):
            access_log = {"topic": "access", **options}
            if fields is not None:
                access_log["fields"] = fields
            conf = {"PRODUCER_FACTORY": lambda: producer, "ACCESS_LOG": access_log}
            with override_settings(KAFKA_ASGI=conf):
                client = Client()
                (middleware,) = [
                    m for m in iter_middleware(client) if isinstance(m, KafkaMiddleware)
                ]
                assert (middleware.access_log._template is None) == (fields is not None)
                r = client.get(
                    '/items/7?q="1"',
                    HTTP_USER_AGENT='quo"te \\ \x01 é',
                    HTTP_X_REQUEST_ID="rid-7",
                    **headers,
                )
                assert r.status_code == 200
        producer.wait_for_sync(2, topic="access")
    finally:
        bg = kdjango._background.pop("default", None)
        if bg is not None:
            bg.stop()
    fast, general = producer.json_values("access")
    durations = [fast.pop("duration_ms"), general.pop("duration_ms")]
    assert min(durations) >= 0 and round(durations[0], 3) == durations[0]
    assert abs(fast.pop("timestamp") - general.pop("timestamp")) < 60_000
    assert fast == general and list(fast) == list(general)
    assert fast["route"] == "items/<int:item_id>" and fast["request_id"] == "rid-7"
    assert fast["user_agent"] == 'quo"te \\ \x01 é'
    assert fast["query"] == 'q="1"' and fast["http_version"] == "1.1"
    if traced:
        assert fast["trace_id"] == ("0af7651916cd43dd8448eb211c80319c" if headers else None)
    else:
        assert "trace_id" not in fast
    assert fast.get("service") == options.get("extra", {}).get("service")


def iter_middleware(client: Client) -> Iterator[Any]:
    """The middleware instances of a test client's handler chain, outermost first."""
    client.handler.load_middleware()
    chain: Any = client.handler._middleware_chain
    while chain is not None:
        handler = getattr(chain, "__wrapped__", chain)
        yield handler
        chain = getattr(handler, "get_response", None)


# Django's async support runs on asyncio only: these tests are not made for trio.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@asyncio_only
async def test_async_chain(bg_producer: InMemoryProducer, anyio_backend: str) -> None:
    c = AsyncClient()
    r = await c.get("/async-items/9")
    rid = r["X-Request-ID"]
    await bg_producer.wait_for(1, topic="access")
    await bg_producer.wait_for(1, topic="item-views")
    (event,) = bg_producer.json_values("access")
    assert event["route"] == "async-items/<int:item_id>" and event["request_id"] == rid
    assert bg_producer.json_values("item-views") == [
        {"request_id": rid, "route": "async-items/<int:item_id>", "item": 9, "async": True}
    ]


pytestmark = pytest.mark.anyio


@asyncio_only
async def test_asgi_application_runs_the_lifespan(anyio_backend: str) -> None:
    with capture_events() as events:
        app = get_asgi_application()
        async with run_lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                r = await c.get("/items/3")
                r2 = await c.get("/astream")
        assert r.status_code == 200 and r2.content == b"y" * 10
        (a1, a2) = events.json_values("access")
        assert a1["request_id"] == r.headers["x-request-id"]
        assert a1["http_version"] == "1.1"  # from the ASGI scope (META has no protocol)
        assert a2["response_bytes"] == 10
        assert events.json_values("item-views")[0]["request_id"] == a1["request_id"]
    assert "default" not in kdjango._background  # the lifespan's producer was used


@pytest.mark.parametrize("fields", [None, list(ACCESS_LOG_FIELDS)])
def test_head_response_counts_no_body_bytes(fields: list[str] | None) -> None:
    # Django answers HEAD with GET's view (and Content-Length); the server sends the
    # headers only, so the event counts no body, on the template and general paths.
    producer = InMemoryProducer()
    conf = {
        "PRODUCER_FACTORY": lambda: producer,
        "ACCESS_LOG": {"topic": "access", "fields": fields},
    }
    try:
        with override_settings(KAFKA_ASGI=conf):
            c = Client()
            got = c.get("/items/5")
            head = c.head("/items/5")
            producer.wait_for_sync(2, topic="access")
    finally:
        bg = kdjango._background.pop("default", None)
        if bg is not None:
            bg.stop()
    assert got.status_code == head.status_code == 200 and len(got.content) > 0
    get_event, head_event = producer.json_values("access")
    assert get_event["response_bytes"] == len(got.content)
    assert head_event["method"] == "HEAD" and head_event["response_bytes"] == 0


def test_events_are_counted_under_the_middlewares_name(bg_producer: InMemoryProducer) -> None:
    # In the access-log metrics (Prometheus's and OpenTelemetry's "middleware" label).
    def emitted(kind: str) -> int:
        return middleware_totals().get(kind, {}).get("emitted", 0)

    before = emitted("DjangoAccessLogMiddleware")
    Client().get("/items/5")
    bg_producer.wait_for_sync(1, topic="access")
    assert emitted("DjangoAccessLogMiddleware") == before + 1


def test_access_log_can_be_disabled(bg_producer: InMemoryProducer) -> None:
    conf = {"PRODUCER_FACTORY": lambda: bg_producer, "ACCESS_LOG": None}
    with override_settings(KAFKA_ASGI=conf):
        r = Client().get("/items/1")
    bg_producer.wait_for_sync(1, topic="item-views")
    assert r.status_code == 200 and "X-Request-ID" in r
    assert bg_producer.events_for("access") == []


def test_no_kafka_never_changes_the_response() -> None:
    producer = InMemoryProducer()
    producer.buffer_full = True
    conf = {"PRODUCER_FACTORY": lambda: producer, "ACCESS_LOG": {"topic": "access"}}
    try:
        with override_settings(KAFKA_ASGI=conf):
            r = Client().get("/items/2")
            assert r.status_code == 200 and r.json() == {"item": 2}
    finally:
        bg = kdjango._background.pop("default", None)
        if bg is not None:
            bg.stop()


@pytest.mark.parametrize(
    ("conf", "match"),
    [
        ({"BOOTSTRAPS": "x"}, "BOOTSTRAPS"),
        ({"ON_UNREACHABLE": "crash"}, "on_unreachable"),
        ({"ACCESS_LOG": "yes"}, "ACCESS_LOG"),
        ({"ACCESS_LOG": {"topic": "a", "fields": ["nope"]}}, "nope"),
        ({"ACCESS_LOG": {"colour": "red"}}, "colour"),
    ],
)
def test_bad_settings_are_named(conf: dict[str, Any], match: str) -> None:
    with override_settings(KAFKA_ASGI=conf), pytest.raises(ImproperlyConfigured, match=match):
        KafkaMiddleware(lambda request: None)
    with override_settings(KAFKA_ASGI="x"), pytest.raises(ImproperlyConfigured):
        kafka_settings()


def test_request_is_freed_without_the_cycle_collector(bg_producer: InMemoryProducer) -> None:
    """request.kafka must not hold its request: that cycle would leave every request
    (and what views hang on it) to the cycle GC."""
    import gc
    import weakref

    from django.http import HttpResponse
    from django.test import RequestFactory

    def view(request: Any) -> Any:
        request.kafka.log("item-views", {"n": 1})
        return HttpResponse(b"ok")

    middleware = KafkaMiddleware(view)
    request = RequestFactory().get("/items/1")
    alive = weakref.ref(request)
    gc.disable()
    try:
        response = middleware(request)
        logger = request.kafka
        assert response.status_code == 200
        del request, response
        assert alive() is None
        logger.log("item-views", {"n": 2})  # a late event still has its request id
    finally:
        gc.enable()
    bg_producer.wait_for_sync(2, topic="item-views")
    assert [v["request_id"] for v in bg_producer.json_values("item-views")] == [
        logger.request_id
    ] * 2


def test_first_wsgi_request_never_waits_for_an_unreachable_kafka() -> None:
    """The background producer starts without the request waiting for its startup
    check (up to STARTUP_TIMEOUT when Kafka does not answer); events wait meanwhile."""
    import socket
    import time

    silent = socket.socket()  # accepts connections (the kernel does), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    conf = {
        "BOOTSTRAP": f"127.0.0.1:{silent.getsockname()[1]}",
        "STARTUP_TIMEOUT": 5.0,
        "SHUTDOWN_TIMEOUT": 0.2,
        "ACCESS_LOG": {"topic": "access"},
    }
    try:
        with override_settings(KAFKA_ASGI=conf):
            started = time.monotonic()
            r = Client().get("/items/3")
            took = time.monotonic() - started
        assert r.status_code == 200 and r.json() == {"item": 3}
        assert took < 2.5, f"the first request took {took:.2f}s"  # not the 5 s check
    finally:
        bg = kdjango._background.pop("default", None)
        if bg is not None:
            bg.stop()
        silent.close()


def test_the_views_own_request_id_header_wins(bg_producer: InMemoryProducer) -> None:
    # The middleware echoes its id only where the view set none (the code before
    # replaced the view's).
    r = Client().get("/own-id", HTTP_X_REQUEST_ID="rid-9")
    assert r.status_code == 200 and r["X-Request-ID"] == "view-made"
    bg_producer.wait_for_sync(1, topic="access")
    (event,) = bg_producer.json_values("access")
    assert event["request_id"] == "rid-9" and event["status"] == 200
