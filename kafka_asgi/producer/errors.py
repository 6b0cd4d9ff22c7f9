"""Exceptions raised by the producer (all under KafkaError)."""

from __future__ import annotations

from kafka_asgi.protocol.errors import KafkaError, MessageTooLargeError

__all__ = [
    "BufferFullError",
    "DeliveryTimeoutError",
    "PartitionerError",
    "ProducerAlreadyRegisteredError",
    "ProducerClosedError",
    "ProducerNotRegisteredError",
    "RecordTooLargeError",
]


class BufferFullError(KafkaError):
    """``max_buffering`` records are already waiting: lua-resty-kafka's "buffer overflow".

    Nothing was buffered; the caller may drop the record, or retry once the flusher
    has made room (``send_buffered`` with ``wait_on_buffer_full=True`` does that).
    """

    retriable = True


class ProducerClosedError(KafkaError):
    """The producer is not running: not started yet, closing or closed.

    Raised by the send methods; also the error reported to ``error_handle`` and
    ``on_delivery`` for records that were still undelivered when ``aclose()`` ran
    out of ``close_timeout``.
    """


class RecordTooLargeError(MessageTooLargeError, ValueError):
    """A record cannot fit in a request of ``max_request_size`` bytes.

    Raised by the send methods before anything is buffered; a subclass of the broker's
    MESSAGE_TOO_LARGE error so one ``except`` catches both.
    """


class DeliveryTimeoutError(KafkaError, TimeoutError):
    """``send()`` or ``flush()`` waited longer than allowed.

    The records concerned are still in the producer: they will be delivered or
    reported to ``error_handle``/``on_delivery`` like any other.
    """

    retriable = True


class PartitionerError(KafkaError):
    """A partitioner failed or chose a partition the topic does not have."""


class ProducerAlreadyRegisteredError(KafkaError, RuntimeError):
    """Another live producer is already registered under this cluster name."""


class ProducerNotRegisteredError(KafkaError, LookupError):
    """No producer is registered under this cluster name in this process."""
