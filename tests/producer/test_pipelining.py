"""Idempotent pipelining (issue 17): up to max_in_flight batches in flight per
partition, kept in order by sequence numbers, against the in-memory FakeClient
(which checks sequence numbers and epochs as a broker does)."""

from __future__ import annotations

import time
from collections import deque

import anyio
import pytest

from kafka_asgi.network.errors import ConnectionClosedError, RequestTimeout
from kafka_asgi.producer import idempotence
from kafka_asgi.protocol.errors import UnsupportedVersionError
from kafka_asgi.protocol.messages.produce import PartitionProduceResponse
from kafka_asgi.protocol.records import decode_batches
from tests.support.fake_client import FakeClient, Fault
from tests.support.inflight import InFlightProbe
from tests.support.pipelining import WARM, burst, opts, stored, value
from tests.support.producers import Reports, running
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake() -> FakeClient:
    client = FakeClient()
    client.add_topic("one", 1)
    return client


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def lenient() -> FakeClient:
    """As Kafka 2.5 to 4.4: a partition with no state for a producer takes any first
    sequence number from it (KAFKA-15591)."""
    client = FakeClient(any_first_sequence=True)
    client.add_topic("one", 1)
    return client


@pytest.fixture
def short_trust(monkeypatch: pytest.MonkeyPatch) -> float:
    """STATE_TRUSTED_FOR cut to 0.2 s, so tests can wait past it."""
    monkeypatch.setattr(idempotence, "STATE_TRUSTED_FOR", 0.2)
    return 0.2


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "plain"])
async def test_batches_in_flight_per_partition(
    fake: FakeClient, reports: Reports, idempotent: bool
) -> None:
    limit = 5 if idempotent else 1
    async with running(fake, reports, **opts(idempotent)) as producer:
        await burst(fake, producer, 50, limit)
        await anyio.sleep(0.05)
        # One partition: each request carries one of its batches, all outstanding.
        assert len(fake.requests) == limit
        assert producer._buffers["one"].partitions[0].inflight == limit
        assert fake.gate is not None
        fake.gate.set()
    assert stored(fake) == list(range(50))
    assert not reports.errors


async def test_max_in_flight_bounds_the_partition(fake: FakeClient, reports: Reports) -> None:
    async with running(fake, reports, **opts(max_in_flight=3)) as producer:
        await burst(fake, producer, 50, 3)
        await anyio.sleep(0.05)
        assert len(fake.requests) == 3
        assert fake.gate is not None
        fake.gate.set()
    assert stored(fake) == list(range(50))


async def test_retriable_error_retries_the_later_batches_in_order(
    fake: FakeClient, reports: Reports
) -> None:
    # NOT_ENOUGH_REPLICAS for the first batch (not written): the four after it are
    # refused as out of order (a gap), then all go again in sequence order.
    fake.codes[("one", 0)] = deque([19])
    async with running(fake, reports, **opts()) as producer:
        await burst(fake, producer, 50, 5)
        assert fake.gate is not None
        fake.gate.set()
    assert stored(fake) == list(range(50))
    assert not reports.errors
    assert list(fake.epochs.values()) == [0]  # no epoch bump: only a retry


@pytest.mark.parametrize("written", [True, False], ids=["written", "lost"])
async def test_lost_response_mid_pipeline(
    fake: FakeClient, reports: Reports, written: bool
) -> None:
    # The first request's connection breaks (after or before the broker took it):
    # its retry is a duplicate the broker drops, or fills the gap the later
    # batches were refused for. Exactly once, in order.
    fake.faults.append(Fault(ConnectionClosedError("gone"), written=written))
    async with running(fake, reports, **opts()) as producer:
        await burst(fake, producer, 50, 5)
        assert fake.gate is not None
        fake.gate.set()
    assert stored(fake) == list(range(50))
    assert not reports.errors


async def test_unknown_producer_id_is_retried(fake: FakeClient, reports: Reports) -> None:
    fake.codes[("one", 0)] = deque([59])  # UNKNOWN_PRODUCER_ID
    async with running(fake, reports, **opts()) as producer:
        await burst(fake, producer, 50, 5)
        assert fake.gate is not None
        fake.gate.set()
    assert stored(fake) == list(range(50))
    assert not reports.errors


async def test_duplicate_sequence_is_success(fake: FakeClient, reports: Reports) -> None:
    fake.codes[("one", 0)] = deque([46])  # DUPLICATE_SEQUENCE_NUMBER: the broker has it
    async with running(fake, reports, on_delivery=reports.on_delivery, **opts()) as producer:
        await producer.send("one", value(0))
    assert not reports.errors
    assert [d[0] for d in reports.deliveries] == [None]


async def test_failed_maybe_written_batch_resolved_by_later_ack(
    fake: FakeClient, reports: Reports
) -> None:
    # The first batch times out after the broker stored it and has no retry left:
    # reported (maybe written). The batches after it are acknowledged: the broker
    # had it, the sequence is resolved, no epoch bump.
    fake.faults.append(Fault(RequestTimeout("slow"), written=True))
    async with running(fake, reports, **opts(max_retry=0)) as producer:
        await burst(fake, producer, 50, 5)
        assert fake.gate is not None
        fake.gate.set()
    assert stored(fake) == list(range(50))
    assert [r[4] for r in reports.errors] == [False]  # maybe delivered
    assert list(fake.epochs.values()) == [0]


async def test_failed_unwritten_batch_bumps_the_epoch(fake: FakeClient, reports: Reports) -> None:
    # The same, but the broker never got it: the next batch is refused as out of
    # order right after the unresolved sequence: the epoch is bumped and the rest
    # is delivered from sequence 0, in order, once.
    fake.faults.append(Fault(RequestTimeout("slow"), written=False))
    async with running(fake, reports, **opts(max_retry=0)) as producer:
        await burst(fake, producer, 50, 5)
        assert fake.gate is not None
        fake.gate.set()
    assert len(reports.errors) == 1
    lost = len(reports.errors[0][2])  # the first batch's records
    assert 0 < lost < 50
    assert stored(fake) == list(range(lost, 50))
    assert list(fake.epochs.values()) == [1]


async def test_epoch_bump_keeps_other_partitions_retries_deduplicated(
    reports: Reports,
) -> None:
    # Partition 0 is refused as out of order (the broker lost our state): the epoch
    # is bumped. Partition 1 has a batch the broker stored whose response was lost:
    # its retry keeps the epoch and sequence number it was sent with, so the broker
    # drops the copy (restamped under the new epoch, it would be stored twice).
    fake = FakeClient()
    fake.add_topic("two", 2)
    async with running(fake, reports, **opts(retry_backoff=0.3, flush_time=0.02)) as producer:
        await producer.send("two", b"warm-0", partition=0)
        await producer.send("two", b"warm-1", partition=1)
        fake.gate = anyio.Event()
        fake.codes[("two", 0)] = deque([45])  # OUT_OF_ORDER_SEQUENCE_NUMBER
        sent = len(fake.requests)
        producer.send_nowait("two", b"a", partition=0)
        assert await eventually(lambda: len(fake.requests) == sent + 1, 5.0, interval=0.005)
        fake.faults.append(Fault(ConnectionClosedError("gone"), written=True))
        producer.send_nowait("two", b"b", partition=1)
        assert await eventually(lambda: producer.stats().retried >= 1, 5.0, interval=0.005)
        fake.gate.set()  # partition 0's answer: the epoch is bumped before b's retry
        await producer.flush(timeout=10)
    assert [r.value for r in fake.records("two", 0)] == [b"warm-0", b"a"]
    assert [r.value for r in fake.records("two", 1)] == [b"warm-1", b"b"]
    assert not reports.errors
    epochs = {part: epoch for (_, _, part), epoch in fake.epochs.items()}
    assert epochs == {0: 1, 1: 0}


async def test_invalid_producer_epoch_gets_a_new_producer_id(
    fake: FakeClient, reports: Reports
) -> None:
    # INVALID_PRODUCER_EPOCH for the epoch in use: InitProducerId again, and the
    # partition's batches restart at sequence 0 under the new id, in order, once.
    async with running(fake, reports, **opts()) as producer:
        await producer.send("one", value(1000))
        fake.codes[("one", 0)] = deque([47])
        await burst(fake, producer, 50, 1)
        assert fake.gate is not None
        fake.gate.set()
        for i in range(50, 60):
            producer.send_nowait("one", value(i))
    assert stored(fake) == [1000, *range(60)]
    assert not reports.errors
    assert len({pid for pid, _, _ in fake._seqs}) == 2


@pytest.mark.parametrize("answer", ["described", "no-such-api", "a-bug"])
async def test_retry_refused_as_out_of_order_after_a_restart(
    fake: FakeClient, reports: Reports, answer: str
) -> None:
    # Three batches in flight are written, their answers lost; the broker restarts
    # cleanly before they are retried.  It reloads our state with the last batch
    # only, so the retry of the first is refused as out of order, not recognised
    # as a duplicate.  DescribeProducers says the broker has all three: they are
    # acknowledged, the rest follows with the same numbers, each record once and
    # no epoch bump.  Where the question cannot be asked (a broker before Kafka
    # 3.0, or a bug while asking), the epoch is bumped as Java's client does: at
    # least once.
    if answer == "no-such-api":
        fake.describe_error = UnsupportedVersionError("no DescribeProducers")
    elif answer == "a-bug":
        fake.describe_error = RuntimeError("a bug while asking")  # logged, not raised
    for _ in range(3):
        fake.faults.append(Fault(ConnectionClosedError("gone"), written=True))
    async with running(fake, reports, **opts(max_in_flight=3, retry_backoff=0.3)) as producer:
        await burst(fake, producer, 50, 3)
        # The three failed (written); their retries wait retry_backoff.
        assert await eventually(lambda: producer.stats().retried > 0, 5.0, interval=0.005)
        assert not fake.faults and len(fake.requests) == 3
        fake.restart()
        written = len(stored(fake))
        assert fake.gate is not None
        fake.gate.set()
    assert not reports.errors
    if answer == "described":
        assert stored(fake) == list(range(50))
        assert list(fake.epochs.values()) == [0]
        assert producer._seq_probes_resolved == 1
    else:
        assert stored(fake) == [*range(written), *range(50)]
        assert list(fake.epochs.values()) == [1]
    assert fake.describes == 1


async def test_a_partition_pipelines_once_its_leader_acknowledged_a_batch(
    lenient: FakeClient, reports: Reports
) -> None:
    # KAFKA-15591: a leader with no state for a producer takes any first sequence
    # number (Kafka 2.5 to 4.4). The first batch is refused as not leader (the
    # broker was taking the partition over); had the next ones been in flight, they
    # would have been written, the first refused as out of order from then on, and
    # written after them under a bumped epoch. So the partition's first batch goes
    # alone, and the rest pipeline once it is acknowledged: in order, once, no bump.
    fake = lenient
    fake.codes[("one", 0)] = deque([6])  # NOT_LEADER_OR_FOLLOWER: nothing written
    probe = InFlightProbe()
    async with running(fake, reports, **opts()) as producer:
        producer.add_hooks(probe)
        for i in range(50):
            producer.send_nowait("one", value(i))
        await producer.flush(timeout=10)
    assert stored(fake) == list(range(50))
    assert not reports.errors
    assert list(fake.epochs.values()) == [0]
    assert probe.out_before_first_ack(("one", 0)) == 1, probe.timeline
    assert probe.most() == 5  # and five at once after it


async def test_an_idle_partition_goes_one_batch_at_a_time_again(
    lenient: FakeClient, reports: Reports, short_trust: float
) -> None:
    # The same moment after the leader dropped our state for an idle partition
    # (producer.id.expiration.ms, or retention): it takes any first sequence again,
    # so a partition with no batch acknowledged for STATE_TRUSTED_FOR seconds
    # sends one batch until one is acknowledged. Before, the partition pipelined at
    # once: the first batch (refused as not leader) was written after the next ones.
    fake = lenient
    probe = InFlightProbe()
    async with running(fake, reports, **opts()) as producer:
        await producer.send("one", WARM)
        await burst(fake, producer, 50, 5)  # within the time: pipelined at once
        assert fake.gate is not None
        fake.gate.set()
        await producer.flush(timeout=10)
        fake.gate = None
        await anyio.sleep(short_trust + 0.1)
        fake.expire()
        fake.codes[("one", 0)] = deque([6])  # NOT_LEADER_OR_FOLLOWER: nothing written
        producer.add_hooks(probe)
        for i in range(50, 100):
            producer.send_nowait("one", value(i))
        await producer.flush(timeout=10)
    assert stored(fake) == list(range(100))
    assert not reports.errors
    assert list(fake.epochs.values()) == [0]  # no bump: nothing refused as out of order
    assert probe.out_before_first_ack(("one", 0)) == 1, probe.timeline
    assert probe.most() == 5


@pytest.mark.parametrize(
    "age", [7200.0, 1800.0, 0.0], ids=["two-hours-old", "half-an-hour-old", "fresh"]
)
async def test_old_records_go_one_batch_at_a_time(
    lenient: FakeClient, reports: Reports, age: float
) -> None:
    # The broker counts a producer's idleness from the newest record timestamp of its
    # last batch, not from when it wrote it: records stamped long ago (a spill
    # replayed, the caller's own timestamps) may see our state dropped at its next
    # check however busy the partition is. Then the moment above: a batch refused as
    # not leader, the next ones written where any first sequence is taken. So a
    # partition whose records are older than OLD_RECORDS_AFTER (an hour) goes one
    # batch at a time; younger ones pipeline.
    old = age > idempotence.OLD_RECORDS_AFTER
    fake = lenient
    probe = InFlightProbe()
    stamp = time.time_ns() // 1_000_000 - int(age * 1000)
    async with running(fake, reports, **opts()) as producer:
        for i in range(5):  # one batch, acknowledged
            producer.send_nowait("one", value(i), timestamp=stamp)
        await producer.flush(timeout=10)
        fake.gate = anyio.Event()
        producer.add_hooks(probe)
        for i in range(5, 50):
            producer.send_nowait("one", value(i), timestamp=stamp)
        assert await eventually(lambda: probe.most() >= 1, 5.0, interval=0.005)
        await anyio.sleep(0.05)
        batches_out = probe.most()
        if old:
            fake.expire()  # dropped: any first sequence taken
            fake.codes[("one", 0)] = deque([6])  # NOT_LEADER_OR_FOLLOWER: nothing written
        fake.gate.set()
        await producer.flush(timeout=10)
    assert batches_out == (1 if old else 5), probe.timeline
    assert stored(fake) == list(range(50))
    assert not reports.errors
    assert list(fake.epochs.values()) == [0]  # no bump: nothing refused as out of order


async def test_a_batch_out_past_the_trust_holds_the_next_ones_back(
    lenient: FakeClient, reports: Reports, short_trust: float
) -> None:
    # The same while a batch is out: nothing acknowledged for longer than
    # STATE_TRUSTED_FOR (a slow answer), and meanwhile the leader dropped our state.
    # The batches that come next wait for that answer rather than join it in flight:
    # had they gone, the first would be written where the broker took any sequence,
    # and the batch out (refused as not leader) after them.
    fake = lenient
    async with running(fake, reports, **opts()) as producer:
        await producer.send("one", WARM)
        fake.gate = anyio.Event()
        fake.codes[("one", 0)] = deque([6])  # NOT_LEADER_OR_FOLLOWER: nothing written
        sent = len(fake.requests)
        for i in range(5):  # one batch
            producer.send_nowait("one", value(i))
        assert await eventually(lambda: len(fake.requests) == sent + 1, 5.0, interval=0.005)
        await anyio.sleep(short_trust + 0.1)
        fake.expire()
        for i in range(5, 50):
            producer.send_nowait("one", value(i))
        await anyio.sleep(0.1)
        assert len(fake.requests) == sent + 1  # none joined the batch out
        fake.gate.set()
        await producer.flush(timeout=10)
    assert stored(fake) == list(range(50))
    assert not reports.errors
    assert list(fake.epochs.values()) == [0]


async def test_a_batch_split_behind_one_in_flight_keeps_its_numbers(
    fake: FakeClient, reports: Reports
) -> None:
    # b0 is in flight (not written: NOT_ENOUGH_REPLICAS, its answer held) when the
    # next batch encodes above max_request_size and is split. Its sequence numbers
    # go to its halves: only a batch sent *after* it would leave a gap. The code
    # before bumped the epoch there, sent the first half from sequence 0 under the
    # new epoch while b0 was out, then renumbered b0's retry behind it: b0's records
    # were stored after the next ones.
    fake.codes[("one", 0)] = deque([19])
    async with running(fake, reports, **opts()) as producer:
        await burst(fake, producer, 5, 1)  # b0: records 0-3 (record 4 waits)
        limit = producer._max_request_size
        producer._max_request_size = 700  # the next batch (about 1 KB) must be split
        for i in range(5, 10):
            producer.send_nowait("one", value(i))
        assert await eventually(lambda: len(fake.requests) >= 2, 5.0, interval=0.005)
        producer._max_request_size = limit  # b0's retry goes whole
        assert fake.gate is not None
        fake.gate.set()
    assert stored(fake) == list(range(10))
    assert not reports.errors
    assert list(fake.epochs.values()) == [0]


async def test_a_batch_split_after_a_refusal_leaves_the_retry_before_it_deduplicated(
    fake: FakeClient, reports: Reports
) -> None:
    # b0 (records 0-3, about 900 bytes) is written but its answer is lost; b1 (records
    # 4-7, about 1,000 bytes) is refused as too large for the topic and split. b0's
    # retry keeps its sequence numbers, so the broker drops the copy. The code before
    # bumped the epoch at the split (b0, sent and not done, counted as a batch after
    # b1) and renumbered b0's retry from 0 under the new epoch: stored twice.
    fake.faults.append(Fault(RequestTimeout("slow"), written=True, held=True))
    fake.max_message_bytes = 950
    # b0's retry waits until b1's answer has been dealt with.
    async with running(fake, reports, **opts(retry_backoff=0.3)) as producer:
        await burst(fake, producer, 5, 1)  # b0: records 0-3 (record 4 waits)
        for i in range(5, 10):
            producer.send_nowait("one", b"%06d" % i + b"y" * 234)
        assert await eventually(lambda: len(fake.requests) >= 2, 5.0, interval=0.005)
        assert fake.gate is not None
        fake.gate.set()
    assert stored(fake) == list(range(10))
    assert not reports.errors
    assert list(fake.epochs.values()) == [0]


async def test_a_refused_batch_behind_one_in_flight_gives_its_numbers_to_the_next(
    fake: FakeClient, reports: Reports
) -> None:
    # b0 (records 0-3) is in flight, written, its answer still to come (and lost);
    # b1 (records 4-7) is refused for good (INVALID_RECORD, nothing written) and
    # reported. Its numbers go to the records after it, and b0's retry keeps its
    # own, so the broker drops the copy. The code before counted b0 (sent, not done)
    # as a batch after b1, bumped the epoch and renumbered b0's retry: stored twice.
    fake.faults.append(Fault(RequestTimeout("slow"), written=True, held=True))
    async with running(fake, reports, **opts()) as producer:
        await burst(fake, producer, 5, 1)  # b0: records 0-3 (record 4 waits)
        b0_answer = fake.gate
        assert b0_answer is not None
        fake.gate = None  # the requests after b0 are answered at once
        fake.codes[("one", 0)] = deque([87])  # INVALID_RECORD, for b1
        for i in range(5, 10):  # b1: records 4-7 (records 8 and 9 wait)
            producer.send_nowait("one", value(i))
        assert await eventually(lambda: len(reports.errors) == 1, 5.0, interval=0.005)
        b0_answer.set()
    assert [int(v[:6]) for v in reports.failed_values] == [4, 5, 6, 7]
    assert stored(fake) == [0, 1, 2, 3, 8, 9]
    assert list(fake.epochs.values()) == [0]


async def _split_with_the_first_half_lost(fake: FakeClient) -> None:
    """The batch in flight is refused as too large (its answer held until now) and
    split; both halves go at once, the first one written but its answer lost: it
    waits its retry backoff while the second is acknowledged (four requests in all)."""
    assert await eventually(lambda: len(fake.requests) == 1, 5.0, interval=0.005)
    fake.faults.append(Fault(RequestTimeout("slow"), written=True))
    assert fake.gate is not None
    fake.gate.set()


async def test_flush_waits_for_both_halves_of_a_split_batch(
    fake: FakeClient, reports: Reports
) -> None:
    # flush() followed only the second half of a split batch: it returned while the
    # first half waited for its retry, its records still held.
    async with running(fake, reports, **opts(retry_backoff=0.5)) as producer:
        await producer.send("one", WARM)
        fake.requests.clear()
        fake.gate = anyio.Event()
        fake.codes[("one", 0)] = deque([10])  # MESSAGE_TOO_LARGE for records 0-3
        for i in range(4):
            producer.send_nowait("one", value(i))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_split_with_the_first_half_lost, fake)
            await producer.flush(timeout=10)
        assert sorted(int(d[3][:6]) for d in reports.ok if d[3] != WARM) == [0, 1, 2, 3]
        assert producer.stats().buffered == producer.stats().in_flight == 0
    assert stored(fake) == [0, 1, 2, 3]
    assert len(fake.requests) == 4
    assert not reports.errors


async def test_aclose_waits_for_both_halves_of_a_split_batch(
    fake: FakeClient, reports: Reports
) -> None:
    # aclose()'s final flush followed only the second half of a split batch: the
    # first half, waiting for its retry, was reported ProducerClosedError though the
    # broker had stored it (and a caller sending it again would duplicate it).
    outcomes: list[object] = []

    async def send(i: int) -> None:
        try:
            outcomes.append(await producer.send("one", value(i)))
        except Exception as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        async with running(fake, reports, **opts(retry_backoff=0.5, linger=0.05)) as producer:
            await producer.send("one", WARM)
            fake.requests.clear()
            fake.gate = anyio.Event()
            fake.codes[("one", 0)] = deque([10])  # MESSAGE_TOO_LARGE for records 0-3
            for i in range(4):
                tg.start_soon(send, i)
            await _split_with_the_first_half_lost(fake)
    assert [type(o).__name__ for o in outcomes] == ["RecordMetadata"] * 4
    assert sorted(stored(fake)) == [0, 1, 2, 3]  # (trio starts the sends in reverse)
    assert len(fake.requests) == 4
    assert not reports.errors


async def test_a_split_half_held_back_by_a_new_producer_id_expires(
    fake: FakeClient, reports: Reports
) -> None:
    # b0 (in flight with b1 and b2) is refused as too large and split, while another
    # partition's INVALID_PRODUCER_EPOCH gets a new producer id. The halves (never
    # sent) wait for b1 and b2 (sent under the old id) to be done; those wait behind
    # the halves, refused as out of order. No try fails, so delivery_timeout never
    # came: the partition held its records for ever (until aclose reported them).
    fake.add_topic("two", 1)
    async with running(fake, reports, **opts(delivery_timeout=1.0)) as producer:
        await producer.send("two", WARM)
        fake.codes[("one", 0)] = deque([10])  # b0: MESSAGE_TOO_LARGE, split
        fake.codes[("two", 0)] = deque([47])  # INVALID_PRODUCER_EPOCH: a new id
        await burst(fake, producer, 10, 2)  # b0 (0-3), b1 (4-7) in flight
        with anyio.fail_after(scaled(5)):
            async with anyio.create_task_group() as tg:
                tg.start_soon(producer.send, "two", value(100))  # with b2 (8, 9)
                assert await eventually(lambda: len(fake.requests) == 3, 5.0, interval=0.005)
                assert fake.gate is not None
                fake.gate.set()
        assert await eventually(
            lambda: producer.stats().buffered + producer.stats().in_flight == 0, 5.0
        ), producer.stats()
    failed = sorted(int(v[:6]) for v in reports.failed_values)
    assert sorted(stored(fake) + failed) == list(range(10))  # each once
    assert failed and {type(e[3]).__name__ for e in reports.errors} == {"DeliveryTimeoutError"}


class _RestartsAfterB(FakeClient):
    """Batch A is written but answered NOT_ENOUGH_REPLICAS_AFTER_APPEND (maybe written);
    the leader restarts cleanly right after writing B, the batch after it, keeping
    our last batch only."""

    a_failed = False

    def _append(self, topic: str, partition: int, data: bytes) -> PartitionProduceResponse:
        (batch,) = decode_batches(data)
        values = [r.value for r in batch.records]
        answer = super()._append(topic, partition, data)
        if values == [b"A"] and not self.a_failed:
            self.a_failed = True
            return PartitionProduceResponse(index=partition, error_code=20, base_offset=-1)
        if values == [b"B"] and answer.error_code == 0:
            self.restart()
        return answer


async def test_a_batch_a_later_acknowledgement_proves_written_is_not_written_again(
    reports: Reports,
) -> None:
    # A's retry is refused as out of order (the restarted leader knows B only), and
    # its numbers are before what B's acknowledgement moved past: the broker has A.
    # The epoch was bumped and A written again, after B.
    fake = _RestartsAfterB()
    fake.add_topic("t", 1)
    options = opts(batch_num=1, flush_time=0.01, retry_backoff=0.05)
    async with running(fake, reports, **options) as producer:
        producer.send_nowait("t", b"r0")
        await producer.flush()  # one acknowledged: the partition pipelines
        fake.gate = anyio.Event()  # A and B both in flight
        producer.send_nowait("t", b"A")
        assert await eventually(lambda: len(fake.requests) == 2, 5.0, interval=0.005)
        producer.send_nowait("t", b"B")
        assert await eventually(lambda: len(fake.requests) == 3, 5.0, interval=0.005)
        fake.gate.set()
        with anyio.fail_after(scaled(10)):
            await producer.flush()
    assert [r.value for r in fake.records("t", 0)] == [b"r0", b"A", b"B"]
    assert sorted(d[3] for d in reports.ok) == [b"A", b"B", b"r0"]
    assert not reports.errors
