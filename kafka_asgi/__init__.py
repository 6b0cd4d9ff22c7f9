"""kafka_asgi: ship events and access logs from ASGI/WSGI apps to Apache Kafka."""

__version__ = "0.1.0"
