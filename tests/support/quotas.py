"""A client id under a quota on a broker of a test module's own (KIP-219), and a
one-partition topic to use it on."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import anyio.to_thread

from tests.support.brokers import topic_at


async def quota_client(own_broker: Any, topic_prefix: str, **quotas: float) -> tuple[str, str]:
    """A fresh client id with ``quotas`` (``producer_byte_rate=...``,
    ``consumer_byte_rate=...``) set by Kafka's own ConfigCommand, and a new topic:
    (client_id, topic)."""
    bootstrap = own_broker.addresses().plaintext
    client_id = f"quota-{uuid.uuid4().hex[:8]}"
    await anyio.to_thread.run_sync(partial(own_broker.set_client_quota, client_id, **quotas))
    topic = await anyio.to_thread.run_sync(topic_at, bootstrap, topic_prefix, 1)
    return client_id, topic
