"""W3C Trace Context parsing (no broker): strict, as the specification's section 3."""

from __future__ import annotations

import pytest

from kafka_asgi.integrations.tracecontext import (
    current_otel_trace,
    format_traceparent,
    parse_traceparent,
    parse_tracestate,
    trace_from_headers,
    trace_headers,
    trace_of,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_valid_traceparent_bytes_and_str() -> None:
    assert parse_traceparent(VALID) == (TRACE, SPAN, "01", None)
    assert parse_traceparent(VALID.encode(), b"a=1") == (TRACE, SPAN, "01", b"a=1")
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == (TRACE, SPAN, "00", None)
    assert parse_traceparent(f" {VALID}\t".encode()) == (TRACE, SPAN, "01", None)


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
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01-what-ever") == (TRACE, SPAN, "01", None)
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01") == (TRACE, SPAN, "01", None)
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
    found = trace_from_headers(headers)
    assert found == (TRACE, SPAN, "01", b"rojo=1")
    assert format_traceparent(found) == VALID
    assert trace_headers(found) == [("traceparent", VALID.encode()), ("tracestate", b"rojo=1")]
    # An invalid tracestate is not passed on; the traceparent still is.
    bad_state = trace_from_headers({b"traceparent": VALID.encode(), b"tracestate": b"A=1"})
    assert bad_state is not None
    assert trace_headers(bad_state) == [("traceparent", VALID.encode())]
    assert trace_from_headers({b"traceparent": b"garbage"}) is None
    assert trace_from_headers({}) is None
    assert trace_of(VALID, "x=y") == (TRACE, SPAN, "01", "x=y")
    assert trace_of(None, "x=y") is None


def test_active_otel_span_wins_over_the_header() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("server") as span:
        ctx = span.get_span_context()
        found = trace_from_headers({b"traceparent": VALID.encode()})
        assert found is not None
        assert found[:3] == (
            f"{ctx.trace_id:032x}",
            f"{ctx.span_id:016x}",
            f"{int(ctx.trace_flags):02x}",
        )
        assert current_otel_trace() == found
        assert trace_of(VALID, None) == found
    # No span current any more: the header again.
    assert current_otel_trace() is None
    found = trace_from_headers({b"traceparent": VALID.encode()})
    assert found is not None and found[1] == SPAN


def test_the_direct_span_look_up_equals_opentelemetry_public_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The span's context key and the SpanContext's field positions are found once,
    through the public API; the answer is the same as get_current_span()'s, and the
    same again with the public calls forced (a layout the probe did not recognise)."""
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    from kafka_asgi.integrations import tracecontext

    state = TraceState([("vendor", "abc")])
    remote = SpanContext(
        trace_id=int(TRACE, 16),
        span_id=int(SPAN, 16),
        is_remote=True,
        trace_flags=TraceFlags(0),
        trace_state=state,
    )
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        direct = current_otel_trace()
        assert tracecontext._otel_span_key is not None and tracecontext._otel_indexed
        assert direct == (TRACE, SPAN, "00", state)
        monkeypatch.setattr(tracecontext, "_otel_span_key", None)
        monkeypatch.setattr(tracecontext, "_otel_indexed", False)
        assert current_otel_trace() == direct
    finally:
        context.detach(token)
    monkeypatch.undo()
    with TracerProvider().get_tracer("t").start_as_current_span("server") as span:
        ctx = span.get_span_context()
        via_api = trace.get_current_span().get_span_context()
        assert via_api is ctx
        assert current_otel_trace() == (
            f"{ctx.trace_id:032x}",
            f"{ctx.span_id:016x}",
            f"{int(ctx.trace_flags):02x}",
            ctx.trace_state,
        )


def test_a_foreign_object_where_the_span_belongs_is_no_trace() -> None:
    from opentelemetry import context, trace

    from kafka_asgi.integrations import tracecontext

    current_otel_trace()  # the layout is found
    key = tracecontext._otel_span_key
    assert key is not None
    token = context.attach(context.set_value(key, object()))
    try:
        assert trace.get_current_span() is trace.INVALID_SPAN
        assert current_otel_trace() is None
        assert trace_from_headers({b"traceparent": VALID.encode()}) == (TRACE, SPAN, "01", None)
    finally:
        context.detach(token)
