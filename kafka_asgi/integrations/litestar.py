"""Litestar: a plugin running the producer's lifespan and the access log, and the
request-scoped logger as a dependency.

::

    from litestar import Litestar, post
    from kafka_asgi.litestar import KafkaLogger, KafkaPlugin

    @post("/orders")
    async def create_order(data: Order, kafka: KafkaLogger) -> dict:
        kafka.log("orders", {"id": data.id})   # stamped with request_id and route
        return {"ok": True}

    app = Litestar(
        [create_order],
        plugins=[KafkaPlugin(bootstrap="127.0.0.1:9092", access_log={"topic": "access-log"})],
    )

Litestar is ASGI: the ASGI :class:`~kafka_asgi.integrations.access_log.AccessLogMiddleware`
works as it is; the plugin adds it (``access_log=None`` for none), adds the producer's
lifespan (options of :class:`~kafka_asgi.integrations.lifespan.LifespanOptions`) to
the app's, and provides the request's EventLogger as the ``kafka`` dependency.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeAlias

from litestar import Litestar, Request
from litestar.config.app import AppConfig
from litestar.di import NamedDependency, Provide
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPlugin

from kafka_asgi.integrations.access_log import AccessLogMiddleware
from kafka_asgi.integrations.event_logger import EventLogger, get_event_logger
from kafka_asgi.integrations.lifespan import LifespanOptions, producer_lifespan

__all__ = [
    "AccessLogMiddleware",
    "EventLogger",
    "KafkaLogger",
    "KafkaPlugin",
    "event_logger_provider",
]

KafkaLogger: TypeAlias = NamedDependency[EventLogger]
"""Annotate a handler parameter named ``kafka`` (the plugin's ``dependency``) with this to
receive the request's EventLogger."""


def event_logger_provider(cluster: str | None = None) -> Provide:
    """A Litestar dependency giving the request's (or WebSocket's) EventLogger for
    ``cluster``'s producer (None: the request's own, the access log's cluster, else
    "default"); see :func:`~kafka_asgi.integrations.event_logger.get_event_logger`."""

    def provide(request: Request[Any, Any, Any]) -> EventLogger:
        return get_event_logger(request.scope, cluster)  # type: ignore[arg-type]

    return Provide(provide, sync_to_thread=False)


class KafkaPlugin(InitPlugin):
    """``Litestar(plugins=[KafkaPlugin(bootstrap=..., access_log={...})])``.

    Keyword options are those of :class:`~kafka_asgi.integrations.lifespan.LifespanOptions`
    (validated here); ``access_log`` is a dict of access-log options (default
    ``{"topic": "access-log"}``; None: no access log); ``dependency`` names the
    EventLogger dependency (default ``"kafka"``).
    """

    __slots__ = ("access_log", "dependency", "options")

    def __init__(
        self,
        *,
        access_log: Mapping[str, Any] | None = None,
        dependency: str = "kafka",
        **options: Any,
    ) -> None:
        self.options = LifespanOptions.from_kwargs("KafkaPlugin", options)
        if not isinstance(dependency, str) or not dependency.isidentifier():
            raise ValueError(f"dependency must be a parameter name, not {dependency!r}")
        self.dependency = dependency
        if access_log is not None and not isinstance(access_log, Mapping):
            raise TypeError(f"access_log must be a dict or None, not {access_log!r}")
        self.access_log: dict[str, Any] | None = (
            {"topic": "access-log", **access_log} if access_log is not None else None
        )
        if self.access_log is not None:
            self.access_log.setdefault("cluster", self.options.cluster)
            # Validate now, at the call that received the bad value.
            AccessLogMiddleware(_no_app, **self.access_log)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        options = self.options.as_kwargs()

        running: list[AsyncExitStack] = []

        @asynccontextmanager
        async def kafka_lifespan(app: Litestar) -> AsyncIterator[None]:
            stack = AsyncExitStack()
            await stack.enter_async_context(producer_lifespan(**options))
            running.append(stack)
            yield

        async def close_producer(app: Litestar) -> None:
            if running:
                await running.pop().aclose()

        # Litestar enters its lifespan context managers before its on_startup hooks,
        # and runs its on_shutdown hooks after leaving them (App.lifespan registers
        # them first on its exit stack), the last hook in the list last. So the producer
        # starts in a context manager first in the list, and is flushed and closed by
        # an on_shutdown hook last in it: every startup and shutdown step of the app's
        # can send events, even when one of them fails.
        app_config.lifespan = [kafka_lifespan, *app_config.lifespan]
        app_config.on_shutdown = [*app_config.on_shutdown, close_producer]
        if self.access_log is not None:
            app_config.middleware = [
                # Litestar's ASGI types are TypedDicts; the middleware takes any mapping.
                DefineMiddleware(AccessLogMiddleware, **self.access_log),  # type: ignore[arg-type]
                *app_config.middleware,
            ]
        app_config.dependencies = {
            **app_config.dependencies,
            self.dependency: event_logger_provider(self.options.cluster),
        }
        return app_config


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    raise RuntimeError("validation only")
