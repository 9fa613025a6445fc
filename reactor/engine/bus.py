"""The latest-value bus between sources and policies.

Each topic holds only its newest stamped sample: a controller must act on the newest
state of the machine, never on a backlog (an unbounded queue would feed it old data).
A sample replaced before anyone read it is counted as dropped, not lost silently.
Stamps are the runtime's monotonic clock (``anyio.current_time()``), never wall time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

__all__ = ("Bus", "Sample", "TopicStats")


@dataclass(frozen=True)
class Sample:
    """One value on a topic, stamped with the monotonic time it was taken."""

    topic: str
    value: Any
    stamp: float
    seq: int


@dataclass
class TopicStats:
    """Counters of one topic, reported in status and logs."""

    published: int = 0
    dropped: int = 0
    failures: int = 0
    last_error: str | None = None
    failed: bool = False


@dataclass
class _Topic:
    latest: Sample | None = None
    read_seq: int = 0
    stats: TopicStats = field(default_factory=TopicStats)
    changed: anyio.Event = field(default_factory=anyio.Event)


class Bus:
    """Topics of latest values. Not thread-safe: use it from the event loop only."""

    def __init__(self) -> None:
        self._topics: dict[str, _Topic] = {}

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic()
        return topic

    def publish(self, topic: str, value: Any, stamp: float) -> Sample:
        """Replace the topic's value; wakes every waiter of :meth:`wait_newer`."""
        t = self._topic(topic)
        if t.latest is not None and t.read_seq < t.latest.seq:
            t.stats.dropped += 1
        seq = (t.latest.seq if t.latest else 0) + 1
        t.latest = Sample(topic, value, stamp, seq)
        t.stats.published += 1
        t.stats.failed = False
        event, t.changed = t.changed, anyio.Event()
        event.set()
        return t.latest

    def record_failure(self, topic: str, reason: str, *, failed: bool = False) -> None:
        """Count a failed read; ``failed`` marks the source as down (it will not recover)."""
        t = self._topic(topic)
        t.stats.failures += 1
        t.stats.last_error = reason
        if failed:
            t.stats.failed = True

    def latest(self, topic: str) -> Sample | None:
        """The newest sample, whatever its age (marks it read)."""
        t = self._topics.get(topic)
        if t is None or t.latest is None:
            return None
        t.read_seq = t.latest.seq
        return t.latest

    def peek(self, topic: str) -> Sample | None:
        """The newest sample without marking it read (status and metrics must not change
        the ``dropped`` counter)."""
        t = self._topics.get(topic)
        return None if t is None else t.latest

    def fresh(self, topic: str, now: float, max_age: float) -> Sample | None:
        """The newest sample if it is at most ``max_age`` seconds old, else None (stale)."""
        sample = self.latest(topic)
        if sample is None or now - sample.stamp > max_age:
            return None
        return sample

    async def wait_newer(self, topic: str, seq: int) -> Sample:
        """Wait until the topic holds a sample with a sequence number above ``seq``."""
        while True:
            t = self._topic(topic)
            if t.latest is not None and t.latest.seq > seq:
                return t.latest
            await t.changed.wait()

    def stats(self, topic: str) -> TopicStats:
        return self._topic(topic).stats

    def topics(self) -> list[str]:
        return sorted(self._topics)
