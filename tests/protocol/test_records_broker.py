"""Record batches against a real broker.

Our network client is not used here: raw Fetch and Produce requests go through
aiokafka's low-level client (an independent implementation), so these tests
check our codec alone against what Kafka and librdkafka write and accept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.protocol.transaction import InitProducerIdRequest
from aiokafka.structs import TopicPartition
from confluent_kafka import Consumer, Producer

from kafka_asgi.protocol.compression import Compression
from kafka_asgi.protocol.records import (
    ControlType,
    Record,
    RecordBatch,
    RecordTuple,
    decode_batches,
    encode_batch,
    set_producer_state,
)
from tests.support.timing import scaled

pytestmark = pytest.mark.broker

# Recent timestamps: a record older than segment.ms or retention.ms would roll
# or expire log segments under the test.
TS = int(time.time() * 1000) - 60_000
CODEC_NAMES = {
    Compression.NONE: "none",
    Compression.GZIP: "gzip",
    Compression.SNAPPY: "snappy",
    Compression.LZ4: "lz4",
    Compression.ZSTD: "zstd",
}


def _records(n: int) -> list[RecordTuple]:
    """Records with every shape: null key, null value, headers with null values, timestamps."""
    out: list[RecordTuple] = []
    for i in range(n):
        key = None if i % 3 == 0 else b"key-%d" % i
        value = None if i % 5 == 4 else (b"value %d " % i) * 20
        headers = (
            [("idx", b"%d" % i), ("null", None), ("utf8-\u00e9", b"\x00\xff")] if i % 2 else []
        )
        out.append((key, value, headers, TS + i * 7 - (i % 4)))
    return out


def _expected(records: list[RecordTuple], base: int) -> list[Record]:
    return [Record(base + i, ts, k, v, tuple(h or ())) for i, (k, v, h, ts) in enumerate(records)]


class RawClient:
    """Raw Fetch/Produce through aiokafka's protocol layer (asyncio only)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    async def _with_leader(self, topic: str, fn: Callable[[AIOKafkaClient, int], Any]) -> Any:
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap)
        await client.bootstrap()
        try:
            await client.force_metadata_update()
            node = client.cluster.leader_for_partition(TopicPartition(topic, 0))
            return await fn(client, node)
        finally:
            await client.close()

    def fetch(self, topic: str, offset: int = 0, max_bytes: int = 10_000_000) -> bytes:
        async def run(client: AIOKafkaClient, node: int) -> bytes:
            # isolation_level 0 (read uncommitted): control batches and
            # aborted data come back too.
            request = FetchRequest(1000, 1, max_bytes, 0, [(topic, [(0, offset, max_bytes)])])
            response = await client.send(node, request)
            partition = response.topics[0][1][0]
            assert partition[1] == 0, f"fetch error code {partition[1]}"
            return bytes(partition[-1])

        return asyncio.run(self._with_leader(topic, run))

    def produce(self, topic: str, *batches: bytes) -> list[tuple[int, int]]:
        """Send each batch in its own ProduceRequest; (error_code, base offset) per batch."""

        async def run(client: AIOKafkaClient, node: int) -> list[tuple[int, int]]:
            results = []
            for batch in batches:
                request = ProduceRequest(None, -1, 10_000, [(topic, [(0, batch)])])
                response = await client.send(node, request)
                partition = response.topics[0][1][0]
                results.append((partition[1], partition[2]))
            return results

        return asyncio.run(self._with_leader(topic, run))

    def init_producer_id(self, topic: str) -> tuple[int, int]:
        async def run(client: AIOKafkaClient, node: int) -> tuple[int, int]:
            response = await client.send(node, InitProducerIdRequest(None, 60_000))
            assert response.error_code == 0
            return response.producer_id, response.producer_epoch

        return asyncio.run(self._with_leader(topic, run))


@pytest.fixture
def raw(kafka: Any) -> RawClient:
    return RawClient(kafka.plaintext)


def _fetch_all(raw: RawClient, topic: str, until_offset: int) -> list[RecordBatch]:
    """Fetch batches until ``until_offset``: one Fetch returns at most one log segment."""
    batches: list[RecordBatch] = []
    deadline = time.monotonic() + scaled(30)
    while not batches or batches[-1].next_offset < until_offset:
        assert time.monotonic() < deadline, f"only {len(batches)} batches in {topic}"
        got = decode_batches(raw.fetch(topic, offset=batches[-1].next_offset if batches else 0))
        assert not got.truncated
        if not got:
            time.sleep(0.2)
        batches.extend(got)
    return batches


def _confluent_produce(
    bootstrap: str, topic: str, records: list[RecordTuple], **config: Any
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 100, **config})
    for key, value, headers, ts in records:
        producer.produce(topic, value=value, key=key, headers=headers or None, timestamp=ts)
    assert producer.flush(30) == 0


def _confluent_consume(bootstrap: str, topic: str, n: int, **config: Any) -> list[Record]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **config,
        }
    )
    consumer.subscribe([topic])
    got: list[Record] = []
    deadline = time.monotonic() + scaled(30)
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            got.append(
                Record(
                    msg.offset(),
                    msg.timestamp()[1],
                    msg.key(),
                    msg.value(),
                    tuple(msg.headers() or ()),
                )
            )
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("codec", list(Compression), ids=lambda c: c.name)
def test_we_decode_what_librdkafka_produces(
    kafka: Any, new_topic: Callable[..., str], raw: RawClient, codec: Compression
) -> None:
    topic = new_topic()
    records = _records(40)
    _confluent_produce(
        kafka.plaintext,
        topic,
        records,
        **{"compression.type": CODEC_NAMES[codec], "enable.idempotence": True},
    )
    batches = _fetch_all(raw, topic, len(records))
    assert [r for b in batches for r in b.records] == _expected(records, 0)
    for batch in batches:
        assert batch.magic == 2
        assert batch.compression is codec
        assert batch.producer_id >= 0 and batch.producer_epoch >= 0
        assert batch.partition_leader_epoch >= 0
        assert batch.base_sequence == batch.base_offset  # one producer, one partition
        assert not batch.is_transactional and not batch.is_control


def test_partial_fetch_is_reported(
    kafka: Any, new_topic: Callable[..., str], raw: RawClient
) -> None:
    topic = new_topic()
    records = _records(30)
    # Three batches: the first complete batch is always returned whole (KIP-74),
    # later ones may be cut at max_bytes.
    for part in (records[:10], records[10:20], records[20:]):
        _confluent_produce(kafka.plaintext, topic, part)
    whole = raw.fetch(topic)
    batches = decode_batches(whole)
    assert len(batches) == 3 and not batches.truncated
    # The broker cuts its answer at max_bytes, in the middle of the last batch.
    cut = raw.fetch(topic, max_bytes=len(whole) - 50)
    assert len(cut) == len(whole) - 50
    partial = decode_batches(cut)
    assert partial == batches[:2]
    assert partial.truncated
    two_batches = 0
    for _ in range(2):
        two_batches += 12 + int.from_bytes(whole[two_batches + 8 : two_batches + 12], "big")
    assert partial.remainder == len(cut) - two_batches > 0


def test_transaction_markers(kafka: Any, new_topic: Callable[..., str], raw: RawClient) -> None:
    topic = new_topic()
    producer = Producer({"bootstrap.servers": kafka.plaintext, "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed", timestamp=TS)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted", timestamp=TS + 1)
    # Without a flush, abort_transaction drops the unsent record and no
    # marker is written.
    assert producer.flush(30) == 0
    producer.abort_transaction(30)
    batches = _fetch_all(raw, topic, 4)
    assert [(b.is_control, b.control_type) for b in batches] == [
        (False, None),
        (True, ControlType.COMMIT),
        (False, None),
        (True, ControlType.ABORT),
    ]
    assert all(b.is_transactional for b in batches)
    assert [b.records[0].value for b in batches if not b.is_control] == [b"committed", b"aborted"]
    assert len({b.producer_id for b in batches}) == 1


@pytest.mark.parametrize("codec", list(Compression), ids=lambda c: c.name)
def test_broker_accepts_our_batches_and_librdkafka_reads_them(
    kafka: Any, new_topic: Callable[..., str], raw: RawClient, codec: Compression
) -> None:
    topic = new_topic()
    records = _records(25)
    first = encode_batch(records[:10], compression=codec)
    # Large enough for several lz4 and xerial snappy blocks.
    big = [(None, (b"%06d" % i) * 2000, [("big", b"1")], TS + i) for i in range(5)]
    second = encode_batch(records[10:] + big, compression=codec)
    assert raw.produce(topic, first, second) == [(0, 0), (0, 10)]
    all_records = records + big
    got = _confluent_consume(kafka.plaintext, topic, len(all_records))
    assert got == _expected(all_records, 0)
    # And the broker stored them as we wrote them.
    batches = _fetch_all(raw, topic, len(all_records))
    assert [b.compression for b in batches] == [codec, codec]
    assert [r for b in batches for r in b.records] == _expected(all_records, 0)


def test_idempotent_retry_with_the_same_bytes(
    kafka: Any, new_topic: Callable[..., str], raw: RawClient
) -> None:
    topic = new_topic()
    producer_id, epoch = raw.init_producer_id(topic)
    first = encode_batch(
        _records(5),
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=0,
        compression=Compression.LZ4,
    )
    second = set_producer_state(
        encode_batch(_records(3), compression=Compression.LZ4),
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=5,
    )
    # The retry of `first` is a duplicate (KIP-98): acknowledged with its
    # original offset, not appended again.
    assert raw.produce(topic, first, first, second) == [(0, 0), (0, 0), (0, 5)]
    batches = _fetch_all(raw, topic, 8)
    assert [(b.base_offset, b.base_sequence, b.producer_id) for b in batches] == [
        (0, 0, producer_id),
        (5, 5, producer_id),
    ]
    got = _confluent_consume(kafka.plaintext, topic, 8)
    assert [r.offset for r in got] == list(range(8))
