"""An explicit partition the topic does not have: refused at the call (ValueError
naming the topic, the partition and the count) when the topic's metadata is known;
for a topic not looked up yet, accepted and reported through error_handle."""

from __future__ import annotations

import pytest

from tests.support.fake_client import FakeClient
from tests.support.producers import Reports, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake() -> FakeClient:
    client = FakeClient()
    client.add_topic("t", 2)
    return client


@pytest.fixture
def reports() -> Reports:
    return Reports()


async def test_partition_past_the_known_count_is_refused_at_the_call(
    fake: FakeClient, reports: Reports
) -> None:
    async with running(fake, reports) as producer:
        await producer.send("t", b"warm")
        for send in (producer.send_nowait, producer.send, producer.send_buffered):
            with pytest.raises(ValueError, match=r"partition 2 of topic 't'.* 2 partitions"):
                result = send("t", b"bad", partition=2)
                if result is not None:
                    await result
        assert producer.stats().buffered_bytes == 0
    assert not reports.errors


async def test_partition_of_a_topic_not_known_yet_is_reported_later(
    fake: FakeClient, reports: Reports
) -> None:
    fake.add_topic("later", 2)
    async with running(fake, reports) as producer:
        producer.send_nowait("later", b"bad", partition=5)  # no metadata yet: accepted
        await producer.flush()
        assert producer.stats().buffered_bytes == 0
    assert [e[0] for e in reports.errors] == ["later"]
