"""kafka_asgi.consumer layer."""
