"""Client quotas (KIP-219): the pauses brokers ask of a client, shared by the producer
and the consumer.

A broker enforcing a quota (bytes per second, or a share of its request threads, on a
client id or user) answers a request over it with ``throttle_time_ms``. From the
versions of KIP-219 (Kafka 2.0: Produce v6, Fetch v8, ListOffsets v3...) it answers at
once and then reads nothing more from the connection for that long: a request sent
meanwhile waits in the socket, its timeout running. Java's client sends that broker
nothing until then; so do ours. Before those versions the broker delayed the
response itself, and the time is only counted.
"""

from __future__ import annotations

import logging
import math

import anyio

__all__ = ["Throttles"]

_LOG_EVERY = 60.0  # seconds: at most one 'throttled' warning per client this often


class Throttles:
    """The pauses brokers asked of one client: ``paused`` maps a broker node to the
    anyio time before which it is sent nothing; ``asked_ms`` sums what they asked."""

    __slots__ = ("_client", "_held", "_logged_at", "_logger", "_sum", "asked_ms", "paused")

    def __init__(self, logger: logging.Logger, client: str, held: str, sum_name: str) -> None:
        """The warning names the ``client`` ("producer"), what is ``held`` ("Produce
        requests to it wait") and where the sum is shown ("stats().throttle_time_ms")."""
        self.paused: dict[int, float] = {}
        self.asked_ms = 0
        self._logger = logger
        self._client = client
        self._held = held
        self._sum = sum_name
        self._logged_at = -math.inf

    def note(self, node: int, ms: int, muted: bool, cap: float) -> None:
        """Broker ``node`` answered with ``throttle_time_ms`` = ``ms``; ``muted``: at a
        version where it mutes the connection meanwhile (KIP-219), so nothing goes to
        it before that time, at most ``cap`` seconds (the request timeout: a bound on
        what a broker may ask)."""
        self.asked_ms += ms
        if not muted:
            return
        now = anyio.current_time()
        until = now + min(ms / 1000, cap)
        if until > self.paused.get(node, -math.inf):
            self.paused[node] = until
        if now >= self._logged_at + _LOG_EVERY:
            self._logged_at = now
            self._logger.warning(
                "kafka_asgi %s: broker %d throttles this client (a client quota on its"
                " client_id or user) for %d ms; %s (%d ms asked so far, %s)",
                self._client,
                node,
                ms,
                self._held,
                self.asked_ms,
                self._sum,
            )

    async def wait(self, node: int) -> None:
        """Sleep until a pause broker ``node`` asked for is over (none: at once)."""
        until = self.paused.get(node)
        if until is None:
            return
        delay = until - anyio.current_time()
        if delay > 0:
            await anyio.sleep(delay)
        else:
            self.paused.pop(node, None)  # (over; nothing awaited since it was read)
