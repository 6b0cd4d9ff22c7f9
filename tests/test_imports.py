"""The tests' own structure: shared helpers come from ``tests/support/``; no test imports
a conftest.py or another test module (pytest imports those itself, and a test module
imported twice runs its module-level code twice)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# Modules under tests/ that are neither helpers nor tests, and that tests may import:
# the Django project the Django tests configure, and the apps uvicorn serves.
NOT_HELPERS = ("tests.integrations.django_testapp", "tests.integrations.apps")


def module_name(path: Path) -> str:
    parts = path.relative_to(TESTS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, source: str) -> list[tuple[int, list[str]]]:
    """(line, names) per import of ``source`` (the text of ``path``), relative imports
    resolved; ``from a import b`` names ``a.b`` as well as ``a`` (b may be a module)."""
    tree = ast.parse(source, str(path))
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: list[tuple[int, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.append((node.lineno, [f"{base}.{alias.name}", base]))
    return found


def why_not(names: list[str], importer: str) -> tuple[str, str] | None:
    """(name, reason) when ``importer`` may not import these names of one import
    (most specific first); None when it may."""
    for name in reversed(names):
        last = name.rpartition(".")[2]
        if last == "conftest":
            return name, "a conftest: put the helper in tests/support/"
        if last.startswith("test_") and name.startswith("tests."):
            return name, "a test module: put the helper in tests/support/"
    name = names[0]
    if (
        name.startswith("tests.")
        and not name.startswith(("tests.support", *NOT_HELPERS))
        and not importer.startswith(name + ".")
    ):
        return name, "helpers live in tests/support/"
    return None


def violations(path: Path, source: str | None = None) -> list[str]:
    text = path.read_text() if source is None else source
    importer = module_name(path)
    bad: list[str] = []
    for line, names in imported_modules(path, text):
        found = why_not(names, importer)
        if found:
            name, reason = found
            bad.append(f"{path.relative_to(TESTS.parent)}:{line} imports {name} ({reason})")
    return bad


def test_no_test_imports_conftest_or_another_test_module() -> None:
    bad = [v for path in sorted(TESTS.rglob("*.py")) for v in violations(path)]
    assert bad == []


def test_the_check_sees_each_kind_of_violation() -> None:
    # The checker itself, on made-up sources placed (virtually) in tests/producer/.
    probe = TESTS / "producer" / "test_probe.py"
    sources = {
        "from tests.conftest import KafkaCluster\n": "a conftest",
        "from .. import conftest\n": "a conftest",
        "from .test_broker import read_back\n": "a test module",
        "from tests.producer.test_unit import Reports\n": "a test module",
        "import tests.network.fake_thing\n": "helpers live in tests/support/",
        "from tests.integrations import servers\n": "helpers live in tests/support/",
    }
    for source, reason in sources.items():
        found = violations(probe, source)
        assert len(found) == 1 and reason in found[0], (source, found)
    fine = (
        "from tests.support.brokers import KafkaCluster\n"
        "from tests.support import timing\n"
        "from tests.integrations import django_testapp\n"
        "import anyio\n"
    )
    assert violations(probe, fine) == []
