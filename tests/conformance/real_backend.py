"""The conformance suite's backend on a real kernel: for the real-kernel lane's guest ONLY.

Use it from tests/kernel/test_conformance_real.py::

    from tests.conformance.damon_sysfs import *  # noqa: F403
    from tests.conformance.real_backend import real_damon as damon  # noqa: F401

The fixture writes the kernel's DAMON sysfs tree, enables and disables DAMON_STAT (and
the suite DAMON_RECLAIM/DAMON_LRU_SORT, which teardown turns off again), and starts
child processes. On the development and CI machines /sys/kernel/mm/damon belongs
to the machine's own kdamond, so the fixture refuses to run (pytest.fail, never a quiet
skip) unless /proc/cmdline carries ``reactor_lane=1`` (set only by .ci/kernel_lane.py for
its qemu guest). At teardown it ends its children by pid, turns every kdamond off and
writes ``nr_kdamonds`` 0 (only ever in the guest).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reactor.errors import KernelInterfaceError
from reactor.kernelfs import RealKernelFS
from reactor.testing.tlb import FLUSH_TLB
from tests.conformance import Workload

__all__ = ("RealBackend", "lane_refusal", "real_damon")

KDAMONDS = "/sys/kernel/mm/damon/admin/kdamonds"
DAMON_STAT = "/sys/module/damon_stat/parameters/enabled"
#: Exclusive DAMON modules a conformance test may enable (only ever in the guest).
EXCLUSIVE_MODULES = (
    "/sys/module/damon_reclaim/parameters/enabled",
    "/sys/module/damon_lru_sort/parameters/enabled",
)
MiB = 1 << 20

#: The child: a 4 MiB hot buffer written every 2 ms, a 32 MiB cold one touched once.
#: One mapping with a read-only page in the middle keeps the two buffers in separate VMAs
#: (adjacent anonymous mmaps would merge, real-kernel-lane.md gotcha 6). With a hole
#: (argv[3] bytes, 0 for none) the middle of the cold buffer is unmapped after it was
#: written; the child never touches the hole (the hot loop writes the hot buffer only).
#: Each pass ends with ``flush_tlb()`` (reactor.testing.tlb: without it DAMON under TCG
#: can miss every write; a CI run saw the hot buffer at 0 accesses for 10 s). Its 64-page
#: scratch mapping is made right after the buffer, before the hole is unmapped: so it
#: lies just below the hot buffer (no region joins it to the cold one), never in the hole
#: (a lane run of the hole row found it there when it was made later).
CHILD = (
    r"""
import ctypes, json, mmap, sys, time
HOT, COLD, HOLE, PAGE = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), mmap.PAGESIZE
buf = mmap.mmap(-1, HOT + PAGE + COLD)
"""
    + FLUSH_TLB
    + r"""
base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
libc.mprotect(base + HOT, PAGE, 1)  # PROT_READ
for off in range(HOT + PAGE, HOT + PAGE + COLD, PAGE):
    buf[off] = 1
cold = [base + HOT + PAGE, base + HOT + PAGE + COLD]
hole = None
if HOLE:
    lo = cold[0] + (COLD - HOLE) // 2 // PAGE * PAGE
    if libc.munmap(lo, HOLE):
        raise OSError(ctypes.get_errno(), "munmap of the hole")
    hole = [lo, lo + HOLE]
print(json.dumps({"hot": [base, base + HOT], "cold": cold, "hole": hole}), flush=True)
i = 0
while True:
    i = (i + 1) % 255 or 1
    for off in range(0, HOT, PAGE):
        buf[off] = i
    flush_tlb()
    time.sleep(0.002)
"""
)


def lane_refusal(cmdline: str | None = None) -> str | None:
    """Why this machine is not the lane's guest (None when ``reactor_lane=1`` is set)."""
    if cmdline is None:
        try:
            cmdline = Path("/proc/cmdline").read_text()
        except OSError as exc:
            return f"cannot read /proc/cmdline: {exc}"
    if "reactor_lane=1" not in cmdline.split():
        return "/proc/cmdline has no reactor_lane=1: this is not the real-kernel lane's guest"
    return None


class RealBackend:
    """DamonBackend over the guest's real DAMON sysfs (see module docs)."""

    def __init__(self) -> None:
        why = lane_refusal()
        if why is not None:  # checked again here: the class must never touch a host
            raise RuntimeError(f"refusing to drive a real DAMON sysfs: {why}")
        self._fs = RealKernelFS("/", allow_damon_writes=True)
        self._children: dict[int, subprocess.Popen[str]] = {}
        self._stat_enabled_by_us = False

    @property
    def fs(self) -> RealKernelFS:
        return self._fs

    @property
    def kernel(self) -> str:
        return os.uname().release

    def spawn_process(self, *, hole: int = 0) -> Workload:
        if hole < 0 or hole % os.sysconf("SC_PAGE_SIZE") or hole >= 32 * MiB:
            raise ValueError(f"expected a hole of whole pages inside 32 MiB, got {hole}")
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", CHILD, str(4 * MiB), str(32 * MiB), str(hole)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._children[proc.pid] = proc
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        return Workload(
            proc.pid,
            (info["hot"][0], info["hot"][1]),
            (info["cold"][0], info["cold"][1]),
            None if info["hole"] is None else (info["hole"][0], info["hole"][1]),
        )

    def kill_process(self, pid: int) -> None:
        proc = self._children.pop(pid)
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def mode(self, path: str) -> int | None:
        try:
            return stat.S_IMODE(Path(self._fs.host_path(path)).stat().st_mode)
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def exclusive_user(self) -> Iterator[None]:
        """DAMON_STAT runs an exclusive context while inside."""
        self._fs.write_text(DAMON_STAT, "Y")
        self._stat_enabled_by_us = True
        time.sleep(0.3)
        try:
            yield
        finally:
            self._fs.write_text(DAMON_STAT, "N")
            self._stat_enabled_by_us = False
            time.sleep(0.3)

    @contextlib.contextmanager
    def lock_held(self, kdamond: int) -> Iterator[None]:
        """A thread's update_schemes_tried_regions holds damon_sysfs_lock while inside."""
        errors: list[BaseException] = []

        def walk() -> None:
            try:
                self._fs.write_text(f"{KDAMONDS}/{kdamond}/state", "update_schemes_tried_regions")
            except KernelInterfaceError as exc:
                errors.append(exc)

        thread = threading.Thread(target=walk, name="conformance-walk", daemon=True)
        thread.start()
        time.sleep(0.5)  # the walk waits a whole apply interval (>= 2 s) holding the lock
        try:
            yield
        finally:
            thread.join(timeout=60)
        assert not thread.is_alive(), "the walk holding damon_sysfs_lock never returned"
        assert not errors, f"the walk holding the lock failed: {errors}"

    def close(self) -> None:
        """End the children, stop every kdamond, leave nr_kdamonds at 0."""
        for pid in list(self._children):
            self.kill_process(pid)
        if self._stat_enabled_by_us:
            self._fs.write_text(DAMON_STAT, "N")
        for param in EXCLUSIVE_MODULES:  # a failed test may have left one running
            if self._fs.exists(param) and self._fs.read_text(param).strip() == "Y":
                self._fs.write_text(param, "N")
        nr = int(self._fs.read_text(f"{KDAMONDS}/nr_kdamonds"))
        for k in range(nr):
            if self._fs.read_text(f"{KDAMONDS}/{k}/state").strip() == "on":
                with contextlib.suppress(KernelInterfaceError):
                    self._fs.write_text(f"{KDAMONDS}/{k}/state", "off")
        deadline = time.monotonic() + 10
        while True:
            try:
                self._fs.write_text(f"{KDAMONDS}/nr_kdamonds", "0")
                return
            except KernelInterfaceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@pytest.fixture
def real_damon() -> Iterator[RealBackend]:
    """The guest's real DAMON sysfs as a conformance backend; fails loudly off the lane."""
    why = lane_refusal()
    if why is not None:
        pytest.fail(f"the real DAMON backend runs only in the lane's guest: {why}", pytrace=False)
    backend = RealBackend()
    left = backend.fs.read_text(f"{KDAMONDS}/nr_kdamonds").strip()
    if left != "0":
        pytest.fail(f"nr_kdamonds is {left} at the start of a test (a test leaked kdamonds)")
    try:
        yield backend
    finally:
        backend.close()
