"""state commands: EBUSY retry, and each errno translated into a sentence naming the cause."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from reactor.config.damon import DamonSection
from reactor.damon.commands import (
    DamonSysfsError,
    KdamondNotRunning,
    diagnose_staged,
    send_state,
)
from reactor.damon.features import probe_features
from reactor.damon.sysfs import Stager
from tests.unit.damon.conftest import KD, MiniDamon

STATE = KD + "/0/state"


def _staged(damon: MiniDamon, ctx: dict[str, object] | None = None) -> None:
    damon.fs.write_text(KD + "/nr_kdamonds", "1")
    ctx = ctx or {"ops": "vaddr", "targets": [{"pid": 4000}], "schemes": [{"action": "stat"}]}
    kd = DamonSection.model_validate({"kdamonds": [{"contexts": [ctx]}]}).kdamonds[0]
    Stager(damon.fs, probe_features(damon.fs)).stage_kdamond(0, kd)


def test_contended_lock_is_retried_with_backoff(mini: Callable[..., MiniDamon]) -> None:
    """Two EBUSY answers, then success: two sleeps of 10 and 20 ms, kdamond on."""
    damon = mini()
    _staged(damon)
    damon.fs.inject_fault(STATE, errno.EBUSY, times=2, ops=("write",))
    sleeps: list[float] = []
    send_state(damon.fs, 0, "on", sleep=sleeps.append)
    assert sleeps == [0.01, 0.02]
    assert damon.fs.file_text(STATE) == "on"


def test_busy_after_every_attempt_raises_the_sentence(mini: Callable[..., MiniDamon]) -> None:
    """EBUSY on every try: DamonSysfsError after the last attempt, with path, value and errno."""
    damon = mini()
    _staged(damon)
    damon.fs.inject_fault(STATE, errno.EBUSY, times=None, ops=("write",))
    sleeps: list[float] = []
    with pytest.raises(DamonSysfsError) as info:
        send_state(damon.fs, 0, "update_schemes_stats", attempts=3, sleep=sleeps.append)
    assert len(sleeps) == 2
    err = info.value
    assert (err.path, err.value, err.errno, err.command, err.kdamond) == (
        STATE,
        "update_schemes_stats",
        errno.EBUSY,
        "update_schemes_stats",
        0,
    )


def test_on_busy_names_the_exclusive_module(mini: Callable[..., MiniDamon]) -> None:
    """EBUSY on 'on' with DAMON_STAT enabled names the module, its parameter and the fix."""
    damon = mini()
    _staged(damon)
    damon.fs.set_file("/sys/module/damon_stat/parameters/enabled", "Y\n")
    damon.fs.set_file("/sys/module/damon_reclaim/parameters/enabled", "N\n")
    damon.fs.inject_fault(STATE, errno.EBUSY, times=None, ops=("write",))
    param = r"/sys/module/damon_stat/parameters/enabled = Y"
    with pytest.raises(
        DamonSysfsError, match=rf"DAMON_STAT \({param}\) runs DAMON exclusively"
    ) as info:
        send_state(damon.fs, 0, "on", sleep=lambda _: None)
    assert "DAMON_RECLAIM" not in str(info.value) and "damon_stat.enabled=N" in str(info.value)


def test_on_while_running_is_not_retried(mini: Callable[..., MiniDamon]) -> None:
    """'on' on a running kdamond fails at once: already running, use commit."""
    damon = mini()
    _staged(damon)
    send_state(damon.fs, 0, "on")
    sleeps: list[float] = []
    with pytest.raises(DamonSysfsError, match=r"kdamond 0 is already running") as info:
        send_state(damon.fs, 0, "on", sleep=sleeps.append)
    assert sleeps == [] and info.value.errno == errno.EBUSY


def test_update_on_a_stopped_kdamond_says_it_is_not_running(mini: Callable[..., MiniDamon]) -> None:
    """EINVAL on an update command of a stopped kdamond is KdamondNotRunning."""
    damon = mini()
    _staged(damon)
    with pytest.raises(
        KdamondNotRunning,
        match=r"needs a running kdamond, and kdamond 0 is not running \(state reads 'off'",
    ):
        send_state(damon.fs, 0, "update_schemes_stats")


def test_enomem_names_the_memcg_path_that_does_not_exist(mini: Callable[..., MiniDamon]) -> None:
    """ENOMEM on commit points at a memcg filter path with no cgroup behind it."""
    damon = mini()
    ctx = {
        "ops": "vaddr",
        "targets": [{"pid": 4000}],
        "schemes": [
            {
                "action": "pageout",
                "filters": [
                    {"filter_type": "memcg", "matching": True, "memcg_path": "/nope.slice"}
                ],
            }
        ],
    }
    _staged(damon, ctx)
    send_state(damon.fs, 0, "on")
    damon.fs.inject_fault(STATE, errno.ENOMEM, ops=("write",))
    with pytest.raises(DamonSysfsError) as info:
        send_state(damon.fs, 0, "commit")
    text = str(info.value)
    assert "could not build a scheme" in text
    assert "ops_filters/0/memcg_path = '/nope.slice' (no such cgroup)" in text
    assert "ENOMEM" in text


def test_einval_on_start_diagnoses_the_staged_files(mini: Callable[..., MiniDamon]) -> None:
    """EINVAL on 'on' names the exited pid and the out-of-order intervals, with paths."""
    damon = mini(pids=())
    _staged(damon)
    damon.fs.write_text(KD + "/0/contexts/0/monitoring_attrs/intervals/sample_us", "200000")
    damon.fs.inject_fault(STATE, errno.EINVAL, ops=("write",))
    with pytest.raises(DamonSysfsError) as info:
        send_state(damon.fs, 0, "on")
    text = str(info.value)
    assert "sample_us (200000) must be <= aggr_us (100000)" in text
    assert "targets/0/pid_target is 4000: no such process" in text


def test_diagnosis_finds_unregistered_ops_and_region_order(mini: Callable[..., MiniDamon]) -> None:
    """diagnose_staged reports ops missing from avail_operations and overlapping regions."""
    damon = mini()
    _staged(
        damon,
        {
            "ops": "fvaddr",
            "targets": [
                {
                    "pid": 4000,
                    "regions": [{"start": 0, "end": 8192}, {"start": 16384, "end": 32768}],
                }
            ],
        },
    )
    damon.fs.set_file(KD + "/0/contexts/0/avail_operations", "vaddr\npaddr\n")
    damon.fs.write_text(KD + "/0/contexts/0/targets/0/regions/1/start", "4096")
    problems = diagnose_staged(damon.fs, 0)
    assert any("operations is 'fvaddr', which this kernel did not register" in p for p in problems)
    assert any("regions/1 is [4096, 32768)" in p for p in problems)


def test_nr_kdamonds_busy_means_a_kdamond_runs(mini: Callable[..., MiniDamon]) -> None:
    """EBUSY on nr_kdamonds is explained as a running kdamond."""
    damon = mini()
    _staged(damon)
    send_state(damon.fs, 0, "on")
    stager = Stager(damon.fs, probe_features(damon.fs))
    with pytest.raises(
        DamonSysfsError, match=r"a kdamond is running: the kernel refuses to change nr_kdamonds"
    ):
        stager.write(KD + "/nr_kdamonds", 2)


def test_unknown_command_is_a_value_error(mini: Callable[..., MiniDamon]) -> None:
    """A command outside the kernel's keyword list never reaches the file."""
    damon = mini()
    with pytest.raises(ValueError, match=r"got 'start'"):
        send_state(damon.fs, 0, "start")  # type: ignore[arg-type]
