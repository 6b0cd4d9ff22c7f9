"""The WSGI front door: an access-log middleware for any WSGI app (Flask, Bottle, Pyramid,
a bare callable) under gunicorn, uWSGI or any WSGI server.

The event and its options are those of the ASGI middleware
(:mod:`kafka_asgi.integrations.access_log_event`). The producer runs in a background
thread with its own event loop, one per worker process, started by the first request
after the server forked (:class:`~kafka_asgi.integrations.background.BackgroundProducer`);
requests hand events to it through a bounded thread-safe queue and never wait for
Kafka. It is flushed within ``shutdown_timeout`` when the process exits (once its main
thread has ended, as gunicorn's graceful SIGTERM ends each worker; see
:func:`~kafka_asgi.integrations.background.at_exit`) or on :meth:`close`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kafka_asgi.integrations.access_log_event import AccessLogOptions, access_log_event
from kafka_asgi.integrations.background import BackgroundProducer, at_exit
from kafka_asgi.integrations.event_logger import EventLogger, sender_for, warn_drop
from kafka_asgi.integrations.lifespan import LifespanOptions
from kafka_asgi.integrations.sender import get_sender
from kafka_asgi.integrations.tracecontext import trace_of

__all__ = [
    "ENVIRON_LOGGER_KEY",
    "ENVIRON_ROUTE_KEY",
    "AccessLogMiddleware",
    "background_producer",
    "close_all",
    "sender_for_wsgi",
]

ENVIRON_LOGGER_KEY = "kafka_asgi.event_logger"  # environ -> the request's EventLogger
ENVIRON_ROUTE_KEY = "kafka_asgi.route"  # environ -> route template, set by a framework

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_perf_ns = time.perf_counter_ns
_time_ns = time.time_ns

# One background producer per cluster name per process, shared by every WSGI
# middleware and Flask extension of the process.
_background: dict[str, BackgroundProducer] = {}
_background_lock = threading.Lock()


def background_producer(options: LifespanOptions) -> BackgroundProducer:
    """The process's background producer for ``options.cluster``, made on first call
    (not started: it starts on its first event) and stopped at exit."""
    with _background_lock:
        found = _background.get(options.cluster)
        if found is not None:
            if found.options != options:
                # The names only: the values may be credentials.
                raise ValueError(
                    f"a background producer for cluster {options.cluster!r} already exists "
                    f"with other options (they differ in"
                    f" {', '.join(found.options.differences(options))}); give this one"
                    " another cluster="
                )
            return found
        made = _background[options.cluster] = BackgroundProducer(**options.as_kwargs())
    at_exit(made.stop)
    return made


def close_all(timeout: float | None = None) -> None:
    """Flush and stop every background producer of this process (each within its
    ``shutdown_timeout``). For a server hook, e.g. gunicorn's ``worker_exit``; the exit hook
    does the same when the process exits normally."""
    with _background_lock:
        found = list(_background.values())
    for bg in found:
        bg.stop(timeout)


def _request_path(environ: dict[str, Any], *, script_name: bool = True) -> str:
    """The request's path as the ASGI middleware and Django log it: ``SCRIPT_NAME`` (the
    mount prefix) + ``PATH_INFO``, decoded as UTF-8 (PEP 3333 hands the raw bytes over as
    latin-1 text; werkzeug and Django decode them this way)."""
    path: str = environ.get("PATH_INFO", "")
    if script_name:
        path = environ.get("SCRIPT_NAME", "") + path
    if path.isascii():
        return path
    try:
        return path.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # not latin-1: a server that decoded the path itself
        return path


def sender_for_wsgi(
    cluster: str, background: BackgroundProducer | None
) -> Callable[..., None] | None:
    """The thread-safe ``send_nowait`` for ``cluster`` in a WSGI process: a lifespan's
    sender (or the background producer's, once up), else the background producer's
    front door, else None (the caller falls back to a registered producer)."""
    sender = get_sender(cluster)
    if sender is not None:
        return sender.send_nowait
    if background is not None:
        return background.send_nowait
    return None


class _CountingInput:
    """``wsgi.input`` counting the body bytes the app reads (bodies without a length)."""

    __slots__ = ("count", "stream")

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.stream.read(size) if size is not None else self.stream.read()
        self.count += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data: bytes = self.stream.readline(size)
        self.count += len(data)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = self.stream.readlines(hint)
        self.count += sum(len(line) for line in lines)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        for line in self.stream:
            self.count += len(line)
            yield line


class _Exchange:
    """One request's response: counts what is sent and emits the event at close()."""

    __slots__ = (
        "body",
        "closed",
        "environ",
        "headers",
        "input",
        "logger",
        "middleware",
        "request_bytes",
        "response_bytes",
        "route",
        "sent",
        "start",
        "status",
    )

    def __init__(
        self,
        middleware: AccessLogMiddleware,
        environ: dict[str, Any],
        logger: EventLogger,
        start: int,
        request_bytes: int,
        counting: _CountingInput | None,
    ) -> None:
        self.middleware = middleware
        self.environ = environ
        self.logger = logger
        self.start = start
        self.request_bytes = request_bytes
        self.input = counting
        self.status = 0
        self.response_bytes = 0
        self.route: str | None = None
        self.body: Iterable[bytes] = ()
        self.headers: list[tuple[str, str]] = []
        self.sent = False  # write() was called: the headers are out
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        sent = False
        try:
            for chunk in self.body:
                self.response_bytes += len(chunk)
                sent = True
                yield chunk
        except BaseException:
            if not (sent or self.sent):
                # The headers are not out yet, so the server answers 500 (PEP 3333's
                # error handling; wsgiref, gunicorn), whatever start_response said.
                self.status = 500
            raise

    def write(self, write: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        """The legacy ``write()`` callable, counting what goes through it."""

        def counting_write(data: bytes) -> Any:
            self.response_bytes += len(data)
            self.sent = True
            return write(data)

        return counting_write

    def close(self) -> None:
        # PEP 3333: the server calls close() once the response is sent (or abandoned).
        if self.closed:
            return
        self.closed = True
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.middleware.finish(self)


def _file_response(exchange: _Exchange, body: Any) -> Any:
    """The app's ``wsgi.file_wrapper`` itself, so that the server still recognises it and
    sends the file with sendfile(); its close() now also ends the exchange. The bytes
    are counted now, as the server may never iterate it: the response's Content-Length,
    else what is left of the file, else 0."""
    original = getattr(body, "close", None)

    def close() -> None:
        try:
            if original is not None:
                original()
        finally:
            exchange.close()

    try:
        body.close = close
    except AttributeError:  # slots, or a read-only close: count it chunk by chunk instead
        return exchange
    exchange.body = ()
    for name, value in exchange.headers:
        if name.lower() == "content-length":
            exchange.response_bytes = int(value) if value.isdigit() else 0
            return body
    try:
        fileno = body.filelike.fileno()
        # From the file's current position, as gunicorn's sendfile() sends it.
        exchange.response_bytes = max(
            0, os.fstat(fileno).st_size - os.lseek(fileno, 0, os.SEEK_CUR)
        )
    except (AttributeError, OSError, ValueError):  # not a real file: size unknown
        pass
    return body


class AccessLogMiddleware(AccessLogOptions):
    """Pure WSGI middleware: one access-log event per request, the same fields and
    options as the ASGI middleware (``websockets`` aside).

    The event is queued when the server closes the response iterable (after the last
    chunk of a streaming body); an app that raises gives a 500 event and the exception
    propagates unchanged. ``request_bytes`` is the declared Content-Length, else what
    the app read from ``wsgi.input``. The request id (``x-request-id`` in, or made)
    is echoed in the response and is at ``environ["kafka_asgi.event_logger"]``
    (an EventLogger: ``log(topic, payload)`` stamped with the request id and route).

    The producer: ``producer=`` if given; else a kafka_asgi lifespan's for ``cluster``
    if one runs in the process; else, when ``bootstrap`` (or ``producer_factory``) is
    given, the process's background producer for ``cluster`` (options of
    :class:`~kafka_asgi.integrations.lifespan.LifespanOptions`: ``producer_options``,
    ``on_unreachable``, ``shutdown_timeout``...); else one registered under
    ``cluster`` (``capture_events()`` in an app's tests; a
    :class:`~kafka_asgi.producer.Producer` there refuses the events of the server's
    threads, counted in ``dropped``: it may only be called on its loop's thread).
    :meth:`close` flushes and stops the background producer; the exit hook does it too.
    """

    def __init__(self, app: WSGIApp, **options: Any) -> None:
        lifespan_names = set(LifespanOptions.__dataclass_fields__) - {"cluster"}
        lifespan = {k: options.pop(k) for k in list(options) if k in lifespan_names}
        super().__init__(**options)
        self.app = app
        self.background: BackgroundProducer | None = None
        if lifespan:
            opts = LifespanOptions.from_kwargs(
                "AccessLogMiddleware", {"cluster": self.cluster, **lifespan}
            )
            if opts.bootstrap is None and opts.producer_factory is None:
                raise TypeError(
                    f"AccessLogMiddleware got producer options {sorted(lifespan)} without "
                    "bootstrap= or producer_factory="
                )
            self.background = background_producer(opts)
        header = self.request_id_header
        self._rid_environ = "HTTP_" + header.upper().replace("-", "_") if header else None
        self._rid_name = header or ""

    # -- the request path -----------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self._has_exclusions and self._excluded_environ(environ):
            return self.app(environ, start_response)
        start = _perf_ns()
        rid_environ = self._rid_environ
        raw = environ.get(rid_environ) if rid_environ is not None and self._trust_rid else None
        request_id = self.request_id_from(
            raw.encode("latin-1", "replace") if isinstance(raw, str) else None
        )
        logger = EventLogger(None, request_id, self.cluster, send=self.send_function())
        environ[ENVIRON_LOGGER_KEY] = logger
        if self.trace_context:
            # Now, while a WSGI OpenTelemetry middleware's span (if any) is current.
            logger.trace = trace_of(environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_TRACESTATE"))
        declared = environ.get("CONTENT_LENGTH")
        counting: _CountingInput | None = None
        if declared:
            request_bytes = int(declared) if declared.isdigit() else 0
        else:
            request_bytes = 0
            stream = environ.get("wsgi.input")
            if stream is not None and environ.get("HTTP_TRANSFER_ENCODING"):
                counting = environ["wsgi.input"] = _CountingInput(stream)
        exchange = _Exchange(self, environ, logger, start, request_bytes, counting)
        echo = (self._rid_name, request_id) if self._echo_rid else None

        def start_exchange(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], Any]:
            exchange.status = int(status[:3])
            exchange.headers = headers
            # Flask's request, which werkzeug keeps in the environ until Flask's request
            # context ends (before the response is closed), has the URL rule.
            rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
            if rule is not None:
                route = getattr(rule, "rule", None)
                if route.__class__ is str:
                    exchange.route = route
            if echo is not None:
                # A new list (the app's may be shared), unless the app set the header
                # itself: its own request id wins.
                name = echo[0].lower()
                if not any(n.lower() == name for n, _ in headers):
                    headers = [*headers, echo]
            return exchange.write(start_response(status, headers, exc_info))

        try:
            body = exchange.body = self.app(environ, start_exchange)
        except BaseException:
            if not exchange.sent:
                # As in __iter__: once write() sent the headers, the client has the
                # app's status and the server can only cut the connection.
                exchange.status = 500
            exchange.close()
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if (
            file_wrapper is not None
            and isinstance(file_wrapper, type)  # uWSGI's is a function
            and isinstance(body, file_wrapper)
        ):
            return _file_response(exchange, body)
        return exchange

    def _excluded_environ(self, environ: dict[str, Any]) -> bool:
        """Whether ``exclude_paths`` covers the request: its path as logged (with the
        mount prefix), or ``PATH_INFO`` alone (what was matched before the prefix was)."""
        if self.excluded(_request_path(environ)):
            return True
        return bool(environ.get("SCRIPT_NAME")) and self.excluded(
            _request_path(environ, script_name=False)
        )

    def send_function(self) -> Callable[..., None] | None:
        """Where events go now (see the class docstring); None: a registered producer."""
        producer = self.producer
        if producer is not None:
            return producer.send_nowait
        return sender_for_wsgi(self.cluster, self.background)

    def finish(self, exchange: _Exchange) -> None:
        """The response is over: build the event and queue it (never raises)."""
        duration = _perf_ns() - exchange.start
        environ = exchange.environ
        route = environ.get(ENVIRON_ROUTE_KEY)
        if route.__class__ is not str:
            route = exchange.route
        logger = exchange.logger
        logger.release(route)
        if not self.sampled():
            return
        if exchange.input is not None:
            exchange.request_bytes = exchange.input.count
        host = environ.get("REMOTE_ADDR") or None
        client = (
            self.resolve_client(host, environ.get("HTTP_X_FORWARDED_FOR"))
            if self._use_proxies
            else host
        )
        protocol = environ.get("SERVER_PROTOCOL", "")
        version = protocol[5:] if protocol.startswith("HTTP/") else None
        path = _request_path(environ)
        ua = environ.get("HTTP_USER_AGENT")
        status = exchange.status or 500
        method = environ.get("REQUEST_METHOD", "GET")
        # A HEAD response's body (or its Content-Length) is not sent (RFC 9110,
        # section 9.3.2): none counted, as nginx's $body_bytes_sent.
        response_bytes = 0 if method == "HEAD" else exchange.response_bytes
        send = logger.send
        trace = logger.trace
        if self._template is not None:
            # The template, with or without orjson: one C call over a dict measured no
            # cheaper here (cachegrind), unlike in the ASGI middleware.
            try:
                value = self.default_event(
                    method,
                    environ.get("wsgi.url_scheme", "http"),
                    path,
                    logger.route,
                    environ.get("QUERY_STRING", ""),
                    status,
                    response_bytes,
                    exchange.request_bytes,
                    duration / 1e6,
                    client,
                    ua,
                    logger.request_id,
                    version,
                    trace,
                )
                if send is None:
                    # Not the registered producer's send_nowait as it is: a Producer
                    # may be called on its loop's thread only.
                    send = sender_for(self.cluster)
                send(self.topic, value)
            except Exception as exc:
                self.dropped += 1
                warn_drop("WSGI access-log middleware", self.topic, exc)
            else:
                self.emitted += 1
            return
        event = access_log_event(
            timestamp=_time_ns() // 1_000_000,
            type="http",
            method=method,
            scheme=environ.get("wsgi.url_scheme", "http"),
            path=path,
            route=logger.route,
            query=environ.get("QUERY_STRING", ""),
            status=status,
            response_bytes=response_bytes,
            request_bytes=exchange.request_bytes,
            duration_ms=duration / 1e6,
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
                self.dropped += 1
                warn_drop("WSGI access-log middleware", self.topic, exc)
                return
        self.emit(environ, event, send)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop this middleware's background producer (bounded)."""
        if self.background is not None:
            self.background.stop(timeout)

    def stats(self) -> dict[str, int]:
        stats = super().stats()
        if self.background is not None:
            stats["dropped_before_start"] = self.background.dropped
        return stats
