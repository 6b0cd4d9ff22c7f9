"""Every exception kafka_asgi raises, in one place: ``from kafka_asgi.errors import ...``.

All derive from :class:`KafkaError`. Broker error codes are :class:`BrokerResponseError`
subclasses (one per Kafka error code, with ``retriable`` and ``invalid_metadata``);
network failures are :class:`NetworkError` subclasses (the client giving up on a
response is :class:`ClientRequestTimeoutError`, formerly ``RequestTimeout``, not
Kafka's ``REQUEST_TIMED_OUT``, :class:`RequestTimedOutError`); SASL failures
:class:`AuthenticationError`. The producer, the ASGI lifespan and the command line add
theirs below.  tests/test_names.py checks that no exception class is missing.
"""

from __future__ import annotations

from kafka_asgi.cli import CommandError
from kafka_asgi.integrations.lifespan import KafkaUnreachableError, TopicCreationError
from kafka_asgi.network.errors import (
    AuthenticationError,
    ClientRequestTimeoutError,
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
    SpillDamagedError,
    SpillError,
    SpillFullError,
    SpillMovedError,
)
from kafka_asgi.protocol import errors as _protocol_errors
from kafka_asgi.protocol.errors import *  # noqa: F403 - every error-code class, by design

__all__ = [
    *_protocol_errors.__all__,
    "AuthenticationError",
    "BufferFullError",
    "CommandError",
    "ConnectError",
    "ConnectionClosedError",
    "DeliveryTimeoutError",
    "KafkaUnreachableError",
    "NetworkError",
    "PartitionerError",
    "ProducerAlreadyRegisteredError",
    "ProducerClosedError",
    "ProducerNotRegisteredError",
    "RecordTooLargeError",
    "SpillDamagedError",
    "SpillError",
    "SpillFullError",
    "SpillMovedError",
    "RequestTimeout",
    "ClientRequestTimeoutError",
    "TLSError",
    "TopicCreationError",
]
