"""Settings of the example Django project: no database, kafka_asgi configured from the
environment (KAFKA_BOOTSTRAP_SERVERS, ACCESS_LOG_TOPIC, EVENTS_TOPIC, KAFKA_FLUSH_TIME,
KAFKA_CREATE_TOPICS)."""

import os

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shopsite.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
MIDDLEWARE = ["kafka_asgi.django.AccessLogMiddleware"]

ACCESS_LOG_TOPIC = os.environ.get("ACCESS_LOG_TOPIC", "access-log")
EVENTS_TOPIC = os.environ.get("EVENTS_TOPIC", "shop-events")

KAFKA_ASGI = {
    "BOOTSTRAP": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    "PRODUCER_OPTIONS": {"flush_time": float(os.environ.get("KAFKA_FLUSH_TIME", "0.5"))},
    "CREATE_TOPICS": (
        [ACCESS_LOG_TOPIC, EVENTS_TOPIC] if os.environ.get("KAFKA_CREATE_TOPICS") else []
    ),
    "ACCESS_LOG": {
        "topic": ACCESS_LOG_TOPIC,
        "exclude_paths": ["/health"],
        "extra": {"service": "example-shop-django"},
    },
}
