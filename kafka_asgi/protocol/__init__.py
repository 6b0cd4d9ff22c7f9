"""kafka_asgi.protocol layer."""
