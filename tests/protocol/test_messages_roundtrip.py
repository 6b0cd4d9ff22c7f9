"""Property tests: every message at every version round-trips, and decoders fail only
with ProtocolError on arbitrary, truncated or corrupted bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafka_asgi.protocol.errors import EncodeError, ProtocolError
from kafka_asgi.protocol.messages import (
    FetchRequest,
    Message,
    MetadataRequest,
    ProduceRequest,
)
from kafka_asgi.protocol.messages.fetch import FetchPartition, FetchTopic
from kafka_asgi.protocol.messages.produce import PartitionProduceData, TopicProduceData
from tests.support.messages import ALL_MESSAGES, ALL_VERSIONS, example, struct_strategy

PROPERTY = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _id(param: object) -> str:
    return param.__name__ if isinstance(param, type) else str(param)


@pytest.mark.parametrize(("cls", "version"), ALL_VERSIONS, ids=_id)
@PROPERTY
@given(data=st.data())
def test_round_trip(cls: type[Message], version: int, data: st.DataObject) -> None:
    obj = data.draw(struct_strategy(cls, version))
    encoded = obj.encode(version)
    decoded = cls.decode(encoded, version)
    assert decoded == obj
    assert decoded.encode(version) == encoded


@pytest.mark.parametrize(("cls", "version"), ALL_VERSIONS, ids=_id)
def test_every_strict_prefix_is_a_protocol_error(cls: type[Message], version: int) -> None:
    encoded = example(cls, version).encode(version)
    assert cls.decode(encoded, version) == example(cls, version)
    for cut in range(len(encoded)):
        with pytest.raises(ProtocolError):
            cls.decode(encoded[:cut], version)
    with pytest.raises(ProtocolError, match="unexpected bytes"):
        cls.decode(encoded + b"\x00", version)


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=_id)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_arbitrary_bytes_raise_only_protocol_error(cls: type[Message], data: st.DataObject) -> None:
    version = data.draw(st.integers(cls.MIN_VERSION, cls.MAX_VERSION))
    raw = data.draw(st.binary(max_size=120))
    try:
        cls.decode(raw, version)
    except ProtocolError:
        pass


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=_id)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_corrupted_encodings_raise_only_protocol_error(
    cls: type[Message], data: st.DataObject
) -> None:
    version = data.draw(st.integers(cls.MIN_VERSION, cls.MAX_VERSION))
    encoded = bytearray(example(cls, version).encode(version))
    if not encoded:
        return  # e.g. ApiVersions v0 requests have an empty body
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(encoded) - 1))
        encoded[pos] = data.draw(st.integers(0, 255))
    try:
        cls.decode(bytes(encoded), version)
    except ProtocolError:
        pass


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=_id)
def test_versions_outside_valid_range_are_refused(cls: type[Message]) -> None:
    obj = cls()
    for version in (cls.MIN_VERSION - 1, cls.MAX_VERSION + 1):
        with pytest.raises(EncodeError, match=f"{cls.__name__} has no version {version}"):
            obj.encode(version)
        with pytest.raises(ProtocolError, match=cls.__name__):
            cls.decode(b"", version)


def test_non_ignorable_field_in_a_version_without_it() -> None:
    # TransactionalId exists from Produce v3; Java refuses a non-default value before it.
    request = ProduceRequest(transactional_id="tx", acks=1, timeout_ms=1000)
    with pytest.raises(EncodeError, match="transactional_id"):
        request.encode(2)
    assert ProduceRequest.decode(request.encode(3), 3) == request
    # AllowAutoTopicCreation (v4+) defaults to true; false cannot be expressed in v3.
    with pytest.raises(EncodeError, match="allow_auto_topic_creation"):
        MetadataRequest(topics=None, allow_auto_topic_creation=False).encode(3)


def test_ignorable_field_is_dropped_silently() -> None:
    # Fetch MaxBytes is ignorable: v0-2 simply do not carry it.
    request = FetchRequest(max_wait_ms=10, min_bytes=1, max_bytes=1234)
    assert FetchRequest.decode(request.encode(2), 2).max_bytes == 0x7FFFFFFF


def test_null_in_a_non_nullable_version_names_the_field() -> None:
    # Metadata topics may be null (all topics) from v1 only.
    with pytest.raises(EncodeError, match="topics"):
        MetadataRequest(topics=None).encode(0)
    assert MetadataRequest.decode(MetadataRequest(topics=None).encode(1), 1).topics is None


def test_out_of_range_value_names_the_field() -> None:
    bad = ProduceRequest(
        acks=1,
        timeout_ms=1000,
        topic_data=[
            TopicProduceData(name="t", partition_data=[PartitionProduceData(index=1 << 40)])
        ],
    )
    with pytest.raises(EncodeError, match=r"topic_data\[0\]\.partition_data\[0\]\.index"):
        bad.encode(9)


def test_wrong_type_names_the_field() -> None:
    bad = FetchRequest(
        topics=[FetchTopic(topic="t", partitions=[FetchPartition(fetch_offset="0")])]
    )  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="fetch_offset"):
        bad.encode(4)


def test_defaults_follow_the_spec() -> None:
    request = FetchRequest()
    assert request.replica_id == -1
    assert request.max_bytes == 0x7FFFFFFF
    assert request.session_epoch == -1
    assert request.cluster_id is None
    assert request.rack_id == ""
    assert MetadataRequest().allow_auto_topic_creation is True
    assert ProduceRequest().transactional_id is None
