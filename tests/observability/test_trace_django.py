"""Trace context in the Django access-log middleware (in-process, in-memory producer)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

from kafka_asgi.integrations import django as kdjango
from kafka_asgi.integrations.testing import InMemoryProducer
from tests.integrations import django_testapp  # noqa: F401 - configures Django first

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def _producer(access_log: dict[str, object]) -> Iterator[InMemoryProducer]:
    producer = InMemoryProducer()
    conf = {"PRODUCER_FACTORY": lambda: producer, "ACCESS_LOG": access_log}
    with override_settings(KAFKA_ASGI=conf):
        yield producer
    bg = kdjango._background.pop("default", None)
    if bg is not None:
        bg.stop()


@pytest.fixture
def producer() -> Iterator[InMemoryProducer]:
    yield from _producer({"topic": "access"})


@pytest.fixture
def producer_off() -> Iterator[InMemoryProducer]:
    yield from _producer({"topic": "access", "trace_context": False})


def test_traceparent_in_event_and_view_headers(producer: InMemoryProducer) -> None:
    c = Client()
    c.get("/items/5", HTTP_TRACEPARENT=TRACEPARENT, HTTP_TRACESTATE="k=v")
    c.get("/items/6")
    producer.wait_for_sync(2, topic="access")
    producer.wait_for_sync(2, topic="item-views")
    first, second = producer.json_values("access")
    assert (first["trace_id"], first["span_id"]) == (TRACE, PARENT)
    assert (second["trace_id"], second["span_id"]) == (None, None)
    view, other = producer.events_for("item-views")
    assert dict(view.headers)["traceparent"] == TRACEPARENT.encode()
    assert dict(view.headers)["tracestate"] == b"k=v"
    assert "traceparent" not in dict(other.headers)


def test_active_otel_span_wins(producer: InMemoryProducer) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("django")
    with tracer.start_as_current_span("server") as span:
        Client().get("/items/5", HTTP_TRACEPARENT=TRACEPARENT)
    producer.wait_for_sync(1, topic="access")
    (event,) = producer.json_values("access")
    ctx = span.get_span_context()
    assert event["trace_id"] == f"{ctx.trace_id:032x}"
    assert event["span_id"] == f"{ctx.span_id:016x}"


def test_trace_context_off(producer_off: InMemoryProducer) -> None:
    Client().get("/items/5", HTTP_TRACEPARENT=TRACEPARENT)
    producer_off.wait_for_sync(1, topic="access")
    producer_off.wait_for_sync(1, topic="item-views")
    (event,) = producer_off.json_values("access")
    assert "trace_id" not in event
    (view,) = producer_off.events_for("item-views")
    assert "traceparent" not in dict(view.headers)
