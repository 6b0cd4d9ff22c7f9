"""The package's layers hold: each module imports only its own layer and the layers
below it (protocol -> network -> cluster -> producer/consumer -> integrations -> the
top-level entry modules), and production code never imports the tests or the test
helpers (``kafka_asgi.integrations.testing``).  Read from the source with ``ast``:
imports inside functions and under TYPE_CHECKING count too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kafka_asgi"

# Rank of each layer; a module may import modules of its own rank or lower.
LAYERS: dict[str, float] = {
    "protocol": 0,
    "network": 1,
    # Token providers (they may do HTTP): above the network layer, which takes them as
    # callables and never imports them, and below the cluster layer, whose options
    # build one from plain settings (ARCHITECTURE.md, OAUTHBEARER).
    "oauth": 1.5,
    "cluster": 2,
    "producer": 3,
    "consumer": 3,
}
INTEGRATIONS = 4
# The top-level package and its modules (kafka_asgi/__init__.py, cli.py, errors.py,
# and the framework entry points: fastapi.py, starlette.py, django.py, flask.py,
# wsgi.py, litestar.py, ...): the top layer, above the integrations.
TOP = 5
# kafka_asgi/_version.py imports nothing and is read by every layer (the network
# layer sends it to the broker): below them all.
LEAVES = {"kafka_asgi._version": -1}

# The package's test-support surface: the helpers apps use in their own tests, the
# pytest plugin that serves them, and the integrations package's lazy re-export of
# capture_events (its documented import path).  Only these may import them.
TEST_HELPERS = "kafka_asgi.integrations.testing"
TEST_SUPPORT = {TEST_HELPERS, "kafka_asgi.integrations.pytest_plugin", "kafka_asgi.integrations"}

# Known violations, each (importer, imported module): being fixed; remove a line when
# its import goes (test_every_allowed_violation_still_exists fails until you do).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> float | None:
    """The layer of a kafka_asgi module; None for anything outside the package."""
    parts = module.split(".")
    if parts[0] != "kafka_asgi":
        return None
    if module in LEAVES:
        return LEAVES[module]
    if len(parts) == 1:
        return TOP
    if parts[1] in LAYERS:
        return LAYERS[parts[1]]
    if parts[1] == "integrations":
        return INTEGRATIONS
    return TOP


def production_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(module: str, source: str, known: set[str]) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, relative imports
    resolved; ``from a import b`` names a.b when that is a module of ``known``."""
    tree = ast.parse(source, module)
    package = module if module in {m.rpartition(".")[0] for m in known} else ""
    package = package or module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return found


def violations(module: str, source: str, known: set[str]) -> set[tuple[str, str]]:
    """(module, imported) for each import that breaks the layering or reaches the tests."""
    own = rank(module)
    assert own is not None
    bad: set[tuple[str, str]] = set()
    for imported in imports_of(module, source, known):
        if imported == "tests" or imported.startswith("tests."):
            bad.add((module, imported))
        elif imported == TEST_HELPERS or imported.startswith(TEST_HELPERS + "."):
            if module not in TEST_SUPPORT:
                bad.add((module, imported))
        else:
            theirs = rank(imported)
            if theirs is not None and theirs > own:
                bad.add((module, imported))
    return bad


def all_violations() -> set[tuple[str, str]]:
    modules = production_modules()
    known = set(modules)
    found: set[tuple[str, str]] = set()
    for module, path in modules.items():
        found |= violations(module, path.read_text(), known)
    return found


def test_no_module_imports_a_layer_above_its_own_or_the_tests() -> None:
    new = sorted(all_violations() - KNOWN_VIOLATIONS)
    assert new == [], "imports against the layering (protocol -> network -> cluster -> " + (
        f"producer/consumer -> integrations -> top level): {new}"
    )


def test_every_allowed_violation_still_exists() -> None:
    # The allow-list only shrinks: a fixed violation must leave it.
    gone = sorted(KNOWN_VIOLATIONS - all_violations())
    assert gone == [], f"fixed, remove from KNOWN_VIOLATIONS: {gone}"


def test_the_check_sees_each_kind_of_violation() -> None:
    known = set(production_modules()) | {"kafka_asgi.network.probe"}
    assert violations("kafka_asgi.network.probe", "import kafka_asgi.oauth.oidc\n", known)
    assert not violations("kafka_asgi.cluster.probe", "import kafka_asgi.oauth.oidc\n", known)
    cases = {
        "import kafka_asgi\n": "kafka_asgi",
        "from kafka_asgi import __version__\n": "kafka_asgi",
        "from kafka_asgi.cluster.client import KafkaClient\n": "kafka_asgi.cluster.client",
        "from kafka_asgi import producer\n": "kafka_asgi.producer",
        "from ..integrations import logging\n": "kafka_asgi.integrations.logging",
        "def f():\n    from kafka_asgi.integrations.testing import capture_events\n": (
            "kafka_asgi.integrations.testing"
        ),
        "from tests.support.ports import free_port\n": "tests.support.ports",
    }
    for source, imported in cases.items():
        assert ("kafka_asgi.network.probe", imported) in violations(
            "kafka_asgi.network.probe", source, known
        ), source
    fine = (
        "import anyio\n"
        "from kafka_asgi._version import __version__\n"
        "from kafka_asgi.protocol.errors import KafkaError\n"
        "from . import errors\n"
        "from .sasl import SaslMechanism\n"
    )
    assert violations("kafka_asgi.network.probe", fine, known) == set()
    # The top level may import every layer; the test helpers, only the test surface.
    assert violations("kafka_asgi.cli", "from kafka_asgi.integrations import asgi\n", known) == (
        set()
    )
    assert violations(
        "kafka_asgi.integrations.asgi", "from kafka_asgi.integrations.testing import x\n", known
    ) == {("kafka_asgi.integrations.asgi", "kafka_asgi.integrations.testing")}
    assert violations("kafka_asgi.integrations.asgi", "import kafka_asgi.fastapi\n", known) == {
        ("kafka_asgi.integrations.asgi", "kafka_asgi.fastapi")
    }
