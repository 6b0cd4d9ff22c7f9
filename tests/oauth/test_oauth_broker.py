"""SASL OAUTHBEARER against the real broker: its OAUTHBEARER listeners validate signed JWTs
against the test identity provider's JWKS and end each session after a few seconds
(KIP-368), so these tests cover the token provider, the exchange and re-authentication."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from kafka_asgi import BasicConsumer, Producer
from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.consumer import LATEST
from kafka_asgi.errors import AuthenticationError
from tests.support.brokers import KafkaCluster, kafka_local
from tests.support.oauth import (
    idp,
    new_client_id,
    oauth_options,
    oidc_provider,
    token_requests,
)
from tests.support.timing import scaled

pytestmark = pytest.mark.broker

LISTENERS = ["oauth_plaintext", "oauth_ssl"]
REAUTH = kafka_local.OAUTH_REAUTH_MS / 1000


def address(kafka: KafkaCluster, listener: str) -> str:
    value = getattr(kafka, listener)
    assert value is not None
    return str(value)


@pytest.mark.parametrize("listener", LISTENERS)
async def test_produce_and_fetch_with_the_oidc_provider(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str, listener: str
) -> None:
    topic = new_topic(partitions=1)
    client_id = new_client_id()
    options = oauth_options(kafka, listener, oidc_provider(kafka, client_id))
    async with Producer(address(kafka, listener), **options) as producer:
        for i in range(20):
            producer.send_nowait(topic, b"v%d" % i, key=b"k")
        meta = await producer.send(topic, b"last", key=b"k")
    assert meta.offset == 20
    async with BasicConsumer(address(kafka, listener), **options) as consumer:
        result = await consumer.fetch(topic, 0, 0, max_wait=0.5)
    assert [r.value for r in result.records] == [b"v%d" % i for i in range(20)] + [b"last"]
    # One token served every connection of the producer, another the consumer's.
    assert token_requests(kafka, client_id) == 2


async def test_a_continuous_producer_survives_reauthentication(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    """Records sent without pause across more than three session lifetimes: every one
    acknowledged, in order per partition, no error; the connection re-authenticated in
    place (no reconnect) and the token was fetched again as it neared expiry."""
    topic = new_topic(partitions=2)
    # Tokens valid for 8 s: the cache asks for a new one after 6.4 s.
    client_id = new_client_id("ttl8-")
    options = oauth_options(kafka, "oauth_plaintext", oidc_provider(kafka, client_id))
    errors: list[Any] = []
    delivered: dict[int, list[int]] = {0: [], 1: []}

    def on_delivery(error: Any, meta: Any, *args: Any) -> None:
        if error is not None:
            errors.append(error)
        else:
            delivered[meta.partition].append(meta.offset)

    sent: dict[int, list[bytes]] = {0: [], 1: []}
    run_for = 3.5 * REAUTH
    async with KafkaClient(address(kafka, "oauth_plaintext"), **options) as client:
        async with Producer(
            client=client, on_delivery=on_delivery, error_handle=lambda *a: errors.append(a)
        ) as producer:
            started = time.monotonic()
            i = 0
            while time.monotonic() - started < run_for:
                partition = i % 2
                value = b"%d" % i
                producer.send_nowait(topic, value, partition=partition)
                sent[partition].append(value)
                i += 1
                await anyio.sleep(0.005)
            await producer.flush()
            stats = producer.stats()
        client_stats = client.stats()
    assert not errors
    assert stats.failed == 0 and stats.delivered == i
    for partition in (0, 1):
        assert delivered[partition] == list(range(len(sent[partition])))
    # In place: the first connections stayed (the broker would have closed them).
    assert client_stats.reauthentications >= 3
    assert client_stats.connect_failures == 0
    assert client_stats.connections_opened <= 3
    assert token_requests(kafka, client_id) >= 2
    async with BasicConsumer(kafka.plaintext) as consumer:
        for partition in (0, 1):
            values: list[bytes] = []
            offset = 0
            with anyio.fail_after(scaled(60)):
                while offset < len(sent[partition]):
                    result = await consumer.fetch(topic, partition, offset, max_wait=0.2)
                    values += [r.value for r in result.records if r.value is not None]
                    offset = result.next_offset
            assert values == sent[partition]


@pytest.mark.parametrize(
    ("prefix", "secret", "message", "connections"),
    [
        # The identity provider refuses: no connection is even tried.
        ("", "wrong-secret-0123", "HTTP 401", 0),
        # The token's exp is past: caught before connecting.
        ("expired-", None, r"expired 6\d\d\.\ds ago", 0),
        # The broker refuses.
        ("wrongaud-", None, "invalid_token", 2),
    ],
)
async def test_refused_credentials_fail_fast_without_a_retry_storm(
    kafka: KafkaCluster,
    anyio_backend: str,
    prefix: str,
    secret: str | None,
    message: str,
    connections: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="kafka_asgi")
    client_id = new_client_id(prefix)
    attempts: list[str] = []

    def counting(host: str) -> str:
        attempts.append(host)
        return host

    provider = oidc_provider(kafka, client_id, secret)
    options = oauth_options(kafka, "oauth_plaintext", provider)
    connect_timeout = 5.0
    async with KafkaClient(
        address(kafka, "oauth_plaintext"),
        resolver=counting,
        connect_timeout=connect_timeout,
        retry_backoff=2.0,
        **options,
    ) as client:
        started = time.monotonic()
        with pytest.raises(AuthenticationError, match=message) as info:
            await client.refresh([])
        assert time.monotonic() - started < scaled(connect_timeout)
        # Calls right after the failure fail fast, with no new token or connection.
        for _ in range(10):
            with pytest.raises(AuthenticationError):
                await client.fetch_metadata("anything")
        client.request_refresh()
        await anyio.sleep(1.0)
    assert token_requests(kafka, client_id) <= 2
    assert len(attempts) <= connections
    text = str(info.value) + caplog.text + repr(provider)
    secret_value = secret or idp.secret_for(client_id)
    assert secret_value not in text


async def test_callers_with_short_deadlines_behind_a_slow_identity_provider_connect(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    """A consumer's calls under the user's own deadline (0.4 s) behind an identity
    provider that takes a second: the first call is cut short by its deadline, the
    token request it started goes on, and a later call connects with its token. The
    identity provider is asked once."""
    topic = new_topic(partitions=1)
    client_id = new_client_id()
    oidc = oidc_provider(kafka, client_id)

    class SlowProvider:
        async def token(self) -> Any:
            await anyio.sleep(1.0)
            return await oidc.token()

    options = oauth_options(kafka, "oauth_plaintext", SlowProvider())
    attempts = 0
    end: int | None = None
    async with BasicConsumer(address(kafka, "oauth_plaintext"), **options) as consumer:
        with anyio.fail_after(scaled(10)):
            while end is None:
                attempts += 1
                with anyio.move_on_after(0.4):
                    end = await consumer.list_offset(topic, 0, LATEST)
    assert end == 0
    assert 2 <= attempts <= scaled(6)
    assert token_requests(kafka, client_id) == 1


async def test_the_broker_refuses_an_expired_token(kafka: KafkaCluster, anyio_backend: str) -> None:
    """A provider that claims a longer life than the JWT has: the broker checks exp."""
    kafka.require("oauth_token_url")
    state = kafka_local.Path(str(kafka.ca_file)).parent
    expired = idp.sign_jwt(state, idp.claims_for("expired-jwt", ttl=60, now=time.time() - 3600))
    calls = 0

    def provider() -> tuple[str, float]:
        nonlocal calls
        calls += 1
        return expired, time.time() + 300

    options = oauth_options(kafka, "oauth_plaintext", provider)
    async with KafkaClient(
        address(kafka, "oauth_plaintext"), connect_timeout=5, retry_backoff=2.0, **options
    ) as client:
        started = time.monotonic()
        with pytest.raises(AuthenticationError, match="invalid_token") as info:
            await client.refresh([])
        assert time.monotonic() - started < scaled(5)
        for _ in range(10):
            with pytest.raises(AuthenticationError):
                await client.fetch_metadata("anything")
        assert client.stats().connections_opened == 0
        assert client.stats().connect_failures <= 2
    assert calls == 1
    assert expired[-40:] not in str(info.value)


async def test_a_rejected_reauthentication_is_an_authentication_error(
    kafka: KafkaCluster, anyio_backend: str
) -> None:
    """The first token is good; the one for re-authenticating is not (wrong audience)."""
    kafka.require("oauth_token_url")
    state = kafka_local.Path(str(kafka.ca_file)).parent
    good = idp.sign_jwt(state, idp.claims_for("reauth-refused", ttl=300))
    bad = idp.sign_jwt(state, {**idp.claims_for("reauth-refused", ttl=300), "aud": "elsewhere"})
    tokens = [good]

    def provider() -> tuple[str, float]:
        token = tokens[-1]
        return token, time.time() + (1.0 if token == good else 300)

    options = oauth_options(kafka, "oauth_plaintext", provider)
    async with KafkaClient(address(kafka, "oauth_plaintext"), **options) as client:
        await client.refresh([])
        tokens.append(bad)
        with anyio.fail_after(scaled(30)):
            with pytest.raises(AuthenticationError, match="invalid_token"):
                while True:
                    await client.refresh([])
                    await anyio.sleep(0.2)
        # Refused on the first connection, when it re-authenticated: not a new one.
        assert client.stats().connections_opened == 1


async def test_tokens_and_secrets_never_shown(
    kafka: KafkaCluster,
    new_topic: Callable[..., str],
    anyio_backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DEBUG logging everywhere (httpx's too) through a produce that fetches tokens and
    re-authenticates, and a refused one: no token or secret in a log line or repr."""
    caplog.set_level(logging.DEBUG)
    topic = new_topic(partitions=1)
    client_id = new_client_id("ttl5-")
    provider = oidc_provider(kafka, client_id)
    issued: list[str] = []
    fetch = provider.token

    async def recording() -> Any:
        token = await fetch()
        issued.append(token.value)
        return token

    provider.token = recording
    options = oauth_options(kafka, "oauth_plaintext", provider)
    shown: list[str] = []
    async with KafkaClient(address(kafka, "oauth_plaintext"), **options) as client:
        async with Producer(client=client) as producer:
            started = time.monotonic()
            while time.monotonic() - started < 1.5 * REAUTH:
                await producer.send(topic, b"x")
                await anyio.sleep(0.05)
            shown += [repr(producer), repr(client.options), repr(client.stats())]
        assert client.stats().reauthentications >= 1
    shown += [repr(provider), repr(options["sasl_oauth_token_provider"])]
    assert len(issued) >= 2
    bad = oidc_provider(kafka, new_client_id("wrongaud-"))
    async with KafkaClient(
        address(kafka, "oauth_plaintext"), **oauth_options(kafka, "oauth_plaintext", bad)
    ) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.refresh([])
        shown += [str(info.value), repr(info.value), repr(client.options)]
    text = caplog.text + "\n".join(shown)
    assert "authenticated with SASL OAUTHBEARER" in caplog.text
    assert "re-authenticated" in caplog.text
    for secret in [*issued, idp.secret_for(client_id)]:
        assert secret not in text
        # Nor any long piece of it (a token is a JWT: its signature part is secret).
        assert secret[-40:] not in text


async def test_an_idle_connection_past_its_session_renews_before_its_next_request(
    kafka: KafkaCluster, anyio_backend: str
) -> None:
    """The broker accepts a re-authentication even after the session ended (it closes
    only on other requests): a connection left idle longer than the session lifetime
    renews itself before its next request instead of being closed under it."""
    client_id = new_client_id()
    options = oauth_options(kafka, "oauth_plaintext", oidc_provider(kafka, client_id))
    async with KafkaClient(address(kafka, "oauth_plaintext"), idle_timeout=60, **options) as client:
        await client.refresh([])
        await anyio.sleep(REAUTH * 1.5)
        with anyio.fail_after(scaled(10)):
            await client.refresh([])
        stats = client.stats()
    assert stats.connections_opened == 1
    assert stats.reauthentications == 1
