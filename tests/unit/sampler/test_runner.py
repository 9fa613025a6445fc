"""The async sampler on the fake kernel: snapshots per aggregation, vanishing targets, cgroups."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
import structlog

from reactor.errors import UnsupportedKernel
from reactor.sampler.probes import ProbeInfo
from reactor.sampler.runner import NativeSampler, SamplerSettings
from reactor.sampler.snapshot import Snapshot
from reactor.sampler.targets import TargetSpec
from reactor.testing import FakeKernelFS

from .test_procfs_probes import SMAPS, fake_process

REFERENCED = ProbeInfo("referenced", True, False, 0, "reads and writes", False, "fake")
SOFT_DIRTY_OFF = ProbeInfo("soft-dirty", False, True, 4096, "writes", False, "bit 55 stayed 0")


@pytest.fixture
def anyio_backend() -> str:
    """Real time on asyncio: the sampler runs its probe work in worker threads."""
    return "asyncio"


SETTINGS = SamplerSettings(sample_interval_s=0.01, aggr_interval_s=0.05, update_interval_s=0.02)


async def wait_until(done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``done`` until it holds: the sampler runs on real time in a thread, and a
    loaded machine may take far longer than the intervals say (no timed assertion)."""
    with anyio.fail_after(timeout):
        while not done():
            await anyio.sleep(0.01)


async def run_until(sampler: NativeSampler, done: Callable[[], bool]) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(sampler.run)
        await wait_until(done)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_snapshots_per_aggregation_with_referenced() -> None:
    """Each aggregation yields one snapshot per process: mappings, counts, mean referenced bytes."""
    fs = FakeKernelFS()
    fake_process(fs, 4250, SMAPS)
    got: list[Snapshot] = []
    spec = TargetSpec(name="app", pids=(4250,))
    sampler = NativeSampler(
        fs, [spec], SETTINGS, probes=[SOFT_DIRTY_OFF, REFERENCED], sink=got.append
    )
    await run_until(sampler, lambda: len(got) >= 2)
    snap = got[-1]
    assert snap.target == "app:4250" and snap.probe == "referenced"
    assert snap.max_nr_accesses == 5
    assert snap.regions["nr_accesses"].tolist() == [5, 0]
    assert snap.regions["referenced_bytes"].tolist() == [256 * 1024, 0]
    assert snap.granularity_bytes == 2**20
    assert [r.nr_accesses for r in snap.region_list()] == [5, 0]
    assert sampler.latest["app:4250"] is snap
    # the per-mapping probe hands its last smaps reading on: the mappings and their Rss
    assert snap.mappings is not None
    assert list(zip(snap.mappings.start.tolist(), snap.mappings.end.tolist(), strict=True)) == [
        (int(r["start"]), int(r["end"])) for r in snap.regions
    ]
    assert int(snap.mappings.rss.sum()) > 0
    # what sampling cost, for `reactor status`: the thread CPU the work took (> 0)
    assert sampler.cpu_seconds() > 0


@pytest.mark.anyio
async def test_a_vanished_process_is_dropped_and_logged() -> None:
    """A process that exits is dropped with a target_vanished log line; sampling goes on."""
    fs = FakeKernelFS()
    fake_process(fs, 4251, SMAPS)
    fake_process(fs, 4252, SMAPS)
    spec = TargetSpec(name="app", pids=(4251, 4252))
    sampler = NativeSampler(fs, [spec], SETTINGS, probes=[REFERENCED])
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(sampler.run)
            await wait_until(lambda: set(sampler.latest) >= {"app:4251", "app:4252"})
            fs.remove("/proc/4251")
            await wait_until(lambda: "app:4251" not in sampler.monitors)
            tg.cancel_scope.cancel()
    events = [(e["event"], e.get("target")) for e in logs]
    assert ("target_vanished", "app:4251") in events
    assert set(sampler.latest) >= {"app:4252"}
    assert "app:4251" not in sampler.monitors


@pytest.mark.anyio
async def test_cgroup_members_are_followed() -> None:
    """Processes that join the cgroup are added at the next update interval."""
    fs = FakeKernelFS()
    fake_process(fs, 4260, SMAPS)
    fake_process(fs, 4261, SMAPS)
    fs.set_file("/sys/fs/cgroup/app/cgroup.procs", "4260\n")
    spec = TargetSpec(name="grp", cgroup="/sys/fs/cgroup/app")
    sampler = NativeSampler(fs, [spec], SETTINGS, probes=[REFERENCED])
    async with anyio.create_task_group() as tg:
        await tg.start(sampler.run)
        assert set(sampler.monitors) == {"grp:4260"}
        fs.set_file("/sys/fs/cgroup/app/cgroup.procs", "4260\n4261\n")
        await wait_until(lambda: set(sampler.monitors) == {"grp:4260", "grp:4261"})
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_unavailable_probe_is_refused_with_its_reason() -> None:
    """Asking for a probe the machine lacks fails with the detection's finding."""
    fs = FakeKernelFS()
    fake_process(fs, 4270, SMAPS)
    spec = TargetSpec(name="x", pids=(4270,), probe="soft-dirty")
    sampler = NativeSampler(fs, [spec], SETTINGS, probes=[SOFT_DIRTY_OFF, REFERENCED])
    with pytest.raises(UnsupportedKernel, match="bit 55 stayed 0"):
        await sampler.run()


def test_settings_are_validated() -> None:
    """A sampling interval longer than the aggregation interval is refused with values."""
    with pytest.raises(ValueError, match="sample_interval_s=2, aggr_interval_s=1"):
        SamplerSettings(sample_interval_s=2, aggr_interval_s=1)


@pytest.mark.anyio
async def test_cancel_ends_the_sampling_thread_at_once() -> None:
    """The sampling loop sleeps in a thread of its own: a cancel (a daemon's shutdown,
    a reload that drops the monitor) wakes it at once. With a 60 s interval, the
    thread's next grid point is 0-60 s away (30 s on average): a sleep the stop did
    not end would hold the cancel that long."""
    fs = FakeKernelFS()
    fake_process(fs, 4253, SMAPS)
    slow = SamplerSettings(sample_interval_s=60.0, aggr_interval_s=120.0, update_interval_s=60.0)
    sampler = NativeSampler(fs, [TargetSpec(name="app", pids=(4253,))], slow, probes=[REFERENCED])
    async with anyio.create_task_group() as tg:
        await tg.start(sampler.run)
        await anyio.sleep(0.2)  # the thread is asleep until its next grid point
        t0 = anyio.current_time()
        tg.cancel_scope.cancel()
    assert anyio.current_time() - t0 < 5.0
    assert sampler.monitors == {}  # closed on the way out
