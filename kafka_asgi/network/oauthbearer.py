"""SASL OAUTHBEARER (RFC 7628, KIP-255): the client message, and the token behind it.

The client sends one message, the GS2 header ``n,,`` then ``auth=Bearer <token>``
and any SASL extensions (KIP-342), each key=value pair ended by ``\\x01`` and the
whole ended by one more. The broker answers with nothing (accepted) or with a JSON
error status; the client then sends a lone ``\\x01`` and the broker fails the
exchange (RFC 7628 section 3.2.3).

Where the token comes from is the user's business: a *token provider*, called
before a connection authenticates, is any of

- a callable, sync or async, with no arguments, returning the token;
- an object whose ``token()`` method (sync or async) returns it, and whose optional
  ``extensions()`` method returns the SASL extensions (aiokafka's provider shape).

"The token" is an :class:`OAuthBearerToken`, a ``(token, expires_at)`` tuple
(``expires_at`` in Unix seconds), or a JWT string whose ``exp`` claim gives the
expiry. Sync providers run in a worker thread: they may do blocking I/O.

:class:`OAuthBearerCredentials` keeps the token of one client (all its connections)
and asks the provider again once 80% of the token's lifetime has passed, as Java's
``sasl.login.refresh.window.factor`` does. The token never appears in a ``repr``, a
log line or an exception message.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, Union

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from kafka_asgi.network.errors import AuthenticationError

__all__ = [
    "OAuthBearerCredentials",
    "OAuthBearerMechanism",
    "OAuthBearerToken",
    "TokenProvider",
    "TokenProviderObject",
    "client_initial_response",
    "jwt_expiry",
]

logger = logging.getLogger("kafka_asgi.network")


class TokenProviderObject(Protocol):
    """A provider object: ``token()`` (sync or async) and optionally ``extensions()``."""

    def token(self) -> Any: ...


TokenProvider = Union[Callable[[], Any], TokenProviderObject]  # noqa: UP007 (runtime alias)
"""A callable (sync or async) returning a token, or an object with a ``token()`` method."""

# KIP-342 (OAuthBearerClientInitialResponse): extension keys are letters only, values
# printable ASCII plus space, tab, CR and LF; "auth" is the token's own key.
_KEY = re.compile(r"[A-Za-z]+")
_VALUE = re.compile(r"[\x21-\x7E \t\r\n]+")
# RFC 6750 b64token, as Kafka's broker parses it.
_TOKEN = re.compile(r"[-_~+/.a-zA-Z0-9]+=*")
_SEPARATOR = "\x01"
# Refresh once this share of the token's lifetime has passed (Java's default window),
# and at the latest this many seconds before it expires (half the lifetime for tokens
# shorter than twice that): a session the broker cuts at the token's expiry must leave
# time to re-authenticate, which it allows once a second at most.
_REFRESH_WINDOW = 0.8
_REFRESH_FLOOR = 3.0
# After a failed refresh, wait this long (doubling) before asking the provider again.
_RETRY_FIRST = 0.5
_RETRY_MAX = 10.0


def check_extensions(extensions: object) -> dict[str, str]:
    """``extensions`` as a dict of valid KIP-342 pairs, or TypeError/ValueError naming the key."""
    if extensions is None:
        return {}
    if not isinstance(extensions, Mapping):
        raise TypeError(
            f"sasl_oauth_extensions must be a mapping of str to str, not"
            f" {type(extensions).__name__}"
        )
    checked: dict[str, str] = {}
    for key, value in extensions.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"SASL extension name {key!r} must be ASCII letters only (KIP-342)")
        if key == "auth":
            raise ValueError("SASL extension name 'auth' is reserved for the token (KIP-342)")
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            # The value is not echoed: extensions sometimes carry credentials.
            raise ValueError(
                f"SASL extension {key!r}: the value must be a non-empty str of printable"
                " ASCII, space, tab, CR or LF (KIP-342)"
            )
        checked[key] = value
    return checked


class OAuthBearerToken:
    """An access token, when it expires (Unix seconds) and its SASL extensions."""

    __slots__ = ("_value", "expires_at", "extensions")

    def __init__(
        self, value: str, expires_at: float, extensions: Mapping[str, str] | None = None
    ) -> None:
        if not isinstance(value, str):
            raise TypeError(f"the OAuth token must be a str, not {type(value).__name__}")
        if not _TOKEN.fullmatch(value):
            raise ValueError(
                "the OAuth token is empty or not an RFC 6750 bearer token"
                " (letters, digits, -._~+/ and trailing =)"
            )
        if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
            raise TypeError(
                f"the OAuth token's expires_at must be Unix seconds, not"
                f" {type(expires_at).__name__}"
            )
        self._value = value
        self.expires_at = unix_seconds(expires_at, "the OAuth token's expires_at")
        self.extensions = check_extensions(extensions)

    @property
    def value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self.extensions))
        return f"OAuthBearerToken(***, expires_at={self.expires_at!r}, extensions=[{keys}])"

    __str__ = __repr__


def unix_seconds(value: float, what: str) -> float:
    """``value`` as a float, or ValueError naming ``what`` when it is not finite (an
    int too large for a float included)."""
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        # Not repr(): an int past 4300 digits cannot be turned into a str.
        shown = repr(value)
        if isinstance(value, int):
            shown = f"an int of about {int(value.bit_length() * math.log10(2)) + 1} digits"
        raise ValueError(f"{what} must be finite, not {shown}")
    return seconds


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (not verified: the broker verifies), or None.

    Raises ValueError when the claim is a number no clock can reach (infinite, or an
    int too large for a float): that token is broken, not one without an expiry.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return unix_seconds(exp, "the JWT's exp claim")


def client_initial_response(
    token: str, extensions: Mapping[str, str] | None = None, authzid: str = ""
) -> bytes:
    """RFC 7628 client message: GS2 header, ``auth=Bearer``, KIP-342 extensions."""
    if authzid and ("," in authzid or "=" in authzid):
        raise ValueError(f"authzid {authzid!r} must not contain ',' or '='")
    pairs = [f"auth=Bearer {token}"]
    pairs += [f"{k}={v}" for k, v in check_extensions(extensions).items()]
    header = f"n,a={authzid}," if authzid else "n,,"
    return (header + _SEPARATOR + "".join(p + _SEPARATOR for p in pairs) + _SEPARATOR).encode()


class OAuthBearerMechanism:
    """One OAUTHBEARER exchange: the client message, then the broker's verdict."""

    name = "OAUTHBEARER"

    __slots__ = ("_message", "_step", "error_status")

    def __init__(self, token: OAuthBearerToken) -> None:
        self._message = client_initial_response(token.value, token.extensions)
        self._step = 0
        self.error_status: str | None = None
        """The broker's JSON error (RFC 7628 3.2.2), e.g. ``{"status":"invalid_token"}``."""

    def __repr__(self) -> str:
        return "OAuthBearerMechanism(***)"

    @property
    def complete(self) -> bool:
        # After an error status the exchange is not complete: the broker's failure
        # (or, without KIP-152 frames, its closing the connection) is still to come.
        return self._step >= 2 and self.error_status is None

    def start(self) -> bytes:
        self._step = 1
        return self._message

    def respond(self, challenge: bytes) -> bytes | None:
        if self._step != 1:
            raise AuthenticationError("OAUTHBEARER: unexpected message after the exchange ended")
        self._step = 2
        if not challenge:
            return None
        # An error status: RFC 7628 has the client answer with a lone %x01, after
        # which the broker fails the exchange with its own error code and message.
        status = challenge.decode("utf-8", "replace")
        self.error_status = status[:500]
        return _SEPARATOR.encode()


def _coerce(result: object, extensions: Mapping[str, str]) -> OAuthBearerToken:
    """The provider's ``result`` as a token carrying the client's ``extensions`` too
    (the token's own win on a shared key), whichever form it came in."""
    if isinstance(result, OAuthBearerToken):
        if not extensions:
            return result
        merged = {**extensions, **result.extensions}
        return OAuthBearerToken(result.value, result.expires_at, merged)
    if isinstance(result, tuple) and len(result) in (2, 3):
        value, expires_at = result[0], result[1]
        extra = dict(extensions)
        if len(result) == 3:
            extra.update(check_extensions(result[2]))
        return OAuthBearerToken(value, expires_at, extra)
    if isinstance(result, str):
        expires_at = jwt_expiry(result)
        if expires_at is None:
            raise TypeError(
                "the token provider returned a str that is not a JWT with an 'exp' claim;"
                " return (token, expires_at) or an OAuthBearerToken"
            )
        return OAuthBearerToken(result, expires_at, extensions)
    raise TypeError(
        f"the token provider returned {type(result).__name__}; expected an"
        " OAuthBearerToken, a (token, expires_at) tuple or a JWT str"
    )


def _late(limit: float) -> str:
    return f"OAUTHBEARER: the token provider gave no token within {limit}s"


class _Fetch:
    """One provider call, shared by the callers waiting for it: its outcome."""

    __slots__ = ("done", "error", "token")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.token: OAuthBearerToken | None = None
        self.error: AuthenticationError | None = None


class OAuthBearerCredentials:
    """A token provider with the cache in front of it, shared by a client's connections."""

    mechanism = "OAUTHBEARER"

    __slots__ = (
        "_error",
        "_expires_logged",
        "_extensions",
        "_fetch",
        "_fetching",
        "_method",
        "_provider",
        "_refresh_at",
        "_retry_at",
        "_retry_delay",
        "_token",
        "provider_calls",
    )

    def __init__(
        self, provider: TokenProvider, extensions: Mapping[str, str] | None = None
    ) -> None:
        method = getattr(provider, "token", None)
        if callable(method):
            self._fetch: Callable[[], Any] = method
        elif callable(provider):
            self._fetch = provider
        else:
            raise TypeError(
                "sasl_oauth_token_provider must be a callable returning a token or an"
                f" object with a token() method, not {type(provider).__name__}"
            )
        self._method = method
        self._provider = provider
        self._extensions = check_extensions(extensions)
        self._token: OAuthBearerToken | None = None
        self._refresh_at = 0.0
        self._fetching: _Fetch | None = None
        self._error: AuthenticationError | None = None
        self._retry_at = 0.0
        self._retry_delay = _RETRY_FIRST
        self._expires_logged = False
        self.provider_calls = 0
        """How many times the provider was asked for a token."""

    def __repr__(self) -> str:
        return f"OAuthBearerCredentials(provider={type(self._provider).__name__}, token=***)"

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        """What must never be shown: the current token (for scrubbing broker messages)."""
        return (self._token.value,) if self._token is not None else ()

    async def token(self, limit: float) -> OAuthBearerToken:
        """The cached token, or a fresh one once 80% of its lifetime has passed.

        Raises AuthenticationError when the provider fails (or takes longer than
        ``limit`` seconds) and no unexpired token is cached. A failure is remembered
        for a short, growing while, so many connections do not storm the provider.

        The provider call is shared by every caller waiting for a token, and it runs
        to its end (or its own ``limit``) even when the caller that started it leaves
        early, cancelled by its own deadline: a slow provider behind callers with
        short deadlines still delivers its token, to the next caller, instead of
        being asked again and cut short each time.
        """
        now = time.time()
        cached = self._token
        if cached is not None and now < self._refresh_at:
            return cached
        fetch = self._fetching
        if fetch is None:
            if self._error is not None and now < self._retry_at:
                return self._fallback(self._error)
            fetch = self._fetching = _Fetch()
            self._start(fetch, limit)
        with anyio.move_on_after(limit):
            await fetch.done.wait()
        if fetch.error is not None:
            return self._fallback(fetch.error)
        if fetch.token is None:
            # Still running: it goes on, for whoever asks next. Meanwhile the cached
            # token serves while it is valid (a slow provider is not a refusal).
            return self._fallback(AuthenticationError(_late(limit)))
        return fetch.token

    def _start(self, fetch: _Fetch, limit: float) -> None:
        """Run the provider call as a task of the event loop that no caller's cancel
        scope reaches: a daemon thread hands it to the loop (its token) and waits."""
        loop = anyio.lowlevel.current_token()

        def hand_over() -> None:
            try:
                anyio.from_thread.run(self._fetch_now, fetch, limit, token=loop)
            except BaseException:  # the event loop ended first: nobody waits
                pass

        try:
            threading.Thread(target=hand_over, name="kafka-asgi-oauth-token", daemon=True).start()
        except RuntimeError as exc:  # no thread could be started
            self._finish(fetch, AuthenticationError(f"OAUTHBEARER: cannot ask the provider: {exc}"))

    async def _fetch_now(self, fetch: _Fetch, limit: float) -> None:
        """The provider call and its outcome, kept for every caller (never raises)."""
        try:
            fresh = await self._call(limit)
        except AuthenticationError as exc:
            self._finish(fetch, exc)
            return
        except anyio.get_cancelled_exc_class():
            # The event loop is shutting down: nobody is left to wait.
            self._finish(fetch, AuthenticationError("OAUTHBEARER: the event loop ended"))
            return
        except Exception as exc:  # a bug of ours: reported to the callers, not lost
            self._finish(
                fetch, AuthenticationError(f"OAUTHBEARER: the token fetch failed: {exc!r}")
            )
            return
        self._error = None
        self._retry_delay = _RETRY_FIRST
        fetched = time.time()
        self._token = fresh
        lifetime = fresh.expires_at - fetched
        ahead = max((1 - _REFRESH_WINDOW) * lifetime, min(_REFRESH_FLOOR, lifetime / 2))
        self._refresh_at = fresh.expires_at - ahead
        fetch.token = fresh
        self._fetching = None
        fetch.done.set()
        # Last: a logging handler that raises must not leave this fetch unfinished
        # (every later caller would wait for it, and the provider never be asked again).
        logger.debug("OAUTHBEARER: new token from the provider, valid for %.1fs", lifetime)

    def _finish(self, fetch: _Fetch, error: AuthenticationError) -> None:
        """A provider call that failed: remembered for a growing while (no storm)."""
        self._error = error
        self._retry_at = time.time() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        fetch.error = error
        self._fetching = None
        fetch.done.set()

    def _fallback(self, error: AuthenticationError) -> OAuthBearerToken:
        """The cached token while it is still valid (a refresh that failed is retried
        later); otherwise the provider's error."""
        cached = self._token
        if cached is not None and time.time() < cached.expires_at:
            logger.warning(
                "OAUTHBEARER: refreshing the token failed (%s); using the current one,"
                " valid for %.1fs more",
                error,
                cached.expires_at - time.time(),
            )
            return cached
        raise AuthenticationError(str(error)) from error.__cause__

    async def _ask(self) -> tuple[object, dict[str, str]]:
        """The provider's result, and the client's extensions with its own."""
        fetch = self._fetch
        if inspect.iscoroutinefunction(fetch):
            result = await fetch()
        else:
            result = await anyio.to_thread.run_sync(fetch, abandon_on_cancel=True)
        if inspect.isawaitable(result):
            result = await result
        extensions = dict(self._extensions)
        more = getattr(self._provider, "extensions", None)
        if self._method is not None and callable(more):
            found = more()
            if inspect.isawaitable(found):
                found = await found
            extensions.update(check_extensions(found))
        return result, extensions

    async def _call(self, limit: float) -> OAuthBearerToken:
        self.provider_calls += 1
        answer: tuple[object, dict[str, str]] | None = None
        late = _late(limit)
        # Only our own deadline is reported as one: a provider's own TimeoutError (a
        # socket timeout, asyncio.wait_for) is its failure, reported with its cause.
        with anyio.move_on_after(limit) as deadline:
            try:
                answer = await self._ask()
            except AuthenticationError:
                raise
            except Exception as exc:
                if deadline.cancel_called:
                    # The provider turned our cancellation into an error of its own.
                    raise AuthenticationError(late) from exc
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                raise AuthenticationError(
                    f"OAUTHBEARER: the token provider failed: {reason}"
                ) from exc
        if deadline.cancelled_caught or answer is None:
            raise AuthenticationError(late)
        result, extensions = answer
        try:
            token = _coerce(result, extensions)
        except (TypeError, ValueError) as exc:
            raise AuthenticationError(f"OAUTHBEARER: {exc}") from None
        left = token.expires_at - time.time()
        if left <= 0:
            raise AuthenticationError(
                f"OAUTHBEARER: the token provider returned a token that expired {-left:.1f}s"
                " ago (is the clock right?)"
            )
        return token
