"""Admin calls: create and delete topics, add partitions, elect preferred leaders.

Each is a function of a started :class:`~kafka_asgi.cluster.client.KafkaClient`,
using its public surface only (``send_built``, ``refresh``, ``metadata``,
``options``); the client's methods of the same names call these. Every call is
bounded by its ``timeout`` (also handed to the broker as ``timeout_ms``) plus one
metadata refresh, and waits until the cluster's metadata shows the change.

Admin requests go to the controller; under KRaft any broker forwards them
(KIP-590), so a broker-only answer (controller_id of a broker) works too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from kafka_asgi.cluster.metadata import check_topic
from kafka_asgi.cluster.pool import backoff
from kafka_asgi.network.config import check_timeout, timeout_ms
from kafka_asgi.network.errors import ClientRequestTimeoutError
from kafka_asgi.protocol.errors import error_for_code
from kafka_asgi.protocol.messages import (
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    ElectLeadersRequest,
    ElectLeadersResponse,
    Message,
)
from kafka_asgi.protocol.messages.create_partitions import CreatePartitionsTopic
from kafka_asgi.protocol.messages.create_topics import CreatableTopic, CreatableTopicConfig
from kafka_asgi.protocol.messages.delete_topics import DeleteTopicState
from kafka_asgi.protocol.messages.elect_leaders import TopicPartitions

if TYPE_CHECKING:
    from kafka_asgi.cluster.client import KafkaClient

__all__ = [
    "create_partitions",
    "create_topics",
    "delete_topics",
    "elect_preferred_leaders",
    "topic_specs",
]

_NOT_CONTROLLER = 41
_ELECTION_NOT_NEEDED = 84

# The wire types of the fields the callers fill: partition counts and indexes are
# int32, replication_factor an int16, config names and values Kafka strings (at most
# 32767 bytes of UTF-8). Checked at the call: the request is encoded only once the
# controller has been found, too late for an error that names the caller's value.
_INT16_MAX = 2**15 - 1
_INT32_MAX = 2**31 - 1
_STRING_MAX_BYTES = 2**15 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _refresh_limit(client: KafkaClient) -> float:
    config = client.options.connection
    return config.connect_timeout + config.request_timeout


def _controller(client: KafkaClient) -> int | None:
    metadata = client.metadata
    controller = metadata.controller_id
    return controller if controller in metadata.brokers else None


async def _send_controller(
    client: KafkaClient, api_key: int, build: Callable[[int], Message], request_timeout: float
) -> Any:
    if _controller(client) is None:
        await client.refresh([])
    return await client.send_built(
        _controller(client), api_key, build, request_timeout=request_timeout
    )


def _check_int(what: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be {low}..{high}, not {value!r}")
    return value


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"topic name must be a str, not {name!r}")
    return check_topic(name)


def _topic_entries(topics: object, num_partitions: object) -> list[tuple[str, int]]:
    """``(name, partitions)`` per entry of ``topics``, each checked, in order."""
    default = _check_int("num_partitions", num_partitions, 1, _INT32_MAX)
    if isinstance(topics, str):
        topics = [topics]
    if isinstance(topics, (bytes, bytearray)) or not isinstance(topics, Iterable):
        raise TypeError(f"topics must be names or (name, partitions) pairs, not {topics!r}")
    result: list[tuple[str, int]] = []
    for entry in topics:
        if isinstance(entry, str):
            name, parts = entry, default
        elif isinstance(entry, tuple) and len(entry) == 2:
            name, parts = entry
        else:
            raise TypeError(f"topic {entry!r}: expected a name or (name, partitions)")
        name = _check_name(name)
        result.append((name, _check_int(f"topic {name!r}: partitions", parts, 1, _INT32_MAX)))
    if not result:
        raise ValueError("no topics given")
    return result


def topic_specs(topics: Sequence[str | tuple[str, int]], num_partitions: int) -> dict[str, int]:
    """``{name: partitions}`` from names (``num_partitions`` each) or ``(name, n)``.

    Names follow Kafka's rule (:func:`~kafka_asgi.cluster.metadata.check_topic`);
    counts are int32s >= 1. A topic listed twice is a ValueError (which count would
    win?), and a mapping a TypeError: iterating it would keep the names and silently
    drop the counts.
    """
    if isinstance(topics, Mapping):
        raise TypeError(
            f"topics must be names or (name, partitions) pairs, not a mapping: {topics!r}"
            f" (write {list(topics.items())!r})"
        )
    result: dict[str, int] = {}
    for name, parts in _topic_entries(topics, num_partitions):
        if name in result:
            raise ValueError(f"topic {name!r} is listed twice")
        result[name] = parts
    return result


def _config_text(name: str, value: object) -> str:
    # Kafka parses every config from its string form; Java's Boolean.parseBoolean
    # and Double.parseDouble read what these conversions write.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise ValueError(f"config {name!r}: {value!r} does not fit a Kafka long")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"config {name!r}: value must be finite, not {value!r}")
        return repr(value)
    raise TypeError(f"config {name!r}: value must be a str, int, float or bool, not {value!r}")


def _kafka_string(what: str, text: str) -> str:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} has no UTF-8 form") from None
    if size > _STRING_MAX_BYTES:
        raise ValueError(f"{what} {text[:40]!r}... is {size} bytes, more than Kafka's 32767")
    return text


def _topic_configs(configs: object) -> list[CreatableTopicConfig]:
    if configs is None:
        return []
    if not isinstance(configs, Mapping):
        raise TypeError(f"configs must be a mapping of config name -> value, not {configs!r}")
    result = []
    for name, value in configs.items():
        if not isinstance(name, str):
            raise TypeError(f"config names must be strs, not {name!r}")
        if not name:
            raise ValueError(f"config name must not be empty (value {value!r})")
        result.append(
            CreatableTopicConfig(
                name=_kafka_string("config name", name),
                value=_kafka_string(f"config {name!r}: value", _config_text(name, value)),
            )
        )
    return result


def _limit(timeout: float) -> float:
    limit = check_timeout("timeout", timeout)
    assert limit is not None
    return limit


async def _wait_until(client: KafkaClient, topics: list[str], done: Callable[[], bool]) -> None:
    """Refresh ``topics`` until ``done()``, backing off; the caller's scope bounds it."""
    failures = 0
    while True:
        await client.refresh(topics)
        if done():
            return
        failures += 1
        await anyio.sleep(min(backoff(client.options.retry_backoff, failures - 1), 0.5))


def _ready(client: KafkaClient, wanted: Mapping[str, int]) -> bool:
    """Every topic of ``wanted`` listed with at least its partitions, each led."""
    for name, parts in wanted.items():
        meta = client.metadata.topics.get(name)
        if (
            meta is None
            or meta.error_code
            or meta.partition_count < parts
            or len(meta.available_partitions()) < meta.partition_count
        ):
            return False
    return True


async def create_topics(
    client: KafkaClient,
    topics: Sequence[str | tuple[str, int]],
    num_partitions: int = 1,
    replication_factor: int = 1,
    configs: Mapping[str, str | int | float | bool] | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - also the broker-side timeout_ms
) -> None:
    """See :meth:`KafkaClient.create_topics`."""
    limit = _limit(timeout)
    wanted = topic_specs(topics, num_partitions)
    if isinstance(replication_factor, bool) or not isinstance(replication_factor, int):
        raise TypeError(f"replication_factor must be an int, not {replication_factor!r}")
    if not (1 <= replication_factor <= _INT16_MAX or replication_factor == -1):
        raise ValueError(
            f"replication_factor must be 1..{_INT16_MAX} (or -1: the broker's default),"
            f" not {replication_factor!r}"
        )
    config_list = _topic_configs(configs)
    request = CreateTopicsRequest(
        topics=[
            CreatableTopic(
                name=name,
                num_partitions=parts,
                replication_factor=replication_factor,
                configs=config_list,
            )
            for name, parts in wanted.items()
        ],
        timeout_ms=timeout_ms(limit),
    )
    client.require_started()
    with anyio.move_on_after(limit + _refresh_limit(client)) as scope:
        for attempt in range(3):
            response: CreateTopicsResponse = await _send_controller(
                client,
                CreateTopicsRequest.API_KEY,
                lambda _: request,
                limit + client.options.connection.request_timeout,
            )
            codes = {t.name: (t.error_code, t.error_message) for t in response.topics}
            if attempt < 2 and any(c == _NOT_CONTROLLER for c, _ in codes.values()):
                await client.refresh([])
                continue
            break
        for name in wanted:
            code, message = codes.get(name, (0, None))
            if code:
                raise error_for_code(code)(f"topic {name!r}: {message or ''}".rstrip(": "))
        await _wait_until(client, list(wanted), lambda: _ready(client, wanted))
    if scope.cancelled_caught:
        raise ClientRequestTimeoutError(
            f"create_topics: {sorted(wanted)} not ready within {limit}s"
        )


async def delete_topics(
    client: KafkaClient,
    names: Sequence[str],
    timeout: float = 30.0,  # noqa: ASYNC109 - also the broker-side timeout_ms
) -> None:
    """See :meth:`KafkaClient.delete_topics`."""
    limit = _limit(timeout)
    # Deleting a topic twice asks for nothing more: duplicates just collapse.
    wanted = list(dict.fromkeys(name for name, _ in _topic_entries(names, 1)))
    client.require_started()

    def build(version: int) -> DeleteTopicsRequest:
        # v6 (KIP-516) names topics with DeleteTopicState (name or id).
        if version >= 6:
            return DeleteTopicsRequest(
                topics=[DeleteTopicState(name=n) for n in wanted],
                timeout_ms=timeout_ms(limit),
            )
        return DeleteTopicsRequest(topic_names=wanted, timeout_ms=timeout_ms(limit))

    with anyio.move_on_after(limit + _refresh_limit(client)) as scope:
        response: DeleteTopicsResponse = await _send_controller(
            client,
            DeleteTopicsRequest.API_KEY,
            build,
            limit + client.options.connection.request_timeout,
        )
        for result in response.responses:
            if result.error_code:
                raise error_for_code(result.error_code)(
                    f"topic {result.name!r}: {result.error_message or ''}".rstrip(": ")
                )
        await _wait_until(
            client, wanted, lambda: not any(n in client.metadata.topics for n in wanted)
        )
    if scope.cancelled_caught:
        raise ClientRequestTimeoutError(f"delete_topics: {wanted} still listed after {limit}s")


async def create_partitions(
    client: KafkaClient,
    totals: Mapping[str, int],
    timeout: float = 30.0,  # noqa: ASYNC109 - also the broker-side timeout_ms
) -> None:
    """See :meth:`KafkaClient.create_partitions`."""
    limit = _limit(timeout)
    if not isinstance(totals, Mapping) or not totals:
        raise TypeError(
            f"totals must be a non-empty mapping of topic -> partitions, not {totals!r}"
        )
    wanted = topic_specs(list(totals.items()), 1)
    request = CreatePartitionsRequest(
        topics=[
            CreatePartitionsTopic(name=name, count=count, assignments=None)
            for name, count in wanted.items()
        ],
        timeout_ms=timeout_ms(limit),
    )
    client.require_started()
    with anyio.move_on_after(limit + _refresh_limit(client)) as scope:
        response: CreatePartitionsResponse = await _send_controller(
            client,
            CreatePartitionsRequest.API_KEY,
            lambda _: request,
            limit + client.options.connection.request_timeout,
        )
        for result in response.results:
            if result.error_code:
                raise error_for_code(result.error_code)(
                    f"topic {result.name!r}: {result.error_message or ''}".rstrip(": ")
                )
        await _wait_until(client, list(wanted), lambda: _ready(client, wanted))
    if scope.cancelled_caught:
        raise ClientRequestTimeoutError(
            f"create_partitions: {dict(wanted)} not ready within {limit}s"
        )


async def elect_preferred_leaders(
    client: KafkaClient,
    partitions: Mapping[str, Iterable[int]],
    timeout: float = 30.0,  # noqa: ASYNC109 - also the broker-side timeout_ms
) -> None:
    """See :meth:`KafkaClient.elect_preferred_leaders`."""
    limit = _limit(timeout)
    if not isinstance(partitions, Mapping) or not partitions:
        raise TypeError(
            f"partitions must be a non-empty mapping of topic -> partitions, not {partitions!r}"
        )
    wanted: dict[str, list[int]] = {}
    for topic, indexes in partitions.items():
        name = _check_name(topic)
        if isinstance(indexes, (str, bytes, bytearray)) or not isinstance(indexes, Iterable):
            raise TypeError(
                f"topic {name!r}: partitions must be an iterable of ints, not {indexes!r}"
            )
        wanted[name] = [
            _check_int(f"topic {name!r}: partition", index, 0, _INT32_MAX) for index in indexes
        ]
    request = ElectLeadersRequest(
        election_type=0,  # preferred (KIP-460)
        topic_partitions=[TopicPartitions(topic=t, partitions=p) for t, p in wanted.items()],
        timeout_ms=timeout_ms(limit),
    )
    client.require_started()
    with anyio.move_on_after(limit + _refresh_limit(client)) as scope:
        response: ElectLeadersResponse = await _send_controller(
            client,
            ElectLeadersRequest.API_KEY,
            lambda _: request,
            limit + client.options.connection.request_timeout,
        )
        if response.error_code:
            raise error_for_code(response.error_code)("elect_preferred_leaders")
        for result in response.replica_election_results:
            for part in result.partition_result:
                if part.error_code and part.error_code != _ELECTION_NOT_NEEDED:
                    raise error_for_code(part.error_code)(
                        f"topic {result.topic!r} partition {part.partition_id}:"
                        f" {part.error_message or ''}".rstrip(": ")
                    )
        await client.refresh(list(wanted))
    if scope.cancelled_caught:
        raise ClientRequestTimeoutError(f"elect_preferred_leaders: no answer within {limit}s")
