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
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.network.errors import ConnectionClosedError
from kafka_asgi.producer import ProducerClosedError, sender
from kafka_asgi.producer.spill import SpillStore
from kafka_asgi.protocol.compression import compress
from tests.support.fake_client import FakeClient, Fault
from tests.support.pipelining import burst, opts, stored
from tests.support.producers import Reports, running
from tests.support.timing import eventually, scaled

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
        if r.levelno == logging.ERROR and "was cancelled while it runs" in r.getMessage()
    ]


async def _cancel_from_outside(suffix: str) -> asyncio.Task[object]:
    """Cancel the one task named ``...suffix`` natively once it waits inside (a task
    cancelled before its first step never enters its own code)."""
    assert await eventually(lambda: bool(_tasks(suffix)), 5.0, interval=0.01)
    await anyio.sleep(0.05)
    (task,) = _tasks(suffix)
    task.cancel()
    return task


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


async def test_the_producer_id_task_cancelled_from_outside_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeClient()
    client.add_topic("t", 1)
    client.hold = anyio.Event()  # InitProducerId waits: the task is in its request
    producer = Producer(client=client, enable_idempotence=True, required_acks=-1, flush_time=0.01)
    async with producer:
        producer.send_nowait("t", b"x")
        pid_task = await _cancel_from_outside("._producer_id_task")
        await anyio.sleep(0.05)
        assert not pid_task.done()
        client.hold.set()
        with anyio.fail_after(scaled(5)):
            await producer.flush()
        stats = producer.stats()
    assert stats.delivered == 1 and stats.failed == 0
    assert [s.value for s in client.logs[("t", 0)]] == [b"x"]
    assert len(_stray_errors(caplog)) == 1


async def test_a_metadata_request_cancelled_from_outside_is_made_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeClient()
    client.add_topic("t", 2)
    client.hold = anyio.Event()  # the topic's metadata request waits
    producer = Producer(client=client, flush_time=0.01)
    async with producer:
        producer.send_nowait("t", b"a", partition=0)
        producer.send_nowait("t", b"b", partition=1)
        await _cancel_from_outside("._fetch_topic")
        await anyio.sleep(0.05)
        client.hold.set()
        with anyio.fail_after(scaled(5)):
            await producer.flush()
        stats = producer.stats()
    assert stats.delivered == 2 and stats.failed == 0
    assert [s.value for s in client.logs[("t", 0)]] == [b"a"]
    assert [s.value for s in client.logs[("t", 1)]] == [b"b"]
    assert client.fetches == 2  # the cancelled request, then another
    assert len(_stray_errors(caplog)) == 1


async def test_describe_producers_cancelled_from_outside_bumps_the_epoch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The question after an out-of-order refusal (test_pipelining.py) cancelled
    from outside: the producer goes on as when it gets no answer (a new epoch, as
    Java's client does), every record written, in order, none reported."""
    fake = FakeClient()
    fake.add_topic("one", 1)
    reports = Reports()
    for _ in range(3):
        fake.faults.append(Fault(ConnectionClosedError("gone"), written=True))
    async with running(fake, reports, **opts(max_in_flight=3, retry_backoff=0.3)) as producer:
        await burst(fake, producer, 50, 3)
        assert await eventually(lambda: producer.stats().retried > 0, 5.0, interval=0.005)
        fake.restart()
        written = len(stored(fake))
        fake.hold = anyio.Event()
        assert fake.gate is not None
        fake.gate.set()
        await _cancel_from_outside("._ask_sequence")
        await anyio.sleep(0.05)
        fake.hold.set()
    assert not reports.errors
    assert stored(fake) == [*range(written), *range(50)]
    assert list(fake.epochs.values()) == [1]
    assert fake.describes == 0  # cancelled before the broker answered
    assert len(_stray_errors(caplog)) == 1


async def test_a_compression_task_cancelled_from_outside_is_done_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()

    def slow(codec: int, data: bytes, level: int | None = None) -> bytes:
        started.set()
        time.sleep(0.2)
        return compress(codec, data, level)

    monkeypatch.setattr(sender, "compress", slow)
    client = FakeClient()
    client.add_topic("t", 1)
    producer = Producer(client=client, compression="gzip", batch_size=1 << 20, flush_time=0.01)
    values = [b"%06d" % i + b"x" * 994 for i in range(40)]  # 40 KB: on a worker thread
    async with producer:
        for v in values:
            producer.send_nowait("t", v)
        for _ in range(500):
            if started.is_set():
                break
            await anyio.sleep(0.01)
        (task,) = _tasks("._compress_off_loop")
        task.cancel()
        with anyio.fail_after(scaled(5)):
            await producer.flush()
        stats = producer.stats()
    assert stats.delivered == len(values) and stats.failed == 0
    assert [s.value for s in client.logs[("t", 0)]] == values
    assert len(_stray_errors(caplog)) == 1


async def test_the_client_refresher_and_reaper_cancelled_from_outside_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refreshes = 0
    client = KafkaClient("127.0.0.1:1", refresh_interval=None, retry_backoff=0.01, idle_timeout=0.1)

    async def counted(topics: object = None, **kwargs: object) -> None:
        nonlocal refreshes
        refreshes += 1

    client.refresh = counted  # type: ignore[method-assign,assignment]
    async with client:
        await anyio.sleep(0.05)
        tasks = _tasks("client._refresher") + _tasks("client._reaper")
        assert len(tasks) == 2
        for task in tasks:
            task.cancel()
        await anyio.sleep(0.2)
        assert not any(task.done() for task in tasks)
        before = refreshes
        client.request_refresh()
        assert await eventually(lambda: refreshes > before, 5.0, interval=0.01)
    assert len(_stray_errors(caplog)) == 2


async def test_background_tasks_stopped_are_reported_not_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The task that holds the producer's task group cancelled from outside stops
    every background task: that is logged, flush() says so at once instead of
    waiting out its timeout, and aclose() reports the records."""
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
    (runner,) = _tasks("._runner")
    runner.cancel()
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


def _spilling_producer(fake: FakeClient, tmp_path: Path) -> Any:
    return running(
        fake,
        Reports(),
        spill_dir=str(tmp_path / "spill"),
        delivery_timeout=0.3,
        max_buffering=100,
        wait_on_buffer_full=True,
    )


async def _spill_through_an_outage(
    fake: FakeClient, producer: Producer, during: Callable[[], Awaitable[None]]
) -> list[bytes]:
    """300 records through an outage (most of them spilled), ``during()`` while
    Kafka is away; returns what was sent."""
    sent = [b"%04d" % i for i in range(300)]
    fake.down = True
    for value in sent:
        await producer.send_buffered("t", value)
    assert await eventually(lambda: producer.stats().spilled >= 200, 10)
    await during()
    fake.down = False
    assert await eventually(lambda: producer.stats().delivered == len(sent), 30), producer.stats()
    return sent


async def test_the_spill_tasks_cancelled_from_outside_go_on(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    fake = FakeClient()
    fake.add_topic("t", 1)

    async def cancel_both() -> None:
        for suffix in ("spill._writer", "spill._replayer"):
            await _cancel_from_outside(suffix)
        await anyio.sleep(0.1)
        assert len(_tasks("spill._writer") + _tasks("spill._replayer")) == 2

    async with _spilling_producer(fake, tmp_path) as producer:
        sent = await _spill_through_an_outage(fake, producer, cancel_both)
        assert producer.stats().failed == 0
    assert [s.value for s in fake.records("t", 0)] == sent
    assert len(_stray_errors(caplog)) == 2


async def test_a_spill_read_cancelled_from_outside_loses_no_frame(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reading = threading.Event()
    slow = threading.Event()
    original = SpillStore.read

    def read(store: SpillStore, max_bytes: int | None = None) -> Any:
        if slow.is_set():
            slow.clear()
            reading.set()
            time.sleep(0.3)  # the cancellation arrives meanwhile
        return original(store, max_bytes)

    monkeypatch.setattr(SpillStore, "read", read)
    fake = FakeClient()
    fake.add_topic("t", 1)

    async def cancel_in_a_read() -> None:
        slow.set()
        assert await eventually(reading.is_set, 10, interval=0.005)
        (replayer,) = _tasks("spill._replayer")
        replayer.cancel()

    async with _spilling_producer(fake, tmp_path) as producer:
        sent = await _spill_through_an_outage(fake, producer, cancel_in_a_read)
        assert producer.stats().failed == 0
    assert [s.value for s in fake.records("t", 0)] == sent
    assert len(_stray_errors(caplog)) == 1
