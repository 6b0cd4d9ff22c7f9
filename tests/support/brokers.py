"""The test broker: where it comes from, its listeners' addresses, and brokers that a
test module starts for itself.

Where the shared broker comes from, in order:

1. ``KAFKA_ASGI_TEST_BOOTSTRAP`` is set: that cluster (``host:port`` of a PLAINTEXT
   listener; the TLS/SASL tests then need the other variables named in
   ``from_environment``);
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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_base_port

REPO = Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("CI"))


def _load_harness() -> Any:
    if "kafka_local" in sys.modules:
        return sys.modules["kafka_local"]
    spec = importlib.util.spec_from_file_location(
        "kafka_local", REPO / "scripts" / "kafka_local.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_local"] = module
    spec.loader.exec_module(module)
    return module


kafka_local = _load_harness()


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


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
    # The OAUTHBEARER listeners and the identity provider beside them (local harness).
    oauth_plaintext: str | None = None
    oauth_ssl: str | None = None
    oauth_token_url: str | None = None
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


def from_environment(bootstrap: str) -> KafkaCluster:
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


def docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def session_cluster() -> Iterator[KafkaCluster]:
    """The shared test broker, from the first source that has one (see the module doc)."""
    bootstrap = os.environ.get("KAFKA_ASGI_TEST_BOOTSTRAP")
    if bootstrap:
        yield from_environment(bootstrap)
        return
    if docker_works():
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
        oauth_plaintext=a.oauth_plaintext or None,
        oauth_ssl=a.oauth_ssl or None,
        oauth_token_url=a.oauth_token_url or None,
        source="local",
        harness=broker,
    )
    try:
        yield cluster
    finally:
        if owned:
            broker.stop(remove_data=True)


def no_broker_of_our_own(reason: str) -> None:
    """A test that needs a broker of its own could not start one: fail in CI, else skip."""
    msg = f"cannot start a broker of our own: {reason}"
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@contextlib.contextmanager
def broker_of_our_own(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    properties: dict[str, str] | None = None,
) -> Iterator[Any]:
    """A broker that a test module starts for itself on free ports, so that it may stop
    and restart it (never the shared one), with ``properties`` over the harness's
    settings; removed with its data afterwards."""
    state: Path = tmp_path_factory.mktemp(name) / "state"
    broker = kafka_local.LocalKafka(
        state_dir=state, base_port=free_base_port(), properties=properties
    )
    try:
        broker.start(timeout=120.0)
    except (kafka_local.HarnessError, OSError) as exc:
        broker.stop(remove_data=True)
        no_broker_of_our_own(str(exc))
    try:
        yield broker
    finally:
        broker.stop(remove_data=True)


def topic_at(bootstrap: str, prefix: str, partitions: int = 1) -> str:
    """Create a fresh topic (replication 1) on the broker at ``bootstrap`` with
    confluent-kafka's admin client, and return its name.  The client is gone when
    this returns (librdkafka would keep reconnecting while a test's own broker is
    down)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = unique_name(prefix)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(name, num_partitions=partitions, replication_factor=1)
    admin.create_topics([new])[name].result(30)
    return name


def create_topic(
    kafka: KafkaCluster,
    partitions: int = 1,
    prefix: str = "t",
    config: dict[str, str] | None = None,
) -> str:
    """Create a fresh topic on the test broker (with kafka_asgi's own client) and return
    its name once every partition has a leader.  Callable from sync and async tests."""
    from concurrent.futures import ThreadPoolExecutor

    import anyio

    from kafka_asgi.cluster.client import KafkaClient

    name = unique_name(prefix)

    async def create() -> None:
        async with KafkaClient(kafka.plaintext) as client:
            await client.create_topics([(name, partitions)], configs=config, timeout=30)

    # A thread of its own: this is also called from inside async tests, where an event
    # loop is already running.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, create).result(timeout=60)
    return name
