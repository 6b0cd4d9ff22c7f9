"""Issue 17's fault test: an idempotent producer with 5 batches in flight per
partition (pipelining), the partition leader killed (SIGKILL by PID) mid-stream on
the three-broker cluster. Afterwards the topic holds every acknowledged record
exactly once, in order per partition (each record's value is its sequence number
in the run), and every record was acknowledged or reported."""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.to_thread
import pytest

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.producer import Producer
from tests.support.delivery import Outcome, read_log
from tests.support.inflight import InFlightProbe
from tests.support.timing import scaled

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

PARTITIONS = 3
PER_TICK = 40  # records of ~1 KiB every TICK: far more than one batch in flight carries
TICK = 0.02
SECONDS = 6.0
PAD = b" " * 1000


async def test_leader_killed_with_five_batches_in_flight(
    kafka_cluster: Any, anyio_backend: str
) -> None:
    topic = kafka_cluster.create_topic(partitions=PARTITIONS)
    kafka_cluster.wait_for_isr(topic, 3)
    victim = kafka_cluster.leader_node(topic, 0)
    victim_id = kafka_cluster.node_id(victim)
    meta = kafka_cluster.topic(topic)
    victim_parts = {p for p, m in meta.partitions.items() if m.leader == victim_id}
    outcome = Outcome()
    probe = InFlightProbe()
    in_flight_at_kill: dict[int, int] = {}
    killed: float | None = None
    async with (
        KafkaClient(kafka_cluster.bootstrap) as client,
        Producer(
            client=client,
            required_acks=-1,
            enable_idempotence=True,
            max_in_flight=5,
            batch_size=4096,
            compression="lz4",
            on_delivery=outcome.on_delivery,
            flush_time=0.05,
            request_timeout=10.0,
            delivery_timeout=120.0,
            max_retry=10,
            max_buffering=200_000,
        ) as producer,
    ):
        producer.add_hooks(probe)
        ident = 0
        start = time.monotonic()
        while time.monotonic() - start < scaled(SECONDS):
            for _ in range(PER_TICK):
                outcome.handed(ident, None)
                producer.send_nowait(topic, b"%d" % ident + PAD)
                ident += 1
            elapsed = time.monotonic() - start
            if killed is None and elapsed >= 1.5:
                now = {p: probe.now.get((topic, p), 0) for p in victim_parts}
                if max(now.values()) >= 5 or elapsed >= scaled(SECONDS) / 2:
                    # Kill the leader while its partitions have 5 batches in flight.
                    in_flight_at_kill = now
                    await anyio.to_thread.run_sync(kafka_cluster.kill, victim)
                    killed = time.monotonic()
            await anyio.sleep(TICK)
        await producer.flush(timeout=scaled(120))
        stats = producer.stats()
    assert killed is not None
    log = await read_log(kafka_cluster.bootstrap, topic, PARTITIONS)
    resume = outcome.first_ack_after(killed, victim_parts)
    print(
        f"\n[{anyio_backend}] leader killed with {in_flight_at_kill} batches in flight"
        f" on its partitions (most per partition in the run: {probe.most()}):"
        f" {len(outcome.sent)} sent, {len(outcome.acked)} acked,"
        f" {len(outcome.failed)} reported failed, {stats.retried} record retries;"
        f" first ack on its partitions {resume and round(resume, 2)}s after the kill"
    )
    # The kill found 5 batches in flight on a partition of the dead leader.
    assert max(in_flight_at_kill.values()) == 5
    assert not outcome.unreported
    assert not outcome.failed, {i: repr(e) for i, e in list(outcome.failed.items())[:5]}
    # Every acknowledged record exactly once, in order per partition.
    missing = set(outcome.acked) - set(log.ids)
    assert not missing, sorted(missing)[:20]
    assert not log.duplicates(), log.duplicates()[:20]
    for partition, ids in log.by_partition.items():
        assert ids == sorted(ids), f"partition {partition} out of order"
    # And where the producer said it put them.
    for i, (partition, _) in outcome.acked.items():
        assert i in log.by_partition[partition]
