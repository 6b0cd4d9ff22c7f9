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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

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


def topic_specs(topics: Sequence[str | tuple[str, int]], num_partitions: int) -> dict[str, int]:
    """``{name: partitions}`` from names (``num_partitions`` each) or ``(name, n)``."""
    if isinstance(topics, str):
        topics = [topics]
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int):
        raise TypeError("num_partitions must be an int")
    result: dict[str, int] = {}
    for entry in topics:
        if isinstance(entry, str):
            name, parts = entry, num_partitions
        elif isinstance(entry, tuple) and len(entry) == 2:
            name, parts = entry
        else:
            raise TypeError(f"topic {entry!r}: expected a name or (name, partitions)")
        if not isinstance(name, str) or not name:
            raise ValueError(f"bad topic name {name!r}")
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise ValueError(f"topic {name!r}: partitions must be an int >= 1, not {parts!r}")
        result[name] = parts
    if not result:
        raise ValueError("no topics given")
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
    configs: Mapping[str, str] | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - also the broker-side timeout_ms
) -> None:
    """See :meth:`KafkaClient.create_topics`."""
    limit = _limit(timeout)
    wanted = topic_specs(topics, num_partitions)
    if isinstance(replication_factor, bool) or not isinstance(replication_factor, int):
        raise TypeError("replication_factor must be an int")
    if replication_factor < 1 and replication_factor != -1:
        raise ValueError(f"replication_factor must be >= 1 (or -1), not {replication_factor}")
    config_list = [
        CreatableTopicConfig(name=str(k), value=None if v is None else str(v))
        for k, v in (configs or {}).items()
    ]
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
    wanted = list(topic_specs(names, 1))
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
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"bad topic name {topic!r}")
        listed = list(indexes)
        for index in listed:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(f"topic {topic!r}: bad partition {index!r}")
        wanted[topic] = listed
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
