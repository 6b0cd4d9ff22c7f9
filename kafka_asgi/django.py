"""``kafka_asgi.django``: the Django integration (see kafka_asgi.integrations.django)."""

from kafka_asgi.integrations.django import (
    DjangoEventLogger,
    KafkaMiddleware,
    KafkaSettings,
    get_asgi_application,
    kafka_settings,
)

__all__ = [
    "DjangoEventLogger",
    "KafkaMiddleware",
    "KafkaSettings",
    "get_asgi_application",
    "kafka_settings",
]
