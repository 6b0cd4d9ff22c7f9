"""kafka_asgi.network layer."""
