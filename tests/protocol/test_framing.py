"""Headers and size-prefixed frames."""

from __future__ import annotations

import struct
import warnings

import pytest

from kafka_asgi.protocol.errors import EncodeError, ProtocolError
from kafka_asgi.protocol.framing import (
    MAX_FRAME_SIZE,
    decode_response,
    encode_request,
    frame_size,
    peek_correlation_id,
    request_header_version,
    response_header_version,
)
from kafka_asgi.protocol.messages import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    MetadataRequest,
    MetadataResponse,
    ProduceRequest,
)
from kafka_asgi.protocol.messages.api_versions import ApiVersion
from kafka_asgi.protocol.messages.metadata import MetadataRequestTopic, MetadataResponseBroker
from tests.support.messages import kafka_python_class, to_kafka_python_kwargs


@pytest.mark.parametrize(
    ("api_key", "version", "expected"),
    [
        (0, 8, 1),  # Produce: flexible from v9
        (0, 9, 2),
        (3, 8, 1),  # Metadata: flexible from v9
        (3, 12, 2),
        (18, 2, 1),  # ApiVersions: flexible from v3
        (18, 3, 2),
        (7, 0, 0),  # ControlledShutdown v0 is the only user of request header v0
        (7, 1, 1),
        (36, 2, 2),
        (17, 1, 1),  # SaslHandshake is never flexible
    ],
)
def test_request_header_version(api_key: int, version: int, expected: int) -> None:
    assert request_header_version(api_key, version) == expected


@pytest.mark.parametrize(
    ("api_key", "version", "expected"),
    [(0, 8, 0), (0, 9, 1), (1, 12, 1), (1, 11, 0), (18, 0, 0), (18, 3, 0), (18, 4, 0), (36, 2, 1)],
)
def test_response_header_version(api_key: int, version: int, expected: int) -> None:
    assert response_header_version(api_key, version) == expected


def test_unknown_api_key() -> None:
    with pytest.raises(ValueError, match="9999"):
        request_header_version(9999, 0)


def _kafka_python_frame(
    request: object, version: int, correlation_id: int, client_id: str
) -> bytes:
    kp_cls = kafka_python_class(type(request))  # type: ignore[arg-type]
    kwargs = to_kafka_python_kwargs(request, kp_cls._struct, version)  # type: ignore[arg-type]
    kp = kp_cls(version=version, **kwargs)
    kp.with_header(correlation_id=correlation_id, client_id=client_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bytes(kp.encode(version=version, header=True, framed=True))


@pytest.mark.parametrize(
    ("request_obj", "version"),
    [
        (ApiVersionsRequest(), 0),
        (ApiVersionsRequest(client_software_name="kafka-asgi", client_software_version="1"), 4),
        (MetadataRequest(topics=[MetadataRequestTopic(name="t")]), 1),
        (MetadataRequest(topics=None, allow_auto_topic_creation=False), 12),
        (ProduceRequest(acks=-1, timeout_ms=1500), 3),
        (ProduceRequest(acks=1, timeout_ms=1500, transactional_id="tx"), 11),
    ],
    ids=lambda p: type(p).__name__ if not isinstance(p, int) else str(p),
)
def test_request_frames_match_kafka_python(request_obj: object, version: int) -> None:
    ours = encode_request(request_obj, version, 12345, "client-é")  # type: ignore[arg-type]
    assert ours == _kafka_python_frame(request_obj, version, 12345, "client-é")
    (size,) = struct.unpack(">i", ours[:4])
    assert size == len(ours) - 4


def test_request_header_layout() -> None:
    frame = encode_request(ApiVersionsRequest(), 3, 7, "ab")
    body = ApiVersionsRequest().encode(3)
    # size | api key 18 | version 3 | correlation 7 | client id "ab" (classic string) | no tags
    header = b"\x00\x12" + b"\x00\x03" + b"\x00\x00\x00\x07" + b"\x00\x02ab" + b"\x00"
    assert frame == struct.pack(">i", len(header) + len(body)) + header + body
    null_client = encode_request(MetadataRequest(), 1, 7, None)
    assert null_client[12:14] == b"\xff\xff"


@pytest.mark.parametrize("version", [3, 8, 9, 11])
def test_produce_frame_is_size_header_and_body_pieces(version: int) -> None:
    # encode_request joins the body's pieces (encode_parts) with the header once: the
    # frame must be exactly what joining encode()'s body would give, batches included.
    from kafka_asgi.protocol.messages.produce import PartitionProduceData, TopicProduceData
    from kafka_asgi.protocol.records import encode_batch

    batches = [encode_batch([(None, b"v%d" % i * 100, None, 1_700_000_000_000)]) for i in range(3)]
    topic = TopicProduceData(
        name="t",
        partition_data=[PartitionProduceData(index=i, records=b) for i, b in enumerate(batches)],
    )
    request = ProduceRequest(acks=-1, timeout_ms=1500, topic_data=[topic])
    frame = encode_request(request, version, 9, "c")
    body = request.encode(version)
    assert b"".join(request.encode_parts(version)) == body
    assert frame.endswith(body)
    (size,) = struct.unpack(">i", frame[:4])
    assert size == len(frame) - 4
    header = frame[4 : len(frame) - len(body)]
    assert header[:8] == struct.pack(">hhi", 0, version, 9)
    for b in batches:
        assert frame.count(b) == 1


def test_encode_request_limits() -> None:
    request = ProduceRequest(acks=1, timeout_ms=10)
    with pytest.raises(EncodeError, match="maximum frame size"):
        encode_request(request, 3, 1, "c", max_frame_size=10)
    with pytest.raises(EncodeError, match="correlation id"):
        encode_request(request, 3, 1 << 31, "c")
    with pytest.raises(EncodeError, match="client_id"):
        encode_request(request, 3, 1, 42)  # type: ignore[arg-type]


def test_decode_response_header_v0_and_v1() -> None:
    body = ApiVersionsResponse(api_keys=[ApiVersion(api_key=18, min_version=0, max_version=4)])
    # ApiVersions responses keep header v0 even at flexible versions (KIP-511).
    frame = struct.pack(">i", 99) + body.encode(4)
    assert peek_correlation_id(frame) == 99
    assert decode_response(ApiVersionsResponse, frame, 4) == (99, body)
    metadata = MetadataResponse(brokers=[MetadataResponseBroker(node_id=1, host="h", port=9)])
    frame = struct.pack(">i", 5) + b"\x00" + metadata.encode(12)
    assert decode_response(MetadataResponse, frame, 12) == (5, metadata)
    frame = struct.pack(">i", 5) + metadata.encode(8)
    assert decode_response(MetadataResponse, frame, 8) == (5, metadata)


def test_decode_response_bad_frames() -> None:
    with pytest.raises(ProtocolError):
        peek_correlation_id(b"\x00\x00")
    with pytest.raises(ProtocolError):
        decode_response(MetadataResponse, b"\x00\x00\x00\x01", 12)
    with pytest.raises(ProtocolError):
        decode_response(MetadataResponse, b"\x00\x00\x00\x01\x05", 12)


def test_frame_size_guard() -> None:
    assert frame_size(struct.pack(">i", 10)) == 10
    assert frame_size(struct.pack(">i", MAX_FRAME_SIZE)) == MAX_FRAME_SIZE
    with pytest.raises(ProtocolError, match="maximum frame size"):
        frame_size(struct.pack(">i", MAX_FRAME_SIZE + 1))
    with pytest.raises(ProtocolError, match="negative"):
        frame_size(struct.pack(">i", -1))
    with pytest.raises(ProtocolError):
        frame_size(b"\x00")
    # "HTTP" read as a size: a non-Kafka peer must not make us wait for 1.2 GB.
    with pytest.raises(ProtocolError):
        frame_size(b"HTTP")


def test_frame_size_takes_the_connections_limit() -> None:
    # The connection frames its stream with frame_size (over anyio's buffered
    # stream), with its own max_frame_size.
    assert frame_size(struct.pack(">i", 8), 8) == 8
    with pytest.raises(ProtocolError, match="maximum frame size"):
        frame_size(struct.pack(">i", 9), 8)
