"""PSI triggers on the fake kernel: arming rules, the watcher, the polling fallback.

The trigger path waits in a worker thread, so these run on anyio's asyncio backend in
real time (trio's MockClock would autojump while the thread waits); every wait is short.
"""

from __future__ import annotations

import errno
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from reactor.kernelfs.trigger import TriggerGone, TriggerRefused, parse_trigger_spec
from reactor.signals.psi_trigger import (
    PsiTrigger,
    PsiTriggerEvent,
    PsiTriggerWatcher,
    WindowStall,
    run_psi_triggers,
)
from reactor.testing.fakefs import FakeKernelFS

MEM = "/proc/pressure/memory"
CG = "/sys/fs/cgroup/app/memory.pressure"


def psi_text(some_us: int, full_us: int = 0) -> str:
    return (
        f"some avg10=0.00 avg60=0.00 avg300=0.00 total={some_us}\n"
        f"full avg10=0.00 avg60=0.00 avg300=0.00 total={full_us}\n"
    )


def fake(**kwargs: Any) -> FakeKernelFS:
    return FakeKernelFS(
        {
            "proc/pressure": {"memory": psi_text(0)},
            "sys/fs/cgroup/app": {"memory.pressure": psi_text(0)},
        },
        **kwargs,
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- specs and arming


def test_spec_parses_and_rejects_threshold_above_window() -> None:
    """A spec is kind, threshold and window in µs; threshold > window is a ValueError."""
    assert parse_trigger_spec(" some 150000 2000000 ").text() == "some 150000 2000000"
    with pytest.raises(ValueError, match=r"^expected 0 < threshold_us <= window_us"):
        parse_trigger_spec("full 3000000 2000000")
    with pytest.raises(ValueError, match=r"^expected 'some\|full"):
        parse_trigger_spec("some 1 s")


def test_unprivileged_fake_refuses_a_window_that_is_not_a_multiple_of_2s() -> None:
    """Without CAP_SYS_RESOURCE (the default) a 1 s window is EINVAL with the 2 s rule named."""
    with pytest.raises(TriggerRefused) as info:
        fake().open_trigger(MEM, "some 100000 1000000")
    assert info.value.errno == errno.EINVAL
    assert "multiple of 2 s" in info.value.reason
    assert fake(privileged_triggers=True).open_trigger(MEM, "some 100000 1000000").spec == (
        "some 100000 1000000"
    )


def test_refusals_for_missing_files_and_injected_errnos() -> None:
    """A missing PSI file is ENOENT; an injected trigger fault refuses with its errno."""
    fs = fake()
    with pytest.raises(TriggerRefused) as info:
        fs.open_trigger("/proc/pressure/irq", "some 100000 2000000")
    assert info.value.errno == errno.ENOENT
    fs.inject_fault(MEM, errno.EPERM, ops=("trigger",))
    with pytest.raises(TriggerRefused, match="CAP_SYS_RESOURCE"):
        fs.open_trigger(MEM, "some 100000 2000000")
    assert fs.read_text(MEM)  # reads are untouched by a trigger fault


def test_fake_trigger_fires_once_per_window_and_reports_vanishing() -> None:
    """A firing is kept until seen and reported once; a removed file raises TriggerGone."""
    fs = fake()
    trig = fs.open_trigger(CG, "some 100000 2000000")
    assert trig.wait(0.01) == "timeout"
    assert fs.fire_trigger(CG) == 1 and fs.fire_trigger(CG) == 1
    assert trig.wait(0.01) == "fired"
    assert trig.wait(0.01) == "timeout"
    fs.remove("/sys/fs/cgroup/app")
    with pytest.raises(TriggerGone):
        trig.wait(1)


# --------------------------------------------------------------------------- the pure rule


def test_window_stall_fires_at_the_threshold_and_once_per_window() -> None:
    """Stall growth over the last window >= threshold fires; then not again within a window."""
    rule = WindowStall(threshold_us=150_000, window_s=2.0)
    assert rule.add(0.0, 1_000) is None
    assert rule.add(0.5, 100_000) is None
    assert rule.add(1.0, 151_000) == 150_000
    assert rule.add(1.5, 400_000) is None  # rate limit: 0.5 s after the last event
    assert rule.add(3.0, 600_000) == 600_000 - 151_000  # base: newest sample at or before 1.0
    assert rule.add(4.5, 600_000) is None  # no new stall in the last window


def test_window_stall_uses_the_window_not_the_whole_history() -> None:
    """Old stall outside the window does not count; a counter going backwards restarts."""
    rule = WindowStall(threshold_us=100_000, window_s=2.0)
    rule.add(0.0, 0)
    rule.add(1.0, 90_000)
    assert rule.add(10.0, 150_000) is None  # base is 1.0 -> only 60 ms in the window
    assert rule.add(10.5, 10) is None  # restarted
    assert rule.add(11.0, 100_010) == 100_000


# --------------------------------------------------------------------------- the watcher


@pytest.mark.anyio
async def test_watcher_publishes_each_kernel_firing_and_disarms_on_cancel() -> None:
    """An armed trigger's firing reaches psi.trigger.<name> within milliseconds; cancelling
    the watcher closes (disarms) the trigger."""
    fs = fake()
    got: list[tuple[str, PsiTriggerEvent, float]] = []
    watcher = PsiTriggerWatcher(
        fs, PsiTrigger("mem", "memory", "some", 150_000, 2_000_000), lambda *a: got.append(a)
    )
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        assert watcher.mode == "trigger" and watcher.fallback_reason is None
        fs.set_file(MEM, psi_text(7_000))
        fs.fire_trigger(MEM)
        with anyio.fail_after(2):
            while not got:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    (trig,) = fs.triggers(MEM)
    assert trig.closed
    topic, event, _ = got[0]
    assert topic == "psi.trigger.mem"
    assert (event.mode, event.count, event.total_us, event.window_stall_us) == (
        "trigger",
        1,
        7_000,
        None,
    )


@pytest.mark.anyio
async def test_watcher_falls_back_to_polling_with_the_kernels_reason() -> None:
    """A refused trigger logs psi_trigger_fallback with the reason and still publishes when
    the file's stall grows past the threshold within the window."""
    fs = fake()
    got: list[PsiTriggerEvent] = []
    trig = PsiTrigger("mem", "memory", "some", 100_000, 1_000_000, poll_period_s=0.05)
    watcher = PsiTriggerWatcher(fs, trig, lambda t, e, s: got.append(e))
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run)
            await anyio.sleep(0.12)
            fs.set_file(MEM, psi_text(120_000))
            with anyio.fail_after(2):
                while not got:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert watcher.mode == "poll" and watcher.fallback_errno == errno.EINVAL
    fallback = [entry for entry in logs if entry["event"] == "psi_trigger_fallback"]
    assert fallback and "multiple of 2 s" in fallback[0]["reason"]
    assert (got[0].mode, got[0].window_stall_us) == ("poll", 120_000)


@pytest.mark.anyio
async def test_watcher_rearms_after_the_cgroup_comes_back() -> None:
    """A removed cgroup is logged as target_vanished; the trigger is armed again once the
    file exists again, and its firings are published."""
    fs = fake()
    got: list[PsiTriggerEvent] = []
    trig = PsiTrigger("cg", "memory", "some", 100_000, 2_000_000, path=CG)
    watcher = PsiTriggerWatcher(fs, trig, lambda t, e, s: got.append(e))
    watcher.trigger = trig
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run)
            fs.remove("/sys/fs/cgroup/app")
            await anyio.sleep(0.05)
            fs.set_file(CG, psi_text(0))
            with anyio.fail_after(4):  # re-arm is tried once per window (2 s)
                while len(fs.triggers(CG)) < 2:
                    await anyio.sleep(0.05)
                fs.fire_trigger(CG)
                while not got:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert any(entry["event"] == "target_vanished" for entry in logs)
    assert got[0].mode == "trigger"


@pytest.mark.anyio
async def test_run_psi_triggers_reports_each_watchers_mode() -> None:
    """The runtime's entry point starts once every trigger is armed or polling."""
    fs = fake()
    triggers = [
        PsiTrigger("cg", "memory", "some", 100_000, 2_000_000, path=CG),
        PsiTrigger("mem", "memory", "full", 100_000, 1_000_000),
    ]
    async with anyio.create_task_group() as tg:
        watchers = await tg.start(run_psi_triggers, fs, triggers, lambda *a: None)
        assert [w.mode for w in watchers] == ["trigger", "poll"]
        tg.cancel_scope.cancel()
    with pytest.raises(ValueError, match="distinct"):
        await run_psi_triggers(fs, [triggers[0], triggers[0]], lambda *a: None)


def test_trigger_config_is_checked() -> None:
    """Names, resources and thresholds are checked when a trigger is built."""
    with pytest.raises(ValueError, match="threshold_us"):
        PsiTrigger("x", "memory", "some", 0, 2_000_000)
    with pytest.raises(ValueError, match="PSI resource"):
        PsiTrigger("x", "disk", "some", 1, 2_000_000)
    t = PsiTrigger("x", "io", "full", 1, 2_000_000)
    assert (t.file, t.spec, t.topic, t.fallback_period_s) == (
        "/proc/pressure/io",
        "full 1 2000000",
        "psi.trigger.x",
        0.5,
    )
