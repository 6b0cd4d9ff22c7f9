"""KIP-368 re-authentication, step by step, against a scripted peer: the order of the
frames on the wire (which a real broker never shows) and what in-flight requests see.
tests/oauth/ covers the same against the real broker's OAUTHBEARER listeners."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import pytest

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.errors import (
    AuthenticationError,
    ClientRequestTimeoutError,
    ConnectionClosedError,
)
from kafka_asgi.network.connection import BrokerConnection, _Waiter
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
Script = Callable[[Peer], Awaitable[None]]
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


# ------------------------------------------- interrupted before the exchange started

PLAIN = {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}


async def authenticate_plain(peer: Peer, log: list[str]) -> None:
    api_key, version, corr = await peer.read_request()
    assert api_key == SASL_HANDSHAKE
    log.append("handshake")
    await peer.respond(corr, SaslHandshakeResponse(mechanisms=["PLAIN"]), version)
    api_key, version, corr = await peer.read_request()
    assert api_key == SASL_AUTHENTICATE
    log.append("authenticate")
    await peer.respond(corr, SaslAuthenticateResponse(session_lifetime_ms=LIFETIME_MS), version)


async def until_reauthentication_is_due(conn: BrokerConnection) -> None:
    # Due at 85-90% of the session lifetime: past 90% it is due whatever was drawn.
    assert conn.expires_at is not None
    due = conn.expires_at - LIFETIME_MS / 1000 * 0.1 + 0.01
    await anyio.sleep(max(due - anyio.current_time(), 0))


# X held and answered, then the session renewed: what a peer sees before the next request.
RENEWED_AFTER_X = [
    *("handshake", "authenticate", "request X", "response X"),
    *("handshake", "authenticate"),
]


class HeldRequest:
    """A script step: the next request is a Metadata the peer answers when released."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.arrived = anyio.Event()
        self.release = anyio.Event()

    async def serve(self, peer: Peer) -> None:
        api_key, version, corr = await peer.read_request()
        assert api_key == METADATA
        self.log.append(f"request {self.name}")
        self.arrived.set()
        await self.release.wait()
        self.log.append(f"response {self.name}")
        await peer.respond(corr, MetadataResponse(), version)


async def answer_metadata(peer: Peer, log: list[str], name: str) -> None:
    api_key, version, corr = await peer.read_request()
    assert api_key == METADATA
    log.append(f"request {name}")
    await peer.respond(corr, MetadataResponse(), version)


class Outcome:
    """What one request in a task of its own ended with."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: BaseException | None = None
        self.scope = anyio.CancelScope()

    async def run(self, conn: BrokerConnection, request_timeout: float | None = None) -> None:
        try:
            with self.scope:
                version = conn.choose_api_version(MetadataRequest.API_KEY)
                await conn.request(
                    MetadataRequest(topics=[]), version, request_timeout=request_timeout
                )
        except Exception as exc:
            self.error = exc
        finally:
            self.done.set()


def held_then_reauthenticated(log: list[str], x: HeldRequest, name: str) -> Script:
    """A peer: ApiVersions, PLAIN, request X held until released, the re-authentication,
    then every Metadata request answered (logged as ``request <name>``)."""

    async def script(peer: Peer) -> None:
        _, version, corr = await peer.read_request()
        await peer.respond(corr, versions(), version)  # type: ignore[arg-type]
        await authenticate_plain(peer, log)
        await x.serve(peer)
        await authenticate_plain(peer, log)
        while True:
            await answer_metadata(peer, log, name)

    return script


async def reauthentication_waiting(
    conn: BrokerConnection, tg: anyio.abc.TaskGroup, x: HeldRequest, log: list[str]
) -> tuple[Outcome, Outcome]:
    """X in flight, then a second request that finds the session due: it holds the
    write lock, waiting for X's answer before the exchange. Their outcomes."""
    first, second = Outcome(), Outcome()
    tg.start_soon(first.run, conn)
    await x.arrived.wait()
    await until_reauthentication_is_due(conn)
    tg.start_soon(second.run, conn)
    await anyio.wait_all_tasks_blocked()
    assert conn.in_flight == 2 and log[-1] == "request X"
    return first, second


async def test_cancelled_before_the_exchange_keeps_the_connection(anyio_backend: str) -> None:
    """The request that starts a re-authentication is cancelled (its caller's own
    timeout) while waiting for a request in flight: nothing of the exchange was
    written, so the request in flight gets its response, the connection stays open,
    and the next request re-authenticates."""
    log: list[str] = []
    x = HeldRequest("X", log)
    async with fake_broker(held_then_reauthenticated(log, x, "Z")) as port:
        with anyio.fail_after(scaled(10)):
            async with BrokerConnection("127.0.0.1", port, **PLAIN) as conn:
                async with anyio.create_task_group() as tg:
                    first, second = await reauthentication_waiting(conn, tg, x, log)
                    second.scope.cancel()
                    await second.done.wait()
                    assert second.scope.cancelled_caught and second.error is None
                    assert not conn.closed, conn._closed
                    x.release.set()
                    await first.done.wait()
                assert first.error is None, "the request in flight must not fail"
                await metadata(conn)
                assert conn.reauthentications == 1
    assert log == [*RENEWED_AFTER_X, "request Z"]


async def test_timed_out_behind_a_waiting_reauthentication_keeps_the_connection(
    anyio_backend: str,
) -> None:
    """A request queued behind the write lock, held by a re-authentication waiting for
    a request in flight, reaches its own timeout: it fails alone (nothing of it was
    written, nothing is stuck on the wire), and everything else goes on."""
    log: list[str] = []
    x = HeldRequest("X", log)
    async with fake_broker(held_then_reauthenticated(log, x, "Y")) as port:
        with anyio.fail_after(scaled(10)):
            async with BrokerConnection("127.0.0.1", port, **PLAIN) as conn:
                async with anyio.create_task_group() as tg:
                    first, second = await reauthentication_waiting(conn, tg, x, log)
                    version = conn.choose_api_version(MetadataRequest.API_KEY)
                    with pytest.raises(ClientRequestTimeoutError) as info:
                        await conn.request(MetadataRequest(topics=[]), version, request_timeout=0.2)
                    assert not conn.closed, conn._closed
                    assert "behind a re-authentication" in str(info.value)
                    x.release.set()
                    await first.done.wait()
                    await second.done.wait()
                assert first.error is None and second.error is None
                assert conn.reauthentications == 1
    assert log == [
        "handshake",
        "authenticate",
        "request X",
        "response X",
        "handshake",
        "authenticate",
        "request Y",
    ]


async def test_reauthentication_waiting_on_a_silent_broker_is_bounded(
    anyio_backend: str,
) -> None:
    """A broker that stops answering while a re-authentication waits for a request in
    flight (one with a longer timeout of its own): the request that found the session
    due fails after its own timeout, alone, and the request in flight closes the
    connection at its own, as a timed-out request does; the request queued behind
    them fails then too, long before its own timeout."""
    log: list[str] = []
    x = HeldRequest("X", log)

    async def script(peer: Peer) -> None:
        _, version, corr = await peer.read_request()
        await peer.respond(corr, versions(), version)  # type: ignore[arg-type]
        await authenticate_plain(peer, log)
        await x.serve(peer)  # never released

    limit, own = 0.5, 3.0
    async with fake_broker(script) as port:
        with anyio.fail_after(scaled(10)):
            async with BrokerConnection("127.0.0.1", port, request_timeout=limit, **PLAIN) as conn:
                first, second, third = Outcome(), Outcome(), Outcome()
                async with anyio.create_task_group() as tg:
                    started = anyio.current_time()
                    tg.start_soon(first.run, conn, own)
                    await x.arrived.wait()
                    await until_reauthentication_is_due(conn)
                    due = anyio.current_time()
                    tg.start_soon(second.run, conn)
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(third.run, conn, 30.0)
                    await second.done.wait()
                    assert anyio.current_time() - due < limit + scaled(1)
                    assert not conn.closed, conn._closed
                    await first.done.wait()
                    assert anyio.current_time() - started >= own
                    await third.done.wait()
                    assert anyio.current_time() - started < own + scaled(1)
                assert conn.closed
                assert isinstance(second.error, ClientRequestTimeoutError)
                assert "re-authentication" in str(second.error)
                assert isinstance(first.error, ClientRequestTimeoutError)
                assert isinstance(third.error, ConnectionClosedError)
                assert conn.reauthentications == 0
    assert log == ["handshake", "authenticate", "request X"]


async def test_a_long_poll_in_flight_outlives_a_reauthentication_due(
    anyio_backend: str,
) -> None:
    """A request in flight with a timeout of its own longer than request_timeout (a
    fetch waiting up to max_wait) is answered after request_timeout: the
    re-authentication due meanwhile waits for it rather than closing the connection
    under it (which failed the long poll), and happens on the next request."""
    log: list[str] = []
    x = HeldRequest("X", log)
    limit = 0.5
    async with fake_broker(held_then_reauthenticated(log, x, "Z")) as port:
        with anyio.fail_after(scaled(10)):
            async with BrokerConnection("127.0.0.1", port, request_timeout=limit, **PLAIN) as conn:
                first, second = Outcome(), Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(first.run, conn, 5.0)
                    await x.arrived.wait()
                    await until_reauthentication_is_due(conn)
                    tg.start_soon(second.run, conn)
                    await second.done.wait()
                    assert isinstance(second.error, ClientRequestTimeoutError)
                    assert "re-authentication" in str(second.error)
                    await anyio.sleep(limit)  # X now held past request_timeout twice
                    assert not conn.closed, conn._closed
                    x.release.set()
                    await first.done.wait()
                assert first.error is None, "the long poll must get its answer"
                await metadata(conn)
                assert conn.reauthentications == 1
                assert not conn.closed
    assert log == [*RENEWED_AFTER_X, "request Z"]


async def test_the_client_keeps_the_broker_connection_when_a_request_waited_behind_reauth(
    anyio_backend: str,
) -> None:
    """Through KafkaClient: a request timing out behind a waiting re-authentication is
    no sign of a stuck broker, so its connections are not all given up (the client
    closed every connection to a broker after any request timeout, failing the
    request in flight and the re-authentication's own)."""
    log: list[str] = []
    x = HeldRequest("X", log)
    # "after": the second request, and the refresh the timeout asks for.
    script = held_then_reauthenticated(log, x, "after")

    async def send(client: KafkaClient, outcome: Outcome) -> None:
        try:
            await client.send(None, MetadataRequest(topics=[]))
        except Exception as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    async with fake_broker(script) as port:
        with anyio.fail_after(scaled(10)):
            async with KafkaClient(
                f"127.0.0.1:{port}", max_connections_per_broker=1, **PLAIN
            ) as client:
                first, second = Outcome(), Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(send, client, first)
                    await x.arrived.wait()
                    # Due at 85-90% of the session, which started just before X.
                    await anyio.sleep(LIFETIME_MS / 1000 * 0.9 + 0.05)
                    tg.start_soon(send, client, second)
                    await anyio.wait_all_tasks_blocked()
                    with pytest.raises(ClientRequestTimeoutError, match="re-authentication"):
                        await client.send(None, MetadataRequest(topics=[]), request_timeout=0.2)
                    assert client.connection_count() == 1
                    x.release.set()
                    await first.done.wait()
                    await second.done.wait()
                assert first.error is None and second.error is None
                assert client.connection_count() == 1
    assert log[:6] == [
        "handshake",
        "authenticate",
        "request X",
        "response X",
        "handshake",
        "authenticate",
    ]
    assert log[6:] in (["request after"], ["request after"] * 2)


async def test_the_request_that_finds_the_session_due_waits_its_own_timeout_once(
    anyio_backend: str,
) -> None:
    """Behind a write that holds the lock for a while, then a request in flight: the
    request that found the session due fails after its own timeout, not that timeout
    for the lock and a whole one again for the drain (1.5 + 2.0 s here), and nothing
    closes the connection."""
    conn = BrokerConnection("127.0.0.1", 9, request_timeout=30.0, **PLAIN)
    conn._state = "open"  # (nothing is written: it fails before)
    conn._reauth_at = 0.0  # the session is due
    conn._pending[99] = _Waiter()  # a long poll in flight, answered much later
    limit, held = 2.0, 1.5

    async def writer() -> None:  # another request writing a large frame
        async with conn._write_lock:
            await anyio.sleep(held)

    with anyio.fail_after(scaled(10)):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await anyio.wait_all_tasks_blocked()
            started = anyio.current_time()
            with pytest.raises(ClientRequestTimeoutError, match="re-authentication"):
                await conn.request(MetadataRequest(topics=[]), 1, request_timeout=limit)
            took = anyio.current_time() - started
    assert limit <= took < limit + min(held, scaled(1)), took
    assert conn._closed is None and not conn._write_lock.locked()
    assert not conn._reauthenticating
