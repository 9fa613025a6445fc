"""The driver against the shared kernel-faithful fake DAMON (reactor.testing.damon_fake)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from reactor.config.damon import DamonSection, Kdamond
from reactor.damon.commands import DamonSysfsError, KdamondNotRunning, send_state
from reactor.damon.features import probe_features
from reactor.damon.snapshot import read_scheme_stats, read_tried_regions
from reactor.damon.sysfs import Stager, as_staged, read_kdamond
from reactor.errors import UnsupportedKernel
from reactor.testing import damon_fake
from tests.unit.damon.conftest import KD, base_fs

HOT = (0x7F0000000000, 0x7F0000400000)
COLD = (0x7F0000401000, 0x7F0002401000)


def _fake(kernel: str = "7.2.12", **kwargs: Any) -> Any:
    fs = base_fs(kernel)
    damon = damon_fake.FakeDamon(fs, kernel=kernel, **kwargs)
    damon.add_process(4242, [(*HOT, 1.0), (*COLD, 0.0)])
    return fs, damon


def _kd(ctx: dict[str, Any]) -> Kdamond:
    return DamonSection.model_validate({"kdamonds": [{"contexts": [ctx]}]}).kdamonds[0]


VADDR_STAT = {
    "ops": "vaddr",
    "targets": [{"pid": 4242}],
    "intervals": {"sample_us": 10000, "aggr_us": 200000, "ops_update_us": 1000000},
    "schemes": [
        {"action": "stat"},
        {
            "action": "stat",
            "access_pattern": {
                "nr_accesses": {"min": "0 samples", "max": "0 samples"},
                "age": {"min": "1 aggr_intervals", "max": "max"},
            },
        },
    ],
}


def _stage(fs: Any, kd: Kdamond, ram: list[tuple[int, int]] | None = None) -> Stager:
    fs.write_text(KD + "/nr_kdamonds", "1")
    stager = Stager(fs, probe_features(fs))
    stager.stage_kdamond(0, kd, ram or [])
    return stager


def test_staged_model_reads_back_equal_on_the_fake() -> None:
    """On the fake 7.2.12 tree, read-back equals as_staged of a rich vaddr model."""
    fs, _ = _fake()
    kd = _kd(VADDR_STAT)
    stager = _stage(fs, kd)
    assert read_kdamond(fs, 0) == as_staged(kd, stager.features)


def test_start_monitor_and_read_stats_and_tried_regions() -> None:
    """on, two simulated seconds, update stats and tried regions: cold bytes are found."""
    fs, damon = _fake()
    _stage(fs, _kd(VADDR_STAT))
    send_state(fs, 0, "on")
    assert damon.kdamond_pid(0) is not None
    damon.advance(2.0)
    send_state(fs, 0, "update_schemes_stats")
    stats = read_scheme_stats(fs, 0, 0)
    assert stats.nr_tried > 0 and stats.sz_tried_bytes > 0
    send_state(fs, 0, "update_schemes_tried_regions")
    tried = read_tried_regions(fs, 0, 1)
    assert tried.regions, "the cold scheme tried no region"
    assert tried.total_bytes == sum(r.size_bytes for r in tried.regions)
    assert all(r.nr_accesses == 0 for r in tried.regions)


def test_default_access_pattern_matches_every_region() -> None:
    """A scheme with the model's default pattern is tried (the kernel's default matches none)."""
    fs, damon = _fake()
    _stage(fs, _kd(dict(VADDR_STAT, schemes=[{"action": "stat"}])))
    send_state(fs, 0, "on")
    damon.advance(1.0)
    send_state(fs, 0, "update_schemes_stats")
    assert read_scheme_stats(fs, 0, 0).nr_tried > 0


def test_exclusive_user_makes_on_fail_with_a_sentence() -> None:
    """EBUSY from an exclusive DAMON user: the error names the module by its parameter."""
    fs, _ = _fake(exclusive_users=("damon_stat",))
    _stage(fs, _kd(VADDR_STAT))
    with pytest.raises(DamonSysfsError) as info:
        send_state(fs, 0, "on", sleep=lambda _: None)
    assert info.value.errno == errno.EBUSY
    assert (
        "DAMON_STAT (/sys/module/damon_stat/parameters/enabled = Y) runs DAMON exclusively"
        in str(info.value)
    )


def test_bad_memcg_path_is_enomem_naming_the_path() -> None:
    """A memcg filter path that resolves to no cgroup: ENOMEM, translated with the path."""
    fs, _ = _fake()
    ctx = dict(
        VADDR_STAT,
        schemes=[
            {
                "action": "stat",
                "filters": [{"filter_type": "memcg", "matching": True, "memcg_path": "/gone"}],
            }
        ],
    )
    _stage(fs, _kd(ctx))
    with pytest.raises(DamonSysfsError) as info:
        send_state(fs, 0, "on")
    assert info.value.errno == errno.ENOMEM
    assert "memcg_path = '/gone'" in str(info.value)


def test_missing_pid_is_einval_naming_the_target() -> None:
    """A vaddr pid that does not exist: EINVAL, and the sentence names pid_target."""
    fs, _ = _fake()
    _stage(fs, _kd(dict(VADDR_STAT, targets=[{"pid": 999}])))
    with pytest.raises(DamonSysfsError) as info:
        send_state(fs, 0, "on")
    assert info.value.errno == errno.EINVAL
    assert "pid_target is 999: no such process" in str(info.value)


def test_update_after_target_exit_is_not_running() -> None:
    """Once the only vaddr process exits the kdamond stops; updates say it is not running."""
    fs, damon = _fake()
    _stage(fs, _kd(VADDR_STAT))
    send_state(fs, 0, "on")
    damon.remove_process(4242)
    damon.advance(0.5)
    with pytest.raises(KdamondNotRunning):
        send_state(fs, 0, "update_schemes_stats")


def test_paddr_defaults_monitor_system_ram() -> None:
    """A paddr kdamond staged with the RAM ranges monitors them (pageout stats move)."""
    fs, damon = _fake()
    damon.add_physical_range(0x100000, 0x20000000, 0.0)
    ctx = {
        "ops": "paddr",
        "targets": [],
        "schemes": [
            {
                "action": "stat",
                "access_pattern": {"nr_accesses": {"min": "0 samples", "max": "0 samples"}},
            }
        ],
    }
    _stage(fs, _kd(ctx), [(0x100000, 0x20000000)])
    send_state(fs, 0, "on")
    damon.advance(2.0)
    send_state(fs, 0, "update_schemes_stats")
    assert read_scheme_stats(fs, 0, 0).sz_tried_bytes > 0


def test_older_fake_kernel_refuses_newer_features() -> None:
    """A 6.18 fake hides goal_tuner: staging a temporal tuner names 7.1 before writing it."""
    fs, _ = _fake("6.18.44")
    ctx = dict(
        VADDR_STAT,
        schemes=[
            {
                "action": "pageout",
                "quotas": {
                    "goal_tuner": "temporal",
                    "goals": [{"metric": "user_input", "target_value": 10}],
                },
            }
        ],
    )
    fs.write_text(KD + "/nr_kdamonds", "1")
    fs.write_text(KD + "/0/contexts/nr_contexts", "1")
    fs.write_text(KD + "/0/contexts/0/schemes/nr_schemes", "1")
    features = probe_features(fs)
    assert features.evidence["goal_tuner"] == "no-file"
    with pytest.raises(UnsupportedKernel, match=r"Linux 7\.1"):
        Stager(fs, features).stage_kdamond(0, _kd(ctx))
