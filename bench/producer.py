"""Producer throughput and hand-off cost: kafka_asgi beside aiokafka, kafka-python and
confluent-kafka, against one broker in one run.

    python -m bench.producer [--quick]              # the standard cases (as python -m bench)
    python -m bench.producer --sizes 100 --acks all --codecs lz4 --partitions 1,4

The broker: KAFKA_BOOTSTRAP_SERVERS, else the local one (scripts/kafka_local.py,
127.0.0.1:9092), as ``python -m bench`` (which also calls :func:`run` and
:func:`run_handoff`).

Throughput ("producer" section): 100-byte and 1 KiB records (distinct values shaped
like JSON access-log events, made before the clock starts), acks=1 and acks=all, no
key, without and with lz4 compression, without idempotence unless the case says
"idempotent" (kafka_asgi's default would turn it on with acks=all: the case passes
False, as the peers' defaults have it off), each client with its defaults otherwise
(kafka-python sits out lz4: its codec needs the ``lz4`` package, not a dependency
here).  The full run measures every size x acks x codec on one partition, 100 B,
acks=1, uncompressed on four, and 1 KiB, acks=all, lz4 with every client's
idempotence on (``--idempotence`` for chosen cases; kafka-python sits out: its
idempotence is not measured here); --quick measures four of these cases.  Records per second
from the first send until every record is acknowledged, each producer counting its
own acknowledgements: kafka_asgi its
``stats().delivered``; confluent-kafka its delivery reports; aiokafka and
kafka-python the futures their ``send()`` returned.  A short count is an error.
kafka_asgi runs in async mode: ``send_nowait`` in a loop, ``await send_buffered``
when the buffer is full, then ``flush()``; the loop lets the event loop run every 1000
records (``await anyio.lowlevel.checkpoint()``), as confluent-kafka's loop calls
``poll(0)`` every 1000 records and as an ASGI server does between requests: the
producer's I/O runs on the event loop, and a loop that never yields leaves a request
half-written until the buffer fills.  For 100 B, acks=1, uncompressed, one partition,
the row "kafka_asgi, loop never yields" measures that loop too (only awaiting when
the buffer is full).  Every client first sends one record and
waits for it (connections and metadata ready), untimed.  Each measurement runs in a
fresh process; implementations take turns, repetition after repetition.

Hand-off cost ("handoff" section): the time of one call that hands a record over,
measured around each call with ``perf_counter_ns`` (its own cost, ~50-100 ns here,
included for everyone): kafka_asgi ``send_nowait``; confluent-kafka ``produce()``;
aiokafka ``await send()`` (returns a future, without waiting for the broker).  Calls
come in runs of 1000; between runs (untimed) each client's background work runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
    percentile,
    ratio_table,
)

VALUE_SIZE = 100
PEERS = ("aiokafka", "confluent-kafka", "kafka-python")
IMPLS = (OURS, *PEERS)
OURS_TIGHT = "kafka_asgi, loop never yields"
"""kafka_asgi driven by a loop that only awaits when the buffer is full (one case)."""
YIELD_EVERY = 1000
HANDOFF_IMPLS = (OURS, "confluent-kafka", "aiokafka")


_WORDS = (
    b"GET POST PUT /api/v1/items /api/v1/users /health orders cart checkout 200 201 204 "
    b"301 404 500 Mozilla/5.0 curl/8.5 python-httpx/0.28 127.0.0.1 10.0.3.17 gzip br "
    b"application/json text/html keep-alive session user_id trace span region eu-west-1"
).split()


def _pool() -> bytes:
    """1 MiB of log-like text: words of a small vocabulary in a fixed random order."""
    import random

    return b" ".join(random.Random(2024).choices(_WORDS, k=200_000))[: 1 << 20]


def _values(n: int, size: int = VALUE_SIZE) -> list[bytes]:
    """Distinct ``size``-byte values shaped like an application's access-log events
    (JSON; lz4 shrinks a batch of 100-byte ones about 2.7x).  Beyond 100 bytes, the
    event carries a window onto log-like text at a scattered offset (headers, user
    agents...), so lz4 shrinks those about 3x too rather than a padding pattern."""
    base = _events(n)
    if size <= VALUE_SIZE:
        return [v[:size] for v in base]
    pool = _pool()
    span = len(pool) - size
    extra = size - VALUE_SIZE
    out = []
    for i, v in enumerate(base):
        at = (i * 2_654_435_761) % span
        out.append(v + pool[at : at + extra])
    return out


def _events(n: int) -> list[bytes]:
    methods = (b"GET", b"POST", b"GET", b"PUT", b"GET", b"DELETE")
    out = []
    for i in range(n):
        event = b'{"ts":%d,"m":"%s","path":"/items/%d","status":%d,"ms":%d,"trace":"%016x"}' % (
            1_700_000_000_000 + i * 3,
            methods[i % 6],
            (i * 7919) % 100_000,
            404 if i % 17 == 0 else 200,
            (i * 31) % 250,
            (i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF,
        )
        out.append(event.ljust(VALUE_SIZE)[:VALUE_SIZE])
    return out


def _counts(quick: bool, size: int = VALUE_SIZE) -> dict[str, int]:
    """Records per measurement: enough for a second or more of the fast clients."""
    fast, slow = (200_000, 30_000) if quick else (500_000, 60_000)
    if size > VALUE_SIZE:  # 1 KiB records: about half the records per second
        fast, slow = fast // 2, slow // 2
    return {
        OURS: fast,
        OURS_TIGHT: fast,
        "confluent-kafka": fast,
        "aiokafka": slow,
        "kafka-python": slow,
    }


@dataclass(frozen=True)
class Case:
    """One throughput case."""

    size: int = VALUE_SIZE
    acks: str = "1"  # "1" or "all"
    codec: str = "none"
    partitions: int = 1
    idempotent: bool = False  # every client with its enable_idempotence on

    def __str__(self) -> str:
        size = f"{self.size} B" if self.size % 1024 else f"{self.size // 1024} KiB"
        many = "s" if self.partitions > 1 else ""
        idem = ", idempotent" if self.idempotent else ""
        return f"{size}, acks={self.acks}, {self.codec}, {self.partitions} partition{many}{idem}"


FULL_CASES = (
    *(
        Case(size, acks, codec)
        for size in (VALUE_SIZE, 1024)
        for acks in ("1", "all")
        for codec in ("none", "lz4")
    ),
    Case(VALUE_SIZE, "1", "none", 4),
    Case(1024, "all", "lz4", idempotent=True),
)
QUICK_CASES = (
    Case(),
    Case(1024, "all", "lz4"),
    Case(partitions=4),
    Case(1024, "all", "lz4", idempotent=True),
)


# ---------------------------------------------------------------------- workers (own process)


async def _ours_throughput(
    bootstrap: str, topic: str, n: int, case: Case, yield_every: int = YIELD_EVERY
) -> float:
    elapsed, _, _ = await ours_timed(bootstrap, topic, _values(n, case.size), case, yield_every)
    return n / elapsed


async def ours_timed(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    case: Case,
    yield_every: int = YIELD_EVERY,
) -> tuple[float, float, float]:
    """kafka_asgi's send loop: ``values`` handed over with ``send_nowait`` (the loop
    yielding every ``yield_every``), then flushed; every one must be acknowledged.
    Returns the window's wall seconds and the process's user and system CPU seconds
    (``resource.getrusage``), from the first send to the end of the flush."""
    import resource

    import anyio

    from kafka_asgi import BufferFullError, Producer

    async with Producer(
        bootstrap,
        required_acks=-1 if case.acks == "all" else 1,
        compression=case.codec,
        enable_idempotence=case.idempotent,
        wait_on_buffer_full=True,
    ) as producer:
        await producer.send(topic, b"warm-up")
        send_nowait = producer.send_nowait
        checkpoint = anyio.lowlevel.checkpoint
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for i, value in enumerate(values):
            if i % yield_every == 0:
                # The event loop runs the producer's I/O (as confluent-kafka's poll(0)
                # every 1000 records below serves its queue; an ASGI app yields
                # between requests anyway).
                await checkpoint()
            try:
                send_nowait(topic, value)
            except BufferFullError:
                await producer.send_buffered(topic, value)
        await producer.flush()
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        stats = producer.stats()
        await anyio.lowlevel.checkpoint()
    n = len(values)
    acked = stats.delivered - 1
    if acked != n or stats.failed:
        raise BenchError(f"kafka_asgi: {acked} of {n} acknowledged, {stats.failed} failed")
    return elapsed, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def _confluent_throughput(bootstrap: str, topic: str, n: int, case: Case) -> float:
    elapsed, _user, _system = confluent_timed(bootstrap, topic, _values(n, case.size), case)
    return n / elapsed


def confluent_timed(
    bootstrap: str, topic: str, values: Sequence[bytes], case: Case
) -> tuple[float, float, float]:
    """confluent-kafka's send loop (:func:`confluent_produce_all`) with its defaults and
    the case's settings; every value must be acknowledged.  Returns the window's wall
    seconds and the process's user and system CPU seconds, librdkafka's threads
    included, as :func:`ours_timed`."""
    import resource

    from confluent_kafka import Producer

    report = DeliveryCount()

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": case.acks,
            "compression.type": case.codec,
            "enable.idempotence": case.idempotent,
            "on_delivery": report,
        }
    )
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    report.acked = 0
    n = len(values)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    remaining = confluent_produce_all(producer, topic, values)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    if remaining or report.errors or report.acked != n:
        raise BenchError(
            f"confluent-kafka: {report.acked} of {n} acknowledged, errors {report.errors[:3]}"
        )
    return elapsed, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


class DeliveryCount:
    """A confluent-kafka ``on_delivery`` callback counting what was acknowledged."""

    def __init__(self) -> None:
        self.acked = 0
        self.errors: list[Any] = []

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.acked += 1
        else:
            self.errors.append(err)


def confluent_produce_all(producer: Any, topic: str, values: Sequence[bytes]) -> int:
    """Hand every value to a confluent-kafka producer (serving its queue when full),
    then flush: the records not delivered within 120 s."""
    produce, poll = producer.produce, producer.poll
    for i, value in enumerate(values):
        while True:
            try:
                produce(topic, value)
                break
            except BufferError:  # librdkafka's queue is full: serve it
                poll(0.001)
        if i % 1000 == 999:
            poll(0)
    remaining = producer.flush(120)
    return int(remaining)


async def _aiokafka_throughput(bootstrap: str, topic: str, n: int, case: Case) -> float:
    from aiokafka import AIOKafkaProducer

    values = _values(n, case.size)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all" if case.acks == "all" else 1,
        compression_type=None if case.codec == "none" else case.codec,
        enable_idempotence=case.idempotent,
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")
        send = producer.send
        start = time.perf_counter()
        futures = [await send(topic, value) for value in values]
        results = await asyncio.gather(*futures, return_exceptions=True)
        elapsed = time.perf_counter() - start
    finally:
        await producer.stop()
    acked = sum(1 for r in results if not isinstance(r, BaseException))
    if acked != n:
        raise BenchError(f"aiokafka: {acked} of {n} acknowledged")
    return n / elapsed


def _kafka_python_throughput(bootstrap: str, topic: str, n: int, case: Case) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaProducer

    values = _values(n, case.size)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all" if case.acks == "all" else 1,
        compression_type=None if case.codec == "none" else case.codec,
    )
    try:
        producer.send(topic, b"warm-up").get(timeout=30)
        send = producer.send
        start = time.perf_counter()
        futures = [send(topic, value) for value in values]
        producer.flush(timeout=120)
        elapsed = time.perf_counter() - start
    finally:
        producer.close(timeout=10)
    acked = sum(1 for f in futures if f.succeeded())
    if acked != n:
        raise BenchError(f"kafka-python: {acked} of {n} acknowledged")
    return n / elapsed


def _summary(samples: list[int]) -> dict[str, float]:
    samples.sort()
    return {"median": percentile(samples, 50) / 1000, "p99": percentile(samples, 99) / 1000}


async def _ours_handoff(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    import anyio.lowlevel

    from kafka_asgi import Producer

    values = _values(1000)
    samples: list[int] = []
    clock = time.perf_counter_ns
    async with Producer(bootstrap, required_acks=1, max_buffering=n + 2) as producer:
        await producer.send(topic, b"warm-up")
        send_nowait = producer.send_nowait
        for _ in range(n // 1000):
            for value in values:
                t0 = clock()
                send_nowait(topic, value)
                samples.append(clock() - t0)
            await anyio.lowlevel.checkpoint()  # the flusher and the connection work, untimed
        await producer.flush()
        if producer.stats().delivered != len(samples) + 1:
            raise BenchError("kafka_asgi: short count in the hand-off run")
    return _summary(samples)


def _confluent_handoff(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    from confluent_kafka import Producer

    acked = 0

    def report(err: Any, msg: Any) -> None:
        nonlocal acked
        acked += err is None

    producer = Producer({"bootstrap.servers": bootstrap, "acks": 1, "on_delivery": report})
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    values = _values(1000)
    samples: list[int] = []
    clock = time.perf_counter_ns
    produce = producer.produce
    for _ in range(n // 1000):
        for value in values:
            t0 = clock()
            produce(topic, value)
            samples.append(clock() - t0)
        producer.poll(0)
    producer.flush(60)
    if acked != len(samples) + 1:
        raise BenchError("confluent-kafka: short count in the hand-off run")
    return _summary(samples)


async def _aiokafka_handoff(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1)
    await producer.start()
    values = _values(1000)
    samples: list[int] = []
    futures = []
    clock = time.perf_counter_ns
    try:
        await producer.send_and_wait(topic, b"warm-up")
        for _ in range(n // 1000):
            for value in values:
                t0 = clock()
                future = await producer.send(topic, value)
                samples.append(clock() - t0)
                futures.append(future)
            await asyncio.sleep(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await producer.stop()
    if any(isinstance(r, BaseException) for r in results):
        raise BenchError("aiokafka: failures in the hand-off run")
    return _summary(samples)


def _worker(kind: str, impl: str, bootstrap: str, topic: str, n: int, case: Case) -> Any:
    gc.collect()
    if kind == "throughput":
        if impl == OURS:
            return asyncio.run(_ours_throughput(bootstrap, topic, n, case))
        if impl == OURS_TIGHT:
            return asyncio.run(_ours_throughput(bootstrap, topic, n, case, yield_every=n + 1))
        if impl == "confluent-kafka":
            return _confluent_throughput(bootstrap, topic, n, case)
        if impl == "aiokafka":
            return asyncio.run(_aiokafka_throughput(bootstrap, topic, n, case))
        if impl == "kafka-python":
            return _kafka_python_throughput(bootstrap, topic, n, case)
    elif kind == "handoff":
        if impl == OURS:
            return asyncio.run(_ours_handoff(bootstrap, topic, n))
        if impl == "confluent-kafka":
            return _confluent_handoff(bootstrap, topic, n)
        if impl == "aiokafka":
            return asyncio.run(_aiokafka_handoff(bootstrap, topic, n))
    raise SystemExit(f"unknown worker {kind} {impl}")


def _in_process(
    kind: str, impl: str, bootstrap: str, topic: str, n: int, case: Case | None = None
) -> Any:
    """Run one measurement in a fresh interpreter; its JSON result."""
    spec = json.dumps(asdict(case or Case()))
    proc = subprocess.run(
        [PYTHON, "-m", "bench.producer", "--worker", kind, impl, bootstrap, topic, str(n), spec],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"{impl} {kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _kafka_python_lz4() -> bool:
    """kafka-python's lz4 codec needs the lz4 package (not a dependency here)."""
    try:
        import lz4  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------- sections


def run(ctx: Context, cases: Sequence[Case] | None = None) -> list[Result]:
    """Throughput, records/s until all acknowledged, per implementation and case."""
    results: list[Result] = []
    for case in cases or (QUICK_CASES if ctx.quick else FULL_CASES):
        counts = _counts(ctx.quick, case.size)
        impls = [i for i in IMPLS if not (i == "kafka-python" and case.codec == "lz4")]
        if case.codec == "lz4" and _kafka_python_lz4():
            impls = list(IMPLS)
        if case.idempotent:  # kafka-python sits out: its idempotence is not measured here
            impls = [i for i in impls if i != "kafka-python"]
        if case == Case():
            impls.insert(1, OURS_TIGHT)
        samples: dict[str, list[float]] = {impl: [] for impl in impls}
        for rep in range(ctx.warmup + ctx.reps):
            for impl in impls:  # take turns: drift on a shared machine hits all alike
                topic = ctx.topic("producer", case.partitions)
                try:
                    value = _in_process(
                        "throughput", impl, ctx.bootstrap, topic, counts[impl], case
                    )
                finally:
                    ctx.drop(topic)
                if rep >= ctx.warmup:
                    samples[impl].append(float(value))
        for impl in impls:
            results.append(
                Result(
                    "producer",
                    str(case),
                    impl,
                    "records/s",
                    samples[impl],
                    note=f"{counts[impl]:,} records per measurement",
                )
            )
    return results


def run_handoff(ctx: Context) -> list[Result]:
    """Cost of one hand-off call: median and p99, µs."""
    n = 50_000 if ctx.quick else 200_000
    case = f"{VALUE_SIZE} B, acks=1"
    med: dict[str, list[float]] = {impl: [] for impl in HANDOFF_IMPLS}
    p99: dict[str, list[float]] = {impl: [] for impl in HANDOFF_IMPLS}
    topic = ctx.topic("handoff", 1)
    for rep in range(ctx.warmup + ctx.reps):
        for impl in HANDOFF_IMPLS:
            summary = _in_process("handoff", impl, ctx.bootstrap, topic, n)
            if rep >= ctx.warmup:
                med[impl].append(summary["median"])
                p99[impl].append(summary["p99"])
    results = []
    for impl in HANDOFF_IMPLS:
        results.append(Result("handoff", case, impl, "median µs", med[impl], False))
        results.append(Result("handoff", case, impl, "p99 µs", p99[impl], False))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.producer", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer records and repetitions")
    parser.add_argument("--sizes", help="record sizes in bytes, e.g. 100,1024")
    parser.add_argument("--acks", help="e.g. 1,all")
    parser.add_argument("--codecs", help="compression, e.g. none,lz4")
    parser.add_argument("--partitions", help="partition counts, e.g. 1,4")
    parser.add_argument(
        "--idempotence", action="store_true", help="the chosen cases with idempotence on"
    )
    parser.add_argument("--worker", nargs=6, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, impl, bootstrap, topic, n, spec = args.worker
        case = Case(**json.loads(spec))
        print(json.dumps(_worker(kind, impl, bootstrap, topic, int(n), case)))
        return
    cases: list[Case] | None = None
    chosen = any((args.sizes, args.acks, args.codecs, args.partitions))
    if args.idempotence and not chosen:
        parser.error(
            "--idempotence applies to cases chosen with --sizes, --acks, --codecs or --partitions"
        )
    if chosen:

        def items(text: str | None, default: str) -> list[str]:
            return [x.strip() for x in (text or default).split(",") if x.strip()]

        acks_list = items(args.acks, "1")
        for acks in acks_list:
            if acks not in ("1", "all"):
                parser.error(f"--acks: {acks!r} is not 1 or all")
            if args.idempotence and acks != "all":
                # Every client's idempotence needs acks=all: kafka_asgi would refuse
                # the producer mid-run.
                parser.error(f"--idempotence needs --acks all, not {acks!r}")
        cases = [
            Case(int(size), acks, codec, int(p), args.idempotence)
            for size in items(args.sizes, str(VALUE_SIZE))
            for acks in acks_list
            for codec in items(args.codecs, "none")
            for p in items(args.partitions, "1")
        ]
    warmup, reps = (1, 3) if args.quick else (1, 5)
    started = time.monotonic()
    with broker() as b:
        ctx = Context(args.quick, b.bootstrap, b.kafka_version, warmup, reps)
        try:
            results = run(ctx, cases) + run_handoff(ctx)
        finally:
            delete_topics(ctx.bootstrap, ctx.topics)
    print(
        f"Kafka {ctx.kafka_version} at {ctx.bootstrap}; {reps} repetitions after {warmup} "
        f"warm-up; {time.monotonic() - started:.0f} s\n"
    )
    print(ratio_table(results))


if __name__ == "__main__":
    main(sys.argv[1:])
