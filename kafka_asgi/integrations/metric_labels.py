"""Bounded topic labels for the metrics integrations (Prometheus, OpenTelemetry).

Each distinct label value is a time series of its own, kept by the exporter and the
monitoring system for as long as the process lives. An app that names topics from
data (one per tenant, per customer) would make them without end; the first
``max_topics`` topics seen keep their own series, and every later one is counted
under :data:`OVERFLOW_TOPIC`, with one warning. Imports neither library.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["DEFAULT_MAX_TOPICS", "OVERFLOW_TOPIC", "TopicLabels", "check_max_topics"]

logger = logging.getLogger("kafka_asgi.integrations")

DEFAULT_MAX_TOPICS = 100
"""Distinct topic label values kept by default."""

OVERFLOW_TOPIC = "<other>"
"""The label value of the topics past the bound: '<' and '>' are not allowed in a Kafka
topic name, so it never adds up with a real topic's series."""


def check_max_topics(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_topics must be a positive int, not {value!r}")
    return value


class TopicLabels:
    """``labels(topic)``: ``topic``, or :data:`OVERFLOW_TOPIC` once ``max_topics``
    others were seen. ``owner`` names the integration in the warning."""

    __slots__ = ("_lock", "_seen", "_warned", "max_topics", "owner")

    def __init__(self, max_topics: int, owner: str) -> None:
        self.max_topics = check_max_topics(max_topics)
        self.owner = owner
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self, topic: str) -> str:
        # Hooks run per batch on each producer's loop; producers on several threads
        # may share these (one registry): the set grows under the lock only.
        if topic in self._seen:
            return topic
        with self._lock:
            if topic in self._seen or len(self._seen) < self.max_topics:
                self._seen.add(topic)
                return topic
            warn = not self._warned
            self._warned = True
        if warn:
            logger.warning(
                "kafka_asgi: %s: more than %d distinct topics; the metrics of topic %r and "
                "of every further one are labelled %r (max_topics=%d)",
                self.owner,
                self.max_topics,
                topic,
                OVERFLOW_TOPIC,
                self.max_topics,
            )
        return OVERFLOW_TOPIC

    @property
    def seen(self) -> int:
        """Distinct topics with series of their own."""
        return len(self._seen)
