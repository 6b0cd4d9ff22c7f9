"""SCRAM against a real broker with a password RFC 4013 SASLprep would change or refuse:
Kafka salts the password's UTF-8 bytes as they are (the harness's second SCRAM user,
scripts/kafka_local.py)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from kafka_asgi.errors import AuthenticationError
from kafka_asgi.network.connection import BrokerConnection
from kafka_asgi.protocol.messages import ApiVersionsRequest
from tests.support.brokers import KafkaCluster, kafka_local
from tests.support.listeners import host_port

pytestmark = pytest.mark.anyio

USERNAME = kafka_local.UNICODE_USERNAME
PASSWORD = kafka_local.UNICODE_PASSWORD
MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-512"]


def connection(kafka: KafkaCluster, mechanism: str, username: str, password: str) -> Any:
    # Only the local harness made the second user.
    kafka.require("sasl_plaintext", "harness")
    assert kafka.sasl_plaintext is not None
    host, port = host_port(kafka.sasl_plaintext)
    return BrokerConnection(
        host,
        port,
        request_timeout=10,
        sasl_mechanism=mechanism,
        sasl_username=username,
        sasl_password=password,
    )


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_credentials_saslprep_would_change_authenticate(
    anyio_backend: str, kafka: KafkaCluster, mechanism: str
) -> None:
    assert "\t" in PASSWORD and "\u00a0" in PASSWORD and "\ufb01" in PASSWORD
    with anyio.fail_after(20):
        async with connection(kafka, mechanism, USERNAME, PASSWORD) as conn:
            response = await conn.request(ApiVersionsRequest(), 0)
    assert response.api_keys


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_the_prepared_password_is_refused(
    anyio_backend: str, kafka: KafkaCluster, mechanism: str
) -> None:
    # What SASLprep maps the password to (its tab aside, which SASLprep refuses): the
    # broker tells the two apart, so the test above proves the bytes sent.
    prepared = PASSWORD.replace("\u00a0", " ").replace("\ufb01", "fi")
    with anyio.fail_after(20):
        with pytest.raises(AuthenticationError):
            async with connection(kafka, mechanism, USERNAME, prepared):
                pass
