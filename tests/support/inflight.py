"""A producer hook that counts the batches of each partition in flight (Produce
requests started and not finished), and the most seen at once."""

from __future__ import annotations

from typing import Any

from kafka_asgi.producer.hooks import ProduceRequestInfo, ProducerHooks


class InFlightProbe(ProducerHooks):
    """Install with ``producer.add_hooks(probe)``; read ``peak`` afterwards."""

    def __init__(self) -> None:
        self.now: dict[tuple[str, int], int] = {}
        self.peak: dict[tuple[str, int], int] = {}
        self.requests = 0
        self.retried: list[BaseException] = []  # the errors batches were retried after

    def request_started(self, info: ProduceRequestInfo) -> Any:
        self.requests += 1
        for p in info.partitions:
            key = (p.topic, p.partition)
            n = self.now.get(key, 0) + 1
            self.now[key] = n
            if n > self.peak.get(key, 0):
                self.peak[key] = n
        return None

    def request_finished(
        self, token: Any, info: ProduceRequestInfo, error: BaseException | None
    ) -> None:
        for p in info.partitions:
            key = (p.topic, p.partition)
            self.now[key] -= 1

    def most(self) -> int:
        """The most batches one partition had in flight at once."""
        return max(self.peak.values(), default=0)

    def records_retried(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        self.retried.append(error)
