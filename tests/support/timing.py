"""Timing in tests: one scale for every tolerance, and one polling helper.

A loaded machine (CI, or several test runs side by side) runs everything slower;
``KAFKA_ASGI_TEST_TIME_SCALE`` (a float, default 1) multiplies every tolerance
that goes through ``scaled``, so a slow box widens them all at once instead of
tests failing one by one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import anyio


def time_scale() -> float:
    raw = os.environ.get("KAFKA_ASGI_TEST_TIME_SCALE", "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"KAFKA_ASGI_TEST_TIME_SCALE must be a number, got {raw!r}") from None
    if not scale > 0:
        raise ValueError(f"KAFKA_ASGI_TEST_TIME_SCALE must be > 0, got {raw!r}")
    return scale


def scaled(seconds: float) -> float:
    """``seconds`` times KAFKA_ASGI_TEST_TIME_SCALE: for waits and timing tolerances."""
    return seconds * time_scale()


async def eventually(check: Callable[[], bool], within: float, interval: float = 0.05) -> bool:
    """Poll ``check`` every ``interval`` seconds for up to ``scaled(within)`` seconds;
    its last answer (assert it: ``assert await eventually(...)``)."""
    deadline = time.monotonic() + scaled(within)
    while time.monotonic() < deadline:
        if check():
            return True
        await anyio.sleep(interval)
    return check()


def eventually_sync(check: Callable[[], bool], within: float, interval: float = 0.05) -> bool:
    """``eventually`` for code outside an event loop (it blocks the thread)."""
    deadline = time.monotonic() + scaled(within)
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()
