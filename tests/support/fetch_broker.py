"""A broker faked from bytes, above the network, for BasicConsumer's decoding tests:
it answers Fetch from in-memory logs of encoded batches."""

from __future__ import annotations

import struct
from typing import Any

import anyio
import anyio.lowlevel

from kafka_asgi.cluster.metadata import PartitionMetadata, TopicMetadata
from kafka_asgi.consumer import BasicConsumer
from kafka_asgi.protocol.messages.fetch import (
    FetchableTopicResponse,
    FetchRequest,
    FetchResponse,
    PartitionData,
)
from kafka_asgi.protocol.records import RecordTuple

MiB = 1 << 20
TS = 1_700_000_000_000
# A batch's base offset and lastOffsetDelta (Kafka's "Message format").
_BASE_OFFSET = struct.Struct(">q")
_LAST_OFFSET_DELTA = struct.Struct(">i")
_LAST_OFFSET_DELTA_AT = 23


def last_offset(batch: bytes) -> int:
    (base,) = _BASE_OFFSET.unpack_from(batch, 0)
    (delta,) = _LAST_OFFSET_DELTA.unpack_from(batch, _LAST_OFFSET_DELTA_AT)
    return int(base + delta)


class FakeBroker:
    """Leader 0 of every partition of topic 't', answering Fetch from in-memory logs
    of encoded batches: from the batch holding the fetch offset to the end, as a broker
    returns them (KIP-74, max_bytes aside), after ``stale`` (bytes a broker gone wrong
    puts first)."""

    def __init__(self, logs: dict[int, list[bytes]], stale: bytes = b"") -> None:
        self.logs = logs
        self.stale = stale
        self.fetches: list[dict[int, int]] = []

    async def leader_for(self, topic: str, partition: int) -> int:
        return 0

    async def refresh(self, topics: list[str]) -> None:
        pass

    async def fetch_metadata(self, topic: str) -> TopicMetadata:
        return TopicMetadata(topic, None, {p: PartitionMetadata(p, 0) for p in self.logs})

    async def send(self, node: int, request: Any, **kwargs: Any) -> FetchResponse:
        assert isinstance(request, FetchRequest)
        await anyio.lowlevel.checkpoint()  # as a real request does
        [topic] = request.topics
        self.fetches.append({p.partition: p.fetch_offset for p in topic.partitions})
        partitions = []
        for p in topic.partitions:
            log = self.logs[p.partition]
            records = self.stale + b"".join(b for b in log if last_offset(b) >= p.fetch_offset)
            end = last_offset(log[-1]) + 1 if log else 0
            partitions.append(
                PartitionData(partition_index=p.partition, high_watermark=end, records=records)
            )
        return FetchResponse(responses=[FetchableTopicResponse(topic="t", partitions=partitions)])


def consumer_with(broker: FakeBroker, max_decoded_bytes: int) -> BasicConsumer:
    consumer = BasicConsumer(
        "127.0.0.1:1", request_timeout=5, retry_backoff=0.01, max_decoded_bytes=max_decoded_bytes
    )
    consumer._client = broker  # type: ignore[assignment]
    return consumer


def values_of(*values: bytes) -> list[RecordTuple]:
    return [(None, v, None, TS) for v in values]
