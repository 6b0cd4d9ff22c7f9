"""kafka_asgi.producer layer."""
