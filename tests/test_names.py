"""Names that must stay unambiguous.

``kafka_asgi.errors`` says it lists every exception kafka_asgi raises: every public
exception class defined anywhere in the package is there (found with ``ast``, so a new
module cannot be forgotten), under its own name.  One thing is called ``Record`` (the
protocol layer's decoded record), and the client's own timeout is not named like
Kafka's REQUEST_TIMED_OUT."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import kafka_asgi.errors

PACKAGE = Path(kafka_asgi.errors.__file__).parent


def exception_classes() -> dict[str, type[BaseException]]:
    """Public exception classes defined at the top of any module of the package."""
    found: dict[str, type[BaseException]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(), str(path))
        names = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        names = [n for n in names if not n.startswith("_")]
        if not names:
            continue
        loaded = importlib.import_module(module)
        for name in names:
            cls = getattr(loaded, name)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found[f"{module}.{name}"] = cls
    return found


def test_every_exception_class_is_in_kafka_asgi_errors() -> None:
    classes = exception_classes()
    assert len(classes) > 100  # the error-code classes alone are more
    missing = sorted(
        where
        for where, cls in classes.items()
        if getattr(kafka_asgi.errors, cls.__name__, None) is not cls
        or cls.__name__ not in kafka_asgi.errors.__all__
    )
    assert missing == []


def test_the_client_side_timeout_is_not_kafkas_request_timed_out() -> None:
    from kafka_asgi.errors import (
        ClientRequestTimeoutError,
        NetworkError,
        RequestTimedOutError,
        RequestTimeout,
    )

    assert RequestTimeout is ClientRequestTimeoutError  # the old name still works
    assert issubclass(ClientRequestTimeoutError, NetworkError)
    assert not issubclass(ClientRequestTimeoutError, RequestTimedOutError)
    assert RequestTimedOutError.name == "REQUEST_TIMED_OUT"


def test_one_thing_is_called_record() -> None:
    defined = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            names = []
            if isinstance(node, ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            if "Record" in names:
                defined.append(str(path.relative_to(PACKAGE)))
    assert defined == ["protocol/record_batch.py"]
