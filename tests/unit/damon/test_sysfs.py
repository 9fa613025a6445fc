"""Staging a kdamond model: path layout, write sequence, every field, read-back, paddr RAM."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from reactor.config.damon import DamonSection, Kdamond
from reactor.damon import paths
from reactor.damon.commands import DamonSysfsError
from reactor.damon.features import probe_features
from reactor.damon.memory import parse_system_ram
from reactor.damon.sysfs import Stager, as_staged, read_kdamond
from reactor.testing import FakeKernelFS
from tests.unit.damon.conftest import CAPTURED, KD, TEMPLATES, MiniDamon

RICH: dict[str, Any] = {
    "refresh_ms": 0,
    "contexts": [
        {
            "ops": "vaddr",
            "targets": [{"pid": 4000, "regions": [{"start": 4096, "end": 1 << 20}]}],
            "intervals": {
                "sample_us": 5000,
                "aggr_us": 100000,
                "ops_update_us": 1000000,
                "intervals_goal": {
                    "access_bp": 400,
                    "aggrs": 3,
                    "min_sample_us": 1000,
                    "max_sample_us": 10000,
                },
            },
            "nr_regions": {"min": 10, "max": 500},
            "schemes": [
                {
                    "action": "pageout",
                    "access_pattern": {
                        "sz_bytes": {"min": 4096, "max": "max"},
                        "nr_accesses": {"min": "0 %", "max": "10 %"},
                        "age": {"min": "2 s", "max": "max"},
                    },
                    "apply_interval_us": 200000,
                    "quotas": {
                        "time_ms": 10,
                        "sz_bytes": "64 MiB",
                        "reset_interval_ms": 1000,
                        "goals": [
                            {"metric": "some_mem_psi_us", "target_value": 1000},
                            {"metric": "node_mem_free_bp", "nid": 1, "target_value": 2000},
                        ],
                        "weights": {"sz_permil": 0, "nr_accesses_permil": 300, "age_permil": 700},
                    },
                    "watermarks": {
                        "metric": "free_mem_rate",
                        "interval_us": 1000000,
                        "high_permil": 500,
                        "mid_permil": 400,
                        "low_permil": 50,
                    },
                    "filters": [
                        {"filter_type": "anon", "matching": True, "allow": False},
                        {
                            "filter_type": "addr",
                            "matching": True,
                            "allow": True,
                            "address_range": {"start": 4096, "end": 8192},
                        },
                    ],
                },
                {
                    "action": "migrate_cold",
                    "target_nid": 1,
                    "dests": [{"id": 1, "weight": 3}, {"id": 2, "weight": 1}],
                    "access_pattern": {
                        "nr_accesses": {"min": "0 samples", "max": "0 samples"},
                        "age": {"min": "5 aggr_intervals", "max": "max"},
                    },
                },
            ],
        }
    ],
}


def _kdamond(data: dict[str, Any] = RICH) -> Kdamond:
    return DamonSection.model_validate({"kdamonds": [data]}).kdamonds[0]


def _ready(damon: MiniDamon, n: int = 1) -> Stager:
    damon.fs.write_text(KD + "/nr_kdamonds", str(n))
    return Stager(damon.fs, probe_features(damon.fs))


def _nr_writes(fs: FakeKernelFS, since: int = 0) -> list[tuple[str, str]]:
    return [(p, d) for p, d in fs.writes[since:] if p.rsplit("/", 1)[1] in TEMPLATES]


def test_paths_follow_the_kernel_layout() -> None:
    """Context, target, scheme and goal directories sit where damon-sysfs.md §2.1 puts them."""
    assert paths.state_file(2) == "/sys/kernel/mm/damon/admin/kdamonds/2/state"
    assert paths.target_dir(0, 1) == KD + "/0/contexts/0/targets/1"
    assert paths.goal_dir(1, 2, 3) == KD + "/1/contexts/0/schemes/2/quotas/goals/3"
    assert paths.attrs_dir(0).endswith("/contexts/0/monitoring_attrs")


def test_first_stage_writes_each_nr_file_once_in_order(mini: Callable[..., MiniDamon]) -> None:
    """A fresh kdamond gets nr_contexts, targets, regions, schemes, goals, filters, dests once."""
    damon = mini()
    stager = _ready(damon)
    start = len(damon.fs.writes)
    stager.stage_kdamond(0, _kdamond())
    nr = [(p.removeprefix(KD + "/0/contexts/"), d) for p, d in _nr_writes(damon.fs, start)]
    assert nr == [
        ("nr_contexts", "1"),
        ("0/targets/nr_targets", "1"),
        ("0/targets/0/regions/nr_regions", "1"),
        ("0/schemes/nr_schemes", "2"),
        ("0/schemes/0/quotas/goals/nr_goals", "2"),
        ("0/schemes/0/core_filters/nr_filters", "1"),
        ("0/schemes/0/ops_filters/nr_filters", "1"),
        ("0/schemes/1/dests/nr_dests", "2"),
    ]
    writes = [p for p, _ in damon.fs.writes[start:]]
    # Within a directory, its nr_* file comes before the children it creates.
    assert writes.index(KD + "/0/contexts/0/schemes/nr_schemes") < writes.index(
        KD + "/0/contexts/0/schemes/0/action"
    )


def test_restaging_the_same_model_writes_no_nr_file(mini: Callable[..., MiniDamon]) -> None:
    """A second stage with equal counts rewrites every field but no nr_* file."""
    damon = mini()
    stager = _ready(damon)
    stager.stage_kdamond(0, _kdamond())
    first = len(damon.fs.writes)
    stager.stage_kdamond(0, _kdamond())
    again = damon.fs.writes[first:]
    assert _nr_writes(damon.fs, first) == []
    assert len(again) == first - 1 - 8  # everything but nr_kdamonds and the 8 nr_* writes


def test_a_changed_count_rewrites_only_that_nr_file(mini: Callable[..., MiniDamon]) -> None:
    """Dropping a scheme writes nr_schemes; the kernel then recreates scheme 0 with defaults,
    so its own counts are written again, while targets and regions are untouched."""
    damon = mini()
    stager = _ready(damon)
    stager.stage_kdamond(0, _kdamond())
    start = len(damon.fs.writes)
    ctx = dict(RICH["contexts"][0], schemes=RICH["contexts"][0]["schemes"][:1])
    stager.stage_kdamond(0, _kdamond({"contexts": [ctx]}))
    nr = [(p.removeprefix(KD + "/0/contexts/0/"), d) for p, d in _nr_writes(damon.fs, start)]
    assert nr == [
        ("schemes/nr_schemes", "1"),
        ("schemes/0/quotas/goals/nr_goals", "2"),
        ("schemes/0/core_filters/nr_filters", "1"),
        ("schemes/0/ops_filters/nr_filters", "1"),
    ]
    assert read_kdamond(damon.fs, 0) == as_staged(_kdamond({"contexts": [ctx]}), stager.features)


def _leaves(fs: FakeKernelFS, base: str) -> set[str]:
    out = set()
    for name in fs.listdir(base):
        path = f"{base}/{name}"
        out |= _leaves(fs, path) if fs.is_dir(path) else {path}
    return out


#: Scheme files the kernel writes (0400) or that belong to another filter type / layer.
OUTPUTS = {"effective_bytes", "total_bytes"}


def test_every_scheme_field_is_written(mini: Callable[..., MiniDamon]) -> None:
    """Each input file of a default scheme (all six pattern bounds included) is written."""
    damon = mini()
    stager = _ready(damon)
    kd = _kdamond({"contexts": [{"ops": "paddr", "targets": [], "schemes": [{"action": "stat"}]}]})
    stager.stage_kdamond(0, kd, [(0, 1 << 30)])
    scheme = KD + "/0/contexts/0/schemes/0"
    written = {p for p, _ in damon.fs.writes}
    inputs = {
        p
        for p in _leaves(damon.fs, scheme)
        if p.rsplit("/", 1)[1] not in OUTPUTS
        and not (p.startswith(scheme + "/stats/") and not p.endswith("max_nr_snapshots"))
        and "/tried_regions/" not in p
        and not p.endswith("/nr_filters")  # counts already 0: written only when they change
        and not p.endswith(("/nr_goals", "/nr_dests"))
    }
    assert inputs - written == set()
    text = damon.fs.file_text
    assert text(scheme + "/access_pattern/sz/max") == str(2**64 - 1)
    assert text(scheme + "/access_pattern/nr_accesses/max") == "20"  # 100 % of aggr/sample
    assert text(scheme + "/access_pattern/age/max") == str(2**32 - 1)
    assert text(scheme + "/target_nid") == "-1"


def test_read_back_equals_the_staged_model(mini: Callable[..., MiniDamon]) -> None:
    """Reading the tree back gives as_staged(model): units, routing and all."""
    damon = mini()
    stager = _ready(damon)
    kd = _kdamond()
    stager.stage_kdamond(0, kd)
    expected = as_staged(kd, stager.features)
    assert read_kdamond(damon.fs, 0) == expected
    scheme = expected.contexts[0].schemes[0]
    assert scheme.access_pattern.nr_accesses.max.value == 2.0  # 10 % of 20 samples
    assert scheme.access_pattern.age.min.value == 20.0  # 2 s / 100 ms
    assert [f.filter_type for f in scheme.core_filters] == ["addr"]
    assert [f.filter_type for f in scheme.ops_filters] == ["anon"]


def test_read_back_with_outputs_adds_state_pid_and_stats(mini: Callable[..., MiniDamon]) -> None:
    """outputs=True reads state, pid, stats and effective quota too."""
    damon = mini()
    stager = _ready(damon)
    stager.stage_kdamond(0, _kdamond())
    damon.fs.set_file(KD + "/0/contexts/0/schemes/0/stats/nr_tried", "7\n")
    damon.fs.set_file(KD + "/0/contexts/0/schemes/0/quotas/effective_bytes", "4096\n")
    kd = read_kdamond(damon.fs, 0, outputs=True)
    assert kd.state == "off" and kd.pid is None
    scheme = kd.contexts[0].schemes[0]
    assert scheme.stats is not None and scheme.stats.nr_tried == 7
    assert scheme.quotas.effective_sz_bytes == 4096


def test_paddr_target_defaults_to_every_system_ram_range(mini: Callable[..., MiniDamon]) -> None:
    """A paddr context without targets gets one whose regions are the captured System RAM."""
    damon = mini()
    stager = _ready(damon)
    ram = parse_system_ram((CAPTURED / "host-6.18" / "proc_iomem").read_text())
    kd = _kdamond(
        {"contexts": [{"ops": "paddr", "targets": [], "schemes": [{"action": "pageout"}]}]}
    )
    stager.stage_kdamond(0, kd, ram)
    back = read_kdamond(damon.fs, 0).contexts[0].targets
    assert len(back) == 1 and back[0].pid is None
    assert [(r.start, r.end) for r in back[0].regions] == [
        (0x1000, 0x9FC00),
        (0x100000, 0xC0000000),
        (0x100000000, 0x640000000),
    ]


def test_paddr_regions_are_divided_by_addr_unit(mini: Callable[..., MiniDamon]) -> None:
    """With addr_unit 4096 the RAM ranges are staged in address units, rounded outward."""
    damon = mini()
    stager = _ready(damon)
    kd = _kdamond({"contexts": [{"ops": "paddr", "addr_unit": 4096, "targets": [{}]}]})
    stager.stage_kdamond(0, kd, [(0x1000, 0x9FC00)])
    target = KD + "/0/contexts/0/targets/0/regions/0"
    assert (damon.fs.file_text(target + "/start"), damon.fs.file_text(target + "/end")) == (
        "1",
        "160",
    )


def test_paddr_without_ram_ranges_is_refused_before_writing(mini: Callable[..., MiniDamon]) -> None:
    """No regions and no System RAM ranges: an error naming /proc/iomem, nothing written."""
    damon = mini()
    stager = _ready(damon)
    before = len(damon.fs.write_attempts)
    kd = _kdamond({"contexts": [{"ops": "paddr", "targets": [{}]}]})
    with pytest.raises(Exception, match=r"/proc/iomem: a paddr target without regions"):
        stager.stage_kdamond(0, kd)
    assert len(damon.fs.write_attempts) == before


def test_filters_go_to_the_legacy_directory_before_6_15(mini: Callable[..., MiniDamon]) -> None:
    """On a 6.14 tree (no core_filters/ops_filters) damo's filters are staged in filters/."""
    damon = mini("6.14")
    stager = _ready(damon)
    ctx = dict(RICH["contexts"][0], intervals={"sample_us": 5000, "aggr_us": 100000})
    schemes = [dict(RICH["contexts"][0]["schemes"][0])]
    schemes[0]["quotas"] = {"sz_bytes": 4096}
    kd = _kdamond({"contexts": [dict(ctx, schemes=schemes)]})
    stager.stage_kdamond(0, kd)
    base = KD + "/0/contexts/0/schemes/0/filters"
    assert damon.fs.file_text(base + "/nr_filters") == "2"
    assert damon.fs.file_text(base + "/1/type") == "addr"
    assert read_kdamond(damon.fs, 0) == as_staged(kd, stager.features)


def test_a_refused_write_names_path_value_errno_and_accepted_words(
    mini: Callable[..., MiniDamon],
) -> None:
    """EINVAL on a scheme's action says which keywords the file accepts."""
    damon = mini()
    stager = _ready(damon)
    damon.fs.write_text(KD + "/0/contexts/nr_contexts", "1")
    damon.fs.write_text(KD + "/0/contexts/0/schemes/nr_schemes", "1")
    action = KD + "/0/contexts/0/schemes/0/action"
    damon.fs.inject_fault(action, errno.EINVAL, ops=("write",))
    with pytest.raises(DamonSysfsError) as info:
        stager.stage_kdamond(
            0,
            _kdamond({"contexts": [{"ops": "paddr", "targets": [{}], "schemes": [{}]}]}),
            [(0, 4096)],
        )
    err = info.value
    assert err.path == action and err.errno == errno.EINVAL and err.value == "stat"
    assert "action accepts one of: willneed, cold, pageout" in str(err)
    assert "EINVAL" in str(err) and "value written: 'stat'" in str(err)


def test_host_kdamond_reads_back_through_a_write_refusing_fs() -> None:
    """This machine's own kdamond (if any) reads into the model; the fs refuses every write."""
    from reactor.kernelfs import RealKernelFS

    fs = RealKernelFS("/")  # allow_damon_writes=False
    if not fs.is_dir(KD + "/0/contexts/0"):
        pytest.skip("this machine has no staged kdamond to read")
    kd = read_kdamond(fs, 0, outputs=True)
    assert kd.state in ("on", "off") and len(kd.contexts) == 1
