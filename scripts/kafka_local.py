#!/usr/bin/env python3
"""Start a real Apache Kafka 4.x broker on 127.0.0.1 without Docker.

The broker comes from the official ``org.apache.kafka:kafka_2.13`` jars, which
Maven resolves once into ``.cache/kafka-<version>/`` (ignored by git); later runs
need no network.  One combined broker+controller runs in KRaft mode with these
listeners (offsets from ``--base-port``, default 9092):

    +0 PLAINTEXT        +3 SASL_SSL        (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
    +1 SSL              +4 MTLS            (SSL, client certificate required)
    +2 SASL_PLAINTEXT   +5 CONTROLLER      (internal)

SASL user ``admin`` / ``admin-secret`` for every mechanism; the SCRAM
credentials are written into the metadata log at format time.  A throw-away CA,
a server certificate for 127.0.0.1/localhost and a client certificate are made
at start; their PEM files live in the state dir (``.kafka/`` by default).

Usage::

    python scripts/kafka_local.py start|stop|status|restart [--base-port N] [--state-dir D]

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
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

KAFKA_VERSION = "4.1.1"
# Kafka 4.x logs through SLF4J 1.7; this binding sends it to log4j2 (a Kafka dependency).
LOG4J_VERSION = "2.24.3"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO / ".kafka"
CACHE_DIR = Path(os.environ.get("KAFKA_LOCAL_CACHE", REPO / ".cache")) / f"kafka-{KAFKA_VERSION}"
USERNAME = "admin"
PASSWORD = "admin-secret"
JVM_HEAP = os.environ.get("KAFKA_LOCAL_HEAP", "512m")


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


class HarnessError(RuntimeError):
    pass


# --------------------------------------------------------------------------- jars


def resolve_jars(quiet: bool = False) -> Path:
    """Resolve the broker's jars with Maven once; later calls reuse the cache."""
    libs = CACHE_DIR / "libs"
    marker = CACHE_DIR / "resolved"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise HarnessError("Maven (mvn) is needed once to fetch Apache Kafka's jars; install it")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    pom = CACHE_DIR / "pom.xml"
    pom.write_text(
        f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-asgi</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""
    )
    if libs.exists():
        shutil.rmtree(libs)
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
    ]
    if not quiet:
        print(f"resolving Apache Kafka {KAFKA_VERSION} with Maven (once)...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise HarnessError(
            f"maven could not resolve Kafka {KAFKA_VERSION}:\n{proc.stdout}{proc.stderr}"
        )
    marker.write_text(KAFKA_VERSION)
    return libs


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
    return {name: base + i for i, name in enumerate(names)}


def server_properties(state: Path, data: Path, base: int) -> str:
    p = ports(base)
    listeners = ",".join(f"{n}://127.0.0.1:{port}" for n, port in p.items())
    advertised = ",".join(f"{n}://127.0.0.1:{port}" for n, port in p.items() if n != "CONTROLLER")
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{USERNAME}" password="{PASSWORD}" user_{USERNAME}="{PASSWORD}";'
    )
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{p['CONTROLLER']}",
        f"listeners={listeners}",
        f"advertised.listeners={advertised}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,"
        "SASL_SSL:SASL_SSL,MTLS:SSL,CONTROLLER:PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={data / 'logs'}",
        f"metadata.log.dir={data / 'metadata'}",
        "auto.create.topics.enable=false",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.flush.interval.messages=100000000",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={state / 'server-keystore.pem'}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={state / 'ca.pem'}",
        "listener.name.mtls.ssl.client.auth=required",
    ]
    for listener in ("sasl_plaintext", "sasl_ssl"):
        lines.append(f"listener.name.{listener}.plain.sasl.jaas.config={plain}")
        lines.append(f"listener.name.{listener}.scram-sha-256.sasl.jaas.config={scram}")
        lines.append(f"listener.name.{listener}.scram-sha-512.sasl.jaas.config={scram}")
    return "\n".join(lines) + "\n"


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


# --------------------------------------------------------------------------- lifecycle


class LocalKafka:
    """One local broker: its state dir holds certs, config, pid and the data dir's path."""

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        base_port: int = 9092,
        data_dir: Path | None = None,
    ) -> None:
        self.state = Path(state_dir).resolve()
        self.base_port = base_port
        self._data_dir = data_dir
        self._proc: subprocess.Popen[bytes] | None = None

    # files
    @property
    def pid_file(self) -> Path:
        return self.state / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.state / "broker.log"

    @property
    def info_file(self) -> Path:
        return self.state / "broker.json"

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
        )

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
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

    def running(self) -> bool:
        if self.pid() is None:
            return False
        try:
            check_listeners(self.addresses(), timeout=2.0)
        except HarnessError:
            return False
        return True

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def _ports_free(self) -> None:
        for name, port in ports(self.base_port).items():
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise HarnessError(f"port {port} ({name}) is taken: {exc}") from exc

    def start(self, timeout: float = 60.0, fresh: bool = True) -> Addresses:
        """Start the broker; ``fresh=False`` restarts on the data of the previous run."""
        deadline = time.monotonic() + timeout
        if self.pid() is not None:
            raise HarnessError(f"a broker is already running (pid {self.pid()}); stop it first")
        libs = resolve_jars()
        self.state.mkdir(parents=True, exist_ok=True)
        info = self._read_info()
        if fresh or info is None:
            self._ports_free()
            for f in self.state.glob("*"):
                if f.is_file():
                    f.unlink()
            make_certs(self.state)
            data = self._data_dir or Path(tempfile.mkdtemp(prefix="kafka-asgi-data-"))
            data.mkdir(parents=True, exist_ok=True)
            props = self.state / "server.properties"
            props.write_text(server_properties(self.state, data, self.base_port))
            (self.state / "log4j2.yaml").write_text(LOG4J2)
            cluster_id = new_cluster_id()
            fmt = [
                java(),
                "-Xmx256m",
                "-cp",
                f"{libs}/*",
                f"-Dlog4j2.configurationFile={self.state / 'log4j2.yaml'}",
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
            ]
            proc = subprocess.run(
                fmt, capture_output=True, text=True, timeout=max(5.0, deadline - time.monotonic())
            )
            if proc.returncode != 0:
                raise HarnessError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")
            info = {"data_dir": str(data), "base_port": self.base_port, "cluster_id": cluster_id}
            self.info_file.write_text(json.dumps(info))
        else:
            self.base_port = int(info["base_port"])
        props = self.state / "server.properties"
        cmd = [
            java(),
            f"-Xmx{JVM_HEAP}",
            f"-Xms{JVM_HEAP}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:TieredStopAtLevel=1"
            if os.environ.get("KAFKA_LOCAL_C1")
            else "-XX:+UseStringDeduplication",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.state / 'log4j2.yaml'}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(props),
        ]
        with open(self.log_file, "ab") as log:
            proc2 = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._proc = proc2
        self.pid_file.write_text(str(proc2.pid))
        addr = self.addresses()
        last: Exception | None = None
        while time.monotonic() < deadline:
            if proc2.poll() is not None:
                raise HarnessError(
                    f"the broker exited with status {proc2.returncode};"
                    f" log tail:\n{self.log_tail()}"
                )
            try:
                check_listeners(addr, timeout=2.0)
                return addr
            except HarnessError as exc:
                last = exc
                time.sleep(0.3)
        self.stop()
        raise HarnessError(
            f"the broker did not answer within {timeout:.0f}s ({last}); log tail:\n"
            f"{self.log_tail()}"
        )

    def _read_info(self) -> dict[str, object] | None:
        try:
            return dict(json.loads(self.info_file.read_text()))
        except (OSError, ValueError):
            return None

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait(timeout=10)
            self._proc = None

    def stop(self, timeout: float = 30.0, remove_data: bool = False) -> None:
        pid = self.pid()
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.pid() is not None:
                time.sleep(0.1)
            if self.pid() is not None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                while self.pid() is not None:
                    time.sleep(0.05)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self._reap()
        if remove_data:
            info = self._read_info()
            if info is not None:
                shutil.rmtree(str(info["data_dir"]), ignore_errors=True)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        pid = self.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self._reap()
        self.pid_file.unlink(missing_ok=True)

    def restart(self, timeout: float = 60.0) -> Addresses:
        self.stop()
        return self.start(timeout=timeout, fresh=False)


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
    parser.add_argument("command", choices=["start", "stop", "status", "restart", "fetch"])
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
    args = parser.parse_args(argv)
    broker = LocalKafka(args.state_dir, args.base_port, args.data_dir)
    try:
        if args.command == "fetch":
            print(resolve_jars())
        elif args.command == "start":
            t0 = time.monotonic()
            addr = broker.start(timeout=args.timeout)
            print(json.dumps(asdict(addr), indent=2))
            print(f"Kafka {KAFKA_VERSION} up in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        elif args.command == "restart":
            addr = broker.restart(timeout=args.timeout)
            print(json.dumps(asdict(addr), indent=2))
        elif args.command == "stop":
            broker.stop(remove_data=True)
            print("stopped", file=sys.stderr)
        else:
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
