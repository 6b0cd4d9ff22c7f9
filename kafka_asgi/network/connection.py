"""One connection to one broker: framing, correlation ids, pipelining, TLS, SASL, versions.

Kafka answers the requests of one connection in the order they were sent (protocol
guide, "Network"), so the connection keeps its in-flight requests in send order: one
reader task takes each response frame off the socket and hands it to the oldest waiting
request, whose correlation id must match; anything else means the byte stream is out
of step and the connection is closed. Writes go through a lock so frames never
interleave. A request cancelled while its frame is being written closes the
connection: a partial frame would leave the byte stream out of step, and shielding
the write instead would let a broker that stopped reading hold the caller (say, a
closing producer) until the request timeout.

A request that times out closes the connection (the Java client does the same): the
broker answers in order, so every later response on it would wait behind the lost one.
Not so one that only waited to send behind a re-authentication (KIP-368) waiting for
the requests in flight: nothing of either is on the wire, and the re-authentication's
own timeout bounds that wait.

Setting up a connection: TCP (+ TLS) within ``connect_timeout``; then, sequentially
and before the reader starts, ApiVersions (KIP-35, KIP-511) and SASL (KIP-43, KIP-152)
within ``request_timeout``.
"""

from __future__ import annotations

import builtins
import itertools
import logging
import random
from collections.abc import Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, NoReturn

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.buffered import BufferedByteReceiveStream

from kafka_asgi._version import __version__
from kafka_asgi.network.authenticate import SaslIO, new_mechanism, run_exchange
from kafka_asgi.network.config import ConnectionConfig, check_timeout
from kafka_asgi.network.errors import (
    CONNECT_ERRORS,
    HANDSHAKE_IO_ERRORS,
    IO_ERRORS,
    AuthenticationError,
    ClientRequestTimeoutError,
    ConnectError,
    ConnectionClosedError,
    TLSError,
    map_exceptions,
)
from kafka_asgi.network.sasl import SaslMechanism
from kafka_asgi.protocol.errors import (
    KafkaError,
    ProtocolError,
    UnsupportedVersionError,
)
from kafka_asgi.protocol.framing import (
    MAX_FRAME_SIZE,
    SIZE_PREFIX_LENGTH,
    decode_response,
    encode_request,
    frame_size,
    peek_correlation_id,
)
from kafka_asgi.protocol.messages import (
    REQUEST_TYPES,
    RESPONSE_TYPES,
    ApiVersionsRequest,
    ApiVersionsResponse,
    Message,
    SaslAuthenticateRequest,
)

__all__ = ["BrokerConnection", "ConnectionConfig", "check_timeout"]

logger = logging.getLogger("kafka_asgi.network")

_UNSUPPORTED_VERSION = 35
_SOFTWARE_NAME = "kafka-asgi"
# KIP-368: re-authenticate between 85% and 90% of the session lifetime (Java: 85-95%),
# and never within a second of the last time (the broker refuses that).
_REAUTH_AT = (0.85, 0.9)
_REAUTH_MIN_INTERVAL = 1.05
# Closing our side of a socket never waits for the peer (TLS close_notify is not
# awaited: tls_standard_compatible=False), so this bound is rarely reached; it keeps
# aclose() within a producer's close slack even if a stream's close misbehaves.
_CLOSE_TIMEOUT = 0.2


class _Waiter:
    """One request waiting for its response frame."""

    __slots__ = ("abandoned", "error", "event", "frame")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.frame: bytes | None = None
        self.error: KafkaError | None = None
        self.abandoned = False


class BrokerConnection:
    """A connection to one broker, carrying many requests at once.

    ``async with BrokerConnection(host, port, **client_options) as conn:`` runs the
    reader in a task group of its own; a client owning many connections passes its
    task group to :meth:`connect` instead, and closes each with :meth:`aclose`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        config: ConnectionConfig | None = None,
        *,
        node_id: int | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty str, not {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an int in 1..65535, not {port!r}")
        if config is not None and options:
            raise TypeError("pass either config or client options, not both")
        self.host = host
        self.port = port
        self.node_id = node_id
        self.config = config if config is not None else ConnectionConfig.from_options(**options)
        self.api_versions: dict[int, tuple[int, int]] = {}
        self.handshake_throttle: tuple[int, ApiVersionsResponse, float] | None = None
        """``(version, response, anyio time)`` of an ApiVersions handshake answered
        over a client quota, until the client notes it."""
        self._stream: anyio.abc.ByteStream | None = None
        self._rx: BufferedByteReceiveStream | None = None
        self._write_lock = anyio.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._correlation = itertools.count(1)
        self._closed: KafkaError | None = None
        self._reader_scope: anyio.CancelScope | None = None
        self._reader_done = anyio.Event()
        self._reader_started = False
        self._exit_stack: AsyncExitStack | None = None
        self._state = "new"
        self.in_flight = 0
        """Requests started on this connection and not finished (the pool balances on it)."""
        self.last_used = 0.0
        self.expires_at: float | None = None
        """Event-loop time at which the broker ends the SASL session (KIP-368)."""
        # When the next request re-authenticates first (KIP-368), and whether one is.
        self._reauth_at: float | None = None
        # A session too short to renew in place: stop handing out the connection then.
        self._retire_at: float | None = None
        self._reauthenticating = False
        # A re-authentication holds the write lock, waiting for the requests in flight
        # to be answered: nothing of it is on the wire yet.
        self._reauth_draining = False
        self._last_auth = 0.0
        self._drained: anyio.Event | None = None
        self.reauthentications = 0
        """Successful KIP-368 re-authentications on this connection."""
        # Requests written without a response to wait for (Produce with acks=0), and
        # how many of them a later response has confirmed: the broker answers a
        # connection's requests in order, so any answer to a request written after
        # them means it read them.
        self._blind_writes = 0
        self._confirmed_writes = 0

    def __repr__(self) -> str:
        node = f" node={self.node_id}" if self.node_id is not None else ""
        return f"<BrokerConnection {self.host}:{self.port}{node} {self.state}>"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def state(self) -> str:
        """``new``, ``connecting``, ``open`` or ``closed``."""
        return "closed" if self._closed is not None else self._state

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def usable(self) -> bool:
        """Open, and its SASL session renewable in place (KIP-368) or not about to end."""
        if self._closed is not None or self._state != "open":
            return False
        return self._retire_at is None or anyio.current_time() < self._retire_at

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> BrokerConnection:
        stack = AsyncExitStack()
        tg = await stack.enter_async_context(anyio.create_task_group())
        try:
            await self.connect(tg)
        except BaseException:
            # Leave the (empty) task group before re-raising, so the caller gets the
            # error itself rather than an exception group around it.
            tg.cancel_scope.cancel()
            await stack.aclose()
            raise
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            # The reader has finished: the task group exits empty.
            await stack.aclose()

    async def connect(
        self, task_group: anyio.abc.TaskGroup, handshake_timeout: float | None = None
    ) -> None:
        """Open the socket, negotiate versions, authenticate, start the reader.

        The handshake (versions, SASL) is bounded by ``handshake_timeout`` when
        given and shorter than the configured request_timeout (a caller whose
        request has a shorter timeout must not wait longer for its connection).
        Raises ConnectError (or TLSError) when the broker cannot be reached or the
        TLS handshake fails, AuthenticationError when SASL fails.
        """
        if self._state != "new":
            raise RuntimeError(f"{self!r} was already started")
        self._state = "connecting"
        try:
            limit = self.config.request_timeout
            if handshake_timeout is not None:
                limit = min(limit, handshake_timeout)
            mechanism: SaslMechanism | None = None
            if self.config.sasl is not None:
                # Before the socket: a token provider that fails costs no connection.
                # Bounded by the caller's limit too: it waits for the token as well.
                mechanism = await new_mechanism(self.config.sasl, limit)
            self._stream = await self._open_stream()
            self._rx = BufferedByteReceiveStream(self._stream)
            try:
                with anyio.fail_after(limit):
                    await self._negotiate_versions()
                    if mechanism is not None:
                        await self._authenticate(mechanism)
            except TimeoutError:
                raise ConnectError(
                    f"{self.address}: no answer to the connection handshake within {limit}s"
                ) from None
            except ProtocolError as exc:
                if self.config.ssl_context is None:
                    # A TLS alert read as a Kafka size prefix gives an absurd frame size.
                    raise ProtocolError(
                        f"{exc} (is this a TLS listener? then set ssl=True or ssl_cafile)"
                    ) from exc
                raise
            await task_group.start(self._reader)
        except BaseException as exc:
            error = exc if isinstance(exc, KafkaError) else ConnectionClosedError("connect aborted")
            self._fail(error)
            await self._close_stream()
            if isinstance(exc, (ConnectionClosedError, ClientRequestTimeoutError)):
                # Closed (or silent) before the handshake finished: a broker shutting
                # down, a proxy in front of one that is down. Nothing of the caller's
                # was written: a failure to connect, as retries and backoff read it.
                raise ConnectError(f"{self.address}: closed during the handshake: {exc}") from exc
            raise
        self._state = "open"
        self.last_used = anyio.current_time()

    async def aclose(self) -> None:
        """Close the connection; every waiting request fails with ConnectionClosedError."""
        self._fail(ConnectionClosedError(f"{self.address}: connection closed by the client"))
        if self._reader_started:
            if self._reader_scope is not None:
                self._reader_scope.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT * 2):
                await self._reader_done.wait()
        else:
            await self._close_stream()

    def _fail(self, error: KafkaError) -> None:
        """Mark the connection closed (first error wins) and wake every waiter."""
        if self._closed is None:
            self._closed = error
            if self._state == "open":
                logger.debug("connection to %s closed: %s", self.address, error)
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.error = error
            waiter.event.set()
        if self._drained is not None:
            self._drained.set()
        if self._reader_scope is not None:
            self._reader_scope.cancel()

    def abort(self, error: KafkaError) -> None:
        """Close the connection now (without waiting): its requests fail with ``error``."""
        self._fail(error)

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(_CLOSE_TIMEOUT):
                try:
                    await stream.aclose()
                    return
                except Exception:  # closing a broken stream: nothing left to report
                    pass
            await anyio.aclose_forcefully(stream)

    async def _open_stream(self) -> anyio.abc.ByteStream:
        host = self.host
        if self.config.resolver is not None:
            try:
                host = self.config.resolver(self.host)
            except Exception as exc:
                raise ConnectError(f"resolver failed for {self.host!r}: {exc!r}") from exc
            if not isinstance(host, str) or not host:
                raise ConnectError(f"resolver returned {host!r} for {self.host!r}, not a host")
        context = f"connecting to {self.address}"
        if host != self.host:
            context += f" ({host})"
        tls = self.config.ssl_context
        try:
            with anyio.fail_after(self.config.connect_timeout):
                with map_exceptions(CONNECT_ERRORS, context):
                    if tls is None:
                        return await anyio.connect_tcp(host, self.port)
                    # SNI and the host name check use the broker's advertised name even
                    # when a resolver redirected the TCP connection.
                    return await anyio.connect_tcp(
                        host,
                        self.port,
                        tls=True,
                        ssl_context=tls,
                        tls_hostname=self.host,
                        tls_standard_compatible=False,
                    )
        except TimeoutError:
            raise ConnectError(
                f"{context}: timed out after {self.config.connect_timeout}s"
            ) from None
        except ConnectError as exc:
            if tls is not None and isinstance(
                exc.__cause__, (anyio.EndOfStream, anyio.BrokenResourceError)
            ):
                # Most often TLS pointed at a plaintext listener: a configuration
                # error (TLSError, not retried), as a failed certificate check is.
                raise TLSError(
                    f"{context}: the broker closed the connection during the TLS handshake"
                    " (is this a plaintext listener?)"
                ) from exc
            raise

    # ------------------------------------------------------------------ handshake I/O

    def _io_errors(self) -> Mapping[type[BaseException], type[KafkaError]]:
        # Before the reader runs, the I/O is the Kafka handshake that follows TLS's,
        # where an SSL error is still a TLS failure (see HANDSHAKE_IO_ERRORS).
        return IO_ERRORS if self._reader_started else HANDSHAKE_IO_ERRORS

    async def _send_frame(self, data: bytes) -> None:
        assert self._stream is not None
        with map_exceptions(self._io_errors(), f"sending to {self.address}"):
            await self._stream.send(data)

    async def _receive_frame(self) -> bytes:
        """One size-prefixed frame, without the prefix."""
        assert self._rx is not None
        with map_exceptions(self._io_errors(), f"reading from {self.address}"):
            prefix = await self._rx.receive_exactly(SIZE_PREFIX_LENGTH)
            try:
                size = frame_size(prefix, MAX_FRAME_SIZE)
            except ProtocolError as exc:
                raise ProtocolError(f"{self.address}: {exc}; closing the connection") from None
            return await self._rx.receive_exactly(size)

    async def _roundtrip(self, request: Message, version: int) -> bytes:
        """Send one request and read its response frame (before the reader runs)."""
        correlation_id = self._next_correlation_id()
        await self._send_frame(
            encode_request(request, version, correlation_id, self.config.client_id)
        )
        frame = await self._receive_frame()
        got = peek_correlation_id(frame)
        if got != correlation_id:
            raise ProtocolError(
                f"{self.address} answered correlation id {got}, expected {correlation_id}"
            )
        return frame

    async def _negotiate_versions(self) -> None:
        version = ApiVersionsRequest.MAX_VERSION
        request = ApiVersionsRequest(
            client_software_name=_SOFTWARE_NAME,
            client_software_version=__version__,
        )
        for _ in range(2):
            frame = await self._roundtrip(request, version)
            # KIP-511: a broker that does not know our ApiVersions version answers in
            # v0 with UNSUPPORTED_VERSION and, in api_keys, the range it does support.
            # Every version starts the body with the int16 error code (header v0 is
            # the 4-byte correlation id).
            if len(frame) >= 6 and int.from_bytes(frame[4:6], "big", signed=True) == (
                _UNSUPPORTED_VERSION
            ):
                _, legacy = decode_response(ApiVersionsResponse, frame, 0)
                theirs = {k.api_key: k.max_version for k in legacy.api_keys}
                retry = min(theirs.get(ApiVersionsRequest.API_KEY, 0), version - 1)
                logger.debug(
                    "%s: ApiVersions v%d unsupported, retrying v%d", self.address, version, retry
                )
                version = max(retry, 0)
                continue
            _, response = decode_response(ApiVersionsResponse, frame, version)
            if response.error_code:
                raise ConnectError(
                    f"{self.address}: ApiVersions failed with error code {response.error_code}"
                )
            self.api_versions = {
                k.api_key: (k.min_version, k.max_version) for k in response.api_keys
            }
            if response.throttle_time_ms > 0:
                # A client quota (a request quota counts ApiVersions too): the client
                # that takes this connection notes it (KafkaClient.send_built).
                self.handshake_throttle = (version, response, anyio.current_time())
            return
        raise ConnectError(f"{self.address}: no ApiVersions version in common with the broker")

    def choose_api_version(
        self, api_key: int, min: int | None = None, max: int | None = None
    ) -> int:
        """The highest version of ``api_key`` that both this client and the broker speak.

        ``min``/``max`` narrow our own range (say, a feature needing v3+). Raises
        UnsupportedVersionError naming the API and both ranges when they do not meet.
        """
        cls = REQUEST_TYPES.get(api_key)
        if cls is None:
            raise ValueError(f"api_key {api_key!r} is not an API this client implements")
        name = f"{cls.API_NAME} (api key {api_key})"
        lo = cls.MIN_VERSION if min is None else builtins.max(cls.MIN_VERSION, min)
        hi = cls.MAX_VERSION if max is None else builtins.min(cls.MAX_VERSION, max)
        ours = f"{lo}-{hi}"
        if lo > hi:
            raise UnsupportedVersionError(
                f"{name}: the requested versions {min}-{max} are outside this client's"
                f" {cls.MIN_VERSION}-{cls.MAX_VERSION}"
            )
        theirs = self.api_versions.get(api_key)
        if theirs is None:
            raise UnsupportedVersionError(
                f"{name}: the broker at {self.address} does not offer this API"
                f" (client speaks {ours})"
            )
        version = builtins.min(hi, theirs[1])
        if version < builtins.max(lo, theirs[0]):
            raise UnsupportedVersionError(
                f"{name}: no version in common; client speaks {ours}, the broker at"
                f" {self.address} speaks {theirs[0]}-{theirs[1]}"
            )
        return version

    async def _authenticate(self, mechanism: SaslMechanism) -> None:
        # KIP-152: with SaslAuthenticate the tokens travel in Kafka frames (and errors
        # come back as error codes); without it, SaslHandshake v0 is followed by raw
        # size-prefixed tokens and a failure just closes the connection.
        framed = SaslAuthenticateRequest.API_KEY in self.api_versions
        io = SaslIO(
            self.address,
            self.choose_api_version,
            self._roundtrip,
            self._scrub,
            self._send_frame,
            self._receive_frame,
        )
        self._session_started(await run_exchange(io, mechanism, framed=framed))

    def _session_started(self, lifetime_ms: int) -> None:
        now = anyio.current_time()
        self._last_auth = now
        self._retire_at = None
        if lifetime_ms <= 0:
            self.expires_at = self._reauth_at = None
            return
        lifetime = lifetime_ms / 1000
        self.expires_at = now + lifetime
        wait = random.uniform(*_REAUTH_AT) * lifetime
        if wait < _REAUTH_MIN_INTERVAL:
            # The broker refuses a re-authentication within a second of the last one:
            # this session ends first. Let it finish what it carries; new requests go
            # to a new connection.
            self._reauth_at = None
            self._retire_at = now + wait
            logger.debug("%s: SASL session of %.2fs too short to renew", self.address, lifetime)
            return
        self._reauth_at = now + wait

    async def _reauthenticate(self, name: str, wait: float) -> None:
        """KIP-368: authenticate again on this open connection before the session ends.

        The token (or a fresh SCRAM exchange) is made ready first, while requests
        still flow. Then new writes pause (the write lock), the requests in flight get
        their responses, the handshake runs through the reader, and writes resume:
        nothing in flight fails or changes order. A refusal closes the connection
        with AuthenticationError.

        The request ``name`` that found the session due waits for the requests in
        flight no longer than its own timeout ``wait``: past it, or cancelled by its
        caller, it fails alone (ClientRequestTimeoutError, nothing of it written),
        the connection stays, and the session is still due, so the next request
        tries again. The requests in flight keep their own timeouts: a long poll
        (a fetch waiting up to max_wait) is answered, not cut at request_timeout,
        and a broker that went silent is found out by them, closing the connection
        as a timed-out request does. (A write stuck before it, the broker not
        reading, closes the connection as it would for any request.) The exchange
        itself is bounded by request_timeout; interrupted once started, it closes the
        connection. What the caller's timeout has left after it bounds its request.
        """
        credentials = self.config.sasl
        assert credentials is not None
        limit = self.config.request_timeout
        self._reauthenticating = True
        try:
            mechanism = await new_mechanism(credentials, limit)
            lock = self._write_lock
            # One deadline for the lock and the drain: the caller's timeout, once.
            deadline = anyio.current_time() + wait
            with anyio.CancelScope(deadline=deadline) as waiting:
                await lock.acquire()
            if waiting.cancelled_caught:
                # The holder is a write the broker does not read (only this attempt
                # drains): as for any request that cannot send.
                self._timed_out(name, wait, "waiting to send")
            try:
                self._reauth_draining = True
                with anyio.CancelScope(deadline=deadline) as draining:
                    while self._pending and self._closed is None:
                        self._drained = anyio.Event()
                        await self._drained.wait()
                self._reauth_draining = False
                if self._closed is not None:
                    return
                if draining.cancelled_caught:
                    raise ClientRequestTimeoutError(
                        f"{self.address}: {name} timed out after {wait}s (waiting to send:"
                        f" a re-authentication waits for {len(self._pending)} request(s)"
                        " in flight)"
                    )
                await self._reauth_exchange(mechanism, limit)
            finally:
                self._reauth_draining = False
                lock.release()
            self.reauthentications += 1
        except AuthenticationError as exc:
            # The broker closes the connection right after refusing, and the reader may
            # have seen that first: report the refusal, not the close that followed.
            if isinstance(self._closed, ConnectionClosedError):
                self._closed = exc
            self._fail(exc)
            raise
        finally:
            self._reauthenticating = False
        logger.debug("%s: re-authenticated (KIP-368)", self.address)

    async def _reauth_exchange(self, mechanism: SaslMechanism, limit: float) -> None:
        """The handshake and authentication frames, the write lock held, nothing in
        flight. Interrupted (out of time, cancelled, a broker error), it closes the
        connection: the broker is between handshake steps, so nothing else may be
        sent on this stream."""
        io = SaslIO(self.address, self.choose_api_version, self._reauth_roundtrip, self._scrub)
        try:
            with anyio.fail_after(limit):
                lifetime = await run_exchange(io, mechanism, framed=True)
        except KafkaError as exc:
            self._fail(exc)
            raise
        except TimeoutError:
            error = ConnectionClosedError(
                f"{self.address}: re-authentication took longer than {limit}s"
            )
            self._fail(error)
            raise error from None
        except BaseException:
            self._fail(
                ConnectionClosedError(
                    f"{self.address}: closed after re-authentication was interrupted"
                )
            )
            raise
        self._session_started(lifetime)

    async def _reauth_roundtrip(self, request: Message, version: int) -> bytes:
        """One request and its response through the reader, with the write lock held."""
        correlation_id = self._next_correlation_id()
        waiter = _Waiter()
        self._pending[correlation_id] = waiter
        await self._send_frame(
            encode_request(request, version, correlation_id, self.config.client_id)
        )
        await waiter.event.wait()
        if waiter.error is not None:
            raise _copy_error(waiter.error, request.API_NAME)
        assert waiter.frame is not None
        return waiter.frame

    def _scrub(self, text: str) -> str:
        """A broker message with the credentials (if it ever echoed them) masked."""
        sasl = self.config.sasl
        if sasl is not None:
            for secret in sasl.secrets():
                if secret:
                    text = text.replace(secret, "***")
        return text

    # ------------------------------------------------------------------ requests

    def _next_correlation_id(self) -> int:
        value = next(self._correlation)
        if value >= 0x7FFFFFFF:
            self._correlation = itertools.count(1)
        return value & 0x7FFFFFFF

    async def request(
        self,
        request: Message,
        version: int,
        *,
        expect_response: bool = True,
        request_timeout: float | None = None,
    ) -> Any:
        """Send ``request`` at ``version`` and return the decoded response.

        With ``expect_response=False`` (Produce with acks=0, where the broker sends
        nothing back) returns None once the frame is written. ``request_timeout``
        defaults to the client option of that name. Raises ClientRequestTimeoutError,
        ConnectionClosedError, ProtocolError; a broker error code inside the
        response is returned as is (the caller knows which ones it can retry).
        """
        response_cls = RESPONSE_TYPES.get(request.API_KEY)
        if response_cls is None:
            raise ValueError(f"{type(request).__name__} is not a request this client knows")
        limit = (
            self.config.request_timeout
            if request_timeout is None
            else check_timeout("request_timeout", request_timeout)
        )
        assert limit is not None
        self.in_flight += 1
        try:
            reauth_at = self._reauth_at
            if (
                reauth_at is not None
                and not self._reauthenticating
                and anyio.current_time() >= reauth_at
                and self._closed is None
            ):
                name = f"{request.API_NAME} v{version}"
                started = anyio.current_time()
                await self._reauthenticate(name, limit)
                left = limit - (anyio.current_time() - started)
                if left <= 0:
                    # Nothing of it written: it fails alone, the connection stays.
                    raise ClientRequestTimeoutError(
                        f"{self.address}: {name} timed out after {limit}s (waiting to"
                        " send, behind a re-authentication)"
                    )
                limit = left
            return await self._request(request, version, response_cls, expect_response, limit)
        finally:
            self.in_flight -= 1
            self.last_used = anyio.current_time()

    async def _request(
        self,
        request: Message,
        version: int,
        response_cls: type[Message],
        expect_response: bool,
        limit: float,
    ) -> Any:
        if self._closed is not None:
            raise self._closed_error()
        if self._state != "open":
            raise ConnectionClosedError(f"{self.address}: connection is not open ({self.state})")
        deadline = anyio.current_time() + limit
        name = f"{request.API_NAME} v{version}"
        lock = self._write_lock
        try:
            # Nobody writing (the usual case): no timer, no pass through the event loop.
            lock.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.move_on_after(limit) as lock_scope:
                await lock.acquire()
            if lock_scope.cancelled_caught:
                if self._reauth_draining:
                    # The lock holder is a re-authentication waiting for the requests
                    # in flight, not a write stuck on a broker that stopped reading:
                    # nothing is wrong with the connection, and nothing of this
                    # request was written.
                    raise ClientRequestTimeoutError(
                        f"{self.address}: {name} timed out after {limit}s (waiting to"
                        " send, behind a re-authentication)"
                    ) from None
                return self._timed_out(name, limit, "waiting to send")
        waiter: _Waiter | None = None
        stage = "sending"
        # One scope bounds the write and the wait for the response.
        with anyio.CancelScope(deadline=deadline) as scope:
            try:
                # A caller already cancelled (its deadline passed before it got here)
                # leaves now, before the stream is touched: past this point a cancel
                # counts as one mid-write and closes the connection, failing every
                # other request on it.
                await anyio.lowlevel.checkpoint_if_cancelled()
                if self._closed is not None:
                    raise self._closed_error()
                correlation_id = self._next_correlation_id()
                # An EncodeError here leaves the connection untouched: nothing was written.
                data = encode_request(request, version, correlation_id, self.config.client_id)
                confirms = 0
                if expect_response:
                    waiter = _Waiter()
                    # Registered before the write: the response may arrive before send
                    # returns.
                    self._pending[correlation_id] = waiter
                    confirms = self._blind_writes
                else:
                    self._blind_writes += 1
                try:
                    await self._send_frame(data)
                except KafkaError as exc:
                    self._fail(exc)
                    raise
                except BaseException:
                    # Cancelled (or out of time) mid-write: part of the frame may be
                    # on the wire and the rest will never follow, so the byte stream
                    # is unusable. Not shielded: a broker that stopped reading must
                    # not hold the caller (or a closing producer) until the deadline.
                    self._fail(
                        ConnectionClosedError(
                            f"{self.address}: closed after a request was cancelled or"
                            f" timed out while being written ({name})"
                        )
                    )
                    raise
            finally:
                lock.release()
            if waiter is None:
                return None
            stage = "waiting for the response"
            try:
                await waiter.event.wait()
            finally:
                if not waiter.event.is_set():
                    # Cancelled by the caller: the response still comes and is dropped.
                    waiter.abandoned = True
        if scope.cancelled_caught or waiter is None or not waiter.event.is_set():
            return self._timed_out(name, limit, stage)
        if waiter.error is not None:
            raise _copy_error(waiter.error, name)
        assert waiter.frame is not None
        if confirms > self._confirmed_writes:
            self._confirmed_writes = confirms
        _, response = decode_response(response_cls, waiter.frame, version)
        return response

    def _closed_error(self) -> KafkaError:
        closed = self._closed
        if isinstance(closed, AuthenticationError):
            # A refused re-authentication: the requests that waited to be written
            # report it as what it is, not as a retriable closed connection.
            return _copy_error(closed, "request not sent")
        return ConnectionClosedError(f"{self.address}: connection is closed ({closed})")

    @property
    def unconfirmed_writes(self) -> int:
        """Requests written without a response (acks=0) that no later response has
        confirmed the broker read."""
        return self._blind_writes - self._confirmed_writes

    async def confirm_writes(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the broker has read every request written without a response.

        A request written is only in the socket's buffers: closing the connection
        may drop it (an asyncio transport is aborted on close). When some are
        unconfirmed, sends an ApiVersions request and waits for its answer (the
        broker handles a connection's requests in order). Raises like
        :meth:`request` (``timeout`` defaults to ``request_timeout``).
        """
        if self._blind_writes == self._confirmed_writes:
            return
        version = self.choose_api_version(ApiVersionsRequest.API_KEY)
        request = ApiVersionsRequest(
            client_software_name=_SOFTWARE_NAME,
            client_software_version=__version__,
        )
        await self.request(request, version, request_timeout=timeout)

    def _timed_out(self, name: str, limit: float, stage: str) -> NoReturn:
        error = ClientRequestTimeoutError(
            f"{self.address}: {name} timed out after {limit}s ({stage})"
        )
        self._fail(
            ConnectionClosedError(f"{self.address}: closed after a request timed out ({name})")
        )
        raise error

    # ------------------------------------------------------------------ reader task

    async def _reader(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._reader_started = True
        try:
            with anyio.CancelScope() as scope:
                self._reader_scope = scope
                if self._closed is not None:
                    scope.cancel()
                task_status.started()
                try:
                    await self._read_loop()
                except KafkaError as exc:
                    self._fail(exc)
                except Exception as exc:
                    logger.exception("unexpected error reading from %s", self.address)
                    self._fail(ConnectionClosedError(f"{self.address}: reader failed: {exc!r}"))
        finally:
            self._fail(ConnectionClosedError(f"{self.address}: connection closed"))
            await self._close_stream()
            self._reader_done.set()

    async def _read_loop(self) -> None:
        while True:
            try:
                frame = await self._receive_frame()
            except ConnectionClosedError as exc:
                if not self._pending:
                    # An idle connection closed by the broker (connections.max.idle.ms)
                    # or by a restart: not an error for anyone.
                    logger.debug("%s", exc)
                raise
            correlation_id = peek_correlation_id(frame)
            if not self._pending:
                raise ProtocolError(
                    f"{self.address} sent a response (correlation id {correlation_id})"
                    " with no request waiting; closing the connection"
                )
            expected = next(iter(self._pending))
            if correlation_id != expected:
                raise ProtocolError(
                    f"{self.address} answered correlation id {correlation_id} but the"
                    f" oldest request in flight is {expected}; closing the connection"
                )
            waiter = self._pending.pop(expected)
            if not waiter.abandoned:
                waiter.frame = frame
                waiter.event.set()
            if not self._pending and self._drained is not None:
                self._drained.set()


def _copy_error(error: KafkaError, name: str) -> KafkaError:
    """A fresh exception per waiter (one instance raised in many tasks would share
    its traceback), keeping the class and adding the request's name."""
    try:
        clone = type(error)(f"{name}: {error}")
    except TypeError:
        return error
    clone.__cause__ = error
    return clone
