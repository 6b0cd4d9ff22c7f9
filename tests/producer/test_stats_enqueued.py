"""stats().enqueued with spill_dir, over the in-memory FakeClient: every record the
send methods accepted counts once, whether it went to the disk, stayed in memory or
moved between them, and the count never goes down."""

from __future__ import annotations

from pathlib import Path

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
