"""The DAMON sysfs conformance suite against reactor.testing.FakeDamon, on the host.

The same tests run against the real 7.2.12 kernel in the lane's guest
(tests/kernel/test_conformance_real.py); a difference between the two is a bug in the fake.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from reactor.testing.damon_fake import PAGE_SIZE, FakeDamon
from reactor.testing.fakefs import FakeKernelFS
from tests.conformance import Workload
from tests.conformance.damon_sysfs import *  # noqa: F403  (the shared suite)
from tests.conformance.damon_sysfs import Sysfs

MiB = 1 << 20
#: The guest's kernel: the version the lane checks the fake against.
GUEST_KERNEL = "7.2.12"


class FakeBackend:
    """The conformance suite's backend over a FakeDamon (simulated time and processes)."""

    def __init__(self, kernel: str = GUEST_KERNEL) -> None:
        self.fake_fs = FakeKernelFS(allow_damon_writes=True)
        self.fake = FakeDamon(self.fake_fs, kernel=kernel)
        self._next_pid = 4000

    @property
    def fs(self) -> FakeKernelFS:
        return self.fake_fs

    @property
    def kernel(self) -> str:
        return self.fake.kernel

    def spawn_process(self, *, hole: int = 0) -> Workload:
        """A simulated process laid out like the guest's child: hot 4 MiB, a page, cold 32 MiB.

        The page between the buffers is left unmapped (the guest's is a read-only page that
        is never touched: mapped but not resident, which the fake cannot express). With a
        ``hole`` the cold buffer is two ranges around its middle ``hole`` bytes, the page
        between the buffers is mapped (never accessed) and a heap-like mapping lies far
        below: a real process's largest gaps are elsewhere, so vaddr's three regions span
        the hole and the guard page, as on the guest.
        """
        if hole < 0 or hole % PAGE_SIZE or hole >= 32 * MiB:
            raise ValueError(f"expected a hole of whole pages inside 32 MiB, got {hole}")
        pid = self._next_pid
        self._next_pid += 1
        base = 0x7F00_0000_0000 + (pid - 4000) * 0x1_0000_0000
        hot = (base, base + 4 * MiB)
        cold = (hot[1] + PAGE_SIZE, hot[1] + PAGE_SIZE + 32 * MiB)
        # A far-away stack-like mapping gives the vaddr "three regions" two real gaps.
        stack = (base + 0x8000_0000, base + 0x8000_0000 + 132 * 1024)
        if not hole:
            self.fake.add_process(pid, [(*hot, 1.0), (*cold, 0.0), (*stack, 0.5)])
            return Workload(pid, hot, cold)
        lo = cold[0] + (32 * MiB - hole) // 2 // PAGE_SIZE * PAGE_SIZE
        gap = (lo, lo + hole)
        heap = (base - 0x4000_0000, base - 0x4000_0000 + 132 * 1024)
        ranges = [(*heap, 0.5), (*hot, 1.0), (hot[1], cold[0], 0.0)]
        ranges += [(cold[0], gap[0], 0.0), (gap[1], cold[1], 0.0), (*stack, 0.5)]
        self.fake.add_process(pid, ranges)
        return Workload(pid, hot, cold, gap)

    def kill_process(self, pid: int) -> None:
        self.fake.remove_process(pid)

    def wait(self, seconds: float) -> None:
        self.fake.advance(seconds)

    def mode(self, path: str) -> int | None:
        return self.fake.mode(path)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.fake.set_exclusive_user("damon_stat", True)
        try:
            yield
        finally:
            self.fake.set_exclusive_user("damon_stat", False)

    def exclusive_user(self) -> AbstractContextManager[None]:
        return self._exclusive()

    def lock_held(self, kdamond: int) -> AbstractContextManager[None]:
        assert self.fake.kdamond_pid(kdamond) is not None, "lock_held needs a running kdamond"
        return self.fake.hold_lock()


def start_cold_pageout(backend: FakeBackend, *, hole: int = 0) -> tuple[Sysfs, Workload]:
    """One kdamond on a fresh simulated process (``hole``: see ``spawn_process``) with a
    pageout scheme for regions of no access, at least 3 aggregations old, turned on
    (simulated time not advanced)."""
    work = backend.spawn_process(hole=hole)
    s = Sysfs(backend)
    s.kdamonds(1)
    s.stage(pids=(work.pid,))
    sch = s.scheme()
    s.w(f"{sch}/action", "pageout")
    s.w(f"{sch}/access_pattern/nr_accesses/max", 0)
    s.w(f"{sch}/access_pattern/age/min", 3)
    s.state(0, "on")
    return s, work


@pytest.fixture
def damon() -> FakeBackend:
    """A fresh fake DAMON at the guest's kernel version."""
    return FakeBackend()
