"""Tiering policies: native move_pages decisions on a fake process, DAMON quota commits."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import numpy as np
import pytest
import structlog

from reactor.config import load_config_text
from reactor.damon import paths
from reactor.engine.bus import Bus
from reactor.engine.monitors import AccessView
from reactor.engine.runtime import Reactor
from reactor.errors import KernelInterfaceError
from reactor.policies import build_policy
from reactor.policies.base import PolicyContext
from reactor.policies.tiering import NativeTiering, off_node_spans, tier_nodes
from reactor.sampler.snapshot import Region, Snapshot, regions_array
from reactor.testing import FakeKernelFS
from tests.unit.actuators.fakes import MIB, PAGE, FakeMapping, FakeProcess
from tests.unit.policies.test_damon_reclaim import drive, fake_machine

PID = 5151
AT = 0x7E0000000000
GIB = 1 << 30


@pytest.fixture
def anyio_backend() -> str:
    """asyncio: the actuator queries pages in worker threads (real time)."""
    return "asyncio"


@dataclass
class _Mem:
    mem_total_bytes: int
    mem_used_bytes: int
    mem_free_bytes: int


@dataclass
class _Node:
    meminfo: _Mem


@dataclass
class _Tier:
    tier_id: int
    nodes: tuple[int, ...]
    total_bytes: int
    used_ratio: float


class FakeTiers:
    """Two nodes (node 0 fast, 1 GiB; node 1 slow, 512 MiB) with a settable used ratio."""

    def __init__(self, fast_used: float) -> None:
        self.fast_used = fast_used
        self.tiers = (_Tier(4, (0,), GIB, fast_used), _Tier(90, (1,), GIB // 2, 0.2))

    def node(self, node: int) -> _Node:
        total = GIB if node == 0 else GIB // 2
        used = int(total * (self.fast_used if node == 0 else 0.2))
        return _Node(_Mem(total, used, total - used))


POLICY = """
reactor: {backend: native, tick: 1s}
signals: {tiers: {period: 1s}}
monitors:
  - name: app
    targets: {pids: [5151]}
policies:
  - name: tiers
    kind: tiering
    monitor: app
    min_age: 1s
    hot_access: 50%
    goals: [{metric: fast_tier_used_ratio, target: 70%}]
    quota: {min: 1 MiB, max: 64 MiB, per: 1s}
"""


def snapshot(now: float) -> AccessView:
    """4 MiB hot (every sample) then 4 MiB cold (no access for 10 aggregations)."""
    regions = regions_array(
        [Region(AT, AT + 4 * MIB, 10, 3), Region(AT + 4 * MIB, AT + 8 * MIB, 0, 10)]
    )
    snap = Snapshot(f"app.pids:{PID}", regions, 0.1, 1.0, "page-idle", PAGE, now, 10)
    return AccessView("app", "native", MappingProxyType({snap.target: snap}))


def native_policy(fs: FakeKernelFS, extra: str = "") -> tuple[NativeTiering, Bus, FakeProcess]:
    """The policy on a fake 2-node process: hot half on node 1, cold half on node 0."""
    fs.set_file("/sys/devices/system/node/has_memory", "0-1\n")
    proc = FakeProcess(fs, PID, [FakeMapping(AT, 8 * MIB, "anon")], nodes=(0, 1))
    for addr in range(AT, AT + 4 * MIB, PAGE):
        proc.page_node[addr] = 1
    config = load_config_text(POLICY + extra, "t.yaml")
    bus = Bus()
    ctx = PolicyContext(config=config, bus=bus, fs=fs, backend="native")
    policy = build_policy(config.policies[0], ctx)
    assert isinstance(policy, NativeTiering)
    policy.actuator.calls = proc
    return policy, bus, proc


def nodes_of(proc: FakeProcess, lo: int, hi: int) -> dict[int, int]:
    """Pages per node in [lo, hi)."""
    out: dict[int, int] = {}
    for addr in range(lo, hi, PAGE):
        node = proc.page_node.get(addr, 0)
        out[node] = out.get(node, 0) + 1
    return out


def test_off_node_spans_coalesces_pages_off_the_destination() -> None:
    """Present pages off the destination nodes become contiguous spans; absent ones drop."""
    pages = np.arange(0, 8 * PAGE, PAGE, dtype=np.uint64)
    status = np.array([0, 1, 1, 0, -2, 1, 1, 1], dtype=np.int32)
    spans, on, off = off_node_spans(status, pages, (0,))
    assert spans == [(PAGE, 2 * PAGE), (5 * PAGE, 3 * PAGE)]
    assert (on, off) == (2 * PAGE, 5 * PAGE)


def test_tier_nodes_from_the_view_take_the_lowest_tier_as_fast() -> None:
    """Without fast_nodes/slow_nodes the lowest tier id with memory is fast, the next slow."""
    nodes = tier_nodes((), (), FakeTiers(0.5))  # type: ignore[arg-type]
    assert nodes is not None and (nodes.fast, nodes.slow) == ((0,), (1,))
    assert (nodes.promote_to, nodes.demote_to) == (0, 1)
    assert tier_nodes((), (), None) is None


@pytest.mark.anyio
async def test_native_tiering_demotes_cold_and_promotes_hot(fake_kernel: FakeKernelFS) -> None:
    """Above its target the fast tier sheds cold pages to node 1 while hot pages on node 1
    come up to node 0; pages moved are the actuator's measured count."""
    policy, bus, proc = native_policy(fake_kernel)
    demoted = promoted = 0
    for i in range(6):
        now = 100.0 + i
        bus.publish("tiers", FakeTiers(0.75), now)
        bus.publish("access.app", snapshot(now), now)
        await policy.tick(now + 0.5, 1.0)
        assert policy.measured_total >= demoted + promoted
        demoted = PAGE * nodes_of(proc, AT + 4 * MIB, AT + 8 * MIB).get(1, 0)
        promoted = PAGE * nodes_of(proc, AT, AT + 4 * MIB).get(0, 0)
    assert nodes_of(proc, AT + 4 * MIB, AT + 8 * MIB) == {1: 1024}, "cold set demoted"
    assert nodes_of(proc, AT, AT + 4 * MIB) == {0: 1024}, "hot set promoted"
    assert policy.measured_total == 8 * MIB
    assert not policy.hot_off_fast, "nothing hot left off the fast tier: promotion holds"


@pytest.mark.anyio
async def test_quotas_follow_the_fast_tier_used_ratio(fake_kernel: FakeKernelFS) -> None:
    """Above target the demotion quota rises and promotion falls; below, the reverse."""
    policy, bus, _ = native_policy(fake_kernel)
    policy.actuator.limits = policy.actuator.limits.__class__(dry_run=True)

    async def run(used: float, t0: float) -> tuple[float, float]:
        for i in range(5):
            now = t0 + i
            bus.publish("tiers", FakeTiers(used), now)
            bus.publish("access.app", snapshot(now), now)
            policy.hot_off_fast = True
            await policy.tick(now + 0.5, 1.0)
        return policy.demote_state.output, policy.promote_state.output

    d0, p0 = policy.demote_state.output, policy.promote_state.output
    d1, p1 = await run(0.9, 10.0)
    assert d1 > d0 and p1 <= p0  # promotion starts at quota.min: it cannot fall
    d2, p2 = await run(0.4, 20.0)
    assert d2 < d1 and p2 > p1


@pytest.mark.anyio
async def test_stale_tiers_hold_both_quotas(fake_kernel: FakeKernelFS) -> None:
    """Without a fresh tier view nothing moves and the tick says which topic is stale."""
    policy, bus, proc = native_policy(fake_kernel)
    bus.publish("access.app", snapshot(50.0), 50.0)
    await policy.tick(50.5, 1.0)
    assert policy.held is not None and "tiers" in policy.held
    assert not [c for c in proc.move_calls if c[1] is not None]


DAMON_TIERING = """
  tiers: {enabled: true, period: 200ms}
policies:
  - name: tiers
    kind: tiering
    monitor: app
    fast_nodes: [0]
    slow_nodes: [1]
    min_age: 200ms
    goals: [{metric: fast_tier_used_ratio, target: 1%}]
    quota: {min: 1 MiB, max: 64 MiB, per: 1s}
"""


def damon_config(run_dir: Path) -> Any:
    """The reclaim test's machine and monitor with a tiering policy (tiers on)."""
    return load_config_text(
        "reactor:\n  backend: damon\n  tick: 200ms\n  startup_timeout: 5s\n"
        f"  run_dir: {run_dir}\n"
        "signals:\n  psi: {enabled: false}\n  vmstat: {period: 200ms}\n"
        "  meminfo: {period: 200ms}\n  fragmentation: {enabled: false}\n"
        + DAMON_TIERING.split("policies:", maxsplit=1)[0]
        + "monitors:\n  - name: app\n    targets: {pids: [4242]}\n"
        "    sample: 10ms\n    aggregation: 100ms\n"
        "policies:" + DAMON_TIERING.split("policies:")[1],
        "t.yaml",
    )


FAIL = ("fail_charge_num", "fail_charge_denom")


@pytest.mark.anyio
async def test_damon_tiering_adds_two_migrate_schemes_and_commits_quotas(tmp_path: Path) -> None:
    """reactor adds migrate_cold (to the slow node) and migrate_hot (to the fast node) to the
    monitor's kdamond and commits their quotas online: the fast tier (this host's node 0,
    far above a 1 % target) raises the demotion quota and lowers the promotion quota."""
    fs, damon = fake_machine()
    cold: list[int] = []
    hot: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, damon)
        async with Reactor(damon_config(tmp_path), fs=fs) as reactor:
            pid = damon.kdamond_pid(0)
            for _ in range(10):
                await anyio.sleep(0.2)
                cold.append(int(fs.read_text(f"{paths.scheme_dir(0, 1)}/quotas/bytes")))
                hot.append(int(fs.read_text(f"{paths.scheme_dir(0, 2)}/quotas/bytes")))
                assert damon.kdamond_pid(0) == pid, "a commit must not restart it"
            status = reactor.status()
        tg.cancel_scope.cancel()
    assert fs.read_text(f"{paths.scheme_dir(0, 1)}/action").strip() == "migrate_cold"
    assert fs.read_text(f"{paths.scheme_dir(0, 1)}/target_nid").strip() == "1"
    assert fs.read_text(f"{paths.scheme_dir(0, 2)}/action").strip() == "migrate_hot"
    assert fs.read_text(f"{paths.scheme_dir(0, 2)}/target_nid").strip() == "0"
    assert cold[-1] > cold[0] and hot[-1] <= hot[0], (cold, hot)
    # 7.2 charges bytes that did not move by fail_charge_num/denom: reactor's schemes
    # charge nothing for them (gaps and pages already on the target node; migrate_schemes)
    for s in (1, 2):
        charge = [fs.read_text(f"{paths.scheme_dir(0, s)}/quotas/{f}").strip() for f in FAIL]
        assert charge == ["0", "1"], (s, charge)
    (pol,) = status["policies"]
    assert pol["kind"] == "tiering" and pol["controller"]["demote_quota"] > 0


@pytest.mark.anyio
async def test_damon_tiering_reports_what_new_schemes_applied_before_the_first_tick() -> None:
    """The schemes' stats start at zero when start() adds them: the first tick reports
    everything they applied since (the guest promoted a whole hot set before it)."""
    from types import SimpleNamespace

    from reactor.policies.tiering import DamonTiering

    class Driver:
        async def update_schemes_stats(self, k: int) -> list[Any]:
            assert k == 0
            return [
                SimpleNamespace(sz_tried_bytes=0, sz_applied_bytes=0),
                SimpleNamespace(sz_tried_bytes=3 * MIB, sz_applied_bytes=2 * MIB),
                SimpleNamespace(sz_tried_bytes=16 * MIB, sz_applied_bytes=15 * MIB),
            ]

    policy = object.__new__(DamonTiering)
    policy.ctx = SimpleNamespace(config=SimpleNamespace(reactor=SimpleNamespace(dry_run=False)))  # type: ignore[assignment]
    policy.driver = Driver()  # type: ignore[assignment]
    policy.k, policy.s_cold, policy.s_hot = 0, 1, 2
    policy.baseline_new_schemes()
    acted = await policy._acted()
    assert acted.fields["demoted_bytes"] == 2 * MIB
    assert acted.fields["promoted_bytes"] == 15 * MIB
    assert acted.measured_bytes == 17 * MIB and acted.requested_bytes == 19 * MIB


@pytest.mark.anyio
async def test_damon_tiering_shutdown_waits_for_a_command_that_holds_the_sysfs_lock(
    tmp_path: Path,
) -> None:
    """SIGTERM lands while an ``update_schemes_*`` command is in the kernel: the kernel
    holds DAMON's sysfs lock until it returns (here 0.8 s, longer than reactor waits out
    an EBUSY read), so ``state`` and ``pid`` read EBUSY meanwhile. The cancelled command
    keeps running in its worker thread. Shutdown must wait for it, then stop reactor's own
    kdamond, with nothing logged as failed. (A guest run did not: its unreadable pid read
    as -1, its own kdamond looked foreign, and the daemon exited 1 with it still on.)"""
    fs, damon = fake_machine()
    arm, entered = threading.Event(), threading.Event()
    write, read = fs.write_text, fs.read_text
    held = threading.Lock()

    def slow_command(path: str, data: str) -> None:
        if arm.is_set() and path.endswith("/state") and data.startswith("update_schemes"):
            arm.clear()
            with held:
                entered.set()
                time.sleep(0.8)
                write(path, data)
            return
        write(path, data)

    def busy_read(path: str) -> str:
        if path.rsplit("/", 1)[-1] in ("state", "pid") and held.locked():
            raise KernelInterfaceError(path, "cannot read", errno=errno.EBUSY)
        return read(path)

    fs.write_text, fs.read_text = slow_command, busy_read  # type: ignore[method-assign]

    async def hold_the_lock() -> None:
        arm.set()
        assert await anyio.to_thread.run_sync(entered.wait, 5.0)

    await _shut_down_cleanly(fs, damon, tmp_path, hold_the_lock)
    assert read(f"{paths.kdamond_dir(0)}/state").strip() == "off"


async def _shut_down_cleanly(
    fs: FakeKernelFS, damon: Any, run_dir: Path, before_exit: Callable[[], Awaitable[None]]
) -> None:
    """Run the tiering daemon 0.6 s, call ``before_exit``, stop it: nothing is logged
    as an error and reactor's kdamond is stopped."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, damon)
        with structlog.testing.capture_logs() as logs:
            async with Reactor(damon_config(run_dir), fs=fs):
                await anyio.sleep(0.6)
                assert damon.kdamond_pid(0) is not None
                await before_exit()
        tg.cancel_scope.cancel()
    failures = [e for e in logs if e["log_level"] in ("error", "critical")]
    assert failures == [], failures
    assert damon.kdamond_pid(0) is None


@pytest.mark.anyio
async def test_a_stop_waits_out_ebusy_reads_of_state_and_pid(tmp_path: Path) -> None:
    """The kernel's refresh worker holds DAMON's sysfs lock for a moment: a few reads of
    ``state`` and ``pid`` answer EBUSY. Stopping reactor's kdamond waits them out instead
    of calling it foreign (its pid would read as -1)."""
    fs, damon = fake_machine()

    async def busy_reads() -> None:
        for name in ("state", "pid"):
            fs.inject_fault(f"{paths.kdamond_dir(0)}/{name}", errno.EBUSY, times=3, ops=("read",))

    await _shut_down_cleanly(fs, damon, tmp_path, busy_reads)


@pytest.mark.anyio
async def test_a_policy_already_running_is_not_started_twice(tmp_path: Path) -> None:
    """A reload during start-up starts the config's policies; start-up then asks for the
    same ones: each name runs once (a second instance would add its own schemes and act
    beside the first, and never be restored)."""
    fs, damon = fake_machine()
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, damon)
        async with Reactor(damon_config(tmp_path), fs=fs) as reactor:
            first = dict(reactor.policies)
            assert await reactor._start_policies(reactor.config.policies) == []
            assert reactor.policies == first
            assert (
                fs.read_text(f"{paths.kdamond_dir(0)}/contexts/0/schemes/nr_schemes").strip() == "3"
            )
        tg.cancel_scope.cancel()
