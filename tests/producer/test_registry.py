"""The per-worker registry: a forked worker starts without its parent's producers."""

from __future__ import annotations

import os
import sys

import pytest

from kafka_asgi import get_producer, register_producer, unregister_producer
from kafka_asgi.producer import ProducerNotRegisteredError


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_see_the_parents_producer() -> None:
    parent_producer = object()
    register_producer("fork-test", parent_producer)
    try:
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            code = 1
            try:
                get_producer("fork-test")
            except ProducerNotRegisteredError:
                mine = object()
                register_producer("fork-test", mine)  # no clash with the parent's
                code = 0 if get_producer("fork-test") is mine else 2
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert get_producer("fork-test") is parent_producer
    finally:
        unregister_producer("fork-test")
