"""kafka-asgi's OAUTHBEARER options: OIDC client credentials and AWS MSK IAM."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from kafka_asgi.cli import CommandError, build_parser, client_options
from kafka_asgi.cluster.options import ClientOptions
from kafka_asgi.network.oauthbearer import OAuthBearerCredentials
from kafka_asgi.oauth import MSKIAMTokenProvider, OIDCTokenProvider
from tests.support.brokers import KafkaCluster
from tests.support.oauth import idp, new_client_id


def options(*argv: str, env: dict[str, str] | None = None) -> dict[str, object]:
    return client_options(build_parser().parse_args(["topics", *argv]), env or {})[1]


def test_oidc_flags() -> None:
    got = options(
        "--oauth-token-url",
        "https://idp.example.com/token",
        "--oauth-client-id",
        "svc",
        "--oauth-scope",
        "kafka",
        "--oauth-extension",
        "logicalCluster=lkc-1",
        "--oauth-extension",
        "identityPoolId=pool-2",
        env={"KAFKA_OAUTH_CLIENT_SECRET": "from-env"},
    )
    assert got["sasl_mechanism"] == "OAUTHBEARER"
    assert got["sasl_oauth_token_provider"] == {
        "provider": "oidc",
        "token_url": "https://idp.example.com/token",
        "client_id": "svc",
        "client_secret": "from-env",
        "scope": "kafka",
        "extensions": {"logicalCluster": "lkc-1", "identityPoolId": "pool-2"},
    }
    # The settings become the provider behind the token cache.
    creds = ClientOptions.from_options(**got).connection.sasl
    assert isinstance(creds, OAuthBearerCredentials)
    assert "from-env" not in repr(creds)


def test_msk_flags() -> None:
    got = options("--msk-iam-region", "eu-west-1", "--aws-profile", "prod")
    assert got["sasl_oauth_token_provider"] == {
        "provider": "msk_iam",
        "region": "eu-west-1",
        "profile": "prod",
    }
    assert got["ssl"] is True
    assert got["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(ClientOptions.from_options(**got).connection.sasl, OAuthBearerCredentials)
    # TLS turned on by --msk-iam-region alone still takes --no-ssl-check-hostname (it
    # was dropped).
    unchecked = options("--msk-iam-region", "eu-west-1", "--no-ssl-check-hostname")
    assert unchecked["ssl"] is True and unchecked["ssl_check_hostname"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sasl-mechanism", "OAUTHBEARER"], "needs --oauth-token-url"),
        (["--oauth-token-url", "https://x/t", "--oauth-client-id", "a"], "client-secret"),
        (["--msk-iam-region", "eu-west-1", "--oauth-client-id", "a"], "exclude each other"),
        (["--aws-profile", "p"], "need --msk-iam-region"),
        (["--msk-iam-region", "r", "--sasl-mechanism", "PLAIN"], "need --sasl-mechanism OAUTH"),
        (
            [
                "--oauth-token-url",
                "u",
                "--oauth-client-id",
                "a",
                "--oauth-client-secret",
                "s",
                "--oauth-extension",
                "novalue",
            ],
            "KEY=VALUE",
        ),
    ],
)
def test_bad_combinations(argv: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        options(*argv)


def test_settings_mapping_errors() -> None:
    from kafka_asgi.oauth import provider_from_settings

    with pytest.raises(ValueError, match="'provider' must be one of msk_iam, oidc"):
        provider_from_settings({"provider": "kerberos"})
    with pytest.raises(TypeError, match=r"unknown keys \['colour'\]"):
        provider_from_settings({"provider": "msk_iam", "region": "r", "colour": "x"})
    with pytest.raises(TypeError, match="client_secret"):
        provider_from_settings({"provider": "oidc", "token_url": "https://x/t", "client_id": "a"})
    assert isinstance(
        provider_from_settings(
            {"provider": "oidc", "token_url": "https://x/t", "client_id": "a", "client_secret": "s"}
        ),
        OIDCTokenProvider,
    )
    assert isinstance(
        provider_from_settings({"provider": "msk_iam", "region": "us-east-1"}), MSKIAMTokenProvider
    )


@pytest.mark.broker
@pytest.mark.parametrize("listener", ["oauth_plaintext", "oauth_ssl"])
def test_topics_over_oauthbearer(
    kafka: KafkaCluster, new_topic: Callable[..., str], listener: str
) -> None:
    kafka.require(listener, "oauth_token_url", "ca_file")
    topic = new_topic()
    client_id = new_client_id()
    secret = idp.secret_for(client_id)
    tls = ["--ssl-cafile", str(kafka.ca_file)] if listener == "oauth_ssl" else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}

    def run(secret_value: str) -> subprocess.CompletedProcess[str]:
        argv = ["topics", "-b", str(getattr(kafka, listener)), *tls, "--sasl-mechanism"]
        argv += ["OAUTHBEARER", "--oauth-token-url", str(kafka.oauth_token_url)]
        argv += ["--oauth-client-id", client_id, "--oauth-scope", "kafka"]
        return subprocess.run(
            [sys.executable, "-m", "kafka_asgi.cli", *argv],
            capture_output=True,
            text=True,
            env={**env, "KAFKA_OAUTH_CLIENT_SECRET": secret_value},
            timeout=60,
        )

    listed = run(secret)
    assert listed.returncode == 0, listed.stderr
    assert f"{topic}\tpartitions=1" in listed.stdout.splitlines()
    wrong = run("not-the-secret")
    assert wrong.returncode == 1
    assert wrong.stderr.count("\n") == 1 and "Traceback" not in wrong.stderr
    assert "HTTP 401" in wrong.stderr and "not-the-secret" not in wrong.stderr
