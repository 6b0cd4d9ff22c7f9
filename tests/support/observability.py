"""A stand-in producer for the hooks' unit tests: counts what the hooks are told, the
way the real producer's stats() does, so the tests can compare the two."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from kafka_asgi.producer import ProducerStats
from kafka_asgi.producer.hooks import ProduceRequestInfo, ProducerHooks, combine, without


@dataclass(eq=False)
class FakeProducer:
    hooks: ProducerHooks | None = None
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    buffered: int = 0
    in_flight: int = 0
    bytes_sent: int = 0
    batches_sent: int = 0
    spilled: int = 0
    throttle_time_ms: int = 0  # what its client's brokers asked, all request kinds
    client: Any = None  # the client it sends through; None: one of its own (itself)

    def __post_init__(self) -> None:
        self.options = SimpleNamespace(max_buffering=1000)
        if self.client is None:
            self.client = self

    def add_hooks(self, hooks: ProducerHooks) -> None:
        self.hooks = combine(self.hooks, hooks)

    def remove_hooks(self, hooks: ProducerHooks) -> None:
        self.hooks = without(self.hooks, hooks)

    def stats(self) -> ProducerStats:
        return ProducerStats(
            enqueued=self.delivered + self.failed + self.buffered + self.in_flight,
            delivered=self.delivered,
            failed=self.failed,
            retried=self.retried,
            buffered=self.buffered,
            in_flight=self.in_flight,
            bytes_sent=self.bytes_sent,
            batches_sent=self.batches_sent,
            last_error=None,
            throttle_time_ms=self.throttle_time_ms,
            spilled=self.spilled,
        )

    # What the real producer does at these points, hooks included.

    def request(self, info: ProduceRequestInfo, error: BaseException | None = None) -> None:
        assert self.hooks is not None
        token = self.hooks.request_started(info)
        self.hooks.request_finished(token, info, error)
        for p in info.partitions:
            if error is None and p.error_code == 0:
                self.delivered += p.records
                self.bytes_sent += p.size
                self.batches_sent += 1
                self.hooks.batch_delivered(p.topic, p.partition, p.records, p.size)

    def fail(self, topic: str, records: int, error: BaseException) -> None:
        assert self.hooks is not None
        self.failed += records
        self.hooks.records_failed(topic, 0, records, error)

    def retry(self, topic: str, records: int, error: BaseException) -> None:
        assert self.hooks is not None
        self.retried += records
        self.hooks.records_retried(topic, 0, records, error)


def run_send(
    producer: FakeProducer, topic: str, metadata: Any, error: BaseException | None
) -> None:
    assert producer.hooks is not None
    token = producer.hooks.send_started(topic, None)
    producer.hooks.send_finished(token, metadata, error)
