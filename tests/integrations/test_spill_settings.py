"""The spill options reach the Producer from the lifespan's and Django's settings
(a background producer is what Django's WSGI path runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from kafka_asgi.django import kafka_settings
from kafka_asgi.integrations.background import BackgroundProducer
from kafka_asgi.integrations.lifespan import KafkaLifespan
from kafka_asgi.producer import Producer, get_producer
from tests.integrations import django_testapp  # noqa: F401 - configures Django first
from tests.support.asgi import run_lifespan

SPILL = {"spill_dir": "", "spill_max_bytes": 1 << 20, "spill_when_full": "block"}


async def no_lifespan_app(scope: Any, receive: Any, send: Any) -> None:
    raise ValueError("no lifespan")


@pytest.mark.anyio
async def test_lifespan_passes_spill_options(tmp_path: Path, anyio_backend: str) -> None:
    options = {**SPILL, "spill_dir": str(tmp_path), "connect_timeout": 0.2}
    app = KafkaLifespan(
        no_lifespan_app,
        cluster="c-spill",
        bootstrap="127.0.0.1:1",
        startup_timeout=0.2,
        producer_options=options,
    )
    async with run_lifespan(app):
        producer = get_producer("c-spill")
        assert isinstance(producer, Producer)
        assert producer.options.spill_dir == str(tmp_path)
        assert producer.options.spill_when_full == "block"
        assert producer.stats().spilled == 0


def test_django_settings_pass_spill_options(tmp_path: Path) -> None:
    options = {**SPILL, "spill_dir": str(tmp_path)}
    conf = {"BOOTSTRAP": "127.0.0.1:1", "PRODUCER_OPTIONS": options}
    with override_settings(KAFKA_ASGI=conf):
        settings = kafka_settings()
    assert settings.lifespan["producer_options"] == options
    # Django's WSGI path runs a BackgroundProducer with these lifespan options.
    bg = BackgroundProducer(
        **{**settings.lifespan, "cluster": "c-spill-bg", "startup_timeout": 0.2}
    )
    try:
        bg.ensure_started(timeout=10)
        producer = get_producer("c-spill-bg")
        assert isinstance(producer, Producer) and producer.options.spill_dir == str(tmp_path)
    finally:
        bg.stop()


def test_bad_spill_option_is_named() -> None:
    with pytest.raises(ValueError, match="spill_when_full"):
        Producer("127.0.0.1:1", spill_dir="/tmp/x", spill_when_full="wait")
    with pytest.raises(ValueError, match="spill_fsync"):
        Producer("127.0.0.1:1", spill_dir="/tmp/x", spill_fsync=-1)
    with pytest.raises(TypeError, match="spill_dir"):
        Producer("127.0.0.1:1", spill_dir=3)


def test_wsgi_middleware_passes_spill_options(tmp_path: Path) -> None:
    from kafka_asgi.integrations.wsgi import AccessLogMiddleware

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    options = {**SPILL, "spill_dir": str(tmp_path)}
    mw = AccessLogMiddleware(
        app,
        topic="access",
        cluster="c-spill-wsgi",
        bootstrap="127.0.0.1:1",
        startup_timeout=0.2,
        producer_options=options,
    )
    assert mw.background is not None
    try:
        mw.background.ensure_started(timeout=10)
        producer = get_producer("c-spill-wsgi")
        assert isinstance(producer, Producer) and producer.options.spill_dir == str(tmp_path)
    finally:
        mw.background.stop()
