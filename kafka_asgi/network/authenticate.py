"""Driving one SASL exchange over a connection: KIP-43 handshake, KIP-152 frames, KIP-368.

The mechanisms (:mod:`~kafka_asgi.network.sasl`, :mod:`~kafka_asgi.network.oauthbearer`)
are sans-I/O; this module moves their tokens. The connection hands it the I/O it has at
that moment: before the reader task runs, plain request/response round trips; when
re-authenticating an open connection (KIP-368), round trips through the reader.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from kafka_asgi.network.config import Credentials
from kafka_asgi.network.errors import AuthenticationError, ConnectionClosedError
from kafka_asgi.network.oauthbearer import OAuthBearerCredentials, OAuthBearerMechanism
from kafka_asgi.network.sasl import SaslMechanism
from kafka_asgi.protocol.errors import UnsupportedSaslMechanismError, error_for_code
from kafka_asgi.protocol.framing import decode_response
from kafka_asgi.protocol.messages import (
    Message,
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)

__all__ = ["SaslIO", "new_mechanism", "run_exchange"]

logger = logging.getLogger("kafka_asgi.network")

_UNSUPPORTED_SASL_MECHANISM = UnsupportedSaslMechanismError.code


class SaslIO:
    """What an exchange needs of the connection at the time it runs."""

    __slots__ = ("address", "choose_version", "receive_raw", "roundtrip", "scrub", "send_raw")

    def __init__(
        self,
        address: str,
        choose_version: Callable[..., int],
        roundtrip: Callable[[Message, int], Awaitable[bytes]],
        scrub: Callable[[str], str],
        send_raw: Callable[[bytes], Awaitable[None]] | None = None,
        receive_raw: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self.address = address
        self.choose_version = choose_version
        self.roundtrip = roundtrip
        self.scrub = scrub
        self.send_raw = send_raw
        self.receive_raw = receive_raw


async def new_mechanism(credentials: Credentials, timeout: float) -> SaslMechanism:
    """A fresh mechanism for one exchange (OAUTHBEARER asks its token cache first)."""
    if isinstance(credentials, OAuthBearerCredentials):
        return OAuthBearerMechanism(await credentials.token(timeout))
    return credentials.new_mechanism()


async def run_exchange(io: SaslIO, mechanism: SaslMechanism, *, framed: bool) -> int:
    """SaslHandshake then the mechanism's tokens; the session lifetime in ms (0: none).

    ``framed``: tokens in SaslAuthenticate requests (KIP-152; always so when
    re-authenticating) rather than raw size-prefixed frames after SaslHandshake v0.
    Raises AuthenticationError naming the mechanism and the broker's reason.
    """
    address = io.address
    handshake_version = io.choose_version(
        SaslHandshakeRequest.API_KEY, min=1 if framed else 0, max=1 if framed else 0
    )
    frame = await io.roundtrip(SaslHandshakeRequest(mechanism=mechanism.name), handshake_version)
    _, handshake = decode_response(SaslHandshakeResponse, frame, handshake_version)
    if handshake.error_code:
        offered = ", ".join(handshake.mechanisms) or "none"
        if handshake.error_code == _UNSUPPORTED_SASL_MECHANISM:
            reason = f"mechanism {mechanism.name} is not enabled (the broker offers {offered})"
        else:
            # ILLEGAL_SASL_STATE: typically a listener that does not do SASL at all.
            reason = (
                f"{error_for_code(handshake.error_code).name} for {mechanism.name}"
                f" (is this a SASL listener? the broker offers {offered})"
            )
        raise AuthenticationError(
            f"{address}: SASL handshake refused: {reason} (error code {handshake.error_code})"
        )
    auth_version = io.choose_version(SaslAuthenticateRequest.API_KEY) if framed else None
    lifetime_ms = 0
    token: bytes | None = mechanism.start()
    while token is not None:
        if auth_version is not None:
            frame = await io.roundtrip(SaslAuthenticateRequest(auth_bytes=token), auth_version)
            _, reply = decode_response(SaslAuthenticateResponse, frame, auth_version)
            if reply.error_code:
                detail = ""
                if isinstance(mechanism, OAuthBearerMechanism) and mechanism.error_status:
                    detail = f"; token status {io.scrub(mechanism.error_status)}"
                raise AuthenticationError(
                    f"{address}: SASL {mechanism.name} authentication failed:"
                    f" {io.scrub(reply.error_message or '')}{detail}"
                    f" (error code {reply.error_code})"
                )
            if reply.session_lifetime_ms > 0:
                lifetime_ms = reply.session_lifetime_ms
            challenge = reply.auth_bytes
        else:
            assert io.send_raw is not None and io.receive_raw is not None
            await io.send_raw(len(token).to_bytes(4, "big") + token)
            # Every raw token gets a raw answer, even a mechanism's last one: the
            # broker (SaslServerAuthenticator without KIP-152 headers) sends PLAIN's
            # empty response as a 0-byte frame, which left unread would be taken for
            # the first Kafka response. A refusal closes the connection instead.
            try:
                challenge = await io.receive_raw()
            except ConnectionClosedError:
                raise AuthenticationError(
                    f"{address}: the broker closed the connection during SASL"
                    f" {mechanism.name} authentication (wrong credentials?)"
                ) from None
            if mechanism.complete:
                if challenge:
                    raise AuthenticationError(
                        f"{address}: SASL {mechanism.name}: unexpected {len(challenge)}"
                        " bytes from the broker after the exchange ended"
                    )
                break
        token = mechanism.respond(challenge)
    logger.debug("%s: authenticated with SASL %s", address, mechanism.name)
    return lifetime_ms
