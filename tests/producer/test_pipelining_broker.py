"""Idempotent pipelining on the real broker: with idempotence (asked for, or the
default with acks=all) a partition has up to max_in_flight batches in flight (seen by a
hook counting Produce requests per partition); without it, one. What was written is
read back: every record once, in order per partition."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_asgi.producer import Producer
from kafka_asgi.protocol.errors import OutOfOrderSequenceNumberError
from tests.support.delivery import Outcome, read_log
from tests.support.inflight import InFlightProbe

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

RECORDS = 3000
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
