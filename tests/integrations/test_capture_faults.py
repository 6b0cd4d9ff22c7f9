"""capture_events() against the process-wide background producers (WSGI, Flask, Django
under WSGI), and InMemoryProducer.stats(): no broker, the bootstrap address is never
reached (nothing listens on port 1)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client as DjangoClient
from django.test import override_settings

from kafka_asgi.flask import KafkaExtension
from kafka_asgi.integrations import django as kdjango
from kafka_asgi.integrations.testing import InMemoryProducer, capture_events
from kafka_asgi.producer import BufferFullError, register_producer, unregister_producer
from kafka_asgi.wsgi import AccessLogMiddleware
from tests.integrations import django_testapp  # noqa: F401 - configures Django first
from tests.support.wsgi import Client, cluster_name, hello, make_flask

UNREACHABLE = "127.0.0.1:1"
# Short deadlines: the producer of the unreachable address gives up its events quickly.
FAST: dict[str, Any] = {
    "startup_timeout": 0.5,
    "shutdown_timeout": 0.3,
    "producer_options": {"close_timeout": 0.1},
}

# A module-level app, as an app's own tests import it: its background producer lives as
# long as the process, across the tests' captures.
FLASK_CLUSTER = cluster_name()
flask_app = make_flask(
    FLASK_CLUSTER,
    KAFKA_ASGI_BOOTSTRAP=UNREACHABLE,
    KAFKA_ASGI_ACCESS_LOG={"topic": "acc"},
    **{f"KAFKA_ASGI_{k.upper()}": v for k, v in FAST.items()},
)
flask_kafka = KafkaExtension(flask_app)


@pytest.fixture(scope="module", autouse=True)
def _close_flask_app() -> Iterator[None]:
    yield
    flask_kafka.close()


def paths(producer: InMemoryProducer) -> list[str]:
    return [e["path"] for e in producer.json_values("acc")]


def test_module_level_flask_app_gives_each_capture_its_own_events() -> None:
    client = Client(flask_app)
    with capture_events(FLASK_CLUSTER) as first:
        assert client.post("/orders/1").status_code == 200
        first.wait_for_sync(2, timeout=3)
    # Between the tests: the app's own producer (Kafka unreachable), neither capture's.
    client.post("/orders/99")
    background = flask_kafka.background
    assert background is not None
    background.ensure_started()
    with capture_events(FLASK_CLUSTER) as second:
        # The producer of the address was flushed and closed when the capture began:
        # its event reported as not delivered, not handed to a capture.
        between = background.final_stats
        assert client.post("/orders/2").status_code == 200
        second.wait_for_sync(2, timeout=3)
    assert [e["order_id"] for e in first.json_values("orders")] == [1]
    assert [e["order_id"] for e in second.json_values("orders")] == [2]
    assert paths(first) == ["/orders/1"] and paths(second) == ["/orders/2"]
    assert between.enqueued == 2 and between.delivered == 0 and between.failed == 2


def test_bare_wsgi_middleware_two_captures_and_events_between() -> None:
    cluster = cluster_name()
    app = AccessLogMiddleware(hello, topic="acc", cluster=cluster, bootstrap=UNREACHABLE, **FAST)
    assert app.background is not None
    client = Client(app)
    try:
        with capture_events(cluster) as first:
            client.get("/first")
            first.wait_for_sync(1, timeout=3)
        client.get("/between")
        app.background.ensure_started()
        with capture_events(cluster) as second:
            between = app.background.final_stats
            client.get("/second")
            second.wait_for_sync(1, timeout=3)
        # Each capture's events are all in it when it ends; later ones go elsewhere.
        client.get("/after")
        app.background.ensure_started()
    finally:
        app.close()
    assert paths(first) == ["/first"] and paths(second) == ["/second"]
    assert between.enqueued == 1 and between.failed == 1
    assert app.background.final_stats.enqueued == 1  # "/after": the address's producer


def test_a_capture_after_an_uncaptured_request_gets_its_events() -> None:
    """A request before any capture started the app's producer of the address, which
    held the cluster's name: the capture could not even begin."""
    cluster = cluster_name()
    app = AccessLogMiddleware(hello, topic="acc", cluster=cluster, bootstrap=UNREACHABLE, **FAST)
    assert app.background is not None
    client = Client(app)
    try:
        client.get("/before")
        app.background.ensure_started()
        with capture_events(cluster) as kafka:
            client.get("/during")
            kafka.wait_for_sync(1, timeout=3)
    finally:
        app.close()
    assert paths(kafka) == ["/during"]


def test_events_sent_across_the_switches_are_each_delivered_or_counted() -> None:
    """Requests from another thread all along: each event the middleware took is in one
    of the producers (the app's own, or a capture's) or counted as dropped."""
    cluster = cluster_name()
    owned: list[InMemoryProducer] = []

    def factory() -> InMemoryProducer:
        owned.append(InMemoryProducer())
        return owned[-1]

    app = AccessLogMiddleware(
        hello, topic="acc", cluster=cluster, producer_factory=factory, shutdown_timeout=1.0
    )
    assert app.background is not None
    stop = threading.Event()
    requests = 0

    def pound() -> None:
        nonlocal requests
        client = Client(app)
        while not stop.is_set():
            client.get("/")
            requests += 1
            time.sleep(0.0005)

    thread = threading.Thread(target=pound)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while app.emitted < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        with capture_events(cluster) as first:
            first.wait_for_sync(20, timeout=5)
        mark = app.emitted
        while app.emitted < mark + 20 and time.monotonic() < deadline + 5:
            time.sleep(0.005)
        with capture_events(cluster) as second:
            second.wait_for_sync(20, timeout=5)
    finally:
        stop.set()
        thread.join()
        app.close()
    assert len(owned) >= 2  # the app's own producer before, between and after
    captured = sum(len(p.events) for p in [*owned, first, second])
    assert captured + app.background.dropped == app.emitted
    assert app.emitted + app.dropped == requests


def test_django_capture_without_bootstrap_leaves_nothing_behind() -> None:
    """With no BOOTSTRAP, the background producer exists only for a capture; after it,
    events go to the app's own registered producer, as without any capture."""
    conf = {"ACCESS_LOG": {"topic": "access"}}
    own = InMemoryProducer()
    try:
        with override_settings(KAFKA_ASGI=conf):
            with capture_events() as first:
                DjangoClient().get("/items/1")
                first.wait_for_sync(1, topic="item-views", timeout=3)
            register_producer("default", own)
            try:
                DjangoClient().get("/items/2")
            finally:
                unregister_producer("default", own)
            with capture_events() as second:
                DjangoClient().get("/items/3")
                second.wait_for_sync(1, topic="item-views", timeout=3)
    finally:
        bg = kdjango._background.pop("default", None)
        if bg is not None:
            bg.stop()
    assert [e["item"] for e in first.json_values("item-views")] == [1]
    assert [e["item"] for e in own.json_values("item-views")] == [2]
    assert [e["item"] for e in second.json_values("item-views")] == [3]


def test_django_settings_given_a_producer_after_a_capture_replace_its_background() -> None:
    """A background producer made for a capture (no BOOTSTRAP then) is replaced once
    the settings name a producer of their own: it could never start on its own."""
    made: list[InMemoryProducer] = []

    def factory() -> InMemoryProducer:
        made.append(InMemoryProducer())
        return made[-1]

    try:
        with override_settings(KAFKA_ASGI={"ACCESS_LOG": {"topic": "access"}}):
            with capture_events() as captured:
                DjangoClient().get("/items/1")
                captured.wait_for_sync(1, topic="item-views", timeout=3)
        with override_settings(
            KAFKA_ASGI={"ACCESS_LOG": {"topic": "access"}, "PRODUCER_FACTORY": factory}
        ):
            DjangoClient().get("/items/2")
            deadline = time.monotonic() + 5.0
            while not made or not made[0].json_values("item-views"):
                assert time.monotonic() < deadline, "the factory's producer got nothing"
                time.sleep(0.05)
    finally:
        bg = kdjango._background.pop("default", None)
        if bg is not None:
            bg.stop()
    assert [e["item"] for e in captured.json_values("item-views")] == [1]
    assert [e["item"] for e in made[0].json_values("item-views")] == [2]


def test_in_memory_stats_keep_refusals_out_of_failed() -> None:
    """As for the Producer: a BufferFullError refusal is neither enqueued nor failed,
    so enqueued == delivered + failed + buffered."""
    producer = InMemoryProducer(max_buffering=1)
    producer.send_nowait("t", b"a")
    with pytest.raises(BufferFullError):
        producer.send_nowait("t", b"b")
    producer.buffer_full = True
    with pytest.raises(BufferFullError):
        producer.send_nowait("t", b"c")
    stats = producer.stats()
    assert (stats.enqueued, stats.delivered, stats.failed, stats.buffered) == (1, 1, 0, 0)
    assert stats.enqueued == stats.delivered + stats.failed + stats.buffered + stats.in_flight
    assert producer.rejected == 2


def test_a_capture_ended_before_the_background_thread_is_up_keeps_its_events() -> None:
    # The request inside the capture starts the thread; the capture ends at once, before
    # the thread's lifespan looks for a producer: it still takes the capture's.
    for _ in range(3):
        cluster = cluster_name()
        app = make_flask(
            cluster,
            KAFKA_ASGI_BOOTSTRAP=UNREACHABLE,
            KAFKA_ASGI_ACCESS_LOG={"topic": "acc"},
            **{f"KAFKA_ASGI_{k.upper()}": v for k, v in FAST.items()},
        )
        kafka = KafkaExtension(app)
        try:
            with capture_events(cluster) as captured:
                assert Client(app).post("/orders/7").status_code == 200
            assert [e["order_id"] for e in captured.json_values("orders")] == [7]
            assert paths(captured) == ["/orders/7"]
        finally:
            kafka.close()
