"""kafka_asgi.consumer: read partitions from offsets you choose (no consumer group)."""

from kafka_asgi.consumer.consumer import BasicConsumer
from kafka_asgi.consumer.results import (
    EARLIEST,
    LATEST,
    AbortedTransaction,
    ConsumerRecord,
    FetchResult,
    IsolationLevel,
)

__all__ = [
    "EARLIEST",
    "LATEST",
    "AbortedTransaction",
    "BasicConsumer",
    "ConsumerRecord",
    "FetchResult",
    "IsolationLevel",
]
