"""kafka_asgi.integrations: ASGI lifespan and access logs, framework helpers, logging.

Framework-free names are re-exported here; the framework helpers live in their own
modules so that importing this package imports no web framework:
``kafka_asgi.integrations.starlette`` / ``.fastapi`` / ``kafka_asgi.django``.
"""

from kafka_asgi.integrations.asgi import (
    ACCESS_LOG_FIELDS,
    AccessLogMiddleware,
    EventLogger,
    KafkaLifespan,
    KafkaUnreachableError,
    get_event_logger,
    producer_lifespan,
)
from kafka_asgi.integrations.logging import KafkaLogHandler
from kafka_asgi.integrations.testing import CapturedEvent, InMemoryProducer, capture_events
from kafka_asgi.integrations.threads import BackgroundProducer, ThreadSafeSender, get_sender

__all__ = [
    "ACCESS_LOG_FIELDS",
    "AccessLogMiddleware",
    "BackgroundProducer",
    "CapturedEvent",
    "EventLogger",
    "InMemoryProducer",
    "KafkaLifespan",
    "KafkaLogHandler",
    "KafkaUnreachableError",
    "ThreadSafeSender",
    "capture_events",
    "get_event_logger",
    "get_sender",
    "producer_lifespan",
]
