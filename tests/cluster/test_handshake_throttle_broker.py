"""A request quota (KIP-124: a share of the broker's request threads, on a client id)
counts ApiVersions too: a new connection's handshake can be answered with a pause
(KIP-219: answered at once, then nothing read from the connection for that long). The
client notes it as any other and sends the connection's first request after it."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.protocol.messages import MetadataRequest, MetadataResponse
from kafka_asgi.protocol.messages.metadata import MetadataRequestTopic
from tests.support.quotas import quota_client

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

# A broker of the module's own. A request quota's pause is at most one window, so a
# window of 3 s: a pause longer than the request below may wait in a muted socket.
OWN_BROKER_PROPERTIES = {"quota.window.num": "2", "quota.window.size.seconds": "3"}

REQUEST_TIMEOUT = 1.0  # the metadata request's own, shorter than the pause


async def test_a_pause_asked_in_the_handshake_holds_the_first_request(
    own_broker: Any, anyio_backend: str
) -> None:
    bootstrap = own_broker.addresses().plaintext
    client_id, topic = await quota_client(own_broker, "handshake-quota", request_percentage=0.01)
    # One worker of an app uses the quota up...
    async with KafkaClient(bootstrap, client_id=client_id) as busy:
        with anyio.fail_after(60):
            while busy.stats().throttle_time_ms == 0:
                await busy.refresh(topics=[topic])
    # ...and another starts: its first connection's ApiVersions answer asks for a
    # pause of up to 3 s. Before, its first request was written into the muted
    # connection at once, and timed out there after 1 s.
    async with KafkaClient(bootstrap, client_id=client_id) as fresh:
        start = time.monotonic()
        with anyio.fail_after(30):
            response = await fresh.send_any(
                MetadataRequest(topics=[MetadataRequestTopic(name=topic)]),
                request_timeout=REQUEST_TIMEOUT,
            )
        took = time.monotonic() - start
        asked = fresh.stats().throttle_time_ms
    print(f"\n[{anyio_backend}] answered in {took:.2f} s, {asked} ms asked")
    assert isinstance(response, MetadataResponse)
    assert [t.name for t in response.topics] == [topic]
    assert asked > REQUEST_TIMEOUT * 1000  # the handshake's pause, counted
    assert took > REQUEST_TIMEOUT  # waited out before the request was written
