"""A producer hook that counts the batches of each partition in flight (Produce
requests started and not finished), and the most seen at once; and one that acts
(kills or freezes a broker) the moment a partition has 5 in flight."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka_asgi.producer.hooks import ProduceRequestInfo, ProducerHooks


class InFlightProbe(ProducerHooks):
    """Install with ``producer.add_hooks(probe)``; read ``peak`` afterwards."""

    def __init__(self) -> None:
        self.now: dict[tuple[str, int], int] = {}
        self.peak: dict[tuple[str, int], int] = {}
        self.requests = 0
        self.retried: list[BaseException] = []  # the errors batches were retried after
        # What each partition saw, in order: ("sent", records, bytes), ("answer",
        # records, base offset, error code), ("failed", records, error) for a request
        # that got no answer, ("retried", records, error). For a failing test's message.
        self.timeline: dict[tuple[str, int], list[tuple[Any, ...]]] = {}

    def request_started(self, info: ProduceRequestInfo) -> Any:
        self.requests += 1
        for p in info.partitions:
            key = (p.topic, p.partition)
            n = self.now.get(key, 0) + 1
            self.now[key] = n
            if n > self.peak.get(key, 0):
                self.peak[key] = n
            self.timeline.setdefault(key, []).append(("sent", p.records, p.size))
        return None

    def request_finished(
        self, token: Any, info: ProduceRequestInfo, error: BaseException | None
    ) -> None:
        for p in info.partitions:
            key = (p.topic, p.partition)
            self.now[key] -= 1
            events = self.timeline.setdefault(key, [])
            if error is None:
                events.append(("answer", p.records, p.base_offset, p.error_code))
            else:
                events.append(("failed", p.records, repr(error)))

    def out_before_first_ack(self, key: tuple[str, int]) -> int:
        """The most batches of partition ``key`` out at once until its first
        acknowledgement (a successful answer) came."""
        out = most = 0
        for event in self.timeline.get(key, []):
            if event[0] == "answer" and event[3] == 0:
                return most
            out += {"sent": 1, "answer": -1, "failed": -1}.get(event[0], 0)
            most = max(most, out)
        raise AssertionError(f"{key}: no batch acknowledged: {self.timeline.get(key)}")

    def most(self) -> int:
        """The most batches one partition had in flight at once."""
        return max(self.peak.values(), default=0)

    def records_retried(
        self, topic: str, partition: int, records: int, error: BaseException
    ) -> None:
        self.retried.append(error)
        self.timeline.setdefault((topic, partition), []).append(("retried", records, repr(error)))

    def story(self, of: type[BaseException]) -> str:
        """The timelines of the partitions that retried a batch after an ``of`` error."""
        lines = []
        for key, events in self.timeline.items():
            if any(e[0] == "retried" and of.__name__ in e[2] for e in events):
                lines.append(f"{key}: " + ", ".join(map(repr, events)))
        return "\n".join(lines)


class StrikeAtFive(InFlightProbe):
    """Once armed, calls ``strike(partition)`` the moment a partition of ``topic`` has
    5 Produce requests started and not finished (a True return ends the arming);
    ``struck_with`` is then how many that partition had.

    From the hook, not from the test's task between ticks: by the next tick the
    broker has often answered them (CI runs found none of 5 in flight at any tick of
    several armed seconds, while the run's most was 5)."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic
        self.armed = False
        self.struck_with = 0
        self.strike: Callable[[int], bool] = lambda partition: False

    def request_started(self, info: ProduceRequestInfo) -> Any:
        token = super().request_started(info)
        if self.armed:
            full = [(p, n) for (t, p), n in self.now.items() if t == self.topic and n >= 5]
            if full and self.strike(full[0][0]):
                self.armed = False
                self.struck_with = full[0][1]
        return token
