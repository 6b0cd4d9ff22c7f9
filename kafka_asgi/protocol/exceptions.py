"""The roots of kafka_asgi's exception tree (the rest is in :mod:`.error_codes`, and
every class is importable from :mod:`kafka_asgi.protocol.errors`)."""

from __future__ import annotations

__all__ = [
    "BrokerResponseError",
    "EncodeError",
    "KafkaError",
    "ProtocolError",
    "UnsupportedCodecError",
]


class KafkaError(Exception):
    """Root of every exception raised by kafka_asgi."""

    retriable: bool = False
    invalid_metadata: bool = False


class ProtocolError(KafkaError):
    """Malformed bytes: truncated, bad CRC, bad length, unknown magic or compression."""


class UnsupportedCodecError(KafkaError):
    """The library for a compression codec is not installed."""


class EncodeError(KafkaError, ValueError):
    """A value cannot be encoded as asked.

    Raised for a version the message does not have, a field the chosen version cannot
    carry, None where that version allows no null, a number out of range for its wire
    type, or a string longer than its length prefix allows. The message names the field.
    """


class BrokerResponseError(KafkaError):
    """An error code returned by a broker. One subclass exists per Kafka error code.

    ``code`` and ``name`` are Kafka's (``6``, ``"NOT_LEADER_OR_FOLLOWER"``); the optional
    message is the broker's error message when the response carries one.
    """

    code: int = -1
    name: str = "UNKNOWN_SERVER_ERROR"

    def __init__(self, message: str | None = None) -> None:
        self.message = message
        if message is None:
            super().__init__()
        else:
            super().__init__(message)

    def __str__(self) -> str:
        text = f"{self.name} (error code {self.code})"
        if self.message:
            text += f": {self.message}"
        return text

    def __reduce__(self) -> tuple[type[BrokerResponseError], tuple[str | None]]:
        return (type(self), (self.message,))
