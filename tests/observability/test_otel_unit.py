"""The OpenTelemetry hooks against the SDK's in-memory exporters (no broker): what a
producer reports through its hooks becomes spans and metric points."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from kafka_asgi.integrations.otel import ProducerInstrumentation, instrument
from kafka_asgi.producer import RecordMetadata
from kafka_asgi.producer.hooks import ProducedPartition, ProduceRequestInfo
from kafka_asgi.protocol.errors import NotLeaderOrFollowerError, RequestTimedOutError
from tests.support.observability import FakeProducer, Otel, run_send


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.meter_provider.shutdown()


def _instrument(producer: FakeProducer, otel: Otel) -> ProducerInstrumentation:
    return instrument(
        producer, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider
    )


def test_counters_equal_stats(otel: Otel) -> None:
    producer = FakeProducer()
    _instrument(producer, otel)
    for i in range(7):
        producer.request(
            ProduceRequestInfo(
                1,
                [
                    ProducedPartition("a", 0, 10, 1000, base_offset=i * 10),
                    ProducedPartition("b", 1, 3, 300, base_offset=i * 3),
                ],
            )
        )
    producer.fail("a", 4, RequestTimedOutError("late"))
    producer.retry("b", 5, NotLeaderOrFollowerError("moved"))
    producer.buffered = 12
    producer.in_flight = 3
    stats = producer.stats()
    assert otel.total("kafka_asgi.producer.records.sent") == stats.delivered == 91
    assert (
        otel.total("kafka_asgi.producer.records.sent", **{"messaging.destination.name": "a"}) == 70
    )
    assert otel.total("kafka_asgi.producer.records.failed") == stats.failed == 4
    assert (
        otel.total("kafka_asgi.producer.records.failed", **{"error.type": "RequestTimedOutError"})
        == 4
    )
    assert otel.total("kafka_asgi.producer.records.retried") == stats.retried == 5
    assert otel.total("kafka_asgi.producer.bytes.sent") == stats.bytes_sent == 9100
    assert otel.total("kafka_asgi.producer.batches.sent") == stats.batches_sent == 14
    assert otel.total("kafka_asgi.producer.buffer.records") == 12
    assert otel.total("kafka_asgi.producer.in_flight.records") == 3
    assert otel.total("kafka_asgi.producer.buffer.limit") == 1000
    assert otel.total("kafka_asgi.producer.in_flight.requests") == 0
    (duration,) = otel.points()["messaging.client.operation.duration"]
    assert duration.count == 7
    (size,) = [
        p
        for p in otel.points()["kafka_asgi.producer.batch.size"]
        if p.attributes["messaging.destination.name"] == "b"
    ]
    assert size.count == 7 and size.sum == 2100


def test_request_span_attributes(otel: Otel) -> None:
    producer = FakeProducer()
    _instrument(producer, otel)
    producer.request(ProduceRequestInfo(3, [ProducedPartition("t", 2, 5, 500, base_offset=40)]))
    producer.request(
        ProduceRequestInfo(
            3,
            [ProducedPartition("t", 0, 1, 100), ProducedPartition("u", 0, 2, 100, error_code=7)],
        )
    )
    producer.request(
        ProduceRequestInfo(3, [ProducedPartition("t", 0, 1, 100)]), error=ConnectionError("x")
    )
    one, two, three = otel.spans.get_finished_spans()
    assert one.name == "send t" and one.kind is SpanKind.CLIENT and one.parent is None
    assert one.attributes is not None
    assert dict(one.attributes) == {
        "messaging.system": "kafka",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.batch.message_count": 5,
        "messaging.kafka.node_id": 3,
        "messaging.destination.name": "t",
        "messaging.destination.partition.id": "2",
        "messaging.kafka.offset": 40,
    }
    assert one.status.status_code is StatusCode.UNSET
    assert two.name == "send" and two.attributes is not None
    assert two.attributes["messaging.batch.message_count"] == 3
    assert "messaging.destination.name" not in two.attributes
    assert two.attributes["error.type"] == "RequestTimedOutError"  # Kafka's code 7
    assert two.status.status_code is StatusCode.ERROR
    assert three.attributes is not None and three.attributes["error.type"] == "ConnectionError"


def test_send_span_is_a_child_of_the_caller(otel: Otel) -> None:
    producer = FakeProducer()
    _instrument(producer, otel)
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as parent:
        run_send(producer, "t", RecordMetadata("t", 1, 1234, 0), None)
        run_send(producer, "t", None, RequestTimedOutError("late"))
    ok, failed, handler = otel.spans.get_finished_spans()
    assert handler.name == "handler"
    assert ok.parent is not None
    assert ok.parent.span_id == parent.get_span_context().span_id
    assert ok.kind is SpanKind.PRODUCER and ok.name == "send t"
    assert ok.attributes is not None
    assert ok.attributes["messaging.kafka.offset"] == 1234
    assert ok.attributes["messaging.destination.partition.id"] == "1"
    assert ok.attributes["messaging.destination.name"] == "t"
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "RequestTimedOutError"
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]


def test_uninstrument(otel: Otel) -> None:
    producer = FakeProducer()
    hooks = _instrument(producer, otel)
    assert producer.hooks is hooks
    producer.buffered = 5
    assert otel.total("kafka_asgi.producer.buffer.records") == 5
    hooks.uninstrument()
    assert producer.hooks is None
    assert otel.total("kafka_asgi.producer.buffer.records") == 0


def test_metrics_only(otel: Otel) -> None:
    producer = FakeProducer()
    instrument(
        producer,
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        traces=False,
    )
    producer.request(ProduceRequestInfo(1, [ProducedPartition("t", 0, 2, 20)]))
    run_send(producer, "t", RecordMetadata("t", 0, 1, 0), None)
    assert otel.spans.get_finished_spans() == ()
    assert otel.total("kafka_asgi.producer.records.sent") == 2


def test_instrument_rejects_what_is_not_a_producer() -> None:
    with pytest.raises(TypeError, match="add_hooks"):
        instrument(object())


def test_spill_instruments_follow_stats(otel: Otel) -> None:
    import dataclasses

    producer = FakeProducer()
    base_stats = producer.stats
    spill = {"spilled": 100, "spilled_bytes": 4096, "replayed": 40, "spill_backlog_bytes": 512}
    producer.stats = lambda: dataclasses.replace(base_stats(), **spill)  # type: ignore[method-assign]
    _instrument(producer, otel)
    assert otel.total("kafka_asgi.producer.spill.records") == 100
    assert otel.total("kafka_asgi.producer.spill.bytes") == 4096
    assert otel.total("kafka_asgi.producer.spill.replayed") == 40
    assert otel.total("kafka_asgi.producer.spill.backlog") == 512
    assert otel.total("kafka_asgi.producer.spill.dropped") == 0


def test_throttle_time_follows_stats(otel: Otel) -> None:
    producer = FakeProducer()
    _instrument(producer, otel)
    assert otel.total("kafka_asgi.producer.throttle.time") == 0
    # What the client's brokers asked, any kind of request, in seconds.
    producer.throttle_time_ms = 1750
    assert otel.total("kafka_asgi.producer.throttle.time") == 1.75


def test_two_producers_keep_their_own_gauges(otel: Otel) -> None:
    # The observed points carried only messaging.system: two producers on one meter
    # provider gave one buffer.limit point, the last callback's, the other lost.
    def with_client_id(client_id: str, limit: int) -> FakeProducer:
        producer = FakeProducer()
        producer.options = SimpleNamespace(max_buffering=limit)
        producer.client = SimpleNamespace(
            options=SimpleNamespace(connection=SimpleNamespace(client_id=client_id))
        )
        return producer

    a, b = with_client_id("orders", 100), with_client_id("audit", 5000)
    _instrument(a, otel)
    _instrument(b, otel)
    points = otel.points()["kafka_asgi.producer.buffer.limit"]
    assert sorted((p.attributes["messaging.client.id"], p.value) for p in points) == [
        ("audit", 5000),
        ("orders", 100),
    ]


def test_a_producer_instrumented_after_another_left_is_observed(otel: Otel) -> None:
    # An app's lifespan run once per test: instrument(), uninstrument(), instrument()
    # a new producer on the same meter provider. The second instrument's gauges were
    # ignored by the SDK (a name made twice on a meter), so nothing of it was observed.
    first = FakeProducer()
    _instrument(first, otel).uninstrument()
    second = FakeProducer()
    second.buffered = 7
    _instrument(second, otel)
    assert otel.total("kafka_asgi.producer.buffer.records") == 7
    assert [p.value for p in otel.points()["kafka_asgi.producer.buffer.limit"]] == [1000]


def test_two_threads_instrumenting_at_once_are_both_observed(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two background producers starting together: both made the meter's instruments,
    # the SDK kept the first's, and the one kept in the table could be the second,
    # whose callbacks the SDK never calls: no producer observed at all.
    from kafka_asgi.integrations import otel as otel_module

    made = otel_module._Observed.__init__
    first_made = threading.Event()
    calls: list[int] = []

    def interleaved(self: Any, meter: Any) -> None:
        # The first thread makes its instruments first and is slow to store them;
        # a second one, made after, would be stored first.
        calls.append(len(calls))
        if calls[-1] == 0:
            made(self, meter)
            first_made.set()
            time.sleep(0.2)
        else:
            first_made.wait(5)
            made(self, meter)

    monkeypatch.setattr(otel_module._Observed, "__init__", interleaved)
    producers = []
    for client_id, limit in (("a", 10), ("b", 20)):
        producer = FakeProducer()
        producer.options = SimpleNamespace(max_buffering=limit)
        producer.client = SimpleNamespace(
            options=SimpleNamespace(connection=SimpleNamespace(client_id=client_id))
        )
        producers.append(producer)
    threads = [threading.Thread(target=_instrument, args=(p, otel)) for p in producers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    points = otel.points()["kafka_asgi.producer.buffer.limit"]
    assert sorted((p.attributes["messaging.client.id"], p.value) for p in points) == [
        ("a", 10),
        ("b", 20),
    ]
