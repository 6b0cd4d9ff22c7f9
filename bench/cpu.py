"""Producer CPU per record at a moderate rate: what a web worker pays in the background
(issue 17, item 6).

    python -m bench --only cpu [--quick]
    python -m bench.cpu --rate 5000 --seconds 60 --reps 3      # alone, any rate/length

Each client in its own fresh process sends 100-byte log-like values (bench/producer.py's)
at a fixed rate, acks=1, no compression, one partition, for a fixed time, then flushes:
the records are handed over in ticks of 2 ms (10 per tick at 5,000 records/s, the
count due by the clock), the process sleeping between ticks (``asyncio.sleep`` for
kafka_asgi and aiokafka, ``time.sleep`` then ``poll(0)`` for confluent-kafka), as a
web worker's requests arrive spread over time.  CPU is the process's user + system
time (``resource.getrusage(RUSAGE_SELF)``, every thread: librdkafka's and the clients'
own) from the first record until every record is acknowledged; the start, connections
and one warm-up record are outside the window.

"pacing loop" rows: the same loop with no client (nothing sent), asyncio and plain
``time.sleep``: the floor every row includes; "net" subtracts the matching one.

The length and rate: ``--seconds`` / ``--rate`` here, or BENCH_CPU_SECONDS /
BENCH_CPU_RATE / BENCH_CPU_REPS for ``python -m bench --only cpu`` (defaults 60 s,
5,000 records/s, 3 repetitions; --quick 10 s, 2 repetitions).  The pacing-loop rows
run for at most 15 s (their figure is per paced record, so length does not change it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from bench.common import (
    OURS,
    PYTHON,
    ROOT,
    BenchError,
    Context,
    Result,
    broker,
    delete_topics,
    markdown_table,
)
from bench.producer import _values

SECTION = "cpu"
TICK = 0.002
POOL = 10_000  # distinct values, cycled
OURS_BIG = "kafka_asgi, batch_num=1000"
"""kafka_asgi with five times lua-resty-kafka's batch_num: fewer, larger batches."""
BIG_BATCH_NUM = 1000
CLIENTS = (OURS, OURS_BIG, "confluent-kafka", "aiokafka")
LOOPS = {"pacing loop (asyncio)": "asyncio", "pacing loop (time.sleep)": "sync"}
BASELINE_OF = {
    OURS: "asyncio",
    OURS_BIG: "asyncio",
    "aiokafka": "asyncio",
    "confluent-kafka": "sync",
}
BASELINE_SECONDS = 15.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Window:
    """CPU and wall time from the first record to the last acknowledgement."""

    def __init__(self) -> None:
        gc.collect()
        self.cpu0, self.wall0 = _cpu(), time.perf_counter()
        self.user0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime

    def close(self, n: int, acked: int) -> dict[str, float]:
        cpu, wall = _cpu() - self.cpu0, time.perf_counter() - self.wall0
        user = resource.getrusage(resource.RUSAGE_SELF).ru_utime - self.user0
        return {"cpu": cpu, "user": user, "wall": wall, "records": n, "acked": acked}


def _due(start: float, rate: float, total: int) -> int:
    return min(total, int((time.perf_counter() - start) * rate) + 1)


async def _ours(
    bootstrap: str, topic: str, total: int, rate: float, batch_num: int | None = None
) -> dict[str, float]:
    """``batch_num`` None: the producer's default."""
    from kafka_asgi import Producer

    values = _values(POOL)
    tuned = {} if batch_num is None else {"batch_num": batch_num}
    async with Producer(bootstrap, required_acks=1, **tuned) as producer:
        await producer.send(topic, b"warm-up")
        send_nowait = producer.send_nowait
        window = _Window()
        sent = 0
        while sent < total:
            for i in range(sent, _due(window.wall0, rate, total)):
                send_nowait(topic, values[i % POOL])
                sent += 1
            await asyncio.sleep(TICK)
        await producer.flush()
        stats = producer.stats()
        out = window.close(total, stats.delivered - 1)
    if stats.failed:
        raise BenchError(f"kafka_asgi: {stats.failed} records failed")
    return out


async def _aiokafka(bootstrap: str, topic: str, total: int, rate: float) -> dict[str, float]:
    from aiokafka import AIOKafkaProducer

    values = _values(POOL)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1)
    await producer.start()
    acked = failed = 0

    def done(fut: asyncio.Future[Any]) -> None:
        nonlocal acked, failed
        if fut.cancelled() or fut.exception() is not None:
            failed += 1
        else:
            acked += 1

    try:
        await producer.send_and_wait(topic, b"warm-up")
        window = _Window()
        sent = 0
        while sent < total:
            for i in range(sent, _due(window.wall0, rate, total)):
                (await producer.send(topic, values[i % POOL])).add_done_callback(done)
                sent += 1
            await asyncio.sleep(TICK)
        await producer.flush()
        for _ in range(100):  # the futures' callbacks run on the next turns
            if acked + failed >= total:
                break
            await asyncio.sleep(0.001)
        out = window.close(total, acked)
    finally:
        await producer.stop()
    if failed:
        raise BenchError(f"aiokafka: {failed} records failed")
    return out


def _confluent(bootstrap: str, topic: str, total: int, rate: float) -> dict[str, float]:
    from confluent_kafka import Producer

    acked = failed = 0

    def report(err: Any, msg: Any) -> None:
        nonlocal acked, failed
        if err is None:
            acked += 1
        else:
            failed += 1

    values = _values(POOL)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "on_delivery": report})
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    acked = 0
    produce, poll = producer.produce, producer.poll
    window = _Window()
    sent = 0
    while sent < total:
        for i in range(sent, _due(window.wall0, rate, total)):
            produce(topic, values[i % POOL])
            sent += 1
        time.sleep(TICK)
        poll(0)
    if producer.flush(120):
        raise BenchError("confluent-kafka: records left after flush")
    out = window.close(total, acked)
    if failed:
        raise BenchError(f"confluent-kafka: {failed} records failed")
    return out


async def _pace_async(total: int, rate: float) -> dict[str, float]:
    window = _Window()
    sent = 0
    while sent < total:
        sent = _due(window.wall0, rate, total)
        await asyncio.sleep(TICK)
    return window.close(total, total)


def _pace_sync(total: int, rate: float) -> dict[str, float]:
    window = _Window()
    sent = 0
    while sent < total:
        sent = _due(window.wall0, rate, total)
        time.sleep(TICK)
    return window.close(total, total)


def _worker(impl: str, bootstrap: str, topic: str, total: int, rate: float) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if impl == OURS:
            return asyncio.run(_ours(bootstrap, topic, total, rate))
        if impl == OURS_BIG:
            return asyncio.run(_ours(bootstrap, topic, total, rate, BIG_BATCH_NUM))
        if impl == "aiokafka":
            return asyncio.run(_aiokafka(bootstrap, topic, total, rate))
        if impl == "confluent-kafka":
            return _confluent(bootstrap, topic, total, rate)
        if impl == "asyncio":
            return asyncio.run(_pace_async(total, rate))
        if impl == "sync":
            return _pace_sync(total, rate)
    raise SystemExit(f"unknown client {impl!r}")


def measure(ctx: Context, impl: str, rate: float, seconds: float) -> dict[str, float]:
    """One run in a fresh process (a fresh topic for a client)."""
    total = max(1, int(rate * seconds))
    topic = ctx.topic("cpu") if impl in CLIENTS else "-"
    try:
        proc = subprocess.run(
            [
                PYTHON,
                "-m",
                "bench.cpu",
                "--worker",
                impl,
                ctx.bootstrap,
                topic,
                str(total),
                str(rate),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=seconds * 3 + 120,
            check=False,
        )
    finally:
        if topic != "-":
            ctx.drop(topic)
    if proc.returncode != 0:
        raise BenchError(f"{impl} CPU run failed:\n{proc.stderr[-2000:]}")
    got: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    if got["acked"] != total:
        raise BenchError(f"{impl}: {got['acked']} of {total} records acknowledged")
    return got


def settings(ctx: Context) -> tuple[float, float, int]:
    """Rate, seconds and repetitions (environment, else the defaults)."""
    rate = float(os.environ.get("BENCH_CPU_RATE", 5000))
    seconds = float(os.environ.get("BENCH_CPU_SECONDS", 10 if ctx.quick else 60))
    reps = int(os.environ.get("BENCH_CPU_REPS", 2 if ctx.quick else 3))
    return rate, seconds, reps


def run(
    ctx: Context, rate: float | None = None, seconds: float | None = None, reps: int | None = None
) -> list[Result]:
    d_rate, d_seconds, d_reps = settings(ctx)
    rate, seconds, reps = rate or d_rate, seconds or d_seconds, reps or d_reps
    case = f"100 B, acks=1, {rate:,.0f} records/s for {seconds:g} s"
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in (*CLIENTS, *LOOPS)}
    for _ in range(reps):  # no warm-up: start-up is outside the window already
        for impl in runs:
            if impl in LOOPS:
                runs[impl].append(measure(ctx, LOOPS[impl], rate, min(seconds, BASELINE_SECONDS)))
            else:
                runs[impl].append(measure(ctx, impl, rate, seconds))
    floor = {
        kind: statistics.median(1000 * r["cpu"] / r["records"] for r in runs[label])
        for label, kind in LOOPS.items()
    }
    results = []
    for impl, got in runs.items():
        per_k = [1000 * r["cpu"] / r["records"] for r in got]
        user = statistics.median(r["user"] / r["cpu"] for r in got if r["cpu"])
        core = statistics.median(r["cpu"] / r["wall"] for r in got)
        note = f"user {user:.0%} of CPU; {core:.1%} of one core"
        results.append(Result(SECTION, case, impl, "CPU s/1,000 records", per_k, False, note))
        if impl in CLIENTS:
            net = [v - floor[BASELINE_OF[impl]] for v in per_k]
            results.append(Result(SECTION, case, impl, "net of pacing loop", net, False, note))
    return results


def _find(results: Sequence[Result], case: str, impl: str) -> Result | None:
    for r in results:
        if (r.case, r.impl, r.metric) == (case, impl, "net of pacing loop"):
            return r
    return None


def table(results: Sequence[Result]) -> str:
    rows = []
    for r in results:
        if r.section != SECTION or r.metric != "CPU s/1,000 records":
            continue
        net = _find(results, r.case, r.impl)
        ours = _find(results, r.case, OURS)
        ratio = ""
        peer = r.impl not in (OURS, OURS_BIG)
        if net is not None and ours is not None and peer and ours.median > 0:
            ratio = f"{net.median / ours.median:.2f}x"
        rows.append(
            [
                r.case,
                r.impl,
                f"{r.median * 1000:.1f} ms ({r.lo * 1000:.1f}-{r.hi * 1000:.1f})",
                "" if net is None else f"{net.median * 1000:.1f} ms",
                r.note,
                ratio,
            ]
        )
    header = [
        "case",
        "client",
        "CPU per 1,000 records",
        "net of the pacing loop",
        "notes",
        "kafka_asgi vs it (net)",
    ]
    return markdown_table(header, rows, right=2)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    parser.add_argument("--worker", nargs=5, metavar=("IMPL", "BOOTSTRAP", "TOPIC", "N", "RATE"))
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.worker:
        impl, bootstrap, topic, n, rate = args.worker
        print(json.dumps(_worker(impl, bootstrap, topic, int(n), float(rate))))
        return
    with broker() as b:
        ctx = Context(False, b.bootstrap, b.kafka_version, 0, args.reps)
        try:
            results = run(ctx, args.rate, args.seconds, args.reps)
        finally:
            delete_topics(ctx.bootstrap, ctx.topics)
    print(table(results))


if __name__ == "__main__":
    main(sys.argv[1:])
