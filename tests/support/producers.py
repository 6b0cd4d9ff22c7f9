"""A Producer over the in-memory FakeClient, and a collector of its reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from kafka_asgi.producer import Producer, RecordMetadata
from kafka_asgi.protocol.errors import KafkaError
from tests.support.fake_client import FakeClient


class Reports:
    """Collects error_handle and on_delivery calls."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, int, list[Any], KafkaError, bool]] = []
        self.deliveries: list[tuple[KafkaError | None, RecordMetadata, Any, Any, Any]] = []

    def error_handle(
        self, topic: str, partition: int, records: list[Any], error: KafkaError, retriable: bool
    ) -> None:
        self.errors.append((topic, partition, list(records), error, retriable))

    def on_delivery(
        self, error: KafkaError | None, meta: RecordMetadata, key: Any, value: Any, headers: Any
    ) -> None:
        self.deliveries.append((error, meta, key, value, headers))

    @property
    def failed_values(self) -> list[Any]:
        return [r[1] for e in self.errors for r in e[2]]

    @property
    def ok(self) -> list[Any]:
        return [d for d in self.deliveries if d[0] is None]

    @property
    def bad(self) -> list[Any]:
        return [d for d in self.deliveries if d[0] is not None]


def make(fake: FakeClient, reports: Reports | None = None, **options: Any) -> Producer:
    if reports is not None:
        options.setdefault("error_handle", reports.error_handle)
        options.setdefault("on_delivery", reports.on_delivery)
    options.setdefault("retry_backoff", 0.01)
    return Producer(client=fake, **options)


@asynccontextmanager
async def running(
    fake: FakeClient, reports: Reports | None = None, **options: Any
) -> AsyncIterator[Producer]:
    async with make(fake, reports, **options) as producer:
        yield producer
