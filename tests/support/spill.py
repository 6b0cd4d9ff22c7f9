"""Helpers for the disk spill tests against a real broker."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import anyio

from kafka_asgi.producer import Producer
from tests.support.brokers import topic_at
from tests.support.readers import read_back
from tests.support.timing import scaled


def make_topic(bootstrap: str, partitions: int = 3) -> str:
    return topic_at(bootstrap, "spill", partitions)


class Problems:
    """What error_handle received: (topic, partition, records, error)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list[Any], Any]] = []

    def __call__(self, topic: str, partition: int, records: list[Any], error: Any, r: bool) -> None:
        self.calls.append((topic, partition, list(records), error))

    def of(self, kind: type) -> list[tuple[str, int, list[Any], Any]]:
        return [c for c in self.calls if isinstance(c[3], kind)]

    def summary(self) -> Counter[str]:
        return Counter(repr(c[3])[:150] for c in self.calls)


async def settled(producer: Producer, total: int, within: float) -> None:
    """Wait until ``total`` records were delivered or reported and nothing waits."""
    with anyio.move_on_after(scaled(within)):
        while True:
            s = producer.stats()
            if (
                s.delivered + s.failed >= total
                and s.spill_queued == 0
                and s.buffered == 0
                and s.in_flight == 0
                and s.spill_backlog_bytes == 0
            ):
                return
            await anyio.sleep(0.2)
    raise AssertionError(f"not settled within {within}s: {producer.stats()}")


def values_by_key(bootstrap: str, topic: str, partitions: int, expected: int) -> Any:
    """(Counter of values, {key: [int(value) in partition order]}) of ``topic``."""
    read = read_back(bootstrap, topic, partitions, expected)
    values: Counter[bytes] = Counter()
    by_key: dict[bytes | None, list[int]] = defaultdict(list)
    for items in read.values():
        for _, key, value, _ in items:
            assert value is not None
            values[value] += 1
            by_key[key].append(int(value))
    return values, by_key
