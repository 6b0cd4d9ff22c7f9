"""ASGI entry point: Django's application inside the kafka_asgi producer lifespan."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shopsite.settings")

from kafka_asgi.django import get_asgi_application

application = get_asgi_application()
