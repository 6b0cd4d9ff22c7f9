"""stats().enqueued with spill_dir, over the in-memory FakeClient: every record the
send methods accepted counts once, whether it went to the disk, stayed in memory or
moved between them, and so does every record a dead producer left on disk, once
read back; the count never goes down."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import anyio
import pytest

from kafka_asgi.errors import BufferFullError
from kafka_asgi.producer import Producer
from tests.support.fake_client import FakeClient
from tests.support.producers import Reports, running
from tests.support.timing import eventually

pytestmark = pytest.mark.anyio


class Watch:
    """Reads stats().enqueued every few milliseconds while the producer runs."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.seen: list[int] = []

    async def run(self) -> None:
        while True:
            self.seen.append(self.producer.stats().enqueued)
            await anyio.sleep(0.005)

    def never_went_down(self) -> bool:
        return all(a <= b for a, b in zip(self.seen, self.seen[1:], strict=False))


async def test_records_on_disk_and_moved_there_count_once(
    tmp_path: Path, anyio_backend: str
) -> None:
    """Kafka away: 5 records fit in memory, the others go to the disk, and the 5 follow
    them there at their delivery_timeout; read back and delivered once Kafka is back."""
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.down = True
    reports = Reports()
    options = {
        "spill_dir": str(tmp_path / "spill"),
        "max_buffering": 5,
        "delivery_timeout": 0.3,
        "flush_time": 0.05,
    }
    async with running(fake, reports, **options) as producer:
        watch = Watch(producer)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            accepted = 0
            for i in range(20):
                try:
                    producer.send_nowait("t", b"%02d" % i)
                except BufferFullError:
                    continue
                accepted += 1
                assert producer.stats().enqueued == accepted
            assert accepted == 20
            # The 5 in memory expire to the disk.
            assert await eventually(lambda: producer.stats().spilled >= 20, 10)
            await anyio.sleep(0.2)
            assert producer.stats().enqueued == 20, producer.stats()
            fake.down = False
            assert await eventually(lambda: producer.stats().delivered >= 20, 20)
            assert producer.stats().enqueued == 20, producer.stats()
            tg.cancel_scope.cancel()
    assert watch.never_went_down(), watch.seen
    assert producer.stats().enqueued == 20
    assert sorted(fake.all_values("t")) == [b"%02d" % i for i in range(20)]
    assert not reports.errors


async def test_records_the_disk_drops_count_once(tmp_path: Path, anyio_backend: str) -> None:
    """A topic that never appears: records read back and refused until max_replays are
    reported as failed, each still counted once as enqueued."""
    fake = FakeClient()
    reports = Reports()
    options = {
        "spill_dir": str(tmp_path / "spill"),
        "max_buffering": 5,
        "delivery_timeout": 0.3,
        "max_retry": 1,
    }
    async with running(fake, reports, **options) as producer:
        watch = Watch(producer)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            for i in range(12):
                producer.send_nowait("gone", b"%02d" % i)
            assert producer.stats().enqueued == 12
            assert await eventually(lambda: producer.stats().failed == 12, 20), producer.stats()
            assert producer.stats().enqueued == 12, producer.stats()
            tg.cancel_scope.cancel()
    assert watch.never_went_down(), watch.seen
    assert producer.stats().enqueued == 12


def _spill_options(tmp_path: Path) -> dict[str, Any]:
    return {
        "spill_dir": str(tmp_path / "spill"),
        "max_buffering": 5,
        "delivery_timeout": 0.3,
        "flush_time": 0.05,
    }


async def _leave_on_disk(tmp_path: Path, count: int) -> None:
    """A first producer spills ``count`` records while Kafka is away and closes: they
    stay in its directory, for the next producer on the same spill_dir to adopt."""
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.down = True
    async with running(fake, Reports(), **_spill_options(tmp_path)) as first:
        for i in range(count):
            first.send_nowait("t", b"%02d" % i)
        assert await eventually(lambda: first.stats().spilled >= count, 10), first.stats()
    assert first.stats().enqueued == count
    assert list((tmp_path / "spill").glob("*/*.seg"))


async def test_records_inherited_from_a_dead_producer_count_once(
    tmp_path: Path, anyio_backend: str
) -> None:
    """The second producer on the spill_dir accepted nothing itself: the records it
    adopts count as enqueued as they are read back, each once, and are delivered."""
    await _leave_on_disk(tmp_path, 20)
    fake = FakeClient()
    fake.add_topic("t", 1)
    reports = Reports()
    async with running(fake, reports, **_spill_options(tmp_path)) as producer:
        watch = Watch(producer)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            assert await eventually(lambda: producer.stats().delivered >= 20, 20)
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
    stats = producer.stats()
    assert watch.never_went_down(), watch.seen
    assert stats.enqueued == stats.delivered == 20, stats
    assert stats.failed == 0
    assert sorted(fake.all_values("t")) == [b"%02d" % i for i in range(20)]
    assert not reports.errors


@pytest.mark.parametrize("inherited", [False, True])
async def test_frames_given_back_and_read_again_count_once(
    tmp_path: Path, anyio_backend: str, inherited: bool
) -> None:
    """Records read back are refused (NOT_ENOUGH_REPLICAS, max_retry=0): their frames
    are given back to the disk and read again, then delivered.  Records this producer
    accepted (False) or adopted from a dead one's directory (True): each counts once,
    however often it is read, and the count never goes down."""
    fake = FakeClient()
    fake.add_topic("t", 1)
    reports = Reports()
    options = {**_spill_options(tmp_path), "max_retry": 0}
    if inherited:
        await _leave_on_disk(tmp_path, 20)
    async with running(fake, reports, **options) as producer:
        watch = Watch(producer)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            if inherited:
                fake.codes[("t", 0)] = deque([19, 19])
            else:
                fake.down = True
                for i in range(20):
                    producer.send_nowait("t", b"%02d" % i)
                assert producer.stats().enqueued == 20
                assert await eventually(lambda: producer.stats().spilled >= 20, 10)
                fake.known.add("t")
                fake.codes[("t", 0)] = deque([19, 19])
                fake.down = False
            assert await eventually(lambda: producer.stats().delivered >= 20, 20)
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
    stats = producer.stats()
    assert not fake.codes[("t", 0)]  # both refusals were used
    assert stats.replayed > 20, stats  # some frames were read again
    assert watch.never_went_down(), watch.seen
    assert stats.enqueued == stats.delivered + stats.failed == 20, stats
    assert sorted(fake.all_values("t")) == [b"%02d" % i for i in range(20)]
    assert not reports.errors
