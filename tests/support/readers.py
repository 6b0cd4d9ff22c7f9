"""Read what a producer wrote back with another client (confluent-kafka), and collect
the producer's per-record outcomes."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from kafka_asgi.producer import RecordMetadata
from kafka_asgi.protocol.errors import KafkaError
from tests.support.brokers import unique_name
from tests.support.timing import scaled

Read = tuple[int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]


def read_back(bootstrap: str, topic: str, partitions: int, expected: int) -> dict[int, list[Read]]:
    """Every record of ``topic`` as (offset, key, value, headers), per partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("reader"),
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    out: dict[int, list[Read]] = {p: [] for p in range(partitions)}
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        count = 0
        deadline = time.monotonic() + scaled(60)
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            messages = consumer.consume(num_messages=10000, timeout=0.5)
            if not messages:
                # After the expected count, wait a little for duplicates that would follow.
                if count >= expected:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 1.0:
                        break
                continue
            quiet_since = None
            for m in messages:
                assert m.error() is None, m.error()
                headers = tuple((k, v) for k, v in (m.headers() or []))
                out[m.partition()].append((m.offset(), m.key(), m.value(), headers))
                count += 1
    finally:
        consumer.close()
    return out


class Outcomes:
    """Per-record outcomes from on_delivery and error_handle."""

    def __init__(self) -> None:
        self.acked: dict[bytes, RecordMetadata] = {}
        self.failed: Counter[bytes] = Counter()
        self.acked_twice: list[bytes] = []
        self.handled: Counter[bytes] = Counter()
        self.errors: list[KafkaError] = []

    def on_delivery(
        self, error: KafkaError | None, meta: RecordMetadata, key: Any, value: Any, headers: Any
    ) -> None:
        if error is None:
            if value in self.acked:
                self.acked_twice.append(value)
            self.acked[value] = meta
        else:
            self.failed[value] += 1
            self.errors.append(error)

    def error_handle(
        self, topic: str, partition: int, records: list[Any], error: KafkaError, retriable: bool
    ) -> None:
        for record in records:
            self.handled[record[1]] += 1
