"""The real-kernel lane's choice of kernel (.ci/kernel_lane.py), without booting anything.

Newest resolved kernel first; the last kernel that passed when the newest cannot be had or
does not boot; an error when there is neither. The last kernel that passed is never pruned
from the cache while last-passed.json names it.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

LANE = Path(__file__).resolve().parents[3] / ".ci" / "kernel_lane.py"
NEWEST, LAST, OTHER = "7.2.12+deb14-amd64", "7.2.11+deb14-amd64", "7.1.5+deb14-amd64"
PASSED = {"kernel": LAST, "why": "newest in Debian forky", "date": "2026-11-20 10:00:00"}


@pytest.fixture(scope="module")
def lane() -> ModuleType:
    """.ci/kernel_lane.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("kernel_lane_under_test", LANE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_no_network_runs_the_last_kernel_that_passed(lane: ModuleType) -> None:
    """The index cannot be fetched: the cached last-passed kernel runs, saying why."""
    choice = lane.choose_kernels(
        requested=None,
        newest=None,
        newest_error="apt-get update exited 100: Could not resolve deb.debian.org",
        last_passed=PASSED,
        last_ready=True,
    )
    ((kver, why),) = choice.candidates
    assert kver == LAST
    assert "the newest cannot be had (apt-get update exited 100" in why
    assert choice.keep == {LAST}


def test_newest_first_and_the_last_passed_kernel_if_it_does_not_boot(
    lane: ModuleType,
) -> None:
    """Both are candidates, newest first; a boot failure of the newest boots the other."""
    choice = lane.choose_kernels(
        requested=None, newest=NEWEST, newest_why="newest", last_passed=PASSED, last_ready=True
    )
    assert [k for k, _ in choice.candidates] == [NEWEST, LAST]
    assert choice.keep == {NEWEST, LAST}
    booted: list[str] = []

    def boot(kver: str) -> Path:
        booted.append(kver)
        if kver == NEWEST:
            raise lane.BootError(f"{kver} did not boot: Kernel panic", "Kernel panic")
        return Path("/run/dir")

    kver, why, rundir = lane.boot_first(choice.candidates, boot)
    assert (kver, rundir, booted) == (LAST, Path("/run/dir"), [NEWEST, LAST])
    assert why.startswith(f"fallback if {NEWEST} does not boot")


def test_a_boot_failure_of_the_only_candidate_is_raised(lane: ModuleType) -> None:
    """Nothing to fall back to: the BootError reaches the caller (the lane fails)."""

    def boot(kver: str) -> Path:
        raise lane.BootError("no boot", "hung")

    with pytest.raises(lane.BootError):
        lane.boot_first(((NEWEST, "newest"),), boot)


def test_kernel_option_runs_only_that_kernel_and_keeps_the_last_passed(
    lane: ModuleType, tmp_path: Path
) -> None:
    """--kernel X runs X alone, and pruning keeps the kernel last-passed.json names."""
    choice = lane.choose_kernels(requested=OTHER, newest=None, last_passed=PASSED, last_ready=True)
    assert choice.candidates == ((OTHER, "requested with --kernel"),)
    assert choice.keep == {OTHER, LAST}
    cache = lane.Cache(tmp_path)
    for kver in (NEWEST, LAST, OTHER):
        (cache.kernels / kver / "root").mkdir(parents=True)
    lane.prune_kernels(cache, set(choice.keep))
    assert sorted(p.name for p in cache.kernels.iterdir()) == sorted([LAST, OTHER])


def test_without_a_last_passed_kernel_the_newest_runs_alone(lane: ModuleType) -> None:
    """First run on a machine: the newest, with nothing to fall back to."""
    choice = lane.choose_kernels(
        requested=None, newest=NEWEST, newest_why="newest", last_passed=None, last_ready=False
    )
    assert choice.candidates == ((NEWEST, "newest"),) and choice.keep == {NEWEST}


def test_no_newest_and_no_last_passed_is_an_error_that_says_why(lane: ModuleType) -> None:
    """Neither kernel: a LaneError naming both reasons (never a quiet skip)."""
    with pytest.raises(lane.LaneError, match=r"cannot be had \(no network\) and no kernel passed"):
        lane.choose_kernels(
            requested=None,
            newest=None,
            newest_error="no network",
            last_passed=None,
            last_ready=False,
        )
    with pytest.raises(
        lane.LaneError, match=rf"the last kernel that passed, {re.escape(LAST)}, is not in"
    ):
        lane.choose_kernels(
            requested=None,
            newest=None,
            newest_error="no network",
            last_passed=PASSED,
            last_ready=False,
        )


def test_the_newest_that_passed_last_time_is_one_candidate(lane: ModuleType) -> None:
    """Newest == last passed: it is not listed twice."""
    choice = lane.choose_kernels(
        requested=None,
        newest=LAST,
        newest_why="newest",
        last_passed=PASSED,
        last_ready=True,
    )
    assert choice.candidates == ((LAST, "newest"),) and choice.keep == {LAST}
