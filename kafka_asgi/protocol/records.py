"""Kafka record batches: encode magic 2, decode magic 0, 1 and 2.

The format is described in the Kafka documentation, "Message format"
(https://kafka.apache.org/documentation/#messageformat); magic 2 came with
KIP-98 (idempotence and transactions) and headers with KIP-82.

API
---

``encode_batch(records, *, base_offset=0, compression=Compression.NONE,
producer_id=-1, producer_epoch=-1, base_sequence=-1, transactional=False,
partition_leader_epoch=-1, timestamp_type=CREATE_TIME, compression_level=None)
-> bytes``
    Encode one magic-2 batch.  ``records`` is a non-empty sequence of
    ``(key, value, headers, timestamp_ms)`` tuples: key and value are bytes or
    None, headers is None or a sequence of ``(str, bytes | None)`` pairs.  The
    batch's base timestamp is the first record's.  Bad input raises TypeError or
    ValueError naming the record and field.  This is the producer's hot path.

``encode_records_section(values, timestamps_ns, keys=None, headers=None)``
    and ``assemble_batch(section, count, base_ts, max_delta, *, compression,
    compressed=False, producer_id=-1, producer_epoch=-1, base_sequence=-1)``
    ``encode_batch_columns`` in two steps, so that the compression between them
    can run elsewhere: the producer compresses slow codecs' large batches on a
    worker thread.  The first returns None for input only the checked path takes.

``set_producer_state(batch, *, producer_id, producer_epoch, base_sequence,
transactional=None) -> bytes``
    The same batch with other idempotence fields (and a new CRC), without
    re-encoding its records: a retried batch must keep its sequence numbers
    (KIP-98), and a producer whose epoch was bumped must rewrite them.

``decode_batches(data, *, verify_crc=True, max_decompressed_size=256 MiB,
max_total_size=None, fetch_offset=-1, always_decode_first=True) -> DecodedBatches``
    Decode every complete batch (magic 2) or legacy message (magic 0/1, one
    :class:`RecordBatch` per top-level message, a compressed wrapper holding its
    inner messages) in a buffer such as the ``records`` of a Fetch partition.
    A partial batch at the end (a Fetch response cut at ``max_bytes``) is not an
    error: it is left out and ``DecodedBatches.truncated`` is True.  Any
    malformed input raises :class:`ProtocolError`, and nothing else; so does a
    compressed batch that would inflate beyond ``max_decompressed_size``.  A record
    costs its bytes (decompressed) plus ``DECODED_RECORD_OVERHEAD`` (the objects it
    becomes) and ``DECODED_HEADER_OVERHEAD`` for each of its headers, counted before
    they are built; a record whose headers alone would cost more than
    ``max_decompressed_size`` raises ProtocolError.  A batch (or a compressed legacy
    message) whose records would cost more than ``max_decompressed_size`` is decoded
    in part, from its first record at or after ``fetch_offset``: its
    ``resume_offset`` is the first record left out.
    With ``max_total_size``, decoding stops before a batch whose records would take
    those decoded past it (the first batch is always decoded, unless
    ``always_decode_first=False``; a later one is decompressed no further than what
    is left), and ``DecodedBatches.limited`` is True: a consumer's memory for one
    response.  With a ``fetch_offset`` of 0 or more, the batches that end before it
    are stepped over, undecoded (``DecodedBatches.skipped``).

``estimate_record_size(key, value, headers) -> int``
    An upper bound of the bytes one record adds to a batch (for batch sizing);
    ``BATCH_OVERHEAD`` is the size of the batch header.

Where the code lives: the types and the byte layout in :mod:`.record_batch`, the
encoders in :mod:`.record_encoder`, magic 2 decoding in :mod:`.record_decoder`,
magic 0/1 in :mod:`.legacy`, varints in :mod:`.varint`.  This module is the one
import path for all of it.
"""

from __future__ import annotations

from kafka_asgi.protocol.record_batch import (
    BATCH_OVERHEAD,
    CREATE_TIME,
    LOG_APPEND_TIME,
    ControlType,
    DecodedBatches,
    Header,
    Record,
    RecordBatch,
    RecordTuple,
    TimestampType,
)
from kafka_asgi.protocol.record_decoder import (
    DECODED_HEADER_OVERHEAD,
    DECODED_RECORD_OVERHEAD,
    decode_batches,
    first_batch_compressed,
)
from kafka_asgi.protocol.record_encoder import (
    assemble_batch,
    encode_batch,
    encode_batch_columns,
    encode_records_section,
    estimate_record_size,
    set_producer_state,
)

__all__ = [
    "BATCH_OVERHEAD",
    "CREATE_TIME",
    "DECODED_HEADER_OVERHEAD",
    "DECODED_RECORD_OVERHEAD",
    "LOG_APPEND_TIME",
    "ControlType",
    "DecodedBatches",
    "Header",
    "Record",
    "RecordBatch",
    "RecordTuple",
    "TimestampType",
    "assemble_batch",
    "decode_batches",
    "encode_batch",
    "encode_batch_columns",
    "encode_records_section",
    "estimate_record_size",
    "first_batch_compressed",
    "set_producer_state",
]
