"""A stand-in producer for the hooks' unit tests: counts what the hooks are told, the
way the real producer's stats() does, so the tests can compare the two; a stand-in
middleware whose stats() the metrics read; and the OpenTelemetry SDK's in-memory
exporters (``Otel``)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kafka_asgi.producer import ProducerStats
from kafka_asgi.producer.hooks import ProduceRequestInfo, ProducerHooks, combine, without


@dataclass(eq=False)
class FakeProducer:
    hooks: ProducerHooks | None = None
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    buffered: int = 0
    in_flight: int = 0
    bytes_sent: int = 0
    batches_sent: int = 0
    spilled: int = 0
    throttle_time_ms: int = 0  # what its client's brokers asked, all request kinds
    client: Any = None  # the client it sends through; None: one of its own (itself)

    def __post_init__(self) -> None:
        self.options = SimpleNamespace(max_buffering=1000)
        if self.client is None:
            self.client = self

    def add_hooks(self, hooks: ProducerHooks) -> None:
        self.hooks = combine(self.hooks, hooks)

    def remove_hooks(self, hooks: ProducerHooks) -> None:
        self.hooks = without(self.hooks, hooks)

    def stats(self) -> ProducerStats:
        return ProducerStats(
            enqueued=self.delivered + self.failed + self.buffered + self.in_flight,
            delivered=self.delivered,
            failed=self.failed,
            retried=self.retried,
            buffered=self.buffered,
            in_flight=self.in_flight,
            bytes_sent=self.bytes_sent,
            batches_sent=self.batches_sent,
            last_error=None,
            throttle_time_ms=self.throttle_time_ms,
            spilled=self.spilled,
        )

    # What the real producer does at these points, hooks included.

    def request(self, info: ProduceRequestInfo, error: BaseException | None = None) -> None:
        assert self.hooks is not None
        token = self.hooks.request_started(info)
        self.hooks.request_finished(token, info, error)
        for p in info.partitions:
            if error is None and p.error_code == 0:
                self.delivered += p.records
                self.bytes_sent += p.size
                self.batches_sent += 1
                self.hooks.batch_delivered(p.topic, p.partition, p.records, p.size)

    def fail(self, topic: str, records: int, error: BaseException) -> None:
        assert self.hooks is not None
        self.failed += records
        self.hooks.records_failed(topic, 0, records, error)

    def retry(self, topic: str, records: int, error: BaseException) -> None:
        assert self.hooks is not None
        self.retried += records
        self.hooks.records_retried(topic, 0, records, error)


def run_send(
    producer: FakeProducer, topic: str, metadata: Any, error: BaseException | None
) -> None:
    assert producer.hooks is not None
    token = producer.hooks.send_started(topic, None)
    producer.hooks.send_finished(token, metadata, error)


class CountingMiddleware:
    def __init__(self) -> None:
        self.emitted = 0
        self.dropped = 0

    def stats(self) -> dict[str, int]:
        return {"emitted": self.emitted, "dropped": self.dropped, "sampled_out": 0}


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def points(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        if data is None:  # nothing recorded at all
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = list(m.data.data_points)
        return out

    def total(self, name: str, **attrs: Any) -> float:
        total = 0.0
        for p in self.points().get(name, []):
            if all(p.attributes.get(k) == v for k, v in attrs.items()):
                total += p.value
        return total
