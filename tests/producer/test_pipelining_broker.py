"""Idempotent pipelining on the real broker: with idempotence (asked for, or the
default with acks=all) a partition has up to max_in_flight batches in flight (seen by a
hook counting Produce requests per partition); without it, one. What was written is
read back: every record once, in order per partition."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.producer import Producer
from kafka_asgi.protocol.errors import (
    NotLeaderOrFollowerError,
    OutOfOrderSequenceNumberError,
    UnknownTopicOrPartitionError,
)
from tests.support.delivery import Outcome, read_log
from tests.support.inflight import InFlightProbe
from tests.support.raw_producer import new_producer_id, one_record_batch

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

RECORDS = 3000
UNKNOWN_TOPIC_OR_PARTITION = UnknownTopicOrPartitionError.code
NOT_LEADER_OR_FOLLOWER = NotLeaderOrFollowerError.code
PARTITIONS = 2


@pytest.mark.parametrize(
    ("idempotent", "max_in_flight", "expected"),
    [(True, 5, 5), (True, 2, 2), (False, 5, 1), (None, 5, 5)],
    ids=["idempotent-5", "idempotent-2", "plain", "default-acks-all"],
)
async def test_batches_in_flight_per_partition(
    kafka: Any,
    new_topic: Any,
    anyio_backend: str,
    idempotent: bool | None,
    max_in_flight: int,
    expected: int,
) -> None:
    topic = new_topic(partitions=PARTITIONS)
    probe = InFlightProbe()
    outcome = Outcome()
    # None: the default, which acks=all turns on (as the Java client's).
    extra: dict[str, Any] = {} if idempotent is None else {"enable_idempotence": idempotent}
    async with Producer(
        kafka.plaintext,
        required_acks=-1,
        compression="lz4",
        batch_size=4096,  # 1 KiB records: a few a batch, many batches a burst
        max_in_flight=max_in_flight,
        on_delivery=outcome.on_delivery,
        flush_time=0.05,
        **extra,
    ) as producer:
        producer.add_hooks(probe)
        for i in range(RECORDS):
            outcome.handed(i, None)
            producer.send_nowait(topic, b"%d" % i + b" " * 1000)
        await producer.flush(timeout=60)
        assert producer.idempotent is (expected > 1)
    print(f"\n[{anyio_backend}] most batches of a partition in flight: {probe.peak}")
    assert probe.most() == expected
    assert not outcome.unreported and not outcome.failed
    log = await read_log(kafka.plaintext, topic, PARTITIONS)
    assert sorted(log.ids) == list(range(RECORDS))
    assert not log.duplicates()
    for ids in log.by_partition.values():
        assert ids == sorted(ids)
    # The requests reached the broker in order: no batch was refused as out of
    # order (and retried). (A retry while the producer id comes is allowed: a fresh
    # broker may answer COORDINATOR_LOAD_IN_PROGRESS at first.)
    refused = [e for e in probe.retried if isinstance(e, OutOfOrderSequenceNumberError)]
    assert not refused, probe.story(OutOfOrderSequenceNumberError)


async def test_a_leader_without_our_state_takes_any_first_sequence(
    kafka: Any, new_topic: Any
) -> None:
    # Why a partition pipelines only once its leader acknowledged a batch (see
    # kafka_asgi/producer/idempotence.py): a fresh producer's first batch to a
    # partition, numbered 17 instead of 0, is written by Kafka 2.5 to 4.4; Kafka 4.5
    # refuses it as out of order (KAFKA-15591).
    topic = new_topic(partitions=1)
    async with KafkaClient(kafka.plaintext) as client:
        pid = await new_producer_id(client)
        leader = (await client.fetch_metadata(topic)).partitions[0].leader
        request = one_record_batch(topic, pid, 17, b"seventeen")
        for _ in range(100):
            response = await client.send(leader, request, min_version=3)
            (answer,) = response.responses[0].partition_responses
            # Nothing written while the broker's replica manager has not made the
            # partition yet (the moment bench/fresh_topics.py counts): again.
            if answer.error_code not in (UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER):
                break
            await anyio.sleep(0.1)
    version = getattr(kafka.harness, "kafka_version", None)
    if version is None:  # a broker this session did not start: either rule
        assert answer.error_code in (0, OutOfOrderSequenceNumberError.code)
    elif tuple(int(n) for n in version.split(".")[:2]) >= (4, 5):
        assert answer.error_code == OutOfOrderSequenceNumberError.code
    else:
        assert answer.error_code == 0, answer
        assert answer.base_offset == 0
