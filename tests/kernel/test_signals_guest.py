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
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from reactor.kernelfs import RealKernelFS
from reactor.signals.cgroup import CgroupMemory, CgroupPoller
from reactor.signals.fragmentation import (
    EXTFRAG_INDEX,
    UNUSABLE_INDEX,
    Fragmentation,
    FragmentationPoller,
    NodeFragmentation,
    ZoneFragmentation,
    contig_page_info,
)
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
    for node in tiers.nodes:
        # the per-CPU free lists (zoneinfo) are read and counted as free, beside MemFree
        assert node.pcp_free_bytes is not None and node.pcp_free_bytes >= 0
        assert node.free_bytes == min(
            node.meminfo.mem_free_bytes + node.pcp_free_bytes, node.total_bytes
        )
    for tier in tiers.tiers:
        members = [by_node[n] for n in tier.nodes]
        assert tier.total_bytes == sum(m.meminfo.mem_total_bytes for m in members)
        assert tier.free_bytes == sum(m.free_bytes for m in members)
        assert tier.used_bytes == tier.total_bytes - tier.free_bytes
    rows = [
        (
            t.tier_id,
            t.nodes,
            t.total_bytes // MIB,
            t.used_bytes // MIB,
            round(sum(by_node[n].pcp_free_bytes or 0 for n in t.nodes) / MIB, 1),
        )
        for t in tiers.tiers
    ]
    record(f"tiers (id, nodes, total MiB, used MiB, per-CPU free MiB): {rows}")


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
        [sys.executable, "-S", "-c", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
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


def _dma32(frag: Fragmentation) -> ZoneFragmentation:
    """node0's largest zone (DMA32 in this guest: node 0 has 1 GiB, all below 4 GiB)."""
    return max((z for z in frag.zones if z.node == 0), key=lambda z: z.free_pages)


def _node(frag: Fragmentation, node: int) -> NodeFragmentation:
    return next(n for n in frag.nodes if n.node == node)


def _view(frag: Fragmentation) -> tuple[int, int, int, int, int]:
    """(unusable index at order 9 in ‰, free order-0 blocks, zone score, node score,
    fragmentation index at order 9 in ‰) of node0's DMA32, for the record."""
    z = _dma32(frag)
    return (
        z.unusable_index_milli[9],
        z.free_blocks[0],
        z.score_pct,
        _node(frag, 0).score,
        z.fragmentation_index_milli[9],
    )


@contextlib.contextmanager
def kernel_extfrag_files() -> Iterator[bool]:
    """The kernel's own extfrag files: debugfs is mounted at /sys/kernel/debug for the
    test if it is not (guest only; unmounted afterwards). Yields whether they exist."""
    mounted = False
    if not Path(EXTFRAG_INDEX).exists():
        done = subprocess.run(
            ["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"],
            check=False,
            capture_output=True,
        )
        mounted = done.returncode == 0
    try:
        yield Path(EXTFRAG_INDEX).exists() and Path(UNUSABLE_INDEX).exists()
    finally:
        if mounted:
            subprocess.run(["umount", "/sys/kernel/debug"], check=False)


NODE0_HUGEPAGES = Path("/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")


@contextlib.contextmanager
def node0_hugepages() -> Iterator[Callable[[int], int]]:
    """Yields ``reserve(n)``: grow node 0's 2 MiB hugetlb pool by ``n`` pages, returning how
    many the kernel allocated. Each is one free order-9 block taken from the buddy
    allocator. The pool is set back to its size before (guest only)."""
    before = int(NODE0_HUGEPAGES.read_text())

    def reserve(n: int) -> int:
        now = int(NODE0_HUGEPAGES.read_text())
        write(NODE0_HUGEPAGES, now + n)
        return int(NODE0_HUGEPAGES.read_text()) - now

    try:
        yield reserve
    finally:
        write(NODE0_HUGEPAGES, before)


def test_freeing_every_other_page_fragments_node0() -> None:
    """A child that frees one page of each PFN pair it holds raises node0's unusable free
    index at order 9, its order-0 free count and the node's proactive-compaction score as
    reactor's FragmentationPoller sees them; once the remaining free blocks of order >= 9
    are taken (by node 0's hugetlb pool), the fragmentation index at order 9, where no
    block is free, says "fragmentation" (>= 950 ‰), in reactor's computation and in the
    kernel's own debugfs extfrag_index (mounted for the test).

    Bounds, derived before running:

    * Each freed page's buddy (PFN xor 1) is still held by the child, so the freed page
      cannot merge and stays an order-0 block. Per-CPU lists keep up to their ``high``
      (~6,800 pages per CPU here) out of buddyinfo, so at least F/2 of the F freed pages
      must show up as order-0 blocks (F > held/4: enough pairs).
    * Zone score (mm/compaction.c, the percentage of free pages in blocks below order 9):
      before, s = floor(100 (f - g) / f) with f free pages and g of them in blocks of
      order >= 9; adding F' >= F/2 order-0 pages with g unchanged gives
      floor(100 (f - g + F') / (f + F')) >= s + floor(100 d), d = F' g / (f (f + F'))
      (increasing in F', so F/2 bounds it). Other allocations meanwhile take small
      blocks or split large ones, which only raises it; only merges into order >= 9
      blocks could lower it (none expected in 0.5 s): one point of slack.
    * Node score = sum over zones of present x score // (node present + 1): DMA32's term
      rises by at least floor(a (rise - 1)) with a = present(DMA32) / (node present + 1)
      (0.985 here), DMA's term (3,998 of 262,046 present pages) may move by 1.
    * Fragmentation index at order 9 with no free block of order >= 9 (the kernel's
      formula): 1000 - (1000 + f 1000 // 512) // b, f free pages in b blocks. With H
      order-0 holes and P pages in blocks of orders 1..8: f / b <= (H + P) / H, and
      H + P <= DMA32's 243,109 managed pages; with H >= 10,240 that is <= 23.7, so the
      index >= 1000 - (1000 / b + 1.954 x 23.7) - 1 > 950 (far above the kernel's
      extfrag_threshold, 500: it would compact, not reclaim). Before the pool took them,
      free order-9 blocks exist, so the index there is -1000.
    """
    with kernel_extfrag_files() as have_debugfs:
        poller = FragmentationPoller(FS)  # reads the debugfs files if they exist now
        try:
            before, after, full, freed, held, taken, rounds = _fragment(poller)
        finally:
            poller.close()  # before debugfs is unmounted
    z0, z1, z2 = _dma32(before), _dma32(after), _dma32(full)
    f, g = z0.free_pages, _suitable_9(z0) << 9
    half = freed // 2
    rise = 100 * half * g // (f * (f + half))
    node_rise = z0.present_pages * (rise - 1) // (_node(before, 0).present_pages + 1) - 1
    kernel_9 = {
        name: frag.kernel_extfrag_index_milli.get("0/DMA32", (None,) * 11)[9]
        for name, frag in (("before", before), ("after", after), ("full", full))
    }
    record(
        "fragmentation node0 DMA32 (unusable@9 milli, order-0 blocks, zone score, node "
        f"score, extfrag@9 milli): before {_view(before)} after {_view(after)} with the "
        f"order>=9 blocks taken {_view(full)}; freed {freed} of {held} pages; derived "
        f"zone score rise >= {rise - 1}, node >= {node_rise}; hugepages taken {taken} in "
        f"{rounds} rounds; kernel extfrag_index@9 {kernel_9} (debugfs {have_debugfs}, "
        f"errors {[x.kernel_index_error for x in (before, after, full)]})"
    )
    assert freed > held // 4, "too few PFN pairs held to fragment anything"
    assert z1.free_blocks[0] - z0.free_blocks[0] >= half
    assert z1.unusable_index_milli[9] > z0.unusable_index_milli[9]
    assert rise >= 3, f"too little free memory in order>=9 blocks before ({g} of {f} pages)"
    assert z1.score_pct >= z0.score_pct + rise - 1
    assert _node(after, 0).score >= _node(before, 0).score + node_rise
    assert z0.fragmentation_index_milli[9] == -1000  # a free order-9 block existed
    assert _suitable_9(z2) == 0, z2.free_blocks
    assert z2.free_blocks[0] >= 10_240, z2.free_blocks  # the holes are still there
    assert z2.fragmentation_index_milli[9] >= 950 and z2.fragmentation_index_milli[10] >= 950
    if have_debugfs:
        assert [x.kernel_index_error for x in (before, after, full)] == [None, None, None]
        assert kernel_9["before"] == -1000
        assert kernel_9["full"] is not None and kernel_9["full"] >= 950


def _fragment(
    poller: FragmentationPoller,
) -> tuple[Fragmentation, Fragmentation, Fragmentation, int, int, int, int]:
    """Polls before and after the child frees one page of each PFN pair, and after node
    0's hugetlb pool took DMA32's free blocks of order >= 9 (exactly as many as buddyinfo
    shows each round, so the allocations need no compaction, which would move the
    child's pages and merge the holes). Returns the three values, pages freed and held,
    huge pages taken and rounds."""
    with child([FRAGMENTER, str(320 * MIB)]) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline() == "touched\n"
        time.sleep(0.5)
        before = poller.poll(time.monotonic())
        proc.stdin.write("free\n")
        proc.stdin.flush()
        _, freed, held = proc.stdout.readline().split()
        time.sleep(0.5)
        after = poller.poll(time.monotonic())
        with node0_hugepages() as reserve:
            taken = rounds = 0
            # ``full`` is the reading that showed no free block of order >= 9 (buddyinfo
            # and the kernel's extfrag_index read in the same poll): a later one may see
            # a block that merged meanwhile (one CI run: 6 order->=9 blocks 0.2 s after a
            # round that left none), which is not what the bounds are about
            full = poller.poll(time.monotonic())
            while (left := _suitable_9(_dma32(full))) and rounds < 6:
                taken += reserve(left)
                rounds += 1
                full = poller.poll(time.monotonic())
    return before, after, full, int(freed), int(held), taken, rounds


def _suitable_9(zone: ZoneFragmentation) -> int:
    """Free blocks of order 9 the zone's free blocks of order >= 9 could supply."""
    return contig_page_info(zone.free_blocks, 9).free_blocks_suitable


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
