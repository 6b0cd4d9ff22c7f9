"""kafka_asgi.integrations layer."""
