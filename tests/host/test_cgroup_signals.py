"""Cgroup signals on this machine's real cgroupfs, with cgroups, files and processes the
test creates (and removes, by path and pid, in finally blocks).

This host is a hybrid hierarchy (host-capabilities.md §3): the memory controller is on
cgroup v1 (/sys/fs/cgroup/memory) and PSI on cgroup v2 (/sys/fs/cgroup/unified). Each
workload process is placed in a v1 memory cgroup (for the limit and memory.stat) and a v2
cgroup (for its own memory.pressure), by writing its pid to both cgroup.procs.

The workload maps a file it did not write (the test evicts it from the page cache first,
so the pages are charged to the workload's cgroup when it faults them in), advises
MADV_RANDOM so that every fault reads exactly one page (no readahead), and touches one
byte per page, in order, once per pass.

Why the bounds hold (N = file pages, L = limit pages): a page that is a hit in pass k
was touched in pass k-1 and must stay resident from then until its access in pass k; both
instants lie on either side of the boundary between the passes, so every page hit in pass
k is resident at that one instant, and at most L pages are. So at least N - L accesses per
pass miss, and each miss on a file mapping with no readahead is one major fault charged
to the workload's memory cgroup. In the unlimited control the first (warm-up) pass loads
the whole file and nothing evicts it on a 24 GiB idle machine, so later passes fault
nothing. Refaults need an evicted page with its shadow entry; only the limited group
evicts. Memory PSI is stall time in reclaim and in refaults of recently active pages;
only the limited group reclaims.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reactor.errors import TargetVanished
from reactor.kernelfs import RealKernelFS
from reactor.signals.cgroup import CgroupMemory, CgroupPoller
from reactor.signals.psi import PsiPoller

FS = RealKernelFS("/")
V1_ROOT = "/sys/fs/cgroup/memory"
V2_ROOT = "/sys/fs/cgroup/unified"
PAGE = os.sysconf("SC_PAGE_SIZE")
FILE_BYTES = 256 << 20
LIMIT_BYTES = 64 << 20
PASSES = 3

WORKLOAD = """
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


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path in the hierarchy of ``controller`` ('' for v2)."""
    with Path("/proc/self/cgroup").open() as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers.split(",") == [controller] or (controller == "" and controllers == ""):
                return path.rstrip("/")
    raise LookupError(f"not in a {controller or 'v2'} cgroup")


def _hybrid_available() -> bool:
    return Path(V1_ROOT).is_dir() and Path(f"{V2_ROOT}/memory.pressure").exists()


@contextlib.contextmanager
def make_cgroup(path: str) -> Iterator[str]:
    """Create cgroup directory ``path`` and remove it afterwards (its processes must be gone)."""
    Path(path).mkdir()
    try:
        yield path
    finally:
        for _ in range(50):  # a killed process leaves the group a moment after wait()
            try:
                Path(path).rmdir()
                break
            except OSError:
                time.sleep(0.1)


@contextlib.contextmanager
def workload_file(directory: str, name: str) -> Iterator[str]:
    """A FILE_BYTES file written here and evicted from the page cache (our own file only)."""
    path = str(Path(directory) / name)
    chunk = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(FILE_BYTES >> 20):
            os.write(fd, chunk)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    try:
        yield path
    finally:
        Path(path).unlink()


@dataclass
class Worker:
    """One workload process placed in a v1 memory cgroup and a v2 cgroup."""

    proc: subprocess.Popen[str]

    def run_pass(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("pass\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "done\n"


@contextlib.contextmanager
def worker(file: str, v1_dir: str, v2_dir: str) -> Iterator[Worker]:
    """Start the workload, move it into both cgroups before it touches the file, and end
    it by pid afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD, file],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for d in (v1_dir, v2_dir):
            Path(f"{d}/cgroup.procs").write_text(str(proc.pid))
        yield Worker(proc)
    finally:
        proc.kill()  # by pid
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def counter_delta(sample: CgroupMemory, name: str) -> int:
    """The increase of counter ``name`` over the sample's interval."""
    return round(sample.rates_per_s.get(name, 0.0) * sample.interval_s)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not _hybrid_available(), reason="needs cgroup v1 memory and v2 PSI")
def test_limited_cgroup_reclaims_and_control_does_not() -> None:
    """A file-backed workload larger than its v1 memory limit shows major faults of at
    least (N - L) pages per pass, refaults, limit hits and memory PSI stall; the same
    workload unlimited shows none of them after its warm-up pass."""
    tag = f"reactor-test-{os.getpid()}"
    v1_parent = f"{V1_ROOT}{_own_cgroup('memory')}"
    v2_parent = f"{V2_ROOT}{_own_cgroup('')}"
    n_pages, l_pages = FILE_BYTES // PAGE, LIMIT_BYTES // PAGE
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir="/var/tmp", prefix=tag))
        groups = {}
        for role in ("limited", "control"):
            v1 = stack.enter_context(make_cgroup(f"{v1_parent}/{tag}-{role}"))
            v2 = stack.enter_context(make_cgroup(f"{v2_parent}/{tag}-{role}"))
            groups[role] = (v1, v2)
        Path(f"{groups['limited'][0]}/memory.limit_in_bytes").write_text(str(LIMIT_BYTES))
        samples: dict[str, CgroupMemory] = {}
        for role, (v1, v2) in groups.items():
            file = stack.enter_context(workload_file(tmp, role))
            with worker(file, v1, v2) as w:
                poller = CgroupPoller(FS, v1, "v1", pressure_dir=v2)
                assert poller.version == "v1"
                w.run_pass()  # warm-up: both groups read the whole file once
                assert poller.poll(time.monotonic()) is None
                for _ in range(PASSES):
                    w.run_pass()
                sample = poller.poll(time.monotonic())
                assert sample is not None and sample.psi is not None
                samples[role] = sample
                poller.close()
        lim, ctl = samples["limited"], samples["control"]
        observed = {
            role: {
                "pgmajfault": counter_delta(s, "pgmajfault"),
                "refault_file": counter_delta(s, "workingset_refault_file"),
                "limit_hits": s.limit_hits,
                "psi_some_us": s.psi.some_stall_us if s.psi else -1,
                "usage_bytes": s.usage_bytes,
            }
            for role, s in samples.items()
        }
        print(f"observed: {observed}, bound {PASSES * (n_pages - l_pages)}")
        assert lim.limit_bytes == LIMIT_BYTES and ctl.limit_bytes is None
        assert lim.usage_bytes <= LIMIT_BYTES
        assert observed["limited"]["pgmajfault"] >= PASSES * (n_pages - l_pages), observed
        assert observed["limited"]["refault_file"] > 0, observed
        assert lim.limit_hits > 0, observed
        assert lim.psi is not None and lim.psi.some_stall_us > 0, observed
        # The control: at most 1% of a pass's pages fault after warm-up, nothing refaults,
        # and its stall is a small fraction of the limited group's.
        assert observed["control"]["pgmajfault"] <= n_pages // 100, observed
        assert observed["control"]["refault_file"] == 0, observed
        assert ctl.limit_hits == 0, observed
        assert ctl.psi is not None and ctl.psi.some_stall_us * 10 <= lim.psi.some_stall_us


@pytest.mark.root
@pytest.mark.skipif(not _hybrid_available(), reason="needs cgroup v1 memory and v2 PSI")
def test_removed_cgroup_is_target_vanished_and_recreation_restarts() -> None:
    """Removing a polled v1 cgroup makes poll raise TargetVanished; a new group at the same
    path is a new instance whose first poll is a fresh baseline."""
    path = f"{V1_ROOT}{_own_cgroup('memory')}/reactor-test-{os.getpid()}-vanish"
    cgroup = Path(path)
    cgroup.mkdir()
    try:
        poller = CgroupPoller(FS, path)
        assert poller.version == "v1"
        assert poller.poll(1.0) is None
        assert poller.poll(2.0) is not None
        cgroup.rmdir()
        with pytest.raises(TargetVanished) as info:
            poller.poll(3.0)
        assert info.value.target == path
        with pytest.raises(TargetVanished):
            poller.poll(4.0)
        cgroup.mkdir()
        assert poller.poll(5.0) is None  # a new group: new baseline
        sample = poller.poll(6.0)
        assert sample is not None and sample.instance == 2
        poller.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            cgroup.rmdir()


@pytest.mark.root
@pytest.mark.skipif(
    not Path(f"{V2_ROOT}/memory.pressure").exists(), reason="needs cgroup v2 with PSI files"
)
def test_removed_v2_group_psi_is_target_vanished_and_recreation_restarts() -> None:
    """The PSI twin of the test above, on a v2 group of our own: removing it makes the
    PsiPoller of its memory.pressure raise TargetVanished (the group's directory as the
    target) on every poll; a group created again at the path is a new baseline, also
    when it is removed and created again between two polls (kernfs fails the kept file
    of the removed group with ENODEV, and the poller reopens at once)."""
    path = f"{V2_ROOT}{_own_cgroup('')}/reactor-test-{os.getpid()}-psi-vanish"
    cgroup = Path(path)
    cgroup.mkdir()
    try:
        poller = PsiPoller.for_cgroup(FS, path, "memory")
        assert poller.topic == "psi.cgroup.memory"
        assert poller.poll(1.0) is None
        assert poller.poll(2.0) is not None
        cgroup.rmdir()
        with pytest.raises(TargetVanished) as info:
            poller.poll(3.0)
        assert info.value.target == path
        with pytest.raises(TargetVanished):
            poller.poll(4.0)
        cgroup.mkdir()
        assert poller.poll(5.0) is None  # a new group: new baseline
        assert poller.poll(6.0) is not None
        cgroup.rmdir()
        cgroup.mkdir()
        assert poller.poll(7.0) is None  # re-created between polls: baseline, no error
        sample = poller.poll(8.0)
        assert sample is not None and sample.some_stall_us == 0
        poller.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            cgroup.rmdir()
