"""The WSGI middleware and the Flask extension where a server, a mount or a factory
meets them: errors before the first byte, SCRIPT_NAME, non-ASCII paths, sendfile,
several apps per extension, Flask's ``g`` API (in process, no broker)."""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.handlers import SimpleHandler
from wsgiref.util import FileWrapper

import anyio
import pytest
from flask import Flask, g

from kafka_asgi.flask import KafkaExtension
from kafka_asgi.integrations.access_log_event import ACCESS_LOG_FIELDS
from kafka_asgi.integrations.testing import InMemoryProducer
from kafka_asgi.producer import Producer
from kafka_asgi.wsgi import AccessLogMiddleware
from tests.support.wsgi import Client, cluster_name, hello, make_flask

StartResponse = Callable[..., Any]


def serve(app: Any, **environ: str) -> bytes:
    """One request through wsgiref's handler (a real server's error handling)."""
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/x",
        "SERVER_NAME": "h",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    out = io.BytesIO()
    handler = SimpleHandler(io.BytesIO(), out, io.StringIO(), {**base, **environ})
    handler.traceback_limit = 0
    handler.run(app)
    return out.getvalue().split(b"\r\n")[0]


def fails_before_its_first_chunk(environ: dict[str, Any], start: StartResponse) -> Iterator[bytes]:
    start("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError("db gone")
    yield b"never"  # a generator: the error comes at the server's first next()


def fails_after_a_chunk(environ: dict[str, Any], start: StartResponse) -> Iterator[bytes]:
    start("200 OK", [])
    yield b"part"
    raise RuntimeError("db gone")


def fails_after_write(environ: dict[str, Any], start: StartResponse) -> Iterator[bytes]:
    start("200 OK", [])(b"written")
    raise RuntimeError("db gone")
    yield b"never"


def raises_after_write(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
    start("200 OK", [])(b"written")
    raise RuntimeError("db gone")  # from the app call itself, not from its iterable


@pytest.mark.parametrize(
    ("app", "wire", "status"),
    [
        (fails_before_its_first_chunk, b"HTTP/1.0 500 Internal Server Error", 500),
        # The headers went out: the server can only cut the connection.
        (fails_after_a_chunk, b"HTTP/1.0 200 OK", 200),
        (fails_after_write, b"HTTP/1.0 200 OK", 200),
        (raises_after_write, b"HTTP/1.0 200 OK", 200),
    ],
)
def test_a_body_that_fails_before_its_first_byte_logs_the_servers_500(
    app: Any, wire: bytes, status: int
) -> None:
    producer = InMemoryProducer()
    assert serve(AccessLogMiddleware(app, topic="acc", producer=producer)) == wire
    (event,) = producer.json_values("acc")
    assert event["status"] == status


def test_exclude_paths_match_the_logged_path_under_a_mount_prefix() -> None:
    def events(exclude: list[str], path_info: str = "/health") -> list[str]:
        producer = InMemoryProducer()
        app = AccessLogMiddleware(hello, topic="acc", producer=producer, exclude_paths=exclude)
        Client(app).get(path_info, base_url="http://h/api")
        return [e["path"] for e in producer.json_values("acc")]

    assert events(["/other"]) == ["/api/health"]
    assert events(["/api/health"]) == []
    assert events(["/api/*"]) == []
    # PATH_INFO alone, as matched before, still excludes.
    assert events(["/health"]) == []
    assert events(["/api/health"], "/healthz") == ["/api/healthz"]


@pytest.mark.parametrize("fields", [None, list(ACCESS_LOG_FIELDS)], ids=["template", "general"])
def test_a_non_ascii_path_is_logged_and_excluded_decoded(fields: list[str] | None) -> None:
    producer = InMemoryProducer()
    app = AccessLogMiddleware(
        hello, topic="acc", producer=producer, fields=fields, exclude_paths=["/café/skip"]
    )
    client = Client(app)
    client.get("/caf%C3%A9/%E6%97%A5", base_url="http://h/m%C3%BCnchen")
    client.get("/bad%FF")  # not UTF-8
    client.get("/caf%C3%A9/skip")
    assert [e["path"] for e in producer.json_values("acc")] == [
        "/münchen/café/日",
        "/bad\ufffd",
    ]


def test_a_file_wrapper_reaches_the_server_and_is_logged_once_at_close() -> None:
    producer = InMemoryProducer()

    def send(filelike: Any, headers: list[tuple[str, str]]) -> Any:
        returned: list[Any] = []

        def send_file(environ: dict[str, Any], start: StartResponse) -> Any:
            start("200 OK", headers)
            returned.append(environ["wsgi.file_wrapper"](filelike, 64))
            return returned[0]

        app = AccessLogMiddleware(send_file, topic="acc", producer=producer)
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/f", "wsgi.file_wrapper": FileWrapper}
        result = app(environ, lambda *a: None)
        # What a server's sendfile() path checks: isinstance(result, wsgi.file_wrapper).
        assert result is returned[0] and isinstance(result, FileWrapper)
        return result

    file = tempfile.TemporaryFile()
    file.write(b"x" * 1000)
    file.seek(100)
    result = send(file, [])
    assert producer.events == []
    result.close()
    result.close()
    assert file.closed
    (event,) = producer.json_values("acc")
    assert event["status"] == 200 and event["path"] == "/f"
    assert event["response_bytes"] == 900  # what is left of the file
    send(io.BytesIO(b"abc"), [("Content-Length", "3")]).close()
    send(io.BytesIO(b"abc"), []).close()  # no file descriptor: size unknown
    assert [e["response_bytes"] for e in producer.json_values("acc")] == [900, 3, 0]


def test_flask_factory_apps_each_keep_their_own_producer() -> None:
    ext = KafkaExtension()
    producers = {name: InMemoryProducer() for name in ("a", "b")}
    apps = {
        name: make_flask(
            cluster_name(),
            KAFKA_ASGI_PRODUCER_FACTORY=lambda p=producer: p,
            KAFKA_ASGI_ACCESS_LOG=None,
        )
        for name, producer in producers.items()
    }
    for app in apps.values():
        ext.init_app(app)
    try:
        Client(apps["a"]).post("/orders/1")
        Client(apps["b"]).post("/orders/2")
        producers["a"].wait_for_sync(1, timeout=5)
        producers["b"].wait_for_sync(1, timeout=5)
        with apps["a"].app_context():
            assert ext.options is not None
            assert ext.options.cluster == apps["a"].config["KAFKA_ASGI_CLUSTER"]
    finally:
        ext.close(2)
    assert [e["order_id"] for e in producers["a"].json_values("orders")] == [1]
    assert [e["order_id"] for e in producers["b"].json_values("orders")] == [2]
    # close() flushed and stopped both apps' producers.
    assert producers["a"].closed and producers["b"].closed


def test_flask_g_get_in_and_setdefault_see_g_kafka() -> None:
    app = Flask("t")
    app.config.update(
        KAFKA_ASGI_CLUSTER=cluster_name(),
        KAFKA_ASGI_PRODUCER_FACTORY=InMemoryProducer,
        KAFKA_ASGI_ACCESS_LOG=None,
    )
    seen: dict[str, Any] = {}

    @app.get("/")
    def index() -> str:
        seen.update(
            attr=g.kafka,
            get=g.get("kafka"),
            contains="kafka" in g,
            setdefault=g.setdefault("kafka", "other"),
        )
        g.kafka = "the app's own"
        seen.update(own_get=g.get("kafka"), own_setdefault=g.setdefault("kafka", "other"))
        return "ok"

    ext = KafkaExtension(app)
    try:
        assert Client(app).get("/").status_code == 200
        with app.app_context():  # no request: no g.kafka
            assert "kafka" not in g and g.get("kafka", "none") == "none"
    finally:
        ext.close(2)
    assert seen["get"] is seen["attr"] and seen["setdefault"] is seen["attr"]
    assert seen["contains"] is True
    assert seen["own_get"] == seen["own_setdefault"] == "the app's own"


def test_flask_init_app_twice_on_one_app_raises_and_keeps_one_access_log() -> None:
    producer = InMemoryProducer()
    app = make_flask(
        cluster_name(),
        KAFKA_ASGI_PRODUCER_FACTORY=lambda: producer,
        KAFKA_ASGI_ACCESS_LOG={"topic": "acc"},
    )
    ext = KafkaExtension(app)
    other = KafkaExtension()
    try:
        wsgi_app = app.wsgi_app
        for again in (ext, other):
            with pytest.raises(RuntimeError, match="'t' was already given to"):
                again.init_app(app)
        assert app.wsgi_app is wsgi_app
        assert app.extensions["kafka_asgi"] is ext
        Client(app).post("/orders/1")
        producer.wait_for_sync(2)
    finally:
        ext.close(2)
    # Wrapped twice, each request gave two access-log events.
    assert len(producer.json_values("acc")) == 1
    assert len(producer.json_values("orders")) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("fields", [None, list(ACCESS_LOG_FIELDS)])
async def test_a_producer_registered_on_an_event_loop_is_not_called_from_a_wsgi_thread(
    anyio_backend: str, fields: list[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No bootstrap, no lifespan: the middleware falls back to the producer registered
    under its cluster; a Producer (its loop's thread only) refuses the event, counted,
    on the template and general paths, as the request's logger does."""
    calls: list[int] = []
    monkeypatch.setattr(
        Producer, "send_nowait", lambda self, *a, **k: calls.append(threading.get_ident())
    )
    cluster = cluster_name()
    app = AccessLogMiddleware(hello, topic="acc", cluster=cluster, fields=fields)
    async with Producer("127.0.0.1:1", cluster_name=cluster):
        r = await anyio.to_thread.run_sync(lambda: Client(app).get("/x"))
    assert r.status_code == 200
    assert calls == []  # before: called from the server's thread
    assert app.dropped == 1 and app.emitted == 0


SECRET_OPTIONS = {
    "sasl_mechanism": "PLAIN",
    "sasl_username": "svc-user",
    "sasl_password": "S3cr3t-Pa55",
}


def test_two_front_doors_with_other_options_name_the_fields_not_the_password() -> None:
    # The error held the first front door's whole LifespanOptions, SASL password in
    # clear, for whatever logs a failed worker boot.
    cluster = cluster_name()
    options: dict[str, Any] = {
        "cluster": cluster,
        "bootstrap": "127.0.0.1:1",
        "producer_options": SECRET_OPTIONS,
    }
    first = AccessLogMiddleware(hello, topic="acc", **options)
    try:
        with pytest.raises(ValueError, match=cluster) as info:
            AccessLogMiddleware(hello, topic="acc", **options, shutdown_timeout=5.0)
        message = str(info.value)
        assert "S3cr3t-Pa55" not in message
        assert "(they differ in shutdown_timeout)" in message
        rotated = {**SECRET_OPTIONS, "sasl_password": "N3w-Pa55", "client_id": "x"}
        with pytest.raises(ValueError) as info:
            AccessLogMiddleware(
                hello, topic="acc", **{**options, "producer_options": rotated}, startup_timeout=1
            )
        again = str(info.value)
        assert (
            "(they differ in producer_options['client_id'],"
            " producer_options['sasl_password'], startup_timeout)" in again
        )
        for text in (message, again):
            for secret in ("S3cr3t-Pa55", "N3w-Pa55", "svc-user"):
                assert secret not in text
    finally:
        first.close()
