"""Trace context end to end against the real broker: the request's trace in the
access-log event and in the handler's events, from the ``traceparent`` header or from
the active OpenTelemetry span (opentelemetry-instrumentation-asgi)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from kafka_asgi import EARLIEST, BasicConsumer
from kafka_asgi.integrations import AccessLogMiddleware, producer_lifespan
from kafka_asgi.integrations.fastapi import KafkaLogger

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def make_app(access_topic: str, events_topic: str, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/orders/{n}")
    async def order(n: int, kafka: KafkaLogger) -> dict[str, int]:
        kafka.log(events_topic, {"order": n})
        return {"order": n}

    app.add_middleware(AccessLogMiddleware, topic=access_topic, **options)
    return app


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    async with BasicConsumer(bootstrap) as consumer:
        return [r async for r in consumer.follow(topic, offset=EARLIEST, stop_at_end=True)]


async def serve(app: Any, bootstrap: str, *requests: dict[str, str]) -> None:
    async with producer_lifespan(bootstrap=bootstrap, shutdown_timeout=30.0):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for i, headers in enumerate(requests):
                r = await client.get(f"/orders/{i}", headers=headers)
                assert r.status_code == 200


async def test_traceparent_header_reaches_both_topics(
    kafka: Any, new_topic: Callable[..., str]
) -> None:
    access, events = new_topic(prefix="access"), new_topic(prefix="events")
    app = make_app(access, events)
    await serve(
        app,
        kafka.plaintext,
        {"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7"},
        {},
        {"traceparent": "00-garbage"},
    )
    logged = [json.loads(r.value) for r in await read_all(kafka.plaintext, access)]
    assert [(e["path"], e["trace_id"], e["span_id"]) for e in logged] == [
        ("/orders/0", TRACE, PARENT),
        ("/orders/1", None, None),
        ("/orders/2", None, None),
    ]
    records = await read_all(kafka.plaintext, events)
    assert len(records) == 3
    first = dict(records[0].headers)
    assert first["traceparent"] == TRACEPARENT.encode()
    assert first["tracestate"] == b"rojo=00f067aa0ba902b7"
    assert json.loads(records[0].value)["order"] == 0
    for r in records[1:]:
        assert "traceparent" not in dict(r.headers)


async def test_trace_context_off(kafka: Any, new_topic: Callable[..., str]) -> None:
    access, events = new_topic(prefix="access"), new_topic(prefix="events")
    app = make_app(access, events, trace_context=False)
    await serve(app, kafka.plaintext, {"traceparent": TRACEPARENT})
    (event,) = [json.loads(r.value) for r in await read_all(kafka.plaintext, access)]
    assert "trace_id" not in event and "span_id" not in event
    (record,) = await read_all(kafka.plaintext, events)
    assert "traceparent" not in dict(record.headers)


async def test_ids_of_the_active_span_under_opentelemetry_instrumentation(
    kafka: Any, new_topic: Callable[..., str]
) -> None:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    access, events = new_topic(prefix="access"), new_topic(prefix="events")
    app = make_app(access, events)
    # Added last: outermost, so its server span is current when the access log runs.
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)
    await serve(app, kafka.plaintext, {"traceparent": TRACEPARENT}, {})
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(servers) == 2
    logged = [json.loads(r.value) for r in await read_all(kafka.plaintext, access)]
    records = await read_all(kafka.plaintext, events)
    for event, record, span in zip(logged, records, servers, strict=True):
        ctx = span.get_span_context()
        assert ctx is not None
        assert event["trace_id"] == f"{ctx.trace_id:032x}"
        assert event["span_id"] == f"{ctx.span_id:016x}"
        header = dict(record.headers)["traceparent"].decode()
        assert header.split("-")[1:3] == [event["trace_id"], event["span_id"]]
    # The first request continued the caller's trace; the second started its own.
    assert logged[0]["trace_id"] == TRACE and logged[0]["span_id"] != PARENT
    assert logged[1]["trace_id"] not in (None, TRACE)
