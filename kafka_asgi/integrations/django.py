"""Django: settings, access-log middleware (ASGI and WSGI), ``request.kafka``, lifespan.

``settings.py``::

    KAFKA_ASGI = {
        "BOOTSTRAP": "127.0.0.1:9092",
        "PRODUCER_OPTIONS": {"compression": "lz4"},      # Producer options
        "ACCESS_LOG": {"topic": "access-log"},           # AccessLogMiddleware options
    }
    MIDDLEWARE = ["kafka_asgi.django.AccessLogMiddleware", ...]

``asgi.py``::

    from kafka_asgi.django import get_asgi_application
    application = get_asgi_application()   # Django's, run inside the producer's lifespan

Views log with ``request.kafka.log(topic, payload)`` (stamped with the request id and
the route). Under ASGI the producer runs on the server's event loop, started by the
lifespan. Under WSGI (or ASGI with Django's own ``get_asgi_application``) there is no
lifespan: the first request of each process starts a producer on its own event loop in
a background thread, flushed when the process exits; views and the middleware hand
events to it through a bounded thread-safe queue. Requests raise ImproperlyConfigured
when it would need one and KAFKA_ASGI has neither BOOTSTRAP nor PRODUCER_FACTORY.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

from kafka_asgi.integrations.access_log_event import (
    AccessLogOptions,
    access_log_event,
)
from kafka_asgi.integrations.background import BackgroundProducer, at_exit, cancel_at_exit
from kafka_asgi.integrations.event_logger import EventLogger, sender_for, warn_drop
from kafka_asgi.integrations.lifespan import ASGIApp, KafkaLifespan, LifespanOptions
from kafka_asgi.integrations.overrides import override_for
from kafka_asgi.integrations.sender import get_sender
from kafka_asgi.integrations.tracecontext import trace_of
from kafka_asgi.producer.registry import registered_names

__all__ = [
    "AccessLogMiddleware",
    "DjangoEventLogger",
    "KafkaMiddleware",
    "KafkaSettings",
    "get_asgi_application",
    "kafka_settings",
]

# settings.KAFKA_ASGI key -> producer_lifespan option
_LIFESPAN_KEYS = {
    "BOOTSTRAP": "bootstrap",
    "CLUSTER": "cluster",
    "PRODUCER_OPTIONS": "producer_options",
    "PRODUCER_FACTORY": "producer_factory",
    "ON_UNREACHABLE": "on_unreachable",
    "STARTUP_TIMEOUT": "startup_timeout",
    "SHUTDOWN_TIMEOUT": "shutdown_timeout",
    "CREATE_TOPICS": "create_topics",
    "THREAD_QUEUE_SIZE": "thread_queue_size",
}
_ACCESS_LOG_DEFAULT: dict[str, Any] = {"topic": "access-log"}
_time_ns = time.time_ns


@dataclass(frozen=True)
class KafkaSettings:
    """``settings.KAFKA_ASGI``, validated."""

    lifespan: dict[str, Any] = field(default_factory=dict)
    access_log: dict[str, Any] | None = field(default_factory=lambda: dict(_ACCESS_LOG_DEFAULT))

    @property
    def cluster(self) -> str:
        cluster: str = self.lifespan.get("cluster", "default")
        return cluster


def kafka_settings() -> KafkaSettings:
    """Read and validate ``settings.KAFKA_ASGI`` (ImproperlyConfigured names what is wrong).

    Keys: BOOTSTRAP, CLUSTER, PRODUCER_OPTIONS, PRODUCER_FACTORY (a callable or a dotted
    path), ON_UNREACHABLE, STARTUP_TIMEOUT, SHUTDOWN_TIMEOUT, CREATE_TOPICS,
    THREAD_QUEUE_SIZE (the options of ``producer_lifespan``), and ACCESS_LOG: a dict of
    AccessLogMiddleware options (``enrich`` is called with the Django request), or None
    for no access log (``request.kafka`` still works).
    """
    raw = getattr(settings, "KAFKA_ASGI", None)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"settings.KAFKA_ASGI must be a dict, not {raw!r}")
    unknown = sorted(set(raw) - set(_LIFESPAN_KEYS) - {"ACCESS_LOG"})
    if unknown:
        raise ImproperlyConfigured(
            f"settings.KAFKA_ASGI has unknown keys {unknown}; "
            f"known: {sorted([*_LIFESPAN_KEYS, 'ACCESS_LOG'])}"
        )
    lifespan = {_LIFESPAN_KEYS[k]: v for k, v in raw.items() if k in _LIFESPAN_KEYS}
    factory = lifespan.get("producer_factory")
    if isinstance(factory, str):
        from django.utils.module_loading import import_string  # type: ignore[import-untyped]

        lifespan["producer_factory"] = import_string(factory)
    try:
        LifespanOptions(**lifespan)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"settings.KAFKA_ASGI: {exc}") from exc
    access_log = raw.get("ACCESS_LOG", _ACCESS_LOG_DEFAULT)
    if access_log is not None and not isinstance(access_log, Mapping):
        raise ImproperlyConfigured(
            f"settings.KAFKA_ASGI['ACCESS_LOG'] must be a dict or None, not {access_log!r}"
        )
    return KafkaSettings(
        lifespan=lifespan, access_log=dict(access_log) if access_log is not None else None
    )


def get_asgi_application(**overrides: Any) -> ASGIApp:
    """Django's ASGI application wrapped in the producer's lifespan.

    Django's handler does not implement the ASGI lifespan; this wrapper does, starting
    the producer in each worker from ``settings.KAFKA_ASGI`` (``overrides`` are
    ``producer_lifespan`` options that take precedence).
    """
    from django.core.asgi import get_asgi_application as django_asgi  # type: ignore[import-untyped]

    app = django_asgi()
    options = {**kafka_settings().lifespan, **overrides}
    return KafkaLifespan(app, **options)


class DjangoEventLogger(EventLogger):
    """``request.kafka``: the route comes from Django's ``resolver_match.route``."""

    __slots__ = ("_request",)

    def __init__(
        self,
        request: Any,
        request_id: str,
        cluster: str = "default",
        send: Callable[..., None] | None = None,
    ) -> None:
        super().__init__(None, request_id, cluster, send=send)
        # A weak reference: request.kafka -> logger -> request would be a cycle, and
        # every request (with all a view hangs on it) would wait for the cycle GC.
        self._request: Callable[[], Any] = weakref.ref(request)

    @property
    def route(self) -> str | None:
        known = super().route
        if known is not None:
            return known
        match = getattr(self._request(), "resolver_match", None)
        route = getattr(match, "route", None)
        return route if isinstance(route, str) and route else None

    def finish(self) -> None:
        """The response is complete: keep the route for late log() calls."""
        self.release(self.route)


_background: dict[str, BackgroundProducer] = {}
_background_lock = threading.Lock()


def _ensure_producer(conf: KafkaSettings) -> BackgroundProducer | None:
    """Make sure something can take events for the cluster in this process.

    A kafka_asgi lifespan (ASGI) registers a sender: None. Without one (WSGI, or Django's
    own ASGI handler), the process's background producer, started once per process
    without waiting for it (events wait in its bounded queue the few milliseconds it
    takes to come up, so a request never waits, even with Kafka down).
    """
    cluster = conf.cluster
    if get_sender(cluster) is not None:
        return None
    bg = _background.get(cluster)
    # One without bootstrap and factory was made for a capture_events() override, and
    # serves only while one is set: after the capture, events go where they would
    # have gone without it.
    if bg is None or (bg.options.bootstrap is None and bg.options.producer_factory is None):
        lifespan = conf.lifespan
        if (
            lifespan.get("bootstrap") is None
            and lifespan.get("producer_factory") is None
            and override_for(cluster) is None  # capture_events: the producer to use
        ):
            if cluster in registered_names():
                return None  # the app's own producer: sender_for finds it
            # Checked here, not when the middleware is made: a lifespan may still
            # bring the producer (get_asgi_application(bootstrap=...)). Without the
            # check the background producer's thread would fail to start.
            raise ImproperlyConfigured(
                "settings.KAFKA_ASGI['BOOTSTRAP'] (or 'PRODUCER_FACTORY') is required: "
                f"no producer runs for cluster {cluster!r} in this process"
            )
        with _background_lock:
            bg = _background.get(cluster)
            made_for_a_capture = bg is not None and (
                bg.options.bootstrap is None and bg.options.producer_factory is None
            )
            if bg is None or (made_for_a_capture and override_for(cluster) is None):
                if bg is not None:  # the settings now name a producer of their own
                    bg.stop()
                    cancel_at_exit(bg.stop)
                bg = _background[cluster] = BackgroundProducer(**conf.lifespan)
                at_exit(bg.stop)
    bg.start_soon()
    return bg


def _bytes_read(request: Any) -> int:
    """The body bytes Django read of a request without Content-Length (under ASGI a
    chunked or HTTP/2 body, which Django's handler spools whole before the view)."""
    state = vars(request)
    body = state.get("_body")  # request.body was read
    if isinstance(body, bytes):
        return len(body)
    if not state.get("_read_started"):
        return 0
    try:  # read through request.read(): the spool's position
        return int(request._stream.tell())
    except (AttributeError, OSError, ValueError):  # not seekable, or already closed
        return 0


def _http_version(request: Any) -> str | None:
    protocol = request.META.get("SERVER_PROTOCOL")
    if isinstance(protocol, str):  # WSGI (a missing attribute costs more than this look-up)
        return protocol[5:] if protocol.startswith("HTTP/") else None
    scope = getattr(request, "scope", None)  # ASGIRequest: META has no SERVER_PROTOCOL
    if scope is not None:
        version = scope.get("http_version")
        return version if isinstance(version, str) else None
    return None


class _Options(AccessLogOptions):
    """The Django middleware's access-log options, which count its events: labelled
    as the middleware in the access-log metrics (not "AccessLogOptions"; not the ASGI
    middleware's "AccessLogMiddleware" either, as a Django ASGI app may have both)."""

    metrics_kind = "DjangoAccessLogMiddleware"


class AccessLogMiddleware:
    """Django middleware: ``request.kafka`` for views, and one access-log event per
    response (after the last chunk of a streaming response).

    Works in sync (WSGI) and async (ASGI) middleware chains. The request id comes
    from the ``request_id_header`` (X-Request-ID) when present, else is generated,
    and is echoed in the response. Kafka being down or the buffer being full never
    changes the response; ``access_log.dropped`` counts what was lost.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.conf = kafka_settings()
        options = dict(self.conf.access_log or _ACCESS_LOG_DEFAULT)
        options.setdefault("cluster", self.conf.cluster)
        try:
            self.access_log = _Options(**options)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"settings.KAFKA_ASGI['ACCESS_LOG']: {exc}") from exc
        self.enabled = self.conf.access_log is not None
        self.cluster = self.conf.cluster
        self._header = self.access_log.request_id_header
        self._meta_header = (
            "HTTP_" + self._header.upper().replace("-", "_") if self._header else None
        )
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        start = self._before(request, _ensure_producer(self.conf))
        response = self.get_response(request)
        return self._after(request, response, start)

    async def __acall__(self, request: Any) -> Any:
        # Under our lifespan wrapper its sender; else (Django's own ASGI handler) a
        # background producer, as under WSGI. Neither waits.
        start = self._before(request, _ensure_producer(self.conf))
        response = await self.get_response(request)
        return self._after(request, response, start)

    def _before(self, request: Any, background: BackgroundProducer | None) -> float:
        raw = request.META.get(self._meta_header) if self._meta_header else None
        request_id = self.access_log.request_id_from(
            raw.encode("latin-1", "replace") if isinstance(raw, str) else None
        )
        send = background.send_nowait if background is not None else None
        request.kafka = logger = DjangoEventLogger(request, request_id, self.cluster, send)
        if self.access_log.trace_context:
            # Now, while opentelemetry-instrumentation-django's span (if any) is current.
            meta = request.META
            logger.trace = trace_of(meta.get("HTTP_TRACEPARENT"), meta.get("HTTP_TRACESTATE"))
        return time.perf_counter()

    def _after(self, request: Any, response: Any, start: float) -> Any:
        logger: DjangoEventLogger = request.kafka
        if (
            self.access_log.echo_request_id
            and self._header
            and not response.has_header(self._header)
        ):
            # Unless the view set it: its own request id wins (as the ASGI and WSGI ones).
            response[self._header] = logger.request_id
        if not self.enabled or self.access_log.excluded(request.path):
            return response
        if getattr(response, "streaming", False):
            # Emitted when the server has consumed the stream, or closed it early, or
            # closed a response a middleware outside ours put in its place.
            kind = _CountedAsyncStream if getattr(response, "is_async", False) else _CountedStream
            stream = kind(self, request, response, start, response.streaming_content)
            response.streaming_content = stream  # registers stream.close with the response
            request.close = stream.close_request
            return response
        self._emit(request, response.status_code, start, len(response.content))
        return response

    def _emit(self, request: Any, status: int, start: float, response_bytes: int) -> None:
        finished = time.perf_counter()
        if request.method == "HEAD":
            # The server sends the headers only (RFC 9110, section 9.3.2).
            response_bytes = 0
        logger: DjangoEventLogger = request.kafka
        route = logger.route
        logger.release(route)  # logger.finish(), its route at hand
        opts = self.access_log
        if not opts.sampled():
            return
        meta = request.META
        length = meta.get("CONTENT_LENGTH")
        request_bytes = (
            int(length) if isinstance(length, str) and length.isdigit() else _bytes_read(request)
        )
        client = opts.resolve_client(
            meta.get("REMOTE_ADDR") or None, meta.get("HTTP_X_FORWARDED_FOR")
        )
        trace = logger.trace
        ua = meta.get("HTTP_USER_AGENT")
        version = _http_version(request)
        send = logger.send
        if opts._template is None:
            event = access_log_event(
                timestamp=_time_ns() // 1_000_000,
                type="http",
                method=request.method,
                scheme=request.scheme,
                path=request.path,
                route=route,
                query=meta.get("QUERY_STRING", ""),
                status=status,
                response_bytes=response_bytes,
                request_bytes=request_bytes,
                duration_ms=(finished - start) * 1000.0,
                client=client,
                user_agent=ua,
                request_id=logger.request_id,
                http_version=version,
                trace_id=None if trace is None else trace[0],
                span_id=None if trace is None else trace[1],
            )
            if send is None:
                try:
                    send = sender_for(self.cluster)
                except Exception as exc:
                    opts.dropped += 1
                    warn_drop("Django access-log middleware", opts.topic, exc)
                    return
            opts.emit(request, event, send)
            return
        # The default event: formatted straight into the JSON template, as the ASGI and
        # WSGI middlewares do (no dict, no json.dumps, no shaping).
        try:
            value = opts.default_event(
                request.method,
                request.scheme,
                request.path,
                route,
                meta.get("QUERY_STRING", ""),
                status,
                response_bytes,
                request_bytes,
                (finished - start) * 1000.0,
                client,
                ua,
                logger.request_id,
                version,
                trace,
            )
            if send is None:
                send = sender_for(self.cluster)
            send(opts.topic, value)
        except Exception as exc:
            opts.dropped += 1
            warn_drop("Django access-log middleware", opts.topic, exc)
        else:
            opts.emitted += 1


class _StreamCounter:
    """A streaming response's chunks on their way to the server, counted; the request's
    access-log event goes out exactly once: after the last chunk, when the stream
    raises, or at ``close()`` (the server stopped early, or never iterated it).

    ``close`` is one of the response's resource closers (Django registers the
    ``close`` of what is set as ``streaming_content``): a generator's ``finally`` does
    not run when it is closed before it started. ``close_request`` replaces
    ``request.close``, which Django's handler adds to the closers of the response it
    serves: a response a middleware outside ours returned in place of this one (a 304
    from ConditionalGetMiddleware) is closed, this one never is.
    """

    __slots__ = (
        "_chunks",
        "_done",
        "_middleware",
        "_previous_close",
        "_request",
        "_response",
        "_sent",
        "_start",
        "_started",
        "_status",
    )

    def __init__(
        self,
        middleware: AccessLogMiddleware,
        request: Any,
        response: Any,
        start: float,
        chunks: Any,
    ) -> None:
        self._chunks: Any = chunks
        self._middleware = middleware
        self._request = request
        self._previous_close: Callable[[], None] = request.close
        # Weak: the response holds this stream; a cycle would leave both, and the
        # request, to the cycle collector.
        self._response: Callable[[], Any] = weakref.ref(response)
        self._status: int = response.status_code
        self._start = start
        self._sent = 0
        self._started = False
        self._done = False

    def close(self) -> None:
        self._finish(raised=False)

    def close_request(self) -> None:
        self._finish(raised=False)
        self._previous_close()

    def _finish(self, raised: bool) -> None:
        if self._done:
            return
        self._done = True
        # Django's streaming_content holds the response (its make_bytes): a cycle
        # through the response, left to the cycle collector if kept.
        self._chunks = None
        request = self._request
        state = vars(request)
        if state.get("close") == self.close_request:
            del state["close"]  # request -> this stream -> request: no cycle left behind
        response = self._response()
        status = self._status if response is None else response.status_code
        if raised and not self._started and getattr(request, "scope", None) is None:
            # A WSGI server that has sent nothing answers 500. (Django's ASGI handler
            # sends the response start before it reads the stream: the status stands.)
            status = 500
        self._middleware._emit(request, status, self._start, self._sent)


class _CountedStream(_StreamCounter):
    """:class:`_StreamCounter` of a sync iterator."""

    __slots__ = ()

    def __iter__(self) -> _CountedStream:
        return self

    def __next__(self) -> bytes:
        chunks = self._chunks
        if chunks is None:
            raise StopIteration
        try:
            chunk: bytes = next(chunks)
        except StopIteration:
            self._finish(raised=False)
            raise
        except BaseException:
            self._finish(raised=True)
            raise
        self._started = True
        self._sent += len(chunk)
        return chunk


class _CountedAsyncStream(_StreamCounter):
    """:class:`_StreamCounter` of an async iterator (no ``__iter__``: Django tells
    the two kinds apart by trying ``iter()``)."""

    __slots__ = ()

    def __aiter__(self) -> _CountedAsyncStream:
        return self

    async def __anext__(self) -> bytes:
        chunks = self._chunks
        if chunks is None:
            raise StopAsyncIteration
        try:
            chunk: bytes = await chunks.__anext__()
        except StopAsyncIteration:
            self._finish(raised=False)
            raise
        except BaseException:
            self._finish(raised=True)
            raise
        self._started = True
        self._sent += len(chunk)
        return chunk


KafkaMiddleware = AccessLogMiddleware
"""The name this middleware had before it was named like the ASGI one (still works)."""
