"""The connections of a client: per broker address a few multiplexed connections.

A :class:`BrokerPool` holds the connections to one ``host:port``: it opens one when
every usable connection is busy (up to ``max_connections_per_broker``), and after a
failed connect it fails fast until a backoff has passed, so a dead broker costs one
connect attempt per backoff period, not one per request (no reconnect storm).
:class:`BrokerPools` is the set of them a :class:`~kafka_asgi.cluster.client.KafkaClient`
owns: lookup by address, counters, the idle reaper's pass, closing.

The pools know addresses and node ids, nothing of topics or metadata: the client
tells them which node lives where.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.abc

from kafka_asgi.cluster.options import ClientOptions
from kafka_asgi.network.connection import BrokerConnection
from kafka_asgi.network.errors import ConnectError, ConnectionClosedError
from kafka_asgi.protocol.errors import KafkaError

__all__ = ["BrokerPool", "BrokerPools", "PoolCounters", "backoff", "error_copy"]

logger = logging.getLogger("kafka_asgi.cluster")

_E = TypeVar("_E", bound=KafkaError)

# Above this many requests in flight on every connection to a broker, open another
# one (up to max_connections_per_broker). A broker handles one request per connection
# at a time, so more connections is what buys parallelism on the broker side.
PIPELINE_DEPTH = 16
MAX_BACKOFF = 1.0


def error_copy(error: _E, note: str) -> _E:
    """A fresh instance of ``error`` for another waiter, keeping the class."""
    try:
        clone = type(error)(f"{note}: {error}")
    except TypeError:
        return error
    clone.__cause__ = error
    return clone


def backoff(base: float, failures: int) -> float:
    """Exponential backoff from ``base``, capped at max(1 s, base)."""
    cap = max(MAX_BACKOFF, base)
    return float(min(base * (2 ** min(failures, 16)), cap))


@dataclass
class PoolCounters:
    """Counters shared by every pool of a client (read by ``KafkaClient.stats()``)."""

    connections_opened: int = 0
    connect_failures: int = 0


_OPEN_MARGIN = 0.5
"""Seconds a caller waits for a connection beyond the opening's own bounds."""


class _Opening:
    """A connection being opened, shared by the callers waiting for it: its outcome."""

    __slots__ = ("conn", "done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.conn: BrokerConnection | None = None
        self.error: KafkaError | None = None


class BrokerPool:
    """The connections to one broker address: few, multiplexed, reaped when idle."""

    def __init__(
        self,
        host: str,
        port: int,
        options: ClientOptions,
        task_group: Callable[[], anyio.abc.TaskGroup],
        counters: PoolCounters,
    ) -> None:
        self.host = host
        self.port = port
        self.options = options
        self._task_group = task_group
        self._counters = counters
        self._node_id: int | None = None
        self.connections: list[BrokerConnection] = []
        # Connections get() handed out, by callers that have not released them yet:
        # between get() and the request (a pause a broker asked for may be waited out
        # there) a connection carries nothing, and the reaper must not take it.
        self._held: dict[BrokerConnection, int] = {}
        self._opening: _Opening | None = None
        self.failures = 0
        self.last_error: KafkaError | None = None
        self.retry_at = 0.0

    def __repr__(self) -> str:
        return f"<BrokerPool {self.address} node {self.node_id} {len(self.connections)} conn>"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def node_id(self) -> int | None:
        """The node at this address, as the latest metadata has it (None: a bootstrap
        address, or a broker that moved or left)."""
        return self._node_id

    @node_id.setter
    def node_id(self, node_id: int | None) -> None:
        if node_id == self._node_id:
            return
        self._node_id = node_id
        # A connection opened before the node was known (from a bootstrap address)
        # is that node's too: the pauses its broker asks are held by node id.
        for conn in self.connections:
            conn.node_id = node_id

    @property
    def open_count(self) -> int:
        return sum(1 for c in self.connections if not c.closed)

    @property
    def connected(self) -> bool:
        """Whether a usable connection is open now."""
        return any(c.usable for c in self.connections)

    def abort_all(self, error: KafkaError) -> None:
        """Close every connection to this broker now; their requests fail with ``error``."""
        for conn in self.connections:
            conn.abort(error)
        self._prune()

    def backing_off(self, now: float | None = None) -> bool:
        """Whether the last connect failed and its backoff has not passed yet."""
        if self.last_error is None:
            return False
        if now is None:
            now = anyio.current_time()
        return now < self.retry_at

    def _prune(self) -> None:
        self.connections = [c for c in self.connections if not c.closed]

    def _usable(self) -> list[BrokerConnection]:
        self._prune()
        return [c for c in self.connections if c.usable]

    def _pick(self) -> BrokerConnection | None:
        """The least busy usable connection, unless a new one should be opened.

        A SASL session is renewed in place (KIP-368); only a connection whose session
        is too short to renew is retired: it finishes what it carries, does not count
        against the limit, and the reaper closes it.
        """
        usable = self._usable()
        if not usable:
            return None
        best = min(usable, key=lambda c: c.in_flight)
        room = len(usable) < self.options.max_connections_per_broker
        if best.in_flight >= PIPELINE_DEPTH and room:
            return None
        return best

    async def get(self, request_timeout: float | None = None) -> BrokerConnection:
        """A connection to send on, held from the reaper until :meth:`release`.

        See :meth:`_get`."""
        conn = await self.get_within(None, request_timeout)
        assert conn is not None  # (with no wait, _get raises rather)
        return conn

    async def get_within(
        self, wait: float | None, request_timeout: float | None = None
    ) -> BrokerConnection | None:
        """:meth:`get`, but a new connection is waited for ``wait`` seconds at most
        (None: as long as it may take): None then, the opening going on (a later
        call gets its outcome)."""
        conn = await self._get(request_timeout, wait)
        if conn is not None:
            # (Nothing is awaited between _get's choice and this: the reaper cannot run.)
            self._held[conn] = self._held.get(conn, 0) + 1
        return conn

    def release(self, conn: BrokerConnection) -> None:
        """The caller that took ``conn`` from :meth:`get` is done with it (its request
        finished, or was never sent)."""
        count = self._held.pop(conn, 0) - 1
        if count > 0:
            self._held[conn] = count

    def _idle(self, conn: BrokerConnection) -> bool:
        return conn.in_flight == 0 and conn not in self._held

    async def _get(
        self, request_timeout: float | None, wait: float | None
    ) -> BrokerConnection | None:
        """A connection to send on: an open one, or a new one.  ``request_timeout``
        (the caller's, when shorter than the configured one) bounds the handshake of
        a new connection, and the wait for another caller's, with connect_timeout:
        a broker that accepts connections and answers nothing (a frozen process)
        holds its caller no longer than its request would have. With a ``wait``
        (:meth:`get_within`), None once that has passed with the opening still going.

        A new connection is opened in the client's task group, shared by every caller
        that needs one meanwhile: a caller that leaves (its own deadline, its task
        cancelled) does not cut the handshake short, so callers whose deadlines are
        shorter than a slow handshake (TLS and SASL over a long round trip) get the
        connection one of them started, instead of each starting over."""
        config = self.options.connection
        handshake = config.request_timeout
        if request_timeout is not None:
            handshake = min(handshake, request_timeout)
        # An opening ends on its own by then (a token, the socket, the handshake: each
        # bounded); the margin lets its own error, which names the cause, arrive.
        now = anyio.current_time()
        limit = now + config.connect_timeout + 2 * handshake + _OPEN_MARGIN
        deadline = limit if wait is None else min(limit, now + wait)
        while True:
            conn = self._pick()
            if conn is not None:
                return conn
            opening = self._opening
            mine = opening is None
            if opening is None:
                busy = self._usable()
                now = anyio.current_time()
                if self.last_error is not None and now < self.retry_at:
                    if busy:
                        return min(busy, key=lambda c: c.in_flight)
                    # A connection just failed: fail fast rather than storm the broker.
                    raise error_copy(
                        self.last_error,
                        f"{self.address}: not retrying for {self.retry_at - now:.2f}s",
                    )
                opening = self._opening = _Opening()
                self._task_group().start_soon(self._open_shared, opening, handshake)
            with anyio.move_on_after(deadline - anyio.current_time()):
                await opening.done.wait()
            if not opening.done.is_set():
                if deadline < limit:
                    return None  # (the caller's wait)
                raise ConnectError(f"{self.address}: timed out waiting for a connection")
            conn = opening.conn
            if conn is not None:
                if mine and conn.usable:
                    return conn
                # Another caller's: pick again (it, or a new one if it is full already).
                continue
            busy = self._usable()
            if busy:
                # Could not add a connection; the busy ones still work.
                return min(busy, key=lambda c: c.in_flight)
            error = opening.error or ConnectError(f"{self.address}: the connection closed")
            if not mine:
                raise error_copy(error, "the connect another call started failed")
            raise error

    async def _open_shared(self, opening: _Opening, handshake_timeout: float) -> None:
        """Open a connection for whoever waits on ``opening``; never raises into the
        client's task group (its outcome is the waiters' to raise)."""
        try:
            opening.conn = await self._open(handshake_timeout)
        except KafkaError as exc:
            opening.error = exc
        except Exception as exc:  # not ours to lose: the waiters report it
            opening.error = ConnectError(f"{self.address}: connecting failed: {exc!r}")
            opening.error.__cause__ = exc
        finally:
            if opening.conn is None and opening.error is None:  # cancelled: the client closed
                opening.error = ConnectionClosedError(f"{self.address}: the client closed")
            self._opening = None
            opening.done.set()

    async def _open(self, handshake_timeout: float) -> BrokerConnection:
        conn = BrokerConnection(self.host, self.port, self.options.connection, node_id=self.node_id)
        try:
            await conn.connect(self._task_group(), handshake_timeout)
        except KafkaError as exc:
            self._counters.connect_failures += 1
            self.note_failure(exc)
            logger.debug("connecting to %s failed: %s", self.address, exc)
            raise
        self.failures = 0
        self.last_error = None
        self._counters.connections_opened += 1
        self.connections.append(conn)
        return conn

    def note_failure(self, error: KafkaError) -> None:
        """A connect failed (or a connection died): back off before the next attempt."""
        self.failures += 1
        self.last_error = error
        self.retry_at = anyio.current_time() + backoff(
            self.options.retry_backoff, self.failures - 1
        )

    async def reap(self, now: float) -> None:
        """Close connections idle past idle_timeout, and idle ones beyond max_idle."""
        self._prune()
        options = self.options
        idle = sorted((c for c in self.connections if self._idle(c)), key=lambda c: c.last_used)
        keep = options.max_idle_connections
        for index, conn in enumerate(idle):
            expired = now - conn.last_used >= options.idle_timeout
            surplus = len(idle) - index > keep
            # Re-checked per connection: a caller may have taken it while an earlier
            # one was closing (aclose marks it closed before awaiting).
            if self._idle(conn) and (expired or surplus or not conn.usable):
                await conn.aclose()
        self._prune()

    async def confirm_writes(self, timeout: float | None) -> None:  # noqa: ASYNC109
        """See KafkaClient.confirm_writes (best effort, failures logged)."""
        for conn in list(self.connections):
            if conn.unconfirmed_writes and conn.usable:
                try:
                    await conn.confirm_writes(timeout)
                except KafkaError as exc:
                    logger.debug("confirming writes to %s failed: %s", conn.address, exc)

    async def aclose(self) -> None:
        for conn in self.connections:
            await conn.aclose()
        self.connections = []


class BrokerPools:
    """Every :class:`BrokerPool` of a client, by ``(host, port)``."""

    def __init__(
        self, options: ClientOptions, task_group: Callable[[], anyio.abc.TaskGroup]
    ) -> None:
        self.options = options
        self._task_group = task_group
        self.counters = PoolCounters()
        self._pools: dict[tuple[str, int], BrokerPool] = {}

    def __iter__(self) -> Iterator[BrokerPool]:
        return iter(list(self._pools.values()))

    def pool(self, host: str, port: int, node_id: int | None = None) -> BrokerPool:
        """The pool of ``host:port`` (made on first use), noting its node id if given."""
        key = (host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = BrokerPool(
                host, port, self.options, self._task_group, self.counters
            )
        if node_id is not None:
            pool.node_id = node_id
        return pool

    def place(self, brokers: Mapping[int, tuple[str, int]]) -> None:
        """Note where each node of the latest metadata lives (``{node_id: (host,
        port)}``): a pool at an address no broker has now (one that moved or left)
        is no node's, so its connections count for none."""
        nodes = {address: node_id for node_id, address in brokers.items()}
        for key, pool in self._pools.items():
            if key not in nodes:
                pool.node_id = None
        for (host, port), node_id in nodes.items():
            self.pool(host, port, node_id)

    def find(self, host: str, port: int) -> BrokerPool | None:
        return self._pools.get((host, port))

    def connected(self, host: str, port: int) -> bool:
        pool = self._pools.get((host, port))
        return pool is not None and pool.connected

    def release(self, conn: BrokerConnection) -> None:
        """See :meth:`BrokerPool.release`."""
        pool = self._pools.get((conn.host, conn.port))
        if pool is not None:
            pool.release(conn)

    def backing_off(self, host: str, port: int) -> bool:
        pool = self._pools.get((host, port))
        return pool is not None and pool.backing_off()

    def open_count(self, node_id: int | None = None) -> int:
        """Open connections (to one node, or to all)."""
        return sum(pool.open_count for pool in self if node_id is None or pool.node_id == node_id)

    async def reap(self, now: float) -> None:
        for pool in self:
            await pool.reap(now)

    async def confirm_writes(self, timeout: float | None) -> None:  # noqa: ASYNC109
        for pool in self:
            await pool.confirm_writes(timeout)

    async def aclose(self) -> None:
        for pool in self:
            await pool.aclose()
