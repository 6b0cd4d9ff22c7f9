"""OIDCTokenProvider faults found in review, against a token endpoint faked with
httpx.MockTransport (no identity provider, no broker): which statuses are retried,
and expiry values a token endpoint may send."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest

from kafka_asgi.errors import AuthenticationError
from kafka_asgi.oauth import OIDCTokenProvider
from tests.support.oauth import make_jwt

pytestmark = pytest.mark.anyio

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], None]:
    """Install ``handler`` as the token endpoint of every OIDCTokenProvider."""
    real = httpx.AsyncClient

    def install(handler: Handler) -> None:
        transport = httpx.MockTransport(handler)

        def client(**options: object) -> httpx.AsyncClient:
            options.pop("verify", None)
            return real(transport=transport, **options)  # type: ignore[arg-type]

        monkeypatch.setattr(httpx, "AsyncClient", client)

    return install


def provider() -> OIDCTokenProvider:
    return OIDCTokenProvider(
        "https://idp.example/token", "cid", "s3cret-value", retries=2, retry_backoff=0.01
    )


def answers(*statuses: int) -> Handler:
    """The endpoint answers these statuses in turn, then a token."""
    pending: Iterator[int] = iter(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(pending, 200)
        if status == 200:
            return httpx.Response(200, json={"access_token": "abc.def", "expires_in": 3600})
        return httpx.Response(status, text="<html>origin unreachable</html>")

    return handler


# ---------------------------------------------------------------- retried statuses


@pytest.mark.parametrize("status", [507, 520, 522, 524, 529])
async def test_every_passing_5xx_is_retried(
    anyio_backend: str, endpoint: Callable[[Handler], None], status: int
) -> None:
    endpoint(answers(status, status))
    p = provider()
    with anyio.fail_after(5):
        token = await p.token()
    assert token.value == "abc.def"
    assert p.requests == 3


@pytest.mark.parametrize("status", [501, 505, 400, 401])
async def test_final_statuses_are_not_retried(
    anyio_backend: str, endpoint: Callable[[Handler], None], status: int
) -> None:
    endpoint(answers(status))
    p = provider()
    with pytest.raises(AuthenticationError, match=f"HTTP {status}"):
        await p.token()
    assert p.requests == 1


async def test_5xx_that_keeps_failing_names_the_status(
    anyio_backend: str, endpoint: Callable[[Handler], None]
) -> None:
    endpoint(answers(522, 522, 522))
    p = provider()
    with pytest.raises(AuthenticationError, match=r"after 3 attempts \(HTTP 522\)") as info:
        await p.token()
    assert "refused" not in str(info.value)
    assert p.requests == 3


# ---------------------------------------------------------------- expiry values


@pytest.mark.parametrize("expires_in", ["3600.0", " 3600 ", "3600", 3600.0])
async def test_expires_in_as_a_numeric_string(
    anyio_backend: str, endpoint: Callable[[Handler], None], expires_in: object
) -> None:
    endpoint(
        lambda _: httpx.Response(200, json={"access_token": "opaque", "expires_in": expires_in})
    )
    token = await provider().token()
    assert token.expires_at - time.time() == pytest.approx(3600, abs=5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"access_token": "opaque", "expires_in": ' + b"9" * 400 + b"}", "expires_in must"),
        (b'{"access_token": "opaque", "expires_in": 1e400}', "expires_in must be finite"),
        (b'{"access_token": "opaque", "expires_in": "1e400"}', "expires_in must be finite"),
    ],
    ids=["huge-int", "huge-float", "huge-string"],
)
async def test_absurd_expires_in_is_a_clear_error(
    anyio_backend: str, endpoint: Callable[[Handler], None], body: bytes, message: str
) -> None:
    endpoint(lambda _: httpx.Response(200, content=body))
    with pytest.raises(AuthenticationError, match=message) as info:
        await provider().token()
    assert "idp.example" in str(info.value)


async def test_jwt_with_huge_exp_is_a_clear_error(
    anyio_backend: str, endpoint: Callable[[Handler], None]
) -> None:
    token = make_jwt({"exp": 10**400})
    endpoint(lambda _: httpx.Response(200, json={"access_token": token, "expires_in": 60}))
    with pytest.raises(AuthenticationError, match="exp claim must be finite"):
        await provider().token()
