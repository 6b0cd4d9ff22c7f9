"""FastAPI helpers: the request logger as a dependency, plus the Starlette lifespan.

::

    from kafka_asgi.fastapi import AccessLogMiddleware, KafkaLogger, kafka_lifespan

    app = FastAPI(lifespan=kafka_lifespan(bootstrap="127.0.0.1:9092"))
    app.add_middleware(AccessLogMiddleware, topic="access-log")

    @app.post("/orders")
    async def create_order(order: Order, kafka: KafkaLogger):
        kafka.log("orders", order.model_dump())   # stamped with request_id and route
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from kafka_asgi.integrations.access_log import AccessLogMiddleware
from kafka_asgi.integrations.event_logger import EventLogger, get_event_logger
from kafka_asgi.integrations.starlette import kafka_lifespan

__all__ = [
    "AccessLogMiddleware",
    "EventLogger",
    "KafkaLogger",
    "event_logger",
    "event_logger_for",
    "kafka_lifespan",
]


def event_logger(conn: HTTPConnection) -> EventLogger:
    """Dependency: the request's EventLogger, ``request.state.kafka`` (the access-log
    middleware's cluster's producer, else the "default" cluster's)."""
    return get_event_logger(conn.scope)


def event_logger_for(cluster: str) -> Callable[[HTTPConnection], EventLogger]:
    """Dependency factory: the request's EventLogger for ``cluster``'s producer (the same
    request id, trace and route as the request's own)::

        AuditLogger = Annotated[EventLogger, Depends(event_logger_for("audit"))]
    """

    def cluster_event_logger(conn: HTTPConnection) -> EventLogger:
        return get_event_logger(conn.scope, cluster)

    return cluster_event_logger


KafkaLogger = Annotated[EventLogger, Depends(event_logger)]
"""Annotate a path operation parameter with this to receive the request's EventLogger."""
