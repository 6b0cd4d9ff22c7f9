"""Framework-free ASGI integration (re-exports, the import path the README has shown).

* :mod:`kafka_asgi.integrations.lifespan` - :func:`producer_lifespan`,
  :class:`KafkaLifespan`, :class:`LifespanOptions`.
* :mod:`kafka_asgi.integrations.access_log` - :class:`AccessLogMiddleware`; the event
  and its options in :mod:`kafka_asgi.integrations.access_log_event`.
* :mod:`kafka_asgi.integrations.event_logger` - :class:`EventLogger`, the request-scoped
  ``log(topic, payload)`` at ``scope["state"]["kafka"]`` (``request.state.kafka``).
"""

from kafka_asgi.integrations.access_log import AccessLogMiddleware
from kafka_asgi.integrations.access_log_event import (
    ACCESS_LOG_FIELDS,
    AccessLogOptions,
    access_log_event,
)
from kafka_asgi.integrations.event_logger import (
    STATE_KEY,
    EventLogger,
    default_serializer,
    get_event_logger,
    new_request_id,
)
from kafka_asgi.integrations.lifespan import (
    PRODUCER_STATE_KEY,
    PRODUCERS_STATE_KEY,
    ASGIApp,
    KafkaLifespan,
    KafkaUnreachableError,
    LifespanOptions,
    TopicCreationError,
    producer_lifespan,
)

__all__ = [
    "ACCESS_LOG_FIELDS",
    "PRODUCERS_STATE_KEY",
    "PRODUCER_STATE_KEY",
    "STATE_KEY",
    "ASGIApp",
    "AccessLogMiddleware",
    "AccessLogOptions",
    "EventLogger",
    "KafkaLifespan",
    "KafkaUnreachableError",
    "LifespanOptions",
    "TopicCreationError",
    "access_log_event",
    "default_serializer",
    "get_event_logger",
    "new_request_id",
    "producer_lifespan",
]
