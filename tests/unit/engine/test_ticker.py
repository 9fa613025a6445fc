"""Ticks on absolute deadlines: no drift, skipped ticks counted, not made up."""

from __future__ import annotations

import anyio
import pytest

from reactor.engine.ticker import Ticker


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
