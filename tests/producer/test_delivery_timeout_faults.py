"""delivery_timeout bounds every wait of a record, and close reports before returning.

Faults found by review, each reproduced against the in-memory FakeClient: a
metadata or InitProducerId request never answered, a retriable error answered again and again (the
retries outlasting delivery_timeout), and flush() or a second aclose() racing the
aclose() that reports the records.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import anyio
import pytest

from kafka_asgi.producer import DeliveryTimeoutError, ProducerClosedError
from kafka_asgi.protocol.errors import NotEnoughReplicasError
from tests.support.fake_client import FakeClient
from tests.support.producers import Reports, make
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.anyio

NOT_ENOUGH_REPLICAS = NotEnoughReplicasError.code
# Short, so that each test is quick; far below request_timeout + 5 (the old bound of
# a metadata or InitProducerId request) and max_retry * retry_backoff.
DELIVERY_TIMEOUT = 0.5
# What a report may come after delivery_timeout: a flush_time (records wait for the
# flusher before their first try) and the scheduler.
LATE = 0.4
# A test that fails leaves records held: closing does not wait long for them.
CLOSE_TIMEOUT = 0.5


def _reported(reports: Reports, value: bytes) -> int:
    """How many times ``value`` was reported or acknowledged (on_delivery)."""
    return sum(1 for d in reports.deliveries if d[3] == value)


async def _first_report(reports: Reports, within: float) -> float:
    """Seconds until error_handle is first called (at most ``within``, scaled)."""
    start = anyio.current_time()
    assert await eventually(lambda: bool(reports.errors), within, interval=0.01)
    return anyio.current_time() - start


# ---------------------------------------------------- requests that are never answered


@pytest.mark.parametrize("unanswered", ["Metadata", "InitProducerId"])
async def test_an_unanswered_request_reports_records_within_delivery_timeout(
    unanswered: str,
) -> None:
    # The records waiting for metadata, or for the producer id, were reported only once
    # that request had failed, after 2 * (request_timeout + 5): 14 s here.
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.hold = anyio.Event()  # requests wait for it
    idempotent = unanswered == "InitProducerId"
    if idempotent:
        fake.known.add("t")  # its metadata is known: only InitProducerId waits
    reports = Reports()
    producer = make(
        fake,
        reports,
        delivery_timeout=DELIVERY_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        request_timeout=2.0,
        flush_time=0.05,
        enable_idempotence=idempotent,
        **({"required_acks": -1} if idempotent else {}),
    )
    async with producer:
        producer.send_nowait("t", b"a")
        waited = await _first_report(reports, 2.0)
        ((_, _, records, error, _),) = reports.errors
        assert isinstance(error, DeliveryTimeoutError), error
        assert [r[1] for r in records] == [b"a"]
        assert waited < DELIVERY_TIMEOUT + scaled(LATE)
        if not idempotent:
            assert "metadata for topic 't' not received" in str(error)

        # The broker answers again: the next records go.
        fake.hold.set()
        producer.send_nowait("t", b"b")
        with anyio.fail_after(scaled(2.0)):
            await producer.flush()
    assert [r.value for r in fake.records("t", 0)] == [b"b"]
    assert _reported(reports, b"a") == 1
    assert _reported(reports, b"b") == 1


async def test_records_sent_during_an_unanswered_metadata_request_get_their_own_deadline() -> None:
    # Reported as their own delivery_timeout passes, not with the first records, nor
    # before it.
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.hold = anyio.Event()
    reported: dict[bytes, float] = {}

    def note(topic: str, partition: int, records: list[Any], error: Any, retriable: bool) -> None:
        assert isinstance(error, DeliveryTimeoutError), error
        for record in records:
            reported[record[1]] = anyio.current_time()

    producer = make(
        fake,
        None,
        error_handle=note,
        delivery_timeout=DELIVERY_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        request_timeout=2.0,
        flush_time=0.05,
        enable_idempotence=False,
    )
    async with producer:
        start = anyio.current_time()
        producer.send_nowait("t", b"a")
        await anyio.sleep(0.3)
        sent_b = anyio.current_time()
        producer.send_nowait("t", b"b")
        assert await eventually(lambda: b"b" in reported, 3.0, interval=0.01)
        assert DELIVERY_TIMEOUT <= reported[b"a"] - start < DELIVERY_TIMEOUT + scaled(LATE)
        assert DELIVERY_TIMEOUT <= reported[b"b"] - sent_b < DELIVERY_TIMEOUT + scaled(LATE)
        assert fake.fetches == 1  # one request, still unanswered
        fake.hold.set()


# ------------------------------------------------- retries bounded by delivery_timeout


@pytest.mark.parametrize("idempotent", [False, True])
async def test_retriable_errors_are_retried_until_delivery_timeout_only(idempotent: bool) -> None:
    # NOT_ENOUGH_REPLICAS at every try: max_retry (1000 tries, 20 ms apart) used to be
    # the only bound, 20 s here.
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.codes[("t", 0)] = deque([NOT_ENOUGH_REPLICAS] * 100_000)
    reports = Reports()
    producer = make(
        fake,
        reports,
        delivery_timeout=DELIVERY_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        max_retry=1000,
        retry_backoff=0.02,
        flush_time=0.01,
        enable_idempotence=idempotent,
        required_acks=-1 if idempotent else 1,
    )
    async with producer:
        producer.send_nowait("t", b"a")
        waited = await _first_report(reports, 2.0)
        ((_, _, records, error, retriable),) = reports.errors
        assert isinstance(error, DeliveryTimeoutError), error
        assert "NotEnoughReplicas" in str(error) or "NOT_ENOUGH_REPLICAS" in str(error), error
        assert retriable  # never written: the caller may send it again
        assert [r[1] for r in records] == [b"a"]
        assert waited < DELIVERY_TIMEOUT + scaled(LATE)
        tries = len(fake.requests)
        assert tries < 100, tries
    assert producer.stats().failed == 1
    assert fake.records("t", 0) == []


async def test_expired_retry_with_later_batches_in_flight_keeps_their_order() -> None:
    # Idempotence: the first of several batches in flight is answered with a
    # retriable error after its delivery_timeout.  It is reported (not retried), so
    # the broker has a gap before the batches after it, which it refuses as out of
    # order: the epoch is bumped (as when max_retry runs out) and they are written
    # once each, in order.
    fake = FakeClient()
    fake.add_topic("t", 1)
    reports = Reports()
    producer = make(
        fake,
        reports,
        delivery_timeout=1.0,
        close_timeout=CLOSE_TIMEOUT,
        max_retry=1000,
        flush_time=0.02,
        batch_num=2,
        max_in_flight=5,
        enable_idempotence=True,
        required_acks=-1,
    )
    async with producer:
        # One acknowledged batch: the partition then pipelines (idempotence.py).
        producer.send_nowait("t", b"w0")
        producer.send_nowait("t", b"w1")
        with anyio.fail_after(scaled(2.0)):
            await producer.flush()
        epoch_bumps = producer._epoch_bumps

        fake.gate = anyio.Event()  # answers wait for it
        fake.codes[("t", 0)] = deque([NOT_ENOUGH_REPLICAS])  # the next batch only
        producer.send_nowait("t", b"old0")
        producer.send_nowait("t", b"old1")
        assert await eventually(lambda: len(fake.requests) == 2, 1.0)
        await anyio.sleep(0.6)  # the next ones are younger by that much
        # Two batches in flight behind it.
        producer.send_nowait("t", b"new0")
        producer.send_nowait("t", b"new1")
        assert await eventually(lambda: len(fake.requests) == 3, 1.0)
        producer.send_nowait("t", b"new2")
        producer.send_nowait("t", b"new3")
        assert await eventually(lambda: len(fake.requests) == 4, 1.0)
        await anyio.sleep(0.5)  # past the first one's delivery_timeout only
        fake.gate.set()
        with anyio.fail_after(scaled(2.0)):
            await producer.flush()
        assert producer._epoch_bumps == epoch_bumps + 1

    for v in (b"old0", b"old1"):
        (report,) = [d for d in reports.deliveries if d[3] == v]
        assert isinstance(report[0], DeliveryTimeoutError), report
    stored = [r.value for r in fake.records("t", 0)]
    assert stored == [b"w0", b"w1", b"new0", b"new1", b"new2", b"new3"]
    for v in stored:
        assert _reported(reports, v) == 1, v


# -------------------------------------------------------------- flush() racing aclose()


class _SlowToStop(FakeClient):
    """A Produce request takes a while to stop once cancelled, as a connection being
    closed does: the window in which aclose() has stopped sending but not yet
    reported the records."""

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        try:
            return await super().send(node_id, request, **kwargs)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.3)
            raise


async def test_flush_racing_aclose_does_not_return_before_its_records_are_reported() -> None:
    fake = _SlowToStop()
    fake.add_topic("t", 1)
    fake.hang = True  # Kafka never answers
    reports = Reports()
    producer = make(fake, reports, close_timeout=0.2, flush_time=0.05, enable_idempotence=False)
    await producer.start()
    producer.send_nowait("t", b"a")
    producer.send_nowait("t", b"b")
    outcome: list[tuple[str, int]] = []

    async def flusher() -> None:
        try:
            await producer.flush(timeout=5.0)
        except ProducerClosedError:
            outcome.append(("closed", len(reports.failed_values)))
        else:
            outcome.append(("returned", len(reports.failed_values)))

    with anyio.fail_after(scaled(3.0)):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flusher)
            await anyio.sleep(0.1)
            await producer.aclose()
    # The records were not delivered: flush() says so, once they are reported.
    assert outcome == [("closed", 2)]
    assert sorted(reports.failed_values) == [b"a", b"b"]
    assert all(isinstance(e[3], ProducerClosedError) for e in reports.errors)


async def test_flush_called_while_closing_waits_for_the_records_to_be_reported() -> None:
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.hang = True
    reports = Reports()
    producer = make(fake, reports, close_timeout=0.3, flush_time=0.05, enable_idempotence=False)
    await producer.start()
    producer.send_nowait("t", b"a")
    seen: list[int] = []

    async def flusher() -> None:
        with pytest.raises(ProducerClosedError):
            await producer.flush(timeout=5.0)
        seen.append(len(reports.failed_values))

    with anyio.fail_after(scaled(3.0)):
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer.aclose)
            await anyio.sleep(0.1)  # closing: its final flush waits for Kafka
            tg.start_soon(flusher)
    assert seen == [1]


async def test_second_aclose_returns_once_the_first_has_reported_the_records() -> None:
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.hang = True
    reports = Reports()
    producer = make(fake, reports, close_timeout=0.3, flush_time=0.05, enable_idempotence=False)
    await producer.start()
    producer.send_nowait("t", b"a")
    producer.send_nowait("t", b"b")
    seen: list[int] = []

    async def second() -> None:
        await anyio.sleep(0.1)
        await producer.aclose()
        seen.append(len(reports.failed_values))

    with anyio.fail_after(scaled(3.0)):
        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await producer.aclose()
            seen.append(len(reports.failed_values))
    assert sorted(seen) == [2, 2]


async def test_flush_racing_aclose_returns_only_after_aclose_has_ended(tmp_path: Path) -> None:
    # flush() found every record settled by aclose()'s abort and returned, before
    # aclose() had ended: with spill_dir, before the records it queued for the disk
    # were written there.
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.hang = True
    reports = Reports()
    producer = make(
        fake,
        reports,
        close_timeout=0.2,
        flush_time=0.05,
        enable_idempotence=False,
        spill_dir=str(tmp_path),
    )
    await producer.start()
    producer.send_nowait("t", b"a")
    order: list[str] = []

    async def flusher() -> None:
        try:
            await producer.flush(timeout=5.0)
        except ProducerClosedError:
            pass
        order.append("flush")

    async def closer() -> None:
        await producer.aclose()
        order.append("aclose")

    with anyio.fail_after(scaled(5.0)):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flusher)
            await anyio.sleep(0.1)
            tg.start_soon(closer)
    assert order == ["aclose", "flush"]
    # Not delivered: on disk for the next producer of the directory, not reported.
    assert producer.stats().spilled == 1 and _reported(reports, b"a") == 0
