"""Exceptions of the network layer, and the one place that translates anyio/ssl/OS errors.

Callers of kafka_asgi never see an anyio, ``OSError`` or ``ssl`` exception: the
connection code runs its I/O inside :func:`map_exceptions`, which turns them into the
classes below (all under :class:`~kafka_asgi.protocol.errors.KafkaError`).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import anyio

from kafka_asgi.protocol.errors import KafkaError

__all__ = [
    "AuthenticationError",
    "ClientRequestTimeoutError",
    "ConnectError",
    "ConnectionClosedError",
    "NetworkError",
    "RequestTimeout",
    "TLSError",
    "map_exceptions",
]


class NetworkError(KafkaError):
    """The connection to a broker failed; trying again (maybe on another broker) may work."""

    retriable = True
    # Connection loss is one of the signs that the metadata (who leads what) is stale.
    invalid_metadata = True


class ConnectError(NetworkError):
    """A connection to a broker could not be made (refused, unreachable, timed out)."""


class ConnectionClosedError(NetworkError):
    """The connection closed (or broke) while a request was waiting on it."""


class ClientRequestTimeoutError(NetworkError):
    """No response arrived within the client's request timeout (``request_timeout``).

    The client gave up waiting; not to be confused with Kafka's ``REQUEST_TIMED_OUT``
    error code (:class:`~kafka_asgi.protocol.errors.RequestTimedOutError`), which a
    broker returns when *it* timed out (waiting for replicas, say).
    """


RequestTimeout = ClientRequestTimeoutError
"""The name this error had before: kept so that old imports and handlers still work."""


class TLSError(ConnectError):
    """The TLS handshake failed: certificate not trusted, wrong host name, no client cert.

    Not retriable: the same certificates will fail the same way next time.
    """

    retriable = False
    invalid_metadata = False


class AuthenticationError(KafkaError):
    """SASL authentication failed (wrong credentials, mechanism not enabled on the broker).

    Not retriable: retrying with the same credentials would only hammer the broker.
    The message never contains the credentials.
    """

    retriable = False


# Order matters: the first matching class wins (ssl.SSLError is an OSError).
CONNECT_ERRORS: Mapping[type[BaseException], type[KafkaError]] = {
    ssl.SSLError: TLSError,
    ssl.CertificateError: TLSError,
    anyio.BrokenResourceError: ConnectError,
    anyio.EndOfStream: ConnectError,
    anyio.IncompleteRead: ConnectError,
    anyio.ClosedResourceError: ConnectError,
    OSError: ConnectError,
    # A host name IDNA cannot encode (the idna package's errors are UnicodeErrors):
    # as one that does not resolve, that broker cannot be reached.
    UnicodeError: ConnectError,
}

# Once the connection is open, an SSL error (a corrupted record, an alert mid-stream)
# is a broken connection like any other, not a certificate that will fail again.
IO_ERRORS: Mapping[type[BaseException], type[KafkaError]] = {
    ssl.SSLError: ConnectionClosedError,
    anyio.BrokenResourceError: ConnectionClosedError,
    anyio.EndOfStream: ConnectionClosedError,
    anyio.IncompleteRead: ConnectionClosedError,
    anyio.ClosedResourceError: ConnectionClosedError,
    OSError: ConnectionClosedError,
}

# The Kafka handshake (ApiVersions, SASL) right after the TLS one: with TLS 1.3 the
# server's verdict on our certificate (none sent, not trusted) arrives as an alert on
# the first read, and is still a configuration failure. (SSLError keeps its place,
# ahead of OSError, which it is.)
HANDSHAKE_IO_ERRORS: Mapping[type[BaseException], type[KafkaError]] = {
    **IO_ERRORS,
    ssl.SSLError: TLSError,
}


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None):
        text = f"{exc.reason}: {getattr(exc, 'verify_message', None) or text}"
    return text or type(exc).__name__


@contextmanager
def map_exceptions(
    mapping: Mapping[type[BaseException], type[KafkaError]], context: str
) -> Iterator[None]:
    """Re-raise an I/O exception as the first matching KafkaError class in ``mapping``.

    ``context`` (say ``"connecting to 127.0.0.1:9092"``) starts the new message; the
    original exception stays attached as ``__cause__`` for debugging.
    """
    try:
        yield
    except KafkaError:
        raise
    except Exception as exc:
        for source, target in mapping.items():
            if isinstance(exc, source):
                raise target(f"{context}: {_describe(exc)}") from exc
        raise
