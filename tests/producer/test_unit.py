"""Producer logic above the network, against the in-memory FakeClient."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from kafka_asgi.network.errors import ConnectError, ConnectionClosedError, RequestTimeout
from kafka_asgi.producer import (
    BufferFullError,
    DeliveryTimeoutError,
    PartitionerError,
    Producer,
    ProducerClosedError,
    RecordMetadata,
    RecordTooLargeError,
    murmur2_partition,
)
from kafka_asgi.protocol.errors import (
    KafkaError,
    MessageTooLargeError,
    NotEnoughReplicasError,
    UnknownTopicOrPartitionError,
)
from kafka_asgi.protocol.framing import MAX_RECORDS_SIZE
from kafka_asgi.protocol.records import decode_batches
from tests.support.fake_client import FakeClient, Fault
from tests.support.producers import Reports, make, running
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake() -> FakeClient:
    client = FakeClient()
    client.add_topic("t", 3)
    client.add_topic("one", 1)
    return client


@pytest.fixture
def reports() -> Reports:
    return Reports()


# --------------------------------------------------------------------- options


async def _async_callback(*args: object) -> None:
    pass


class _AsyncCall:
    async def __call__(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("required_acks", 2, ValueError),
        ("required_acks", "some", ValueError),
        ("max_retry", -1, ValueError),
        ("max_retry", 1.5, TypeError),
        ("flush_time", 0, ValueError),
        ("flush_time", math.nan, ValueError),
        ("batch_num", 0, ValueError),
        ("batch_size", "1M", TypeError),
        ("max_buffering", 0, ValueError),
        ("wait_on_buffer_full", 1, TypeError),
        ("wait_buffer_timeout", -1, ValueError),
        ("error_handle", "print", TypeError),
        # Called and never awaited: the failures it should see would go unseen.
        ("error_handle", _async_callback, TypeError),
        ("error_handle", _AsyncCall(), TypeError),
        ("on_delivery", 3, TypeError),
        ("on_delivery", functools.partial(_async_callback, 1), TypeError),
        ("partitioner", "random", ValueError),
        ("partitioner", 3, TypeError),
        ("partitioner", _async_callback, TypeError),
        ("compression", "brotli", ValueError),
        ("linger", -0.1, ValueError),
        ("max_in_flight", 0, ValueError),
        ("value_serializer", "pickle", TypeError),
        ("key_serializer", 5, TypeError),
        ("max_request_size", 10, ValueError),
        # Beyond what one request frame (100 MiB, less its headers) can hold.
        ("max_request_size", MAX_RECORDS_SIZE + 1, ValueError),
        ("max_request_size", 1 << 31, ValueError),
        ("spill_dir", "", ValueError),
        # An acknowledgement holds a frame's offset in 32 bits.
        ("spill_segment_bytes", (1 << 30) + 1, ValueError),
        ("close_timeout", -1, ValueError),
        ("delivery_timeout", 0, ValueError),
        ("cluster_name", "", ValueError),
        ("enable_idempotence", "yes", TypeError),
        ("no_such_option", 1, TypeError),
    ],
)
def test_bad_option_names_the_option(
    fake: FakeClient, option: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=option):
        Producer(client=fake, **{option: value})


def test_the_largest_max_request_size_is_accepted(fake: FakeClient) -> None:
    producer = Producer(client=fake, max_request_size=MAX_RECORDS_SIZE)
    assert producer.options.max_request_size == MAX_RECORDS_SIZE


@pytest.mark.parametrize(
    ("compression", "level", "accepted"),
    [
        ("gzip", -1, True),
        ("gzip", 9, True),
        ("gzip", 10, False),
        ("gzip", -2, False),
        ("lz4", 0, True),
        ("lz4", 17, True),
        ("lz4", -1, False),
        ("lz4", 18, False),
        ("zstd", -131072, True),
        ("zstd", 22, True),
        ("zstd", 23, False),
        ("snappy", 1, False),
        ("none", 1, False),
    ],
)
def test_compression_level_checked_per_codec(
    fake: FakeClient, compression: str, level: int, accepted: bool
) -> None:
    # Before, lz4 with -1 failed every batch later, in the flusher, with cramjam's
    # OverflowError; gzip with 10 with zlib's "Invalid initialization option".
    if accepted:
        producer = Producer(client=fake, compression=compression, compression_level=level)
        assert producer.options.compression_level == level
        return
    with pytest.raises(ValueError, match=rf"compression_level={level}\b.*{compression}"):
        Producer(client=fake, compression=compression, compression_level=level)


def test_bad_client_option_names_the_option() -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        Producer("127.0.0.1:9092", connect_timeout=-1)
    with pytest.raises(TypeError, match="request_timeout"):
        Producer("127.0.0.1:9092", request_timeout="30")


def test_idempotence_needs_acks_all(fake: FakeClient) -> None:
    with pytest.raises(ValueError, match="required_acks"):
        Producer(client=fake, enable_idempotence=True)
    with pytest.raises(ValueError, match="max_in_flight"):
        Producer(client=fake, enable_idempotence=True, required_acks="all", max_in_flight=6)
    producer = Producer(client=fake, enable_idempotence=True, required_acks="all")
    assert producer.options.required_acks == -1


def test_idempotence_by_default_where_acks_all_allows_it(fake: FakeClient) -> None:
    """enable_idempotence=None (the default) follows the Java client's rule: on with
    acks=all, max_in_flight <= 5 and retries; off (not an error) otherwise."""
    cases = [
        ({}, False),  # required_acks=1, lua-resty-kafka's default
        ({"required_acks": -1}, True),
        ({"required_acks": "all", "max_in_flight": 6}, False),
        ({"required_acks": -1, "max_retry": 0}, False),
        ({"required_acks": -1, "enable_idempotence": False}, False),
        ({"required_acks": -1, "enable_idempotence": None}, True),
        ({"required_acks": 0}, False),
    ]
    for options, expected in cases:
        producer = Producer(client=fake, **options)
        assert producer.idempotent is expected, options
        assert producer.options.idempotence is expected, options
    assert Producer(client=fake).options.enable_idempotence is None


def _producer_ids(fake: FakeClient) -> set[int]:
    """The producer id of every batch in the Produce requests."""
    return {
        batch.producer_id
        for request in fake.requests
        for topic in request.topic_data
        for part in topic.partition_data
        for batch in decode_batches(part.records or b"")
    }


async def test_default_idempotence_uses_a_producer_id(fake: FakeClient) -> None:
    async with running(fake, required_acks=-1) as producer:
        await producer.send("t", b"a", partition=0)
    assert producer.idempotent
    (pid,) = _producer_ids(fake)
    assert pid >= 1000  # FakeClient's ids


@pytest.mark.parametrize("refusal", ["ClusterAuthorizationFailedError", "UnsupportedVersionError"])
async def test_default_idempotence_refused_goes_on_without_it(
    fake: FakeClient, reports: Reports, refusal: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A cluster whose policy lacks the idempotent-write permission (as a managed
    Kafka's IAM policy may) refuses InitProducerId: with the default, every record
    is still delivered, without a producer id, and a warning says why."""
    import kafka_asgi.protocol.errors as errors

    fake.pid_faults.append(getattr(errors, refusal)("InitProducerId"))
    with caplog.at_level("WARNING", logger="kafka_asgi.producer"):
        async with running(fake, reports, required_acks=-1) as producer:
            assert producer.idempotent
            with anyio.fail_after(scaled(10)):
                metas = [await producer.send("one", b"%d" % i) for i in range(3)]
                for i in range(50):
                    producer.send_nowait("one", b"n%d" % i)
                await producer.flush()
            assert not producer.idempotent
            stats = producer.stats()
    assert [m.offset for m in metas] == [0, 1, 2]
    assert (stats.delivered, stats.failed) == (53, 0) and not reports.errors
    assert [r.value for r in fake.records("one", 0)] == [b"0", b"1", b"2"] + [
        b"n%d" % i for i in range(50)
    ]
    assert _producer_ids(fake) == {-1}
    assert not fake.pid_faults
    warnings = [r.getMessage() for r in caplog.records if "idempotence is off" in r.getMessage()]
    assert len(warnings) == 1 and "refused InitProducerId" in warnings[0]


async def test_explicit_idempotence_refused_is_reported_not_dropped(
    fake: FakeClient, reports: Reports
) -> None:
    """enable_idempotence=True asks for it: a refused producer id fails the records
    (reported, after max_retry) instead of sending them without it."""
    from kafka_asgi.protocol.errors import ClusterAuthorizationFailedError

    for _ in range(20):
        fake.pid_faults.append(ClusterAuthorizationFailedError("InitProducerId"))
    async with running(
        fake, reports, required_acks=-1, enable_idempotence=True, max_retry=1
    ) as producer:
        producer.send_nowait("one", b"x")
        assert await eventually(lambda: bool(reports.errors), 20)
        assert producer.idempotent
    assert reports.failed_values == [b"x"]
    assert isinstance(reports.errors[0][3], ClusterAuthorizationFailedError)
    assert fake.requests == []


def test_defaults_follow_lua_resty_kafka(fake: FakeClient) -> None:
    o = Producer(client=fake).options
    assert (o.flush_time, o.batch_num, o.batch_size, o.max_buffering) == (1.0, 200, 1 << 20, 50000)
    assert (o.max_retry, o.retry_backoff, o.required_acks) == (3, 0.1, 1)
    assert (o.wait_on_buffer_full, o.wait_buffer_timeout, o.partitioner) == (False, 5.0, "murmur2")


def test_client_options_with_client_instance_rejected(fake: FakeClient) -> None:
    with pytest.raises(TypeError, match="client_id"):
        Producer(client=fake, client_id="x")


def test_needs_bootstrap() -> None:
    with pytest.raises(TypeError, match="bootstrap"):
        Producer()


# --------------------------------------------------------------------- lifecycle


async def test_send_before_start_and_after_close(fake: FakeClient) -> None:
    producer = make(fake)
    with pytest.raises(ProducerClosedError, match="not started"):
        producer.send_nowait("t", b"v")
    async with producer:
        producer.send_nowait("t", b"v")
    with pytest.raises(ProducerClosedError, match="closed"):
        producer.send_nowait("t", b"v")
    with pytest.raises(ProducerClosedError):
        await producer.send("t", b"v")
    assert fake.all_values("t") == [b"v"]
    with pytest.raises(ProducerClosedError):
        await producer.start()


async def test_close_flushes_everything(fake: FakeClient, reports: Reports) -> None:
    async with running(fake, reports, flush_time=60) as producer:
        for i in range(1000):
            producer.send_nowait("t", b"%d" % i)
    assert sorted(fake.all_values("t")) == sorted(b"%d" % i for i in range(1000))
    assert len(reports.ok) == 1000 and not reports.errors
    s = producer.stats()
    assert (s.enqueued, s.delivered, s.failed, s.buffered, s.in_flight) == (1000, 1000, 0, 0, 0)


async def test_aclose_within_close_timeout_when_kafka_never_answers(
    fake: FakeClient, reports: Reports
) -> None:
    fake.hang = True
    producer = make(fake, reports, close_timeout=0.3)
    await producer.start()
    for i in range(500):
        producer.send_nowait("t", b"%d" % i)
    producer.send_nowait("nosuch", b"x")
    start = anyio.current_time()
    await producer.aclose()
    assert anyio.current_time() - start < scaled(1.0)
    assert sorted(reports.failed_values) == sorted([b"%d" % i for i in range(500)] + [b"x"])
    expected = (ProducerClosedError, UnknownTopicOrPartitionError)
    assert all(isinstance(e[3], expected) for e in reports.errors)
    # The batches in flight may have been written: not flagged as safe to resend.
    assert any(e[4] is False for e in reports.errors)
    assert producer.stats().failed == 501 and producer.stats().buffered == 0


# --------------------------------------------------------------------- async mode


async def test_send_nowait_keys_headers_timestamps(fake: FakeClient, reports: Reports) -> None:
    async with running(fake, reports) as producer:
        producer.send_nowait("t", b"a", key=b"k1", headers={"h": b"1", "s": "str", "n": None})
        producer.send_nowait("t", "text", key="k2", headers=[("x", b"y")], timestamp=1234)
        producer.send_nowait("t", None, key=b"k1")  # a tombstone
        await producer.flush()
    p1 = murmur2_partition(b"k1", 3)
    log = fake.records("t", p1)
    assert [(r.key, r.value) for r in log][:1] == [(b"k1", b"a")]
    assert log[0].headers == (("h", b"1"), ("s", b"str"), ("n", None))
    assert (log[-1].key, log[-1].value) == (b"k1", None)
    other = fake.records("t", murmur2_partition(b"k2", 3))
    rec = next(r for r in other if r.key == b"k2")
    assert (rec.value, rec.headers, rec.timestamp) == (b"text", (("x", b"y"),), 1234)
    assert len(reports.ok) == 3
    _err, meta, _key, _value, headers = next(d for d in reports.ok if d[2] == b"k2")
    assert meta == RecordMetadata("t", murmur2_partition(b"k2", 3), rec.offset, 1234)
    assert headers == [("x", b"y")]


async def test_check_record_checks_and_converts_as_send_nowait(fake: FakeClient) -> None:
    # For the thread hand-off: the checks of send_nowait, run where the record is
    # handed over, buffering nothing.
    async with Producer(client=fake, value_serializer="json") as producer:
        assert producer.check_record("t", {"a": 1}, key="k", headers={"h": "v"}) == (
            "t",
            b'{"a":1}',
            b"k",
            [("h", b"v")],
            None,
            None,
        )
        assert producer.check_record("t", bytearray(b"x"), timestamp=5, partition=0) == (
            "t",
            b"x",
            None,
            None,
            0,
            5,
        )
        with pytest.raises(ValueError, match="topic"):
            producer.check_record("a/b", b"x")
        with pytest.raises(TypeError, match="key"):
            producer.check_record("t", b"x", key=5)
        with pytest.raises(RecordTooLargeError):
            producer.check_record("t", b"x" * (2 << 20))
        with pytest.raises(RecordTooLargeError):
            producer.check_record("t", b"x", headers={"h": b"y" * (1 << 20)})
        producer.send_nowait("t", b"first")  # the topic is known from now on
        value = b"plain"
        checked = producer.check_record("t", value)
        assert checked == ("t", value, None, None, None, None) and checked[1] is value
        with pytest.raises(RecordTooLargeError):
            producer.check_record("t", b"x" * (2 << 20))
        assert producer.stats().enqueued == 1


async def test_bad_input_raises_at_the_call(fake: FakeClient) -> None:
    async with running(fake) as producer:
        with pytest.raises(TypeError, match="value"):
            producer.send_nowait("t", {"a": 1})
        with pytest.raises(TypeError, match="key"):
            producer.send_nowait("t", b"v", key=12)
        with pytest.raises(TypeError, match="header"):
            producer.send_nowait("t", b"v", headers={"h": 1})
        with pytest.raises(TypeError, match="header"):
            producer.send_nowait("t", b"v", headers=[("h",)])
        with pytest.raises(TypeError, match="headers"):
            producer.send_nowait("t", b"v", headers="h=1")
        with pytest.raises(TypeError, match="timestamp"):
            producer.send_nowait("t", b"v", timestamp=1.5)
        with pytest.raises(ValueError, match="timestamp"):
            producer.send_nowait("t", b"v", timestamp=-5)
        with pytest.raises(ValueError, match="partition"):
            producer.send_nowait("t", b"v", partition=-1)
        # Kafka's partition is an int32, its timestamp an int64: the message names
        # the value and the range, not "must be >= 0".
        with pytest.raises(ValueError, match=r"between 0 and 2147483647, not 2147483648"):
            producer.send_nowait("t", b"v", partition=1 << 31)
        with pytest.raises(
            ValueError, match=r"0 and 9223372036854775807 \(milliseconds\), not 9223372036854775808"
        ):
            producer.send_nowait("t", b"v", timestamp=1 << 63)
        with pytest.raises(TypeError, match="partition"):
            producer.send_nowait("t", b"v", partition="0")
        with pytest.raises(ValueError, match="topic"):
            producer.send_nowait("bad topic!", b"v")
        with pytest.raises(TypeError, match="topic"):
            producer.send_nowait(b"t", b"v")  # type: ignore[arg-type]
        assert producer.stats().enqueued == 0


async def test_serializers(fake: FakeClient) -> None:
    async with running(
        fake, value_serializer="json", key_serializer=lambda k: str(k).encode()
    ) as producer:
        producer.send_nowait("one", {"a": [1, "é"]}, key=42)
        producer.send_nowait("one", b"raw", key=b"bytes-key")
        producer.send_nowait("one", "s")
        with pytest.raises(TypeError, match="value_serializer"):
            producer.send_nowait("one", {1, 2})
    log = fake.records("one", 0)
    assert [(r.key, r.value) for r in log] == [
        (b"42", json.dumps({"a": [1, "é"]}, separators=(",", ":"), ensure_ascii=False).encode()),
        (b"bytes-key", b"raw"),
        (None, b'"s"'),
    ]


async def test_buffer_full_and_never_exceeded(fake: FakeClient, reports: Reports) -> None:
    fake.gate = anyio.Event()
    async with running(fake, reports, max_buffering=100, batch_num=10) as producer:
        accepted = 0
        for i in range(300):
            try:
                producer.send_nowait("t", b"%d" % i)
                accepted += 1
            except BufferFullError as exc:
                assert "buffer overflow" in str(exc)
            assert producer.stats().buffered + producer.stats().in_flight <= 100
            if i % 7 == 0:
                await anyio.lowlevel.checkpoint()
        assert accepted == 100
        with pytest.raises(BufferFullError):
            await producer.send_buffered("t", b"x")  # wait_on_buffer_full is off
        fake.gate.set()
    assert len(fake.all_values("t")) == 100 and len(reports.ok) == 100


async def test_send_buffered_waits_for_room(fake: FakeClient) -> None:
    fake.gate = anyio.Event()
    async with running(
        fake, max_buffering=10, batch_num=5, wait_on_buffer_full=True, wait_buffer_timeout=5
    ) as producer:
        for i in range(10):
            producer.send_nowait("one", b"%d" % i)

        async def release() -> None:
            await anyio.sleep(0.05)
            assert fake.gate is not None
            fake.gate.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release)
            for i in range(10, 30):
                await producer.send_buffered("one", b"%d" % i)
    assert [r.value for r in fake.records("one", 0)] == [b"%d" % i for i in range(30)]


async def test_send_buffered_gives_up_after_wait_buffer_timeout(fake: FakeClient) -> None:
    fake.hang = True
    async with running(
        fake, max_buffering=5, wait_on_buffer_full=True, wait_buffer_timeout=0.1, close_timeout=0.1
    ) as producer:
        for i in range(5):
            producer.send_nowait("one", b"%d" % i)
        start = anyio.current_time()
        with pytest.raises(BufferFullError, match="wait_buffer_timeout"):
            await producer.send_buffered("one", b"x")
        assert 0.08 < anyio.current_time() - start < scaled(1.0)


async def test_batch_num_triggers_a_send_before_flush_time(fake: FakeClient) -> None:
    async with running(fake, flush_time=60, batch_num=50) as producer:
        for _i in range(49):
            producer.send_nowait("one", b"x")
        await anyio.sleep(0.05)
        assert fake.batches == []
        producer.send_nowait("one", b"x")
        assert await eventually(lambda: len(fake.records("one", 0)) == 50, 2.0, interval=0.005)


async def test_batch_size_triggers_a_send_before_flush_time(fake: FakeClient) -> None:
    async with running(fake, flush_time=60, batch_size=10_000) as producer:
        for _i in range(9):
            producer.send_nowait("one", b"x" * 1000)
        await anyio.sleep(0.05)
        assert fake.batches == []
        producer.send_nowait("one", b"x" * 1000)
        # The first batch holds what fits in batch_size (with record overhead).
        assert await eventually(lambda: len(fake.records("one", 0)) >= 9, 2.0, interval=0.005)
        assert fake.batches[0][2] in (9, 10)


async def test_flush_time_sends_a_lone_record(fake: FakeClient) -> None:
    async with running(fake, flush_time=0.1) as producer:
        producer.send_nowait("one", b"x")
        start = anyio.current_time()
        assert await eventually(lambda: len(fake.records("one", 0)) == 1, 2.0, interval=0.005)
        assert anyio.current_time() - start < scaled(1.0)


async def test_flush_forces_and_waits(fake: FakeClient, reports: Reports) -> None:
    async with running(fake, reports, flush_time=60) as producer:
        for i in range(10):
            producer.send_nowait("t", b"%d" % i, key=b"%d" % i)
        await producer.flush()
        assert len(reports.ok) == 10 and producer.stats().buffered == 0


async def test_flush_timeout(fake: FakeClient) -> None:
    fake.hang = True
    async with running(fake, close_timeout=0.1) as producer:
        producer.send_nowait("one", b"x")
        with pytest.raises(DeliveryTimeoutError):
            await producer.flush(timeout=0.1)
        assert producer.stats().in_flight == 1


async def test_record_too_large_rejected_at_the_call(fake: FakeClient) -> None:
    async with running(fake, max_request_size=10_000) as producer:
        with pytest.raises(RecordTooLargeError, match="max_request_size"):
            producer.send_nowait("one", b"x" * 10_000)
        with pytest.raises(MessageTooLargeError):
            producer.send_nowait("one", b"x" * 100, headers={"h": b"y" * 10_000})
        with pytest.raises(ValueError):
            producer.send_nowait("one", b"x", key=b"k" * 20_000)
        producer.send_nowait("one", b"x" * 9000)
    assert len(fake.records("one", 0)) == 1


# --------------------------------------------------------------------- sync mode


async def test_send_returns_metadata(fake: FakeClient) -> None:
    async with running(fake) as producer:
        first = await producer.send("one", b"a", timestamp=99)
        second = await producer.send("one", b"b", key=b"k")
    assert first == RecordMetadata("one", 0, 0, 99)
    assert (second.topic, second.partition, second.offset) == ("one", 0, 1)


async def test_concurrent_sends_share_a_batch(fake: FakeClient) -> None:
    results: list[RecordMetadata] = []
    async with running(fake, linger=0.02) as producer:

        async def one(i: int) -> None:
            results.append(await producer.send("one", b"%d" % i))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
    assert fake.batches == [("one", 0, 20)]
    assert sorted(m.offset for m in results) == list(range(20))


async def test_send_raises_the_kafka_error(fake: FakeClient, reports: Reports) -> None:
    fake.codes[("one", 0)] = __import__("collections").deque([87])  # INVALID_RECORD
    async with running(fake, reports) as producer:
        with pytest.raises(KafkaError) as info:
            await producer.send("one", b"x")
    assert getattr(info.value, "name", "") == "INVALID_RECORD"
    assert reports.errors[0][4] is False


async def test_send_times_out_but_reports_later(fake: FakeClient, reports: Reports) -> None:
    fake.gate = anyio.Event()
    async with running(fake, reports, delivery_timeout=0.1) as producer:
        with pytest.raises(DeliveryTimeoutError):
            await producer.send("one", b"x")
        fake.gate.set()
    assert len(reports.ok) == 1


async def test_send_to_unknown_topic_fails_after_retries(
    fake: FakeClient, reports: Reports
) -> None:
    async with running(fake, reports, max_retry=2) as producer:
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send("missing", b"x")
    assert fake.fetches == 3
    assert reports.errors[0][:2] == ("missing", -1) and reports.errors[0][4] is True


async def test_explicit_partition(fake: FakeClient, reports: Reports) -> None:
    async with running(fake, reports) as producer:
        meta = await producer.send("t", b"x", key=b"k", partition=2)
        assert meta.partition == 2
        # The topic's metadata is known (the send above): refused at the call.
        with pytest.raises(ValueError, match="partition 7 of topic 't'"):
            await producer.send("t", b"x", partition=7)
        producer.send_nowait("t", b"y", partition=1)
    assert [r.value for r in fake.records("t", 1)] == [b"y"]


# --------------------------------------------------------------------- partitioning


async def test_keyed_records_follow_murmur2(fake: FakeClient) -> None:
    keys = [b"key-%d" % i for i in range(200)]
    async with running(fake) as producer:
        for k in keys:
            producer.send_nowait("t", k, key=k)
    for p in range(3):
        assert [r.key for r in fake.records("t", p)] == [
            k for k in keys if murmur2_partition(k, 3) == p
        ]


async def test_crc32_partitioner_matches_lua_resty_kafka(fake: FakeClient) -> None:
    import zlib

    keys = [b"key-%d" % i for i in range(100)]
    async with running(fake, partitioner="crc32") as producer:
        for k in keys:
            producer.send_nowait("t", k, key=k)
    for p in range(3):
        assert [r.key for r in fake.records("t", p)] == [k for k in keys if zlib.crc32(k) % 3 == p]


async def test_round_robin_and_callable(fake: FakeClient, reports: Reports) -> None:
    async with running(fake, partitioner="round_robin") as producer:
        for i in range(9):
            producer.send_nowait("t", b"%d" % i, key=b"same")
    assert [len(fake.records("t", p)) for p in range(3)] == [3, 3, 3]

    calls: list[tuple[bytes | None, int]] = []

    def choose(key: bytes | None, count: int) -> int:
        calls.append((key, count))
        return 99 if key == b"bad" else 1

    async with running(fake, reports, partitioner=choose) as producer:
        producer.send_nowait("t", b"v", key=b"k")
        producer.send_nowait("t", b"v2")
        producer.send_nowait("t", b"v3", key=b"bad")
    assert calls == [(b"k", 3), (None, 3), (b"bad", 3)]
    assert [r.value for r in fake.records("t", 1)][-2:] == [b"v", b"v2"]
    assert isinstance(reports.errors[0][3], PartitionerError)
    assert reports.failed_values == [b"v3"]


async def test_keyless_records_stick_to_a_partition_per_batch(fake: FakeClient) -> None:
    async with running(fake, flush_time=60) as producer:
        for round_ in range(6):
            for i in range(50):
                producer.send_nowait("t", b"%d-%d" % (round_, i))
            await producer.flush()
    # Six flushes make six batches of 50, each on one partition, moving on each time.
    assert [count for _, _, count in fake.batches] == [50] * 6
    assert sorted(len(fake.records("t", p)) for p in range(3)) == [100, 100, 100]


# --------------------------------------------------------------------- retries


async def test_retriable_error_is_retried(fake: FakeClient, reports: Reports) -> None:
    from collections import deque

    fake.codes[("one", 0)] = deque([6, 6])  # NOT_LEADER_OR_FOLLOWER twice
    async with running(fake, reports) as producer:
        meta = await producer.send("one", b"x")
    assert meta.offset == 0 and not reports.errors
    assert producer.stats().retried == 2 and fake.refreshes >= 2


async def test_retries_exhausted_reported_as_retriable(fake: FakeClient, reports: Reports) -> None:
    from collections import deque

    fake.codes[("one", 0)] = deque([19] * 10)  # NOT_ENOUGH_REPLICAS
    async with running(fake, reports, max_retry=2) as producer:
        producer.send_nowait("one", b"x")
    assert len(fake.requests) == 3
    ((topic, partition, records, error, retriable),) = reports.errors
    assert (topic, partition, records[0][1], retriable) == ("one", 0, b"x", True)
    assert isinstance(error, NotEnoughReplicasError)
    assert producer.stats().failed == 1 and producer.stats().last_error is error


async def test_leader_moved_waits_for_the_new_leader_beyond_max_retry(
    fake: FakeClient, reports: Reports
) -> None:
    """NOT_LEADER_OR_FOLLOWER / LEADER_NOT_AVAILABLE: nothing was written, and a
    failover lasts as long as the cluster takes to notice the dead broker, so these
    do not use up max_retry (each asks for a metadata refresh)."""
    from collections import deque

    fake.codes[("one", 0)] = deque([6, 5, 6, 6, 5, 6])
    async with running(fake, reports, max_retry=1) as producer:
        meta = await producer.send("one", b"x")
    assert meta.offset == 0 and not reports.errors
    assert len(fake.requests) == 7 and fake.refreshes >= 6


async def test_leader_never_back_is_reported_after_delivery_timeout(
    fake: FakeClient, reports: Reports
) -> None:
    from collections import deque

    fake.codes[("one", 0)] = deque([6] * 1000)
    async with running(fake, reports, max_retry=1, delivery_timeout=0.5) as producer:
        producer.send_nowait("one", b"x")
        await anyio.sleep(0.8)
    ((_, _, _, error, retriable),) = reports.errors
    assert isinstance(error, DeliveryTimeoutError) and retriable
    assert "NOT_LEADER_OR_FOLLOWER" in str(error)


async def test_connect_error_is_retried(fake: FakeClient, reports: Reports) -> None:
    fake.faults.append(Fault(ConnectError("refused")))
    async with running(fake, reports) as producer:
        await producer.send("one", b"x")
    assert [r.value for r in fake.records("one", 0)] == [b"x"]


@pytest.mark.parametrize("error", [RequestTimeout("slow"), ConnectionClosedError("reset")])
async def test_maybe_written_is_retried_without_idempotence(
    fake: FakeClient, reports: Reports, error: KafkaError
) -> None:
    # Issue 11 point 5: at-least-once within max_retry (the batch got through the
    # first time, so it is stored twice: idempotence removes such duplicates).
    fake.faults.append(Fault(error, written=True))
    async with running(fake, reports) as producer:
        meta = await producer.send("one", b"x")
    assert len(fake.requests) == 2
    assert meta.offset == 1 and not reports.errors
    assert [r.value for r in fake.records("one", 0)] == [b"x", b"x"]


@pytest.mark.parametrize("error", [RequestTimeout("slow"), ConnectionClosedError("reset")])
async def test_maybe_written_is_reported_once_max_retry_is_used(
    fake: FakeClient, reports: Reports, error: KafkaError
) -> None:
    fake.faults.append(Fault(error, written=True))
    async with running(fake, reports, max_retry=0) as producer:
        with pytest.raises(type(error)):
            await producer.send("one", b"x")
    assert len(fake.requests) == 1
    assert reports.errors[0][4] is False  # possibly delivered
    assert [r.value for r in fake.records("one", 0)] == [b"x"]


async def test_idempotent_retry_never_duplicates(fake: FakeClient, reports: Reports) -> None:
    fake.faults.extend(
        [Fault(RequestTimeout("slow"), written=True), Fault(ConnectionClosedError("x"))]
    )
    async with running(fake, reports, enable_idempotence=True, required_acks=-1) as producer:
        meta = await producer.send("one", b"x")
        for i in range(5):
            producer.send_nowait("one", b"%d" % i)
    assert [r.value for r in fake.records("one", 0)] == [b"x", b"0", b"1", b"2", b"3", b"4"]
    assert meta.offset == 0 and not reports.errors


async def test_idempotent_out_of_order_bumps_the_epoch(fake: FakeClient) -> None:
    from collections import deque

    async with running(fake, enable_idempotence=True, required_acks=-1) as producer:
        await producer.send("one", b"a")
        # OUT_OF_ORDER_SEQUENCE_NUMBER for the next batch in line: the broker lost
        # our state. As Java's client (KIP-360): same producer id, epoch + 1,
        # sequence numbers from 0.
        fake.codes[("one", 0)] = deque([45])
        await producer.send("one", b"b")
        await producer.send("one", b"c")
    assert [r.value for r in fake.records("one", 0)] == [b"a", b"b", b"c"]
    assert len({pid for pid, _, _ in fake._seqs}) == 1
    assert list(fake.epochs.values()) == [1]


async def test_order_per_partition_kept_across_retries(fake: FakeClient) -> None:
    from collections import deque

    fake.codes[("one", 0)] = deque([6])
    async with running(fake, batch_num=10, flush_time=60) as producer:
        for i in range(100):
            producer.send_nowait("one", b"%d" % i)
            if i % 10 == 0:
                await anyio.lowlevel.checkpoint()
    assert [r.value for r in fake.records("one", 0)] == [b"%d" % i for i in range(100)]


async def test_too_large_batch_is_split(fake: FakeClient, reports: Reports) -> None:
    fake.max_message_bytes = 3000
    async with running(fake, reports, flush_time=60) as producer:
        for i in range(40):
            producer.send_nowait("one", b"%03d" % i + b"x" * 197)
        producer.send_nowait("t", b"y" * 5000, partition=0)
    assert [r.value[:3] for r in fake.records("one", 0)] == [b"%03d" % i for i in range(40)]
    ((topic, partition, records, error, retriable),) = reports.errors
    assert (topic, partition, len(records), retriable) == ("t", 0, 1, False)
    assert isinstance(error, MessageTooLargeError)


async def test_leader_unknown_waits_then_is_reported(fake: FakeClient, reports: Reports) -> None:
    """No leader (an election): the records wait for one up to delivery_timeout, not
    just max_retry quick retries, then are reported naming the cause."""
    fake.leaders[("one", 0)] = -1
    async with running(fake, reports, max_retry=1, delivery_timeout=0.5) as producer:
        producer.send_nowait("one", b"x")
        await producer.flush(timeout=scaled(10))
    error = reports.errors[0][3]
    assert isinstance(error, DeliveryTimeoutError) and "LEADER_NOT_AVAILABLE" in str(error)
    assert fake.requests == []


async def test_acks_zero(fake: FakeClient) -> None:
    async with running(fake, required_acks=0) as producer:
        meta = await producer.send("one", b"x")
        assert fake.confirmations == 0
        producer.send_nowait("one", b"y")
        await producer.flush()
        # flush() makes sure the brokers read what was written without an answer.
        assert fake.confirmations == 1
    assert meta.offset == -1 and fake.requests[0].acks == 0


async def test_flush_confirms_writes_only_with_acks_zero(fake: FakeClient) -> None:
    async with running(fake) as producer:
        producer.send_nowait("one", b"y")
        await producer.flush()
    assert fake.confirmations == 0


async def test_callbacks_that_raise_do_not_stop_the_producer(fake: FakeClient) -> None:
    def boom(*args: Any) -> None:
        raise RuntimeError("user bug")

    async with running(fake, on_delivery=boom, error_handle=boom) as producer:
        producer.send_nowait("one", b"a")
        await producer.flush()
        producer.send_nowait("missing", b"b")
        await producer.send("one", b"c")
    assert [r.value for r in fake.records("one", 0)] == [b"a", b"c"]


# --------------------------------------------------------------------- registry


async def test_registry(fake: FakeClient) -> None:
    from kafka_asgi import get_producer, register_producer, unregister_producer
    from kafka_asgi.producer import ProducerAlreadyRegisteredError, ProducerNotRegisteredError

    with pytest.raises(ProducerNotRegisteredError, match="reg-a"):
        get_producer("reg-a")
    async with make(fake, cluster_name="reg-a") as producer:
        assert get_producer("reg-a") is producer
        other = make(fake, cluster_name="reg-a")
        with pytest.raises(ProducerAlreadyRegisteredError, match="reg-a"):
            await other.start()
        with pytest.raises(ProducerAlreadyRegisteredError):
            register_producer("reg-a", object())
        register_producer("reg-a", producer)  # the same one again: fine
    with pytest.raises(ProducerNotRegisteredError):
        get_producer("reg-a")
    thing = object()
    register_producer("reg-b", thing)
    assert get_producer("reg-b") is thing
    unregister_producer("reg-b")
    with pytest.raises(ProducerNotRegisteredError):
        get_producer("reg-b")


async def test_idempotent_batches_encoded_ahead_are_restamped_after_a_failure(
    fake: FakeClient, reports: Reports
) -> None:
    from collections import deque

    fake.gate = anyio.Event()
    fake.codes[("one", 0)] = deque([87])  # INVALID_RECORD for the first batch: not written
    async with running(
        fake,
        reports,
        enable_idempotence=True,
        required_acks=-1,
        batch_size=1000,
        flush_time=60,
        max_in_flight=1,  # one batch in flight per partition: the next is encoded ahead
    ) as producer:
        producer.send_nowait("one", b"first" * 200)  # batch_size reached: sent at once
        assert await eventually(lambda: len(fake.requests) == 1, 5.0, interval=0.005)
        for i in range(20):  # cut into batches of ~1000 bytes, queued behind the first
            producer.send_nowait("one", b"%02d" % i + b"x" * 198)
        part = producer._buffers["one"].partitions[0]
        assert await eventually(
            lambda: len(part.batches) > 1 and part.batches[1].data is not None, 5.0, interval=0.005
        )
        fake.gate.set()
    assert reports.failed_values == [b"first" * 200]
    assert [r.value[:2] for r in fake.records("one", 0)] == [b"%02d" % i for i in range(20)]
    # The queued batches took over the unused sequence numbers: no out-of-order
    # rejection, no new producer id, no retry.
    assert len({pid for pid, _, _ in fake._seqs}) == 1
    assert producer.stats().retried == 0


async def test_keyless_burst_spreads_over_partitions(fake: FakeClient) -> None:
    async with running(fake, batch_num=100, flush_time=60) as producer:
        for i in range(900):
            producer.send_nowait("t", b"%d" % i)
    counts = sorted(len(fake.records("t", p)) for p in range(3))
    assert counts == [300, 300, 300]


async def test_callbacks_may_send_more_records(fake: FakeClient) -> None:
    producer: Producer

    def forward(error: KafkaError | None, meta: RecordMetadata, *rest: Any) -> None:
        if meta.topic == "t":
            producer.send_nowait("one", b"delivered %d" % meta.offset)

    def report(topic: str, partition: int, records: list[Any], *rest: Any) -> None:
        producer.send_nowait("one", b"lost %s" % topic.encode())

    async with running(fake, on_delivery=forward, error_handle=report) as producer:
        producer.send_nowait("t", b"x", partition=0)
        producer.send_nowait("nosuch", b"y")
        await producer.flush()
        await producer.flush()
    assert sorted(r.value for r in fake.records("one", 0)) == [b"delivered 0", b"lost nosuch"]


async def test_close_flushes_even_when_the_host_is_cancelled(fake: FakeClient) -> None:
    producer = make(fake, flush_time=60)
    with anyio.move_on_after(0.05):
        async with producer:
            for i in range(10):
                producer.send_nowait("one", b"%d" % i)
            await anyio.sleep_forever()
    assert len(fake.records("one", 0)) == 10
    assert producer.stats().delivered == 10


async def test_errors_before_the_write_are_not_maybe_written(
    fake: FakeClient, reports: Reports
) -> None:
    from kafka_asgi.protocol.errors import BrokerNotAvailableError, ProtocolError

    fake.faults.append(Fault(BrokerNotAvailableError("node 0 is not in the cluster metadata")))
    async with running(fake, reports) as producer:
        meta = await producer.send("one", b"retried")
        assert meta.offset == 0 and fake.refreshes >= 1
        fake.faults.append(Fault(ProtocolError("garbled response"), written=True))
        with pytest.raises(ProtocolError):
            await producer.send("one", b"maybe")
    assert reports.errors[0][4] is False  # possibly delivered, and indeed it was
    assert [r.value for r in fake.records("one", 0)] == [b"retried", b"maybe"]


async def test_partition_count_changes_are_followed(fake: FakeClient) -> None:
    async with running(fake) as producer:
        await producer.send("t", b"before", key=b"k")
        fake.add_topic("t", 5)  # partitions added
        keys = [b"k%d" % i for i in range(50)]
        for k in keys:
            producer.send_nowait("t", b"grown", key=k)
        await producer.flush()
        assert {p for p in range(5) if fake.records("t", p)} > {0, 1, 2}
        fake.partitions["t"] = 1  # deleted and made again, smaller
        fake.logs.clear()
        fake.add_topic("t", 1)
        for k in keys:
            producer.send_nowait("t", b"shrunk", key=k)
        await producer.flush()
    assert [r.value for r in fake.records("t", 0)] == [b"shrunk"] * 50


# --------------------------------------------------------------------- no broker reachable


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
async def test_records_wait_for_an_unreachable_cluster_to_come_back(
    fake: FakeClient, reports: Reports, idempotent: bool
) -> None:
    """Connect failures (nothing written, no broker answered) do not use up
    max_retry: the records stay buffered and go once a broker is back."""
    async with running(
        fake,
        reports,
        max_retry=1,
        max_buffering=400,
        enable_idempotence=idempotent,
        required_acks=-1 if idempotent else 1,
    ) as producer:
        await producer.send("t", b"before")  # "t" has metadata; "one" not yet
        fake.down = True
        for i in range(200):
            producer.send_nowait("t", b"t%d" % i)
            producer.send_nowait("one", b"o%d" % i, key=b"k")
        with pytest.raises(BufferFullError):  # the bound holds during the outage
            producer.send_nowait("t", b"over")
        # Far more tries than max_retry=1 allows, and a few seconds of outage.
        assert await eventually(lambda: fake.connect_failures >= 8, 5.0, interval=0.005)
        await anyio.sleep(1.5)
        assert not reports.errors and not reports.bad
        assert producer.stats().failed == 0 and producer.stats().buffered == 400
        fake.down = False
        with anyio.fail_after(5):
            await producer.flush()
        stats = producer.stats()
    assert not reports.errors and not reports.bad
    assert sorted(fake.all_values("t")) == sorted([b"before"] + [b"t%d" % i for i in range(200)])
    assert fake.all_values("one") == [b"o%d" % i for i in range(200)]  # order kept
    assert len(reports.ok) == 401
    assert (stats.delivered, stats.failed, stats.buffered, stats.in_flight) == (401, 0, 0, 0)
    assert stats.retried > 0


async def test_unreachable_records_are_reported_after_delivery_timeout(
    fake: FakeClient, reports: Reports
) -> None:
    """The cluster never comes back: each record is reported (error_handle,
    on_delivery, counted) once delivery_timeout has passed since it was handed
    over, not before."""
    handed: dict[bytes, float] = {}
    reported: dict[bytes, float] = {}

    def on_delivery(error: Any, meta: Any, key: Any, value: Any, headers: Any) -> None:
        reports.on_delivery(error, meta, key, value, headers)
        if error is not None:
            reported[value] = anyio.current_time()

    async with running(
        fake, reports, on_delivery=on_delivery, delivery_timeout=1.0, max_retry=0
    ) as producer:
        await producer.send("t", b"before")
        fake.down = True
        for wave in range(2):
            for i in range(50):
                for topic in ("t", "one"):  # with metadata / waiting for it
                    value = b"%s-%d-%d" % (topic.encode(), wave, i)
                    producer.send_nowait(topic, value)
                    handed[value] = anyio.current_time()
            await anyio.sleep(0.5)
        # 0.5 s after the second wave: the first is due, the second is not.
        assert await eventually(lambda: len(reported) >= 100, 3.0, interval=0.005)
        assert producer.stats().failed == len(reported)
        with anyio.fail_after(3):
            await producer.flush()
        stats = producer.stats()
    assert set(reported) == set(handed)
    for value, at in reported.items():
        assert at - handed[value] >= 1.0, value
        assert at - handed[value] < 3.0, value
    assert len(reports.bad) == 200 and not reports.ok[1:]
    assert all(isinstance(d[0], DeliveryTimeoutError) for d in reports.bad)
    assert sorted(reports.failed_values) == sorted(handed)
    assert all(e[4] is True for e in reports.errors)  # never written: safe to resend
    assert (stats.delivered, stats.failed, stats.buffered) == (1, 200, 0)
    assert isinstance(stats.last_error, DeliveryTimeoutError)
    assert fake.requests[1:] == []  # nothing after "before" got through


async def test_retriable_init_producer_id_failures_do_not_use_up_max_retry(
    fake: FakeClient, reports: Reports
) -> None:
    """COORDINATOR_LOAD_IN_PROGRESS while a broker takes over: the records wait for
    the producer id (up to delivery_timeout), however many tries it takes."""
    from kafka_asgi.protocol.errors import CoordinatorLoadInProgressError

    for _ in range(5):
        fake.pid_faults.append(CoordinatorLoadInProgressError("InitProducerId"))
    async with running(
        fake,
        reports,
        enable_idempotence=True,
        required_acks=-1,
        max_retry=1,
        retry_backoff=0.01,
    ) as producer:
        with anyio.fail_after(scaled(30)):
            meta = await producer.send("one", b"x")
    assert meta.offset == 0 and not reports.errors
    assert not fake.pid_faults


async def test_an_answer_wakes_the_flusher_for_the_batch_behind_it(fake: FakeClient) -> None:
    # One batch in flight per partition: the second waits for the first's answer,
    # which must send it at once (not a flush_time later).
    fake.gate = anyio.Event()
    async with running(fake, flush_time=60, batch_num=5, max_in_flight=1) as producer:
        for i in range(5):
            producer.send_nowait("one", b"%d" % i)
        assert await eventually(lambda: producer.stats().in_flight == 5, 2.0, interval=0.005)
        for i in range(5, 10):
            producer.send_nowait("one", b"%d" % i)
        await anyio.sleep(0.05)
        stats = producer.stats()
        assert (len(fake.records("one", 0)), stats.in_flight, stats.buffered) == (5, 5, 5)
        fake.gate.set()
        assert await eventually(lambda: producer.stats().delivered == 10, 2.0, interval=0.005)
    assert [r.value for r in fake.records("one", 0)] == [b"%d" % i for i in range(10)]
