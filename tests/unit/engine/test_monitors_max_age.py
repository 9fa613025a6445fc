"""How old a monitor's view may be: one rule for the policies, the report and the status."""

from __future__ import annotations

from types import MappingProxyType

from reactor.engine.monitors import AccessView, access_max_age
from reactor.sampler.snapshot import Snapshot, regions_array


def _view(aggr_s: float, period_s: float | None = None) -> AccessView:
    snap = Snapshot(
        target="t:1",
        regions=regions_array([]),
        sample_interval_s=aggr_s / 20,
        aggr_interval_s=aggr_s,
        probe="damon",
        granularity_bytes=4096,
        taken_at=0.0,
        max_nr_accesses=20,
    )
    return AccessView("m", "damon", MappingProxyType({snap.target: snap}), period_s=period_s)


def test_three_times_the_longest_of_aggregation_tick_and_period() -> None:
    assert access_max_age(None, 0.2, 1.0) == 3.0  # no view yet: the tick
    assert access_max_age(None, 2.0, 1.0) == 6.0  # the configured aggregation
    # a monitoring policy lengthened the aggregation: the snapshots say so
    assert access_max_age(_view(4.0), 2.0, 1.0) == 12.0
    # snapshot_cpu spaced the reads out to every 15 s
    assert access_max_age(_view(0.1, period_s=15.0), 0.1, 1.0) == 45.0
    assert access_max_age(_view(0.1, period_s=None), 0.1, 1.0) == 3.0
