"""``kafka_asgi.starlette``: everything a Starlette app needs, from one module.

::

    from kafka_asgi.starlette import AccessLogMiddleware, event_logger, kafka_lifespan
"""

from kafka_asgi.integrations.starlette import (
    AccessLogMiddleware,
    EventLogger,
    KafkaLifespan,
    event_logger,
    kafka_lifespan,
)

__all__ = [
    "AccessLogMiddleware",
    "EventLogger",
    "KafkaLifespan",
    "event_logger",
    "kafka_lifespan",
]
