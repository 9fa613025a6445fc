"""PSI triggers on this machine's real PSI files, with a cgroup and processes the test
creates (and removes, by path and pid, in finally blocks).

This host runs without CAP_SYS_RESOURCE (host-capabilities.md §3), so the kernel arms
only triggers whose window is a multiple of 2 s (psi.c: unprivileged triggers are
evaluated on the 2 s averaging work, no RT poller thread), on /proc/pressure and on
cgroup v2 files alike; other windows are EINVAL. PSI for cgroups lives on the v2
hierarchy, here the hybrid mount /sys/fs/cgroup/unified.

Bounds, derived before running: three busy loops in one cgroup on a 2-CPU machine leave
at least one of them runnable and waiting at every instant, so the cgroup's CPU `some`
stall grows at wall-clock rate (1 s per s), and a 150 ms threshold in a 2 s window is
crossed 0.15 s after they start. The kernel checks unprivileged triggers on its 2 s
averaging work, so the event comes within 0.15 + 2 s plus the averaging work's own lag
(one period): inside 6 s. With only a sleeping process in the cgroup, its stall stays 0,
so no event may come in a quiet window of 5 s (two evaluations and more).

Needs root (creating a cgroup); CI runs as root, and without it the tests fail, not skip.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from reactor.kernelfs import RealKernelFS
from reactor.kernelfs.trigger import TriggerRefused
from reactor.signals.psi_trigger import PsiTrigger, PsiTriggerEvent, PsiTriggerWatcher

FS = RealKernelFS("/")
V2_ROOT = "/sys/fs/cgroup/unified"
QUIET_S = 5.0
FIRE_WITHIN_S = 6.0


@pytest.fixture
def anyio_backend() -> str:
    """asyncio: the trigger wait runs in a worker thread on real time."""
    return "asyncio"


@contextlib.contextmanager
def v2_cgroup() -> Iterator[str]:
    """A cgroup v2 child of our own, removed afterwards (its processes must be gone)."""
    path = Path(f"{V2_ROOT}/reactor-psi-trigger-{os.getpid()}")
    path.mkdir()
    try:
        yield str(path)
    finally:
        for _ in range(50):  # a killed process leaves the group a moment after wait()
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@contextlib.contextmanager
def children(code: str, n: int, cgroup: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` Python children of ours running ``code`` inside ``cgroup``, ended by pid."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            proc = subprocess.Popen([sys.executable, "-c", code])
            procs.append(proc)
            Path(f"{cgroup}/cgroup.procs").write_text(str(proc.pid))
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=30)


async def _events_within(got: list[PsiTriggerEvent], seconds: float) -> float | None:
    """Seconds until the first event, or None if none came within ``seconds``."""
    start = anyio.current_time()
    with anyio.move_on_after(seconds):
        while not got:
            await anyio.sleep(0.02)
        return anyio.current_time() - start
    return None


@pytest.mark.anyio
async def test_cgroup_cpu_trigger_fires_under_pressure_and_not_when_quiet() -> None:
    """A `some 150 ms / 2 s` trigger on our cgroup's cpu.pressure stays silent while the
    group only sleeps and fires within 6 s of three busy loops starting on 2 CPUs."""
    got: list[PsiTriggerEvent] = []
    with v2_cgroup() as cg:
        trigger = PsiTrigger("cg_cpu", "cpu", "some", 150_000, 2_000_000, path=f"{cg}/cpu.pressure")
        watcher = PsiTriggerWatcher(FS, trigger, lambda t, e, s: got.append(e))
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run)
            assert watcher.mode == "trigger", watcher.fallback_reason
            with children("import time; time.sleep(60)", 1, cg):
                quiet = await _events_within(got, QUIET_S)
            with children("while True: pass", 3, cg):
                fired_after = await _events_within(got, FIRE_WITHIN_S)
            tg.cancel_scope.cancel()
    print(
        f"cgroup cpu trigger: quiet window {QUIET_S} s -> {quiet}; "
        f"fired after {fired_after} s; {got[:1]}"
    )
    assert quiet is None
    assert fired_after is not None and fired_after <= FIRE_WITHIN_S
    assert got[0].mode == "trigger" and got[0].path.endswith("/cpu.pressure")


@pytest.mark.anyio
async def test_system_memory_trigger_refused_with_1s_window_falls_back_to_polling() -> None:
    """/proc/pressure/memory refuses a 1 s window here (EINVAL: no CAP_SYS_RESOURCE, so
    only multiples of 2 s); the watcher logs the reason and polls instead."""
    with pytest.raises(TriggerRefused) as info:
        FS.open_trigger("/proc/pressure/memory", "some 100000 1000000")
    assert info.value.errno == errno.EINVAL
    got: list[PsiTriggerEvent] = []
    trigger = PsiTrigger("mem", "memory", "some", 100_000, 1_000_000)
    watcher = PsiTriggerWatcher(FS, trigger, lambda t, e, s: got.append(e))
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run)
            tg.cancel_scope.cancel()
    fallback = [e for e in logs if e["event"] == "psi_trigger_fallback"]
    print(f"/proc/pressure/memory 1 s window: {info.value}; watcher mode {watcher.mode}")
    assert watcher.mode == "poll"
    assert fallback and "multiple of 2 s" in fallback[0]["reason"]
    assert fallback[0]["errno"] == errno.EINVAL


def test_system_memory_trigger_with_a_2s_window_is_armed_here() -> None:
    """A 2 s window is within the unprivileged rule, so /proc/pressure/memory arms it
    (host-capabilities.md §3 reports EINVAL: that was a window that is not a multiple of 2 s)."""
    handle = FS.open_trigger("/proc/pressure/memory", "some 150000 2000000")
    try:
        assert handle.fileno() >= 0
        assert handle.wait(0) in ("timeout", "fired")
    finally:
        handle.close()


@pytest.mark.anyio
async def test_wait_readable_cannot_wait_for_a_trigger() -> None:
    """The kernel polls a trigger fd readable at all times (POLLPRI marks a firing), so
    anyio.wait_readable returns at once on an armed, silent trigger: hence the thread."""
    with v2_cgroup() as cg:
        handle = FS.open_trigger(f"{cg}/cpu.pressure", "some 2000000 2000000")
        try:
            with anyio.fail_after(1):
                await anyio.wait_readable(handle.fileno())
            assert handle.wait(0) == "timeout"  # no POLLPRI: it did not fire
        finally:
            handle.close()
