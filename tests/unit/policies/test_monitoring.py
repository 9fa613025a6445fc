"""Monitoring self-tuning: access share and headroom, native settings online, DAMON commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import pytest
import structlog

from controllers.filtered import sampled_share
from reactor.config import load_config_text
from reactor.damon import paths
from reactor.engine.bus import Bus
from reactor.engine.monitors import AccessView
from reactor.engine.runtime import Reactor
from reactor.policies import build_policy
from reactor.policies.base import PolicyContext
from reactor.policies.monitoring import (
    DamonMonitoring,
    NativeMonitoring,
    interval_bounds,
    kdamond_cpu_seconds,
    observed_access_share,
    region_headroom,
    sampled_access_share,
)
from reactor.sampler.probes import ProbeCost
from reactor.sampler.runner import MonitorStats, SamplerSettings
from reactor.sampler.snapshot import Region, Snapshot, regions_array
from reactor.testing import FakeKernelFS
from tests.unit.policies.test_damon_reclaim import drive, fake_machine

MIB = 1 << 20
AT = 0x7E0000000000


@pytest.fixture
def anyio_backend() -> str:
    """asyncio: the DAMON driver writes from worker threads (real time)."""
    return "asyncio"


def view(nr_hot: int, now: float, sample_s: float = 0.1) -> AccessView:
    """1 MiB accessed in ``nr_hot`` of 20 samples, 3 MiB never."""
    regions = regions_array([Region(AT, AT + MIB, nr_hot, 1), Region(AT + MIB, AT + 4 * MIB, 0, 5)])
    snap = Snapshot("app.pids:1", regions, sample_s, sample_s * 20, "page-idle", 4096, now, 20)
    return AccessView("app", "native", MappingProxyType({snap.target: snap}))


def test_access_share_is_size_weighted() -> None:
    """Share = sum(size x nr_accesses) / sum(size x max_nr_accesses)."""
    assert observed_access_share(view(20, 0.0)) == pytest.approx(0.25)
    assert observed_access_share(view(10, 0.0)) == pytest.approx(0.125)
    assert region_headroom(view(0, 0.0), 10) == pytest.approx(0.8)


def test_sampled_share_carries_its_checks_as_the_controllers_count_them() -> None:
    """The policy's vectorized reading equals controllers.filtered.sampled_share over the
    regions' (size, nr_accesses, max_nr_accesses): 1 MiB at 10/20 and 3 MiB at 0/20 is a
    share of 0.125 resting on 20 x 16 / 10 = 32 checks."""
    got = sampled_access_share(view(10, 0.0))
    want = sampled_share([(MIB, 10, 20), (3 * MIB, 0, 20)])
    assert got is not None and want is not None
    assert got.share == pytest.approx(want.share) == pytest.approx(0.125)
    assert got.checks == pytest.approx(want.checks) == pytest.approx(32.0)


def test_kdamond_cpu_seconds_reads_utime_and_stime() -> None:
    """utime + stime (fields 14 and 15) in clock ticks become seconds."""
    stat = "77 (kdamond.0) S 2 0 0 0 -1 2129984 0 0 0 0 150 50 0 0 20 0 1 0 5 0 0\n"
    assert kdamond_cpu_seconds(stat) == pytest.approx(200 / 100)


POLICY = """
reactor: {backend: native, tick: 1s}
monitors:
  - name: app
    targets: {pids: [4242]}
    sample: 100ms
    aggregation: 2s
policies:
  - name: self
    kind: monitoring
    monitor: app
    access_share: 4%
    cpu_budget: 1%
  - name: cold
    kind: reclaim
    monitor: app
    min_age: 8s
    goals: [{metric: memory_psi_some, target: 0.5%}]
    quota: {max: 64 MiB}
"""


def test_interval_bounds_fit_one_aggregation_in_the_smallest_min_age() -> None:
    """Without intervals_goal: 10x either way, aggregation at most the reclaim's min_age."""
    config = load_config_text(POLICY, "t.yaml")
    low, high, start = interval_bounds(config.monitors[0], "native", list(config.policies))
    assert (low, start) == (pytest.approx(0.01), 0.1)
    assert high == pytest.approx(8.0 / 20)


class FakeSession:
    def __init__(self, name: str, per_page: bool) -> None:
        self.name, self.per_page = name, per_page


class FakeTarget:
    def __init__(self, session: FakeSession) -> None:
        self.session = session


class FakeSampler:
    """What the policy uses of a NativeSampler: settings, cost stats and its targets'
    probe sessions (a per-page probe by default)."""

    def __init__(self, probe: str = "page-idle", per_page: bool = True) -> None:
        self.settings = SamplerSettings(sample_interval_s=0.1, aggr_interval_s=2.0)
        self.stats = {"app.pids:4242": MonitorStats(ProbeCost())}
        self.monitors = {"app.pids:4242": FakeTarget(FakeSession(probe, per_page))}
        self.staged: list[SamplerSettings] = []

    def update_settings(self, settings: SamplerSettings) -> None:
        self.staged.append(settings)
        self.settings = settings


class FakeNative:
    def __init__(self, sampler: FakeSampler) -> None:
        self.samplers = {"app": sampler}


@pytest.mark.anyio
async def test_native_intervals_grow_until_the_access_share_is_met(
    fake_kernel: FakeKernelFS,
) -> None:
    """A share below target lengthens the sampling interval (aggregation in step, 20
    samples each); CPU over budget lowers the region bound; both go to the sampler."""
    config = load_config_text(POLICY, "t.yaml")
    bus = Bus()
    sampler = FakeSampler()
    ctx = PolicyContext(config, bus, fake_kernel, "native", native=FakeNative(sampler))  # type: ignore[arg-type]
    policy = build_policy(config.policies[0], ctx)
    assert isinstance(policy, NativeMonitoring)
    now = 100.0
    for _ in range(8):
        s = sampler.settings
        bus.publish("access.app", view(1, now, s.sample_interval_s), now)  # share 1/80
        sampler.stats["app.pids:4242"].probe.kernel_s += 0.05  # 5 % of a CPU
        await policy.tick(now + 0.5, 1.0)
        now += max(1.0, s.aggr_interval_s + 0.1)
    assert sampler.staged, "settings applied online"
    last = sampler.settings
    assert last.sample_interval_s > 0.1 and last.samples_per_aggr == 20
    assert last.max_nr_regions < 1000, "CPU above the 1 % budget: fewer regions"


@pytest.mark.anyio
async def test_a_per_mapping_probe_keeps_its_region_count(fake_kernel: FakeKernelFS) -> None:
    """With ``referenced`` (one region per mapping) the CPU over budget cannot be cut by
    regions: max_nr_regions stays at the configured 1000, a policy_note says why, and the
    intervals are still tuned (they set the sampling CPU)."""
    config = load_config_text(POLICY, "t.yaml")
    bus = Bus()
    sampler = FakeSampler("referenced", per_page=False)
    ctx = PolicyContext(config, bus, fake_kernel, "native", native=FakeNative(sampler))  # type: ignore[arg-type]
    policy = build_policy(config.policies[0], ctx)
    now = 100.0
    with structlog.testing.capture_logs() as logs:
        for _ in range(8):
            s = sampler.settings
            bus.publish("access.app", view(1, now, s.sample_interval_s), now)
            sampler.stats["app.pids:4242"].probe.kernel_s += 0.05  # 5 % of a CPU
            await policy.tick(now + 0.5, 1.0)
            now += max(1.0, s.aggr_interval_s + 0.1)
    assert sampler.staged and sampler.settings.sample_interval_s > 0.1
    assert all(st.max_nr_regions == 1000 for st in sampler.staged)
    notes = [e for e in logs if e["event"] == "policy_note"]
    assert len(notes) == 1 and "referenced probe counts accesses per mapping" in notes[0]["note"]
    ticks = [e for e in logs if e["event"] == "controller_tick"]
    assert all(t["controller"]["regions.held"] == "fixed_by_probe" for t in ticks)


DAMON_POLICY = """
policies:
  - name: self
    kind: monitoring
    monitor: app
    access_share: 50%
    cpu_budget: 1%
"""


def damon_config(run_dir: Path) -> Any:
    """The reclaim test's DAMON machine with a monitoring policy."""
    return load_config_text(
        "reactor:\n  backend: damon\n  tick: 200ms\n  startup_timeout: 5s\n"
        f"  run_dir: {run_dir}\n"
        "signals:\n  psi: {enabled: false}\n  vmstat: {enabled: false}\n"
        "  meminfo: {enabled: false}\n  tiers: {enabled: false}\n"
        "  fragmentation: {enabled: false}\n"
        "monitors:\n  - name: app\n    targets: {pids: [4242]}\n"
        "    sample: 10ms\n    aggregation: 100ms\n" + DAMON_POLICY,
        "t.yaml",
    )


@asynccontextmanager
async def damon_daemon(
    tmp_path: Path, *, utime: int, stime: int
) -> AsyncIterator[tuple[Reactor, Any, Any]]:
    """The monitoring policy's daemon on the fake DAMON (its simulated kernel advancing
    with real time); the kdamond's /proc/PID/stat says ``utime`` + ``stime`` ticks."""
    fs, damon = fake_machine()
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, damon)
        async with Reactor(damon_config(tmp_path), fs=fs) as reactor:
            pid = damon.kdamond_pid(0)
            assert pid is not None
            stat = f"{pid} (kdamond.0) S 2 0 0 0 -1 0 0 0 0 0 {utime} {stime} 0\n"
            fs.set_file(f"/proc/{pid}/stat", stat)
            yield reactor, fs, damon
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_damon_monitoring_commits_intervals_online(tmp_path: Path) -> None:
    """A 50 % access-share target (the fake's hot set is 4 of 36 MiB) lengthens the
    kdamond's sampling interval by online commits (same pid), aggregation in step;
    ``reactor status`` shows the monitor running on DAMON with the intervals it runs
    with (read back with the newest snapshot), not the configured 10 ms / 100 ms."""
    async with damon_daemon(tmp_path, utime=1, stime=1) as (reactor, fs, damon):
        pid = damon.kdamond_pid(0)
        for _ in range(15):
            await anyio.sleep(0.2)
            assert damon.kdamond_pid(0) == pid, "a commit must not restart it"
        base = paths.kdamond_dir(0) + "/contexts/0/monitoring_attrs/intervals"
        sample = int(fs.read_text(f"{base}/sample_us"))
        aggr = int(fs.read_text(f"{base}/aggr_us"))
        await anyio.sleep(0.5)  # a snapshot taken under them (snapshots every tick)
        (mon,) = reactor.status()["monitors"]
        assert int(fs.read_text(f"{base}/sample_us")) == sample, "settled"
    assert sample > 10_000 and aggr == pytest.approx(10 * sample, rel=0.01)
    assert (mon["state"], mon["backend"], mon["reason"]) == ("running", "damon", None)
    assert mon["sample_interval_s"] == pytest.approx(sample / 1e6)
    assert mon["aggregation_interval_s"] == pytest.approx(aggr / 1e6)


@pytest.mark.anyio
async def test_damon_monitoring_counts_the_daemons_snapshot_reads_as_monitoring_cpu(
    tmp_path: Path,
) -> None:
    """The region tuner's CPU on DAMON is the kdamond's utime + stime plus what the
    daemon spent reading that monitor's snapshots (both grow with the region count)."""
    # utime 30 + stime 20 clock ticks: 0.5 s of the kdamond's own CPU
    async with damon_daemon(tmp_path, utime=30, stime=20) as (reactor, _fs, _damon):
        await anyio.sleep(1.0)  # a few snapshots (one per 200 ms tick)
        policy = reactor.policies["self"]
        assert isinstance(policy, DamonMonitoring)
        reads = policy.driver.read_cpu_s(0)
        assert reads > 0
        assert policy.cpu_seconds() == pytest.approx(0.5 + reads)
        (mon,) = reactor.status()["monitors"]
        assert mon["snapshot_cpu_s"] >= round(reads, 6) > 0
        assert mon["sampling_cpu_s"] is None
