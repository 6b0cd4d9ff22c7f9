"""Issue 17's fault tests: an idempotent producer with 5 batches in flight per
partition (pipelining), on the three-broker cluster, and the partition leader killed
(SIGKILL by PID) mid-stream, or frozen (SIGSTOP) with those requests unanswered and
thawed later. Afterwards the topic holds every acknowledged record exactly once, in
order per partition (each record's value is its sequence number in the run), and
every record was acknowledged or reported."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.producer import Producer
from tests.support.delivery import Outcome, read_log
from tests.support.inflight import StrikeAtFive
from tests.support.timing import scaled

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

PARTITIONS = 3
PER_TICK = 40  # records of ~1 KiB every TICK: far more than one batch in flight carries
BURST = 600  # records of a tick while the strike is armed (~50 batches a partition)
TICK = 0.02
SECONDS = 6.0
PAD = b" " * 1000


async def _five_in_flight_then(
    kafka_cluster: Any,
    anyio_backend: str,
    fault: Callable[[int], None],
    *,
    undo: Callable[[int], None] | None = None,
    hold: float = 0.0,
    request_timeout: float = 10.0,
) -> None:
    """Stream ~1 KiB records; once a partition has 5 batches in flight,
    ``fault(node)`` on its leader; ``undo(node)`` ``hold`` seconds later; go on
    streaming for half of SECONDS after that, flush, and check the log."""
    topic = kafka_cluster.create_topic(partitions=PARTITIONS)
    kafka_cluster.wait_for_isr(topic, 3)
    victim = -1
    victim_parts: set[int] = set()
    part = 0  # the partition found with 5 batches in flight
    outcome = Outcome()
    probe = StrikeAtFive(topic)
    in_flight_at_fault: dict[int, int] = {}
    struck: float | None = None
    undone: float | None = None
    try:
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
                request_timeout=request_timeout,
                delivery_timeout=120.0,
                max_retry=10,
                max_buffering=200_000,
            ) as producer,
        ):

            def strike(p: int) -> bool:
                """``fault`` on the leader of partition ``p``, as the producer knows it
                now (a leader may have moved since the topic was made: the cluster
                moves leaders back to their preferred replicas after an earlier
                test's fault)."""
                nonlocal victim, victim_parts, in_flight_at_fault, struck, part
                meta = client.cached_topic(topic)
                leader_id = -1 if meta is None else meta.partitions[p].leader
                if meta is None or leader_id < 0:
                    return False
                part = p
                victim = kafka_cluster.node_of(leader_id)
                victim_parts = {q for q, m in meta.partitions.items() if m.leader == leader_id}
                in_flight_at_fault = {q: probe.now.get((topic, q), 0) for q in victim_parts}
                fault(victim)  # on the loop's thread: nothing is answered meanwhile
                struck = time.monotonic()
                return True

            probe.strike = strike
            producer.add_hooks(probe)
            ident = 0
            start = time.monotonic()
            while True:
                now = time.monotonic()
                if struck is None:
                    if now - start >= scaled(SECONDS):
                        break  # (asserted below: the fault found 5 in flight)
                elif undo is not None and undone is None:
                    if now - struck >= hold:
                        await anyio.to_thread.run_sync(undo, victim)
                        undone = time.monotonic()
                elif now - (undone or struck) >= scaled(SECONDS) / 2:
                    break
                elapsed = time.monotonic() - start
                # Armed from 1.5 s on: the hook strikes when a partition has 5 batches
                # in flight, which the ticks' bursts make sure of.
                probe.armed = struck is None and elapsed >= 1.5
                for _ in range(BURST if probe.armed else PER_TICK):
                    outcome.handed(ident, None)
                    producer.send_nowait(topic, b"%d" % ident + PAD)
                    ident += 1
                if struck is None and elapsed >= scaled(SECONDS) * 0.9:
                    # Never 5 in flight: strike anyway, and the assertion below says so.
                    probe.armed = False
                    strike(0)
                await anyio.sleep(TICK)
            probe.armed = False
            await producer.flush(timeout=scaled(120))
            stats = producer.stats()
    finally:
        if undo is not None and undone is None and victim >= 0:
            undo(victim)
    assert struck is not None
    log = await read_log(kafka_cluster.bootstrap, topic, PARTITIONS)
    resume = outcome.first_ack_after(undone or struck, victim_parts)
    during = outcome.first_ack_after(struck, victim_parts) if undone is not None else None
    leader_after = kafka_cluster.leader_node(topic, part)
    print(
        f"\n[{anyio_backend}] leader struck with {in_flight_at_fault} batches in flight"
        f" on its partitions (most per partition in the run: {probe.most()}):"
        f" {len(outcome.sent)} sent, {len(outcome.acked)} acked,"
        f" {len(outcome.failed)} reported failed, {stats.retried} record retries;"
        f" first ack on its partitions {resume and round(resume, 2)}s after the"
        f" {'thaw' if undo else 'kill'}"
        + (
            ""
            if undone is None
            else f" ({during and round(during, 2)}s after the freeze, frozen"
            f" {undone - struck:.1f}s; partition {part} led by node {leader_after}, was {victim})"
        )
    )
    # The fault found 5 batches in flight on a partition of the struck leader.
    assert max(in_flight_at_fault.values()) == 5
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


async def test_leader_killed_with_five_batches_in_flight(
    kafka_cluster: Any, anyio_backend: str
) -> None:
    await _five_in_flight_then(kafka_cluster, anyio_backend, kafka_cluster.kill)


async def test_leader_frozen_with_five_batches_in_flight(
    kafka_cluster: Any, anyio_backend: str
) -> None:
    # Frozen for 3 s, under broker.session.timeout.ms (6 s here): the same broker
    # leads when it thaws and goes on with what it had read. The producer waits for
    # its answers up to request_timeout + 5 s (6.5 s), past the thaw.
    await _five_in_flight_then(
        kafka_cluster,
        anyio_backend,
        kafka_cluster.freeze,
        undo=kafka_cluster.thaw,
        hold=3.0,
        request_timeout=1.5,
    )
