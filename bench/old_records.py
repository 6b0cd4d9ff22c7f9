"""Old records through an idempotent producer: what going one batch at a time costs
(README, "Idempotent pipelining and 1 KiB records"; kafka_asgi/producer/idempotence.py,
OLD_RECORDS_AFTER).

    python -m bench.old_records [--records 200000] [--reps 3]

The broker dates a producer's idleness from its records' timestamps, so a partition
whose acknowledged records are older than an hour goes one batch at a time. Each rep
sends ``--records`` records to a fresh one-partition topic (acks=all, idempotence,
``send_nowait`` with the loop let run every 1,000 records, then ``flush()``), for
three ages of timestamp, alternating their order between reps: none given (now,
``send_nowait``'s fast path), half an hour old (a timestamp given: the general path;
pipelined) and two hours old (the same path; one batch at a time). Cases: 100 B
uncompressed and 1 KiB lz4. Prints medians (min-max) of records/s and the ratio of
two hours to half an hour, the cost of one batch at a time.
Against the local broker (scripts/kafka_local.py), or KAFKA_BOOTSTRAP_SERVERS.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import anyio

from bench.common import BenchError, broker, create_topics, delete_topics, send_all
from bench.producer import _values
from kafka_asgi import Producer

AGES = {"now": None, "half an hour old": 1800, "two hours old": 7200}
CASES = [(100, "none"), (1024, "lz4")]


async def _run(
    bootstrap: str, topic: str, values: list[bytes], codec: str, age: int | None
) -> float:
    stamp = None if age is None else time.time_ns() // 1_000_000 - age * 1000
    async with Producer(
        bootstrap, required_acks=-1, compression=codec, wait_on_buffer_full=True
    ) as producer:
        await producer.send(topic, b"warm-up")
        start = time.perf_counter()
        await send_all(producer, topic, values, 1000, stamp)
        await producer.flush()
        elapsed = time.perf_counter() - start
        stats = producer.stats()
    if stats.delivered != len(values) + 1 or stats.failed:
        raise BenchError(f"{stats.delivered - 1} of {len(values)} acknowledged")
    return len(values) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.old_records")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    with broker() as kafka:
        print(f"Kafka {kafka.kafka_version} at {kafka.bootstrap}")
        for size, codec in CASES:
            values = _values(args.records, size)
            rates: dict[str, list[float]] = {name: [] for name in AGES}
            for rep in range(args.reps):
                order = list(AGES) if rep % 2 == 0 else list(AGES)[::-1]
                for name in order:
                    topic = f"old-records-{uuid.uuid4().hex[:8]}"
                    create_topics(kafka.bootstrap, [topic])
                    try:
                        rate = anyio.run(_run, kafka.bootstrap, topic, values, codec, AGES[name])
                    finally:
                        delete_topics(kafka.bootstrap, [topic])
                    rates[name].append(rate)
            medians = {name: statistics.median(v) for name, v in rates.items()}
            cells = [
                f"{name} {medians[name] / 1e3:.1f} k ({min(v) / 1e3:.1f} k - {max(v) / 1e3:.1f} k)"
                for name, v in rates.items()
            ]
            ratio = medians["two hours old"] / medians["half an hour old"]
            label = f"{size} B, {codec}"
            print(f"{label}: " + "; ".join(cells) + f"; two hours / half an hour {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
