#!/usr/bin/env python3
"""Start a real Apache Kafka 4.x broker on 127.0.0.1 without Docker.

The broker comes from the official ``org.apache.kafka:kafka_2.13`` jars, which
Maven resolves once into ``.cache/kafka-<version>/`` (ignored by git); later runs
need no network.  One combined broker+controller runs in KRaft mode with these
listeners (offsets from ``--base-port``, default 9092):

    +0 PLAINTEXT        +3 SASL_SSL        (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
    +1 SSL              +4 MTLS            (SSL, client certificate required)
    +2 SASL_PLAINTEXT   +5 CONTROLLER      (internal)
    +6 OAUTH_PLAINTEXT  +7 OAUTH_SSL       (SASL_PLAINTEXT / SASL_SSL, OAUTHBEARER)
    +8 the OAuth identity provider's HTTP port (scripts/oauth_idp.py: /token, /jwks)

The OAUTHBEARER listeners check signed JWTs against the identity provider's JWKS,
the way production brokers do (OAuthBearerValidatorCallbackHandler, audience
``kafka``), and end each SASL session after ``OAUTH_REAUTH_MS`` so that clients must
re-authenticate (KIP-368).

With ``--nodes 3`` three such processes form one cluster: each is a KRaft voter
and a broker (lighter on a small machine than separate controllers).  Node 0 keeps
every listener above; node 1 has PLAINTEXT on +10 (CONTROLLER +11), node 2
PLAINTEXT on +12 (CONTROLLER +13).  The cluster replicates: default replication
factor 3, ``min.insync.replicas=2``, the internal topics with 3 replicas.  One node
can be stopped, killed (SIGKILL, as a crash) and started again: ``--node I``.

SASL user ``admin`` / ``admin-secret`` for every mechanism; the SCRAM
credentials are written into the metadata log at format time.  A throw-away CA,
a server certificate for 127.0.0.1/localhost and a client certificate are made
at start; their PEM files live in the state dir (``.kafka/`` by default).

Usage::

    python scripts/kafka_local.py start|stop|status|restart [--base-port N] [--state-dir D]
        [--nodes N] [--kafka-version V]
    python scripts/kafka_local.py start|stop|kill|status --node I    # one node of a cluster

``start`` returns once every listener answered for real (SASL listeners
authenticate, TLS listeners verify the generated CA) and prints the addresses
as JSON; on failure it prints the broker's log tail and exits non-zero within
``--timeout`` seconds (60 by default).

This file is a development and test tool, not part of the installed package:
it depends on the standard library only (``scramp`` is used when present to
check SCRAM as well as PLAIN).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KAFKA_VERSION = os.environ.get("KAFKA_LOCAL_VERSION", "4.1.1")
# The versions `scripts/dev.py test-versions` runs the broker tests against.
TESTED_VERSIONS = ("3.9.1", "4.1.1", "4.4.0")
# Kafka 4.x logs through SLF4J 1.7; this binding sends it to log4j2 (a Kafka dependency).
LOG4J_VERSION = "2.24.3"
# Kafka 3.x logs through log4j 1 (reload4j), bound by slf4j-reload4j.
RELOAD4J_BINDING = ("org.slf4j", "slf4j-reload4j", "1.7.36")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO / ".kafka"
CACHE_ROOT = Path(os.environ.get("KAFKA_LOCAL_CACHE", REPO / ".cache"))
CACHE_DIR = CACHE_ROOT / f"kafka-{KAFKA_VERSION}"
USERNAME = "admin"
PASSWORD = "admin-secret"
# A second SCRAM user whose password RFC 4013 SASLprep would change or refuse (a
# no-break space, a ligature, a tab): Kafka salts its UTF-8 bytes as they are, and a
# client must too (tests/network/test_scram_broker.py). The name is ASCII: a broker's
# SCRAM message parser takes no other (its saslname pattern is ASCII only).
UNICODE_USERNAME = "scram-utf8"
UNICODE_PASSWORD = "p\u00e4s\ts\u00a0\ufb01-word"
JVM_HEAP = os.environ.get("KAFKA_LOCAL_HEAP", "512m")
# Each node of a cluster gets less: three JVMs share a small machine.
CLUSTER_JVM_HEAP = os.environ.get("KAFKA_LOCAL_HEAP", "384m")
# The OAUTHBEARER listeners' connections.max.reauth.ms: short, for the KIP-368 tests.
OAUTH_REAUTH_MS = 4000
IDP_PORT_OFFSET = 8


def oauth_idp() -> Any:
    """scripts/oauth_idp.py as a module (this file is also loaded by path, not as a package)."""
    name = "kafka_asgi_oauth_idp"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("oauth_idp.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# Ports of node I >= 1 of a cluster: PLAINTEXT at base + NODE_PORT_OFFSET + 2 * (I - 1),
# its CONTROLLER one above (node 0 keeps the single-node layout).
NODE_PORT_OFFSET = 10
MAX_NODES = 3


def log4j_major(version: str) -> int:
    """Kafka before 4.0 logs through log4j 1 (reload4j), from 4.0 on through log4j2."""
    try:
        return 1 if int(version.split(".")[0]) < 4 else 2
    except ValueError:
        return 2


@dataclass
class Addresses:
    """The listeners of a running local broker, as tests and tools need them."""

    plaintext: str
    ssl: str
    sasl_plaintext: str
    sasl_ssl: str
    mtls: str
    ca_file: str
    client_cert: str
    client_key: str
    username: str = USERNAME
    password: str = PASSWORD
    kafka_version: str = KAFKA_VERSION
    # Every node's PLAINTEXT listener, comma-separated (the one above for a single node).
    bootstrap: str = ""
    nodes: int = 1
    oauth_plaintext: str = ""
    oauth_ssl: str = ""
    oauth_token_url: str = ""
    oauth_jwks_url: str = ""
    oauth_client_id: str = ""
    oauth_client_secret: str = ""


class HarnessError(RuntimeError):
    pass


# --------------------------------------------------------------------------- jars


def _jar_names(jar: Path) -> set[str]:
    """The entry names of a jar (empty when it cannot be read)."""
    try:
        with zipfile.ZipFile(jar) as z:
            return set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return set()


def _resolve_once(
    version: str,
    name: str,
    marker_name: str,
    dependencies: list[tuple[str, str, str]],
    expect: str,
    what: str,
    quiet: bool = False,
) -> Path:
    """Copy ``dependencies`` ((group, artifact, version)) and theirs with Maven into
    the version's cache directory ``name``, once (``marker_name`` says it was done);
    ``expect``: a glob of a jar that must then be there."""
    cache = CACHE_ROOT / f"kafka-{version}"
    out = cache / name
    marker = cache / marker_name
    if marker.exists():
        return out
    if shutil.which("mvn") is None:
        raise HarnessError(f"Maven (mvn) is needed once to fetch {what}; install it")
    cache.mkdir(parents=True, exist_ok=True)
    pom = cache / f"{name}-pom.xml"
    deps = "".join(
        f"""
    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>
      <version>{dep_version}</version></dependency>"""
        for group, artifact, dep_version in dependencies
    )
    pom.write_text(
        f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-asgi</groupId><artifactId>kafka-{name}</artifactId><version>1</version>
  <dependencies>{deps}
  </dependencies>
</project>
"""
    )
    if out.exists():
        shutil.rmtree(out)
    cmd = ["mvn", "-B", "-q", "-f", str(pom), "dependency:copy-dependencies"]
    cmd.append(f"-DoutputDirectory={out}")
    if not quiet:
        print(f"resolving {what} with Maven (once)...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not any(out.glob(expect)):
        raise HarnessError(f"maven could not resolve {what}:\n{proc.stdout}{proc.stderr}")
    marker.write_text(version)
    return out


def resolve_jars(quiet: bool = False, version: str | None = None) -> Path:
    """Resolve the broker's jars with Maven once; later calls reuse the cache."""
    version = version or KAFKA_VERSION
    if log4j_major(version) == 1:
        binding = RELOAD4J_BINDING
    else:
        binding = ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION)
    return _resolve_once(
        version,
        "libs",
        "resolved",
        [("org.apache.kafka", "kafka_2.13", version), binding],
        "kafka_2.13-*.jar",
        f"Apache Kafka {version}",
        quiet,
    )


def resolve_tools(version: str | None = None) -> Path:
    """Kafka's command-line tools (``kafka-tools``: ConfigCommand lives there in later
    versions, 4.4.0 among them, not in the broker's jars as in 4.1.1), resolved with
    Maven once into a directory of their own: the broker's class path stays as it was."""
    version = version or KAFKA_VERSION
    return _resolve_once(
        version,
        "tools",
        "tools-resolved",
        [("org.apache.kafka", "kafka-tools", version)],
        "kafka-tools-*.jar",
        f"Apache Kafka {version}'s tools",
    )


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise HarnessError("Java 17+ is needed to run the Kafka broker")
    return found


# --------------------------------------------------------------------------- certs


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HarnessError(f"openssl {' '.join(args)} failed: {proc.stderr}")


def make_certs(state: Path) -> None:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    if shutil.which("openssl") is None:
        raise HarnessError("openssl is needed to make the test certificates")
    ext = state / "server.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    cext = state / "client.ext"
    cext.write_text("extendedKeyUsage=clientAuth\n")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=kafka-asgi test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=state,
    )
    for name, subj, extfile in (
        ("server", "/CN=localhost", ext),
        ("client", "/CN=kafka-asgi-client", cext),
    ):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subj,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=state,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            str(extfile),
            "-out",
            f"{name}.pem",
            cwd=state,
        )
    # Kafka's PEM keystore wants an unencrypted PKCS#8 key followed by the chain in one file.
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.p8", cwd=state)
    (state / "server-keystore.pem").write_text(
        (state / "server.p8").read_text() + (state / "server.pem").read_text()
    )
    # A second, unrelated CA: tests use it to check that a wrong CA is refused.
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=unrelated CA",
        "-keyout",
        "other-ca.key",
        "-out",
        "other-ca.pem",
        cwd=state,
    )


# --------------------------------------------------------------------------- config


def ports(base: int) -> dict[str, int]:
    names = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", "MTLS", "CONTROLLER"]
    names += ["OAUTH_PLAINTEXT", "OAUTH_SSL"]
    return {name: base + i for i, name in enumerate(names)}


def node_ports(base: int, node: int) -> dict[str, int]:
    """The listeners of ``node`` (0 .. MAX_NODES-1) of a cluster at ``base``."""
    if node == 0:
        return ports(base)
    plaintext = base + NODE_PORT_OFFSET + 2 * (node - 1)
    return {"PLAINTEXT": plaintext, "CONTROLLER": plaintext + 1}


def server_properties(state: Path, data: Path, base: int, node: int = 0, nodes: int = 1) -> str:
    """The configuration of ``node`` of a cluster of ``nodes`` (one: the single broker)."""
    p = node_ports(base, node)
    listeners = ",".join(f"{n}://127.0.0.1:{port}" for n, port in p.items())
    advertised = ",".join(f"{n}://127.0.0.1:{port}" for n, port in p.items() if n != "CONTROLLER")
    voters = ",".join(
        f"{i + 1}@127.0.0.1:{node_ports(base, i)['CONTROLLER']}" for i in range(nodes)
    )
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{USERNAME}" password="{PASSWORD}" user_{USERNAME}="{PASSWORD}";'
    )
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    node_data = data if node == 0 else data / f"node-{node}"
    replicas = min(nodes, 3)
    min_isr = 2 if replicas >= 3 else 1
    lines = [
        "process.roles=broker,controller",
        f"node.id={node + 1}",
        f"controller.quorum.voters={voters}",
        f"listeners={listeners}",
        f"advertised.listeners={advertised}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,"
        "SASL_SSL:SASL_SSL,MTLS:SSL,CONTROLLER:PLAINTEXT,OAUTH_PLAINTEXT:SASL_PLAINTEXT,"
        "OAUTH_SSL:SASL_SSL",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={node_data / 'logs'}",
        f"metadata.log.dir={node_data / 'metadata'}",
        "auto.create.topics.enable=false",
        "num.partitions=1",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=4",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        "transaction.state.log.num.partitions=4",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        "group.initial.rebalance.delay.ms=0",
        "log.flush.interval.messages=100000000",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={state / 'server-keystore.pem'}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={state / 'ca.pem'}",
        "listener.name.mtls.ssl.client.auth=required",
    ]
    if nodes > 1:
        lines += [
            # A killed node is noticed within seconds, not the 9 s/18 s defaults.
            "broker.session.timeout.ms=6000",
            "broker.heartbeat.interval.ms=1000",
            # Few threads: three JVMs share a small machine.
            "num.network.threads=2",
            "num.io.threads=4",
            "num.replica.fetchers=1",
            "background.threads=4",
        ]
    for listener in ("sasl_plaintext", "sasl_ssl"):
        lines.append(f"listener.name.{listener}.plain.sasl.jaas.config={plain}")
        lines.append(f"listener.name.{listener}.scram-sha-256.sasl.jaas.config={scram}")
        lines.append(f"listener.name.{listener}.scram-sha-512.sasl.jaas.config={scram}")
    if node == 0:
        lines += oauth_properties(base)
    return "\n".join(lines) + "\n"


def oauth_properties(base: int) -> list[str]:
    """The OAUTHBEARER listeners: signed JWTs checked against the identity provider's JWKS."""
    idp = oauth_idp()
    handler = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
    module = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
    lines = [
        f"sasl.oauthbearer.jwks.endpoint.url=http://127.0.0.1:{base + IDP_PORT_OFFSET}/jwks",
        f"sasl.oauthbearer.expected.audience={idp.AUDIENCE}",
        f"sasl.oauthbearer.expected.issuer={idp.ISSUER}",
        # Named explicitly: the broker-side validator checks signature, audience and expiry.
        "sasl.oauthbearer.jwt.validator.class="
        "org.apache.kafka.common.security.oauthbearer.BrokerJwtValidator",
    ]
    for listener in ("oauth_plaintext", "oauth_ssl"):
        prefix = f"listener.name.{listener}"
        lines += [
            f"{prefix}.sasl.enabled.mechanisms=OAUTHBEARER",
            f"{prefix}.oauthbearer.sasl.server.callback.handler.class={handler}",
            f"{prefix}.oauthbearer.sasl.jaas.config={module}",
            f"{prefix}.oauthbearer.connections.max.reauth.ms={OAUTH_REAUTH_MS}",
        ]
    return lines


LOG4J2 = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: WARN
      - name: kafka.log.LogCleaner
        level: WARN
"""

# The same for Kafka 3.x, which logs through log4j 1 (reload4j).
LOG4J1 = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""


def log_options(state: Path, version: str) -> list[str]:
    """The JVM options pointing the broker's logging at the state dir's config."""
    if log4j_major(version) == 1:
        path = state / "log4j.properties"
        path.write_text(LOG4J1)
        return [f"-Dlog4j.configuration=file:{path}"]
    path = state / "log4j2.yaml"
    path.write_text(LOG4J2)
    return [f"-Dlog4j2.configurationFile={path}"]


# --------------------------------------------------------------------------- wire checks
# A handful of hand-written requests, just enough to prove each listener answers.
# The harness must work before (and independently of) the project's own client.


def _frame(api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client = b"kafka-local"
    header = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise HarnessError("connection closed by broker")
        buf += chunk
    return buf


def _roundtrip(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    sock.sendall(_frame(api_key, version, corr, body))
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    data = _recv_exact(sock, size)
    (got,) = struct.unpack(">i", data[:4])
    if got != corr:
        raise HarnessError(f"correlation id {got} != {corr}")
    return data[4:]


def _api_versions(sock: socket.socket) -> None:
    body = _roundtrip(sock, 18, 0, 1, b"")
    (err,) = struct.unpack(">h", body[:2])
    if err != 0:
        raise HarnessError(f"ApiVersions error {err}")


def _broker_count(sock: socket.socket) -> int:
    """How many brokers a Metadata v1 request (no topics) lists: registered, unfenced."""
    body = _roundtrip(sock, 3, 1, 5, struct.pack(">i", 0))
    (count,) = struct.unpack(">i", body[:4])
    return int(count)


def check_node(hostport: str, nodes: int, timeout: float = 5.0) -> None:
    """A node's PLAINTEXT listener answers and its metadata lists all ``nodes`` brokers."""
    port = int(hostport.rsplit(":", 1)[1])
    try:
        with _connect(port, None, timeout) as sock:
            _api_versions(sock)
            seen = _broker_count(sock)
    except (OSError, HarnessError, struct.error) as exc:
        raise HarnessError(f"PLAINTEXT listener {hostport}: {exc}") from exc
    if seen < nodes:
        raise HarnessError(f"{hostport} lists {seen} of {nodes} brokers")


def _sasl(sock: socket.socket, mechanism: str) -> None:
    mech = mechanism.encode()
    body = _roundtrip(sock, 17, 1, 2, struct.pack(">h", len(mech)) + mech)  # SaslHandshake v1
    (err,) = struct.unpack(">h", body[:2])
    if err != 0:
        raise HarnessError(f"SaslHandshake({mechanism}) error {err}")

    def authenticate(token: bytes, corr: int) -> bytes:
        resp = _roundtrip(sock, 36, 0, corr, struct.pack(">i", len(token)) + token)  # v0
        (code,) = struct.unpack(">h", resp[:2])
        (mlen,) = struct.unpack(">h", resp[2:4])
        msg = resp[4 : 4 + max(mlen, 0)].decode(errors="replace")
        off = 4 + max(mlen, 0)
        (blen,) = struct.unpack(">i", resp[off : off + 4])
        if code != 0:
            raise HarnessError(f"SaslAuthenticate({mechanism}) error {code}: {msg}")
        return resp[off + 4 : off + 4 + blen]

    if mechanism == "PLAIN":
        authenticate(f"\0{USERNAME}\0{PASSWORD}".encode(), 3)
        return
    import scramp  # type: ignore[import-not-found, unused-ignore]

    client = scramp.ScramClient([mechanism], USERNAME, PASSWORD)
    server_first = authenticate(client.get_client_first().encode(), 3)
    client.set_server_first(server_first.decode())
    server_final = authenticate(client.get_client_final().encode(), 4)
    client.set_server_final(server_final.decode())


def _oauthbearer(sock: socket.socket, token: str) -> str | None:
    """Authenticate with ``token``: None when the broker accepts it, else its message."""
    mech = b"OAUTHBEARER"
    body = _roundtrip(sock, 17, 1, 2, struct.pack(">h", len(mech)) + mech)
    (err,) = struct.unpack(">h", body[:2])
    if err != 0:
        raise HarnessError(f"SaslHandshake(OAUTHBEARER) error {err}")
    corr = 3
    message = f"n,,\x01auth=Bearer {token}\x01\x01".encode()
    while True:
        resp = _roundtrip(sock, 36, 0, corr, struct.pack(">i", len(message)) + message)
        (code,) = struct.unpack(">h", resp[:2])
        (mlen,) = struct.unpack(">h", resp[2:4])
        text = resp[4 : 4 + max(mlen, 0)].decode(errors="replace")
        off = 4 + max(mlen, 0)
        (blen,) = struct.unpack(">i", resp[off : off + 4])
        challenge = resp[off + 4 : off + 4 + blen]
        if code != 0:
            return f"error {code}: {text}"
        if not challenge:
            return None
        # RFC 7628: an error status; a lone %x01 makes the broker fail the exchange.
        message, corr = b"\x01", corr + 1


def check_oauth(addr: Addresses, timeout: float = 5.0) -> None:
    """The OAUTHBEARER listeners accept a good token and refuse forged, expired and
    wrong-audience ones: the broker really validates (signature, expiry, audience)."""
    idp = oauth_idp()
    state = Path(addr.ca_file).parent
    try:
        with urllib.request.urlopen(addr.oauth_jwks_url, timeout=timeout) as answer:
            json.loads(answer.read())
    except (OSError, ValueError) as exc:
        raise HarnessError(f"the OAuth identity provider {addr.oauth_jwks_url}: {exc}") from exc
    good = idp.sign_jwt(state, idp.claims_for("harness-check", ttl=300))
    bad = {
        "forged": idp.sign_jwt(state, idp.claims_for("harness-check"), key="oauth-rogue.key"),
        "expired": idp.sign_jwt(
            state, idp.claims_for("harness-check", ttl=60, now=time.time() - 3600)
        ),
        "wrong audience": idp.sign_jwt(state, {**idp.claims_for("harness-check"), "aud": "x"}),
    }
    verify = ssl.create_default_context(cafile=addr.ca_file)
    for name, hostport, tls in (
        ("OAUTH_PLAINTEXT", addr.oauth_plaintext, None),
        ("OAUTH_SSL", addr.oauth_ssl, verify),
    ):
        port = int(hostport.rsplit(":", 1)[1])
        try:
            with _connect(port, tls, timeout) as sock:
                refused = _oauthbearer(sock, good)
                if refused is not None:
                    raise HarnessError(f"a valid token was refused ({refused})")
                _api_versions(sock)
            if tls is None:
                for what, token in bad.items():
                    with _connect(port, tls, timeout) as sock:
                        if _oauthbearer(sock, token) is None:
                            raise HarnessError(f"the broker accepted a {what} token")
        except (OSError, HarnessError, struct.error) as exc:
            raise HarnessError(f"{name} listener {hostport} (OAUTHBEARER): {exc}") from exc


def _connect(port: int, tls: ssl.SSLContext | None, timeout: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def check_listeners(addr: Addresses, timeout: float = 5.0) -> None:
    """Talk to every listener for real; raise HarnessError naming the one that failed."""
    verify = ssl.create_default_context(cafile=addr.ca_file)
    mutual = ssl.create_default_context(cafile=addr.ca_file)
    mutual.load_cert_chain(addr.client_cert, addr.client_key)
    try:
        import scramp  # type: ignore[import-not-found, unused-ignore]  # noqa: F401

        scram = ["SCRAM-SHA-256", "SCRAM-SHA-512"]
    except ImportError:
        scram = []
    plans: list[tuple[str, str, ssl.SSLContext | None, str | None]] = [
        ("PLAINTEXT", addr.plaintext, None, None),
        ("SSL", addr.ssl, verify, None),
        ("SASL_PLAINTEXT", addr.sasl_plaintext, None, "PLAIN"),
        ("SASL_SSL", addr.sasl_ssl, verify, "PLAIN"),
        ("MTLS", addr.mtls, mutual, None),
    ]
    plans += [("SASL_PLAINTEXT", addr.sasl_plaintext, None, m) for m in scram]
    for name, hostport, tls, mech in plans:
        port = int(hostport.rsplit(":", 1)[1])
        try:
            with _connect(port, tls, timeout) as sock:
                if mech is not None:
                    _sasl(sock, mech)
                _api_versions(sock)
        except (OSError, HarnessError, struct.error) as exc:
            raise HarnessError(f"{name} listener {hostport} ({mech or 'no SASL'}): {exc}") from exc
    if addr.oauth_plaintext:
        check_oauth(addr, timeout)


# --------------------------------------------------------------------------- lifecycle


class LocalKafka:
    """One local broker, or a cluster of ``nodes``: the state dir holds certs, configs,
    pids and the data dir's path.

    Node 0 is the single broker of old (``broker.pid``, ``broker.log``,
    ``server.properties``); node I >= 1 of a cluster has ``broker-I.pid`` and so on.
    """

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        base_port: int = 9092,
        data_dir: Path | None = None,
        nodes: int | None = None,
        kafka_version: str | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self.state = Path(state_dir).resolve()
        # Broker settings over the harness's own (a test's broker of its own).
        self.properties = dict(properties or {})
        self.base_port = base_port
        self._data_dir = data_dir
        info = self._read_info()
        # Unless told, a state dir remembers its cluster's size and version.
        if nodes is None:
            nodes = int(str(info.get("nodes", 1))) if info else 1
        if not 1 <= nodes <= MAX_NODES:
            raise HarnessError(f"nodes must be 1..{MAX_NODES}, not {nodes}")
        self.nodes = nodes
        if kafka_version is None and "KAFKA_LOCAL_VERSION" in os.environ:
            kafka_version = KAFKA_VERSION
        if kafka_version is None:
            kafka_version = str(info.get("kafka_version", KAFKA_VERSION)) if info else KAFKA_VERSION
        self.kafka_version = kafka_version
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._idp_proc: subprocess.Popen[bytes] | None = None

    # files
    def _suffix(self, node: int) -> str:
        return "" if node == 0 else f"-{node}"

    @property
    def pid_file(self) -> Path:
        return self.state / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.state / "broker.log"

    def node_pid_file(self, node: int) -> Path:
        return self.state / f"broker{self._suffix(node)}.pid"

    def node_log_file(self, node: int) -> Path:
        return self.state / f"broker{self._suffix(node)}.log"

    @property
    def info_file(self) -> Path:
        return self.state / "broker.json"

    def node_plaintext(self, node: int) -> str:
        return f"127.0.0.1:{node_ports(self.base_port, node)['PLAINTEXT']}"

    @property
    def bootstrap(self) -> str:
        """Every node's PLAINTEXT listener, comma-separated."""
        return ",".join(self.node_plaintext(i) for i in range(self.nodes))

    def addresses(self) -> Addresses:
        p = ports(self.base_port)
        hp = {k: f"127.0.0.1:{v}" for k, v in p.items()}
        return Addresses(
            plaintext=hp["PLAINTEXT"],
            ssl=hp["SSL"],
            sasl_plaintext=hp["SASL_PLAINTEXT"],
            sasl_ssl=hp["SASL_SSL"],
            mtls=hp["MTLS"],
            ca_file=str(self.state / "ca.pem"),
            client_cert=str(self.state / "client.pem"),
            client_key=str(self.state / "client.key"),
            kafka_version=self.kafka_version,
            bootstrap=self.bootstrap,
            nodes=self.nodes,
            oauth_plaintext=hp["OAUTH_PLAINTEXT"],
            oauth_ssl=hp["OAUTH_SSL"],
            oauth_token_url=f"{self.idp_url}/token",
            oauth_jwks_url=f"{self.idp_url}/jwks",
            oauth_client_id=oauth_idp().CLIENT_ID,
            oauth_client_secret=oauth_idp().secret_for(oauth_idp().CLIENT_ID),
        )

    @property
    def idp_url(self) -> str:
        return f"http://127.0.0.1:{self.base_port + IDP_PORT_OFFSET}"

    @property
    def idp_pid_file(self) -> Path:
        return self.state / "oauth-idp.pid"

    def _start_idp(self, deadline: float) -> None:
        """The identity provider (scripts/oauth_idp.py) on base+8, answering before the
        broker starts: the broker fetches its JWKS."""
        self._stop_idp()
        with open(self.state / "oauth-idp.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("oauth_idp.py")),
                    "--state-dir",
                    str(self.state),
                    "--port",
                    str(self.base_port + IDP_PORT_OFFSET),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._idp_proc = proc
        self.idp_pid_file.write_text(str(proc.pid))
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise HarnessError(f"the OAuth identity provider exited ({proc.returncode})")
            try:
                with socket.create_connection(
                    ("127.0.0.1", self.base_port + IDP_PORT_OFFSET), timeout=1.0
                ):
                    return
            except OSError:
                time.sleep(0.1)
        raise HarnessError("the OAuth identity provider did not start")

    def _stop_idp(self) -> None:
        try:
            pid = int(self.idp_pid_file.read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        proc, self._idp_proc = self._idp_proc, None
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        elif pid is not None:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        self.idp_pid_file.unlink(missing_ok=True)

    def _check_node(self, node: int, members: int | None = None) -> None:
        """Node ``node`` answers for real (node 0: every listener) and, when
        ``members`` is given, lists that many brokers."""
        if node == 0:
            check_listeners(self.addresses(), timeout=2.0)
        if members is not None or node != 0:
            check_node(self.node_plaintext(node), members or 1, timeout=2.0)

    def node_pid(self, node: int) -> int | None:
        """The pid of ``node``'s broker process if it runs (not a zombie)."""
        try:
            pid = int(self.node_pid_file(node).read_text())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A zombie still answers kill(0); it is not a running broker.
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return None
        except OSError:
            pass
        return pid

    def pid(self) -> int | None:
        """Node 0's pid (the single broker's)."""
        return self.node_pid(0)

    def running(self) -> bool:
        """Every node runs and answers (a cluster: with all its brokers listed)."""
        if any(self.node_pid(i) is None for i in range(self.nodes)):
            return False
        try:
            for i in range(self.nodes):
                self._check_node(i, self.nodes if self.nodes > 1 else None)
        except HarnessError:
            return False
        return True

    def node_running(self, node: int) -> bool:
        if self.node_pid(node) is None:
            return False
        try:
            self._check_node(node)
        except HarnessError:
            return False
        return True

    def log_tail(self, lines: int = 60, node: int = 0) -> str:
        try:
            text = self.node_log_file(node).read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def _ports_free(self) -> None:
        for node in range(self.nodes):
            every = node_ports(self.base_port, node)
            if node == 0:
                every = {**every, "OAUTH_IDP": self.base_port + IDP_PORT_OFFSET}
            for name, port in every.items():
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        s.bind(("127.0.0.1", port))
                    except OSError as exc:
                        where = f" of node {node}" if self.nodes > 1 else ""
                        raise HarnessError(f"port {port} ({name}{where}) is taken: {exc}") from exc

    def _heap(self) -> str:
        return CLUSTER_JVM_HEAP if self.nodes > 1 else JVM_HEAP

    def _props(self, node: int) -> Path:
        return self.state / f"server{self._suffix(node)}.properties"

    def _format(self, libs: Path, deadline: float) -> None:
        """Certificates, configs and formatted KRaft storage for every node."""
        self._stop_idp()
        self._ports_free()
        for f in self.state.glob("*"):
            if f.is_file():
                f.unlink()
        make_certs(self.state)
        oauth_idp().make_keys(self.state)
        data = self._data_dir or Path(tempfile.mkdtemp(prefix="kafka-asgi-data-"))
        data.mkdir(parents=True, exist_ok=True)
        cluster_id = new_cluster_id()
        for node in range(self.nodes):
            props = self._props(node)
            text = server_properties(self.state, data, self.base_port, node, self.nodes)
            text += "".join(f"{k}={v}\n" for k, v in self.properties.items())
            props.write_text(text)
            fmt = [
                java(),
                "-Xmx256m",
                "-cp",
                f"{libs}/*",
                *log_options(self.state, self.kafka_version),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--add-scram",
                f"SCRAM-SHA-256=[name={USERNAME},password={PASSWORD}]",
                "--add-scram",
                f"SCRAM-SHA-512=[name={USERNAME},password={PASSWORD}]",
                "--add-scram",
                f"SCRAM-SHA-256=[name={UNICODE_USERNAME},password={UNICODE_PASSWORD}]",
                "--add-scram",
                f"SCRAM-SHA-512=[name={UNICODE_USERNAME},password={UNICODE_PASSWORD}]",
            ]
            proc = subprocess.run(
                fmt,
                capture_output=True,
                text=True,
                timeout=max(5.0, deadline - time.monotonic()),
                # The JVM reads its arguments in the locale's encoding: UTF-8 keeps the
                # second user's password whole.
                env={**os.environ, "LC_ALL": "C.UTF-8"},
            )
            if proc.returncode != 0:
                raise HarnessError(
                    f"formatting KRaft storage of node {node} failed:\n{proc.stdout}{proc.stderr}"
                )
        info = {
            "data_dir": str(data),
            "base_port": self.base_port,
            "cluster_id": cluster_id,
            "nodes": self.nodes,
            "kafka_version": self.kafka_version,
        }
        self.info_file.write_text(json.dumps(info))

    def _launch(self, node: int, libs: Path) -> subprocess.Popen[bytes]:
        heap = self._heap()
        allowed = f"{self.idp_url}/jwks,{self.idp_url}/token"
        cmd = [
            java(),
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:TieredStopAtLevel=1"
            if os.environ.get("KAFKA_LOCAL_C1")
            else "-XX:+UseStringDeduplication",
            "-Djava.awt.headless=true",
            # Kafka 4 fetches OAuth URLs only when they are allowed here.
            f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={allowed}",
            *log_options(self.state, self.kafka_version),
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self._props(node)),
        ]
        with open(self.node_log_file(node), "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs[node] = proc
        self.node_pid_file(node).write_text(str(proc.pid))
        return proc

    def _await_nodes(self, which: list[int], deadline: float, timeout: float) -> None:
        """Wait until each node of ``which`` answers (a cluster: listing every broker)."""
        members = self.nodes if self.nodes > 1 else None
        pending = list(which)
        last: Exception | None = None
        while time.monotonic() < deadline:
            for node in list(pending):
                proc = self._procs.get(node)
                if proc is not None and proc.poll() is not None:
                    raise HarnessError(
                        f"the broker (node {node}) exited with status {proc.returncode};"
                        f" log tail:\n{self.log_tail(node=node)}"
                    )
                try:
                    self._check_node(node, members)
                    pending.remove(node)
                except HarnessError as exc:
                    last = exc
            if not pending:
                return
            time.sleep(0.3)
        for node in which:
            self.stop_node(node)
        tails = "\n".join(f"node {n}:\n{self.log_tail(node=n)}" for n in pending)
        raise HarnessError(
            f"the broker did not answer within {timeout:.0f}s ({last}); log tail:\n{tails}"
        )

    def start(self, timeout: float = 60.0, fresh: bool = True) -> Addresses:
        """Start the broker (every node of a cluster); ``fresh=False`` restarts on the
        data of the previous run."""
        deadline = time.monotonic() + timeout
        running = [i for i in range(self.nodes) if self.node_pid(i) is not None]
        if running:
            raise HarnessError(
                f"a broker is already running (pid {self.node_pid(running[0])}); stop it first"
            )
        libs = resolve_jars(version=self.kafka_version)
        self.state.mkdir(parents=True, exist_ok=True)
        info = self._read_info()
        if fresh or info is None:
            self._format(libs, deadline)
        else:
            self.base_port = int(str(info["base_port"]))
        # Before the broker: it fetches the identity provider's JWKS.
        self._start_idp(deadline)
        for node in range(self.nodes):
            self._launch(node, libs)
        self._await_nodes(list(range(self.nodes)), deadline, timeout)
        return self.addresses()

    def start_node(self, node: int, timeout: float = 60.0) -> None:
        """Start one stopped node again on its data; returns once the cluster lists it."""
        self._check_index(node)
        if self.node_pid(node) is not None:
            raise HarnessError(f"node {node} is already running (pid {self.node_pid(node)})")
        info = self._read_info()
        if info is None:
            raise HarnessError(f"no cluster in {self.state}: start it first")
        self.base_port = int(str(info["base_port"]))
        deadline = time.monotonic() + timeout
        libs = resolve_jars(version=self.kafka_version)
        self._launch(node, libs)
        self._await_nodes([node], deadline, timeout)

    def set_client_quota(self, client_id: str, timeout: float = 120.0, **quotas: float) -> None:
        """Set client quotas (``producer_byte_rate=...``, ``request_percentage=...``)
        for ``client_id`` with Kafka's own ConfigCommand (AlterClientQuotas)."""
        libs = resolve_jars(version=self.kafka_version)
        config = ",".join(f"{k}={v}" for k, v in quotas.items())
        tool = "kafka.admin.ConfigCommand"
        classpath = f"{libs}/*"
        if not any(
            "kafka/admin/ConfigCommand.class" in _jar_names(jar) for jar in libs.glob("kafka_*.jar")
        ):
            # Moved to the kafka-tools artifact (4.4.0), not among the broker's jars.
            tool = "org.apache.kafka.tools.ConfigCommand"
            classpath = f"{resolve_tools(self.kafka_version)}/*:{classpath}"
        cmd = [
            java(),
            "-Xmx256m",
            "-cp",
            classpath,
            *log_options(self.state, self.kafka_version),
            tool,
            "--bootstrap-server",
            self.node_plaintext(0),
            "--alter",
            "--add-config",
            config,
            "--entity-type",
            "clients",
            "--entity-name",
            client_id,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise HarnessError(f"setting quotas {config} failed:\n{proc.stdout}{proc.stderr}")

    def _check_index(self, node: int) -> None:
        if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node < self.nodes:
            raise HarnessError(f"node must be 0..{self.nodes - 1}, not {node!r}")

    def _read_info(self) -> dict[str, object] | None:
        try:
            return dict(json.loads(self.info_file.read_text()))
        except (OSError, ValueError):
            return None

    def _reap(self, node: int) -> None:
        proc = self._procs.pop(node, None)
        if proc is not None:
            proc.wait(timeout=10)

    def stop_node(self, node: int, timeout: float = 30.0) -> None:
        """Stop one node (SIGTERM: a controlled shutdown), SIGKILL after ``timeout``."""
        pid = self.node_pid(node)
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.node_pid(node) is not None:
                time.sleep(0.1)
            if self.node_pid(node) is not None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                while self.node_pid(node) is not None:
                    time.sleep(0.05)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self._reap(node)
        self.node_pid_file(node).unlink(missing_ok=True)

    def kill_node(self, node: int) -> None:
        """Stop one node abruptly (SIGKILL), as a crash would."""
        pid = self.node_pid(node)
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
            while self.node_pid(node) is not None:
                time.sleep(0.05)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self._reap(node)
        self.node_pid_file(node).unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0, remove_data: bool = False) -> None:
        """Stop every node. A cluster's nodes are all signalled at once: one by one,
        the last would wait for a quorum that is gone (its controlled shutdown hangs)."""
        if self.nodes == 1:
            self.stop_node(0, timeout)
        else:
            pids = {i: self.node_pid(i) for i in range(self.nodes)}
            for pid in pids.values():
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + min(timeout, 15.0)
            while time.monotonic() < deadline and any(self.node_pid(i) is not None for i in pids):
                time.sleep(0.1)
            for node in pids:
                self.kill_node(node)
        self._stop_idp()
        if remove_data:
            info = self._read_info()
            if info is not None:
                shutil.rmtree(str(info["data_dir"]), ignore_errors=True)

    def kill(self) -> None:
        """Stop every node abruptly (SIGKILL), as a crash would."""
        for node in range(self.nodes):
            self.kill_node(node)

    def restart(self, timeout: float = 60.0) -> Addresses:
        self.stop()
        return self.start(timeout=timeout, fresh=False)

    def status(self) -> list[dict[str, object]]:
        """Each node: its index, node.id, pid, PLAINTEXT address and whether it answers."""
        return [
            {
                "node": i,
                "node_id": i + 1,
                "pid": self.node_pid(i),
                "plaintext": self.node_plaintext(i),
                "running": self.node_running(i),
            }
            for i in range(self.nodes)
        ]


def new_cluster_id() -> str:
    """A random KRaft cluster id (URL-safe base64 of a UUID, as Kafka's Uuid).

    Never one that starts with "-": kafka-storage would read it as an option and fail
    ("argument --cluster-id/-t: expected one argument"), 1 start in 64. Kafka's own
    Uuid.randomUuid() draws again in that case, too.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "kill", "status", "restart", "fetch"])
    parser.add_argument(
        "--base-port", type=int, default=int(os.environ.get("KAFKA_LOCAL_BASE_PORT", 9092))
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("KAFKA_LOCAL_STATE", DEFAULT_STATE_DIR)),
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--nodes",
        type=int,
        default=None,
        help=f"start a cluster of this many nodes (1..{MAX_NODES}; default: 1, or as started)",
    )
    parser.add_argument(
        "--node", type=int, default=None, help="start/stop/kill/status of this node only"
    )
    parser.add_argument(
        "--kafka-version",
        default=None,
        help=f"Apache Kafka version (default {KAFKA_VERSION};"
        f" tested: {', '.join(TESTED_VERSIONS)})",
    )
    args = parser.parse_args(argv)
    try:
        broker = LocalKafka(
            args.state_dir, args.base_port, args.data_dir, args.nodes, args.kafka_version
        )
        info = broker._read_info()
        if info is not None and not (args.command == "start" and args.node is None):
            # Every command but a fresh start acts on the cluster the state dir holds.
            broker.base_port = int(str(info["base_port"]))
        if args.node is not None:
            broker._check_index(args.node)
        if args.command == "fetch":
            print(resolve_jars(version=broker.kafka_version))
        elif args.command == "start" and args.node is not None:
            t0 = time.monotonic()
            broker.start_node(args.node, timeout=args.timeout)
            print(f"node {args.node} up in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        elif args.command == "start":
            t0 = time.monotonic()
            addr = broker.start(timeout=args.timeout)
            print(json.dumps(asdict(addr), indent=2))
            print(
                f"Kafka {broker.kafka_version} ({broker.nodes} node(s)) up in"
                f" {time.monotonic() - t0:.1f}s",
                file=sys.stderr,
            )
        elif args.command == "restart":
            addr = broker.restart(timeout=args.timeout)
            print(json.dumps(asdict(addr), indent=2))
        elif args.command == "stop" and args.node is not None:
            broker.stop_node(args.node)
            print(f"node {args.node} stopped", file=sys.stderr)
        elif args.command == "stop":
            broker.stop(remove_data=True)
            print("stopped", file=sys.stderr)
        elif args.command == "kill":
            if args.node is None:
                broker.kill()
            else:
                broker.kill_node(args.node)
            print("killed", file=sys.stderr)
        else:
            nodes = broker.status()
            if args.node is not None:
                nodes = [nodes[args.node]]
            if broker.nodes > 1 or args.node is not None:
                print(json.dumps({"bootstrap": broker.bootstrap, "nodes": nodes}, indent=2))
                return 0 if all(n["running"] for n in nodes) else 1
            if broker.running():
                print(json.dumps(asdict(broker.addresses()), indent=2))
            else:
                print("not running", file=sys.stderr)
                return 1
    except HarnessError as exc:
        print(f"kafka_local: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
