"""Memory: what one buffered 100-byte record costs while Kafka is down.

    python -m bench.memory [--quick]                    # this benchmark alone
    python -m bench.memory worker IMPL MODE N           # one measurement (a subprocess)

Each measurement is a fresh process: a producer pointed at a loopback port where
nothing listens, one record sent to create the topic's buffer, then the baseline;
then N records, each value a new 100-byte ``bytes`` object the caller drops at
once (as a request handler does), so the producer's references are all that keeps
them.  No await happens between the baseline and the measurement, so the flusher
cannot place, fail or drop any of them.

kafka_asgi is measured twice: resident set size (RSS, from /proc) and Python's
own allocations (tracemalloc, which sees every byte a Python object holds).
confluent-kafka keeps records in librdkafka's C queue, which tracemalloc cannot
see: RSS only.  aiokafka and kafka-python are absent: their ``send()`` waits for
the topic's metadata, so with Kafka down they buffer nothing.

"beyond payload" is per record minus the 100 bytes of the value; it includes the
33-byte header of the Python ``bytes`` object holding those 100 bytes.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.common import PYTHON, ROOT, BenchError, Context, Result, free_port

SECTION = "memory"
VALUE_SIZE = 100
TOPIC = "bench-memory"


def rss() -> int:
    """Resident bytes of this process (Linux /proc; elsewhere the peak RSS)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _value(i: int) -> bytes:
    return b"%0100d" % i


def _ours(mode: str, n: int) -> dict[str, Any]:
    import logging

    import anyio

    from kafka_asgi import Producer

    # Closing reports the records as undelivered: expected here, not worth a line.
    logging.getLogger("kafka_asgi").setLevel(logging.CRITICAL)

    async def measure() -> dict[str, Any]:
        import tracemalloc

        producer = Producer(f"127.0.0.1:{free_port()}", max_buffering=n + 1, close_timeout=0.0)
        async with producer:
            send = producer.send_nowait
            send(TOPIC, _value(0))
            gc.collect()
            if mode == "tracemalloc":
                tracemalloc.start()
                before = tracemalloc.get_traced_memory()[0]
            else:
                before = rss()
            for i in range(1, n + 1):
                send(TOPIC, _value(i))
            gc.collect()
            if mode == "tracemalloc":
                after = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
            else:
                after = rss()
            held = producer.stats().buffered
            if held != n + 1:
                raise BenchError(f"the producer holds {held} records, not {n + 1}")
        return {"bytes": after - before, "records": n}

    result: dict[str, Any] = anyio.run(measure)
    return result


def _confluent(mode: str, n: int) -> dict[str, Any]:
    from confluent_kafka import Producer

    if mode != "rss":
        raise BenchError("confluent-kafka is measured by RSS only (its queue is C memory)")
    producer = Producer(
        {
            "bootstrap.servers": f"127.0.0.1:{free_port()}",
            "queue.buffering.max.messages": n + 1,
            "queue.buffering.max.kbytes": 4 * 1024 * 1024,
            "message.timeout.ms": 600_000,
            "linger.ms": 5,
            "log_level": 0,
        }
    )
    produce = producer.produce
    produce(TOPIC, _value(0))
    producer.poll(0)
    time.sleep(0.2)  # librdkafka's threads have started and allocated their own state
    gc.collect()
    before = rss()
    for i in range(1, n + 1):
        produce(TOPIC, _value(i))
    gc.collect()
    after = rss()
    # len() counts librdkafka's queued requests too, not only records.
    held = len(producer)
    if held < n + 1:
        raise BenchError(f"confluent-kafka holds {held} records, not {n + 1}")
    producer.purge()
    return {"bytes": after - before, "records": n}


WORKERS = {"kafka_asgi": _ours, "confluent-kafka": _confluent}


def _spawn(impl: str, mode: str, n: int) -> float:
    out = subprocess.run(
        [PYTHON, "-m", "bench.memory", "worker", impl, mode, str(n)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line[len("BENCH_JSON ") :])
            per_record: float = data["bytes"] / data["records"]
            return per_record
    raise BenchError(f"memory worker {impl} {mode} {n} failed:\n{out.stdout}\n{out.stderr}")


def run(ctx: Context) -> list[Result]:
    counts = [50_000] if ctx.quick else [10_000, 50_000, 200_000]
    plan = [("kafka_asgi", "rss"), ("kafka_asgi", "tracemalloc"), ("confluent-kafka", "rss")]
    results: list[Result] = []
    for n in counts:
        samples: dict[tuple[str, str], list[float]] = {p: [] for p in plan}
        _spawn("kafka_asgi", "rss", min(n, 1000))  # warm the disk cache for imports
        for _ in range(ctx.reps):
            for impl, mode in plan:
                samples[(impl, mode)].append(_spawn(impl, mode, n))
        case = f"{n:,} records of {VALUE_SIZE} B, Kafka down"
        for (impl, mode), values in samples.items():
            results.append(
                Result(
                    SECTION, case, impl, f"bytes/record ({mode})", values, higher_is_better=False
                )
            )
            results.append(
                Result(
                    SECTION,
                    case,
                    impl,
                    f"beyond payload ({mode})",
                    [v - VALUE_SIZE for v in values],
                    higher_is_better=False,
                )
            )
    return results


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["worker"]:
        impl, mode, n = args[1], args[2], int(args[3])
        print("BENCH_JSON " + json.dumps(WORKERS[impl](mode, n)), flush=True)
        return
    from bench.__main__ import main as bench_main

    bench_main([*args, "--only", SECTION])


if __name__ == "__main__":
    main()
