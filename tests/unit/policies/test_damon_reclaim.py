"""Reclaim on the DAMON backend, on the kernel-faithful fake (reactor.testing.FakeDamon)."""

from __future__ import annotations

import itertools
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


def config(run_dir: Path, policy: str, *, dry_run: bool = False) -> Any:
    return load_config_text(
        "reactor:\n  backend: damon\n  tick: 200ms\n  startup_timeout: 5s\n"
        f"  run_dir: {run_dir}\n  dry_run: {str(dry_run).lower()}\n"
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
#: The cold-set feedforward is the default for a vaddr monitor's own scheme
#: (DamonReclaim.resident_readable); the per-goal composite is ``kind: adaptive``.
FEEDFORWARD_POLICY = REACTOR_POLICY
COMPOSITE_POLICY = REACTOR_POLICY + "    controller: {kind: adaptive}\n"


async def drive(damon: FakeDamon, step_s: float = 0.02) -> None:
    """Advance the fake's simulated kernel as real time passes."""
    while True:
        damon.advance(step_s)
        await anyio.sleep(step_s)


def quota_file(fs: FakeKernelFS, k: int, s: int, name: str) -> str:
    return fs.read_text(f"{paths.scheme_dir(k, s)}/quotas/{name}").strip()


def sz_applied(damon: FakeDamon, k: int, s: int) -> int:
    """The scheme's sz_applied in the simulated kernel (what it paged out)."""
    ctx = damon.context(k)
    assert ctx is not None
    return int(ctx.schemes[s].stats.sz_applied)


async def run_commits(
    tmp_path: Path, policy: str
) -> tuple[list[int], list[dict[str, Any]], dict[str, Any]]:
    """Run ``policy`` for 12 x 0.2 s on the fake: the pageout scheme's ``sz_bytes`` at
    each step, the log events and the final status. Each commit keeps the kdamond's pid;
    the scheme reactor added is a pageout."""
    fs, damon = fake_machine()
    seen: list[int] = []
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, damon)
            async with Reactor(config(tmp_path, policy), fs=fs) as reactor:
                pid = damon.kdamond_pid(0)
                assert pid is not None
                for _ in range(12):
                    await anyio.sleep(0.2)
                    seen.append(int(quota_file(fs, 0, 1, "bytes")))
                    assert damon.kdamond_pid(0) == pid, "a commit must not restart it"
                status = reactor.status()
            tg.cancel_scope.cancel()
    assert fs.read_text(f"{paths.scheme_dir(0, 1)}/action").strip() == "pageout"
    # 7.2 charges failed bytes by fail_charge_num/denom: reactor's scheme charges nothing
    # for them (regions over holes fail; pageout_scheme's doc)
    assert (quota_file(fs, 0, 1, "fail_charge_num"), quota_file(fs, 0, 1, "fail_charge_denom")) == (
        "0",
        "1",
    )
    return seen, logs, dict(status)


MIB = 1 << 20
COLD_BYTES = COLD[1] - COLD[0]  # 32 MiB, never accessed


@pytest.mark.anyio
async def test_reactor_tuner_commits_the_feedforward_quota_online(tmp_path: Path) -> None:
    """tuner reactor: the pageout scheme's sz_bytes follows the controller, committed to
    the running kdamond (its pid never changes); the feedforward's terms are logged and
    shown by status (cold bytes, refill estimate, excess, binding)."""
    seen, logs, status = await run_commits(tmp_path, FEEDFORWARD_POLICY)
    assert len(set(seen)) >= 2, seen
    ticks = [e for e in logs if e["event"] == "controller_tick"]
    assert ticks and all("requested_bytes" in t and "measured_bytes" in t for t in ticks)
    for key in ("feedforward.cold_bytes", "feedforward.refill", "feedforward.excess"):
        assert all(key in t["controller"] for t in ticks), key
    assert {t["controller"]["binding_goal"] for t in ticks} <= {
        "feedforward",
        "memory_psi_some",
        "no_stall_reading",
    }
    (pol,) = status["policies"]
    assert pol["name"] == "cold" and pol["output"]
    assert pol["goals"][0]["metric"] == "memory_psi_some"
    # what decided, goal or not (the drain is no goal: no goal is marked then)
    assert pol["binding"] in {"feedforward", "memory_psi_some", "no_stall_reading"}
    assert pol["goals"][0]["binding"] == (pol["binding"] == "memory_psi_some")
    assert "feedforward.cold_bytes" in pol["controller"]
    assert "feedforward.refill" in pol["controller"]


@pytest.mark.anyio
async def test_the_step_hears_whether_the_quota_limited_the_scheme(tmp_path: Path) -> None:
    """Each tick reads the scheme's ``qt_exceeds`` (charge windows that ended with the
    quota full) with its other stats: grown since the last reading, the quota limited
    the scheme and the step is told so (``quota_bound``, which lets a stall reading
    raise the excess); not grown, it is told the quota did not. An 8 MiB/s quota
    against the 32 MiB never accessed fills its 1 s windows: some tick hears it."""
    policy = REACTOR_POLICY.replace("max: 64 MiB", "max: 8 MiB")
    _, logs, _ = await run_commits(tmp_path, policy)
    ticks = [e for e in logs if e["event"] == "controller_tick"]
    heard = [t["controller"]["feedforward.quota_bound"] for t in ticks]
    qt = [t.get("qt_exceeds") for t in ticks]
    assert True in heard, (heard, qt)
    for before, tick in itertools.pairwise(ticks):
        said = tick["controller"]["feedforward.quota_bound"]
        if said is not None and "qt_exceeds" in before:
            assert said == (tick["qt_exceeds"] > before["qt_exceeds"]), (heard, qt)


@pytest.mark.anyio
async def test_cold_bytes_of_the_snapshot_reach_the_step(tmp_path: Path) -> None:
    """Each tick's step sees the resident cold bytes of the monitor's newest snapshot
    (regions of the scheme's pattern: no access, >= 200 ms old, cut to the process's
    resident pages): never more than the 32 MiB never accessed (a region over the
    unmapped 12 MiB gap before it reads cold too, but nothing there is resident; never
    the hot 4 MiB), exactly that once its regions are 200 ms old (an earlier snapshot may
    hold some of it in younger regions), and the first tick's drain is 0.9 x cold x per /
    tick = 4.5 x its cold (first tick: dt = the 200 ms tick). In dry run: a scheme that
    pages out would take cold pages as their regions age, before the last regions are
    old enough to be read (the fake's pageout swaps them, as the kernel does)."""
    fs, damon = fake_machine()
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, damon)
            async with Reactor(config(tmp_path, FEEDFORWARD_POLICY, dry_run=True), fs=fs):
                await anyio.sleep(1.0)
            tg.cancel_scope.cancel()
    ticks = [e for e in logs if e["event"] == "controller_tick"]
    read = [t for t in ticks if t["inputs"].get("cold_bytes") is not None]
    assert read, [t["inputs"] for t in ticks]
    first = read[0]
    cold = first["inputs"]["cold_bytes"]
    assert all(t["inputs"]["cold_bytes"] <= COLD_BYTES for t in read)
    assert max(t["inputs"]["cold_bytes"] for t in read) == COLD_BYTES
    assert all(t["controller"]["feedforward.cold_bytes"] == t["inputs"]["cold_bytes"] for t in read)
    if first is ticks[0]:
        assert first["controller"]["feedforward.drain"] == pytest.approx(0.9 * cold * 1.0 / 0.2)
    # the dry run decided and logged each quota, and committed none (no pageout scheme)
    dry = [e for e in logs if e["event"] == "damon_commit_dry_run"]
    assert [e["why"] for e in dry[:2]] == ["takeover", "tick"], dry
    assert damon.swapped_bytes(PID) == 0
    assert not any(e["event"] == "damon_committed" for e in logs)


@pytest.mark.anyio
async def test_the_quota_drains_the_cold_set_within_the_derived_bound(tmp_path: Path) -> None:
    """Derivation (quota = 0.9 x cold x per/dt + refill + excess, per 1 s, tick 200 ms):
    the first tick reads cold >= 32 MiB, so its quota is >= 0.9 x 32 x 5 + 4 = 148 MiB,
    capped at ``quota.max`` 64 MiB: the first commit is 64 MiB. DAMON takes a new
    sz_bytes at its next charge-window reset (<= reset_interval 1 s later) and applies
    it at the next aggregation (<= 100 ms): every region of the pattern, 32 MiB <= 64 MiB,
    within 1.1 s of that commit (1.3 s of simulated time allowed for the fake's 20 ms
    steps). The PSI-only composite committed 5.6 MiB first and x1.4 per 200 ms tick:
    at most 4 x 1.4^6 = 30 MiB in that window. (The fake pages out without evicting, so
    the cold regions come back once 200 ms old: sz_applied keeps growing after this.)"""
    fs, damon = fake_machine()
    commit: tuple[int, int] | None = None
    first = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, damon)
        async with Reactor(config(tmp_path, FEEDFORWARD_POLICY), fs=fs):
            start = int(quota_file(fs, 0, 1, "bytes"))
            for _ in range(200):
                await anyio.sleep(0.01)
                now_q = int(quota_file(fs, 0, 1, "bytes"))
                if commit is None and now_q != start:
                    first, commit = now_q, (damon.now_us, sz_applied(damon, 0, 1))
                if commit is not None and damon.now_us >= commit[0] + 1_300_000:
                    break
            applied = sz_applied(damon, 0, 1)
        tg.cancel_scope.cancel()
    assert commit is not None and first == 64 * MIB, first
    assert applied - commit[1] >= COLD_BYTES, (applied - commit[1]) / MIB


@pytest.mark.anyio
async def test_measured_bytes_are_what_left_the_process_not_sz_applied(tmp_path: Path) -> None:
    """On vaddr, sz_applied grows by every region the pageout is applied to, resident or
    not; what the policy reports as measured is what left the process's RAM
    (/proc/PID/status: its swap gained), at most the sz_tried growth per tick.

    Bounds: only the 32 MiB never accessed can leave (the hot range is faulted straight
    back), so the measured sum is at most COLD_BYTES; it is above 0 (the drain takes the
    cold set within 1.3 s of the first commit, see the test above; 2 s are run). Once a
    region is paged out its age restarts and it matches again 200 ms later with nothing
    left: sz_applied's sum exceeds the cold set (64 MiB per 1 s window allows two
    passes over it in the 2 s)."""
    fs, damon = fake_machine()
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, damon)
            async with Reactor(config(tmp_path, FEEDFORWARD_POLICY), fs=fs):
                await anyio.sleep(2.0)
            tg.cancel_scope.cancel()
    ticks = [e for e in logs if e["event"] == "controller_tick"]
    measured = sum(t["measured_bytes"] for t in ticks)
    applied = sum(t.get("applied_bytes", 0) for t in ticks)
    swap = sum((t.get("left") or {}).get("swap", 0) for t in ticks)
    assert all(t["measured_bytes"] <= t["requested_bytes"] for t in ticks)
    assert 0 < measured <= swap <= COLD_BYTES, (measured, swap)
    assert applied > COLD_BYTES, applied
    assert damon.swapped_bytes(PID) == COLD_BYTES


PSI_POLICY = FEEDFORWARD_POLICY.replace("quota: {max: 64 MiB", "quota: {max: 1 GiB")


async def pressure(fs: FakeKernelFS, share: float, step_s: float = 0.02) -> None:
    """/proc/pressure/memory with ``some`` stalls growing at ``share`` of the time."""
    total = 0.0
    while True:
        total += share * step_s * 1e6
        line = f"avg10=0.00 avg60=0.00 avg300=0.00 total={int(total)}"
        fs.set_file("/proc/pressure/memory", f"some {line}\nfull {line}\n")
        await anyio.sleep(step_s)


@pytest.mark.anyio
async def test_a_stall_above_the_goal_lowers_the_excess(tmp_path: Path) -> None:
    """PSI some at 10 % against a 0.5 % goal asks for less: even on ticks that are not
    informative (the drain is running) that reading passes, and each step takes
    0.24 x ln(0.005 / 0.1) = -0.72 of ln(excess), i.e. x 0.49 per tick (the cap is
    8/s: -0.42 per 200 ms tick, so x 0.66): the excess the PSI goal allows beyond the
    feedforward (``allowed`` minus drain and refill) falls tick after tick."""
    fs, damon = fake_machine()
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive, damon)
            tg.start_soon(pressure, fs, 0.10)
            async with Reactor(config(tmp_path, PSI_POLICY), fs=fs):
                await anyio.sleep(2.0)
            tg.cancel_scope.cancel()
    ticks = [e for e in logs if e["event"] == "controller_tick"]
    stalled = [t for t in ticks if (t["inputs"].get("memory_psi_some") or 0) > 0.05]
    assert len(stalled) >= 3, [t["inputs"] for t in ticks]
    excess = []
    for t in stalled:
        c = t["controller"]
        ff = c["feedforward.drain"] + c["feedforward.refill"]
        excess.append(c["allowed.memory_psi_some"] - ff)
    assert all(b < a for a, b in itertools.pairwise(excess)), excess
    assert excess[-1] < 0.5 * 4 * MIB, excess  # from its 4 MiB start


@pytest.mark.anyio
async def test_reactor_tuner_commits_a_growing_quota_online(tmp_path: Path) -> None:
    """tuner reactor with the per-goal composite (``kind: adaptive``): the pageout
    scheme's sz_bytes follows the controller tick by tick, committed to the running
    kdamond (its pid never changes)."""
    seen, logs, status = await run_commits(tmp_path, COMPOSITE_POLICY)
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


def test_sz_applied_counts_at_most_the_resident_cold_bytes() -> None:
    """A vaddr pageout scheme's sz_applied grows by whole regions (the kernel's
    damos_madvise returns the length it advised), resident or not: after a drain, 64 MiB
    of growth over regions with 1 MiB resident and cold is 1 MiB paged out. Fed as is,
    the refill estimate (cold - last cold + reclaimed) / dt would read 64 MiB of memory
    turning cold in that tick; bounded, at most the 1 MiB that was there."""
    from reactor.policies.damon import reclaimed_bound

    assert reclaimed_bound(64 * MIB, 1.0 * MIB) == 1 * MIB
    assert reclaimed_bound(3 * MIB, 32.0 * MIB) == 3 * MIB  # the growth, when it fits
    assert reclaimed_bound(None, 32.0 * MIB) is None  # nothing read: nothing to bound
    assert reclaimed_bound(5 * MIB, None) == 5 * MIB  # no reading last tick: as is
    assert reclaimed_bound(5 * MIB, 0.0) == 0


def test_status_memory_counters_parse_from_the_capture() -> None:
    """/proc/PID/status's memory counters in bytes, values read off the capture by hand
    (RssAnon 116 kB, RssFile 1604 kB, RssShmem 0 kB, VmSwap 0 kB); a text without them
    (a kernel thread's status) is a format error naming the path and the fields."""
    from reactor.actuators._procfs import parse_status_memory
    from reactor.errors import KernelFormatError
    from tests.captures import HOST

    text = (HOST / "proc_pid_status").read_text()
    assert parse_status_memory(text, "/proc/1/status") == {
        "RssAnon": 116 * 1024,
        "RssFile": 1604 * 1024,
        "RssShmem": 0,
        "VmSwap": 0,
    }
    kthread = "".join(line for line in text.splitlines(True) if not line.startswith(("Rss", "Vm")))
    with pytest.raises(KernelFormatError, match=r"/proc/2/status.*RssAnon: N kB.*VmSwap: N kB"):
        parse_status_memory(kthread, "/proc/2/status")


def test_left_memory_counts_swap_gained_and_file_and_shmem_pages_dropped() -> None:
    """What left a process's RAM: swap entries gained (anonymous pages), file and shmem
    pages dropped; each term net of the process's own faults and never below zero (a
    swap-in does not cancel file pages that left, new file pages do not cancel swap)."""
    from reactor.policies.damon import left_memory

    def status(anon: int, file: int, shmem: int, swap: int) -> dict[str, int]:
        return {"RssAnon": anon, "RssFile": file, "RssShmem": shmem, "VmSwap": swap}

    def left(before: dict[str, int], after: dict[str, int]) -> tuple[int, int, int]:
        kinds = left_memory(before, after)
        return kinds["swap"], kinds["file"], kinds["shmem"]

    before = status(40 * MIB, 8 * MIB, 4 * MIB, 0)
    assert left(before, before) == (0, 0, 0)
    assert left(before, status(8 * MIB, 8 * MIB, 4 * MIB, 32 * MIB)) == (32 * MIB, 0, 0)
    assert left(before, status(40 * MIB, 2 * MIB, 1 * MIB, 0)) == (0, 6 * MIB, 3 * MIB)
    # the process read 16 MiB of a file while 32 MiB of anon went to swap: 32 left
    assert left(before, status(8 * MIB, 24 * MIB, 4 * MIB, 32 * MIB)) == (32 * MIB, 0, 0)
    # 2 MiB swapped back in, 3 MiB of file dropped: the file pages still left
    swapped = status(8 * MIB, 8 * MIB, 0, 32 * MIB)
    assert left(swapped, status(10 * MIB, 5 * MIB, 0, 30 * MIB)) == (0, 3 * MIB, 0)
