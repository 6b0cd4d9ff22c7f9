"""start() and aclose() awaited inside anyio.fail_after / move_on_after (issue 11,
point 5, first defect).

The background tasks of Producer, KafkaClient and BasicConsumer live in a host
task of their own (kafka_asgi.network.host), so wrapping a start or a close in a
timeout, or closing from another task than the one that started, corrupts no
cancel scope: no RuntimeError on asyncio, no TrioInternalError on trio, and the
calls that follow are not cancelled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from kafka_asgi import Producer
from kafka_asgi.consumer import BasicConsumer
from kafka_asgi.producer import ProducerClosedError
from kafka_asgi.producer.registry import registered_names, unregister_producer
from tests.support.fake_client import FakeClient
from tests.support.timing import scaled

pytestmark = pytest.mark.anyio

# Nothing listens there: start() opens no connection, aclose() has none to close.
NOBODY = "127.0.0.1:1"


async def _unrelated_calls_work() -> None:
    for _ in range(3):
        await anyio.sleep(0.001)
    with anyio.fail_after(scaled(5)):
        await anyio.lowlevel.checkpoint()
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 0.001)


async def test_producer_start_and_close_inside_timeouts(anyio_backend: str) -> None:
    client = FakeClient()
    client.add_topic("t", 1)
    producer = Producer(client=client, close_timeout=2.0)
    with anyio.fail_after(scaled(5)):
        await producer.start()
    # The flusher outlived the timeout's scope.
    with anyio.fail_after(scaled(5)):
        metadata = await producer.send("t", b"v")
    assert metadata.offset == 0
    producer.send_nowait("t", b"w")
    with anyio.move_on_after(scaled(5)):
        await producer.aclose()
    assert producer.stats().delivered == 2
    assert [s.value for s in client.logs[("t", 0)]] == [b"v", b"w"]
    await _unrelated_calls_work()


async def test_producer_with_a_real_client_inside_timeouts(anyio_backend: str) -> None:
    producer = Producer(NOBODY, close_timeout=0.5, delivery_timeout=1.0)
    with anyio.move_on_after(scaled(5)):
        await producer.start()
    producer.send_nowait("t", b"v")  # reported at close: no broker
    with anyio.fail_after(scaled(10)):
        await producer.aclose()
    assert producer.stats().failed == 1
    await _unrelated_calls_work()


async def test_producer_closed_from_another_task(anyio_backend: str) -> None:
    client = FakeClient()
    client.add_topic("t", 1)
    producer = Producer(client=client)
    async with anyio.create_task_group() as tg:
        tg.start_soon(producer.start)
    producer.send_nowait("t", b"v")
    async with anyio.create_task_group() as tg:
        tg.start_soon(producer.aclose)
    assert producer.stats().delivered == 1
    await _unrelated_calls_work()


async def test_producer_start_cancelled_by_its_timeout(anyio_backend: str) -> None:
    producer = Producer(client=FakeClient())
    with anyio.move_on_after(0) as scope:
        await producer.start()
    assert scope.cancelled_caught
    await _unrelated_calls_work()
    with pytest.raises(ProducerClosedError):
        producer.send_nowait("t", b"v")
    await producer.aclose()


async def test_consumer_start_and_close_inside_timeouts(anyio_backend: str) -> None:
    consumer = BasicConsumer(NOBODY)
    with anyio.fail_after(scaled(5)):
        await consumer.start()
    with anyio.move_on_after(scaled(5)):
        await consumer.aclose()
    await _unrelated_calls_work()
    consumer = BasicConsumer(NOBODY)
    with anyio.move_on_after(scaled(5)):
        await consumer.start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.aclose)
    await _unrelated_calls_work()


@pytest.fixture
def names() -> Iterator[None]:
    """The names the tests below register, freed even when a test fails."""
    yield
    for name in ("closed-while-starting", "spill-cancelled"):
        unregister_producer(name)


@pytest.mark.parametrize("spill", [False, True], ids=["memory", "spill"])
async def test_producer_closed_while_it_starts_does_not_come_up(
    anyio_backend: str, names: None, tmp_path: Path, spill: bool
) -> None:
    # aclose() from another task while start() waits for the background tasks: the
    # code before returned from aclose() at once, then start() set the producer
    # running, registered, its tasks alive, taking records after it was closed. With
    # a spill_dir, its store (opened meanwhile in a thread) must not stay locked.
    client = FakeClient()
    client.add_topic("t", 1)
    spill_dir = tmp_path / "spill"
    options = {"spill_dir": str(spill_dir)} if spill else {}
    producer = Producer(client=client, cluster_name="closed-while-starting", **options)
    flusher = producer._flusher
    gate = anyio.Event()

    async def slow_flusher(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        await gate.wait()
        await flusher(task_status=task_status)

    producer._flusher = slow_flusher  # type: ignore[method-assign]
    outcome: list[BaseException] = []

    async def start() -> None:
        try:
            await producer.start()
        except ProducerClosedError as exc:
            outcome.append(exc)

    with anyio.fail_after(scaled(10)):
        async with anyio.create_task_group() as tg:
            tg.start_soon(start)
            while "closed-while-starting" not in registered_names():
                await anyio.lowlevel.checkpoint()
            await producer.aclose()
            gate.set()
    assert [str(e) for e in outcome] == ["the producer was closed while it started"]
    assert "closed-while-starting" not in registered_names()
    with pytest.raises(ProducerClosedError):
        producer.send_nowait("t", b"v")
    assert producer._tg is not None and producer._tg.cancel_scope.cancel_called
    if spill:  # its directory was emptied, unlocked and removed
        assert list(spill_dir.iterdir()) == []
    # The name is free again.
    again = Producer(client=client, cluster_name="closed-while-starting", **options)
    await again.start()
    await again.aclose()


async def test_producer_with_a_spill_closed_by_a_cancelled_task(
    anyio_backend: str, tmp_path: Path, names: None
) -> None:
    # A server cancelling its lifespan task, then closing the producer from it: the
    # code before raised the cancellation at the spill's last await, which skipped
    # the store's close and left the closed producer registered under its name.
    client = FakeClient()
    client.add_topic("t", 1)
    options = {"cluster_name": "spill-cancelled", "spill_dir": str(tmp_path / "spill")}
    producer = Producer(client=client, close_timeout=1.0, **options)
    await producer.start()
    producer.send_nowait("t", b"v")
    with anyio.fail_after(scaled(10)):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await producer.aclose()
    assert "spill-cancelled" not in registered_names()
    assert producer.stats().delivered == 1
    again = Producer(client=client, **options)
    await again.start()
    await again.aclose()
