"""Importing kafka_asgi and its middlewares imports no observability library."""

from __future__ import annotations

import subprocess
import sys


def test_import_pulls_in_neither_opentelemetry_nor_prometheus() -> None:
    code = (
        "import sys\n"
        "import kafka_asgi, kafka_asgi.integrations\n"
        "import kafka_asgi.integrations.tracecontext\n"
        "from kafka_asgi.integrations import AccessLogMiddleware\n"
        "import kafka_asgi.django\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('opentelemetry', 'prometheus_client'))\n"
        "print(bad)\n"
        "assert 'kafka_asgi.integrations' in sys.modules\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
