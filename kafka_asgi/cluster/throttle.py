"""Client quotas (KIP-219): the pauses brokers ask of a client, kept by
:class:`~kafka_asgi.cluster.client.KafkaClient` for every request it sends (Produce,
Fetch, Metadata, InitProducerId...), so the producer and the consumer built on it
share them.

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
from typing import TYPE_CHECKING

import anyio

from kafka_asgi.protocol.messages import ApiVersionsRequest

if TYPE_CHECKING:
    from kafka_asgi.network.connection import BrokerConnection

__all__ = ["MUTES_FROM", "Throttles"]

_LOG_EVERY = 60.0  # seconds: at most one 'throttled' warning per client this often

# api key -> the first version of that request whose throttled answer comes at once,
# the connection then muted (KIP-219, Kafka 2.0): the message definitions' "Starting
# in version N, on quota violation, brokers send out responses before throttling"
# (tests/cluster/test_throttle.py checks it against spec/kafka-messages), and Produce
# v6, which they do not note. An API not listed is newer than KIP-219: from version 0.
MUTES_FROM: dict[int, int] = {
    0: 6,  # Produce
    1: 8,  # Fetch
    2: 3,  # ListOffsets
    3: 6,  # Metadata
    8: 4,  # OffsetCommit
    9: 4,  # OffsetFetch
    10: 2,  # FindCoordinator
    11: 3,  # JoinGroup
    12: 2,  # Heartbeat
    13: 2,  # LeaveGroup
    14: 2,  # SyncGroup
    15: 2,  # DescribeGroups
    16: 2,  # ListGroups
    18: 2,  # ApiVersions
    19: 3,  # CreateTopics
    20: 2,  # DeleteTopics
    21: 1,  # DeleteRecords
    22: 1,  # InitProducerId
    24: 1,  # AddPartitionsToTxn
    25: 1,  # AddOffsetsToTxn
    26: 1,  # EndTxn
    28: 1,  # TxnOffsetCommit
    29: 1,  # DescribeAcls
    30: 1,  # CreateAcls
    31: 1,  # DeleteAcls
    32: 2,  # DescribeConfigs
    33: 1,  # AlterConfigs
    34: 1,  # AlterReplicaLogDirs
    35: 1,  # DescribeLogDirs
    37: 1,  # CreatePartitions
    38: 1,  # CreateDelegationToken
    39: 1,  # RenewDelegationToken
    40: 1,  # ExpireDelegationToken
    41: 1,  # DescribeDelegationToken
    42: 1,  # DeleteGroups
}


class Throttles:
    """The pauses brokers asked of one client: ``paused`` maps a broker node to the
    anyio time before which it is sent nothing; ``asked_ms`` sums what they asked."""

    __slots__ = ("_client", "_held", "_logged_at", "_logger", "_sum", "asked_ms", "paused")

    def __init__(self, logger: logging.Logger, client: str, held: str, sum_name: str) -> None:
        """The warning names the ``client`` ("client"), what is ``held`` ("requests to
        it wait") and where the sum is shown ("stats().throttle_time_ms")."""
        self.paused: dict[int, float] = {}
        self.asked_ms = 0
        self._logger = logger
        self._client = client
        self._held = held
        self._sum = sum_name
        self._logged_at = -math.inf

    def note(self, node: int, ms: int, muted: bool, cap: float, since: float | None = None) -> None:
        """Broker ``node`` answered with ``throttle_time_ms`` = ``ms``; ``muted``: at a
        version where it mutes the connection meanwhile (KIP-219), so nothing goes to
        it before that time, at most ``cap`` seconds (the request timeout: a bound on
        what a broker may ask) from ``since`` (the anyio time of the answer; default
        now)."""
        self.asked_ms += ms
        if not muted:
            return
        now = anyio.current_time()
        until = (now if since is None else since) + min(ms / 1000, cap)
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

    def answered(
        self,
        node: int | None,
        api_key: int,
        version: int,
        response: object,
        cap: float,
        since: float | None = None,
    ) -> float:
        """Broker ``node`` (None: not known, a bootstrap address) answered request
        ``api_key`` at ``version`` with ``response``: note the throttle time it asks
        for, if any (:meth:`note`; ``cap`` and ``since`` as there). Returns the seconds
        left of the pause if it mutes the connection, else 0."""
        ms = getattr(response, "throttle_time_ms", 0)
        if not ms or ms < 0:
            return 0.0
        muted = version >= MUTES_FROM.get(api_key, 0)
        if node is None:
            self.asked_ms += ms  # (no node to hold requests back from)
        else:
            self.note(node, ms, muted, cap, since)
        if not muted:
            return 0.0
        now = anyio.current_time()
        return max(0.0, (now if since is None else since) + min(ms / 1000, cap) - now)

    def handshake(self, node: int | None, conn: BrokerConnection, cap: float) -> float:
        """Note the pause asked for in ``conn``'s handshake (its ApiVersions answer),
        once: :meth:`answered`."""
        asked = conn.handshake_throttle
        if asked is None:
            return 0.0
        conn.handshake_throttle = None
        version, response, since = asked
        return self.answered(node, ApiVersionsRequest.API_KEY, version, response, cap, since)

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
