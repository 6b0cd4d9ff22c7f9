"""Produce requests written by hand, for tests that number a batch themselves (a
sequence number the producer would never send) against a real broker."""

from __future__ import annotations

import time

import anyio

from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.protocol.errors import error_for_code
from kafka_asgi.protocol.messages import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProduceRequest,
)
from kafka_asgi.protocol.messages.produce import PartitionProduceData, TopicProduceData
from kafka_asgi.protocol.records import encode_batch_columns


async def new_producer_id(client: KafkaClient) -> InitProducerIdResponse:
    """An idempotent producer id and epoch; a fresh broker may answer with retriable
    codes at first (its coordinator loading), so ask again for up to 30 s."""
    with anyio.fail_after(30):
        while True:
            pid: InitProducerIdResponse = await client.send_any(
                InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000)
            )
            if pid.error_code == 0 or not error_for_code(pid.error_code).retriable:
                assert pid.error_code == 0, error_for_code(pid.error_code)
                return pid
            await anyio.sleep(0.1)


def one_record_batch(
    topic: str,
    pid: InitProducerIdResponse,
    base_sequence: int,
    value: bytes,
    timestamp_ns: int | None = None,
) -> ProduceRequest:
    """A Produce request (acks=all) of one record to partition 0 of ``topic``, stamped
    with ``pid``'s producer id and epoch and ``base_sequence`` (timestamped now, or at
    ``timestamp_ns``)."""
    data = encode_batch_columns(
        [value],
        [time.time_ns() if timestamp_ns is None else timestamp_ns],
        producer_id=pid.producer_id,
        producer_epoch=pid.producer_epoch,
        base_sequence=base_sequence,
    )
    return ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=10_000,
        topic_data=[
            TopicProduceData(
                name=topic, partition_data=[PartitionProduceData(index=0, records=data)]
            )
        ],
    )
