"""Guest only: reactor's signal sources on a kernel with two memory tiers and cgroup v2.

The development host has one node, one tier, memory on cgroup v1 and no
CAP_SYS_RESOURCE; these checks need the lane's guest (tests/kernel/conftest.py refuses
elsewhere). Every cgroup, file system and process here is the test's own and is removed
(processes ended by pid) afterwards.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from reactor.kernelfs import RealKernelFS
from reactor.signals.cgroup import CgroupMemory, CgroupPoller
from reactor.signals.fragmentation import Fragmentation, FragmentationPoller
from reactor.signals.psi_trigger import PsiTrigger, PsiTriggerEvent, PsiTriggerWatcher
from reactor.signals.tiers import TiersPoller
from tests.kernel.conftest import write

FS = RealKernelFS("/")
MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")


def record(line: str) -> None:
    """Print a measured line and keep it in the lane's run directory (signals_guest.txt):
    pytest shows a passing test's output nowhere else."""
    print(line)
    out = os.environ.get("REACTOR_LANE_OUT")
    if out:
        with Path(out, "signals_guest.txt").open("a") as f:
            f.write(line + "\n")


# --------------------------------------------------------------------------- tiers


def test_tiers_poller_puts_the_slow_node_in_the_lower_tier() -> None:
    """node1 (CPU-less, 4x latency by HMAT) is in a tier with a larger id than node0, and
    each tier's totals are the sums of its nodes' meminfo."""
    tiers = TiersPoller(FS).poll(time.monotonic())
    tier_of = {n: t.tier_id for t in tiers.tiers for n in t.nodes}
    assert tier_of[1] > tier_of[0], tiers.tiers
    by_node = {n.node: n for n in tiers.nodes}
    assert by_node[0].has_cpu and not by_node[1].has_cpu
    for tier in tiers.tiers:
        members = [by_node[n].meminfo for n in tier.nodes]
        assert tier.total_bytes == sum(m.mem_total_bytes for m in members)
        assert tier.free_bytes == sum(m.mem_free_bytes for m in members)
        assert tier.used_bytes == tier.total_bytes - tier.free_bytes
    record(
        "tiers (id, nodes, total MiB, used MiB): "
        f"{[(t.tier_id, t.nodes, t.total_bytes // MIB, t.used_bytes // MIB) for t in tiers.tiers]}"
    )


# --------------------------------------------------------------------------- fragmentation

#: The child maps SIZE, touches every page, reads its own PFNs from /proc/self/pagemap
#: (root: PFNs are visible) and, for every aligned PFN pair (2k, 2k+1) that it holds both
#: pages of, frees the even one with MADV_DONTNEED and keeps the odd one.
FRAGMENTER = r"""
import mmap, os, struct, sys
size = int(sys.argv[1]); page = os.sysconf("SC_PAGE_SIZE"); n = size // page
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_NOHUGEPAGE)
for off in range(0, size, page):
    m[off] = 1
import ctypes
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
print("touched", flush=True)
assert sys.stdin.readline() == "free\n"
with open("/proc/self/pagemap", "rb") as f:
    f.seek(base // page * 8)
    raw = f.read(n * 8)
pfn_to_page = {}
for i in range(n):
    (e,) = struct.unpack_from("<Q", raw, i * 8)
    if e >> 63:
        pfn_to_page[e & ((1 << 55) - 1)] = i
freed = 0
for pfn, i in pfn_to_page.items():
    if pfn % 2 == 0 and pfn + 1 in pfn_to_page:
        m.madvise(mmap.MADV_DONTNEED, i * page, page)
        freed += 1
print("freed", freed, len(pfn_to_page), flush=True)
sys.stdin.readline()
"""


@contextlib.contextmanager
def child(argv: list[str], cgroup: str | None = None) -> Iterator[subprocess.Popen[str]]:
    """A Python child of ours (moved into ``cgroup`` first if given), ended by pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        if cgroup is not None:
            write(f"{cgroup}/cgroup.procs", proc.pid)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def _node0(frag: Fragmentation) -> tuple[int, int, int]:
    """node0's largest zone: (unusable index at order 9 in ‰, free order-0 blocks, score)."""
    zone = max((z for z in frag.zones if z.node == 0), key=lambda z: z.free_pages)
    node = next(n for n in frag.nodes if n.node == 0)
    return zone.unusable_index_milli[9], zone.free_blocks[0], node.score


def test_freeing_every_other_page_fragments_node0() -> None:
    """A child that frees one page of each PFN pair it holds raises node0's unusable free
    index at order 9 (and its order-0 free count) as reactor's FragmentationPoller sees it.

    Why it must: each freed page's buddy (PFN xor 1) is still held by the child, so the
    freed page cannot merge and stays an order-0 block; it adds F to the free pages f but
    nothing to the free pages g in blocks of order >= 9, so the unusable index
    (f - g) / f becomes (f + F - g) / (f + F), larger whenever g > 0. Per-CPU lists may
    keep a few thousand freed pages out of buddyinfo, so at least F/2 must show up.
    """
    poller = FragmentationPoller(FS, read_debugfs=False)
    size = 320 * MIB
    with child([FRAGMENTER, str(size)]) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline() == "touched\n"
        time.sleep(0.5)
        before = _node0(poller.poll(time.monotonic()))
        proc.stdin.write("free\n")
        proc.stdin.flush()
        _, freed, held = proc.stdout.readline().split()
        time.sleep(0.5)
        after = _node0(poller.poll(time.monotonic()))
    record(
        "fragmentation node0 (unusable@9 milli, order-0 blocks, score): "
        f"before {before} after {after}; freed {freed} of {held} pages"
    )
    assert int(freed) > int(held) // 4, "too few PFN pairs held to fragment anything"
    assert after[1] - before[1] >= int(freed) // 2
    assert after[0] > before[0]


# --------------------------------------------------------------------------- cgroup v2

#: Maps a file it did not write, MADV_RANDOM (one page per fault), one byte per page
#: per pass (the host test's workload: tests/host/test_cgroup_signals.py).
READER = r"""
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
m.madvise(mmap.MADV_RANDOM)
page = os.sysconf("SC_PAGE_SIZE")
print("ready", flush=True)
total = 0
for line in sys.stdin:
    if line.strip() != "pass":
        break
    for off in range(0, size, page):
        total += m[off]
    print("done", flush=True)
"""

LRU_GEN = Path("/sys/kernel/mm/lru_gen/enabled")
FILE_BYTES = 96 * MIB
LIMIT_BYTES = 32 * MIB
PASSES = 2


@contextlib.contextmanager
def ext4_on_zram(size: int) -> Iterator[Path]:
    """A fresh ext4 on a hot-added zram device (the guest's / is 9p, /tmp tmpfs: neither
    gives file pages with refaults); unmounted and removed afterwards."""
    dev_id = Path("/sys/class/zram-control/hot_add").read_text().strip()
    dev = f"/dev/zram{dev_id}"
    mnt = Path(f"/tmp/reactor-ext4-{os.getpid()}")
    try:
        write(f"/sys/block/zram{dev_id}/disksize", size)
        for _ in range(50):
            if Path(dev).exists():
                break
            time.sleep(0.1)
        subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True)
        mnt.mkdir()
        subprocess.run(["mount", "-t", "ext4", dev, str(mnt)], check=True)
        yield mnt
    finally:
        if mnt.is_dir():
            subprocess.run(["umount", str(mnt)], check=False)
            mnt.rmdir()
        with contextlib.suppress(OSError):
            write(f"/sys/block/zram{dev_id}/reset", 1)
        with contextlib.suppress(OSError):
            write("/sys/class/zram-control/hot_remove", dev_id)


@contextlib.contextmanager
def lru_gen_off() -> Iterator[None]:
    """The classic active/inactive LRU for the duration (guest only; restored after).

    Measured on Debian 7.2.12 in this lane: with MGLRU on (lru_gen 0x0007, Debian's
    default) the group's memory.stat counted 0 file refaults over two passes that took
    49,152 major faults; with the classic LRU both counters read 49,152. A refault goal is
    therefore blind under MGLRU on this kernel (docs/signals.md says so); this test checks
    the counters where the kernel keeps them.
    """
    before = LRU_GEN.read_text().strip() if LRU_GEN.exists() else None
    try:
        if before is not None:
            write(LRU_GEN, "n")
        yield
    finally:
        if before is not None:
            write(LRU_GEN, before)


@contextlib.contextmanager
def cgroup_dir(name: str, limit: int | None) -> Iterator[str]:
    path = Path(f"/sys/fs/cgroup/{name}-{os.getpid()}")
    path.mkdir()
    try:
        if limit is not None:
            write(path / "memory.max", limit)
        yield str(path)
    finally:
        for _ in range(50):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _file(directory: Path) -> str:
    """FILE_BYTES of same-filled pages (zram stores them as one word each), then evicted."""
    path = directory / "data"
    chunk = bytes([7]) * MIB
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(FILE_BYTES // MIB):
            os.write(fd, chunk)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return str(path)


def _run_passes(proc: subprocess.Popen[str], passes: int) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    for _ in range(passes):
        proc.stdin.write("pass\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "done\n"


def _delta(a: CgroupMemory, b: CgroupMemory, key: str) -> int:
    return b.counters[key] - a.counters[key]


@pytest.fixture
def anyio_backend() -> str:
    """asyncio: the trigger wait runs in a worker thread on real time."""
    return "asyncio"


@pytest.mark.anyio
async def test_cgroup_v2_limit_shows_refaults_pressure_and_fires_psi_triggers() -> None:
    """A v2 group with memory.max below its file workload shows refaults, major faults and
    memory PSI in reactor's CgroupPoller (v2 path), and PSI triggers fire on the group's
    memory.pressure and on /proc/pressure/memory (with a 1 s window: root here has
    CAP_SYS_RESOURCE, so the unprivileged 2 s rule does not apply).

    Bounds (N = file pages, L = limit pages, derived in tests/host/test_cgroup_signals.py):
    a page hit in a pass was resident at the boundary before it, and at most L are, so each
    pass after the warm-up misses at least N - L pages; every miss is one major fault and,
    the page having been evicted with a shadow entry, one file refault. Each charge above
    memory.max reclaims directly, inside psi_memstall_enter, so memory `some` stall > 0.
    """
    n, limit = FILE_BYTES // PAGE, LIMIT_BYTES // PAGE
    events: list[tuple[str, PsiTriggerEvent]] = []
    with (
        lru_gen_off(),
        ext4_on_zram(2 * FILE_BYTES) as mnt,
        cgroup_dir("reactor-sig", LIMIT_BYTES) as cg,
    ):
        data = _file(mnt)
        poller = CgroupPoller(FS, cg, "v2")
        triggers = [
            PsiTrigger("cg", "memory", "some", 10_000, 1_000_000, path=f"{cg}/memory.pressure"),
            PsiTrigger("system", "memory", "some", 10_000, 1_000_000),
        ]
        watchers = [
            PsiTriggerWatcher(FS, t, lambda *a: events.append((a[0], a[1]))) for t in triggers
        ]
        with child([READER, data], cgroup=cg) as proc:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            async with anyio.create_task_group() as tg:
                for w in watchers:
                    await tg.start(w.run)
                await anyio.to_thread.run_sync(_run_passes, proc, 1)  # warm-up
                assert poller.poll(anyio.current_time()) is None  # baseline
                await anyio.sleep(0.2)
                first = poller.poll(anyio.current_time())
                await anyio.to_thread.run_sync(_run_passes, proc, PASSES)
                await anyio.sleep(2.5)  # one more trigger evaluation after the passes
                last = poller.poll(anyio.current_time())
                tg.cancel_scope.cancel()
    assert first is not None and last is not None
    refaults = _delta(first, last, "workingset_refault_file")
    majors = _delta(first, last, "pgmajfault")
    record(
        f"cgroup v2: refaults {refaults}, major faults {majors} (bound {PASSES * (n - limit)}), "
        f"psi some {last.psi.some_stall_us if last.psi else None} us, limit hits "
        f"{last.limit_hits}, lru_gen {LRU_GEN.read_text().strip() if LRU_GEN.exists() else '-'}; "
        f"modes {[w.mode for w in watchers]}, reasons "
        f"{[w.fallback_reason for w in watchers]}; events {[(t, e.mode) for t, e in events]}"
    )
    assert majors >= PASSES * (n - limit)
    assert refaults >= PASSES * (n - limit)
    assert last.psi is not None and last.psi.some_stall_us > 0
    assert [w.mode for w in watchers] == ["trigger", "trigger"], [
        w.fallback_reason for w in watchers
    ]
    assert {t for t, _ in events} == {"psi.trigger.cg", "psi.trigger.system"}
