"""A three-broker Kafka cluster for tests (scripts/kafka_local.py ``--nodes 3``).

The ``kafka_cluster`` fixture (tests/conftest.py) hands tests a :class:`ThreeBrokers`:
the bootstrap list, each node's address and pid, and the controls a failover test
needs (``kill`` as a crash would, ``stop`` as an operator would, ``freeze`` as a
hung process or a paused VM would, ``start`` again),
plus topic creation and leader look-ups through kafka_asgi's own client.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.cluster.metadata import TopicMetadata
from tests.support.processes import freeze_group, thaw_group


def _in_thread(fn: Any) -> Any:
    """Run ``anyio.run(fn)`` in a thread of its own: callable from inside async tests."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, fn).result(timeout=120)


@dataclass
class ThreeBrokers:
    """A running cluster of ``nodes`` local brokers (node I has node.id I + 1)."""

    harness: Any = field(repr=False)
    bootstrap: str = ""
    nodes: int = 3

    @classmethod
    def of(cls, harness: Any) -> ThreeBrokers:
        return cls(harness=harness, bootstrap=harness.bootstrap, nodes=harness.nodes)

    # --------------------------------------------------------------- addresses

    def address(self, node: int) -> str:
        """``host:port`` of ``node``'s PLAINTEXT listener."""
        return str(self.harness.node_plaintext(node))

    @staticmethod
    def node_id(node: int) -> int:
        """The Kafka node.id of harness node ``node``."""
        return node + 1

    @staticmethod
    def node_of(node_id: int) -> int:
        """The harness node whose Kafka node.id is ``node_id``."""
        return node_id - 1

    def pid(self, node: int) -> int | None:
        return self.harness.node_pid(node)  # type: ignore[no-any-return]

    def running(self, node: int) -> bool:
        return self.pid(node) is not None

    # --------------------------------------------------------------- controls

    def kill(self, node: int) -> None:
        """SIGKILL ``node``'s broker, as a crash would (no controlled shutdown)."""
        self.harness.kill_node(node)

    def stop(self, node: int) -> None:
        """Stop ``node``'s broker (SIGTERM: a controlled shutdown moves its leaders)."""
        self.harness.stop_node(node)

    def freeze(self, node: int) -> None:
        """SIGSTOP ``node``'s broker: it hangs mid-request, its sockets stay open and
        its kernel still accepts connections, nothing is answered until ``thaw``.
        Returns once every thread of the broker has stopped."""
        pid = self.pid(node)
        assert pid is not None, f"node {node} is not running"
        freeze_group(pid)

    def thaw(self, node: int) -> None:
        """SIGCONT ``node``'s broker: it goes on with what it had read."""
        pid = self.pid(node)
        if pid is not None:
            thaw_group(pid)

    def start(self, node: int, timeout: float = 120.0) -> None:
        """Start ``node`` again on its data; returns once the cluster lists it."""
        self.harness.start_node(node, timeout=timeout)

    def heal(self) -> None:
        """Start every node that a test left stopped, and thaw any it left frozen."""
        for node in range(self.nodes):
            if self.pid(node) is None:
                self.start(node)
            else:
                self.thaw(node)

    # --------------------------------------------------------------- topics

    def create_topic(
        self,
        partitions: int = 1,
        prefix: str = "c",
        config: Mapping[str, str] | None = None,
        replication_factor: int = 3,
    ) -> str:
        """A fresh topic (``replication_factor`` replicas), once every running node
        knows it with a leader for every partition (brokers learn new topics from the
        controller one after the other: a test must not race that)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            async with KafkaClient(self.bootstrap) as client:
                await client.create_topics(
                    [(name, partitions)],
                    replication_factor=replication_factor,
                    configs=config,
                    timeout=60,
                )
            with anyio.fail_after(60):
                for node in range(self.nodes):
                    if self.running(node):
                        await self._known_by(node, name, partitions)

        _in_thread(create)
        return name

    async def _known_by(self, node: int, topic: str, partitions: int) -> None:
        async with KafkaClient(self.address(node)) as client:
            # Only this node: not the brokers its metadata names.
            while True:
                cluster = await client.refresh([topic])
                meta = cluster.topics.get(topic)
                if meta is not None and len(meta.available_partitions()) >= partitions:
                    return
                await anyio.sleep(0.1)

    def topic(self, name: str) -> TopicMetadata:
        """The topic's metadata as the cluster tells it now."""

        async def look() -> TopicMetadata:
            async with KafkaClient(self.bootstrap) as client:
                return await client.fetch_metadata(name)

        return _in_thread(look)  # type: ignore[no-any-return]

    def leader_node(self, topic: str, partition: int = 0) -> int:
        """The harness node leading ``topic``/``partition`` now."""
        return self.node_of(self.topic(topic).partitions[partition].leader)

    def wait_for_isr(self, topic: str, size: int = 3, within: float = 60.0) -> None:
        """Wait until every partition of ``topic`` has ``size`` replicas in sync."""
        deadline = time.monotonic() + within
        while True:
            meta = self.topic(topic)
            if all(len(p.isr) >= size and p.leader >= 0 for p in meta.partitions.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: ISR {meta.partitions} after {within}s")
            time.sleep(0.3)
