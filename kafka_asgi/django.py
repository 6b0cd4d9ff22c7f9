"""``kafka_asgi.django``: the Django integration (see kafka_asgi.integrations.django).

``AccessLogMiddleware`` is named like the ASGI middleware; ``KafkaMiddleware`` is the
same class under its earlier name.
"""

from kafka_asgi.integrations.django import (
    AccessLogMiddleware,
    DjangoEventLogger,
    KafkaMiddleware,
    KafkaSettings,
    get_asgi_application,
    kafka_settings,
)

__all__ = [
    "AccessLogMiddleware",
    "DjangoEventLogger",
    "KafkaMiddleware",
    "KafkaSettings",
    "get_asgi_application",
    "kafka_settings",
]
