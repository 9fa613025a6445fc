"""Ticks on absolute deadlines: no drift, skipped ticks counted, not made up."""

from __future__ import annotations

import threading
from typing import cast

import anyio
import pytest

from reactor.engine.ticker import ThreadTicker, Ticker


@pytest.mark.anyio
async def test_ticks_land_on_absolute_deadlines_despite_work() -> None:
    """Work inside a tick does not push later ticks back: tick k starts at t0 + k*period."""
    ticker = Ticker(lambda: 1.0)
    starts = []
    for _ in range(5):
        tick = await ticker.next()
        starts.append(tick.now)
        await anyio.sleep(0.3)  # work that takes 30 % of the period
    t0 = starts[0]
    assert [round(s - t0, 6) for s in starts] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert ticker.overruns == 0


@pytest.mark.anyio
async def test_missed_ticks_are_skipped_and_counted_not_burst() -> None:
    """A 3.5-period stall skips 2 whole ticks (counted) and resumes on the grid."""
    ticker = Ticker(lambda: 1.0)
    first = await ticker.next()
    await anyio.sleep(3.5)
    late = await ticker.next()
    assert late.skipped == 2
    assert ticker.overruns == 2
    assert round(late.now - first.now, 6) == 3.5  # runs at once, late, not at 1.0 and 2.0
    after = await ticker.next()
    assert round(after.now - first.now, 6) == 4.0  # back on the grid
    assert round(after.dt, 6) == 0.5


@pytest.mark.anyio
async def test_period_change_applies_at_the_next_deadline() -> None:
    """A new period read from the callable takes effect from the next tick on."""
    period = [1.0]
    ticker = Ticker(lambda: period[0])
    t0 = (await ticker.next()).now
    t1 = (await ticker.next()).now
    period[0] = 0.25
    t2 = (await ticker.next()).now
    assert round(t1 - t0, 6) == 1.0 and round(t2 - t1, 6) == 0.25


@pytest.mark.anyio
async def test_non_positive_period_is_refused() -> None:
    """A zero period would spin: it is refused with the value in the message."""
    ticker = Ticker(lambda: 0.0)
    with pytest.raises(ValueError, match=r"expected a finite number > 0 s, got 0\.0"):
        await ticker.next()


@pytest.mark.anyio
async def test_reschedule_applies_a_shorter_period_to_the_pending_tick() -> None:
    """Shortening the period while a tick is awaited moves that tick to last + new period."""
    period = [10.0]
    ticker = Ticker(lambda: period[0])
    t0 = (await ticker.next()).now
    async with anyio.create_task_group() as tg:
        got: list[float] = []

        async def wait_one() -> None:
            got.append((await ticker.next()).now)

        tg.start_soon(wait_one)
        await anyio.sleep(1.0)
        period[0] = 2.0
        ticker.reschedule()
    assert round(got[0] - t0, 6) == 2.0
    assert ticker.overruns == 0


def _on_grid(t: float, period: float, phase: float) -> bool:
    k = t / period - phase
    return abs(k - round(k)) < 1e-6


@pytest.mark.anyio
async def test_aligned_tickers_started_apart_wake_together() -> None:
    """Two aligned tickers of one period, started 0.37 s apart, tick at the same instants
    from their second tick on (one wake-up of the process, not two); each first tick is
    immediate and the second comes 0.5 to 1.5 periods after it, on the grid."""
    ticks: dict[str, list[float]] = {"a": [], "b": []}

    async def run(name: str, delay: float) -> None:
        await anyio.sleep(delay)
        ticker = Ticker(lambda: 1.0, phase=0.0)
        for _ in range(4):
            ticks[name].append((await ticker.next()).now)
        assert ticker.overruns == 0

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "a", 0.0)
        tg.start_soon(run, "b", 0.37)
    a, b = ticks["a"], ticks["b"]
    assert round(b[0] - a[0], 6) == 0.37
    assert {round(t, 6) for t in b[1:]} <= {round(t, 6) for t in a[1:]} | {round(a[-1] + 1, 6)}
    for times in (a, b):
        assert 0.5 <= times[1] - times[0] <= 1.5
        assert all(_on_grid(t, 1.0, 0.0) for t in times[1:])


@pytest.mark.anyio
async def test_aligned_ticker_waits_for_its_phase_when_not_immediate() -> None:
    """``immediate=False`` at phase 0.5 of a 2 s period: the first tick is the next grid
    point (k*2 + 1 s), never before the call, and the rest follow every 2 s."""
    await anyio.sleep(0.3)
    called = anyio.current_time()
    ticker = Ticker(lambda: 2.0, phase=0.5, immediate=False)
    ticks = [(await ticker.next()).now for _ in range(3)]
    assert called <= ticks[0] < called + 2.0
    assert all(_on_grid(t, 2.0, 0.5) for t in ticks)
    assert [round(t - ticks[0], 6) for t in ticks] == [0.0, 2.0, 4.0]


@pytest.mark.anyio
async def test_aligned_ticker_moves_to_the_new_periods_grid() -> None:
    """A period change lands the next tick on the new period's grid (the nearest point to
    last + new period), so tickers keep sharing wake-ups after a reload."""
    period = [1.0]
    ticker = Ticker(lambda: period[0], phase=0.0)
    await ticker.next()
    t1 = (await ticker.next()).now
    period[0] = 3.0
    t2 = (await ticker.next()).now
    t3 = (await ticker.next()).now
    assert _on_grid(t2, 3.0, 0.0) and 1.5 <= t2 - t1 <= 4.5
    assert round(t3 - t2, 6) == 3.0


def test_bad_phase_is_refused() -> None:
    """A phase outside [0, 1) and a grid wait without a grid are refused, naming them."""
    with pytest.raises(ValueError, match=r"phase: expected a fraction in \[0, 1\), got 1\.0"):
        Ticker(lambda: 1.0, phase=1.0)
    with pytest.raises(ValueError, match="without a phase"):
        Ticker(lambda: 1.0, immediate=False)


class _FakeTime:
    """A clock whose stop event's wait advances it (a thread's sleep, without sleeping)."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.stopped = False

    def clock(self) -> float:
        return self.now

    # the ticker calls stop.wait(timeout) and stop.is_set()
    def wait(self, timeout: float) -> bool:
        if not self.stopped:
            self.now += timeout
        return self.stopped

    def is_set(self) -> bool:
        return self.stopped


def test_thread_ticker_keeps_the_grid_and_counts_skipped_ticks() -> None:
    """The sampler thread's ticker: the first tick at once, then the grid points of
    period 1 s (phase 0), a 3.5 s stall skips the 2 grid points it passed (counted)
    and resumes on the grid; a stop ends the wait."""
    t = _FakeTime(10.3)
    ticker = ThreadTicker(lambda: 1.0, phase=0.0, clock=t.clock)
    stop = cast(threading.Event, t)
    ticks = [ticker.next(stop)]
    ticks.append(ticker.next(stop))
    t.now += 3.5  # work (or a stall) of 3.5 periods
    ticks.append(ticker.next(stop))
    ticks.append(ticker.next(stop))
    assert [round(tk.now, 6) for tk in ticks if tk] == [10.3, 11.0, 14.5, 15.0]
    assert [tk.skipped for tk in ticks if tk] == [0, 0, 2, 0]
    assert ticker.overruns == 2
    t.stopped = True
    assert ticker.next(stop) is None


def test_thread_ticker_phase_and_period_change() -> None:
    """Phase 0.25 of a 2 s period puts ticks at 2k + 0.5; a new period applies from the
    next tick, on its own grid."""
    t = _FakeTime(100.0)
    period = [2.0]
    ticker = ThreadTicker(lambda: period[0], phase=0.25, clock=t.clock)
    stop = cast(threading.Event, t)
    first = ticker.next(stop)
    second = ticker.next(stop)
    period[0] = 1.0
    third = ticker.next(stop)
    assert first is not None and second is not None and third is not None
    assert (first.now, second.now, third.now) == (100.0, 102.5, 103.25)
