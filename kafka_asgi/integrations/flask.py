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
works; it is looked up when read, through a subclass of the app's
``app_ctx_globals_class`` made at ``init_app``). The producer runs in a background
thread of each worker process (:mod:`kafka_asgi.integrations.wsgi`), started by its
first request and flushed at exit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, has_app_context, has_request_context, request

from kafka_asgi.integrations.background import BackgroundProducer
from kafka_asgi.integrations.event_logger import EventLogger, new_request_id
from kafka_asgi.integrations.lifespan import LifespanOptions
from kafka_asgi.integrations.wsgi import (
    ENVIRON_LOGGER_KEY,
    AccessLogMiddleware,
    background_producer,
    sender_for_wsgi,
)

__all__ = ["KafkaExtension"]

PREFIX = "KAFKA_ASGI_"
_LIFESPAN_KEYS = {PREFIX + f.name.upper(): f.name for f in dataclasses.fields(LifespanOptions)}
_ACCESS_LOG_KEY = PREFIX + "ACCESS_LOG"
_ACCESS_LOG_DEFAULT: dict[str, Any] = {"topic": "access-log"}


@dataclasses.dataclass(frozen=True, slots=True)
class _AppState:
    """What ``init_app`` made for one app (an extension may serve several: factories)."""

    options: LifespanOptions
    background: BackgroundProducer
    middleware: AccessLogMiddleware | None


_STATE_KEY = "kafka_asgi.state"  # app.extensions -> the app's _AppState


class KafkaExtension:
    """The Flask extension: ``KafkaExtension(app)``, or ``ext = KafkaExtension()`` then
    ``ext.init_app(app)`` (application factories: one extension, any number of apps,
    each with its own config and producer).

    After ``init_app``: ``app.wsgi_app`` is wrapped in the WSGI
    :class:`~kafka_asgi.integrations.wsgi.AccessLogMiddleware` (unless
    ``KAFKA_ASGI_ACCESS_LOG`` is None), ``g.kafka`` is the request's
    :class:`~kafka_asgi.integrations.event_logger.EventLogger` (the same request id as
    the access-log event, the URL rule as route), and ``app.extensions["kafka_asgi"]``
    is this extension. Bad config raises ValueError/TypeError naming the key, at
    ``init_app``; an app given to ``init_app`` a second time (by this extension or
    another) raises RuntimeError, and keeps what the first call set up. ``middleware``,
    ``options`` and ``background`` are those of the current app (outside an app
    context: of the app last given to ``init_app``).
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._last: _AppState | None = None
        self._backgrounds: list[BackgroundProducer] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if _STATE_KEY in app.extensions:
            # A second init_app would wrap wsgi_app again (two access-log events per
            # request) and start a second producer; replacing the first would leave its
            # background producer running unflushed. Once per app, as Flask-SQLAlchemy.
            raise RuntimeError(
                f"the Flask app {app.name!r} was already given to KafkaExtension.init_app "
                "(its access log and producer are set up once per app)"
            )
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
        access_log = config.get(_ACCESS_LOG_KEY, _ACCESS_LOG_DEFAULT)
        if access_log is not None and not isinstance(access_log, Mapping):
            raise TypeError(f"{_ACCESS_LOG_KEY} must be a dict or None, not {access_log!r}")
        background = background_producer(options)
        middleware = None
        if access_log is not None:
            try:
                middleware = AccessLogMiddleware(
                    app.wsgi_app, cluster=options.cluster, **dict(access_log)
                )
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{_ACCESS_LOG_KEY}: {exc}") from exc
            middleware.background = background
            app.wsgi_app = middleware  # type: ignore[method-assign]
        state = self._last = _AppState(options, background, middleware)
        if all(bg is not background for bg in self._backgrounds):
            self._backgrounds.append(background)
        # g.kafka is looked up when a view first reads it, not set by a before_request
        # hook: a hook costs every request (Flask's hook call, three context-local
        # look-ups) about a third of what the whole access log costs.
        app.app_ctx_globals_class = _globals_with_kafka(app.app_ctx_globals_class, state)
        app.extensions["kafka_asgi"] = self
        app.extensions[_STATE_KEY] = state

    def _state(self) -> _AppState | None:
        if has_app_context():
            found = current_app.extensions.get(_STATE_KEY)
            if isinstance(found, _AppState):
                return found
        return self._last

    @property
    def middleware(self) -> AccessLogMiddleware | None:
        state = self._state()
        return None if state is None else state.middleware

    @property
    def options(self) -> LifespanOptions | None:
        state = self._state()
        return None if state is None else state.options

    @property
    def background(self) -> BackgroundProducer | None:
        state = self._state()
        return None if state is None else state.background

    def event_logger(self) -> EventLogger:
        """The current request's :class:`EventLogger` (what ``g.kafka`` returns),
        stamped with the request's URL rule. Needs a request context."""
        state = current_app.extensions.get(_STATE_KEY)
        if not isinstance(state, _AppState):
            raise RuntimeError("this Flask app was not given to KafkaExtension.init_app")
        return _event_logger(state)

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop the background producers of every app given to ``init_app``
        (the exit hook does it too); nothing to do before ``init_app``."""
        for background in self._backgrounds:
            background.stop(timeout)


def _event_logger(state: _AppState) -> EventLogger:
    environ = request.environ
    found = environ.get(ENVIRON_LOGGER_KEY)
    if isinstance(found, EventLogger):
        logger = found
    else:  # no access log: a logger of our own, with the app's producer
        cluster = state.options.cluster
        logger = EventLogger(
            None, new_request_id(), cluster, send=sender_for_wsgi(cluster, state.background)
        )
        environ[ENVIRON_LOGGER_KEY] = logger
    rule = request.url_rule
    logger.release(rule.rule if rule is not None else None)
    return logger


def _globals_with_kafka(base: type[Any], state: _AppState) -> type[Any]:
    """``base`` (the app's ``app_ctx_globals_class``) with a ``kafka`` attribute read
    on demand: the request's EventLogger while a request is handled. An attribute
    the app sets itself (``g.kafka = ...``) is found first, as Python looks up
    ``__getattr__`` only for a missing one; ``get``, ``setdefault`` and ``in`` see
    ``kafka`` as attribute access does (Flask's versions read only ``__dict__``)."""
    inherited = getattr(base, "__getattr__", None)

    def __getattr__(self: Any, name: str) -> Any:
        if name == "kafka" and has_request_context():
            return _event_logger(state)
        if inherited is not None:
            return inherited(self, name)
        raise AttributeError(name)

    def on_demand(self: Any, name: str) -> bool:
        return name == "kafka" and name not in self.__dict__ and has_request_context()

    namespace: dict[str, Any] = {"__getattr__": __getattr__, "__module__": __name__}
    base_get = getattr(base, "get", None)
    if base_get is not None:

        def get(self: Any, name: str, default: Any = None) -> Any:
            return _event_logger(state) if on_demand(self, name) else base_get(self, name, default)

        namespace["get"] = get
    base_setdefault = getattr(base, "setdefault", None)
    if base_setdefault is not None:

        def setdefault(self: Any, name: str, default: Any = None) -> Any:
            # Not stored: g outlives the request when an app context was pushed around it.
            if on_demand(self, name):
                return _event_logger(state)
            return base_setdefault(self, name, default)

        namespace["setdefault"] = setdefault
    base_contains = getattr(base, "__contains__", None)
    if base_contains is not None:

        def __contains__(self: Any, item: str) -> bool:
            return on_demand(self, item) or bool(base_contains(self, item))

        namespace["__contains__"] = __contains__
    return type(base.__name__, (base,), namespace)
