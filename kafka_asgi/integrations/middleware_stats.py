"""The access-log middlewares' counters, for the metrics integrations to read.

Each middleware (ASGI, Django, WSGI) adds itself when made, and counts its events in
its own ``emitted``/``dropped``/``sampled_out`` attributes (``self.emitted += 1``:
nothing else per request).  The totals are counters, so they must not go down when a
middleware is dropped (an app rebuilt, tests making several apps): its last counts
are then kept, per kind, as retired.

A finalizer cannot read a dead object's attributes, so each middleware gets a
:class:`_Counts` that holds its attribute dict (the ints the request path updates).
It lives in that dict, so it is part of the middleware's own garbage and roots nothing:
the middleware (and its app) is freed as before.  Its counts are retired when the
middleware dies (a weakref callback, which runs before the attribute dict is released)
or, when the middleware dies in a reference cycle, when the collector finalizes the
holder (``__del__``; PEP 442 runs finalizers before it clears anything).  Costs a
holder and a weakref per middleware instance, nothing per request.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from typing import Any, ClassVar, Protocol

__all__ = ["FIELDS", "CountingMiddleware", "middleware_totals", "track_middleware"]

FIELDS = ("emitted", "dropped", "sampled_out")
"""The counters a middleware keeps (as int attributes; ``stats()`` returns them)."""

# Where a middleware keeps its holder (in its own attribute dict).
_HOLDER = "_kafka_asgi_counts"


class CountingMiddleware(Protocol):
    def stats(self) -> dict[str, int]: ...


class _Counts:
    """A tracked middleware's attribute dict, until its counts are retired."""

    __slots__ = ("__weakref__", "kind", "values")

    # Retired counts, for middleware_totals() to add up (a class attribute: still
    # there for a __del__ at interpreter exit).
    queue: ClassVar[deque[tuple[str, tuple[int, ...]]]] = deque()

    def __init__(self, kind: str, values: dict[str, Any]) -> None:
        self.kind = kind
        self.values: dict[str, Any] | None = values

    def read(self) -> tuple[int, ...] | None:
        values = self.values
        if values is None:
            return None
        return tuple(int(values.get(field, 0)) for field in FIELDS)

    def retire(self) -> None:
        counts = self.read()
        if counts is None:
            return
        # Cleared first: a reader that sees the counts retired no longer sees them live.
        self.values = None
        # No lock here: this runs wherever the collector happens to run, maybe inside
        # middleware_totals() holding _lock; deque.append is atomic.
        self.queue.append((self.kind, counts))

    def __del__(self) -> None:
        self.retire()


def _retire(ref: weakref.ref[_Counts]) -> None:
    counts = ref()
    if counts is not None:
        # The middleware is gone; its attribute dict, no longer held by the holder
        # either, is freed at once (not by the collector, as a cycle would be).
        counts.retire()


_live: weakref.WeakSet[_Counts] = weakref.WeakSet()
_retiring = _Counts.queue
_retired: dict[str, tuple[int, ...]] = {}
# The last totals returned: never returned lower (see middleware_totals).
_reported: dict[str, tuple[int, ...]] = {}
_lock = threading.Lock()


def track_middleware(middleware: CountingMiddleware) -> None:
    """Count ``middleware``'s events in the access-log metrics, during its life and
    after it."""
    values = vars(middleware)
    if _HOLDER in values:
        return
    # The class name, unless the class names another (Django's middleware keeps its
    # counts on an AccessLogOptions of its own).
    kind = getattr(type(middleware), "metrics_kind", None) or type(middleware).__name__
    counts = _Counts(kind, values)
    values[_HOLDER] = counts
    weakref.finalize(middleware, _retire, weakref.ref(counts)).atexit = False
    with _lock:
        _live.add(counts)


def middleware_totals() -> dict[str, dict[str, int]]:
    """``{kind: {"emitted": n, "dropped": n, "sampled_out": n}}`` summed over the
    middlewares of each kind (``kind`` is the class name, e.g. AccessLogMiddleware,
    or its ``metrics_kind``: DjangoAccessLogMiddleware)
    made in this process, live or not."""
    with _lock:
        while _retiring:
            kind, counts = _retiring.popleft()
            before = _retired.get(kind, (0,) * len(FIELDS))
            _retired[kind] = tuple(a + b for a, b in zip(before, counts, strict=True))
        # The retired first, then the live: a holder is cleared before its counts are
        # queued, so a middleware retired meanwhile is read live (and summed as
        # retired next time) or not at all for this once, never twice.
        sums = {kind: list(counts) for kind, counts in _retired.items()}
        for holder in list(_live):
            live = holder.read()
            if live is None:
                continue
            into = sums.setdefault(holder.kind, [0] * len(FIELDS))
            for i, value in enumerate(live):
                into[i] += value
        totals: dict[str, dict[str, int]] = {}
        for kind, values in sums.items():
            # A middleware whose holder the collector (in another thread) has taken
            # out of _live but not yet retired is missing for that moment: the
            # previous totals stand in until the next call.
            last = _reported.get(kind)
            now = tuple(values) if last is None else tuple(map(max, last, values))
            _reported[kind] = now
            totals[kind] = dict(zip(FIELDS, now, strict=True))
    return totals
