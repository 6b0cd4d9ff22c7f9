"""instrument() and closed or dropped producers: a lifespan run again instruments its new
producer without uninstrument(); the old one must neither be kept alive nor reported."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from types import SimpleNamespace

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.integrations.otel import instrument
from kafka_asgi.integrations.testing import InMemoryProducer
from tests.support.observability import FakeProducer, Otel

UNREACHABLE = "127.0.0.1:1"  # nothing listens there: never reached


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.meter_provider.shutdown()


def _default_client_id(producer: FakeProducer) -> FakeProducer:
    producer.client = SimpleNamespace(
        options=SimpleNamespace(connection=SimpleNamespace(client_id="kafka-asgi"))
    )
    return producer


def test_a_closed_producer_leaves_the_observed_instruments(otel: Otel) -> None:
    old = _default_client_id(FakeProducer(throttle_time_ms=4000, spilled=4000, buffered=3))
    old_hooks = instrument(old, meter_provider=otel.meter_provider, tracer_provider=None)
    old.closed = True  # type: ignore[attr-defined]  # its lifespan ended
    new = _default_client_id(FakeProducer(throttle_time_ms=1000, spilled=1000, buffered=9))
    instrument(new, meter_provider=otel.meter_provider, tracer_provider=None)
    # The live producer's values alone, not summed with (nor beside) the closed one's.
    assert otel.total("kafka_asgi.producer.throttle.time") == 1.0
    assert otel.total("kafka_asgi.producer.spill.records") == 1000
    assert [p.value for p in otel.points()["kafka_asgi.producer.buffer.records"]] == [9]
    # And the closed one is uninstrumented: its hooks are gone.
    assert not old_hooks.active and old.hooks is None


def test_an_in_memory_producer_closed_is_no_longer_observed(otel: Otel) -> None:
    producer = InMemoryProducer(max_buffering=7)
    producer.options = SimpleNamespace(max_buffering=7)  # type: ignore[attr-defined]
    instrument(producer, meter_provider=otel.meter_provider, tracer_provider=None)
    assert otel.total("kafka_asgi.producer.buffer.limit") == 7
    anyio.run(producer.aclose)
    assert "kafka_asgi.producer.buffer.limit" not in otel.points()


def test_instrumenting_keeps_no_producer_alive(otel: Otel) -> None:
    producer = FakeProducer(buffered=4)
    hooks = instrument(producer, meter_provider=otel.meter_provider, tracer_provider=None)
    assert hooks.producer is producer
    assert otel.total("kafka_asgi.producer.buffer.records") == 4
    ref = weakref.ref(producer)
    del producer
    gc.collect()
    assert ref() is None
    assert hooks.producer is None
    # A collected producer leaves the instruments (and its instrumentation).
    assert "kafka_asgi.producer.buffer.records" not in otel.points()
    assert not hooks.active
    hooks.uninstrument()  # nothing left to remove: no error


def test_a_real_producer_closed_is_freed_and_not_reported(otel: Otel) -> None:
    """README's OTel lifespan run twice: instrument(producer), then the lifespan closes
    it, with no uninstrument()."""

    async def lifespan(max_buffering: int) -> weakref.ref[Producer]:
        producer = Producer(UNREACHABLE, max_buffering=max_buffering, close_timeout=0.1)
        instrument(producer, meter_provider=otel.meter_provider, tracer_provider=None)
        await producer.aclose()
        return weakref.ref(producer)

    first = anyio.run(lifespan, 111)
    gc.collect()
    assert first() is None
    assert "kafka_asgi.producer.buffer.limit" not in otel.points()
    anyio.run(lifespan, 222)
    assert "kafka_asgi.producer.buffer.limit" not in otel.points()
