"""Idempotence (KIP-98): the producer id, and the sequence numbers of each partition.

With ``enable_idempotence`` the producer gets a producer id and epoch
(InitProducerId) before it sends, and stamps each batch with the sequence number
of its first record; the broker then stores a batch retried after a lost
response once.  When the broker loses or rejects that state
(OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID), or a
batch that may have been written fails for good, the producer starts over with a
new id (KIP-360) and the sequence numbers restart at 0.
"""

from __future__ import annotations

import logging

import anyio

from kafka_asgi.network.errors import ClientRequestTimeoutError
from kafka_asgi.protocol.errors import (
    DuplicateSequenceNumberError,
    InvalidProducerEpochError,
    KafkaError,
    OutOfOrderSequenceNumberError,
    UnknownProducerIdError,
    error_for_code,
)
from kafka_asgi.protocol.messages import InitProducerIdRequest, InitProducerIdResponse
from kafka_asgi.protocol.records import set_producer_state

from .accumulator import Batch, PartitionBuffer
from .state import STALL_BACKOFF_CAP, ProducerState, unreachable

__all__ = ["DUPLICATE_SEQUENCE", "PRODUCER_STATE_CODES", "Idempotence"]

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
_SEQ_MASK = 0x7FFFFFFF  # sequence numbers wrap from Int32.MAX to 0 (KIP-98)


class Idempotence(ProducerState):
    """The producer id task, and the sequence numbers given to batches."""

    def _stamp(self, b: Batch) -> None:
        """Give ``b`` its sequence numbers under the current producer id (if it has
        none yet, or has them from an earlier id)."""
        gen = self._pid_gen
        if b.data is None or b.pid_gen != gen:
            p = b.part
            if p.pid_gen != gen:
                p.pid_gen = gen
                p.next_seq = 0
            b.base_seq = p.next_seq
            b.pid_gen = gen
            p.next_seq = (p.next_seq + len(b.values)) & _SEQ_MASK
            if b.data is not None:
                # Encoded for an earlier producer id: only the stamp changes.
                b.data = set_producer_state(
                    b.data,
                    producer_id=self._pid,
                    producer_epoch=self._pid_epoch,
                    base_sequence=b.base_seq,
                )

    @staticmethod
    def _rewind(p: PartitionBuffer, seq: int) -> None:
        """Sequence numbers from ``seq`` on were not used: give them out again (KIP-98:
        the broker wants them contiguous), to the batches queued from there."""
        p.next_seq = seq
        for queued in p.batches:
            if queued.base_seq >= 0 and not queued.sent and queued.pid_gen == p.pid_gen:
                queued.pid_gen = -1  # restamped (set_producer_state) when sent

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

    def _reset_producer_id(self, error: KafkaError) -> None:
        if self._pid < 0:
            return
        logger.warning("kafka_asgi producer: new producer id after %s", error)
        self._pid = -1
        self._pid_epoch = -1
        if self._pid_wanted is not None:
            self._pid_wanted.set()
