"""The producer's options: names, defaults and meanings from lua-resty-kafka.

Every option is validated when the Producer is constructed; a bad value raises
TypeError or ValueError naming the option.  Durations are seconds (floats), where
lua-resty-kafka takes milliseconds: its ``flush_time = 1000`` is ``flush_time=1.0``.

lua-resty-kafka's producer options, with its defaults:

``required_acks`` (1)
    Acknowledgements the leader waits for: 0 (none: the broker sends no response),
    1 (the leader wrote it), -1 or "all" (every in-sync replica has it).
``request_timeout`` (30.0 here, as the client; lua: 2 s)
    How long the broker may wait for the acknowledgements (the Produce request's
    TimeoutMs), and how long the client waits for the response.
``max_retry`` (3)
    Retries of a batch after a retriable error the broker answered, or after a
    request that may have been written (so at most 1 + max_retry attempts).  Tries
    that found no broker to connect to do not count, nor tries refused because the
    partition's leader moved or is being elected (NOT_LEADER_OR_FOLLOWER,
    LEADER_NOT_AVAILABLE, FENCED_LEADER_EPOCH: nothing written); those wait for the
    new leader, refreshing metadata at once (see ``delivery_timeout``).
``retry_backoff`` (0.1)
    Pause before a retry; also the client's metadata refresh backoff.
``flush_time`` (1.0)
    Buffered records are sent at least this often (queue.buffering.max.ms).
``batch_num`` (200)
    A partition with this many records waiting is sent without waiting for
    ``flush_time``.  Records that piled up meanwhile (say while the partition's
    previous batch was in flight) travel together, up to ``batch_size`` bytes.
``batch_size`` (1 MiB)
    A partition with this many bytes waiting is sent at once; also the largest
    batch, counted before compression.  (lua: must stay below the broker's limit.)
``max_buffering`` (50000)
    Records the producer holds at most, from ``send_nowait`` until acknowledged or
    reported; beyond it ``BufferFullError`` ("buffer overflow").
``max_buffering_bytes`` (64 MiB)
    Bytes those records take at most (their values, keys and headers); beyond it
    ``BufferFullError``, as for ``max_buffering``.  Java's ``buffer.memory`` is
    32 MiB; a web app's log records pile up quickly during an outage, so twice that.
``wait_on_buffer_full`` (False) and ``wait_buffer_timeout`` (5.0)
    Whether ``send_buffered``/``send`` wait for room, and for how long at most.
``error_handle`` (None)
    ``error_handle(topic, partition, records, error, retriable)``, called once per
    failed batch with its records as ``(key, value, headers, timestamp_ms)`` tuples.
    ``retriable`` True means Kafka surely did not store them (sending them again
    is safe); False means it may have (or the error is permanent).  Without it,
    failures are logged (and counted in ``stats()``).
``partitioner`` ("murmur2")
    "murmur2" (as the Java client), "crc32" (as lua-resty-kafka), "round_robin", or
    a callable ``(key, partition_count) -> int``.

Added here:

``compression`` ("none"), ``compression_level`` (None)
    "none", "gzip", "snappy", "lz4" or "zstd" (the last three need the
    ``compression`` extra).  Levels as the Java client's: gzip -1 to 9, lz4 0 to
    17 (LZ4HC from 3; the default is lz4's fast compressor), zstd -131072 to 22;
    none and snappy take no level.
``linger`` (0.0)
    How long a sync ``send()`` lets other records join its batch before the
    flusher sends it (Java's linger.ms for the sync path).
``max_in_flight`` (5)
    Produce requests outstanding per broker.  Without idempotence a partition has
    one batch in flight at a time, so retries never reorder records; with
    ``enable_idempotence``, up to ``max_in_flight`` batches (at most 5), kept in
    order by their sequence numbers (as Java's client).
``on_delivery`` (None)
    ``on_delivery(error, metadata, key, value, headers)`` once per record: error is
    None and metadata a RecordMetadata on success; on failure error is the
    KafkaError and metadata's offset is -1.
``enable_idempotence`` (None: on with ``required_acks=-1``)
    InitProducerId and per-partition sequence numbers (KIP-98): retries never
    duplicate nor reorder, and a partition pipelines up to ``max_in_flight``
    batches.  True needs ``required_acks=-1`` and ``max_in_flight <= 5``.  None
    (the default) turns it on where those hold and ``max_retry > 0``, as the Java
    client since 3.0 (KAFKA-13673), and off otherwise, so the default
    ``required_acks=1`` stays without it; if the cluster then refuses the
    producer id (CLUSTER_AUTHORIZATION_FAILED: a managed Kafka's policy without the
    idempotent-write permission) or lacks InitProducerId, the producer goes on
    without idempotence and logs a warning once.  False: never.
``value_serializer`` / ``key_serializer`` (None)
    Without one, values and keys are bytes (bytearray/memoryview copied) or str
    (UTF-8).  "json" serializes anything ``json.dumps`` accepts (bytes still pass
    through untouched), or a callable ``obj -> bytes``.
``max_request_size`` (1 MiB)
    A record that cannot fit a request of this size is refused at the call
    (RecordTooLargeError); requests are built no larger.  At most 99 MiB: a request
    frame stays within the client's 100 MiB frame cap.
``close_timeout`` (10.0)
    How long closing may take to deliver what is buffered; what is left is
    reported as undelivered (ProducerClosedError).
``delivery_timeout`` (120.0)
    The longest a record may wait for delivery before it is reported (as Java's
    delivery.timeout.ms).  While no broker can be reached (connections refused,
    metadata unavailable: nothing written, no broker answered), records stay
    buffered and are retried with a backoff doubling from ``retry_backoff`` up to
    1 s, without using up ``max_retry``, until delivered or until this long after
    they were handed over (then reported with DeliveryTimeoutError, a moment
    after, never before).  Counted from when a record's batch is made: records that
    first waited for their topic's metadata (or up to ``flush_time`` in a partition)
    are reported up to that wait later.  Also how long ``send()`` and ``flush()``
    wait at most (DeliveryTimeoutError).
``cluster_name`` (None)
    When set, the producer registers itself under that name when it starts (see
    ``kafka_asgi.get_producer``) and unregisters when it closes.
``inject_trace_context`` (False)
    Put the current OpenTelemetry context into every record's headers
    (``traceparent``...) through the globally configured propagator; headers the
    caller sets win. Needs opentelemetry-api (extra ``otel``).
``spill_dir`` (None: no disk spill)
    A directory for records Kafka cannot take now (unreachable, memory buffer full,
    ``delivery_timeout`` reached, the producer closing): they are written there
    and sent once Kafka is back, before newer records of their topic (see
    kafka_asgi.producer.spill_seam).  One subdirectory per live producer.  While
    a topic spills, a record accepted for it is on disk when ``send_nowait``
    returns (it survives a SIGKILL; README: "What survives a SIGKILL").
``spill_max_bytes`` (1 GiB), ``spill_when_full`` ("drop_newest")
    The disk budget, and what happens when it is used up: "drop_newest" reports
    the records that do not fit (SpillFullError), "block" keeps them in memory
    and makes ``send_buffered`` wait (up to ``wait_buffer_timeout``).
``spill_fsync`` ("segment"), ``spill_segment_bytes`` (16 MiB)
    fsync each segment when it is closed ("segment"), at most every that many
    seconds (a number), or never ("never"); segments are rolled at this size
    (4 KiB to 1 GiB).
``client`` (None)
    An already started KafkaClient to use instead of creating one; the producer
    then neither starts nor closes it (and takes no client options).

All client options (``client_id``, TLS and SASL options, ``connect_timeout``,
``request_timeout``, ``metadata_max_age``, ``refresh_interval``, ``retry_backoff``,
``resolver``, ...) are passed to the KafkaClient, which validates them.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka_asgi.cluster.options import split_client_options
from kafka_asgi.protocol.compression import Compression, check_level, ensure_available
from kafka_asgi.protocol.framing import MAX_RECORDS_SIZE

from .partitioner import BUILTIN_PARTITIONERS, PartitionerFunc
from .validation import Serializer, resolve_serializer

__all__ = [
    "PRODUCER_OPTION_NAMES",
    "SHARED_CLIENT_OPTIONS",
    "ProducerOptions",
    "Serializer",
    "split_producer_options",
]

ErrorHandle = Callable[..., Any]
OnDelivery = Callable[..., Any]

_MIB = 1024 * 1024
# A Produce request's header (client_id up to 32 KiB, the topics' names) goes on top
# of the record batches max_request_size bounds; the frame stays within the client's
# (and a default broker's socket.request.max.bytes) 100 MiB.
MAX_REQUEST_SIZE = MAX_RECORDS_SIZE


def check_max_request_size(value: object) -> int:
    """``max_request_size`` checked as the option is (1 KiB to MAX_REQUEST_SIZE)."""
    return _int("max_request_size", value, 1024, MAX_REQUEST_SIZE)


@dataclass(frozen=True, slots=True)
class ProducerOptions:
    """Validated producer options (client options are kept apart)."""

    required_acks: int = 1
    request_timeout: float = 30.0
    max_retry: int = 3
    retry_backoff: float = 0.1
    flush_time: float = 1.0
    batch_num: int = 200
    batch_size: int = _MIB
    max_buffering: int = 50_000
    max_buffering_bytes: int = 64 * _MIB
    wait_on_buffer_full: bool = False
    wait_buffer_timeout: float = 5.0
    error_handle: ErrorHandle | None = None
    partitioner: str | PartitionerFunc = "murmur2"
    compression: Compression = Compression.NONE
    compression_level: int | None = None
    linger: float = 0.0
    max_in_flight: int = 5
    on_delivery: OnDelivery | None = None
    enable_idempotence: bool | None = None
    value_serializer: Serializer | None = None
    key_serializer: Serializer | None = None
    max_request_size: int = _MIB
    close_timeout: float = 10.0
    delivery_timeout: float = 120.0
    cluster_name: str | None = None
    inject_trace_context: bool = False
    spill_dir: str | None = None
    spill_max_bytes: int = 1024 * _MIB
    spill_when_full: str = "drop_newest"
    spill_fsync: str | float = "segment"
    spill_segment_bytes: int = 16 * _MIB

    @property
    def idempotence(self) -> bool:
        """Whether the producer starts idempotent: ``enable_idempotence``, or with
        None, whether ``required_acks=-1``, ``max_in_flight <= 5`` and ``max_retry > 0``
        (the Java client's rule for its default)."""
        if self.enable_idempotence is not None:
            return self.enable_idempotence
        return self.required_acks == -1 and self.max_in_flight <= 5 and self.max_retry > 0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ProducerOptions:
        """Validate ``options`` (producer options only; TypeError for unknown names)."""
        unknown = sorted(set(options) - PRODUCER_OPTION_NAMES)
        if unknown:
            raise TypeError(f"unknown producer option(s): {', '.join(unknown)}")
        o = dict(options)
        acks = _acks(o.get("required_acks", 1))
        idempotent = o.get("enable_idempotence")
        if idempotent is not None:
            idempotent = _bool("enable_idempotence", idempotent)
        max_in_flight = _int("max_in_flight", o.get("max_in_flight", 5), 1)
        if idempotent:
            # KIP-98: the broker keeps the last five batches per producer and
            # partition for duplicate detection, and only acks=all makes a retried
            # batch's sequence number a safe test of "already written".
            if acks != -1:
                raise ValueError(
                    "enable_idempotence=True needs required_acks=-1 ('all'), "
                    f"not required_acks={acks!r}"
                )
            if max_in_flight > 5:
                raise ValueError(
                    f"enable_idempotence=True needs max_in_flight <= 5, not {max_in_flight}"
                )
        codec = _compression(o.get("compression", "none"))
        level = o.get("compression_level")
        if level is not None:
            level = _int("compression_level", level, -131072)
            check_level(codec, level)
        return cls(
            required_acks=acks,
            request_timeout=_seconds("request_timeout", o.get("request_timeout", 30.0), 0.001),
            max_retry=_int("max_retry", o.get("max_retry", 3), 0),
            retry_backoff=_seconds("retry_backoff", o.get("retry_backoff", 0.1), 0.0),
            flush_time=_seconds("flush_time", o.get("flush_time", 1.0), 0.001),
            batch_num=_int("batch_num", o.get("batch_num", 200), 1),
            batch_size=_int("batch_size", o.get("batch_size", _MIB), 1),
            max_buffering=_int("max_buffering", o.get("max_buffering", 50_000), 1),
            max_buffering_bytes=_int(
                "max_buffering_bytes", o.get("max_buffering_bytes", 64 * _MIB), 1
            ),
            wait_on_buffer_full=_bool("wait_on_buffer_full", o.get("wait_on_buffer_full", False)),
            wait_buffer_timeout=_seconds(
                "wait_buffer_timeout", o.get("wait_buffer_timeout", 5.0), 0.0
            ),
            error_handle=_callable("error_handle", o.get("error_handle")),
            partitioner=_partitioner(o.get("partitioner", "murmur2")),
            compression=codec,
            compression_level=level,
            linger=_seconds("linger", o.get("linger", 0.0), 0.0),
            max_in_flight=max_in_flight,
            on_delivery=_callable("on_delivery", o.get("on_delivery")),
            enable_idempotence=idempotent,
            value_serializer=resolve_serializer("value_serializer", o.get("value_serializer")),
            key_serializer=resolve_serializer("key_serializer", o.get("key_serializer")),
            max_request_size=check_max_request_size(o.get("max_request_size", _MIB)),
            close_timeout=_seconds("close_timeout", o.get("close_timeout", 10.0), 0.0),
            delivery_timeout=_seconds("delivery_timeout", o.get("delivery_timeout", 120.0), 0.001),
            cluster_name=_name(o.get("cluster_name")),
            inject_trace_context=_bool(
                "inject_trace_context", o.get("inject_trace_context", False)
            ),
            **_spill_options(o),
        )


PRODUCER_OPTION_NAMES = frozenset(ProducerOptions.__dataclass_fields__)

SHARED_CLIENT_OPTIONS = ("request_timeout", "retry_backoff")
"""Both a client option and a producer setting (the Produce timeout, the retry pause)."""


def split_producer_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(client options, producer options)`` of a Producer's keyword options, the
    :data:`SHARED_CLIENT_OPTIONS` in both."""
    client_options, rest = split_client_options(options)
    for name in SHARED_CLIENT_OPTIONS:
        if name in client_options:
            rest[name] = client_options[name]
    return client_options, rest


def _int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, not {value!r}")
    return value


def _seconds(name: str, value: object, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        # An int beyond a float's range (math.isfinite would raise OverflowError, naming
        # no option); its repr may be refused too (beyond sys.get_int_max_str_digits).
        assert isinstance(value, int)
        try:
            shown = f"{value!r:.60}..."
        except ValueError:
            shown = f"an int of {value.bit_length()} bits"
        raise ValueError(
            f"{name} must be a finite number of seconds >= {minimum}, not {shown}"
        ) from None
    if not math.isfinite(seconds) or seconds < minimum:
        raise ValueError(f"{name} must be a finite number of seconds >= {minimum}, not {value!r}")
    return seconds


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def _acks(value: object) -> int:
    if value == "all" and isinstance(value, str):
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1, -1):
        raise ValueError(f"required_acks must be 0, 1, -1 or 'all', not {value!r}")
    return value


def _compression(value: object) -> Compression:
    if value is None:
        return Compression.NONE
    if isinstance(value, Compression):
        codec = value
    elif isinstance(value, str) and value.upper() in Compression.__members__:
        codec = Compression[value.upper()]
    else:
        names = ", ".join(repr(c.name.lower()) for c in Compression)
        raise ValueError(f"compression must be one of {names}, not {value!r}")
    # A missing codec library should fail here, not when the first batch goes out.
    ensure_available(codec)
    return codec


def _callable(name: str, value: object) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a callable or None, not {value!r}")
    _not_async(name, value)
    return value


def _not_async(name: str, value: object) -> None:
    # The producer calls it and does not await what it returns: an async def would
    # never run, and every failure it was meant to see would pass unseen.
    if inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(
        getattr(value, "__call__", None)  # noqa: B004 (an object with an async __call__)
    ):
        raise TypeError(
            f"{name} must be a plain function, not a coroutine function: {value!r}"
            " (it is called on the event loop and not awaited; schedule async work"
            " from it yourself)"
        )


def _partitioner(value: object) -> str | PartitionerFunc:
    if isinstance(value, str):
        if value not in BUILTIN_PARTITIONERS:
            raise ValueError(
                f"partitioner must be one of {', '.join(BUILTIN_PARTITIONERS)} "
                f"or a callable (key, partition_count) -> int, not {value!r}"
            )
        return value
    if callable(value):
        _not_async("partitioner", value)
        return value
    raise TypeError(f"partitioner must be a str or a callable, not {value!r}")


def _name(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"cluster_name must be a non-empty str or None, not {value!r}")
    return value


def _spill_options(o: dict[str, Any]) -> dict[str, Any]:
    directory = o.get("spill_dir")
    if directory is not None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"spill_dir must be a path (str) or None, not {directory!r}")
        directory = os.fspath(directory)
        if not directory:
            raise ValueError("spill_dir must be a directory's path or None (no spill), not ''")
    when_full = o.get("spill_when_full", "drop_newest")
    if when_full not in ("drop_newest", "block"):
        raise ValueError(f"spill_when_full must be 'drop_newest' or 'block', not {when_full!r}")
    fsync = o.get("spill_fsync", "segment")
    if not (fsync in ("segment", "never") and isinstance(fsync, str)):
        fsync = _seconds("spill_fsync ('segment', 'never' or seconds)", fsync, 0.0)
    # At most 1 GiB: an acknowledgement names a frame by its 32-bit offset in its segment.
    segment = _int("spill_segment_bytes", o.get("spill_segment_bytes", 16 * _MIB), 4096, 1 << 30)
    budget = _int("spill_max_bytes", o.get("spill_max_bytes", 1024 * _MIB), 0)
    return {
        "spill_dir": directory,
        "spill_max_bytes": budget,
        "spill_when_full": when_full,
        "spill_fsync": fsync,
        "spill_segment_bytes": segment,
    }
