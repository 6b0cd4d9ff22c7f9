"""The committed messages package is exactly what scripts/gen_messages.py produces from
the Kafka message definitions vendored in spec/kafka-messages/ (never skipped: the spec
is part of every clone)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / "scripts" / "gen_messages.py"
PACKAGE = REPO / "kafka_asgi" / "protocol" / "messages"
SPEC_DIR = REPO / "spec" / "kafka-messages"


def test_the_spec_is_vendored_with_its_license() -> None:
    assert "Apache License" in (SPEC_DIR / "LICENSE").read_text()
    assert "Apache Kafka" in (SPEC_DIR / "NOTICE").read_text()
    assert (SPEC_DIR / "ProduceRequest.json").is_file()
    assert (SPEC_DIR / "RequestHeader.json").is_file()


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), str(SPEC_DIR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    generated = sorted(p.name for p in tmp_path.glob("*.py"))
    assert "__init__.py" in generated and "produce.py" in generated
    stale = [
        name
        for name in generated
        if (PACKAGE / name).read_text(encoding="utf-8")
        != (tmp_path / name).read_text(encoding="utf-8")
    ]
    assert not stale, f"regenerate with: python scripts/gen_messages.py  (differs: {stale})"
    # Only the generator's output and the hand-written runtime live in the package.
    committed = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert committed == sorted([*generated, "_base.py"])
