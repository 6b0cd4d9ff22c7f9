"""Framework-free ASGI integration: the producer's lifespan, access logs, request loggers.

* :func:`producer_lifespan` - the async context manager every lifespan helper is built
  on: creates the producer for a cluster name *in the worker process* (servers fork
  before they run the lifespan, so nothing crosses a fork), registers it, and on exit
  flushes within a deadline and reports what could not be sent.
* :class:`KafkaLifespan` - a pure ASGI wrapper running that lifespan around any app,
  composed with the app's own lifespan (or none: Django's handler has none).
* :class:`AccessLogMiddleware` - one event per HTTP response / WebSocket session,
  queued with ``send_nowait`` once the exchange is over.
* :class:`EventLogger` - the request-scoped ``log(topic, payload)`` object, found at
  ``scope["state"]["kafka"]`` (``request.state.kafka`` in Starlette/FastAPI).
"""

from __future__ import annotations

import inspect
import ipaddress
import itertools
import json
import json.encoder
import logging
import os
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Mapping,
    MutableMapping,
    Sequence,
)
from contextlib import AsyncExitStack, asynccontextmanager
from random import random
from typing import Any, Literal, TypeAlias

import anyio

from kafka_asgi.integrations._producer_api import Headers, ProducerLike
from kafka_asgi.integrations.testing import override_for
from kafka_asgi.integrations.threads import (
    ThreadSafeSender,
    get_sender,
    register_sender,
    unregister_sender,
)
from kafka_asgi.producer import (
    get_producer,
    register_producer,
    unregister_producer,
)
from kafka_asgi.protocol.errors import KafkaError

__all__ = [
    "ACCESS_LOG_FIELDS",
    "AccessLogMiddleware",
    "AccessLogOptions",
    "EventLogger",
    "KafkaLifespan",
    "KafkaUnreachableError",
    "get_event_logger",
    "producer_lifespan",
]

logger = logging.getLogger("kafka_asgi.integrations")

Scope: TypeAlias = "MutableMapping[str, Any]"
Message: TypeAlias = "MutableMapping[str, Any]"
Receive: TypeAlias = "Callable[[], Awaitable[Message]]"
Send: TypeAlias = "Callable[[Message], Awaitable[None]]"
ASGIApp: TypeAlias = "Callable[[Scope, Receive, Send], Awaitable[None]]"

STATE_KEY = "kafka"  # scope["state"][STATE_KEY] -> EventLogger (request.state.kafka)
PRODUCER_STATE_KEY = "kafka_producer"  # lifespan state: the "default" cluster's producer
PRODUCERS_STATE_KEY = "kafka_producers"  # lifespan state: {cluster: producer}


class KafkaUnreachableError(KafkaError):
    """Kafka did not answer at startup and ``on_unreachable="fail"`` was chosen."""

    retriable = True


# --------------------------------------------------------------------------------------
# lifespan
# --------------------------------------------------------------------------------------


def _validate_lifespan_options(
    cluster: object,
    on_unreachable: object,
    startup_timeout: object,
    shutdown_timeout: object,
    create_topics: object,
) -> None:
    if not isinstance(cluster, str) or not cluster:
        raise ValueError(f"cluster must be a non-empty str, not {cluster!r}")
    if on_unreachable not in ("buffer", "fail"):
        raise ValueError(f"on_unreachable must be 'buffer' or 'fail', not {on_unreachable!r}")
    for name, value in (
        ("startup_timeout", startup_timeout),
        ("shutdown_timeout", shutdown_timeout),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    if isinstance(create_topics, (str, bytes)):
        raise TypeError(
            f"create_topics must be a sequence of names, not a string: {create_topics!r}"
        )
    if not isinstance(create_topics, (list, tuple)):
        raise TypeError(f"create_topics must be a list or tuple, not {create_topics!r}")
    for t in create_topics:
        ok = isinstance(t, str) and bool(t)
        if isinstance(t, tuple) and len(t) == 2:
            name, partitions = t
            ok = (
                isinstance(name, str)
                and bool(name)
                and isinstance(partitions, int)
                and partitions >= 1
            )
        if not ok:
            raise ValueError(
                f"create_topics entries must be 'name' or ('name', partitions >= 1), not {t!r}"
            )


async def _check_reachable(producer: ProducerLike, client: Any, limit: float) -> None:
    """Raise if Kafka does not answer within ``limit`` seconds."""
    with anyio.fail_after(limit):
        if client is not None:
            # Brokers only: the cheapest request that proves a broker answers.
            await client.refresh(topics=[])
            return
        check = getattr(producer, "check_reachable", None)
        if check is not None:
            await check()


async def _create_topics(
    client: Any, topics: Sequence[str | tuple[str, int]], limit: float
) -> None:
    from kafka_asgi.protocol.errors import TopicAlreadyExistsError

    for topic in topics:
        spec = (topic, 1) if isinstance(topic, str) else topic
        try:
            await client.create_topics([spec], timeout=limit)
        except TopicAlreadyExistsError:
            # Expected: every worker of the server tries, and the topic may predate us.
            continue
        logger.info("kafka_asgi: created topic %r (%d partition(s))", spec[0], spec[1])


@asynccontextmanager
async def producer_lifespan(
    *,
    cluster: str = "default",
    bootstrap: str | Sequence[Any] | None = None,
    producer_options: Mapping[str, Any] | None = None,
    producer_factory: Callable[[], ProducerLike] | None = None,
    on_unreachable: Literal["buffer", "fail"] = "buffer",
    startup_timeout: float = 5.0,
    shutdown_timeout: float = 10.0,
    create_topics: Sequence[str | tuple[str, int]] = (),
    thread_queue_size: int = 10_000,
) -> AsyncIterator[ProducerLike]:
    """Run one producer for ``cluster`` in this process, for the duration of the block.

    The producer comes from ``producer_factory()`` if given, else
    ``Producer(bootstrap, **producer_options)``; inside :func:`capture_events` it is the
    capturing in-memory producer. It is registered under ``cluster`` (so
    ``kafka_asgi.get_producer(cluster)`` finds it) together with a thread-safe sender
    for code on other threads.

    Kafka unreachable at startup (no answer within ``startup_timeout``):
    ``on_unreachable="buffer"`` (default) logs one warning and starts anyway, the
    producer buffering until Kafka is back; ``"fail"`` raises KafkaUnreachableError.
    ``create_topics`` names topics (or ``(name, partitions)``) to create at startup
    when missing; Kafka's ``auto.create.topics.enable`` is usually off.

    On exit: events queued from other threads are handed over, then
    ``flush(timeout=shutdown_timeout)``; what is still unsent is logged as a warning,
    then the producer is closed.
    """
    _validate_lifespan_options(
        cluster, on_unreachable, startup_timeout, shutdown_timeout, create_topics
    )
    override = override_for(cluster)
    client: Any = None
    if override is not None:
        producer: ProducerLike = override
    elif producer_factory is not None:
        producer = producer_factory()
    else:
        if bootstrap is None:
            raise ValueError(
                "producer_lifespan needs bootstrap= (e.g. '127.0.0.1:9092') or producer_factory="
            )
        client, producer = _make_producer(bootstrap, dict(producer_options or {}))
    owned = override is None
    sender = ThreadSafeSender(producer, max_queue=thread_queue_size)

    async with AsyncExitStack() as stack:
        if client is not None:
            # Ours, so the lifespan can ask it whether Kafka answers and create topics;
            # closed after the producer (exit stack: last in, first out).
            await client.start()
            stack.push_async_callback(_close_client, client)
        if owned:
            await producer.__aenter__()
            stack.callback(unregister_producer, cluster, producer)
            stack.push_async_callback(_shutdown, producer, cluster, shutdown_timeout, owned)
            register_producer(cluster, producer)
        else:
            stack.push_async_callback(_shutdown, producer, cluster, shutdown_timeout, owned)
        sender.bind()
        stack.callback(sender.close)
        register_sender(cluster, sender)
        stack.callback(unregister_sender, cluster, sender)

        try:
            await _check_reachable(producer, client, startup_timeout)
        except Exception as exc:
            where = bootstrap if bootstrap is not None else type(producer).__name__
            reason = str(exc) or type(exc).__name__
            if on_unreachable == "fail":
                raise KafkaUnreachableError(
                    f"Kafka at {where} unreachable at startup within {startup_timeout}s: "
                    f"{reason} (on_unreachable='fail')"
                ) from exc
            logger.warning(
                "kafka_asgi: Kafka at %s unreachable at startup (%s); starting anyway and "
                "buffering events for cluster %r until it is back (on_unreachable='buffer')",
                where,
                reason,
                cluster,
            )
        else:
            if client is not None and create_topics:
                await _create_topics(client, create_topics, max(startup_timeout, 10.0))
        yield producer


async def _close_client(client: Any) -> None:
    # No scope of ours around it: the client exits the task group it entered at start.
    await client.aclose()


async def _shutdown(producer: ProducerLike, cluster: str, limit: float, owned: bool) -> None:
    # Shielded: a server cancelling the lifespan must not lose the final flush. The
    # flush is bounded by ``limit``; the close that follows has little left to do but
    # is bounded too.
    with anyio.CancelScope(shield=True):
        try:
            await producer.flush(timeout=limit)
        except Exception as exc:
            logger.warning("kafka_asgi: final flush for cluster %r failed: %s", cluster, exc)
        stats = producer.stats()
        left = getattr(stats, "buffered", 0) + getattr(stats, "in_flight", 0)
        if left:
            logger.warning(
                "kafka_asgi: %d event(s) for cluster %r still unsent after the %.1fs "
                "shutdown deadline (delivered %d, failed %d, last error: %s)",
                left,
                cluster,
                limit,
                getattr(stats, "delivered", 0),
                getattr(stats, "failed", 0),
                getattr(stats, "last_error", None),
            )
    if not owned:
        return
    # Not inside a cancel scope of ours: the producer exits the task group it entered
    # at start, which must be the innermost scope. Its own close is bounded by its
    # close_timeout and shielded.
    await producer.__aexit__(None, None, None)
    if not left:
        logger.info(
            "kafka_asgi: producer for cluster %r flushed and closed (pid %d, %d delivered)",
            cluster,
            os.getpid(),
            getattr(stats, "delivered", 0),
        )


# After the lifespan's own flush (bounded by shutdown_timeout), what the producer's
# close may still spend delivering before it reports the rest as undelivered.
_CLOSE_TIMEOUT = 2.0


def _make_producer(bootstrap: str | Sequence[Any], options: dict[str, Any]) -> tuple[Any, Any]:
    """A KafkaClient from the client options, and a Producer using it for the rest."""
    from kafka_asgi.cluster.client import KafkaClient
    from kafka_asgi.cluster.options import split_client_options
    from kafka_asgi.producer import Producer

    if "client" in options or "cluster_name" in options:
        bad = "client" if "client" in options else "cluster_name"
        raise TypeError(
            f"producer_options may not set {bad!r}: the lifespan makes the client and "
            "registers the producer under its cluster name"
        )
    client_options, producer_only = split_client_options(options)
    producer_only.setdefault("close_timeout", _CLOSE_TIMEOUT)
    client = KafkaClient(bootstrap, **client_options)
    return client, Producer(client=client, **producer_only)


def _put_state(state: dict[str, Any], cluster: str, producer: ProducerLike) -> None:
    state.setdefault(PRODUCERS_STATE_KEY, {})[cluster] = producer
    if cluster == "default":
        state[PRODUCER_STATE_KEY] = producer


class KafkaLifespan:
    """Pure ASGI wrapper that runs :func:`producer_lifespan` in the server's lifespan.

    Works around any ASGI app; the app's own lifespan (if it has one) runs inside
    ours, so its startup code can already send events and its shutdown code still
    can. An app that does not speak lifespan (it raises, or returns, without
    answering the startup message) is simply run without one. Keyword options are
    those of :func:`producer_lifespan`. The producer is put in the lifespan state:
    ``state["kafka_producers"][cluster]`` (and ``state["kafka_producer"]`` for the
    "default" cluster).
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        # Validate now, at the call that received the bad value, not at server startup.
        _validate_lifespan_options(
            options.get("cluster", "default"),
            options.get("on_unreachable", "buffer"),
            options.get("startup_timeout", 5.0),
            options.get("shutdown_timeout", 10.0),
            options.get("create_topics", ()),
        )
        unknown = set(options) - set(inspect.signature(producer_lifespan).parameters)
        if unknown:
            raise TypeError(f"KafkaLifespan got unknown options: {sorted(unknown)}")
        self.options = options
        self.cluster: str = options.get("cluster", "default")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - server bug
            raise RuntimeError(f"expected lifespan.startup, got {message['type']!r}")
        reply: Message | None = None
        async with AsyncExitStack() as stack:
            try:
                producer = await stack.enter_async_context(producer_lifespan(**self.options))
            except Exception as exc:
                logger.error("kafka_asgi: lifespan startup failed: %s", exc)
                await send({"type": "lifespan.startup.failed", "message": f"kafka_asgi: {exc}"})
                return
            state = scope.get("state")
            if state is not None:
                _put_state(state, self.cluster, producer)
            reply = await self._run_app_lifespan(scope, receive, send)
        # Only now, with the producer flushed and closed, may the server hear that
        # shutdown is complete and let the worker exit.
        if reply is not None:
            await send(reply)

    async def _run_app_lifespan(self, scope: Scope, receive: Receive, send: Send) -> Message | None:
        """Run the app's lifespan inside ours; return the shutdown reply still to send."""
        to_app_w, to_app_r = anyio.create_memory_object_stream[Message](1)
        from_app_w, from_app_r = anyio.create_memory_object_stream[Message](1)
        app_received = False
        app_error: BaseException | None = None

        async def app_receive() -> Message:
            nonlocal app_received
            app_received = True
            try:
                return await to_app_r.receive()
            except anyio.EndOfStream:
                # Nothing more will come: the server's lifespan is over.
                return {"type": "lifespan.shutdown"}

        async def app_send(msg: Message) -> None:
            await from_app_w.send(msg)

        async def run_app() -> None:
            nonlocal app_error
            async with from_app_w:
                try:
                    await self.app(scope, app_receive, app_send)
                except Exception as exc:
                    app_error = exc

        async with anyio.create_task_group() as tg, to_app_w, from_app_r, to_app_r:
            tg.start_soon(run_app)
            await to_app_w.send({"type": "lifespan.startup"})
            try:
                reply = await from_app_r.receive()
            except anyio.EndOfStream:
                if app_error is not None and app_received:
                    logger.error("kafka_asgi: the app's lifespan startup raised: %r", app_error)
                    await send({"type": "lifespan.startup.failed", "message": repr(app_error)})
                    return None
                # The app does not speak lifespan (Django's handler raises for the scope
                # type; others just return): run ours alone.
                await send({"type": "lifespan.startup.complete"})
                await receive()
                return {"type": "lifespan.shutdown.complete"}
            await send(reply)
            if reply["type"] != "lifespan.startup.complete":
                return None
            await to_app_w.send(await receive())
            try:
                reply = await from_app_r.receive()
                return reply
            except anyio.EndOfStream:
                pass
        if app_error is not None:
            return {"type": "lifespan.shutdown.failed", "message": repr(app_error)}
        return {"type": "lifespan.shutdown.complete"}


# --------------------------------------------------------------------------------------
# request-scoped event logger
# --------------------------------------------------------------------------------------

_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
# JSONEncoder.encode builds a new C encoder on every call; on the access-log hot path
# one built once saves about a quarter of the serialization time. No circular-reference
# markers: a cyclic event raises RecursionError, which the callers count as a drop.
_make_c_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_c_basestring: Any = getattr(json.encoder, "c_encode_basestring", None)
_c_encoder: Any = (
    _make_c_encoder(None, str, _c_basestring, None, ":", ",", False, False, True)
    if _make_c_encoder is not None and _c_basestring is not None
    else None
)


def default_serializer(event: Mapping[str, Any]) -> bytes:
    """Compact JSON (UTF-8); values JSON lacks (datetimes, UUIDs...) become str()."""
    if _c_encoder is not None and type(event) is dict:
        chunks: tuple[str, ...] = _c_encoder(event, 0)
        return "".join(chunks).encode()
    return _json_encode(event).encode()


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


def _route_of(scope: Scope) -> str | None:
    route = scope.get("route")
    if route is None:
        return None
    if isinstance(route, str):
        return route
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _sender_for(cluster: str) -> Callable[..., None]:
    """send_nowait of the cluster's producer, safe from any thread when a lifespan runs it."""
    sender = get_sender(cluster)
    if sender is not None:
        return sender.send_nowait
    producer: ProducerLike = get_producer(cluster)
    return producer.send_nowait


class EventLogger:
    """Per-request event sender: ``log(topic, payload)`` never blocks and never raises
    for a full buffer or a Kafka outage (it returns False and counts the drop).

    Each event carries the request id and route template: as the ``request_id`` and
    ``route`` fields of a mapping payload (fields the payload sets itself win), and as
    the ``request_id`` / ``route`` Kafka headers for any payload. Mappings and other
    JSON-able values are serialized with ``serializer`` (compact JSON by default);
    ``bytes`` and ``str`` payloads are sent as they are.

    Safe to call from the request's event loop and from threads (sync endpoints run
    in a thread pool): those go through the lifespan's thread-safe sender.
    """

    __slots__ = ("_route", "_scope", "cluster", "dropped", "request_id", "sent", "serializer")

    def __init__(
        self,
        scope: Scope | None,
        request_id: str,
        cluster: str = "default",
        serializer: Callable[[Any], bytes | str] = default_serializer,
    ) -> None:
        self._scope = scope
        self._route: str | None = None
        self.request_id = request_id
        self.cluster = cluster
        self.serializer = serializer
        self.sent = 0
        self.dropped = 0

    @property
    def route(self) -> str | None:
        """The matched route template (known once the framework routed the request)."""
        scope = self._scope
        if scope is None:
            return self._route
        route = scope.get("kafka_asgi.route")
        return route if isinstance(route, str) else _route_of(scope)

    def _release(self, route: str | None) -> None:
        """The exchange is over: keep its route, let go of its scope.

        The scope holds this logger in its state, so the reference back makes a cycle:
        every request's scope (and all a framework hangs on it) would be left for the
        cyclic garbage collector instead of being freed on the spot, which costs a
        FastAPI app several microseconds a request and adds collector pauses.
        ``route`` is the scope's route template, already looked up by the caller.
        """
        scope = self._scope
        if scope is not None:
            override = scope.get("kafka_asgi.route")
            self._route = override if isinstance(override, str) else route
            self._scope = None

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
        if isinstance(payload, (bytes, str)):
            value: bytes | str = payload
        else:
            if isinstance(payload, Mapping):
                payload = {"request_id": self.request_id, "route": route, **payload}
            value = self.serializer(payload)
        stamp: list[tuple[str, bytes | str | None]] = [
            ("request_id", self.request_id),
            ("route", route),
        ]
        if headers is not None:
            items = headers.items() if isinstance(headers, Mapping) else headers
            stamp.extend(items)
        try:
            _sender_for(self.cluster)(topic, value, key, stamp)
        except (TypeError, ValueError):
            raise
        except Exception as exc:
            self.dropped += 1
            _warn_drop("request event logger", topic, exc)
            return False
        self.sent += 1
        return True


_last_drop_warning = 0.0
_drop_warning_lock = threading.Lock()


def _warn_drop(who: str, topic: str, exc: BaseException) -> None:
    """One warning a minute at most: a Kafka outage must not flood the app's own logs."""
    global _last_drop_warning
    now = time.monotonic()
    with _drop_warning_lock:
        if now - _last_drop_warning < 60.0:
            return
        _last_drop_warning = now
    logger.warning("kafka_asgi: %s dropped an event for topic %r: %s", who, topic, exc)


def get_event_logger(scope: Scope, cluster: str = "default") -> EventLogger:
    """The request's EventLogger: the access-log middleware's, else one made and kept now."""
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    found = state.get(STATE_KEY)
    if isinstance(found, EventLogger):
        return found
    made = EventLogger(scope, new_request_id(), cluster)
    state[STATE_KEY] = made
    return made


# --------------------------------------------------------------------------------------
# access-log middleware
# --------------------------------------------------------------------------------------

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
)


# The HTTP event with every field, in ACCESS_LOG_FIELDS order, without its closing brace.
_HTTP_TEMPLATE = (
    '{"timestamp":%d,"type":"http","method":%s,"scheme":%s,"path":%s,"route":%s,'
    '"query":%s,"status":%d,"response_bytes":%d,"request_bytes":%d,"duration_ms":%.3f,'
    '"client":%s,"user_agent":%s,"request_id":%s,"http_version":%s,"close_code":null'
)
_quote: Callable[[str], str] = json.encoder.encode_basestring
_perf_ns = time.perf_counter_ns
_time_ns = time.time_ns


class AccessLogOptions:
    """The access-log options and the part of the work that is not ASGI-specific
    (client address, event shaping, emitting); shared with the Django middleware."""

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
        enrich: Callable[[Scope, dict[str, Any]], Mapping[str, Any] | None] | None = None,
        serializer: Callable[[dict[str, Any]], bytes | str] = default_serializer,
        request_id_header: str | None = "x-request-id",
        trust_request_id: bool = True,
        echo_request_id: bool = True,
        trusted_proxies: Collection[str] | str = (),
        websockets: bool = True,
    ) -> None:
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty str, not {topic!r}")
        if not isinstance(cluster, str) or not cluster:
            raise ValueError(f"cluster must be a non-empty str, not {cluster!r}")
        if isinstance(key, str) and key not in ACCESS_LOG_FIELDS and key not in (extra or {}):
            raise ValueError(f"key names no event field: {key!r} (fields: {ACCESS_LOG_FIELDS})")
        if key is not None and not isinstance(key, str) and not callable(key):
            raise TypeError(f"key must be a field name, a callable or None, not {key!r}")
        if fields is not None:
            if isinstance(fields, str):
                raise TypeError(f"fields must be a collection of names, not a string: {fields!r}")
            bad = [f for f in fields if f not in ACCESS_LOG_FIELDS]
            if bad:
                raise ValueError(f"unknown access-log fields {bad} (known: {ACCESS_LOG_FIELDS})")
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, (int, float))
            or not (0.0 <= sample_rate <= 1.0)
        ):
            raise ValueError(f"sample_rate must be a number in [0, 1], not {sample_rate!r}")
        if isinstance(exclude_paths, str):
            raise TypeError(
                f"exclude_paths must be a collection of paths, not a string: {exclude_paths!r}"
            )
        for p in exclude_paths:
            if not isinstance(p, str) or not p.startswith("/"):
                raise ValueError(
                    f"exclude_paths entries must be paths starting with '/', not {p!r}"
                )
        if request_id_header is not None and (
            not isinstance(request_id_header, str) or not request_id_header
        ):
            raise ValueError(
                f"request_id_header must be a header name or None, not {request_id_header!r}"
            )
        for name, fn in (("enrich", enrich), ("serializer", serializer)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, not {fn!r}")

        self.topic = topic
        self.cluster = cluster
        self.producer = producer
        self.sample_rate = float(sample_rate)
        self.enrich = enrich
        self.serializer = serializer
        self.websockets = websockets
        self._key_field = key if isinstance(key, str) else None
        self._key_fn = key if callable(key) else None
        self._fields = tuple(fields) if fields is not None else None
        self._extra = dict(extra) if extra else None
        self._exclude = frozenset(p for p in exclude_paths if not p.endswith("*"))
        self._exclude_prefixes = tuple(p[:-1] for p in exclude_paths if p.endswith("*"))
        self._has_exclusions = bool(self._exclude or self._exclude_prefixes)
        self._rid_header = (
            request_id_header.lower().encode("latin-1") if request_id_header else None
        )
        self._trust_rid = trust_request_id and self._rid_header is not None
        self._echo_rid = echo_request_id and self._rid_header is not None
        self._trust_all_proxies = trusted_proxies == "*"
        proxies = () if isinstance(trusted_proxies, str) else trusted_proxies
        if isinstance(trusted_proxies, str) and trusted_proxies != "*":
            raise ValueError(
                f"trusted_proxies must be '*' or a collection of addresses, not {trusted_proxies!r}"
            )
        self._proxy_hosts = frozenset(p for p in proxies if "/" not in p)
        try:
            self._proxy_nets = tuple(
                ipaddress.ip_network(p, strict=False) for p in proxies if "/" in p
            )
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {exc}") from None
        self._use_proxies = self._trust_all_proxies or bool(self._proxy_hosts or self._proxy_nets)
        self.emitted = 0
        self.dropped = 0
        self.sampled_out = 0
        # With the default event shape the HTTP event is formatted straight into a JSON
        # template (about twice as fast as building a dict and encoding it).
        self._template: str | None = None
        if (
            fields is None
            and enrich is None
            and key is None
            and serializer is default_serializer
            and not set(self._extra or ()) & set(ACCESS_LOG_FIELDS)
        ):
            extra_json = default_serializer(self._extra).decode()[1:-1] if self._extra else ""
            # The static fields are rendered once; "%" in them must survive formatting.
            tail = ("," + extra_json).replace("%", "%%") if extra_json else ""
            self._template = _HTTP_TEMPLATE + tail + "}"

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
        if not self._use_proxies or host is None or forwarded is None or not self._trusted(host):
            return host
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        # Walk back from the nearest hop: each trusted proxy vouches for the one before
        # it; the first untrusted address is the client.
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else host

    def _trusted(self, host: str) -> bool:
        if self._trust_all_proxies or host in self._proxy_hosts:
            return True
        if not self._proxy_nets:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self._proxy_nets)

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
            _warn_drop("access-log middleware", self.topic, exc)
            return
        self.emitted += 1


class AccessLogMiddleware(AccessLogOptions):
    """Pure ASGI middleware: one access-log event per HTTP response or WebSocket session.

    The event is queued with ``send_nowait`` once the response is complete (for a
    streaming response, after its last chunk; for a WebSocket, when it closes).
    Nothing about the response depends on Kafka: a full buffer, an outage or a
    failing ``enrich``/``serializer`` only increments ``dropped`` (and logs a warning
    at most once a minute).

    Event fields (``fields`` keeps a subset; ``extra`` adds static ones):
    ``timestamp`` (ms since the epoch, response end), ``type`` ("http" /
    "websocket"), ``method``, ``scheme``, ``path``, ``route`` (template, where the
    framework records it), ``query``, ``status`` (WebSocket: 101 accepted, else the
    denial status or 403), ``response_bytes`` / ``request_bytes`` (body bytes; for a
    WebSocket, message bytes each way), ``duration_ms``, ``client``, ``user_agent``,
    ``request_id``, ``http_version``, ``close_code`` (WebSocket only, else null).
    """

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        super().__init__(**options)
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The HTTP path is written out inline, without helper calls: every call, closure
        # cell and allocation here is paid once per request, and bench/middleware.py
        # holds the middleware to a few percent of a minimal app's throughput.
        if scope["type"] != "http":
            if scope["type"] == "websocket" and self.websockets:
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if self._has_exclusions:
            path = scope["path"]
            if path in self._exclude or (
                self._exclude_prefixes and path.startswith(self._exclude_prefixes)
            ):
                await self.app(scope, receive, send)
                return
        start = _perf_ns()
        headers = dict(scope["headers"])
        rid_name = self._rid_header
        raw_rid = headers.get(rid_name) if self._trust_rid else None
        request_id = (
            next(_rid_counter).to_bytes(16, "big").hex()  # new_request_id(), inline
            if raw_rid is None
            else self.request_id_from(raw_rid)
        )
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[STATE_KEY] = event_logger = EventLogger(scope, request_id, self.cluster)
        rid_header = (rid_name, request_id.encode()) if self._echo_rid else None
        status = 0
        response_bytes = 0
        finished = 0

        # A plain function returning the server's awaitable (ASGI asks only that send
        # be awaitable): no coroutine of our own per message.
        def send_wrapper(message: Message) -> Awaitable[None]:
            nonlocal status, response_bytes, finished
            if message["type"] == "http.response.body":
                response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    finished = _perf_ns()
            elif message["type"] == "http.response.start":
                status = message["status"]
                if rid_header is not None:
                    # A new list: the app's may be shared (a Response reused across requests).
                    message["headers"] = [*message.get("headers", ()), rid_header]
            return send(message)

        # Declared length when there is one (servers enforce it); otherwise the body is
        # counted as it is read, which costs a wrapper per receive.
        declared = headers.get(b"content-length")
        if declared is not None:
            request_bytes = int(declared) if declared.isdigit() else 0
        elif b"transfer-encoding" in headers or scope.get("http_version") == "2":
            request_bytes = 0
            inner_receive = receive

            async def receive_counting() -> Message:
                nonlocal request_bytes
                message = await inner_receive()
                if message["type"] == "http.request":
                    request_bytes += len(message.get("body", b""))
                return message

            receive = receive_counting
        else:
            request_bytes = 0
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            duration = (finished or _perf_ns()) - start
            route = scope.get("route")
            if route is not None and route.__class__ is not str:
                route = _route_of(scope)
            event_logger._release(route)
            if self.sample_rate >= 1.0 or self.sampled():
                if self._use_proxies:
                    client = self._client(scope, headers)
                else:
                    peer = scope.get("client")
                    client = peer[0] if peer else None
                ua = headers.get(b"user-agent")
                # An app that raised before starting a response gets a 500 from the server.
                status = status or 500
                template = self._template
                if template is not None:
                    q = _quote
                    version = scope.get("http_version")
                    try:
                        value = (
                            template
                            % (
                                _time_ns() // 1_000_000,
                                q(scope["method"]),
                                q(scope.get("scheme", "http")),
                                q(scope["path"]),
                                "null" if route is None else q(route),
                                q(scope["query_string"].decode("latin-1")),
                                status,
                                response_bytes,
                                request_bytes,
                                duration / 1e6,
                                "null" if client is None else q(client),
                                "null" if ua is None else q(ua.decode("latin-1")),
                                q(request_id),
                                "null" if version is None else q(version),
                            )
                        ).encode()
                        producer = self.producer
                        if producer is None:
                            # The lifespan's producer, as it put it in the state: two
                            # dict look-ups where the registry also asks for the pid.
                            found = state.get(PRODUCERS_STATE_KEY)
                            producer = found.get(self.cluster) if found else None
                            if producer is None:
                                producer = get_producer(self.cluster)
                        producer.send_nowait(self.topic, value)
                    except Exception as exc:
                        self.dropped += 1
                        _warn_drop("access-log middleware", self.topic, exc)
                    else:
                        self.emitted += 1
                else:
                    event = {
                        "timestamp": _time_ns() // 1_000_000,
                        "type": "http",
                        "method": scope["method"],
                        "scheme": scope.get("scheme", "http"),
                        "path": scope["path"],
                        "route": route,
                        "query": scope["query_string"].decode("latin-1"),
                        "status": status,
                        "response_bytes": response_bytes,
                        "request_bytes": request_bytes,
                        "duration_ms": duration / 1e6,
                        "client": client,
                        "user_agent": ua.decode("latin-1") if ua is not None else None,
                        "request_id": request_id,
                        "http_version": scope.get("http_version"),
                        "close_code": None,
                    }
                    self.emit(scope, event)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.excluded(scope["path"]):
            await self.app(scope, receive, send)
            return
        start = _perf_ns()
        headers = dict(scope["headers"])
        request_id = self.request_id_from(
            headers.get(self._rid_header) if self._trust_rid else None
        )
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[STATE_KEY] = event_logger = EventLogger(scope, request_id, self.cluster)
        rid_header = (self._rid_header, request_id.encode("ascii")) if self._echo_rid else None
        status = 0
        close_code: int | None = None
        sent_bytes = 0
        received_bytes = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, close_code, sent_bytes
            kind = message["type"]
            if kind == "websocket.send":
                sent_bytes += len(message.get("bytes") or b"") + len(
                    (message.get("text") or "").encode()
                )
            elif kind == "websocket.accept":
                status = 101
                if rid_header is not None:
                    message["headers"] = [*message.get("headers", ()), rid_header]
            elif kind == "websocket.close":
                if close_code is None:
                    close_code = message.get("code", 1000)
                if not status:
                    status = 403
            elif kind == "websocket.http.response.start":
                status = message["status"]
            await send(message)

        async def receive_wrapper() -> Message:
            nonlocal close_code, received_bytes
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                received_bytes += len(message.get("bytes") or b"") + len(
                    (message.get("text") or "").encode()
                )
            elif kind == "websocket.disconnect" and close_code is None:
                close_code = message.get("code", 1005)
            return message

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            finished = _perf_ns()
            route = _route_of(scope)
            event_logger._release(route)
            if self.sampled():
                event = {
                    "timestamp": _time_ns() // 1_000_000,
                    "type": "websocket",
                    "method": "GET",
                    "scheme": scope.get("scheme", "ws"),
                    "path": scope["path"],
                    "route": route,
                    "query": scope["query_string"].decode("latin-1"),
                    "status": status or 403,
                    "response_bytes": sent_bytes,
                    "request_bytes": received_bytes,
                    "duration_ms": (finished - start) / 1e6,
                    "client": self._client(scope, headers),
                    "user_agent": (
                        ua.decode("latin-1") if (ua := headers.get(b"user-agent")) else None
                    ),
                    "request_id": request_id,
                    "http_version": scope.get("http_version"),
                    "close_code": close_code,
                }
                self.emit(scope, event)

    def _client(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        client = scope.get("client")
        host: str | None = client[0] if client else None
        if not self._use_proxies:
            return host
        values = [v for n, v in scope["headers"] if n == b"x-forwarded-for"]
        # Several X-Forwarded-For field lines are one list (RFC 9110, section 5.3).
        forwarded = b",".join(values).decode("latin-1") if values else None
        return self.resolve_client(host, forwarded)
