"""One producer per worker process and cluster name.

A web server forks its workers after importing the application, so a producer
(sockets, tasks) must be created in each worker, in its lifespan, and found there
by name: ``get_producer("default")``.  A forked child starts with an empty
registry: its parent's producers (their sockets and event loop) belong to the
parent.

A producer constructed with ``cluster_name=...`` registers itself when it starts
and unregisters when it closes; any other object shaped like a producer (a test
double, say) can be registered by hand.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ProducerAlreadyRegisteredError, ProducerNotRegisteredError

__all__ = ["get_producer", "register_producer", "registered_names", "unregister_producer"]

_registry: dict[str, Any] = {}

# Clearing at fork keeps get_producer() free of a getpid() system call per lookup
# (the access-log middleware may call it once per request).
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_registry.clear)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"cluster_name must be a non-empty str, not {name!r}")
    return name


def register_producer(name: str, producer: Any) -> None:
    """Make ``producer`` the one ``get_producer(name)`` returns in this process.

    Registering the same producer again is a no-op; registering another one while a
    producer is registered under ``name`` raises ProducerAlreadyRegisteredError.
    """
    _check_name(name)
    if producer is None:
        raise TypeError("producer must not be None (use unregister_producer)")
    entry = _registry.get(name)
    if entry is not None:
        if entry is producer:
            return
        raise ProducerAlreadyRegisteredError(
            f"a producer is already registered as {name!r} in this process: "
            f"close it (or unregister_producer({name!r})) before registering another"
        )
    _registry[name] = producer


def unregister_producer(name: str, producer: Any = None) -> None:
    """Forget the producer registered under ``name`` (if ``producer`` is given, only
    when it is the one registered). Unknown names are ignored."""
    _check_name(name)
    entry = _registry.get(name)
    if entry is None:
        return
    if producer is not None and entry is not producer:
        return
    del _registry[name]


def get_producer(cluster_name: str = "default") -> Any:
    """The producer registered under ``cluster_name`` by this process."""
    _check_name(cluster_name)
    entry = _registry.get(cluster_name)
    if entry is None:
        known = registered_names()
        raise ProducerNotRegisteredError(
            f"no producer registered as {cluster_name!r} in this process"
            + (f" (registered: {', '.join(known)})" if known else "")
            + ": start one in the application's lifespan, e.g. "
            f"'async with Producer(..., cluster_name={cluster_name!r})'"
        )
    return entry


def registered_names() -> list[str]:
    """Names registered by this process."""
    return sorted(_registry)
