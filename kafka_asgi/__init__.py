"""kafka_asgi: ship events and access logs from ASGI/WSGI apps to Apache Kafka."""

from kafka_asgi._version import __version__
from kafka_asgi.consumer import EARLIEST, LATEST, BasicConsumer
from kafka_asgi.network.oauthbearer import OAuthBearerToken
from kafka_asgi.producer import (
    BufferFullError,
    Producer,
    RecordMetadata,
    get_producer,
    register_producer,
    unregister_producer,
)

__all__ = [
    "EARLIEST",
    "LATEST",
    "BasicConsumer",
    "BufferFullError",
    "OAuthBearerToken",
    "Producer",
    "RecordMetadata",
    "__version__",
    "get_producer",
    "register_producer",
    "unregister_producer",
]
