"""W3C Trace Context parsing (no broker): strict, as the specification's section 3."""

from __future__ import annotations

import pytest

from kafka_asgi.integrations.tracecontext import (
    TraceContext,
    current_otel_context,
    format_traceparent,
    parse_traceparent,
    parse_tracestate,
    trace_context_from,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_valid_traceparent_bytes_and_str() -> None:
    assert parse_traceparent(VALID) == (TRACE, SPAN, "01")
    assert parse_traceparent(VALID.encode()) == (TRACE, SPAN, "01")
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == (TRACE, SPAN, "00")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        VALID[:-1],  # too short
        VALID + "-x",  # version 00 has exactly four fields
        VALID.upper(),  # hex is lowercase
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"0g-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE}-{SPAN}-0z",
        f"00_{TRACE}-{SPAN}-01",
        f"00-{TRACE[:-1]}g-{SPAN}-01",
        "00-" + "é" * 32 + f"-{SPAN}-01",
        b"00-" + "é".encode() * 16 + f"-{SPAN}-01".encode(),
    ],
)
def test_invalid_traceparent_is_ignored(value: object) -> None:
    assert parse_traceparent(value) is None  # type: ignore[arg-type]


def test_future_version_may_append_fields() -> None:
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01-what-ever") == (TRACE, SPAN, "01")
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01") == (TRACE, SPAN, "01")
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01x") is None


def test_tracestate() -> None:
    assert parse_tracestate("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7") == (
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    )
    assert parse_tracestate(b" a=1 ,, t@sys=2 ") == "a=1,t@sys=2"
    assert parse_tracestate("a=1,a=2") is None  # duplicate key
    assert parse_tracestate("A=1") is None  # keys are lowercase
    assert parse_tracestate("a=") is None
    assert parse_tracestate("a=b,c") is None
    assert parse_tracestate("a=x=y") is None
    assert parse_tracestate(",".join(f"k{i}=v" for i in range(33))) is None
    assert parse_tracestate(",".join(f"k{i}=v" for i in range(32))) is not None
    assert parse_tracestate("") is None


def test_from_headers() -> None:
    headers = {b"traceparent": VALID.encode(), b"tracestate": b"rojo=1"}
    found = trace_context_from(headers)
    assert found == TraceContext(TRACE, SPAN, "01", "rojo=1")
    assert found is not None
    assert found.traceparent == VALID == format_traceparent(TRACE, SPAN)
    assert found.headers() == [("traceparent", VALID.encode()), ("tracestate", b"rojo=1")]
    assert trace_context_from({b"traceparent": b"garbage"}) is None
    assert trace_context_from({}) is None


def test_active_otel_span_wins_over_the_header() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("server") as span:
        ctx = span.get_span_context()
        found = trace_context_from({b"traceparent": VALID.encode()})
        assert found is not None
        assert found.trace_id == f"{ctx.trace_id:032x}"
        assert found.span_id == f"{ctx.span_id:016x}"
        assert found.flags == f"{int(ctx.trace_flags):02x}"
        assert current_otel_context() == found
    # No span current any more: the header again.
    assert current_otel_context() is None
    found = trace_context_from({b"traceparent": VALID.encode()})
    assert found is not None and found.span_id == SPAN
