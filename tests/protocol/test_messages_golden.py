"""Golden bytes from independent sources: kafka-python's encoders and a real broker."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafka_asgi.protocol import messages
from kafka_asgi.protocol.framing import decode_response, peek_correlation_id
from kafka_asgi.protocol.messages import Message
from tests.support.messages import (
    ALL_MESSAGES,
    ALL_VERSIONS,
    example,
    kafka_python_class,
    kafka_python_encode,
    kafka_python_old_encode,
    kafka_python_versions,
    struct_strategy,
)

GOLDEN = Path(__file__).parent / "golden"


def _load(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().strip())


def _golden_cases(folder: str) -> list[tuple[type[Message], int, Path]]:
    cases = []
    for path in sorted((GOLDEN / folder).glob("*.hex")):
        name, _, version = path.stem.rpartition("_v")
        cases.append((getattr(messages, name), int(version), path))
    return cases


def _id(param: object) -> str:
    if isinstance(param, type):
        return param.__name__
    if isinstance(param, Path):
        return param.stem
    return str(param)


KAFKA_PYTHON_GOLDEN = _golden_cases("kafka_python")
BROKER_GOLDEN = _golden_cases("broker")


def test_kafka_python_goldens_cover_lowest_and_highest_versions() -> None:
    have = {(cls, v) for cls, v, _ in KAFKA_PYTHON_GOLDEN}
    for cls in ALL_MESSAGES:
        assert (cls, cls.MIN_VERSION) in have, cls.__name__
        assert (cls, cls.MAX_VERSION) in have, cls.__name__


@pytest.mark.parametrize(("cls", "version", "path"), KAFKA_PYTHON_GOLDEN, ids=_id)
def test_kafka_python_golden(cls: type[Message], version: int, path: Path) -> None:
    golden = _load(path)
    obj = example(cls, version)
    assert obj.encode(version) == golden
    assert cls.decode(golden, version) == obj


def _kafka_python_bytes(obj: Message, version: int) -> bytes:
    lo, hi = kafka_python_versions(kafka_python_class(type(obj)))
    if lo <= version <= hi:
        return kafka_python_encode(obj, version)
    return kafka_python_old_encode(obj, version)


@pytest.mark.parametrize(("cls", "version"), ALL_VERSIONS, ids=_id)
def test_same_bytes_as_kafka_python_at_every_version(cls: type[Message], version: int) -> None:
    obj = example(cls, version)
    assert obj.encode(version) == _kafka_python_bytes(obj, version)


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=_id)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_same_bytes_as_kafka_python_for_random_values(
    cls: type[Message], data: st.DataObject
) -> None:
    version = data.draw(st.integers(cls.MIN_VERSION, cls.MAX_VERSION))
    obj = data.draw(struct_strategy(cls, version))
    assert obj.encode(version) == _kafka_python_bytes(obj, version)


# -- real broker responses ------------------------------------------------------------------


def test_broker_goldens_cover_every_response() -> None:
    versions: dict[type[Message], set[int]] = {}
    for cls, version, _ in BROKER_GOLDEN:
        versions.setdefault(cls, set()).add(version)
    for cls in ALL_MESSAGES:
        if cls.__name__.endswith("Response"):
            # The lowest and the highest version (one, for an API with a single one).
            wanted = len({cls.MIN_VERSION, cls.MAX_VERSION})
            assert len(versions.get(cls, ())) == wanted, cls.__name__
            assert cls.MAX_VERSION in versions[cls], cls.__name__


@pytest.mark.parametrize(("cls", "version", "path"), BROKER_GOLDEN, ids=_id)
def test_broker_response_decodes_and_reencodes(
    cls: type[Message], version: int, path: Path
) -> None:
    frame = _load(path)
    correlation_id, response = decode_response(cls, frame, version)
    assert correlation_id == peek_correlation_id(frame) > 0
    header_size = len(frame) - len(response.encode(version))
    # Response header v0 is the correlation id alone; v1 adds an (empty) tagged-field byte.
    assert header_size in (4, 5)
    assert frame[header_size:] == response.encode(version)


def _broker(name: str) -> tuple[int, Message]:
    cls_name, _, version = name.rpartition("_v")
    cls = getattr(messages, cls_name)
    return decode_response(cls, _load(GOLDEN / "broker" / f"{name}.hex"), int(version))


def test_broker_api_versions() -> None:
    for name in ("ApiVersionsResponse_v0", "ApiVersionsResponse_v4"):
        _, response = _broker(name)
        assert isinstance(response, messages.ApiVersionsResponse)
        assert response.error_code == 0
        keys = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
        assert {0, 1, 2, 3, 18, 19, 20, 22, 36}.issubset(keys)
        assert keys[18][1] >= 4
    _, v4 = _broker("ApiVersionsResponse_v4")
    assert isinstance(v4, messages.ApiVersionsResponse)
    # Flexible versions carry the finalized features as tagged fields (KIP-584).
    assert any(f.name == "metadata.version" for f in v4.finalized_features)
    assert v4.finalized_features_epoch >= 0


def test_broker_metadata() -> None:
    for name in ("MetadataResponse_v0", "MetadataResponse_v12"):
        _, response = _broker(name)
        assert isinstance(response, messages.MetadataResponse)
        [broker] = response.brokers
        assert (broker.node_id, broker.host, broker.port) == (1, "127.0.0.1", 9092)
        [topic] = response.topics
        assert topic.error_code == 0
        assert topic.name is not None and topic.name.startswith("kafka-asgi-golden-")
        [partition] = topic.partitions
        assert (partition.partition_index, partition.leader_id) == (0, 1)
        assert partition.replica_nodes == partition.isr_nodes == [1]
    _, v12 = _broker("MetadataResponse_v12")
    assert isinstance(v12, messages.MetadataResponse)
    assert v12.controller_id == 1
    assert v12.cluster_id
    assert v12.topics[0].topic_id != uuid.UUID(int=0)


def test_broker_produce_fetch_list_offsets() -> None:
    offsets = []
    for name in ("ProduceResponse_v3", "ProduceResponse_v11"):
        _, response = _broker(name)
        assert isinstance(response, messages.ProduceResponse)
        [partition] = response.responses[0].partition_responses
        assert partition.error_code == 0
        offsets.append(partition.base_offset)
    assert offsets == [0, 1]
    for name in ("FetchResponse_v4", "FetchResponse_v17"):
        _, fetch = _broker(name)
        assert isinstance(fetch, messages.FetchResponse)
        [partition] = fetch.responses[0].partitions
        assert partition.error_code == 0
        assert partition.high_watermark == 2
        assert partition.records is not None and b"golden value" in partition.records
    _, v17 = _broker("FetchResponse_v17")
    assert isinstance(v17, messages.FetchResponse)
    assert v17.responses[0].topic_id != uuid.UUID(int=0)
    for name in ("ListOffsetsResponse_v1", "ListOffsetsResponse_v10"):
        _, listed = _broker(name)
        assert isinstance(listed, messages.ListOffsetsResponse)
        [partition] = listed.topics[0].partitions
        assert (partition.error_code, partition.offset) == (0, 2)


def test_broker_admin_and_coordinator() -> None:
    for name in ("CreateTopicsResponse_v2", "CreateTopicsResponse_v7"):
        _, created = _broker(name)
        assert isinstance(created, messages.CreateTopicsResponse)
        assert created.topics[0].error_code == 0
    _, v7 = _broker("CreateTopicsResponse_v7")
    assert isinstance(v7, messages.CreateTopicsResponse)
    configs = {c.name: c.value for c in v7.topics[0].configs or []}
    assert configs["retention.ms"] == "3600000"
    assert v7.topics[0].num_partitions == 1
    for name in ("DeleteTopicsResponse_v1", "DeleteTopicsResponse_v6"):
        _, deleted = _broker(name)
        assert isinstance(deleted, messages.DeleteTopicsResponse)
        assert deleted.responses[0].error_code == 0
    _, v0 = _broker("FindCoordinatorResponse_v0")
    assert isinstance(v0, messages.FindCoordinatorResponse)
    assert (v0.error_code, v0.node_id, v0.port) == (0, 1, 9092)
    _, v6 = _broker("FindCoordinatorResponse_v6")
    assert isinstance(v6, messages.FindCoordinatorResponse)
    [coordinator] = v6.coordinators
    assert (coordinator.key, coordinator.node_id) == ("kafka-asgi-golden-group", 1)
    for name in ("InitProducerIdResponse_v0", "InitProducerIdResponse_v5"):
        _, init = _broker(name)
        assert isinstance(init, messages.InitProducerIdResponse)
        assert init.error_code == 0 and init.producer_id >= 0 and init.producer_epoch == 0


def test_broker_sasl() -> None:
    for name in ("SaslHandshakeResponse_v0", "SaslHandshakeResponse_v1"):
        _, handshake = _broker(name)
        assert isinstance(handshake, messages.SaslHandshakeResponse)
        assert handshake.error_code == 0
        assert {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} <= set(handshake.mechanisms)
    for name in ("SaslAuthenticateResponse_v0", "SaslAuthenticateResponse_v2"):
        _, auth = _broker(name)
        assert isinstance(auth, messages.SaslAuthenticateResponse)
        assert auth.error_code == 0


def test_broker_describe_producers() -> None:
    # One idempotent batch (sequence 0) from a producer id the broker gave out.
    _, response = _broker("DescribeProducersResponse_v0")
    assert isinstance(response, messages.DescribeProducersResponse)
    [topic] = response.topics
    assert topic.name.startswith("kafka-asgi-golden-")
    [partition] = topic.partitions
    assert (partition.partition_index, partition.error_code) == (0, 0)
    [producer] = partition.active_producers
    assert producer.producer_id >= 0
    assert (producer.producer_epoch, producer.last_sequence) == (0, 0)
    assert producer.current_txn_start_offset == -1
