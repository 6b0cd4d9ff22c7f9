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
    "kafka_lifespan",
]


def event_logger(conn: HTTPConnection) -> EventLogger:
    """Dependency: the request's EventLogger (the "default" cluster's producer)."""
    return get_event_logger(conn.scope)


KafkaLogger = Annotated[EventLogger, Depends(event_logger)]
"""Annotate a path operation parameter with this to receive the request's EventLogger."""
