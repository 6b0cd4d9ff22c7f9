"""BasicConsumer: offsets, fetches and a follow iterator over one partition or topic.

No consumer group, no committed offsets: the caller says where to read.  Each request
goes to the partition's leader.  A retriable error is retried, with backoff, for up to
``request_timeout``; a sign of stale metadata among them (NOT_LEADER_OR_FOLLOWER, a
leader not yet elected, a lost connection, ...) also refreshes the topic's metadata
first.  Others (OFFSET_NOT_AVAILABLE, a new leader still catching up to its epoch's
start, KIP-207) only wait, as the Java client's offset fetcher does.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, overload

import anyio
import anyio.to_thread

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.cluster.metadata import check_topic
from kafka_asgi.consumer.results import (
    EARLIEST,
    LATEST,
    AbortedTransaction,
    ConsumerRecord,
    FetchResult,
    IsolationLevel,
    select_records,
)
from kafka_asgi.network.config import timeout_ms
from kafka_asgi.protocol.errors import KafkaError, ProtocolError, error_for_code
from kafka_asgi.protocol.framing import MAX_RECORDS_SIZE
from kafka_asgi.protocol.messages.fetch import (
    FetchPartition,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    PartitionData,
)
from kafka_asgi.protocol.messages.list_offsets import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopic,
)
from kafka_asgi.protocol.records import DecodedBatches, decode_batches, first_batch_compressed

__all__ = ["BasicConsumer"]

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_WAIT = 0.5
# Records decoded from one Fetch response at most (decompressed): a compressed batch
# may inflate a thousandfold, and a response of max_bytes holds many.
DEFAULT_MAX_DECODED_BYTES = 64 << 20
_MAX_WAIT_LIMIT = 600.0
_INT32_MAX = (1 << 31) - 1
_ZERO_UUID = uuid.UUID(int=0)
# Fetch v13 (KIP-516) names topics by id; older versions by name.
_FETCH_TOPIC_ID_VERSION = 13
# ListOffsets v0 answers with a list of offsets and has no isolation level; every
# broker since 0.10.1 speaks v1 and Kafka 4 no longer speaks v0.
_LIST_OFFSETS_MIN_VERSION = 1
# Fetch v4 (KIP-98) brings the isolation level, the last stable offset and the
# aborted transactions; Kafka 4 no longer speaks v0-3.
_FETCH_MIN_VERSION = 4
_MAX_BACKOFF = 1.0
# Decoding a Fetch response on the event loop holds every other task there (an
# application's requests) for as long, and a caller's timeout cannot cut it.  Building
# a record costs about 0.7 us (on the benchmark machine, 2026-12-07): 1 ms for about
# 128 KiB of uncompressed log lines, 7 KiB of zstd, 12 of gzip, 24 of lz4 or snappy;
# and a compressed batch of tiny records holds far more per byte (1,000 in 1 KiB of
# zstd or gzip, 1-2 ms).  Responses whose records bytes (as received) reach these
# sizes are decoded on a worker thread; smaller ones, the common fetch of a few
# records, on the loop, which spares them the thread hop.
_OFFLOAD_MIN = 128 * 1024
_OFFLOAD_MIN_COMPRESSED = 1024
# Worker threads decoding at once, per consumer (follow fetches from each leader
# concurrently), counting those whose caller gave up: a decode cannot be stopped
# halfway, and a caller timing out and fetching again, over and over, would
# otherwise start one more each time, each holding up to max_decoded_bytes.
_OFFLOAD_THREADS = 2


class _Retry(Exception):
    """Internal: a retriable partition error (refreshed metadata may cure it when it
    says ``invalid_metadata``; otherwise time may)."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(str(error))
        self.error = error


def _check_partition(partition: object) -> int:
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        raise ValueError(f"partition must be an int >= 0, got {partition!r}")
    if partition > _INT32_MAX:
        raise ValueError(f"partition {partition} does not fit in an int32")
    return partition


def _check_int(name: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an int in [{minimum}, {maximum}], got {value!r}")
    return value


def _partition_error(code: int, topic: str, partition: int) -> KafkaError:
    return error_for_code(code)(f"topic {topic!r} partition {partition}")


def _worth_offloading(partitions: Iterable[PartitionData | None]) -> bool:
    """Whether a Fetch response's partitions hold enough records bytes that decoding
    them belongs on a worker thread (see ``_OFFLOAD_MIN``)."""
    size = 0
    compressed = False
    for data in partitions:
        if data is None or data.error_code or not data.records:
            continue
        size += len(data.records)
        compressed = compressed or first_batch_compressed(data.records)
    return size >= (_OFFLOAD_MIN_COMPRESSED if compressed else _OFFLOAD_MIN)


class BasicConsumer:
    """Read a partition from an offset you choose, without a consumer group.

    ``async with BasicConsumer("127.0.0.1:9092") as consumer: ...``; takes the client
    options of :class:`~kafka_asgi.cluster.client.KafkaClient`, plus
    ``isolation_level`` ("read_uncommitted" or "read_committed": the latter leaves out
    the records of aborted transactions and stops at the last stable offset) and
    ``max_decoded_bytes`` (the records one fetch response may decode to, decompressed,
    each counting ``DECODED_RECORD_OVERHEAD`` more for its objects: the response's
    first batch always is, up to 256 MiB, past which its records are left for the
    next fetch; a batch after it only when its records fit in what is left, else it
    and the rest of its partition are left for the next fetch, from ``next_offset``).
    """

    def __init__(
        self,
        bootstrap: Any,
        *,
        isolation_level: str | IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
        **options: Any,
    ) -> None:
        self._isolation = IsolationLevel.parse(isolation_level)
        self._max_decoded = _check_int("max_decoded_bytes", max_decoded_bytes, 1, 1 << 62)
        self._client = KafkaClient(bootstrap, **options)
        self._request_timeout = self._client.options.connection.request_timeout
        self._retry_backoff = self._client.options.retry_backoff
        self._decode_limiter: anyio.CapacityLimiter | None = None
        self._decoding = threading.BoundedSemaphore(_OFFLOAD_THREADS)

    @property
    def client(self) -> KafkaClient:
        """The cluster client this consumer sends its requests through."""
        return self._client

    @property
    def isolation_level(self) -> IsolationLevel:
        return self._isolation

    @property
    def throttle_time_ms(self) -> int:
        """The throttle time brokers have asked of this consumer in all, in ms (a client
        quota on its client_id or user: KIP-219). Requests to a broker wait that long
        after its answer, as the Java client's do."""
        return self._client.throttles.asked_ms

    async def start(self) -> None:
        await self._client.start()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> BasicConsumer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- leader routing ---------------------------------------------------------

    async def _on_leader(self, topic: str, partition: int, call: Callable[[int], Any]) -> Any:
        """``await call(leader_node_id)``; while the outcome is a retriable error, try
        again, backing off from ``retry_backoff`` up to 1 s, for up to
        ``request_timeout`` in all (as ``follow`` does); then raise the last error.  When
        it says the metadata was stale (a moved leader, one not yet in place on a new
        topic, a lost connection), the metadata is refreshed before the next try."""
        give_up = anyio.current_time() + self._request_timeout
        failures = 0
        while True:
            try:
                leader = await self._client.leader_for(topic, partition)
                return await call(leader)
            except _Retry as retry:
                error = retry.error
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                error = exc
            delay = min(self._retry_backoff * 2**failures, _MAX_BACKOFF)
            failures += 1
            if anyio.current_time() + delay > give_up:
                raise error from None
            await anyio.sleep(delay)
            if not error.invalid_metadata:
                continue
            try:
                await self._client.refresh([topic])
            except KafkaError as exc:
                # Still unreachable (a broker restarting): the next try says so again.
                if not exc.retriable:
                    raise

    # --- ListOffsets -----------------------------------------------------------

    @overload
    async def list_offset(
        self, topic: str, partition: int, timestamp: Literal[-2, -1] = ...
    ) -> int: ...

    @overload
    async def list_offset(self, topic: str, partition: int, timestamp: int) -> int | None: ...

    async def list_offset(
        self, topic: str, partition: int, timestamp: int = EARLIEST
    ) -> int | None:
        """The offset for ``timestamp`` in a partition.

        EARLIEST: the log start offset; LATEST: the end of the log (the high watermark,
        or the last stable offset in read_committed); a timestamp in milliseconds: the
        first offset whose record timestamp is at or after it, or None when no record is
        that recent.
        """
        check_topic(topic)
        _check_partition(partition)
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise ValueError(
                f"timestamp must be EARLIEST, LATEST or milliseconds >= 0, got {timestamp!r}"
            )
        if timestamp < 0 and timestamp not in (EARLIEST, LATEST):
            raise ValueError(
                f"timestamp must be EARLIEST (-2), LATEST (-1) or milliseconds >= 0, "
                f"got {timestamp!r}"
            )
        _check_int("timestamp", timestamp, -2, (1 << 63) - 1)
        request = ListOffsetsRequest(
            replica_id=-1,
            isolation_level=self._isolation.wire_value,
            topics=[
                ListOffsetsTopic(
                    name=topic,
                    partitions=[
                        ListOffsetsPartition(partition_index=partition, timestamp=timestamp)
                    ],
                )
            ],
            timeout_ms=timeout_ms(self._request_timeout),
        )

        async def call(leader: int) -> int:
            response = await self._client.send(
                leader, request, min_version=_LIST_OFFSETS_MIN_VERSION
            )
            assert isinstance(response, ListOffsetsResponse)
            for t in response.topics:
                if t.name != topic:
                    continue
                for p in t.partitions:
                    if p.partition_index != partition:
                        continue
                    if p.error_code:
                        error = _partition_error(p.error_code, topic, partition)
                        if error.retriable:
                            raise _Retry(error)
                        raise error
                    return p.offset
            raise ProtocolError(
                f"ListOffsets response has no partition {partition} of topic {topic!r}"
            )

        offset: int = await self._on_leader(topic, partition, call)
        if offset < 0:
            if timestamp >= 0:
                return None
            raise ProtocolError(
                f"ListOffsets returned offset {offset} for topic {topic!r} "
                f"partition {partition} at timestamp {timestamp}"
            )
        return offset

    # --- Fetch -------------------------------------------------------------------

    def _check_fetch_options(self, max_bytes: int, max_wait: float) -> tuple[int, int]:
        # The answer must fit in one frame the connection accepts.
        _check_int("max_bytes", max_bytes, 1, MAX_RECORDS_SIZE)
        if (
            isinstance(max_wait, bool)
            or not isinstance(max_wait, (int, float))
            or not 0 <= max_wait <= _MAX_WAIT_LIMIT
        ):
            raise ValueError(
                f"max_wait must be between 0 and {_MAX_WAIT_LIMIT} seconds, got {max_wait!r}"
            )
        return max_bytes, int(max_wait * 1000)

    async def _fetch_from(
        self,
        leader: int,
        topic: str,
        positions: dict[int, int],
        *,
        max_bytes: int,
        max_wait_ms: int,
    ) -> dict[int, FetchResult | KafkaError]:
        """One Fetch request for some partitions of ``topic`` led by ``leader``.

        Returns a result or an error per partition (a partition error does not spoil
        the others); raises for errors of the whole request.
        """
        metadata = await self._client.fetch_metadata(topic)
        topic_id = metadata.topic_id
        use_id = topic_id is not None and topic_id != _ZERO_UUID
        request = FetchRequest(
            replica_id=-1,
            max_wait_ms=max_wait_ms,
            min_bytes=1,
            max_bytes=max_bytes,
            isolation_level=self._isolation.wire_value,
            # A full fetch outside any fetch session (KIP-227: id 0, epoch -1).
            session_id=0,
            session_epoch=-1,
            topics=[
                FetchTopic(
                    topic=topic,
                    topic_id=topic_id if use_id and topic_id is not None else _ZERO_UUID,
                    partitions=[
                        FetchPartition(
                            partition=partition,
                            fetch_offset=offset,
                            partition_max_bytes=max_bytes,
                        )
                        for partition, offset in positions.items()
                    ],
                )
            ],
        )
        give_up = anyio.current_time() + self._request_timeout
        while True:
            response = await self._client.send(
                leader,
                request,
                min_version=_FETCH_MIN_VERSION,
                max_version=None if use_id else _FETCH_TOPIC_ID_VERSION - 1,
                # The broker may hold the request for max_wait before it answers.
                request_timeout=self._request_timeout + max_wait_ms / 1000,
                handshake_timeout=self._request_timeout,
            )
            assert isinstance(response, FetchResponse)
            if response.error_code:
                raise error_for_code(response.error_code)(f"fetch from topic {topic!r}")
            if not (response.throttle_time_ms > 0 and not response.responses):
                break
            # Over a quota, the broker answers with no partitions at all (KIP-219):
            # asked again once the pause is over (the client waits it out), for up to
            # request_timeout.
            if anyio.current_time() >= give_up:
                raise KafkaError(
                    f"fetch from topic {topic!r}: broker {leader} throttled every fetch"
                    f" for request_timeout ({self._request_timeout} s; a client quota)"
                )
        found: dict[int, PartitionData] = {}
        for t in response.responses:
            if t.topic == topic or (use_id and t.topic_id == topic_id):
                for p in t.partitions:
                    found[p.partition_index] = p
        if not _worth_offloading(found.get(partition) for partition in positions):
            return self._results(topic, positions, found)
        limiter = self._decode_limiter
        if limiter is None:
            limiter = self._decode_limiter = anyio.CapacityLimiter(_OFFLOAD_THREADS)
        abandoned = threading.Event()

        def decode() -> dict[int, FetchResult | KafkaError]:
            # On asyncio the limiter's token goes back when the caller gives up, the
            # thread still running (trio keeps it): the semaphore is held until the
            # decode is done, on both.
            with self._decoding:
                if abandoned.is_set():
                    return {}
                return self._results(topic, positions, found)

        # Cancelled (a caller's timeout), the thread's results are dropped, and one not
        # yet decoding does not begin: the caller fetches again from the same offsets,
        # so nothing is lost or skipped.
        try:
            results: dict[int, FetchResult | KafkaError] = await anyio.to_thread.run_sync(
                decode, limiter=limiter, abandon_on_cancel=True
            )
        except BaseException:
            abandoned.set()
            raise
        return results

    def _results(
        self, topic: str, positions: dict[int, int], found: dict[int, PartitionData]
    ) -> dict[int, FetchResult | KafkaError]:
        """Decode the partitions of a Fetch response (``found``): a result or an error
        for each of ``positions``.  Pure CPU work, on the loop or a worker thread."""
        results: dict[int, FetchResult | KafkaError] = {}
        # One budget for the whole response: only its first batch may cost more than
        # what is left of it; a partition's batches past that decode nothing this time
        # (its next offset stays before them).
        budget = [self._max_decoded]
        for partition, offset in positions.items():
            data = found.get(partition)
            if data is None:
                results[partition] = ProtocolError(
                    f"Fetch response has no partition {partition} of topic {topic!r}"
                )
            elif data.error_code:
                results[partition] = _partition_error(data.error_code, topic, partition)
            else:
                try:
                    results[partition] = self._result(topic, partition, offset, data, budget)
                except ProtocolError as exc:
                    # This partition's bytes are bad: the others' records stand.
                    results[partition] = exc
        return results

    def _result(
        self, topic: str, partition: int, offset: int, data: PartitionData, budget: list[int]
    ) -> FetchResult:
        raw = data.records or b""
        if raw and budget[0] <= 0:
            batches = DecodedBatches()
            batches.limited = True
        else:
            batches = decode_batches(
                raw,
                max_total_size=budget[0],
                fetch_offset=offset,
                # Once an earlier partition has spent some of the budget, this one's
                # first batch is no longer the response's first.
                always_decode_first=budget[0] == self._max_decoded,
            )
            budget[0] -= batches.size
        aborted = tuple(
            AbortedTransaction(t.producer_id, t.first_offset)
            for t in data.aborted_transactions or ()
        )
        records, next_offset = select_records(
            topic,
            partition,
            batches,
            offset,
            read_committed=self._isolation is IsolationLevel.READ_COMMITTED,
            aborted_transactions=aborted,
        )
        if raw and not batches and not batches.skipped and not batches.limited:
            # Since KIP-74 (Fetch v3) the broker returns the first batch whole even when
            # it exceeds max_bytes, so bytes without one complete batch cannot progress.
            raise ProtocolError(
                f"topic {topic!r} partition {partition} offset {offset}: the fetch returned "
                f"{len(raw)} bytes without a complete record batch"
            )
        if raw and next_offset <= offset and (batches or not batches.limited):
            # Batches that all end before the offset (a broker returning old data): the
            # next fetch would ask for the same offset and get the same, for ever. Only a
            # partition left out for the budget may stay (it comes first another time).
            raise ProtocolError(
                f"topic {topic!r} partition {partition} offset {offset}: the fetch returned "
                f"{len(raw)} bytes of record batches that all end before that offset"
            )
        return FetchResult(
            topic=topic,
            partition=partition,
            records=records,
            next_offset=next_offset,
            high_watermark=data.high_watermark,
            last_stable_offset=data.last_stable_offset,
            log_start_offset=data.log_start_offset,
            aborted_transactions=aborted,
            truncated=batches.truncated or batches.limited,
        )

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> FetchResult:
        """Fetch records of a partition from ``offset`` (or EARLIEST / LATEST).

        Waits up to ``max_wait`` seconds for at least one byte; returns at most about
        ``max_bytes`` of batches (more when the first batch alone is larger, KIP-74).
        Raises OffsetOutOfRangeError when ``offset`` is outside the log,
        UnknownTopicOrPartitionError for a topic or partition that does not exist, and
        ProtocolError, naming the offset, when the broker returns bytes from which no
        fetch could move on (no complete batch, or only batches ending before it).
        """
        check_topic(topic)
        _check_partition(partition)
        _check_int("offset", offset, -2, (1 << 63) - 1)
        max_bytes, max_wait_ms = self._check_fetch_options(max_bytes, max_wait)
        if offset < 0:
            offset = await self.list_offset(
                topic, partition, EARLIEST if offset == EARLIEST else LATEST
            )

        async def call(leader: int) -> FetchResult:
            results = await self._fetch_from(
                leader, topic, {partition: offset}, max_bytes=max_bytes, max_wait_ms=max_wait_ms
            )
            result = results[partition]
            if isinstance(result, KafkaError):
                if result.retriable:
                    raise _Retry(result)
                raise result
            return result

        result: FetchResult = await self._on_leader(topic, partition, call)
        return result

    # --- follow -----------------------------------------------------------------

    async def _partitions_of(self, topic: str) -> list[int]:
        metadata = await self._client.fetch_metadata(topic)
        return sorted(metadata.partitions)

    async def follow(
        self,
        topic: str,
        partition: int | Sequence[int] | None = None,
        *,
        offset: int = EARLIEST,
        stop_at_end: bool = False,
        max_records: int | None = None,
        stop: Callable[[ConsumerRecord], bool] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> AsyncIterator[ConsumerRecord]:
        """Yield the records of a partition (or several, or all partitions of the topic
        when ``partition`` is None) from ``offset``: an offset, EARLIEST or LATEST,
        applied to every partition followed.

        Without a stop condition it follows for ever (wrap it in a timeout).  Stops:
        ``stop_at_end`` at the end of each partition's log as it was when following
        began; ``max_records`` after that many records; ``stop(record)`` after the first
        record for which it returns True.  Records of one partition come in offset
        order; partitions are interleaved batch by batch.  Partitions added to the
        topic later are not followed.  A leader moving or a broker restarting is
        retried (refreshing metadata, with backoff) for up to ``request_timeout``.
        """
        check_topic(topic)
        _check_int("offset", offset, -2, (1 << 63) - 1)
        if max_records is not None:
            _check_int("max_records", max_records, 1, 1 << 63)
        max_bytes, max_wait_ms = self._check_fetch_options(max_bytes, max_wait)
        if partition is None:
            partitions = await self._partitions_of(topic)
        elif isinstance(partition, int):
            partitions = [_check_partition(partition)]
        else:
            partitions = [_check_partition(p) for p in partition]
            if not partitions or len(set(partitions)) != len(partitions):
                raise ValueError(f"partition must list distinct partitions, got {partition!r}")

        positions: dict[int, int] = {}
        for p in partitions:
            if offset >= 0:
                positions[p] = offset
            else:
                positions[p] = await self.list_offset(
                    topic, p, EARLIEST if offset == EARLIEST else LATEST
                )
        ends: dict[int, int] = {}
        if stop_at_end:
            for p in partitions:
                ends[p] = await self.list_offset(topic, p, LATEST)

        yielded = 0
        failures = 0
        failing_since = 0.0
        rotation = 0
        while True:
            active = [p for p in partitions if not stop_at_end or positions[p] < ends[p]]
            if not active:
                return
            # Rotate the order: a broker fills a response in request order, and a busy
            # first partition must not starve the others.
            rotation = (rotation + 1) % len(active)
            active = active[rotation:] + active[:rotation]
            results, error = await self._fetch_round(
                topic, {p: positions[p] for p in active}, max_bytes, max_wait_ms
            )
            for result in results:
                positions[result.partition] = result.next_offset
                for record in result.records:
                    if stop_at_end and record.offset >= ends[record.partition]:
                        break
                    yield record
                    yielded += 1
                    if max_records is not None and yielded >= max_records:
                        return
                    if stop is not None and stop(record):
                        return
            if error is None:
                failures = 0
                continue
            now = anyio.current_time()
            if failures == 0:
                failing_since = now
            failures += 1
            # Retriable failures (a leader moving, a broker restarting) are retried
            # with backoff for up to request_timeout, then raised.
            if not error.retriable or now - failing_since > self._request_timeout:
                raise error
            await anyio.sleep(min(self._retry_backoff * 2 ** min(failures, 10), _MAX_BACKOFF))
            if not error.invalid_metadata:
                continue
            try:
                await self._client.refresh([topic])
            except KafkaError as exc:
                # Still unreachable (a broker restarting): the next round tries again,
                # and counts as one more failure.
                if not exc.retriable:
                    raise

    async def _fetch_round(
        self, topic: str, positions: dict[int, int], max_bytes: int, max_wait_ms: int
    ) -> tuple[list[FetchResult], KafkaError | None]:
        """Fetch ``positions`` from their leaders, one request per leader, concurrently.

        Returns the results in the order of ``positions`` and the first error, if any
        (the results of the partitions that succeeded are kept either way).
        """
        by_leader: dict[int, dict[int, int]] = {}
        first_error: KafkaError | None = None
        for partition, offset in positions.items():
            try:
                leader = await self._client.leader_for(topic, partition)
            except KafkaError as exc:
                first_error = first_error or exc
                continue
            by_leader.setdefault(leader, {})[partition] = offset
        outcomes: dict[int, FetchResult | KafkaError] = {}

        async def fetch_leader(leader: int, part: dict[int, int]) -> None:
            try:
                outcomes.update(
                    await self._fetch_from(
                        leader, topic, part, max_bytes=max_bytes, max_wait_ms=max_wait_ms
                    )
                )
            except KafkaError as exc:
                for p in part:
                    outcomes[p] = exc

        if len(by_leader) == 1:
            ((leader, part),) = by_leader.items()
            await fetch_leader(leader, part)
        else:
            async with anyio.create_task_group() as tg:
                for leader, part in by_leader.items():
                    tg.start_soon(fetch_leader, leader, part)
        results: list[FetchResult] = []
        for partition in positions:
            outcome = outcomes.get(partition)
            if isinstance(outcome, FetchResult):
                results.append(outcome)
            elif isinstance(outcome, KafkaError):
                first_error = first_error or outcome
        return results, first_error
