"""Idempotence (KIP-98): the producer id, and the sequence numbers of each partition.

With ``enable_idempotence`` the producer gets a producer id and epoch
(InitProducerId) before it sends, and stamps each batch with the sequence number
of its first record; the broker then stores a batch retried after a lost
response once, and refuses one that would leave a gap.  That lets a partition have
up to ``max_in_flight`` batches in flight (as Java's client): a retried batch keeps
its sequence numbers, and the batches after it, refused as out of order, are
retried after it in sequence order (sender.py sends a retry only at the head of
its partition, with nothing else in flight there).

As Java's TransactionManager does for the idempotent producer:
DUPLICATE_SEQUENCE_NUMBER means the broker has the batch (success);
OUT_OF_ORDER_SEQUENCE_NUMBER for the next batch in line, or UNKNOWN_PRODUCER_ID,
means the broker lost our state: the epoch is bumped (KIP-360: same producer id,
epoch + 1, sequence numbers restarting at 0; a new id by InitProducerId when the
epoch is at its maximum, or after INVALID_PRODUCER_EPOCH), and that partition's
batches get new numbers from 0.  Unlike Java's client, before bumping for
OUT_OF_ORDER_SEQUENCE_NUMBER the producer asks the leader (DescribeProducers) how
far it has us: a broker restarted cleanly knows only a producer's last batch, and
refuses a retry of an earlier one it wrote (its answer lost) as out of order; the
bump would write those batches twice (``_probe``).  The other partitions move to
the new epoch once none of their batches is out: until then their retries keep
the producer id, epoch and sequence numbers they were sent with, so the broker
still drops a copy it has (as Java's client).  A batch that failed for good after
it may have been written leaves its partition *unresolved* while later batches
are out: acknowledged, they prove it written; if they are all gone, or the next
one is refused as out of order, the epoch is bumped.

A partition pipelines only once the leader has acknowledged one of its batches under
the producer id and epoch in use.  A leader with no state for a producer takes any
first sequence number (Kafka 2.5 to 4.4; KAFKA-15591 makes 4.5 refuse it), so two
batches in flight to a broker that becomes the leader between them (a topic just
made, an election) could see the first refused as not leader and the second written:
the first would then be refused as out of order, and written after the second under
a bumped epoch (Java's client gives it up at delivery.timeout.ms).  The broker also
drops a producer's state for a partition it has not written to for a while
(``producer.id.expiration.ms``, or retention deleting the segment that held its last
batch), so a partition with no batch acknowledged for ``STATE_TRUSTED_FOR`` seconds
goes one batch at a time again until one is.  The broker dates that idleness from the
records' own timestamps, so records older than ``OLD_RECORDS_AFTER`` go one batch at
a time too.
"""

from __future__ import annotations

import logging
import time

import anyio

from kafka_asgi.network.errors import ClientRequestTimeoutError
from kafka_asgi.protocol.errors import (
    ClusterAuthorizationFailedError,
    DuplicateSequenceNumberError,
    InvalidProducerEpochError,
    KafkaError,
    OutOfOrderSequenceNumberError,
    TransactionalIdAuthorizationFailedError,
    UnknownProducerIdError,
    UnsupportedVersionError,
    error_for_code,
)
from kafka_asgi.protocol.messages import (
    DescribeProducersRequest,
    DescribeProducersResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
)
from kafka_asgi.protocol.messages.describe_producers import TopicRequest as DescribeTopic
from kafka_asgi.protocol.records import set_producer_state

from .accumulator import NEVER_ACKED, Batch, PartitionBuffer
from .state import STALL_BACKOFF_CAP, ProducerState, unreachable

__all__ = [
    "DUPLICATE_SEQUENCE",
    "OLD_RECORDS_AFTER",
    "PRODUCER_STATE_CODES",
    "SEQ_MASK",
    "STATE_TRUSTED_FOR",
    "Idempotence",
]

logger = logging.getLogger("kafka_asgi.producer")

DUPLICATE_SEQUENCE = DuplicateSequenceNumberError.code
"""DUPLICATE_SEQUENCE_NUMBER: the broker already has the batch."""
PRODUCER_STATE_CODES = frozenset(
    {
        OutOfOrderSequenceNumberError.code,
        InvalidProducerEpochError.code,
        UnknownProducerIdError.code,
    }
)
"""OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID: the
broker lost or rejects our producer state; KIP-360: start a new one and resend."""
_time_ns = time.time_ns
SEQ_MASK = 0x7FFFFFFF  # sequence numbers wrap from Int32.MAX to 0 (KIP-98)
_MAX_EPOCH = 0x7FFF
_REWRITE = -2  # a partition generation no batch has: all its batches get new numbers
STATE_TRUSTED_FOR = 10.0
"""Seconds after a partition's last acknowledgement during which its leader is taken
to still hold our producer state (it drops the state of a producer idle past
``producer.id.expiration.ms``, a day by default, or whose last batch retention
deleted); after that, the partition's next batch goes alone."""
OLD_RECORDS_AFTER = 3600.0
"""The broker counts a producer's idleness from the newest record timestamp of its
last batch, not from when it wrote it: an acknowledged batch whose records are all
older than this many seconds counts as acknowledged that long ago, so its partition
goes one batch at a time while its records are that old.  Younger records pipeline
(the state outlives them unless ``producer.id.expiration.ms`` or the topic's
retention is below an hour).  One batch at a time cost up to a tenth of the records/s
at 100 B and up to a third at 1 KiB lz4 against a local broker (README, "Idempotent
pipelining and 1 KiB records")."""


_REFUSALS = (
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
    UnsupportedVersionError,
)
"""InitProducerId errors that say this cluster will not give the producer an id (a
permission it lacks, or no such API), rather than not yet."""


def _seq_after(a: int, b: int) -> bool:
    """Is sequence number ``a`` after ``b`` (modulo the wrap at Int32.MAX)?"""
    return 0 < ((a - b) & SEQ_MASK) < 0x40000000


class Idempotence(ProducerState):
    """The producer id task, and the sequence numbers given to batches."""

    def _stamp(self, b: Batch) -> None:
        """Give ``b`` its sequence numbers, unless it keeps the ones it has: a batch
        keeps them through its retries (the broker drops a copy it has), under the
        producer id and epoch it was first sent with while its partition has not
        moved on (as Java's client: only the partitions that need it restart)."""
        p = b.part
        gen = self._pid_gen
        if b.base_seq >= 0 and b.pid_gen == p.pid_gen and (b.sent or p.pid_gen == gen):
            return
        if p.pid_gen != gen:
            # No batch of the earlier one is out (see _may_send_new).
            self._move_on(p)
        b.base_seq = p.next_seq
        b.pid_gen = gen
        p.next_seq = (p.next_seq + len(b.values)) & SEQ_MASK
        if b.data is not None:
            # Encoded for an earlier producer id: only the stamp changes.
            b.data = set_producer_state(
                b.data,
                producer_id=self._pid,
                producer_epoch=self._pid_epoch,
                base_sequence=b.base_seq,
            )

    def _may_send_new(self, p: PartitionBuffer, out: int, gen: int, now: float) -> bool:
        """May a batch of ``p`` get new sequence numbers while ``out`` batches of
        ``p`` are in flight or taken (at ``now``, the anyio clock)?"""
        if p.probing:
            return False  # the leader is asked how far it has this partition
        if p.pid_gen != gen:
            # Moving to a new producer id or epoch (numbers from 0): only once no
            # batch of the earlier one is out, in flight or waiting for its retry
            # (as Java's client), so none is overtaken by the new sequence.
            if out or p.inflight or self._later_sent(p, p.pid_gen):
                return False
            self._move_on(p)
            return True
        if out and now - p.acked_at > STATE_TRUSTED_FOR:
            # Nothing of this partition acknowledged under this producer id and
            # epoch yet, or not for long enough that the leader may have dropped our
            # state (expired, or its segment deleted): a leader with no state for us
            # takes any first sequence number (Kafka before 4.5, KAFKA-15591). A
            # first batch refused as not leader while the broker takes the partition
            # over (a topic just made, an election), then the next one in flight
            # accepted, would leave the first one's records refused as out of order
            # and, sent again under a bumped epoch, written after the later ones. One
            # batch at a time until one is acknowledged: one round trip.
            return False
        # Unresolved: wait until the batches out tell whether the broker has it.
        return p.unresolved < 0

    def _move_on(self, p: PartitionBuffer) -> None:
        """``p`` moves to the current producer id and epoch: numbers from 0."""
        p.pid_gen = self._pid_gen
        p.next_seq = 0
        p.acked_seq = 0
        p.unresolved = -1
        p.acked_at = NEVER_ACKED

    @staticmethod
    def _rewind(p: PartitionBuffer, seq: int) -> None:
        """Sequence numbers from ``seq`` on were not used: give them out again (KIP-98:
        the broker wants them contiguous), to the batches queued from there."""
        p.next_seq = seq
        for queued in p.batches:
            if queued.base_seq >= 0 and not queued.sent and queued.pid_gen == p.pid_gen:
                queued.pid_gen = -1  # restamped (set_producer_state) when sent

    @staticmethod
    def _later_sent(p: PartitionBuffer, gen: int, after: int | None = None) -> bool:
        """Does ``p`` have a batch sent under generation ``gen`` not yet done (with
        ``after``, one whose sequence numbers come after that one: a batch before it,
        in flight or waiting for its retry, keeps its numbers and leaves no gap)?"""
        for queued in p.batches:
            if (
                queued.sent
                and queued.pid_gen == gen
                and not queued.done
                and (after is None or _seq_after(queued.base_seq, after))
            ):
                return True
        return False

    def _release_seq(self, b: Batch, error: KafkaError) -> None:
        """``b`` (removed from its partition) was not written: its sequence numbers
        go to the batches after it, or, when later ones were sent already with
        higher numbers (a gap the broker refuses), the partition restarts under a
        bumped epoch (KIP-360)."""
        p = b.part
        if b.base_seq < 0 or b.pid_gen != p.pid_gen:
            return
        if self._later_sent(p, p.pid_gen, after=b.base_seq):
            self._bump_for(p, error)
        else:
            self._rewind(p, b.base_seq)

    def _seq_failed(self, b: Batch, error: KafkaError) -> None:
        """``b`` (removed from its partition) was reported failed: settle the
        sequence numbers it used (Java's TransactionManager.handleFailedBatch)."""
        p = b.part
        if b.base_seq < 0 or b.pid_gen != p.pid_gen:
            return
        if not b.maybe_written:
            self._release_seq(b, error)
        elif self._later_sent(p, p.pid_gen):
            # Whether the broker has it is unknown: if a later batch is acknowledged
            # it has (sequence numbers are contiguous); if the next one is refused
            # as out of order, or none is left, it has not: then bump the epoch.
            end = (b.base_seq + len(b.values)) & SEQ_MASK
            if p.unresolved < 0 or _seq_after(end, p.unresolved):
                p.unresolved = end
        else:
            self._bump_for(p, error)
        self._check_resolved(p, error)

    def _check_resolved(self, p: PartitionBuffer, error: KafkaError) -> None:
        """An unresolved partition with no batch of its generation left: bump."""
        if p.unresolved >= 0 and not self._later_sent(p, p.pid_gen):
            self._bump_for(p, error)

    def _seq_acked(self, b: Batch) -> None:
        """The broker has ``b``: the batches before it are written too."""
        p = b.part
        if b.base_seq < 0 or b.pid_gen != p.pid_gen:
            return
        now = anyio.current_time()
        # The broker's expiry clock for our state is the batch's newest record
        # timestamp, not the time it wrote the batch: old records (a spill replayed
        # after a long outage, the caller's own timestamps) date the acknowledgement
        # back as far, so that they go one batch at a time like an idle partition.
        stamps = b.stamps
        age = (_time_ns() - stamps[-1]) / 1e9
        if age > OLD_RECORDS_AFTER:
            age = (_time_ns() - max(stamps)) / 1e9  # the last need not be the newest
            if age > OLD_RECORDS_AFTER:
                now -= age
        p.acked_at = now
        end = (b.base_seq + len(b.values)) & SEQ_MASK
        if _seq_after(end, p.acked_seq):
            p.acked_seq = end
        if p.unresolved >= 0 and not _seq_after(p.unresolved, end):
            p.unresolved = -1

    def _producer_state_error(self, b: Batch, code: int, error: KafkaError, log_start: int) -> None:
        """OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID or INVALID_PRODUCER_EPOCH
        for ``b``: retry it, after bumping the epoch when the broker really lost
        our sequence (as Java's TransactionManager.canRetry for the idempotent
        producer)."""
        p = b.part
        if b.pid_gen != p.pid_gen:
            # Its partition restarted under a new epoch: restamped when resent.
            self._requeue(b, error)
            return
        if code == OutOfOrderSequenceNumberError.code:
            if b.sent and p.unresolved < 0 and _seq_after(p.acked_seq, b.base_seq):
                # A later batch of its generation was acknowledged: the broker takes
                # a producer's numbers only in order, so it has this one (its answer
                # was lost, or said "maybe written"), and refuses its retry as out of
                # order when it restarted since and kept our last batch only. Written,
                # its offset not known: as for DUPLICATE_SEQUENCE_NUMBER. (Bumping the
                # epoch wrote it again, after the later batch.)
                self._complete(b, -1, -1)
                return
            # The batch right after the last acknowledged one (or after the batch
            # that failed maybe written), or with nothing before it left: the
            # broker has a gap (it lost our state, or that batch was not written).
            expected = p.acked_seq if p.unresolved < 0 else p.unresolved
            if b.base_seq != expected and not (p.batches and p.batches[0] is b):
                # A batch before it was not written (failed, or being retried), or
                # may still resolve: this one goes again after it, same numbers.
                self._requeue(b, error)
                return
            unresolved = p.unresolved >= 0
            if not unresolved and self._probe(p, b, error):
                return
            self._bump_for(p, error)
            if unresolved:
                # Refused for the failed batch before it, not for itself: a retry
                # that does not count against max_retry.
                self._requeue(b, error)
                return
        elif code == UnknownProducerIdError.code:
            if log_start >= 0:
                # The broker forgot our producer (its log was truncated or deleted).
                self._bump_for(p, error)
        else:
            # INVALID_PRODUCER_EPOCH for the epoch the partition uses: a new id.
            self._reset_producer_id(error)
            p.pid_gen = _REWRITE
            p.unresolved = -1
        self._attempt_failed(b, error, False, retriable=True)

    def _probe(self, p: PartitionBuffer, b: Batch, error: KafkaError) -> bool:
        """OUT_OF_ORDER_SEQUENCE_NUMBER for ``b``, the batch right after the last one
        acknowledged: the broker may not have it, or may have it and the batches
        after it.  A broker restarted cleanly reloads a producer's state with its
        last batch only, so a retry of an earlier one it wrote (its answer lost) is
        refused as out of order, not recognised as a duplicate; bumping the epoch
        then would write those batches again (Java's client does).  Ask the leader
        how far it has us (DescribeProducers) before deciding; ``b`` waits, the
        partition sends nothing meanwhile.  False: no question asked (bump now)."""
        if p.probing or p.pid_gen != self._pid_gen or self._pid < 0 or self._tg is None:
            return False
        if b.base_seq != p.acked_seq or not b.sent:
            return False
        p.probing = True
        self._tg.start_soon(self._ask_sequence, p, p.pid_gen, self._pid, self._pid_epoch, error)
        self._requeue(b, error)
        return True

    async def _ask_sequence(
        self, p: PartitionBuffer, gen: int, pid: int, epoch: int, error: KafkaError
    ) -> None:
        """DescribeProducers for ``p``: the last sequence number its leader has of
        producer ``pid`` at ``epoch`` (None: not known, or another epoch)."""
        last: int | None = None
        why = "no answer"
        try:
            leader = self._leader(p)
            if leader < 0:
                why = "no leader known"
            else:
                request = DescribeProducersRequest(
                    topics=[DescribeTopic(name=p.topic.name, partition_indexes=[p.index])]
                )
                with anyio.fail_after(2 * self._request_wait):
                    response: DescribeProducersResponse = await self._client.send(
                        leader, request, request_timeout=self._request_wait
                    )
                why = "our producer is not in its answer"
                for t in response.topics:
                    for part in t.partitions:
                        if part.partition_index != p.index or t.name != p.topic.name:
                            continue
                        if part.error_code:
                            why = repr(error_for_code(part.error_code)(part.error_message))
                        for state in part.active_producers:
                            if state.producer_id == pid and state.producer_epoch == epoch:
                                last = state.last_sequence
        except TimeoutError:
            why = "DescribeProducers timed out"
        except KafkaError as exc:  # the connection, no such API (Kafka < 3.0), ...
            why = repr(exc)
        except anyio.get_cancelled_exc_class() as exc:
            if not self._stray_cancellation(exc, f"DescribeProducers for {p!r}"):
                raise
            why = "DescribeProducers cancelled"
        except Exception as exc:
            # A bug must not stop deliveries: the epoch is bumped as without the question.
            logger.exception("kafka_asgi producer: DescribeProducers for %r failed", p)
            why = repr(exc)
        finally:
            p.probing = False
            self._wake()
        self._sequence_known(p, gen, last, error, why)

    def _sequence_known(
        self, p: PartitionBuffer, gen: int, last: int | None, error: KafkaError, why: str
    ) -> None:
        """The leader has ``p``'s records up to sequence number ``last``: the batches
        sent before up to there are written (acknowledged, their offsets unknown as
        for a duplicate); the rest go again with their numbers.  If that does not
        explain the refusal (the broker has none of them, or ``last`` falls inside a
        batch), the broker lost our sequence: bump the epoch (KIP-360)."""
        if p.pid_gen != gen or self._state == "closed":
            return  # moved to a new epoch meanwhile: its batches get new numbers
        written = 0
        if last is not None:
            for q in list(p.batches):
                if q.done or q.inflight or not q.sent or q.pid_gen != gen:
                    break
                if q.base_seq != p.acked_seq:
                    break
                if _seq_after((q.base_seq + len(q.values) - 1) & SEQ_MASK, last):
                    break
                self._complete(q, -1, -1)
                written += len(q.values)
        if last is not None and written and p.acked_seq == (last + 1) & SEQ_MASK:
            self._seq_probes_resolved += 1
            logger.warning(
                "kafka_asgi producer: %s partition %d: %d records refused as out of order "
                "were written before (the broker's last sequence number for us is %s); "
                "acknowledged without sending them again",
                p.topic.name,
                p.index,
                written,
                last,
            )
            return
        logger.debug(
            "kafka_asgi producer: %s partition %d: sequence not resolved (%s, last=%s)",
            p.topic.name,
            p.index,
            why,
            last,
        )
        self._bump_for(p, error)

    def _bump_for(self, p: PartitionBuffer, error: KafkaError) -> None:
        """``p``'s sequence must restart: under the next epoch (bumped now unless
        the producer has moved on from the one ``p`` uses already); its batches
        get new numbers from 0 once none of them is in flight."""
        if p.pid_gen == self._pid_gen:
            self._bump_epoch(error)
        p.pid_gen = _REWRITE
        p.unresolved = -1

    def _bump_epoch(self, error: KafkaError) -> None:
        """KIP-360 for the idempotent producer (as Java's bumpIdempotentProducerEpoch):
        the same producer id with the next epoch; a new producer id once the epoch
        is at its maximum.  Partitions move to it one by one (see _stamp)."""
        if self._pid < 0:
            return
        if self._pid_epoch >= _MAX_EPOCH - 1:
            self._reset_producer_id(error)
            return
        logger.warning(
            "kafka_asgi producer: producer epoch bumped to %d after %s", self._pid_epoch + 1, error
        )
        self._pid_epoch += 1
        self._pid_gen += 1
        self._epoch_bumps += 1
        self._wake()

    async def _producer_id_task(self) -> None:
        """Get (and after a reset, get again) a producer id: InitProducerId (KIP-98)."""
        failures = 0
        while True:
            assert self._pid_wanted is not None
            await self._pid_wanted.wait()
            try:
                with anyio.fail_after(2 * self._request_wait):
                    response: InitProducerIdResponse = await self._client.send_any(
                        InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000),
                        request_timeout=self._request_wait,
                    )
                if response.error_code:
                    raise error_for_code(response.error_code)("InitProducerId")
            except TimeoutError:
                self._pid_error = ClientRequestTimeoutError("InitProducerId timed out")
            except KafkaError as exc:
                if self._idempotence_implicit and self._pid_gen == 0 and isinstance(exc, _REFUSALS):
                    self._drop_idempotence(exc)
                    return
                self._pid_error = exc
            else:
                self._pid = response.producer_id
                self._pid_epoch = response.producer_epoch
                self._pid_gen += 1
                self._pid_error = None
                self._pid_wanted = anyio.Event()
                failures = 0
                self._wake()
                continue
            failures += 1
            self._last_error = self._pid_error
            logger.debug("InitProducerId failed: %s", self._pid_error)
            self._wake()
            # While no broker is reachable, look again at least every second, so
            # that records waiting for the id go soon after a broker comes back.
            cap = STALL_BACKOFF_CAP if unreachable(self._pid_error) else 5.0
            await anyio.sleep(min(self._backoff * (2 ** min(failures, 6)), max(cap, self._backoff)))

    def _drop_idempotence(self, error: KafkaError) -> None:
        """The default turned idempotence on, and the cluster refuses the producer
        its first id: go on without it (nothing was sent with sequence numbers yet),
        rather than fail every record over a permission the user never asked for."""
        logger.warning(
            "kafka_asgi producer: idempotence is off: the cluster refused InitProducerId "
            "(%s); records are sent without it (enable_idempotence=True requires it, "
            "False skips the request)",
            error,
        )
        self._idempotent = False
        self._idempotence_implicit = False
        self._part_limit = 1
        self._pid_error = None
        self._wake()

    def _reset_producer_id(self, error: KafkaError) -> None:
        if self._pid < 0:
            return
        logger.warning("kafka_asgi producer: new producer id after %s", error)
        self._pid = -1
        self._pid_epoch = -1
        if self._pid_wanted is not None:
            self._pid_wanted.set()
