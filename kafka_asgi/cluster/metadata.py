"""Immutable snapshots of what the cluster told us: brokers, topics, partitions, leaders."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from kafka_asgi.protocol.errors import ProtocolError
from kafka_asgi.protocol.messages.metadata import (
    MetadataResponse,
    MetadataResponseTopic,
)

__all__ = [
    "BrokerMetadata",
    "ClusterMetadata",
    "PartitionMetadata",
    "TopicMetadata",
    "check_topic",
    "topic_from_response",
]

_ZERO_UUID = uuid.UUID(int=0)
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def check_topic(topic: object) -> str:
    """A topic name Kafka accepts (1 to 249 of ``[a-zA-Z0-9._-]``, not '.' or '..')."""
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")
    if not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise ValueError(
            f"invalid topic name {topic!r}: 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'"
        )
    return topic


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
    """The cluster view of one topic of a Metadata response.

    Metadata from the wire is input: a topic's partitions must be numbered 0 to
    count-1, each once (the producer and consumer index partitions by number), or
    ProtocolError names the topic and the bad index.
    """
    count = len(topic.partitions)
    partitions: dict[int, PartitionMetadata] = {}
    for p in sorted(topic.partitions, key=lambda p: p.partition_index):
        index = p.partition_index
        if not 0 <= index < count or index in partitions:
            raise ProtocolError(
                f"Metadata response: topic {topic.name!r} has {count} partition(s) but "
                f"names partition {index}{' twice' if index in partitions else ''} "
                f"(expected 0 to {count - 1}, each once)"
            )
        partitions[index] = PartitionMetadata(
            partition=index,
            leader=p.leader_id,
            leader_epoch=p.leader_epoch,
            replicas=tuple(p.replica_nodes),
            isr=tuple(p.isr_nodes),
            error_code=p.error_code,
        )
    return TopicMetadata(
        name=topic.name or "",
        topic_id=None if topic.topic_id == _ZERO_UUID else topic.topic_id,
        partitions=partitions,
        error_code=topic.error_code,
        is_internal=topic.is_internal,
    )


def brokers_from_response(
    response: MetadataResponse, unusable: dict[int, str] | None = None
) -> dict[int, BrokerMetadata]:
    """The brokers of a Metadata response. One that cannot be connected to (a port
    outside 1..65535, an empty host) is left out, described in ``unusable`` by node
    id: a request for it fails with that description (KafkaClient), rather than the
    whole answer being refused (which kept every other leader stale as long as that
    one entry stayed)."""
    brokers: dict[int, BrokerMetadata] = {}
    for b in response.brokers:
        if not 1 <= b.port <= 65535 or not b.host:
            if unusable is not None:
                unusable[b.node_id] = (
                    f"broker {b.node_id} has address {b.host!r}:{b.port} (port must be"
                    " 1 to 65535, host non-empty)"
                )
            continue
        brokers[b.node_id] = BrokerMetadata(
            node_id=b.node_id, host=b.host, port=b.port, rack=b.rack
        )
    return brokers
