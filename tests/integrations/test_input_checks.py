"""Client and caller input the integrations must refuse cleanly: a non-ASCII
``tracestate`` (dropped, never a 500), ``AccessLogOptions`` whose ``fields`` or
``extra`` would give empty or invalid events, and ``EventLogger.log`` payloads and
headers that used to be sent as reprs, as invalid JSON, or fail with Python's own
errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from werkzeug.test import Client as WerkzeugClient

from kafka_asgi.integrations import access_log_event
from kafka_asgi.integrations.access_log_event import AccessLogOptions
from kafka_asgi.integrations.event_logger import EventLogger, default_serializer
from kafka_asgi.integrations.testing import InMemoryProducer
from kafka_asgi.integrations.tracecontext import (
    parse_traceparent,
    parse_tracestate,
    trace_headers,
    trace_of,
)
from kafka_asgi.wsgi import AccessLogMiddleware

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

# -- trace context ------------------------------------------------------------------------

# Each passed str.islower()/isdigit() in a key's first characters; as latin-1 bytes
# they are not ASCII (and were refused).
NON_ASCII_STATES = ["µ@a=1", "²@a=1", "a@ß=1", "a=1,µ@b=2"]


@pytest.mark.parametrize("state", NON_ASCII_STATES)
def test_non_ascii_tracestate_is_invalid_as_str_and_bytes(state: str) -> None:
    # A WSGI environ or Django's META holds the header's bytes decoded as latin-1.
    assert parse_tracestate(state) is None
    assert parse_tracestate(state.encode("latin-1")) is None
    # The trace is kept; only its tracestate is dropped, and nothing raises.
    trace = trace_of(PARENT, state)
    assert trace is not None
    assert trace_headers(trace) == [("traceparent", PARENT.encode())]
    assert trace_headers((*trace[:3], state.encode("latin-1"))) == trace_headers(trace)
    # Refused before too, and still: non-ASCII past a key's first character, or in a value.
    for other in ("aß=1", "k=vé"):
        assert parse_tracestate(other) is parse_tracestate(other.encode("latin-1")) is None


@pytest.mark.parametrize("state", ["a@b=1", "0t@sys=x", "k_-*/9=v ~!", "a=1 , b=2"])
def test_ascii_tracestate_forms_stay_valid(state: str) -> None:
    expected = ",".join(m.strip() for m in state.split(","))
    assert parse_tracestate(state) == parse_tracestate(state.encode()) == expected
    # The lookalikes of these keys' first characters are refused.
    assert parse_tracestate("μ@b=1") is None  # Greek mu, not micro sign
    assert parse_tracestate("٣t@sys=x") is None  # an Arabic-Indic digit


def test_non_ascii_tracestate_through_wsgi_is_dropped_not_a_500() -> None:
    producer = InMemoryProducer()

    def logs(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["kafka_asgi.event_logger"].log("app", {"x": 1})
        start_response("200 OK", [])
        return [b"ok"]

    app = AccessLogMiddleware(logs, topic="acc", producer=producer)
    # What a server puts in the environ for the bytes b"\xb5@a=1" (PEP 3333: latin-1).
    state = b"\xb5@a=1".decode("latin-1")
    r = WerkzeugClient(app).get(
        "/", headers={"traceparent": PARENT, "tracestate": state}, buffered=True
    )
    assert r.status_code == 200
    (event,) = producer.events_for("app")
    assert event.header("traceparent") == PARENT.encode()
    assert "tracestate" not in dict(event.headers)
    (access,) = producer.json_values("acc")
    assert access["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    # A non-ASCII traceparent (a str in the environ) was, and is, no trace at all.
    for parent in (
        PARENT.replace("b7", "µ7", 1),
        "01" + PARENT[2:] + "-é",
        PARENT.replace("-01", "-0¹"),
    ):
        assert parse_traceparent(parent) is None
        r = WerkzeugClient(app).get(
            "/", headers={"traceparent": parent, "tracestate": "a=1"}, buffered=True
        )
        assert r.status_code == 200
        assert "traceparent" not in dict(producer.events_for("app")[-1].headers)
        assert producer.json_values("acc")[-1]["trace_id"] is None


# -- access-log options -------------------------------------------------------------------


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [])
    return [b"hi"]


@pytest.mark.parametrize(
    "make", [lambda: iter(["status", "path"]), lambda: (f for f in ("status", "path"))]
)
def test_fields_from_an_iterator_are_kept(make: Callable[[], Any]) -> None:
    producer = InMemoryProducer()
    app = AccessLogMiddleware(hello, topic="acc", producer=producer, fields=make())
    WerkzeugClient(app).get("/x", buffered=True)
    WerkzeugClient(app).get("/y", buffered=True)
    assert producer.json_values("acc") == [
        {"status": 200, "path": "/x"},
        {"status": 200, "path": "/y"},
    ]
    # Unknown names are refused from an iterator as from a list (as before).
    with pytest.raises(ValueError, match=r"unknown access-log fields \['nope'\]"):
        AccessLogOptions(fields=iter(["status", "nope"]))


@pytest.mark.parametrize(
    ("options", "exc", "match"),
    [
        ({"fields": []}, ValueError, "fields must name at least one field"),
        ({"fields": iter(())}, ValueError, "fields must name at least one field"),
        ({"fields": 5}, TypeError, "fields must be a collection of names, not 5"),
        (
            {"fields": iter(["status", "trace_id"]), "trace_context": False},
            ValueError,
            r"\['trace_id'\] need trace_context=True",
        ),
    ],
)
def test_bad_fields_are_named(options: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        AccessLogOptions(**options)


def _cyclic() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["self"] = d
    return d


@pytest.mark.parametrize("pure", [True, False], ids=["template", "orjson"])
@pytest.mark.parametrize("fields", [None, ["status"]], ids=["default-shape", "fields"])
@pytest.mark.parametrize(
    ("value", "match"),
    [
        (float("nan"), "Out of range float"),
        (float("inf"), "Out of range float"),
        (-float("inf"), "Out of range float"),
        ([1, {"y": float("nan")}], "Out of range float"),
        (_cyclic(), "reference cycle"),
    ],
)
def test_extra_json_cannot_carry_is_refused_at_construction(
    monkeypatch: pytest.MonkeyPatch, pure: bool, fields: list[str] | None, value: Any, match: str
) -> None:
    if pure:
        monkeypatch.setattr(access_log_event, "ORJSON_DUMPS", None)
    elif access_log_event.ORJSON_DUMPS is None:
        pytest.skip("the orjson extra is not installed")
    with pytest.raises(ValueError, match=f"extra cannot be sent as JSON: .*{match}"):
        AccessLogOptions(extra={"svc": "x", "x": value}, fields=fields)


# -- EventLogger.log ----------------------------------------------------------------------


def logger_and_sent() -> tuple[EventLogger, list[tuple[Any, ...]]]:
    """A logger whose events are kept as handed over (as the thread hand-off queue keeps
    them, unchecked, until the event loop takes them)."""
    sent: list[tuple[Any, ...]] = []
    return EventLogger(None, "rid-1", send=lambda *a: sent.append(a)), sent


def test_bytes_like_payloads_are_sent_as_their_bytes() -> None:
    logger, sent = logger_and_sent()
    buffer = bytearray(b"abc")
    assert logger.log("t", buffer)
    assert logger.log("t", memoryview(b"xyz"))
    assert logger.log("t", memoryview(buffer)[1:])
    assert logger.log("t", b"raw")
    buffer[0:3] = b"ZZZ"  # the caller reuses its buffer before the event is encoded
    assert [a[1] for a in sent] == [b"abc", b"xyz", b"bc", b"raw"]
    assert all(type(a[1]) is bytes for a in sent)


def test_bytes_like_payloads_reach_the_producer_as_bytes() -> None:
    producer = InMemoryProducer()
    logger = EventLogger(None, "rid-1", send=producer.send_nowait)
    logger.log("t", bytearray(b"abc"))
    logger.log("t", memoryview(b"xyz"))
    assert [e.value for e in producer.events_for("t")] == [b"abc", b"xyz"]
    assert producer.events_for("t")[0].header("request_id") == b"rid-1"


@pytest.mark.parametrize(
    ("headers", "name"), [(5, "int"), ("ab", "str"), (b"ab", "bytes"), (object(), "object")]
)
def test_bad_headers_are_named(headers: Any, name: str) -> None:
    logger, sent = logger_and_sent()
    with pytest.raises(
        TypeError, match=f"headers must be a mapping or a sequence of .* pairs, not {name}$"
    ):
        logger.log("t", b"v", headers=headers)
    assert sent == [] and logger.sent == 0
    # A mapping, a sequence or another iterable of pairs is taken, as before.
    logger.log("t", b"v", headers={"a": b"1"})
    logger.log("t", b"v", headers=[("b", b"2")])
    logger.log("t", b"v", headers=(h for h in [("c", b"3")]))
    assert [a[3][2:] for a in sent] == [[("a", b"1")], [("b", b"2")], [("c", b"3")]]


@pytest.mark.parametrize(
    "payload",
    [
        {"x": float("nan")},
        {"x": [1.0, float("inf")]},
        [-float("inf")],
        float("nan"),
    ],
)
def test_nan_and_infinity_are_refused_at_the_call(payload: Any) -> None:
    logger, sent = logger_and_sent()
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        logger.log("t", payload)
    assert sent == []


def test_cyclic_payload_is_a_value_error_not_recursion_error() -> None:
    logger, sent = logger_and_sent()
    with pytest.raises(ValueError, match="reference cycle") as info:
        logger.log("t", _cyclic())
    assert not isinstance(info.value, RecursionError)
    nested: list[Any] = []
    nested.append(nested)
    with pytest.raises(ValueError, match=r"[Cc]ircular reference|reference cycle"):
        logger.log("t", {"x": 1, "list": nested})
    with pytest.raises(ValueError, match=r"[Cc]ircular reference|reference cycle"):
        logger.log("t", nested)
    assert sent == []
    # The logger is still usable, and other objects JSON lacks still become str().
    assert logger.log("t", {"when": json})
    assert json.loads(sent[0][1])["when"].startswith("<module 'json'")


def test_default_serializer_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        default_serializer({"x": float("nan")})
    with pytest.raises(ValueError, match="reference cycle"):
        default_serializer(_cyclic())
    assert default_serializer({"x": 1.5, "y": None}) == b'{"x":1.5,"y":null}'
