"""Throttles: the pauses brokers ask of a client (KIP-219), kept by KafkaClient for
every request (the real-broker tests: tests/cluster/test_throttle_broker.py,
tests/producer/test_throttle_broker.py and tests/consumer/test_consumer_throttle_broker.py)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import anyio
import pytest

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.cluster.metadata import BrokerMetadata
from kafka_asgi.cluster.throttle import MUTES_FROM, Throttles
from kafka_asgi.protocol.messages import (
    ApiVersionsResponse,
    FetchResponse,
    MetadataResponse,
    ProduceResponse,
)

pytestmark = pytest.mark.anyio

log = logging.getLogger("tests.throttle")


async def test_a_muted_broker_waits_out_its_pause_and_others_do_not(anyio_backend: str) -> None:
    throttles = Throttles(log, "consumer", "requests to it wait", "throttle_time_ms")
    throttles.note(1, 300, True, 30.0)
    start = anyio.current_time()
    await throttles.wait(2)  # another broker: at once
    assert anyio.current_time() - start < 0.1
    await throttles.wait(1)
    assert anyio.current_time() - start >= 0.3
    await throttles.wait(1)  # over: at once, and forgotten
    assert 1 not in throttles.paused
    assert throttles.asked_ms == 300


async def test_an_old_version_only_counts_and_a_long_pause_is_capped(anyio_backend: str) -> None:
    throttles = Throttles(
        log, "producer", "Produce requests to it wait", "stats().throttle_time_ms"
    )
    throttles.note(1, 5000, False, 30.0)  # the broker delayed its response instead
    assert throttles.paused == {}
    throttles.note(1, 2**31 - 1, True, 0.2)  # whatever a broker asks: at most the cap
    start = anyio.current_time()
    with anyio.fail_after(5):
        await throttles.wait(1)
    assert 0.15 <= anyio.current_time() - start < 1.0
    assert throttles.asked_ms == 5000 + 2**31 - 1


async def test_a_shorter_pause_does_not_cut_a_longer_one(anyio_backend: str) -> None:
    throttles = Throttles(log, "consumer", "requests to it wait", "throttle_time_ms")
    throttles.note(1, 400, True, 30.0)
    throttles.note(1, 100, True, 30.0)
    start = anyio.current_time()
    await throttles.wait(1)
    assert anyio.current_time() - start >= 0.35


class HandshakenConnection:
    """What Throttles.handshake reads of a connection: ``asked`` is
    ``(throttle_time_ms, ApiVersions version, anyio time)``."""

    def __init__(self, asked: tuple[int, int, float] | None) -> None:
        self.handshake_throttle: tuple[int, ApiVersionsResponse, float] | None = None
        if asked is not None:
            ms, version, since = asked
            self.handshake_throttle = (version, ApiVersionsResponse(throttle_time_ms=ms), since)


async def test_a_pause_asked_in_the_handshake_is_noted_once(anyio_backend: str) -> None:
    throttles = Throttles(log, "client", "requests to it wait", "stats().throttle_time_ms")
    now = anyio.current_time()
    # ApiVersions v3, answered 100 ms ago with a pause of 500 ms: 400 left, for node 1.
    conn = HandshakenConnection((500, 3, now - 0.1))
    left = throttles.handshake(1, conn, 30.0)  # type: ignore[arg-type]
    assert 0.35 < left <= 0.4
    assert conn.handshake_throttle is None  # noted once
    assert throttles.handshake(1, conn, 30.0) == 0.0  # type: ignore[arg-type]
    assert throttles.asked_ms == 500
    assert 0.35 < throttles.paused[1] - anyio.current_time() <= 0.4
    # A bootstrap address (no node id yet): counted, and the request still waits.
    assert throttles.handshake(None, HandshakenConnection((200, 3, now)), 30.0) > 0.1  # type: ignore[arg-type]
    assert throttles.asked_ms == 700 and list(throttles.paused) == [1]
    # ApiVersions v1 (before KIP-219): the broker delayed its answer, nothing muted.
    assert throttles.handshake(2, HandshakenConnection((300, 1, now)), 30.0) == 0.0  # type: ignore[arg-type]
    assert throttles.asked_ms == 1000 and 2 not in throttles.paused
    # Whatever a broker asks, at most the cap.
    assert throttles.handshake(3, HandshakenConnection((2**31 - 1, 3, now)), 0.2) <= 0.2  # type: ignore[arg-type]
    # No pause asked: nothing.
    assert throttles.handshake(4, HandshakenConnection(None), 30.0) == 0.0  # type: ignore[arg-type]


async def test_one_warning_a_minute(anyio_backend: str, caplog: pytest.LogCaptureFixture) -> None:
    throttles = Throttles(log, "consumer", "requests to it wait", "throttle_time_ms")
    with caplog.at_level(logging.WARNING, logger="tests.throttle"):
        for _ in range(5):
            throttles.note(3, 10, True, 30.0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "kafka_asgi consumer: broker 3 throttles this client" in messages[0]
    assert "requests to it wait (10 ms asked so far, throttle_time_ms)" in messages[0]


SPEC_DIR = Path(__file__).resolve().parents[2] / "spec" / "kafka-messages"
_MUTES_NOTE = re.compile(
    r"Starting in version (\d+), on quota violation,? brokers send out\s*(?://\s*)?"
    r"responses before throttling"
)


def test_the_versions_that_mute_are_those_of_the_message_definitions() -> None:
    noted = {}
    for path in sorted(SPEC_DIR.glob("*Response.json")):
        text = path.read_text()
        found = _MUTES_NOTE.search(text)
        if found is None:
            continue
        # (the definitions have // comments: the api key is read from its line)
        key = re.search(r'"apiKey":\s*(\d+)', text)
        assert key is not None, path
        noted[int(key.group(1))] = int(found.group(1))
    assert len(noted) >= 30, "the definitions' notes were not found"
    expected = {**noted, 0: 6}  # Produce v6, which its definition does not note
    assert MUTES_FROM == expected


async def test_a_response_notes_its_throttle_by_api_and_version(anyio_backend: str) -> None:
    throttles = Throttles(log, "client", "requests to it wait", "stats().throttle_time_ms")
    throttles.answered(1, MetadataResponse.API_KEY, 5, MetadataResponse(throttle_time_ms=100), 30)
    assert throttles.paused == {}  # Metadata v5: the broker delayed its answer itself
    throttles.answered(1, MetadataResponse.API_KEY, 6, MetadataResponse(throttle_time_ms=100), 30)
    assert set(throttles.paused) == {1}
    throttles.answered(None, FetchResponse.API_KEY, 12, FetchResponse(throttle_time_ms=50), 30)
    assert set(throttles.paused) == {1}  # a bootstrap address: counted, nothing to hold
    throttles.answered(2, ProduceResponse.API_KEY, 9, ProduceResponse(throttle_time_ms=0), 30)
    throttles.answered(2, 61, 0, ProduceResponse(throttle_time_ms=10), 30)  # newer API: v0
    assert set(throttles.paused) == {1, 2}
    throttles.answered(3, 18, 3, object(), 30)  # no throttle field
    assert throttles.asked_ms == 100 + 100 + 50 + 10


async def test_a_request_for_any_broker_tries_a_paused_one_last(anyio_backend: str) -> None:
    client = KafkaClient("127.0.0.1:1")  # (not started: no connection is opened)
    for node in (1, 2, 3):
        client.metadata.brokers[node] = BrokerMetadata(node, f"10.0.0.{node}", 9092)
    places = set()
    for _ in range(40):  # the order is shuffled
        client.throttles.paused.clear()
        client.throttles.note(2, 5000, True, 30.0)
        candidates = client._candidates()
        assert candidates[2][2] == 2  # after 1 and 3, before the bootstrap address
        assert candidates[3] == ("127.0.0.1", 1, None)
        client.throttles.paused[2] = anyio.current_time() - 1  # over: in any place again
        places.add([c[2] for c in client._candidates()].index(2))
    assert places == {0, 1, 2}
