"""``max_buffering_bytes``: the bytes the producer holds are bounded as the records
are (a default producer held up to max_buffering records of max_request_size each,
~49 GiB, during an outage)."""

from __future__ import annotations

import anyio
import pytest

from kafka_asgi.producer import Producer
from kafka_asgi.producer.errors import BufferFullError, RecordTooLargeError
from tests.support.fake_client import FakeClient
from tests.support.producers import Reports, running

pytestmark = pytest.mark.anyio

VALUE = b"v" * 1000
SIZE = len(VALUE)  # what a keyless, headerless record counts
LIMIT = 10 * SIZE + SIZE // 2  # room for ten of them


@pytest.fixture
def fake() -> FakeClient:
    client = FakeClient()
    client.add_topic("t", 2)
    return client


@pytest.fixture
def reports() -> Reports:
    return Reports()


async def test_byte_bound_refuses_past_it_and_delivery_frees_the_room(
    fake: FakeClient, reports: Reports
) -> None:
    fake.gate = anyio.Event()
    async with running(fake, reports, max_buffering_bytes=LIMIT, batch_num=4) as producer:
        for _ in range(10):
            producer.send_nowait("t", VALUE)
        assert producer.stats().buffered_bytes == 10 * SIZE
        with pytest.raises(BufferFullError, match=rf"max_buffering_bytes={LIMIT}\b"):
            producer.send_nowait("t", VALUE)
        with pytest.raises(BufferFullError, match=rf"max_buffering_bytes={LIMIT}\b"):
            # The slow path (a key) counts the key too.
            producer.send_nowait("t", VALUE, key=b"k")
        assert producer.stats().buffered_bytes == 10 * SIZE
        fake.gate.set()
        await producer.flush()
        assert producer.stats().buffered_bytes == 0
        for _ in range(10):
            producer.send_nowait("t", VALUE, key=b"k", headers={"h": b"1"})
        await producer.flush()
        assert producer.stats().buffered_bytes == 0
    assert len(reports.ok) == 20 and not reports.errors


async def test_failed_records_free_their_bytes(fake: FakeClient, reports: Reports) -> None:
    fake.down = True
    async with running(
        fake, reports, max_buffering_bytes=LIMIT, delivery_timeout=0.2, close_timeout=0.1
    ) as producer:
        for i in range(10):
            producer.send_nowait("t", VALUE, key=b"%d" % i)
        with pytest.raises(BufferFullError, match="max_buffering_bytes"):
            producer.send_nowait("t", VALUE)
        await producer.flush(timeout=5)
        assert sum(len(e[2]) for e in reports.errors) == 10
        assert producer.stats().buffered_bytes == 0
        assert producer.stats().failed == 10
        producer.send_nowait("t", VALUE)  # room again
        assert producer.stats().buffered_bytes == SIZE


async def test_send_waits_for_byte_room(fake: FakeClient, reports: Reports) -> None:
    fake.gate = anyio.Event()
    async with running(
        fake,
        reports,
        max_buffering_bytes=LIMIT,
        wait_on_buffer_full=True,
        wait_buffer_timeout=5,
    ) as producer:
        for _ in range(10):
            producer.send_nowait("t", VALUE)
        # Fewer than max_buffering records, but not the bytes for one more.
        assert producer.stats().buffered < producer.options.max_buffering

        async def release() -> None:
            await anyio.sleep(0.05)
            assert fake.gate is not None
            fake.gate.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release)
            with anyio.fail_after(5):
                meta = await producer.send("t", VALUE, partition=1)
                await producer.send_buffered("t", VALUE)
        assert meta.partition == 1
        await producer.flush()
        assert producer.stats().buffered_bytes == 0
    assert len(reports.ok) == 12


async def test_send_without_waiting_refuses_past_the_byte_bound(
    fake: FakeClient, reports: Reports
) -> None:
    fake.gate = anyio.Event()
    async with running(fake, reports, max_buffering_bytes=LIMIT, close_timeout=0.1) as producer:
        for _ in range(10):
            producer.send_nowait("t", VALUE)
        with pytest.raises(BufferFullError, match=rf"max_buffering_bytes={LIMIT}\b"):
            await producer.send("t", VALUE)
        fake.gate.set()


async def test_record_larger_than_the_byte_bound_is_refused_at_the_call(
    fake: FakeClient,
) -> None:
    async with running(fake, max_buffering_bytes=500) as producer:
        with pytest.raises(RecordTooLargeError, match=r"\b1000 bytes.*max_buffering_bytes=500\b"):
            producer.send_nowait("t", VALUE)
        with pytest.raises(RecordTooLargeError, match="max_buffering_bytes=500"):
            await producer.send("t", VALUE)
        assert producer.stats().buffered_bytes == 0


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, r"max_buffering_bytes must be >= 1, not 0"),
        (-5, ValueError, r"max_buffering_bytes must be >= 1, not -5"),
        ("64MiB", TypeError, r"max_buffering_bytes must be an int, not str '64MiB'"),
        (True, TypeError, r"max_buffering_bytes must be an int, not bool True"),
        (1.5, TypeError, r"max_buffering_bytes must be an int, not float 1.5"),
    ],
)
def test_max_buffering_bytes_is_validated(
    fake: FakeClient, value: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Producer(client=fake, max_buffering_bytes=value)


def test_max_buffering_bytes_default(fake: FakeClient) -> None:
    assert Producer(client=fake).options.max_buffering_bytes == 64 * 1024 * 1024


async def test_fast_and_slow_paths_count_a_record_alike(fake: FakeClient) -> None:
    fake.gate = anyio.Event()
    async with running(fake, close_timeout=0.1) as producer:
        producer.send_nowait("t", VALUE)  # the first of its topic: the slow path
        producer.send_nowait("t", VALUE)  # the fast path
        producer.send_nowait("t", VALUE, timestamp=1)  # the slow path again
        assert producer.stats().buffered_bytes == 3 * SIZE
        producer.send_nowait("t", VALUE, key=b"key", headers=[("h", b"12")])
        assert producer.stats().buffered_bytes == 4 * SIZE + 3 + 10 + 4 + 2
        fake.gate.set()
        await producer.flush()
        assert producer.stats().buffered_bytes == 0
