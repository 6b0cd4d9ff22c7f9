"""Connections whose handshake takes longer than the callers' own deadlines, against
the real broker through a relay that delays every chunk: a caller's deadline cuts the
caller short, not the connection it started opening."""

from __future__ import annotations

import anyio
import pytest

from kafka_asgi.cluster.client import KafkaClient
from tests.support.brokers import KafkaCluster
from tests.support.listeners import client_options
from tests.support.tcp import slow_relay
from tests.support.timing import scaled

pytestmark = pytest.mark.broker


async def test_callers_with_deadlines_shorter_than_the_handshake_still_connect(
    kafka: KafkaCluster, anyio_backend: str
) -> None:
    """SASL PLAIN through a 0.2 s round trip: ApiVersions, SaslHandshake and
    SaslAuthenticate take 0.6 s; each call has 0.45 s (the user's anyio.move_on_after).
    The first call's deadline leaves the handshake running; a later call finds the
    connection it made. Each call used to cancel the handshake it started, and the next
    one started over: no call ever got through."""
    options = client_options(kafka, "sasl_plaintext", "PLAIN")
    assert kafka.sasl_plaintext is not None
    async with slow_relay(kafka.sasl_plaintext, 0.1) as (address, accepted):
        async with KafkaClient(address, **options) as client:
            attempts = 0
            done = False
            with anyio.fail_after(scaled(15)):
                while not done:
                    attempts += 1
                    with anyio.move_on_after(0.45):
                        await client.refresh([])
                        done = True
            assert attempts <= 4
            assert accepted[0] == 1, "one connection, not one a call"
            assert client.stats().connections_opened == 1
