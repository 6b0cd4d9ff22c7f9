"""Flask: ``KafkaExtension(app)`` (or ``init_app``), the access log and ``g.kafka``.

::

    app = Flask(__name__)
    app.config["KAFKA_ASGI_BOOTSTRAP"] = "127.0.0.1:9092"
    app.config["KAFKA_ASGI_ACCESS_LOG"] = {"topic": "access-log"}
    kafka = KafkaExtension(app)

    @app.post("/orders")
    def create_order():
        g.kafka.log("orders", request.get_json())   # stamped with request_id and route
        return {"ok": True}

Config keys (``KAFKA_ASGI_`` + the name of a
:class:`~kafka_asgi.integrations.lifespan.LifespanOptions` field in capitals):
``KAFKA_ASGI_BOOTSTRAP``, ``_CLUSTER``, ``_PRODUCER_OPTIONS``, ``_PRODUCER_FACTORY``,
``_ON_UNREACHABLE``, ``_STARTUP_TIMEOUT``, ``_SHUTDOWN_TIMEOUT``, ``_CREATE_TOPICS``,
``_THREAD_QUEUE_SIZE``; and ``KAFKA_ASGI_ACCESS_LOG``: a dict of access-log options
(default ``{"topic": "access-log"}``), or None for no access log (``g.kafka`` still
works). The producer runs in a background thread of each worker process
(:mod:`kafka_asgi.integrations.wsgi`), started by its first request and flushed at
exit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from flask import Flask, g, request

from kafka_asgi.integrations.event_logger import EventLogger, new_request_id
from kafka_asgi.integrations.lifespan import LifespanOptions
from kafka_asgi.integrations.wsgi import (
    ENVIRON_LOGGER_KEY,
    ENVIRON_ROUTE_KEY,
    AccessLogMiddleware,
    background_producer,
    sender_for_wsgi,
)

__all__ = ["KafkaExtension"]

PREFIX = "KAFKA_ASGI_"
_LIFESPAN_KEYS = {PREFIX + f.name.upper(): f.name for f in dataclasses.fields(LifespanOptions)}
_ACCESS_LOG_KEY = PREFIX + "ACCESS_LOG"
_ACCESS_LOG_DEFAULT: dict[str, Any] = {"topic": "access-log"}


class KafkaExtension:
    """The Flask extension: ``KafkaExtension(app)``, or ``ext = KafkaExtension()`` then
    ``ext.init_app(app)`` (application factories).

    After ``init_app``: ``app.wsgi_app`` is wrapped in the WSGI
    :class:`~kafka_asgi.integrations.wsgi.AccessLogMiddleware` (unless
    ``KAFKA_ASGI_ACCESS_LOG`` is None), ``g.kafka`` is the request's
    :class:`~kafka_asgi.integrations.event_logger.EventLogger` (the same request id as
    the access-log event, the URL rule as route), and ``app.extensions["kafka_asgi"]``
    is this extension. Bad config raises ValueError/TypeError naming the key, at
    ``init_app``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.middleware: AccessLogMiddleware | None = None
        self.options: LifespanOptions | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        config = app.config
        unknown = sorted(
            k
            for k in config
            if k.startswith(PREFIX) and k not in _LIFESPAN_KEYS and k != _ACCESS_LOG_KEY
        )
        if unknown:
            known = sorted([*_LIFESPAN_KEYS, _ACCESS_LOG_KEY])
            raise ValueError(f"unknown config keys {unknown}; known: {known}")
        lifespan = {name: config[key] for key, name in _LIFESPAN_KEYS.items() if key in config}
        try:
            options = LifespanOptions(**lifespan)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"Flask config {PREFIX}*: {exc}") from exc
        if options.bootstrap is None and options.producer_factory is None:
            raise ValueError(
                f"Flask config needs {PREFIX}BOOTSTRAP (e.g. '127.0.0.1:9092') "
                f"or {PREFIX}PRODUCER_FACTORY"
            )
        self.options = options
        access_log = config.get(_ACCESS_LOG_KEY, _ACCESS_LOG_DEFAULT)
        if access_log is not None and not isinstance(access_log, Mapping):
            raise TypeError(f"{_ACCESS_LOG_KEY} must be a dict or None, not {access_log!r}")
        background = background_producer(options)
        if access_log is not None:
            try:
                self.middleware = AccessLogMiddleware(
                    app.wsgi_app, cluster=options.cluster, **dict(access_log)
                )
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{_ACCESS_LOG_KEY}: {exc}") from exc
            self.middleware.background = background
            app.wsgi_app = self.middleware  # type: ignore[method-assign]
        self.background = background
        app.before_request(self._before_request)
        app.extensions["kafka_asgi"] = self

    def _before_request(self) -> None:
        environ = request.environ
        rule = request.url_rule
        route = rule.rule if rule is not None else None
        if route is not None:
            environ[ENVIRON_ROUTE_KEY] = route
        found = environ.get(ENVIRON_LOGGER_KEY)
        if isinstance(found, EventLogger):
            logger = found
        else:  # no access log: a logger of our own, with the same producer
            assert self.options is not None
            logger = EventLogger(
                None,
                new_request_id(),
                self.options.cluster,
                send=sender_for_wsgi(self.options.cluster, self.background),
            )
            environ[ENVIRON_LOGGER_KEY] = logger
        logger.release(route)
        g.kafka = logger

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop the background producer (atexit does it too)."""
        self.background.stop(timeout)
