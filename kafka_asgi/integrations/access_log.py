"""The pure ASGI access-log middleware: one event per HTTP response / WebSocket session.

The event and its options are defined in :mod:`kafka_asgi.integrations.access_log_event`
(shared with Django and WSGI); this module is the ASGI front door's hot path.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable
from typing import Any

from kafka_asgi.integrations.access_log_event import AccessLogOptions, access_log_event, quote
from kafka_asgi.integrations.event_logger import (
    STATE_KEY,
    EventLogger,
    new_request_id,
    route_of,
    warn_drop,
)
from kafka_asgi.integrations.lifespan import (
    PRODUCERS_STATE_KEY,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
)
from kafka_asgi.integrations.tracecontext import (
    OTEL_TRACE_MODULE,
    current_otel_trace,
    trace_from_header_lines,
)
from kafka_asgi.producer import get_producer

__all__ = ["AccessLogMiddleware"]

_perf_ns = time.perf_counter_ns
_time_ns = time.time_ns
_modules = sys.modules
# HTTP/2 and HTTP/3 frame the body themselves: without a Content-Length, it is counted.
_NO_TRANSFER_ENCODING = ("2", "3")


def _file_size(path: Any) -> int:
    """The size of the file a ``http.response.pathsend`` names, 0 if it cannot be read
    (the server reports that failure; the event must not)."""
    try:
        return os.stat(path).st_size
    except (OSError, TypeError, ValueError):
        return 0


def _client_went_away(exc: BaseException) -> bool:
    """Whether ``exc`` is Starlette's ``ClientDisconnect``: the request's body read after
    the client had gone (``http.disconnect``), or a response's send failing on a closed
    connection (ASGI 2.4 servers raise OSError there, and Starlette turns it into that)."""
    requests = _modules.get("starlette.requests")
    gone = getattr(requests, "ClientDisconnect", None)
    return isinstance(gone, type) and isinstance(exc, gone)


def _with_header(message: Message, header: tuple[bytes, bytes]) -> Message:
    """``message`` (a response start or a WebSocket accept) with ``header`` added, unless
    the app set that header itself (its own request id wins). A new message and a new
    list: the app's may be shared (a module-level message, a Response reused across
    requests), and each request would leave its id in it."""
    headers = message.get("headers") or ()
    name = header[0]
    for item in headers:
        if item[0].lower() == name:
            return message
    return {**message, "headers": [*headers, header]}


class AccessLogMiddleware(AccessLogOptions):
    """Pure ASGI middleware: one access-log event per HTTP response or WebSocket session.

    The event is queued with ``send_nowait`` once the response is complete (for a
    streaming response, after its last chunk; for a WebSocket, when it closes).
    Nothing about the response depends on Kafka: a full buffer, an outage or a
    failing ``enrich``/``serializer`` only increments ``dropped`` (and logs a warning
    at most once a minute).

    Event fields: :data:`~kafka_asgi.integrations.access_log_event.ACCESS_LOG_FIELDS`
    (``fields`` keeps a subset; ``extra`` adds static ones); options: those of
    :class:`~kafka_asgi.integrations.access_log_event.AccessLogOptions`.
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
        request_id = new_request_id() if raw_rid is None else self.request_id_from(raw_rid)
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[STATE_KEY] = event_logger = EventLogger(scope, request_id, self.cluster)
        # Taken now, while the server's span (OpenTelemetry's middleware) is current:
        # trace_from_headers written out (a call less per request).
        trace = None
        if self.trace_context:
            if OTEL_TRACE_MODULE in _modules:
                trace = current_otel_trace()
            if trace is None and b"traceparent" in headers:
                # The header lines, not the dict: tracestate may come on several.
                trace = trace_from_header_lines(scope["headers"])
            if trace is not None:
                event_logger.trace = trace
        rid_header = (
            (rid_name, request_id.encode()) if self._echo_rid and rid_name is not None else None
        )
        status = 0
        response_bytes = 0
        finished = 0
        trailers = False

        # A plain function returning the server's awaitable (ASGI asks only that send
        # be awaitable): no coroutine of our own per message.
        def send_wrapper(message: Message) -> Awaitable[None]:
            nonlocal status, response_bytes, finished, trailers
            if message["type"] == "http.response.body":
                response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False) and not trailers:
                    finished = _perf_ns()
            elif message["type"] == "http.response.start":
                status = message["status"]
                # The trailers extension: such a response ends with its trailers.
                trailers = message.get("trailers", False)
                if rid_header is not None:
                    # _with_header written out (a call less per request).
                    headers = message.get("headers") or ()
                    for item in headers:
                        if item[0].lower() == rid_name:
                            break
                    else:
                        message = {**message, "headers": [*headers, rid_header]}
            elif message["type"] == "http.response.trailers":
                if not message.get("more_trailers", False):
                    finished = _perf_ns()
            elif message["type"] == "http.response.pathsend":
                # The server sends the file itself (Starlette's FileResponse when the
                # server offers the extension): its size is the body's.
                response_bytes += _file_size(message.get("path"))
                finished = _perf_ns()
            return send(message)

        # Declared length when there is one (servers enforce it); otherwise the body is
        # counted as it is read. Either way receive is wrapped, to see an
        # http.disconnect that comes before the response's start.
        declared = headers.get(b"content-length")
        if (
            declared is not None
            and declared.isdigit()
            # An int64 (orjson's range; h11 passes up to 20 digits): a longer one is
            # counted as read.
            and len(declared) < 19
            # RFC 9112, section 6.3: Transfer-Encoding overrides Content-Length.
            and b"transfer-encoding" not in headers
        ):
            request_bytes = int(declared)
            counting = False
        else:
            request_bytes = 0
            counting = (
                declared is not None
                or b"transfer-encoding" in headers
                or scope.get("http_version") in _NO_TRANSFER_ENCODING
            )
        gone = False

        async def receive_watching() -> Message:
            nonlocal request_bytes, gone
            message = await receive()
            if message["type"] == "http.request":
                if counting:
                    request_bytes += len(message.get("body", b""))
            elif message["type"] == "http.disconnect" and not status:
                gone = True
            return message

        try:
            await self.app(scope, receive_watching, send_wrapper)
        except Exception as exc:
            if not response_bytes and (gone or _client_went_away(exc)):
                # Gone before any of the body was handed over (its start message may
                # have failed to send): nginx's 499 (client closed request), not the
                # 500 an app's own failure is logged as.
                status = 499
            raise
        finally:
            now = _perf_ns()
            end = finished or now
            if scope["method"] == "HEAD":
                # The server sends the headers only (RFC 9110, section 9.3.2); nginx's
                # $body_bytes_sent is 0 for it too.
                response_bytes = 0
            if gone:
                # The app heard the client go (http.disconnect) before it started a
                # response: nothing it sent after reached the client (servers drop it,
                # or fail the send), and nginx logs such a request 499.
                status = 499
                response_bytes = 0
            duration = end - start
            # The wall clock at the response's end: the app may work on after its last
            # chunk (Starlette's background tasks run inside the app call).
            end_ms = (_time_ns() - (now - end)) // 1_000_000
            # route_of(scope) written out: Starlette's Route object, Litestar's template.
            route = scope.get("route")
            if route.__class__ is not str:
                route = (
                    scope.get("path_template") if route is None else getattr(route, "path", None)
                )
                if route.__class__ is not str:
                    route = None
            event_logger.release(route)
            if self.sample_rate >= 1.0 or self.sampled():
                if self._use_proxies:
                    client = self._client(scope, headers)
                else:
                    peer = scope.get("client")
                    client = peer[0] if peer else None
                ua = headers.get(b"user-agent")
                # An app that raised before starting a response gets a 500 from the server
                # (a client gone meanwhile was set to 499 above).
                status = status or 500
                template = self._template
                if template is not None:
                    version = scope.get("http_version")
                    try:
                        dumps = self._dumps
                        if dumps is not None:
                            # orjson (the extra): one C call over a dict, no quoting.
                            event = {
                                "timestamp": end_ms,
                                "type": "http",
                                "method": scope["method"],
                                "scheme": scope.get("scheme", "http"),
                                "path": scope["path"],
                                "route": route,
                                "query": scope["query_string"].decode("latin-1"),
                                "status": status,
                                "response_bytes": response_bytes,
                                "request_bytes": request_bytes,
                                # To the microsecond, as the template's "%.3f".
                                "duration_ms": (duration + 500) // 1000 / 1000,
                                "client": client,
                                "user_agent": None if ua is None else ua.decode("latin-1"),
                                "request_id": request_id,
                                "http_version": version,
                                "close_code": None,
                                "trace_id": None if trace is None else trace[0],
                                "span_id": None if trace is None else trace[1],
                            }
                            if not self.trace_context:  # the default writes them
                                del event["trace_id"], event["span_id"]
                            value = dumps(event)
                            tail = self._tail
                            if tail is not None:  # the static fields, rendered once
                                value = value[:-1] + tail
                        else:
                            if trace is None:
                                trace_id = span_id = ""
                            else:
                                template = self._traced_template
                                trace_id, span_id = trace[0], trace[1]
                            q = quote
                            value = (
                                template
                                % (
                                    end_ms,
                                    q(scope["method"]),
                                    q(scope.get("scheme", "http")),
                                    q(scope["path"]),
                                    "null" if route is None else q(route),
                                    q(scope["query_string"].decode("latin-1")),
                                    status,
                                    response_bytes,
                                    request_bytes,
                                    # The orjson path's rounding (to the microsecond).
                                    (duration + 500) // 1000 / 1000,
                                    "null" if client is None else q(client),
                                    "null" if ua is None else q(ua.decode("latin-1")),
                                    q(request_id),
                                    "null" if version is None else q(version),
                                    trace_id,
                                    span_id,
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
                        warn_drop("access-log middleware", self.topic, exc)
                    else:
                        self.emitted += 1
                else:
                    event = access_log_event(
                        timestamp=end_ms,
                        type="http",
                        method=scope["method"],
                        scheme=scope.get("scheme", "http"),
                        path=scope["path"],
                        route=route,
                        query=scope["query_string"].decode("latin-1"),
                        status=status,
                        response_bytes=response_bytes,
                        request_bytes=request_bytes,
                        duration_ms=duration / 1e6,
                        client=client,
                        user_agent=ua.decode("latin-1") if ua is not None else None,
                        request_id=request_id,
                        http_version=scope.get("http_version"),
                        close_code=None,
                        trace_id=None if trace is None else trace[0],
                        span_id=None if trace is None else trace[1],
                    )
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
        trace = trace_from_header_lines(scope["headers"]) if self.trace_context else None
        event_logger.trace = trace
        rid_name = self._rid_header
        rid_header = (
            (rid_name, request_id.encode("ascii"))
            if self._echo_rid and rid_name is not None
            else None
        )
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
                    message = _with_header(message, rid_header)
            elif kind == "websocket.close":
                if not status:
                    # Before accept: the server refuses the handshake with HTTP 403;
                    # no WebSocket was open, no close frame carries a code.
                    status = 403
                elif close_code is None:
                    close_code = message.get("code", 1000)
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
            route = route_of(scope)
            event_logger.release(route)
            if self.sampled():
                event = access_log_event(
                    timestamp=_time_ns() // 1_000_000,
                    type="websocket",
                    method="GET",
                    scheme=scope.get("scheme", "ws"),
                    path=scope["path"],
                    route=route,
                    query=scope["query_string"].decode("latin-1"),
                    # No accept, close or denial sent: the app raised or returned
                    # without a handshake, and servers answer that with a 500.
                    status=status or 500,
                    response_bytes=sent_bytes,
                    request_bytes=received_bytes,
                    duration_ms=(finished - start) / 1e6,
                    client=self._client(scope, headers),
                    user_agent=(
                        ua.decode("latin-1") if (ua := headers.get(b"user-agent")) else None
                    ),
                    request_id=request_id,
                    http_version=scope.get("http_version"),
                    close_code=close_code,
                    trace_id=None if trace is None else trace[0],
                    span_id=None if trace is None else trace[1],
                )
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
