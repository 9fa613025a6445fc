"""DAMON-backed monitors in the daemon, on the kernel-faithful fake (reactor.testing)."""

from __future__ import annotations

import errno
import itertools
import re
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from reactor.config import load_config_text
from reactor.damon.commands import DamonSysfsError
from reactor.damon.driver import DamonDriver, DamonTimeout
from reactor.damon.paths import KDAMONDS as KD
from reactor.engine.runtime import Reactor
from reactor.errors import KernelInterfaceError, SourceFailed
from reactor.testing import FakeDamon, FakeKernelFS
from tests.captures import DAMON_COLD, DAMON_HOT, DAMON_PID, HOST, damon_node

PID, HOT, COLD = DAMON_PID, DAMON_HOT, DAMON_COLD


@pytest.fixture
def anyio_backend() -> str:
    """Real time on asyncio: the driver writes from worker threads (no virtual clock)."""
    return "asyncio"


def fake_machine() -> tuple[FakeKernelFS, FakeDamon]:
    """This host's /proc captures and a free DAMON at the guest's version."""
    return damon_node()


def config(run_dir: Path, extra: str = "") -> Any:
    return load_config_text(
        "reactor:\n  backend: damon\n  tick: 100ms\n  startup_timeout: 5s\n"
        f"  run_dir: {run_dir}\n"
        "monitors:\n  - name: app\n    targets: {pids: [4242]}\n"
        "    sample: 10ms\n    aggregation: 100ms\n" + extra,
        "t.yaml",
    )


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


async def drive(damon: FakeDamon, step_s: float = 0.05) -> None:
    """Advance the fake's simulated kernel as real time passes."""
    while True:
        damon.advance(step_s)
        await anyio.sleep(step_s)


@asynccontextmanager
async def running(tmp_path: Path, extra: str = "") -> AsyncIterator[tuple[Reactor, FakeDamon]]:
    """A daemon with :func:`config` (plus ``extra`` under the monitor) on the fake
    machine, its simulated kernel advancing with real time; shut down on leaving."""
    fs, damon = fake_machine()
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, damon)
        async with Reactor(config(tmp_path, extra), fs=fs) as reactor:
            yield reactor, damon
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_monitor_becomes_reactors_kdamond_and_publishes_hot_and_cold(
    tmp_path: Path,
) -> None:
    """The monitor runs as reactor's own kdamond; its snapshot shows hot and cold apart."""
    async with running(tmp_path) as (reactor, damon):
        assert damon.kdamond_pid(0) is not None
        view = None
        with anyio.fail_after(10):
            while view is None or not view.value.snapshots:
                view = await reactor.bus.wait_newer(
                    "access.app", view.seq if view is not None else 0
                )
        (snap,) = view.value.snapshots.values()
        hot = [r for r in snap.region_list() if r.start < HOT[1] and r.end > HOT[0]]
        cold = [r for r in snap.region_list() if r.start >= COLD[0] and r.end <= COLD[1]]
        assert snap.probe == "damon" and snap.max_nr_accesses == 10
        assert hot and cold
        assert max(r.nr_accesses for r in hot) >= 8
        assert all(r.nr_accesses == 0 for r in cold)
        assert reactor.damon is not None and reactor.damon.driver.owned() == {0}
    # shutdown stopped reactor's kdamond
    assert damon.kdamond_pid(0) is None


@pytest.mark.anyio
async def test_a_foreign_kdamond_stops_startup_and_is_left_alone(tmp_path: Path) -> None:
    """With someone else's kdamond running, backend damon refuses to start, naming it."""
    fs, damon = fake_machine()
    index = damon.start_foreign_kdamond()
    pid = damon.kdamond_pid(index)
    before = len(fs.writes)
    with structlog.testing.capture_logs() as logs, pytest.raises(BaseException) as info:
        async with Reactor(config(tmp_path), fs=fs):
            pass
    (error,) = leaves(info.value)
    assert isinstance(error, SourceFailed)
    assert f"pid {pid}" in str(error) and "reactor.backend is damon" in str(error)
    assert len(fs.writes) == before, "no write may reach a foreign kdamond"
    assert any(e["event"] == "backend" and not e["usable"] for e in logs)


EXPERT = """
damon:
  kdamonds:
    - contexts:
        - ops: vaddr
          targets: [{{pid: 4242}}]
          intervals: {{sample_us: 10 ms, aggr_us: {aggr}}}
          schemes:
            - action: pageout
              access_pattern: {{nr_accesses: {{min: 0 %, max: 0 %}}}}
              quotas: {{sz_bytes: {quota}, reset_interval_ms: 1 s}}
"""


def _effective(fs: FakeKernelFS, k: int) -> dict[str, str]:
    base = "/sys/kernel/mm/damon/admin/kdamonds"
    ctx = f"{base}/{k}/contexts/0"
    return {
        "sample_us": fs.read_text(f"{ctx}/monitoring_attrs/intervals/sample_us").strip(),
        "aggr_us": fs.read_text(f"{ctx}/monitoring_attrs/intervals/aggr_us").strip(),
        "nr_schemes": fs.read_text(f"{ctx}/schemes/nr_schemes").strip(),
    }


@pytest.mark.anyio
async def test_a_damon_section_without_monitors_keeps_its_kdamond_running(
    tmp_path: Path,
) -> None:
    """Only the expert's ``damon:`` kdamond, no monitor to read: it runs until shutdown
    (a lane run caught the daemon stopping it at once when no snapshot task was left)."""
    fs, damon = fake_machine()
    cfg = load_config_text(
        "reactor:\n  backend: damon\n  tick: 100ms\n  startup_timeout: 5s\n"
        f"  run_dir: {tmp_path}\n" + EXPERT.format(aggr="100 ms", quota="1 MiB"),
        "t.yaml",
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, damon)
        async with Reactor(cfg, fs=fs) as reactor:
            pid = damon.kdamond_pid(0)
            assert pid is not None
            await anyio.sleep(0.5)
            assert reactor.damon is not None and reactor.damon.driver.state(0) == "on"
            assert damon.kdamond_pid(0) == pid
        tg.cancel_scope.cancel()
    assert damon.kdamond_pid(0) is None


@pytest.mark.anyio
async def test_a_reload_commits_new_intervals_and_quota_online(tmp_path: Path) -> None:
    """A reload that changes the monitor's intervals and the damon section's quota and
    aggregation commits them into the running kdamonds: same pids, new values in the
    files, the kernel's effective quota follows; nothing asks for a restart."""
    fs, damon = fake_machine()
    first = config(tmp_path, EXPERT.format(aggr="100 ms", quota="1 MiB"))
    second = load_config_text(
        "reactor:\n  backend: damon\n  tick: 100ms\n  startup_timeout: 5s\n"
        f"  run_dir: {tmp_path}\n"
        "monitors:\n  - name: app\n    targets: {pids: [4242]}\n"
        "    sample: 20ms\n    aggregation: 400ms\n" + EXPERT.format(aggr="200 ms", quota="4 MiB"),
        "t.yaml",
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, damon)
        async with Reactor(first, fs=fs) as reactor:
            pids = (damon.kdamond_pid(0), damon.kdamond_pid(1))
            assert None not in pids
            before = (_effective(fs, 0), _effective(fs, 1))
            result = await reactor.reload(second)
            assert result.needs_restart == ()
            assert (damon.kdamond_pid(0), damon.kdamond_pid(1)) == pids
            after = (_effective(fs, 0), _effective(fs, 1))
            assert before[0]["sample_us"] == "10000" and after[0]["sample_us"] == "20000"
            assert after[0]["aggr_us"] == "400000"
            assert before[1]["aggr_us"] == "100000" and after[1]["aggr_us"] == "200000"
            quota = "/sys/kernel/mm/damon/admin/kdamonds/1/contexts/0/schemes/0/quotas/bytes"
            assert fs.read_text(quota).strip() == str(4 << 20)
            # a change of targets cannot be committed: it asks for a restart, changes nothing
            moved = load_config_text(
                "reactor:\n  backend: damon\n  tick: 100ms\n  startup_timeout: 5s\n"
                f"  run_dir: {tmp_path}\n"
                "monitors:\n  - name: app\n    targets: {pids: [4243]}\n",
                "t.yaml",
            )
            writes = len(fs.writes)
            result = await reactor.reload(moved)
            assert result.needs_restart == ("monitors/damon",)
            assert len(fs.writes) == writes
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_stop_that_fails_still_ends_the_workloads_reactor_started(tmp_path: Path) -> None:
    """At shutdown reactor's kdamond cannot be stopped (its state and pid stay EBUSY, so
    whose it is cannot be told). The workload reactor started for the monitor still
    ends, the failure is logged with what to do, and it is raised (the exit status shows
    it), not swallowed."""
    fs, damon = fake_machine()
    damon = FakeDamon(fs, kernel="7.2.12", pid_exists=lambda pid: pid > 0)  # a fresh tree
    cfg = load_config_text(
        "reactor:\n  backend: damon\n  tick: 100ms\n  startup_timeout: 5s\n"
        f"  run_dir: {tmp_path}\n"
        "monitors:\n  - name: app\n"
        f"    targets: {{command: [{sys.executable}, -c, 'import time; time.sleep(60)']}}\n"
        "    sample: 10ms\n    aggregation: 100ms\n",
        "t.yaml",
    )
    with structlog.testing.capture_logs() as logs, pytest.raises(BaseException) as info:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, damon)
            async with Reactor(cfg, fs=fs) as reactor:
                assert reactor.damon is not None
                (command,) = reactor.damon.commands.values()
                assert damon.kdamond_pid(0) is not None and command.alive
                for name in ("state", "pid"):
                    fs.inject_fault(f"{KD}/0/{name}", errno.EBUSY, times=None, ops=("read",))
            tg.cancel_scope.cancel()
    started = reactor.damon.commands.values() if reactor.damon is not None else ()
    alive = [c.pid for c in started if c.alive]
    for c in started:
        c.stop()  # never leave the child behind, whatever failed
    assert alive == []
    assert any(
        isinstance(e, DamonSysfsError) and e.errno == errno.EBUSY for e in leaves(info.value)
    )
    (failed,) = [e for e in logs if e["event"] == "damon_stop_failed"]
    assert failed["recorded"] == [0] and "next reactor start" in failed["note"]


@pytest.mark.anyio
async def test_a_failing_stop_does_not_hide_why_start_up_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Laying out the kdamonds fails, and so does the stop that follows: the start-up
    error is what the caller gets; the stop's failure is logged beside it."""

    async def apply_fails(self: DamonDriver, section: Any, **kw: Any) -> None:
        raise KernelInterfaceError(f"{KD}/0/contexts", "staging failed", errno=errno.ENOMEM)

    async def stop_fails(self: DamonDriver) -> None:
        raise DamonSysfsError(f"{KD}/0/state", "stop failed", errno=errno.EBUSY, value="off")

    monkeypatch.setattr(DamonDriver, "apply", apply_fails)
    monkeypatch.setattr(DamonDriver, "stop_all", stop_fails)
    fs, _ = fake_machine()
    with structlog.testing.capture_logs() as logs, pytest.raises(BaseException) as info:
        async with Reactor(config(tmp_path), fs=fs):
            pass
    errors = [e for e in leaves(info.value) if isinstance(e, KernelInterfaceError)]
    assert [e.sentence if isinstance(e, DamonSysfsError) else str(e) for e in errors] == [
        f"{KD}/0/contexts: staging failed (ENOMEM: Cannot allocate memory)"
    ]
    assert [e["error"] for e in logs if e["event"] == "damon_stop_failed"] == [
        f"{KD}/0/state: stop failed (EBUSY: Device or resource busy); value written: 'off'"
    ]


@pytest.mark.anyio
async def test_a_stop_past_the_shutdown_timeout_is_an_error(tmp_path: Path) -> None:
    """Writing ``off`` keeps answering EBUSY past ``reactor.shutdown_timeout``: the
    daemon says its kdamonds may still run and fails (exit status 1), not 0."""
    fs, damon = fake_machine()
    cfg = load_config_text(
        "reactor:\n  backend: damon\n  tick: 100ms\n  startup_timeout: 5s\n"
        f"  shutdown_timeout: 50ms\n  run_dir: {tmp_path}\n"
        "monitors:\n  - name: app\n    targets: {pids: [4242]}\n"
        "    sample: 10ms\n    aggregation: 100ms\n",
        "t.yaml",
    )
    with structlog.testing.capture_logs() as logs, pytest.raises(BaseException) as info:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, damon)
            async with Reactor(cfg, fs=fs):
                assert damon.kdamond_pid(0) is not None
                fs.inject_fault(f"{KD}/0/state", errno.EBUSY, times=None, ops=("write",))
            tg.cancel_scope.cancel()
    fs.clear_faults()
    assert any(isinstance(e, DamonTimeout) for e in leaves(info.value)), info.value
    (timeout,) = [e for e in logs if e["event"] == "damon_stop_timeout"]
    assert timeout["recorded"] == [0] and "next reactor start" in timeout["note"]


def unanswered_snapshots(fs: FakeKernelFS) -> tuple[threading.Event, threading.Event]:
    """Make the kernel leave the next ``update_schemes_tried_regions`` unanswered (its
    write blocks, as a walk waiting on a busy kdamond does) until the second event is
    set; the first is set once such a write is in flight."""
    held, answer = threading.Event(), threading.Event()
    write = fs.write_text

    def slow_kernel(path: str, data: str) -> None:
        if path.endswith("/state") and data.strip() == "update_schemes_tried_regions":
            held.set()
            answer.wait(30)
        write(path, data)

    fs.write_text = slow_kernel  # type: ignore[method-assign]
    return held, answer


@pytest.mark.anyio
async def test_a_command_in_flight_at_shutdown_gets_the_shutdown_timeout_to_finish(
    tmp_path: Path,
) -> None:
    """The stop comes while the kernel has not answered a snapshot's command (seen under
    TCG for more than 10 s, a tiering kdamond migrating). The shutdown waits for it
    within ``reactor.shutdown_timeout`` (5 s), not one command's timeout (made 0.2 s
    here), says what it waited for, then stops the kdamond: no error. The kernel answers
    2 s after the cancellation begins, so the wait is longer than that timeout."""
    fs, damon = fake_machine()
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, damon)
            async with Reactor(config(tmp_path), fs=fs) as reactor:
                assert reactor.damon is not None
                reactor.damon.driver.command_timeout_s = 0.2
                held, answer = unanswered_snapshots(fs)
                with anyio.fail_after(10):
                    await anyio.to_thread.run_sync(held.wait)
                threading.Timer(2.0, answer.set).start()
            tg.cancel_scope.cancel()
    assert damon.kdamond_pid(0) is None
    (awaited,) = [e for e in logs if e["event"] == "damon_job_awaited"]
    assert awaited["job"] == f"'update_schemes_tried_regions' to {KD}/0/state"
    assert awaited["waited_s"] > 0.2
    assert not [e for e in logs if e["event"] in ("damon_stop_failed", "failed")]


@pytest.mark.anyio
async def test_a_command_unanswered_past_the_shutdown_timeout_is_named_in_the_error(
    tmp_path: Path,
) -> None:
    """The kernel still has not answered when ``reactor.shutdown_timeout`` runs out:
    the daemon fails (its kdamond may still run) and the error says which write it
    waited for and for how long."""
    fs, damon = fake_machine()
    cfg = load_config_text(
        "reactor:\n  backend: damon\n  tick: 100ms\n  shutdown_timeout: 300ms\n"
        f"  run_dir: {tmp_path}\n"
        "monitors:\n  - name: app\n    targets: {pids: [4242]}\n"
        "    sample: 10ms\n    aggregation: 100ms\n",
        "t.yaml",
    )
    with structlog.testing.capture_logs() as logs, pytest.raises(BaseException) as info:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drive, damon)
                async with Reactor(cfg, fs=fs):
                    pid = damon.kdamond_pid(0)
                    held, answer = unanswered_snapshots(fs)
                    with anyio.fail_after(10):
                        await anyio.to_thread.run_sync(held.wait)
                tg.cancel_scope.cancel()
        finally:
            answer.set()
    (error,) = [e for e in leaves(info.value) if isinstance(e, DamonTimeout)]
    assert re.search(
        rf"\(in flight: 'update_schemes_tried_regions' to {KD}/0/state, for \d+\.\d s\)",
        str(error),
    ), str(error)
    assert "did not finish within 0.3 s" in str(error)
    (failed,) = [e for e in logs if e["event"] == "damon_stop_failed"]
    assert failed["recorded"] == [0] and failed["error"] == str(error)
    assert failed["kdamonds"] == {0: {"kdamond_pid": pid}}  # the fake has no /proc for it


@pytest.mark.anyio
async def test_a_snapshot_the_kernel_holds_back_is_logged_and_tried_again(
    tmp_path: Path,
) -> None:
    """While another holder keeps DAMON's sysfs lock (EBUSY past the command's
    retries), the monitor logs ``damon_snapshot_late`` once and keeps its kdamond; its
    snapshots come again once the lock is free (the daemon used to exit on it). The log
    line says where the kdamond is in the kernel (this host's kdamond's task files)."""
    fs, damon = fake_machine()
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, damon)
        with structlog.testing.capture_logs() as logs:
            async with Reactor(config(tmp_path), fs=fs) as reactor:
                pid = damon.kdamond_pid(0)
                for name in ("stat", "wchan", "stack"):
                    fs.set_file(f"/proc/{pid}/{name}", (HOST / f"proc_kdamond_{name}").read_text())
                with anyio.fail_after(10):
                    view = await reactor.bus.wait_newer("access.app", 0)
                with damon.hold_lock():
                    await anyio.sleep(0.8)  # 8 ticks of 100 ms
                with anyio.fail_after(10):
                    newer = await reactor.bus.wait_newer("access.app", view.seq)
                    while not any(e["event"] == "damon_snapshot_late" for e in logs):
                        newer = await reactor.bus.wait_newer("access.app", newer.seq)
                assert damon.kdamond_pid(0) == pid
        tg.cancel_scope.cancel()
    late = [e for e in logs if e["event"] == "damon_snapshot_late"]
    assert late and late[0]["monitor"] == "app" and "EBUSY" in late[0]["error"]
    assert late[0]["kdamond_pid"] == pid and late[0]["kdamond_sched"] == "I"
    assert late[0]["kdamond_stack"][0] == "kdamond_fn"
    assert [e["consecutive"] for e in late] == [1]
    assert not [e for e in logs if e["event"] in ("failed", "damon_stop_failed")]


@pytest.mark.anyio
async def test_snapshot_cpu_spaces_out_costly_snapshots_and_their_views_stay_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``snapshot_cpu: 1%`` with each snapshot costing the driver 5 ms of CPU (set so:
    the fake's own reads cost next to nothing): 5 ms / 1 % = 0.5 s, so a snapshot
    every 5 ticks of 100 ms and never at every tick; each view carries that period, and
    the status takes a view 0.45 s old as fresh (3 x 0.5 s), where the bound without a
    period (3 ticks, 0.3 s) would call it stale, and one 1.6 s old as stale."""
    orig = DamonDriver.update_schemes_tried_regions
    starts: list[float] = []

    async def costly(self: DamonDriver, k: int, *args: Any, **kw: Any) -> Any:
        starts.append(anyio.current_time())
        before = self.read_cpu_s(k)
        out = await orig(self, k, *args, **kw)
        self._read_cpu_s[k] = before + 0.005
        return out

    monkeypatch.setattr(DamonDriver, "update_schemes_tried_regions", costly)
    async with running(tmp_path, "    snapshot_cpu: 1%\n") as (reactor, _damon):
        seq = 0
        with anyio.fail_after(10):
            while len(starts) < 4:
                seq = (await reactor.bus.wait_newer("access.app", seq)).seq
        newest = reactor.bus.peek("access.app")
        assert newest is not None
        assert newest.value.period_s == pytest.approx(0.5)
        (mon,) = reactor.status(now=newest.stamp + 0.45)["monitors"]
        assert mon["stale"] is False and mon["last_sample_age_s"] == pytest.approx(0.45)
        (mon,) = reactor.status(now=newest.stamp + 1.6)["monitors"]
        assert mon["stale"] is True
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # each read starts on the grid instant 5 ticks after the one before (later under
    # load, never sooner): a gap under 3.5 ticks would mean a read skipped no tick
    assert min(gaps) > 0.35, gaps


@pytest.mark.anyio
async def test_without_snapshot_cpu_views_carry_no_period_and_age_out_in_three_ticks(
    tmp_path: Path,
) -> None:
    """The default: no budget, no period on the views, the stale bound of 3 ticks."""
    async with running(tmp_path) as (reactor, _damon):
        seq = 0
        with anyio.fail_after(10):
            for _ in range(4):
                sample = await reactor.bus.wait_newer("access.app", seq)
                seq = sample.seq
                assert sample.value.period_s is None
        newest = reactor.bus.peek("access.app")
        assert newest is not None
        (mon,) = reactor.status(now=newest.stamp + 0.45)["monitors"]
        assert mon["stale"] is True
