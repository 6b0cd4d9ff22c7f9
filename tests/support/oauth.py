"""The test identity provider (scripts/oauth_idp.py) as tests use it: credentials,
client options for the OAUTHBEARER listeners, and how often a client asked for a token."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any
from urllib.parse import quote

from tests.support.brokers import KafkaCluster, kafka_local, unique_name

idp = kafka_local.oauth_idp()


def new_client_id(prefix: str = "") -> str:
    """A client id no other test uses (the provider counts token requests per id);
    ``prefix`` picks a misbehaviour of the provider (``expired-``, ``ttl5-`` ...)."""
    return prefix + unique_name("client")


def oidc_provider(kafka: KafkaCluster, client_id: str, secret: str | None = None, **kw: Any) -> Any:
    from kafka_asgi.oauth import OIDCTokenProvider

    kafka.require("oauth_token_url")
    assert kafka.oauth_token_url is not None
    secret = idp.secret_for(client_id) if secret is None else secret
    return OIDCTokenProvider(kafka.oauth_token_url, client_id, secret, scope="kafka", **kw)


def oauth_options(kafka: KafkaCluster, listener: str, provider: Any) -> dict[str, Any]:
    """Client options for ``oauth_plaintext`` or ``oauth_ssl`` with ``provider``."""
    kafka.require(listener)
    options: dict[str, Any] = {
        "sasl_mechanism": "OAUTHBEARER",
        "sasl_oauth_token_provider": provider,
    }
    if listener == "oauth_ssl":
        kafka.require("ca_file")
        options["ssl_cafile"] = kafka.ca_file
    return options


def make_jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT (``alg: none``) with these claims."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"


def token_requests(kafka: KafkaCluster, client_id: str) -> int:
    """How many times ``client_id`` asked the identity provider for a token."""
    assert kafka.oauth_token_url is not None
    url = kafka.oauth_token_url.rsplit("/", 1)[0] + "/stats?client_id=" + quote(client_id)
    with urllib.request.urlopen(url, timeout=10) as answer:
        return int(json.loads(answer.read())["token_requests"])
