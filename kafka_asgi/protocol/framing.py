"""Request/response headers and the 4-byte size-prefixed frames that carry them.

Every Kafka message on the wire is ``int32 size`` followed by ``size`` bytes: a header,
then the body (protocol guide, "Common Request and Response Structure").

Header versions (RequestHeader.json / ResponseHeader.json):

* request header v1: api key, api version, correlation id, client id (nullable STRING);
  v2 adds tagged fields and is used by every flexible request version (KIP-482).
  The client id stays a classic STRING even in v2, so any broker can read the header of
  an ApiVersions request at a version it does not know.
* request header v0 (no client id) is only used by ControlledShutdown v0.
* response header v0: correlation id; v1 adds tagged fields for flexible responses,
  except ApiVersions responses, always v0 so that a client can parse the broker's reply
  before it knows which versions the broker speaks (KIP-511).
"""

from __future__ import annotations

import struct
from typing import TypeVar

from kafka_asgi.protocol.errors import EncodeError, ProtocolError
from kafka_asgi.protocol.messages import API_VERSIONS_SPEC, ApiVersionsRequest, Message
from kafka_asgi.protocol.primitives import (
    ZERO_BYTE,
    Reader,
    encode_nullable_string,
    pack_int16,
    pack_int32,
)

__all__ = [
    "MAX_FRAME_SIZE",
    "MAX_RECORDS_SIZE",
    "SIZE_PREFIX_LENGTH",
    "decode_response",
    "encode_request",
    "frame_size",
    "peek_correlation_id",
    "request_header_version",
    "response_header_version",
]

SIZE_PREFIX_LENGTH = 4

MAX_FRAME_SIZE = 100 * 1024 * 1024
"""Largest frame accepted by default, in bytes (after the size prefix).

Kafka brokers refuse requests above ``socket.request.max.bytes`` (100 MiB by default);
responses are bounded by the client's own fetch limits. A size beyond this cap is far
more likely a corrupted stream or a non-Kafka peer (for instance TLS spoken to a
plaintext port) than a real message, and must not make us allocate gigabytes.
"""

MAX_RECORDS_SIZE = MAX_FRAME_SIZE - 1024 * 1024
"""The most record bytes one request may carry or one Fetch may ask for (the
producer's ``max_request_size``, the consumer's ``max_bytes``): the frame's headers
(client id, topic names, aborted transactions) fit in the MiB left, so the frame
stays within :data:`MAX_FRAME_SIZE`."""

_M = TypeVar("_M", bound=Message)

_API_VERSIONS_KEY = ApiVersionsRequest.API_KEY
# ControlledShutdown v0 (the one request with a v0 header) is not generated: by name.
_CONTROLLED_SHUTDOWN_KEY = next(
    key for key, (name, *_) in API_VERSIONS_SPEC.items() if name == "ControlledShutdown"
)
_I32 = struct.Struct(">i")


def _first_flexible(api_key: int, *, response: bool) -> int | None:
    try:
        spec = API_VERSIONS_SPEC[api_key]
    except KeyError:
        raise ValueError(f"unknown api key {api_key!r}") from None
    _name, _min, _max, first_flexible_request, first_flexible_response = spec
    return first_flexible_response if response else first_flexible_request


def request_header_version(api_key: int, version: int) -> int:
    """Request header version (0, 1 or 2) for ``api_key`` at ``version``."""
    if api_key == _CONTROLLED_SHUTDOWN_KEY and version == 0:
        return 0
    flexible = _first_flexible(api_key, response=False)
    return 2 if flexible is not None and version >= flexible else 1


def response_header_version(api_key: int, version: int) -> int:
    """Response header version (0 or 1) for ``api_key`` at ``version``."""
    if api_key == _API_VERSIONS_KEY:
        return 0
    flexible = _first_flexible(api_key, response=True)
    return 1 if flexible is not None and version >= flexible else 0


def encode_request(
    request: Message,
    version: int,
    correlation_id: int,
    client_id: str | None,
    *,
    max_frame_size: int = MAX_FRAME_SIZE,
) -> bytes:
    """A complete request frame: size prefix, request header, body."""
    body = request.encode_parts(version)
    api_key = request.API_KEY
    header_version = request_header_version(api_key, version)
    try:
        parts = [b"", pack_int16(api_key), pack_int16(version), pack_int32(correlation_id)]
    except struct.error as exc:
        raise EncodeError(f"correlation id {correlation_id!r} is not an int32") from exc
    if header_version >= 1:
        if client_id is not None and not isinstance(client_id, str):
            raise EncodeError(f"client_id must be a str or None, got {client_id!r}")
        parts.append(encode_nullable_string(client_id))
    if header_version >= 2:
        parts.append(ZERO_BYTE)  # no tagged fields in the header
    parts += body
    size = sum(map(len, parts))
    if size > max_frame_size:
        raise EncodeError(
            f"{type(request).__name__} v{version} frame of {size} bytes exceeds "
            f"the maximum frame size of {max_frame_size} bytes"
        )
    # One join, the size prefix in its place: the body's pieces (a Produce request's
    # record batches) are copied once into the frame.
    parts[0] = _I32.pack(size)
    return b"".join(parts)


def frame_size(prefix: bytes | bytearray | memoryview, max_frame_size: int = MAX_FRAME_SIZE) -> int:
    """Validate and return the frame length announced by a 4-byte size prefix."""
    if len(prefix) < SIZE_PREFIX_LENGTH:
        raise ProtocolError(f"size prefix needs 4 bytes, got {len(prefix)}")
    (size,) = _I32.unpack_from(prefix, 0)
    if size < 0:
        raise ProtocolError(f"negative frame size {size}")
    if size > max_frame_size:
        raise ProtocolError(
            f"frame of {size} bytes exceeds the maximum frame size of {max_frame_size} bytes"
        )
    return int(size)


def peek_correlation_id(frame: bytes | bytearray | memoryview) -> int:
    """The correlation id at the start of a response frame (after the size prefix)."""
    if len(frame) < 4:
        raise ProtocolError(f"response frame of {len(frame)} bytes has no correlation id")
    return int(_I32.unpack_from(frame, 0)[0])


def decode_response(
    response_cls: type[_M], frame: bytes | bytearray | memoryview, version: int
) -> tuple[int, _M]:
    """Parse a response frame (the bytes after the size prefix) into its correlation id
    and body. Raises ProtocolError for malformed bytes."""
    reader = Reader(frame)
    correlation_id = reader.int32()
    if response_header_version(response_cls.API_KEY, version) >= 1:
        reader.skip_tagged_fields()
    body = memoryview(frame)[reader.pos :]
    return correlation_id, response_cls.decode(body, version)
