"""Feature table, kernel version parsing, and probing by reading existing files only."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reactor.config.damon import Kdamond, MonitoringContext, Scheme
from reactor.damon.features import (
    FEATURES,
    KernelVersion,
    action_feature,
    command_feature,
    filter_type_feature,
    parse_kernel_version,
    probe_features,
)
from reactor.damon.sysfs import Stager
from reactor.errors import UnsupportedKernel
from reactor.kernelfs import RealKernelFS
from reactor.testing import FakeKernelFS
from tests.unit.damon.conftest import CAPTURED, KD, MiniDamon


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ("7.2.12+deb14-amd64", KernelVersion(7, 2, 12)),
        ("6.18.44-fc-v669", KernelVersion(6, 18, 44)),
        ("6.8.0-rc4", KernelVersion(6, 8, 0)),
        ("5.19", KernelVersion(5, 19, 0)),
        ("6.10.0-1-cloud-arm64\n", KernelVersion(6, 10, 0)),
    ],
)
def test_kernel_release_strings_parse_to_versions(release: str, expected: KernelVersion) -> None:
    """uname -r strings with distribution suffixes parse to major.minor.patch."""
    assert parse_kernel_version(release) == expected


def test_unparseable_release_names_the_text() -> None:
    """A release that is not a version is a ValueError quoting it."""
    with pytest.raises(ValueError, match=r"got 'linux-next'"):
        parse_kernel_version("linux-next")


def test_versions_order_numerically() -> None:
    """6.18 sorts after 6.9 (numbers, not strings)."""
    assert parse_kernel_version("6.18") > parse_kernel_version("6.9.12")
    assert str(KernelVersion(7, 2)) == "7.2" and str(KernelVersion(6, 18, 44)) == "6.18.44"


@pytest.mark.parametrize(
    ("feature", "since"),
    [
        ("command:commit", "5.19"),
        ("tried_regions", "6.2"),
        ("apply_interval_us", "6.7"),
        ("quota_goals", "6.8"),
        ("effective_bytes", "6.9"),
        ("action:migrate_cold", "6.11"),
        ("core_ops_filters", "6.15"),
        ("intervals_goal", "6.15"),
        ("refresh_ms", "6.17"),
        ("dests", "6.17"),
        ("addr_unit", "6.18"),
        ("obsolete_target", "6.19"),
        ("nr_snapshots", "7.0"),
        ("goal_tuner", "7.1"),
        ("pause", "7.2"),
    ],
)
def test_feature_table_matches_the_reference_version_table(feature: str, since: str) -> None:
    """Each row's first release is the one in damon-sysfs.md §8."""
    assert FEATURES[feature].since.release == since


def test_keyword_features_are_named_by_kind() -> None:
    """Actions, filter types and commands map to their table rows (5.18 basics need none)."""
    assert action_feature("pageout") is None
    assert action_feature("collapse") == "action:collapse"
    assert filter_type_feature("memcg") == "filters"
    assert filter_type_feature("hugepage_size") == "filter:hugepage_size"
    assert command_feature("update_tuned_intervals") == "intervals_goal"
    assert all(
        name in FEATURES
        for name in ("action:collapse", "filter:hugepage_size", "intervals_goal", "filters")
    )
    with pytest.raises(ValueError, match=r"got 'start'"):
        command_feature("start")


def test_table_fallback_when_no_directory_of_the_level_exists(
    mini: Callable[..., MiniDamon],
) -> None:
    """With no kdamond at all, file features are answered by the version table."""
    fs = mini("7.2").fs
    old = probe_features(fs, "6.16.1")
    assert not old.has("refresh_ms") and old.evidence["refresh_ms"] == "table"
    assert old.has("goal:nid")
    new = probe_features(fs)
    assert new.kernel == KernelVersion(7, 2, 12) and new.has("goal_tuner")


def test_files_decide_over_the_table(mini: Callable[..., MiniDamon]) -> None:
    """A staged scheme on a 6.18 tree shows no goal_tuner, whatever the release claims."""
    damon = mini("6.18")
    fs = damon.fs
    fs.write_text(KD + "/nr_kdamonds", "1")
    fs.write_text(KD + "/0/contexts/nr_contexts", "1")
    fs.write_text(KD + "/0/contexts/0/schemes/nr_schemes", "1")
    features = probe_features(fs, "7.2.12")  # a lying release string
    assert not features.has("goal_tuner") and features.evidence["goal_tuner"] == "no-file"
    assert features.has("refresh_ms") and features.evidence["refresh_ms"] == "file"
    assert features.has("core_ops_filters")
    assert features.has("ops:paddr") and features.evidence["ops:paddr"] == "file"


def test_probing_never_writes(mini: Callable[..., MiniDamon]) -> None:
    """probe_features reads and lists only: the write log does not grow."""
    damon = mini("7.2")
    damon.fs.write_text(KD + "/nr_kdamonds", "2")
    before = len(damon.fs.write_attempts)
    probe_features(damon.fs)
    assert len(damon.fs.write_attempts) == before


def test_using_a_missing_feature_names_it_and_its_release(mini: Callable[..., MiniDamon]) -> None:
    """A temporal goal tuner on 6.18 fails before any write, naming feature, kernel, 7.1."""
    damon = mini("6.18")
    fs = damon.fs
    fs.write_text(KD + "/nr_kdamonds", "1")
    features = probe_features(fs)
    kd = Kdamond(
        contexts=(
            MonitoringContext(
                ops="paddr",
                targets=(),
                schemes=(
                    Scheme.model_validate(
                        {
                            "action": "pageout",
                            "quotas": {
                                "goal_tuner": "temporal",
                                "goals": [{"metric": "user_input", "target_value": 1}],
                            },
                        }
                    ),
                ),
            ),
        )
    )
    before = len(fs.write_attempts)
    with pytest.raises(UnsupportedKernel) as info:
        Stager(fs, features).stage_kdamond(0, kd, [(0, 1 << 30)])
    assert info.value.since == "7.1" and info.value.kernel == "6.18.44-fc-v669"
    assert "goal_tuner temporal" in str(info.value) and "Linux 7.1" in str(info.value)
    assert len(fs.write_attempts) == before


def test_host_tree_is_probed_read_only() -> None:
    """On this host, probing the machine's own DAMON tree reads it through a write-refusing fs."""
    fs = RealKernelFS("/")  # allow_damon_writes=False: any write would raise UnsafeWrite
    if not fs.is_dir(KD):
        pytest.skip("this machine has no DAMON sysfs")
    features = probe_features(fs)
    assert features.kernel is not None
    assert features.has("sysfs")
    assert len(features.describe()) == len(FEATURES)


def test_a_missing_file_overrules_the_table_when_staging(mini: Callable[..., MiniDamon]) -> None:
    """The table says 7.1 has goal_tuner, but the staged scheme dir lacks it: refused, named."""
    damon = mini("6.18")
    fs = damon.fs
    fs.write_text(KD + "/nr_kdamonds", "1")
    features = probe_features(fs, "7.2.12")  # no scheme dir yet: the table answers
    assert features.has("goal_tuner") and features.evidence["goal_tuner"] == "table"
    kd = Kdamond.model_validate(
        {
            "contexts": [
                {
                    "ops": "paddr",
                    "targets": [],
                    "schemes": [
                        {
                            "action": "pageout",
                            "quotas": {
                                "goal_tuner": "temporal",
                                "goals": [{"metric": "user_input", "target_value": 1}],
                            },
                        }
                    ],
                }
            ]
        }
    )
    with pytest.raises(UnsupportedKernel, match=r"quotas/goal_tuner does not exist\)") as info:
        Stager(fs, features).stage_kdamond(0, kd, [(0, 1 << 30)])
    assert info.value.since == "7.1"


def _fs_from_listing(listing: str) -> FakeKernelFS:
    """A tree built from a capture listing (``f MODE path = value`` with ``\\n`` escapes)."""
    fs = FakeKernelFS()
    for line in listing.splitlines():
        kind, _mode, rest = line.split(" ", 2)
        if kind == "d":
            fs.mkdir("/sys/kernel/mm/damon/" + rest.rstrip("/").removeprefix("."))
        else:
            path, _, value = rest.partition(" = ")
            fs.set_file("/sys/kernel/mm/damon/" + path, value.replace("\\n", "\n"))
    return fs


def test_lane_capture_of_7_2_12_has_every_file_feature() -> None:
    """On the populated 7.2.12 tree from the lane every file-probed feature is seen as a file."""
    listing = CAPTURED / "guest-debian-7.2" / "sys_kernel_mm_damon.populated.listing"
    features = probe_features(_fs_from_listing(listing.read_text()), "7.2.12+deb14-amd64")
    file_rows = [name for name, row in FEATURES.items() if row.probe is not None]
    missing = [n for n in file_rows if not features.has(n)]
    assert missing == []
    # No tried region exists in an idle tree: only that row falls back to the table.
    assert {n for n in file_rows if features.evidence[n] != "file"} == {
        "tried_region:sz_filter_passed"
    }
    # collapse and node_eligible_mem_bp: accepted by 7.2.12 in the lane's conformance run
    assert [n for n, r in FEATURES.items() if r.provisional] == []
