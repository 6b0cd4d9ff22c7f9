"""W3C Trace Context (https://www.w3.org/TR/trace-context/) for the access-log middlewares.

A request's trace comes from, in this order:

1. the active OpenTelemetry span, when ``opentelemetry-api`` is in use and a span is
   current (under opentelemetry-instrumentation-asgi it is the server span, whose
   parent is the request's ``traceparent``);
2. the request's own ``traceparent`` header (with its ``tracestate``).

Nothing here imports OpenTelemetry: an app whose code never imported
``opentelemetry.trace`` cannot have a current span, so the module is looked up in
``sys.modules`` (a dict look-up) instead of being imported.

On the request path a trace is a plain tuple, :data:`Trace`: ``(trace_id, span_id,
flags, tracestate)`` (a NamedTuple costs several times more to make); the
``tracestate`` is kept as received and validated only if an event carries it on.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

__all__ = [
    "OTEL_TRACE_MODULE",
    "TRACEPARENT",
    "TRACESTATE",
    "Trace",
    "current_otel_trace",
    "format_traceparent",
    "parse_traceparent",
    "parse_tracestate",
    "trace_from_header_lines",
    "trace_from_headers",
    "trace_headers",
    "trace_of",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

Trace: TypeAlias = "tuple[str, str, str, Any]"
"""``(trace_id, span_id, flags, tracestate)``: 32 and 16 lowercase hex digits, 2 hex
digits of flags (``01``: sampled), and the ``tracestate`` value as received, or the
span's OpenTelemetry ``TraceState``, or None.
``span_id`` is the caller's span (header) or the active span (OpenTelemetry)."""

_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_LOWER_HEX = b"0123456789abcdef"
_OTEL_TRACE = "opentelemetry.trace"
OTEL_TRACE_MODULE = _OTEL_TRACE
"""Only when this module is in ``sys.modules`` can an OpenTelemetry span be current."""
_OTEL_CONTEXT = "opentelemetry.context"
_TRACE_ID_END = 1 << 128
_SPAN_ID_END = 1 << 64
_otel_get_current: Any = None  # opentelemetry.context.get_current, once in use
_otel_span_key: Any = None  # the context key of the current span (_otel_layout)
_otel_indexed = False  # a SpanContext's fields read by index (_otel_layout)
_FLAGS = [f"{i:02x}" for i in range(256)]
# Trace Context, section 3.3.1.1: at most 32 list-members; vendors may drop the state
# past 512 characters: we keep up to that and drop the header beyond it.
_MAX_TRACESTATE_MEMBERS = 32
_MAX_TRACESTATE_LEN = 512


def parse_traceparent(
    value: bytes | str | None, tracestate: bytes | str | None = None
) -> Trace | None:
    """The :data:`Trace` of a ``traceparent`` value (``tracestate`` riding along as
    given), or None if the value is invalid.

    Strict as section 3.2 asks: version ``ff`` is invalid, version ``00`` is exactly 55
    characters, a later version may only append ``-``-separated fields; ids are
    lowercase hex and not all zeros. A value failing any of this is ignored (the
    specification's "restart the trace"), never an error: it comes from the client.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if not value.isascii():
            return None
        raw = value.encode("ascii")
    else:
        raw = value  # the head is checked byte by byte below; the rest is never decoded
    n = len(raw)
    if n != 55:
        raw = raw.strip(b" \t")
        n = len(raw)
        if n < 55:
            return None
    # Byte operations in C, on the request path: dashes where they belong, and
    # nothing but lowercase hex between them.
    head = raw if n == 55 else raw[:55]
    if head[2] != 45 or head[35] != 45 or head[52] != 45:  # "-"
        return None
    if head.translate(None, _LOWER_HEX) != b"---":
        return None
    if head[0] == head[1] == 102:  # version "ff"
        return None
    if n > 55 and (head[:2] == b"00" or raw[55] != 45):
        return None
    text = head.decode("latin-1")  # ASCII: only hex digits and dashes are left
    trace_id = text[3:35]
    span_id = text[36:52]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, text[53:55], tracestate


# Trace Context, section 3.3: keys are ASCII (lcalpha, DIGIT, "_-*/@"). str.islower()
# and isdigit() would let "µ", "²" or "ß" through (WSGI gives headers as latin-1 str).
_LCALPHA = frozenset("abcdefghijklmnopqrstuvwxyz")
_LCALPHA_DIGIT = _LCALPHA | frozenset("0123456789")
_KEY_CHARS = _LCALPHA_DIGIT | frozenset("_-*/")


def _valid_key(key: str) -> bool:
    # simple-key = lcalpha 0*255(lcalpha / DIGIT / "_" / "-"/ "*" / "/")
    # multi-tenant-key = tenant-id "@" system-id (tenant 1-241, system 1-14 chars)
    if not key or len(key) > 256:
        return False
    tenant, at, system = key.partition("@")
    if at:
        if not (1 <= len(tenant) <= 241 and 1 <= len(system) <= 14):
            return False
        if tenant[0] not in _LCALPHA_DIGIT or system[0] not in _LCALPHA:
            return False
        body = tenant[1:] + system[1:]
    else:
        if key[0] not in _LCALPHA:
            return False
        body = key[1:]
    return _KEY_CHARS.issuperset(body)


def _valid_value(value: str) -> bool:
    # value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
    if not value or len(value) > 256 or value[-1] == " ":
        return False
    return all(" " <= c <= "~" and c not in ",=" for c in value)


def parse_tracestate(value: bytes | str | None) -> str | None:
    """The ``tracestate`` value normalized (blank members dropped), or None if invalid.

    Section 3.3: comma-separated ``key=value`` members, at most 32, keys unique. Several
    header lines are one list joined with ``,`` (RFC 9110, section 5.3).
    """
    if value is None:
        return None
    # The header is ASCII (section 3.3); a str comes from a WSGI environ or Django's
    # META, decoded as latin-1. Anything else is invalid: dropped, never an error later
    # when the state is encoded onto a record.
    if not value.isascii():
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii")
    if len(value) > _MAX_TRACESTATE_LEN * 2:
        return None
    members: list[str] = []
    keys: set[str] = set()
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        key, eq, val = member.partition("=")
        if not eq or not _valid_key(key) or not _valid_value(val) or key in keys:
            return None
        keys.add(key)
        members.append(member)
    if not members or len(members) > _MAX_TRACESTATE_MEMBERS:
        return None
    out = ",".join(members)
    return out if len(out) <= _MAX_TRACESTATE_LEN else None


def format_traceparent(trace: Trace) -> str:
    """The version-00 ``traceparent`` value naming ``trace``'s span as the parent."""
    return f"00-{trace[0]}-{trace[1]}-{trace[2]}"


def trace_headers(trace: Trace) -> list[tuple[str, bytes | None]]:
    """Kafka record headers carrying ``trace``: ``traceparent``, and ``tracestate`` when
    the request's is valid."""
    out: list[tuple[str, bytes | None]] = [(TRACEPARENT, format_traceparent(trace).encode("ascii"))]
    raw = trace[3]
    if raw is not None and not isinstance(raw, (bytes, str)):
        raw = raw.to_header()  # an OpenTelemetry TraceState
    state = parse_tracestate(raw)
    if state:
        out.append((TRACESTATE, state.encode("ascii")))
    return out


def _otel_layout(trace: Any) -> tuple[Any, Any]:
    """Found once through OpenTelemetry's public API: the context key its spans are
    stored under (the one key of a context holding a span), and the positions of
    ``trace_id``, ``span_id``, ``trace_flags`` and ``trace_state`` in a ``SpanContext``
    (a tuple) if a probe shows them at 0, 1, 3 and 4; None where not, and the public
    calls are used instead."""
    context_mod: Any = sys.modules[_OTEL_CONTEXT]
    probe: Any = trace.SpanContext(
        trace_id=0x1234, span_id=0x56, is_remote=False, trace_flags=trace.TraceFlags(1)
    )
    holder = trace.set_span_in_context(trace.NonRecordingSpan(probe), context_mod.Context())
    keys = list(holder)
    key = keys[0] if len(keys) == 1 else None
    if key is not None and trace.get_current_span(holder).get_span_context() is not probe:
        key = None
    fields = (probe.trace_id, probe.span_id, probe.trace_flags, probe.trace_state)
    indexed = (
        isinstance(probe, tuple)
        and len(probe) > 4
        and all(a is b for a, b in zip(operator.itemgetter(0, 1, 3, 4)(probe), fields, strict=True))
    )
    return key, indexed


def current_otel_trace() -> Trace | None:
    """The active OpenTelemetry span's :data:`Trace`, or None (OpenTelemetry not in use,
    or no valid span current). Never imports OpenTelemetry."""
    global _otel_get_current, _otel_span_key, _otel_indexed
    get_current = _otel_get_current
    if get_current is None:
        # Until OpenTelemetry is in use (a module is never unloaded once imported).
        trace: Any = sys.modules.get(_OTEL_TRACE)
        if trace is None:
            return None
        try:
            # opentelemetry.trace imports it; the public function, found once.
            _otel_span_key, _otel_indexed = _otel_layout(trace)
            get_current = _otel_get_current = sys.modules[_OTEL_CONTEXT].get_current
        except Exception:
            return None
    try:
        context = get_current()
        if not context:
            # An empty Context (a dict) holds no span: the common case of an app that
            # imports OpenTelemetry (recent FastAPI does) and traces nothing. Two calls
            # instead of the five of get_current_span().get_span_context().
            return None
        key = _otel_span_key
        if key is not None:
            # get_current_span(context) is this dict look-up and an isinstance check
            # (three Python calls); a foreign object fails below and is ignored.
            span = context.get(key)
            if span is None:
                return None
            ctx = span.get_span_context()
        else:
            ctx = sys.modules[_OTEL_TRACE].get_current_span(context).get_span_context()
        if _otel_indexed:
            # SpanContext is a tuple whose properties index it: read it directly.
            trace_id, span_id, flags, state = ctx[0], ctx[1], ctx[3], ctx[4]
        else:
            trace_id, span_id = ctx.trace_id, ctx.span_id
            flags, state = ctx.trace_flags, ctx.trace_state
        # Not INVALID_SPAN_CONTEXT (zeros; is_valid, cheaper) and within 128/64 bits.
        if not (0 < trace_id < _TRACE_ID_END and 0 < span_id < _SPAN_ID_END):
            return None
        # The TraceState itself: rendered only if an event carries it on.
        return (
            "%032x" % trace_id,  # noqa: UP031 - one operation, no method calls
            "%016x" % span_id,  # noqa: UP031
            _FLAGS[flags & 0xFF],
            state,
        )
    except Exception:
        # A broken or foreign tracer must not fail the request or its access log.
        return None


def trace_from_headers(headers: Mapping[bytes, bytes]) -> Trace | None:
    """The request's trace: the active OpenTelemetry span's, else the ``traceparent``
    header's (``headers`` lowercase names to values, one value each), else None.
    An ASGI scope's header list, where a field may come on several lines, goes to
    :func:`trace_from_header_lines`."""
    if _OTEL_TRACE in sys.modules:
        found = current_otel_trace()
        if found is not None:
            return found
    raw = headers.get(b"traceparent")
    if raw is None:
        return None
    return parse_traceparent(raw, headers.get(b"tracestate"))


def trace_from_header_lines(lines: Iterable[tuple[bytes, bytes]]) -> Trace | None:
    """As :func:`trace_from_headers`, given an ASGI scope's ``headers``: ``tracestate``
    field lines are one list, joined with commas (RFC 9110, section 5.3, as WSGI
    servers join them), and a ``traceparent`` on more than one line is invalid (the
    Trace Context test suite's duplicated-traceparent case: start a new trace)."""
    if _OTEL_TRACE in sys.modules:
        found = current_otel_trace()
        if found is not None:
            return found
    parent: bytes | None = None
    states: list[bytes] = []
    for name, value in lines:
        if name == b"traceparent":
            if parent is not None:
                return None
            parent = value
        elif name == b"tracestate":
            states.append(value)
    if parent is None:
        return None
    return parse_traceparent(parent, b",".join(states) if states else None)


def trace_of(traceparent: bytes | str | None, tracestate: bytes | str | None) -> Trace | None:
    """As :func:`trace_from_headers`, given the two header values (WSGI ``environ`` /
    Django ``META``: ``HTTP_TRACEPARENT``, ``HTTP_TRACESTATE``)."""
    if _OTEL_TRACE in sys.modules:
        found = current_otel_trace()
        if found is not None:
            return found
    if traceparent is None:
        return None
    return parse_traceparent(traceparent, tracestate)
