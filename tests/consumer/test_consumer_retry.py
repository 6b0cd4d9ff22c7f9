"""BasicConsumer's leader routing retries retriable errors with backoff for up to
request_timeout, refreshing metadata for stale-metadata ones, then raises the last one
(CI once saw a fresh topic's leader answer NOT_LEADER_OR_FOLLOWER past the single retry
there was before)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from kafka_asgi.consumer import BasicConsumer
from kafka_asgi.consumer.consumer import _Retry
from kafka_asgi.consumer.results import LATEST
from kafka_asgi.protocol.errors import (
    NotLeaderOrFollowerError,
    OffsetNotAvailableError,
    TopicAuthorizationFailedError,
)
from kafka_asgi.protocol.messages.list_offsets import (
    ListOffsetsPartitionResponse,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
)

pytestmark = pytest.mark.anyio


class FakeClient:
    """Leader 0 for every partition; counts metadata refreshes."""

    def __init__(self) -> None:
        self.refreshes = 0

    async def leader_for(self, topic: str, partition: int) -> int:
        return 0

    async def refresh(self, topics: list[str]) -> None:
        self.refreshes += 1


def consumer_with(client: FakeClient, request_timeout: float) -> BasicConsumer:
    consumer = BasicConsumer("127.0.0.1:1", request_timeout=request_timeout, retry_backoff=0.01)
    consumer._client = client  # type: ignore[assignment]
    return consumer


class Leader:
    """A call to the leader: raises ``errors`` one per call, then answers 42."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, leader: int) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return 42


async def test_retries_until_the_leader_answers(anyio_backend: str) -> None:
    client = FakeClient()
    consumer = consumer_with(client, request_timeout=10.0)
    # More refusals than the one retry there was.
    call = Leader(*[_Retry(NotLeaderOrFollowerError("topic 't' partition 0")) for _ in range(5)])
    with anyio.fail_after(5):
        assert await consumer._on_leader("t", 0, call) == 42
    assert (call.calls, client.refreshes) == (6, 5)


async def test_gives_up_after_request_timeout(anyio_backend: str) -> None:
    client = FakeClient()
    consumer = consumer_with(client, request_timeout=0.5)

    async def call(leader: int) -> Any:
        raise _Retry(NotLeaderOrFollowerError("topic 't' partition 0"))

    started = time.monotonic()
    with anyio.fail_after(10):
        with pytest.raises(NotLeaderOrFollowerError, match="partition 0"):
            await consumer._on_leader("t", 0, call)
    elapsed = time.monotonic() - started
    assert 0.2 < elapsed < 5.0
    assert client.refreshes >= 3


async def test_other_errors_raise_at_once(anyio_backend: str) -> None:
    client = FakeClient()
    consumer = consumer_with(client, request_timeout=10.0)
    call = Leader(TopicAuthorizationFailedError("topic 't'"))
    with pytest.raises(TopicAuthorizationFailedError):
        await consumer._on_leader("t", 0, call)
    assert (call.calls, client.refreshes) == (1, 0)


class ListOffsetsLeader(FakeClient):
    """Answers ListOffsets with ``codes`` one per request, then offset 42."""

    def __init__(self, *codes: int) -> None:
        super().__init__()
        self.codes = list(codes)
        self.requests = 0

    async def send(self, node: int, request: Any, **kwargs: Any) -> ListOffsetsResponse:
        self.requests += 1
        code = self.codes.pop(0) if self.codes else 0
        partition = ListOffsetsPartitionResponse(
            partition_index=0, error_code=code, offset=-1 if code else 42
        )
        return ListOffsetsResponse(
            topics=[ListOffsetsTopicResponse(name="t", partitions=[partition])]
        )


async def test_offset_not_available_is_retried_without_a_refresh(anyio_backend: str) -> None:
    # OFFSET_NOT_AVAILABLE (KIP-207): a new leader's high watermark has not reached its
    # epoch's start yet. Retriable, but no sign of stale metadata: the code before
    # retried only errors that were both, and raised this one at once.
    client = ListOffsetsLeader(78, 78)
    consumer = consumer_with(client, request_timeout=10.0)
    with anyio.fail_after(5):
        assert await consumer.list_offset("t", 0, LATEST) == 42
    assert (client.requests, client.refreshes) == (3, 0)


async def test_offset_not_available_gives_up_after_request_timeout(anyio_backend: str) -> None:
    client = ListOffsetsLeader(*[78] * 1000)
    consumer = consumer_with(client, request_timeout=0.5)
    with anyio.fail_after(10):
        with pytest.raises(OffsetNotAvailableError, match="partition 0"):
            await consumer.list_offset("t", 0, LATEST)
    assert client.requests >= 3 and client.refreshes == 0
