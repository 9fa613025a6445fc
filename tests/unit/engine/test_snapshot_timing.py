"""The timing of DAMON snapshot reads (reactor.engine.snapshot_timing): pure arithmetic.

The kernel model these tests replay is the one the module states: a tried-regions update
returns at the kdamond's next aggregation boundary, boundaries follow every aggregation
from the last one (or from a restart), and one update runs at a time.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactor.engine.snapshot_timing import (
    Read,
    Timing,
    first_boundary,
    margin_s,
    missed_by,
    plan_next,
    plan_read,
)

TICK = 1.0


def test_a_long_aggregation_is_read_once_per_aggregation_shortly_before_its_boundary() -> None:
    """5 s aggregation, last boundary at 10 s: the next read aims at 15 s and is issued
    one margin before it, so it holds the lock about a margin, not up to 5 s."""
    t = Timing(sample_s=0.25, aggregation_s=5.0, anchor=10.0, last_read=10.0)
    read = plan_read(t, 0, now=10.1, tick_s=TICK)
    assert read.boundary == pytest.approx(15.0)
    assert read.issue_at == pytest.approx(15.0 - margin_s(0.25))
    assert read.ends_by == read.boundary


def test_a_short_aggregation_is_read_at_the_tick_instant_after_its_last_read() -> None:
    """100 ms aggregation, last read at 3.02 s: the next read is issued at the 4 s tick
    instant and returns at the kdamond's first boundary after it, within 100 ms (its
    boundaries are not predicted five aggregations ahead: their drift would add up)."""
    t = Timing(sample_s=0.005, aggregation_s=0.1, anchor=3.02, last_read=3.02)
    read = plan_read(t, 0, now=3.5, tick_s=TICK)
    assert (read.issue_at, read.boundary, read.ends_by) == (4.0, None, pytest.approx(4.1))
    assert plan_read(t, 0, now=4.3, tick_s=TICK).issue_at == 4.3  # late: at once


def test_a_boundary_too_close_to_reach_is_left_for_the_next_one() -> None:
    """30 ms before a boundary a read may not get in before it (and would then hold the
    lock a whole aggregation): it aims at the one after."""
    t = Timing(sample_s=0.05, aggregation_s=5.0, anchor=10.0, last_read=10.0)
    read = plan_read(t, 0, now=14.97, tick_s=TICK)
    assert read.boundary == pytest.approx(20.0)
    assert read.issue_at == pytest.approx(20.0 - margin_s(0.05))


def test_an_unknown_phase_is_read_blind_after_its_grace() -> None:
    """After an aggregation change nothing explains, the read is issued blind once the
    grace has passed; it may hold the lock one whole aggregation."""
    t = Timing(sample_s=0.4, aggregation_s=8.0, anchor=None, last_read=30.0, not_before=31.0)
    early = plan_read(t, 0, now=30.2, tick_s=TICK)
    assert (early.issue_at, early.boundary, early.ends_by) == (31.0, None, 39.0)
    late = plan_read(t, 0, now=33.0, tick_s=TICK)
    assert late.issue_at == 33.0 and late.ends_by == 41.0


def test_boundaries_after_a_restart_follow_the_restart_with_the_new_aggregation() -> None:
    """A commit at 12.3 s changed the aggregation from 5 s to 8 s: the kernel counts the
    new one from the commit, so the next boundary is 20.3 s, not the old grid's 15 s."""
    before = Timing(sample_s=0.25, aggregation_s=5.0, anchor=10.0, last_read=10.0)
    after = replace(before, sample_s=0.4, aggregation_s=8.0, anchor=12.3)
    assert plan_read(before, 0, now=12.4, tick_s=TICK).boundary == pytest.approx(15.0)
    assert plan_read(after, 0, now=12.4, tick_s=TICK).boundary == pytest.approx(20.3)


def test_first_boundary_counts_at_least_one_aggregation() -> None:
    assert first_boundary(10.0, 5.0, 0.0) == 15.0
    assert first_boundary(10.0, 5.0, 15.0) == 15.0
    assert first_boundary(10.0, 5.0, 15.01) == 20.0


def test_a_fast_monitor_waits_for_a_slow_ones_boundary_instead_of_costing_it_an_aggregation() -> (
    None
):
    """The fast monitor's read is due first (the 5 s tick), but it may hold the lock until
    5.2 s, past 5.15 s when the slow monitor must start for its 5.25 s boundary: the slow
    one would lose 5 s, the fast one 0.3 s by waiting. The slow read goes first; the fast
    one right after it."""
    fast = Timing(sample_s=0.01, aggregation_s=0.2, anchor=4.15, last_read=4.15)
    slow = Timing(sample_s=0.05, aggregation_s=5.0, anchor=0.25, last_read=0.25)
    alone = plan_read(fast, 0, now=4.9, tick_s=TICK)
    assert alone.issue_at < plan_read(slow, 1, now=4.9, tick_s=TICK).issue_at
    read = plan_next([fast, slow], now=4.9, tick_s=TICK)
    assert read.index == 1 and read.boundary == pytest.approx(5.25)
    after = plan_next([fast, replace(slow, anchor=5.25, last_read=5.25)], now=5.25, tick_s=TICK)
    assert after.index == 0 and after.issue_at == 5.25


def test_a_blind_read_waits_for_a_near_boundary_but_does_not_starve() -> None:
    """A blind read of an 8 s aggregation may hold the lock 8 s: another monitor's 5 s
    boundary 0.6 s away goes first (it would lose 5 s, the blind read waits 0.65 s). But
    a monitor never waits so long that its snapshot would be older than two periods."""
    slow = Timing(sample_s=0.05, aggregation_s=5.0, anchor=5.65, last_read=5.65)
    blind = Timing(sample_s=0.4, aggregation_s=8.0, anchor=None, last_read=5.0)
    assert plan_next([slow, blind], now=10.05, tick_s=TICK).index == 0
    overdue = replace(blind, last_read=10.05 - 2 * 8.0)
    assert plan_next([slow, overdue], now=10.05, tick_s=TICK).index == 1


def simulate(
    phases: list[float], aggregations: list[float], samples: list[float], until: float
) -> list[tuple[int, float, float]]:
    """Replay the planner against the kernel model: kdamond i's boundaries at
    ``phases[i] + n * aggregations[i]`` (``phases[i]`` within its first aggregation);
    an update issued at t returns at the first
    boundary after t (one at a time). Returns (monitor, issued, returned) per read."""
    timings = [
        Timing(sample_s=s, aggregation_s=a, anchor=p - a)
        for p, a, s in zip(phases, aggregations, samples, strict=True)
    ]
    now, reads = 0.0, []
    while now < until:
        read = plan_next(timings, now, TICK)
        issued = max(now, read.issue_at)
        p, a = phases[read.index], aggregations[read.index]
        returned = p + (math.floor((issued - p) / a) + 1) * a  # the first one after it
        reads.append((read.index, issued, returned))
        timings[read.index] = replace(timings[read.index], anchor=returned, last_read=returned)
        now = returned
    return reads


def gaps(reads: list[tuple[int, float, float]], i: int) -> list[float]:
    times = [r for j, _, r in reads if j == i]
    return [b - a for a, b in itertools.pairwise(times)]


def test_two_equal_monitors_whose_boundaries_collide_take_turns() -> None:
    """Two 1 s aggregations 5 ms apart: both cannot be read at every boundary (one walk at
    a time). They alternate; neither holds the lock across a boundary; neither starves."""
    reads = simulate([0.500, 0.505], [1.0, 1.0], [0.05, 0.05], until=30.0)
    for i in (0, 1):
        assert max(gaps(reads, i)) <= 2.0 + 1e-9
    assert max(r - s for _, s, r in reads) <= margin_s(0.05) + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    fast_aggr=st.sampled_from([0.05, 0.1, 0.2, 0.5]),
    slow_aggr=st.floats(1.0, 10.0),
    phase_fast=st.floats(0.0, 0.999),
    phase_slow=st.floats(0.0, 0.999),
)
def test_no_read_holds_the_lock_past_its_margin_and_every_monitor_keeps_its_cadence(
    fast_aggr: float, slow_aggr: float, phase_fast: float, phase_slow: float
) -> None:
    """Whatever the phases: a slow read holds the lock at most its margin (it never waits
    for a boundary it could not reach), a fast one at most its one short aggregation;
    the fast monitor is read about once a tick (gap at most a tick, two of its
    aggregations and the reads' margins); the slow one at most every second boundary."""
    samples = [fast_aggr / 20, slow_aggr / 20]
    reads = simulate(
        [phase_fast * fast_aggr, phase_slow * slow_aggr],
        [fast_aggr, slow_aggr],
        samples,
        until=12 * slow_aggr,
    )
    most = [fast_aggr, margin_s(samples[1])]
    for i, issued, returned in reads:
        assert returned - issued <= most[i] + 1e-9
    fast_bound = TICK + 2 * fast_aggr + margin_s(samples[0]) + margin_s(samples[1]) + 1e-9
    assert max(gaps(reads, 0)) <= fast_bound
    assert max(gaps(reads, 1)) <= 2 * slow_aggr + 1e-9


def test_a_missed_boundary_is_told_from_drift_and_from_an_earlier_catch() -> None:
    read = Read(0, issue_at=14.4, boundary=15.0, ends_by=15.0)
    assert missed_by(read, 15.2, 5.0) is None  # late within the aggregation: drift
    assert missed_by(read, 20.0, 5.0) == pytest.approx(5.0)  # waited a whole one more
    assert missed_by(read, 12.0, 5.0) is None  # caught an earlier one: shorter, harmless
    assert missed_by(Read(0, 1.0, None, 9.0), 8.5, 8.0) is None  # blind: nothing predicted


def test_timing_refuses_intervals_that_are_not_positive() -> None:
    with pytest.raises(ValueError, match=r"aggregation_s: expected seconds > 0, got 0"):
        Timing(sample_s=0.01, aggregation_s=0)
    with pytest.raises(ValueError, match=r"sample_s: expected seconds > 0, got nan"):
        Timing(sample_s=math.nan, aggregation_s=1.0)
    with pytest.raises(ValueError, match="at least one monitor"):
        plan_next([], 0.0, TICK)
