"""A worker SIGKILLed while spilling; a new one with the same spill_dir ships what
the dead one wrote (real broker of the test's own, worker in a subprocess)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from kafka_asgi.errors import SpillDamagedError
from kafka_asgi.producer import Producer
from kafka_asgi.protocol.spill import SEGMENT_HEADER, decode_acks, decode_frames
from tests.support.spill import Problems, make_topic, values_by_key
from tests.support.timing import scaled

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

REPO = Path(__file__).resolve().parents[2]


def kill_while_spilling(bootstrap: str, topic: str, spill_dir: Path, at_least: int) -> int:
    """Run the worker until it reports ``at_least`` records spilled, SIGKILL it; the
    count it last reported (those records were on disk by then)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.spill_worker",
            bootstrap,
            topic,
            str(spill_dir),
            "10000000",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    spilled = 0
    deadline = time.monotonic() + scaled(120)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            spilled = int(line.split()[0].split("=")[1])
            if spilled >= at_least or time.monotonic() > deadline:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert spilled >= at_least, (spilled, err[-2000:])
    return spilled


def worker(bootstrap: str, topic: str, spill_dir: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.spill_worker",
            bootstrap,
            topic,
            str(spill_dir),
            "10000000",
            mode,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], done: Any, within: float) -> tuple[int, int]:
    """Read the worker's ``spilled=<n> sent=<i>`` lines until ``done(n, i)``: (n, i)."""
    spilled = sent = 0
    deadline = time.monotonic() + scaled(within)
    assert proc.stdout is not None
    for line in proc.stdout:
        fields = dict(f.split("=") for f in line.split())
        spilled, sent = int(fields["spilled"]), int(fields["sent"])
        if done(spilled, sent) or time.monotonic() > deadline:
            break
    return spilled, sent


def sigkill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]


def on_disk(spill_dir: Path) -> list[tuple[Path, list[int]]]:
    """(segment, records per frame not acknowledged yet) of every segment left, oldest
    first."""
    out = []
    for seg in sorted(spill_dir.glob("*/*.seg")):
        data = seg.read_bytes()
        scan = decode_frames(data[len(SEGMENT_HEADER) :], base=len(SEGMENT_HEADER))
        assert not scan.damage
        ack = seg.with_suffix(".ack")
        acked = decode_acks(ack.read_bytes()) if ack.exists() else set()
        out.append((seg, [len(f.records) for f in scan.frames if f.offset not in acked]))
    return out


async def ship(bootstrap: str, spill_dir: Path, problems: Problems, expected: int) -> Any:
    producer = Producer(bootstrap, error_handle=problems, spill_dir=str(spill_dir))
    async with producer:
        with anyio.move_on_after(scaled(120)):
            while True:
                s = producer.stats()
                if (
                    s.delivered + s.failed + s.spill_lost >= expected
                    and s.spill_backlog_bytes == 0
                    and s.buffered + s.in_flight == 0
                ):
                    break
                await anyio.sleep(0.2)
        stats = producer.stats()
    return stats


async def test_killed_worker_records_are_shipped_by_the_next(
    own_broker: Any, tmp_path: Path, anyio_backend: str
) -> None:
    bootstrap = own_broker.addresses().plaintext
    topic = make_topic(bootstrap)
    spill_dir = tmp_path / "spill"
    await anyio.to_thread.run_sync(own_broker.stop)
    reported = await anyio.to_thread.run_sync(
        kill_while_spilling, bootstrap, topic, spill_dir, 20_000
    )
    left = on_disk(spill_dir)
    total = sum(sum(counts) for _, counts in left)
    assert total >= reported
    await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
    problems = Problems()
    stats = await ship(bootstrap, spill_dir, problems, total)
    assert stats.delivered == total and stats.failed == 0, (stats, problems.summary())
    values, by_key = await anyio.to_thread.run_sync(values_by_key, bootstrap, topic, 3, total)
    # Every record the dead worker had written is in the topic, once: at least all of
    # those it reported as spilled before it was killed.
    assert {b"%08d" % i for i in range(reported)} <= set(values)
    assert len(values) == total and max(values.values()) == 1
    for key, seq in by_key.items():
        assert seq == sorted(seq), key
    # The dead worker's directory was adopted, emptied and removed.
    assert not list(spill_dir.glob("*/*.seg"))


async def test_truncated_segment_loses_only_the_cut_record(
    own_broker: Any, tmp_path: Path, anyio_backend: str
) -> None:
    bootstrap = own_broker.addresses().plaintext
    topic = make_topic(bootstrap)
    spill_dir = tmp_path / "spill"
    await anyio.to_thread.run_sync(own_broker.stop)
    await anyio.to_thread.run_sync(kill_while_spilling, bootstrap, topic, spill_dir, 5_000)
    left = on_disk(spill_dir)
    total = sum(sum(counts) for _, counts in left)
    # Cut the newest segment in the middle of its last record (a torn write): that
    # record is lost, and only that one (a frame of several keeps the others:
    # tests/protocol/test_spill.py).
    seg, _ = next((s, c) for s, c in reversed(left) if c)
    data = seg.read_bytes()
    last = decode_frames(data[len(SEGMENT_HEADER) :]).frames[-1].records[-1][1]
    os.truncate(seg, len(data) - 20)
    await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
    problems = Problems()
    stats = await ship(bootstrap, spill_dir, problems, total)
    damaged = problems.of(SpillDamagedError)
    assert len(damaged) == 1 and damaged[0][3].lost == 1, problems.summary()
    assert stats.spill_lost == 1
    assert stats.delivered == total - 1 and stats.failed == 0, (stats, problems.summary())
    values, _ = await anyio.to_thread.run_sync(values_by_key, bootstrap, topic, 3, total - 1)
    assert len(values) == total - 1 and max(values.values()) == 1
    # The one lost is the record cut, the last written to that segment.
    assert last not in values


def first_seen_in_order(by_key: dict[Any, list[int]]) -> None:
    """Per key, the first copy of each record comes in the order sent."""
    for key, seq in by_key.items():
        seen: set[int] = set()
        firsts = [v for v in seq if not (v in seen or seen.add(v))]
        assert firsts == sorted(firsts), key


async def test_killed_mid_spill_every_accepted_record_ends_in_the_topic(
    own_broker: Any, tmp_path: Path, anyio_backend: str
) -> None:
    # Kafka down from the start: the first records wait in memory, then the buffer
    # is full and the topic spills (they move to the disk, new ones go there at once).
    bootstrap = own_broker.addresses().plaintext
    topic = make_topic(bootstrap)
    spill_dir = tmp_path / "spill"
    await anyio.to_thread.run_sync(own_broker.stop)
    proc = worker(bootstrap, topic, spill_dir, "nowait")
    try:
        spilled, accepted = await anyio.to_thread.run_sync(
            read_until, proc, lambda n, i: n >= 3000 and i >= 8000, 120
        )
    finally:
        await anyio.to_thread.run_sync(sigkill, proc)
    assert spilled >= 3000 and accepted >= 8000, (spilled, accepted)
    left = on_disk(spill_dir)
    total = sum(sum(counts) for _, counts in left)
    # The worker accepted at least `accepted` records (and at most a few more, until
    # the signal landed): every one of them is on disk.
    assert total >= accepted
    await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
    problems = Problems()
    stats = await ship(bootstrap, spill_dir, problems, total)
    assert stats.delivered == total and stats.failed == 0, (stats, problems.summary())
    values, by_key = await anyio.to_thread.run_sync(values_by_key, bootstrap, topic, 3, total)
    # Exactly the records 0..total-1 (no gap: nothing accepted was lost), each once.
    assert set(values) == {b"%08d" % i for i in range(total)}
    assert max(values.values()) == 1
    first_seen_in_order(by_key)


async def test_killed_after_kafka_went_away_every_unacknowledged_record_ends_in_the_topic(
    own_broker: Any, tmp_path: Path, anyio_backend: str
) -> None:
    # Kafka up, then stopped while the worker sends: records were acknowledged, in
    # flight, in memory; the topic spills; the worker is killed.
    bootstrap = own_broker.addresses().plaintext
    topic = make_topic(bootstrap)
    spill_dir = tmp_path / "spill"
    proc = worker(bootstrap, topic, spill_dir, "nowait")
    try:
        _, before = await anyio.to_thread.run_sync(read_until, proc, lambda n, i: i >= 20_000, 120)
        await anyio.to_thread.run_sync(own_broker.stop)
        spilled, accepted = await anyio.to_thread.run_sync(
            read_until, proc, lambda n, i: n >= 5000, 120
        )
    finally:
        await anyio.to_thread.run_sync(sigkill, proc)
    assert spilled >= 5000, (spilled, accepted)
    await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
    problems = Problems()
    left = on_disk(spill_dir)
    on_disk_count = sum(sum(counts) for _, counts in left)
    stats = await ship(bootstrap, spill_dir, problems, on_disk_count)
    assert stats.delivered == on_disk_count and stats.failed == 0, (stats, problems.summary())
    values, by_key = await anyio.to_thread.run_sync(values_by_key, bootstrap, topic, 3, accepted)
    # Every record accepted is in the topic: acknowledged before the stop, or
    # shipped from the disk by the second producer. Duplicates only of records
    # whose batch was sent and whose held copy was not yet settled (at-least-once).
    assert {b"%08d" % i for i in range(accepted)} <= set(values)
    top = max(int(v) for v in values)
    assert set(values) == {b"%08d" % i for i in range(top + 1)}  # no gap
    dups = sum(c - 1 for c in values.values())
    assert dups <= 2_000, dups
    assert before <= accepted
    out_of_order = 0
    for seq in by_key.values():
        seen: set[int] = set()
        firsts = [v for v in seq if not (v in seen or seen.add(v))]
        out_of_order += sum(1 for a, b in itertools.pairwise(firsts) if b < a)
    print(
        f"first copies out of order: {out_of_order}, duplicates: {dups}, "
        f"replayed {stats.replayed} of {on_disk_count} on disk"
    )
    # The first copy of each record per key in the order sent, here too: the worker
    # delivered part of them itself, spilled the rest around batches in flight (their
    # held copies start the segments), and read some back before it was killed.
    first_seen_in_order(by_key)
