"""The connection-level client options, validated once: where and how to reach a broker."""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kafka_asgi.network.oauthbearer import OAuthBearerCredentials, TokenProvider
from kafka_asgi.network.sasl import SaslCredentials
from kafka_asgi.network.tls import build_ssl_context

__all__ = ["SECRET_OPTIONS", "ConnectionConfig", "Credentials", "check_timeout", "timeout_ms"]

Credentials = SaslCredentials | OAuthBearerCredentials

SECRET_OPTIONS = frozenset(
    {"sasl_username", "sasl_password", "sasl_oauth_token_provider", "sasl_oauth_extensions"}
)
"""The client options whose values never print: what SaslCredentials and
OAuthBearerCredentials keep out of their reprs once made (a username, as a password
passed as the username by mistake would leak; a token provider's settings, which hold
an OAuth client secret; the extensions, whose keys alone an OAuthBearerToken shows).
Code that prints options as given (a lifespan's options) masks these."""


def check_timeout(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """``value`` as a positive finite float, or a TypeError/ValueError naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def timeout_ms(seconds: float) -> int:
    """A request's ``timeout_ms`` field for a timeout of ``seconds``: milliseconds,
    capped at the int32 the field is (about 24.8 days), so that a long timeout the
    options accept never makes a request that cannot be encoded."""
    return min(int(seconds * 1000), 0x7FFFFFFF)


def _check_client_id(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"client_id must be a str, not {type(value).__name__}")
    try:
        data = value.encode()
    except UnicodeEncodeError as exc:
        # Every request carries it: it would fail each one.
        raise ValueError(
            f"client_id {value!r:.80} cannot be encoded as UTF-8 ({exc.reason})"
        ) from None
    if len(data) > 0x7FFF:
        raise ValueError("client_id is longer than 32767 bytes")
    return value


def _credentials(
    mechanism: str | None,
    username: str | None,
    password: str | None,
    provider: TokenProvider | None,
    extensions: Mapping[str, str] | None,
) -> Credentials | None:
    if isinstance(mechanism, str) and mechanism.upper() == "OAUTHBEARER":
        if provider is None:
            raise ValueError(
                "sasl_mechanism='OAUTHBEARER' needs sasl_oauth_token_provider (a callable"
                " returning the token and its expiry, or a provider from kafka_asgi.oauth)"
            )
        if username is not None or password is not None:
            raise ValueError(
                "sasl_username/sasl_password do not apply to OAUTHBEARER; the token"
                " provider holds the credentials"
            )
        return OAuthBearerCredentials(provider, extensions)
    if provider is not None or extensions is not None:
        raise ValueError(
            "sasl_oauth_token_provider/sasl_oauth_extensions need sasl_mechanism='OAUTHBEARER',"
            f" not {mechanism!r}"
        )
    if mechanism is not None:
        if username is None or password is None:
            raise ValueError("sasl_mechanism needs both sasl_username and sasl_password")
        return SaslCredentials(mechanism, username, password)
    if username is not None or password is not None:
        raise ValueError("sasl_username/sasl_password given without sasl_mechanism")
    return None


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything a connection needs to reach and talk to one broker (validated)."""

    client_id: str = "kafka-asgi"
    ssl_context: ssl.SSLContext | None = None
    sasl: Credentials | None = None
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    resolver: Callable[[str], str] | None = field(default=None, compare=False)

    @classmethod
    def from_options(
        cls,
        *,
        client_id: str = "kafka-asgi",
        ssl: bool | ssl.SSLContext | None = None,
        ssl_cafile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_check_hostname: bool = True,
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        sasl_oauth_token_provider: TokenProvider | None = None,
        sasl_oauth_extensions: Mapping[str, str] | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float = 30.0,
        resolver: Callable[[str], str] | None = None,
    ) -> ConnectionConfig:
        """Validate the connection-level client options (see the brief's option list)."""
        sasl = _credentials(
            sasl_mechanism,
            sasl_username,
            sasl_password,
            sasl_oauth_token_provider,
            sasl_oauth_extensions,
        )
        if resolver is not None and not callable(resolver):
            raise TypeError(f"resolver must be a callable host -> address, not {resolver!r}")
        timeout = check_timeout("connect_timeout", connect_timeout)
        req_timeout = check_timeout("request_timeout", request_timeout)
        assert timeout is not None and req_timeout is not None
        return cls(
            client_id=_check_client_id(client_id),
            ssl_context=build_ssl_context(
                ssl,
                cafile=ssl_cafile,
                certfile=ssl_certfile,
                keyfile=ssl_keyfile,
                check_hostname=ssl_check_hostname,
            ),
            sasl=sasl,
            connect_timeout=timeout,
            request_timeout=req_timeout,
            resolver=resolver,
        )
