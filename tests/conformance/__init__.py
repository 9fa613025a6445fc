"""One DAMON sysfs conformance suite for two backends: the fake and the real kernel.

tests/conformance/damon_sysfs.py holds plain pytest tests that take a ``damon`` fixture
(a :class:`DamonBackend`). The host runs them against reactor.testing.FakeDamon
(tests/unit/damon_fake/test_conformance_fake.py); the real-kernel lane runs the same
tests inside its qemu guest (tests/kernel/test_conformance_real.py, with the fixture from
tests/conformance/real_backend.py). Any behaviour in which they differ is a bug in the
fake. The file names do not start with ``test_`` so pytest never collects the suite on
its own, without a backend.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from reactor.kernelfs import KernelFS

__all__ = ("DamonBackend", "Workload")


@dataclass(frozen=True)
class Workload:
    """A process the backend started: a hot buffer touched in a loop, a cold one left alone.

    Ranges are [start, end) virtual addresses in bytes. ``hole``, when the process was
    asked for one, is the part of the cold buffer that was unmapped after it was written
    (no mapping covers it; the cold buffer's other pages stay mapped and resident).
    """

    pid: int
    hot: tuple[int, int]
    cold: tuple[int, int]
    hole: tuple[int, int] | None = None


class DamonBackend(Protocol):
    """What the suite needs from a backend (the fake or the guest's real kernel)."""

    @property
    def fs(self) -> KernelFS:
        """A filesystem where /sys/kernel/mm/damon/admin/... is the backend's DAMON tree."""
        ...

    @property
    def kernel(self) -> str:
        """The kernel version string (``uname -r`` in the guest)."""
        ...

    def spawn_process(self, *, hole: int = 0) -> Workload:
        """Start a process with a hot and a cold buffer (ended by the backend at teardown).

        With ``hole`` (bytes, a multiple of the page size, less than the cold buffer) the
        middle ``hole`` bytes of the cold buffer are unmapped once it is written.
        """
        ...

    def kill_process(self, pid: int) -> None:
        """End a process this backend started, and reap it."""
        ...

    def wait(self, seconds: float) -> None:
        """Let time pass: sleep in the guest, advance simulated time on the fake."""
        ...

    def mode(self, path: str) -> int | None:
        """Permission bits of a DAMON sysfs path (None if it does not exist)."""
        ...

    def exclusive_user(self) -> AbstractContextManager[None]:
        """While inside, an exclusive DAMON user (DAMON_STAT) runs a kdamond of its own."""
        ...

    def lock_held(self, kdamond: int) -> AbstractContextManager[None]:
        """While inside, damon_sysfs_lock is held by a long walk on running ``kdamond``.

        The kdamond must run with a scheme whose apply interval is at least 2 s.
        """
        ...
