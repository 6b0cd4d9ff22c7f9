"""OAUTHBEARER configured as data: lifespan options and Django's settings.KAFKA_ASGI name
a built-in provider with a dict, and the producer they start authenticates with it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from kafka_asgi import BasicConsumer
from kafka_asgi.integrations.lifespan import producer_lifespan
from tests.support.brokers import KafkaCluster
from tests.support.oauth import idp, new_client_id, token_requests

pytestmark = pytest.mark.broker


def settings(kafka: KafkaCluster, client_id: str) -> dict[str, Any]:
    kafka.require("oauth_plaintext", "oauth_token_url")
    return {
        "sasl_mechanism": "OAUTHBEARER",
        "sasl_oauth_token_provider": {
            "provider": "oidc",
            "token_url": kafka.oauth_token_url,
            "client_id": client_id,
            "client_secret": idp.secret_for(client_id),
            "scope": "kafka",
        },
    }


async def read_values(kafka: KafkaCluster, topic: str) -> list[bytes | None]:
    async with BasicConsumer(kafka.plaintext) as consumer:
        result = await consumer.fetch(topic, 0, 0, max_wait=0.5)
    return [r.value for r in result.records]


async def test_lifespan_producer_options(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    topic = new_topic()
    client_id = new_client_id()
    async with producer_lifespan(
        cluster="oauth-lifespan",
        bootstrap=kafka.oauth_plaintext,
        producer_options=settings(kafka, client_id),
        on_unreachable="fail",
    ) as producer:
        meta = await producer.send(topic, b"via lifespan")  # type: ignore[attr-defined]
    assert meta.offset == 0
    assert await read_values(kafka, topic) == [b"via lifespan"]
    assert token_requests(kafka, client_id) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # Django's async: asyncio only
async def test_django_settings(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    from django.test import override_settings

    from kafka_asgi.django import get_asgi_application
    from tests.integrations import django_testapp  # noqa: F401 - configures Django first
    from tests.support.asgi import run_lifespan

    topic = new_topic()
    client_id = new_client_id()
    conf = {
        "BOOTSTRAP": kafka.oauth_plaintext,
        "CLUSTER": "default",
        "PRODUCER_OPTIONS": settings(kafka, client_id),
        "ON_UNREACHABLE": "fail",
        "ACCESS_LOG": {"topic": topic},
    }
    with override_settings(KAFKA_ASGI=conf):
        app = get_asgi_application()
        async with run_lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                response = await c.get("/items/3")
    assert response.status_code == 200
    (value,) = await read_values(kafka, topic)
    assert value is not None
    assert json.loads(value)["request_id"] == response.headers["x-request-id"]
    assert token_requests(kafka, client_id) == 1
