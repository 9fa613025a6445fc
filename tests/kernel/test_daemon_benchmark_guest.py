"""Guest only: ``python -m benchmarks.daemon --backend damon`` (issue 7: the daemon's own
CPU with 4 sources and 4 policies at a 1 s tick, on the DAMON backend).

Runs the benchmark in this process with its output in the lane's shared run directory
``$REACTOR_LANE_OUT``; on the host the JSON lands in
``<lane cache>/runs/<time>-<nonce>/benchmarks/results/daemon_damon.json``.

A measurement, so the asserts are sanity floors, derived before running: both daemons
(the DAMON one and the native slow_sampling one beside it) ran the whole 20 s window and
stopped cleanly (exit 0: the DAMON one turned its kdamonds off), each logged policy ticks,
and the DAMON daemon spent CPU reading its monitors' snapshots (one per monitor per tick:
it cannot be zero over 20 s unless no snapshot was read), each of its two monitors,
the one whose ``snapshot_cpu`` spaces its snapshots out included. Shares are printed, not
asserted (TCG, a shared host).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import daemon

DURATION = 20


@pytest.mark.timeout(240)
def test_the_daemon_benchmark_measures_the_damon_backend_beside_the_native_one(
    kdamonds: Path, run_benchmark: Callable[..., dict[str, Any]]
) -> None:
    argv = ("--backend", "damon", "--duration", str(DURATION))
    result = run_benchmark(daemon.main, "daemon_damon.json", *argv)
    runs = result["configs"]
    assert set(runs) == {"damon", "slow_sampling"}, set(runs)
    for name, run in runs.items():
        assert run["exit_status"] == 0, (name, run)
        assert run["controller_ticks"] > 0, (name, run)
        assert run["duration_s"] >= DURATION, (name, run)
    assert runs["damon"]["backend"] == "damon"
    assert runs["damon"]["snapshot_share"] > 0, runs["damon"]
    # w1's snapshot_cpu spaces its snapshots out, it does not stop them: a read costs
    # ~35 ms here, so under a 1 % budget one comes every ~4 s, ~5 in the window
    assert all(v > 0 for v in runs["damon"]["snapshot_share_by_monitor"].values()), runs["damon"]
    assert runs["slow_sampling"]["snapshot_share"] == 0, runs["slow_sampling"]
