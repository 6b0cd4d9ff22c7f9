"""The metrics through a middleware's or a producer's end (no broker): the access-log
counters keep the events of a middleware that was dropped, a closed producer leaves
the Prometheus gauges when it closes, not when the collector frees it, and topics
named from data do not make series without end."""

from __future__ import annotations

import gc
import logging
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
from kafka_asgi.producer.hooks import ProducedPartition, ProduceRequestInfo
from kafka_asgi.protocol.errors import RequestTimedOutError
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


def _deliver_to_topics(producer: FakeProducer, count: int) -> None:
    """One batch of 2 records (100 bytes) to each of ``count`` topics, and one failed
    and one retried record each."""
    for i in range(count):
        topic = f"tenant-{i}"
        producer.request(ProduceRequestInfo(1, [ProducedPartition(topic, 0, 2, 100)]))
        producer.fail(topic, 1, RequestTimedOutError("late"))
        producer.retry(topic, 1, RequestTimedOutError("late"))


def _label_values(registry: CollectorRegistry, sample: str, label: str) -> dict[str, float]:
    return {
        s.labels[label]: s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == sample
    }


def test_prometheus_topic_labels_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """An app logging to a topic per tenant: each topic was a series of its own in
    every topic-labelled family, without end. The first 100 keep theirs; the rest add
    up under "<other>", with one warning; the totals are unchanged."""
    registry = CollectorRegistry()
    producer = FakeProducer()
    register(producer, registry=registry)
    with caplog.at_level(logging.WARNING, logger="kafka_asgi"):
        _deliver_to_topics(producer, 150)
    for sample in (
        "kafka_asgi_producer_records_sent_total",
        "kafka_asgi_producer_sent_bytes_total",
        "kafka_asgi_producer_batches_sent_total",
        "kafka_asgi_producer_records_failed_total",
        "kafka_asgi_producer_records_retried_total",
    ):
        values = _label_values(registry, sample, "topic")
        assert len(values) == 101, sample
        assert {f"tenant-{i}" for i in range(100)} < values.keys()
    sent = _label_values(registry, "kafka_asgi_producer_records_sent_total", "topic")
    assert sent["<other>"] == 100 and sum(sent.values()) == 300
    warnings = [r.getMessage() for r in caplog.records if "distinct topics" in r.getMessage()]
    assert len(warnings) == 1 and "'tenant-100'" in warnings[0]


def test_prometheus_max_topics(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    producer = FakeProducer()
    register(producer, registry=registry, max_topics=2)
    _deliver_to_topics(producer, 5)
    sent = _label_values(registry, "kafka_asgi_producer_records_sent_total", "topic")
    assert sent == {"tenant-0": 2, "tenant-1": 2, "<other>": 6}
    register(FakeProducer(), registry=registry)  # the bound it was made with
    register(FakeProducer(), registry=registry, max_topics=2)
    with pytest.raises(ValueError, match=r"max_topics=3: .* made with max_topics=2"):
        register(FakeProducer(), registry=registry, max_topics=3)
    for bad in (0, -1, True, 2.5, "10"):
        with pytest.raises(ValueError, match=f"max_topics must be a positive int, not {bad!r}"):
            register(registry=CollectorRegistry(), max_topics=bad)  # type: ignore[arg-type]


def test_otel_topic_attributes_are_bounded(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    """As for Prometheus: messaging.destination.name on the metrics takes the first 100
    topics, the rest add up under "<other>"; the spans keep the topic as it is."""
    producer = FakeProducer()
    instrument(producer, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    with caplog.at_level(logging.WARNING, logger="kafka_asgi"):
        _deliver_to_topics(producer, 150)
    points = otel.points()
    for name in (
        "kafka_asgi.producer.records.sent",
        "kafka_asgi.producer.bytes.sent",
        "kafka_asgi.producer.batches.sent",
        "kafka_asgi.producer.records.failed",
        "kafka_asgi.producer.records.retried",
        "messaging.client.operation.duration",
        "kafka_asgi.producer.batch.size",
    ):
        topics = {p.attributes["messaging.destination.name"] for p in points[name]}
        assert len(topics) == 101 and "<other>" in topics, name
    assert otel.total("kafka_asgi.producer.records.sent") == 300
    other = {"messaging.destination.name": "<other>"}
    assert otel.total("kafka_asgi.producer.records.sent", **other) == 100
    warnings = [r.getMessage() for r in caplog.records if "distinct topics" in r.getMessage()]
    assert len(warnings) == 1
    span_topics = {
        s.attributes["messaging.destination.name"] for s in otel.spans.get_finished_spans()
    }
    assert len(span_topics) == 150


def test_otel_max_topics(otel: Otel) -> None:
    producer = FakeProducer()
    providers = {"tracer_provider": otel.tracer_provider, "meter_provider": otel.meter_provider}
    instrument(producer, max_topics=1, **providers)
    _deliver_to_topics(producer, 3)
    sent = {
        p.attributes["messaging.destination.name"]: p.value
        for p in otel.points()["kafka_asgi.producer.records.sent"]
    }
    assert sent == {"tenant-0": 2, "<other>": 4}
    with pytest.raises(ValueError, match="max_topics must be a positive int, not 0"):
        instrument(FakeProducer(), max_topics=0, **providers)
