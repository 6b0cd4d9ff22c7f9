"""One version, written once (kafka_asgi/_version.py): the installed distribution's
metadata (pyproject reads it from there) and ``kafka_asgi.__version__`` agree."""

from __future__ import annotations

import importlib.metadata
import re

import kafka_asgi
from kafka_asgi._version import __version__


def test_the_version_is_single_sourced() -> None:
    assert kafka_asgi.__version__ == __version__
    assert importlib.metadata.version("kafka-asgi") == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", __version__)
