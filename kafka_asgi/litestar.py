"""``kafka_asgi.litestar``: the Litestar plugin (see kafka_asgi.integrations.litestar).

::

    from kafka_asgi.litestar import KafkaLogger, KafkaPlugin
"""

from kafka_asgi.integrations.litestar import (
    AccessLogMiddleware,
    EventLogger,
    KafkaLogger,
    KafkaPlugin,
    event_logger_provider,
)

__all__ = [
    "AccessLogMiddleware",
    "EventLogger",
    "KafkaLogger",
    "KafkaPlugin",
    "event_logger_provider",
]
