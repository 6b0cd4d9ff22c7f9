"""pytest fixtures: a real Apache Kafka broker for the whole session, brokers of a test
module's own, fresh topics, and both anyio backends.  The helpers behind them live in
``tests/support/`` (tests import them from there, never from this file)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.brokers import (
    KafkaCluster,
    broker_of_our_own,
    create_topic,
    kafka_local,
    no_broker_of_our_own,
    session_cluster,
)
from tests.support.ports import free_base_port


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaCluster]:
    with session_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def _own_broker_process(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    # A module may set OWN_BROKER_PROPERTIES: broker settings its tests need.
    properties = getattr(request.module, "OWN_BROKER_PROPERTIES", None)
    name = request.module.__name__.rsplit(".", 1)[-1]
    with broker_of_our_own(tmp_path_factory, name, properties) as b:
        yield b


@pytest.fixture
def own_broker(_own_broker_process: Any) -> Any:
    """A broker of the test module's own (never the shared one), which its tests may
    stop and restart; started again if an earlier test stopped it and then failed
    before bringing it back (one failure must not cascade into the next test)."""
    if _own_broker_process.pid() is None:
        _own_broker_process.start(timeout=120.0, fresh=False)
    return _own_broker_process


@pytest.fixture(scope="session")
def _cluster_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Three local brokers (scripts/kafka_local.py --nodes 3) on free ports of their
    own, for the whole session; removed with their data afterwards."""
    state: Path = tmp_path_factory.mktemp("cluster") / "state"
    cluster = kafka_local.LocalKafka(state_dir=state, base_port=free_base_port(14), nodes=3)
    try:
        cluster.start(timeout=180.0)
    except (kafka_local.HarnessError, OSError) as exc:
        cluster.stop(remove_data=True)
        no_broker_of_our_own(f"three-broker cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop(remove_data=True)


@pytest.fixture
def kafka_cluster(_cluster_process: Any) -> Any:
    """The session's three-broker cluster (tests/support/cluster.py ThreeBrokers), every
    node running: a node that an earlier test stopped or killed is started again."""
    from tests.support.cluster import ThreeBrokers

    cluster = ThreeBrokers.of(_cluster_process)
    cluster.heal()
    return cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test on the three-broker cluster carries the "cluster" mark (-m cluster).
    for item in items:
        if "kafka_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture
def new_topic(kafka: KafkaCluster) -> Callable[..., str]:
    """Create a fresh topic on the test broker and return its name once every partition
    has a leader: ``new_topic(partitions=1, prefix="t", config=None)``."""

    def make(partitions: int = 1, prefix: str = "t", config: dict[str, str] | None = None) -> str:
        return create_topic(kafka, partitions, prefix, config)

    return make
