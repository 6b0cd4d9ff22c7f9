"""A partition idle past the broker's ``producer.id.expiration.ms``, on a real broker of
this module's own that forgets an idle producer within seconds: the broker drops the
producer's state, after which it takes any first sequence number from it again (Kafka
2.5 to 4.4), so the producer goes back to one batch at a time for that partition until
one is acknowledged (kafka_asgi/producer/idempotence.py, STATE_TRUSTED_FOR).  The
broker dates that idleness from the records' own timestamps: a producer of records
stamped hours ago is forgotten however busy, so their partition goes one batch at a
time (OLD_RECORDS_AFTER)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.producer import Producer, idempotence
from kafka_asgi.protocol.errors import OutOfOrderSequenceNumberError, error_for_code
from kafka_asgi.protocol.messages import DescribeProducersRequest
from kafka_asgi.protocol.messages.describe_producers import TopicRequest
from tests.support.brokers import KafkaCluster, create_topic
from tests.support.delivery import Outcome, read_log
from tests.support.inflight import InFlightProbe
from tests.support.raw_producer import new_producer_id, one_record_batch

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

# The broker forgets a producer 2 s after its last batch, looking every 0.5 s (the
# defaults: a day, every 10 minutes).
OWN_BROKER_PROPERTIES = {
    "producer.id.expiration.ms": "2000",
    "producer.id.expiration.check.interval.ms": "500",
}
OUT_OF_ORDER = OutOfOrderSequenceNumberError.code


async def _producers_known(client: KafkaClient, leader: int, topic: str) -> set[int]:
    """The producer ids the leader keeps state for on ``topic`` partition 0."""
    request = DescribeProducersRequest(topics=[TopicRequest(name=topic, partition_indexes=[0])])
    response = await client.send(leader, request)
    (part,) = response.topics[0].partitions
    assert part.error_code == 0, error_for_code(part.error_code)
    return {state.producer_id for state in part.active_producers}


async def _forgotten(client: KafkaClient, leader: int, topic: str, pid: int) -> None:
    """Wait (at most 30 s) until the leader no longer has state for ``pid``."""
    with anyio.fail_after(30):
        while True:
            if pid not in await _producers_known(client, leader, topic):
                return
            await anyio.sleep(0.2)


async def test_an_idle_producer_is_forgotten_and_any_sequence_taken_again(
    own_broker: Any,
) -> None:
    # Numbered 17 after a batch numbered 0, a batch is refused as out of order while
    # the broker has our state; once the broker has dropped it (idle past
    # producer.id.expiration.ms), Kafka before 4.5 writes it.
    kafka = KafkaCluster(plaintext=own_broker.addresses().plaintext, source="own")
    topic = create_topic(kafka, partitions=1, prefix="expiry")
    async with KafkaClient(kafka.plaintext) as client:
        pid = await new_producer_id(client)
        leader = (await client.fetch_metadata(topic)).partitions[0].leader

        async def produce(seq: int, value: bytes) -> Any:
            request = one_record_batch(topic, pid, seq, value)
            response = await client.send(leader, request, min_version=3)
            (answer,) = response.responses[0].partition_responses
            return answer

        first = await produce(0, b"zero")
        assert (first.error_code, first.base_offset) == (0, 0)
        assert (await produce(17, b"early")).error_code == OUT_OF_ORDER
        assert pid.producer_id in await _producers_known(client, leader, topic)
        await _forgotten(client, leader, topic, pid.producer_id)
        late = await produce(17, b"seventeen")
    version = own_broker.kafka_version
    if tuple(int(n) for n in version.split(".")[:2]) >= (4, 5):
        assert late.error_code in (0, OUT_OF_ORDER), late  # KAFKA-15591: not checked here
    else:
        assert (late.error_code, late.base_offset) == (0, 1), late


async def test_a_partition_idle_past_the_expiry_goes_one_batch_first(
    own_broker: Any, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The producer writes, the partition idles until the broker has forgotten the
    # producer, then a burst: its first batch goes alone, the rest pipeline once it
    # is acknowledged; every record once, in order, none refused as out of order.
    monkeypatch.setattr(idempotence, "STATE_TRUSTED_FOR", 1.0)  # below the 2 s expiry
    kafka = KafkaCluster(plaintext=own_broker.addresses().plaintext, source="own")
    topic = create_topic(kafka, partitions=1, prefix="expiry")
    probe = InFlightProbe()
    outcome = Outcome()
    records = 2000
    async with (
        Producer(
            kafka.plaintext,
            required_acks=-1,
            enable_idempotence=True,
            batch_size=4096,  # 1 KiB records: a few a batch, many batches a burst
            flush_time=0.05,
            on_delivery=outcome.on_delivery,
        ) as producer,
        KafkaClient(kafka.plaintext) as client,
    ):
        for i in range(100):
            outcome.handed(i, None)
            producer.send_nowait(topic, b"%d" % i + b" " * 1000)
        await producer.flush(timeout=30)
        pid, epoch = producer._pid, producer._pid_epoch
        leader = (await client.fetch_metadata(topic)).partitions[0].leader
        assert pid in await _producers_known(client, leader, topic)
        await _forgotten(client, leader, topic, pid)
        producer.add_hooks(probe)
        for i in range(100, records):
            outcome.handed(i, None)
            producer.send_nowait(topic, b"%d" % i + b" " * 1000)
        await producer.flush(timeout=60)
        assert (producer._pid, producer._pid_epoch) == (pid, epoch)  # no bump
    assert probe.out_before_first_ack((topic, 0)) == 1, probe.timeline
    assert probe.most() == 5  # and pipelined after it
    assert not outcome.unreported and not outcome.failed
    assert not probe.retried, probe.timeline
    log = await read_log(kafka.plaintext, topic, 1)
    assert log.by_partition[0] == list(range(records))


HOUR_NS = 3600 * 1_000_000_000


@pytest.mark.parametrize("age_ns", [HOUR_NS, 0], ids=["an-hour-old", "fresh"])
async def test_a_busy_producer_of_old_records_is_forgotten(own_broker: Any, age_ns: int) -> None:
    # The broker's expiry clock is a batch's newest record timestamp: a producer
    # writing every 0.2 s (ten times within the 2 s expiry) of records stamped an
    # hour ago loses its state at the broker's next check, however busy; one writing
    # fresh records keeps it.
    kafka = KafkaCluster(plaintext=own_broker.addresses().plaintext, source="own")
    topic = create_topic(kafka, partitions=1, prefix="expiry")
    async with KafkaClient(kafka.plaintext) as client:
        pid = await new_producer_id(client)
        leader = (await client.fetch_metadata(topic)).partitions[0].leader
        forgotten = False
        deadline = anyio.current_time() + 4.0
        seq = 0
        while not forgotten and anyio.current_time() < deadline:
            stamp = time.time_ns() - age_ns
            request = one_record_batch(topic, pid, seq, b"%d" % seq, timestamp_ns=stamp)
            response = await client.send(leader, request, min_version=3)
            (answer,) = response.responses[0].partition_responses
            assert (answer.error_code, answer.base_offset) == (0, seq), answer
            seq += 1
            for _ in range(4):  # between two writes
                await anyio.sleep(0.05)
                if pid.producer_id not in await _producers_known(client, leader, topic):
                    forgotten = True
                    break
    assert forgotten == (age_ns > 0), seq


async def test_a_partition_of_old_records_goes_one_batch_at_a_time(
    own_broker: Any, anyio_backend: str
) -> None:
    # So the producer treats a batch of records older than OLD_RECORDS_AFTER (an
    # hour), once acknowledged, as if its partition had idled that long: one batch at
    # a time (its next batch may meet a leader that takes any first sequence number);
    # every record once and in order.
    kafka = KafkaCluster(plaintext=own_broker.addresses().plaintext, source="own")
    topic = create_topic(kafka, partitions=1, prefix="expiry")
    probe = InFlightProbe()
    outcome = Outcome()
    records = 2000
    stamp = time.time_ns() // 1_000_000 - 7_200_000  # ms: two hours ago
    async with Producer(
        kafka.plaintext,
        required_acks=-1,
        enable_idempotence=True,
        batch_size=4096,  # 1 KiB records: a few a batch, many batches
        flush_time=0.05,
        on_delivery=outcome.on_delivery,
    ) as producer:
        producer.add_hooks(probe)
        for i in range(records):
            outcome.handed(i, None)
            producer.send_nowait(topic, b"%d" % i + b" " * 1000, timestamp=stamp)
        await producer.flush(timeout=60)
        epoch = producer._pid_epoch
        stats = producer.stats()
    assert epoch == 0  # no bump: nothing refused as out of order
    assert stats.batches_sent > 100
    assert probe.most() == 1, probe.timeline
    assert not outcome.unreported and not outcome.failed
    log = await read_log(kafka.plaintext, topic, 1)
    assert log.by_partition[0] == list(range(records))
