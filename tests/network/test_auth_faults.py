"""SASL faults found in review, without a broker: SCRAM as Kafka computes it (no
SASLprep), OAUTHBEARER extensions of every token form, the token fetch bounded by the
caller's handshake timeout, a provider's own TimeoutError, absurd expiry values."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

import anyio
import pytest
import scramp.core  # type: ignore[import-untyped]

from kafka_asgi.errors import AuthenticationError
from kafka_asgi.network.config import ConnectionConfig
from kafka_asgi.network.connection import BrokerConnection
from kafka_asgi.network.oauthbearer import (
    OAuthBearerCredentials,
    OAuthBearerMechanism,
    OAuthBearerToken,
    TokenProvider,
    jwt_expiry,
)
from kafka_asgi.network.sasl import ScramMechanism
from tests.support.oauth import make_jwt

pytestmark = pytest.mark.anyio

SCRAM = ["SCRAM-SHA-256", "SCRAM-SHA-512"]


# ---------------------------------------------------------------- SCRAM as Kafka does it


def kafka_scram_exchange(mech: ScramMechanism, user: str, password: str) -> None:
    """Run ``mech`` against a broker that stores ``user`` / ``password`` as Kafka does.

    Kafka's ScramFormatter salts ``password.getBytes(UTF_8)`` (no SASLprep) and only
    unescapes ``=2C`` and ``=3D`` in the username (ScramFormatter.username); the proof
    is RFC 5802's. Fails the test when the broker would refuse the client, and has the
    client check the server's signature.
    """
    digest = hashlib.sha256 if mech.name == "SCRAM-SHA-256" else hashlib.sha512

    def mac(key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, digest).digest()

    first = mech.start().decode("utf-8")
    assert first.startswith("n,,")
    bare = first[3:]
    attrs = dict(part.split("=", 1) for part in bare.split(","))
    sent_user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
    assert sent_user == user, "the broker would look up another user"
    salt, iterations = os.urandom(16), 4096
    server_first = f"r={attrs['r']}srv,s={base64.b64encode(salt).decode()},i={iterations}"
    final = mech.respond(server_first.encode())
    assert final is not None
    without_proof, proof = final.decode("utf-8").rsplit(",p=", 1)
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    salted = hashlib.pbkdf2_hmac(digest().name, password.encode("utf-8"), salt, iterations)
    client_key = mac(salted, b"Client Key")
    signature = mac(digest(client_key).digest(), auth_message)
    expected = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    assert base64.b64decode(proof) == expected, "the broker would refuse the proof"
    server_signature = mac(mac(salted, b"Server Key"), auth_message)
    assert mech.respond(b"v=" + base64.b64encode(server_signature)) is None
    assert mech.complete


@pytest.mark.parametrize("name", SCRAM)
@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("alice", "pass\u00a0word"),  # NBSP: SASLprep maps it to a space
        ("alice", "\ufb01nance-2024"),  # the 'fi' ligature: NFKC makes it 'fi'
        ("alice", "pass\tword"),  # TAB: SASLprep prohibits it
        ("alice", "hunter2\U0001f511"),  # an emoji: unassigned in Unicode 3.2
        ("\uff41,b=c", "s3cret"),  # ',' and '=' escaped; full-width 'a' kept
    ],
    ids=["nbsp", "ligature", "tab", "emoji", "username"],
)
def test_scram_sends_credentials_as_kafka_stores_them(name: str, user: str, password: str) -> None:
    kafka_scram_exchange(ScramMechanism(name, user, password), user, password)


def test_scram_empty_username_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="username is empty"):
        ScramMechanism("SCRAM-SHA-256", "", "s3cret")


def test_scram_lone_surrogate_is_refused_without_echo() -> None:
    with pytest.raises(AuthenticationError, match="password is not valid Unicode") as info:
        ScramMechanism("SCRAM-SHA-256", "alice", "top\ud800secret")
    assert "secret" not in str(info.value)


def test_scram_incompatible_scramp_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    class Password:
        """A scramp that would keep the password under another name."""

        def __init__(self, password: str) -> None:
            self.prepared = password

        def __bytes__(self) -> bytes:
            return self.prepared.encode()

    monkeypatch.setattr(scramp.core, "Password", Password)
    with pytest.raises(AuthenticationError, match="without RFC 4013 SASLprep"):
        ScramMechanism("SCRAM-SHA-256", "alice", "s3cret")


# ---------------------------------------------------------------- OAUTHBEARER extensions


async def test_client_extensions_merge_with_a_token_objects_own(anyio_backend: str) -> None:
    expires = time.time() + 600
    own = {"logicalCluster": "lkc-1", "shared": "token"}

    class WithMethods:
        async def token(self) -> OAuthBearerToken:
            return OAuthBearerToken("tok.obj", expires, own)

        def extensions(self) -> dict[str, str]:
            return {"fromMethod": "m"}

    client = {"identityPoolId": "pool-XyZ", "shared": "client"}
    merged = {"identityPoolId": "pool-XyZ", "logicalCluster": "lkc-1", "shared": "token"}
    cases: list[tuple[TokenProvider, dict[str, str]]] = [
        (lambda: OAuthBearerToken("tok.fn", expires, own), merged),
        (WithMethods(), {**merged, "fromMethod": "m"}),
    ]
    for provider, expected in cases:
        token = await OAuthBearerCredentials(provider, client).token(5)
        assert token.extensions == expected
        message = OAuthBearerMechanism(token).start()
        assert b"\x01identityPoolId=pool-XyZ\x01" in message
        assert b"\x01logicalCluster=lkc-1\x01" in message


# ---------------------------------------------------------------- token fetch in connect()


async def test_connect_bounds_the_token_fetch_by_the_handshake_timeout(
    anyio_backend: str,
) -> None:
    async def hangs() -> tuple[str, float]:
        await anyio.sleep_forever()
        raise AssertionError("not reached")

    config = ConnectionConfig.from_options(
        sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=hangs, request_timeout=10.0
    )
    # The provider hangs before any socket is opened: nothing listens on port 9.
    conn = BrokerConnection("127.0.0.1", 9, config)
    started = time.monotonic()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            with pytest.raises(AuthenticationError, match=r"no token within 0\.2s"):
                await conn.connect(tg, handshake_timeout=0.2)
    assert time.monotonic() - started < 3


# ---------------------------------------------------------------- a provider's own timeout


async def test_provider_timeout_error_is_its_failure_not_our_deadline(
    anyio_backend: str,
) -> None:
    def sync_provider() -> tuple[str, float]:
        raise TimeoutError("connect to sts.example timed out after 2s")  # socket.timeout

    async def async_provider() -> tuple[str, float]:
        raise TimeoutError("idp read timed out")

    for provider, text in [
        (sync_provider, "connect to sts.example timed out after 2s"),
        (async_provider, "idp read timed out"),
    ]:
        creds = OAuthBearerCredentials(provider)
        started = time.monotonic()
        with pytest.raises(AuthenticationError) as info:
            await creds.token(30.0)
        assert time.monotonic() - started < 5
        message = str(info.value)
        assert "within" not in message, message
        assert f"the token provider failed: TimeoutError: {text}" in message
        assert isinstance(info.value.__cause__, TimeoutError)


async def test_provider_turning_our_cancellation_into_an_error_is_our_deadline(
    anyio_backend: str,
) -> None:
    async def converts() -> tuple[str, float]:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            raise TimeoutError("cancelled") from None
        raise AssertionError("not reached")

    with anyio.fail_after(5):
        with pytest.raises(AuthenticationError, match=r"no token within 0\.2s"):
            await OAuthBearerCredentials(converts).token(0.2)


# ---------------------------------------------------------------- absurd expiry values


def test_jwt_exp_too_large_for_a_float_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="exp claim must be finite, not an int of about 401"):
        jwt_expiry(make_jwt({"exp": 10**400}))
    with pytest.raises(ValueError, match="expires_at must be finite"):
        OAuthBearerToken("abc", 10**400)


async def test_provider_jwt_with_huge_exp_is_an_authentication_error(anyio_backend: str) -> None:
    creds = OAuthBearerCredentials(lambda: make_jwt({"exp": 10**400}))
    with pytest.raises(AuthenticationError, match="exp claim must be finite"):
        await creds.token(5)
    creds = OAuthBearerCredentials(lambda: ("abc", 10**400))
    with pytest.raises(AuthenticationError, match="expires_at must be finite"):
        await creds.token(5)
