"""A TLS or authentication failure is a configuration error (issue 11, point 5,
fourth defect): the producer reports the records promptly, as BasicConsumer
raises at once, instead of treating it as "broker unreachable" and waiting the
whole delivery_timeout while reconnecting.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.consumer import BasicConsumer
from kafka_asgi.network.errors import AuthenticationError, TLSError
from tests.support.brokers import KafkaCluster
from tests.support.timing import scaled

pytestmark = pytest.mark.anyio

# Far longer than PROMPT: a producer waiting for delivery_timeout fails the test.
DELIVERY_TIMEOUT = 120.0
PROMPT = 10.0


async def _producer_fails_promptly(
    bootstrap: str, error: type[Exception], match: str, **options: Any
) -> None:
    failures: list[Any] = []
    async with Producer(
        bootstrap,
        delivery_timeout=DELIVERY_TIMEOUT,
        close_timeout=1.0,
        on_delivery=lambda e, *rest: failures.append(e),
        **options,
    ) as producer:
        started = time.monotonic()
        with anyio.fail_after(scaled(PROMPT)):
            with pytest.raises(error, match=match):
                await producer.send("events", b"v")
        producer.send_nowait("events", b"w")
        with anyio.fail_after(scaled(PROMPT)):
            await producer.flush()
        assert time.monotonic() - started < scaled(PROMPT)
        stats = producer.stats()
        assert (stats.failed, stats.delivered) == (2, 0)
        assert isinstance(stats.last_error, error)
    assert len(failures) == 2 and all(isinstance(e, error) for e in failures)


async def test_tls_client_on_a_plaintext_listener(anyio_backend: str, kafka: KafkaCluster) -> None:
    kafka.require("ca_file")
    await _producer_fails_promptly(
        kafka.plaintext, TLSError, "plaintext listener", ssl_cafile=kafka.ca_file
    )
    # The consumer says the same, as promptly.
    async with BasicConsumer(kafka.plaintext, ssl_cafile=kafka.ca_file) as consumer:
        with anyio.fail_after(scaled(PROMPT)):
            with pytest.raises(TLSError, match="plaintext listener"):
                await consumer.fetch("events", 0, 0)


async def test_wrong_password(anyio_backend: str, kafka: KafkaCluster) -> None:
    kafka.require("sasl_plaintext")
    assert kafka.sasl_plaintext is not None
    await _producer_fails_promptly(
        kafka.sasl_plaintext,
        AuthenticationError,
        "(?i)auth",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=kafka.username,
        sasl_password="wrong-password",
    )
