"""A broker that stops and comes back: the client notices, stays bounded while it is
down, and serves again without being recreated.

Runs on a broker of its own (scripts/kafka_local.py on other ports, in a temporary
directory), so stopping it disturbs nobody sharing the session broker.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import anyio
import pytest

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.errors import ConnectionClosedError, NetworkError
from kafka_asgi.protocol.messages import FetchRequest, MetadataRequest
from kafka_asgi.protocol.messages.fetch import FetchPartition, FetchTopic
from tests.support.brokers import unique_name
from tests.support.timing import eventually, scaled

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def test_client_survives_a_broker_restart(anyio_backend: str, own_broker: Any) -> None:
    addresses = own_broker.addresses()
    common: dict[str, Any] = {"connect_timeout": 2.0, "request_timeout": 5.0}
    secure_options: dict[str, Any] = {
        "ssl_cafile": addresses.ca_file,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": addresses.username,
        "sasl_password": addresses.password,
        **common,
    }
    topic = unique_name("restart")
    async with (
        KafkaClient(addresses.plaintext, **common) as plain,
        KafkaClient(addresses.sasl_ssl, **secure_options) as secure,
    ):
        clients = [plain, secure]
        with anyio.fail_after(60):
            await plain.create_topics([(topic, 2)])
            for client in clients:
                await client.fetch_metadata(topic)
        node = await plain.leader_for(topic, 0)
        meta = plain.cached_topic(topic)
        assert meta is not None and meta.topic_id is not None

        # A long poll in flight when the broker dies must fail, not hang. SIGKILL, not a
        # clean stop: on a clean stop the broker may still answer the poll (an empty
        # fetch response) before it closes its sockets, and then nothing is in flight.
        in_flight_error: list[BaseException] = []
        fetch_version_max = 17
        poll = FetchRequest(
            max_wait_ms=30000,
            min_bytes=1,
            topics=[
                FetchTopic(
                    topic_id=meta.topic_id,
                    partitions=[
                        FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1024)
                    ],
                )
            ],
        )

        # A fresh partition may answer a fetch at once (with an error) until its
        # leader is ready; wait until a fetch would really wait.
        with anyio.fail_after(30):
            while True:
                ready = await plain.send(
                    node,
                    dataclasses.replace(poll, max_wait_ms=0),
                    min_version=13,
                    max_version=fetch_version_max,
                )
                if all(part.error_code == 0 for t in ready.responses for part in t.partitions):
                    break
                await anyio.sleep(0.1)

        async def long_poll() -> None:
            try:
                await plain.send(
                    node, poll, min_version=13, max_version=fetch_version_max, request_timeout=60
                )
            except NetworkError as exc:
                in_flight_error.append(exc)
            else:
                pytest.fail("the long poll was answered before the broker died")

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_poll)
            await anyio.sleep(0.5)
            assert not in_flight_error, in_flight_error
            await anyio.to_thread.run_sync(own_broker.kill)
            with anyio.fail_after(10):
                # The client notices: connections close, the waiting request fails.
                assert await eventually(lambda: bool(in_flight_error), 10)
                assert isinstance(in_flight_error[0], ConnectionClosedError)
                for client in clients:
                    assert await eventually(lambda c=client: c.connection_count() == 0, 10)

        # While the broker is down every call returns or raises within its timeout.
        with anyio.fail_after(45):
            for client in clients:
                started = time.monotonic()
                with pytest.raises(NetworkError):
                    await client.refresh([topic])
                with pytest.raises(NetworkError):
                    await client.send(node, MetadataRequest(topics=[]))
                with pytest.raises(NetworkError):
                    await client.send_any(MetadataRequest(topics=[]))
                assert time.monotonic() - started < scaled(3 * (2.0 + 5.0))
                # The cache still answers, without I/O.
                assert client.cached_topic(topic) is not None

        await anyio.to_thread.run_sync(
            functools.partial(own_broker.start, timeout=120, fresh=False)
        )

        # The same client objects serve metadata again.
        with anyio.fail_after(60):
            for client in clients:
                while True:
                    try:
                        cluster = await client.refresh([topic])
                        break
                    except NetworkError:
                        await anyio.sleep(0.2)
                assert cluster.topics[topic].partition_count == 2
                response = await client.send(node, MetadataRequest(topics=[]))
                assert response.brokers[0].node_id == node
                assert (await client.fetch_metadata(topic)).partition_count == 2
