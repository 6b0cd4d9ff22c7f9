"""Every exception kafka_asgi raises, in one place: ``from kafka_asgi.errors import ...``.

All derive from :class:`KafkaError`. Broker error codes are :class:`BrokerResponseError`
subclasses (one per Kafka error code, with ``retriable`` and ``invalid_metadata``);
network failures are :class:`NetworkError` subclasses; SASL failures
:class:`AuthenticationError`. The producer and consumer add theirs below.
"""

from __future__ import annotations

from kafka_asgi.network.errors import (
    AuthenticationError,
    ConnectError,
    ConnectionClosedError,
    NetworkError,
    RequestTimeout,
    TLSError,
)
from kafka_asgi.producer.errors import (
    BufferFullError,
    DeliveryTimeoutError,
    PartitionerError,
    ProducerAlreadyRegisteredError,
    ProducerClosedError,
    ProducerNotRegisteredError,
    RecordTooLargeError,
)
from kafka_asgi.protocol import errors as _protocol_errors
from kafka_asgi.protocol.errors import *  # noqa: F403 - every error-code class, by design

__all__ = [
    *_protocol_errors.__all__,
    "AuthenticationError",
    "BufferFullError",
    "ConnectError",
    "ConnectionClosedError",
    "DeliveryTimeoutError",
    "NetworkError",
    "PartitionerError",
    "ProducerAlreadyRegisteredError",
    "ProducerClosedError",
    "ProducerNotRegisteredError",
    "RecordTooLargeError",
    "RequestTimeout",
    "TLSError",
]
