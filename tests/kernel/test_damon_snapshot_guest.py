"""Guest only: reading a real kernel's ``tried_regions`` with one directory descriptor
gives the same regions as a path per file, and ``benchmarks.damon_snapshot`` reports both
readers' cost side by side (issue 7: the daemon's own CPU).

Runs the benchmark in this process with its output in the lane's shared run directory
``$REACTOR_LANE_OUT``; on the host the JSON lands in
``<lane cache>/runs/<time>-<nonce>/benchmarks/results/damon_snapshot.json``.

Bounds, derived before running: the two readers must agree on every region (the same
directory, filled once, read by every reader; the policies' snapshot agrees on range,
nr_accesses and age). The kdamond is asked for at least 1000 regions
(paddr splits its range so that no region exceeds total / min_nr_regions); the test
asks for at least 100 tried regions, the floor below which a per-file cost is not worth
reporting, not a claim about the kernel. It then commits a quota both ways (staged whole
and as changed files only) and the kdamond keeps running. Times are printed, not asserted
(TCG, a shared host).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import damon_snapshot


@pytest.mark.timeout(240)
def test_one_descriptor_reads_the_same_regions_as_a_path_per_file(
    kdamonds: Path, run_benchmark: Callable[..., dict[str, Any]]
) -> None:
    argv = ("--regions", "1000", "--rounds", "5")
    result = run_benchmark(damon_snapshot.main, "damon_snapshot.json", *argv)
    assert result["same_regions"] is True, result
    assert result["regions"] >= 100, result
    assert result["files"] >= 4 * result["regions"], result
    assert result["readers"]["policy_snapshot"]["files"] == 4 * result["regions"], result
    # both ways of committing a quota ran (their CPU is printed, not asserted)
    assert result["commits"]["whole_median_s"] > 0, result["commits"]
    assert result["commits"]["changed_files_median_s"] > 0, result["commits"]
