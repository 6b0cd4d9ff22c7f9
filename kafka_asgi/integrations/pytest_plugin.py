"""pytest plugin (auto-loaded once kafka_asgi is installed): the ``kafka_events`` fixture.

::

    def test_signup(client, kafka_events):
        client.post("/signup", json={"email": "a@example.com"})
        assert kafka_events.json_values("signups") == [{"email": "a@example.com", ...}]

The fixture is an :class:`~kafka_asgi.integrations.testing.InMemoryProducer` standing in
for the "default" cluster's producer for the duration of the test: the kafka_asgi
lifespans use it instead of connecting to Kafka, and ``get_producer()`` returns it.
Other cluster names: ``kafka_events_for("analytics")`` inside a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING

import pytest

# Imported in the fixtures, not here: pytest loads this plugin at startup in every
# project where kafka_asgi is installed, which must cost nothing for those not using it.
if TYPE_CHECKING:
    from kafka_asgi.integrations.testing import InMemoryProducer


@pytest.fixture
def kafka_events() -> Iterator[InMemoryProducer]:
    """Captures what the app ships to the "default" cluster during the test."""
    from kafka_asgi.integrations.testing import capture_events

    with capture_events("default") as producer:
        yield producer


@pytest.fixture
def kafka_events_for() -> Iterator[Callable[[str], InMemoryProducer]]:
    """``kafka_events_for(cluster)`` captures another cluster's events for the test."""
    from kafka_asgi.integrations.testing import capture_events

    with ExitStack() as stack:

        def capture(cluster: str) -> InMemoryProducer:
            return stack.enter_context(capture_events(cluster))

        yield capture
