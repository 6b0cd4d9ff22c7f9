"""KafkaClient: the cluster view (metadata, leaders), its connection pools (pool.py) and
admin calls (admin.py).

Everything the client runs in the background (each connection's reader, the metadata
refresher, the idle-connection reaper) is a task in the task group the client enters
in :meth:`KafkaClient.start` (``async with KafkaClient(...)``), cancelled and joined
by :meth:`KafkaClient.aclose`.

The client talks to the cluster lazily: starting it opens no connection, so an
application can start while Kafka is down; the first call that needs the cluster
bootstraps from the addresses given, trying them in turn from a random one (see
:meth:`KafkaClient._any_connection`).

Metadata refreshes are single-flight: a caller that finds a refresh running queues the
topics it needs and waits; the next refresh asks for all queued topics in one
MetadataRequest, so a thousand concurrent lookups cost one or two requests.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from kafka_asgi.cluster import admin
from kafka_asgi.cluster.metadata import (
    BrokerMetadata,
    ClusterMetadata,
    TopicMetadata,
    brokers_from_response,
    topic_from_response,
)
from kafka_asgi.cluster.options import BootstrapSpec, ClientOptions, parse_bootstrap
from kafka_asgi.cluster.pool import BrokerPool, BrokerPools, backoff, error_copy
from kafka_asgi.cluster.throttle import Throttles
from kafka_asgi.network.connection import BrokerConnection
from kafka_asgi.network.errors import (
    AuthenticationError,
    ClientRequestTimeoutError,
    ConnectError,
    ConnectionClosedError,
    NetworkError,
    TLSError,
)
from kafka_asgi.network.host import TaskHost, keep_running
from kafka_asgi.protocol.errors import (
    NO_ERROR,
    BrokerNotAvailableError,
    KafkaError,
    LeaderNotAvailableError,
    ProtocolError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from kafka_asgi.protocol.messages import (
    Message,
    MetadataRequest,
    MetadataResponse,
)
from kafka_asgi.protocol.messages.metadata import MetadataRequestTopic

__all__ = ["ClientStats", "KafkaClient"]

logger = logging.getLogger("kafka_asgi.cluster")

_UNKNOWN_TOPIC = UnknownTopicOrPartitionError.code
# Metadata answers give leader epochs Kafka's clients rely on from v9 (Kafka 2.4):
# before, a broker did not keep them accurate during a partition reassignment.
_RELIABLE_EPOCHS_FROM = 9
_MAX_REMEMBERED = 10_000
# Longest wait for the connections to close in aclose().
_CLOSE_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class ClientStats:
    connections_open: int
    connections_opened: int
    connect_failures: int
    metadata_requests: int
    metadata_age: float | None
    """Seconds since the last successful metadata refresh (None: never)."""
    reauthentications: int = 0
    """KIP-368 re-authentications done by the connections open now."""
    throttle_time_ms: int = 0
    """The throttle time brokers have asked of this client in all (client quotas,
    KIP-219): requests to a broker wait that long after its answer."""


def _newest_leaders(
    cached: TopicMetadata, answer: TopicMetadata, brokers: Mapping[int, object]
) -> TopicMetadata:
    """``answer``, but with the cached partitions whose leader epoch is newer than the
    answer's (KIP-320): a broker whose metadata lags names a leader that was replaced
    (as the Java client's Metadata.updateLatestMetadata). An answer with another topic
    id than the cached one (or the first id) is another topic, deleted and created
    again, whose epochs start over: it is taken whole, as Java does. A cached leader
    no longer among the answer's brokers is not kept either: without topic ids (an old
    cluster) a re-created topic would otherwise stay pinned to a broker that left."""
    if answer.topic_id is not None and answer.topic_id != cached.topic_id:
        return answer
    partitions = dict(answer.partitions)
    for index, partition in answer.partitions.items():
        known = cached.partitions.get(index)
        if (
            known is not None
            and 0 <= partition.leader_epoch < known.leader_epoch
            and known.leader in brokers
        ):
            logger.debug(
                "got metadata for an older epoch %d (current is %d) for partition %s-%d,"
                " not updating",
                partition.leader_epoch,
                known.leader_epoch,
                answer.name,
                index,
            )
            partitions[index] = known
    if partitions == answer.partitions:
        return answer
    return dataclasses.replace(answer, partitions=partitions)


def _named(error: KafkaError, address: str) -> str:
    """``error``'s message, naming ``address`` if it does not already."""
    text = str(error)
    return text if address in text else f"{address}: {text}"


class KafkaClient:
    """The cluster as one object: bootstrap, metadata, leaders, pooled connections.

    ``async with KafkaClient("host:9092", **options) as client:`` or ``await
    client.start()`` and ``await client.aclose()`` from the same task (the background
    tasks live in a task group entered by ``start``). ``options`` are the client options
    listed in :mod:`kafka_asgi.cluster.options`, validated here: a bad one raises
    TypeError/ValueError naming it.
    """

    def __init__(self, bootstrap: BootstrapSpec, **options: Any) -> None:
        self.bootstrap = parse_bootstrap(bootstrap)
        self.options = ClientOptions.from_options(**options)
        self._metadata = ClusterMetadata()
        self._fetched_at: dict[str, float] = {}
        self._pools = BrokerPools(self.options, self._task_group)
        self._host: TaskHost | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False
        # Single-flight metadata refresh state (see the module docstring).
        self._refresh_lock: anyio.Lock | None = None
        self._refresh_wanted: anyio.Event | None = None
        self._queued_topics: set[str] = set()
        self._queued_all = False
        self._next_seq = 0
        self._all_seq = -1
        self._topic_seq: dict[str, int] = {}
        self._success_seq = -1
        self._last_failure: tuple[int, frozenset[str] | None, KafkaError] | None = None
        self._refreshed_at: float | None = None
        # Error codes of topics absent from the cache, from the last answer about them.
        self._topic_errors: dict[str, int] = {}
        # Brokers of the last Metadata answer left out (no usable address), by node id.
        self._unusable: dict[int, str] = {}
        self._unusable_seen: set[str] = set()  # what was logged of them
        # Counters for stats() (the pools count connections).
        self._metadata_requests = 0
        # The pauses brokers asked for (client quotas) and their sum: every request
        # sent through send_built waits out its broker's (the producer's flusher also
        # reads them, to leave a paused broker's batches for later).
        self.throttles = Throttles(
            logger, "client", "requests to it wait", "stats().throttle_time_ms"
        )

    def __repr__(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.bootstrap)
        state = "closed" if self._closed else "started" if self._tg else "new"
        return f"<KafkaClient {hosts} {state}>"

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> KafkaClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the background tasks. Opens no connection (see the module docstring)."""
        if self._tg is not None or self._closed:
            raise RuntimeError(f"{self!r} cannot be started twice")
        self._refresh_lock = anyio.Lock()
        self._refresh_wanted = anyio.Event()
        # A host task owns the task group: start() and aclose() may be awaited from
        # any task, inside fail_after/move_on_after (kafka_asgi.network.host).
        host = TaskHost("kafka_asgi client")
        await host.start()
        self._host = host
        self._tg = host.task_group
        # Each goes on if a bug or a stray cancellation ends it (keep_running): a
        # stopped refresher would leave a moved leader unknown for good.
        for body, what in (
            (self._refresher, "the metadata refresher"),
            (self._reaper, "the idle-connection reaper"),
        ):
            self._tg.start_soon(
                keep_running,
                body,
                self._tg,
                what,
                "kafka_asgi client",
                self._is_closed,
                name=f"kafka_asgi client.{body.__name__}",
            )

    def _is_closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Close every connection and stop the background tasks (bounded; any task
        may call it)."""
        if self._closed:
            return
        self._closed = True
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_WAIT):
                await self._pools.aclose()
        finally:
            host, self._host = self._host, None
            if host is not None:
                await host.aclose()

    def require_started(self) -> None:
        """Raise RuntimeError unless the client runs (started and not closed)."""
        self._task_group()

    def _task_group(self) -> anyio.abc.TaskGroup:
        if self._tg is None or self._closed:
            state = "closed" if self._closed else "not started"
            raise RuntimeError(
                f"KafkaClient is {state}: use 'async with KafkaClient(...)' or await start()"
            )
        return self._tg

    # ------------------------------------------------------------------ cache views

    @property
    def brokers(self) -> dict[int, BrokerMetadata]:
        return dict(self._metadata.brokers)

    @property
    def metadata(self) -> ClusterMetadata:
        """The last known cluster metadata (no I/O)."""
        return self._metadata

    def cached_topic(self, topic: str) -> TopicMetadata | None:
        """The cached metadata of ``topic`` if it is known and usable; no I/O.

        A stale entry is still returned (and a background refresh requested): leaders
        rarely move, and a send to a former leader fails with NOT_LEADER_OR_FOLLOWER,
        which refreshes anyway.
        """
        meta = self._metadata.topics.get(topic)
        if meta is None or meta.error_code:
            return None
        fetched = self._fetched_at.get(topic)
        if fetched is not None and time.monotonic() - fetched > self.options.metadata_max_age:
            self.request_refresh()
        return meta

    def stats(self) -> ClientStats:
        age = None
        if self._refreshed_at is not None:
            age = time.monotonic() - self._refreshed_at
        return ClientStats(
            connections_open=self._pools.open_count(),
            connections_opened=self._pools.counters.connections_opened,
            connect_failures=self._pools.counters.connect_failures,
            metadata_requests=self._metadata_requests,
            metadata_age=age,
            reauthentications=sum(
                c.reauthentications for pool in self._pools for c in pool.connections
            ),
            throttle_time_ms=self.throttles.asked_ms,
        )

    async def confirm_writes(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every broker has read the requests written to it without a
        response (Produce with acks=0): see BrokerConnection.confirm_writes. Best
        effort: a connection that fails meanwhile is logged and skipped (whatever it
        held is as lost as acks=0 allows)."""
        await self._pools.confirm_writes(timeout)

    def connection_count(self, node_id: int | None = None) -> int:
        """Open connections (to one node, or to all)."""
        return self._pools.open_count(node_id)

    # ------------------------------------------------------------------ connections

    async def _node_connection(
        self, node_id: int, request_timeout: float | None = None
    ) -> BrokerConnection:
        broker = self._metadata.brokers.get(node_id)
        if broker is None:
            try:
                await self.refresh([])
            except ConnectError:
                raise
            except NetworkError as exc:
                # No request of the caller's was written: not a connection it lost.
                raise ConnectError(
                    f"node {node_id} is not in the cached metadata, and refreshing it failed: {exc}"
                ) from exc
            broker = self._metadata.brokers.get(node_id)
            if broker is None:
                entry = self._unusable.get(node_id)
                if entry is not None:
                    # Not retried as a broker away: its address itself is wrong.
                    raise ProtocolError(f"Metadata response: {entry}")
                raise BrokerNotAvailableError(
                    f"node {node_id} is not in the cluster metadata"
                    f" (known: {sorted(self._metadata.brokers) or 'none'})"
                )
        return await self._pools.pool(broker.host, broker.port, node_id).get(request_timeout)

    async def send(
        self,
        node_id: int,
        request: Message,
        *,
        min_version: int | None = None,
        max_version: int | None = None,
        expect_response: bool = True,
        request_timeout: float | None = None,
        handshake_timeout: float | None = None,
    ) -> Any:
        """Send ``request`` to broker ``node_id`` at the best common version.

        Returns the decoded response (None with ``expect_response=False``). Broker
        error codes inside the response are left to the caller. A lost connection
        raises ConnectionClosedError (or ConnectError/ClientRequestTimeoutError) and requests a
        metadata refresh. ``request_timeout`` (default: the client's) bounds the wait
        for the response; a connection opened for the request must finish its
        handshake within ``handshake_timeout`` (default: ``request_timeout``), or
        the client's request_timeout if that is shorter.
        """
        return await self.send_built(
            node_id,
            request.API_KEY,
            lambda _: request,
            min_version=min_version,
            max_version=max_version,
            expect_response=expect_response,
            request_timeout=request_timeout,
            handshake_timeout=handshake_timeout,
        )

    def _candidates(self) -> list[tuple[str, int, int | None]]:
        """Where to send a request any broker can answer: known brokers with an open
        connection first, then the other known brokers, then the bootstrap list; in
        each, a broker that asked for a pause (a client quota) last."""
        known: list[tuple[str, int, int | None]] = [
            (b.host, b.port, b.node_id) for b in self._metadata.brokers.values()
        ]
        random.shuffle(known)
        connected = [k for k in known if self._pools.connected(k[0], k[1])]
        others = [k for k in known if k not in connected]
        paused = self.throttles.paused
        if paused:
            now = anyio.current_time()

            def held(candidate: tuple[str, int, int | None]) -> bool:
                node = candidate[2]
                return node is not None and paused.get(node, now) > now

            connected.sort(key=held)  # (stable: the shuffled order otherwise)
            others.sort(key=held)
        seen = {(h, p) for h, p, _ in known}
        boot: list[tuple[str, int, int | None]] = [
            (h, p, None) for h, p in self.bootstrap if (h, p) not in seen
        ]
        # From a random one too (as Java's leastLoadedNode starts at a random node,
        # bootstrap addresses included): every worker of an application starting
        # with the same list must not all try a dead or frozen first address first.
        random.shuffle(boot)
        boot.sort(key=lambda c: not self._pools.connected(c[0], c[1]))
        return connected + others + boot

    async def _any_connection(self, request_timeout: float | None = None) -> BrokerConnection:
        """A connection to any broker: the candidates in turn (:meth:`_candidates`).

        A candidate not connected within connect_timeout (a frozen process, a paused
        VM: it accepts TCP connections and answers nothing) is left connecting while
        the next is tried, rather than holding the call for the whole handshake
        (request_timeout); when none connects within connect_timeout, the first of
        those left connecting to finish is taken. (Java's client bounds the setup of a
        connection before its ApiVersions exchange likewise,
        socket.connection.setup.timeout.ms, and then tries another node.)
        """
        candidates = self._candidates()
        stagger = self.options.connection.connect_timeout
        errors: list[str] = []
        slow: list[BrokerPool] = []
        for host, port, node_id in candidates:
            pool = self._pools.pool(host, port, node_id)
            try:
                # The last one too: a slow one left before it may finish first.
                conn = await pool.get_within(stagger, request_timeout)
            except (AuthenticationError, TLSError):
                # The same credentials/certificates fail everywhere: no point trying on.
                raise
            except KafkaError as exc:
                # Not only a network error: another service on this port (a TLS or HTTP
                # listener answers with no Kafka frame, a ProtocolError) says nothing
                # of the next address.
                errors.append(_named(exc, pool.address))
                continue
            if conn is not None:
                return conn
            slow.append(pool)
        if slow:
            conn = await self._first_connected(slow, request_timeout, errors)
            if conn is not None:
                return conn
        raise ConnectError("no broker reachable: " + "; ".join(errors))

    async def _first_connected(
        self, pools: list[BrokerPool], request_timeout: float | None, errors: list[str]
    ) -> BrokerConnection | None:
        """The connection of the first of ``pools`` (each opening one) to have one,
        held (see BrokerPool.get); None when none does, their errors added to
        ``errors``."""
        won: list[BrokerConnection] = []
        fatal: list[KafkaError] = []

        async def wait_for(pool: BrokerPool, done: anyio.CancelScope) -> None:
            try:
                won.append(await pool.get(request_timeout))
            except (AuthenticationError, TLSError) as exc:
                fatal.append(exc)
            except KafkaError as exc:
                errors.append(_named(exc, pool.address))
                return
            done.cancel()

        try:
            async with anyio.create_task_group() as tg:
                for pool in pools:
                    tg.start_soon(wait_for, pool, tg.cancel_scope)
        except BaseException:
            for conn in won:
                self._pools.release(conn)
            raise
        # (Two may finish in the same pass of the event loop.)
        for conn in won[1:]:
            self._pools.release(conn)
        if won:
            return won[0]
        if fatal:
            raise fatal[0]
        return None

    async def send_any(
        self,
        request: Message,
        *,
        min_version: int | None = None,
        max_version: int | None = None,
        expect_response: bool = True,
        request_timeout: float | None = None,
    ) -> Any:
        """Send ``request`` to any reachable broker (known brokers, then bootstrap)."""
        return await self.send_built(
            None,
            request.API_KEY,
            lambda _: request,
            min_version=min_version,
            max_version=max_version,
            expect_response=expect_response,
            request_timeout=request_timeout,
        )

    async def send_built(
        self,
        node_id: int | None,
        api_key: int,
        build: Callable[[int], Message],
        *,
        min_version: int | None = None,
        max_version: int | None = None,
        expect_response: bool = True,
        request_timeout: float | None = None,
        handshake_timeout: float | None = None,
    ) -> Any:
        """Send the request ``build(version)`` makes for the negotiated version (some
        fields exist only in some versions) to ``node_id``, or any broker for None.
        Timeouts as :meth:`send`'s.

        A broker that asked for a pause (a client quota's ``throttle_time_ms``, at
        most request_timeout) is sent nothing before it is over: the request waits
        here first, as the Java client's do, rather than in a socket the broker
        does not read meanwhile (KIP-219), its timeout running.
        """
        self._task_group()
        # A broker that accepts connections and answers nothing (a frozen process)
        # holds a caller no longer than the caller's own timeout, in a new
        # connection's handshake as in its request.
        setup = request_timeout if handshake_timeout is None else handshake_timeout
        throttles = self.throttles
        try:
            if node_id is None:
                conn = await self._any_connection(setup)
                node = conn.node_id  # (None: a bootstrap address)
            else:
                node = node_id
                if throttles.paused:
                    await throttles.wait(node)
                conn = await self._node_connection(node_id, setup)
            # The pool holds ``conn`` from its reaper until it is released: a pause
            # waited out before the request leaves it carrying nothing meanwhile.
            try:
                if node_id is None and node is not None and throttles.paused:
                    await throttles.wait(node)
                return await self._send_on(
                    conn,
                    node,
                    api_key,
                    build,
                    min_version,
                    max_version,
                    expect_response,
                    request_timeout,
                )
            finally:
                self._pools.release(conn)
        except NetworkError:
            self.request_refresh()
            raise

    async def _send_on(
        self,
        conn: BrokerConnection,
        node: int | None,
        api_key: int,
        build: Callable[[int], Message],
        min_version: int | None,
        max_version: int | None,
        expect_response: bool,
        request_timeout: float | None,
    ) -> Any:
        """send_built's request on ``conn``, a connection to ``node`` taken from a pool."""
        throttles = self.throttles
        if conn.handshake_throttle is not None:
            # A new connection's ApiVersions answer asked for a pause (a request
            # quota): the request waits it out here, not in the muted socket.
            left = throttles.handshake(node, conn, self.options.connection.request_timeout)
            if left > 0:
                await anyio.sleep(left)
        version = conn.choose_api_version(api_key, min_version, max_version)
        try:
            response = await conn.request(
                build(version),
                version,
                expect_response=expect_response,
                request_timeout=request_timeout,
            )
            if response is not None:
                throttles.answered(
                    node, api_key, version, response, self.options.connection.request_timeout
                )
            return response
        except ClientRequestTimeoutError as exc:
            # The broker answered nothing in time on this connection (it closed):
            # its other connections wait on the same broker (a frozen process, a
            # paused VM), so they go too, and their requests are tried again
            # rather than each waiting out its own timeout (the Java client has
            # one connection per broker and closes it). Not when the connection
            # is still open: the request only waited to send behind a
            # re-authentication, and nothing says the broker is stuck.
            pool = self._pools.find(conn.host, conn.port) if conn.closed else None
            if pool is not None:
                pool.abort_all(
                    ConnectionClosedError(
                        f"{conn.address}: closed after a request on another"
                        f" connection to this broker timed out ({exc})"
                    )
                )
            raise

    # ------------------------------------------------------------------ metadata

    def _refresh_limit(self) -> float:
        config = self.options.connection
        return config.connect_timeout + config.request_timeout

    def _covered(self, wanted: frozenset[str] | None, since: int) -> bool:
        """Did a refresh that started at or after ``since`` cover ``wanted``?"""
        if wanted is None:
            return self._all_seq >= since
        if not wanted:
            return self._success_seq >= since
        return all(max(self._topic_seq.get(t, -1), self._all_seq) >= since for t in wanted)

    async def refresh(self, topics: Iterable[str] | None = None) -> ClusterMetadata:
        """Fetch metadata for ``topics`` (None: every topic; []: brokers only).

        Concurrent callers share requests (single flight). Returns the whole cached
        view after the refresh. Bounded by connect_timeout + request_timeout per
        attempt; raises ConnectError/ClientRequestTimeoutError when no broker answers.
        """
        self._task_group()
        wanted: frozenset[str] | None
        if topics is None:
            wanted = None
        else:
            if isinstance(topics, str):
                raise TypeError("topics must be a list of topic names, not a str")
            names = list(topics)
            for name in names:
                if not isinstance(name, str) or not name:
                    raise ValueError(f"bad topic name {name!r}")
            wanted = frozenset(names)
        self._queue(wanted)
        since = self._next_seq
        lock = self._refresh_lock
        assert lock is not None
        with anyio.move_on_after(2 * self._refresh_limit()) as scope:
            await lock.acquire()
        if scope.cancelled_caught:
            raise ClientRequestTimeoutError("timed out waiting for a metadata refresh in progress")
        try:
            if self._covered(wanted, since):
                return self._metadata
            failure = self._last_failure
            if failure is not None and failure[0] >= since:
                _, failed_topics, error = failure
                if failed_topics is None or (wanted is not None and wanted <= failed_topics):
                    raise error_copy(error, "metadata refresh failed")
            # A refresh that failed or was cancelled may have taken this caller's
            # topics from the queue: the request sent now must cover them.
            self._queue(wanted)
            await self._refresh_once()
        finally:
            lock.release()
        return self._metadata

    def _queue(self, topics: frozenset[str] | None) -> None:
        if topics is None:
            self._queued_all = True
        else:
            self._queued_topics |= topics

    async def _refresh_once(self) -> None:
        """One MetadataRequest for everything queued (lock held)."""
        take: frozenset[str] | None = None if self._queued_all else frozenset(self._queued_topics)
        self._queued_all = False
        self._queued_topics = set()
        seq = self._next_seq
        self._next_seq += 1
        topics = None if take is None else [MetadataRequestTopic(name=t) for t in sorted(take)]
        sent_version = -1

        def build(version: int) -> MetadataRequest:
            nonlocal sent_version
            sent_version = version
            # allow_auto_topic_creation exists from v4 on; before, the broker's
            # auto.create.topics.enable alone decides.
            if version >= 4:
                return MetadataRequest(topics=topics, allow_auto_topic_creation=False)
            return MetadataRequest(topics=topics)

        self._metadata_requests += 1
        try:
            with anyio.fail_after(self._refresh_limit()):
                # v1+: v0 reads an empty topic list as "all topics".
                response: MetadataResponse = await self.send_built(
                    None, MetadataRequest.API_KEY, build, min_version=1
                )
        except TimeoutError:
            error: KafkaError = ClientRequestTimeoutError(
                f"metadata refresh timed out after {self._refresh_limit()}s"
            )
            self._last_failure = (seq, take, error)
            raise error from None
        except KafkaError as exc:
            self._last_failure = (seq, take, exc)
            raise
        except BaseException:
            # Cancelled (this caller's own timeout): the callers waiting behind it
            # queued some of the topics it took, and nothing was learnt of them.
            self._queue(take)
            raise
        try:
            self._apply(response, take, seq, sent_version >= _RELIABLE_EPOCHS_FROM)
        except KafkaError as exc:  # metadata that cannot be right (metadata.py)
            self._last_failure = (seq, take, exc)
            raise

    def _apply(
        self,
        response: MetadataResponse,
        asked: frozenset[str] | None,
        seq: int,
        reliable_epochs: bool,
    ) -> None:
        # Cache ages use time.monotonic: the same clock on every backend, readable
        # without an event loop (stats() may be called from anywhere).
        now = time.monotonic()
        # Decoded (and validated) before anything changes: bad metadata changes nothing.
        unusable: dict[int, str] = {}
        brokers = brokers_from_response(response, unusable)
        for entry in unusable.values():
            # Once per entry (refreshes repeat while it stays), in a bounded set.
            if entry not in self._unusable_seen:
                if len(self._unusable_seen) > _MAX_REMEMBERED:
                    self._unusable_seen.clear()
                self._unusable_seen.add(entry)
                logger.warning(
                    "Metadata response: %s; left out: requests for it fail until a"
                    " later answer gives it one",
                    entry,
                )
        decoded = {
            t.name: topic_from_response(t)
            for t in response.topics
            if t.name and t.error_code != _UNKNOWN_TOPIC
        }
        topics = {} if asked is None else dict(self._metadata.topics)
        if len(self._topic_errors) > _MAX_REMEMBERED or len(self._topic_seq) > _MAX_REMEMBERED:
            # Names asked about once and never again must not grow these forever; the
            # worst a dropped entry costs is one more refresh.
            self._topic_errors.clear()
            self._topic_seq = {t: n for t, n in self._topic_seq.items() if t in topics}
        for t in response.topics:
            if not t.name:
                continue
            if t.error_code == _UNKNOWN_TOPIC:
                # Deleted, or never existed: forget it (fetch_metadata reports the code).
                topics.pop(t.name, None)
                self._fetched_at.pop(t.name, None)
                self._topic_errors[t.name] = t.error_code
            else:
                topic = decoded[t.name]
                cached = self._metadata.topics.get(t.name)
                if reliable_epochs and cached is not None:
                    topic = _newest_leaders(cached, topic, brokers)
                topics[t.name] = topic
                self._fetched_at[t.name] = now
                self._topic_errors.pop(t.name, None)
            self._topic_seq[t.name] = seq
        if asked is None:
            for name in list(self._fetched_at):
                if name not in topics:
                    del self._fetched_at[name]
        self._pools.place({node_id: (b.host, b.port) for node_id, b in brokers.items()})
        self._unusable = unusable
        self._metadata = ClusterMetadata(
            brokers=brokers,
            topics=topics,
            controller_id=response.controller_id,
            cluster_id=response.cluster_id,
        )
        if asked is None:
            self._all_seq = seq
        self._success_seq = seq
        self._refreshed_at = now

    async def fetch_metadata(self, topic: str) -> TopicMetadata:
        """Metadata of ``topic``: from the cache when fresh, else refreshed.

        Raises UnknownTopicOrPartitionError when the topic does not exist; retries a
        topic-level retriable error (LEADER_NOT_AVAILABLE while a topic is being
        created) with backoff within request_timeout, then raises it.
        """
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty str, not {topic!r}")
        self._task_group()
        cached = self._metadata.topics.get(topic)
        fetched = self._fetched_at.get(topic)
        if (
            cached is not None
            and not cached.error_code
            # (A topic listed without partitions is asked for again: its partitions
            # are what the caller waits for.)
            and cached.partitions
            and fetched is not None
            and time.monotonic() - fetched < self.options.metadata_max_age
        ):
            return cached
        deadline = anyio.current_time() + self.options.connection.request_timeout
        failures = 0
        while True:
            await self.refresh([topic])
            meta = self._metadata.topics.get(topic)
            if meta is None:
                code = self._topic_errors.get(topic, _UNKNOWN_TOPIC)
            else:
                code = meta.error_code
            if meta is not None and not code:
                return meta
            error = error_for_code(code)
            delay = backoff(self.options.retry_backoff, failures)
            if (
                not error.retriable
                or code == _UNKNOWN_TOPIC
                or (anyio.current_time() + delay > deadline)
            ):
                raise error(f"topic {topic!r}")
            failures += 1
            await anyio.sleep(delay)

    async def leader_for(self, topic: str, partition: int) -> int:
        """Node id of the leader of ``topic``/``partition``."""
        meta = await self.fetch_metadata(topic)
        part = meta.partitions.get(partition)
        if part is None:
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has no partition {partition!r} (it has {meta.partition_count})"
            )
        if part.leader < 0:
            self.request_refresh()
            raise LeaderNotAvailableError(f"{topic!r} partition {partition} has no leader now")
        return part.leader

    def note_error(self, error: KafkaError | type[KafkaError] | int) -> bool:
        """Request a refresh if ``error`` (an exception, its class or a broker error
        code from a response) means the metadata is stale: NOT_LEADER_OR_FOLLOWER,
        UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, a lost connection, ...
        Returns whether it did. Sync and cheap: for the producer's response handling.
        """
        if isinstance(error, int):
            if error == NO_ERROR:
                return False
            stale = error_for_code(error).invalid_metadata
        else:
            stale = error.invalid_metadata
        if stale:
            self.request_refresh()
        return stale

    def request_refresh(self) -> None:
        """Ask the background refresher for a refresh soon (coalesced, with backoff)."""
        if self._refresh_wanted is not None and not self._closed:
            self._refresh_wanted.set()

    async def _refresher(self) -> None:
        failures = 0
        interval = self.options.refresh_interval
        period = (
            min(interval, self.options.metadata_max_age)
            if interval
            else (self.options.metadata_max_age)
        )
        while True:
            assert self._refresh_wanted is not None
            with anyio.move_on_after(period):
                await self._refresh_wanted.wait()
            self._refresh_wanted = anyio.Event()
            if self._closed:
                # aclose() runs (closing the pools) and cancels this task next.
                return
            known = list(self._metadata.topics)
            try:
                await self.refresh(known)
                failures = 0
            except RuntimeError:
                if self._closed:
                    # aclose() began while this refresh ran ("client is closed").
                    return
                raise
            except KafkaError as exc:
                failures += 1
                logger.debug("background metadata refresh failed: %s", exc)
                if not isinstance(exc, (AuthenticationError, TLSError)):
                    self._refresh_wanted.set()
            # Rate limit: requests arriving meanwhile are coalesced into the next one.
            await anyio.sleep(backoff(self.options.retry_backoff, failures))

    async def _reaper(self) -> None:
        period = min(max(self.options.idle_timeout / 2, 0.05), 5.0)
        while True:
            await anyio.sleep(period)
            now = anyio.current_time()
            await self._pools.reap(now)

    # ------------------------------------------------------------------ admin

    async def create_topics(
        self,
        topics: Sequence[str | tuple[str, int]],
        num_partitions: int = 1,
        replication_factor: int = 1,
        configs: Mapping[str, str | int | float | bool] | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - also the broker-side timeout_ms
    ) -> None:
        """Create topics and wait (bounded by ``timeout``) until metadata shows them
        with a leader for every partition.

        ``topics`` holds names (``num_partitions`` each) or ``(name, partitions)``, each
        topic once (a mapping is refused: write ``[("t", 3)]``);
        ``replication_factor=-1`` leaves it to the broker's default. ``configs`` values
        are str, int, float or bool, sent as Kafka reads them (True as "true"). Bad
        arguments raise TypeError/ValueError naming them, before any request. Raises the
        broker's error (TopicAlreadyExistsError, InvalidTopicError, ...) for the first
        topic that failed, ClientRequestTimeoutError when not ready in time.
        """
        await admin.create_topics(
            self, topics, num_partitions, replication_factor, configs, timeout
        )

    async def delete_topics(
        self,
        names: Sequence[str],
        timeout: float = 30.0,  # noqa: ASYNC109 - also the broker-side timeout_ms
    ) -> None:
        """Delete topics and wait (bounded by ``timeout``) until metadata no longer
        lists them. Raises the broker's error (UnknownTopicOrPartitionError, ...) for
        the first topic that failed."""
        await admin.delete_topics(self, names, timeout)

    async def create_partitions(
        self,
        totals: Mapping[str, int],
        timeout: float = 30.0,  # noqa: ASYNC109 - also the broker-side timeout_ms
    ) -> None:
        """Grow topics to ``{topic: total partitions}`` and wait (bounded by
        ``timeout``) until metadata shows every new partition with a leader. Raises the
        broker's error (InvalidPartitionsError when the total is not larger, ...)."""
        await admin.create_partitions(self, totals, timeout)

    async def elect_preferred_leaders(
        self,
        partitions: Mapping[str, Iterable[int]],
        timeout: float = 30.0,  # noqa: ASYNC109 - also the broker-side timeout_ms
    ) -> None:
        """Move the leadership of ``{topic: [partition, ...]}`` back to each partition's
        preferred (first) replica (KIP-460), as ``kafka-leader-election`` does; a
        partition already led by it is not an error. Refreshes their metadata after."""
        await admin.elect_preferred_leaders(self, partitions, timeout)
