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
        # Not kafka_asgi.fastapi: recent FastAPI imports opentelemetry-api itself.
        "import kafka_asgi.django, kafka_asgi.wsgi, kafka_asgi.flask\n"
        "import kafka_asgi.starlette, kafka_asgi.integrations.logging\n"
        "from kafka_asgi import Producer\n"
        "Producer('127.0.0.1:1')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('opentelemetry', 'prometheus_client'))\n"
        "print(bad)\n"
        "assert 'kafka_asgi.integrations' in sys.modules\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
