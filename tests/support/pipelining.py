"""Helpers for the pipelining tests against the in-memory client: numbered records
of RECORD bytes, BATCH-byte batches, a warmed-up partition with responses held."""

from __future__ import annotations

from collections import deque

import anyio

from tests.support.fake_client import FakeClient
from tests.support.timing import eventually

BATCH = 1000
RECORD = 200  # 5 records cut a batch (batch_size=BATCH)


def value(i: int) -> bytes:
    return b"%06d" % i + b"x" * (RECORD - 6)


def opts(idempotent: bool = True, **extra: object) -> dict[str, object]:
    o: dict[str, object] = {
        "batch_size": BATCH,
        "flush_time": 60,
        "max_retry": 3,
        "retry_backoff": 0.01,
    }
    if idempotent:
        o.update(enable_idempotence=True, required_acks=-1)
    o.update(extra)
    return o


WARM = b"warm"


async def burst(fake: FakeClient, producer: object, n: int, outstanding: int) -> None:
    """One record acknowledged first (a partition pipelines once the leader has
    acknowledged a batch of it), with the faults and codes the test set aside; then
    hold the responses, send ``n`` records, wait for ``outstanding`` requests."""
    faults, codes = fake.faults, fake.codes
    fake.faults, fake.codes = deque(), {}
    await producer.send("one", WARM)  # type: ignore[attr-defined]
    fake.faults, fake.codes = faults, codes
    fake.requests.clear()
    fake.gate = anyio.Event()
    for i in range(n):
        producer.send_nowait("one", value(i))  # type: ignore[attr-defined]
    assert await eventually(lambda: len(fake.requests) >= outstanding, 5.0, interval=0.005)


def stored(fake: FakeClient) -> list[int]:
    """The records' numbers, in the log's order (the warm-up record left out)."""
    return [int(r.value[:6]) for r in fake.records("one", 0) if r.value not in (None, WARM)]
