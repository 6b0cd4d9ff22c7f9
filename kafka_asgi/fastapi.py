"""``kafka_asgi.fastapi``: everything a FastAPI app needs, from one module.

::

    from kafka_asgi.fastapi import AccessLogMiddleware, KafkaLogger, kafka_lifespan

    app = FastAPI(lifespan=kafka_lifespan(bootstrap="127.0.0.1:9092"))
    app.add_middleware(AccessLogMiddleware, topic="access-log")
"""

from kafka_asgi.integrations.fastapi import (
    AccessLogMiddleware,
    EventLogger,
    KafkaLogger,
    event_logger,
    event_logger_for,
    kafka_lifespan,
)

__all__ = [
    "AccessLogMiddleware",
    "EventLogger",
    "KafkaLogger",
    "event_logger",
    "event_logger_for",
    "kafka_lifespan",
]
