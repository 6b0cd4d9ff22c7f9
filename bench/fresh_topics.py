"""Fresh topics produced to at once, with 5 batches in flight per partition: how often
the first batch meets a broker still taking the partition over, and whether the
records stay in order (KAFKA-15591; README, "Idempotent pipelining").

    python -m bench.fresh_topics [--runs 150] [--backend asyncio|trio]

Each run makes a two-partition topic (kafka_asgi's ``create_topics``, which returns
once the metadata names the leaders) and at once sends 3,000 records of ~1 KiB through
an idempotent producer (acks=all, lz4, ``batch_size`` 4096, ``max_in_flight`` 5) on the
same client, then flushes. Counted per run: the errors batches were retried after (a
producer hook), and whether each partition's acknowledged records are in the order
they were handed over (offsets from ``on_delivery``). A broker whose metadata names
the leader before its replica manager has made the partition answers the first
Produce request NOT_LEADER_OR_FOLLOWER; then, before the partition waited for its
first acknowledgement, the next batch in flight was written, the first was refused
as OUT_OF_ORDER_SEQUENCE_NUMBER and, after an epoch bump, written behind it.
Against the local broker (scripts/kafka_local.py), or KAFKA_BOOTSTRAP_SERVERS.
"""

from __future__ import annotations

import argparse
import uuid
from collections import Counter
from typing import Any

import anyio

from bench.common import broker
from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.producer import Producer
from kafka_asgi.producer.hooks import ProducerHooks

RECORDS = 3000
PAD = b" " * 1000


class _Retries(ProducerHooks):
    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()

    def records_retried(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        self.errors[type(error).__name__] += 1


async def _run(bootstrap: str) -> tuple[Counter[str], int]:
    """One fresh topic: the retry errors seen, and how many partitions lost their order."""
    topic = f"fresh-{uuid.uuid4().hex[:10]}"
    hooks = _Retries()
    acked: dict[int, list[tuple[int, int]]] = {}

    def on_delivery(error: Any, meta: Any, key: Any, value: bytes, headers: Any) -> None:
        if error is None:
            acked.setdefault(meta.partition, []).append((meta.offset, int(value.split(b" ")[0])))

    async with KafkaClient(bootstrap) as client:
        await client.create_topics([(topic, 2)], timeout=30)
        async with Producer(
            client=client,
            required_acks=-1,
            enable_idempotence=True,
            max_in_flight=5,
            batch_size=4096,
            compression="lz4",
            flush_time=0.05,
            on_delivery=on_delivery,
        ) as producer:
            producer.add_hooks(hooks)
            for i in range(RECORDS):
                producer.send_nowait(topic, b"%d" % i + PAD)
            await producer.flush(timeout=60)
        await client.delete_topics([topic], timeout=30)
    disordered = 0
    for pairs in acked.values():
        # Offsets are -1 where the broker had a batch already (a duplicate): left out.
        ids = [i for offset, i in sorted(pairs) if offset >= 0]
        disordered += ids != sorted(ids)
    return hooks.errors, disordered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fresh topics, 5 batches in flight at once")
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args(argv)
    with broker() as kafka:

        async def all_runs() -> tuple[Counter[str], int, int]:
            errors: Counter[str] = Counter()
            met = disordered_runs = 0
            for n in range(args.runs):
                seen, disordered = await _run(kafka.bootstrap)
                errors.update(seen)
                met += bool(seen)
                disordered_runs += bool(disordered)
                if seen or disordered:
                    print(f"run {n}: retried after {dict(seen)}; out of order: {disordered}")
            return errors, met, disordered_runs

        errors, met, disordered_runs = anyio.run(all_runs, backend=args.backend)
    print(
        f"{args.runs} fresh topics ({args.backend}, Kafka {kafka.kafka_version}):"
        f" {met} with a retry ({dict(errors) or 'none'});"
        f" {disordered_runs} with a partition out of order"
    )
    return 1 if disordered_runs else 0


if __name__ == "__main__":
    raise SystemExit(main())
