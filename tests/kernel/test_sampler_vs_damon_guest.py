"""Guest only: the native sampler against DAMON vaddr on one workload (sampler issue 6).

Runs ``benchmarks.sampler_vs_damon`` in this process (a second interpreter costs ~8 s
under TCG) with its output in the lane's shared run directory ``$REACTOR_LANE_OUT``
(the checkout is read-only here); on the host the JSON lands in
``<lane cache>/runs/<time>-<nonce>/benchmarks/results/sampler_vs_damon.json``.

Bounds, derived before running: the soft-dirty probe reports every page written since
its clear_refs, and the workload writes every hot page every 20 ms, inside every 100 ms
sampling interval, so its per-page hot set is the truth (precision = recall = 1, as in
test_native_sampler_guest.py). DAMON reports regions: a region whose sampled page is
hot shows nr_accesses > 0 and the run's interior is found once regions have split below
its 32 MiB. That was to hold after 40 aggregations, with precision and recall above one
half as a sanity floor, and it does not: DAMON's random splits and merges left 5-6
regions in the buffer in most lane runs (recall 0.99, precision 1.0) but 3 regions in
one run on a quiet host (recall 0.73, precision 0.33: one region mixing the run with
cold memory) and 2 in one on a loaded host (recall 0). DAMON's accuracy at this time
scale is the measurement, not a bound on reactor: the test asserts the native side
(exact), that DAMON's snapshot covers the buffer and that it ran the aggregations asked
for (its oldest region has their age), and prints DAMON's scores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import sampler_vs_damon


def test_native_sampler_and_damon_agree_on_the_hot_run(
    kdamonds: Path, run_benchmark: Callable[..., dict[str, Any]]
) -> None:
    """Both find the contiguous hot run; the JSON and the one-line summary are written."""
    result = run_benchmark(sampler_vs_damon.main, "sampler_vs_damon.json")
    print(json.dumps(result))
    native, damon = result["native_pages"], result["damon"]
    assert native["precision"] == 1.0 and native["recall"] == 1.0, result
    assert damon["regions_in_buffer"] >= 1, result
    assert damon["oldest_region_aggregations"] >= 40, result
    assert 0 <= result["jaccard_native_pages_vs_damon"] <= 1
