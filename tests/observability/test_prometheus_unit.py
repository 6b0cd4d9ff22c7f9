"""The Prometheus collector (no broker): names, units, values equal to stats(), and the
multiprocess mode summing several worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kafka_asgi.integrations.middleware_stats import track_middleware
from kafka_asgi.integrations.prometheus import metrics_app, register
from kafka_asgi.producer.hooks import ProducedPartition, ProduceRequestInfo
from kafka_asgi.protocol.errors import NotLeaderOrFollowerError, RequestTimedOutError
from tests.support.observability import CountingMiddleware, FakeProducer

REPO = Path(__file__).resolve().parents[2]


class SharedClient:
    """A client two producers send through (client=)."""


def test_throttle_time_is_counted_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counter follows stats().throttle_time_ms: what the brokers asked the
    producer's client to wait for any request (a request quota throttles Metadata and
    InitProducerId too, which no Produce hook sees), a shared client's sum once."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    registry = CollectorRegistry()
    name = "kafka_asgi_producer_throttle_seconds_total"
    shared = SharedClient()
    a, b, own = FakeProducer(client=shared), FakeProducer(client=shared), FakeProducer()
    metrics = register(a, registry=registry)
    register(b, registry=registry)
    register(own, registry=registry)
    assert registry.get_sample_value(name) == 0
    # A Produce answer asking for 1.5 s: the client's sum, which both producers report.
    a.request(ProduceRequestInfo(1, [ProducedPartition("a", 0, 1, 10)], 1500))
    a.throttle_time_ms = b.throttle_time_ms = 1500
    assert registry.get_sample_value(name) == 1.5
    # A metadata answer asking for 250 ms, on the other producer's own client.
    own.throttle_time_ms = 250
    assert registry.get_sample_value(name) == 1.75
    # A producer leaving takes nothing back, and the others' growth still counts.
    a.throttle_time_ms = b.throttle_time_ms = 2000
    metrics.remove_producer(a)
    assert registry.get_sample_value(name) == 2.25
    metrics.remove_producer(b)
    own.throttle_time_ms = 300
    assert registry.get_sample_value(name) == 2.3


def test_a_removed_producer_leaves_the_others_spill_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    registry = CollectorRegistry()
    name = "kafka_asgi_producer_spilled_records_total"
    a, b = FakeProducer(), FakeProducer()
    metrics = register(a, registry=registry)
    register(b, registry=registry)
    a.spilled = 100
    assert registry.get_sample_value(name) == 100
    # b spills 50 and a leaves before the next scrape: b's 50 are still counted
    # (a sum over the producers went down to 50 and counted nothing).
    b.spilled = 50
    metrics.remove_producer(a)
    assert registry.get_sample_value(name) == 150


def test_values_equal_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    registry = CollectorRegistry()
    producer = FakeProducer()
    metrics = register(producer, registry=registry)
    assert register(registry=registry) is metrics  # one set of metrics per registry
    register(producer, registry=registry)  # the same producer twice: hooked once
    middleware = CountingMiddleware()
    track_middleware(middleware)
    for i in range(5):
        producer.request(
            ProduceRequestInfo(
                1,
                [
                    ProducedPartition("a", 0, 10, 1000, base_offset=i),
                    ProducedPartition("b", 0, 1, 64, base_offset=i),
                ],
            )
        )
    producer.fail("a", 2, RequestTimedOutError("late"))
    producer.retry("b", 3, NotLeaderOrFollowerError("moved"))
    producer.buffered, producer.in_flight = 7, 2
    middleware.emitted, middleware.dropped = 40, 1

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    stats = producer.stats()
    sent = value("kafka_asgi_producer_records_sent_total", topic="a")
    assert sent == 50
    assert sent + (value("kafka_asgi_producer_records_sent_total", topic="b") or 0) == (
        stats.delivered
    )
    assert (
        value(
            "kafka_asgi_producer_records_failed_total", topic="a", error_type="RequestTimedOutError"
        )
        == stats.failed
        == 2
    )
    assert (
        value(
            "kafka_asgi_producer_records_retried_total",
            topic="b",
            error_type="NotLeaderOrFollowerError",
        )
        == stats.retried
        == 3
    )
    assert value("kafka_asgi_producer_sent_bytes_total", topic="a") == 5000
    assert value("kafka_asgi_producer_batches_sent_total", topic="b") == 5
    assert value("kafka_asgi_producer_buffered_records") == 7
    assert value("kafka_asgi_producer_in_flight_records") == 2
    assert value("kafka_asgi_producer_buffer_limit_records") == 1000
    assert value("kafka_asgi_producer_in_flight_requests") == 0
    assert value("kafka_asgi_producer_request_duration_seconds_count") == 5
    assert value("kafka_asgi_producer_batch_size_bytes_sum") == 5 * 1064
    assert (
        value("kafka_asgi_access_log_events_emitted_total", middleware="CountingMiddleware") == 40
    )
    assert value("kafka_asgi_access_log_events_dropped_total", middleware="CountingMiddleware") == 1
    text = generate_latest(registry).decode()
    assert "# TYPE kafka_asgi_producer_request_duration_seconds histogram" in text
    metrics.remove_producer(producer)
    assert producer.hooks is None
    assert value("kafka_asgi_producer_buffered_records") == 0


def test_register_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="add_hooks"):
        register(object(), registry=CollectorRegistry())
    with pytest.raises(ValueError, match="sync_interval"):
        register(registry=CollectorRegistry(), sync_interval=0)


_WORKER = """
import os, sys
from prometheus_client import CollectorRegistry
from kafka_asgi.integrations.prometheus import register
from kafka_asgi.producer.hooks import ProducedPartition, ProduceRequestInfo
from tests.support.observability import FakeProducer

producer = FakeProducer()
metrics = register(producer, registry=CollectorRegistry())
n = int(sys.argv[1])
producer.request(ProduceRequestInfo(1, [ProducedPartition("access-log", 0, n, 10 * n)]))
producer.buffered = n
metrics.sync()
"""

_SCRAPE = """
import anyio, json
from kafka_asgi.integrations.prometheus import metrics_app

async def main():
    sent = []
    async def receive():
        return {"type": "http.request", "body": b""}
    async def send(message):
        sent.append(message)
    await metrics_app()({"type": "http", "method": "GET", "path": "/"}, receive, send)
    print(json.dumps(sent[1]["body"].decode()))

anyio.run(main)
"""


def test_multiprocess_mode_sums_the_workers(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    for n in (300, 700):
        subprocess.run(
            [sys.executable, "-c", _WORKER, str(n)], env=env, check=True, timeout=120, cwd=REPO
        )
    out = subprocess.run(
        [sys.executable, "-c", _SCRAPE],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    text = json.loads(out.stdout)
    assert 'kafka_asgi_producer_records_sent_total{topic="access-log"} 1000.0' in text
    assert 'kafka_asgi_producer_sent_bytes_total{topic="access-log"} 10000.0' in text
    # Gauges are per live worker (livesum): both pids' files are still there.
    assert "kafka_asgi_producer_buffered_records 1000.0" in text


def test_metrics_app_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    registry = CollectorRegistry()
    producer = FakeProducer()
    register(producer, registry=registry)
    producer.request(ProduceRequestInfo(1, [ProducedPartition("t", 0, 3, 30)]))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    anyio.run(metrics_app(registry), {"type": "http", "path": "/"}, receive, send)
    assert sent[0]["status"] == 200
    body = sent[1]["body"]
    assert isinstance(body, bytes)
    assert b'kafka_asgi_producer_records_sent_total{topic="t"} 3.0' in body


def test_spill_counters_follow_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    registry = CollectorRegistry()
    producer = FakeProducer()
    spill = {"spilled": 0, "spilled_bytes": 0, "replayed": 0, "spill_queued": 0}
    base_stats = producer.stats
    producer.stats = lambda: dataclasses.replace(base_stats(), **spill)  # type: ignore[method-assign]
    register(producer, registry=registry)

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, {})

    spill.update(spilled=100, spilled_bytes=4096, replayed=40, spill_queued=7)
    generate_latest(registry)  # a scrape syncs
    assert value("kafka_asgi_producer_spilled_records_total") == 100
    assert value("kafka_asgi_producer_spilled_bytes_total") == 4096
    assert value("kafka_asgi_producer_replayed_records_total") == 40
    assert value("kafka_asgi_producer_spill_queued_records") == 7
    spill.update(spilled=150, replayed=140, spill_queued=0)
    generate_latest(registry)
    assert value("kafka_asgi_producer_spilled_records_total") == 150
    assert value("kafka_asgi_producer_replayed_records_total") == 140
    assert value("kafka_asgi_producer_spill_dropped_records_total") == 0
    assert value("kafka_asgi_producer_spill_queued_records") == 0
