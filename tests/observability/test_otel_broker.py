"""OpenTelemetry against the real broker, with the SDK's in-memory exporters: the
metric values equal what stats() reports, and the spans carry Kafka's answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kafka_asgi import Producer
from kafka_asgi.integrations.otel import instrument

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


def totals(reader: InMemoryMetricReader) -> dict[str, float]:
    out: dict[str, float] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    value = getattr(p, "value", None)
                    if value is None:  # a histogram: its count
                        value = p.count
                    out[m.name] = out.get(m.name, 0) + value
    return out


async def test_metrics_equal_stats_and_send_span_has_the_offset(
    kafka: Any, new_topic: Callable[..., str]
) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    a, b = new_topic(partitions=2, prefix="otel-a"), new_topic(prefix="otel-b")
    n = 500
    async with Producer(kafka.plaintext, batch_num=64) as producer:
        instrument(producer, tracer_provider=tracer_provider, meter_provider=meter_provider)
        for i in range(n):
            producer.send_nowait(a if i % 3 else b, b"x" * (i % 50 + 1))
        await producer.flush(timeout=30)
        sent = await producer.send(b, b"sync", key=b"k")
        stats = producer.stats()
        got = totals(reader)
    meter_provider.shutdown()
    assert stats.delivered == n + 1 and stats.failed == 0
    assert got["kafka_asgi.producer.records.sent"] == stats.delivered
    assert got["kafka_asgi.producer.bytes.sent"] == stats.bytes_sent
    assert got["kafka_asgi.producer.batches.sent"] == stats.batches_sent
    assert got.get("kafka_asgi.producer.records.failed", 0) == stats.failed
    assert got.get("kafka_asgi.producer.records.retried", 0) == stats.retried
    assert got["kafka_asgi.producer.buffer.records"] == stats.buffered == 0
    assert got["kafka_asgi.producer.in_flight.requests"] == 0
    assert got["kafka_asgi.producer.batch.size"] == stats.batches_sent  # one per batch
    requests = got["messaging.client.operation.duration"]
    assert 1 <= requests <= stats.batches_sent

    finished = spans.get_finished_spans()
    (send_span,) = [s for s in finished if s.kind is SpanKind.PRODUCER]
    assert send_span.name == f"send {b}"
    assert send_span.attributes is not None
    assert send_span.attributes["messaging.system"] == "kafka"
    assert send_span.attributes["messaging.destination.name"] == b
    assert send_span.attributes["messaging.kafka.offset"] == sent.offset
    assert send_span.attributes["messaging.destination.partition.id"] == str(sent.partition)
    request_spans = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert len(request_spans) == requests
    assert (
        sum(
            s.attributes["messaging.batch.message_count"]  # type: ignore[index]
            for s in request_spans
        )
        == stats.delivered
    )
    assert all("error.type" not in (s.attributes or {}) for s in request_spans)


async def test_failed_records_are_counted_with_their_error(
    kafka: Any, new_topic: Callable[..., str]
) -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    topic = new_topic(prefix="otel-small", config={"max.message.bytes": "1000"})
    async with Producer(kafka.plaintext, max_retry=0) as producer:
        instrument(producer, tracer_provider=tracer_provider, meter_provider=meter_provider)
        with pytest.raises(Exception) as raised:
            await producer.send(topic, b"y" * 5000)
        stats = producer.stats()
    got = totals(reader)
    meter_provider.shutdown()
    assert stats.failed == 1
    assert got["kafka_asgi.producer.records.failed"] == 1
    (send_span,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert send_span.attributes is not None
    assert send_span.attributes["error.type"] == type(raised.value).__name__


async def test_inject_trace_context(kafka: Any, new_topic: Callable[..., str]) -> None:
    from kafka_asgi import EARLIEST, BasicConsumer

    tracer = TracerProvider().get_tracer("app")
    topic = new_topic(prefix="inject")
    async with Producer(kafka.plaintext, inject_trace_context=True) as producer:
        with tracer.start_as_current_span("handler") as span:
            producer.send_nowait(topic, b"nowait")
            await producer.send(topic, b"sync", headers={"traceparent": b"mine"})
            await producer.send_buffered(topic, b"buffered", headers=[("h", b"1")])
        producer.send_nowait(topic, b"outside")
        await producer.flush(timeout=30)
    async with BasicConsumer(kafka.plaintext) as consumer:
        records = [r async for r in consumer.follow(topic, offset=EARLIEST, stop_at_end=True)]
    ctx = span.get_span_context()
    expected = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()
    got = {r.value: dict(r.headers) for r in records}
    assert got[b"nowait"] == {"traceparent": expected}
    assert got[b"sync"] == {"traceparent": b"mine"}  # the caller's own header wins
    assert got[b"buffered"] == {"h": b"1", "traceparent": expected}
    assert got[b"outside"] == {}  # no span current: nothing to inject


def test_inject_trace_context_needs_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"kafka-asgi\[otel\]"):
        Producer("127.0.0.1:1", inject_trace_context=True)
    with pytest.raises(TypeError, match="inject_trace_context"):
        Producer("127.0.0.1:1", inject_trace_context="yes")
    Producer("127.0.0.1:1")  # off by default: no import attempted


async def test_a_raising_hook_never_breaks_delivery(
    kafka: Any, new_topic: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    from kafka_asgi.producer.hooks import ProducerHooks

    class Broken(ProducerHooks):
        calls = 0

        def _boom(self, *args: Any) -> Any:
            Broken.calls += 1
            raise RuntimeError("hook bug")

        request_started = request_finished = batch_delivered = _boom
        send_started = send_finished = _boom

    topic = new_topic(prefix="broken-hook")
    async with Producer(kafka.plaintext) as producer:
        hooks = Broken()
        producer.add_hooks(hooks)
        producer.send_nowait(topic, b"a")
        sent = await producer.send(topic, b"b")
        producer.remove_hooks(hooks)
        producer.send_nowait(topic, b"c")
        await producer.flush(timeout=30)
        stats = producer.stats()
    assert stats.delivered == 3 and stats.failed == 0 and sent.offset >= 0
    assert Broken.calls >= 4
    assert "hook bug" in caplog.text or "raised" in caplog.text
    with pytest.raises(TypeError, match="ProducerHooks"):
        producer.add_hooks(object())  # type: ignore[arg-type]
