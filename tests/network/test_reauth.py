"""KIP-368 re-authentication, step by step, against a scripted peer: the order of the
frames on the wire (which a real broker never shows) and what in-flight requests see.
tests/oauth/ covers the same against the real broker's OAUTHBEARER listeners."""

from __future__ import annotations

import time

import anyio
import pytest

from kafka_asgi.errors import AuthenticationError
from kafka_asgi.network.connection import BrokerConnection
from kafka_asgi.protocol.messages import (
    MetadataRequest,
    MetadataResponse,
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeResponse,
)
from tests.support.fake_peer import Peer, all_versions, fake_broker
from tests.support.timing import scaled

SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 17, 36, 3
LIFETIME_MS = 1500


class Tokens:
    """A provider handing out tok1, tok2, ... and remembering what it gave."""

    def __init__(self) -> None:
        self.issued: list[str] = []

    def __call__(self) -> tuple[str, float]:
        self.issued.append(f"tok{len(self.issued) + 1}")
        # Short-lived: every exchange (connect, re-authenticate) gets a new one.
        return self.issued[-1], time.time() + 2.5


async def authenticate(peer: Peer, log: list[str], *, refuse: bool = False) -> None:
    api_key, version, corr = await peer.read_request()
    assert api_key == SASL_HANDSHAKE
    log.append("handshake")
    await peer.respond(corr, SaslHandshakeResponse(mechanisms=["OAUTHBEARER"]), version)
    api_key, version, corr, body = await peer.read_request_body()
    assert api_key == SASL_AUTHENTICATE
    token = SaslAuthenticateRequest.decode(body, version).auth_bytes.split(b"Bearer ")[1]
    log.append("authenticate " + token.split(b"\x01")[0].decode())
    if refuse:
        reply = SaslAuthenticateResponse(error_code=58, error_message="token refused")
    else:
        reply = SaslAuthenticateResponse(session_lifetime_ms=LIFETIME_MS)
    await peer.respond(corr, reply, version)


def versions() -> object:
    # SaslHandshake v1 and SaslAuthenticate v1: plain (not flexible) request headers.
    return all_versions({SASL_HANDSHAKE: (0, 1), SASL_AUTHENTICATE: (0, 1)})


async def metadata(conn: BrokerConnection) -> None:
    version = conn.choose_api_version(MetadataRequest.API_KEY)
    await conn.request(MetadataRequest(topics=[]), version)


@pytest.mark.parametrize("refuse", [False, True])
async def test_in_flight_requests_finish_before_the_exchange(
    anyio_backend: str, refuse: bool
) -> None:
    log: list[str] = []
    release_first = anyio.Event()

    async def script(peer: Peer) -> None:
        _, version, corr = await peer.read_request()
        await peer.respond(corr, versions(), version)  # type: ignore[arg-type]
        await authenticate(peer, log)
        # The first request: held until the test says so.
        api_key, v1, c1 = await peer.read_request()
        assert api_key == METADATA
        log.append("request 1")
        await release_first.wait()
        # Nothing else may arrive while request 1 is unanswered.
        with anyio.move_on_after(0.3):
            await peer.read_request()
            log.append("UNEXPECTED frame while request 1 was in flight")
        log.append("response 1")
        await peer.respond(c1, MetadataResponse(), v1)
        await authenticate(peer, log, refuse=refuse)
        if refuse:
            return
        for name in ("request 2", "request 3"):
            api_key, v2, c2 = await peer.read_request()
            assert api_key == METADATA
            log.append(name)
            await peer.respond(c2, MetadataResponse(), v2)
        await anyio.sleep_forever()

    tokens = Tokens()
    async with fake_broker(script) as port:
        with anyio.fail_after(scaled(20)):
            async with BrokerConnection(
                "127.0.0.1",
                port,
                sasl_mechanism="OAUTHBEARER",
                sasl_oauth_token_provider=tokens,
            ) as conn:
                outcomes: dict[str, BaseException | None] = {}

                async def run(name: str) -> None:
                    try:
                        await metadata(conn)
                        outcomes[name] = None
                    except Exception as exc:
                        outcomes[name] = exc

                async with anyio.create_task_group() as tg:
                    tg.start_soon(run, "first")
                    # Past the re-authentication time (85-90% of 1.5 s).
                    await anyio.sleep(1.45)
                    tg.start_soon(run, "second")
                    await anyio.sleep(0.2)
                    tg.start_soon(run, "third")  # waits for the write lock
                    await anyio.sleep(0.2)
                    release_first.set()
                assert outcomes["first"] is None, "an in-flight request must not fail"
                if refuse:
                    assert isinstance(outcomes["second"], AuthenticationError)
                    assert isinstance(outcomes["third"], AuthenticationError)
                    assert "token refused" in str(outcomes["second"])
                    assert conn.closed
                else:
                    assert outcomes["second"] is None and outcomes["third"] is None
                    assert conn.reauthentications == 1
    expected = [
        "handshake",
        "authenticate tok1",
        "request 1",
        "response 1",
        "handshake",
        "authenticate tok2",
    ]
    assert log[: len(expected)] == expected
    assert "UNEXPECTED" not in " ".join(log)
    # Refused: nothing more is written on the connection.
    assert log[len(expected) :] == ([] if refuse else ["request 2", "request 3"])
