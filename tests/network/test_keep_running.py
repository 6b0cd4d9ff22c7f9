"""keep_running: a background task that fails runs again; one its owner or a cancel
scope around it cancels ends (asyncio and trio; the stray cancellations only asyncio
has are in tests/producer/test_stray_cancellation.py)."""

from __future__ import annotations

import itertools
import logging

import anyio
import pytest

from kafka_asgi.network import host
from kafka_asgi.network.host import keep_running

pytestmark = pytest.mark.anyio


async def test_a_task_that_fails_runs_again_after_a_pause(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "_RESTART_DELAY", 0.02)
    runs: list[float] = []

    async def body() -> None:
        runs.append(anyio.current_time())
        if len(runs) < 3:
            raise RuntimeError(f"bug {len(runs)}")

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(5):
            await keep_running(body, tg, "the task", "owner")
    assert len(runs) == 3
    # The pause doubles: 0.02 s, then 0.04 s.
    assert runs[1] - runs[0] >= 0.02 and runs[2] - runs[1] >= 0.04
    failures = [r for r in caplog.records if "the task failed; it runs again" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.ERROR] * 2
    assert failures[0].exc_info is not None and "bug 1" in str(failures[0].exc_info[1])


async def test_its_task_group_cancelled_ends_it() -> None:
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_running, body, tg, "the task", "owner")
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    assert runs == 1


async def test_a_cancel_scope_around_it_ends_it() -> None:
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(5):
            with anyio.move_on_after(0.05):
                await keep_running(body, tg, "the task", "owner")
    assert runs == 1


async def test_the_pause_starts_over_after_a_long_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # Failures far apart each get the shortest pause, not the longest reached before.
    monkeypatch.setattr(host, "_RESTART_DELAY", 0.05)
    monkeypatch.setattr(host, "_RESTART_DELAY_CAP", 0.4)
    runs: list[float] = []

    async def body() -> None:
        runs.append(anyio.current_time())
        if len(runs) == 5:
            await anyio.sleep(1.0)  # a long run (beyond the cap), then a failure
        if len(runs) < 7:
            raise RuntimeError("bug")

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await keep_running(body, tg, "the task", "owner")
    pauses = [b - a for a, b in itertools.pairwise(runs)]
    # 0.05, 0.1, 0.2, 0.4 (the cap), the long run, then 0.1 (0.4 without the reset).
    assert pauses[3] >= 0.4
    assert 0.1 <= pauses[5] < 0.4
