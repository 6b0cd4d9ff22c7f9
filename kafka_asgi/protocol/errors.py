"""Exceptions of the protocol layer; every exception the library raises derives from KafkaError."""

from __future__ import annotations


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
