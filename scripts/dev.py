#!/usr/bin/env python3
"""The project's two set-up commands, from a clean clone with nothing installed.

    python3 scripts/dev.py demo   # the FastAPI example shipping access logs to a local Kafka
    python3 scripts/dev.py test   # the test suite against a real local Kafka
    python3 scripts/dev.py lint   # ruff check, ruff format --check and mypy --strict

Each makes ``.venv`` (Python 3.10+) with the project and its ``dev`` extra on
first use, then runs inside it.  Java 17+ and Maven are needed for the broker
(its jars are fetched once into ``.cache/``), or a Docker engine.
Extra arguments after ``test`` go to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
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


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "lint"}:
        print(__doc__)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return run([str(PY), "examples/demo.py", *rest])
    if command == "lint":
        code = run([str(BIN / "ruff"), "check", "."])
        code = code or run([str(BIN / "ruff"), "format", "--check", "."])
        return code or run([str(BIN / "mypy"), "--strict", "kafka_asgi"])
    return run([str(PY), "-m", "pytest", *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
