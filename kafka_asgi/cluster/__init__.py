"""kafka_asgi.cluster layer."""
