"""BasicConsumer decodes a large Fetch response on a worker thread, against the broker
faked from bytes of test_consumer_decoding: the event loop runs meanwhile, a caller's
timeout cuts the fetch, and the outcome is the one decoding on the loop gives."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

from kafka_asgi.consumer import FetchResult
from kafka_asgi.consumer import consumer as consumer_module
from kafka_asgi.protocol.compression import Compression
from kafka_asgi.protocol.errors import KafkaError, ProtocolError
from kafka_asgi.protocol.records import encode_batch
from tests.support.fetch_broker import FakeBroker, MiB, consumer_with, values_of
from tests.support.timing import eventually

pytestmark = pytest.mark.anyio

KiB = 1 << 10


def _batches(count: int, size: int, compression: Compression = Compression.NONE) -> list[bytes]:
    """``count`` batches of 100 records of ``size`` bytes each, offsets from 0."""
    return [
        encode_batch(
            values_of(*[bytes([i % 251]) * size] * 100),
            base_offset=100 * i,
            compression=compression,
        )
        for i in range(count)
    ]


class ThreadSpy:
    """Counts the calls of ``anyio.to_thread.run_sync`` (the consumer's thread hop)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = anyio.to_thread.run_sync

        async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await real(func, *args, **kwargs)

        monkeypatch.setattr(anyio.to_thread, "run_sync", run_sync)


async def test_a_large_response_is_decoded_off_the_event_loop_and_a_timeout_cuts_it(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decode that takes long (held here until released) runs on a worker thread: a
    ticker on the loop keeps ticking, and the caller's fail_after cuts the fetch; the
    next fetch from the same offset returns every record.  Until 2026-12-07 it was
    decoded on the loop: the ticker stood still, and nothing cut the fetch before the
    decode was over."""
    broker = FakeBroker({0: _batches(4, 1000)})  # 400 kB of records bytes
    consumer = consumer_with(broker, max_decoded_bytes=64 * MiB)
    real = consumer_module.decode_batches
    release = threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        release.wait(2)
        return real(*args, **kwargs)

    monkeypatch.setattr(consumer_module, "decode_batches", held)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    cut = False
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            started = anyio.current_time()
            try:
                with anyio.fail_after(0.3):
                    await consumer.fetch("t", 0, 0)
            except TimeoutError:
                cut = True
            elapsed = anyio.current_time() - started
            tg.cancel_scope.cancel()
    finally:
        release.set()
    assert elapsed < 1.0, f"the fetch was cut after {elapsed:.2f} s"
    assert ticks >= 10, f"the loop ticked {ticks} times in {elapsed:.2f} s"
    assert cut
    with anyio.fail_after(10):
        result = await consumer.fetch("t", 0, 0)
    assert [r.offset for r in result.records] == list(range(400))
    assert result.next_offset == 400


async def test_fetches_cut_over_and_over_decode_two_responses_at_a_time(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller timing out and fetching again, five times, while the decode is slow:
    the decodes already running go on (they cannot be stopped halfway) but no more
    than two at a time, and those that had not begun never do (each cut fetch left one
    more thread decoding, each holding up to max_decoded_bytes)."""
    broker = FakeBroker({0: _batches(4, 1000)})
    consumer = consumer_with(broker, max_decoded_bytes=64 * MiB)
    real = consumer_module.decode_batches
    release = threading.Event()
    lock = threading.Lock()
    running = most = calls = 0

    def held(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, most, calls
        with lock:
            calls += 1
            running += 1
            most = max(most, running)
        try:
            release.wait(2)
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(consumer_module, "decode_batches", held)
    try:
        for _ in range(5):
            with pytest.raises(TimeoutError):
                with anyio.fail_after(0.1):
                    await consumer.fetch("t", 0, 0)
        # Let the threads that will decode begin.
        await anyio.sleep(0.2)
    finally:
        release.set()
    with anyio.fail_after(10):
        result = await consumer.fetch("t", 0, 0)
    assert await eventually(lambda: not running, within=5)
    assert result.next_offset == 400
    assert most <= 2
    assert calls == 3, f"{calls} decodes, for two cut and one whole fetch"


def _outcome(results: dict[int, FetchResult | KafkaError]) -> dict[int, object]:
    return {p: r if isinstance(r, FetchResult) else (type(r), str(r)) for p, r in results.items()}


def _bad(batch: bytes) -> bytes:
    damaged = bytearray(batch)
    damaged[-1] ^= 0xFF  # in the records: the CRC no longer matches
    return bytes(damaged)


# Responses of several partitions sharing one decoding budget (a partition left out
# for it, a batch decoded in part), at offsets inside their logs; partitions whose
# bytes are bad (a CRC mismatch) or end before the offset (stale bytes first); and
# the partitions that get a ProtocolError.
CASES = {
    "plain": ({0: _batches(3, 1000), 1: _batches(2, 500)}, {0: 0, 1: 150}, 64 * MiB, set()),
    "compressed-over-budget": (
        {0: _batches(3, 4000, Compression.GZIP), 1: _batches(3, 4000, Compression.ZSTD)},
        {0: 50, 1: 0},
        MiB,
        set(),
    ),
    "bad-crc-in-one-partition": (
        {0: [_bad(b) for b in _batches(1, 1000)], 1: _batches(2, 1000)},
        {0: 0, 1: 0},
        64 * MiB,
        {0},
    ),
    "bad-crc-compressed": (
        {0: _batches(1, 100, Compression.GZIP), 1: [_bad(_batches(1, 900, Compression.LZ4)[0])]},
        {0: 0, 1: 0},
        64 * MiB,
        {1},
    ),
    "only-batches-before-the-offset": (
        {0: _batches(2, 1000), 1: _batches(2, 1000)},
        {0: 200, 1: 0},
        64 * MiB,
        {0},
    ),
}


@pytest.mark.parametrize(
    ("logs", "positions", "budget", "failing"), CASES.values(), ids=CASES.keys()
)
async def test_decoding_on_a_worker_thread_gives_what_the_loop_gives(
    anyio_backend: str,
    monkeypatch: pytest.MonkeyPatch,
    logs: dict[int, list[bytes]],
    positions: dict[int, int],
    budget: int,
    failing: set[int],
) -> None:
    broker = FakeBroker(logs)
    if positions.get(0) == 200:
        broker.stale = b"".join(logs[0])  # batches all ending before the offset
    consumer = consumer_with(broker, max_decoded_bytes=budget)
    spy = ThreadSpy(monkeypatch)
    outcomes = []
    for threshold in (1 << 62, 0):
        monkeypatch.setattr(consumer_module, "_OFFLOAD_MIN", threshold, raising=False)
        monkeypatch.setattr(consumer_module, "_OFFLOAD_MIN_COMPRESSED", threshold, raising=False)
        with anyio.fail_after(10):
            results = await consumer._fetch_from(0, "t", positions, max_bytes=MiB, max_wait_ms=0)
        outcomes.append(_outcome(results))
        assert spy.calls == (threshold == 0)
    on_loop, on_thread = outcomes
    assert on_thread == on_loop
    assert {p for p, r in on_loop.items() if not isinstance(r, FetchResult)} == failing
    assert all(on_loop[p][0] is ProtocolError for p in failing)  # type: ignore[index]
    assert any(isinstance(r, FetchResult) and r.records for r in on_loop.values())


async def test_the_protocol_errors_of_a_partition_come_back_from_the_worker_thread(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition whose bytes are bad, in a response decoded on a worker thread, gets
    its ProtocolError, and fetch raises it, as on the loop."""
    broker = FakeBroker({0: [_bad(b) for b in _batches(3, 1000)], 1: _batches(3, 1000)})
    consumer = consumer_with(broker, max_decoded_bytes=64 * MiB)
    spy = ThreadSpy(monkeypatch)
    with anyio.fail_after(10):
        results = await consumer._fetch_from(0, "t", {0: 0, 1: 0}, max_bytes=MiB, max_wait_ms=0)
        assert spy.calls == 1
        assert isinstance(results[0], KafkaError) and "CRC" in str(results[0])
        good = results[1]
        assert isinstance(good, FetchResult) and len(good.records) == 300
        with pytest.raises(KafkaError, match="CRC"):
            await consumer.fetch("t", 0, 0)
    assert spy.calls == 2


SIZES = {
    # A response's batches: whether they are decoded on a worker thread (from 128 KiB
    # of records bytes, 1 KiB when compressed).
    "few-records": (_batches(1, 10), False),
    "few-records-gzip": (_batches(1, 5, Compression.GZIP), False),
    "just-under-128KiB": (_batches(1, 1300), False),
    "128KiB": (_batches(1, 1320), True),
    "1KiB-of-zstd": (
        [
            encode_batch(
                values_of(*[bytes([i]) * 9 for i in range(256)]), compression=Compression.ZSTD
            )
        ],
        True,
    ),
}


@pytest.mark.parametrize(("log", "offloaded"), SIZES.values(), ids=SIZES.keys())
async def test_a_small_response_is_decoded_on_the_loop_and_a_large_one_on_a_thread(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch, log: list[bytes], offloaded: bool
) -> None:
    size = sum(map(len, log))
    assert offloaded == (size >= (1 * KiB if log[0][22] & 0x07 else 128 * KiB)), (
        f"the case's {size} bytes are on the wrong side of the threshold"
    )
    consumer = consumer_with(FakeBroker({0: log}), max_decoded_bytes=64 * MiB)
    spy = ThreadSpy(monkeypatch)
    with anyio.fail_after(10):
        result = await consumer.fetch("t", 0, 0)
    assert result.records
    assert spy.calls == offloaded
