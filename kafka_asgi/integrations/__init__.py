"""kafka_asgi.integrations: ASGI lifespan and access logs, framework helpers, logging.

Framework-free names are re-exported here. The framework entry points are top-level
modules, so that importing this package imports no web framework:
``kafka_asgi.fastapi``, ``kafka_asgi.starlette``, ``kafka_asgi.django``.

Module map: ``lifespan`` (LifespanOptions, producer_lifespan, KafkaLifespan),
``overrides`` (per-cluster producer overrides), ``sender`` (thread-safe hand-off),
``background`` (a producer on its own loop in a thread), ``event_logger`` (the
request-scoped logger, serializer, request ids), ``access_log_event`` (the event's
fields and options), ``access_log`` (the ASGI middleware), ``logging`` (the log
handler), ``testing`` (capture_events, InMemoryProducer for apps' tests).
"""

from typing import TYPE_CHECKING, Any

from kafka_asgi.integrations.access_log import AccessLogMiddleware
from kafka_asgi.integrations.access_log_event import ACCESS_LOG_FIELDS, AccessLogOptions
from kafka_asgi.integrations.background import BackgroundProducer
from kafka_asgi.integrations.event_logger import EventLogger, get_event_logger
from kafka_asgi.integrations.lifespan import (
    KafkaLifespan,
    KafkaUnreachableError,
    LifespanOptions,
    TopicCreationError,
    producer_lifespan,
)
from kafka_asgi.integrations.logging import KafkaLogHandler
from kafka_asgi.integrations.sender import ThreadSafeSender, get_sender

__all__ = [
    "ACCESS_LOG_FIELDS",
    "AccessLogMiddleware",
    "AccessLogOptions",
    "BackgroundProducer",
    "CapturedEvent",
    "EventLogger",
    "InMemoryProducer",
    "KafkaLifespan",
    "KafkaLogHandler",
    "KafkaUnreachableError",
    "LifespanOptions",
    "ThreadSafeSender",
    "TopicCreationError",
    "capture_events",
    "get_event_logger",
    "get_sender",
    "producer_lifespan",
]

# The test helpers are imported on first use: production code never loads them.
_TESTING_NAMES = frozenset({"CapturedEvent", "InMemoryProducer", "capture_events"})

if TYPE_CHECKING:
    from kafka_asgi.integrations.testing import CapturedEvent, InMemoryProducer, capture_events


def __getattr__(name: str) -> Any:
    if name in _TESTING_NAMES:
        from kafka_asgi.integrations import testing

        return getattr(testing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
