"""BrokerConnection against the real broker (every listener), plus a scripted peer for the
misbehaviours a real broker never shows (wrong correlation id, huge frame, KIP-511)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
import pytest
from scramp import ScramMechanism as ScramServerMechanism  # type: ignore[import-untyped]

from kafka_asgi.errors import (
    AuthenticationError,
    ConnectError,
    ConnectionClosedError,
    NetworkError,
    ProtocolError,
    RequestTimeout,
    TLSError,
)
from kafka_asgi.network.connection import BrokerConnection
from kafka_asgi.protocol.messages import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    FetchRequest,
    MetadataRequest,
    MetadataResponse,
    ProduceRequest,
    SaslAuthenticateRequest,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)
from kafka_asgi.protocol.messages.api_versions import ApiVersion
from kafka_asgi.protocol.messages.fetch import FetchPartition, FetchTopic
from kafka_asgi.protocol.messages.metadata import MetadataRequestTopic
from kafka_asgi.protocol.messages.produce import PartitionProduceData, TopicProduceData
from kafka_asgi.protocol.records import encode_batch
from tests.support.brokers import KafkaCluster
from tests.support.fake_peer import Peer, all_versions, fake_broker
from tests.support.listeners import LISTENER_CASES, client_options, host_port
from tests.support.ports import free_port
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.anyio

WRONG_PASSWORD = "definitely-not-the-password-42"


async def _metadata(conn: BrokerConnection, topics: list[str] | None = None) -> MetadataResponse:
    version = conn.choose_api_version(MetadataRequest.API_KEY)
    request = MetadataRequest(
        topics=None if topics is None else [MetadataRequestTopic(name=t) for t in topics],
        allow_auto_topic_creation=False,
    )
    response: MetadataResponse = await conn.request(request, version)
    return response


# ---------------------------------------------------------------- every listener


@pytest.mark.parametrize(("listener", "mechanism"), LISTENER_CASES)
async def test_listener_api_versions_and_metadata(
    anyio_backend: str, kafka: KafkaCluster, listener: str, mechanism: str | None
) -> None:
    options = client_options(kafka, listener, mechanism)
    host, port = host_port(getattr(kafka, listener))
    with anyio.fail_after(30):
        async with BrokerConnection(host, port, **options) as conn:
            assert conn.state == "open"
            # ApiVersions ran during connect: the broker's ranges are known.
            assert conn.api_versions[ApiVersionsRequest.API_KEY][1] >= 3
            assert MetadataRequest.API_KEY in conn.api_versions
            response = await _metadata(conn, [])
            assert [b.port for b in response.brokers] == [port]
            assert response.cluster_id
        assert conn.closed


async def test_api_versions_answered_at_negotiated_version(
    anyio_backend: str, kafka: KafkaCluster
) -> None:
    host, port = host_port(kafka.plaintext)
    async with BrokerConnection(host, port) as conn:
        version = conn.choose_api_version(ApiVersionsRequest.API_KEY)
        response: ApiVersionsResponse = await conn.request(
            ApiVersionsRequest(client_software_name="t", client_software_version="1"), version
        )
        assert response.error_code == 0
        assert {k.api_key: (k.min_version, k.max_version) for k in response.api_keys} == (
            conn.api_versions
        )


# ---------------------------------------------------------------- SASL and TLS failures


@pytest.mark.parametrize(
    ("listener", "mechanism"),
    [
        ("sasl_plaintext", "PLAIN"),
        ("sasl_plaintext", "SCRAM-SHA-256"),
        ("sasl_ssl", "SCRAM-SHA-512"),
    ],
)
async def test_wrong_password_is_an_authentication_error(
    anyio_backend: str,
    kafka: KafkaCluster,
    listener: str,
    mechanism: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="kafka_asgi")
    options = client_options(kafka, listener, mechanism, password=WRONG_PASSWORD)
    host, port = host_port(getattr(kafka, listener))
    started = time.monotonic()
    with anyio.fail_after(15):
        with pytest.raises(AuthenticationError) as info:
            async with BrokerConnection(host, port, request_timeout=10, **options):
                pass
    assert time.monotonic() - started < scaled(10)
    text = str(info.value)
    assert mechanism in text
    assert WRONG_PASSWORD not in text and kafka.username not in text
    assert not info.value.retriable
    for record in caplog.records:
        assert WRONG_PASSWORD not in record.getMessage()


async def test_wrong_ca_is_a_tls_error(anyio_backend: str, kafka: KafkaCluster) -> None:
    kafka.require("ssl", "other_ca_file")
    host, port = host_port(kafka.ssl)  # type: ignore[arg-type]
    with anyio.fail_after(15):
        with pytest.raises(TLSError, match=r"(?i)certificate"):
            async with BrokerConnection(host, port, ssl_cafile=kafka.other_ca_file):
                pass


async def test_system_cas_do_not_trust_the_test_ca(anyio_backend: str, kafka: KafkaCluster) -> None:
    kafka.require("ssl")
    host, port = host_port(kafka.ssl)  # type: ignore[arg-type]
    with anyio.fail_after(15):
        with pytest.raises(TLSError):
            async with BrokerConnection(host, port, ssl=True):
                pass


async def test_host_name_is_checked(anyio_backend: str, kafka: KafkaCluster) -> None:
    """The broker's certificate names 127.0.0.1 and localhost; a resolver that sends
    another name to 127.0.0.1 must fail the check (SNI/check use the name we asked for),
    unless ssl_check_hostname=False."""
    kafka.require("ssl", "ca_file")
    _, port = host_port(kafka.ssl)  # type: ignore[arg-type]
    options = {"ssl_cafile": kafka.ca_file, "resolver": lambda _host: "127.0.0.1"}
    with anyio.fail_after(15):
        with pytest.raises(TLSError, match=r"(?i)hostname|match"):
            async with BrokerConnection("kafka.invalid", port, **options):
                pass
        async with BrokerConnection(
            "kafka.invalid", port, ssl_check_hostname=False, **options
        ) as conn:
            assert (await _metadata(conn, [])).brokers
        async with BrokerConnection("localhost", port, ssl_cafile=kafka.ca_file) as conn:
            assert (await _metadata(conn, [])).brokers


async def test_mtls_without_client_certificate_fails(
    anyio_backend: str, kafka: KafkaCluster
) -> None:
    kafka.require("mtls", "ca_file")
    host, port = host_port(kafka.mtls)  # type: ignore[arg-type]
    with anyio.fail_after(15):
        # TLS 1.3: the server rejects the missing certificate after our side of the
        # handshake completed, so it surfaces on the first read (ApiVersions).
        with pytest.raises(TLSError, match=r"(?i)certificate"):
            async with BrokerConnection(host, port, ssl_cafile=kafka.ca_file):
                pass


async def test_plaintext_client_on_sasl_listener_is_not_authenticated(
    anyio_backend: str, kafka: KafkaCluster
) -> None:
    kafka.require("sasl_plaintext")
    host, port = host_port(kafka.sasl_plaintext)  # type: ignore[arg-type]
    with anyio.fail_after(15):
        async with BrokerConnection(host, port) as conn:
            # ApiVersions is allowed before SASL (KIP-43); anything else closes.
            with pytest.raises(ConnectionClosedError):
                await _metadata(conn, [])
            assert conn.closed


# ---------------------------------------------------------------- connect failures


async def test_connection_refused_is_a_connect_error(anyio_backend: str) -> None:
    port = free_port()
    with anyio.fail_after(10):
        with pytest.raises(ConnectError, match=str(port)):
            async with BrokerConnection("127.0.0.1", port, connect_timeout=2):
                pass


async def test_silent_peer_times_out_the_handshake(anyio_backend: str) -> None:
    async def silent(peer: Peer) -> None:
        await anyio.sleep(30)

    async with fake_broker(silent) as port:
        started = time.monotonic()
        with anyio.fail_after(10):
            with pytest.raises(ConnectError, match="handshake"):
                async with BrokerConnection("127.0.0.1", port, request_timeout=0.5):
                    pass
        assert time.monotonic() - started < scaled(5)


async def test_resolver_failure_is_a_connect_error(anyio_backend: str) -> None:
    def broken(host: str) -> str:
        raise LookupError(f"no address for {host}")

    with pytest.raises(ConnectError, match="resolver"):
        async with BrokerConnection("kafka.invalid", 9092, resolver=broken):
            pass


@pytest.mark.parametrize("host", ["\u3002", "xn--a.\u3002", "a\u00adb..c"])
async def test_a_host_name_idna_cannot_encode_is_a_connect_error(
    anyio_backend: str, host: str
) -> None:
    # A broker may advertise any string: one with no IDNA form is unreachable, as
    # one that does not resolve (the records wait for the broker), not a crash.
    with anyio.fail_after(10):
        with pytest.raises(ConnectError, match="connecting to"):
            async with BrokerConnection(host, 9092, connect_timeout=2):
                pass


# ---------------------------------------------------------------- requests


async def test_many_requests_in_flight_on_one_connection(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topics = [new_topic(), new_topic(partitions=3)]
    host, port = host_port(kafka.plaintext)
    results: dict[int, list[str]] = {}
    async with BrokerConnection(host, port) as conn:

        async def ask(i: int) -> None:
            wanted = [topics[i % 2]]
            response = await _metadata(conn, wanted)
            results[i] = [t.name for t in response.topics if t.name]
            assert len(response.topics[0].partitions) == (1 if i % 2 == 0 else 3)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(300):
                    tg.start_soon(ask, i)
        assert conn.in_flight == 0
        assert conn.state == "open"
    # Each response went to the request that asked for it.
    assert all(results[i] == [topics[i % 2]] for i in range(300))


def _produce(topic: str, acks: int, batch: bytes, timeout_ms: int = 10000) -> ProduceRequest:
    """A Produce request naming ``topic`` (v12 and below) with one batch for partition 0."""
    return ProduceRequest(
        acks=acks,
        timeout_ms=timeout_ms,
        topic_data=[
            TopicProduceData(
                name=topic, partition_data=[PartitionProduceData(index=0, records=batch)]
            )
        ],
    )


async def _topic_id(conn: BrokerConnection, topic: str) -> object:
    response = await _metadata(conn, [topic])
    return response.topics[0].topic_id


async def _ready_long_poll(
    conn: BrokerConnection, topic: str, version: int, max_wait_ms: int
) -> FetchRequest:
    """A long poll on ``topic``'s partition 0 once the partition is ready: a fresh
    partition may answer a fetch at once (with an error, or before its id is known)
    until its leader is ready, and then nothing would be left waiting."""
    with anyio.fail_after(scaled(30)):
        while True:
            topic_id = await _topic_id(conn, topic)
            probe = _long_poll(topic_id, version, 0)
            response = await conn.request(probe, version)
            if response.error_code == 0 and all(
                part.error_code == 0 for t in response.responses for part in t.partitions
            ):
                return _long_poll(topic_id, version, max_wait_ms)
            await anyio.sleep(0.1)


def _long_poll(topic_id: object, version: int, max_wait_ms: int) -> FetchRequest:
    # min_bytes=1 on an empty partition: the broker holds the request for max_wait_ms.
    return FetchRequest(
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        topics=[
            FetchTopic(
                topic_id=topic_id,  # type: ignore[arg-type]
                partitions=[FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1024)],
            )
        ],
    )


async def test_request_timeout_closes_the_connection(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    host, port = host_port(kafka.plaintext)
    async with BrokerConnection(host, port) as conn:
        version = conn.choose_api_version(FetchRequest.API_KEY, min=13)
        # The broker would answer after 30 s: a timeout well before that is ours,
        # however slow the machine (no bound close to the 0.5 s asked for).
        request = await _ready_long_poll(conn, topic, version, 30_000)
        started = time.monotonic()
        with anyio.fail_after(60):
            with pytest.raises(RequestTimeout, match="Fetch"):
                await conn.request(request, version, request_timeout=0.5)
        assert time.monotonic() - started < min(scaled(10), 25)
        assert conn.closed
        with pytest.raises(ConnectionClosedError):
            await _metadata(conn, [])


async def test_close_fails_every_waiting_request(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    host, port = host_port(kafka.plaintext)
    failures: list[BaseException] = []
    async with BrokerConnection(host, port) as conn:
        version = conn.choose_api_version(FetchRequest.API_KEY, min=13)
        request = await _ready_long_poll(conn, topic, version, 20000)

        async def wait() -> None:
            try:
                await conn.request(request, version)
            except ConnectionClosedError as exc:
                failures.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(wait)
                for _ in range(500):
                    if conn.in_flight == 5:
                        break
                    await anyio.sleep(0.01)
                assert conn.in_flight == 5
                await anyio.sleep(0.2)
                await conn.aclose()
    assert len(failures) == 5
    assert all("closed" in str(f) for f in failures)


async def test_cancelled_request_leaves_the_connection_usable(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    host, port = host_port(kafka.plaintext)
    async with BrokerConnection(host, port) as conn:
        version = conn.choose_api_version(FetchRequest.API_KEY, min=13)
        request = await _ready_long_poll(conn, topic, version, 1000)
        with anyio.move_on_after(0.2) as scope:
            await conn.request(request, version)
        assert scope.cancelled_caught
        # The abandoned Fetch's response arrives later and is dropped; the next
        # request still gets its own response.
        with anyio.fail_after(10):
            response = await _metadata(conn, [topic])
        assert response.topics[0].name == topic
        assert conn.state == "open" and conn.in_flight == 0


async def test_a_caller_cancelled_before_writing_leaves_the_connection_to_the_others(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    """A request whose caller's deadline has already passed (``move_on_after(0)``, or a
    deadline spent on synchronous work) writes nothing: the connection stays open and
    another task's request in flight gets its answer. It used to count as cancelled
    mid-write, closing the connection and failing the other request."""
    topic = new_topic()
    host, port = host_port(kafka.plaintext)
    async with BrokerConnection(host, port) as conn:
        version = conn.choose_api_version(FetchRequest.API_KEY, min=13)
        request = await _ready_long_poll(conn, topic, version, 1000)
        answered: list[object] = []

        async def long_poll() -> None:
            answered.append(await conn.request(request, version))

        with anyio.fail_after(scaled(20)):
            async with anyio.create_task_group() as tg:
                tg.start_soon(long_poll)
                assert await eventually(lambda: conn.in_flight == 1, 10)
                for _ in range(3):
                    with anyio.move_on_after(0) as gone:
                        await _metadata(conn, [topic])
                    assert gone.cancelled_caught
                assert conn.state == "open"
        # The long poll was held by the broker for its 1 s and answered, empty.
        assert len(answered) == 1
        assert conn.state == "open" and conn.in_flight == 0
        response = await _metadata(conn, [topic])
        assert response.topics[0].name == topic


async def test_acks_0_produce_expects_no_response(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    host, port = host_port(kafka.plaintext)

    def produce(acks: int, value: bytes) -> ProduceRequest:
        return _produce(topic, acks, encode_batch([(None, value, (), int(time.time() * 1000))]))

    async with BrokerConnection(host, port) as conn:
        # Produce v13 names topics by id; these requests name them.
        version = conn.choose_api_version(ProduceRequest.API_KEY, max=12)
        with anyio.fail_after(20):
            assert await conn.request(produce(0, b"a"), version, expect_response=False) is None
            assert conn.unconfirmed_writes == 1
            response = await conn.request(produce(1, b"b"), version)
        partition = response.responses[0].partition_responses[0]
        assert partition.error_code == 0
        # The acks=0 record went first on this connection, so it holds offset 0.
        assert partition.base_offset == 1
        assert conn.in_flight == 0
        # The answer to a later request confirmed that the broker read the first.
        assert conn.unconfirmed_writes == 0


async def test_confirm_writes_before_close_keeps_acks_0_records(
    anyio_backend: str, kafka: KafkaCluster, new_topic: Callable[..., str]
) -> None:
    """Records written with acks=0 and then the connection closed at once: without
    confirm_writes, what still sat in the socket's buffers could be dropped."""
    topic = new_topic()
    host, port = host_port(kafka.plaintext)
    now = int(time.time() * 1000)
    batches = [
        encode_batch([(None, b"%04d" % i + b"x" * 2000, (), now) for i in range(j, j + 100)])
        for j in range(0, 2000, 100)
    ]

    async with BrokerConnection(host, port) as conn:
        version = conn.choose_api_version(ProduceRequest.API_KEY, max=12)
        with anyio.fail_after(30):
            for batch in batches:
                await conn.request(_produce(topic, 0, batch), version, expect_response=False)
            assert conn.unconfirmed_writes == len(batches)
            await conn.confirm_writes()
            assert conn.unconfirmed_writes == 0
            await conn.confirm_writes()  # nothing to confirm: no request
    async with BrokerConnection(host, port) as conn:
        with anyio.fail_after(20):
            response = await conn.request(_produce(topic, 1, batches[0]), version)
    # Every acks=0 record was stored before the acknowledged one.
    assert response.responses[0].partition_responses[0].base_offset == 2000


# ---------------------------------------------------------------- misbehaving peers


async def test_wrong_correlation_id_closes_the_connection(anyio_backend: str) -> None:
    async def liar(peer: Peer) -> None:
        await peer.answer_api_versions()
        _, version, correlation_id = await peer.read_request()
        await peer.respond(correlation_id + 7, MetadataResponse(), version)
        await anyio.sleep(10)

    async with fake_broker(liar) as port:
        async with BrokerConnection("127.0.0.1", port) as conn:
            with anyio.fail_after(5):
                with pytest.raises(ProtocolError, match="correlation id"):
                    await _metadata(conn, [])
            assert conn.closed


async def test_oversized_frame_closes_the_connection(anyio_backend: str) -> None:
    async def huge(peer: Peer) -> None:
        await peer.answer_api_versions()
        await peer.read_request()
        await peer.send_raw((2**31 - 1).to_bytes(4, "big") + b"\x00" * 16)
        await anyio.sleep(10)

    async with fake_broker(huge) as port:
        async with BrokerConnection("127.0.0.1", port) as conn:
            with anyio.fail_after(5):
                with pytest.raises(ProtocolError, match="maximum frame size"):
                    await _metadata(conn, [])
            assert conn.closed


async def test_peer_closing_mid_request(anyio_backend: str) -> None:
    async def quitter(peer: Peer) -> None:
        await peer.answer_api_versions()
        await peer.read_request()

    async with fake_broker(quitter) as port:
        async with BrokerConnection("127.0.0.1", port) as conn:
            with anyio.fail_after(5):
                with pytest.raises(ConnectionClosedError):
                    await _metadata(conn, [])
            assert conn.closed


async def test_peer_that_stops_reading_times_out_the_writer_and_those_behind_it(
    anyio_backend: str,
) -> None:
    """A request too large for the socket buffers to a peer that never reads: the
    write times out (the connection closes, since half a frame is on the wire) and
    a request queued behind it does not wait longer than its own timeout."""

    async def deaf(peer: Peer) -> None:
        await peer.answer_api_versions()
        await anyio.sleep(30)

    big = _produce("t", 1, encode_batch([(None, b"x" * (16 << 20), (), 0)]), timeout_ms=1000)
    errors: list[BaseException] = []
    async with fake_broker(deaf) as port:
        async with BrokerConnection("127.0.0.1", port, request_timeout=1.0) as conn:
            version = conn.choose_api_version(ProduceRequest.API_KEY, max=12)

            async def second() -> None:
                try:
                    await _metadata(conn, [])
                except NetworkError as exc:
                    errors.append(exc)

            started = time.monotonic()
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    with pytest.raises(RequestTimeout, match="sending"):
                        tg.start_soon(second)
                        await conn.request(big, version)
            assert time.monotonic() - started < scaled(5)
            assert conn.closed
            # The queued request failed too (timed out waiting to send, or found the
            # connection closed), within its own timeout.
            assert len(errors) == 1
            assert isinstance(errors[0], (RequestTimeout, ConnectionClosedError))


async def test_api_versions_downgrade_kip_511(anyio_backend: str) -> None:
    """An older broker answers an unknown ApiVersions version in v0 with
    UNSUPPORTED_VERSION and its own range; the client retries at that version."""
    seen: list[int] = []

    async def old_broker(peer: Peer) -> None:
        _, version, correlation_id = await peer.read_request()
        seen.append(version)
        await peer.respond(
            correlation_id,
            ApiVersionsResponse(
                error_code=35, api_keys=[ApiVersion(api_key=18, min_version=0, max_version=2)]
            ),
            0,
        )
        _, version, correlation_id = await peer.read_request()
        seen.append(version)
        await peer.respond(correlation_id, all_versions(), version)
        await anyio.sleep(10)

    async with fake_broker(old_broker) as port:
        with anyio.fail_after(5):
            async with BrokerConnection("127.0.0.1", port) as conn:
                assert MetadataRequest.API_KEY in conn.api_versions
    assert seen == [ApiVersionsRequest.MAX_VERSION, 2]


async def test_plaintext_client_on_tls_listener(anyio_backend: str, kafka: KafkaCluster) -> None:
    kafka.require("ssl")
    host, port = host_port(kafka.ssl)  # type: ignore[arg-type]
    with anyio.fail_after(15):
        with pytest.raises(ProtocolError, match="TLS listener"):
            async with BrokerConnection(host, port):
                pass


async def test_tls_client_on_plaintext_listener(anyio_backend: str, kafka: KafkaCluster) -> None:
    kafka.require("ca_file")
    host, port = host_port(kafka.plaintext)
    with anyio.fail_after(15):
        with pytest.raises(ConnectError, match="plaintext listener"):
            async with BrokerConnection(host, port, ssl_cafile=kafka.ca_file):
                pass


# ---------------------------------------------------------------- SASL without SaslAuthenticate


def _legacy_sasl_versions() -> ApiVersionsResponse:
    # A broker from before KIP-152: SaslHandshake v0 only, no SaslAuthenticate (key 36).
    return all_versions(
        {SaslHandshakeRequest.API_KEY: (0, 0), SaslAuthenticateRequest.API_KEY: None}
    )


async def _legacy_handshake(peer: Peer, seen: list[str]) -> None:
    _, version, correlation_id = await peer.read_request()
    await peer.respond(correlation_id, _legacy_sasl_versions(), version)
    api_key, version, correlation_id, body = await peer.read_request_body()
    assert (api_key, version) == (SaslHandshakeRequest.API_KEY, 0)
    mechanism = SaslHandshakeRequest.decode(body, 0).mechanism
    seen.append(mechanism)
    await peer.respond(correlation_id, SaslHandshakeResponse(mechanisms=[mechanism]), version)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_raw_sasl_tokens_after_handshake_v0_scram(anyio_backend: str, mechanism: str) -> None:
    """SaslHandshake v0, then raw size-prefixed SCRAM tokens (the pre-KIP-152 form),
    with scramp's server on the other end checking the proof."""
    seen: list[str] = []
    server_mech = ScramServerMechanism(mechanism)
    auth = server_mech.make_auth_info("pw-123")

    async def legacy(peer: Peer) -> None:
        await _legacy_handshake(peer, seen)
        server = server_mech.make_server(lambda _user: auth)
        server.set_client_first((await peer.read_raw()).decode())
        await peer.send_token(server.get_server_first().encode())
        server.set_client_final((await peer.read_raw()).decode())
        await peer.send_token(server.get_server_final().encode())
        seen.append("authenticated")
        await peer.answer_api_versions()  # any framed request after auth
        await anyio.sleep(10)

    async with fake_broker(legacy) as port:
        with anyio.fail_after(10):
            async with BrokerConnection(
                "127.0.0.1",
                port,
                sasl_mechanism=mechanism,
                sasl_username="u",
                sasl_password="pw-123",
            ) as conn:
                response = await conn.request(ApiVersionsRequest(), 0)
                assert response.api_keys
    assert seen == [mechanism, "authenticated"]


async def test_raw_sasl_plain_token(anyio_backend: str) -> None:
    """PLAIN's one token, answered as Java's broker does without KIP-152 headers
    (SaslServerAuthenticator): PLAIN's empty response as a 0-byte frame, which the
    client must read before its first request's response."""
    seen: list[str] = []
    tokens: list[bytes] = []

    async def legacy(peer: Peer) -> None:
        await _legacy_handshake(peer, seen)
        tokens.append(await peer.read_raw())
        await peer.send_token(b"")
        await peer.answer_api_versions()
        await anyio.sleep(10)

    async with fake_broker(legacy) as port:
        with anyio.fail_after(10):
            async with BrokerConnection(
                "127.0.0.1", port, sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"
            ) as conn:
                await conn.request(ApiVersionsRequest(), 0)
    assert seen == ["PLAIN"] and tokens == [b"\x00u\x00p"]


async def test_raw_sasl_failure_is_an_authentication_error(anyio_backend: str) -> None:
    """Without SaslAuthenticate a broker reports bad credentials by closing."""

    async def legacy(peer: Peer) -> None:
        await _legacy_handshake(peer, [])
        await peer.read_raw()  # client-first; then hang up

    async with fake_broker(legacy) as port:
        with anyio.fail_after(10):
            with pytest.raises(AuthenticationError, match="closed the connection"):
                async with BrokerConnection(
                    "127.0.0.1",
                    port,
                    sasl_mechanism="SCRAM-SHA-256",
                    sasl_username="u",
                    sasl_password="secret-pw",
                ):
                    pass


async def test_raw_sasl_plain_refusal_is_an_authentication_error(anyio_backend: str) -> None:
    """A wrong PLAIN password without SaslAuthenticate: the broker closes instead of
    sending the empty frame, which the client reads as the refusal it is."""

    async def legacy(peer: Peer) -> None:
        await _legacy_handshake(peer, [])
        await peer.read_raw()  # the token; then hang up

    async with fake_broker(legacy) as port:
        with anyio.fail_after(10):
            with pytest.raises(AuthenticationError, match="closed the connection during SASL"):
                async with BrokerConnection(
                    "127.0.0.1",
                    port,
                    sasl_mechanism="PLAIN",
                    sasl_username="u",
                    sasl_password="secret-pw",
                ):
                    pass


async def test_sasl_on_a_listener_without_sasl(anyio_backend: str, kafka: KafkaCluster) -> None:
    kafka.require("ssl", "ca_file")
    host, port = host_port(kafka.ssl)  # type: ignore[arg-type]
    with anyio.fail_after(15):
        with pytest.raises(AuthenticationError, match="ILLEGAL_SASL_STATE"):
            async with BrokerConnection(
                host,
                port,
                ssl_cafile=kafka.ca_file,
                sasl_mechanism="PLAIN",
                sasl_username="u",
                sasl_password="p",
            ):
                pass


async def test_mechanism_not_enabled(anyio_backend: str) -> None:
    async def plain_only(peer: Peer) -> None:
        await peer.answer_api_versions()
        _, version, correlation_id = await peer.read_request()
        await peer.respond(
            correlation_id,
            SaslHandshakeResponse(error_code=33, mechanisms=["PLAIN", "OAUTHBEARER"]),
            version,
        )
        await anyio.sleep(10)

    async with fake_broker(plain_only) as port:
        with anyio.fail_after(10):
            with pytest.raises(
                AuthenticationError, match=r"SCRAM-SHA-512 is not enabled.*PLAIN, OAUTHBEARER"
            ):
                async with BrokerConnection(
                    "127.0.0.1",
                    port,
                    sasl_mechanism="SCRAM-SHA-512",
                    sasl_username="u",
                    sasl_password="p",
                ):
                    pass
