"""A failure of a record whose ``send()`` stopped waiting is not lost in silence.

``await producer.send()`` inside the caller's own ``fail_after`` (or past
``delivery_timeout``) leaves the record in the producer.  Should it fail later, no
caller reads the exception: with no ``error_handle`` or ``on_delivery`` it is
logged, as a ``send_nowait`` record's failure is.  Before, any record with a
``send()`` behind it, waiting or not, was left out of that log, and so were the
``send_nowait`` records sharing its batch.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any

import anyio
import pytest

from kafka_asgi import Producer
from kafka_asgi.producer import DeliveryTimeoutError
from kafka_asgi.protocol.error_codes import InvalidRecordError
from tests.support.fake_client import FakeClient
from tests.support.producers import Reports
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.anyio


def _not_delivered(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and "not delivered" in r.getMessage()
    ]


def _refusing() -> FakeClient:
    """Produce requests wait for the gate, then fail for good (not written)."""
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.gate = anyio.Event()
    fake.gate_error = InvalidRecordError("refused")
    return fake


class _CancellingClient(FakeClient):
    """Cancels ``scope`` as a Produce response comes back: the caller's own deadline
    passes in the loop step its record's outcome is told to it."""

    scope: anyio.CancelScope | None = None

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        response = await super().send(node_id, request, **kwargs)
        if self.scope is not None:
            self.scope.cancel()
        return response


async def _send_cancelled_as_it_fails(producer: Producer, fake: _CancellingClient) -> None:
    await producer.send("t", b"warm")
    fake.codes[("t", 0)] = deque([87])  # INVALID_RECORD: fails for good
    with anyio.fail_after(scaled(5)):
        with anyio.CancelScope() as scope:
            fake.scope = scope
            await producer.send("t", b"x")
        fake.scope = None
    assert scope.cancelled_caught  # the caller saw its cancellation, not the error
    assert producer.stats().failed == 1


async def test_a_send_cancelled_in_the_step_its_record_fails_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The failure set the send()'s event and counted it as told, then the caller's
    # cancellation won: nothing raised, nothing logged, only stats().failed rose.
    fake = _CancellingClient()
    fake.add_topic("t", 1)
    async with Producer(client=fake, enable_idempotence=False, max_retry=0) as producer:
        await _send_cancelled_as_it_fails(producer, fake)
    (message,) = _not_delivered(caplog)
    assert "1 record(s) for t[0]" in message and "INVALID_RECORD" in message


async def test_a_send_cancelled_in_the_step_its_record_fails_goes_to_error_handle_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = _CancellingClient()
    fake.add_topic("t", 1)
    reports = Reports()
    async with Producer(
        client=fake, enable_idempotence=False, max_retry=0, error_handle=reports.error_handle
    ) as producer:
        await _send_cancelled_as_it_fails(producer, fake)
    assert reports.failed_values == [b"x"]
    assert _not_delivered(caplog) == []


async def test_a_send_cancelled_by_its_caller_then_failing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = _refusing()
    async with Producer(client=fake, max_retry=0) as producer:
        with anyio.move_on_after(0.1) as scope:
            await producer.send("t", b"x")
        assert scope.cancelled_caught
        assert producer.stats().failed == 0  # still in the producer
        assert fake.gate is not None
        fake.gate.set()
        assert await eventually(lambda: producer.stats().failed == 1, 5.0)
    (message,) = _not_delivered(caplog)
    assert "1 record(s) for t[0]" in message and "refused" in message


async def test_a_send_past_delivery_timeout_then_failing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = _refusing()
    async with Producer(client=fake, max_retry=0, delivery_timeout=0.1) as producer:
        with anyio.fail_after(scaled(5)), pytest.raises(DeliveryTimeoutError, match="logged"):
            await producer.send("t", b"x")
        assert fake.gate is not None
        fake.gate.set()
        assert await eventually(lambda: producer.stats().failed == 1, 5.0)
    assert len(_not_delivered(caplog)) == 1


async def test_a_waiting_send_gets_the_error_and_its_batch_neighbours_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = _refusing()
    async with Producer(client=fake, max_retry=0, flush_time=60) as producer:
        producer.send_nowait("t", b"a")
        producer.send_nowait("t", b"b")

        async def release() -> None:
            assert await eventually(lambda: len(fake.requests) == 1, 5.0)
            assert fake.gate is not None
            fake.gate.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release)
            with anyio.fail_after(scaled(5)), pytest.raises(InvalidRecordError):
                await producer.send("t", b"c")
        assert producer.stats().failed == 3
    # One batch of three: the caller of send() has its error; the other two, logged.
    assert [len(fake.requests)] == [1]
    (message,) = _not_delivered(caplog)
    assert "2 record(s) for t[0]" in message


async def test_a_waiting_send_alone_is_not_logged_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = _refusing()
    assert fake.gate is not None
    fake.gate.set()
    async with Producer(client=fake, max_retry=0) as producer:
        with anyio.fail_after(scaled(5)), pytest.raises(InvalidRecordError):
            await producer.send("t", b"x")
    assert _not_delivered(caplog) == []


async def test_a_send_its_caller_stopped_waiting_for_goes_to_the_spill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # With spill_dir, a record whose send() timed out waits on disk through the
    # outage as a send_nowait record does, instead of failing at delivery_timeout.
    fake = FakeClient()
    fake.add_topic("t", 1)
    fake.down = True
    async with Producer(
        client=fake, spill_dir=str(tmp_path / "spill"), delivery_timeout=0.2
    ) as producer:
        with anyio.move_on_after(0.1):
            await producer.send("t", b"x")
        assert await eventually(lambda: producer.stats().spilled == 1, 5.0), producer.stats()
        fake.down = False
        assert await eventually(lambda: producer.stats().delivered == 1, 10.0), producer.stats()
        assert producer.stats().failed == 0
    assert [s.value for s in fake.records("t", 0)] == [b"x"]
    assert _not_delivered(caplog) == []
