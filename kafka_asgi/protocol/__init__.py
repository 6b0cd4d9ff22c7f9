"""kafka_asgi.protocol: Kafka's wire format as bytes in, bytes out (no I/O).

Submodules: ``primitives`` (wire types), ``messages`` (generated request/response
classes), ``framing`` (headers and size-prefixed frames), ``errors`` (the exception
tree and one class per Kafka error code), ``records`` and ``compression``.
"""

from kafka_asgi.protocol.errors import (
    BrokerResponseError,
    EncodeError,
    KafkaError,
    ProtocolError,
    UnsupportedCodecError,
    error_for_code,
    raise_for_code,
)

__all__ = [
    "BrokerResponseError",
    "EncodeError",
    "KafkaError",
    "ProtocolError",
    "UnsupportedCodecError",
    "error_for_code",
    "raise_for_code",
]
