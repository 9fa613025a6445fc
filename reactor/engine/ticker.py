"""Periodic work on absolute deadlines.

``deadline += period; sleep_until(deadline)``: a tick that runs long does not push every
later tick back (drift), and a tick that misses whole periods is not made up in a burst:
the missed ticks are skipped and counted as overruns. The period is read anew at every
tick, so a reload can change it without restarting the task; :meth:`Ticker.reschedule`
applies a new period to the tick already being waited for.

An aligned ticker (``phase`` given) puts its deadlines on a grid of the event loop's
clock shared by the whole process: ``k * period + phase * period``. Every aligned task of
one period (or of periods that are multiples of each other) then wakes at the same
instant, and the process pays for one wake-up per grid instant, not one per task: after
a second asleep, the first Python to run meets cold caches, and that costs more than
the few hundred microseconds of a source's or a policy's own work (a wake-up of an idle
asyncio task measured ~0.5 ms of CPU here against 40 µs in a tight loop).
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

    def __init__(
        self, period: Callable[[], float], *, phase: float | None = None, immediate: bool = True
    ) -> None:
        """``phase``: None for deadlines counted from the first tick, or a fraction of
        the period in [0, 1) for deadlines on the process-wide grid. ``immediate``: the
        first tick is at once (the next one then lands on the grid, between half a
        period and one and a half periods later); False waits for the first grid point
        (aligned tickers only)."""
        if phase is not None and not 0.0 <= phase < 1.0:
            raise ValueError(f"ticker phase: expected a fraction in [0, 1), got {phase!r}")
        if phase is None and not immediate:
            raise ValueError("a ticker without a phase has no grid to wait for: immediate")
        self._period = period
        self._phase = phase
        self._immediate = immediate
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
        if self._deadline is None and self._immediate:
            self._check(self._period())
            self._deadline = anyio.current_time()
        elif self._deadline is None:
            period = self._check(self._period())
            self._deadline = self._align(anyio.current_time(), period, math.ceil)
            await anyio.sleep_until(self._deadline)
        else:
            grid = self._deadline
            rescheduled = False
            while True:
                period = self._check(self._period())
                deadline = self._align(grid + period, period, round)
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

    def _align(self, t: float, period: float, to: Callable[[float], int]) -> float:
        """``t`` moved to a grid point (``to``: round for the nearest, ceil for the next
        one); ``t`` itself for an unaligned ticker."""
        if self._phase is None:
            return t
        return (to(t / period - self._phase) + self._phase) * period

    @staticmethod
    def _check(period: float) -> float:
        if period <= 0 or not math.isfinite(period):
            raise ValueError(f"tick period: expected a finite number > 0 s, got {period!r}")
        return period
