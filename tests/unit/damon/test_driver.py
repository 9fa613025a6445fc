"""The async driver: worker threads with deadlines, ownership on every write, layout, commits.

These run on anyio's asyncio backend with real threads (not on trio's MockClock, whose
autojump would fire while a worker thread runs).
"""

from __future__ import annotations

import errno
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

import reactor.damon.driver as driver_mod
from reactor.config.damon import DamonSection, Kdamond
from reactor.damon.commands import DamonSysfsError
from reactor.damon.driver import DamonDriver, DamonTimeout
from reactor.damon.ownership import ForeignKdamond, OwnershipRecord, OwnershipStore
from reactor.damon.probe import choose_backend, read_damon_status
from reactor.errors import KernelInterfaceError
from reactor.testing import RecordingKernelFS, damon_fake
from tests.captures import HOST
from tests.unit.damon.conftest import BOOT_ID, KD, base_fs

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CTX = {
    "ops": "vaddr",
    "targets": [{"pid": 4242}],
    "intervals": {"sample_us": 10000, "aggr_us": 100000, "ops_update_us": 1000000},
    "schemes": [
        {
            "action": "pageout",
            "access_pattern": {"nr_accesses": {"min": "0 samples", "max": "0 samples"}},
            "quotas": {
                "sz_bytes": "16 MiB",
                "reset_interval_ms": 100,
                "goals": [{"metric": "user_input", "target_value": 10000}],
            },
        }
    ],
}


def _section(n: int = 1) -> DamonSection:
    return DamonSection.model_validate({"kdamonds": [{"contexts": [CTX]}] * n})


def _fake(**kwargs: Any) -> tuple[Any, Any]:
    fs = base_fs("7.2.12+deb14-amd64")
    damon = damon_fake.FakeDamon(fs, kernel="7.2.12", **kwargs)
    damon.add_process(
        4242, [(0x7F0000000000, 0x7F0000400000, 1.0), (0x7F0000401000, 0x7F0002401000, 0.0)]
    )
    return fs, damon


async def _driver(fs: Any, run_dir: Path, **kwargs: Any) -> DamonDriver:
    driver = DamonDriver(fs, run_dir=str(run_dir), **kwargs)
    await driver.open()
    return driver


async def test_apply_lays_out_starts_and_records_ownership(tmp_path: Path) -> None:
    """apply on an empty tree: nr_kdamonds 1, staged, on; the record holds index, pid, boot."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section())
    pid = damon.kdamond_pid(0)
    assert pid is not None and driver.state(0) == "on"
    record = json.loads((tmp_path / "damon-kdamonds.json").read_text())
    assert record == {"version": 1, "boot_id": BOOT_ID, "kdamonds": [{"index": 0, "pid": pid}]}
    assert driver.owned() == {0}
    assert list(tmp_path.iterdir()) == [tmp_path / "damon-kdamonds.json"]  # no temp file left


async def test_writes_run_in_worker_threads(tmp_path: Path) -> None:
    """Every DAMON write happens off the event loop's thread."""
    fs, _ = _fake()
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    original = fs.write_text

    def spy(path: str, data: str) -> None:
        if path.startswith(KD):
            threads.add(threading.get_ident())
        original(path, data)

    fs.write_text = spy
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section())
    await driver.update_schemes_stats(0)
    assert threads and loop_thread not in threads


async def test_blocking_write_fails_at_its_deadline(tmp_path: Path) -> None:
    """A state write that hangs raises DamonTimeout (ETIMEDOUT, path) at the deadline."""
    fs, _ = _fake()
    driver = await _driver(fs, tmp_path, command_timeout_s=0.2)
    await driver.apply(_section())
    release = threading.Event()
    original = fs.write_text

    def hang(path: str, data: str) -> None:
        if path.endswith("/state") and data == "update_schemes_stats":
            release.wait(5)
        original(path, data)

    fs.write_text = hang
    started = time.monotonic()
    with pytest.raises(DamonTimeout) as info:
        await driver.update_schemes_stats(0)
    release.set()
    assert time.monotonic() - started < 2
    assert info.value.errno == errno.ETIMEDOUT and info.value.path == KD + "/0/state"
    assert "did not finish within 0.2 s" in str(info.value)


async def test_foreign_kdamond_is_never_written(tmp_path: Path) -> None:
    """Another tool's kdamond: every driver call that would write refuses, naming it, its
    pid and what to do; the write log shows no write under it (nor to nr_kdamonds)."""
    fs, damon = _fake()
    index = damon.start_foreign_kdamond()
    pid = damon.kdamond_pid(index)
    recorder = RecordingKernelFS(fs)
    driver = await _driver(recorder, tmp_path)
    kd = _section().kdamonds[0]
    with pytest.raises(ForeignKdamond) as info:
        await driver.apply(_section())
    for call in (
        driver.command(index, "update_schemes_stats"),
        driver.stage(index, kd),
        driver.commit(index, kd),
        driver.commit_quota_goals(index, {(0, 0): 1}),
        driver.stop(index),
    ):
        with pytest.raises(ForeignKdamond):
            await call
    await driver.stop_all()  # only reactor's own: nothing
    assert recorder.writes_under(f"{KD}/{index}") == ()
    assert recorder.writes_under(KD) == ()
    text = str(info.value)
    assert f"kdamond 0 (state on, pid {pid}, ops paddr: not in reactor's ownership record)" in text
    assert "nr_kdamonds is 0" in text and "backend to native" in text
    choice = choose_backend("auto", read_damon_status(fs), driver.owned())
    assert choice.backend == "native" and f"pid {pid}" in choice.reason


async def test_record_from_an_earlier_boot_is_ignored(tmp_path: Path) -> None:
    """A record naming kdamond 0 at its pid but from another boot does not make it reactor's."""
    fs, damon = _fake()
    index = damon.start_foreign_kdamond()
    stale = OwnershipRecord("another-boot").with_pid(index, damon.kdamond_pid(index))
    OwnershipStore(tmp_path).save(stale)
    driver = await _driver(fs, tmp_path)
    assert driver.owned() == frozenset()
    assert driver.store.ignored is not None and "earlier boot" in driver.store.ignored
    with pytest.raises(ForeignKdamond):
        await driver.apply(_section())


async def test_record_with_another_pid_is_ignored(tmp_path: Path) -> None:
    """A kdamond restarted by someone else (pid changed) is no longer reactor's."""
    fs, damon = _fake()
    index = damon.start_foreign_kdamond()
    OwnershipStore(tmp_path).save(OwnershipRecord(BOOT_ID).with_pid(index, 1))
    driver = await _driver(fs, tmp_path)
    with pytest.raises(ForeignKdamond, match=r"reactor recorded 1: someone else restarted it"):
        await driver.command(index, "update_schemes_stats")


async def test_reapply_commits_online_without_nr_writes(tmp_path: Path) -> None:
    """A second apply with the same count commits the running kdamond: no nr_kdamonds, no on."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section())
    pid = damon.kdamond_pid(0)
    start = len(fs.writes)
    await driver.apply(_section())
    later = fs.writes[start:]
    assert (KD + "/nr_kdamonds", "1") not in later
    assert [d for p, d in later if p.endswith("/state")] == ["commit"]
    assert damon.kdamond_pid(0) == pid


async def test_adding_a_kdamond_restarts_own_kdamonds_and_logs_it(tmp_path: Path) -> None:
    """1 -> 2 kdamonds: reactor stops its own, writes nr_kdamonds, starts both, logs the resize."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section(1))
    with structlog.testing.capture_logs() as logs:
        await driver.apply(_section(2))
    assert damon.kdamond_pid(0) is not None and damon.kdamond_pid(1) is not None
    resized = [e for e in logs if e["event"] == "damon_kdamonds_resized"]
    assert (
        resized
        and resized[0]["old"] == 1
        and resized[0]["new"] == 2
        and resized[0]["stopped"] == [0]
    )
    assert driver.owned() == {0, 1}


async def test_goal_feed_and_update_commands_return_snapshots(tmp_path: Path) -> None:
    """current_value + commit_schemes_quota_goals, then stats, quotas, intervals, tried regions."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section())
    await driver.commit_quota_goals(0, {(0, 0): 0})
    goal = KD + "/0/contexts/0/schemes/0/quotas/goals/0/current_value"
    assert (goal, "0") in fs.writes
    damon.advance(3.0)
    stats = await driver.update_schemes_stats(0)
    assert len(stats) == 1 and stats[0].nr_tried > 0
    quotas = await driver.update_schemes_effective_quotas(0)
    assert len(quotas) == 1 and quotas[0] > 0
    tuned = await driver.update_tuned_intervals(0)
    assert (tuned.sample_us, tuned.aggr_us) == (10000, 100000)
    tried = await driver.update_schemes_tried_regions(0)
    assert len(tried) == 1
    # a caller may read only the schemes it needs (the monitors read their snapshot's)
    assert await driver.update_schemes_tried_regions(0, ()) == ()
    (only,) = await driver.update_schemes_tried_regions(0, (0,))
    assert only.scheme == 0
    snap = driver.snapshot(0)
    assert snap.state == "on" and snap.goals[0].current_value == 0


async def test_stop_all_stops_only_own_kdamonds(tmp_path: Path) -> None:
    """stop_all turns reactor's kdamonds off and records pid -1; stopping twice is fine."""
    fs, _damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section())
    await driver.stop_all()
    assert driver.state(0) == "off" and driver.record.pid_of(0) == -1
    await driver.stop(0)
    assert driver.owned() == {0}


async def test_kdamond_task_says_where_a_kdamond_is_in_the_kernel(tmp_path: Path) -> None:
    """For a log line when a kdamond does not answer: its recorded pid, scheduler state,
    wchan and kernel stack (function names, innermost first), here from the verbatim task
    files of this host's own kdamond; what cannot be read is left out, nothing raises."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    assert driver.kdamond_task(0) == {}  # nothing recorded yet
    await driver.apply(_section())
    pid = damon.kdamond_pid(0)
    assert driver.kdamond_task(0) == {"kdamond_pid": pid}  # no /proc files for it here
    for name in ("stat", "wchan", "stack"):
        fs.set_file(f"/proc/{pid}/{name}", (HOST / f"proc_kdamond_{name}").read_text())
    assert driver.kdamond_task(0) == {
        "kdamond_pid": pid,
        "kdamond_sched": "I",
        "kdamond_wchan": "kdamond_fn",
        "kdamond_stack": ["kdamond_fn", "kthread", "ret_from_fork", "ret_from_fork_asm"],
    }
    fs.remove(f"/proc/{pid}/stack")  # not root: the stack is not readable
    assert "kdamond_stack" not in driver.kdamond_task(0)
    # the kdamond ended and its pid went to another task: nothing of that one is told
    fs.set_file(f"/proc/{pid}/stat", f"{pid} (python3) R 1 1 1 0 -1 4194560 0 0 0 0 0 0\n")
    assert driver.kdamond_task(0) == {"kdamond_pid": pid}


def _tuning_section() -> DamonSection:
    """CTX with intervals auto-tuning whose goal cannot be reached (every access of every
    sample is 10000 bp; the fake process's cold range never is): the tuner doubles the
    sampling interval at each tuning, up to max_sample_us (4x the staged 10 ms)."""
    goal = {"access_bp": 10000, "aggrs": 1, "min_sample_us": 10000, "max_sample_us": 40000}
    ctx = {**CTX, "intervals": {**CTX["intervals"], "intervals_goal": goal}}
    return DamonSection.model_validate({"kdamonds": [{"contexts": [ctx]}]})


async def test_a_quota_commit_keeps_the_kernels_tuned_intervals(tmp_path: Path) -> None:
    """A commit that keeps the staged intervals (a quota change on the read-back model)
    commits the tuned ones instead: damon_commit_ctx() resets the intervals whenever the
    attributes differ, which would restart the tuner from 10 ms at every quota commit.
    After the commit the kernel's sampling interval is still the tuned 40 ms (the tuner
    reaches max_sample_us within 1 s: 10 -> 20 -> 40 ms at 100-200 ms aggregations)."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_tuning_section())
    damon.advance(2.0)
    assert (await driver.update_tuned_intervals(0)).sample_us == 40000
    kd = driver.read_back(0)
    quotas = kd.contexts[0].schemes[0].quotas.model_copy(update={"sz_bytes": 8 << 20})
    scheme = kd.contexts[0].schemes[0].model_copy(update={"quotas": quotas})
    # as a policy builds it: the files' intervals, a new quota
    staged = kd.contexts[0].intervals.model_copy(update={"sample_us": 10000, "aggr_us": 100000})
    ctx = kd.contexts[0].model_copy(update={"schemes": (scheme,), "intervals": staged})
    await driver.commit(0, kd.model_copy(update={"contexts": (ctx,)}))
    tuned = await driver.update_tuned_intervals(0)
    assert (tuned.sample_us, tuned.aggr_us) == (40000, 400000)
    assert driver.read_back(0).contexts[0].schemes[0].quotas.sz_bytes == 8 << 20


async def test_a_commit_of_new_intervals_applies_them_under_tuning(tmp_path: Path) -> None:
    """Intervals the caller changed (a reload, reactor's own tuner) are committed as given,
    tuning on or not: the kernel's sampling interval is then the new 20 ms (read at once:
    the tuner's next step is an aggregation away, and the fake is not advanced)."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_tuning_section())
    damon.advance(2.0)
    kd = driver.read_back(0)
    new = kd.contexts[0].intervals.model_copy(update={"sample_us": 20000, "aggr_us": 200000})
    ctx = kd.contexts[0].model_copy(update={"intervals": new})
    await driver.commit(0, kd.model_copy(update={"contexts": (ctx,)}))
    tuned = await driver.update_tuned_intervals(0)
    assert (tuned.sample_us, tuned.aggr_us) == (20000, 200000)


async def test_a_kdamond_whose_state_stays_unreadable_is_not_written_nor_called_foreign(
    tmp_path: Path,
) -> None:
    """``state`` and ``pid`` answer EBUSY past the read budget (someone holds DAMON's
    sysfs lock): whose kdamond it is cannot be told. The driver writes nothing and says
    the lock is busy (EBUSY, the path) instead of blaming another user."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section())
    pid = damon.kdamond_pid(0)
    start = len(fs.writes)
    for name in ("state", "pid"):
        fs.inject_fault(f"{KD}/0/{name}", errno.EBUSY, times=None, ops=("read",))
    with pytest.raises(DamonSysfsError) as info:
        await driver.stop(0)
    assert not isinstance(info.value, ForeignKdamond)
    assert info.value.errno == errno.EBUSY and info.value.path == f"{KD}/0/state"
    assert "cannot tell whether kdamond 0 is still reactor's" in str(info.value)
    assert not fs.writes[start:]
    fs.clear_faults()
    assert damon.kdamond_pid(0) == pid and driver.owned() == {0}


async def test_a_start_whose_pid_cannot_be_read_turns_the_kdamond_off_again(
    tmp_path: Path,
) -> None:
    """``on`` succeeded but the pid read right after it failed: the record could not
    name the kdamond, so the next start would take it for someone else's. The driver
    turns it off again and raises the read's error."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    read = fs.read_text

    def pid_fails_while_on(path: str) -> str:
        if path == f"{KD}/0/pid" and damon.kdamond_pid(0) is not None:
            raise KernelInterfaceError(path, "cannot read", errno=errno.EIO)
        return read(path)

    fs.read_text = pid_fails_while_on
    with pytest.raises(KernelInterfaceError) as info:
        await driver.apply(_section())
    assert info.value.errno == errno.EIO and info.value.path == f"{KD}/0/pid"
    assert damon.kdamond_pid(0) is None
    assert read(f"{KD}/0/state").strip() == "off"


async def test_stop_all_tries_every_kdamond_when_one_cannot_stop(tmp_path: Path) -> None:
    """Writing ``off`` to kdamond 0 keeps failing (EBUSY): kdamond 1 is still stopped,
    and the error names kdamond 0."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section(2))
    assert damon.kdamond_pid(0) is not None and damon.kdamond_pid(1) is not None
    fs.inject_fault(f"{KD}/0/state", errno.EBUSY, times=None, ops=("write",))
    with pytest.raises(DamonSysfsError) as info:
        await driver.stop_all()
    fs.clear_faults()
    assert damon.kdamond_pid(1) is None
    assert damon.kdamond_pid(0) is not None
    assert info.value.path == f"{KD}/0/state"


async def test_the_staged_model_says_what_the_files_hold_without_reading_them(
    tmp_path: Path,
) -> None:
    """staged(k) is what reactor last staged, fed goal values included, and agrees with a
    read-back of the files, which it does not open; a driver that staged nothing reads."""
    fs, _damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section())
    await driver.commit_quota_goals(0, {(0, 0): 4321})
    action = KD + "/0/contexts/0/schemes/0/action"
    opened = fs.open_count(action)
    kd = await driver.staged(0)
    assert fs.open_count(action) == opened, "the staged model reads no file"
    back = driver.read_back(0)
    assert kd.contexts[0].schemes[0].quotas.goals[0].current_value == 4321
    assert back.contexts[0].schemes[0].quotas.goals[0].current_value == 4321
    assert kd.contexts[0].schemes[0].quotas == back.contexts[0].schemes[0].quotas
    assert kd.contexts[0].intervals == back.contexts[0].intervals
    # a quota commit from it stages what a read-back would have given
    new = _with_bytes(kd, 8 << 20)
    await driver.commit(0, new)
    after = driver.read_back(0).contexts[0].schemes[0].quotas
    assert (after.sz_bytes, after.goals[0].current_value) == (8 << 20, 4321)
    fresh = await _driver(fs, tmp_path)
    assert (await fresh.staged(0)).contexts[0].schemes[0].quotas == after


def _with_bytes(kd: Kdamond, sz: int) -> Kdamond:
    first, *rest = kd.contexts[0].schemes
    quotas = first.quotas.model_copy(update={"sz_bytes": sz})
    return kd.with_schemes(0, (first.model_copy(update={"quotas": quotas}), *rest))


def _written_since(fs: Any, before: int) -> set[str]:
    return {path.rsplit("/kdamonds/0/", 1)[-1] for path, _ in fs.writes[before:]}


INTERVALS = {
    "contexts/0/monitoring_attrs/intervals/sample_us",
    "contexts/0/monitoring_attrs/intervals/aggr_us",
}


async def test_a_quota_commit_writes_the_quota_file_alone(tmp_path: Path) -> None:
    """After a full staging, a commit that changes one quota writes that file (and the
    intervals files, which the kernel rewrites itself), then the command; the kernel's
    tree says the new quota. A fed goal value is known too."""
    fs, damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section())
    await driver.commit_quota_goals(0, {(0, 0): 77})
    before = len(fs.writes)
    await driver.commit(0, _with_bytes(await driver.staged(0), 8 << 20))
    assert _written_since(fs, before) == INTERVALS | {
        "contexts/0/schemes/0/quotas/bytes",
        "state",
    }
    back = driver.read_back(0).contexts[0].schemes[0].quotas
    assert (back.sz_bytes, back.goals[0].current_value) == (8 << 20, 77)
    assert damon.kdamond_pid(0) is not None


async def test_a_new_scheme_rewrites_every_scheme_and_a_failed_pass_everything(
    tmp_path: Path,
) -> None:
    """nr_schemes written: the kernel recreated every scheme with defaults, so each is
    written whole. A staging pass that failed leaves nothing known: the next writes all."""
    fs, _damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section())
    kd = await driver.staged(0)
    ctx = kd.contexts[0]
    two = kd.with_schemes(0, ctx.schemes * 2)
    before = len(fs.writes)
    await driver.commit(0, two)
    written = _written_since(fs, before)
    for s in (0, 1):
        assert f"contexts/0/schemes/{s}/action" in written
        assert f"contexts/0/schemes/{s}/quotas/goals/0/target_value" in written
    assert "contexts/0/operations" not in written  # the context itself was not recreated
    assert [s.action for s in driver.read_back(0).contexts[0].schemes] == ["pageout"] * 2
    fs.inject_fault(KD + "/0/contexts/0/schemes/0/quotas/bytes", errno.EIO, ops=("write",))
    with pytest.raises(DamonSysfsError):
        await driver.commit(0, _with_bytes(two, 4 << 20))
    before = len(fs.writes)
    await driver.commit(0, _with_bytes(two, 2 << 20))
    assert {"contexts/0/operations", "contexts/0/schemes/1/action"} <= _written_since(fs, before)
    assert driver.read_back(0).contexts[0].schemes[0].quotas.sz_bytes == 2 << 20


async def test_features_are_probed_again_only_after_a_pass_that_made_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Features known only from the version table (no directory of their level to look
    in: no filter here) are probed again from the files once staging made directories
    (an ``nr_*`` write), not after a quota commit, which makes none: the probe cost each
    commit about a quarter of its CPU on the fake, for nothing."""
    calls: list[int] = []
    probe = driver_mod.probe_features

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return probe(*args, **kwargs)

    monkeypatch.setattr(driver_mod, "probe_features", counted)  # the name the driver calls
    fs, _damon = _fake()
    driver = await _driver(fs, tmp_path)
    await driver.apply(_section())
    assert "table" in driver.features.evidence.values()  # something is left to learn
    after_apply = len(calls)
    assert after_apply >= 2  # at open, and after the first staging made the tree
    kd = await driver.staged(0)
    for sz in (8 << 20, 4 << 20):
        await driver.commit(0, _with_bytes(kd, sz))
    assert len(calls) == after_apply
    await driver.commit(0, kd.with_schemes(0, kd.contexts[0].schemes * 2))  # nr_schemes
    assert len(calls) == after_apply + 1
