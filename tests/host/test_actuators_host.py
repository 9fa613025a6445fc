"""The actuators on real processes, files and cgroups that the tests create on this host.

Each test starts a child (:data:`CHILD`) that maps a file it did not write MAP_SHARED
and/or an anonymous buffer, touches every page once, prints the addresses, then sleeps
until its stdin closes; it is ended by its pid in a ``finally``. Files live in a
temporary directory under /var/tmp (ext4 here, not tmpfs) and are written, fsync'd and
dropped from the page cache first, so every page the child faults is clean, read from
disk, and mapped by the child alone (PAGEOUT skips folios mapped by several processes,
which is why the tests read page-cache residency with mincore on a mapping they never
touch). Nothing here is node-wide: node reclaim and compaction are tested on fakes only.

Why the bounds hold (written before running; host-capabilities.md §2 measured the
same kernel):

- PAGEOUT of a clean, singly-mapped, idle file range: every page is unmapped and freed
  at once (512 MiB: RSS 524 MB -> 74-82 MB, Cached -512 MiB). The child is idle, so
  nothing refaults: the mapping's Rss falls by at least 90 % of the file (slack for a
  folio under writeback or isolation by the machine's own DAMON/LRU at that instant),
  and at most 10 % of the file stays in the page cache (mincore). meminfo ``Cached`` is
  system-wide and other work on the machine adds to it, so it must fall by at least
  half the file: other activity adding 128 MiB of cache within the ~20 ms of the call
  would be needed to break that.
- WILLNEED after that PAGEOUT: each range of a call reads at most read_ahead_kb (8 MiB)
  of the file, so with 8 MiB pieces at least 90 % of the file is back in the page cache
  once the reads finish, while without pieces (four 64 MiB calls of one range each) at
  most 4 x 8 MiB comes back (+ 8 MiB slack for rounding to folios).
  WILLNEED maps nothing: the child's RSS stays within 4 MiB (its own interpreter noise).
- Anonymous PAGEOUT without swap is not issued (skipped with the reason); the child's
  RSS, read independently, stays within 4 MiB.
- COLD only deactivates: RSS within 4 MiB.
- COLLAPSE of a 64 MiB 4 KiB-populated anonymous buffer (THP mode ``madvise`` suffices,
  no MADV_HUGEPAGE): with 21 GiB free, every whole 2 MiB block collapses (512 MiB went
  0 -> 512 MiB here); at least 90 % of the aligned bytes must show in AnonHugePages.
- move_pages to node 0 on a one-node host: every present page is on node 0 before and
  after, nothing moves; node 1 answers ENODEV.
- cgroup v1 reclaim of 128 MiB from a group whose usage is ~256 MiB of clean file pages
  plus the child's ~10 MiB of anonymous memory: each 64 MiB piece lowers the limit to
  usage - 64 MiB and the kernel sets it only once usage is below it, so usage falls by
  at least 128 MiB minus usage_in_bytes' per-CPU charge batching (64 pages per CPU, 2
  CPUs: 512 KiB); the bound is 120 MiB. The original limit reads back unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import mmap
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from reactor.actuators import (
    ANON_PAGEOUT_NO_SWAP,
    CgroupReclaimer,
    MadviseActuator,
    MigrateActuator,
    NodeUnavailable,
)
from reactor.kernelfs import RealKernelFS

FS = RealKernelFS("/")
MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
FILE_BYTES = 256 * MIB
ANON_BYTES = 64 * MIB
V1_ROOT = "/sys/fs/cgroup/memory"
RSS_NOISE = 4 * MIB

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(180)]

CHILD = r"""
import json, mmap, os, sys, ctypes
path, anon_bytes = sys.argv[1], int(sys.argv[2])
out = {}
if path:
    fd = os.open(path, os.O_RDONLY)
    f = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    total = 0
    for off in range(0, len(f), 4096):
        total += f[off]
    buf = (ctypes.c_char * 1).from_buffer_copy(b"x")
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith(path):
            lo, hi = line.split()[0].split("-")
            out["file"] = [int(lo, 16), int(hi, 16) - int(lo, 16)]
            break
if anon_bytes:
    a = mmap.mmap(-1, anon_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for off in range(0, anon_bytes, 4096):
        a[off] = 1
    out["anon"] = [ctypes.addressof(ctypes.c_char.from_buffer(a)), anon_bytes]
print(json.dumps(out), flush=True)
sys.stdin.read()
"""


@dataclass
class Child:
    """A child process the test started, with the ranges it mapped."""

    proc: subprocess.Popen[str]
    ranges: dict[str, tuple[int, int]]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rollup(self.pid)["Rss"]


def rollup(pid: int) -> dict[str, int]:
    """The child's smaps_rollup in bytes, read independently of the actuators."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB$", text, re.M)}


def cached_bytes() -> int:
    match = re.search(r"^Cached:\s+(\d+) kB$", Path("/proc/meminfo").read_text(), re.M)
    assert match is not None
    return int(match.group(1)) * 1024


def swap_total() -> int:
    match = re.search(r"^SwapTotal:\s+(\d+) kB$", Path("/proc/meminfo").read_text(), re.M)
    return int(match.group(1)) * 1024 if match else 0


_libc = ctypes.CDLL(None, use_errno=True)


def resident_bytes(path: str) -> int:
    """Bytes of the file in the page cache (mincore on a mapping that is never touched)."""
    size = Path(path).stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        vec = (ctypes.c_ubyte * (size // PAGE))()
        base = _map_address(path)
        if _libc.mincore(ctypes.c_void_p(base), ctypes.c_size_t(size), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        return sum(1 for v in vec if v & 1) * PAGE
    finally:
        m.close()


def settled_resident(path: str, timeout_s: float = 5.0) -> int:
    """Resident bytes once readahead I/O has finished (mincore counts only pages whose
    read completed; WILLNEED returns while its reads are in flight)."""
    last = -1
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = resident_bytes(path)
        if now == last:
            return now
        last = now
        time.sleep(0.1)
    return last


def _map_address(path: str) -> int:
    """The start address of this process's one mapping of ``path``."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(path):
            return int(line.split("-", 1)[0], 16)
    raise LookupError(f"{path} is not mapped")


@contextlib.contextmanager
def data_file() -> Iterator[str]:
    """A FILE_BYTES file on ext4, fsync'd and dropped from the page cache (our own file)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix=f"reactor-act-{os.getpid()}-") as d:
        path = str(Path(d) / "data.bin")
        chunk = os.urandom(MIB)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(FILE_BYTES // MIB):
                os.write(fd, chunk)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        yield path


@contextlib.contextmanager
def child(path: str = "", anon_bytes: int = 0, cgroup: str | None = None) -> Iterator[Child]:
    """Start the child (in ``cgroup`` before it touches anything); end it by its pid."""
    pre = None
    if cgroup is not None:
        procs = f"{cgroup}/cgroup.procs"

        def pre() -> None:  # runs in the child before exec: join the group first
            Path(procs).write_text(str(os.getpid()))

    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, path, str(anon_bytes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pre,  # noqa: PLW1509 - only writes one cgroup file
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        ranges = {k: (v[0], v[1]) for k, v in json.loads(line).items()}
        yield Child(proc, ranges)
    finally:
        proc.kill()  # by pid
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_file_pageout_then_willneed() -> None:
    """PAGEOUT of a clean file range empties its RSS and page cache; WILLNEED in 8 MiB
    pieces refills the page cache (not RSS), where one big piece reads only 8 MiB."""
    with data_file() as path, child(path) as c:
        start, length = c.ranges["file"]
        act = MadviseActuator(FS)
        out = anyio.run(act.advise, c.pid, [(start, length)], "pageout")
        assert out.status == "applied", out
        assert out.applied_bytes == FILE_BYTES
        assert out.measured["mapped_rss_before_bytes"] >= 0.9 * FILE_BYTES
        assert out.measured["mapped_rss_after_bytes"] <= 0.1 * FILE_BYTES
        assert out.rss_delta_bytes is not None and out.rss_delta_bytes <= -0.9 * FILE_BYTES
        assert out.file_cache_delta_bytes is not None
        assert out.file_cache_delta_bytes <= -0.5 * FILE_BYTES
        assert resident_bytes(path) <= 0.1 * FILE_BYTES

        rss = c.rss()
        big = MadviseActuator(FS, willneed_piece_bytes=FILE_BYTES)
        once = anyio.run(big.advise, c.pid, [(start, length)], "willneed")
        assert once.applied_bytes == FILE_BYTES  # the kernel "advised" it all...
        assert settled_resident(path) <= 40 * MIB  # ...and read 8 MiB of each 64 MiB call

        out = anyio.run(act.advise, c.pid, [(start, length)], "willneed")
        assert out.status == "applied", out
        assert out.measured["calls"] == 4  # 64 MiB per call, 8 MiB per piece
        assert settled_resident(path) >= 0.9 * FILE_BYTES
        assert out.file_cache_delta_bytes is not None
        assert out.file_cache_delta_bytes >= 0.5 * FILE_BYTES
        assert abs(c.rss() - rss) <= RSS_NOISE


@pytest.mark.skipif(swap_total() > 0, reason="this host has swap; the no-swap refusal needs none")
def test_anonymous_pageout_without_swap_is_skipped() -> None:
    """Anonymous PAGEOUT is not issued without swap, and the child's RSS stays."""
    with child(anon_bytes=ANON_BYTES) as c:
        before = c.rss()
        out = anyio.run(MadviseActuator(FS).advise, c.pid, [c.ranges["anon"]], "pageout")
        assert out.status == "skipped"
        assert out.skipped == ANON_PAGEOUT_NO_SWAP
        assert out.issued_bytes == 0
        assert abs(c.rss() - before) <= RSS_NOISE


def test_cold_leaves_rss() -> None:
    """COLD on anonymous and file memory is applied and leaves RSS where it was."""
    with data_file() as path, child(path, ANON_BYTES) as c:
        before = c.rss()
        ranges = [c.ranges["anon"], c.ranges["file"]]
        out = anyio.run(MadviseActuator(FS).advise, c.pid, ranges, "cold")
        assert out.status == "applied", out
        assert out.applied_bytes == ANON_BYTES + FILE_BYTES
        assert abs(c.rss() - before) <= RSS_NOISE


@pytest.mark.skipif(
    "[never]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text(),
    reason="THP is disabled on this host",
)
def test_collapse_raises_anon_huge_pages() -> None:
    """COLLAPSE of a 4 KiB-populated anonymous buffer turns its aligned blocks into THPs."""
    with child(anon_bytes=ANON_BYTES + 2 * MIB) as c:
        start, length = c.ranges["anon"]
        aligned = ((start + length) // (2 * MIB) - -(-start // (2 * MIB))) * 2 * MIB
        before = rollup(c.pid)["AnonHugePages"]
        out = anyio.run(MadviseActuator(FS).advise, c.pid, [(start, length)], "collapse")
        assert out.status in ("applied", "partial"), out
        gained = rollup(c.pid)["AnonHugePages"] - before
        assert gained >= 0.9 * aligned
        assert out.measured["anon_huge_delta_bytes"] == gained


@pytest.mark.skipif(
    Path("/sys/devices/system/node/has_memory").read_text().strip() != "0",
    reason="written for a host whose only node with memory is node 0",
)
def test_move_pages_to_node_zero_and_one() -> None:
    """move_pages to node 0 finds every present page there; node 1 is a clear ENODEV."""
    with child(anon_bytes=ANON_BYTES) as c:
        act = MigrateActuator(FS)
        out = anyio.run(act.move_pages, c.pid, [c.ranges["anon"]], 0)
        assert out.status == "applied", out
        assert out.pages_moved == 0
        assert out.measured["present_pages"] == ANON_BYTES // PAGE
        assert out.measured["node0_after_bytes"] == ANON_BYTES
        with pytest.raises(NodeUnavailable, match=r"node 1 has no memory .*nodes with memory: 0"):
            anyio.run(act.move_pages, c.pid, [c.ranges["anon"]], 1)
        whole = anyio.run(act.migrate_pages, c.pid, 0, [0])
        assert whole.status == "applied" and whole.measured["not_moved_pages"] == 0
        with pytest.raises(NodeUnavailable) as info:
            anyio.run(act.migrate_pages, c.pid, 1)
        assert info.value.errno == errno.EINVAL


def _own_v1_cgroup() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path.rstrip("/")
    raise LookupError("not in a v1 memory cgroup")


@contextlib.contextmanager
def v1_cgroup() -> Iterator[str]:
    """A v1 memory cgroup of our own, removed afterwards (once its child is gone)."""
    path = f"{V1_ROOT}{_own_v1_cgroup()}/reactor-act-{os.getpid()}"
    Path(path).mkdir()
    try:
        yield path
    finally:
        for _ in range(50):
            try:
                Path(path).rmdir()
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.skipif(not Path(V1_ROOT).is_dir(), reason="needs cgroup v1 memory")
def test_cgroup_v1_reclaim_lowers_usage_and_restores_the_limit() -> None:
    """128 MiB of v1 reclaim drops the group's usage by at least 120 MiB and leaves its
    limit exactly as it was."""
    with data_file() as path, v1_cgroup() as group, child(path, cgroup=group) as c:
        limit_file = Path(f"{group}/memory.limit_in_bytes")
        original = limit_file.read_text()
        usage = int(Path(f"{group}/memory.usage_in_bytes").read_text())
        assert usage >= 0.9 * FILE_BYTES  # the child's file pages are charged here
        out = anyio.run(CgroupReclaimer(FS).reclaim, group, 128 * MIB)
        assert out.status == "applied", out
        assert out.usage_delta_bytes is not None and out.usage_delta_bytes <= -120 * MIB
        assert limit_file.read_text() == original
        assert c.proc.poll() is None  # the child lives on
