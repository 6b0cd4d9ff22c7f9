"""The committed messages package is exactly what scripts/gen_messages.py produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / "scripts" / "gen_messages.py"
PACKAGE = REPO / "kafka_asgi" / "protocol" / "messages"
SPEC_DIR = REPO.parent / "shared" / "kafka-protocol" / "messages"


@pytest.mark.skipif(
    not SPEC_DIR.is_dir(), reason="Kafka's JSON message spec is not beside the repo"
)
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
