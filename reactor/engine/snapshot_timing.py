"""When to read each DAMON monitor's snapshot: tried-regions updates timed to aggregation
boundaries. Pure arithmetic on seconds of the runtime's clock; the loop that acts on it is
:class:`reactor.engine.damon_monitors.DamonMonitors`.

What the kernel does (docs: reference damon-sysfs.md §3.1, §5.1, §5.5):

* ``update_schemes_tried_regions`` returns when every scheme of the kdamond has passed one
  apply interval (the aggregation interval for reactor's schemes), that is at the
  kdamond's next aggregation boundary, and holds DAMON's sysfs lock (and the driver's
  one-command-at-a-time limiter) until then. A read's return therefore marks a boundary;
  the next ones follow every aggregation interval, counted in samples.
* The count restarts when the kdamond starts (``on``) and when a ``commit`` changes its
  monitoring attributes (``damon_set_attrs``: the next boundary is one new aggregation
  after the commit). The driver records both
  (:meth:`~reactor.damon.driver.DamonDriver.aggregation_restart`).
* Boundaries only come late, never early: each sample takes at least its interval, plus
  the kdamond's own work (merging, splitting, schemes; a few per cent under TCG), so a
  prediction ``anchor + n * aggregation`` errs towards issuing early, which costs lock
  time, never a missed boundary.

So a read is issued ``margin_s`` before its predicted boundary and holds the lock about
that long. Issued too late (after the boundary) it would wait, lock held, a whole
aggregation more: the asymmetric cost is why the margin is generous, and why a boundary
closer than ``reach_s`` is not aimed at (the next one is).

The margin. ``reach_s = LATENCY_S + sample``: the least time before a boundary at which a
read can still be sure to get in. ``LATENCY_S`` (50 ms) covers reactor's own path, each
way: the worker-thread hop and the driver's ownership check before the write reaches the
kernel, and the hop back before the return is stamped (which makes the anchor late by as
much, so the next boundary looks later than it is). One sample covers the kernel's
granularity: a boundary falls on a sample step, and a commit takes effect at the
kdamond's next sample. The margin is twice the reach: the guest runs under TCG, where a
thread hop or a Python pause can take tens of milliseconds, and a boundary missed costs a
whole aggregation of lock time where one reached early costs the margin. Measured in the
guest (a variant of tests/kernel/test_address_spaces_guest.py): see docs/policies.md.

Cadence. A monitor whose aggregation is shorter than the snapshot period (the tick) is
read about once a tick: issued at the tick instant that follows its last read, it returns
at its first boundary after it, holding the lock less than one (short) aggregation. Its
boundaries are not predicted several aggregations ahead: their drift adds up (in the TCG
guest, 200 ms aggregations ran 0.1-0.6 s late over a 1 s tick). One with a longer
aggregation is read at every boundary (a new snapshot exists only then), issued a margin
before it; the caller passes its aggregation as observed between consecutive boundaries
(the kdamond's stretch), not as configured.

Collisions. Reads are one at a time: while one waits for its boundary, another monitor's
boundary may pass. :func:`plan_next` picks the read that is due first, but postpones it
past another monitor's boundary that it would make that monitor miss, when waiting costs
it less than the miss would cost the other (the loser takes its next boundary; nothing
is read with the lock held across a boundary it cannot catch). A fast monitor therefore
waits a fraction of a second for a slow one, which would otherwise lose a whole
aggregation; equal ones alternate (the one with the fresher snapshot waits). A monitor
never waits if its snapshot would then be older than two of its periods (the larger of
its aggregation and the tick; policies hold at three): no monitor starves.

Unknown phase. An aggregation that changed with no restart on record (the kernel's own
intervals tuner, or the files staged before a commit that has not returned yet) leaves
the phase unknown: after a grace (the caller's ``not_before``, so that a commit in flight
can land and restart the count), one read is issued blind and may hold the lock up to one
aggregation; its return gives the phase again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = (
    "LATENCY_S",
    "Read",
    "Timing",
    "first_boundary",
    "margin_s",
    "missed_by",
    "plan_next",
    "plan_read",
    "reach_s",
    "wanted_after",
)

#: reactor's own latency each way between deciding to read and the kernel seeing the write
#: (and between the kernel's return and its stamp): see the module doc.
LATENCY_S = 0.05


@dataclass(frozen=True)
class Timing:
    """What is known of one monitor's kdamond, in seconds of the runtime's clock.

    ``anchor``: a time the kdamond's aggregation count (re)started, i.e. the return of
    its last tried-regions read (a boundary) or of an ``on``/attrs-changing ``commit``,
    whichever is newer; boundaries follow at ``anchor + n * aggregation_s`` (n >= 1).
    None when the phase is unknown. ``last_read``: when its newest snapshot was taken
    (None before the first). ``not_before``: a blind read (unknown phase) waits for this.
    """

    sample_s: float
    aggregation_s: float
    anchor: float | None = None
    last_read: float | None = None
    not_before: float = -math.inf

    def __post_init__(self) -> None:
        for name in ("sample_s", "aggregation_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"snapshot timing {name}: expected seconds > 0, got {value!r}")


@dataclass(frozen=True)
class Read:
    """One planned read of monitor ``index``: issue the update at ``issue_at``; it should
    return at ``boundary`` (None: phase unknown) and is over by ``ends_by``."""

    index: int
    issue_at: float
    boundary: float | None
    ends_by: float


def reach_s(sample_s: float) -> float:
    """The least time before a boundary at which a read is sure to catch it."""
    return LATENCY_S + sample_s


def margin_s(sample_s: float) -> float:
    """How long before its predicted boundary a read is issued (module doc)."""
    return 2 * reach_s(sample_s)


def first_boundary(anchor: float, aggregation_s: float, not_before: float) -> float:
    """The first boundary ``anchor + n * aggregation_s`` (n >= 1) at or after ``not_before``."""
    n = max(1, math.ceil((not_before - anchor) / aggregation_s - 1e-9))
    return anchor + n * aggregation_s


def wanted_after(t: Timing, tick_s: float) -> float:
    """The instant the next snapshot should follow: for an aggregation shorter than the
    tick, the first tick instant (the process-wide grid of ``tick_s``) after the last
    read; otherwise any boundary will do (-inf)."""
    if t.last_read is None or t.aggregation_s >= tick_s:
        return -math.inf
    return (math.floor(t.last_read / tick_s) + 1) * tick_s


def plan_read(t: Timing, index: int, now: float, tick_s: float, free_at: float = -math.inf) -> Read:
    """Monitor ``index``'s next read if it had the lock to itself from ``free_at`` on."""
    start = max(now, free_at)
    want = wanted_after(t, tick_s)
    if t.anchor is None or t.aggregation_s < tick_s:
        # A short aggregation is read at the tick instant and returns at its first
        # boundary after it (lock held under one short aggregation): predicting several
        # of its boundaries ahead would add up their drift (TCG: 0.1-0.6 s late over a
        # 1 s tick of 200 ms aggregations, measured), for little gain.
        issue = max(start, want, t.not_before)
        return Read(index, issue, None, issue + t.aggregation_s)
    boundary = first_boundary(t.anchor, t.aggregation_s, max(start, want) + reach_s(t.sample_s))
    return Read(index, max(start, want, boundary - margin_s(t.sample_s)), boundary, boundary)


def plan_next(timings: Sequence[Timing], now: float, tick_s: float) -> Read:
    """The read to issue next among all monitors (collisions resolved as the module doc
    says). ``timings`` must not be empty."""
    if not timings:
        raise ValueError("plan_next: expected at least one monitor's timing, got none")
    free_at = [-math.inf] * len(timings)
    first = None
    for _ in range(4 * len(timings) + 4):  # each round postpones one read: a few suffice
        reads = [plan_read(t, i, now, tick_s, free_at[i]) for i, t in enumerate(timings)]
        first = min(reads, key=lambda r: (r.issue_at, r.ends_by, r.index))
        wait = _yield_to(first, reads, timings, now, tick_s)
        if wait is None:
            return first
        free_at[first.index] = wait
    assert first is not None
    return first


def _collides(first: Read, t: Timing, boundary: float, o: Timing) -> bool:
    """Would ``first``, issued now and holding the lock to its end (plus a sample of
    lateness), make a monitor with timing ``o`` miss its ``boundary``?"""
    return first.issue_at < boundary and first.ends_by + t.sample_s > boundary - reach_s(o.sample_s)


def _yield_to(
    first: Read, reads: Sequence[Read], timings: Sequence[Timing], now: float, tick_s: float
) -> float | None:
    """When ``first`` should wait for instead of going now (it yields to a colliding
    monitor that would lose more), or None to go now."""
    t = timings[first.index]
    for other in sorted(reads, key=lambda r: math.inf if r.boundary is None else r.boundary):
        o, boundary = timings[other.index], other.boundary
        if other.index == first.index or boundary is None or not _collides(first, t, boundary, o):
            continue
        other_loses = plan_read(o, other.index, now, tick_s, first.ends_by + t.sample_s)
        wait = boundary + o.sample_s
        waited = plan_read(t, first.index, now, tick_s, wait)
        if _overdue(t, waited, tick_s):
            continue
        cost_other = other_loses.ends_by - other.ends_by
        cost_first = waited.ends_by - first.ends_by
        if math.isclose(cost_first, cost_other, abs_tol=1e-6):
            if _fresher(t, first.index, o, other.index):
                return wait
        elif cost_first < cost_other:
            return wait
    return None


def _overdue(t: Timing, waited: Read, tick_s: float) -> bool:
    """Waiting would leave the monitor's newest snapshot older than two of its periods."""
    if t.last_read is None:
        return True
    return waited.ends_by - t.last_read > 2 * max(t.aggregation_s, tick_s)


def _fresher(t: Timing, i: int, o: Timing, j: int) -> bool:
    """``t`` (monitor i) has the fresher snapshot of the two (ties: the higher index)."""
    mine = -math.inf if t.last_read is None else t.last_read
    theirs = -math.inf if o.last_read is None else o.last_read
    return mine > theirs or (mine == theirs and i > j)


def missed_by(read: Read, returned: float, aggregation_s: float) -> float | None:
    """How late (s) a read returned after its predicted boundary, if by more than half an
    aggregation: it missed that boundary and held the lock until a later one. None
    otherwise (drift, or an earlier boundary caught: a read issued before its target's
    previous boundary, as a short aggregation's may be, returns at that one, shorter)."""
    if read.boundary is None:
        return None
    late = returned - read.boundary
    return late if late > aggregation_s / 2 else None
