"""A broker restart against the real broker, with the producer's default retry
settings: records handed over while no broker is reachable wait for it to come
back (up to delivery_timeout) instead of being reported after max_retry."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import anyio.to_thread
import pytest

from kafka_asgi.producer import Producer
from tests.support.brokers import topic_at
from tests.support.inflight import StrikeAtFive
from tests.support.processes import freeze_group, thaw_group
from tests.support.readers import Outcomes, read_back
from tests.support.timing import scaled

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "plain"])
async def test_records_handed_over_while_kafka_is_down_are_delivered(
    own_broker: Any, idempotent: bool, anyio_backend: str
) -> None:
    bootstrap = own_broker.addresses().plaintext
    topic = topic_at(bootstrap, "outage", 3)
    outcomes = Outcomes()
    before = [b"before-%05d" % i for i in range(500)]
    during: list[bytes] = []
    producer = Producer(
        bootstrap,
        required_acks=-1,
        enable_idempotence=idempotent,
        connect_timeout=1.0,
        request_timeout=5.0,
        on_delivery=outcomes.on_delivery,
        error_handle=outcomes.error_handle,
    )
    # The defaults that used to give up within a second of an outage.
    assert (producer.options.max_retry, producer.options.retry_backoff) == (3, 0.1)
    async with producer:
        for i, value in enumerate(before):
            producer.send_nowait(topic, value, key=b"%d" % (i % 30))
        await producer.flush(timeout=30)
        assert set(outcomes.acked) == set(before)
        await anyio.to_thread.run_sync(own_broker.stop)
        # About 5 s of traffic while nothing listens.
        for i in range(50):
            for j in range(40):
                value = b"during-%05d" % (i * 40 + j)
                producer.send_nowait(topic, value, key=b"%d" % (j % 30))
                during.append(value)
            await anyio.sleep(0.1)
        stats = producer.stats()
        assert stats.failed == 0 and stats.buffered + stats.in_flight == len(during)
        await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
        await producer.flush(timeout=60)
        stats = producer.stats()
    sent = set(before) | set(during)
    acked = set(outcomes.acked)
    failed = set(outcomes.failed)
    # Each record acknowledged or reported, once; none lost silently.
    assert not outcomes.acked_twice and acked.isdisjoint(failed) and acked | failed == sent
    assert set(outcomes.handled) == failed
    # None handed over during the outage was given up on: no broker ever answered
    # about them, so max_retry did not apply.
    assert not failed & set(during), sorted(failed)[:5]
    assert stats.delivered == len(acked) and stats.failed == len(failed)
    # The outage path was taken: batches were tried while nothing listened and kept.
    # (Not every record is in such a batch: records queued behind a backing-off batch
    # go out only once the broker is back, so retried < len(during) is normal.)
    assert stats.retried > 0
    read = await anyio.to_thread.run_sync(read_back, bootstrap, topic, 3, len(acked))
    values = Counter(v for items in read.values() for _, _, v, _ in items)
    assert acked <= set(values)
    if idempotent:
        assert not failed
        assert max(values.values()) == 1, [v for v, n in values.items() if n > 1][:5]
        assert set(values) == sent


# Log-like and compressible, about 300 B with the number in front.
LOG_PAD = b' {"method":"GET","path":"/items/42","status":200,"ms":1.234}' * 5


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
async def test_batches_compressing_ahead_survive_a_killed_broker(
    own_broker: Any, codec: str, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large gzip and zstd batches, a partition's next ones compressing on the
    workers while others are in flight (idempotent, 5 per partition), and the broker
    killed (SIGKILL) mid-stream, then started again: every record acknowledged once,
    in order, none reported; the batches were compressed off the loop."""
    import threading

    import kafka_asgi.producer.sender as sender_module
    from kafka_asgi.protocol.compression import compress

    if codec == "zstd":
        pytest.importorskip("cramjam")
    threads: set[int] = set()

    def spy(c: int, data: Any, level: int | None = None) -> bytes:
        threads.add(threading.get_ident())
        return compress(c, data, level)

    monkeypatch.setattr(sender_module, "compress", spy)
    bootstrap = own_broker.addresses().plaintext
    topic = topic_at(bootstrap, "ahead")
    outcomes = Outcomes()
    sent: list[bytes] = []
    producer = Producer(
        bootstrap,
        required_acks=-1,
        enable_idempotence=True,
        compression=codec,
        batch_num=2000,  # about 600 KB a batch: past both codecs' thresholds
        max_buffering=400_000,
        connect_timeout=1.0,
        request_timeout=5.0,
        on_delivery=outcomes.on_delivery,
        error_handle=outcomes.error_handle,
    )
    killed_with = 0
    async with producer:
        with anyio.fail_after(180):
            for tick in range(120):
                for _ in range(2000):
                    value = b"%07d" % len(sent) + LOG_PAD
                    producer.send_nowait(topic, value)
                    sent.append(value)
                await anyio.sleep(0.01)
                if not killed_with and tick >= 20 and producer.stats().in_flight:
                    killed_with = producer.stats().in_flight
                    await anyio.to_thread.run_sync(own_broker.kill)
                if killed_with and tick >= 60:
                    break
            assert killed_with, "no request was in flight to be cut"
            await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
            await producer.flush(timeout=120)
        stats = producer.stats()
    assert not outcomes.failed and not outcomes.handled
    assert not outcomes.acked_twice and set(outcomes.acked) == set(sent)
    assert stats.delivered == len(sent) and stats.failed == 0
    assert threads and threading.get_ident() not in threads
    read = await anyio.to_thread.run_sync(read_back, bootstrap, topic, 1, len(sent))
    assert [v for _, _, v, _ in read[0]] == sent  # once each, in order


def freeze_at_five(topic: str, pid: int) -> StrikeAtFive:
    """A probe that SIGSTOPs the broker (``pid``'s process group) the moment, once
    armed, a partition of ``topic`` has 5 Produce requests started and not finished."""
    probe = StrikeAtFive(topic)

    def strike(partition: int) -> bool:
        freeze_group(pid)
        return True

    probe.strike = strike
    return probe


PER_TICK = 100  # records every 20 ms
BURST = 600  # records of a tick once the freeze is armed (at 4 KiB, ~16 batches a partition)


class FrozenStream:
    """An idempotent producer (acks=all) streaming keyed, numbered records to a new
    3-partition topic of ``own_broker``, with a :func:`freeze_at_five` probe."""

    def __init__(self, own_broker: Any, prefix: str, **options: Any) -> None:
        self.bootstrap = own_broker.addresses().plaintext
        self.topic = topic_at(self.bootstrap, prefix, 3)
        self.outcomes = Outcomes()
        self.sent: list[bytes] = []
        self.producer = Producer(
            self.bootstrap,
            required_acks=-1,
            enable_idempotence=True,
            flush_time=0.02,
            max_buffering=200_000,
            on_delivery=self.outcomes.on_delivery,
            error_handle=self.outcomes.error_handle,
            **options,
        )
        pid = own_broker.pid()
        assert pid is not None
        self.pid = pid
        self.probe = freeze_at_five(self.topic, pid)
        self.producer.add_hooks(self.probe)

    async def tick(self, records: int = PER_TICK) -> None:
        """``records`` records, then 20 ms."""
        sent = self.sent
        for _ in range(records):
            value = b"%07d" % len(sent) + LOG_PAD
            self.producer.send_nowait(self.topic, value, key=b"%d" % (len(sent) % 30))
            sent.append(value)
        await anyio.sleep(0.02)

    async def until_frozen(self, after: float) -> None:
        """Stream; from ``after`` seconds on, freeze the broker once a partition has
        5 batches in flight (at most 8 s in: the test then finds ``probe.struck_with`` 0).
        Armed, each tick hands over BURST records at once, several batches of each
        partition, which go out as up to 5 requests together: a broker answering
        within a tick's 20 ms rarely has 5 of a partition's in flight otherwise (a CI
        run once found none in the 6.5 s armed)."""
        start = anyio.current_time()
        while not self.probe.struck_with and anyio.current_time() - start < 8.0:
            armed = self.probe.armed = anyio.current_time() - start >= after
            await self.tick(BURST if armed else PER_TICK)

    def thaw(self) -> None:
        thaw_group(self.pid)


async def test_a_frozen_broker_gets_every_record_once_and_in_order(
    own_broker: Any, anyio_backend: str
) -> None:
    """The broker SIGSTOPped for 10 s (a hung process, a paused VM: its kernel still
    accepts connections) under an idempotent stream with 5 batches in flight per
    partition. The requests in flight time out (request_timeout + 5 s), their
    connections close; retries' new connections get no handshake answer
    (request_timeout) until the thaw. Then the broker goes on with what it had read,
    from connections the producer gave up on as well, while the retries arrive:
    every record acknowledged once, written once, in order per partition."""
    run = FrozenStream(
        own_broker,
        "frozen",
        max_in_flight=5,
        batch_size=4096,
        connect_timeout=1.0,
        request_timeout=1.5,
    )
    producer, outcomes, sent, probe = run.producer, run.outcomes, run.sent, run.probe
    try:
        async with producer:
            with anyio.fail_after(120):
                await run.until_frozen(after=1.5)
                frozen_at = anyio.current_time()
                while anyio.current_time() < frozen_at + 10.0:
                    await run.tick()
                run.thaw()
                during = producer.stats()
                for _ in range(50):  # a second more after the thaw
                    await run.tick()
                await producer.flush(timeout=60)
            stats = producer.stats()
    finally:
        run.thaw()
    print(
        f"\n[{anyio_backend}] {probe.struck_with} batches of a partition in flight at the"
        f" freeze (most in the run: {probe.most()});"
        f" {len(sent)} sent, {stats.delivered} delivered, {stats.retried} record retries;"
        f" while frozen: {during.failed} failed, {during.buffered + during.in_flight} held"
    )
    assert probe.struck_with == 5
    assert stats.retried > 0  # the requests cut by the freeze were tried again
    assert not outcomes.failed and not outcomes.handled, outcomes.errors[:3]
    assert not outcomes.acked_twice and set(outcomes.acked) == set(sent)
    assert stats.delivered == len(sent) and stats.failed == 0
    read = await anyio.to_thread.run_sync(read_back, run.bootstrap, run.topic, 3, len(sent))
    values = Counter(v for items in read.values() for _, _, v, _ in items)
    assert max(values.values()) == 1, [v for v, n in values.items() if n > 1][:5]
    assert set(values) == set(sent)
    for partition, items in read.items():  # in the order handed over, per partition
        numbers = [int(v[:7]) for _, _, v, _ in items]
        assert numbers == sorted(numbers), f"partition {partition} out of order"


async def test_close_with_the_broker_frozen_is_bounded_and_reports_the_rest(
    own_broker: Any, anyio_backend: str
) -> None:
    """The broker SIGSTOPped with 5 batches of a partition in flight, and the producer
    closed while it stays frozen (the default request_timeout, 30 s: nothing times
    out by itself). A frozen broker keeps its connections open and stops reading, so
    writes to it block once its socket buffers are full. aclose() returns within
    close_timeout, and every record handed over was acknowledged or reported to the
    callbacks, none silently dropped; what was acknowledged is in the log."""
    run = FrozenStream(
        own_broker,
        "frozen-close",
        batch_size=1024,  # a few records a batch: 5 in flight soon
        close_timeout=2.0,
    )
    producer, outcomes, sent, probe = run.producer, run.outcomes, run.sent, run.probe
    took = -1.0
    try:
        await producer.start()
        with anyio.fail_after(60):
            await run.until_frozen(after=1.0)
            frozen_at = anyio.current_time()
            while anyio.current_time() < frozen_at + 1.0:
                await run.tick()
        before = time.monotonic()
        with anyio.fail_after(30):  # the caller's own bound, far above close_timeout
            await producer.aclose()
        took = time.monotonic() - before
        stats = producer.stats()
    finally:
        run.thaw()
    print(
        f"\n[{anyio_backend}] closed in {took:.2f}s with the broker frozen"
        f" ({probe.struck_with} batches of a partition in flight at the freeze): {len(sent)} sent,"
        f" {len(outcomes.acked)} acknowledged, {sum(outcomes.failed.values())} reported"
    )
    assert probe.struck_with == 5
    assert took < 2.0 + scaled(2.0)
    acked = set(outcomes.acked)
    failed = set(outcomes.failed)
    assert not outcomes.acked_twice and max(outcomes.failed.values(), default=1) == 1
    assert acked.isdisjoint(failed) and acked | failed == set(sent)
    assert failed  # what the frozen broker held was reported, not waited for
    assert stats.delivered == len(acked) and stats.failed == len(failed)
    read = await anyio.to_thread.run_sync(read_back, run.bootstrap, run.topic, 3, len(acked))
    values = {v for items in read.values() for _, _, v, _ in items}
    assert acked <= values
