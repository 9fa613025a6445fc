"""The native sampler on real processes of this machine, against workloads with a known hot set.

Only processes these tests start are sampled (clear_refs is written to nothing else),
and they are ended by pid. Bounds are derived beside each test from what the probe can
know (host-capabilities.md §1), before any tuning:

- uffd-wp is exact per page for writes: the kernel marks a page written on its first
  write after the re-arming scan, and the workload writes every hot page every 20 ms,
  i.e. within every 50 ms sampling interval: no false positive or negative is possible
  except a write landing inside the scan itself, which is counted in the next interval
  (the page is then still counted in this aggregation). Allowance: 0 pages.
- referenced on 4 KiB anonymous memory counts the pages whose accessed bit is set when
  smaps is read. It never over-counts (allowance 0.1 % of the hot bytes: an over-count
  would be reactor's attribution or parsing). It can under-count: x86 sets a PTE's
  accessed bit only when it walks the page table on a TLB miss, and ``clear_refs 1``
  clears the bits without flushing the TLB (only soft-dirty's ``4`` flushes), so a hot
  page whose translation stays cached (PCID keeps entries across context switches; the
  second-level TLB holds about 1.5-2 k of them) is not seen again. Measured here:
  0.5-2.4 % short in some runs, exact in others, depending on what else ran on the
  CPU. DAMON's own vaddr sampling clears the bit the same way. The short side is held
  to the issue's recall target, 95 %.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import structlog

from reactor.kernelfs import RealKernelFS
from reactor.kernelfs.syscalls import PAGE_SIZE, guarded_mmap
from reactor.sampler import (
    AccessedRanges,
    NativeSampler,
    SamplerSettings,
    Snapshot,
    TargetSpec,
    detect,
    detect_probes,
    watch_own_memory,
)
from reactor.sampler.engine import covered_bytes
from reactor.testing.workload import Truth, WorkloadHandle, WorkloadSpec, start_workload

MIB = 2**20
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs /proc/PID/clear_refs"
)


@pytest.fixture
def anyio_backend() -> str:
    """asyncio: the sampler's probe work runs in worker threads on real time."""
    return "asyncio"


@pytest.fixture(scope="module")
def probes() -> Any:
    """This machine's probes, detected once by effect on a child process."""
    return detect_probes(RealKernelFS())


@pytest.fixture
def workload() -> Iterator[Callable[[WorkloadSpec], WorkloadHandle]]:
    """Starts workloads and stops every one of them (by pid) after the test."""
    started: list[WorkloadHandle] = []

    def start(spec: WorkloadSpec) -> WorkloadHandle:
        handle = start_workload(spec)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


async def sample(
    targets: list[TargetSpec], settings: SamplerSettings, seconds: float, probes: Any
) -> tuple[NativeSampler, list[Snapshot]]:
    got: list[Snapshot] = []
    sampler = NativeSampler(RealKernelFS(), targets, settings, probes=probes, sink=got.append)
    with anyio.move_on_after(seconds):
        await sampler.run()
    return sampler, got


def region_precision_recall(snap: Snapshot, truth: Truth) -> tuple[float, float]:
    """Bytes of regions accessed in at least half the samples, against the hot bytes."""
    hot = snap.regions[snap.hot_mask(0.5)]
    truth_ranges = truth.hot_ranges()
    ranges = AccessedRanges(truth_ranges[:, 0], truth_ranges[:, 1])
    starts, ends = hot["start"].astype(np.int64), hot["end"].astype(np.int64)
    tp = int(covered_bytes(ranges, starts, ends).sum())
    return tp / max(int((ends - starts).sum()), 1), tp / truth.hot_bytes


def test_probes_are_chosen_by_their_effect(probes: Any) -> None:
    """referenced and uffd-wp work here; soft-dirty is refused because bit 55 never set."""
    by_name = {p.name: p for p in probes}
    assert by_name["referenced"].available and by_name["uffd-wp"].available
    assert by_name["uffd-wp"].granularity_bytes == PAGE_SIZE
    assert by_name["referenced"].granularity_bytes == 0  # per mapping
    # this host: CONFIG_MEM_SOFT_DIRTY and CONFIG_IDLE_PAGE_TRACKING are off
    assert not by_name["soft-dirty"].available and "want [2]" in by_name["soft-dirty"].detail
    assert not by_name["page-idle"].available


def test_the_probe_child_needs_neither_numpy_nor_the_sampler_package() -> None:
    """Probe detection starts its child by path (``python -P``) so that the child's
    imports stay those of reactor.kernelfs: importing numpy and reactor.sampler first
    cost ~9 s of every native daemon's start-up under qemu's TCG."""
    child = Path(detect.__file__).with_name("_probe_child.py")
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1], run_name='probe'); "
        "print(sorted(m for m in ('numpy', 'reactor.sampler') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code, str(child)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out


@pytest.mark.anyio
async def test_uffd_wp_is_exact_per_page(probes: Any, workload: Any) -> None:
    """uffd-wp finds exactly the written pages of a scattered 25 % hot set (0 pages off)."""
    spec = WorkloadSpec(size_bytes=64 * MIB, pattern="scattered", mode="write", uffd_wp=True)
    w = workload(spec)
    target = TargetSpec(name="w", pids=(w.pid,), ranges=w.mappings, probe="uffd-wp")
    settings = SamplerSettings(sample_interval_s=0.05, aggr_interval_s=0.5, seed=1)
    _, snaps = await sample([target], settings, 1.8, probes)
    truth = w.truth()
    snap = snaps[-1]
    assert snap.pages is not None and snap.granularity_bytes == PAGE_SIZE
    seen = snap.pages.counts > 0
    assert int((seen & ~truth.hot).sum()) == 0  # false positives
    assert int((~seen & truth.hot).sum()) == 0  # false negatives
    assert int(snap.regions["referenced_bytes"].sum()) == truth.hot_bytes


@pytest.mark.anyio
async def test_uffd_wp_regions_find_a_contiguous_hot_set(probes: Any, workload: Any) -> None:
    """DAMON's adaptive regions isolate a contiguous write-hot run: >= 95 % precision and recall.

    Analysis: the run's edges start inside regions of at most sz_limit (64 MiB / 10);
    a straddling region keeps a middle count, is not merged, and is cut at a random
    10–90 % point each aggregation, so it shrinks about twofold per aggregation: after
    the 7 aggregations of 3.6 s, under 6.4 MiB / 2^7 = 50 KiB per edge, 0.6 % of the
    16 MiB run. 5 % leaves room for unlucky cuts.
    """
    spec = WorkloadSpec(size_bytes=64 * MIB, pattern="contiguous", mode="write", uffd_wp=True)
    w = workload(spec)
    target = TargetSpec(name="w", pids=(w.pid,), ranges=w.mappings, probe="uffd-wp")
    settings = SamplerSettings(sample_interval_s=0.05, aggr_interval_s=0.5, seed=2)
    _, snaps = await sample([target], settings, 3.8, probes)
    precision, recall = region_precision_recall(snaps[-1], w.truth())
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


@pytest.mark.anyio
async def test_referenced_counts_the_hot_bytes_of_a_plain_mapping(
    probes: Any, workload: Any
) -> None:
    """referenced never reports more than the mapping's hot bytes (allowance 0.1 %) and
    finds at least 95 % of them (the issue's recall target; the module notes say why
    the short side is not exact: translations cached in the TLB)."""
    spec = WorkloadSpec(size_bytes=64 * MIB, pattern="scattered", mode="read")
    w = workload(spec)
    target = TargetSpec(name="w", pids=(w.pid,), probe="referenced")
    settings = SamplerSettings(sample_interval_s=0.1, aggr_interval_s=0.5)
    _, snaps = await sample([target], settings, 1.3, probes)
    truth = w.truth()
    regions = snaps[-1].regions
    buf = regions[regions["start"] == w.base]
    assert len(buf) == 1 and int(buf["end"][0]) == w.base + spec.size_bytes
    assert buf["nr_accesses"][0] == snaps[-1].max_nr_accesses
    referenced = int(buf["referenced_bytes"][0])
    assert referenced <= truth.hot_bytes * 1.001, (referenced, truth.hot_bytes)
    assert referenced >= truth.hot_bytes * 0.95, (referenced, truth.hot_bytes)


@pytest.mark.anyio
async def test_referenced_counts_each_chunk_of_a_cooperating_process(
    probes: Any, workload: Any
) -> None:
    """A cooperating process's 64 KiB chunks get their own counts: no chunk over its hot
    bytes (allowance 0.1 % in all), at least 95 % of the hot bytes found (the module
    notes say why the short side is not exact)."""
    spec = WorkloadSpec(
        size_bytes=64 * MIB, pattern="scattered", chunk_bytes=64 * 1024, split_vmas=True
    )
    w = workload(spec)
    target = TargetSpec(name="w", pids=(w.pid,), ranges=w.mappings, probe="referenced")
    settings = SamplerSettings(sample_interval_s=0.1, aggr_interval_s=0.5)
    _, snaps = await sample([target], settings, 1.3, probes)
    truth = w.truth()
    regions = snaps[-1].regions
    assert len(regions) == len(w.mappings) == 1024
    assert snaps[-1].granularity_bytes == 64 * 1024
    want = np.array(
        [
            truth.hot_bytes_in(int(s), int(e))
            for s, e in zip(regions["start"], regions["end"], strict=True)
        ]
    )
    got = regions["referenced_bytes"].astype(np.int64)
    over = int(np.clip(got - want, 0, None).sum())
    under = int(np.clip(want - got, 0, None).sum())
    assert over <= 0.001 * truth.hot_bytes, over
    assert under <= 0.05 * truth.hot_bytes, under


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_moving_hot_set_is_followed(probes: Any, workload: Any) -> None:
    """After the hot run jumps, regions match it (>= 90 %) within 5 aggregation intervals.

    Analysis: the old run goes cold at once (its regions count 0 in the first whole
    aggregation after the move); the new run lies in regions merged while cold, bounded by
    sz_limit = 6.4 MiB: wholly covered ones count fully at once, the two edge regions
    shrink about twofold per aggregation, so after 5 aggregations each edge is at most
    6.4 MiB / 32 = 200 KiB, 1.2 % of the 16 MiB run; 10 % allows for the aggregation that
    straddles the jump and for unlucky cuts.
    """
    spec = WorkloadSpec(
        size_bytes=64 * MIB, pattern="moving", mode="write", uffd_wp=True, move_period_s=2.5
    )
    w = workload(spec)
    target = TargetSpec(name="w", pids=(w.pid,), ranges=w.mappings, probe="uffd-wp")
    aggr = 0.25
    settings = SamplerSettings(sample_interval_s=0.025, aggr_interval_s=aggr, seed=3)
    _, snaps = await sample([target], settings, 6.0, probes)
    checked = 0
    for snap in snaps:
        begin = snap.taken_at - aggr
        phase = w.phase_at(begin)
        if phase != w.phase_at(snap.taken_at) or phase == 0:
            continue  # straddles a jump, or the first phase (no move yet)
        aggregations_since_move = (begin - (w.t0 + phase * spec.move_period_s)) / aggr
        if aggregations_since_move < 5:
            continue
        precision, recall = region_precision_recall(snap, w.truth(phase))
        assert precision >= 0.9 and recall >= 0.9, (phase, precision, recall)
        checked += 1
    assert checked >= 2


@pytest.mark.anyio
async def test_an_exiting_process_is_dropped_cleanly(probes: Any, workload: Any) -> None:
    """A target that exits is logged as vanished and the sampler keeps running."""
    a = workload(WorkloadSpec(size_bytes=8 * MIB))
    b = workload(WorkloadSpec(size_bytes=8 * MIB))
    target = TargetSpec(name="w", pids=(a.pid, b.pid), probe="referenced")
    settings = SamplerSettings(sample_interval_s=0.05, aggr_interval_s=0.2, update_interval_s=0.1)
    got: list[Snapshot] = []
    sampler = NativeSampler(RealKernelFS(), [target], settings, probes=probes, sink=got.append)
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(sampler.run)
            await anyio.sleep(0.3)
            a.stop()
            await anyio.sleep(0.5)
            tg.cancel_scope.cancel()
    assert ("target_vanished", f"w:{a.pid}") in [(e["event"], e.get("target")) for e in logs]
    assert list(sampler.monitors) == [] and f"w:{b.pid}" in sampler.latest
    assert got[-1].target == f"w:{b.pid}"


@pytest.mark.anyio
async def test_a_started_command_is_owned_and_stopped(probes: Any) -> None:
    """A command target is started by the sampler, sampled, and ended by pid when it stops."""
    import sys

    argv = (sys.executable, "-m", "reactor.testing.workload", "--size=8M", "--duration=30")
    target = TargetSpec(name="cmd", command=argv, probe="referenced")
    settings = SamplerSettings(sample_interval_s=0.05, aggr_interval_s=0.2, update_interval_s=0.1)
    sampler, snaps = await sample([target], settings, 1.5, probes)
    owned = sampler._owned["cmd"]
    assert not owned.alive
    assert snaps and snaps[-1].target == f"cmd:{owned.pid}"


def test_a_started_command_is_its_own_pid_and_a_missing_one_is_named() -> None:
    """The pid reactor keeps is the command's own (setpriv, which asks for the parent
    death signal, execs it), and a command that is not there fails at once with its
    name and the config key, not later as a child that exited."""
    from reactor.errors import CommandNotFound
    from reactor.sampler.targets import OwnedCommand

    owned = OwnedCommand([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        want, exe = Path(sys.executable).resolve(), Path()
        while time.monotonic() < deadline:
            exe = Path(f"/proc/{owned.pid}/exe").readlink()
            if exe == want:
                break
            time.sleep(0.02)
        assert exe == want
    finally:
        owned.stop()
    assert not owned.alive
    with pytest.raises(CommandNotFound, match=r"monitor 'w': command 'no-such-reactor-c"):
        OwnedCommand(["no-such-reactor-command", "--flag"], where="monitor 'w'")


def test_a_command_that_outlives_sigkill_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command still there after SIGTERM and SIGKILL (a process stuck in the kernel,
    made here by a wait that never returns in time) is an error in the log; stop()
    returns, so shutdown goes on."""
    import structlog

    from reactor.sampler.targets import OwnedCommand

    owned = OwnedCommand([sys.executable, "-c", "import time; time.sleep(30)"])
    real_wait = owned._proc.wait

    def stuck(timeout: float | None = None) -> int:
        raise subprocess.TimeoutExpired(owned.argv, timeout or 0.0)

    monkeypatch.setattr(owned._proc, "wait", stuck)
    with structlog.testing.capture_logs() as logs:
        owned.stop(timeout_s=0.1)
    real_wait(10)  # SIGKILL was sent: the child is gone; reap it
    assert [e["event"] for e in logs] == ["command_stop_timeout"]
    assert logs[0]["pid"] == owned.pid and logs[0]["log_level"] == "error"


@pytest.mark.anyio
async def test_a_started_command_ends_even_if_a_probe_session_fails_to_close(
    probes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a probe session raises at shutdown: the command reactor started still
    ends (by pid), and the error is not swallowed."""
    import sys

    from reactor.sampler import probes as probes_mod

    def broken_close(self: Any) -> None:
        raise OSError(errno.EIO, "closing the probe session failed")

    monkeypatch.setattr(probes_mod.ReferencedSession, "close", broken_close)
    argv = (sys.executable, "-m", "reactor.testing.workload", "--size=8M", "--duration=30")
    target = TargetSpec(name="cmd", command=argv, probe="referenced")
    settings = SamplerSettings(sample_interval_s=0.05, aggr_interval_s=0.2, update_interval_s=0.1)
    sampler = NativeSampler(RealKernelFS(), [target], settings, probes=probes)
    with pytest.raises(BaseException) as info:  # the OSError, however wrapped
        with anyio.move_on_after(1.5):
            await sampler.run()
    owned = sampler._owned["cmd"]
    alive = owned.alive
    owned.stop()  # never leave the child behind, whatever failed
    assert not alive
    assert "closing the probe session failed" in repr(info.value)


@pytest.mark.anyio
async def test_an_application_watches_its_own_memory() -> None:
    """The library API: this process registers a buffer and gets exact per-page snapshots."""
    size = 16 * MIB
    m, base = guarded_mmap(size)
    buf = np.frombuffer(m, dtype=np.uint8)[PAGE_SIZE : PAGE_SIZE + size]
    buf[::PAGE_SIZE] = 1
    hot = np.arange(0, size // PAGE_SIZE, 4) * PAGE_SIZE
    settings = SamplerSettings(sample_interval_s=0.05, aggr_interval_s=0.25)
    snaps: list[Snapshot] = []

    async def toucher() -> None:
        while True:
            buf[hot] += 1
            await anyio.sleep(0.01)

    async with (
        watch_own_memory([(base, base + size)], settings) as stream,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(toucher)
        async for snap in stream:
            snaps.append(snap)
            if len(snaps) == 4:
                break
        tg.cancel_scope.cancel()
    assert len(snaps) >= 2
    pages = snaps[-1].pages
    assert pages is not None
    expect = np.zeros(size // PAGE_SIZE, dtype=bool)
    expect[hot // PAGE_SIZE] = True
    assert np.array_equal(pages.counts > 0, expect)


EXEC_CHILD = r"""
import mmap, os, sys, time
sys.stdin.readline()
os.execv(sys.executable, [sys.executable, "-c", '''
import mmap, time
buf = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
print(mmap.PAGESIZE, flush=True)
while True:
    for off in range(0, 8 << 20, mmap.PAGESIZE):
        buf[off] = 1
    time.sleep(0.01)
'''])
"""


def test_referenced_follows_a_process_through_exec() -> None:
    """A target that execs after the probe first read it (a command started through a
    shell or a pyenv shim does) is read in its new address space: the 8 MiB buffer the
    new program writes every 10 ms is found in the next collect."""
    import subprocess
    import sys
    import time

    from reactor.sampler.probes import ReferencedSession

    with subprocess.Popen(
        [sys.executable, "-c", EXEC_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        session = ReferencedSession(RealKernelFS(), proc.pid)
        try:
            session.start()
            before = session.collect()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip()  # the new program runs
            session.collect()
            time.sleep(0.2)
            after = session.collect()
        finally:
            session.close()
            proc.kill()
        # the 8 MiB private buffer (it may merge with an anonymous neighbour)
        buf = (after.end - after.start) >= 8 << 20
        assert len(before.start) > 0 and bool(buf.any()), after
        # >= 95 %: pages whose translation stays cached in the TLB can be missed (see
        # the module notes); before the fix this mapping was not seen at all
        assert int(after.referenced[buf].max()) >= 0.95 * (8 << 20)
