"""kafka_asgi.producer: Producer, RecordMetadata, partitioners, the per-process registry."""

from .errors import (
    BufferFullError,
    DeliveryTimeoutError,
    PartitionerError,
    ProducerAlreadyRegisteredError,
    ProducerClosedError,
    ProducerNotRegisteredError,
    RecordTooLargeError,
)
from .partitioner import crc32_partition, murmur2, murmur2_partition
from .producer import Producer, ProducerStats, RecordMetadata
from .registry import get_producer, register_producer, unregister_producer

__all__ = [
    "BufferFullError",
    "DeliveryTimeoutError",
    "PartitionerError",
    "Producer",
    "ProducerAlreadyRegisteredError",
    "ProducerClosedError",
    "ProducerNotRegisteredError",
    "ProducerStats",
    "RecordMetadata",
    "RecordTooLargeError",
    "crc32_partition",
    "get_producer",
    "murmur2",
    "murmur2_partition",
    "register_producer",
    "unregister_producer",
]
