#!/usr/bin/env python3
"""Capture golden bytes for tests/protocol/ from sources independent of our encoder.

    python scripts/capture_golden.py kafka-python
        For every generated message at its lowest and highest version, encode a fixed
        example (tests/protocol/messages_support.example) with kafka-python, an
        independent implementation (its JSON-driven classes, or its hand-written
        kafka.protocol.old classes for versions the former no longer has), and store the
        hex under tests/protocol/golden/kafka_python/<Class>_v<N>.hex.

    python scripts/capture_golden.py broker [--plaintext HOST:PORT] [--sasl HOST:PORT] [--only A,B]
        Talk to a real broker over a raw socket and store every response frame (the
        bytes after the 4-byte size prefix: response header + body) under
        tests/protocol/golden/broker/<Class>_v<N>.hex, at the lowest and highest version
        that both the broker and we support. The requests are ours; the responses are the
        broker's. Creates two topics named kafka-asgi-golden-<random> and deletes them.
        ``--only CreatePartitions,ElectLeaders`` stores those APIs' responses alone (the
        other files stay as they are).

Test data only: never imported by the library.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kafka_asgi.protocol.framing import (  # noqa: E402
    SIZE_PREFIX_LENGTH,
    decode_response,
    encode_request,
    frame_size,
    peek_correlation_id,
)
from kafka_asgi.protocol.messages import (  # noqa: E402
    REQUEST_TYPES,
    RESPONSE_TYPES,
    ApiVersionsRequest,
    ApiVersionsResponse,
    CreatePartitionsRequest,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DescribeProducersRequest,
    ElectLeadersRequest,
    FetchRequest,
    FindCoordinatorRequest,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ListOffsetsRequest,
    Message,
    MetadataRequest,
    MetadataResponse,
    ProduceRequest,
    ProduceResponse,
    SaslAuthenticateRequest,
    SaslHandshakeRequest,
)
from kafka_asgi.protocol.messages import (  # noqa: E402
    create_partitions as cp,
)
from kafka_asgi.protocol.messages import (  # noqa: E402
    create_topics as ct,
)
from kafka_asgi.protocol.messages import (  # noqa: E402
    delete_topics as dt,
)
from kafka_asgi.protocol.messages import (  # noqa: E402
    describe_producers as dp,
)
from kafka_asgi.protocol.messages import (  # noqa: E402
    elect_leaders as el,
)
from kafka_asgi.protocol.messages import (  # noqa: E402
    fetch as fe,
)
from kafka_asgi.protocol.messages import (  # noqa: E402
    list_offsets as lo,
)
from kafka_asgi.protocol.messages import (  # noqa: E402
    metadata as md,
)
from kafka_asgi.protocol.messages import (  # noqa: E402
    produce as pr,
)
from kafka_asgi.protocol.record_encoder import encode_batch  # noqa: E402

GOLDEN = REPO / "tests" / "protocol" / "golden"
CLIENT_ID = "kafka-asgi-golden"


def capture_kafka_python() -> None:
    from tests.support.messages import (
        ALL_MESSAGES,
        example,
        kafka_python_class,
        kafka_python_encode,
        kafka_python_old_encode,
        kafka_python_versions,
    )

    out = GOLDEN / "kafka_python"
    out.mkdir(parents=True, exist_ok=True)
    for cls in ALL_MESSAGES:
        kp_lo, kp_hi = kafka_python_versions(kafka_python_class(cls))
        for version in sorted({cls.MIN_VERSION, cls.MAX_VERSION}):
            obj = example(cls, version)
            if kp_lo <= version <= kp_hi:
                data = kafka_python_encode(obj, version)
            else:
                data = kafka_python_old_encode(obj, version)
            (out / f"{cls.__name__}_v{version}.hex").write_text(data.hex() + "\n")
            print(f"kafka_python/{cls.__name__}_v{version}.hex  {len(data)} bytes")


class RawClient:
    """Blocking request/response over a plain socket, for capturing test data only."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=15)
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def _receive(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return bytes(data)

    def call(self, request: Message, version: int) -> tuple[bytes, Message]:
        self.correlation_id += 1
        self.sock.sendall(encode_request(request, version, self.correlation_id, CLIENT_ID))
        frame = self._receive(frame_size(self._receive(SIZE_PREFIX_LENGTH)))
        assert peek_correlation_id(frame) == self.correlation_id
        response_cls = RESPONSE_TYPES[request.API_KEY]
        _cid, response = decode_response(response_cls, frame, version)
        return frame, response


def capture_broker(
    plaintext: str, sasl: str, username: str, password: str, only: set[str] | None = None
) -> None:
    out = GOLDEN / "broker"
    out.mkdir(parents=True, exist_ok=True)
    saved: dict[str, Any] = {}
    if only is not None:
        saved = json.loads((out / "INDEX.json").read_text())

    def save(request: Message, version: int, frame: bytes, response: Message) -> None:
        cls_name = RESPONSE_TYPES[request.API_KEY].__name__
        if only is not None and cls_name.removesuffix("Response") not in only:
            return
        name = f"{cls_name}_v{version}"
        (out / f"{name}.hex").write_text(frame.hex() + "\n")
        saved[name] = len(frame)
        print(f"broker/{name}.hex  {len(frame)} bytes: {str(response)[:100]}")

    client = RawClient(plaintext)

    def call_lowest(make: Any, candidates: list[int]) -> int:
        """Capture at the first version of ``candidates`` the broker answers.

        Kafka 4 still advertises Produce v0 in ApiVersions but drops the connection for
        versions removed by KIP-896, so the lowest usable version is found by trying.
        """
        nonlocal client
        for version in candidates:
            request = make(version)
            try:
                frame, response = client.call(request, version)
            except ConnectionError:
                client.close()
                client = RawClient(plaintext)
                continue
            save(request, version, frame, response)
            return version
        raise RuntimeError(f"no version of {candidates} was accepted")

    # The broker's own ranges decide which versions can be captured.
    frame, response = client.call(ApiVersionsRequest(), 0)
    save(ApiVersionsRequest(), 0, frame, response)
    assert isinstance(response, ApiVersionsResponse)
    request = ApiVersionsRequest(
        client_software_name="kafka-asgi-golden", client_software_version="0.1.0"
    )
    frame, response = client.call(request, ApiVersionsRequest.MAX_VERSION)
    save(request, ApiVersionsRequest.MAX_VERSION, frame, response)
    assert isinstance(response, ApiVersionsResponse)
    broker_ranges = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}

    def versions(api_key: int) -> list[int]:
        ours = REQUEST_TYPES[api_key]
        low = max(ours.MIN_VERSION, broker_ranges[api_key][0])
        high = min(ours.MAX_VERSION, broker_ranges[api_key][1])
        return sorted({low, high})

    suffix = uuid.uuid4().hex[:8]
    topics = {v: f"kafka-asgi-golden-{suffix}-{v}" for v in versions(19)}
    topic_ids: dict[str, uuid.UUID] = {}
    for version, topic in topics.items():
        request = CreateTopicsRequest(
            topics=[
                ct.CreatableTopic(
                    name=topic,
                    num_partitions=1,
                    replication_factor=1,
                    configs=[ct.CreatableTopicConfig(name="retention.ms", value="3600000")],
                )
            ],
            timeout_ms=30000,
        )
        frame, response = client.call(request, version)
        save(request, version, frame, response)
        assert isinstance(response, CreateTopicsResponse)
        assert response.topics[0].error_code == 0, response
    topic = next(iter(topics.values()))

    for version in versions(3):
        request = MetadataRequest(topics=[md.MetadataRequestTopic(name=topic)])
        if version >= 4:
            request = MetadataRequest(
                topics=[md.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=False
            )
        frame, response = client.call(request, version)
        save(request, version, frame, response)
        assert isinstance(response, MetadataResponse)
        for t in response.topics:
            if t.name and t.topic_id.int:
                topic_ids[t.name] = t.topic_id

    def capture(api_key: int, make: Any) -> None:
        ours = REQUEST_TYPES[api_key]
        low = max(ours.MIN_VERSION, broker_ranges[api_key][0])
        high = min(ours.MAX_VERSION, broker_ranges[api_key][1])
        found = call_lowest(make, list(range(low, high + 1)))
        if found != high:
            request = make(high)
            frame, response = client.call(request, high)
            save(request, high, frame, response)

    from kafka.record.memory_records import MemoryRecordsBuilder

    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=1700000000000, key=b"key", value=b"golden value", headers=[])
    builder.close()
    batch = bytes(builder.buffer())

    def produce(version: int) -> Message:
        partition = pr.PartitionProduceData(index=0, records=batch)
        return ProduceRequest(
            acks=-1,
            timeout_ms=30000,
            topic_data=[pr.TopicProduceData(name=topic, partition_data=[partition])],
        )

    capture(0, produce)

    def fetch(version: int) -> Message:
        fetch_topic = fe.FetchTopic(
            topic=topic if version <= 12 else "",
            topic_id=topic_ids[topic] if version >= 13 else uuid.UUID(int=0),
            partitions=[
                fe.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20)
            ],
        )
        return FetchRequest(max_wait_ms=100, min_bytes=1, max_bytes=1 << 20, topics=[fetch_topic])

    capture(1, fetch)

    def list_offsets(version: int) -> Message:
        partition = lo.ListOffsetsPartition(partition_index=0, timestamp=-1)
        return ListOffsetsRequest(
            replica_id=-1,
            topics=[lo.ListOffsetsTopic(name=topic, partitions=[partition])],
            timeout_ms=10000 if version >= 10 else 0,
        )

    capture(2, list_offsets)
    capture(
        22,
        lambda version: InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60000),
    )

    # An idempotent batch (our encoder, a producer id of the broker's), so that
    # DescribeProducers has a producer to describe.
    for _ in range(60):  # COORDINATOR_LOAD_IN_PROGRESS while the broker starts
        frame, response = client.call(
            InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60000), 0
        )
        assert isinstance(response, InitProducerIdResponse), response
        if response.error_code != 14:
            break
        time.sleep(0.5)
    assert response.error_code == 0, response
    idempotent = encode_batch(
        [(b"key", b"golden idempotent", [], 1700000000000)],
        producer_id=response.producer_id,
        producer_epoch=response.producer_epoch,
        base_sequence=0,
    )
    partition = pr.PartitionProduceData(index=0, records=idempotent)
    request = ProduceRequest(
        acks=-1,
        timeout_ms=30000,
        topic_data=[pr.TopicProduceData(name=topic, partition_data=[partition])],
    )
    _, produced = client.call(request, 3)
    assert isinstance(produced, ProduceResponse), produced
    assert produced.responses[0].partition_responses[0].error_code == 0, produced
    capture(
        61,
        lambda version: DescribeProducersRequest(
            topics=[dp.TopicRequest(name=topic, partition_indexes=[0])]
        ),
    )

    def find_coordinator(version: int) -> Message:
        if version <= 3:
            return FindCoordinatorRequest(key="kafka-asgi-golden-group")
        return FindCoordinatorRequest(coordinator_keys=["kafka-asgi-golden-group"])

    capture(10, find_coordinator)

    def create_partitions(version: int) -> Message:
        # validate_only: the topic keeps its one partition for the captures after this.
        return CreatePartitionsRequest(
            topics=[cp.CreatePartitionsTopic(name=topic, count=2, assignments=None)],
            timeout_ms=30000,
            validate_only=True,
        )

    capture(37, create_partitions)

    def elect_leaders(version: int) -> Message:
        # Preferred election (type 0) on a one-replica partition: ELECTION_NOT_NEEDED.
        return ElectLeadersRequest(
            election_type=0,
            topic_partitions=[el.TopicPartitions(topic=topic, partitions=[0])],
            timeout_ms=30000,
        )

    capture(43, elect_leaders)

    for version, name in zip(versions(20), topics.values(), strict=True):
        if version >= 6:
            request = DeleteTopicsRequest(topics=[dt.DeleteTopicState(name=name)], timeout_ms=30000)
        else:
            request = DeleteTopicsRequest(topic_names=[name], timeout_ms=30000)
        frame, response = client.call(request, version)
        save(request, version, frame, response)
    client.close()

    # SASL: a handshake per version, then SaslAuthenticate (PLAIN, RFC 4616) per version.
    for version in versions(17):
        client = RawClient(sasl)
        request = SaslHandshakeRequest(mechanism="PLAIN")
        frame, response = client.call(request, version)
        save(request, version, frame, response)
        client.close()
    token = b"\x00" + username.encode() + b"\x00" + password.encode()
    for version in versions(36):
        client = RawClient(sasl)
        client.call(SaslHandshakeRequest(mechanism="PLAIN"), 1)
        request = SaslAuthenticateRequest(auth_bytes=token)
        frame, response = client.call(request, version)
        save(request, version, frame, response)
        client.close()
    (out / "INDEX.json").write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description="capture golden protocol bytes")
    parser.add_argument("source", choices=["kafka-python", "broker"])
    parser.add_argument("--plaintext", default="127.0.0.1:9092")
    parser.add_argument("--sasl", default="127.0.0.1:9094")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin-secret")
    parser.add_argument("--only", default=None, help="API names to store, comma-separated")
    args = parser.parse_args()
    only = None if args.only is None else set(args.only.split(","))
    if args.source == "kafka-python":
        capture_kafka_python()
    else:
        capture_broker(args.plaintext, args.sasl, args.username, args.password, only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
