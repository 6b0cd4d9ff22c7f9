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
    "SpillDamagedError",
    "SpillError",
    "SpillFullError",
    "SpillMovedError",
]


class BufferFullError(KafkaError):
    """``max_buffering`` records are already waiting, or the record would take the
    bytes held past ``max_buffering_bytes``: lua-resty-kafka's "buffer overflow".

    Nothing was buffered; the caller may drop the record, or retry once the flusher
    has made room (``send_buffered`` with ``wait_on_buffer_full=True`` does that).
    """

    retriable = True
    nbytes: int = 0
    """The refused record's bytes when ``max_buffering_bytes`` refused it, else 0."""


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


class SpillError(KafkaError):
    """Records could not be written to the spill directory (disk full, I/O error,
    unwritable directory); they are reported with this error."""


class SpillFullError(SpillError):
    """``spill_max_bytes`` is used up and ``spill_when_full="drop_newest"``: the
    newest records were dropped (reported with this error)."""


class SpillDamagedError(SpillError):
    """Bytes of a spill segment could not be read back (a torn or corrupted frame),
    or the segment file itself could not be (an OSError: passed over, left on disk).

    ``lost`` is the number of records lost when the frame's header said (else None),
    ``path`` the segment file.  Reported through ``error_handle`` with no records.
    """

    def __init__(self, message: str, path: str, lost: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.lost = lost


class SpillMovedError(KafkaError):
    """Internal: a record moved from memory to the disk (its topic started spilling)."""

    retriable = True
