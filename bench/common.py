"""What every benchmark shares: timing, result rows, tables, the broker, topics.

A benchmark module exposes ``run(ctx: Context) -> list[Result]``; ``python -m bench``
calls them in turn and prints one table per section.  A Result holds every
repetition's figure (warm-ups are not kept), so the table can show the median and
the min-max spread, and the ratio of kafka_asgi's median to each peer's.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
OURS = "kafka_asgi"


class BenchError(RuntimeError):
    """A benchmark could not produce an honest figure (a short count, a dead peer...)."""


# ---------------------------------------------------------------------- results


@dataclass
class Result:
    """One measured figure: ``samples`` holds one value per repetition."""

    section: str  # "producer", "handoff", "middleware", "memory", "codec"
    case: str  # what was measured, e.g. "100 B, acks=1, none"
    impl: str  # who: "kafka_asgi", "aiokafka", "(b) kafka_asgi middleware", ...
    metric: str  # "records/s", "p99 µs", ...
    samples: list[float]
    higher_is_better: bool = True
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def lo(self) -> float:
        return min(self.samples)

    @property
    def hi(self) -> float:
        return max(self.samples)


def find(
    results: Sequence[Result], section: str, case: str, impl: str, metric: str
) -> Result | None:
    for r in results:
        if (r.section, r.case, r.impl, r.metric) == (section, case, impl, metric):
            return r
    return None


def advantage(ours: Result, other: Result) -> float:
    """How many times better ``ours`` is than ``other`` (>1: ours is better)."""
    a, b = ours.median, other.median
    if ours.higher_is_better:
        return a / b if b else float("inf")
    return b / a if a else float("inf")


def change(value: Result, base: Result) -> float:
    """Relative change of ``value`` against ``base`` (+0.03: 3 % more)."""
    return value.median / base.median - 1.0 if base.median else float("inf")


# ---------------------------------------------------------------------- timing


def repeat(fn: Callable[[], float], warmup: int, reps: int) -> list[float]:
    """Run ``fn`` ``warmup`` times (discarded), then ``reps`` times; its return values."""
    for _ in range(warmup):
        fn()
    return [fn() for _ in range(reps)]


def rate(fn: Callable[[], Any], items_per_call: int, budget: float) -> float:
    """Items per second of ``fn`` over a run of about ``budget`` seconds."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-9)
    calls = max(1, int(budget / once))
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return calls * items_per_call / (time.perf_counter() - start)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` (0-100) percentile of already sorted values (nearest rank)."""
    if not sorted_values:
        raise BenchError("percentile of no values")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# ---------------------------------------------------------------------- formatting


def human(value: float, metric: str) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if metric.endswith("/s"):
        if value >= 1e6:
            return f"{value / 1e6:.2f} M"
        if value >= 1e4:
            return f"{value / 1e3:.1f} k"
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> str:
    """A GitHub table whose columns are also aligned as plain text; columns from
    index ``right`` on are right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
            out.append(str(c).rjust(w) if i >= right else str(c).ljust(w))
        return "| " + " | ".join(out) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i >= right else ("-" * (w + 2)) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def ratio_table(results: Sequence[Result], reference: str = OURS) -> str:
    """One row per (case, metric, impl): median, spread, and how ``reference`` compares."""
    header = ["case", "implementation", "metric", "median", "min-max", f"{reference} vs it"]
    rows = []
    for r in results:
        ref = find(results, r.section, r.case, reference, r.metric)
        if ref is None or r.impl == reference:
            vs = ""
        else:
            vs = f"{advantage(ref, r):.2f}x"
        rows.append(
            [
                r.case,
                r.impl,
                r.metric,
                human(r.median, r.metric),
                f"{human(r.lo, r.metric)} - {human(r.hi, r.metric)}",
                vs,
            ]
        )
    return markdown_table(header, rows, right=3)


# ---------------------------------------------------------------------- context


@dataclass
class Context:
    """What a benchmark needs to know about this run."""

    quick: bool
    bootstrap: str
    kafka_version: str
    warmup: int
    reps: int
    topics: list[str] = field(default_factory=list)

    def topic(self, kind: str, partitions: int = 1) -> str:
        """A new topic for this run (deleted when the run ends)."""
        name = f"bench-{kind}-{uuid.uuid4().hex[:10]}"
        create_topics(self.bootstrap, [name], partitions)
        self.topics.append(name)
        return name

    def drop(self, topic: str) -> None:
        """Delete a topic of this run now (a long run would otherwise fill the disk)."""
        delete_topics(self.bootstrap, [topic])
        if topic in self.topics:
            self.topics.remove(topic)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "load": round(load, 2),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": model,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def source_version() -> str:
    """The commit measured, and whether kafka_asgi/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "kafka_asgi"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    return f"commit {head}" + (" with uncommitted changes in kafka_asgi/" if dirty else "")


def peer_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in (
        "kafka-asgi",
        "aiokafka",
        "confluent-kafka",
        "kafka-python",
        "uvicorn",
        "starlette",
        "fastapi",
        "httpx",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    with contextlib.suppress(Exception):
        import confluent_kafka

        out["librdkafka"] = confluent_kafka.libversion()[0]
    return out


# ---------------------------------------------------------------------- broker


@dataclass
class Broker:
    bootstrap: str
    kafka_version: str
    started_here: bool
    description: str = "scripts/kafka_local.py: one KRaft node, PLAINTEXT on loopback"


def _kafka_local(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(ROOT / "scripts" / "kafka_local.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def broker() -> Iterator[Broker]:
    """The broker to measure against: KAFKA_BOOTSTRAP_SERVERS, else the local one
    (scripts/kafka_local.py), reused when it runs, else started and stopped here."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        version = os.environ.get("KAFKA_VERSION", "unknown")
        yield Broker(external, version, False, f"KAFKA_BOOTSTRAP_SERVERS={external}")
        return
    status = _kafka_local("status", timeout=60)
    if status.returncode == 0:
        info = json.loads(status.stdout)
        yield Broker(info["plaintext"], info.get("kafka_version", "unknown"), False)
        return
    print("starting the local Kafka broker (scripts/kafka_local.py start)...", file=sys.stderr)
    started = _kafka_local("start", timeout=300)
    if started.returncode != 0:
        raise BenchError(f"could not start the local broker:\n{started.stderr}")
    info = json.loads(started.stdout)
    try:
        yield Broker(info["plaintext"], info.get("kafka_version", "unknown"), True)
    finally:
        _kafka_local("stop", timeout=120)


async def send_all(
    producer: Any,
    topic: str,
    values: Sequence[bytes],
    yield_every: int,
    timestamp: int | None = None,
) -> None:
    """kafka_asgi's async send loop: ``send_nowait`` each value (``send_buffered`` when
    the buffer is full), the event loop let run every ``yield_every`` records."""
    import anyio.lowlevel

    from kafka_asgi import BufferFullError

    checkpoint = anyio.lowlevel.checkpoint
    send_nowait = producer.send_nowait
    for i, value in enumerate(values):
        if i % yield_every == 0:
            await checkpoint()
        try:
            if timestamp is None:
                send_nowait(topic, value)
            else:
                send_nowait(topic, value, timestamp=timestamp)
        except BufferFullError:
            await producer.send_buffered(topic, value, timestamp=timestamp)


def create_topics(bootstrap: str, names: Sequence[str], partitions: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
        operation_timeout=30,
        request_timeout=30,
    )
    for name, fut in futures.items():
        try:
            fut.result(timeout=60)
        except Exception as exc:
            raise BenchError(f"could not create topic {name}: {exc}") from exc
    # The leader must be known before a producer is timed: wait for metadata.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if all(
            n in md.topics
            and md.topics[n].error is None
            and len(md.topics[n].partitions) == partitions
            and all(p.leader >= 0 for p in md.topics[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.1)
    raise BenchError(f"topics {list(names)} have no leader after 30 s")


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    if not names:
        return
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    for fut in admin.delete_topics(list(names), operation_timeout=30).values():
        with contextlib.suppress(Exception):
            fut.result(timeout=60)


def end_offset(bootstrap: str, topic: str) -> int:
    """The end offset of ``topic``'s partition 0 (the access-log topics have one)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets"})
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    return int(high)


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def dump_json(path: Path, meta: dict[str, Any], results: Sequence[Result]) -> None:
    path.write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1) + "\n"
    )
