"""Snapshots parsed from a hand-built DAMON tree: stats, tried regions, quotas, goals."""

from __future__ import annotations

from pathlib import Path

import pytest

from reactor.damon.snapshot import (
    TriedRegion,
    read_effective_quota,
    read_goal_values,
    read_kdamond_snapshot,
    read_scheme_stats,
    read_tried_regions,
)
from reactor.errors import KernelFormatError
from reactor.kernelfs import RealKernelFS
from reactor.testing import FakeKernelFS
from tests.unit.damon.conftest import KD

SCHEME = KD + "/0/contexts/0/schemes/0"


def _tree(*, newest: bool = True) -> FakeKernelFS:
    stats = {
        "nr_tried": "359\n",
        "sz_tried": "88080384\n",
        "nr_applied": "21\n",
        "sz_applied": "88000000\n",
        "qt_exceeds": "3\n",
    }
    if newest:
        stats |= {
            "sz_ops_filter_passed": "4096\n",
            "nr_snapshots": "24\n",
            "max_nr_snapshots": "0\n",
        }
    regions = {
        "0": {"start": "4096\n", "end": "8192\n", "nr_accesses": "20\n", "age": "3\n"},
        "1": {"start": "8192\n", "end": "16384\n", "nr_accesses": "0\n", "age": "12\n"},
    }
    if newest:  # a kernel writes the same files in every region
        regions["0"] |= {"sz_filter_passed": "4096\n", "probes": {"0": {"hits": "5\n"}}}
        regions["1"] |= {"sz_filter_passed": "0\n", "probes": {"0": {"hits": "0\n"}}}
    tried: dict[str, object] = dict(regions)
    if newest:
        tried["total_bytes"] = "12288\n"
    return FakeKernelFS(
        {
            KD.lstrip("/"): {
                "nr_kdamonds": "1\n",
                "0": {
                    "state": "on\n",
                    "pid": "77\n",
                    "contexts": {
                        "nr_contexts": "1\n",
                        "0": {
                            "monitoring_attrs": {
                                "intervals": {"sample_us": "2500\n", "aggr_us": "50000\n"}
                            },
                            "schemes": {
                                "nr_schemes": "1\n",
                                "0": {
                                    "stats": stats,
                                    "tried_regions": tried,
                                    "quotas": {
                                        "effective_bytes": "268435456\n",
                                        "goals": {
                                            "nr_goals": "1\n",
                                            "0": {
                                                "target_metric": "user_input\n",
                                                "target_value": "10000\n",
                                                "current_value": "0\n",
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            }
        }
    )


def test_stats_read_every_counter() -> None:
    """Each stats file lands in its field, in bytes or counts."""
    stats = read_scheme_stats(_tree(), 0, 0)
    assert (stats.nr_tried, stats.sz_tried_bytes, stats.nr_applied, stats.sz_applied_bytes) == (
        359,
        88080384,
        21,
        88000000,
    )
    assert (stats.sz_ops_filter_passed_bytes, stats.qt_exceeds, stats.nr_snapshots) == (4096, 3, 24)


def test_stats_files_an_older_kernel_lacks_read_as_zero() -> None:
    """Without nr_snapshots (pre-7.0) and sz_ops_filter_passed (pre-6.14) those read 0."""
    stats = read_scheme_stats(_tree(newest=False), 0, 0)
    assert (
        stats.nr_snapshots == 0 and stats.sz_ops_filter_passed_bytes == 0 and stats.nr_tried == 359
    )


def test_tried_regions_with_total_bytes_and_probe_hits() -> None:
    """Regions in index order with sizes; total_bytes is the kernel's."""
    tried = read_tried_regions(_tree(), 0, 0)
    assert tried.total_bytes == 12288
    assert tried.regions[0] == TriedRegion(4096, 8192, 20, 3, 4096, (5,))
    assert tried.regions[1].size_bytes == 8192 and tried.regions[1].age_aggrs == 12


def test_total_bytes_is_summed_on_kernels_without_it() -> None:
    """Before 6.6 (no total_bytes) the total is the sum of region sizes."""
    assert read_tried_regions(_tree(newest=False), 0, 0).total_bytes == 12288


def test_quota_goals_and_kdamond_snapshot() -> None:
    """Effective quota, goals and tuned intervals come together in one kdamond snapshot."""
    fs = _tree()
    assert read_effective_quota(fs, 0, 0) == 268435456
    goal = read_goal_values(fs, 0, 0)[0]
    assert (goal.metric, goal.target_value, goal.current_value) == ("user_input", 10000, 0)
    snap = read_kdamond_snapshot(fs, 0)
    assert (snap.state, snap.pid, snap.effective_quotas_bytes) == ("on", 77, (268435456,))
    assert snap.tuned is not None and (snap.tuned.sample_us, snap.tuned.aggr_us) == (2500, 50000)


def test_garbage_in_a_counter_is_quoted() -> None:
    """A stats file without an integer raises KernelFormatError naming path and text."""
    fs = _tree()
    fs.set_file(SCHEME + "/stats/nr_tried", "lots\n")
    with pytest.raises(KernelFormatError, match=r"stats/nr_tried: expected an integer: 'lots'"):
        read_scheme_stats(fs, 0, 0)


@pytest.mark.parametrize("newest", [True, False])
def test_tried_regions_read_alike_from_the_real_filesystem(tmp_path: Path, newest: bool) -> None:
    """The same tree on disk, read through RealKernelFS (one directory descriptor for
    every region file), gives the same regions as the in-memory fake."""
    fake = _tree(newest=newest)
    real = RealKernelFS(root=str(fake.materialize(tmp_path)))
    assert read_tried_regions(real, 0, 0) == read_tried_regions(fake, 0, 0)


def test_garbage_in_a_region_file_names_that_file() -> None:
    """A region value that is not an integer names its own file."""
    fs = _tree()
    fs.set_file(SCHEME + "/tried_regions/1/age", "old\n")
    with pytest.raises(KernelFormatError, match=r"tried_regions/1/age: expected an integer"):
        read_tried_regions(fs, 0, 0)


def test_a_snapshot_without_extras_leaves_the_filter_and_probe_files_unread() -> None:
    """extras=False reads start, end, nr_accesses and age alone: no region's
    sz_filter_passed or probe hits file is opened, and those read as 0 and ()."""
    fs = _tree()
    tried = read_tried_regions(fs, 0, 0, extras=False)
    assert tried.regions == (TriedRegion(4096, 8192, 20, 3), TriedRegion(8192, 16384, 0, 12))
    assert tried.total_bytes == 12288
    for r in ("0", "1"):
        assert fs.open_count(f"{SCHEME}/tried_regions/{r}/sz_filter_passed") == 0
        assert fs.open_count(f"{SCHEME}/tried_regions/{r}/probes/0/hits") == 0
        assert fs.open_count(f"{SCHEME}/tried_regions/{r}/age") == 1
