"""A client quota on the real broker (KIP-219), seen by KafkaClient: after a throttled
answer the broker reads nothing more from that connection for the throttle time, so
the client holds back every request to that broker until then, not only the
requests of the kind that was throttled (the producer's and the consumer's own:
tests/producer/test_throttle_broker.py, tests/consumer/test_consumer_throttle_broker.py).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.protocol.messages import MetadataRequest, MetadataResponse
from kafka_asgi.protocol.messages.metadata import MetadataRequestTopic
from tests.support.quotas import quota_client

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

# A broker of the module's own, measuring rates over 4 windows of 1 s: the longest
# throttle time it asks for is their span, 4 s.
OWN_BROKER_PROPERTIES = {"quota.window.num": "4", "quota.window.size.seconds": "1"}

RATE = 100_000  # bytes/s: the quota
VALUE = 1000
BURST = 600  # records
# What the metadata request below is given: shorter than the pause left, so a request
# written into the muted connection at once would time out.
METADATA_TIMEOUT = 1.0
PAUSE_LEFT = 2.0  # seconds: produce until a pause at least this long is asked for


async def test_a_metadata_request_waits_out_a_pause_a_produce_quota_asked_for(
    own_broker: Any, anyio_backend: str
) -> None:
    bootstrap = own_broker.addresses().plaintext
    client_id, topic = await quota_client(own_broker, "client-quota", producer_byte_rate=RATE)
    # One connection to the broker: the one the broker mutes.
    async with KafkaClient(bootstrap, client_id=client_id, max_connections_per_broker=1) as client:
        # Bursts of one 600 KB batch, six times the quota: the broker asks for a pause
        # of seconds (a producer pacing itself at the quota is asked for milliseconds).
        async with Producer(client=client, batch_size=BURST * VALUE + 4096) as producer:
            left = 0.0
            with anyio.fail_after(60):
                while left < PAUSE_LEFT:
                    for i in range(BURST):
                        producer.send_nowait(topic, b"%06d" % i + b"x" * (VALUE - 6))
                    await producer.flush()
                    now = anyio.current_time()
                    left = max((u - now for u in client.throttles.paused.values()), default=0.0)
            (node,) = client.throttles.paused
            asked = producer.stats().throttle_time_ms
            start = time.monotonic()
            with anyio.fail_after(PAUSE_LEFT + 10):
                # Before: written at once into the muted connection, where it timed
                # out after METADATA_TIMEOUT (and the connection was closed).
                response = await client.send(
                    node,
                    MetadataRequest(topics=[MetadataRequestTopic(name=topic)]),
                    request_timeout=METADATA_TIMEOUT,
                )
            took = time.monotonic() - start
            assert producer.stats().failed == 0
    print(f"\n[{anyio_backend}] pause left {left:.2f} s, metadata answered in {took:.2f} s")
    assert isinstance(response, MetadataResponse)
    assert [t.name for t in response.topics] == [topic]
    assert took >= left - 0.05  # it waited the pause out before it was written
    assert asked > 0 and client.stats().throttle_time_ms >= asked
