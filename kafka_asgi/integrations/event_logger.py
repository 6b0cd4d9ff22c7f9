"""The request-scoped event logger, its serializer and request ids.

:class:`EventLogger` is the object behind ``log(topic, payload)`` in every front door:
``scope["state"]["kafka"]`` (``request.state.kafka``) under ASGI, ``request.kafka``
under Django, ``g.kafka`` under Flask. Each event carries its request's id and route.
"""

from __future__ import annotations

import itertools
import json
import json.encoder
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from kafka_asgi.integrations.producer_api import Headers, ProducerLike
from kafka_asgi.integrations.sender import get_sender
from kafka_asgi.integrations.tracecontext import Trace, trace_from_header_lines, trace_headers
from kafka_asgi.producer import BufferFullError, Producer, get_producer

__all__ = [
    "STATE_KEY",
    "EventLogger",
    "default_serializer",
    "get_event_logger",
    "new_request_id",
    "next_request_number",
    "route_of",
    "sender_for",
    "warn_drop",
]

logger = logging.getLogger("kafka_asgi.integrations")

STATE_KEY = "kafka"  # scope["state"][STATE_KEY] -> EventLogger (request.state.kafka)
_TEXT_OR_BYTES = (str, bytes, bytearray, memoryview)  # iterable, but not header pairs

# allow_nan=False: NaN and Infinity are not JSON (RFC 8259, section 6); a consumer's
# parser would refuse the whole event, so it is refused here, at the call.
_json_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False
).encode
# JSONEncoder.encode builds a new C encoder on every call; on the access-log hot path
# one built once saves about a quarter of the serialization time. It has no
# circular-reference markers (a markers dict is per call, and one shared across threads
# and failed calls would report false cycles): a cyclic event exhausts the recursion
# limit instead, turned into a ValueError below.
_make_c_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_c_basestring: Any = getattr(json.encoder, "c_encode_basestring", None)
_c_encoder: Any = (
    _make_c_encoder(None, str, _c_basestring, None, ":", ",", False, False, False)
    if _make_c_encoder is not None and _c_basestring is not None
    else None
)


def default_serializer(event: Mapping[str, Any]) -> bytes:
    """Compact JSON (UTF-8); values JSON lacks (datetimes, UUIDs...) become str().

    Raises ValueError for a float NaN or infinity (JSON has none) and for an event that
    contains itself or is nested too deeply to encode."""
    try:
        if _c_encoder is not None and type(event) is dict:
            chunks: tuple[str, ...] = _c_encoder(event, 0)
            return "".join(chunks).encode()
        return _json_encode(event).encode()
    except RecursionError:
        raise ValueError(
            "the event cannot be serialized: it contains a reference cycle or is nested too deeply"
        ) from None


def _reset_request_ids() -> None:
    global _rid_counter
    # A random 64-bit prefix in the high half, a counter in the low half.
    _rid_counter = itertools.count(int.from_bytes(os.urandom(8), "big") << 64)


_rid_counter = itertools.count()
_reset_request_ids()
# A forked worker must not repeat its parent's ids.
os.register_at_fork(after_in_child=_reset_request_ids)


def new_request_id() -> str:
    """32 hex digits: a random per-process prefix and a counter (unique, cheap; not secret)."""
    return next(_rid_counter).to_bytes(16, "big").hex()


def next_request_number() -> int:
    """The number behind the next request id (``n.to_bytes(16, "big").hex()`` is the id);
    for hot paths that format the id inline."""
    return next(_rid_counter)


def route_of(scope: MutableMapping[str, Any]) -> str | None:
    """The route template the framework put in the scope: Starlette's ``route`` (its
    ``path``), or Litestar's ``path_template``."""
    route = scope.get("route")
    if route is None:
        template = scope.get("path_template")
        return template if isinstance(template, str) else None
    if isinstance(route, str):
        return route
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def sender_for(cluster: str) -> Callable[..., None]:
    """send_nowait of the cluster's producer, safe from any thread when a lifespan runs it.

    Raises BufferFullError on any thread but its event loop's when the producer is a
    :class:`~kafka_asgi.producer.Producer` with no thread-safe sender (one registered
    outside a lifespan): its send methods belong to that thread (a thread running an
    event loop of its own, ``asyncio.run`` in a worker, is refused too)."""
    sender = get_sender(cluster)
    if sender is not None:
        return sender.send_nowait
    producer: ProducerLike = get_producer(cluster)
    if isinstance(producer, Producer) and producer.loop_thread != threading.get_ident():
        raise BufferFullError(
            f"no thread-safe sender runs for cluster {cluster!r} (no lifespan runs its "
            "producer), and its Producer may only be called on its event loop's thread"
        )
    return producer.send_nowait


class EventLogger:
    """Per-request event sender: ``log(topic, payload)`` never blocks and never raises
    for a full buffer or a Kafka outage (it returns False and counts the drop).

    Each event carries the request id and route template: as the ``request_id`` and
    ``route`` fields of a mapping payload (fields the payload sets itself win), and as
    the ``request_id`` / ``route`` Kafka headers for any payload. Mappings and other
    JSON-able values are serialized with ``serializer`` (compact JSON by default);
    ``bytes`` and ``str`` payloads are sent as they are, ``bytearray`` and
    ``memoryview`` as their bytes (copied at the call: the buffer may change after it).

    Safe to call from the request's event loop and from threads (sync endpoints run
    in a thread pool): those go through the lifespan's thread-safe sender. ``send``
    (a thread-safe ``send_nowait``, e.g. a WSGI app's background producer's) replaces
    the look-up of the cluster's producer.
    """

    __slots__ = (
        "_route",
        "_scope",
        "cluster",
        "dropped",
        "request_id",
        "send",
        "sent",
        "serializer",
        "trace",
    )

    def __init__(
        self,
        scope: MutableMapping[str, Any] | None,
        request_id: str,
        cluster: str = "default",
        serializer: Callable[[Any], bytes | str] = default_serializer,
        send: Callable[..., None] | None = None,
    ) -> None:
        self._scope = scope
        self.send = send
        self._route: str | None = None
        self.request_id = request_id
        self.cluster = cluster
        self.serializer = serializer
        self.sent = 0
        self.dropped = 0
        self.trace: Trace | None = None
        """The request's W3C trace context, put on each event as ``traceparent`` (and
        ``tracestate``) record headers; set by the access-log middleware."""

    @property
    def route(self) -> str | None:
        """The matched route template (known once the framework routed the request)."""
        scope = self._scope
        if scope is None:
            return self._route
        route = scope.get("kafka_asgi.route")
        return route if isinstance(route, str) else route_of(scope)

    def release(self, route: str | None) -> None:
        """The exchange is over: keep its route, let go of its scope.

        The scope holds this logger in its state, so the reference back makes a cycle:
        every request's scope (and all a framework hangs on it) would be left for the
        cyclic garbage collector instead of being freed on the spot, which costs a
        FastAPI app several microseconds a request and adds collector pauses.
        ``route`` is the route template, already looked up by the caller.
        """
        scope = self._scope
        if scope is not None:
            override = scope.get("kafka_asgi.route")
            if isinstance(override, str):
                route = override
            self._scope = None
        if route is not None:
            self._route = route

    def log(
        self,
        topic: str,
        payload: Any,
        key: bytes | str | None = None,
        headers: Headers = None,
    ) -> bool:
        """Queue one event; True if queued, False if dropped (buffer full, no producer)."""
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty str, not {topic!r}")
        route = self.route
        value: bytes | str
        if isinstance(payload, (bytes, str)):
            value = payload
        elif isinstance(payload, Mapping):
            value = self.serializer({"request_id": self.request_id, "route": route, **payload})
        elif isinstance(payload, (bytearray, memoryview)):
            # Copied now: the event may wait in a thread hand-off queue while the caller
            # reuses its buffer (and default=str would send "bytearray(b'...')").
            value = bytes(payload)
        else:
            value = self.serializer(payload)
        stamp: list[tuple[str, bytes | str | None]] = [
            ("request_id", self.request_id),
            ("route", route),
        ]
        own: list[Any] = []
        if headers is not None:
            if isinstance(headers, Mapping):
                own.extend(headers.items())
            elif isinstance(headers, (list, tuple)) or (
                isinstance(headers, Iterable) and not isinstance(headers, _TEXT_OR_BYTES)
            ):
                own.extend(headers)
            else:
                # Named here: extend() would say only "'int' object is not iterable",
                # and a str would be taken apart into one-letter "pairs".
                raise TypeError(
                    "headers must be a mapping or a sequence of (name, value) pairs, "
                    f"not {type(headers).__name__}"
                )
        if self.trace is not None and not any(h[0] == "traceparent" for h in own):
            stamp.extend(trace_headers(self.trace))
        stamp.extend(own)
        try:
            send = self.send
            if send is None:
                send = sender_for(self.cluster)
            send(topic, value, key, stamp)
        except (TypeError, ValueError):
            raise
        except Exception as exc:
            self.dropped += 1
            warn_drop("request event logger", topic, exc)
            return False
        self.sent += 1
        return True


_last_drop_warning = 0.0
_drop_warning_lock = threading.Lock()


def warn_drop(who: str, topic: str, exc: BaseException) -> None:
    """One warning a minute at most: a Kafka outage must not flood the app's own logs."""
    global _last_drop_warning
    now = time.monotonic()
    with _drop_warning_lock:
        if now - _last_drop_warning < 60.0:
            return
        _last_drop_warning = now
    logger.warning("kafka_asgi: %s dropped an event for topic %r: %s", who, topic, exc)


_CLUSTER_LOGGERS_KEY = "kafka_asgi.loggers"  # scope["state"] -> {cluster: _ClusterLogger}


class _ClusterLogger(EventLogger):
    """The request's logger for a cluster other than its own logger's: the same request
    id and trace, and the route its own logger knows (which lets go of the scope when
    the exchange is over; this one never holds the scope)."""

    __slots__ = ("_request_logger",)

    def __init__(self, request_logger: EventLogger, cluster: str) -> None:
        super().__init__(None, request_logger.request_id, cluster, request_logger.serializer)
        self.trace = request_logger.trace
        self._request_logger = request_logger

    @property
    def route(self) -> str | None:
        return self._request_logger.route


def get_event_logger(scope: MutableMapping[str, Any], cluster: str | None = None) -> EventLogger:
    """The request's EventLogger for ``cluster``'s producer.

    The request's own logger (``scope["state"]["kafka"]``, ``request.state.kafka``) is
    the access-log middleware's, on the middleware's cluster; without one, it is made
    now, for ``cluster`` (None: "default"), and kept there. ``cluster`` None, or the
    own logger's cluster, gives that logger; another cluster gives a logger of that
    cluster's producer with the same request id, trace and route, made once per
    request and cluster (events must not go to another Kafka than the one asked for).
    """
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    found = state.get(STATE_KEY)
    if not isinstance(found, EventLogger):
        made = EventLogger(scope, new_request_id(), "default" if cluster is None else cluster)
        headers = scope.get("headers")
        if headers:
            made.trace = trace_from_header_lines(headers)
        state[STATE_KEY] = made
        return made
    if cluster is None or cluster == found.cluster:
        return found
    others: dict[str, EventLogger] | None = state.get(_CLUSTER_LOGGERS_KEY)
    if others is None:
        others = state[_CLUSTER_LOGGERS_KEY] = {}
    other = others.get(cluster)
    if other is None:
        other = others[cluster] = _ClusterLogger(found, cluster)
    return other
