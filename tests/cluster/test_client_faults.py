"""KafkaClient against scripted connections (no broker): a cancelled refresh, a
lagging broker's metadata, a bootstrap address that is no broker, and brokers that
move, each checked on what the client keeps of it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import kafka_asgi.cluster.pool as pool_module
from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.network.errors import ConnectError, ConnectionClosedError
from kafka_asgi.protocol.errors import KafkaError, ProtocolError, UnknownTopicOrPartitionError
from kafka_asgi.protocol.messages import Message, MetadataRequest, MetadataResponse
from kafka_asgi.protocol.messages.metadata import (
    MetadataResponseBroker,
    MetadataResponsePartition,
    MetadataResponseTopic,
)
from tests.support.tcp import silent_peer

pytestmark = pytest.mark.anyio

Address = tuple[str, int]


class FakeConnection:
    """What the client uses of a BrokerConnection; its connect and answers come from
    the test's FakeCluster."""

    def __init__(
        self, cluster: FakeCluster, host: str, port: int, config: Any, *, node_id: int | None
    ) -> None:
        self.cluster = cluster
        self.host = host
        self.port = port
        self.node_id = node_id
        self.error: BaseException | None = None
        self.state = "new"
        self.in_flight = 0
        self.last_used = 0.0
        self.handshake_throttle = None
        self.unconfirmed_writes = 0
        self.reauthentications = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def closed(self) -> bool:
        return self.error is not None

    @property
    def usable(self) -> bool:
        return self.error is None and self.state == "open"

    async def connect(self, task_group: Any, handshake_timeout: float | None = None) -> None:
        self.state = "connecting"
        error = self.cluster.refuse.get((self.host, self.port))
        if error is not None:
            self.error = error
            raise error
        self.state = "open"
        self.last_used = anyio.current_time()
        self.cluster.connections.append(self)

    def choose_api_version(
        self, api_key: int, min_version: int | None = None, max_version: int | None = None
    ) -> int:
        return 9 if api_key == MetadataRequest.API_KEY else (min_version or 0)

    async def request(
        self,
        request: Message,
        version: int,
        *,
        expect_response: bool = True,
        request_timeout: float | None = None,
    ) -> Any:
        self.in_flight += 1
        try:
            return await self.cluster.answer(request, self)
        finally:
            self.in_flight -= 1
            self.last_used = anyio.current_time()

    def abort(self, error: KafkaError) -> None:
        self.error = error

    async def aclose(self) -> None:
        self.error = ConnectionClosedError(f"{self.address}: closed")

    async def confirm_writes(self, timeout: float | None) -> None:  # noqa: ASYNC109
        pass


class FakeCluster:
    """Every address accepts connections unless ``refuse`` names it; ``answer`` answers
    every request (``metadata`` by default)."""

    def __init__(self) -> None:
        self.refuse: dict[Address, KafkaError] = {}
        self.connections: list[FakeConnection] = []
        self.metadata = metadata({1: ("b1", 9092)}, {})
        self.answer: Callable[[Message, FakeConnection], Awaitable[Any]] = self._metadata

    async def _metadata(self, request: Message, conn: FakeConnection) -> Any:
        return self.metadata

    def connection(
        self, host: str, port: int, config: Any, *, node_id: int | None = None
    ) -> FakeConnection:
        return FakeConnection(self, host, port, config, node_id=node_id)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster()
    monkeypatch.setattr(pool_module, "BrokerConnection", fake.connection)
    return fake


def metadata(
    brokers: dict[int, Address],
    topics: dict[str, list[tuple[int, int]] | int],
    *,
    topic_id: uuid.UUID | None = None,
    throttle_time_ms: int = 0,
) -> MetadataResponse:
    """``topics``: name -> [(leader, leader epoch) per partition], or an error code."""
    answer: list[MetadataResponseTopic] = []
    for name, parts in topics.items():
        topic = MetadataResponseTopic(name=name)
        if topic_id is not None:
            topic = dataclasses.replace(topic, topic_id=topic_id)
        if isinstance(parts, int):
            answer.append(dataclasses.replace(topic, error_code=parts))
            continue
        partitions = [
            MetadataResponsePartition(
                partition_index=index,
                leader_id=leader,
                leader_epoch=epoch,
                replica_nodes=[leader],
                isr_nodes=[leader],
            )
            for index, (leader, epoch) in enumerate(parts)
        ]
        answer.append(dataclasses.replace(topic, partitions=partitions))
    return MetadataResponse(
        throttle_time_ms=throttle_time_ms,
        brokers=[
            MetadataResponseBroker(node_id=node, host=host, port=port)
            for node, (host, port) in brokers.items()
        ],
        cluster_id="fake",
        controller_id=1,
        topics=answer,
    )


def asked(request: Message) -> list[str] | None:
    assert isinstance(request, MetadataRequest)
    return None if request.topics is None else sorted(t.name for t in request.topics)


async def test_a_cancelled_refresh_leaves_the_topics_others_wait_for(
    anyio_backend: str, cluster: FakeCluster
) -> None:
    # The caller that took everything queued is cancelled by its own timeout while its
    # request is out; a caller that queued behind it must still get its topic.
    existing = ("x", "b", "c")
    requests: list[list[str] | None] = []

    async def answer(request: Message, conn: FakeConnection) -> MetadataResponse:
        names = asked(request)
        requests.append(names)
        await anyio.sleep(0.1)
        wanted = existing if names is None else names
        return metadata(
            {1: ("b1", 9092)},
            {t: [(1, 0)] if t in existing else UnknownTopicOrPartitionError.code for t in wanted},
        )

    cluster.answer = answer
    found: dict[str, str] = {}
    async with KafkaClient("b1:9092", retry_backoff=0.01) as client:

        async def fetch(topic: str, timeout: float) -> None:  # noqa: ASYNC109
            with anyio.move_on_after(timeout):
                try:
                    found[topic] = (await client.fetch_metadata(topic)).name
                except KafkaError as exc:
                    found[topic] = repr(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch, "x", 5.0)
            await anyio.sleep(0.01)
            tg.start_soon(fetch, "b", 0.15)  # sends [b, c] at 0.1, cancelled at 0.16
            await anyio.sleep(0.01)
            tg.start_soon(fetch, "c", 5.0)
    assert found == {"x": "x", "c": "c"}
    assert requests[0] == ["x"]
    assert requests[1] == ["b", "c"]
    assert "c" in (requests[2] or ())


async def test_an_older_leader_epoch_does_not_replace_a_newer_one(
    anyio_backend: str, cluster: FakeCluster
) -> None:
    brokers = {1: ("b1", 9092), 2: ("b2", 9092)}
    first = uuid.uuid4()
    async with KafkaClient("b1:9092") as client:
        # After a failover: leader 2 in epoch 5.
        cluster.metadata = metadata(brokers, {"t": [(2, 5)]}, topic_id=first)
        await client.refresh(["t"])
        # A broker whose metadata lags (KIP-320): leader 1 in epoch 4, and a partition
        # the cache does not know yet.
        cluster.metadata = metadata(brokers, {"t": [(1, 4), (1, 0)]}, topic_id=first)
        await client.refresh(["t"])
        partitions = client.metadata.topics["t"].partitions
        assert (partitions[0].leader, partitions[0].leader_epoch) == (2, 5)
        assert (partitions[1].leader, partitions[1].leader_epoch) == (1, 0)
        assert await client.leader_for("t", 0) == 2
        # Deleted and created again: another topic id, whose epochs start over.
        cluster.metadata = metadata(brokers, {"t": [(1, 0)]}, topic_id=uuid.uuid4())
        await client.refresh(["t"])
        partitions = client.metadata.topics["t"].partitions
        assert list(partitions) == [0]
        assert (partitions[0].leader, partitions[0].leader_epoch) == (1, 0)


async def test_an_older_epoch_is_taken_for_a_topic_created_again(
    anyio_backend: str, cluster: FakeCluster
) -> None:
    brokers = {1: ("b1", 9092), 2: ("b2", 9092)}
    async with KafkaClient("b1:9092") as client:
        # Cached without a topic id; the answer has one (a cluster upgraded, then the
        # topic deleted and created again): another topic, as Java's client reads it.
        cluster.metadata = metadata(brokers, {"t": [(2, 5)]})
        await client.refresh(["t"])
        assert client.metadata.topics["t"].topic_id is None
        cluster.metadata = metadata(brokers, {"t": [(1, 0)]}, topic_id=uuid.uuid4())
        await client.refresh(["t"])
        assert await client.leader_for("t", 0) == 1
        # No topic ids at all (an old cluster): a lower epoch whose cached leader left
        # the cluster is taken, not pinned to a broker that is gone.
        cluster.metadata = metadata(brokers, {"u": [(2, 5)]})
        await client.refresh(["u"])
        cluster.metadata = metadata({1: ("b1", 9092)}, {"u": [(1, 0)]})
        await client.refresh(["u"])
        assert await client.leader_for("u", 0) == 1


async def test_a_bootstrap_address_that_is_no_broker_is_skipped(
    anyio_backend: str, cluster: FakeCluster
) -> None:
    # A TLS or HTTP listener answers the handshake with bytes that are no Kafka frame.
    cluster.refuse[("bad", 9093)] = ProtocolError("bad:9093: frame size 1213486160 too large")
    async with KafkaClient("bad:9093,b1:9092", retry_backoff=0.01) as client:
        await client.refresh([])
        assert set(client.brokers) == {1}
    cluster.refuse[("b1", 9092)] = ConnectError("connecting to b1:9092: refused")
    async with KafkaClient("bad:9093,b1:9092", retry_backoff=0.01) as client:
        with pytest.raises(ConnectError) as caught:
            await client.refresh([])
    assert "bad:9093: frame size" in str(caught.value)
    assert "b1:9092: refused" in str(caught.value)


async def test_bootstrap_addresses_are_tried_from_a_random_one(anyio_backend: str) -> None:
    # (Java's leastLoadedNode starts at a random node): a dead or frozen first address
    # must not be every worker's first try at every start.
    client = KafkaClient("b1:9092,b2:9092,b3:9092")  # (not started: nothing is opened)
    firsts = {client._candidates()[0][0] for _ in range(60)}
    assert firsts == {"b1", "b2", "b3"}


async def test_a_pause_asked_on_the_bootstrap_connection_is_held(
    anyio_backend: str, cluster: FakeCluster
) -> None:
    async with KafkaClient("b1:9092") as client:
        await client.refresh([])  # on the connection opened to the bootstrap address
        assert [c.node_id for c in cluster.connections] == [1]
        # Metadata v9 mutes the connection for the pause it asks (KIP-219).
        cluster.metadata = metadata({1: ("b1", 9092)}, {}, throttle_time_ms=300)
        await client.refresh([])
        start = anyio.current_time()
        await client.send(1, MetadataRequest(topics=[]), min_version=1)
        assert anyio.current_time() - start >= 0.25
        assert len(cluster.connections) == 1


async def test_a_broker_that_moved_or_left_is_no_node_at_its_old_address(
    anyio_backend: str, cluster: FakeCluster
) -> None:
    cluster.metadata = metadata({1: ("old", 9092), 2: ("b2", 9092)}, {})
    async with KafkaClient("new:9092", idle_timeout=3600) as client:
        await client.refresh([])
        await client.send(1, MetadataRequest(topics=[]), min_version=1)  # opens old:9092
        await client.send(2, MetadataRequest(topics=[]), min_version=1)  # opens b2:9092
        assert client.connection_count(1) == 1
        # Node 1 moved to new:9092 (the bootstrap connection's address); node 2 left.
        cluster.metadata = metadata({1: ("new", 9092)}, {})
        await client.refresh([])
        assert client.connection_count() == 3
        assert client.connection_count(1) == 1
        assert client.connection_count(2) == 0
        nodes = {c.address: c.node_id for c in cluster.connections}
        assert nodes == {"new:9092": 1, "old:9092": None, "b2:9092": None}


# ------------------------------------------------- a peer that never answers (no broker)


async def test_a_later_call_gets_the_outcome_of_the_connect_an_earlier_one_left(
    anyio_backend: str,
) -> None:
    async with silent_peer() as (address, accepted):
        async with KafkaClient(address, request_timeout=0.6, retry_backoff=5.0) as client:
            started = anyio.current_time()
            with anyio.move_on_after(0.1) as user_deadline:
                await client.refresh([])
            assert user_deadline.cancelled_caught
            with anyio.fail_after(5), pytest.raises(KafkaError) as info:
                await client.refresh([])
            took = anyio.current_time() - started
    # The handshake's own limit, counted from the first call: the connect it started
    # went on, and the second call waited for it instead of opening another.
    message = str(info.value)
    assert "no answer to the connection handshake within 0.6s" in message
    # The second call did not start that connect: it says so, and names the address once.
    assert "the connect another call started failed: " in message
    assert message.count(address) == 1, message
    assert isinstance(info.value, ConnectError)
    assert took < 0.6 + 0.5
    assert accepted[0] == 1


async def test_closing_the_client_during_a_connect_nobody_waits_for_is_quiet(
    anyio_backend: str,
) -> None:
    async with silent_peer() as (address, accepted):
        with anyio.fail_after(5):
            started = anyio.current_time()
            async with KafkaClient(address, request_timeout=30) as client:
                with anyio.move_on_after(0.2):
                    await client.refresh([])
                assert accepted[0] == 1
            # Closing cancels the connect that was left running, without an error.
            assert anyio.current_time() - started < 2


async def test_a_broker_entry_with_no_usable_address_is_left_out_alone(
    anyio_backend: str, cluster: FakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """One broker of a Metadata answer with port 0 (or an empty host) is left out, with
    one warning, and a request for it fails naming its address; the rest of the answer
    is taken (it was refused whole, keeping every leader stale while that entry
    stayed)."""
    brokers = {1: ("b1", 9092), 2: ("b2", 9092), 3: ("b3", 0)}
    async with KafkaClient("b1:9092") as client:
        cluster.metadata = metadata(brokers, {"t": [(2, 1), (3, 1)]})
        with caplog.at_level("WARNING", logger="kafka_asgi.cluster"):
            await client.refresh(["t"])
            cluster.metadata = metadata(brokers, {"t": [(2, 2), (3, 2)]})
            await client.refresh(["t"])
        assert sorted(client.metadata.brokers) == [1, 2]
        partitions = client.metadata.topics["t"].partitions
        assert [(p.leader, p.leader_epoch) for p in partitions.values()] == [(2, 2), (3, 2)]
        assert await client.leader_for("t", 0) == 2
        # A request for it fails at once, naming what is wrong (not a broker away).
        with pytest.raises(ProtocolError, match="broker 3 has address 'b3':0"):
            await client.send(3, MetadataRequest(topics=[]))
        warnings = [r.getMessage() for r in caplog.records if "broker 3" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "'b3':0" in warnings[0]
