"""The WSGI access-log middleware and the Flask extension, in process (no server)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import g

from kafka_asgi.flask import KafkaExtension
from kafka_asgi.integrations import access_log_event
from kafka_asgi.integrations.access_log_event import ACCESS_LOG_FIELDS
from kafka_asgi.integrations.testing import InMemoryProducer, capture_events
from kafka_asgi.wsgi import AccessLogMiddleware
from tests.support.wsgi import Client, cluster_name, hello, make_flask


def test_event_fields_request_id_and_forwarded_for() -> None:
    producer = InMemoryProducer()
    app = AccessLogMiddleware(
        hello, topic="acc", producer=producer, trusted_proxies=["10.0.0.0/8"], extra={"svc": "x"}
    )
    r = Client(app).get(
        "/items/3",
        query_string="a=1",
        headers={"User-Agent": "ua/1", "X-Request-ID": "abc-123", "X-Forwarded-For": "1.2.3.4"},
        environ_base={"REMOTE_ADDR": "10.1.1.1"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
    (event,) = producer.json_values("acc")
    assert list(event)[: len(ACCESS_LOG_FIELDS)] == list(ACCESS_LOG_FIELDS)
    assert event["method"] == "GET" and event["path"] == "/items/3" and event["query"] == "a=1"
    assert event["status"] == 200 and event["response_bytes"] == len(b"hello ")
    assert event["request_bytes"] == 0 and event["request_id"] == "abc-123"
    assert event["client"] == "1.2.3.4" and event["user_agent"] == "ua/1"
    assert event["type"] == "http" and event["scheme"] == "http" and event["close_code"] is None
    assert event["http_version"] == "1.1" and event["duration_ms"] >= 0 and event["svc"] == "x"
    assert event["route"] is None
    # An untrusted peer's X-Forwarded-For is ignored; a new request id is made.
    r = Client(app).get(
        "/", headers={"X-Forwarded-For": "1.2.3.4"}, environ_base={"REMOTE_ADDR": "8.8.8.8"}
    )
    second = producer.json_values("acc")[1]
    assert second["client"] == "8.8.8.8"
    assert second["request_id"] == r.headers["x-request-id"] and len(second["request_id"]) == 32


@pytest.mark.parametrize("fields", [None, list(ACCESS_LOG_FIELDS)])
def test_head_response_counts_no_body_bytes(fields: list[str] | None) -> None:
    # The app answers HEAD as GET; the server sends the headers only (gunicorn drops
    # the body), so the event counts none, on the template and general paths.
    producer = InMemoryProducer()
    app = AccessLogMiddleware(hello, topic="acc", producer=producer, fields=fields)
    assert Client(app).get("/").status_code == 200
    assert Client(app).head("/").status_code == 200
    get_event, head_event = producer.json_values("acc")
    assert get_event["response_bytes"] == len(b"hello ")
    assert head_event["method"] == "HEAD" and head_event["response_bytes"] == 0


def test_streaming_body_is_logged_at_close() -> None:
    producer = InMemoryProducer()
    chunks_sent: list[int] = []

    def streaming(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("206 Partial", [])
        for i in range(5):
            chunks_sent.append(i)
            yield b"x" * 100

    app = AccessLogMiddleware(streaming, topic="acc", producer=producer)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/s", "wsgi.input": None}
    statuses: list[str] = []
    result = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    iterator = iter(result)
    next(iterator)
    assert producer.events == []  # not before the server closed the response
    assert sum(len(c) for c in iterator) == 400
    assert producer.events == []
    result.close()  # type: ignore[attr-defined]
    (event,) = producer.json_values("acc")
    assert event["status"] == 206 and event["response_bytes"] == 500
    result.close()  # type: ignore[attr-defined]  # a second close() emits nothing more
    assert len(producer.events) == 1


def test_app_that_raises_gives_a_500_event_and_the_exception() -> None:
    producer = InMemoryProducer()

    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise LookupError("boom")

    app = AccessLogMiddleware(broken, topic="acc", producer=producer)
    with pytest.raises(LookupError, match="boom"):
        app({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda *a: None)
    (event,) = producer.json_values("acc")
    assert event["status"] == 500 and event["path"] == "/x"


def test_request_bytes_declared_or_counted() -> None:
    producer = InMemoryProducer()
    app = AccessLogMiddleware(hello, topic="acc", producer=producer)
    Client(app).post("/p", data=b"12345")
    assert producer.json_values("acc")[0]["request_bytes"] == 5
    # No Content-Length (chunked): what the app read from wsgi.input.
    import io

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/p",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(b"abcdefg"),
    }
    result = app(environ, lambda *a: None)
    assert b"".join(result) == b"hello abcdefg"
    result.close()  # type: ignore[attr-defined]
    assert producer.json_values("acc")[1]["request_bytes"] == 7


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("options", "headers"),
    [
        ({}, {}),
        ({}, {"traceparent": TRACEPARENT}),
        ({"trace_context": False}, {"traceparent": TRACEPARENT}),
        ({"extra": {"service": "50% off", "n": 1}}, {}),
    ],
)
def test_fast_paths_match_the_general_path(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], headers: dict[str, str]
) -> None:
    """The template (orjson installed or not) and the general path (``fields`` given)
    write the same event."""
    paths = ("orjson", "template", "general")
    producers = {name: InMemoryProducer() for name in paths}
    for name in paths:
        if name == "orjson":
            pytest.importorskip("orjson")
            assert access_log_event.ORJSON_DUMPS is not None
        else:
            monkeypatch.setattr(access_log_event, "ORJSON_DUMPS", None)
        traced = options.get("trace_context", True)
        every = [f for f in ACCESS_LOG_FIELDS if traced or f not in ("trace_id", "span_id")]
        fields = every if name == "general" else None
        app = AccessLogMiddleware(
            hello, topic="acc", producer=producers[name], fields=fields, **options
        )
        assert (app._template is not None) == (name != "general")
        Client(app).post(
            '/a/"café"\\',
            query_string='q="1"&%C3%A9=1',
            data=b"body!",
            headers={"User-Agent": 'quo"te \\ \x01', "X-Request-ID": "r1", **headers},
        )
        monkeypatch.undo()
    events = [producers[name].json_values("acc")[0] for name in paths]
    durations = [e.pop("duration_ms") for e in events]
    assert min(durations) >= 0
    # The fast paths write it to the microsecond; the general path as measured.
    assert [round(d, 3) for d in durations[:2]] == durations[:2]
    stamps = [e.pop("timestamp") for e in events]
    assert max(stamps) - min(stamps) < 60_000
    assert events[0] == events[1] == events[2]
    assert list(events[0]) == list(events[1])  # the same field order
    e = events[0]
    # PEP 3333's latin-1 text, logged decoded as UTF-8 (as ASGI and Django log it).
    assert e["path"] == '/a/"café"\\' and e["request_bytes"] == 5
    assert e["user_agent"] == 'quo"te \\ \x01' and e["request_id"] == "r1"
    if options.get("trace_context", True):
        assert e["trace_id"] == ("0af7651916cd43dd8448eb211c80319c" if headers else None)
    else:
        assert "trace_id" not in e
    assert e.get("service") == options.get("extra", {}).get("service")


def test_exclusions_sampling_and_drops_never_touch_the_response() -> None:
    producer = InMemoryProducer(max_buffering=1)
    app = AccessLogMiddleware(hello, topic="acc", producer=producer, exclude_paths=["/health"])
    client = Client(app)
    assert client.get("/health").status_code == 200
    assert producer.events == []
    assert [client.get("/").status_code for _ in range(3)] == [200, 200, 200]
    assert len(producer.events) == 1 and app.dropped == 2 and app.emitted == 1


def test_background_producer_from_bootstrap_options() -> None:
    """producer_factory (or bootstrap) makes the process's background producer."""
    producer = InMemoryProducer()
    app = AccessLogMiddleware(
        hello, topic="acc", cluster=cluster_name(), producer_factory=lambda: producer
    )
    try:
        client = Client(app)
        for _ in range(20):
            client.get("/")
        producer.wait_for_sync(20, topic="acc")
    finally:
        app.close()
    assert producer.closed and len(producer.events) == 20
    with pytest.raises(TypeError, match="without bootstrap"):
        AccessLogMiddleware(hello, topic="acc", shutdown_timeout=1.0)
    with pytest.raises(ValueError, match="sample_rate"):
        AccessLogMiddleware(hello, sample_rate=2)


def test_flask_extension_access_log_and_g_kafka() -> None:
    cluster = cluster_name()
    with capture_events(cluster) as kafka:
        app = make_flask(
            cluster,
            KAFKA_ASGI_BOOTSTRAP="127.0.0.1:1",
            KAFKA_ASGI_ACCESS_LOG={"topic": "acc", "extra": {"svc": "flask"}},
        )
        ext = KafkaExtension(app)
        assert app.extensions["kafka_asgi"] is ext
        try:
            r = Client(app).post("/orders/7", headers={"X-Request-ID": "req-7"})
            kafka.wait_for_sync(2)
        finally:
            ext.close()
    assert r.status_code == 200 and r.json == {"request_id": "req-7"}
    assert r.headers["x-request-id"] == "req-7"
    (order,) = kafka.json_values("orders")
    (access,) = kafka.json_values("acc")
    assert order["order_id"] == 7 and order["request_id"] == "req-7"
    assert order["route"] == access["route"] == "/orders/<int:order_id>"
    assert kafka.events_for("orders")[0].header("request_id") == b"req-7"
    assert access["status"] == 200 and access["svc"] == "flask"


def test_flask_without_access_log_still_has_g_kafka() -> None:
    cluster = cluster_name()
    producer = InMemoryProducer()
    app = make_flask(
        cluster, KAFKA_ASGI_PRODUCER_FACTORY=lambda: producer, KAFKA_ASGI_ACCESS_LOG=None
    )
    ext = KafkaExtension()
    ext.close()  # nothing to stop yet (it raised AttributeError)
    ext.init_app(app)
    try:
        Client(app).post("/orders/1")
        producer.wait_for_sync(1)
    finally:
        ext.close()
    assert [e["order_id"] for e in producer.json_values("orders")] == [1]
    assert producer.json_values("access-log") == []


def test_flask_g_kafka_is_looked_up_per_request_without_a_hook() -> None:
    cluster = cluster_name()
    producer = InMemoryProducer()
    app = make_flask(
        cluster,
        KAFKA_ASGI_PRODUCER_FACTORY=lambda: producer,
        KAFKA_ASGI_ACCESS_LOG={"topic": "acc"},
    )

    @app.get("/plain/<name>")
    def plain(name: str) -> str:  # never reads g.kafka
        return name

    @app.get("/own")
    def own() -> dict[str, Any]:
        g.kafka = "the app's own"
        return {"kafka": g.kafka, "other": g.get("other", "none")}

    ext = KafkaExtension(app)
    # No hook runs for every request: g.kafka costs only the views that read it.
    assert not any(app.before_request_funcs.values())
    try:
        with app.app_context():
            with pytest.raises(AttributeError, match="kafka"):
                _ = g.kafka  # an app context, no request: nothing to log for
            # Requests inside one pushed app context share its g: each still gets
            # its own request's logger.
            ids = [Client(app).post("/orders/1").json["request_id"] for _ in range(2)]
            assert ids[0] != ids[1]
            with pytest.raises(AttributeError, match="missing"):
                _ = g.missing
        assert Client(app).get("/plain/x").status_code == 200
        assert Client(app).get("/own").json == {"kafka": "the app's own", "other": "none"}
        producer.wait_for_sync(6)
    finally:
        ext.close()
    routes = [e["route"] for e in producer.json_values("acc")]
    assert routes == ["/orders/<int:order_id>"] * 2 + ["/plain/<name>", "/own"]
    assert [e["request_id"] for e in producer.json_values("orders")] == ids


@pytest.mark.parametrize(
    ("config", "exc", "match"),
    [
        ({"KAFKA_ASGI_BOOTSTRAPS": "x"}, ValueError, "KAFKA_ASGI_BOOTSTRAPS"),
        ({}, ValueError, "KAFKA_ASGI_BOOTSTRAP"),
        ({"KAFKA_ASGI_BOOTSTRAP": "x", "KAFKA_ASGI_ON_UNREACHABLE": "no"}, ValueError, "on_unr"),
        ({"KAFKA_ASGI_BOOTSTRAP": "x", "KAFKA_ASGI_ACCESS_LOG": "yes"}, TypeError, "ACCESS_LOG"),
        (
            {"KAFKA_ASGI_BOOTSTRAP": "x", "KAFKA_ASGI_ACCESS_LOG": {"colour": 1}},
            TypeError,
            "colour",
        ),
    ],
)
def test_flask_bad_config_is_named(
    config: dict[str, Any], exc: type[Exception], match: str
) -> None:
    app = make_flask(cluster_name(), **config)
    with pytest.raises(exc, match=match):
        KafkaExtension(app)


def test_traceparent_reaches_the_event_and_the_request_logger() -> None:
    producer = InMemoryProducer()

    def logs(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["kafka_asgi.event_logger"].log("app", {"x": 1})
        start_response("200 OK", [])
        return [b"ok"]

    app = AccessLogMiddleware(logs, topic="acc", producer=producer)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    Client(app).get("/", headers={"traceparent": parent})
    (event,) = producer.json_values("acc")
    assert event["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert event["span_id"] == "b7ad6b7169203331"
    assert producer.events_for("app")[0].header("traceparent") == parent.encode()


def test_the_apps_own_request_id_header_wins() -> None:
    # One X-Request-ID, the app's (the code before added a second one).
    def own(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("x-request-ID", "app-made")])
        return [b"ok"]

    producer = InMemoryProducer()
    r = Client(AccessLogMiddleware(own, topic="acc", producer=producer)).get("/")
    assert r.headers.getlist("X-Request-ID") == ["app-made"]
    (event,) = producer.json_values("acc")
    assert event["status"] == 200 and len(event["request_id"]) == 32
