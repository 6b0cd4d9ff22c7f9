"""The fault benchmark: the leader of a busy partition is killed while each client sends.

    python -m bench.failover [--rate 500] [--seconds 12] [--kill-at 3]

Starts its own three-broker cluster (scripts/kafka_local.py --nodes 3, on free
ports, removed at the end). For each client (kafka_asgi, confluent-kafka, aiokafka),
with idempotence off and on, and acks=all: a fresh one-partition topic with three
replicas; the client sends ``--rate`` records a second for ``--seconds``; ``--kill-at``
seconds in, the partition's leader is killed with SIGKILL (then started again for the
next case). Afterwards the log is read back (confluent-kafka's consumer, independent
of ours) and compared with what the client reported:

- stall: the longest time between two acknowledgements while the client sent;
- acked / failed: records the client reported delivered / failed (none unreported:
  a record neither acknowledged nor reported by the end counts as "unreported");
- lost: acknowledged but not in the log;
- duplicated: records in the log more than once.

Timings depend on the machine's load (printed with the table): the broker notices the
dead leader after broker.session.timeout.ms (6 s in this harness), which bounds every
client's stall from below.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine, markdown_table, peer_versions, source_version

CLIENTS = ("kafka_asgi", "confluent-kafka", "aiokafka")
PEERS = ("aiokafka", "confluent-kafka", "librdkafka")


def _harness() -> Any:
    spec = importlib.util.spec_from_file_location(
        "kafka_local", ROOT / "scripts" / "kafka_local.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_local"] = module
    spec.loader.exec_module(module)
    return module


def _free_base(count: int = 14) -> int:
    for _ in range(200):
        base = random.randrange(20000, 30000)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


@dataclass
class Run:
    client: str
    idempotent: bool
    sent: int = 0
    acked: dict[int, float] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    kill_at: float = 0.0
    start: float = 0.0
    end: float = 0.0
    log: Counter[int] = field(default_factory=Counter)

    def ack(self, ident: int) -> None:
        self.acked[ident] = time.monotonic()

    def fail(self, ident: int, error: object) -> None:
        self.failed[ident] = type(error).__name__

    @property
    def stall(self) -> float:
        times = sorted([self.start, *self.acked.values(), self.end])
        times = [t for t in times if self.start <= t <= self.end]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    @property
    def lost(self) -> int:
        return sum(1 for i in self.acked if i not in self.log)

    @property
    def duplicated(self) -> int:
        return sum(n - 1 for n in self.log.values() if n > 1)

    @property
    def unreported(self) -> int:
        return self.sent - len(set(self.acked) | set(self.failed))

    def row(self) -> list[str]:
        errors = Counter(self.failed.values()).most_common(2)
        return [
            self.client,
            "on" if self.idempotent else "off",
            str(self.sent),
            f"{self.stall:.1f} s",
            str(len(self.acked)),
            str(len(self.failed)) + (f" ({', '.join(e for e, _ in errors)})" if errors else ""),
            str(self.unreported),
            str(self.lost),
            str(self.duplicated),
        ]


async def _pace(run: Run, rate: int, seconds: float, kill_at: float, send: Any, kill: Any) -> None:
    """Call ``send(ident)`` ``rate`` times a second for ``seconds``, catching up after
    a slow call; ``kill()`` (in a thread) ``kill_at`` seconds in."""
    run.start = time.monotonic()
    killed = False
    while True:
        now = time.monotonic() - run.start
        if now >= seconds:
            break
        due = min(int(now * rate), int(seconds * rate))
        while run.sent < due:
            await send(run.sent)
            run.sent += 1
        if not killed and now >= kill_at:
            await asyncio.to_thread(kill)
            run.kill_at = time.monotonic()
            killed = True
        await asyncio.sleep(0.005)


async def _ours(run: Run, bootstrap: str, topic: str, pace: Callable[..., Any]) -> None:
    from kafka_asgi.producer import Producer

    def on_delivery(error: Any, metadata: Any, key: Any, value: Any, headers: Any) -> None:
        ident = int(bytes(value))
        if error is None:
            run.ack(ident)
        else:
            run.fail(ident, error)

    async with Producer(
        bootstrap,
        required_acks=-1,
        enable_idempotence=run.idempotent,
        on_delivery=on_delivery,
        flush_time=0.01,
        delivery_timeout=60.0,
        request_timeout=10.0,
    ) as producer:

        async def send(ident: int) -> None:
            producer.send_nowait(topic, b"%d" % ident)

        await pace(send)
        run.end = time.monotonic()
        await producer.flush(timeout=90)


async def _confluent(run: Run, bootstrap: str, topic: str, pace: Callable[..., Any]) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": run.idempotent,
            "linger.ms": 5,
            "delivery.timeout.ms": 60000,
            "request.timeout.ms": 10000,
        }
    )

    def report(ident: int) -> Callable[[Any, Any], None]:
        def cb(err: Any, msg: Any) -> None:
            if err is None:
                run.ack(ident)
            else:
                run.fail(ident, err.name())

        return cb

    async def send(ident: int) -> None:
        producer.produce(topic, b"%d" % ident, on_delivery=report(ident))
        producer.poll(0)

    await pace(send)
    run.end = time.monotonic()
    deadline = time.monotonic() + 90
    while len(producer) and time.monotonic() < deadline:
        producer.poll(0.1)
        await asyncio.sleep(0)


async def _aiokafka(run: Run, bootstrap: str, topic: str, pace: Callable[..., Any]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=run.idempotent,
        linger_ms=5,
        request_timeout_ms=10000,
    )
    await producer.start()
    futures: list[asyncio.Future[Any]] = []
    try:

        async def send(ident: int) -> None:
            future = await producer.send(topic, b"%d" % ident)

            def done(f: asyncio.Future[Any], ident: int = ident) -> None:
                if f.cancelled():
                    run.fail(ident, "cancelled")
                elif f.exception() is not None:
                    run.fail(ident, f.exception())
                else:
                    run.ack(ident)

            future.add_done_callback(done)
            futures.append(future)

        await pace(send)
        run.end = time.monotonic()
        await asyncio.wait_for(producer.flush(), 90)
        await asyncio.wait(futures, timeout=30)
    finally:
        await producer.stop()


def _read_log(bootstrap: str, topic: str) -> Counter[int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    seen: Counter[int] = Counter()
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        consumer.assign([TopicPartition(topic, 0, 0)])
        read = 0
        deadline = time.monotonic() + 120
        while read < high and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=10000, timeout=1.0):
                if m.error() is None:
                    seen[int(m.value())] += 1
                read = max(read, m.offset() + 1)
    finally:
        consumer.close()
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kill the leader while each client sends")
    parser.add_argument("--rate", type=int, default=500, help="records per second")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--kill-at", type=float, default=3.0)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    args = parser.parse_args(argv)
    kafka_local = _harness()
    meta = machine()
    peers = peer_versions()
    state = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    cluster = kafka_local.LocalKafka(state_dir=state, base_port=_free_base(), nodes=3)
    print(f"starting a three-broker cluster ({state})...", file=sys.stderr)
    cluster.start(timeout=240.0)
    runs: list[Run] = []
    try:
        for idempotent in (False, True):
            for client in args.clients.split(","):
                run = Run(client, idempotent)
                topic = f"failover-{uuid.uuid4().hex[:8]}"
                _create(cluster.bootstrap, topic)
                leader = _leader_node(cluster.bootstrap, topic)

                def pace(send: Any, run: Run = run, leader: int = leader) -> Any:
                    return _pace(
                        run,
                        args.rate,
                        args.seconds,
                        args.kill_at,
                        send,
                        lambda: cluster.kill_node(leader),
                    )

                fn = {"kafka_asgi": _ours, "confluent-kafka": _confluent, "aiokafka": _aiokafka}
                print(f"{client}, idempotence {'on' if idempotent else 'off'}...", file=sys.stderr)
                asyncio.run(fn[client](run, cluster.bootstrap, topic, pace))
                cluster.start_node(leader, timeout=120.0)
                run.log = _read_log(cluster.bootstrap, topic)
                runs.append(run)
                print("  " + " | ".join(run.row()), file=sys.stderr)
    finally:
        cluster.stop(remove_data=True)
    header = [
        "client",
        "idempotence",
        "sent",
        "stall",
        "acked",
        "failed",
        "unreported",
        "lost",
        "dup",
    ]
    print(
        f"\nLeader of a one-partition topic (3 replicas, min.insync.replicas=2) killed"
        f" {args.kill_at:g} s into {args.seconds:g} s of {args.rate} records/s, acks=all;"
        f" Kafka {kafka_local.KAFKA_VERSION}, three KRaft nodes on one machine."
    )
    print(
        f"Measured {meta['date']} ({source_version()}) on {meta['cpu']},"
        f" {meta['cores']} cores, Python {meta['python']}; 1-minute load average"
        f" {meta['load']} when the run began (other work shares the machine)."
        f" Peers: {', '.join(f'{k} {v}' for k, v in peers.items() if k in PEERS)}.\n"
    )
    print(markdown_table(header, [r.row() for r in runs], right=2))
    print(
        "\nsent: records handed over while sending (a client whose send waits during the"
        " failover sends fewer); stall: longest time without an acknowledgement;"
        " lost: acknowledged but not in the log; dup: extra copies in the log."
    )
    return 0


def _create(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=10).topics.get(topic)
        if md is not None and md.partitions and len(md.partitions[0].isrs) == 3:
            if md.partitions[0].leader >= 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{topic}: not fully replicated within 60 s")


def _leader_node(bootstrap: str, topic: str) -> int:
    """The harness node (node.id - 1) leading partition 0."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic, timeout=10).topics[topic]
    return int(md.partitions[0].leader) - 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
