"""Stand-ins for the producer layer's public names until kafka_asgi.producer lands.

Same names and shapes as the Producer contract in the developer brief; the
integrations import them from here only, so switching to the real ones is a
one-file change.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from kafka_asgi.integrations._producer_api import ProducerLike
from kafka_asgi.protocol.errors import KafkaError


class BufferFullError(KafkaError):
    """send_nowait found the producer's buffer at max_buffering."""

    retriable = True


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    topic: str
    partition: int
    offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class ProducerStats:
    enqueued: int = 0
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    buffered: int = 0
    in_flight: int = 0
    bytes_sent: int = 0
    batches_sent: int = 0
    last_error: BaseException | None = None


_registry: dict[str, ProducerLike] = {}
_lock = threading.Lock()


def register_producer(name: str, producer: ProducerLike) -> None:
    with _lock:
        if name in _registry:
            raise ValueError(f"a producer is already registered as {name!r}")
        _registry[name] = producer


def unregister_producer(name: str) -> None:
    with _lock:
        _registry.pop(name, None)


def get_producer(cluster_name: str = "default") -> ProducerLike:
    try:
        return _registry[cluster_name]
    except KeyError:
        raise KeyError(f"no producer registered as {cluster_name!r}") from None
