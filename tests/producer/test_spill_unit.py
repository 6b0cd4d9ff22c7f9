"""The spill seam over the in-memory FakeClient: outage and replay, bounded replays of
an unknown topic, an unwritable directory, the records left at close."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.errors import SpillError
from kafka_asgi.network.errors import ClientRequestTimeoutError
from kafka_asgi.protocol.errors import UnknownTopicOrPartitionError
from tests.support.fake_client import FakeClient, Fault
from tests.support.producers import Reports, make, running
from tests.support.timing import eventually

pytestmark = pytest.mark.anyio


def _options(tmp_path: Path) -> dict[str, object]:
    return {
        "spill_dir": str(tmp_path / "spill"),
        "delivery_timeout": 0.3,
        "max_buffering": 100,
        "wait_on_buffer_full": True,
    }


async def test_outage_then_replay_in_order(tmp_path: Path, anyio_backend: str) -> None:
    fake = FakeClient()
    fake.add_topic("t", 2)
    reports = Reports()
    async with running(fake, reports, **_options(tmp_path)) as producer:
        await producer.send("t", b"first")
        fake.down = True
        for i in range(1000):
            await producer.send_buffered("t", b"%04d" % i, key=b"k%d" % (i % 7))
        assert await eventually(lambda: producer.stats().spilled >= 900, 10)
        assert producer.stats().failed == 0
        fake.down = False
        assert await eventually(lambda: producer.stats().delivered == 1001, 30), producer.stats()
    assert not reports.errors
    for p in range(2):
        seq = [s.value for s in fake.records("t", p) if s.value != b"first"]
        keys = {s.key for s in fake.records("t", p)} - {None}
        for key in keys:
            mine = [s.value for s in fake.records("t", p) if s.key == key]
            assert mine == sorted(mine), key
        assert len(set(seq)) == len(seq)
    assert sorted(fake.all_values("t")) == sorted([b"first", *(b"%04d" % i for i in range(1000))])
    assert not list((tmp_path / "spill").glob("*/*.seg"))


async def test_records_read_back_wait_their_own_delivery_timeout_for_metadata(
    tmp_path: Path, anyio_backend: str
) -> None:
    """The topic's metadata never came (no broker): A expires to the disk at 0.5 s, and
    B, handed over at 0.25 s, is moved there behind it; A is read back (a probe) while
    the metadata is still missing.  A must get a whole delivery_timeout in memory again,
    not B's remaining 0.25 s: expired on B's account, part of A's frame went back to the
    disk behind B while the rest of it was delivered once the broker came, and the key's
    records reached Kafka as A3 A4 B0 B1 B2 A0 A1 A2."""
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.down = True
    reports = Reports()
    options = {**_options(tmp_path), "delivery_timeout": 0.5, "flush_time": 0.05}
    async with running(fake, reports, **options) as producer:
        for i in range(5):
            producer.send_nowait("t", b"A%d" % i, key=b"k")
        await anyio.sleep(0.25)
        for i in range(3):
            producer.send_nowait("t", b"B%d" % i, key=b"k")
        # After A was read back and B's delivery_timeout passed; before A's own.
        await anyio.sleep(1.0)
        fake.down = False
        assert await eventually(lambda: producer.stats().delivered == 8, 20), producer.stats()
    assert [s.value for s in fake.records("t", 0)] == [
        *(b"A%d" % i for i in range(5)),
        *(b"B%d" % i for i in range(3)),
    ]
    assert not reports.errors
    assert not list((tmp_path / "spill").glob("*/*.seg"))


@pytest.mark.parametrize("refusals", [1, 3])
async def test_a_replayed_frame_refused_once_keeps_its_place(
    tmp_path: Path, anyio_backend: str, refusals: int
) -> None:
    """600 keyed records spill while Kafka is away, then partition 1 refuses its first
    batches once Kafka is back (NOT_ENOUGH_REPLICAS, max_retry=0: back to the disk).
    The frame given back must be read again before the frames after it, which were
    read while its answer came: sent first, they put a key's newer records ahead of
    its older ones (0112.. before 0000..).  Every record once, in order per key."""
    fake = FakeClient()
    fake.add_topic("t", 2)
    reports = Reports()
    options = {
        **_options(tmp_path),
        "max_buffering": 300,
        "max_retry": 0,
        "batch_num": 20,
    }
    async with running(fake, reports, **options) as producer:
        fake.known.add("t")
        fake.down = True
        for i in range(600):
            await producer.send_buffered("t", b"%04d" % i, key=b"k%d" % (i % 7))
        assert await eventually(lambda: producer.stats().spilled >= 500, 10)
        fake.codes[("t", 1)] = deque([19] * refusals)  # NOT_ENOUGH_REPLICAS
        fake.down = False
        assert await eventually(lambda: producer.stats().delivered == 600, 30), producer.stats()
    assert not reports.errors
    assert sorted(fake.all_values("t")) == [b"%04d" % i for i in range(600)]
    for p in range(2):
        for key in {s.key for s in fake.records("t", p)}:
            mine = [s.value for s in fake.records("t", p) if s.key == key]
            assert mine == sorted(mine), (p, key, mine)


async def test_a_batch_held_in_memory_follows_an_older_one_to_the_disk(
    tmp_path: Path, anyio_backend: str
) -> None:
    """Idempotent, one partition, one key.  A's first two tries and B's first get no
    answer (perhaps written), then A is refused twice (NOT_ENOUGH_REPLICAS) and, with
    max_retry=3, goes to the disk; B, perhaps written, stays in memory with a held
    copy on disk.  Two faults put B's records in Kafka before A's: the held copy was
    written before A's frame (the evacuation wrote held copies at once and the failed
    records queued before it after them), and B was retried from memory (refused as
    out of order, then sent again under a bumped epoch) while A waited on the disk.
    A's records must come first, each record once."""
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.known.add("t")
    reports = Reports()
    options = {
        **_options(tmp_path),
        "enable_idempotence": True,
        "required_acks": -1,
        "batch_num": 5,
        "flush_time": 0.02,
        "retry_backoff": 0.05,
        "max_retry": 3,
    }
    async with running(fake, reports, **options) as producer:
        fake.faults = deque(
            Fault(ClientRequestTimeoutError("no answer"), written=False) for _ in range(3)
        )
        fake.codes[("t", 0)] = deque([19, 19])
        for i in range(5):
            producer.send_nowait("t", b"A%d" % i, key=b"k")
        assert await eventually(lambda: len(fake.faults) == 2, 5)
        for i in range(20):
            producer.send_nowait("t", b"B%02d" % i, key=b"k")
        assert await eventually(lambda: producer.stats().delivered == 25, 20), producer.stats()
        # A went to the disk, B's held copy was given back: both read back, once.
        assert producer.stats().replayed == 25
    assert [s.value for s in fake.records("t", 0)] == [
        *(b"A%d" % i for i in range(5)),
        *(b"B%02d" % i for i in range(20)),
    ]
    assert not reports.errors
    assert not list((tmp_path / "spill").glob("*/*.seg"))


async def test_unknown_topic_is_replayed_a_bounded_number_of_times(
    tmp_path: Path, anyio_backend: str
) -> None:
    fake = FakeClient()
    reports = Reports()
    async with running(fake, reports, **_options(tmp_path), max_retry=1) as producer:
        for i in range(10):
            producer.send_nowait("gone", b"%d" % i)
        assert await eventually(lambda: producer.stats().failed == 10, 30), producer.stats()
        stats = producer.stats()
    # Replayed (3 times at most), then reported once each: never forever.
    assert 10 <= stats.replayed <= 40, stats
    failed = [r for e in reports.errors for r in e[2]]
    assert sorted(r[1] for r in failed) == sorted(b"%d" % i for i in range(10))
    assert all(isinstance(e[3], UnknownTopicOrPartitionError) for e in reports.errors)
    assert not list((tmp_path / "spill").glob("*/*.seg"))


async def test_unwritable_directory_is_reported_not_raised(
    tmp_path: Path, anyio_backend: str
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    fake = FakeClient()
    fake.add_topic("t", 1)
    reports = Reports()
    options = {**_options(tmp_path), "spill_dir": str(blocker / "spill")}
    async with running(fake, reports, **options) as producer:
        assert await eventually(lambda: producer.stats().spill_error is not None, 10)
        fake.down = True
        for i in range(50):
            producer.send_nowait("t", b"%d" % i)  # no exception in the request path
        assert await eventually(lambda: producer.stats().failed == 50, 10)
    errors = [e for e in reports.errors if isinstance(e[3], SpillError)]
    assert errors and errors[0][0] == "" and errors[0][2] == []
    assert isinstance(producer.stats().spill_error, SpillError)


def _small_spill(fake: FakeClient, tmp_path: Path, error_handle: Any) -> Producer:
    """A producer whose spill's budget (8 KiB) a hundred records nearly fill."""
    return make(
        fake,
        None,
        error_handle=error_handle,
        spill_dir=str(tmp_path / "spill"),
        delivery_timeout=0.3,
        max_buffering=1000,
        spill_max_bytes=8192,
        spill_segment_bytes=4096,
        flush_time=0.02,
    )


async def test_records_left_at_close_are_shipped_by_the_next_producer(
    tmp_path: Path, anyio_backend: str
) -> None:
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.down = True
    options = {**_options(tmp_path), "delivery_timeout": 30.0, "close_timeout": 0.2}
    async with running(fake, Reports(), **options) as producer:
        for i in range(50):
            producer.send_nowait("t", b"%02d" % i)
        await anyio.sleep(0.1)
    assert producer.stats().failed == 0 and producer.stats().spilled == 50
    fake.down = False
    reports = Reports()
    async with running(fake, reports, **options) as second:
        assert await eventually(lambda: second.stats().delivered == 50, 20), second.stats()
    assert fake.all_values("t") == [b"%02d" % i for i in range(50)]
    assert not reports.errors


async def test_a_record_sent_from_the_report_of_a_dropped_one_goes_behind_the_disk(
    tmp_path: Path, anyio_backend: str
) -> None:
    """T spills (100 records on disk, Kafka down), then the disk budget is used up and
    the newest records are dropped and reported. error_handle sends a record of T (a
    record sent again, a logging handler on the same producer): while the drop was
    reported the producer had no spill, so it went through memory and reached Kafka
    ahead of T's older records still on disk. Now it goes to the disk, behind them
    (here dropped too: the budget is still used up)."""
    fake = FakeClient()
    fake.add_topic("T", 1)
    fake.down = True
    reported: list[bytes | None] = []
    sent: list[bool] = []

    def error_handle(
        topic: str, partition: int, records: list[Any], error: object, retriable: bool
    ) -> None:
        reported.extend(r[1] for r in records)
        if topic == "T" and not sent:
            sent.append(b"AGAIN" in producer._buffers["T"].values)
            producer.send_nowait("T", b"AGAIN", key=b"k")
            sent.append(b"AGAIN" in producer._buffers["T"].values)

    producer = _small_spill(fake, tmp_path, error_handle)
    async with producer:
        for i in range(100):
            producer.send_nowait("T", b"old%02d" % i, key=b"k")
        assert await eventually(lambda: producer.stats().spilled >= 100, 5)
        for i in range(400):  # the budget used up: drop_newest reports them
            producer.send_nowait("T", b"x" * 60 + b"%04d" % i, key=b"k")
        assert sent
        fake.down = False
        assert await eventually(lambda: b"old99" in fake.all_values("T"), 20)
        assert await eventually(lambda: b"AGAIN" in reported or b"AGAIN" in fake.all_values("T"), 5)
    values = [s.value for s in fake.records("T", 0)]
    assert [v for v in values if v.startswith(b"old")] == [b"old%02d" % i for i in range(100)]
    if b"AGAIN" in values:  # through memory it went first, ahead of old00
        assert values.index(b"AGAIN") > values.index(b"old99")
        assert b"AGAIN" not in reported
    else:
        assert reported.count(b"AGAIN") == 1
    assert sent == [False, False]  # not in memory


async def test_a_callback_sending_every_dropped_record_again_does_not_recurse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    """With the spill in place during the report of records it dropped, a record sent
    again from error_handle goes to the disk, where the budget is still used up, and
    is dropped and reported again: written by a write nested in the report, that
    recursed until RecursionError. It is written by the spill's writer instead."""
    fake = FakeClient()
    fake.add_topic("T", 1)
    fake.down = True
    calls: list[int] = []

    def error_handle(
        topic: str, partition: int, records: list[Any], error: object, retriable: bool
    ) -> None:
        calls.append(len(records))
        if topic == "T" and len(calls) < 2000:
            for key, value, _, _ in records:
                producer.send_nowait("T", value, key=key)

    producer = _small_spill(fake, tmp_path, error_handle)
    async with producer:
        for i in range(100):
            producer.send_nowait("T", b"old%02d" % i, key=b"k")
        assert await eventually(lambda: producer.stats().spilled >= 100, 5)
        for i in range(50):
            producer.send_nowait("T", b"x" * 60 + b"%04d" % i, key=b"k")
        assert await eventually(lambda: len(calls) >= 2000, 20)
        fake.down = False
        assert await eventually(lambda: b"old99" in fake.all_values("T"), 20)
    assert "RecursionError" not in caplog.text
    assert "error_handle raised" not in caplog.text


async def test_byte_bound_spills_and_replays_with_every_byte_given_back(
    tmp_path: Path, anyio_backend: str
) -> None:
    """max_buffering_bytes sends records to the disk as max_buffering does, and the
    bytes counted for them come back to 0 through spill, replay and delivery."""
    fake = FakeClient()
    fake.add_topic("t", 2)
    reports = Reports()
    limit = 20_000
    options = {**_options(tmp_path), "max_buffering": 1000, "max_buffering_bytes": limit}
    held: list[int] = []
    async with running(fake, reports, **options) as producer:
        fake.down = True
        for i in range(300):
            await producer.send_buffered("t", b"%04d" % i + b"v" * 996)
            held.append(producer.stats().buffered_bytes)
        assert max(held) <= limit
        assert await eventually(lambda: producer.stats().spilled >= 250, 10)
        fake.down = False
        assert await eventually(lambda: producer.stats().delivered == 300, 30), producer.stats()
        assert producer.stats().buffered_bytes == 0
    assert not reports.errors
    assert sorted(fake.all_values("t")) == sorted(b"%04d" % i + b"v" * 996 for i in range(300))
