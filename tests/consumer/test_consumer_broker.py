"""BasicConsumer against the real broker, checked against records written (and offsets
looked up) by another client: confluent-kafka (librdkafka)."""

from __future__ import annotations

import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.consumer import EARLIEST, LATEST, BasicConsumer, ConsumerRecord, FetchResult
from kafka_asgi.protocol.errors import OffsetOutOfRangeError, UnknownTopicOrPartitionError
from kafka_asgi.protocol.messages.fetch import FetchPartition, FetchRequest, FetchTopic
from kafka_asgi.protocol.records import decode_batches
from tests.support.brokers import KafkaCluster, unique_name
from tests.support.timing import eventually, eventually_sync, scaled

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
BASE_TS = 1_600_000_000_000

Expected = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]


def as_tuple(r: ConsumerRecord) -> Expected:
    return (r.offset, r.timestamp, r.key, r.value, r.headers)


@dataclass
class Written:
    """What confluent-kafka wrote to a one-partition topic, with the offsets it reported."""

    topic: str
    records: list[Expected] = field(default_factory=list)
    aborted: set[int] = field(default_factory=set)
    by_codec: dict[str, list[int]] = field(default_factory=dict)

    @property
    def committed(self) -> list[Expected]:
        return [r for r in self.records if r[0] not in self.aborted]


def create_topic(kafka: KafkaCluster, partitions: int = 1) -> str:
    name = unique_name("consumer")
    admin = AdminClient({"bootstrap.servers": kafka.plaintext})
    # No time retention: records stamped BASE_TS (2020) are older than the broker's
    # 7 days, and its retention check (every 5 minutes) would delete them under a
    # test that reads them from offset 0.
    topic = NewTopic(
        name, num_partitions=partitions, replication_factor=1, config={"retention.ms": "-1"}
    )
    futures = admin.create_topics([topic], operation_timeout=30)
    futures[name].result(timeout=30)
    return name


def wait_for_markers(kafka: KafkaCluster, topic: str, timeout: float = 30.0) -> None:
    probes = {
        level: Consumer(
            {
                "bootstrap.servers": kafka.plaintext,
                "group.id": unique_name("probe"),
                "isolation.level": level,
            }
        )
        for level in ("read_committed", "read_uncommitted")
    }
    seen: list[Any] = []

    def settled() -> bool:
        tp = TopicPartition(topic, 0)
        stable = probes["read_committed"].get_watermark_offsets(tp, timeout=10, cached=False)
        high = probes["read_uncommitted"].get_watermark_offsets(tp, timeout=10, cached=False)
        seen[:] = [stable, high]
        return stable is not None and high is not None and stable[1] == high[1]

    try:
        assert eventually_sync(settled, timeout), f"transaction markers not written: {seen}"
    finally:
        for probe in probes.values():
            probe.close()


def produce_all(producer: Producer, items: list[dict[str, Any]]) -> list[Expected]:
    """Produce items, wait for every delivery report, and return what was written, in
    offset order: offset and timestamp as confluent-kafka reported them, key, value and
    headers as given (a delivery report does not carry the headers)."""
    delivered: list[Expected] = []

    def reporter(item: dict[str, Any]) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            assert err is None, err
            headers = tuple((k, v) for k, v in item.get("headers") or ())
            delivered.append((msg.offset(), msg.timestamp()[1], msg.key(), msg.value(), headers))

        return report

    for item in items:
        producer.produce(on_delivery=reporter(item), **item)
    assert producer.flush(30) == 0
    assert len(delivered) == len(items)
    return sorted(delivered)


def codec_items(topic: str, codec: str, n: int, start_ts: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for i in range(n):
        item: dict[str, Any] = {
            "topic": topic,
            "partition": 0,
            "value": f"{codec}-value-{i}-".encode() * (i + 1),
            "key": f"{codec}-key-{i}".encode() if i % 3 else None,
            "timestamp": start_ts + i,
        }
        if i % 2:
            item["headers"] = [("h1", f"{codec}-{i}".encode()), ("empty", None), ("h1", b"dup")]
        items.append(item)
    # A tombstone (null value).
    items.append(
        {"topic": topic, "partition": 0, "key": b"gone", "value": None, "timestamp": start_ts + n}
    )
    return items


@pytest.fixture(scope="module")
def written(kafka: KafkaCluster) -> Iterator[Written]:
    """A topic holding batches in every codec, a committed and an aborted transaction."""
    topic = create_topic(kafka)
    out = Written(topic)
    ts = BASE_TS
    for codec in CODECS:
        producer = Producer(
            {
                "bootstrap.servers": kafka.plaintext,
                "compression.type": codec,
                "linger.ms": 200,
                # Idempotent batches carry a producer id without being transactional:
                # they must never be taken for aborted ones.
                "enable.idempotence": codec == "lz4",
            }
        )
        msgs = produce_all(producer, codec_items(topic, codec, 12, ts))
        ts += 1000
        out.records += msgs
        out.by_codec[codec] = [m[0] for m in msgs]

    txn = Producer(
        {
            "bootstrap.servers": kafka.plaintext,
            "transactional.id": unique_name("txn"),
            "compression.type": "gzip",
            "linger.ms": 50,
        }
    )
    txn.init_transactions(60)
    txn.begin_transaction()
    committed = produce_all(
        txn,
        [
            {
                "topic": topic,
                "partition": 0,
                "key": b"tx",
                "value": f"commit-{i}".encode(),
                "timestamp": ts + i,
            }
            for i in range(4)
        ],
    )
    txn.commit_transaction(30)
    ts += 1000
    txn.begin_transaction()
    aborted = produce_all(
        txn,
        [
            {
                "topic": topic,
                "partition": 0,
                "key": b"tx",
                "value": f"abort-{i}".encode(),
                "headers": [("why", b"abort")],
                "timestamp": ts + i,
            }
            for i in range(5)
        ],
    )
    txn.abort_transaction(30)
    # The coordinator writes the ABORT marker after abort_transaction() returns: wait for
    # it (the last stable offset reaches the high watermark), so the record below lands
    # after the marker and the offsets asserted on are deterministic.
    wait_for_markers(kafka, topic)
    ts += 1000
    out.records += committed + aborted
    out.aborted = {m[0] for m in aborted}
    plain = Producer({"bootstrap.servers": kafka.plaintext})
    last = produce_all(
        plain, [{"topic": topic, "partition": 0, "value": b"after", "timestamp": ts}]
    )
    out.records += last
    yield out


async def read_all(
    consumer: BasicConsumer, topic: str, start: int = 0, **kwargs: Any
) -> tuple[list[ConsumerRecord], list[FetchResult]]:
    records: list[ConsumerRecord] = []
    results: list[FetchResult] = []
    offset = start
    with anyio.fail_after(60):
        while True:
            result = await consumer.fetch(topic, 0, offset, max_wait=0.1, **kwargs)
            results.append(result)
            records += result.records
            assert result.next_offset >= offset
            offset = result.next_offset
            if offset >= result.end_offset:
                return records, results


async def test_fetch_reads_every_codec_and_transaction_exactly(
    kafka: KafkaCluster, written: Written, anyio_backend: str
) -> None:
    async with BasicConsumer(kafka.plaintext) as consumer:
        records, results = await read_all(consumer, written.topic)
    assert [as_tuple(r) for r in records] == written.records
    assert all(r.topic == written.topic and r.partition == 0 for r in records)
    last = results[-1]
    # The high watermark is past the last record and the transaction markers.
    assert last.high_watermark == written.records[-1][0] + 1
    assert last.last_stable_offset == last.high_watermark
    assert last.log_start_offset == 0


async def test_read_committed_leaves_out_the_aborted_transaction(
    kafka: KafkaCluster, written: Written, anyio_backend: str
) -> None:
    async with BasicConsumer(kafka.plaintext, isolation_level="read_committed") as consumer:
        records, results = await read_all(consumer, written.topic)
    assert [as_tuple(r) for r in records] == written.committed
    assert len(written.committed) == len(written.records) - 5
    first_aborted = min(written.aborted)
    assert any(t.first_offset == first_aborted for r in results for t in r.aborted_transactions)


async def test_small_max_bytes_cuts_batches_and_loses_nothing(
    kafka: KafkaCluster, written: Written, anyio_backend: str
) -> None:
    async with BasicConsumer(kafka.plaintext, isolation_level="read_committed") as consumer:
        records, results = await read_all(consumer, written.topic, max_bytes=300)
    assert [as_tuple(r) for r in records] == written.committed
    assert any(r.truncated for r in results)


async def test_fetch_inside_a_compressed_batch_starts_at_the_offset(
    kafka: KafkaCluster, written: Written, anyio_backend: str
) -> None:
    async with BasicConsumer(kafka.plaintext) as consumer:
        for codec in CODECS:
            offsets = written.by_codec[codec]
            middle = offsets[len(offsets) // 2]
            # The offset is inside a batch that starts before it.
            leader = await consumer.client.leader_for(written.topic, 0)
            raw = await consumer.client.send(
                leader,
                FetchRequest(
                    replica_id=-1,
                    max_wait_ms=0,
                    min_bytes=1,
                    max_bytes=1 << 20,
                    topics=[
                        FetchTopic(
                            topic=written.topic,
                            partitions=[
                                FetchPartition(
                                    partition=0, fetch_offset=middle, partition_max_bytes=1 << 20
                                )
                            ],
                        )
                    ],
                ),
                max_version=12,
            )
            first = decode_batches(raw.responses[0].partitions[0].records or b"")[0]
            assert first.base_offset < middle <= first.last_offset, codec

            result = await consumer.fetch(written.topic, 0, middle)
            expected = [r for r in written.records if r[0] >= middle]
            assert [as_tuple(r) for r in result.records] == expected[: len(result.records)]
            assert result.records[0].offset == middle


async def test_fetch_errors(kafka: KafkaCluster, written: Written, anyio_backend: str) -> None:
    async with BasicConsumer(kafka.plaintext) as consumer:
        end = await consumer.list_offset(written.topic, 0, LATEST)
        with pytest.raises(OffsetOutOfRangeError):
            await consumer.fetch(written.topic, 0, end + 100)
        with pytest.raises(UnknownTopicOrPartitionError):
            await consumer.fetch(unique_name("missing"), 0, 0)
        with pytest.raises(UnknownTopicOrPartitionError):
            await consumer.fetch(written.topic, 7, 0)
        # At the end of the log: nothing, after waiting at most max_wait.
        with anyio.fail_after(10):
            empty = await consumer.fetch(written.topic, 0, end, max_wait=0.2)
        assert empty.records == [] and empty.next_offset == end
        with pytest.raises(ValueError, match="partition"):
            await consumer.fetch(written.topic, -1, 0)
        with pytest.raises(ValueError, match="max_wait"):
            await consumer.fetch(written.topic, 0, 0, max_wait=1000)


async def test_fetch_from_earliest_and_latest(
    kafka: KafkaCluster, written: Written, anyio_backend: str
) -> None:
    async with BasicConsumer(kafka.plaintext) as consumer:
        first = await consumer.fetch(written.topic, 0, EARLIEST, max_wait=0)
        assert first.records[0].offset == 0
        at_end = await consumer.fetch(written.topic, 0, LATEST, max_wait=0)
        assert at_end.records == [] and at_end.next_offset == first.high_watermark


def confluent_consumer(kafka: KafkaCluster, isolation: str = "read_uncommitted") -> Any:
    return Consumer(
        {
            "bootstrap.servers": kafka.plaintext,
            "group.id": unique_name("g"),
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )


async def test_list_offset_matches_confluent(
    kafka: KafkaCluster, written: Written, anyio_backend: str
) -> None:
    other = confluent_consumer(kafka)
    try:
        low, high = other.get_watermark_offsets(TopicPartition(written.topic, 0), timeout=30)
        middle_ts = written.records[len(written.records) // 2][1] - 1  # between two records
        # Transaction markers carry the broker's clock: look past it.
        after_ts = int(time.time() * 1000) + 86_400_000
        # One partition per call: librdkafka keeps one entry per partition.
        looked_up = [
            other.offsets_for_times([TopicPartition(written.topic, 0, ts)], timeout=30)[0]
            for ts in (middle_ts, BASE_TS + 3, after_ts)
        ]
    finally:
        other.close()
    async with BasicConsumer(kafka.plaintext) as consumer:
        assert await consumer.list_offset(written.topic, 0) == low == 0
        assert await consumer.list_offset(written.topic, 0, EARLIEST) == low
        assert await consumer.list_offset(written.topic, 0, LATEST) == high
        assert await consumer.list_offset(written.topic, 0, middle_ts) == looked_up[0].offset
        assert await consumer.list_offset(written.topic, 0, BASE_TS + 3) == looked_up[1].offset
        assert looked_up[1].offset == 3
        # No record that recent: librdkafka says -1 (end), we say None.
        assert looked_up[2].offset == -1
        assert await consumer.list_offset(written.topic, 0, after_ts) is None
        with pytest.raises(ValueError, match="timestamp"):
            await consumer.list_offset(written.topic, 0, -7)
        with pytest.raises(UnknownTopicOrPartitionError):
            await consumer.list_offset(unique_name("missing"), 0)


async def test_read_committed_latest_is_the_last_stable_offset(
    kafka: KafkaCluster, anyio_backend: str
) -> None:
    topic = create_topic(kafka)
    plain = Producer({"bootstrap.servers": kafka.plaintext})
    produce_all(plain, [{"topic": topic, "value": b"before"}])
    txn = Producer({"bootstrap.servers": kafka.plaintext, "transactional.id": unique_name("open")})
    txn.init_transactions(60)
    txn.begin_transaction()
    try:
        produce_all(txn, [{"topic": topic, "value": b"open"} for _ in range(3)])
        others = {}
        for isolation in ("read_uncommitted", "read_committed"):
            other = confluent_consumer(kafka, isolation)
            try:
                others[isolation] = other.get_watermark_offsets(
                    TopicPartition(topic, 0), timeout=30
                )[1]
            finally:
                other.close()
        ours = {}
        for isolation in ("read_uncommitted", "read_committed"):
            async with BasicConsumer(kafka.plaintext, isolation_level=isolation) as consumer:
                ours[isolation] = await consumer.list_offset(topic, 0, LATEST)
                result = await consumer.fetch(topic, 0, 0, max_wait=0)
                assert [r.value for r in result.records] == (
                    [b"before", b"open", b"open", b"open"]
                    if isolation == "read_uncommitted"
                    else [b"before"]
                )
        assert ours == others
        assert ours["read_committed"] == 1 < ours["read_uncommitted"] == 4
    finally:
        txn.abort_transaction(30)


@pytest.fixture(scope="module")
def spread(kafka: KafkaCluster) -> tuple[str, dict[int, list[bytes]]]:
    """A three-partition topic with a few records in each partition."""
    topic = create_topic(kafka, partitions=3)
    producer = Producer({"bootstrap.servers": kafka.plaintext})
    values = {p: [f"p{p}-{i}".encode() for i in range(4 + p)] for p in range(3)}
    produce_all(
        producer,
        [{"topic": topic, "partition": p, "value": v} for p, vs in values.items() for v in vs],
    )
    return topic, values


async def test_follow_all_partitions_to_the_end(
    kafka: KafkaCluster, spread: tuple[str, dict[int, list[bytes]]], anyio_backend: str
) -> None:
    topic, values = spread
    async with BasicConsumer(kafka.plaintext) as consumer:
        with anyio.fail_after(30):
            records = [r async for r in consumer.follow(topic, stop_at_end=True)]
        per_partition = {p: [r.value for r in records if r.partition == p] for p in range(3)}
        assert per_partition == values
        with anyio.fail_after(30):
            one = [r async for r in consumer.follow(topic, 2, offset=3, stop_at_end=True)]
        assert [(r.partition, r.offset, r.value) for r in one] == [
            (2, i, values[2][i]) for i in range(3, 6)
        ]
        with anyio.fail_after(30):
            latest = [r async for r in consumer.follow(topic, offset=LATEST, stop_at_end=True)]
        assert latest == []


async def test_follow_stops_after_max_records_or_the_predicate(
    kafka: KafkaCluster, spread: tuple[str, dict[int, list[bytes]]], anyio_backend: str
) -> None:
    topic, values = spread
    async with BasicConsumer(kafka.plaintext) as consumer:
        with anyio.fail_after(30):
            some = [r async for r in consumer.follow(topic, [0, 1], max_records=5)]
        assert len(some) == 5
        assert all(r.value in values[r.partition] for r in some)
        with anyio.fail_after(30):
            until = [r async for r in consumer.follow(topic, 1, stop=lambda r: r.value == b"p1-2")]
        assert [r.value for r in until] == values[1][:3]


async def test_follow_sees_records_written_while_following(
    kafka: KafkaCluster, anyio_backend: str
) -> None:
    topic = create_topic(kafka, partitions=2)
    token = uuid.uuid4().hex.encode()
    producer = Producer({"bootstrap.servers": kafka.plaintext})

    def write_later() -> None:
        produce_all(producer, [{"topic": topic, "partition": 1, "value": token}])

    class Watched(BasicConsumer):
        """Counts the LATEST lookups that fix where following starts."""

        positioned = 0

        async def list_offset(self, topic: str, partition: int, timestamp: int = EARLIEST) -> Any:
            offset = await super().list_offset(topic, partition, timestamp)
            self.positioned += 1
            return offset

    async with Watched(kafka.plaintext) as consumer:
        got: list[ConsumerRecord] = []
        with anyio.fail_after(scaled(30)):
            async with anyio.create_task_group() as tg:

                async def follow() -> None:
                    async for record in consumer.follow(topic, offset=LATEST, max_records=1):
                        got.append(record)

                tg.start_soon(follow)
                # Write once both partitions' start offsets are fixed: written earlier,
                # the record would sit before LATEST and never be seen.
                assert await eventually(lambda: consumer.positioned == 2, 30)
                await anyio.to_thread.run_sync(write_later)
    assert [(r.partition, r.offset, r.value) for r in got] == [(1, 0, token)]


async def test_unknown_topic_in_follow(kafka: KafkaCluster, anyio_backend: str) -> None:
    async with BasicConsumer(kafka.plaintext) as consumer:
        with pytest.raises(UnknownTopicOrPartitionError):
            async for _ in consumer.follow(unique_name("missing")):
                pass


def recreate_topic(kafka: KafkaCluster, topic: str) -> None:
    """Delete ``topic`` and create it again (a new topic id), retrying while the broker
    still finishes the deletion."""
    admin = AdminClient({"bootstrap.servers": kafka.plaintext})
    admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=30)
    deadline = time.monotonic() + scaled(60)
    while True:
        future = admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1)], operation_timeout=30
        )[topic]
        try:
            future.result(timeout=30)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


async def test_stale_metadata_is_refreshed_and_the_fetch_retried(
    kafka: KafkaCluster, anyio_backend: str
) -> None:
    topic = create_topic(kafka)
    producer = Producer({"bootstrap.servers": kafka.plaintext})
    produce_all(producer, [{"topic": topic, "value": b"old"}])
    async with BasicConsumer(kafka.plaintext) as consumer:
        assert [r.value for r in (await consumer.fetch(topic, 0, 0)).records] == [b"old"]
        old_id = consumer.client.cached_topic(topic).topic_id  # type: ignore[union-attr]
        await anyio.to_thread.run_sync(recreate_topic, kafka, topic)
        produce_all(producer, [{"topic": topic, "value": b"new"}])
        # The broker itself knows the new topic (id) by now: the only stale view left is
        # the consumer's cache, whatever the machine's speed.
        async with KafkaClient(kafka.plaintext) as fresh:

            async def new_id_known() -> bool:
                meta = await fresh.refresh([topic])
                known = meta.topics.get(topic)
                return known is not None and known.topic_id not in (None, old_id)

            with anyio.fail_after(scaled(30)):
                while True:
                    if await new_id_known():
                        break
                    await anyio.sleep(0.1)
        # The cached metadata still names the deleted topic's id: the broker answers
        # UNKNOWN_TOPIC_ID, the consumer refreshes and asks again.
        assert consumer.client.cached_topic(topic).topic_id == old_id  # type: ignore[union-attr]
        with anyio.fail_after(30):
            result = await consumer.fetch(topic, 0, 0)
        assert [r.value for r in result.records] == [b"new"]
        assert consumer.client.cached_topic(topic).topic_id != old_id  # type: ignore[union-attr]

        admin = AdminClient({"bootstrap.servers": kafka.plaintext})
        admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=30)
        with anyio.fail_after(30), pytest.raises(UnknownTopicOrPartitionError):
            await consumer.fetch(topic, 0, 0)


MiB = 1 << 20


@pytest.fixture(scope="module")
def inflating(kafka: KafkaCluster) -> tuple[str, dict[int, list[bytes]]]:
    """A two-partition topic of gzip batches of one 4 MiB record each, a few kB each
    on the wire: a fetch of 1 MiB brings them all."""
    topic = create_topic(kafka, partitions=2)
    producer = Producer(
        {
            "bootstrap.servers": kafka.plaintext,
            "compression.type": "gzip",
            "message.max.bytes": 8 * MiB,
            "linger.ms": 0,
        }
    )
    values = {p: [bytes([16 * p + i + 1]) * (4 * MiB) for i in range(8)] for p in range(2)}
    for p, vs in values.items():
        for v in vs:  # one batch each
            produce_all(producer, [{"topic": topic, "partition": p, "value": v}])
    return topic, values


async def _fetch_traced(consumer: BasicConsumer, topic: str) -> tuple[FetchResult, int]:
    tracemalloc.start()
    try:
        result = await consumer.fetch(topic, 0, 0, max_wait=0.1)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_fetch_of_inflating_batches_decodes_up_to_max_decoded_bytes(
    kafka: KafkaCluster, inflating: tuple[str, dict[int, list[bytes]]], anyio_backend: str
) -> None:
    topic, values = inflating
    async with BasicConsumer(kafka.plaintext) as consumer:  # 64 MiB: all of them
        whole, whole_peak = await _fetch_traced(consumer, topic)
    assert [r.value for r in whole.records] == values[0]
    assert not whole.truncated and whole.next_offset == 8
    assert whole_peak > 32 * MiB  # the measure sees the records decoded

    async with BasicConsumer(kafka.plaintext, max_decoded_bytes=10 * MiB) as consumer:
        part, peak = await _fetch_traced(consumer, topic)
        # Two batches fit in the bound, a third would not: it and the rest are left
        # (it was decoded, 12 MiB, as the bound was not reached before it).
        assert [r.offset for r in part.records] == [0, 1]
        assert part.truncated and part.next_offset == 2
        assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB"
        records, _ = await read_all(consumer, topic)
    assert [r.value for r in records] == values[0]
    assert [r.offset for r in records] == list(range(8))


async def test_follow_shares_max_decoded_bytes_between_partitions_and_loses_nothing(
    kafka: KafkaCluster, inflating: tuple[str, dict[int, list[bytes]]], anyio_backend: str
) -> None:
    topic, values = inflating
    # Each response decodes one batch of the partition asked first; the other
    # partition of the same broker decodes nothing that time and is asked again.
    async with BasicConsumer(kafka.plaintext, max_decoded_bytes=1) as consumer:
        with anyio.fail_after(scaled(60)):
            records = [r async for r in consumer.follow(topic, stop_at_end=True)]
    for p in range(2):
        mine = [r for r in records if r.partition == p]
        assert [r.offset for r in mine] == list(range(8))
        assert [r.value for r in mine] == values[p]
