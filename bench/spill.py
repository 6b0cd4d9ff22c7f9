"""Disk spill: how fast records go to disk and come back, and what spill costs
while Kafka is up.

    python -m bench.spill [--records 200000] [--reps 5] [--skip-broker]

1. "store": the spill's write work alone: ``encode_frame`` (64 records a frame, one
   batch per record) and ``SpillStore.append`` of 100-byte records, per fsync
   policy (synced at the end); then reading them back (``SpillStore.read``, frames
   decoded and CRC-checked).
2. "outage": a Producer whose broker does not listen (127.0.0.1, a closed port),
   ``send_buffered`` of the records with max_buffering 10,000 and
   delivery_timeout 0.5 s: records per second until every record is on disk (once
   the topic spills, each record is written before send_buffered returns).
3. "kafka up" (needs a broker: KAFKA_BOOTSTRAP_SERVERS, else scripts/kafka_local.py):
   the producer's async throughput (``send_buffered`` loop yielding every 1000
   records, then flush) with and without ``spill_dir``, alternating (which goes first
   alternates too), medians of --reps runs and the median of the per-rep ratios.
   With Kafka up nothing is spilled: this is the cost of the seam being there.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.lowlevel

from kafka_asgi.producer import Producer
from kafka_asgi.producer.spill import SpillStore
from kafka_asgi.protocol.spill import encode_frame

VALUE = b"x" * 100


def store_rates(n: int, fsync: str | float) -> tuple[float, float, float]:
    """(records/s written, MB/s written, records/s read back)."""
    root = Path(tempfile.mkdtemp(prefix="spill-bench-"))
    try:
        store = SpillStore(root, max_bytes=1 << 40, segment_bytes=16 << 20, fsync=fsync)
        store.open()
        ts = int(time.time() * 1000)
        frame_records = [(None, VALUE, None, ts)] * 64
        start = time.perf_counter()
        nbytes = 0
        for _ in range(0, n, 64 * 128):
            frames = [encode_frame("bench", -1, frame_records) for _ in range(128)]
            nbytes += sum(len(f) for f in frames)
            store.append(frames)
        store.sync()
        wrote = time.perf_counter() - start
        start = time.perf_counter()
        count = 0
        while True:
            result = store.read()
            if not result.frames:
                break
            count += sum(len(f.records) for _, f in result.frames)
        read = time.perf_counter() - start
        store.close()
        return count / wrote, nbytes / wrote / 1e6, count / read
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def outage_rate(n: int) -> float:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    root = Path(tempfile.mkdtemp(prefix="spill-bench-"))
    try:
        producer = Producer(
            f"127.0.0.1:{port}",
            connect_timeout=0.2,
            delivery_timeout=0.5,
            max_buffering=10_000,
            wait_on_buffer_full=True,
            wait_buffer_timeout=60.0,
            spill_dir=str(root),
            spill_fsync="never",
            close_timeout=0.0,
        )
        async with producer:
            start = time.perf_counter()
            for _ in range(n):
                await producer.send_buffered("bench", VALUE)
            while True:
                if producer.stats().spilled >= n:
                    break
                await anyio.sleep(0.01)
            elapsed = time.perf_counter() - start
        return n / elapsed
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def kafka_up_rate(bootstrap: str, topic: str, n: int, spill: bool) -> float:
    root = Path(tempfile.mkdtemp(prefix="spill-bench-"))
    try:
        options = {"spill_dir": str(root)} if spill else {}
        producer = Producer(bootstrap, wait_on_buffer_full=True, **options)  # type: ignore[arg-type]
        async with producer:
            await producer.send(topic, b"warm-up")
            start = time.perf_counter()
            # send_buffered: with Kafka up, a full buffer makes it wait (spill or not),
            # so both runs measure the same path; the loop yields every 1000 records.
            send = producer.send_buffered
            for i in range(n):
                await send(topic, VALUE)
                if i % 1000 == 999:
                    await anyio.lowlevel.checkpoint()
            await producer.flush(timeout=120)
            elapsed = time.perf_counter() - start
            assert producer.stats().spilled == 0
        return n / elapsed
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spill")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip-broker", action="store_true")
    args = parser.parse_args(argv)
    n = args.records
    print(f"# spill bench, {n} records of 100 B")
    for policy in ("never", "segment", 0.1):
        w, mb, r = store_rates(n, policy)
        print(
            f"store fsync={policy!s:8}: write {w:,.0f} rec/s ({mb:.1f} MB/s), read {r:,.0f} rec/s"
        )
    rate = anyio.run(outage_rate, n)
    print(f"outage (producer -> disk, Kafka unreachable): {rate:,.0f} rec/s")
    if args.skip_broker:
        return 0
    from bench.common import broker, create_topics

    with broker() as b:
        topic = f"spill-bench-{int(time.time())}"
        create_topics(b.bootstrap, [topic])
        off: list[float] = []
        on: list[float] = []
        anyio.run(kafka_up_rate, b.bootstrap, topic, 20_000, True)  # warm-up
        for rep in range(args.reps):
            # Alternated, and which goes first alternates too (a loaded machine drifts).
            for spill in (False, True) if rep % 2 == 0 else (True, False):
                rate = anyio.run(kafka_up_rate, b.bootstrap, topic, n, spill)
                (on if spill else off).append(rate)
        m_off, m_on = statistics.median(off), statistics.median(on)
        pairs = statistics.median([a / b for a, b in zip(on, off, strict=True)])
        print(f"kafka up, spill off: {m_off:,.0f} rec/s (min {min(off):,.0f}, max {max(off):,.0f})")
        print(f"kafka up, spill on:  {m_on:,.0f} rec/s (min {min(on):,.0f}, max {max(on):,.0f})")
        print(f"cost of spill_dir with Kafka up: {(m_off - m_on) / m_off * 100:+.1f}% (medians)")
        print(f"  median of the per-rep ratios on/off: {pairs:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
