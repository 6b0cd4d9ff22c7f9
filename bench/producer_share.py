"""The producer's share of a web worker's CPU at one event per loop turn, split in
its hand-off and its background work (issue 17).

    python -m bench.producer_share [--records 20000] [--reps 7] [--size 300]

In one process and one event loop, three loops run in turn, ``--reps`` times each,
over ``--records`` iterations, and the thread's CPU time per iteration is taken:

- ``loop turn``: ``await anyio.lowlevel.checkpoint()`` alone (what an ASGI server
  pays between requests anyway);
- ``+ send_nowait, Kafka down``: a ``send_nowait`` of a ``--size``-byte record (each
  iteration its own value, made before the loop), then
  the turn, to a producer whose bootstrap has no listener: the hand-off and the
  buffering, no batch ever sent;
- ``+ send_nowait, Kafka up``: the same to a producer on the local broker, then a
  ``flush()`` at the end: everything the producer does for its records, batches,
  requests and responses included.

Printed: each loop's median (and range) in µs per iteration, and the differences:
the hand-off (down minus turn) and the background work (up minus down).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

from bench.common import broker, create_topics, delete_topics, free_port

LOOPS = ("loop turn", "+ send_nowait, Kafka down", "+ send_nowait, Kafka up")


async def _measure(
    bootstrap: str, topic: str, n: int, reps: int, size: int
) -> dict[str, list[float]]:
    import logging

    import anyio
    import anyio.lowlevel

    from kafka_asgi import Producer

    logging.getLogger("kafka_asgi").setLevel(logging.CRITICAL)  # the down one reports
    # Distinct values, as a web worker's events are (one object sent over and over
    # stays in the cache and measured about half a microsecond less a record).
    pool = [(b"%010d" % i).ljust(size, b"x")[:size] for i in range(n)]
    out: dict[str, list[float]] = {name: [] for name in LOOPS}
    checkpoint = anyio.lowlevel.checkpoint
    cpu = time.thread_time
    async with (
        Producer(
            f"127.0.0.1:{free_port()}", max_buffering=n * reps + 1, delivery_timeout=3600
        ) as down,
        Producer(bootstrap) as up,
    ):
        await up.send(topic, b"warm-up")
        for _ in range(reps):
            start = cpu()
            for _ in range(n):
                await checkpoint()
            out[LOOPS[0]].append((cpu() - start) / n * 1e6)
            send = down.send_nowait
            start = cpu()
            for value in pool:
                send(topic, value)
                await checkpoint()
            out[LOOPS[1]].append((cpu() - start) / n * 1e6)
            send = up.send_nowait
            start = cpu()
            for value in pool:
                send(topic, value)
                await checkpoint()
            await up.flush()
            out[LOOPS[2]].append((cpu() - start) / n * 1e6)
        stats = up.stats()
        if stats.delivered != n * reps + 1 or stats.failed:
            raise RuntimeError(f"Kafka up: not every record delivered: {stats}")
        # The down producer's records are reported when it closes (close_timeout).
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.producer_share")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--size", type=int, default=300)
    args = parser.parse_args(argv)
    import anyio

    with broker() as b:
        topic = f"bench-producer-share-{uuid.uuid4().hex[:8]}"
        create_topics(b.bootstrap, [topic], 1)
        try:
            out = anyio.run(_measure, b.bootstrap, topic, args.records, args.reps, args.size)
        finally:
            delete_topics(b.bootstrap, [topic])
    med = {name: statistics.median(v) for name, v in out.items()}
    for name, values in out.items():
        print(f"{name}: {med[name]:.2f} µs/iteration ({min(values):.2f}-{max(values):.2f})")
    print(f"hand-off and buffering: {med[LOOPS[1]] - med[LOOPS[0]]:+.2f} µs/record")
    background = med[LOOPS[2]] - med[LOOPS[1]]
    print(f"background work (batches, requests, responses): {background:+.2f} µs/record")


if __name__ == "__main__":
    sys.exit(main())
