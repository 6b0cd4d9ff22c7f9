"""The access-log event: its fields, its options, and the work every front door shares.

One definition for ASGI (:mod:`kafka_asgi.integrations.access_log`), Django and WSGI:
:data:`ACCESS_LOG_FIELDS` (the fields, in order), :func:`access_log_event` (an event
as a dict), :data:`HTTP_TEMPLATE` (the same HTTP event as a JSON template, for the hot
paths), and :class:`AccessLogOptions` (validated options; client address, request id,
sampling, event shaping and emitting).

Fields: ``timestamp`` (ms since the epoch, response end), ``type`` ("http" /
"websocket"), ``method``, ``scheme``, ``path``, ``route`` (template, where the framework
records it), ``query``, ``status`` (WebSocket: 101 accepted, else the denial status, 403 closed
before accepting, 500 raised or returned without a handshake), ``response_bytes`` /
``request_bytes`` (body bytes; for a WebSocket, message bytes each way),
``duration_ms``, ``client``, ``user_agent``, ``request_id``, ``http_version``,
``close_code`` (WebSocket only, else null), ``trace_id`` /
``span_id`` (W3C trace context: the active OpenTelemetry span's, else the request's
``traceparent``; null when none; left out with ``trace_context=False``).
"""

from __future__ import annotations

import ipaddress
import json.encoder
import re
import time
from collections.abc import Callable, Collection, Mapping
from random import random
from typing import Any

from kafka_asgi.cluster.metadata import check_topic
from kafka_asgi.integrations.event_logger import default_serializer, new_request_id, warn_drop
from kafka_asgi.integrations.middleware_stats import track_middleware
from kafka_asgi.integrations.producer_api import ProducerLike
from kafka_asgi.producer import get_producer

__all__ = [
    "ACCESS_LOG_FIELDS",
    "HTTP_TEMPLATE",
    "ORJSON_DUMPS",
    "AccessLogOptions",
    "access_log_event",
    "quote",
]

_time_ns = time.time_ns
# An HTTP header name (RFC 9110's token).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

ACCESS_LOG_FIELDS = (
    "timestamp",
    "type",
    "method",
    "scheme",
    "path",
    "route",
    "query",
    "status",
    "response_bytes",
    "request_bytes",
    "duration_ms",
    "client",
    "user_agent",
    "request_id",
    "http_version",
    "close_code",
    "trace_id",
    "span_id",
)
TRACE_FIELDS = ("trace_id", "span_id")

# The HTTP event with every field, in ACCESS_LOG_FIELDS order, without its closing brace.
# Its arguments: timestamp (int), method, scheme, path, route, query (quoted str or
# "null"), status, response_bytes, request_bytes (int), duration_ms (float), client,
# user_agent, request_id, http_version (quoted str or "null").
HTTP_TEMPLATE = (
    '{"timestamp":%d,"type":"http","method":%s,"scheme":%s,"path":%s,"route":%s,'
    '"query":%s,"status":%d,"response_bytes":%d,"request_bytes":%d,"duration_ms":%.3f,'
    '"client":%s,"user_agent":%s,"request_id":%s,"http_version":%s,"close_code":null'
)
# What AccessLogOptions appends to HTTP_TEMPLATE: two more arguments (trace_id, span_id:
# str, "" when there is no trace), written as fields, as nulls, or not at all.
_TRACED = ',"trace_id":"%s","span_id":"%s"'
_UNTRACED = ',"trace_id":null,"span_id":null%.0s%.0s'
_NO_TRACE_FIELDS = "%.0s%.0s"
quote: Callable[[str], str] = json.encoder.encode_basestring
"""A str as a JSON string literal (for HTTP_TEMPLATE's str arguments)."""

ORJSON_DUMPS: Callable[[Any], bytes] | None
try:  # the optional extra "orjson": the default HTTP event in one C call
    from orjson import dumps as ORJSON_DUMPS
except ImportError:  # pragma: no cover - exercised without the extra
    ORJSON_DUMPS = None
"""``orjson.dumps`` when the ``orjson`` extra is installed, else None. Middlewares made
while it is set serialize the default HTTP event with it (about a fifth cheaper than
the pure-Python template, which stays the path without orjson); set it to None first
to make one that takes the template."""


def access_log_event(
    *,
    timestamp: int,
    type: str,
    method: str,
    scheme: str,
    path: str,
    route: str | None,
    query: str,
    status: int,
    response_bytes: int,
    request_bytes: int,
    duration_ms: float,
    client: str | None,
    user_agent: str | None,
    request_id: str,
    http_version: str | None,
    close_code: int | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
) -> dict[str, Any]:
    """One access-log event, its fields in ACCESS_LOG_FIELDS order."""
    return {
        "timestamp": timestamp,
        "type": type,
        "method": method,
        "scheme": scheme,
        "path": path,
        "route": route,
        "query": query,
        "status": status,
        "response_bytes": response_bytes,
        "request_bytes": request_bytes,
        "duration_ms": duration_ms,
        "client": client,
        "user_agent": user_agent,
        "request_id": request_id,
        "http_version": http_version,
        "close_code": close_code,
        "trace_id": trace_id,
        "span_id": span_id,
    }


def _proxies(
    trusted: Collection[str] | str,
) -> tuple[frozenset[str], tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], bool]:
    """``trusted_proxies`` checked: (addresses, networks, whether every peer is trusted).
    Entries are IP addresses, networks (CIDR) or "*" (the string alone, or an entry, as
    uvicorn's ``forwarded_allow_ips`` takes it)."""
    if trusted == "*":
        return frozenset(), (), True
    if isinstance(trusted, str):
        raise ValueError(
            f"trusted_proxies must be '*' or a collection of addresses, not {trusted!r}"
        )
    if not isinstance(trusted, Collection):
        raise TypeError(
            f"trusted_proxies must be '*' or a collection of addresses, not {trusted!r}"
        )
    hosts: set[str] = set()
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in trusted:
        if entry == "*":
            return frozenset(), (), True
        if not isinstance(entry, str):
            raise TypeError(f"trusted_proxies entries must be strings, not {entry!r}")
        try:
            if "/" in entry:
                nets.append(ipaddress.ip_network(entry, strict=False))
            else:
                address = ipaddress.ip_address(entry)
                mapped = getattr(address, "ipv4_mapped", None)
                hosts.add(str(mapped if mapped is not None else address))
                hosts.add(entry)  # as the server writes it, matched without parsing
        except ValueError:
            # A host name never matches: the peer is an address.
            raise ValueError(
                f"trusted_proxies entries must be IP addresses, networks or '*', not {entry!r}"
            ) from None
    return frozenset(hosts), tuple(nets), False


class AccessLogOptions:
    """The access-log options and the part of the work that is not ASGI-specific
    (client address, request id, event shaping, emitting); shared by the ASGI, Django
    and WSGI middlewares.

    Options: ``topic``, ``cluster`` (whose registered producer ships the events, unless
    ``producer`` is given), ``key`` (a field name or ``fn(event)``), ``fields`` (a subset
    of ACCESS_LOG_FIELDS), ``extra`` (static fields), ``exclude_paths`` (exact, or a
    prefix ending in ``*``), ``sample_rate``, ``enrich(context, event)`` (may return a
    replacement event), ``serializer``, ``request_id_header`` (taken from the request
    when ``trust_request_id``, echoed in the response when ``echo_request_id``),
    ``trusted_proxies`` (addresses, networks or "*" whose X-Forwarded-For is believed),
    ``websockets`` (ASGI only), ``trace_context`` (the ``trace_id``/``span_id``
    fields, and the ``traceparent`` header on the request logger's events).
    """

    def __init__(
        self,
        *,
        topic: str = "access-log",
        cluster: str = "default",
        producer: ProducerLike | None = None,
        key: str | Callable[[Mapping[str, Any]], bytes | str | None] | None = None,
        fields: Collection[str] | None = None,
        extra: Mapping[str, Any] | None = None,
        exclude_paths: Collection[str] = (),
        sample_rate: float = 1.0,
        enrich: Callable[[Any, dict[str, Any]], Mapping[str, Any] | None] | None = None,
        serializer: Callable[[dict[str, Any]], bytes | str] = default_serializer,
        request_id_header: str | None = "x-request-id",
        trust_request_id: bool = True,
        echo_request_id: bool = True,
        trusted_proxies: Collection[str] | str = (),
        websockets: bool = True,
        trace_context: bool = True,
    ) -> None:
        check_topic(topic)  # every event would be refused otherwise
        if not isinstance(cluster, str) or not cluster:
            raise ValueError(f"cluster must be a non-empty str, not {cluster!r}")
        if isinstance(key, str) and key not in ACCESS_LOG_FIELDS and key not in (extra or {}):
            raise ValueError(f"key names no event field: {key!r} (fields: {ACCESS_LOG_FIELDS})")
        if key is not None and not isinstance(key, str) and not callable(key):
            raise TypeError(f"key must be a field name, a callable or None, not {key!r}")
        names: tuple[str, ...] | None = None
        if fields is not None:
            if isinstance(fields, str):
                raise TypeError(f"fields must be a collection of names, not a string: {fields!r}")
            try:
                # Once: a generator would be used up by the checks below.
                names = tuple(fields)
            except TypeError:
                raise TypeError(f"fields must be a collection of names, not {fields!r}") from None
            if not names:
                # Every event would be "{}".
                raise ValueError("fields must name at least one field (None: all of them)")
            bad = [f for f in names if f not in ACCESS_LOG_FIELDS]
            if bad:
                raise ValueError(f"unknown access-log fields {bad} (known: {ACCESS_LOG_FIELDS})")
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, (int, float))
            or not (0.0 <= sample_rate <= 1.0)
        ):
            raise ValueError(f"sample_rate must be a number in [0, 1], not {sample_rate!r}")
        if isinstance(exclude_paths, str) or not isinstance(exclude_paths, Collection):
            raise TypeError(f"exclude_paths must be a collection of paths, not {exclude_paths!r}")
        for p in exclude_paths:
            if not isinstance(p, str) or not p.startswith("/"):
                raise ValueError(
                    f"exclude_paths entries must be paths starting with '/', not {p!r}"
                )
        if request_id_header is not None and (
            not isinstance(request_id_header, str) or not _TOKEN.fullmatch(request_id_header)
        ):
            # Echoed in every response: a name HTTP does not allow (a space, a colon)
            # would make the server refuse each one.
            raise ValueError(
                f"request_id_header must be a header name or None, not {request_id_header!r}"
            )
        if not isinstance(trace_context, bool):
            raise TypeError(f"trace_context must be True or False, not {trace_context!r}")
        if not trace_context and names is not None and set(names) & set(TRACE_FIELDS):
            raise ValueError(
                f"fields {sorted(set(names) & set(TRACE_FIELDS))} need trace_context=True"
            )
        if not trace_context and isinstance(key, str) and key in TRACE_FIELDS:
            raise ValueError(f"key={key!r} needs trace_context=True")
        if enrich is not None and not callable(enrich):
            raise TypeError(f"enrich must be callable or None, not {enrich!r}")
        if not callable(serializer):
            # None too: every event would be dropped, one warning a minute.
            raise TypeError(f"serializer must be callable, not {serializer!r}")
        for name, flag in (
            ("trust_request_id", trust_request_id),
            ("echo_request_id", echo_request_id),
            ("websockets", websockets),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, not {flag!r}")

        self.topic = topic
        self.cluster = cluster
        self.producer = producer
        self.sample_rate = float(sample_rate)
        self.enrich = enrich
        self.serializer = serializer
        self.websockets = websockets
        self.trace_context = trace_context
        self._key_field = key if isinstance(key, str) else None
        self._key_fn = key if callable(key) else None
        self._fields = names
        if names is None and not trace_context:
            # The template path writes no trace fields; the dict path leaves them out.
            self._fields = tuple(f for f in ACCESS_LOG_FIELDS if f not in TRACE_FIELDS)
        self._extra = dict(extra) if extra else None
        extra_json = ""
        if self._extra and serializer is default_serializer:
            # Rendered once now (the default event appends it as it is): a value JSON
            # cannot carry (NaN, a cycle) fails here, not as a drop of every event.
            try:
                extra_json = default_serializer(self._extra).decode()[1:-1]
            except ValueError as exc:
                raise ValueError(f"extra cannot be sent as JSON: {exc}") from None
        self._exclude = frozenset(p for p in exclude_paths if not p.endswith("*"))
        self._exclude_prefixes = tuple(p[:-1] for p in exclude_paths if p.endswith("*"))
        self._has_exclusions = bool(self._exclude or self._exclude_prefixes)
        self._rid_header = (
            request_id_header.lower().encode("latin-1") if request_id_header else None
        )
        self._trust_rid = trust_request_id and self._rid_header is not None
        self._echo_rid = echo_request_id and self._rid_header is not None
        hosts, nets, trust_all = _proxies(trusted_proxies)
        self._trust_all_proxies = trust_all
        self._proxy_hosts = hosts
        self._proxy_nets = nets
        self._use_proxies = self._trust_all_proxies or bool(self._proxy_hosts or self._proxy_nets)
        self.emitted = 0
        self.dropped = 0
        self.sampled_out = 0
        # With the default event shape the HTTP event is formatted straight into a JSON
        # template (about twice as fast as building a dict and encoding it).
        self._template: str | None = None
        self._traced_template = ""  # set with _template
        # With the default event shape and orjson installed: orjson.dumps, and the
        # static fields as JSON to close the object with (b',"a":1}'), or None.
        self._dumps: Callable[[Any], bytes] | None = None
        self._tail: bytes | None = None
        if (
            names is None
            and enrich is None
            and key is None
            and serializer is default_serializer
            and not set(self._extra or ()) & set(ACCESS_LOG_FIELDS)
        ):
            # The static fields are rendered once; "%" in them must survive formatting.
            tail = ("," + extra_json).replace("%", "%%") if extra_json else ""
            # Both take HTTP_TEMPLATE's arguments and then trace_id, span_id.
            if trace_context:
                self._template = HTTP_TEMPLATE + _UNTRACED + tail + "}"
                self._traced_template = HTTP_TEMPLATE + _TRACED + tail + "}"
            else:
                self._template = self._traced_template = (
                    HTTP_TEMPLATE + _NO_TRACE_FIELDS + tail + "}"
                )
            self._dumps = ORJSON_DUMPS
            self._tail = ("," + extra_json + "}").encode() if extra_json else None
        track_middleware(self)

    @property
    def request_id_header(self) -> str | None:
        """The request-id header's name (lower case), or None."""
        return self._rid_header.decode("latin-1") if self._rid_header is not None else None

    @property
    def trust_request_id(self) -> bool:
        return self._trust_rid

    @property
    def echo_request_id(self) -> bool:
        return self._echo_rid

    def stats(self) -> dict[str, int]:
        return {"emitted": self.emitted, "dropped": self.dropped, "sampled_out": self.sampled_out}

    def excluded(self, path: str) -> bool:
        return path in self._exclude or (
            bool(self._exclude_prefixes) and path.startswith(self._exclude_prefixes)
        )

    def request_id_from(self, raw: bytes | None) -> str:
        if self._trust_rid:
            # Echoed back in a response header: only short, printable ASCII is taken.
            if raw and len(raw) <= 128 and raw.isascii() and raw.decode("ascii").isprintable():
                return raw.decode("ascii")
        return new_request_id()

    def resolve_client(self, host: str | None, forwarded: str | None) -> str | None:
        """The client address: the peer's, or from X-Forwarded-For when the peer is a
        trusted proxy."""
        if not self._use_proxies or forwarded is None:
            return host
        if host is None:
            # A Unix socket's peer (uvicorn --uds): a proxy when every peer is trusted,
            # as uvicorn's "*" has it.
            if not self._trust_all_proxies:
                return None
        elif not self._trusted(host):
            return host
        hops = [_without_port(h.strip()) for h in forwarded.split(",") if h.strip()]
        # Walk back from the nearest hop: each trusted proxy vouches for the one before
        # it; the first untrusted address is the client.
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else host

    def _trusted(self, host: str) -> bool:
        if self._trust_all_proxies or host in self._proxy_hosts:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            address = mapped  # ::ffff:10.0.0.1 is 10.0.0.1 (a dual-stack listener)
        return str(address) in self._proxy_hosts or any(address in net for net in self._proxy_nets)

    def default_event(
        self,
        method: str,
        scheme: str,
        path: str,
        route: str | None,
        query: str,
        status: int,
        response_bytes: int,
        request_bytes: int,
        duration_ms: float,
        client: str | None,
        user_agent: str | None,
        request_id: str,
        http_version: str | None,
        trace: tuple[Any, ...] | None,
    ) -> bytes:
        """The default HTTP event, formatted into the JSON template (only while
        ``_template`` is set: the default event shape). The WSGI and Django middlewares
        call it; the ASGI middleware writes it out inline, its hot path."""
        template = self._template
        assert template is not None
        if trace is None:
            trace_id = span_id = ""
        else:
            template = self._traced_template
            trace_id, span_id = trace[0], trace[1]
        q = quote
        return (
            template
            % (
                _time_ns() // 1_000_000,
                q(method),
                q(scheme),
                q(path),
                "null" if route is None else q(route),
                q(query),
                status,
                response_bytes,
                request_bytes,
                duration_ms,
                "null" if client is None else q(client),
                "null" if user_agent is None else q(user_agent),
                q(request_id),
                "null" if http_version is None else q(http_version),
                trace_id,
                span_id,
            )
        ).encode()

    def sampled(self) -> bool:
        if self.sample_rate < 1.0 and random() >= self.sample_rate:
            self.sampled_out += 1
            return False
        return True

    def emit(
        self, context: Any, event: dict[str, Any], send: Callable[..., None] | None = None
    ) -> None:
        """Shape ``event`` (fields, extra, enrich(context, event), key), serialize and
        queue it; any failure is a counted drop, never an exception."""
        try:
            if self._fields is not None:
                event = {f: event[f] for f in self._fields}
            if self._extra is not None:
                event.update(self._extra)
            if self.enrich is not None:
                replaced = self.enrich(context, event)
                if replaced is not None:
                    event = dict(replaced)
            if self._key_field is not None:
                k = event.get(self._key_field)
                key: bytes | str | None = (
                    None if k is None else k if isinstance(k, (bytes, str)) else str(k)
                )
            elif self._key_fn is not None:
                key = self._key_fn(event)
            else:
                key = None
            value = self.serializer(event)
            if send is None:
                producer = (
                    self.producer if self.producer is not None else get_producer(self.cluster)
                )
                send = producer.send_nowait
            send(self.topic, value, key)
        except Exception as exc:
            self.dropped += 1
            warn_drop("access-log middleware", self.topic, exc)
            return
        self.emitted += 1


def _without_port(hop: str) -> str:
    """An X-Forwarded-For entry without the port some proxies add ("1.2.3.4:5678",
    "[2001:db8::7]:443"), as uvicorn reads them; a bare IPv6 address has no port."""
    if hop.startswith("["):
        end = hop.find("]")
        return hop[1:end] if end > 0 else hop
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop
