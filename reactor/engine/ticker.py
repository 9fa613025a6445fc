"""Periodic work on absolute deadlines.

``deadline += period; sleep_until(deadline)``: a tick that runs long does not push every
later tick back (drift), and a tick that misses whole periods is not made up in a burst:
the missed ticks are skipped and counted as overruns. The period is read anew at every
tick, so a reload can change it without restarting the task.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import anyio

__all__ = ("Tick", "Ticker")


@dataclass(frozen=True)
class Tick:
    """One tick: the monotonic time it started, the true time since the previous tick
    (seconds; 0 on the first), and how many ticks were skipped just before it."""

    now: float
    dt: float
    skipped: int
    index: int


class Ticker:
    """Yields :class:`Tick` values on absolute deadlines of a (changeable) period."""

    def __init__(self, period: Callable[[], float]) -> None:
        self._period = period
        self._deadline: float | None = None
        self._last: float | None = None
        self._index = 0
        self.overruns = 0

    async def next(self) -> Tick:
        """Wait for the next deadline (the first tick is immediate)."""
        period = self._period()
        if period <= 0 or not math.isfinite(period):
            raise ValueError(f"tick period: expected a finite number > 0 s, got {period!r}")
        skipped = 0
        if self._deadline is None:
            self._deadline = anyio.current_time()
        else:
            self._deadline += period
            late = anyio.current_time() - self._deadline
            if late > period:
                skipped = int(late // period)
                self._deadline += skipped * period
                self.overruns += skipped
            await anyio.sleep_until(self._deadline)
        now = anyio.current_time()
        dt = 0.0 if self._last is None else now - self._last
        self._last = now
        tick = Tick(now=now, dt=dt, skipped=skipped, index=self._index)
        self._index += 1
        return tick
