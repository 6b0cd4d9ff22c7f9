"""Slow codecs' large batches are compressed on a worker thread, not on the event
loop (against the in-memory FakeClient; tests/producer/test_broker.py has the real
broker)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import kafka_asgi.producer.sender as sender_module
from kafka_asgi.protocol.compression import Compression, compress
from kafka_asgi.protocol.records import decode_batches
from tests.support.fake_client import FakeClient
from tests.support.producers import Reports, running
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.anyio

# 200 records (the default batch_num) of this size make a batch of about 60 KB.
VALUE = b'{"method":"GET","path":"/items/42","status":200,"duration_ms":1.234}' * 4


@pytest.fixture
def fake() -> FakeClient:
    client = FakeClient()
    client.add_topic("one", 1)
    return client


@pytest.fixture
def reports() -> Reports:
    return Reports()


class Compressions:
    """Wraps the sender's compress: the thread each call ran on, and a gate that a
    test may close to hold a compression until it opens it (every call, or only
    the ones whose data holds ``hold``, or whose first record's number is at least
    ``hold_from``); the first record's number of each call, in the order they
    began; how many ran at once at most."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.held = threading.Event()  # a call with ``hold`` entered
        self.fail: BaseException | None = None
        self.hold: bytes | None = None
        self.hold_from: int | None = None
        self.starts: list[int] = []
        self.finished = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, codec: int, data: Any, level: int | None = None) -> bytes:
        raw = bytes(data)
        at = raw.find(VALUE) + len(VALUE)
        first = int(raw[at : at + 6]) if at >= len(VALUE) else -1
        with self._lock:
            self.starts.append(first)
            self.threads.append(threading.get_ident())
            self.sizes.append(len(data))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.entered.set()
        try:
            if self.hold_from is not None:
                held = first >= self.hold_from
            else:
                held = self.hold is None or self.hold in raw
            if held:
                self.held.set()
                # Bounded: a test that forgets to open the gate fails, not hangs.
                assert self.gate.wait(scaled(20)), "the gate was never opened"
            if self.fail is not None:
                error, self.fail = self.fail, None
                raise error
            return compress(codec, data, level)
        finally:
            with self._lock:
                self.running -= 1
                self.finished += 1


@pytest.fixture
def compressions(monkeypatch: pytest.MonkeyPatch) -> Iterator[Compressions]:
    spy = Compressions()
    monkeypatch.setattr(sender_module, "compress", spy)
    # The records' own encoder compresses inline through the protocol module.
    monkeypatch.setattr("kafka_asgi.protocol.record_encoder.compress", spy)
    yield spy
    spy.gate.set()


def _batches(fake: FakeClient) -> list[Any]:
    return [
        batch
        for request in fake.requests
        for topic in request.topic_data
        for part in topic.partition_data
        for batch in decode_batches(part.records or b"")
    ]


async def _send_while_the_first_is_held(fake: FakeClient, p: Any, n: int) -> None:
    """Hand over records 0..n-1 (numbered after VALUE), then wait until the first
    Produce request is out, which the test's ``fake.gate`` holds."""
    for i in range(n):
        p.send_nowait("one", VALUE + b"%06d" % i)
    assert await eventually(lambda: len(fake.requests) == 1, 10, 0.005)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("acks", [1, -1])
async def test_large_batches_of_slow_codecs_compress_on_a_worker_thread(
    fake: FakeClient, compressions: Compressions, codec: str, acks: int
) -> None:
    threshold = sender_module.offload_threshold(Compression[codec.upper()])
    assert threshold is not None
    # Enough records that each batch is past the threshold (estimated size).
    batch_num = max(200, threshold // len(VALUE) + 1)
    n = 3 * batch_num
    loop_thread = threading.get_ident()
    async with running(fake, compression=codec, batch_num=batch_num, required_acks=acks) as p:
        with anyio.fail_after(scaled(20)):
            for i in range(n):
                p.send_nowait("one", VALUE + b"%06d" % i)
                if (i + 1) % batch_num == 0:
                    await p.flush()  # a batch each
        stats = p.stats()
    assert (stats.delivered, stats.failed) == (n, 0)
    assert [r.value for r in fake.records("one", 0)] == [VALUE + b"%06d" % i for i in range(n)]
    batches = _batches(fake)
    assert len(batches) == 3
    assert {b.compression for b in batches} == {Compression[codec.upper()]}
    # Every batch compressed off the loop, in one call on the whole records section.
    assert compressions.threads and loop_thread not in compressions.threads
    assert len(compressions.sizes) == len(batches)
    if acks == -1:
        # Idempotent by default: the stamp is put around the compressed section.
        assert {b.producer_id for b in batches} != {-1}
        assert [b.base_sequence for b in batches] == [
            sum(len(x.records) for x in batches[:k]) for k in range(len(batches))
        ]


@pytest.mark.parametrize(
    ("codec", "count"),
    [("gzip", 20), ("lz4", 1200), ("snappy", 1200)],
    ids=["small-gzip", "lz4", "snappy"],
)
async def test_small_batches_and_fast_codecs_compress_on_the_loop(
    fake: FakeClient, compressions: Compressions, codec: str, count: int
) -> None:
    pytest.importorskip("cramjam")
    loop_thread = threading.get_ident()
    async with running(fake, compression=codec) as p:
        with anyio.fail_after(scaled(20)):
            for i in range(count):
                p.send_nowait("one", VALUE + b"%06d" % i)
            await p.flush()
    assert len(fake.records("one", 0)) == count
    assert compressions.threads and set(compressions.threads) == {loop_thread}
    if codec != "gzip":
        # Past the threshold a slow codec would have (zstd's): lz4 and snappy stay.
        assert max(compressions.sizes) > 256 * 1024


async def test_the_loop_runs_while_a_batch_is_compressed(
    fake: FakeClient, compressions: Compressions
) -> None:
    """While the worker holds a batch, the loop serves other tasks, and the
    partition's later records wait behind it, in order."""
    compressions.gate.clear()
    async with running(fake, compression="gzip") as p:
        with anyio.fail_after(scaled(20)):
            for i in range(200):
                p.send_nowait("one", VALUE + b"%06d" % i)
            await anyio.to_thread.run_sync(compressions.entered.wait)
            # Held on the worker: the loop still turns, records still come in...
            for i in range(200, 260):
                p.send_nowait("one", VALUE + b"%06d" % i)
                await anyio.sleep(0.001)
            # ...and nothing of the partition overtook the held batch.
            assert not fake.records("one", 0) and not fake.requests
            compressions.gate.set()
            await p.flush()
    assert [r.value for r in fake.records("one", 0)] == [VALUE + b"%06d" % i for i in range(260)]


async def test_a_failed_compression_is_reported(
    fake: FakeClient, compressions: Compressions, reports: Reports
) -> None:
    compressions.fail = MemoryError("no room")
    async with running(fake, reports, compression="gzip") as p:
        with anyio.fail_after(scaled(20)):
            for i in range(400):
                p.send_nowait("one", VALUE + b"%06d" % i)
                if i == 199:
                    await p.flush()  # a batch each
            await p.flush()
        stats = p.stats()
    # The first batch is reported, naming the cause; the next one is delivered.
    assert (stats.delivered, stats.failed) == (200, 200)
    ((topic, partition, records, error, retriable),) = reports.errors
    assert (topic, partition, retriable) == ("one", 0, False)
    assert "cannot compress the batch" in str(error) and "no room" in str(error)
    assert [r[1] for r in records] == [VALUE + b"%06d" % i for i in range(200)]
    assert [r.value for r in fake.records("one", 0)] == [
        VALUE + b"%06d" % i for i in range(200, 400)
    ]


async def test_close_while_a_compression_hangs_reports_the_batch(
    fake: FakeClient, compressions: Compressions, reports: Reports
) -> None:
    """A compression that does not finish within close_timeout: aclose() returns
    in time and reports its records; none is lost silently."""
    compressions.gate.clear()
    with anyio.fail_after(scaled(20)):
        async with running(fake, reports, compression="gzip", close_timeout=0.5) as p:
            for i in range(200):
                p.send_nowait("one", VALUE + b"%06d" % i)
            await anyio.to_thread.run_sync(compressions.entered.wait)
    compressions.gate.set()
    assert [r[1] for e in reports.errors for r in e[2]] == [VALUE + b"%06d" % i for i in range(200)]
    assert p.stats().failed == 200 and not fake.records("one", 0)


async def test_close_with_compressions_queued_reports_every_batch(
    fake: FakeClient, compressions: Compressions, reports: Reports
) -> None:
    """Pipelining (idempotent), both workers held and more batches queued for them
    when the producer closes: aclose() returns in time, every record of those batches
    is reported, and none is left marked as compressing."""
    pytest.importorskip("cramjam")
    opts = {"compression": "zstd", "batch_size": LARGE, "batch_num": 100_000, "required_acks": -1}
    with anyio.fail_after(scaled(20)):
        async with running(fake, reports, close_timeout=0.5, **opts) as p:
            for i in range(PER_BATCH):  # one batch acknowledged: the partition pipelines
                p.send_nowait("one", VALUE + b"%06d" % i)
            await p.flush()
            first = len(fake.records("one", 0))
            compressions.gate.clear()
            n = first + 5 * PER_BATCH
            for i in range(first, n):
                p.send_nowait("one", VALUE + b"%06d" % i)
            assert await eventually(lambda: compressions.running == 2, 10, 0.005)
            assert len(p._zqueue) >= 1  # a batch waits for a worker
            batches = list(p._buffers["one"].partitions[0].batches)
    compressions.gate.set()
    failed = [r[1] for e in reports.errors for r in e[2]]
    assert sorted(failed) == [VALUE + b"%06d" % i for i in range(first, n)]
    assert p.stats().failed == n - first
    assert len(fake.records("one", 0)) == first
    assert not p._zqueue
    assert len(batches) >= 3 and not any(b.zbusy for b in batches)


class CodecCrash(Exception):
    """What a codec's own error looks like (cramjam raises its CompressionError)."""


@pytest.mark.parametrize(("codec", "count"), [("gzip", 20), ("lz4", 200)], ids=["gzip", "lz4"])
async def test_a_failed_compression_on_the_loop_is_reported(
    fake: FakeClient, compressions: Compressions, reports: Reports, codec: str, count: int
) -> None:
    """A codec failing with an error of its own on the loop reports its batch, and
    flush() and aclose() return; the next batch is delivered."""
    pytest.importorskip("cramjam")
    compressions.fail = CodecCrash("codec gave up")
    async with running(fake, reports, compression=codec) as p:
        with anyio.fail_after(scaled(20)):
            for i in range(2 * count):
                p.send_nowait("one", VALUE + b"%06d" % i)
                if i == count - 1:
                    await p.flush()  # a batch each
            await p.flush()
        stats = p.stats()
    assert (stats.delivered, stats.failed) == (count, count)
    ((_, _, records, error, retriable),) = reports.errors
    assert "cannot encode the batch" in str(error) and "codec gave up" in str(error)
    assert not retriable
    assert [r[1] for r in records] == [VALUE + b"%06d" % i for i in range(count)]
    assert [r.value for r in fake.records("one", 0)] == [
        VALUE + b"%06d" % i for i in range(count, 2 * count)
    ]


# Batches cut at this size (before compression), past zstd's threshold (256 KiB).
LARGE = 300 * 1024
PER_BATCH = LARGE // (len(VALUE) + 6 + 20)  # about; the producer's estimate decides


async def test_a_partitions_next_batches_compress_beside_the_first(
    fake: FakeClient, compressions: Compressions
) -> None:
    """Pipelining (idempotent): while a partition's batch is compressed on a worker,
    its next ones are compressed too (two at a time at most); none is sent before
    the one ahead of it, and the sequence numbers follow the records."""
    pytest.importorskip("cramjam")
    opts = {"compression": "zstd", "batch_size": LARGE, "batch_num": 100_000, "required_acks": -1}
    async with running(fake, **opts) as p:
        with anyio.fail_after(scaled(20)):
            # One batch acknowledged first: the partition then pipelines.
            for i in range(PER_BATCH):
                p.send_nowait("one", VALUE + b"%06d" % i)
            await p.flush()
            first = len(fake.records("one", 0))
            assert compressions.threads and first == PER_BATCH
            # The next batch's compression is held (the workers take the batches
            # in order, but the one beside it may reach its thread first).
            compressions.hold = VALUE + b"%06d" % first
            compressions.gate.clear()
            n = 5 * PER_BATCH
            for i in range(PER_BATCH, n):
                p.send_nowait("one", VALUE + b"%06d" % i)
            # Two of the batches behind it compressed (on the other worker) before
            # it: its compression did not hold theirs back.
            assert await eventually(
                lambda: compressions.held.is_set() and compressions.finished >= 1 + 2, 10, 0.005
            )
            assert len(fake.records("one", 0)) == first  # nothing overtook the held one
            compressions.gate.set()
            await p.flush()
        stats = p.stats()
    assert (stats.delivered, stats.failed) == (n, 0)
    assert [r.value for r in fake.records("one", 0)] == [VALUE + b"%06d" % i for i in range(n)]
    assert compressions.most_at_once <= 2
    batches = _batches(fake)
    assert len(batches) >= 5
    assert [b.base_sequence for b in batches] == [
        sum(len(x.records) for x in batches[:k]) for k in range(len(batches))
    ]


async def test_a_batch_in_flight_lets_the_next_ones_compress(
    fake: FakeClient, compressions: Compressions
) -> None:
    """One batch in flight per partition (no idempotence): while the broker holds
    it, the next max_in_flight batches are compressed on the workers, no more; they
    go one after another once it is answered, in order."""
    pytest.importorskip("cramjam")
    fake.gate = anyio.Event()
    opts = {"compression": "zstd", "batch_size": LARGE, "batch_num": 100_000, "max_in_flight": 3}
    async with running(fake, **opts) as p:
        with anyio.fail_after(scaled(20)):
            n = 8 * PER_BATCH
            # The first batch in flight, held by the broker; three more compressed.
            await _send_while_the_first_is_held(fake, p, n)
            assert await eventually(lambda: compressions.finished >= 4, 10, 0.005)
            await anyio.sleep(scaled(0.2))
            assert compressions.finished == 4 and len(fake.requests) == 1
            fake.gate.set()
            await p.flush()
        stats = p.stats()
    assert (stats.delivered, stats.failed) == (n, 0)
    assert [r.value for r in fake.records("one", 0)] == [VALUE + b"%06d" % i for i in range(n)]
    assert compressions.threads and threading.get_ident() not in compressions.threads


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
async def test_the_batch_to_send_next_compresses_first(
    fake: FakeClient, compressions: Compressions, codec: str
) -> None:
    """One batch in flight per partition: of the batches compressed ahead while the
    broker holds it, the next to go is compressed first (the workers take them in
    order, on trio too), so the flusher never waits for one behind it."""
    pytest.importorskip("cramjam")
    fake.gate = anyio.Event()
    compressions.gate.clear()
    compressions.hold_from = 1  # every batch's compression but the first
    opts = {"compression": codec, "batch_size": LARGE, "batch_num": 100_000, "max_in_flight": 3}
    async with running(fake, **opts) as p:
        with anyio.fail_after(scaled(20)):
            n = 8 * PER_BATCH
            # The first batch in flight, held by the broker; both workers busy.
            await _send_while_the_first_is_held(fake, p, n)
            assert await eventually(lambda: compressions.running == 2, 10, 0.005)
            await anyio.sleep(scaled(0.1))
            started = list(compressions.starts)
            compressions.gate.set()
            fake.gate.set()
            await p.flush()
        stats = p.stats()
    assert (stats.delivered, stats.failed) == (n, 0)
    assert [r.value for r in fake.records("one", 0)] == [VALUE + b"%06d" % i for i in range(n)]
    firsts = [int(b.records[0].value[len(VALUE) :]) for b in _batches(fake)]
    assert len(firsts) >= 4
    # The first batch, then the second and third (in either order: two threads).
    assert started[0] == firsts[0] == 0
    assert sorted(started[1:]) == firsts[1:3]
