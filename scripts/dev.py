#!/usr/bin/env python3
"""The project's two set-up commands, from a clean clone with nothing installed.

    python3 scripts/dev.py demo   # the FastAPI example shipping access logs to a local Kafka
    python3 scripts/dev.py test   # the test suite against a real local Kafka
    python3 scripts/dev.py lint   # ruff check, ruff format --check and mypy --strict
    python3 scripts/dev.py test-versions   # the broker tests against Kafka 3.9.1, 4.1.1, 4.4.0

Each makes ``.venv`` (Python 3.10+) with the project and its ``dev`` extra on
first use, then runs inside it.  Java 17+ and Maven are needed for the broker
(its jars are fetched once into ``.cache/``), or a Docker engine.
Extra arguments after ``test`` go to pytest.

``test-versions [--versions A,B] [pytest args]`` runs the broker tests (by default
the interop ones: record batches and every codec, each listener with each SASL
mechanism and mTLS, connection, producer and consumer against the broker, client
quotas' throttling) once per Kafka version, each on a broker of that version started
for the run, and prints a line per version; pytest arguments replace the default
test paths.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("KAFKA_ASGI_VENV", REPO / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def ensure_venv() -> None:
    stamp = VENV / ".kafka-asgi-installed"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest and PY.exists():
        return
    if not PY.exists():
        print(f"creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    print("installing kafka-asgi[dev] ...", flush=True)
    subprocess.run([*pip, "install", "-e", f"{REPO}[dev]"], check=True, cwd=REPO)
    stamp.write_text(digest)


def run(args: list[str]) -> int:
    return subprocess.run(args, cwd=REPO).returncode


VERSION_TESTS = [
    "tests/protocol/test_records_broker.py",
    "tests/harness/test_listeners.py",
    "tests/network/test_connection.py",
    "tests/producer/test_broker.py",
    "tests/consumer/test_consumer_broker.py",
    "tests/cluster/test_throttle_broker.py",
    "tests/cluster/test_handshake_throttle_broker.py",
    "tests/producer/test_throttle_broker.py",
    "tests/consumer/test_consumer_throttle_broker.py",
]


def test_versions(rest: list[str]) -> int:
    sys.path.insert(0, str(REPO / "scripts"))
    from kafka_local import TESTED_VERSIONS  # type: ignore[import-not-found, unused-ignore]

    versions = list(TESTED_VERSIONS)
    if rest[:1] == ["--versions"] and len(rest) > 1:
        versions, rest = rest[1].split(","), rest[2:]
    harness = [str(PY), str(REPO / "scripts" / "kafka_local.py")]
    results: list[tuple[str, int, float]] = []
    for version in versions:
        env = dict(os.environ, KAFKA_LOCAL_VERSION=version)
        # The test session reuses the broker started here: of the version under test,
        # never one of another version left running on the same ports.
        subprocess.run([*harness, "stop"], cwd=REPO, env=env, capture_output=True)
        subprocess.run([*harness, "fetch"], cwd=REPO, env=env, check=True)
        started = subprocess.run([*harness, "start", "--timeout", "180"], cwd=REPO, env=env)
        t0 = time.monotonic()
        try:
            if started.returncode != 0:
                code = started.returncode
            else:
                print(f"== Kafka {version}", flush=True)
                # Options alone keep the default tests; a path or node id replaces them.
                named = any((REPO / a.split("::")[0]).exists() for a in rest)
                paths = [] if named else VERSION_TESTS
                code = subprocess.run(
                    [str(PY), "-m", "pytest", *rest, *paths], cwd=REPO, env=env
                ).returncode
        finally:
            subprocess.run([*harness, "stop"], cwd=REPO, env=env, capture_output=True)
        results.append((version, code, time.monotonic() - t0))
    print("\n== test-versions")
    for version, code, took in results:
        print(f"Kafka {version}: {'passed' if code == 0 else f'FAILED ({code})'} in {took:.0f}s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "lint", "test-versions"}:
        print(__doc__)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return run([str(PY), "examples/demo.py", *rest])
    if command == "test-versions":
        return test_versions(rest)
    if command == "lint":
        code = run([str(BIN / "ruff"), "check", "."])
        code = code or run([str(BIN / "ruff"), "format", "--check", "."])
        return code or run([str(BIN / "mypy"), "--strict", "kafka_asgi"])
    return run([str(PY), "-m", "pytest", *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
