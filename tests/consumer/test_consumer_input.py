"""BasicConsumer's arguments are checked at the call, before any request: a topic
name Kafka cannot have is refused as the producer refuses it (the same rule,
kafka_asgi.cluster.metadata.check_topic), naming the value."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from kafka_asgi.consumer import BasicConsumer

pytestmark = pytest.mark.anyio

# Nothing listens there: a check that let the call through would get ConnectError.
NOBODY = "127.0.0.1:1"

BAD_TOPICS: list[tuple[Any, type[Exception], str]] = [
    ("", ValueError, "invalid topic name ''"),
    ("a b", ValueError, "invalid topic name 'a b'"),
    ("..", ValueError, "invalid topic name '..'"),
    ("t" * 250, ValueError, "invalid topic name"),
    ("t\udcff", ValueError, "invalid topic name 't\\\\udcff'"),
    (5, TypeError, "topic must be a str, not int"),
]


@pytest.mark.parametrize(("topic", "exc", "message"), BAD_TOPICS)
async def test_a_bad_topic_is_refused_at_the_call(
    anyio_backend: str, topic: Any, exc: type[Exception], message: str
) -> None:
    async with BasicConsumer(NOBODY, request_timeout=5) as consumer:
        with anyio.fail_after(1):
            with pytest.raises(exc, match=message):
                await consumer.fetch(topic, 0, 0)
            with pytest.raises(exc, match=message):
                await consumer.list_offset(topic, 0, -1)
            with pytest.raises(exc, match=message):
                async for _ in consumer.follow(topic, 0):
                    pass
