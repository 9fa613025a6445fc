"""The controllers benchmark compares like with like, and the tuners' docs say true."""

from __future__ import annotations

import inspect
import re

import pytest

from benchmarks import controllers as bench
from controllers.tuners import quota_tuner


@pytest.mark.parametrize("kind", ["reactor", "twin"])
def test_intervals_contenders_step_once_per_aggregation(kind: str) -> None:
    """Each step of either contender is one aggregation of the plant: the first one at
    the 5 ms start lasts 20 samples x 5 ms = 0.1 s (reactor used to read three)."""
    trace = bench.intervals_run(0, kind)
    assert len(trace.times) == bench.INTERVAL_AGGREGATIONS
    assert trace.times[0] == pytest.approx(bench.AGGR_SAMPLES * bench.SAMPLE_START_US / 1e6)


def test_reclaim_contenders_get_the_same_start_and_limits() -> None:
    """Same starting output and the same first reading for both (one 1 s window)."""
    mine, twin = bench.reclaim_run(0, "reactor"), bench.reclaim_run(0, "twin")
    assert mine.times[:3] == twin.times[:3] == [2.0, 3.0, 4.0]
    assert all(bench.QUOTA_MIN <= q <= bench.QUOTA_MAX for q in mine.outputs + twin.outputs)


def test_quota_tuner_docstring_states_its_probe_factor() -> None:
    """The docstring's "<x> by default" is the signature's default (1.4, not 2)."""
    default = inspect.signature(quota_tuner).parameters["probe_factor"].default
    stated = re.search(r"([0-9.]+) by default", inspect.getdoc(quota_tuner) or "")
    assert stated is not None and float(stated.group(1)) == default
