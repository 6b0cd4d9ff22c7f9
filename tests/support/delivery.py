"""Bookkeeping for failover tests: what was handed to a producer, what it reported,
and what the topic's log holds in the end.

Record values are ``b"<id>"`` (a decimal id unique in the run); keys name the
stream a record belongs to, so the order per key can be checked on the log.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kafka_asgi.consumer import BasicConsumer


@dataclass
class Outcome:
    """What one producer said about each record, by id."""

    sent: dict[int, bytes | None] = field(default_factory=dict)
    acked: dict[int, tuple[int, int]] = field(default_factory=dict)
    failed: dict[int, BaseException] = field(default_factory=dict)
    # Monotonic time of each acknowledgement, in callback order.
    ack_times: list[float] = field(default_factory=list)
    # (time, partition) of each acknowledgement.
    ack_parts: list[tuple[float, int]] = field(default_factory=list)

    def handed(self, ident: int, key: bytes | None) -> None:
        self.sent[ident] = key

    def on_delivery(self, error: Any, metadata: Any, key: Any, value: Any, headers: Any) -> None:
        ident = int(bytes(value))
        if error is None:
            self.acked[ident] = (metadata.partition, metadata.offset)
            now = time.monotonic()
            self.ack_times.append(now)
            self.ack_parts.append((now, metadata.partition))
        else:
            self.failed[ident] = error

    @property
    def unreported(self) -> set[int]:
        return set(self.sent) - set(self.acked) - set(self.failed)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time between acknowledgements within [start, end]."""
        times = [start, *(t for t in self.ack_times if start <= t <= end), end]
        return max(b - a for a, b in itertools.pairwise(times))

    def first_ack_after(self, moment: float, partitions: set[int] | None = None) -> float | None:
        """Seconds from ``moment`` to the first acknowledgement after it (of one of
        ``partitions`` if given)."""
        for t, p in self.ack_parts:
            if t > moment and (partitions is None or p in partitions):
                return t - moment
        return None


@dataclass
class LogContent:
    """Every record of a topic: ids per partition in offset order, and their keys."""

    by_partition: dict[int, list[int]]
    keys: dict[int, bytes | None]

    @property
    def ids(self) -> Counter[int]:
        return Counter(i for ids in self.by_partition.values() for i in ids)

    def duplicates(self) -> list[int]:
        return sorted(i for i, n in self.ids.items() if n > 1)

    def order_broken(self) -> list[tuple[int, bytes | None]]:
        """(partition, key) pairs whose ids do not increase in offset order."""
        broken: list[tuple[int, bytes | None]] = []
        for partition, ids in self.by_partition.items():
            last: dict[bytes | None, int] = {}
            for ident in ids:
                key = self.keys.get(ident)
                if key is not None and last.get(key, -1) > ident:
                    broken.append((partition, key))
                last[key] = max(ident, last.get(key, -1))
        return broken


async def read_log(bootstrap: str, topic: str, partitions: int) -> LogContent:
    """Read every partition of ``topic`` from the start to its current end."""
    by_partition: dict[int, list[int]] = {p: [] for p in range(partitions)}
    keys: dict[int, bytes | None] = {}
    async with BasicConsumer(bootstrap) as consumer:
        async for record in consumer.follow(topic, stop_at_end=True, max_wait=0.2):
            ident = int(bytes(record.value or b"-1"))
            by_partition[record.partition].append(ident)
            keys[ident] = record.key
    return LogContent(by_partition, keys)
