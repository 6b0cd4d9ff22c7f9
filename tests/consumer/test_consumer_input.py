"""BasicConsumer's arguments are checked at the call, before any request: a topic
name Kafka cannot have is refused as the producer refuses it (the same rule,
kafka_asgi.cluster.metadata.check_topic), naming the value."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from kafka_asgi.consumer import BasicConsumer
from kafka_asgi.protocol.errors import KafkaError
from kafka_asgi.protocol.framing import MAX_FRAME_SIZE, MAX_RECORDS_SIZE

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


@pytest.mark.parametrize("max_bytes", [0, MAX_RECORDS_SIZE + 1, 1 << 31, True])
async def test_max_bytes_beyond_one_frame_is_refused_at_the_call(
    anyio_backend: str, max_bytes: Any
) -> None:
    # An answer of more than 100 MiB would be refused by the connection as a corrupt
    # stream, so the largest max_bytes is the frame cap less room for the headers.
    message = rf"max_bytes must be an int in \[1, {MAX_RECORDS_SIZE}\], got {max_bytes!r}"
    async with BasicConsumer(NOBODY, request_timeout=5) as consumer:
        with anyio.fail_after(1):
            with pytest.raises(ValueError, match=message):
                await consumer.fetch("t", 0, 0, max_bytes=max_bytes)
            with pytest.raises(ValueError, match=message):
                async for _ in consumer.follow("t", 0, max_bytes=max_bytes):
                    pass


async def test_the_largest_max_bytes_is_let_through(anyio_backend: str) -> None:
    # Accepted at the call: the fetch goes on to the network, where nobody listens.
    assert MAX_RECORDS_SIZE < MAX_FRAME_SIZE
    async with BasicConsumer(NOBODY, request_timeout=0.5) as consumer:
        with anyio.fail_after(10):
            with pytest.raises(KafkaError) as info:
                await consumer.fetch("t", 0, 0, max_bytes=MAX_RECORDS_SIZE)
    assert not isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "64MiB", None, 1 << 63])
def test_a_bad_max_decoded_bytes_is_refused_at_construction(value: Any) -> None:
    with pytest.raises(ValueError, match=rf"max_decoded_bytes .*got {value!r}"):
        BasicConsumer(NOBODY, max_decoded_bytes=value)
