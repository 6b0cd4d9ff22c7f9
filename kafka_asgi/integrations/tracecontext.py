"""W3C Trace Context (https://www.w3.org/TR/trace-context/) for the access-log middlewares.

A request's trace comes from, in this order:

1. the active OpenTelemetry span, when ``opentelemetry-api`` is in use and a span is
   current (under opentelemetry-instrumentation-asgi it is the server span, whose
   parent is the request's ``traceparent``);
2. the request's own ``traceparent`` header (with its ``tracestate``).

Nothing here imports OpenTelemetry: an app whose code never imported
``opentelemetry.trace`` cannot have a current span, so the module is looked up in
``sys.modules`` (a dict look-up) instead of being imported.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "TraceContext",
    "current_otel_context",
    "format_traceparent",
    "parse_traceparent",
    "parse_tracestate",
    "trace_context_from",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACEPARENT_B = b"traceparent"
_TRACESTATE_B = b"tracestate"

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Trace Context, section 3.3.1.1: at most 32 list-members; vendors may drop the state
# past 512 characters, we keep up to that and drop the header beyond it.
_MAX_TRACESTATE_MEMBERS = 32
_MAX_TRACESTATE_LEN = 512


class TraceContext(NamedTuple):
    """The trace a request belongs to, as lowercase hex."""

    trace_id: str
    """32 hex digits."""
    span_id: str
    """16 hex digits: the caller's span (header) or the active span (OpenTelemetry)."""
    flags: str
    """2 hex digits (``01``: sampled)."""
    tracestate: str | None
    """The vendor state to pass on, unchanged, when valid."""

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` header value naming this span as the parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def headers(self) -> list[tuple[str, bytes | None]]:
        """Kafka record headers carrying this context (``traceparent``, ``tracestate``)."""
        out: list[tuple[str, bytes | None]] = [(TRACEPARENT, self.traceparent.encode("ascii"))]
        if self.tracestate:
            out.append((TRACESTATE, self.tracestate.encode("ascii")))
        return out


def _is_hex(s: str) -> bool:
    return _HEX.issuperset(s)


def parse_traceparent(value: bytes | str | None) -> tuple[str, str, str] | None:
    """``(trace_id, span_id, flags)`` from a ``traceparent`` value, or None if invalid.

    Strict as section 3.2 asks: version ``ff`` is invalid, version ``00`` is exactly 55
    characters, a later version may only append ``-``-separated fields; ids are
    lowercase hex and not all zeros. A value failing any of this is ignored (the
    specification's "restart the trace"), never an error: it comes from the client.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        if len(value) < 55 or not value.isascii():
            return None
        value = value.decode("ascii")
    elif len(value) < 55 or not value.isascii():
        return None
    value = value.strip(" \t")
    n = len(value)
    if n < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    version = value[0:2]
    if not _is_hex(version) or version == "ff":
        return None
    if version == "00":
        if n != 55:
            return None
    elif n > 55 and value[55] != "-":
        return None
    trace_id = value[3:35]
    span_id = value[36:52]
    flags = value[53:55]
    if not (_is_hex(trace_id) and _is_hex(span_id) and _is_hex(flags)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, flags


def _valid_key(key: str) -> bool:
    # simple-key = lcalpha 0*255(lcalpha / DIGIT / "_" / "-"/ "*" / "/")
    # multi-tenant-key = tenant-id "@" system-id (tenant 1-241, system 1-14 chars)
    if not key or len(key) > 256:
        return False
    tenant, at, system = key.partition("@")
    if at:
        if not (1 <= len(tenant) <= 241 and 1 <= len(system) <= 14):
            return False
        if not (tenant[0].islower() or tenant[0].isdigit()) or not system[0].islower():
            return False
        body = tenant[1:] + system[1:]
    else:
        if not ("a" <= key[0] <= "z"):
            return False
        body = key[1:]
    return all(c.islower() or c.isdigit() or c in "_-*/" for c in body) and body.isascii()


def _valid_value(value: str) -> bool:
    # value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
    if not value or len(value) > 256 or value[-1] == " ":
        return False
    return all(" " <= c <= "~" and c not in ",=" for c in value)


def parse_tracestate(value: bytes | str | None) -> str | None:
    """The ``tracestate`` value normalized (blank members dropped), or None if invalid.

    Section 3.3: comma-separated ``key=value`` members, at most 32, keys unique. Several
    header lines are joined by the caller with ``,`` before this (RFC 9110, 5.3).
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        if not value.isascii():
            return None
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


def format_traceparent(trace_id: str, span_id: str, flags: str = "01") -> str:
    """The version-00 ``traceparent`` value for these ids."""
    return f"00-{trace_id}-{span_id}-{flags}"


def current_otel_context() -> TraceContext | None:
    """The active OpenTelemetry span's ids, or None (no OpenTelemetry in use, or no
    valid span current). Never imports OpenTelemetry."""
    trace: Any = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        state = ctx.trace_state
        return TraceContext(
            f"{ctx.trace_id:032x}",
            f"{ctx.span_id:016x}",
            f"{int(ctx.trace_flags):02x}",
            state.to_header() if state else None,
        )
    except Exception:
        # A broken or foreign tracer must not fail the request or its access log.
        return None


def trace_context_from(headers: Mapping[bytes, bytes]) -> TraceContext | None:
    """The request's trace: the active OpenTelemetry span's, else the ``traceparent``
    header's (``headers`` as ASGI's, lowercase names), else None."""
    if "opentelemetry.trace" in sys.modules:
        found = current_otel_context()
        if found is not None:
            return found
    raw = headers.get(_TRACEPARENT_B)
    if raw is None:
        return None
    parsed = parse_traceparent(raw)
    if parsed is None:
        return None
    state = headers.get(_TRACESTATE_B)
    return TraceContext(*parsed, parse_tracestate(state) if state is not None else None)


def trace_context_from_str(headers: Mapping[str, str]) -> TraceContext | None:
    """As :func:`trace_context_from`, for str-keyed headers (``traceparent`` as named by
    a WSGI/Django ``META`` lookup done by the caller)."""
    if "opentelemetry.trace" in sys.modules:
        found = current_otel_context()
        if found is not None:
            return found
    parsed = parse_traceparent(headers.get(TRACEPARENT))
    if parsed is None:
        return None
    state = headers.get(TRACESTATE)
    return TraceContext(*parsed, parse_tracestate(state) if state is not None else None)
