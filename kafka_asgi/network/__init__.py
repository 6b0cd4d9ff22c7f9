"""kafka_asgi.network: one connection to one broker (framing, TLS, SASL, versions)."""

from kafka_asgi.network.connection import BrokerConnection, ConnectionConfig
from kafka_asgi.network.errors import (
    AuthenticationError,
    ClientRequestTimeoutError,
    ConnectError,
    ConnectionClosedError,
    NetworkError,
    RequestTimeout,
    TLSError,
)
from kafka_asgi.network.oauthbearer import (
    OAuthBearerCredentials,
    OAuthBearerToken,
    TokenProvider,
    TokenProviderObject,
)
from kafka_asgi.network.sasl import SaslCredentials

__all__ = [
    "AuthenticationError",
    "BrokerConnection",
    "ClientRequestTimeoutError",
    "ConnectError",
    "ConnectionClosedError",
    "ConnectionConfig",
    "NetworkError",
    "OAuthBearerCredentials",
    "OAuthBearerToken",
    "RequestTimeout",
    "SaslCredentials",
    "TLSError",
    "TokenProvider",
    "TokenProviderObject",
]
