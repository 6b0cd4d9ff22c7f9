"""Producer against the real broker; what it wrote is read back by another client
(confluent-kafka's Consumer), and key placement compared with confluent-kafka's
``murmur2_random`` partitioner."""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from confluent_kafka import Producer as ConfluentProducer

from kafka_asgi.network.errors import ConnectionClosedError
from kafka_asgi.producer import BufferFullError, Producer, RecordMetadata, murmur2_partition
from kafka_asgi.protocol.errors import (
    MessageTooLargeError,
    UnknownTopicOrPartitionError,
)
from kafka_asgi.protocol.messages import ProduceRequest
from tests.support.brokers import KafkaCluster, topic_at, unique_name
from tests.support.readers import Outcomes, read_back
from tests.support.timing import scaled

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def confluent_partitions(bootstrap: str, topic: str, keys: list[bytes]) -> dict[bytes, int]:
    """Where confluent-kafka's murmur2_random partitioner puts each key."""
    placed: dict[bytes, int] = {}

    def report(err: Any, msg: Any) -> None:
        assert err is None, err
        placed[msg.key()] = msg.partition()

    producer = ConfluentProducer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for key in keys:
        producer.produce(topic, b"", key=key, on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0
    return placed


# --------------------------------------------------------------------- round trip


async def test_round_trip_all_codecs(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    partitions = 4
    per_codec = 20_000
    topics = {codec: new_topic(partitions=partitions, prefix="prod-" + codec) for codec in CODECS}
    placement_topic = new_topic(partitions=partitions, prefix="prod-placement")
    sent: dict[str, list[tuple[bytes | None, bytes, list[tuple[str, bytes | None]]]]] = {}
    outcomes = {codec: Outcomes() for codec in CODECS}
    for codec in CODECS:
        records = []
        for i in range(per_codec):
            # Two records in three have a key (from a small set, so keys repeat);
            # headers vary: none, one, several with a null value.
            key = None if i % 3 == 0 else b"user-%d" % (i % 997)
            value = b"%s-%06d-" % (codec.encode(), i) + b"v" * (i % 50)
            if i % 4 == 0:
                headers: list[tuple[str, bytes | None]] = []
            elif i % 4 == 1:
                headers = [("trace", b"%d" % i)]
            else:
                headers = [("a", b"1"), ("b", None), ("codec", codec.encode())]
            records.append((key, value, headers))
        sent[codec] = records
        async with Producer(
            kafka.plaintext,
            compression=codec,
            max_buffering=per_codec + 1,
            on_delivery=outcomes[codec].on_delivery,
            error_handle=outcomes[codec].error_handle,
        ) as producer:
            for key, value, headers in records:
                producer.send_nowait(topics[codec], value, key=key, headers=headers or None)
        stats = producer.stats()
        assert (stats.enqueued, stats.delivered, stats.failed) == (per_codec, per_codec, 0)
        assert stats.buffered == 0 and stats.in_flight == 0 and stats.last_error is None
        assert not outcomes[codec].failed and not outcomes[codec].handled

    keys = sorted({k for records in sent.values() for k, _, _ in records if k is not None})
    confluent = await anyio.to_thread.run_sync(
        confluent_partitions, kafka.plaintext, placement_topic, keys
    )
    assert len(confluent) == len(keys)

    for codec in CODECS:
        read = await anyio.to_thread.run_sync(
            read_back, kafka.plaintext, topics[codec], partitions, per_codec
        )
        assert sum(len(v) for v in read.values()) == per_codec, codec
        acked = outcomes[codec].acked
        by_value = {value: (key, headers) for key, value, headers in sent[codec]}
        order = {value: n for n, (_, value, _) in enumerate(sent[codec])}
        for p, items in read.items():
            for offset, key, value, headers in items:
                assert value is not None
                sent_key, sent_headers = by_value[value]
                assert key == sent_key
                assert list(headers) == sent_headers
                # on_delivery told where each record went; the reader finds it there.
                assert acked[value] == (topics[codec], p, offset, acked[value].timestamp)
                if key is not None:
                    assert p == confluent[key] == murmur2_partition(key, partitions)
            # Order per partition is the order of the send calls.
            positions = [order[value] for _, _, value, _ in items if value is not None]
            assert positions == sorted(positions), (codec, p)
        # Records without a key were spread over partitions, not piled on one.
        keyless = Counter(acked[v].partition for k, v, _ in sent[codec] if k is None)
        assert len(keyless) > 1


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("acks", [1, -1], ids=["acks1", "acks-all-idempotent"])
async def test_slow_codecs_compress_off_the_loop(
    kafka: KafkaCluster,
    new_topic: Callable[..., str],
    anyio_backend: str,
    monkeypatch: pytest.MonkeyPatch,
    codec: str,
    acks: int,
) -> None:
    """gzip's and zstd's large batches are compressed on a worker thread: the broker
    takes them (with the producer id stamped around the compressed records when
    idempotent), and a reader finds every record once, in order."""
    import threading

    import kafka_asgi.producer.sender as sender_module
    from kafka_asgi.protocol.compression import Compression, compress

    threads: list[int] = []

    def spy(c: int, data: Any, level: int | None = None) -> bytes:
        threads.append(threading.get_ident())
        return compress(c, data, level)

    monkeypatch.setattr(sender_module, "compress", spy)
    threshold = sender_module.offload_threshold(Compression[codec.upper()])
    assert threshold is not None
    topic = new_topic(partitions=1)
    value = b"GET /items/%06d 200 0.123 ms " + b"x" * 200
    batch_num = threshold // len(value) + 1
    n = 4 * batch_num
    outcomes = Outcomes()
    async with Producer(
        kafka.plaintext,
        compression=codec,
        required_acks=acks,
        batch_num=batch_num,
        max_buffering=n + 1,
        on_delivery=outcomes.on_delivery,
        error_handle=outcomes.error_handle,
    ) as producer:
        assert producer.idempotent is (acks == -1)
        with anyio.fail_after(scaled(60)):
            for i in range(n):
                producer.send_nowait(topic, value % i)
                if i % 500 == 0:
                    await anyio.lowlevel.checkpoint()
            await producer.flush()
        stats = producer.stats()
    assert (stats.delivered, stats.failed) == (n, 0) and not outcomes.handled
    assert threads and threading.get_ident() not in threads
    read = await anyio.to_thread.run_sync(read_back, kafka.plaintext, topic, 1, n)
    assert [v for _, _, v, _ in read[0]] == [value % i for i in range(n)]
    assert [o for o, _, _, _ in read[0]] == list(range(n))


async def test_sync_send_and_shared_batches(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    topic = new_topic(partitions=1)
    async with Producer(kafka.plaintext, required_acks="all", linger=0.01) as producer:
        first = await producer.send(topic, b"first", key=b"k", timestamp=1_700_000_000_000)
        assert first == RecordMetadata(topic, 0, 0, 1_700_000_000_000)
        results: list[RecordMetadata] = []

        async def one(i: int) -> None:
            results.append(await producer.send(topic, b"%d" % i))

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        assert sorted(m.offset for m in results) == list(range(1, 51))
        # 50 concurrent calls travelled in one batch (plus the first send's).
        assert producer.stats().batches_sent == 2
    read = await anyio.to_thread.run_sync(read_back, kafka.plaintext, topic, 1, 51)
    assert next(v for _, _, v, _ in read[0]) == b"first"
    by_offset = {m.offset: b"%d" % i for i, m in enumerate(results)}
    assert len(by_offset) == 50


async def test_acks_zero_delivers(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    topic = new_topic(partitions=2)
    # With acks=0 a broker that cannot take a write yet (a partition just created,
    # its log not open: NOT_LEADER_OR_FOLLOWER) drops it silently. Wait until each
    # partition took an acknowledged write, a condition rather than a pause.
    async with Producer(kafka.plaintext, required_acks=1) as warm:
        for partition in range(2):
            with anyio.fail_after(scaled(30)):
                await warm.send(topic, b"warm", partition=partition)
    async with Producer(kafka.plaintext, required_acks=0) as producer:
        for i in range(1000):
            producer.send_nowait(topic, b"%d" % i)
        await producer.flush()
        assert producer.stats().delivered == 1000
    read = await anyio.to_thread.run_sync(read_back, kafka.plaintext, topic, 2, 1002)
    values = sorted(v for items in read.values() for _, _, v, _ in items)
    assert values == sorted([b"warm", b"warm", *(b"%d" % i for i in range(1000))])


async def test_message_too_large_is_reported_not_retried(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    topic = new_topic(partitions=1, config={"max.message.bytes": "20000"})
    outcomes = Outcomes()
    async with Producer(
        kafka.plaintext, error_handle=outcomes.error_handle, on_delivery=outcomes.on_delivery
    ) as producer:
        producer.send_nowait(topic, b"big" + b"x" * 50_000)
        with pytest.raises(MessageTooLargeError):
            await producer.send(topic, b"big2" + b"x" * 50_000)
        # Many small records that together exceed the topic's limit are split, not lost.
        for i in range(100):
            producer.send_nowait(topic, b"%03d" % i + b"y" * 500)
        await producer.flush()
        stats = producer.stats()
    assert stats.retried == 0 and stats.failed == 2 and stats.delivered == 100
    assert outcomes.handled[b"big" + b"x" * 50_000] == 1
    assert all(isinstance(e, MessageTooLargeError) for e in outcomes.errors)
    read = await anyio.to_thread.run_sync(read_back, kafka.plaintext, topic, 1, 100)
    assert [v[:3] for _, _, v, _ in read[0] if v] == [b"%03d" % i for i in range(100)]


async def test_idempotent_batches_split_for_the_topic_keep_order_and_epoch(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    # Batches of about 200 KB for a topic that takes 20 KB, five in flight: each is
    # refused and halved until it fits, the halves taking over its sequence numbers.
    # Every record once and in order, with no epoch bump (the code before bumped it
    # at a split with a batch of the partition still out, and could then store that
    # batch's retry twice or behind the halves).
    topic = new_topic(partitions=1, config={"max.message.bytes": "20000"})
    outcomes = Outcomes()
    async with Producer(
        kafka.plaintext,
        required_acks=-1,
        enable_idempotence=True,
        batch_num=400,
        error_handle=outcomes.error_handle,
    ) as producer:
        await producer.send(topic, b"warm")  # the partition pipelines from now on
        for i in range(2000):
            producer.send_nowait(topic, b"%04d" % i + b"y" * 500)
        await producer.flush(timeout=60)
        stats = producer.stats()
        bumps = producer._epoch_bumps
    assert not outcomes.errors
    assert stats.failed == 0 and stats.delivered == 2001
    assert bumps == 0
    read = await anyio.to_thread.run_sync(read_back, kafka.plaintext, topic, 1, 2001)
    assert [v[:4] for _, _, v, _ in read[0][1:] if v] == [b"%04d" % i for i in range(2000)]


async def test_unknown_topic_is_reported(kafka: KafkaCluster, anyio_backend: str) -> None:
    outcomes = Outcomes()
    async with Producer(
        kafka.plaintext, error_handle=outcomes.error_handle, max_retry=1, retry_backoff=0.05
    ) as producer:
        producer.send_nowait(unique_name("missing"), b"x")
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send(unique_name("missing"), b"y")
    assert outcomes.handled == Counter({b"x": 1, b"y": 1})


async def test_sasl_ssl_listener(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    kafka.require("sasl_ssl", "ca_file")
    topic = new_topic(partitions=1)
    async with Producer(
        kafka.sasl_ssl,
        ssl_cafile=kafka.ca_file,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=kafka.username,
        sasl_password=kafka.password,
        compression="zstd",
    ) as producer:
        meta = await producer.send(topic, b"secure", key=b"k", headers={"h": "v"})
    assert meta.offset == 0
    read = await anyio.to_thread.run_sync(read_back, kafka.plaintext, topic, 1, 1)
    assert read[0] == [(0, b"k", b"secure", (("h", b"v"),))]


async def test_close_delivers_when_the_host_task_is_cancelled(
    kafka: KafkaCluster, new_topic: Callable[..., str], anyio_backend: str
) -> None:
    """A server cancelling its lifespan: leaving the block still flushes."""
    topic = new_topic(partitions=1)
    # Nothing would go out before the block ends: no threshold is reached.
    producer = Producer(kafka.plaintext, flush_time=60, batch_num=10_000)
    with anyio.move_on_after(0.2):
        async with producer:
            for i in range(5000):
                producer.send_nowait(topic, b"%d" % i)
            await anyio.sleep_forever()
    assert producer.stats().delivered == 5000
    read = await anyio.to_thread.run_sync(read_back, kafka.plaintext, topic, 1, 5000)
    assert [v for _, _, v, _ in read[0]] == [b"%d" % i for i in range(5000)]


# --------------------------------------------------------------------- Kafka down


async def test_kafka_down_never_blocks_and_reports_everything(anyio_backend: str) -> None:
    outcomes = Outcomes()
    max_buffering = 2000
    close_timeout = 2.0
    producer = Producer(
        "127.0.0.1:1",  # nothing listens there
        max_buffering=max_buffering,
        close_timeout=close_timeout,
        connect_timeout=0.5,
        max_retry=2,
        retry_backoff=0.05,
        error_handle=outcomes.error_handle,
    )
    accepted = rejected = 0
    slowest = 0.0
    async with producer:
        # A full collection of this long test session's heap could itself take tens of
        # milliseconds inside any call; what is timed here is waiting on the network.
        gc.disable()
        try:
            for i in range(20_000):
                start = time.perf_counter()
                try:
                    producer.send_nowait("events", b"%d" % i, key=b"%d" % (i % 10))
                    accepted += 1
                except BufferFullError:
                    rejected += 1
                slowest = max(slowest, time.perf_counter() - start)
                s = producer.stats()
                assert s.buffered + s.in_flight <= max_buffering
                if i % 500 == 0:
                    await anyio.sleep(0.01)
        finally:
            gc.enable()
        held = producer.stats().buffered
        start = anyio.current_time()
    # (leaving the block ran aclose)
    elapsed = anyio.current_time() - start
    assert elapsed < close_timeout + scaled(0.5)
    assert rejected > 0 and held > 0
    assert slowest < 0.05  # no call waited on the network
    stats = producer.stats()
    assert stats.enqueued == accepted and stats.failed == accepted and stats.delivered == 0
    assert sum(outcomes.handled.values()) == accepted
    assert stats.buffered == 0 and stats.in_flight == 0


# --------------------------------------------------------------------- broker restart


@pytest.mark.parametrize(
    ("idempotent", "how"),
    [(True, "kill"), (False, "kill"), (True, "stop")],
    ids=["idempotent-kill", "plain-kill", "idempotent-stop"],
)
async def test_broker_restart_mid_stream(
    own_broker: Any, idempotent: bool, how: str, anyio_backend: str
) -> None:
    """The broker goes away (SIGKILL: requests in flight are lost; or a clean
    stop) while records stream in, and comes back."""
    bootstrap = own_broker.addresses().plaintext
    topic = topic_at(bootstrap, "restart", 3)
    outcomes = Outcomes()
    sent: list[bytes] = []
    rejected = 0
    total = 30_000
    producer = Producer(
        bootstrap,
        required_acks=-1,
        enable_idempotence=idempotent,
        max_retry=60,
        retry_backoff=0.5,
        request_timeout=5.0,
        connect_timeout=1.0,
        max_buffering=10_000,
        close_timeout=20.0,
        on_delivery=outcomes.on_delivery,
        error_handle=outcomes.error_handle,
    )

    async def produce() -> None:
        nonlocal rejected
        for i in range(total):
            value = b"%08d" % i
            try:
                producer.send_nowait(topic, value, key=b"%d" % (i % 50))
                sent.append(value)
            except BufferFullError:
                rejected += 1
            if i % 100 == 0:
                await anyio.sleep(0.005)

    async with producer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            with anyio.fail_after(60):
                while len(outcomes.acked) < 2000:  # noqa: ASYNC110 - polling counters
                    await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(own_broker.kill if how == "kill" else own_broker.stop)
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
    stats = producer.stats()
    acked = set(outcomes.acked)
    failed = set(outcomes.failed)
    # Every record handed over is acknowledged or reported, once, never both.
    assert not outcomes.acked_twice
    assert all(n == 1 for n in outcomes.failed.values())
    assert acked.isdisjoint(failed)
    assert acked | failed == set(sent)
    assert set(outcomes.handled) == failed
    assert stats.delivered == len(acked) and stats.failed == len(failed)
    assert stats.enqueued == len(sent) == total - rejected
    assert stats.retried > 0  # the outage did hit records on their way
    read = await anyio.to_thread.run_sync(read_back, bootstrap, topic, 3, len(acked))
    values = Counter(v for items in read.values() for _, _, v, _ in items)
    # Every acknowledged record is in the topic, where on_delivery said.
    assert acked <= set(values)
    stored: dict[bytes, set[tuple[int, int]]] = {}
    for p, items in read.items():
        for offset, _, value, _ in items:
            stored.setdefault(value, set()).add((p, offset))
    for value, meta in outcomes.acked.items():
        # -1: acknowledged as a duplicate of an earlier attempt (KIP-98).  Without
        # idempotence a batch lost in flight is retried (at-least-once, issue 11) and
        # may be stored twice: the acknowledgement names one of its copies.
        copies = stored[value]
        if meta.offset == -1:
            assert meta.partition in {p for p, _ in copies}, (value, meta, copies)
        else:
            assert (meta.partition, meta.offset) in copies, (value, meta, copies)
    if idempotent:
        assert max(values.values()) == 1, [v for v, n in values.items() if n > 1][:5]


async def test_answers_lost_before_a_clean_restart_are_not_written_twice(
    own_broker: Any, anyio_backend: str
) -> None:
    """Three batches reach the broker, their answers are lost, and the broker is
    stopped cleanly and started again before they are retried.  It reloads our
    producer state with the last batch only, so the retry of the first is refused
    as OUT_OF_ORDER_SEQUENCE_NUMBER rather than recognised as a duplicate; Java's
    client bumps the epoch then and writes the three again.  The producer asks the
    leader (DescribeProducers) and acknowledges them instead: each record once."""
    bootstrap = own_broker.addresses().plaintext
    topic = topic_at(bootstrap, "restart-seq")
    outcomes = Outcomes()
    producer = Producer(
        bootstrap,
        required_acks=-1,
        enable_idempotence=True,
        batch_num=10,
        retry_backoff=0.5,
        request_timeout=5.0,
        connect_timeout=1.0,
        on_delivery=outcomes.on_delivery,
        error_handle=outcomes.error_handle,
    )
    values = [b"%04d" % i for i in range(31)]
    async with producer:
        await producer.send(topic, values[0])  # the producer id, sequence 0 acknowledged
        real_send = producer._client.send_built
        answered = anyio.Event()
        held = 0

        async def answer_lost(node: int, api_key: int, build: Any, **kwargs: Any) -> Any:
            # The broker takes the request and answers; the answer never arrives.
            nonlocal held
            response = await real_send(node, api_key, build, **kwargs)
            if api_key == ProduceRequest.API_KEY and not answered.is_set():
                held += 1
                await answered.wait()
                raise ConnectionClosedError("the answer was lost (test)")
            return response

        producer._client.send_built = answer_lost  # type: ignore[method-assign]
        for k in range(3):  # three batches of ten, each sent before the next is made
            for v in values[1 + 10 * k : 11 + 10 * k]:
                producer.send_nowait(topic, v)
            with anyio.fail_after(30):
                while held <= k:  # noqa: ASYNC110 - polling a counter
                    await anyio.sleep(0.01)
        await anyio.to_thread.run_sync(own_broker.stop)
        answered.set()
        await anyio.to_thread.run_sync(lambda: own_broker.start(timeout=120.0, fresh=False))
        await producer.flush(timeout=60)
        assert producer._seq_probes_resolved == 1
        assert producer._epoch_bumps == 0
    assert not outcomes.failed
    assert set(outcomes.acked) == set(values)
    read = await anyio.to_thread.run_sync(read_back, bootstrap, topic, 1, len(values))
    assert [v for _, _, v, _ in read[0]] == values


@pytest.mark.parametrize(
    ("records", "block_max"),
    [(200, 256 << 10), (900, 1 << 20), (6_000, 4 << 20)],
    ids=["256KiB-block", "1MiB-block", "4MiB-blocks"],
)
async def test_lz4_frames_of_large_blocks_are_read_by_the_broker_and_librdkafka(
    kafka: KafkaCluster,
    new_topic: Callable[..., str],
    anyio_backend: str,
    records: int,
    block_max: int,
) -> None:
    # One batch of `records` 1 KiB records: its lz4 frame has the block maximum that
    # holds it (two 4 MiB blocks for the largest).  The broker decompresses it to
    # validate it (Java's KafkaLZ4BlockInputStream); librdkafka reads it back.
    topic = new_topic(partitions=1, prefix="prod-lz4-blocks")
    values = [b"%06d " % i + b"GET /api/items?page=3 200 0.004 " * 32 for i in range(records)]
    raw = sum(len(v) for v in values)
    assert block_max // 4 < raw <= 2 * block_max
    async with Producer(
        kafka.plaintext,
        compression="lz4",
        batch_num=records,
        batch_size=16 << 20,
        max_request_size=16 << 20,
    ) as producer:
        for v in values:
            producer.send_nowait(topic, v)
        with anyio.fail_after(scaled(60)):
            await producer.flush()
        stats = producer.stats()
    assert (stats.delivered, stats.failed, stats.batches_sent) == (records, 0, 1)
    got = read_back(kafka.plaintext, topic, 1, records)[0]
    assert [(offset, value) for offset, _key, value, _h in got] == list(enumerate(values))
