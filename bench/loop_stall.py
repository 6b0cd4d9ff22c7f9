"""How long a producer holds the event loop while it compresses: the delay an
application's other tasks (its HTTP requests) see.

    python -m bench.loop_stall [--codec gzip] [--records 100000] [--size 300] [--reps 3]

Each repetition runs every variant in a fresh process, in turn, against the local
broker (one partition, a topic per run):

- ``kafka_asgi``: the producer as shipped (gzip batches from 16 KiB and zstd ones
  from 256 KiB compressed on worker threads, two at a time);
- ``kafka_asgi, compressing on the loop``: the same with that turned off (the
  sender's thresholds emptied), as before;
- ``aiokafka``: aiokafka's producer with its defaults and the codec (it compresses
  on the event loop, in 16 KiB batches by default).

A ticker task sleeps 1 ms at a time beside the send loop and records how late each
wake-up is (the time past its 1 ms): the stall an other task waits.  The send loop
hands over ``--records`` log-like values of ``--size`` bytes (bench/producer.py's),
letting the loop run every 100 records, waits for room when the buffer is full,
then flushes.  Printed per run and as medians: records/s and the ticker's lateness
(p50, p99, max) in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from bench.common import PYTHON, ROOT, BenchError, broker, create_topics, delete_topics, send_all

VARIANTS = ("kafka_asgi", "kafka_asgi, compressing on the loop", "aiokafka")


async def _run(bootstrap: str, topic: str, variant: str, codec: str, n: int, size: int) -> Any:
    import anyio
    import anyio.lowlevel

    from bench.producer import _values

    # Imported before the ticker starts: an import holds the loop too.
    if variant == "aiokafka":
        from aiokafka import AIOKafkaProducer
    else:
        import kafka_asgi.producer.sender as sender
        from kafka_asgi import Producer

        if variant != "kafka_asgi":
            sender._OFFLOAD_MIN.clear()
    values = _values(n, size)
    late: list[float] = []
    done = False

    async def ticker() -> None:
        while not done:
            before = time.perf_counter()
            await anyio.sleep(0.001)
            late.append(time.perf_counter() - before - 0.001)

    async def ours() -> float:
        async with Producer(bootstrap, compression=codec, wait_on_buffer_full=True) as p:
            await p.send(topic, b"warm-up")
            start = time.perf_counter()
            await send_all(p, topic, values, 100)
            await p.flush()
            elapsed = time.perf_counter() - start
            stats = p.stats()
        if stats.delivered != n + 1 or stats.failed:
            raise BenchError(f"{variant}: {stats.delivered - 1} of {n} delivered")
        return elapsed

    async def aiokafka() -> float:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec)
        await p.start()
        try:
            await p.send_and_wait(topic, b"warm-up")
            start = time.perf_counter()
            futures = []
            for i, value in enumerate(values):
                if i % 100 == 0:
                    await anyio.lowlevel.checkpoint()
                futures.append(await p.send(topic, value))
            await p.flush()
            elapsed = time.perf_counter() - start
            for f in futures:
                f.result()
        finally:
            await p.stop()
        return elapsed

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.05)
        elapsed = await (aiokafka() if variant == "aiokafka" else ours())
        done = True
    late.sort()
    return {
        "records_per_s": n / elapsed,
        "p50_ms": statistics.median(late) * 1e3,
        "p99_ms": late[int(len(late) * 0.99)] * 1e3,
        "max_ms": late[-1] * 1e3,
    }


def _line(run: dict[str, float]) -> str:
    return (
        f"{run['records_per_s'] / 1e3:.1f} k records/s, ticker late p50 {run['p50_ms']:.2f}"
        f" ms, p99 {run['p99_ms']:.2f} ms, max {run['max_ms']:.1f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loop_stall")
    parser.add_argument("--codec", default="gzip")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("BOOTSTRAP", "TOPIC", "VARIANT"))
    args = parser.parse_args(argv)
    if args.child:
        import anyio

        bootstrap, topic, variant = args.child
        result = anyio.run(_run, bootstrap, topic, variant, args.codec, args.records, args.size)
        print("BENCH_JSON " + json.dumps(result))
        return
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    with broker() as b:
        for rep in range(args.reps):
            for variant in VARIANTS:
                topic = f"bench-loop-stall-{uuid.uuid4().hex[:8]}"
                create_topics(b.bootstrap, [topic], 1)
                try:
                    cmd = [PYTHON, "-m", "bench.loop_stall", "--codec", args.codec]
                    cmd += ["--records", str(args.records), "--size", str(args.size)]
                    cmd += ["--child", b.bootstrap, topic, variant]
                    proc = subprocess.run(
                        cmd, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT
                    )
                finally:
                    delete_topics(b.bootstrap, [topic])
                line = next(
                    (x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")), None
                )
                if line is None:
                    raise BenchError(
                        f"{variant}, run {rep + 1} failed:\n{proc.stdout}{proc.stderr}"
                    )
                run = json.loads(line[len("BENCH_JSON ") :])
                runs[variant].append(run)
                print(f"run {rep + 1}, {variant}: {_line(run)}", flush=True)
    print(f"medians of {args.reps} ({args.records:,} x {args.size} B, {args.codec}):")
    for variant, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"  {variant}: {_line(med)}")


if __name__ == "__main__":
    sys.exit(main())
