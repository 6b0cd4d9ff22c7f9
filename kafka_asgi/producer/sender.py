"""The sender: ready batches to Produce requests, their responses, retries; and
the metadata request for a topic's first records (``_fetch_topic``).

The flusher (producer.py) places records on partitions and calls ``_dispatch``,
which takes each partition's next batch (a partition has at most one in flight,
so retries never reorder its records), groups them by leader and sends one
ProduceRequest per broker, up to ``max_in_flight`` outstanding per broker.  Each
request runs in its own task (``_request``); its response completes the batches,
or schedules their retry after ``retry_backoff`` (within ``max_retry``), or
reports them.  While no broker can be reached, batches wait (``_stalled``) up to
``delivery_timeout`` without using up ``max_retry``.  A slow codec's large batch is
compressed on a worker thread first (``_held_for_compression``), its partition's next
batches behind it, in order; theirs are compressed meanwhile (two workers, at most
``max_in_flight`` batches of a partition ahead).
"""

from __future__ import annotations

import logging
import math
from typing import Any, TypeAlias

import anyio
import anyio.to_thread

from kafka_asgi.network.errors import ClientRequestTimeoutError, ConnectError, NetworkError
from kafka_asgi.protocol.compression import Compression, compress
from kafka_asgi.protocol.errors import (
    NO_ERROR,
    BrokerNotAvailableError,
    FencedLeaderEpochError,
    KafkaError,
    LeaderNotAvailableError,
    MessageTooLargeError,
    NotLeaderOrFollowerError,
    ProtocolError,
    RecordListTooLargeError,
    UnknownTopicOrPartitionError,
    error_for_code,
)
from kafka_asgi.protocol.messages import ProduceRequest, ProduceResponse
from kafka_asgi.protocol.messages.produce import (
    PartitionProduceData,
    PartitionProduceResponse,
    TopicProduceData,
)
from kafka_asgi.protocol.records import (
    assemble_batch,
    encode_batch_columns,
    encode_records_section,
)

from .accumulator import Batch, PartitionBuffer, TopicBuffer, cut_moving_on
from .errors import DeliveryTimeoutError
from .hooks import ProducedPartition, ProduceRequestInfo, ProducerHooks, call_hook
from .idempotence import DUPLICATE_SEQUENCE, PRODUCER_STATE_CODES, SEQ_MASK
from .state import STALL_BACKOFF_CAP, STALL_BACKOFF_MIN, ProducerState, unreachable

__all__ = ["Sender", "offload_threshold"]

logger = logging.getLogger("kafka_asgi.producer")

_INF = math.inf
# Compressing a large batch with a slow codec on the event loop would hold every
# other task there (an application's requests) for as long: gzip takes about 50 ms
# per MiB of log lines on the benchmark machine, zstd about 5.  Their batches from
# these sizes (before compression) are compressed on worker threads (zlib and
# cramjam's zstd release the GIL while they work); the records section is written
# before and the header after, on the loop.  lz4 (its fast levels) and snappy take
# 1-3 ms per MiB and stay on the loop: on the workers, lz4 cost a fifth more CPU per
# record, in handing the GIL back and forth, for a few percent more throughput
# (README, "Idempotent pipelining and 1 KiB records").  LZ4HC's frame compressor
# holds the GIL, so a worker would not help.
_OFFLOAD_MIN = {Compression.GZIP: 16 * 1024, Compression.ZSTD: 256 * 1024}
# Worker threads compressing at once, per producer.  A worker that finishes waits
# for the GIL (up to the interpreter's switch interval, 5 ms, while the loop runs
# Python) to hand its result back; a second one compresses meanwhile.
_OFFLOAD_THREADS = 2


def offload_threshold(codec: Compression) -> int | None:
    """The size (before compression) from which ``codec``'s batches are compressed
    on a worker thread; None: always on the event loop."""
    return _OFFLOAD_MIN.get(codec)


# Records waiting this long for a broker or a leader (an outage, a failover taking
# its time) are told in a WARNING, at most one per _WAITING_LOG_EVERY seconds: an
# outage is visible in the logs before delivery_timeout reports anything.
_WAITING_LOG_AFTER = 5.0
_WAITING_LOG_EVERY = 10.0

# Produce v3 is the first to carry magic-2 record batches (KIP-98).
_PRODUCE_MIN_VERSION = 3
# The hooks installed when a Produce request began, what they were told, their token.
Probe: TypeAlias = "tuple[ProducerHooks, ProduceRequestInfo, Any]"
# Codes whose meaning is "the broker may have written the batch" (the leader
# appended it, then waiting for the replicas failed).  Retried within max_retry
# as the connection lost with a request in flight is (at-least-once, as the Java
# client): without idempotence such a retry may store the batch twice.
_MAYBE_WRITTEN_CODES = frozenset({7, 20})  # REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND
_TOO_LARGE_CODES = frozenset({MessageTooLargeError.code, RecordListTooLargeError.code})
# The broker refused the batch because it does not lead the partition (any more, or
# yet): nothing was written. Like an unreachable broker, this waits for the new
# leader (metadata refreshed at once) up to delivery_timeout, without using up
# max_retry: a failover takes as long as the cluster needs to notice the dead broker
# (broker.session.timeout.ms), and a handful of quick retries would give up before.
_TOPIC_UNKNOWN = -2
_LEADER_MOVED_CODES = frozenset(
    {LeaderNotAvailableError.code, NotLeaderOrFollowerError.code, FencedLeaderEpochError.code}
)


class Sender(ProducerState):
    """Produce requests for the ready batches, and what their outcomes lead to."""

    def _dispatch(self, now: float, force: bool) -> None:
        """Send the ready batches: one request per leader, within max_in_flight."""
        # Per leader, rounds: round k holds the k-th batch taken of each partition
        # (a Produce request carries a partition once; round k goes before k + 1).
        by_node: dict[int, list[list[Batch]]] = {}
        retry_at = _INF
        batch_num = self._batch_num
        batch_size = self._batch_size
        limit = self._part_limit
        idempotent = self._idempotent
        gen = self._pid_gen
        offload = self._offload_min is not None
        throttled = self._client.throttles.paused
        if throttled:
            for node, until in list(throttled.items()):
                if until <= now:
                    del throttled[node]
        for p in list(self._active):
            if force and p.pending and p.batches:
                # Cut records behind a batch still in flight or waiting to be
                # retried: a batch's age (delivery_timeout) counts from its cut, so
                # records must not sit uncut through a long outage.
                cut_moving_on(p)
            inflight = p.inflight
            if inflight >= limit:
                continue
            if throttled:
                paused = throttled.get(self._leader(p))
                if paused is not None:
                    # Its leader asked for a pause (a quota): nothing goes to it before.
                    if paused < retry_at:
                        retry_at = paused
                    continue
            picked: list[Batch] = []
            batches = p.batches
            i = 0
            # Batches from the first one still compressing on a worker: they wait
            # behind it (their compressions started meanwhile), counted as out.
            behind = 0
            while inflight + len(picked) + behind < limit:
                out = inflight + len(picked) + behind
                n = len(batches)
                while i < n and batches[i].inflight:
                    i += 1
                if i < n:
                    b = batches[i]
                    if b.not_before > now:
                        if b.not_before < retry_at:
                            retry_at = b.not_before
                        break
                    if idempotent and not self._may_send(p, b, out, gen, now):
                        if self._refused_expired(b, now):
                            continue  # reported: the next batch takes its place
                        deadline = b.born + self._delivery_timeout
                        if deadline < retry_at:
                            retry_at = deadline
                        break
                elif p.pending and (force or len(p.pending) >= batch_num or p.nbytes >= batch_size):
                    if idempotent and not self._may_send_new(p, out, gen, now):
                        break
                    b = cut_moving_on(p)
                else:
                    break
                i += 1
                held = offload and self._held_for_compression(b)
                if held or behind:
                    behind += 1
                else:
                    picked.append(b)
            if not picked:
                if not batches and not p.pending:
                    self._active.discard(p)
                continue
            b = picked[0]
            leader = self._leader(p)
            if leader == _TOPIC_UNKNOWN:
                # Deleted (or its metadata in error): retried within max_retry, then
                # reported, naming the topic.
                self._client.request_refresh()
                self._attempt_failed(
                    b,
                    UnknownTopicOrPartitionError(
                        f"topic {p.topic.name!r} is not in the cluster metadata (deleted?)"
                    ),
                    False,
                )
                if not b.done and b.not_before < retry_at:
                    retry_at = b.not_before
                continue
            if leader < 0:
                # An election in progress: wait for its outcome (see _LEADER_MOVED_CODES).
                self._client.request_refresh()
                self._attempt_failed(
                    b,
                    LeaderNotAvailableError(
                        f"no leader known for {p.topic.name!r} partition {p.index}"
                    ),
                    False,
                    unreachable=True,
                )
                if not b.done and b.not_before < retry_at:
                    retry_at = b.not_before
                continue
            rounds = by_node.get(leader)
            if rounds is None:
                rounds = by_node[leader] = []
            for k, b in enumerate(picked):
                if k < len(rounds):
                    rounds[k].append(b)
                else:
                    rounds.append([b])
        self._retry_at = retry_at
        if not by_node:
            return
        if idempotent and self._pid < 0:
            error = self._pid_error
            if error is not None:
                # A retriable InitProducerId failure (COORDINATOR_LOAD_IN_PROGRESS while
                # a broker takes over, no broker reachable, ...) wrote nothing: wait
                # for the id up to delivery_timeout rather than use up max_retry.
                stalled = unreachable(error) or error.retriable
                for rounds in by_node.values():
                    for b in rounds[0]:
                        self._attempt_failed(b, error, False, unreachable=stalled)
            else:
                # InitProducerId not answered yet: it may take up to twice
                # request_timeout, longer than the records may wait (their batches
                # are not in flight: failed as _stalled fails them).
                self._expire_unsent(by_node, now)
            return
        for node, rounds in by_node.items():
            self._send_to(node, rounds)

    def _expire_unsent(self, by_node: dict[int, list[list[Batch]]], now: float) -> None:
        """Report the batches taken for sending past their delivery_timeout, and wake
        at the next one's deadline (they wait for the producer id)."""
        for rounds in by_node.values():
            for batches in rounds:
                for b in batches:
                    deadline = b.born + self._delivery_timeout
                    if now >= deadline:
                        self._expire(b, "no producer id: InitProducerId not answered")
                    elif deadline < self._retry_at:
                        self._retry_at = deadline

    def _expire(self, b: Batch, why: str) -> None:
        """Report ``b`` as not delivered within delivery_timeout (``why``: what held it)."""
        expired = DeliveryTimeoutError(
            f"not delivered within delivery_timeout={self._delivery_timeout}s ({why})"
        )
        self._fail_batch(b, expired, not b.maybe_written)

    def _refused_expired(self, b: Batch, now: float) -> bool:
        """``b``, which its partition's sequence state keeps from going, has passed
        its delivery_timeout: reported (True).  A batch held back that way gets no
        failed try to expire it (a split batch's half can wait for batches sent
        under an earlier producer id while those wait behind it), and must not wait
        for ever."""
        if now < b.born + self._delivery_timeout:
            return False
        self._expire(b, "held back to keep the partition's sequence numbers in order")
        return True

    def _may_send(self, p: PartitionBuffer, b: Batch, out: int, gen: int, now: float) -> bool:
        """With idempotence, may ``b`` (``p``'s first batch not in flight) go while
        ``out`` batches of ``p`` are in flight or taken?"""
        if p.probing:
            return False  # the leader is asked how far it has this partition
        if b.sent and b.pid_gen == p.pid_gen:
            # A retry keeps its sequence number: it goes alone, at the head of its
            # partition (Java: only once it is the first in flight), so the batches
            # after it, refused as out of order, follow it in order.
            return out == 0
        return self._may_send_new(p, out, gen, now)

    def _leader(self, p: PartitionBuffer) -> int:
        """The partition's leader, -1 while it has none, _TOPIC_UNKNOWN when the
        topic is not (or no longer) in the metadata."""
        meta = self._client.cached_topic(p.topic.name)
        if meta is None:
            return _TOPIC_UNKNOWN
        pm = meta.partitions.get(p.index)
        return -1 if pm is None else pm.leader

    def _send_to(self, node: int, rounds: list[list[Batch]]) -> None:
        """Start Produce requests to ``node`` for ``rounds`` (as slots allow)."""
        slots = self.options.max_in_flight - self._node_inflight.get(node, 0)
        limit = self._max_request_size
        # Partitions whose batch was split or failed here: their later batches
        # wait for the next pass (the second half goes first).
        held: set[PartitionBuffer] | None = None
        for batches in rounds:
            i = 0
            n = len(batches)
            while i < n and slots > 0:
                request_batches: list[Batch] = []
                size = 0
                while i < n:
                    original = batches[i]
                    if held is not None and original.part in held:
                        i += 1
                        continue
                    b = self._encode(original)
                    if b is not original:
                        if held is None:
                            held = set()
                        held.add(original.part)
                    if b is None:
                        i += 1
                        continue
                    batches[i] = b  # the first half, if it was split
                    assert b.data is not None
                    if request_batches and size + len(b.data) > limit:
                        break
                    request_batches.append(b)
                    size += len(b.data)
                    i += 1
                if not request_batches:
                    break
                slots -= 1
                self._start_request(node, request_batches)
            if slots <= 0:
                return

    def _encode(self, b: Batch) -> Batch | None:
        """Encode (and for idempotence stamp) ``b``; the batch to send in its place
        (its first half when it had to be split), or None if it failed."""
        try:
            if self._idempotent:
                self._stamp(b)
            if b.data is None and b.zbody is not None:
                # Compressed on a worker thread: the header around it, stamped now.
                section, base_ts, max_delta = b.zbody
                b.zbody = None
                b.data = assemble_batch(
                    section,
                    len(b.values),
                    base_ts,
                    max_delta,
                    compression=self._codec,
                    compressed=True,
                    producer_id=self._pid,
                    producer_epoch=self._pid_epoch,
                    base_sequence=b.base_seq,
                )
            elif b.data is None:
                # Without idempotence the producer id, epoch and sequence stay -1.
                b.data = encode_batch_columns(
                    b.values,
                    b.stamps,
                    b.keys,
                    b.headers,
                    compression=self._codec,
                    compression_level=self._level,
                    producer_id=self._pid,
                    producer_epoch=self._pid_epoch,
                    base_sequence=b.base_seq,
                )
        except KafkaError as exc:
            self._fail_batch(b, exc, False)
            return None
        except (TypeError, ValueError) as exc:
            self._fail_batch(b, KafkaError(f"cannot encode the batch: {exc}"), False)
            return None
        except Exception as exc:
            # A codec's own failure (cramjam's CompressionError, MemoryError): the
            # batch is reported, as on the worker thread; raised, it would escape
            # flush() and aclose() and leave the batch to be tried again forever.
            self._fail_batch(b, KafkaError(f"cannot encode the batch: {exc!r}"), False)
            return None
        if len(b.data) > self._max_request_size and len(b.values) > 1:
            # The size estimate was short (records of very different sizes).
            return self._encode(self._split(b))
        return b

    def _encode_ahead(self) -> None:
        """Encode the next batch of partitions in flight, while the broker works
        (a partition with one batch in flight at a time)."""
        if self._part_limit > 1 or (self._idempotent and self._pid < 0):
            return
        offload = self._offload_min is not None
        ahead = self.options.max_in_flight
        for p in list(self._active):
            if p.inflight and len(p.batches) > 1:
                b = p.batches[1]
                if offload:
                    # The next one first (the workers take them in order), then
                    # the ones after it (at most max_in_flight).
                    held = self._held_for_compression(b)
                    for k in range(2, min(len(p.batches), 1 + ahead)):
                        self._held_for_compression(p.batches[k])
                    if held:
                        continue  # compressed meanwhile on a worker thread
                if self._idempotent:
                    # Stamped ahead only under the producer id and epoch its
                    # partition uses (moving on waits until nothing is out).
                    if p.pid_gen == self._pid_gen and b.pid_gen != p.pid_gen:
                        self._encode(b)
                elif b.data is None:
                    self._encode(b)

    def _held_for_compression(self, b: Batch) -> bool:
        """Must ``b`` (a batch of its partition not in flight) wait for its
        compression on a worker thread?  Starts it when it is due."""
        if b.zbusy:
            return True
        least = self._offload_min
        if b.data is not None or b.zbody is not None or least is None or b.nbytes < least:
            return False
        tg = self._tg
        if tg is None:
            return False
        section = encode_records_section(b.values, b.stamps, b.keys, b.headers)
        if section is None:
            return False  # unusual records: encoded on the loop, which names a fault
        b.zbusy = True
        self._zqueue.append((b, section))
        if self._zworkers < _OFFLOAD_THREADS:
            self._zworkers += 1
            tg.start_soon(self._compress_off_loop)
        return True

    async def _compress_off_loop(self) -> None:
        """Compress the queued batches' records sections on a worker thread, in the
        order they were queued (``_OFFLOAD_THREADS`` of these at a time per
        producer), letting the flusher send each."""
        queue = self._zqueue
        try:
            while queue:
                b, section = queue.popleft()
                try:
                    if not b.done:  # not failed meanwhile
                        await self._compress_one(b, section)
                finally:
                    b.zbusy = False
        except anyio.get_cancelled_exc_class() as exc:
            if not self._stray_cancellation(exc, "a compression task"):
                raise
            # The batch is compressed again (on the loop or here) by the next cycle.
            self._wake()
        finally:
            self._zworkers -= 1
            if not self._zworkers:
                # Cancelled (the producer closing) with batches still queued: they
                # are no longer being compressed, so no one waits for them.
                while queue:
                    queue.popleft()[0].zbusy = False

    async def _compress_one(self, b: Batch, section: tuple[bytes, int, int]) -> None:
        """Compress ``b``'s records section on a worker thread; a failure is reported."""
        body, base_ts, max_delta = section
        limiter = self._zlimiter
        if limiter is None:
            limiter = self._zlimiter = anyio.CapacityLimiter(_OFFLOAD_THREADS)
        try:
            packed = await anyio.to_thread.run_sync(
                compress, self._codec, body, self._level, limiter=limiter, abandon_on_cancel=True
            )
        except Exception as exc:
            b.zbusy = False  # before the report: a callback may flush
            if not b.done:
                self._fail_batch(b, KafkaError(f"cannot compress the batch: {exc!r}"), False)
                self._wake()
            return
        b.zbusy = False
        if not b.done:
            b.zbody = (packed, base_ts, max_delta)
            self._wake()

    def _split(self, b: Batch) -> Batch:
        """Replace ``b`` (not in flight) by its two halves; the first half."""
        p = b.part
        index = p.batches.index(b)
        del p.batches[index]
        n = len(b.values)
        half = n // 2
        first = b.slice(0, half, b.nbytes // 2)
        second = b.slice(half, n, b.nbytes - b.nbytes // 2)
        if b.base_seq >= 0:
            # The halves take over b's sequence numbers, in order (as Java's client
            # splits a batch): the broker wrote none of b, and the batches after it
            # keep theirs, so no gap opens, whichever of them are out, and no epoch
            # is bumped (an earlier batch's retry keeps its numbers, deduplicated).
            first.base_seq, first.pid_gen = b.base_seq, b.pid_gen
            second.base_seq, second.pid_gen = (b.base_seq + half) & SEQ_MASK, b.pid_gen
        if b.waiters:
            first.waiters = [(i, d) for i, d in b.waiters if i < half] or None
            second.waiters = [(i - half, d) for i, d in b.waiters if i >= half] or None
        for half_batch in (first, second):
            half_batch.attempts = b.attempts
            half_batch.behind_disk = b.behind_disk
            half_batch.maybe_written = b.maybe_written
            half_batch.born = b.born
            half_batch.stalls = b.stalls
        p.batches.insert(index, second)
        p.batches.insert(index, first)
        b.done = True
        b.halves = (first, second)
        return first

    def _start_request(self, node: int, batches: list[Batch]) -> None:
        topics: dict[str, list[PartitionProduceData]] = {}
        count = 0
        for b in batches:
            p = b.part
            p.inflight += 1
            b.inflight = True
            b.sent = True
            count += len(b.values)
            parts = topics.get(p.topic.name)
            if parts is None:
                parts = topics[p.topic.name] = []
            parts.append(PartitionProduceData(index=p.index, records=b.data))
        request = ProduceRequest(
            transactional_id=None,
            acks=self._acks,
            timeout_ms=self._timeout_ms,
            topic_data=[TopicProduceData(name=n, partition_data=d) for n, d in topics.items()],
        )
        self._node_inflight[node] = self._node_inflight.get(node, 0) + 1
        self._inflight_records += count
        probe: Probe | None = None
        hooks = self._hooks
        if hooks is not None:
            info = ProduceRequestInfo(
                node,
                [
                    ProducedPartition(b.part.topic.name, b.part.index, len(b.values), len(b.data))
                    for b in batches
                    if b.data is not None
                ],
            )
            probe = (hooks, info, call_hook(hooks.request_started, info))
        assert self._tg is not None
        gate: tuple[anyio.Event | None, anyio.Event] | None = None
        if self._part_limit > 1:
            # Several batches of a partition may be in flight: the requests must
            # reach the connection in the order they were made (a scheduler may run
            # the tasks started together in another order: trio does).
            mine = anyio.Event()
            gate = (self._node_gate.get(node), mine)
            self._node_gate[node] = mine
        self._tg.start_soon(self._request, node, batches, request, count, probe, gate)

    async def _request(
        self,
        node: int,
        batches: list[Batch],
        request: ProduceRequest,
        count: int,
        probe: Probe | None = None,
        gate: tuple[anyio.Event | None, anyio.Event] | None = None,
    ) -> None:
        try:
            try:
                if gate is not None:
                    before, mine = gate
                    try:
                        if before is not None and not before.is_set():
                            # Set by the request before this one as it starts to
                            # send (or ends): bounded by that task's first step.
                            await before.wait()
                    finally:
                        # The next request may go once this one reaches the
                        # connection (this task runs on until it waits there).
                        mine.set()
                response = await self._send_request(node, request, probe)
            except ConnectError as exc:
                # Never connected: nothing was written.
                self._settle(batches, count, node)
                for b in batches:
                    self._attempt_failed(b, exc, False, unreachable=unreachable(exc))
            except (NetworkError, ProtocolError) as exc:
                # The connection broke, or the answer was late or unreadable, after
                # the request may have been written.
                self._settle(batches, count, node)
                for b in batches:
                    self._attempt_failed(b, exc, True)
            except KafkaError as exc:
                # Raised before anything was written: no common API version, a node
                # the metadata no longer has (stale: refresh and retry), ...
                self._settle(batches, count, node)
                stale = isinstance(exc, BrokerNotAvailableError)
                if stale:
                    # The leader's node left the metadata: wait for the new leader.
                    self._client.request_refresh()
                for b in batches:
                    self._attempt_failed(b, exc, False, unreachable=stale)
            except Exception as exc:
                logger.exception("kafka_asgi producer: unexpected error sending to node %d", node)
                self._settle(batches, count, node)
                for b in batches:
                    error = KafkaError(f"unexpected error sending to node {node}: {exc!r}")
                    self._attempt_failed(b, error, True)
            except anyio.get_cancelled_exc_class() as exc:
                if not self._stray_cancellation(exc, f"a Produce request to node {node}"):
                    raise  # the producer is closing: _abort_all reports the batches
                # The request may have been written: its batches are tried again.
                self._settle(batches, count, node)
                for b in batches:
                    error = KafkaError(f"Produce request to node {node} cancelled: {exc!r}")
                    self._attempt_failed(b, error, True, retriable=True)
            else:
                self._settle(batches, count, node)
                if response is None:
                    for b in batches:
                        self._complete(b, -1, -1)
                else:
                    self._handle_response(response, batches)
        finally:
            self._wake()

    async def _send_request(
        self,
        node: int,
        request: ProduceRequest,
        probe: Probe | None,
    ) -> ProduceResponse | None:
        """The Produce request's round trip, told to the hooks installed when it began."""
        try:
            # (a throttled broker's pause, a client quota, is waited out in there)
            response: ProduceResponse | None = await self._client.send_built(
                node,
                ProduceRequest.API_KEY,
                lambda _: request,
                min_version=_PRODUCE_MIN_VERSION,
                expect_response=self._acks != 0,
                request_timeout=self._request_wait,
                # (the broker's own ack timeout plus a margin: a new connection's
                # handshake has no reason to take longer than request_timeout)
                handshake_timeout=self.options.request_timeout,
            )
        except BaseException as exc:
            if probe is not None:
                call_hook(probe[0].request_finished, probe[2], probe[1], exc)
            raise
        if probe is None:
            return response
        hooks, info, token = probe
        if response is not None:
            answers = {
                (t.name, part.index): part
                for t in response.responses
                for part in t.partition_responses
            }
            parts = []
            for p in info.partitions:
                a = answers.get((p.topic, p.partition))
                if a is not None:
                    p = p._replace(base_offset=a.base_offset, error_code=a.error_code)
                parts.append(p)
            info = info._replace(partitions=parts, throttle_time_ms=response.throttle_time_ms)
        call_hook(hooks.request_finished, token, info, None)
        return response

    def _settle(self, batches: list[Batch], count: int, node: int) -> None:
        """The request is over: its partitions and node slot are free again."""
        left = self._node_inflight.get(node)
        if left is not None:  # (None once _abort_all cleared the counts: closed)
            self._node_inflight[node] = left - 1
            self._inflight_records -= count
        for b in batches:
            if b.inflight:  # (not if the producer closed meanwhile: _abort_all)
                b.inflight = False
                b.part.inflight -= 1

    def _handle_response(self, response: ProduceResponse, batches: list[Batch]) -> None:
        results: dict[tuple[str, int], PartitionProduceResponse] = {}
        for topic in response.responses:
            for part in topic.partition_responses:
                results[(topic.name, part.index)] = part
        for b in batches:
            p = b.part
            pr = results.get((p.topic.name, p.index))
            if pr is None:
                self._attempt_failed(b, KafkaError(f"the broker did not answer for {p!r}"), True)
                continue
            code = pr.error_code
            if code == NO_ERROR:
                self._complete(b, pr.base_offset, pr.log_append_time_ms)
            elif code == DUPLICATE_SEQUENCE and self._idempotent:
                # KIP-98: the broker already has this batch (an earlier attempt got
                # through); its offset is not known any more.
                self._complete(b, -1, -1)
            elif code in PRODUCER_STATE_CODES and self._idempotent:
                self._producer_state_error(
                    b, code, error_for_code(code)(pr.error_message), pr.log_start_offset
                )
            else:
                error = error_for_code(code)(pr.error_message)
                if code in _TOO_LARGE_CODES and len(b.values) > 1:
                    # The topic's max.message.bytes is lower than our batch: halve it.
                    self._split(b)
                elif code in _LEADER_MOVED_CODES:
                    self._client.note_error(error)
                    self._attempt_failed(b, error, False, unreachable=True)
                else:
                    self._attempt_failed(b, error, code in _MAYBE_WRITTEN_CODES)

    def _attempt_failed(
        self,
        b: Batch,
        error: KafkaError,
        maybe_written: bool,
        *,
        retriable: bool | None = None,
        unreachable: bool = False,
    ) -> None:
        """One try of ``b`` failed: back off and retry, or report it."""
        if b.done:
            return
        self._last_error = error  # seen in stats() while the records wait (an outage)
        if unreachable and self._spill is not None:
            self._spill.kafka_ok = False  # a full buffer now goes to disk
        if maybe_written and not unreachable:
            b.maybe_written = True
        if b.behind_disk and self._follow_disk(b):
            return
        if unreachable:
            self._stalled(b, error)
            return
        b.attempts += 1
        can_retry = error.retriable if retriable is None else retriable
        # A batch that may have been written is retried too (at-least-once, as the
        # Java client and lua-resty-kafka do with retries set): with idempotence the
        # broker drops a copy it has, without it the retry may duplicate.
        if not can_retry or b.attempts > self._max_retry:
            self._fail_batch(b, error, can_retry and not b.maybe_written)
            return
        now = anyio.current_time()
        deadline = b.born + self._delivery_timeout
        if now >= deadline:
            # max_retry does not bound the time: retries of an error that comes back
            # at once would outlast delivery_timeout by max_retry * retry_backoff.
            # The batch has its answer (not in flight): failed as the other expiries
            # fail one (with idempotence, _fail_batch settles its sequence numbers).
            self._expire(b, f"the last try failed: {error}")
            return
        # Tried again at the deadline at the latest, as _stalled does.
        b.not_before = min(now + self._backoff, deadline)
        if b.not_before < self._retry_at:
            self._retry_at = b.not_before
        self._retried += len(b.values)
        if self._hooks is not None:
            call_hook(
                self._hooks.records_retried, b.part.topic.name, b.part.index, len(b.values), error
            )
        self._client.note_error(error)

    def _requeue(self, b: Batch, error: KafkaError) -> None:
        """Retry ``b`` without counting a try: refused only because a batch before
        it (or of an earlier epoch) was not written; it goes again after that one.
        Bounded by delivery_timeout."""
        if b.done or (b.behind_disk and self._follow_disk(b)):
            return
        now = anyio.current_time()
        if now >= b.born + self._delivery_timeout:
            self._expire(b, f"retried in order behind an earlier batch: {error}")
            return
        b.not_before = now
        self._retry_at = now
        self._retried += len(b.values)
        if self._hooks is not None:
            call_hook(
                self._hooks.records_retried, b.part.topic.name, b.part.index, len(b.values), error
            )

    def _stalled(self, b: Batch, error: KafkaError) -> None:
        """No broker could be reached for ``b``: keep it until delivery_timeout has
        passed since it was made (as Java's delivery.timeout.ms), retrying with a
        capped exponential backoff; this does not use up max_retry."""
        now = anyio.current_time()
        deadline = b.born + self._delivery_timeout
        if now >= deadline:
            self._expire(b, f"no broker reachable, or no leader for the partition: {error}")
            return
        self._note_waiting(now, now - b.born, error)
        cap = max(STALL_BACKOFF_CAP, self._backoff)
        delay = max(STALL_BACKOFF_MIN, min(self._backoff * (1 << min(b.stalls, 16)), cap))
        b.stalls += 1
        # Wake at the deadline at the latest, to report the batch on time.
        b.not_before = min(now + delay, deadline)
        if b.not_before < self._retry_at:
            self._retry_at = b.not_before
        self._retried += len(b.values)
        if self._hooks is not None:
            call_hook(
                self._hooks.records_retried, b.part.topic.name, b.part.index, len(b.values), error
            )

    def _note_waiting(self, now: float, waited: float, error: KafkaError) -> None:
        """Records have waited ``waited`` seconds (at ``now``, the anyio clock) for a
        broker or a leader: a WARNING once that is long, rate-limited (see
        _WAITING_LOG_AFTER)."""
        if waited < _WAITING_LOG_AFTER:
            return
        if now < self._waiting_logged_at + _WAITING_LOG_EVERY:
            return
        self._waiting_logged_at = now
        logger.warning(
            "kafka_asgi producer: %d records held, the oldest waiting %.0fs for Kafka"
            " (kept up to delivery_timeout=%ss): %s",
            self._held,
            waited,
            self._delivery_timeout,
            error,
        )

    async def _expire_while_fetching(
        self, t: TopicBuffer, marks: list[tuple[float, int]], stop: anyio.Event
    ) -> None:
        """Report the records of ``t`` whose delivery_timeout passes while a metadata
        request for it waits, until ``stop`` is set (the request ended); the marks
        (see _expire_waiting) gain one at least every second or tenth of
        delivery_timeout, so records that came meanwhile are reported that much
        after their own delivery_timeout at most, never before it."""
        tick = max(STALL_BACKOFF_MIN, min(1.0, self._delivery_timeout / 10))
        asked = anyio.current_time()
        try:
            while True:
                wait = tick
                if marks:
                    wait = min(wait, marks[0][0] + self._delivery_timeout - anyio.current_time())
                with anyio.move_on_after(max(STALL_BACKOFF_MIN, wait)):
                    await stop.wait()
                # (Nothing awaited from here on: once the request has ended, the
                # marks are _fetch_topic's alone.)
                if stop.is_set():
                    return
                now = anyio.current_time()
                error = ClientRequestTimeoutError(
                    f"no answer yet to the request made {now - asked:.3g}s ago"
                )
                self._expire_waiting(t, marks, now, error)
                marks.append((now, t.taken + len(t.values)))
        except anyio.get_cancelled_exc_class() as exc:
            if not self._stray_cancellation(exc, f"the expiry of topic {t.name!r}'s records"):
                raise
            # The request's own end reports them (_fetch_topic).

    async def _fetch_topic(self, t: TopicBuffer) -> None:
        """Get a topic's metadata for its first records (retried, then reported).

        While no broker answers at all, or the metadata lists the topic without
        partitions, the records wait (reported once delivery_timeout has passed
        since they were handed over) and the tries do not count against max_retry.
        """
        attempt = 0
        stalls = 0
        limit = 2 * self._request_wait
        # (time, end): the records before position end were handed over by then
        # (see _expire_waiting).
        marks: list[tuple[float, int]] = [(anyio.current_time(), t.taken + len(t.values))]
        try:
            while True:
                empty = False
                error: KafkaError
                # An unanswered request ends at ``limit`` (twice request_timeout, which
                # may be longer than delivery_timeout): the records whose
                # delivery_timeout passes meanwhile are reported as it does.
                stop = anyio.Event()
                if self._tg is not None:
                    self._tg.start_soon(self._expire_while_fetching, t, marks, stop)
                try:
                    try:
                        with anyio.fail_after(limit):
                            meta = await self._client.fetch_metadata(t.name)
                    finally:
                        stop.set()
                    if meta.partitions:
                        return
                    # Listed with no partitions and no error (a topic being made, an
                    # odd broker): _drain cannot place the records and would start
                    # another fetch at once, for ever.  They wait as for a broker.
                    empty = True
                    error = LeaderNotAvailableError(
                        f"the metadata of topic {t.name!r} lists no partitions"
                    )
                except TimeoutError:
                    error = ClientRequestTimeoutError(
                        f"metadata for topic {t.name!r} not received within {limit}s"
                    )
                except KafkaError as exc:
                    error = exc
                self._last_error = error
                if empty or unreachable(error) or isinstance(error, ClientRequestTimeoutError):
                    # A metadata request writes nothing: waiting for a broker is safe.
                    if self._spill is not None and not empty:
                        # (A topic without partitions says nothing of the others.)
                        self._spill.kafka_ok = False
                    now = anyio.current_time()
                    self._note_waiting(now, now - marks[0][0], error)
                    self._expire_waiting(t, marks, now, error)
                    if empty and not t.values:
                        return  # the next records start another fetch (_drain)
                    marks.append((now, t.taken + len(t.values)))
                    delay = max(
                        STALL_BACKOFF_MIN,
                        min(
                            self._backoff * (1 << min(stalls, 16)),
                            max(STALL_BACKOFF_CAP, self._backoff),
                        ),
                    )
                    stalls += 1
                    due = marks[0][0] + self._delivery_timeout - now
                    await anyio.sleep(max(0.0, min(delay, due)))
                    continue
                attempt += 1
                if not error.retriable or attempt > self._max_retry:
                    self._fail_topic(t, error)
                    return
                await anyio.sleep(self._backoff)
        except anyio.get_cancelled_exc_class() as exc:
            if not self._stray_cancellation(exc, f"the metadata request for topic {t.name!r}"):
                raise
            # The next cycle starts another (woken below).
        finally:
            t.fetching = False
            self._wake()
            self._progress()
