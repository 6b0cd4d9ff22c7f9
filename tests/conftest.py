"""Test wiring: a real Apache Kafka broker for the whole session, and both anyio backends.

Where the broker comes from, in order:

1. ``KAFKA_ASGI_TEST_BOOTSTRAP`` is set: that cluster (``host:port`` of a PLAINTEXT
   listener; the TLS/SASL tests then need the other variables named in
   ``_from_environment``);
2. a Docker engine answers: testcontainers' Kafka container (PLAINTEXT only);
3. otherwise ``scripts/kafka_local.py`` starts Kafka from the official jars (all
   listeners). A broker that this harness already runs is reused and left running.

With ``CI`` set, a broker that cannot be had fails the run: it never becomes skips.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


def _load_harness() -> Any:
    spec = importlib.util.spec_from_file_location(
        "kafka_local", REPO / "scripts" / "kafka_local.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_local"] = module
    spec.loader.exec_module(module)
    return module


kafka_local = _load_harness()


@dataclass
class KafkaCluster:
    """Addresses of the test broker's listeners; None where this broker lacks one."""

    plaintext: str
    ssl: str | None = None
    sasl_plaintext: str | None = None
    sasl_ssl: str | None = None
    mtls: str | None = None
    ca_file: str | None = None
    other_ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    username: str = "admin"
    password: str = "admin-secret"
    source: str = "local"
    # Set when this session controls the broker's process (the local harness).
    harness: Any = field(default=None, repr=False)

    def require(self, *names: str) -> None:
        """Skip (or, in CI, fail) a test that needs listeners this broker lacks."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            msg = f"test broker ({self.source}) lacks {', '.join(missing)}"
            if IN_CI:
                pytest.fail(msg)
            pytest.skip(msg)

    def stop_broker(self) -> None:
        self.require("harness")
        self.harness.stop()

    def start_broker(self) -> None:
        self.require("harness")
        self.harness.start(fresh=False)

    def restart_broker(self) -> None:
        self.require("harness")
        self.harness.restart()


def _from_environment(bootstrap: str) -> KafkaCluster:
    env = os.environ.get
    return KafkaCluster(
        plaintext=bootstrap,
        ssl=env("KAFKA_ASGI_TEST_SSL"),
        sasl_plaintext=env("KAFKA_ASGI_TEST_SASL_PLAINTEXT"),
        sasl_ssl=env("KAFKA_ASGI_TEST_SASL_SSL"),
        mtls=env("KAFKA_ASGI_TEST_MTLS"),
        ca_file=env("KAFKA_ASGI_TEST_CA_FILE"),
        client_cert=env("KAFKA_ASGI_TEST_CLIENT_CERT"),
        client_key=env("KAFKA_ASGI_TEST_CLIENT_KEY"),
        username=env("KAFKA_ASGI_TEST_USERNAME", "admin") or "admin",
        password=env("KAFKA_ASGI_TEST_PASSWORD", "admin-secret") or "admin-secret",
        source="environment",
    )


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaCluster]:
    bootstrap = os.environ.get("KAFKA_ASGI_TEST_BOOTSTRAP")
    if bootstrap:
        yield _from_environment(bootstrap)
        return
    if _docker_works():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield KafkaCluster(plaintext=container.get_bootstrap_server(), source="testcontainers")
        return
    broker = kafka_local.LocalKafka(base_port=int(os.environ.get("KAFKA_LOCAL_BASE_PORT", "9092")))
    owned = False
    try:
        if not broker.running():
            broker.stop()
            broker.start(timeout=90.0)
            owned = True
    except (kafka_local.HarnessError, OSError) as exc:
        msg = f"no Kafka broker for the tests: {exc}"
        if IN_CI:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    a = broker.addresses()
    cluster = KafkaCluster(
        plaintext=a.plaintext,
        ssl=a.ssl,
        sasl_plaintext=a.sasl_plaintext,
        sasl_ssl=a.sasl_ssl,
        mtls=a.mtls,
        ca_file=a.ca_file,
        other_ca_file=str(broker.state / "other-ca.pem"),
        client_cert=a.client_cert,
        client_key=a.client_key,
        username=a.username,
        password=a.password,
        source="local",
        harness=broker,
    )
    try:
        yield cluster
    finally:
        if owned:
            broker.stop(remove_data=True)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def free_port() -> int:
    """A port nothing listens on right now (for "connection refused" cases)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(check: Callable[[], bool], within: float) -> bool:
    """Poll ``check`` every 50 ms for up to ``within`` seconds; its last answer."""
    import anyio

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await anyio.sleep(0.05)
    return check()


def free_base_port(count: int = 6) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 right now: the
    listeners of a broker that a test starts for itself (fixed ports would clash
    with another run on the same machine)."""
    import random
    import socket

    # Below the kernel's ephemeral range, so that no outgoing connection takes one of
    # them between this check and the broker's bind.
    low = 20000
    high = 60000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
        if ephemeral_low - count > low + 1000:
            high = ephemeral_low
    except (OSError, ValueError, IndexError):
        pass
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def no_broker_of_our_own(reason: str) -> None:
    """A test that needs a broker of its own could not start one: fail in CI, else skip."""
    msg = f"cannot start a broker of our own: {reason}"
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@contextlib.contextmanager
def broker_of_our_own(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Any]:
    """A broker that a test module starts for itself on free ports, so that it may stop
    and restart it (never the shared one); removed with its data afterwards."""
    state: Path = tmp_path_factory.mktemp(name) / "state"
    broker = kafka_local.LocalKafka(state_dir=state, base_port=free_base_port())
    try:
        broker.start(timeout=120.0)
    except (kafka_local.HarnessError, OSError) as exc:
        broker.stop(remove_data=True)
        no_broker_of_our_own(str(exc))
    try:
        yield broker
    finally:
        broker.stop(remove_data=True)


@pytest.fixture(scope="module")
def _own_broker_process(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    with broker_of_our_own(tmp_path_factory, request.module.__name__.rsplit(".", 1)[-1]) as b:
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


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def new_topic(kafka: KafkaCluster) -> Callable[..., str]:
    """Create a fresh topic on the test broker (with kafka_asgi's own client) and return
    its name once every partition has a leader."""
    from concurrent.futures import ThreadPoolExecutor

    import anyio

    from kafka_asgi.cluster.client import KafkaClient

    def make(partitions: int = 1, prefix: str = "t", config: dict[str, str] | None = None) -> str:
        name = unique_name(prefix)

        async def create() -> None:
            async with KafkaClient(kafka.plaintext) as client:
                await client.create_topics([(name, partitions)], configs=config, timeout=30)

        # A thread of its own: the fixture is also called from inside async tests,
        # where an event loop is already running.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(anyio.run, create).result(timeout=60)
        return name

    return make
