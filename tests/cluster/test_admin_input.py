"""Admin calls refuse bad input at the call, before any broker is asked; no broker here.

A client that was never started answers every valid call with "not started"
(RuntimeError): a test expecting TypeError/ValueError therefore shows the check ran
first. ``RecordingClient`` goes one step further and keeps the request the call built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest

from kafka_asgi.cluster import admin
from kafka_asgi.cluster.client import KafkaClient
from kafka_asgi.cluster.metadata import ClusterMetadata
from kafka_asgi.protocol.messages import CreateTopicsRequest, Message

pytestmark = pytest.mark.anyio

INT32_MAX = 2**31 - 1


class _Sent(Exception):
    """Raised by RecordingClient in place of sending."""


class RecordingClient(KafkaClient):
    """Keeps the request builder an admin call hands over, and sends nothing."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:1")
        self.built: list[Callable[[int], Message]] = []

    def require_started(self) -> None:
        pass

    async def refresh(self, topics: Iterable[str] | None = None) -> ClusterMetadata:
        return self.metadata

    async def send_built(
        self, node_id: int | None, api_key: int, build: Callable[[int], Message], **_: Any
    ) -> Any:
        self.built.append(build)
        raise _Sent


# ---------------------------------------------------------------- finding 1: topics


async def test_create_topics_refuses_a_mapping(anyio_backend: str) -> None:
    """{"t": 3} used to create "t" with one partition: the mapping's 3 was dropped."""
    with pytest.raises(TypeError, match=r"mapping: \{'t': 3\}.*\[\('t', 3\)\]"):
        await KafkaClient("127.0.0.1:1").create_topics({"t": 3})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "topics", [[("t", 1), ("t", 3)], ["t", ("t", 3)], ["t", "t"]], ids=["pairs", "mixed", "names"]
)
async def test_create_topics_refuses_a_topic_named_twice(
    anyio_backend: str, topics: list[Any]
) -> None:
    with pytest.raises(ValueError, match="topic 't' is listed twice"):
        await KafkaClient("127.0.0.1:1").create_topics(topics)


# ---------------------------------------------------------------- finding 2: configs


@pytest.mark.parametrize(
    ("configs", "exc", "fragment"),
    [
        ([("a", "b")], TypeError, "[('a', 'b')]"),
        ("ab", TypeError, "'ab'"),
        ({"retention.ms": b"1"}, TypeError, "'retention.ms': value must be a str, int, float"),
        ({"retention.ms": None}, TypeError, "None"),
        ({"retention.ms": [1]}, TypeError, "[1]"),
        ({5: "1"}, TypeError, "5"),
        ({"": "1"}, ValueError, "empty"),
        ({"min.cleanable.dirty.ratio": float("nan")}, ValueError, "nan"),
        ({"retention.ms": 2**63}, ValueError, str(2**63)),
    ],
)
async def test_create_topics_bad_configs(
    anyio_backend: str, configs: Any, exc: type[Exception], fragment: str
) -> None:
    with pytest.raises(exc) as info:
        await KafkaClient("127.0.0.1:1").create_topics(["t"], configs=configs)
    assert fragment in str(info.value)


async def test_config_values_are_sent_as_kafka_reads_them(anyio_backend: str) -> None:
    """Kafka parses configs from strings: True went as "True" and b"1" as "b'1'"."""
    client = RecordingClient()
    configs: dict[str, str | int | float | bool] = {
        "retention.ms": 86_400_000,
        "unclean.leader.election.enable": True,
        "preallocate": False,
        "min.cleanable.dirty.ratio": 0.25,
        "cleanup.policy": "compact",
    }
    with pytest.raises(_Sent):
        await admin.create_topics(client, [("t", INT32_MAX)], configs=configs)
    (build,) = client.built
    for version in range(CreateTopicsRequest.MIN_VERSION, CreateTopicsRequest.MAX_VERSION + 1):
        request = build(version)
        assert isinstance(request, CreateTopicsRequest)
        request.encode(version)
        (topic,) = request.topics
        assert {c.name: c.value for c in topic.configs} == {
            "retention.ms": "86400000",
            "unclean.leader.election.enable": "true",
            "preallocate": "false",
            "min.cleanable.dirty.ratio": "0.25",
            "cleanup.policy": "compact",
        }


# ---------------------------------------------------------------- finding 3: at the call


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragment"),
    [
        ({"topics": ["a/b"]}, ValueError, "invalid topic name 'a/b'"),
        ({"topics": [("x" * 250, 1)]}, ValueError, "invalid topic name"),
        ({"topics": ["t\udcff"]}, ValueError, "'t\\udcff'"),
        ({"topics": [(5, 1)]}, TypeError, "5"),
        ({"topics": [("t", 2**31)]}, ValueError, str(2**31)),
        ({"topics": [("t", True)]}, TypeError, "True"),
        ({"topics": ["t"], "num_partitions": 2**31}, ValueError, "num_partitions"),
        (
            {"topics": ["t"], "num_partitions": True},
            TypeError,
            "num_partitions must be an int, not True",
        ),
        ({"topics": ["t"], "replication_factor": 2**15}, ValueError, str(2**15)),
        ({"topics": ["t"], "replication_factor": True}, TypeError, "True"),
        ({"topics": ["t"], "configs": {"k\udcff": "v"}}, ValueError, "'k\\udcff'"),
        ({"topics": ["t"], "configs": {"k": "v\udcff"}}, ValueError, "'v\\udcff'"),
        ({"topics": ["t"], "configs": {"k": "v" * 32768}}, ValueError, "32768 bytes"),
        ({"topics": b"t"}, TypeError, "b't'"),
        ({"topics": 5}, TypeError, "5"),
    ],
)
async def test_create_topics_checks_at_the_call(
    anyio_backend: str, kwargs: dict[str, Any], exc: type[Exception], fragment: str
) -> None:
    with pytest.raises(exc) as info:
        await KafkaClient("127.0.0.1:1").create_topics(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("names", "exc", "fragment"),
    [
        (["a/b"], ValueError, "'a/b'"),
        (["t\udcff"], ValueError, "'t\\udcff'"),
        (b"t", TypeError, "not b't'"),
    ],
)
async def test_delete_topics_checks_names_at_the_call(
    anyio_backend: str, names: Any, exc: type[Exception], fragment: str
) -> None:
    with pytest.raises(exc) as info:
        await KafkaClient("127.0.0.1:1").delete_topics(names)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("totals", "exc", "fragment"),
    [
        ({"t": 2**31}, ValueError, str(2**31)),
        ({"t": True}, TypeError, "True"),
        ({"a/b": 2}, ValueError, "'a/b'"),
        ({"t\udcff": 2}, ValueError, "'t\\udcff'"),
    ],
)
async def test_create_partitions_checks_at_the_call(
    anyio_backend: str, totals: Any, exc: type[Exception], fragment: str
) -> None:
    with pytest.raises(exc) as info:
        await KafkaClient("127.0.0.1:1").create_partitions(totals)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("partitions", "exc", "fragment"),
    [
        ({"t": [2**31]}, ValueError, str(2**31)),
        ({"t": [True]}, TypeError, "True"),
        ({"t": [0.0]}, TypeError, "0.0"),
        ({"t": 0}, TypeError, "iterable of ints, not 0"),
        ({"t": "01"}, TypeError, "'01'"),
        ({"a/b": [0]}, ValueError, "'a/b'"),
        ({"t\udcff": [0]}, ValueError, "'t\\udcff'"),
    ],
)
async def test_elect_preferred_leaders_checks_at_the_call(
    anyio_backend: str, partitions: Any, exc: type[Exception], fragment: str
) -> None:
    with pytest.raises(exc) as info:
        await KafkaClient("127.0.0.1:1").elect_preferred_leaders(partitions)
    assert fragment in str(info.value)


# ---------------------------------------------------------------- what stays accepted


async def test_accepted_inputs_still_reach_the_broker(anyio_backend: str) -> None:
    """A guard, not a finding: the forms callers use pass every check (and so meet
    "not started" on a client that never started)."""
    client = KafkaClient("127.0.0.1:1")
    calls: list[Callable[[], Awaitable[None]]] = [
        lambda: client.create_topics(["t"]),
        lambda: client.create_topics("t"),
        lambda: client.create_topics(["a", ("b", 4)], num_partitions=2, replication_factor=-1),
        lambda: client.create_topics([("a.b_c-1", INT32_MAX)], replication_factor=2**15 - 1),
        lambda: client.create_topics(["t"], configs={"cleanup.policy": "compact"}),
        lambda: client.delete_topics(["a", "a", "b"]),
        lambda: client.delete_topics("a"),
        lambda: client.create_partitions({"t": INT32_MAX}),
        lambda: client.elect_preferred_leaders({"t": [0, INT32_MAX]}),
        lambda: client.elect_preferred_leaders({"t": range(3)}),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="not started"):
            await call()
