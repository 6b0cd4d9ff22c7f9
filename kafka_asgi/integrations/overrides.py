"""Per-cluster producer overrides: a producer every lifespan must use for a cluster.

Production code reads the registry (:func:`override_for`); the test helper
:func:`kafka_asgi.integrations.testing.capture_events` fills it, so that the app
under test needs no change. This module holds only the registry, so the lifespans
never import the test helpers.
"""

from __future__ import annotations

import threading

from kafka_asgi.integrations.producer_api import ProducerLike

__all__ = ["clear_override", "override_for", "set_override"]

_overrides: dict[str, ProducerLike] = {}
_lock = threading.Lock()


def override_for(cluster: str) -> ProducerLike | None:
    """The producer a lifespan must use for ``cluster`` instead of making one, if any."""
    return _overrides.get(cluster)


def set_override(cluster: str, producer: ProducerLike) -> None:
    """Make every lifespan started from now on use ``producer`` for ``cluster``."""
    with _lock:
        if cluster in _overrides:
            raise RuntimeError(f"capture_events({cluster!r}) is already active")
        _overrides[cluster] = producer


def clear_override(cluster: str, producer: ProducerLike) -> None:
    """Undo :func:`set_override` (only if ``producer`` is still the override)."""
    with _lock:
        if _overrides.get(cluster) is producer:
            del _overrides[cluster]
