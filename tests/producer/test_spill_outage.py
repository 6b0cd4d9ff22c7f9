"""Disk spill against a real broker of the test's own: Kafka down while records keep
coming, then back: every record ends in the topic, once, in order per key; and the
disk budget's policies hold with exact counts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from kafka_asgi.errors import SpillFullError
from kafka_asgi.producer import BufferFullError, Producer
from tests.support.spill import Problems, make_topic, settled, values_by_key

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

KEYS = 50


async def run_outage(own_broker: Any, tmp_path: Path, n: int, max_buffering: int) -> None:
    bootstrap = own_broker.addresses().plaintext
    topic = make_topic(bootstrap)
    problems = Problems()
    producer = Producer(
        bootstrap,
        required_acks=-1,
        enable_idempotence=True,
        connect_timeout=1.0,
        request_timeout=5.0,
        delivery_timeout=2.0,
        max_buffering=max_buffering,
        wait_on_buffer_full=True,
        wait_buffer_timeout=60.0,
        error_handle=problems,
        spill_dir=str(tmp_path / "spill"),
        spill_segment_bytes=1 << 20,
    )
    peak = 0
    async with producer:
        await anyio.to_thread.run_sync(own_broker.stop)
        for i in range(n):
            await producer.send_buffered(topic, b"%08d" % i, key=b"k%d" % (i % KEYS))
            if i % 500 == 0:
                s = producer.stats()
                peak = max(peak, s.buffered + s.in_flight + s.spill_queued)
        # Records reached delivery_timeout in memory, and went to disk instead.
        await anyio.sleep(3.0)
        s = producer.stats()
        assert s.failed == 0, (s, problems.summary())
        assert s.spilled >= n - max_buffering, s
        await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
        await settled(producer, n, within=300 + n / 1000)
        stats = producer.stats()
    assert stats.failed == 0 and stats.spill_dropped == 0 and stats.spill_lost == 0, (
        stats,
        problems.summary(),
    )
    assert stats.delivered == n
    # Memory stayed bounded: the buffer (which one read from disk may overrun by about
    # its half), plus the write queue (whose limit is max_buffering).
    print(f"peak records held in memory: {peak} (max_buffering={max_buffering}, n={n})")
    assert peak <= 3 * max_buffering, peak
    values, by_key = await anyio.to_thread.run_sync(values_by_key, bootstrap, topic, 3, n)
    # Exactly once (idempotence on, and no replay failed half-way in this run).
    assert len(values) == n and max(values.values()) == 1, (len(values), values.most_common(2))
    for key, seq in by_key.items():
        assert seq == sorted(seq), (key, seq[:20])
    assert not problems.calls, problems.summary()
    assert not list((tmp_path / "spill").glob("*/*.seg"))


async def test_outage_spills_and_replays_everything_once_in_order(
    own_broker: Any, tmp_path: Path, anyio_backend: str
) -> None:
    await run_outage(own_broker, tmp_path, n=30_000, max_buffering=3_000)


@pytest.mark.skipif(
    not os.environ.get("KAFKA_ASGI_SPILL_1M"),
    reason="1,000,000 records take minutes: set KAFKA_ASGI_SPILL_1M=1",
)
async def test_outage_one_million_records(
    own_broker: Any, tmp_path: Path, anyio_backend: str
) -> None:
    await run_outage(own_broker, tmp_path, n=1_000_000, max_buffering=50_000)


async def test_budget_drop_newest_counts_exactly(
    own_broker: Any, tmp_path: Path, anyio_backend: str
) -> None:
    bootstrap = own_broker.addresses().plaintext
    topic = make_topic(bootstrap)
    problems = Problems()
    n = 20_000
    producer = Producer(
        bootstrap,
        connect_timeout=1.0,
        delivery_timeout=1.0,
        max_buffering=1_000,
        wait_on_buffer_full=True,
        error_handle=problems,
        spill_dir=str(tmp_path / "spill"),
        spill_max_bytes=64 * 1024,
        spill_segment_bytes=16 * 1024,
        spill_when_full="drop_newest",
    )
    async with producer:
        await anyio.to_thread.run_sync(own_broker.stop)
        for i in range(n):
            await producer.send_buffered(topic, b"%08d" % i, key=b"k%d" % (i % KEYS))
        await anyio.sleep(2.5)  # the last ones in memory reach delivery_timeout
        s = producer.stats()
        assert s.spill_dropped > 0 and s.spilled > 0, s
        await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
        await settled(producer, n, within=120)
        stats = producer.stats()
    dropped = [r for c in problems.of(SpillFullError) for r in c[2]]
    assert stats.spill_dropped == len(dropped) == stats.failed, (stats, problems.summary())
    assert stats.delivered + len(dropped) == n
    values, _ = await anyio.to_thread.run_sync(values_by_key, bootstrap, topic, 3, n - len(dropped))
    # Exactly the records not reported as dropped are in the topic.
    assert set(values) == {b"%08d" % i for i in range(n)} - {r[1] for r in dropped}
    assert max(values.values()) == 1


async def test_budget_block_makes_send_buffered_wait_then_fail(
    own_broker: Any, tmp_path: Path, anyio_backend: str
) -> None:
    bootstrap = own_broker.addresses().plaintext
    topic = make_topic(bootstrap)
    problems = Problems()
    producer = Producer(
        bootstrap,
        connect_timeout=1.0,
        delivery_timeout=1.0,
        max_buffering=1_000,
        wait_on_buffer_full=True,
        # Until the producer has seen that no broker answers, send_buffered waits for
        # the memory buffer (as without spill): longer than delivery_timeout here.
        wait_buffer_timeout=3.0,
        error_handle=problems,
        spill_dir=str(tmp_path / "spill"),
        spill_max_bytes=64 * 1024,
        spill_segment_bytes=16 * 1024,
        spill_when_full="block",
    )
    accepted = 0
    async with producer:
        await anyio.to_thread.run_sync(own_broker.stop)
        with pytest.raises(BufferFullError, match="spill_dir"):
            for i in range(200_000):
                await producer.send_buffered(topic, b"%08d" % i, key=b"k%d" % (i % KEYS))
                accepted += 1
        s = producer.stats()
        assert s.spill_dropped == 0 and s.failed == 0, (s, problems.summary())
        await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
        await settled(producer, accepted, within=120)
        stats = producer.stats()
    # Nothing dropped: every record accepted before the wait gave up is in the topic.
    assert stats.delivered == accepted and stats.failed == 0, (stats, problems.summary())
    values, _ = await anyio.to_thread.run_sync(values_by_key, bootstrap, topic, 3, accepted)
    assert set(values) == {b"%08d" % i for i in range(accepted)}
