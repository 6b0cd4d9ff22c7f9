"""Threads and the event loop (re-exports): see :mod:`kafka_asgi.integrations.sender`
(the thread-safe hand-off) and :mod:`kafka_asgi.integrations.background` (a producer on
its own loop in a daemon thread, for WSGI and scripts)."""

from kafka_asgi.integrations.background import BackgroundProducer
from kafka_asgi.integrations.sender import (
    ThreadSafeSender,
    call_soon_threadsafe,
    get_sender,
    register_sender,
    unregister_sender,
)

__all__ = [
    "BackgroundProducer",
    "ThreadSafeSender",
    "call_soon_threadsafe",
    "get_sender",
    "register_sender",
    "unregister_sender",
]
