"""The metrics through a middleware's or a producer's end (no broker): the access-log
counters keep the events of a middleware that was dropped, and a closed producer
leaves the Prometheus gauges when it closes, not when the collector frees it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from kafka_asgi.integrations.access_log import AccessLogMiddleware
from kafka_asgi.integrations.middleware_stats import middleware_totals, track_middleware
from kafka_asgi.integrations.otel import instrument
from kafka_asgi.integrations.prometheus import register
from kafka_asgi.integrations.testing import InMemoryProducer
from tests.support.fake_client import FakeClient
from tests.support.observability import CountingMiddleware, FakeProducer, Otel
from tests.support.producers import running

EMITTED = "kafka_asgi_access_log_events_emitted_total"


# A class of its own per test: the totals are per class name, for the whole process.
class OtelDroppedMiddleware(CountingMiddleware):
    pass


class HashableClient(FakeClient):
    """FakeClient, as a key of the collector's weak dict of clients."""

    __hash__ = object.__hash__


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.meter_provider.shutdown()


@pytest.mark.parametrize("death", ["refcount", "cycle"])
def test_prometheus_keeps_the_events_of_a_dropped_middleware(death: str) -> None:
    """An app rebuilt: its first middleware's 100 events stay counted, and the second's
    60 are added (not ignored until they pass the first's 100)."""
    registry = CollectorRegistry()
    register(registry=registry)
    kind: type[CountingMiddleware] = type(f"Dropped{death}", (CountingMiddleware,), {})
    labels = {"middleware": kind.__name__}
    first = kind()
    track_middleware(first)
    first.emitted, first.dropped = 100, 3
    assert registry.get_sample_value(EMITTED, labels) == 100
    if death == "cycle":
        first.itself = first  # type: ignore[attr-defined]
    gone = weakref.ref(first)
    del first
    gc.collect()
    assert gone() is None
    second = kind()
    track_middleware(second)
    second.emitted = 60
    assert registry.get_sample_value(EMITTED, labels) == 160
    second.emitted = 120
    assert registry.get_sample_value(EMITTED, labels) == 220
    dropped = "kafka_asgi_access_log_events_dropped_total"
    assert registry.get_sample_value(dropped, labels) == 3


def test_otel_access_log_counter_never_goes_down(otel: Otel) -> None:
    """The monotonic counter OTel reads keeps a dropped middleware's events."""
    instrument(FakeProducer(), meter_provider=otel.meter_provider, traces=False)
    name = "kafka_asgi.access_log.events.emitted"
    attrs = {"kafka_asgi.middleware": "OtelDroppedMiddleware"}
    first = OtelDroppedMiddleware()
    track_middleware(first)
    first.emitted = 100
    assert otel.total(name, **attrs) == 100
    del first
    gc.collect()
    second = OtelDroppedMiddleware()
    track_middleware(second)
    second.emitted = 60
    assert otel.total(name, **attrs) == 160


def test_a_real_middleware_is_freed_at_once_and_its_events_kept() -> None:
    """Tracking holds nothing up: an ASGI middleware dropped is freed by reference
    counting (the collector off), with its app, and its events stay in the totals."""

    class App:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    async def request(middleware: AccessLogMiddleware) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "root_path": "",
            "headers": [],
            "client": ("127.0.0.1", 1234),
            "server": ("test", 80),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            pass

        for _ in range(5):
            await middleware(scope, receive, send)

    def emitted() -> int:
        return middleware_totals().get("AccessLogMiddleware", {}).get("emitted", 0)

    producer = InMemoryProducer()
    before = emitted()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        app = App()
        middleware = AccessLogMiddleware(app, producer=producer)
        anyio.run(request, middleware)
        assert emitted() == before + 5
        app_gone, middleware_gone = weakref.ref(app), weakref.ref(middleware)
        del app, middleware
        assert middleware_gone() is None and app_gone() is None
        assert emitted() == before + 5
    finally:
        if was_enabled:
            gc.enable()
    assert len(producer.events) == 5


def test_a_closed_producer_leaves_the_gauges() -> None:
    """Closed (and still referenced: a closed Producer is often kept by cycles), a
    producer counts in no gauge; what its counters grew by since the last scrape is
    still counted, once."""
    registry = CollectorRegistry()
    metrics = register(registry=registry)
    a, b = FakeProducer(), FakeProducer()
    metrics.add_producer(a)
    metrics.add_producer(b)
    a.buffered, b.buffered = 7, 2
    limit = "kafka_asgi_producer_buffer_limit_records"
    spilled = "kafka_asgi_producer_spilled_records_total"
    assert registry.get_sample_value(limit) == 2000
    assert registry.get_sample_value("kafka_asgi_producer_buffered_records") == 9
    a.spilled = 5
    a.closed = True  # type: ignore[attr-defined]  # as InMemoryProducer says it
    assert registry.get_sample_value(limit) == 1000
    assert registry.get_sample_value("kafka_asgi_producer_buffered_records") == 2
    assert registry.get_sample_value(spilled) == 5
    assert a.hooks is None  # let go of
    metrics.add_producer(a)  # registered again: adds nothing twice
    assert registry.get_sample_value(limit) == 1000
    assert registry.get_sample_value(spilled) == 5


@pytest.mark.anyio
async def test_a_closed_producer_leaves_the_gauges_before_it_is_collected(
    anyio_backend: str,
) -> None:
    registry = CollectorRegistry()
    limit = "kafka_asgi_producer_buffer_limit_records"
    fake = HashableClient()
    async with running(fake, max_buffering=1000) as producer:
        register(producer, registry=registry)
        assert registry.get_sample_value(limit) == 1000
    # A lifespan run again: a new producer, the closed one still alive.
    async with running(fake, max_buffering=500) as again:
        register(again, registry=registry)
        assert registry.get_sample_value(limit) == 500
    assert registry.get_sample_value(limit) == 0
    assert producer.stats().buffered == 0  # still referenced here
