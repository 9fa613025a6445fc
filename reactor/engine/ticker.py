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

Two phases are used: :data:`READ_PHASE` for the sources and samplers, and
:data:`DECIDE_PHASE` for what reads them (policies, the per-tick report), a thousandth
of a tick later. That is one wake-up per tick, not two: the deciders run in the same
burst, on warm caches (measured on the daemon benchmark: 7.9 against 9.0 ms of CPU per
second with the deciders half a tick later). And they never race the reads: the event
loop fires due timers in deadline order and runs the woken tasks in that order, so
every read due at the instant has published before any decider wakes, however late
the loop runs. A sampler's snapshot, computed in a worker thread, is not waited for:
a decider meets it at its next tick.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

__all__ = ("DECIDE_PHASE", "READ_PHASE", "ThreadTicker", "Tick", "Ticker")

#: the grid phase of sources and samplers (fraction of the period)
READ_PHASE = 0.0
#: the grid phase of policies and the report: just after the reads of the same instant
DECIDE_PHASE = 0.001


@dataclass(frozen=True)
class Tick:
    """One tick: the monotonic time it started, the true time since the previous tick
    (seconds; 0 on the first), and how many ticks were skipped just before it."""

    now: float
    dt: float
    skipped: int
    index: int


class _Ticks:
    """What both tickers count: the previous tick's time, the index, overruns."""

    def __init__(self) -> None:
        self._last: float | None = None
        self._index = 0
        self.overruns = 0

    def _emit(self, now: float, skipped: int) -> Tick:
        dt = 0.0 if self._last is None else now - self._last
        self._last = now
        tick = Tick(now=now, dt=dt, skipped=skipped, index=self._index)
        self._index += 1
        return tick


def _skip(deadline: float, now: float, period: float) -> tuple[float, int]:
    """The deadline moved past the whole periods already missed, and how many."""
    if now - deadline < period:
        return deadline, 0
    skipped = int((now - deadline) // period)
    return deadline + skipped * period, skipped


class Ticker(_Ticks):
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
        super().__init__()
        self._period = period
        self._phase = phase
        self._immediate = immediate
        self._deadline: float | None = None
        self._sleep: anyio.CancelScope | None = None

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
                else:
                    deadline, skipped = _skip(deadline, now, period)
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
        return self._emit(anyio.current_time(), skipped)

    def _align(self, t: float, period: float, to: Callable[[float], int]) -> float:
        """``t`` moved to a grid point (``to``: round for the nearest, ceil for the next
        one); ``t`` itself for an unaligned ticker."""
        if self._phase is None:
            return t
        return _align(t, period, self._phase, to)

    @staticmethod
    def _check(period: float) -> float:
        if period <= 0 or not math.isfinite(period):
            raise ValueError(f"tick period: expected a finite number > 0 s, got {period!r}")
        return period


def _align(t: float, period: float, phase: float, to: Callable[[float], int]) -> float:
    return (to(t / period - phase) + phase) * period


class ThreadTicker(_Ticks):
    """:class:`Ticker`'s grid for a thread of its own (the native sampler's): deadlines
    on ``time.monotonic()`` (the asyncio loop's clock, so the same grid), a sleep that
    a stop event ends at once, missed periods skipped and counted. The first tick is
    immediate; the period is read anew at every tick."""

    def __init__(
        self,
        period: Callable[[], float],
        *,
        phase: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= phase < 1.0:
            raise ValueError(f"ticker phase: expected a fraction in [0, 1), got {phase!r}")
        super().__init__()
        self._period = period
        self._phase = phase
        self._clock = clock
        self._deadline: float | None = None

    def next(self, stop: threading.Event) -> Tick | None:
        """Sleep until the next deadline; None once ``stop`` is set."""
        skipped = 0
        if self._deadline is None:
            Ticker._check(self._period())
            self._deadline = self._clock()
        else:
            period = Ticker._check(self._period())
            deadline = _align(self._deadline + period, period, self._phase, round)
            now = self._clock()
            deadline, skipped = _skip(deadline, now, period)
            self.overruns += skipped
            self._deadline = deadline
            if stop.wait(max(0.0, deadline - now)):
                return None
        if stop.is_set():
            return None
        return self._emit(self._clock(), skipped)
