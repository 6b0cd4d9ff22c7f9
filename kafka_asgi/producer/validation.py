"""The send methods' arguments: coerced to what goes on the wire, or rejected.

One set of rules for :class:`~kafka_asgi.producer.Producer` and for the in-memory
producer apps test with (``kafka_asgi.integrations.testing``), so that the fake
raises what the real one raises (same type, same message) and applies the same
serializers.  Each check raises TypeError (wrong type) or ValueError (wrong value)
naming the value, at the call that received it.

The checks run in one order (topic, value, key, headers, timestamp, partition), so a
call with several bad arguments fails on the same one in both producers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Container, Mapping
from typing import Any

from kafka_asgi.cluster.metadata import check_topic

from .accumulator import RECORD_OVERHEAD, CheckedRecord, largest_record, record_bytes, too_large

__all__ = [
    "Serializer",
    "as_bytes",
    "check_partition",
    "check_timestamp",
    "check_topic",
    "check_wait",
    "coerce_headers",
    "coerce_record",
    "json_serializer",
    "resolve_serializer",
    "timestamp_ns",
]

Serializer = Callable[[Any], bytes]
"""A value_serializer/key_serializer: object -> bytes (a str returned is UTF-8 encoded)."""

_INT64_MAX = (1 << 63) - 1
_INT32_MAX = (1 << 31) - 1
_BYTES_LIKE = (bytes, bytearray, memoryview)


def check_wait(name: str, value: object) -> float | None:
    """A caller's own wait (``flush(timeout=...)``, ``close(timeout=...)``): None (the
    default applies) or a number of seconds >= 0, ``inf`` waiting as long as it takes;
    else a TypeError or ValueError naming ``name`` and the value."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be None or a number of seconds, not {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be None or a number of seconds >= 0, not {value!r}")
    return float(value)


def json_serializer(value: Any) -> bytes:
    """``value_serializer='json'``: compact JSON, UTF-8. NaN and infinities raise
    ValueError: JSON has none (RFC 8259, section 6), and a consumer's parser would
    refuse the record."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def resolve_serializer(name: str, value: object) -> Serializer | None:
    """The ``value_serializer``/``key_serializer`` option: None, 'json' or a callable."""
    if value is None:
        return None
    if value == "json":
        return json_serializer
    if callable(value):
        return value
    raise TypeError(f"{name} must be None, 'json' or a callable obj -> bytes, not {value!r}")


def _utf8(text: str, what: str, hint: str = "; pass bytes instead") -> bytes:
    """``text`` in UTF-8, or a ValueError naming ``what`` (a lone surrogate, such as
    one left by ``os.fsdecode`` or ``surrogateescape``, has no UTF-8 form)."""
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} {text!r:.80} cannot be encoded as UTF-8 ({exc.reason} at position "
            f"{exc.start}){hint}"
        ) from None


def as_bytes(value: object, what: str, serializer: Serializer | None) -> bytes | None:
    """The bytes of a value or key (``what``); bytes-like and str pass without the
    serializer, anything else needs one."""
    if value is None:
        return None
    if value.__class__ is bytes:
        return value
    if serializer is not None and not isinstance(value, _BYTES_LIKE):
        try:
            out = serializer(value)
        except Exception as exc:
            # A value the serializer refuses (NaN for JSON, a cycle) stays a ValueError.
            error = ValueError if isinstance(exc, ValueError) else TypeError
            raise error(f"{what}_serializer failed on {value!r:.80}: {exc!r}") from exc
        if isinstance(out, str):
            return _utf8(out, f"{what}_serializer's result", "; return bytes instead")
        if not isinstance(out, _BYTES_LIKE):
            raise TypeError(f"{what}_serializer must return bytes, returned {type(out).__name__}")
        return bytes(out)
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError:
            return _utf8(value, what)  # raises, naming it (off the common path)
    if isinstance(value, _BYTES_LIKE):
        return bytes(value)
    raise TypeError(
        f"{what} must be bytes, str or None, not {type(value).__name__} "
        f"(set {what}_serializer, e.g. {what}_serializer='json', to send other objects)"
    )


def coerce_headers(headers: object) -> list[tuple[str, bytes | None]] | None:
    """Headers as (str, bytes | None) pairs (None when there are none), from a mapping
    or a list/tuple of pairs whose values are bytes-like, str or None."""
    if headers is None:
        return None
    if isinstance(headers, Mapping):
        items: Any = headers.items()
    elif isinstance(headers, (list, tuple)):
        items = headers
    else:
        raise TypeError(
            "headers must be a mapping or a sequence of (str, bytes | str | None) pairs, "
            f"not {type(headers).__name__}"
        )
    out: list[tuple[str, bytes | None]] = []
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError(f"each header must be a (name, value) pair, not {item!r:.80}")
        name, value = item
        if not isinstance(name, str):
            raise TypeError(f"header name must be a str, not {name!r:.80}")
        if not name.isascii():
            # Encoded with the batch: one that cannot be would fail the whole batch.
            _utf8(name, "header name", "")
        if value is not None and value.__class__ is not bytes:
            if isinstance(value, str):
                try:
                    value = value.encode()
                except UnicodeEncodeError:
                    _utf8(value, f"header {name!r} value")  # raises, naming it
                    raise
            elif isinstance(value, (bytearray, memoryview)):
                value = bytes(value)
            else:
                raise TypeError(
                    f"header {name!r} value must be bytes, str or None, not {type(value).__name__}"
                )
        out.append((name, value))
    return out or None


def check_timestamp(timestamp: object) -> int | None:
    """A record timestamp: None (now) or an int of milliseconds since the epoch."""
    if timestamp is None:
        return None
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError(
            f"timestamp must be an int (milliseconds since the epoch) or None, "
            f"not {type(timestamp).__name__}"
        )
    if not 0 <= timestamp <= _INT64_MAX:
        raise ValueError(
            f"timestamp must be between 0 and {_INT64_MAX} (milliseconds), not {timestamp!r}"
        )
    return timestamp


def timestamp_ns(timestamp: object) -> int:
    """A record timestamp (ms since the epoch, or None for now) in nanoseconds, as
    the producer keeps them."""
    ms = check_timestamp(timestamp)
    return time.time_ns() if ms is None else ms * 1_000_000


def check_partition(partition: object) -> int | None:
    """An explicit partition: None (the partitioner picks) or an int32 >= 0."""
    if partition is None:
        return None
    if isinstance(partition, bool) or not isinstance(partition, int):
        raise TypeError(f"partition must be an int or None, not {partition!r}")
    if not 0 <= partition <= _INT32_MAX:
        raise ValueError(f"partition must be between 0 and {_INT32_MAX}, not {partition!r}")
    return partition


def check_record(
    topic: object,
    value: object,
    key: object,
    headers: object,
    partition: object,
    timestamp: object,
    value_serializer: Serializer | None,
    key_serializer: Serializer | None,
    max_request_size: int,
    known: Container[str] = (),
) -> CheckedRecord:
    """:func:`coerce_record`, then the record's size against ``max_request_size``
    (RecordTooLargeError): what a producer's ``check_record`` does. A bytes value
    alone, for a topic in ``known`` (names checked before), is taken as it is: the
    access logs' events, checked in the request's thread, pay a few comparisons."""
    if (
        value.__class__ is bytes
        and key is None
        and headers is None
        and partition is None
        and timestamp is None
        and topic.__class__ is str
        and topic in known
        and len(value) + RECORD_OVERHEAD <= largest_record(max_request_size)
    ):
        return topic, value, None, None, None, None
    checked = coerce_record(
        topic, value, key, headers, partition, timestamp, value_serializer, key_serializer
    )
    size = record_bytes(checked[1], checked[2], checked[3])
    if size > largest_record(max_request_size):
        raise too_large(checked[0], size, max_request_size)
    return checked


def coerce_record(
    topic: object,
    value: object,
    key: object,
    headers: object,
    partition: object,
    timestamp: object,
    value_serializer: Serializer | None = None,
    key_serializer: Serializer | None = None,
) -> tuple[
    str, bytes | None, bytes | None, list[tuple[str, bytes | None]] | None, int | None, int | None
]:
    """Every check of one record, in the producer's order: (topic, value, key,
    headers, partition, timestamp in ms or None)."""
    topic = check_topic(topic)
    value_bytes = as_bytes(value, "value", value_serializer)
    key_bytes = as_bytes(key, "key", key_serializer)
    hdrs = coerce_headers(headers)
    ms = check_timestamp(timestamp)
    return topic, value_bytes, key_bytes, hdrs, check_partition(partition), ms
