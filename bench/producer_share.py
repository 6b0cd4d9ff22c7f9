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

    python -m bench.producer_share --app [--records 20000] [--reps 5] [--rounds 3]

The same share inside an app: bench/middleware.py's minimal Starlette app with the
access-log middleware, called in process with a loop turn per request, the thread's
CPU time per request, each variant in a fresh process of its own (variants sharing a
process disturb each other's memory) pinned to the first CPU this one may use (where
``os.sched_setaffinity`` allows and there are two), ``--rounds`` times in turn:

- ``no-op producer``: the middleware's own work;
- ``stand-in, encoding``: a stand-in that keeps each event's value and time, and every
  239 events (a batch's size in the default run) encodes them with the producer's
  encoder, keeping the batch until the next: the producer's buffering and encoding,
  no network;
- ``producer, batch_num=2000``: the producer on the local broker, batches ten times
  as large as the default's (the per-batch costs a tenth);
- ``producer``: the producer on the local broker with its defaults (``--batch-num``
  sets its ``batch_num``);
- ``no-op producer, broker loaded``: the no-op producer again, while another process
  pinned to the second CPU sends 300-byte records to the broker at ``--load-rate``
  records/s (50,000 by default, about this app's request rate): what the broker's
  work alone costs this thread.

    python -m bench.producer_share --app --instructions [--records 2000]

The same variants (but the loaded one) counted by valgrind instead of timed: each
runs under ``valgrind --tool=cachegrind`` with ``--records`` and three times as many
requests after a warm-up, and the difference over the extra requests is its
instructions per request, a figure that does not move with the machine's load.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
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


APP_VARIANTS = {
    "noop": "no-op producer",
    "encoding": "stand-in, encoding",
    "big": "producer, batch_num=2000",
    "producer": "producer",
    "loaded": "no-op producer, broker loaded",
}
WARM_UP = 300  # requests before the counted ones (--instructions)


class _EncodingStandIn:
    """Keeps each value and its time; every ``batch`` events encodes them, as the
    producer's flusher would, and lets them go."""

    def __init__(self, batch: int) -> None:
        from kafka_asgi.protocol.records import encode_batch_columns

        self.encode = encode_batch_columns
        self.last = b""
        self.values: list[bytes] = []
        self.stamps: list[int] = []
        self.batch = batch

    def send_nowait(self, topic: str, value: bytes, *args: object) -> None:
        self.values.append(value)
        self.stamps.append(time.time_ns())
        if len(self.values) >= self.batch:
            # Kept until the next one, as the producer keeps a batch until acknowledged.
            self.last = self.encode(self.values, self.stamps)
            self.values, self.stamps = [], []


async def _app_variant(
    bootstrap: str, topic: str, variant: str, n: int, reps: int, batch_num: int = 0
) -> float:
    """Median CPU µs per request of the middleware app with ``variant``'s producer."""
    import anyio.lowlevel

    from bench.middleware import _discard, _inprocess_apps, _NullProducer, _receive, _scope
    from kafka_asgi import Producer

    options = {"batch_num": 2000} if variant == "big" else {}
    if variant == "producer" and batch_num:
        options = {"batch_num": batch_num}
    async with Producer(bootstrap, **options) as live:
        await live.send(topic, b"warm-up")
        producer = {
            "noop": _NullProducer(),
            "encoding": _EncodingStandIn(239),
            "big": live,
            "producer": live,
            "loaded": _NullProducer(),
        }[variant]
        app = _inprocess_apps("Starlette", {"b": producer, "n": producer, "d": producer}, topic)[
            "b"
        ]
        checkpoint = anyio.lowlevel.checkpoint
        headers = [(b"host", b"127.0.0.1:8000")]
        if reps == 0:  # --instructions: WARM_UP requests, then n counted by valgrind
            for _ in range(WARM_UP + n):
                await app(_scope(headers), _receive, _discard)
                await checkpoint()
            await live.flush(timeout=60)
            stats = live.stats()
            if stats.failed or stats.delivered != stats.enqueued:
                raise RuntimeError(f"not every event acknowledged: {stats}")
            return 0.0
        samples = []
        for rep in range(reps + 1):  # the first one warms up
            start = time.thread_time()
            for _ in range(n):
                await app(_scope(headers), _receive, _discard)
                await checkpoint()
            if rep:
                samples.append((time.thread_time() - start) / n * 1e6)
        await live.flush(timeout=60)
        stats = live.stats()
        if stats.failed or stats.delivered != stats.enqueued:
            raise RuntimeError(f"not every event acknowledged: {stats}")
    return statistics.median(samples)


def _cpus() -> tuple[set[int], set[int]] | None:
    """(the app's CPU, the loader's): two of the CPUs this process may use, if it has two."""
    import os

    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[0]}, {cpus[1]}) if len(cpus) > 1 else None


def _app_worker_args(
    bootstrap: str, topic: str, variant: str, n: int, reps: int, batch_num: int
) -> list[str]:
    """The arguments of one in-app variant's process (``--app-worker``, parsed in main)."""
    return ["--app-worker", bootstrap, topic, variant, str(n), str(reps), str(batch_num)]


def _worker(args: list[str], cpu: set[int] | None) -> subprocess.Popen[str]:
    import os

    command = [sys.executable, "-m", "bench.producer_share", *args]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        preexec_fn=(lambda: os.sched_setaffinity(0, cpu)) if cpu else None,
    )


LOAD_SECONDS = 900  # the loader stops by itself after this, should its parent die


async def _load(bootstrap: str, topic: str, rate: int) -> None:
    """Send ``rate`` records/s (300 B, in 1 ms ticks) until killed (or LOAD_SECONDS);
    "ready" once the first is acknowledged."""
    import anyio

    from kafka_asgi import Producer

    values = [(b"%010d" % i).ljust(300, b"x") for i in range(10_000)]
    per_tick = max(1, rate // 1000)
    async with Producer(bootstrap, max_buffering=10 * rate) as p:
        await p.send(topic, b"warm-up")
        print("ready", flush=True)
        i = 0
        end = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < end:
            for _ in range(per_tick):
                p.send_nowait(topic, values[i % 10_000])
                i += 1
            await anyio.sleep(0.001)


def _app(records: int, reps: int, rounds: int, load_rate: int, batch_num: int) -> None:
    import json

    out: dict[str, list[float]] = {v: [] for v in APP_VARIANTS}
    cpus = _cpus()
    with broker() as b:
        topic = f"bench-producer-share-{uuid.uuid4().hex[:8]}"
        load_topic = topic + "-load"
        create_topics(b.bootstrap, [topic, load_topic], 1)
        try:
            for _ in range(rounds):
                for variant in APP_VARIANTS:
                    loader = None
                    if variant == "loaded":
                        loader = _worker(
                            ["--load-worker", b.bootstrap, load_topic, str(load_rate)],
                            cpus[1] if cpus else None,
                        )
                        assert loader.stdout is not None
                        if loader.stdout.readline().strip() != "ready":
                            loader.kill()
                            _, err = loader.communicate(timeout=60)
                            raise RuntimeError(f"the loader did not start: {err[-2000:]}")
                    try:
                        args = _app_worker_args(
                            b.bootstrap, topic, variant, records, reps, batch_num
                        )
                        proc = _worker(args, cpus[0] if cpus else None)
                        stdout, stderr = proc.communicate(timeout=600)
                    finally:
                        if loader is not None:
                            loader.kill()
                            loader.communicate(timeout=60)
                    if proc.returncode:
                        raise RuntimeError(f"{variant}: {stderr[-2000:]}")
                    out[variant].append(json.loads(stdout.strip().splitlines()[-1]))
        finally:
            delete_topics(b.bootstrap, [topic, load_topic])
    base = statistics.median(out["noop"])
    for variant, values in out.items():
        med = statistics.median(values)
        extra = "" if variant == "noop" else f", {med - base:+.2f} over the no-op producer"
        spread = f"{min(values):.2f}-{max(values):.2f}"
        print(f"{APP_VARIANTS[variant]}: {med:.2f} µs/request ({spread}){extra}")


def _instructions(records: int, batch_num: int) -> None:
    """Instructions per request of each variant (but the loaded one), by cachegrind."""
    import re
    import shutil

    from bench.common import BenchError

    if shutil.which("valgrind") is None:
        raise BenchError("valgrind is not installed (apt-get install valgrind)")

    def count(bootstrap: str, topic: str, variant: str, n: int) -> int:
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                "--cachegrind-out-file=/dev/null",
                sys.executable,
                "-m",
                "bench.producer_share",
                *_app_worker_args(bootstrap, topic, variant, n, 0, batch_num),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
        if proc.returncode or found is None:
            raise BenchError(f"{variant} under valgrind: {proc.stderr[-2000:]}")
        return int(found.group(1).replace(",", ""))

    per_request: dict[str, int] = {}
    with broker() as b:
        topic = f"bench-producer-share-{uuid.uuid4().hex[:8]}"
        create_topics(b.bootstrap, [topic], 1)
        try:
            for variant in APP_VARIANTS:
                if variant == "loaded":
                    continue
                low = count(b.bootstrap, topic, variant, records)
                high = count(b.bootstrap, topic, variant, 3 * records)
                per_request[variant] = (high - low) // (2 * records)
        finally:
            delete_topics(b.bootstrap, [topic])
    base = per_request["noop"]
    for variant, n in per_request.items():
        extra = "" if variant == "noop" else f", {n - base:+,} over the no-op producer"
        print(f"{APP_VARIANTS[variant]}: {n:,} instructions/request{extra}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.producer_share")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--app", action="store_true", help="the share inside an app")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-rate", type=int, default=50_000, help="records/s (--app)")
    parser.add_argument("--instructions", action="store_true", help="count, not time (--app)")
    parser.add_argument(
        "--batch-num", type=int, default=0, help="the producer variant's batch_num (--app)"
    )
    parser.add_argument("--app-worker", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--load-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import anyio

    if args.app_worker:
        import json

        bootstrap, topic, variant, n, reps, batch_num = args.app_worker
        print(
            json.dumps(
                anyio.run(
                    _app_variant, bootstrap, topic, variant, int(n), int(reps), int(batch_num)
                )
            )
        )
        return
    if args.load_worker:
        bootstrap, topic, rate = args.load_worker
        anyio.run(_load, bootstrap, topic, int(rate))
        return
    if args.instructions:
        _instructions(args.records or 2_000, args.batch_num)
        return
    args.records = args.records or 20_000
    if args.app:
        _app(args.records, args.reps or 5, args.rounds, args.load_rate, args.batch_num)
        return
    args.reps = args.reps or 7

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
