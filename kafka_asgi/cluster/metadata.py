"""Immutable snapshots of what the cluster told us: brokers, topics, partitions, leaders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from kafka_asgi.protocol.messages.metadata import (
    MetadataResponse,
    MetadataResponseTopic,
)

__all__ = [
    "BrokerMetadata",
    "ClusterMetadata",
    "PartitionMetadata",
    "TopicMetadata",
    "topic_from_response",
]

_ZERO_UUID = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    partition: int
    leader: int
    """Node id of the leader, -1 while there is none (election in progress)."""
    leader_epoch: int = -1
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()
    error_code: int = 0


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    topic_id: uuid.UUID | None
    partitions: dict[int, PartitionMetadata] = field(default_factory=dict)
    error_code: int = 0
    is_internal: bool = False

    @property
    def partition_count(self) -> int:
        return len(self.partitions)

    def available_partitions(self) -> list[int]:
        """Partitions that have a leader right now, in partition order."""
        return sorted(p for p, meta in self.partitions.items() if meta.leader >= 0)


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    brokers: dict[int, BrokerMetadata] = field(default_factory=dict)
    topics: dict[str, TopicMetadata] = field(default_factory=dict)
    controller_id: int = -1
    cluster_id: str | None = None


def topic_from_response(topic: MetadataResponseTopic) -> TopicMetadata:
    partitions = {
        p.partition_index: PartitionMetadata(
            partition=p.partition_index,
            leader=p.leader_id,
            leader_epoch=p.leader_epoch,
            replicas=tuple(p.replica_nodes),
            isr=tuple(p.isr_nodes),
            error_code=p.error_code,
        )
        for p in sorted(topic.partitions, key=lambda p: p.partition_index)
    }
    return TopicMetadata(
        name=topic.name or "",
        topic_id=None if topic.topic_id == _ZERO_UUID else topic.topic_id,
        partitions=partitions,
        error_code=topic.error_code,
        is_internal=topic.is_internal,
    )


def brokers_from_response(response: MetadataResponse) -> dict[int, BrokerMetadata]:
    return {
        b.node_id: BrokerMetadata(node_id=b.node_id, host=b.host, port=b.port, rack=b.rack)
        for b in response.brokers
    }
