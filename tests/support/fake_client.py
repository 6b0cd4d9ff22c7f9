"""An in-memory stand-in for KafkaClient, for the producer's logic above the network.

It keeps a log per partition (decoding the record batches the producer sends with
the real decoder), answers Produce and InitProducerId like a broker (including
KIP-98 duplicate detection by producer id and sequence), and lets a test script
failures: error codes per partition, exceptions per request (raised before or
after the batch is written), responses held back, topics without a leader.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio

from kafka_asgi.cluster.metadata import PartitionMetadata, TopicMetadata
from kafka_asgi.cluster.throttle import Throttles
from kafka_asgi.network.errors import ConnectError
from kafka_asgi.protocol.errors import KafkaError, UnknownTopicOrPartitionError
from kafka_asgi.protocol.messages import (
    DescribeProducersRequest,
    DescribeProducersResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
)
from kafka_asgi.protocol.messages.describe_producers import (
    PartitionResponse as DescribedPartition,
)
from kafka_asgi.protocol.messages.describe_producers import ProducerState as DescribedProducer
from kafka_asgi.protocol.messages.describe_producers import TopicResponse as DescribedTopic
from kafka_asgi.protocol.messages.produce import (
    PartitionProduceResponse,
    ProduceRequest,
    ProduceResponse,
    TopicProduceResponse,
)
from kafka_asgi.protocol.records import Record, decode_batches


@dataclass
class Stored:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int


@dataclass
class Fault:
    """What to do to the next request that matches."""

    error: KafkaError
    written: bool = False  # apply the request before raising (the response got lost)
    held: bool = False  # with a gate: raised once the gate opens, as responses are


@dataclass
class FakeClient:
    partitions: dict[str, int] = field(default_factory=dict)
    leaders: dict[tuple[str, int], int] = field(default_factory=dict)
    logs: dict[tuple[str, int], list[Stored]] = field(default_factory=dict)
    # error codes to answer per (topic, partition), consumed one per request
    codes: dict[tuple[str, int], deque[int]] = field(default_factory=dict)
    faults: deque[Fault] = field(default_factory=deque)
    pid_faults: deque[KafkaError] = field(default_factory=deque)
    gate: anyio.Event | None = None  # when set, Produce responses wait for it
    # With a gate: Produce requests wait for it, then fail with this, not written.
    gate_error: KafkaError | None = None
    hang: bool = False  # Produce requests never get an answer
    # when set, metadata, InitProducerId and DescribeProducers requests wait for it
    hold: anyio.Event | None = None
    metadata_error: KafkaError | None = None
    down: bool = False  # no broker reachable: every call raises ConnectError
    connect_failures: int = 0
    max_message_bytes: int = 10 * 1024 * 1024
    requests: list[ProduceRequest] = field(default_factory=list)
    batches: list[tuple[str, int, int]] = field(default_factory=list)  # topic, partition, count
    refreshes: int = 0
    confirmations: int = 0  # confirm_writes calls
    fetches: int = 0
    describes: int = 0  # DescribeProducers requests answered
    describe_error: Exception | None = None  # raised for DescribeProducers
    known: set[str] = field(default_factory=set)
    started: bool = False
    closed: bool = False
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    # (pid, topic, partition) -> (next expected sequence, [(first seq, last seq, base offset)])
    _seqs: dict[tuple[int, str, int], tuple[int, list[tuple[int, int, int]]]] = field(
        default_factory=dict
    )
    # (pid, topic, partition) -> the producer epoch the partition last took
    epochs: dict[tuple[int, str, int], int] = field(default_factory=dict)
    # As Kafka 2.5 to 4.4: a partition with no state for a producer takes any first
    # sequence number from it (KAFKA-15591: 4.5 takes only 0 where nothing was written).
    any_first_sequence: bool = False
    # throttle_time_ms of the next Produce responses, one each (then 0)
    produce_throttles: deque[int] = field(default_factory=deque)
    produce_version: int = 9  # the version send_built builds Produce requests at
    sent_at: list[float] = field(default_factory=list)  # anyio time of each Produce
    # The pauses those asked for, kept as KafkaClient keeps them (its send_built waits
    # them out; the producer's flusher reads them), and their sum.
    throttles: Throttles = field(
        default_factory=lambda: Throttles(
            logging.getLogger("tests.fake_client"), "client", "requests wait", "stats()"
        )
    )
    request_timeout: float = 30.0

    async def send_built(self, node_id: int, api_key: int, build: Any, **kwargs: Any) -> Any:
        if self.throttles.paused:
            await self.throttles.wait(node_id)
        version = self.produce_version
        response = await self.send(node_id, build(version), **kwargs)
        if response is not None:
            self.throttles.answered(node_id, api_key, version, response, self.request_timeout)
        return response

    def add_topic(self, name: str, count: int, leader: int = 0) -> None:
        self.partitions[name] = count
        for p in range(count):
            self.leaders[(name, p)] = leader
            self.logs.setdefault((name, p), [])

    def records(self, topic: str, partition: int) -> list[Stored]:
        return self.logs.get((topic, partition), [])

    def all_values(self, topic: str) -> list[bytes | None]:
        out = []
        for p in range(self.partitions[topic]):
            out.extend(r.value for r in self.records(topic, p))
        return out

    # ---- the KafkaClient surface the producer uses

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.closed = True

    def cached_topic(self, topic: str) -> TopicMetadata | None:
        if topic not in self.known or topic not in self.partitions:
            return None
        count = self.partitions[topic]
        return TopicMetadata(
            name=topic,
            topic_id=None,
            partitions={
                p: PartitionMetadata(partition=p, leader=self.leaders[(topic, p)])
                for p in range(count)
            },
        )

    def request_refresh(self) -> None:
        self.refreshes += 1

    def note_error(self, error: KafkaError) -> bool:
        # As KafkaClient.note_error: a refresh when the error means stale metadata.
        if error.invalid_metadata:
            self.request_refresh()
        return error.invalid_metadata

    async def confirm_writes(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.confirmations += 1

    def _refuse(self) -> None:
        if self.down:
            self.connect_failures += 1
            raise ConnectError("no broker reachable: connection refused")

    async def _held(self) -> None:
        await anyio.lowlevel.checkpoint()
        if self.hold is not None:
            await self.hold.wait()

    async def fetch_metadata(self, topic: str) -> TopicMetadata:
        self.fetches += 1
        await self._held()
        self._refuse()
        if self.metadata_error is not None:
            raise self.metadata_error
        if topic not in self.partitions:
            raise UnknownTopicOrPartitionError(f"topic {topic!r}")
        self.known.add(topic)
        meta = self.cached_topic(topic)
        assert meta is not None
        return meta

    async def send_any(self, request: Any, **kwargs: Any) -> Any:
        await self._held()
        assert isinstance(request, InitProducerIdRequest)
        self._refuse()
        if self.pid_faults:
            raise self.pid_faults.popleft()
        return InitProducerIdResponse(producer_id=next(self._pids), producer_epoch=0)

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, DescribeProducersRequest):
            return await self._describe_producers(request)
        assert isinstance(request, ProduceRequest)
        assert kwargs.get("min_version") == 3
        self._refuse()
        self.requests.append(request)
        self.sent_at.append(anyio.current_time())
        # gate_error: the request waits for the gate, then fails unwritten.
        gated = self.gate_error if self.gate is not None else None
        # Taken in the order sent, as a broker does the requests of one connection.
        fault = None if self.hang or gated or not self.faults else self.faults.popleft()
        response = None
        if not self.hang and gated is None and (fault is None or fault.written):
            response = self._apply(request)
        await anyio.lowlevel.checkpoint()
        if self.hang:
            await anyio.sleep_forever()
        if gated is not None:
            assert self.gate is not None
            await self.gate.wait()
            raise gated
        if fault is not None:
            if fault.held and self.gate is not None:
                await self.gate.wait()
            raise fault.error
        if self.gate is not None:
            await self.gate.wait()
        if not kwargs.get("expect_response", True):
            return None
        return response

    async def _describe_producers(
        self, request: DescribeProducersRequest
    ) -> DescribeProducersResponse:
        await self._held()
        self._refuse()
        self.describes += 1
        if self.describe_error is not None:
            raise self.describe_error
        topics = []
        for t in request.topics:
            parts = []
            for index in t.partition_indexes:
                states = [
                    DescribedProducer(
                        producer_id=pid,
                        producer_epoch=self.epochs.get((pid, topic, partition), 0),
                        last_sequence=expected - 1,
                    )
                    for (pid, topic, partition), (expected, _) in self._seqs.items()
                    if (topic, partition) == (t.name, index)
                ]
                parts.append(DescribedPartition(partition_index=index, active_producers=states))
            topics.append(DescribedTopic(name=t.name, partitions=parts))
        return DescribeProducersResponse(topics=topics)

    def restart(self) -> None:
        """As a broker restarted cleanly: it reloads each producer's state with its
        last batch only (Kafka's producer state snapshot), so a retry of an earlier
        batch it has is refused as out of order, not taken for a duplicate."""
        for key, (expected, seen) in self._seqs.items():
            self._seqs[key] = (expected, seen[-1:])

    def expire(self) -> None:
        """As a broker dropping the state of idle producers (producer.id.expiration.ms,
        or retention deleting the segment with a producer's last batch): it no longer
        knows any producer's epoch or sequence numbers."""
        self._seqs.clear()
        self.epochs.clear()

    # ---- broker behaviour

    def _apply(self, request: ProduceRequest) -> ProduceResponse:
        topics = []
        for td in request.topic_data:
            parts = []
            for pd in td.partition_data:
                parts.append(self._append(td.name, pd.index, pd.records or b""))
            topics.append(TopicProduceResponse(name=td.name, partition_responses=parts))
        throttle = self.produce_throttles.popleft() if self.produce_throttles else 0
        return ProduceResponse(responses=topics, throttle_time_ms=throttle)

    def _append(self, topic: str, partition: int, data: bytes) -> PartitionProduceResponse:
        key = (topic, partition)
        codes = self.codes.get(key)
        if codes:
            code = codes.popleft()
            return PartitionProduceResponse(index=partition, error_code=code, base_offset=-1)
        if len(data) > self.max_message_bytes:
            return PartitionProduceResponse(index=partition, error_code=10, base_offset=-1)
        (batch,) = decode_batches(data)
        log = self.logs.setdefault(key, [])
        count = len(batch.records)
        if batch.producer_id >= 0:
            state_key = (batch.producer_id, topic, partition)
            epoch = self.epochs.get(state_key, -1)
            if batch.producer_epoch < epoch:
                # INVALID_PRODUCER_EPOCH: an older epoch than the partition has seen.
                return PartitionProduceResponse(index=partition, error_code=47, base_offset=-1)
            if batch.producer_epoch > epoch:
                # A new epoch (KIP-360) starts its sequence numbers at 0.
                if batch.base_sequence != 0 and epoch >= 0:
                    return PartitionProduceResponse(index=partition, error_code=45, base_offset=-1)
                self.epochs[state_key] = batch.producer_epoch
                self._seqs.pop(state_key, None)
            expected, seen = self._seqs.get(state_key, (0, []))
            if self.any_first_sequence and state_key not in self._seqs:
                expected = batch.base_sequence
            for first, _last, offset in seen:
                if first == batch.base_sequence:
                    # A retry of a batch already stored: its offset, no new records.
                    return PartitionProduceResponse(index=partition, base_offset=offset)
            if batch.base_sequence != expected:
                return PartitionProduceResponse(index=partition, error_code=45, base_offset=-1)
            seen.append((batch.base_sequence, batch.base_sequence + count - 1, len(log)))
            self._seqs[state_key] = (expected + count, seen[-5:])
        base = len(log)
        self.batches.append((topic, partition, count))
        r: Record
        for i, r in enumerate(batch.records):
            log.append(Stored(base + i, r.key, r.value, r.headers, r.timestamp))
        return PartitionProduceResponse(index=partition, base_offset=base)
