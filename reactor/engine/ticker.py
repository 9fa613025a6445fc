"""Periodic work on absolute deadlines.

``deadline += period; sleep_until(deadline)``: a tick that runs long does not push every
later tick back (drift), and a tick that misses whole periods is not made up in a burst:
the missed ticks are skipped and counted as overruns. The period is read anew at every
tick, so a reload can change it without restarting the task; :meth:`Ticker.reschedule`
applies a new period to the tick already being waited for.
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
        self._sleep: anyio.CancelScope | None = None
        self.overruns = 0

    def reschedule(self) -> None:
        """Re-read the period now: the pending deadline becomes last tick + new period."""
        if self._sleep is not None:
            self._sleep.cancel()

    async def next(self) -> Tick:
        """Wait for the next deadline (the first tick is immediate)."""
        skipped = 0
        if self._deadline is None:
            self._check(self._period())
            self._deadline = anyio.current_time()
        else:
            grid = self._deadline
            rescheduled = False
            while True:
                period = self._check(self._period())
                deadline = grid + period
                now = anyio.current_time()
                if rescheduled:
                    # a new period applies from the last tick; never schedule in the past
                    deadline = max(deadline, now)
                elif now - deadline >= period:
                    skipped = int((now - deadline) // period)
                    deadline += skipped * period
                    self.overruns += skipped
                self._deadline = deadline
                with anyio.CancelScope() as self._sleep:
                    await anyio.sleep_until(deadline)
                rescheduled = self._sleep.cancelled_caught
                self._sleep = None
                if not rescheduled:
                    break
                self.overruns -= skipped
                skipped = 0
        now = anyio.current_time()
        dt = 0.0 if self._last is None else now - self._last
        self._last = now
        tick = Tick(now=now, dt=dt, skipped=skipped, index=self._index)
        self._index += 1
        return tick

    @staticmethod
    def _check(period: float) -> float:
        if period <= 0 or not math.isfinite(period):
            raise ValueError(f"tick period: expected a finite number > 0 s, got {period!r}")
        return period
