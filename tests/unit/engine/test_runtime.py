"""The runtime on a virtual clock and the fake kernel: start, ticks, failures, reload, stop."""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from reactor.config import Config, load_config_text
from reactor.engine.runtime import Reactor
from reactor.errors import SourceFailed
from reactor.testing.fakefs import FakeKernelFS
from tests.captures import host_node

CAPTURED = Path(__file__).resolve().parents[2] / "fixtures" / "captured" / "host-6.18"


def psi_text(some_total_us: int, full_total_us: int = 0) -> str:
    """A /proc/pressure file in the kernel's format with the given cumulative totals."""
    return (
        f"some avg10=0.00 avg60=0.00 avg300=0.00 total={some_total_us}\n"
        f"full avg10=0.00 avg60=0.00 avg300=0.00 total={full_total_us}\n"
    )


def fake_node() -> FakeKernelFS:
    """A node whose kernel files start as verbatim captures from this machine."""
    return host_node()


def config(text: str = "") -> Config:
    base = "reactor:\n  tick: 1s\n  startup_timeout: 3s\n"
    return load_config_text(base + text, "test.yaml")


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


@pytest.mark.anyio
async def test_sources_start_and_every_tick_logs_fresh_samples(logs: list[dict[str, Any]]) -> None:
    """After start every topic has a value and each tick logs one node_sample with all of them."""
    fs = fake_node()
    async with Reactor(config(), fs=fs) as reactor:
        assert {r.state for r in reactor.runners.values()} == {"ready"}
        # ready means a value is on the bus: rate sources (PSI, vmstat) took their
        # baseline at 0 s and their first sample at 1 s, when the daemon started
        for topic in ("psi.memory", "psi.io", "psi.cpu", "vmstat", "meminfo"):
            assert reactor.bus.latest(topic) is not None, topic
        assert anyio.current_time() - reactor.started_at == 1
        await anyio.sleep(5)
    samples = events(logs, "node_sample")
    assert len(samples) == 5  # reports at 1.5, 2.5, 3.5, 4.5 and 5.5 s
    last = samples[-1]
    assert last["stale"] is None
    for topic in ("psi.memory", "psi.io", "psi.cpu", "vmstat", "meminfo"):
        assert topic in last, topic


@pytest.mark.anyio
async def test_log_ticks_changes_keeps_node_sample_at_debug_between_heartbeats(
    logs: list[dict[str, Any]],
) -> None:
    """``reactor.log_ticks: changes``: node_sample at info on the first report and every
    TICK_LOG_HEARTBEAT reports while nothing goes stale; every other report at debug."""
    from reactor.log import TICK_LOG_HEARTBEAT

    fs = fake_node()
    cfg = load_config_text(
        "reactor:\n  tick: 1s\n  startup_timeout: 3s\n  log_ticks: changes\n", "test.yaml"
    )
    async with Reactor(cfg, fs=fs):
        await anyio.sleep(2 * TICK_LOG_HEARTBEAT + 5)
    samples = events(logs, "node_sample")
    assert len(samples) == 2 * TICK_LOG_HEARTBEAT + 5  # every report is still logged
    info = [i for i, e in enumerate(samples) if e["log_level"] == "info"]
    assert info == [0, TICK_LOG_HEARTBEAT, 2 * TICK_LOG_HEARTBEAT]


@pytest.mark.anyio
async def test_psi_share_on_the_bus_is_the_stall_rate_of_the_total_counter() -> None:
    """Stall time growing 0.25 s per 1 s of wall time shows as a 25 % some share."""
    fs = fake_node()
    fs.set_file("/proc/pressure/memory", psi_text(1_000_000))
    cfg = config("signals:\n  psi:\n    resources: [memory]\n    period: 1s\n")
    async with Reactor(cfg, fs=fs) as reactor:
        total = 1_000_000
        for _ in range(3):
            total += 250_000
            fs.set_file("/proc/pressure/memory", psi_text(total))
            sample = await reactor.bus.wait_newer(
                "psi.memory", reactor.bus.stats("psi.memory").published
            )
        assert sample.value.some_share == pytest.approx(0.25, rel=1e-6)


@pytest.mark.anyio
async def test_a_failing_source_is_marked_failed_and_the_daemon_runs_on(
    logs: list[dict[str, Any]],
) -> None:
    """An unreadable vmstat is marked failed with its errno; PSI and meminfo keep flowing."""
    fs = fake_node()
    fs.inject_fault("/proc/vmstat", errno.EACCES, times=None)
    async with Reactor(config(), fs=fs) as reactor:
        assert reactor.runners["vmstat"].state == "failed"
        assert reactor.runners["psi.memory"].state == "ready"
        await anyio.sleep(4)
        assert reactor.bus.stats("vmstat").failures >= 4
        assert reactor.bus.latest("meminfo") is not None
    failed = events(logs, "source_failed")
    assert [e["topic"] for e in failed] == ["vmstat"]
    assert "EACCES" in failed[0]["reason"]
    assert all(e["stale"] == ["vmstat"] for e in events(logs, "node_sample"))


@pytest.mark.anyio
async def test_a_required_source_that_cannot_read_fails_startup() -> None:
    """A required source with no good sample within startup_timeout stops start-up, with why."""
    fs = fake_node()
    fs.inject_fault("/proc/meminfo", errno.ENOENT, times=None)
    cfg = config("signals:\n  meminfo:\n    required: true\n")
    with pytest.raises(BaseException) as info:  # an exception group
        async with Reactor(cfg, fs=fs):
            pass
    leaves = [info.value]
    while isinstance(leaves[0], BaseExceptionGroup):
        leaves = list(leaves[0].exceptions)
    assert isinstance(leaves[0], SourceFailed)
    assert re.search(r"meminfo.*within 3 s.*ENOENT.*required", str(leaves[0]))


@pytest.mark.anyio
async def test_a_source_that_recovers_is_fresh_again(logs: list[dict[str, Any]]) -> None:
    """Reads that fail for a while make the topic stale; when they work again it is fresh."""
    fs = fake_node()
    cfg = config("signals:\n  meminfo:\n    period: 1s\n    stale_after: 2s\n")
    async with Reactor(cfg, fs=fs) as reactor:
        fault = fs.inject_fault("/proc/meminfo", errno.EIO, times=None)
        await anyio.sleep(4)
        assert reactor.bus.fresh("meminfo", anyio.current_time(), 2.0) is None
        fs.clear_faults()
        del fault
        # Tasks due at the same instant run in any order (trio shuffles them on purpose):
        # 2.5 s leaves a report tick (t=6) after the first good read (t=5 at the latest).
        await anyio.sleep(2.5)
        assert reactor.bus.fresh("meminfo", anyio.current_time(), 2.0) is not None
    stale = [e["stale"] for e in events(logs, "node_sample")]
    assert ["meminfo"] in stale
    assert stale[-1] is None


@pytest.mark.anyio
async def test_reload_changes_a_period_without_restarting_other_tasks() -> None:
    """A reload that changes vmstat's period keeps every task (no restart) and vmstat speeds up."""
    fs = fake_node()
    async with Reactor(config(), fs=fs) as reactor:
        # Measure between instants where no tick is due (x.5 s, x.6 s): tasks due at the
        # same instant run in any order, so a boundary on a tick would count it or not.
        await anyio.sleep(3.5)
        before = {t: (r.starts, r.reads) for t, r in reactor.runners.items()}
        result = await reactor.reload(config("signals:\n  vmstat:\n    period: 250ms\n"))
        assert result.applied and not result.started and not result.stopped
        await anyio.sleep(4.1)
        after = {t: (r.starts, r.reads) for t, r in reactor.runners.items()}
    assert all(after[t][0] == 1 for t in after)  # no task was restarted
    vmstat_reads = after["vmstat"][1] - before["vmstat"][1]
    meminfo_reads = after["meminfo"][1] - before["meminfo"][1]
    # The reload at t=3.5 s moves vmstat's pending tick (due at 4 s) to max(3 + 0.25, 3.5):
    # reads at 3.5, 3.75, ..., 7.5 are 17 in the window; meminfo keeps 1 s: 4, 5, 6, 7.
    assert vmstat_reads == 17
    assert meminfo_reads == 4


@pytest.mark.anyio
async def test_reload_adds_and_removes_sources() -> None:
    """Disabling vmstat stops its task; enabling it again starts a new one."""
    fs = fake_node()
    async with Reactor(config(), fs=fs) as reactor:
        off = await reactor.reload(config("signals:\n  vmstat:\n    enabled: false\n"))
        assert off.stopped == ("vmstat",)
        assert "vmstat" not in reactor.runners
        on = await reactor.reload(config())
        assert on.started == ("vmstat",)
        await anyio.sleep(2)
        assert reactor.runners["vmstat"].reads >= 1


@pytest.mark.anyio
async def test_broken_config_on_reload_keeps_the_old_one(
    tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    """A reload from a broken file is rejected with its errors and the old config stays."""
    fs = fake_node()
    bad = tmp_path / "bad.yaml"
    bad.write_text("reactor:\n  tick: 1\n")
    cfg = config()
    async with Reactor(cfg, fs=fs) as reactor:
        result = await reactor.reload_from(str(bad))
        assert not result.applied
        assert reactor.config is cfg
        await anyio.sleep(2)
        assert {r.starts for r in reactor.runners.values()} == {1}
    rejected = events(logs, "reload_rejected")
    assert len(rejected) == 1
    assert re.search(r"bad\.yaml:2:9: reactor\.tick", rejected[0]["errors"][0])


@pytest.mark.anyio
async def test_shutdown_runs_restores_even_when_cancelled() -> None:
    """Registered restore steps run, newest first, when the daemon is cancelled."""
    fs = fake_node()
    order: list[str] = []

    async def restore(name: str) -> None:
        await anyio.sleep(0.1)  # a restore that waits must still complete under cancel
        order.append(name)

    async with Reactor(config(), fs=fs) as reactor:
        reactor.on_shutdown(lambda: restore("first"))
        reactor.on_shutdown(lambda: restore("second"))
        await anyio.sleep(1)
    assert order == ["second", "first"]


@pytest.mark.anyio
async def test_a_restore_cut_short_by_the_shutdown_timeout_is_counted_as_left(
    logs: list[dict[str, Any]],
) -> None:
    """The restore step still running when shutdown_timeout ends counts in ``left``
    with the ones that never ran (it was popped before it started, and read as 0)."""
    fs = fake_node()
    ran: list[str] = []

    async def hang() -> None:
        ran.append("hang")
        await anyio.sleep(30)

    async def never() -> None:
        ran.append("never")

    async with Reactor(config("  shutdown_timeout: 200ms\n"), fs=fs) as reactor:
        reactor.on_shutdown(never)
        reactor.on_shutdown(hang)
    assert ran == ["hang"]
    (timeout,) = events(logs, "restore_timeout")
    assert timeout["left"] == 2


@pytest.mark.anyio
async def test_backend_choice_is_explained_for_a_foreign_kdamond(
    logs: list[dict[str, Any]],
) -> None:
    """With someone else's kdamond running, auto picks native and names that kdamond's pid."""
    fs = fake_node()
    fs.add_tree(
        "/sys/kernel/mm/damon/admin/kdamonds",
        {
            "nr_kdamonds": "1\n",
            "0": {"state": "on\n", "pid": "77\n", "contexts": {"0": {"operations": "paddr\n"}}},
        },
    )
    async with Reactor(config(), fs=fs):
        pass
    (backend,) = events(logs, "backend")
    assert backend["backend"] == "native"
    assert "kdamond 0 (state on, pid 77, ops paddr)" in backend["reason"]
    assert fs.writes == ()


def v1_cgroup_tree() -> dict[str, str]:
    """A v1 memory cgroup directory from verbatim captures of one this machine ran."""
    return {
        name: (CAPTURED / f"cgroup_memory_limited_{name}").read_text()
        for name in (
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
            "memory.stat",
            "memory.failcnt",
        )
    }


@pytest.mark.anyio
async def test_a_vanished_cgroup_is_logged_goes_stale_and_is_followed_back(
    logs: list[dict[str, Any]],
) -> None:
    """A cgroup removed while sampled is an info event and a stale topic, not a crash."""
    fs = fake_node()
    app = "/sys/fs/cgroup/memory/app"
    fs.add_tree(app, v1_cgroup_tree())
    cfg = config(f"signals:\n  cgroups:\n    - {{name: app, path: {app}}}\n")
    async with Reactor(cfg, fs=fs) as reactor:
        await anyio.sleep(2.2)
        assert reactor.bus.latest("cgroup.app") is not None
        fs.remove(app)
        await anyio.sleep(4)
        assert reactor.runners["cgroup.app"].state == "vanished"
        assert reactor.runners["psi.memory"].state == "ready"
        fs.add_tree(app, v1_cgroup_tree())
        await anyio.sleep(3)
        assert reactor.runners["cgroup.app"].state == "ready"
    assert [e["target"] for e in events(logs, "target_vanished")] == [app]
    assert len(events(logs, "target_returned")) == 1
    assert not events(logs, "sample_failed")
    assert any(e["stale"] == ["cgroup.app"] for e in events(logs, "node_sample"))


@pytest.mark.anyio
async def test_tiers_and_fragmentation_sources_publish_on_their_own_period() -> None:
    """Tiers and fragmentation (5 s by default) publish beside the 1 s sources."""
    fs = fake_node()
    async with Reactor(config(), fs=fs) as reactor:
        # started at 1 s (the rate sources' first sample); run to 11.5 s, off the 1 s
        # grid, so no read races the end of the window
        await anyio.sleep(10.5)
        frag = reactor.bus.stats("fragmentation")
        meminfo = reactor.bus.stats("meminfo")
    assert frag.published == 3  # t = 0, 5, 10
    assert meminfo.published == 12  # t = 0, 1, ..., 11


@pytest.mark.anyio
async def test_a_kdamond_in_reactors_ownership_record_is_not_foreign(
    tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    """A kdamond the record lists at its current pid (same boot) does not force native."""
    from reactor.damon.ownership import OwnershipRecord, OwnershipStore

    fs = fake_node()
    fs.set_file("/proc/sys/kernel/random/boot_id", "b0075e1d-0000-4000-8000-000000000001\n")
    fs.add_tree(
        "/sys/kernel/mm/damon/admin/kdamonds",
        {
            "nr_kdamonds": "1\n",
            "0": {"state": "on\n", "pid": "4321\n", "contexts": {"0": {"operations": "vaddr\n"}}},
        },
    )
    record = OwnershipRecord("b0075e1d-0000-4000-8000-000000000001").with_pid(0, 4321)
    OwnershipStore(tmp_path).save(record)
    cfg = load_config_text(
        f"reactor:\n  tick: 1s\n  startup_timeout: 3s\n  run_dir: {tmp_path}\n", "t.yaml"
    )
    async with Reactor(cfg, fs=fs):
        pass
    (backend,) = events(logs, "backend")
    assert backend["backend"] == "damon"
    # a different pid at index 0 (the kdamond was restarted by someone else) is foreign
    fs.set_file("/sys/kernel/mm/damon/admin/kdamonds/0/pid", "999\n")
    logs.clear()
    async with Reactor(cfg, fs=fs):
        pass
    (backend,) = events(logs, "backend")
    assert backend["backend"] == "native"
    assert "pid 999" in backend["reason"]
    assert fs.writes == ()


@pytest.mark.anyio
async def test_monitors_that_never_start_fail_start_up_with_a_named_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Monitors that never report started (a kernel file that blocks) end start-up with
    a StartupTimeout naming them and reactor.startup_timeout (a ReactorError: `reactor
    serve` logs `failed` and exits 1), not a bare TimeoutError and its traceback."""
    from reactor.engine.monitors import NativeMonitors
    from reactor.errors import StartupTimeout

    async def hang(self: Any, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        await anyio.sleep_forever()

    monkeypatch.setattr(NativeMonitors, "run", hang)
    cfg = config("monitors:\n  - name: app\n    targets: {pids: [4242]}\n")
    with pytest.raises(BaseException) as info:  # an exception group
        async with Reactor(cfg, fs=fake_node()):
            pass
    leaves = [info.value]
    while isinstance(leaves[0], BaseExceptionGroup):
        leaves = list(leaves[0].exceptions)
    assert isinstance(leaves[0], StartupTimeout), leaves
    assert "the native monitors did not start within 13 s (reactor.startup_timeout 3 s" in str(
        leaves[0]
    )


@pytest.mark.anyio
async def test_a_restore_that_raises_a_bug_does_not_skip_the_others(
    logs: list[dict[str, Any]],
) -> None:
    """A restore step failing with an unexpected error (a bug, not a kernel error) is
    logged with its type and traceback, and the older steps still run."""
    fs = fake_node()
    ran: list[str] = []

    async def first() -> None:
        ran.append("first")

    async def broken() -> None:
        ran.append("broken")
        raise RuntimeError("restore step bug")

    async with Reactor(config(), fs=fs) as reactor:
        reactor.on_shutdown(first)
        reactor.on_shutdown(broken)
        await anyio.sleep(1)
    assert ran == ["broken", "first"]
    (failed,) = events(logs, "restore_failed")
    assert failed["error"] == "RuntimeError: restore step bug"
    assert isinstance(failed["exc_info"], RuntimeError), failed  # rendered as a traceback
