"""Starlette helpers: a lifespan that composes with the app's own, and the request logger.

::

    from kafka_asgi.starlette import AccessLogMiddleware, event_logger, kafka_lifespan

    app = Starlette(
        routes=[...],
        lifespan=kafka_lifespan(bootstrap="127.0.0.1:9092", lifespan=my_lifespan),
        middleware=[Middleware(AccessLogMiddleware, topic="access-log")],
    )

    async def checkout(request):
        event_logger(request).log("orders", {"total": 42})   # or request.state.kafka
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

from starlette.requests import HTTPConnection

from kafka_asgi.integrations.access_log import AccessLogMiddleware
from kafka_asgi.integrations.event_logger import EventLogger, get_event_logger
from kafka_asgi.integrations.lifespan import (
    PRODUCER_STATE_KEY,
    PRODUCERS_STATE_KEY,
    KafkaLifespan,
    LifespanOptions,
    producer_lifespan,
)

__all__ = [
    "AccessLogMiddleware",
    "EventLogger",
    "KafkaLifespan",
    "event_logger",
    "kafka_lifespan",
]

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def kafka_lifespan(
    lifespan: Callable[[Any], Any] | None = None, **options: Any
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A Starlette/FastAPI ``lifespan=`` running the producer around the app's own.

    ``lifespan`` is the app's own lifespan (an async context manager factory, an async
    generator function or a generator function, as Starlette accepts); keyword options
    are those of :class:`~kafka_asgi.integrations.lifespan.LifespanOptions`. The yielded
    state holds ``kafka_producers`` ({cluster: producer}), ``kafka_producer`` for the
    "default" cluster, and whatever state the app's own lifespan yields (so the server
    must support lifespan state; under one that does not, wrap the app in
    :class:`~kafka_asgi.integrations.lifespan.KafkaLifespan` instead).
    """
    cluster = LifespanOptions.from_kwargs("kafka_lifespan", options).cluster
    if lifespan is not None and not callable(lifespan):
        raise TypeError(f"lifespan must be callable, not {lifespan!r}")
    inner: Lifespan | None
    if lifespan is not None and inspect.isasyncgenfunction(lifespan):
        inner = asynccontextmanager(lifespan)
    elif lifespan is not None and inspect.isgeneratorfunction(lifespan):
        inner = _sync_lifespan(lifespan)
    else:
        inner = lifespan

    @asynccontextmanager
    async def combined(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with producer_lifespan(**options) as producer:
            state: dict[str, Any] = {PRODUCERS_STATE_KEY: {cluster: producer}}
            if cluster == "default":
                state[PRODUCER_STATE_KEY] = producer
            if inner is None:
                yield state
                return
            async with inner(app) as own_state:
                if own_state:
                    theirs = own_state.get(PRODUCERS_STATE_KEY)
                    state.update(own_state)
                    if isinstance(theirs, Mapping):
                        # Merged, as KafkaLifespan's put_state does: an inner
                        # kafka_lifespan for another cluster must not take ours out.
                        state[PRODUCERS_STATE_KEY] = {**theirs, cluster: producer}
                yield state

    return combined


def _sync_lifespan(lifespan: Callable[[Any], Iterator[Any]]) -> Lifespan:
    """A generator function lifespan as an async context manager factory, as Starlette
    runs one: on the event loop, its exceptions thrown back in at its ``yield``."""
    sync = contextmanager(lifespan)

    @asynccontextmanager
    async def lifted(app: Any) -> AsyncIterator[Any]:
        with sync(app) as state:
            yield state

    return lifted


def event_logger(conn: HTTPConnection, cluster: str | None = None) -> EventLogger:
    """The request's (or WebSocket's) EventLogger, also at ``request.state.kafka`` (the
    access-log middleware's cluster, else "default"); with ``cluster``, the logger of
    that cluster's producer, stamped with the same request id, trace and route."""
    return get_event_logger(conn.scope, cluster)
