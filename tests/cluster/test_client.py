"""KafkaClient against the real broker: metadata, pool, admin calls, failures."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import kafka_asgi.cluster.client as client_module
from kafka_asgi import Producer
from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.consumer import LATEST, BasicConsumer
from kafka_asgi.errors import (
    AuthenticationError,
    BrokerNotAvailableError,
    ConnectError,
    InvalidConfigError,
    InvalidReplicationFactorError,
    KafkaError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from kafka_asgi.protocol.messages import MetadataRequest, MetadataResponse
from tests.support.brokers import KafkaCluster, unique_name
from tests.support.listeners import LISTENER_CASES, client_options, host_port
from tests.support.ports import free_port
from tests.support.tcp import silent_peer, slow_relay
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------- every listener


@pytest.mark.parametrize(("listener", "mechanism"), LISTENER_CASES)
async def test_client_on_each_listener(
    anyio_backend: str,
    kafka: KafkaCluster,
    new_topic: Callable[..., str],
    listener: str,
    mechanism: str | None,
) -> None:
    address = getattr(kafka, listener)
    topic = new_topic(partitions=2)
    with anyio.fail_after(60):
        async with KafkaClient(address, **client_options(kafka, listener, mechanism)) as client:
            cluster = await client.refresh([])
            [broker] = cluster.brokers.values()
            assert (broker.host, broker.port) == host_port(address)
            assert cluster.cluster_id
            meta = await client.fetch_metadata(topic)
            assert meta.partition_count == 2
            leader = await client.leader_for(topic, 1)
            assert leader == broker.node_id
            # A request to the discovered node (not the bootstrap address string).
            response: MetadataResponse = await client.send(leader, MetadataRequest(topics=[]))
            assert [b.node_id for b in response.brokers] == [leader]


# ---------------------------------------------------------------- metadata


async def test_metadata_cache(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=3)
    async with KafkaClient(kafka.plaintext) as client:
        assert client.cached_topic(topic) is None
        meta = await client.fetch_metadata(topic)
        assert meta.name == topic and meta.topic_id is not None
        assert sorted(meta.partitions) == [0, 1, 2]
        assert meta.available_partitions() == [0, 1, 2]
        for p in meta.partitions.values():
            assert p.leader in client.brokers and p.replicas == (p.leader,)
            assert p.isr == (p.leader,) and p.error_code == 0
        assert client.cached_topic(topic) is meta
        before = client.stats().metadata_requests
        assert await client.fetch_metadata(topic) is meta  # fresh: no request
        assert client.stats().metadata_requests == before
        everything = await client.refresh()
        assert topic in everything.topics
        assert client.stats().metadata_age is not None


async def test_unknown_topic_is_not_created(anyio_backend: str, kafka: KafkaCluster) -> None:
    topic = unique_name("missing")
    async with KafkaClient(kafka.plaintext) as client:
        with anyio.fail_after(30):
            with pytest.raises(UnknownTopicOrPartitionError, match=topic):
                await client.fetch_metadata(topic)
            with pytest.raises(UnknownTopicOrPartitionError):
                await client.leader_for(topic, 0)
            assert client.cached_topic(topic) is None
            assert topic not in (await client.refresh()).topics


async def test_leader_for_missing_partition(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    async with KafkaClient(kafka.plaintext) as client:
        with pytest.raises(UnknownTopicOrPartitionError, match="partition 2"):
            await client.leader_for(topic, 2)


async def test_unknown_node(anyio_backend: str, kafka: KafkaCluster) -> None:
    async with KafkaClient(kafka.plaintext) as client:
        with pytest.raises(BrokerNotAvailableError, match="node 999"):
            await client.send(999, MetadataRequest(topics=[]))


async def test_concurrent_metadata_lookups_share_requests(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topics = [new_topic() for _ in range(3)]
    async with KafkaClient(kafka.plaintext) as client:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(1000):
                    tg.start_soon(client.fetch_metadata, topics[i % 3])
        # One request for the first topic, one for the others queued behind it.
        assert client.stats().metadata_requests <= 3
        assert all(client.cached_topic(t) is not None for t in topics)
        before = client.stats().metadata_requests
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(client.refresh)
        assert client.stats().metadata_requests - before <= 2
        assert client.stats().connections_opened == 1


async def test_thousand_concurrent_requests_use_few_connections(
    anyio_backend: str, kafka: KafkaCluster
) -> None:
    responses: list[MetadataResponse] = []
    async with KafkaClient(kafka.plaintext, max_connections_per_broker=3) as client:
        [node] = (await client.refresh([])).brokers

        async def ask() -> None:
            responses.append(await client.send(node, MetadataRequest(topics=[])))

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(ask)
        assert len(responses) == 1000
        assert all(r.brokers[0].node_id == node for r in responses)
        assert 1 <= client.connection_count(node) <= 3
        assert client.stats().connections_opened <= 3


async def test_idle_connections_are_reaped(anyio_backend: str, kafka: KafkaCluster) -> None:
    async with KafkaClient(
        kafka.plaintext, max_connections_per_broker=4, max_idle_connections=1, idle_timeout=1.0
    ) as client:
        [node] = (await client.refresh([])).brokers
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(300):
                    tg.start_soon(client.send, node, MetadataRequest(topics=[]))
        assert client.connection_count(node) > 1
        # Surplus idle connections go at once, the last one after idle_timeout.
        assert await eventually(lambda: client.connection_count(node) == 1, 0.9)
        assert await eventually(lambda: client.connection_count(node) == 0, 3.0)
        # And the client simply reconnects when needed.
        await client.send(node, MetadataRequest(topics=[]))
        assert client.connection_count(node) == 1


async def test_a_connection_taken_from_the_pool_is_not_reaped_before_its_request(
    anyio_backend: str, kafka: KafkaCluster
) -> None:
    """A request for any broker takes a connection from the pool, then waits out the
    pause the broker asked for (a client quota, KIP-219) before it sends: the reaper's
    pass meanwhile (forced here, an hour on, when every idle connection is past
    idle_timeout) must leave that connection alone. It closed it, and the request
    failed with 'connection closed by the client'."""
    async with KafkaClient(kafka.plaintext) as client:
        answers: list[MetadataResponse] = []

        async def send_any() -> None:
            answers.append(await client.send_any(MetadataRequest(topics=[]), min_version=1))

        with anyio.fail_after(30):
            [node] = (await client.refresh([])).brokers
            [conn] = [c for pool in client._pools for c in pool.connections]
            client.throttles.note(node, 500, True, 30.0)
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_any)
                await anyio.wait_all_tasks_blocked()  # send_any holds conn, pausing
                assert conn.in_flight == 0
                await client._pools.reap(anyio.current_time() + 3600)
                assert not conn.closed
        assert answers[0].brokers
        assert client.stats().connections_opened == 1
        # Released: the reaper takes it once it is idle.
        await client._pools.reap(anyio.current_time() + 3600)
        assert conn.closed


async def test_request_refresh_coalesces(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    async with KafkaClient(kafka.plaintext, retry_backoff=0.2) as client:
        await client.fetch_metadata(topic)
        before = client.stats().metadata_requests
        for _ in range(500):
            client.request_refresh()
        await anyio.sleep(0.1)
        for _ in range(500):
            client.request_refresh()
        assert await eventually(lambda: client.stats().metadata_requests > before, 2.0)
        await anyio.sleep(0.6)
        assert 1 <= client.stats().metadata_requests - before <= 2


async def test_note_error_refreshes_on_stale_metadata(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    async with KafkaClient(kafka.plaintext, retry_backoff=0.05) as client:
        await client.fetch_metadata(topic)
        before = client.stats().metadata_requests
        assert not client.note_error(0)
        assert not client.note_error(TopicAlreadyExistsError)
        assert not client.note_error(AuthenticationError("x"))
        await anyio.sleep(0.3)
        assert client.stats().metadata_requests == before
        assert client.note_error(6)  # NOT_LEADER_OR_FOLLOWER
        assert await eventually(lambda: client.stats().metadata_requests == before + 1, 2.0)
        assert client.note_error(UnknownTopicOrPartitionError("gone"))
        assert await eventually(lambda: client.stats().metadata_requests == before + 2, 2.0)


async def test_refresh_interval(anyio_backend: str, kafka: KafkaCluster) -> None:
    async with KafkaClient(kafka.plaintext, refresh_interval=0.3) as client:
        await client.refresh([])
        before = client.stats().metadata_requests
        await anyio.sleep(1.5)
        assert client.stats().metadata_requests - before >= 2


# ---------------------------------------------------------------- admin


async def test_create_and_delete_topics(anyio_backend: str, kafka: KafkaCluster) -> None:
    one, two = unique_name("adm"), unique_name("adm")
    async with KafkaClient(kafka.plaintext) as client:
        with anyio.fail_after(60):
            await client.create_topics([one, (two, 4)], num_partitions=2)
            # Visible, with leaders, right away: no sleeping needed by the caller.
            first, second = client.cached_topic(one), client.cached_topic(two)
            assert first is not None and first.partition_count == 2
            assert second is not None and second.partition_count == 4
            assert second.available_partitions() == [0, 1, 2, 3]
            with pytest.raises(TopicAlreadyExistsError, match=one):
                await client.create_topics([one])
            await client.delete_topics([one, two])
            assert client.cached_topic(one) is None
            with pytest.raises(UnknownTopicOrPartitionError):
                await client.fetch_metadata(two)
            with pytest.raises(UnknownTopicOrPartitionError):
                await client.delete_topics([one])


async def test_create_topic_configs_reach_the_broker(
    anyio_backend: str, kafka: KafkaCluster
) -> None:
    async with KafkaClient(kafka.plaintext) as client:
        with anyio.fail_after(60):
            with pytest.raises(InvalidConfigError, match=r"cleanup\.policy"):
                await client.create_topics(
                    [unique_name("cfg")], configs={"cleanup.policy": "no-such-policy"}
                )
            name = unique_name("cfg")
            await client.create_topics([name], configs={"cleanup.policy": "compact"})
            assert client.cached_topic(name) is not None
            await client.delete_topics([name])


async def test_timeouts_beyond_an_int32_of_milliseconds(
    anyio_backend: str, kafka: KafkaCluster
) -> None:
    """A request's timeout_ms is an int32 (24.8 days); the options take any finite
    timeout, so longer ones go to the broker capped, not as an EncodeError raised
    from the request (before: create_topics, delete_topics and list_offset failed)."""
    month = 30 * 86_400.0
    name = unique_name("long")
    async with KafkaClient(kafka.plaintext, request_timeout=month) as client:
        with anyio.fail_after(60):
            await client.create_topics([name], timeout=month)
            assert client.cached_topic(name) is not None
    async with Producer(kafka.plaintext, request_timeout=month, required_acks=-1) as producer:
        with anyio.fail_after(60):
            meta = await producer.send(name, b"v")
    async with BasicConsumer(kafka.plaintext, request_timeout=month) as consumer:
        with anyio.fail_after(60):
            assert await consumer.list_offset(name, 0, LATEST) == meta.offset + 1
    async with KafkaClient(kafka.plaintext) as client:
        with anyio.fail_after(60):
            await client.delete_topics([name], timeout=month)


async def test_create_topics_bad_arguments(anyio_backend: str, kafka: KafkaCluster) -> None:
    async with KafkaClient(kafka.plaintext) as client:
        with pytest.raises(ValueError, match="partitions"):
            await client.create_topics([("x", 0)])
        with pytest.raises(ValueError, match="no topics"):
            await client.create_topics([])
        with pytest.raises(TypeError, match="name or"):
            await client.create_topics([5])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="timeout"):
            await client.create_topics(["x"], timeout=0)
        with pytest.raises(ValueError, match="-5"):
            await client.create_topics([unique_name("neg")], num_partitions=-5)
        # Checked by the broker: one broker cannot hold three replicas.
        with pytest.raises(InvalidReplicationFactorError):
            await client.create_topics([unique_name("rf")], replication_factor=3)


# ---------------------------------------------------------------- bootstrap, resolver, SASL


def keep_bootstrap_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client tries the bootstrap addresses from a random one: from the first here."""
    monkeypatch.setattr(client_module, "random", SimpleNamespace(shuffle=lambda items: None))


async def test_bootstrap_tries_addresses_in_turn(
    anyio_backend: str, kafka: KafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep_bootstrap_order(monkeypatch)
    dead = f"127.0.0.1:{free_port()}"
    async with KafkaClient([dead, kafka.plaintext], connect_timeout=2) as client:
        with anyio.fail_after(20):
            cluster = await client.refresh([])
        assert cluster.brokers
        assert client.stats().connect_failures >= 1


async def test_a_silent_first_bootstrap_address_does_not_hold_the_first_metadata(
    anyio_backend: str, kafka: KafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first bootstrap address that accepts TCP connections and answers nothing (a
    frozen process, a paused VM): the next address is tried after connect_timeout,
    not after the handshake's request_timeout (the refresh waited 20 s here). The
    list is shuffled at each attempt; kept in its order here, the silent one first,
    so that the test does not rest on the shuffle."""
    keep_bootstrap_order(monkeypatch)
    async with silent_peer() as (silent, accepted):
        async with KafkaClient(
            [silent, kafka.plaintext], connect_timeout=1.0, request_timeout=20.0
        ) as client:
            started = anyio.current_time()
            with anyio.fail_after(scaled(8)):
                cluster = await client.refresh([])
            took = anyio.current_time() - started
            assert cluster.brokers
            assert accepted[0] == 1  # tried first, and once
            assert took < scaled(5), took


async def test_a_slow_bootstrap_address_is_still_taken_when_the_next_is_dead(
    anyio_backend: str, kafka: KafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection to a first address slower than connect_timeout (a 0.8 s round
    trip) goes on while the next is tried; that one dead, the first is waited for."""
    keep_bootstrap_order(monkeypatch)
    dead = f"127.0.0.1:{free_port()}"
    async with slow_relay(kafka.plaintext, 0.4) as (slow, accepted):
        async with KafkaClient([slow, dead], connect_timeout=0.3) as client:
            with anyio.fail_after(scaled(15)):
                cluster = await client.refresh([])
            assert cluster.brokers
            assert accepted[0] == 1
            assert client.stats().connect_failures == 1  # the dead one


async def test_a_slow_bootstrap_address_is_taken_without_waiting_out_a_silent_last_one(
    anyio_backend: str, kafka: KafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first address slower than connect_timeout, then one that accepts and answers
    nothing, last: the slow one, connected meanwhile, is taken after the silent one's
    connect_timeout, not after its whole handshake (request_timeout, 20 s here: the
    last address was waited for alone)."""
    keep_bootstrap_order(monkeypatch)
    async with slow_relay(kafka.plaintext, 0.4) as (slow, slow_accepted):
        async with silent_peer() as (silent, silent_accepted):
            async with KafkaClient(
                [slow, silent], connect_timeout=0.3, request_timeout=20.0
            ) as client:
                started = anyio.current_time()
                with anyio.fail_after(scaled(15)):
                    cluster = await client.refresh([])
                took = anyio.current_time() - started
                assert cluster.brokers
                assert slow_accepted[0] == 1 and silent_accepted[0] == 1
                assert took < scaled(8), took


async def test_resolver(anyio_backend: str, kafka: KafkaCluster) -> None:
    _, port = host_port(kafka.plaintext)
    asked: list[str] = []

    def resolve(host: str) -> str:
        asked.append(host)
        return "127.0.0.1"

    async with KafkaClient(f"kafka-bootstrap.invalid:{port}", resolver=resolve) as client:
        [node] = (await client.refresh([])).brokers
        await client.send(node, MetadataRequest(topics=[]))
    # The bootstrap name, then the advertised address of the discovered broker.
    assert asked == ["kafka-bootstrap.invalid", "127.0.0.1"]


async def test_sasl_applies_to_discovered_brokers(anyio_backend: str, kafka: KafkaCluster) -> None:
    """Bootstrap through 'localhost'; the broker advertises 127.0.0.1, a different pool
    entry, so the second connection must authenticate on its own."""
    options = client_options(kafka, "sasl_ssl", "SCRAM-SHA-256")
    _, port = host_port(kafka.sasl_ssl)  # type: ignore[arg-type]
    async with KafkaClient(f"localhost:{port}", **options) as client:
        with anyio.fail_after(30):
            [node] = (await client.refresh([])).brokers
            response = await client.send(node, MetadataRequest(topics=[]))
        assert response.brokers[0].port == port
        assert client.stats().connections_opened == 2


async def test_wrong_password_fails_fast_without_a_retry_storm(
    anyio_backend: str, kafka: KafkaCluster
) -> None:
    attempts: list[str] = []

    def counting(host: str) -> str:
        attempts.append(host)
        return host

    options: dict[str, Any] = client_options(
        kafka, "sasl_plaintext", "SCRAM-SHA-512", password="wrong-password-xyz"
    )
    async with KafkaClient(
        kafka.sasl_plaintext, resolver=counting, request_timeout=5, retry_backoff=2.0, **options
    ) as client:
        with anyio.fail_after(6):
            with pytest.raises(AuthenticationError) as info:
                await client.refresh([])
        assert "wrong-password-xyz" not in str(info.value)
        assert len(attempts) == 1
        # Calls right after the failure fail fast, without reconnecting.
        for _ in range(20):
            with pytest.raises(AuthenticationError):
                await client.fetch_metadata("anything")
        assert len(attempts) == 1
        # Nothing retries in the background either.
        client.request_refresh()
        await anyio.sleep(1.5)
        assert len(attempts) <= 2


async def test_calls_are_bounded_without_a_broker(anyio_backend: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with KafkaClient(dead, connect_timeout=1, request_timeout=2) as client:
        with anyio.fail_after(20):
            with pytest.raises(ConnectError):
                await client.refresh()
            with pytest.raises(ConnectError):
                await client.fetch_metadata("t")
            with pytest.raises(ConnectError):
                await client.leader_for("t", 0)
            with pytest.raises(KafkaError):
                await client.send(1, MetadataRequest(topics=[]))
            with pytest.raises(ConnectError):
                await client.create_topics(["t"], timeout=2)
            with pytest.raises(ConnectError):
                await client.send_any(MetadataRequest(topics=[]))


async def test_close_while_the_background_refresher_works(anyio_backend: str) -> None:
    """A failed call wakes the refresher; closing right then must not crash the
    client's task group (nor hang)."""
    dead = f"127.0.0.1:{free_port()}"
    for delay in (0.0, 0.001, 0.01, 0.05, 0.2):
        with anyio.fail_after(10):
            async with KafkaClient(dead, connect_timeout=1, retry_backoff=0.001) as client:
                with pytest.raises(ConnectError):
                    await client.send_any(MetadataRequest(topics=[]))
                client.request_refresh()
                await anyio.sleep(delay)
