"""BasicConsumer's decoding budget and progress, against a broker faked from bytes: the
fetches of a response share ``max_decoded_bytes``, the partition left out of one
response is read by a later one, and every fetch moves on or raises."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib

import anyio
import pytest

from kafka_asgi.consumer import BasicConsumer, ConsumerRecord, FetchResult
from kafka_asgi.protocol.compression import Compression
from kafka_asgi.protocol.errors import KafkaError, ProtocolError
from kafka_asgi.protocol.records import encode_batch
from tests.support.fetch_broker import TS, FakeBroker, MiB, consumer_with, values_of

pytestmark = pytest.mark.anyio


async def _traced_fetch(
    consumer: BasicConsumer, positions: dict[int, int]
) -> tuple[dict[int, FetchResult | KafkaError], int]:
    tracemalloc.start()
    try:
        results = await consumer._fetch_from(0, "t", positions, max_bytes=MiB, max_wait_ms=0)
        return results, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_later_partition_inflates_no_further_than_what_is_left(
    anyio_backend: str,
) -> None:
    # Partition 1's first batch was decoded whatever partition 0 had spent of the
    # response's budget: a 16 MiB record to a bound of 1 MiB.
    broker = FakeBroker(
        {
            0: [encode_batch(values_of(b"x" * 1000))],
            1: [encode_batch(values_of(bytes(16 * MiB)), compression=Compression.GZIP)],
        }
    )
    consumer = consumer_with(broker, max_decoded_bytes=MiB)
    with anyio.fail_after(10):
        results, peak = await _traced_fetch(consumer, {0: 0, 1: 0})
    first, second = results[0], results[1]
    assert isinstance(first, FetchResult) and isinstance(second, FetchResult)
    assert [r.offset for r in first.records] == [0] and first.next_offset == 1
    assert second.records == [] and second.truncated and second.next_offset == 0
    assert peak < 3 * MiB, f"peak {peak / MiB:.1f} MiB"
    # Asked first, it is the response's first batch: decoded (up to 256 MiB).
    with anyio.fail_after(10):
        results = await consumer._fetch_from(0, "t", {1: 0, 0: 1}, max_bytes=MiB, max_wait_ms=0)
    second = results[1]
    assert isinstance(second, FetchResult)
    assert [len(r.value or b"") for r in second.records] == [16 * MiB]
    assert second.next_offset == 1 and not second.truncated


async def test_follow_reads_every_record_of_partitions_sharing_a_small_budget(
    anyio_backend: str,
) -> None:
    # Batches of one 512 KiB record, a few hundred bytes of gzip each, to a budget
    # that holds one: each response decodes one batch, nothing is lost or repeated.
    logs = {
        p: [
            encode_batch(
                values_of(bytes([16 * p + i]) * (MiB // 2)),
                base_offset=i,
                compression=Compression.GZIP,
            )
            for i in range(4)
        ]
        for p in range(2)
    }
    broker = FakeBroker(logs)
    consumer = consumer_with(broker, max_decoded_bytes=MiB)
    records: list[ConsumerRecord] = []
    with anyio.fail_after(10):
        async for record in consumer.follow("t", [0, 1], offset=0, max_records=8):
            records.append(record)
    for p in range(2):
        mine = [r for r in records if r.partition == p]
        assert [r.offset for r in mine] == [0, 1, 2, 3]
        assert [r.value for r in mine] == [bytes([16 * p + i]) * (MiB // 2) for i in range(4)]


def _legacy_v0_wrapper(wrapper_offset: int, inner_offsets: list[int]) -> bytes:
    """A magic-0 gzip message holding null messages at ``inner_offsets`` (absolute, in
    magic 0), itself at ``wrapper_offset``."""
    inner = b""
    for offset in inner_offsets:
        body = struct.pack(">bbii", 0, 0, -1, -1)
        message = struct.pack(">I", zlib.crc32(body)) + body
        inner += struct.pack(">qi", offset, len(message)) + message
    value = gzip.compress(inner)
    body = struct.pack(">bbii", 0, Compression.GZIP, -1, len(value)) + value
    message = struct.pack(">I", zlib.crc32(body)) + body
    return struct.pack(">qi", wrapper_offset, len(message)) + message


# What a broker gone wrong may answer a fetch at offset 3 with: a batch of offsets 0-2,
# or a legacy message at offset 3 whose records are at 0-2.
STALE = {
    "old-batch": encode_batch(values_of(b"a", b"b", b"c")),
    "legacy-records-before-its-offset": _legacy_v0_wrapper(3, [0, 1, 2]),
}


@pytest.mark.parametrize("stale", STALE.values(), ids=STALE.keys())
async def test_a_fetch_of_batches_that_end_before_the_offset_raises_naming_it(
    anyio_backend: str, stale: bytes
) -> None:
    # It returned no record and the same offset, so follow asked for it again for ever.
    broker = FakeBroker({0: [encode_batch(values_of(b"a", b"b", b"c"))]}, stale=stale)
    consumer = consumer_with(broker, max_decoded_bytes=MiB)
    message = "topic 't' partition 0 offset 3: .* all end before that offset"
    with anyio.fail_after(5):
        with pytest.raises(ProtocolError, match=message):
            await consumer.fetch("t", 0, 3)
        with pytest.raises(ProtocolError, match=message):
            async for _ in consumer.follow("t", 0, offset=3):
                pass
    assert len(broker.fetches) == 2


async def test_an_old_batch_before_the_offset_is_stepped_over_not_decoded(
    anyio_backend: str,
) -> None:
    # An old batch of 300 kB first spent the 100 kB budget, leaving the batch holding
    # the offset for a next fetch that got the same answer: no record, for ever.
    old = encode_batch(values_of(*[bytes(100_000)] * 3))
    log = [old, encode_batch(values_of(b"d", b"e", b"f"), base_offset=3)]
    broker = FakeBroker({0: log}, stale=old)
    consumer = consumer_with(broker, max_decoded_bytes=100_000)
    with anyio.fail_after(5):
        result = await consumer.fetch("t", 0, 3)
        assert [r.value for r in result.records] == [b"d", b"e", b"f"]
        assert result.next_offset == 6 and not result.truncated
        records = [r async for r in consumer.follow("t", 0, offset=3, max_records=3)]
    assert [r.offset for r in records] == [3, 4, 5]


async def test_headers_spend_a_response_budget(anyio_backend: str) -> None:
    # Records of 5,000 ("", None) headers: 10 KB each on the wire, 320 KB held once
    # decoded. Counted by their bytes, a 1 MiB budget decoded the three in one
    # response (any number of them: 32 MiB held for 1 MiB uncompressed); counted
    # with their headers' objects, one response decodes one.
    headers: list[tuple[str, bytes | None]] = [("", None)] * 5000
    logs = {0: [encode_batch([(None, b"v", headers, TS)], base_offset=i) for i in range(3)]}
    broker = FakeBroker(logs)
    consumer = consumer_with(broker, max_decoded_bytes=MiB)
    with anyio.fail_after(10):
        results = await consumer._fetch_from(0, "t", {0: 0}, max_bytes=MiB, max_wait_ms=0)
    first = results[0]
    assert isinstance(first, FetchResult)
    assert [r.offset for r in first.records] == [0] and first.next_offset == 1
    assert first.truncated
    records: list[ConsumerRecord] = []
    with anyio.fail_after(10):
        async for record in consumer.follow("t", [0], offset=0, max_records=3):
            records.append(record)
    assert [r.offset for r in records] == [0, 1, 2]
    assert [len(r.headers) for r in records] == [5000] * 3


async def test_a_partition_whose_bytes_are_bad_spoils_only_itself(anyio_backend: str) -> None:
    """A batch that cannot be decoded (a CRC mismatch) in one partition of a response:
    that partition gets the error, and the others their records (the error was raised
    for the whole response, and their records, decoded, were dropped with it)."""
    bad = bytearray(encode_batch(values_of(b"x", b"y")))
    bad[-1] ^= 0xFF  # in the records: the CRC no longer matches
    broker = FakeBroker({0: [bytes(bad)], 1: [encode_batch(values_of(b"a", b"b"))]})
    consumer = consumer_with(broker, max_decoded_bytes=MiB)
    with anyio.fail_after(5):
        results = await consumer._fetch_from(0, "t", {0: 0, 1: 0}, max_bytes=MiB, max_wait_ms=0)
        assert isinstance(results[0], ProtocolError) and "CRC" in str(results[0])
        good = results[1]
        assert isinstance(good, FetchResult)
        assert [r.value for r in good.records] == [b"a", b"b"]
        seen: list[bytes | None] = []
        with pytest.raises(ProtocolError, match="CRC"):
            async for record in consumer.follow("t", [0, 1], offset=0):
                seen.append(record.value)
        assert seen == [b"a", b"b"]
