"""The live access-log middlewares, for the metrics integrations to read their counters.

Each middleware (ASGI, Django, WSGI) adds itself when made; the set holds them weakly,
so a middleware that is dropped is forgotten. Costs one set insertion per middleware
instance, nothing per request.
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

__all__ = ["CountingMiddleware", "middleware_totals", "track_middleware"]


class CountingMiddleware(Protocol):
    def stats(self) -> dict[str, int]: ...


_live: weakref.WeakSet[CountingMiddleware] = weakref.WeakSet()
_lock = threading.Lock()


def track_middleware(middleware: CountingMiddleware) -> None:
    """Count ``middleware``'s events in the access-log metrics while it lives."""
    with _lock:
        _live.add(middleware)


def middleware_totals() -> dict[str, dict[str, int]]:
    """``{kind: {"emitted": n, "dropped": n, "sampled_out": n}}`` summed over the live
    middlewares of each kind (``kind`` is the class name, e.g. AccessLogMiddleware)."""
    with _lock:
        live = list(_live)
    totals: dict[str, dict[str, int]] = {}
    for m in live:
        into = totals.setdefault(type(m).__name__, {"emitted": 0, "dropped": 0, "sampled_out": 0})
        for name, value in m.stats().items():
            if name in into:
                into[name] += value
    return totals
