"""A cancellation that reaches a producer task without aclose() asking for it.

On asyncio a task can receive a cancellation that none of its own cancel scopes,
nor the producer, ordered: one leaking out of a cancel scope, or the event loop
shutting down.  A task of the producer's task group ended by one makes anyio
cancel the whole group: the flusher and every request stop, nothing is logged,
flush() waits out its timeout and aclose() reports everything held.  Here the
tasks are cancelled natively (``Task.cancel()``, which only asyncio has): the
producer logs it, goes on, and delivers every record once, in order.
"""

from __future__ import annotations

import asyncio
import logging

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.producer import ProducerClosedError
from tests.support.fake_client import FakeClient
from tests.support.timing import scaled

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Task.cancel() from outside: trio has no such thing


def _tasks(suffix: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().endswith(suffix) and not t.done()]


def _stray_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and "while the producer runs" in r.getMessage()
    ]


async def test_requests_cancelled_from_outside_are_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeClient()
    client.add_topic("t", 3)
    client.gate = anyio.Event()  # Produce answers wait: the requests stay in flight
    producer = Producer(
        client=client, enable_idempotence=True, required_acks=-1, batch_num=10, flush_time=0.01
    )
    sent = [b"%04d" % i for i in range(300)]
    async with producer:
        for i, value in enumerate(sent):
            producer.send_nowait("t", value, key=b"%d" % (i % 7))
        for _ in range(500):  # the first request waits for the gate
            if _tasks("._request"):
                break
            await anyio.sleep(0.01)
        cancelled = _tasks("._request")
        assert cancelled
        for task in cancelled:
            task.cancel()  # written already (the fake applies them): answers lost
        await anyio.sleep(0.05)
        client.gate.set()
        with anyio.fail_after(scaled(10)):
            await producer.flush()
        stats = producer.stats()
    assert stats.delivered == len(sent) and stats.failed == 0
    assert stats.retried > 0
    stored: list[bytes | None] = []
    for p in range(3):  # in the order handed over (numbered values), once each
        values = [s.value for s in client.logs.get(("t", p), [])]
        assert values == sorted(values), f"partition {p} out of order"
        stored += values
    assert sorted(stored) == sent
    assert len(_stray_errors(caplog)) == len(cancelled)


async def test_the_flusher_cancelled_from_outside_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeClient()
    client.add_topic("t", 1)
    producer = Producer(client=client, flush_time=0.01)
    async with producer:
        producer.send_nowait("t", b"before")
        with anyio.fail_after(scaled(5)):
            await producer.flush()
        (flusher,) = _tasks("._flusher")
        flusher.cancel()
        await anyio.sleep(0.05)
        assert not flusher.done()
        producer.send_nowait("t", b"after")
        with anyio.fail_after(scaled(5)):
            await producer.flush()
    assert [s.value for s in client.logs[("t", 0)]] == [b"before", b"after"]
    assert len(_stray_errors(caplog)) == 1


async def test_background_tasks_stopped_are_reported_not_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task without that guard (here the producer-id task) ended by such a
    cancellation still takes the task group down: that is logged, flush() says so
    at once instead of waiting out its timeout, and aclose() reports the records."""
    client = FakeClient()
    client.add_topic("t", 1)
    client.gate = anyio.Event()  # the record stays in flight
    reported: list[bytes | None] = []
    producer = Producer(
        client=client,
        enable_idempotence=True,
        required_acks=-1,
        flush_time=0.01,
        error_handle=lambda topic, partition, records, error, retriable: reported.extend(
            r[1] for r in records
        ),
    )
    await producer.start()
    producer.send_nowait("t", b"x")
    await anyio.sleep(0.05)
    (pid_task,) = _tasks("._producer_id_task")
    pid_task.cancel()
    await anyio.sleep(0.05)
    with anyio.fail_after(scaled(5)):
        with pytest.raises(ProducerClosedError, match="background tasks stopped"):
            await producer.flush(timeout=60)
    with anyio.fail_after(scaled(2)):  # not close_timeout (10 s): nothing would come
        await producer.aclose()
    assert reported == [b"x"]
    assert any(
        r.levelno == logging.ERROR and "background tasks stopped" in r.getMessage()
        for r in caplog.records
    )
