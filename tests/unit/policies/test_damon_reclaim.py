"""Reclaim on the DAMON backend, on the kernel-faithful fake (reactor.testing.FakeDamon)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from reactor.config import load_config_text
from reactor.damon import paths
from reactor.engine.runtime import Reactor
from reactor.testing import FakeDamon, FakeKernelFS
from tests.captures import DAMON_COLD, DAMON_HOT, DAMON_PID, damon_node

PID, HOT, COLD = DAMON_PID, DAMON_HOT, DAMON_COLD


@pytest.fixture
def anyio_backend() -> str:
    """Real time on asyncio: the driver writes from worker threads (no virtual clock)."""
    return "asyncio"


def fake_machine() -> tuple[FakeKernelFS, FakeDamon]:
    """This host's /proc captures and a free DAMON at the guest's version."""
    return damon_node()


def config(run_dir: Path, policy: str) -> Any:
    return load_config_text(
        "reactor:\n  backend: damon\n  tick: 200ms\n  startup_timeout: 5s\n"
        f"  run_dir: {run_dir}\n"
        "signals:\n  psi: {period: 200ms, resources: [memory]}\n"
        "  vmstat: {period: 200ms}\n  meminfo: {period: 200ms}\n"
        "  tiers: {enabled: false}\n  fragmentation: {enabled: false}\n"
        "monitors:\n  - name: app\n    targets: {pids: [4242]}\n"
        "    sample: 10ms\n    aggregation: 100ms\n" + policy,
        "t.yaml",
    )


REACTOR_POLICY = """
policies:
  - name: cold
    kind: reclaim
    monitor: app
    min_age: 200ms
    goals: [{metric: memory_psi_some, target: 0.5%}]
    quota: {max: 64 MiB, per: 1s}
"""


async def drive(damon: FakeDamon, step_s: float = 0.02) -> None:
    """Advance the fake's simulated kernel as real time passes."""
    while True:
        damon.advance(step_s)
        await anyio.sleep(step_s)


def quota_file(fs: FakeKernelFS, k: int, s: int, name: str) -> str:
    return fs.read_text(f"{paths.scheme_dir(k, s)}/quotas/{name}").strip()


@pytest.mark.anyio
async def test_reactor_tuner_commits_a_growing_quota_online(tmp_path: Path) -> None:
    """tuner reactor: the pageout scheme's sz_bytes follows the controller tick by tick,
    committed to the running kdamond (its pid never changes)."""
    fs, damon = fake_machine()
    seen: list[int] = []
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, damon)
            async with Reactor(config(tmp_path, REACTOR_POLICY), fs=fs) as reactor:
                pid = damon.kdamond_pid(0)
                assert pid is not None
                for _ in range(12):
                    await anyio.sleep(0.2)
                    seen.append(int(quota_file(fs, 0, 1, "bytes")))
                    assert damon.kdamond_pid(0) == pid, "a commit must not restart it"
                status = reactor.status()
            tg.cancel_scope.cancel()
    assert fs.read_text(f"{paths.scheme_dir(0, 1)}/action").strip() == "pageout"
    assert len(set(seen)) >= 4, seen
    assert seen[-1] > seen[0], "no pressure on the fake: the quota probes upward"
    ticks = [e for e in logs if e["event"] == "controller_tick"]
    assert ticks and all("requested_bytes" in t and "measured_bytes" in t for t in ticks)
    (pol,) = status["policies"]
    assert (
        pol["name"] == "cold" and pol["output"] and pol["goals"][0]["metric"] == ("memory_psi_some")
    )


KERNEL_POLICY = """
damon:
  kdamonds:
    - contexts:
        - ops: vaddr
          targets: [{pid: 4242}]
          intervals: {sample_us: 10 ms, aggr_us: 100 ms}
          schemes:
            - action: pageout
              access_pattern:
                sz_bytes: {min: 4 KiB, max: max}
                nr_accesses: {min: 0 %, max: 0 %}
                age: {min: 200 ms, max: max}
              quotas: {sz_bytes: 1 MiB, reset_interval_ms: 1 s}
policies:
  - name: cold
    kind: reclaim
    monitor: app
    tuner: kernel
    scheme: 0/0/0
    goals:
      - {metric: memory_psi_some, target: 0.5%}
      - {metric: user, signal: p99_ms, target: 20}
    quota: {max: 64 MiB, per: 1s}
"""


@pytest.mark.anyio
async def test_kernel_tuner_writes_goals_feeds_user_input_and_reports_effective_quota(
    tmp_path: Path,
) -> None:
    """tuner kernel: PSI becomes some_mem_psi_us (target = 0.5 % x 1 s = 5000 us), the
    app signal a user_input goal fed every tick; the effective quota is read and shown;
    at exit the scheme's own quota goes back."""
    fs, damon = fake_machine()
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, damon)
            async with Reactor(config(tmp_path, KERNEL_POLICY), fs=fs) as reactor:
                k = 1  # the monitor's kdamond first, then the damon section's
                goals = f"{paths.scheme_dir(k, 0)}/quotas/goals"
                assert fs.read_text(f"{goals}/0/target_metric").strip() == "some_mem_psi_us"
                assert fs.read_text(f"{goals}/0/target_value").strip() == "5000"
                assert fs.read_text(f"{goals}/1/target_metric").strip() == "user_input"
                assert fs.read_text(f"{goals}/1/target_value").strip() == "20000"
                for value in (5.0, 10.0, 15.0, 15.0, 15.0, 15.0):
                    reactor.feed("p99_ms", value)
                    await anyio.sleep(0.2)
                assert fs.read_text(f"{goals}/1/current_value").strip() == "15000"
                assert quota_file(fs, k, 0, "bytes") == str(64 << 20)
                status = reactor.status()
            tg.cancel_scope.cancel()
    ticks = [e for e in logs if e["event"] == "controller_tick"]
    effective = [t["controller"]["effective_bytes"] for t in ticks]
    assert effective and all(isinstance(e, int) for e in effective)
    assert max(effective) > 0
    (pol,) = status["policies"]
    assert pol["output"] == float(effective[-1]) or pol["output"] is not None
