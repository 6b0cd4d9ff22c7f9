"""The integrations' module map holds: no cycles, no test helpers in production code,
no private names across modules, nothing below integrations importing them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kafka_asgi

PACKAGE = Path(kafka_asgi.__file__).parent
# The test-support surface of the package: these may import the test helpers.
TEST_SUPPORT = {"kafka_asgi.integrations.testing", "kafka_asgi.integrations.pytest_plugin"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {
        module_name(p): ast.parse(p.read_text(), str(p))
        for p in sorted(PACKAGE.rglob("*.py"))
        if "messages" not in p.parts  # generated protocol messages: imports only protocol
    }


def imports(tree: ast.Module, top_level_only: bool) -> list[tuple[str, list[str]]]:
    """(module, imported names) for each import; top-level ones only if asked (imports
    inside functions run later and cannot take part in an import cycle)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def test_production_code_never_imports_the_test_helpers() -> None:
    for name, tree in modules().items():
        if name in TEST_SUPPORT or name == "kafka_asgi.integrations":
            continue  # the package re-exports capture_events lazily (checked below)
        for module, _names in imports(tree, top_level_only=False):
            assert not module.startswith("tests"), f"{name} imports {module}"
            assert module != "kafka_asgi.integrations.testing", f"{name} imports testing"


def test_importing_the_integrations_loads_no_test_helper() -> None:
    code = (
        "import sys\n"
        "import kafka_asgi.integrations, kafka_asgi.integrations.asgi\n"
        "import kafka_asgi.integrations.threads, kafka_asgi.integrations.logging\n"
        "import kafka_asgi.fastapi, kafka_asgi.starlette\n"
        "bad = [m for m in sys.modules if m == 'tests' or m.startswith('tests.')\n"
        "       or m == 'kafka_asgi.integrations.testing']\n"
        "assert not bad, bad\n"
        "from kafka_asgi.integrations import capture_events\n"
        "assert 'kafka_asgi.integrations.testing' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_no_private_names_imported_across_modules() -> None:
    for name, tree in modules().items():
        for module, names in imports(tree, top_level_only=False):
            if not module.startswith("kafka_asgi"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{name} imports {private} from {module}"
            if module.startswith("kafka_asgi.integrations"):
                assert not any(part.startswith("_") for part in module.split(".")), (
                    f"{name} imports the private module {module}"
                )


def test_no_import_cycles_between_the_integration_modules() -> None:
    trees = modules()
    graph: dict[str, set[str]] = {}
    for name, tree in trees.items():
        if not name.startswith("kafka_asgi.integrations."):
            continue
        deps = set()
        for module, names in imports(tree, top_level_only=True):
            for target in [module, *(f"{module}.{n}" for n in names)]:
                # A package's __init__ importing its own modules is not a cycle.
                if target in trees and target.startswith("kafka_asgi.integrations."):
                    deps.add(target)
        graph[name] = deps

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path, node]))
        for dep in graph.get(node, ()):
            visit(dep, [*path, node])

    assert graph, "no integration modules found"
    for node in graph:
        visit(node, [])


def test_nothing_below_the_integrations_imports_them() -> None:
    for name, tree in modules().items():
        layer = name.split(".")[1] if name.count(".") else ""
        if layer not in {"protocol", "network", "cluster", "producer", "consumer"}:
            continue
        for module, _names in imports(tree, top_level_only=False):
            assert not module.startswith("kafka_asgi.integrations"), f"{name} imports {module}"


def test_no_integration_module_is_over_800_lines() -> None:
    for path in (PACKAGE / "integrations").glob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 800, f"{path.name} has {lines} lines"
