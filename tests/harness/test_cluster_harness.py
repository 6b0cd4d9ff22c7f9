"""The three-node harness: every node answers, replicas are spread, one node can be
killed and started again while the other two keep the cluster writable."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anyio
import pytest

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.producer import Producer
from tests.support.brokers import REPO, kafka_local


def test_every_node_answers_and_lists_the_others(kafka_cluster: Any) -> None:
    assert kafka_cluster.bootstrap.count(",") == 2
    for node in range(3):
        assert kafka_cluster.pid(node) is not None
        kafka_local.check_node(kafka_cluster.address(node), 3)
    # Node 0 keeps every listener of the single broker.
    kafka_local.check_listeners(kafka_cluster.harness.addresses())


def test_topics_get_three_replicas_by_default(kafka_cluster: Any) -> None:
    # replication_factor=-1: the broker's default.replication.factor decides.
    topic = kafka_cluster.create_topic(partitions=3, replication_factor=-1)
    kafka_cluster.wait_for_isr(topic, 3)
    meta = kafka_cluster.topic(topic)
    assert {len(p.replicas) for p in meta.partitions.values()} == {3}
    # Leaders are spread over the nodes.
    assert len({p.leader for p in meta.partitions.values()}) >= 2


def test_status_command_shows_each_node(kafka_cluster: Any) -> None:
    state = kafka_cluster.harness.state
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "kafka_local.py"), "status"],
        capture_output=True,
        text=True,
        env={"KAFKA_LOCAL_STATE": str(state), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["bootstrap"] == kafka_cluster.bootstrap
    assert [n["node"] for n in shown["nodes"]] == [0, 1, 2]
    assert all(n["running"] for n in shown["nodes"])


@pytest.mark.anyio
async def test_a_killed_node_comes_back_and_acks_all_works_meanwhile(
    kafka_cluster: Any, anyio_backend: str
) -> None:
    topic = kafka_cluster.create_topic(partitions=1)
    kafka_cluster.wait_for_isr(topic, 3)
    victim = (kafka_cluster.leader_node(topic) + 1) % 3  # a follower
    kafka_cluster.kill(victim)
    assert kafka_cluster.pid(victim) is None
    # min.insync.replicas=2: two of three replicas still take acks=all writes.
    async with Producer(kafka_cluster.bootstrap, required_acks=-1) as producer:
        with anyio.fail_after(60):
            await producer.send(topic, b"while one node is down")
    await anyio.to_thread.run_sync(kafka_cluster.start, victim)
    assert kafka_cluster.pid(victim) is not None
    kafka_local.check_node(kafka_cluster.address(victim), 3)
    async with KafkaClient(kafka_cluster.address(victim)) as client:
        cluster = await client.refresh([])
        assert sorted(cluster.brokers) == [1, 2, 3]
