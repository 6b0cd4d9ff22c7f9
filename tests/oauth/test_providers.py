"""The built-in token providers: MSK IAM with AWS's own signer (no AWS access), and the
OIDC client-credentials provider against the test identity provider (no broker)."""

from __future__ import annotations

import base64
import pickle
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from kafka_asgi.errors import AuthenticationError
from kafka_asgi.network.oauthbearer import OAuthBearerCredentials
from kafka_asgi.oauth import MSKIAMTokenProvider, OIDCTokenProvider
from tests.support.brokers import KafkaCluster
from tests.support.oauth import new_client_id, oidc_provider, token_requests
from tests.support.ports import free_port
from tests.support.timing import scaled

ACCESS_KEY = "AKIAKAFKAASGITEST0001"
SECRET_KEY = "kafka-asgi/never-shown/SECRET+key0123456789"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Static credentials in the environment and a config file with a profile; no
    instance metadata, so nothing leaves the machine."""
    config = tmp_path / "config"
    config.write_text(
        "[profile analytics]\n"
        "aws_access_key_id = AKIAPROFILEKEY000002\n"
        "aws_secret_access_key = profile-secret-key\n"
    )
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return config


def signed_url(token: str) -> tuple[str, dict[str, str]]:
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parts = urlsplit(url)
    return parts.netloc, {k: v[0] for k, v in parse_qs(parts.query).items()}


def test_msk_token_is_a_presigned_connect_url_for_the_region(aws_env: Path) -> None:
    provider = MSKIAMTokenProvider("eu-west-1")
    before = time.time()
    token, expires_at = provider.token()
    host, query = signed_url(token)
    assert host == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert re.fullmatch(
        rf"{ACCESS_KEY}/\d{{8}}/eu-west-1/kafka-cluster/aws4_request", query["X-Amz-Credential"]
    )
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"])
    assert int(query["X-Amz-Expires"]) == 900
    assert before + 800 < expires_at < time.time() + 901
    assert SECRET_KEY not in token and SECRET_KEY not in repr(provider)
    assert "eu-west-1" in repr(provider)


def test_msk_profile(aws_env: Path) -> None:
    token, _ = MSKIAMTokenProvider("us-east-2", profile="analytics").token()
    host, query = signed_url(token)
    assert host == "kafka.us-east-2.amazonaws.com"
    assert query["X-Amz-Credential"].startswith("AKIAPROFILEKEY000002/")
    assert "/us-east-2/" in query["X-Amz-Credential"]


async def test_msk_through_the_token_cache(aws_env: Path, anyio_backend: str) -> None:
    creds = OAuthBearerCredentials(MSKIAMTokenProvider("ap-southeast-2"))
    token = await creds.token(10)
    assert signed_url(token.value)[0] == "kafka.ap-southeast-2.amazonaws.com"
    assert token.value not in repr(creds)


def test_msk_options_are_checked() -> None:
    with pytest.raises(ValueError, match="region"):
        MSKIAMTokenProvider("")
    with pytest.raises(ValueError, match="at most one"):
        MSKIAMTokenProvider("eu-west-1", profile="a", role_arn="arn:aws:iam::1:role/x")
    with pytest.raises(ValueError, match="role_session_name needs role_arn"):
        MSKIAMTokenProvider("eu-west-1", role_session_name="s")
    provider = MSKIAMTokenProvider("eu-west-1", role_arn="arn:aws:iam::123456789012:role/kafka")
    assert "role_arn='arn:aws:iam::123456789012:role/kafka'" in repr(provider)


def test_oidc_options_are_checked() -> None:
    secret = "do-not-show-me"
    with pytest.raises(ValueError, match="http\\(s\\) URL"):
        OIDCTokenProvider("ftp://x/token", "id", secret)
    with pytest.raises(ValueError, match="client_secret"):
        OIDCTokenProvider("https://x/token", "id", "")
    with pytest.raises(ValueError, match="auth_method"):
        OIDCTokenProvider("https://x/token", "id", secret, auth_method="jwt")
    with pytest.raises(ValueError, match="retries"):
        OIDCTokenProvider("https://x/token", "id", secret, retries=-1)
    provider = OIDCTokenProvider("https://x/token", "id", secret, scope="kafka")
    assert secret not in repr(provider) and secret not in str(provider)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(provider)


@pytest.mark.parametrize("auth_method", ["basic", "post"])
async def test_oidc_token(kafka: KafkaCluster, anyio_backend: str, auth_method: str) -> None:
    client_id = new_client_id()
    provider = oidc_provider(kafka, client_id, auth_method=auth_method, extensions={"a": "b"})
    token = await provider.token()
    assert token.value.count(".") == 2
    assert time.time() + 3500 < token.expires_at <= time.time() + 3600
    assert token.extensions == {"a": "b"}
    assert provider.requests == 1 and token_requests(kafka, client_id) == 1


async def test_oidc_retries_unavailable_endpoint(kafka: KafkaCluster, anyio_backend: str) -> None:
    client_id = new_client_id("flaky2-")
    provider = oidc_provider(kafka, client_id, retries=3, retry_backoff=0.05)
    await provider.token()
    assert provider.requests == 3 and token_requests(kafka, client_id) == 3


async def test_oidc_gives_up_after_its_retries(kafka: KafkaCluster, anyio_backend: str) -> None:
    client_id = new_client_id("flaky9-")
    provider = oidc_provider(kafka, client_id, retries=2, retry_backoff=0.05)
    with pytest.raises(AuthenticationError, match=r"after 3 attempts \(HTTP 503\)"):
        await provider.token()
    assert token_requests(kafka, client_id) == 3


async def test_oidc_refusal_is_not_retried(kafka: KafkaCluster, anyio_backend: str) -> None:
    client_id = new_client_id()
    provider = oidc_provider(kafka, client_id, "wrong-secret-xyz", retries=3)
    with pytest.raises(AuthenticationError, match="HTTP 401: invalid_client") as info:
        await provider.token()
    assert token_requests(kafka, client_id) == 1
    assert "wrong-secret-xyz" not in str(info.value)


async def test_oidc_unreachable_endpoint_is_bounded(anyio_backend: str) -> None:
    provider = OIDCTokenProvider(
        f"http://127.0.0.1:{free_port()}/token",
        "id",
        "secret-value",
        timeout=1.0,
        retries=2,
        retry_backoff=0.05,
    )
    with anyio.fail_after(scaled(10)):
        with pytest.raises(AuthenticationError, match="ConnectError") as info:
            await provider.token()
    assert provider.requests == 3
    assert "secret-value" not in str(info.value)
