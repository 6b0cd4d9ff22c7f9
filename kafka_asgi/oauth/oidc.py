"""OAuth 2 client credentials (RFC 6749 section 4.4; Kafka's KIP-768) through httpx.

The provider posts ``grant_type=client_credentials`` (and ``scope``) to the identity
provider's token endpoint, authenticating as the client with HTTP Basic (RFC 6749
2.3.1, the default, as Kafka's Java client does) or with the secret in the form, and
returns the access token with the expiry that ``expires_in`` (or the JWT's ``exp``)
gives. Each attempt is bounded by ``timeout``; connection failures, timeouts, HTTP
408, 425, 429 and 5xx (but 501 Not Implemented and 505 HTTP Version Not Supported)
are tried again up to ``retries`` times, waiting ``retry_backoff`` doubled each time
(capped at ``retry_backoff_max``); other refusals (wrong secret: 400/401) fail at
once, since asking again cannot help.

The client secret and the tokens never appear in a repr, a log line or an exception.
"""

from __future__ import annotations

import logging
import math
import random
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import anyio

from kafka_asgi.network.errors import AuthenticationError
from kafka_asgi.network.oauthbearer import (
    OAuthBearerToken,
    check_extensions,
    jwt_expiry,
    unix_seconds,
)

__all__ = ["OIDCTokenProvider"]

logger = logging.getLogger("kafka_asgi.oauth")

_RETRY_STATUSES = frozenset({408, 425, 429})
# Every 5xx is the server's trouble, often passing: CDNs and gateways in front of
# identity providers answer 520-530 of their own (Cloudflare's 522, 524). Only these
# two say that the same request can never succeed.
_FINAL_5XX = frozenset({501, 505})


def _retried(status: int) -> bool:
    return status in _RETRY_STATUSES or (500 <= status <= 599 and status not in _FINAL_5XX)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


class OIDCTokenProvider:
    """Access tokens from an OIDC/OAuth 2 token endpoint (client credentials grant).

    ``OIDCTokenProvider("https://idp.example.com/oauth2/token", "my-client", secret,
    scope="kafka")``; pass it as ``sasl_oauth_token_provider``. ``extensions`` are SASL
    extensions (KIP-342) sent with every token, such as Confluent Cloud's
    ``logicalCluster`` and ``identityPoolId``. ``verify`` is httpx's: True, a CA file
    path or an ``ssl.SSLContext``.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        audience: str | None = None,
        extensions: Mapping[str, str] | None = None,
        auth_method: str = "basic",
        timeout: float = 10.0,
        retries: int = 3,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 5.0,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        if not isinstance(token_url, str) or urlsplit(token_url).scheme not in ("http", "https"):
            raise ValueError(f"token_url must be an http(s) URL, not {token_url!r}")
        if not urlsplit(token_url).hostname:
            raise ValueError(f"token_url {token_url!r} has no host")
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty str")
        if not isinstance(client_secret, str) or not client_secret:
            # Not echoed: it is a secret.
            raise ValueError("client_secret must be a non-empty str")
        for name, value in (("scope", scope), ("audience", audience)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        if auth_method not in ("basic", "post"):
            raise ValueError(
                f"auth_method must be 'basic' (HTTP Basic) or 'post' (in the form), not"
                f" {auth_method!r}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, not {retries!r}")
        try:
            import httpx
        except ImportError:
            raise ImportError(
                "OIDCTokenProvider needs httpx: pip install 'kafka-asgi[oauth]'"
            ) from None
        self._httpx = httpx
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.audience = audience
        self.extensions = check_extensions(extensions)
        self.auth_method = auth_method
        self.timeout = _positive("timeout", timeout)
        self.retries = retries
        self.retry_backoff = _positive("retry_backoff", retry_backoff)
        self.retry_backoff_max = _positive("retry_backoff_max", retry_backoff_max)
        self._verify = verify
        self.requests = 0
        """HTTP requests made to the token endpoint (attempts, retries included)."""

    def __repr__(self) -> str:
        return (
            f"OIDCTokenProvider(token_url={self.token_url!r}, client_id={self.client_id!r},"
            f" client_secret=***, scope={self.scope!r})"
        )

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("OIDCTokenProvider holds a client secret and is not pickled")

    def _request(self) -> tuple[dict[str, str], dict[str, str]]:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["audience"] = self.audience
        headers = {"Accept": "application/json"}
        if self.auth_method == "basic":
            import base64

            # RFC 6749 2.3.1: both form-urlencoded before the Basic encoding.
            pair = f"{quote(self.client_id, safe='')}:{quote(self._secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = self._secret
        return form, headers

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***")[:300]

    async def token(self) -> OAuthBearerToken:
        """A new access token from the endpoint (the caller caches it)."""
        httpx = self._httpx
        form, headers = self._request()
        delay = self.retry_backoff
        last = ""
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout), verify=self._verify
        ) as client:
            for attempt in range(self.retries + 1):
                if attempt:
                    logger.debug(
                        "token endpoint %s: %s; trying again in %.2fs",
                        self.token_url,
                        last,
                        delay,
                    )
                    await anyio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, self.retry_backoff_max)
                self.requests += 1
                try:
                    response = await client.post(self.token_url, data=form, headers=headers)
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {self._scrub(str(exc)) or 'no answer'}"
                    continue
                if _retried(response.status_code):
                    last = f"HTTP {response.status_code}"
                    continue
                return self._parse(response)
        raise AuthenticationError(
            f"token endpoint {self.token_url} gave no token after {self.retries + 1}"
            f" attempts ({last})"
        )

    def _parse(self, response: Any) -> OAuthBearerToken:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if status != 200:
            reason = ""
            if isinstance(body, dict):
                error = body.get("error")
                description = body.get("error_description")
                reason = ": " + self._scrub(f"{error or ''} {description or ''}".strip())
            raise AuthenticationError(
                f"token endpoint {self.token_url} refused client {self.client_id!r}:"
                f" HTTP {status}{reason}"
            )
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise AuthenticationError(
                f"token endpoint {self.token_url} answered without an access_token"
            )
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise AuthenticationError(
                f"token endpoint {self.token_url} issued a {token_type!r} token, not Bearer"
            )
        value = body["access_token"]
        try:
            # A JWT's own exp wins when it is earlier: it is what the broker checks, and
            # it is rounded down to whole seconds.
            expires_at = jwt_expiry(value)
            lifetime = self._expires_in(body.get("expires_in"))
        except ValueError as exc:
            raise AuthenticationError(f"token endpoint {self.token_url}: {exc}") from None
        if lifetime is not None:
            by_expires_in = time.time() + lifetime
            expires_at = by_expires_in if expires_at is None else min(expires_at, by_expires_in)
        if expires_at is None:
            raise AuthenticationError(
                f"token endpoint {self.token_url} gave neither expires_in nor a JWT exp claim"
            )
        try:
            return OAuthBearerToken(value, expires_at, self.extensions)
        except (TypeError, ValueError) as exc:
            raise AuthenticationError(f"token endpoint {self.token_url}: {exc}") from None

    @staticmethod
    def _expires_in(expires_in: object) -> float | None:
        """Seconds the token lives (RFC 6749 5.1), None when not given or not a number;
        ValueError for a number no clock can reach."""
        if isinstance(expires_in, str):
            # Some endpoints send it as a string: "3600", " 3600", "3600.0".
            try:
                expires_in = float(expires_in)
            except ValueError:
                return None
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)):
            return None
        return unix_seconds(expires_in, "expires_in")
