"""OAUTHBEARER without a broker: the client message, the token provider forms, the cache."""

from __future__ import annotations

import logging
import time

import anyio
import pytest

from kafka_asgi.errors import AuthenticationError
from kafka_asgi.network.config import ConnectionConfig
from kafka_asgi.network.oauthbearer import (
    OAuthBearerCredentials,
    OAuthBearerMechanism,
    OAuthBearerToken,
    check_extensions,
    client_initial_response,
    jwt_expiry,
)
from tests.support.oauth import make_jwt

TOKEN = "eyJhbGciOiJub25lIn0.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJlLXNlY3JldA"


# ---------------------------------------------------------------- the client message


@pytest.mark.parametrize(
    ("token", "extensions", "authzid", "expected"),
    [
        # Test vectors of Kafka's OAuthBearerClientInitialResponseTest.
        (
            "123.345.567",
            {"nineteen": "42"},
            "",
            "n,,\x01auth=Bearer 123.345.567\x01nineteen=42\x01\x01",
        ),
        ("123.345.567", {}, "", "n,,\x01auth=Bearer 123.345.567\x01\x01"),
        ("345", None, "myuser", "n,a=myuser,\x01auth=Bearer 345\x01\x01"),
    ],
)
def test_client_initial_response_golden(
    token: str, extensions: dict[str, str] | None, authzid: str, expected: str
) -> None:
    assert client_initial_response(token, extensions, authzid) == expected.encode()


def test_extensions_follow_kip_342() -> None:
    assert check_extensions({"logicalCluster": "lkc-1", "identityPoolId": "pool-x"}) == {
        "logicalCluster": "lkc-1",
        "identityPoolId": "pool-x",
    }
    with pytest.raises(ValueError, match="'auth' is reserved"):
        check_extensions({"auth": "x"})
    with pytest.raises(ValueError, match="letters only"):
        check_extensions({"bad-key": "x"})
    with pytest.raises(ValueError, match="'k'") as info:
        check_extensions({"k": "top\x01secret"})
    assert "secret" not in str(info.value)
    with pytest.raises(TypeError, match="mapping"):
        check_extensions(["k=v"])


def test_mechanism_success_and_error_status() -> None:
    token = OAuthBearerToken("abc.def.ghi", time.time() + 60, {"ext": "v"})
    ok = OAuthBearerMechanism(token)
    assert ok.start() == b"n,,\x01auth=Bearer abc.def.ghi\x01ext=v\x01\x01"
    assert not ok.complete
    assert ok.respond(b"") is None
    assert ok.complete
    with pytest.raises(AuthenticationError):
        ok.respond(b"")

    refused = OAuthBearerMechanism(token)
    refused.start()
    # RFC 7628 3.2.2: the server's error status; the client answers with a lone %x01.
    assert refused.respond(b'{"status":"invalid_token"}') == b"\x01"
    assert refused.error_status == '{"status":"invalid_token"}'
    assert not refused.complete
    assert "abc.def.ghi" not in repr(refused)


def test_token_validation_never_echoes_the_value() -> None:
    with pytest.raises(ValueError, match="bearer token") as info:
        OAuthBearerToken("not a token with spaces secretpart", time.time() + 60)
    assert "secretpart" not in str(info.value)
    with pytest.raises(TypeError, match="Unix seconds"):
        OAuthBearerToken("abc", "tomorrow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        OAuthBearerToken("abc", float("inf"))
    token = OAuthBearerToken(TOKEN, 123.0, {"k": "v"})
    assert TOKEN not in repr(token) and TOKEN not in str(token)
    assert "expires_at=123.0" in repr(token) and "[k]" in repr(token)


def test_jwt_expiry() -> None:
    assert jwt_expiry(make_jwt({"exp": 1700000000, "sub": "x"})) == 1700000000.0
    assert jwt_expiry(make_jwt({"sub": "x"})) is None
    assert jwt_expiry("opaque-token") is None
    assert jwt_expiry("a.!!!.c") is None


# ---------------------------------------------------------------- options


def test_options() -> None:
    config = ConnectionConfig.from_options(
        sasl_mechanism="oauthbearer",
        sasl_oauth_token_provider=lambda: (TOKEN, time.time() + 60),
        sasl_oauth_extensions={"logicalCluster": "lkc-1"},
    )
    assert isinstance(config.sasl, OAuthBearerCredentials)
    assert TOKEN not in repr(config)
    with pytest.raises(ValueError, match="needs sasl_oauth_token_provider"):
        ConnectionConfig.from_options(sasl_mechanism="OAUTHBEARER")
    with pytest.raises(ValueError, match="do not apply to OAUTHBEARER"):
        ConnectionConfig.from_options(
            sasl_mechanism="OAUTHBEARER",
            sasl_oauth_token_provider=lambda: TOKEN,
            sasl_username="u",
            sasl_password="p",
        )
    with pytest.raises(ValueError, match="need sasl_mechanism='OAUTHBEARER'"):
        ConnectionConfig.from_options(sasl_oauth_token_provider=lambda: TOKEN)
    with pytest.raises(ValueError, match="need sasl_mechanism='OAUTHBEARER'"):
        ConnectionConfig.from_options(
            sasl_mechanism="PLAIN",
            sasl_username="u",
            sasl_password="p",
            sasl_oauth_extensions={"a": "b"},
        )
    with pytest.raises(TypeError, match="token\\(\\) method"):
        ConnectionConfig.from_options(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=42)
    with pytest.raises(ValueError, match="OAUTHBEARER with sasl_oauth_token_provider"):
        ConnectionConfig.from_options(sasl_mechanism="GSSAPI", sasl_username="u", sasl_password="p")


# ---------------------------------------------------------------- providers and the cache


class Clock:
    """time.time() for the cache module, moved by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1_000_000.0
        monkeypatch.setattr("kafka_asgi.network.oauthbearer.time.time", lambda: self.now)


async def test_provider_forms(anyio_backend: str) -> None:
    expires = time.time() + 600

    def sync_tuple() -> tuple[str, float]:
        return "tok.sync", expires

    async def async_token() -> OAuthBearerToken:
        return OAuthBearerToken("tok.async", expires)

    def jwt_str() -> str:
        return make_jwt({"exp": int(expires)})

    class WithMethods:
        async def token(self) -> tuple[str, float, dict[str, str]]:
            return "tok.obj", expires, {"fromToken": "1"}

        def extensions(self) -> dict[str, str]:
            return {"fromMethod": "2"}

    class SyncObject:
        def token(self) -> tuple[str, float]:
            return "tok.syncobj", expires

    for provider, value in [
        (sync_tuple, "tok.sync"),
        (async_token, "tok.async"),
        (jwt_str, jwt_str()),
        (WithMethods(), "tok.obj"),
        (SyncObject(), "tok.syncobj"),
    ]:
        creds = OAuthBearerCredentials(provider, {"static": "s"})
        token = await creds.token(5)
        assert token.value == value
        assert token.expires_at == pytest.approx(expires, abs=1)
        assert token.extensions["static"] == "s"
        assert creds.provider_calls == 1
    creds = OAuthBearerCredentials(WithMethods())
    token = await creds.token(5)
    assert token.extensions == {"fromToken": "1", "fromMethod": "2"}


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (42, "returned int"),
        ("opaque", "not a JWT"),
        (("tok", "soon"), "Unix seconds"),
    ],
)
async def test_provider_bad_results(anyio_backend: str, result: object, message: str) -> None:
    creds = OAuthBearerCredentials(lambda: result)
    with pytest.raises(AuthenticationError, match=message):
        await creds.token(5)


async def test_expired_token_is_refused_before_connecting(anyio_backend: str) -> None:
    creds = OAuthBearerCredentials(lambda: (TOKEN, time.time() - 5))
    with pytest.raises(AuthenticationError, match=r"expired 5.*s ago") as info:
        await creds.token(5)
    assert TOKEN not in str(info.value)


async def test_cache_refreshes_ahead_of_expiry(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    issued: list[str] = []

    def provider() -> tuple[str, float]:
        issued.append(f"tok{len(issued)}")
        return issued[-1], clock.now + 100

    creds = OAuthBearerCredentials(provider)
    assert (await creds.token(5)).value == "tok0"
    clock.now += 79
    assert (await creds.token(5)).value == "tok0"
    clock.now += 2  # past 80% of the lifetime
    assert (await creds.token(5)).value == "tok1"
    assert creds.provider_calls == 2


async def test_concurrent_callers_share_one_fetch(anyio_backend: str) -> None:
    calls = 0

    async def slow() -> tuple[str, float]:
        nonlocal calls
        calls += 1
        await anyio.sleep(0.05)
        return TOKEN, time.time() + 60

    creds = OAuthBearerCredentials(slow)
    values: list[str] = []

    async def get() -> None:
        values.append((await creds.token(5)).value)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(get)
    assert values == [TOKEN] * 10
    assert calls == 1


async def test_failures_back_off_and_keep_a_valid_token(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(monkeypatch)
    failing = False

    def provider() -> tuple[str, float]:
        if failing:
            raise ConnectionError("identity provider down")
        return TOKEN, clock.now + 100

    creds = OAuthBearerCredentials(provider)
    await creds.token(5)
    failing = True
    clock.now += 85
    caplog.set_level(logging.DEBUG, logger="kafka_asgi")
    # The refresh fails but the current token is still valid: keep using it.
    assert (await creds.token(5)).value == TOKEN
    assert creds.provider_calls == 2
    assert "identity provider down" in caplog.text
    # Not asked again during the back-off.
    for _ in range(5):
        await creds.token(5)
    assert creds.provider_calls == 2
    clock.now += 16  # expired now
    with pytest.raises(AuthenticationError, match="identity provider down") as info:
        await creds.token(5)
    assert creds.provider_calls == 3
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            await creds.token(5)
    assert creds.provider_calls == 3, "a failure is remembered: no storm of provider calls"
    assert TOKEN not in str(info.value)
    assert TOKEN not in caplog.text


async def test_slow_provider_is_bounded(anyio_backend: str) -> None:
    async def hangs() -> tuple[str, float]:
        await anyio.sleep(30)
        raise AssertionError("not reached")

    creds = OAuthBearerCredentials(hangs)
    with anyio.fail_after(5):
        with pytest.raises(AuthenticationError, match=r"no token within 0\.2s"):
            await creds.token(0.2)


async def test_a_slow_refresh_keeps_serving_the_valid_token(anyio_backend: str) -> None:
    """A refresh the provider takes longer over than the caller's limit: the cached
    token, still valid, serves (the caller's wait ending before the provider call's own
    limit raised AuthenticationError, which closed a re-authenticating connection)."""
    release = anyio.Event()
    issued: list[str] = []

    async def provider() -> tuple[str, float]:
        if issued:
            await release.wait()  # the identity provider slow on the refresh
        issued.append(f"tok{len(issued)}")
        return issued[-1], time.time() + 3600

    creds = OAuthBearerCredentials(provider)
    with anyio.fail_after(5):
        assert (await creds.token(5)).value == "tok0"
        creds._refresh_at = 0.0  # in the refresh window, an hour of validity left
        assert (await creds.token(0.1)).value == "tok0"
        assert (await creds.token(0.1)).value == "tok0"
        release.set()
    assert creds.provider_calls == 2, "one refresh, shared, then backed off"


async def test_a_logging_handler_failing_on_the_new_token_leaves_no_fetch_behind(
    anyio_backend: str,
) -> None:
    """A handler whose emit raises (the standard ones catch, a custom one may not) on the
    new token's debug line: the fetch still finishes, and the provider is asked again
    at the next refresh (it stayed unfinished: every caller waited for it, in vain)."""

    class Raising(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("log sink down")

    issued: list[str] = []

    def provider() -> tuple[str, float]:
        issued.append(f"tok{len(issued)}")
        return issued[-1], time.time() + 3600

    log = logging.getLogger("kafka_asgi.network.oauthbearer")
    handler = Raising()
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.DEBUG)
    try:
        creds = OAuthBearerCredentials(provider)
        with anyio.fail_after(5):
            assert (await creds.token(1)).value == "tok0"
            creds._refresh_at = 0.0
            creds._token = None  # no fallback: the refresh's own token is needed
            assert (await creds.token(1)).value == "tok1"
        assert creds._fetching is None
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_caller_leaving_early_does_not_cut_the_provider_call_short(
    anyio_backend: str, kind: str
) -> None:
    """The user's own deadline around a call that connects (a consumer's fetch under
    anyio.fail_after) cancels the caller, not the provider call it started: the next
    caller gets that call's token, and the provider is not asked again."""
    answered = 0

    async def slow_async() -> tuple[str, float]:
        nonlocal answered
        await anyio.sleep(0.4)
        answered += 1
        return TOKEN, time.time() + 60

    def slow_sync() -> tuple[str, float]:
        nonlocal answered
        time.sleep(0.4)
        answered += 1
        return TOKEN, time.time() + 60

    creds = OAuthBearerCredentials(slow_async if kind == "async" else slow_sync)
    started = time.monotonic()
    with anyio.move_on_after(0.1) as user_deadline:
        await creds.token(5)
    assert user_deadline.cancelled_caught
    with anyio.fail_after(5):
        token = await creds.token(5)
    assert token.value == TOKEN
    assert creds.provider_calls == 1
    assert answered == 1
    # The first call's answer (at 0.4 s), not a second call's (0.5 s or later).
    assert time.monotonic() - started < 0.5 + 0.3


async def test_short_deadlines_behind_a_slow_provider_still_get_a_token(
    anyio_backend: str,
) -> None:
    """Callers retrying with a deadline shorter than the provider takes: each used to
    start the call again and cancel it, so none ever got a token."""

    async def slow() -> tuple[str, float]:
        await anyio.sleep(0.5)
        return TOKEN, time.time() + 60

    creds = OAuthBearerCredentials(slow)
    outcomes: list[str] = []
    with anyio.fail_after(5):
        while not outcomes or outcomes[-1] != TOKEN:
            with anyio.move_on_after(0.2):
                outcomes.append("late")
                outcomes[-1] = (await creds.token(5)).value
    assert outcomes[-1] == TOKEN
    assert 2 <= len(outcomes) <= 4
    assert creds.provider_calls == 1


async def test_a_waiter_leaving_early_keeps_the_others_waiting(anyio_backend: str) -> None:
    release = anyio.Event()

    async def gated() -> tuple[str, float]:
        await release.wait()
        return TOKEN, time.time() + 60

    creds = OAuthBearerCredentials(gated)
    got: list[str] = []

    async def patient() -> None:
        got.append((await creds.token(5)).value)

    async with anyio.create_task_group() as tg:
        tg.start_soon(patient)
        await anyio.sleep(0.05)
        with anyio.move_on_after(0.05):
            await creds.token(5)
        release.set()
    assert got == [TOKEN]
    assert creds.provider_calls == 1


async def test_a_provider_call_that_hangs_fails_for_every_waiter_at_its_limit(
    anyio_backend: str,
) -> None:
    async def hangs() -> tuple[str, float]:
        await anyio.sleep(30)
        raise AssertionError("not reached")

    creds = OAuthBearerCredentials(hangs)
    errors: list[str] = []

    async def waiter(limit: float) -> None:
        with pytest.raises(AuthenticationError) as info:
            await creds.token(limit)
        errors.append(str(info.value))

    started = time.monotonic()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, 0.2)
            await anyio.sleep(0.05)
            tg.start_soon(waiter, 2.0)  # shares the call: fails with it, at 0.2 s
    assert time.monotonic() - started < 1.5
    assert all("no token within 0.2s" in e for e in errors), errors
    assert len(errors) == 2
    assert creds.provider_calls == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_event_loop_ending_during_a_provider_call_is_quiet(
    backend: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)

    async def slow() -> tuple[str, float]:
        await anyio.sleep(5)
        return TOKEN, time.time() + 60

    async def main() -> None:
        creds = OAuthBearerCredentials(slow)
        with anyio.move_on_after(0.1):
            await creds.token(5)

    started = time.monotonic()
    anyio.run(main, backend=backend)
    assert time.monotonic() - started < 3, "the loop waited for the provider call"
    assert "unhandled exception" not in caplog.text.lower()
    assert "Traceback" not in caplog.text + capsys.readouterr().err


def test_credentials_repr_hides_the_token() -> None:
    creds = OAuthBearerCredentials(lambda: (TOKEN, time.time() + 60))
    assert "token=***" in repr(creds) and "function" in repr(creds)
