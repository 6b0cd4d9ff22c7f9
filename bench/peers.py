"""Tuned peers and uvloop: producer throughput with each peer configured as its own
docs advise for throughput, and with uvloop's event loop (issue 17, items 4 and 5).

    python -m bench --only tuned [--quick]       # the "tuned" section
    python -m bench --only uvloop [--quick]      # producer rows here, middleware rows
                                                 # in bench/saturation.py
    python -m bench.peers --records 300000 --partitions 3 [--loop uvloop]

One case: 100-byte log-like values (bench/producer.py's), acks=1, no compression, no
key, 3 partitions (each client's own partitioner for keyless records).  300,000
records per run (30,000 with --quick) for every client alike.

Untimed, for every client alike, before the clock starts: the interpreter and the
client's imports, the values, the client's start (connections, metadata), and one
record sent to *each* partition and acknowledged (every partition's leader known and
its connection up).  The timed window runs from the first send of the measured
records until the client reports the last one acknowledged (kafka_asgi its
``stats().delivered``, confluent-kafka its delivery reports, aiokafka and
kafka-python the futures of their ``send()``); a short count is an error.  Each run
in a fresh process on a fresh topic; the rows take turns within each repetition.

Tuned, as each client's docs advise for throughput (the ratios against defaults are
kept beside them):

- aiokafka: ``max_batch_size`` 1 MiB (default 16 KiB), ``linger_ms`` 5 (default 0);
- kafka-python: ``batch_size`` 1 MiB (default 16 KiB), ``linger_ms`` 5 (default 0);
- confluent-kafka: librdkafka's INTRODUCTION ("high throughput": larger batches
  through ``linger.ms``, ``batch.num.messages``, ``batch.size``) and Confluent's
  producer-throughput guide (``linger.ms`` 10-100, larger ``batch.size``):
  ``linger.ms`` 20 (default 5), ``batch.size`` 1 MiB (default 1,000,000 B),
  ``batch.num.messages`` 100,000 (default 10,000, so the size closes a batch).
  Compression and acks, also in that advice, are fixed by the case for everyone.

Besides records/s, records per CPU-second of the producing process (getrusage, every
thread, over the same window): the cost of the work, which other processes on a
shared machine hardly move.

kafka_asgi runs with its defaults (``batch_size`` 1 MiB, ``linger`` 0), its loop
letting the event loop run every 1,000 records, as in bench/producer.py.

Stability: the same case with fewer records (30,000 and 100,000) for kafka_asgi,
tuned aiokafka and confluent-kafka's defaults, to show how many records a run needs
before repetitions agree (the spread of each client's runs and of the paired ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Coroutine, Sequence
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
    human,
    markdown_table,
    ratio_table,
)
from bench.producer import DeliveryCount, _values, confluent_produce_all

TUNED_SECTION = "tuned"
UVLOOP_SECTION = "uvloop"
MIB = 1 << 20
PARTITIONS = 3
RECORDS, QUICK_RECORDS = 300_000, 30_000
STABILITY = (30_000, 100_000)  # besides RECORDS
QUICK_STABILITY = (10_000,)

# row label -> (client, its options)
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    OURS: (OURS, {}),
    "aiokafka (defaults)": ("aiokafka", {}),
    "aiokafka (tuned)": ("aiokafka", {"max_batch_size": MIB, "linger_ms": 5}),
    "confluent-kafka (defaults)": ("confluent-kafka", {}),
    "confluent-kafka (tuned)": (
        "confluent-kafka",
        {"linger.ms": 20, "batch.size": MIB, "batch.num.messages": 100_000},
    ),
    "kafka-python (defaults)": ("kafka-python", {}),
    "kafka-python (tuned)": ("kafka-python", {"batch_size": MIB, "linger_ms": 5}),
}
STABLE_ROWS = (OURS, "aiokafka (tuned)", "confluent-kafka (defaults)")
UVLOOP_ROWS = (OURS, "aiokafka (defaults)", "aiokafka (tuned)")


def case_name(n: int, partitions: int = PARTITIONS) -> str:
    return f"100 B, acks=1, none, {partitions} partitions, {n:,} records"


# ---------------------------------------------------------------------- workers


def _cpu() -> float:
    """This process's CPU seconds, every thread (librdkafka's, kafka-python's)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _ours(bootstrap: str, topic: str, n: int, partitions: int, options: Any) -> Any:
    import anyio.lowlevel

    from kafka_asgi import BufferFullError, Producer

    t0 = time.perf_counter()
    values = _values(n)
    async with Producer(bootstrap, required_acks=1, wait_on_buffer_full=True, **options) as p:
        for partition in range(partitions):
            await p.send(topic, b"warm-up", partition=partition)
        setup = time.perf_counter() - t0
        send_nowait = p.send_nowait
        checkpoint = anyio.lowlevel.checkpoint
        start, cpu0 = time.perf_counter(), _cpu()
        for i, value in enumerate(values):
            if i % 1000 == 0:
                await checkpoint()
            try:
                send_nowait(topic, value)
            except BufferFullError:
                await p.send_buffered(topic, value)
        await p.flush()
        elapsed, cpu = time.perf_counter() - start, _cpu() - cpu0
        stats = p.stats()
    acked = stats.delivered - partitions
    if acked != n or stats.failed:
        raise BenchError(f"kafka_asgi: {acked} of {n} acknowledged, {stats.failed} failed")
    return {"rate": n / elapsed, "setup": setup, "cpu_rate": n / cpu}


async def _aiokafka(bootstrap: str, topic: str, n: int, partitions: int, options: Any) -> Any:
    from aiokafka import AIOKafkaProducer

    t0 = time.perf_counter()
    values = _values(n)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, **options)
    await producer.start()
    try:
        for partition in range(partitions):
            await producer.send_and_wait(topic, b"warm-up", partition=partition)
        setup = time.perf_counter() - t0
        send = producer.send
        start, cpu0 = time.perf_counter(), _cpu()
        futures = [await send(topic, value) for value in values]
        results = await asyncio.gather(*futures, return_exceptions=True)
        elapsed, cpu = time.perf_counter() - start, _cpu() - cpu0
    finally:
        await producer.stop()
    acked = sum(1 for r in results if not isinstance(r, BaseException))
    if acked != n:
        errors = [r for r in results if isinstance(r, BaseException)][:3]
        raise BenchError(f"aiokafka: {acked} of {n} acknowledged: {errors}")
    return {"rate": n / elapsed, "setup": setup, "cpu_rate": n / cpu}


def _confluent(bootstrap: str, topic: str, n: int, partitions: int, options: Any) -> Any:
    from confluent_kafka import Producer

    report = DeliveryCount()

    t0 = time.perf_counter()
    values = _values(n)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "1", "on_delivery": report, **options}
    )
    for partition in range(partitions):
        producer.produce(topic, b"warm-up", partition=partition)
    if producer.flush(30) or report.acked != partitions:
        raise BenchError(
            f"confluent-kafka: warm-up not acknowledged ({report.acked}, {report.errors[:3]})"
        )
    setup = time.perf_counter() - t0
    report.acked = 0
    start, cpu0 = time.perf_counter(), _cpu()
    remaining = confluent_produce_all(producer, topic, values)
    elapsed, cpu = time.perf_counter() - start, _cpu() - cpu0
    if remaining or report.errors or report.acked != n:
        raise BenchError(
            f"confluent-kafka: {report.acked} of {n} acknowledged, errors {report.errors[:3]}"
        )
    return {"rate": n / elapsed, "setup": setup, "cpu_rate": n / cpu}


def _kafka_python(bootstrap: str, topic: str, n: int, partitions: int, options: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaProducer

    t0 = time.perf_counter()
    values = _values(n)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, **options)
    try:
        for partition in range(partitions):
            producer.send(topic, b"warm-up", partition=partition).get(timeout=30)
        setup = time.perf_counter() - t0
        send = producer.send
        start, cpu0 = time.perf_counter(), _cpu()
        futures = [send(topic, value) for value in values]
        producer.flush(timeout=120)
        elapsed, cpu = time.perf_counter() - start, _cpu() - cpu0
    finally:
        producer.close(timeout=10)
    acked = sum(1 for f in futures if f.succeeded())
    if acked != n:
        raise BenchError(f"kafka-python: {acked} of {n} acknowledged")
    return {"rate": n / elapsed, "setup": setup, "cpu_rate": n / cpu}


def run_async(main: Callable[[], Coroutine[Any, Any, Any]], loop: str) -> Any:
    """Run ``main()`` on asyncio's own loop or on uvloop's (uvloop imported only here)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def _worker(row: str, bootstrap: str, topic: str, n: int, partitions: int, loop: str) -> Any:
    client, options = ROWS[row]
    gc.collect()
    if client == OURS:
        return run_async(lambda: _ours(bootstrap, topic, n, partitions, options), loop)
    if client == "aiokafka":
        return run_async(lambda: _aiokafka(bootstrap, topic, n, partitions, options), loop)
    if client == "confluent-kafka":
        return _confluent(bootstrap, topic, n, partitions, options)
    if client == "kafka-python":
        return _kafka_python(bootstrap, topic, n, partitions, options)
    raise SystemExit(f"unknown row {row!r}")


def measure(
    ctx: Context, row: str, n: int, partitions: int = PARTITIONS, loop: str = "asyncio"
) -> dict[str, float]:
    """One run in a fresh interpreter on a fresh topic: records/s and untimed setup s."""
    topic = ctx.topic("tuned", partitions)
    try:
        cmd = [PYTHON, "-m", "bench.peers", "--worker", row, ctx.bootstrap, topic, str(n)]
        cmd += ["--partitions", str(partitions), "--loop", loop]
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        ctx.drop(topic)
    if proc.returncode != 0:
        raise BenchError(f"{row} ({loop}) failed:\n{proc.stderr[-2000:]}")
    data: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


# ---------------------------------------------------------------------- sections


def _rounds(
    ctx: Context, runs: Sequence[tuple[str, str, int, str]], partitions: int = PARTITIONS
) -> dict[tuple[str, str, int, str], list[dict[str, float]]]:
    """Every (case, row, n, loop) run once per repetition, taking turns."""
    out: dict[tuple[str, str, int, str], list[dict[str, float]]] = {r: [] for r in runs}
    for rep in range(ctx.warmup + ctx.reps):
        for key in runs:
            _case, row, n, loop = key
            got = measure(ctx, row, n, partitions, loop)
            if rep >= ctx.warmup:
                out[key].append(got)
    return out


def run_tuned(ctx: Context) -> list[Result]:
    """Default and tuned peers beside kafka_asgi; then the stability runs."""
    n = QUICK_RECORDS if ctx.quick else RECORDS
    runs = [(case_name(n), row, n, "asyncio") for row in ROWS]
    runs += [
        (case_name(m), row, m, "asyncio")
        for m in (QUICK_STABILITY if ctx.quick else STABILITY)
        for row in STABLE_ROWS
    ]
    got = _rounds(ctx, runs)
    results = []
    for (case, row, _n, _loop), samples in got.items():
        setup = statistics.median(s["setup"] for s in samples)
        note = f"{ROWS[row][1] or 'defaults'}; untimed setup {setup:.2f} s (median)"
        for metric, key in (("records/s", "rate"), ("records/CPU-s", "cpu_rate")):
            values = [s[key] for s in samples]
            results.append(Result(TUNED_SECTION, case, row, metric, values, note=note))
    return results


def run_uvloop(ctx: Context) -> list[Result]:
    """kafka_asgi and aiokafka on asyncio's loop and on uvloop, taking turns."""
    n = QUICK_RECORDS if ctx.quick else RECORDS
    runs = [(case_name(n), row, n, loop) for row in UVLOOP_ROWS for loop in ("asyncio", "uvloop")]
    got = _rounds(ctx, runs)
    return [
        Result(
            UVLOOP_SECTION,
            f"producer, {case}",
            f"{row}, {loop}",
            metric,
            [s[key] for s in samples],
        )
        for (case, row, _n, loop), samples in got.items()
        for metric, key in (("records/s", "rate"), ("records/CPU-s", "cpu_rate"))
    ]


def _spread(values: Sequence[float]) -> str:
    med = statistics.median(values)
    return f"{(max(values) - min(values)) / med:.0%}" if med else "-"


def tuned_table(results: Sequence[Result]) -> str:
    """The ratio table per record count, then the stability summary."""
    rows = [r for r in results if r.section == TUNED_SECTION]
    out = [ratio_table(rows)]
    by_case: dict[tuple[str, str], dict[str, Result]] = {}
    for r in rows:
        by_case.setdefault((r.metric, r.case), {})[r.impl] = r
    stab = []
    for (metric, case), impls in sorted(
        by_case.items(), key=lambda kv: (kv[0][0], _count(kv[0][1]))
    ):
        ours = impls.get(OURS)
        if ours is None:
            continue
        for peer in STABLE_ROWS[1:]:
            other = impls.get(peer)
            if other is None:
                continue
            paired = [a / b for a, b in zip(ours.samples, other.samples, strict=False) if b]
            stab.append(
                [
                    metric,
                    f"{_count(case):,}",
                    peer,
                    _spread(ours.samples),
                    _spread(other.samples),
                    f"{statistics.median(paired):.2f}x",
                    f"{min(paired):.2f}x - {max(paired):.2f}x",
                ]
            )
    if stab:
        header = [
            "metric",
            "records per run",
            "peer",
            "kafka_asgi spread",
            "peer spread",
            "paired ratio (median)",
            "paired ratio (min-max)",
        ]
        out.append(markdown_table(header, stab, right=3))
    return "\n\n".join(out)


def _count(case: str) -> int:
    return int(case.rsplit(", ", 1)[1].split()[0].replace(",", ""))


def uvloop_rows_table(results: Sequence[Result]) -> str:
    """Producer rows: each client on asyncio and on uvloop, and uvloop's gain."""
    rows = []
    for r in results:
        if r.section != UVLOOP_SECTION or not r.case.startswith("producer"):
            continue
        row, loop = r.impl.rsplit(", ", 1)
        gain = ""
        if loop == "uvloop":
            base = next(
                (
                    x
                    for x in results
                    if (x.case, x.impl, x.metric) == (r.case, f"{row}, asyncio", r.metric)
                ),
                None,
            )
            if base is not None:
                gain = f"{r.median / base.median - 1:+.1%}"
        cell = f"{human(r.median, r.metric)} ({human(r.lo, r.metric)}-{human(r.hi, r.metric)})"
        rows.append([r.case, row, loop, r.metric, cell, gain])
    header = ["case", "client", "loop", "metric", "median (min-max)", "uvloop vs asyncio"]
    return markdown_table(header, rows, 4)


# ---------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--worker", nargs=4, metavar=("ROW", "BOOTSTRAP", "TOPIC", "N"))
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    if args.worker:
        row, bootstrap, topic, n = args.worker
        print(json.dumps(_worker(row, bootstrap, topic, int(n), args.partitions, args.loop)))
        return
    with broker() as b:
        ctx = Context(False, b.bootstrap, b.kafka_version, 1, args.reps)
        try:
            got = _rounds(
                ctx,
                [
                    (case_name(args.records, args.partitions), row, args.records, args.loop)
                    for row in ROWS
                ],
                args.partitions,
            )
        finally:
            delete_topics(ctx.bootstrap, ctx.topics)
    results = [
        Result(TUNED_SECTION, case, row, metric, [s[key] for s in samples])
        for (case, row, _n, _loop), samples in got.items()
        for metric, key in (("records/s", "rate"), ("records/CPU-s", "cpu_rate"))
    ]
    print(ratio_table(results))


if __name__ == "__main__":
    main(sys.argv[1:])
