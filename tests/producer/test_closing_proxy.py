"""A proxy in front of a broker that is down (a cloud load balancer, a Kubernetes
port-forward) accepts each TCP connection and closes it before the handshake ends.

No Produce request was written on such a connection: it is a broker that cannot be
reached, not a request that may have been written. The records wait for the broker
(up to delivery_timeout, like any outage) instead of using up ``max_retry`` in a
fraction of a second. Scripted peers (tests/support/fake_peer.py): one answers
Metadata naming the other, the closing proxy, as the partition's leader.
"""

from __future__ import annotations

import time

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.network.connection import BrokerConnection
from kafka_asgi.network.errors import ConnectError
from kafka_asgi.producer.errors import DeliveryTimeoutError
from kafka_asgi.protocol.errors import KafkaError
from tests.support.fake_peer import Peer, all_versions, fake_broker, one_broker_metadata
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.anyio

TOPIC = "events"
_METADATA = 3
_API_VERSIONS = 18


async def closing_proxy(peer: Peer) -> None:
    """Accepts, then closes before answering anything."""
    await peer.stream.aclose()


def metadata_naming(leader_port: int) -> object:
    async def script(peer: Peer) -> None:
        while True:
            api_key, version, correlation_id, _ = await peer.read_request_body()
            if api_key == _API_VERSIONS:
                await peer.respond(correlation_id, all_versions(), version)
            elif api_key == _METADATA:
                response = one_broker_metadata(TOPIC, leader_port)
                await peer.respond(correlation_id, response, version)
            else:
                await anyio.sleep_forever()

    return script


async def test_a_connection_closed_in_its_handshake_is_a_connect_error(
    anyio_backend: str,
) -> None:
    # Before: ConnectionClosedError, which the producer reads as "the request may
    # have been written" (a try used up), and the pool's backoff repeated.
    async with fake_broker(closing_proxy) as port:
        with anyio.fail_after(scaled(10)), pytest.raises(ConnectError) as info:
            async with BrokerConnection("127.0.0.1", port):
                pass
    assert "closed during the handshake" in str(info.value)


async def test_records_wait_out_a_closing_proxy_instead_of_their_retries(
    anyio_backend: str,
) -> None:
    reported: list[tuple[KafkaError, float]] = []
    started = time.monotonic()

    def error_handle(
        topic: str, partition: int, records: object, error: KafkaError, retriable: bool
    ) -> None:
        reported.append((error, time.monotonic() - started))

    delivery_timeout = 3.0
    async with fake_broker(closing_proxy) as proxy_port:
        async with fake_broker(metadata_naming(proxy_port)) as port:  # type: ignore[arg-type]
            async with Producer(
                f"127.0.0.1:{port}",
                required_acks=1,
                enable_idempotence=False,
                max_retry=1,
                retry_backoff=0.05,
                delivery_timeout=delivery_timeout,
                close_timeout=1.0,
                error_handle=error_handle,
            ) as producer:
                started = time.monotonic()
                producer.send_nowait(TOPIC, b"v")
                assert await eventually(lambda: bool(reported), 30)
    # Before: 2 tries (max_retry=1) about 0.05 s apart, then ConnectionClosedError.
    ((error, took),) = reported
    assert isinstance(error, DeliveryTimeoutError), repr(error)
    assert took >= delivery_timeout
    assert "closed during the handshake" in str(error)
