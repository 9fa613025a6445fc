"""The process system calls the actuators make, behind one small protocol.

:class:`ProcessCalls` is what the actuators need (pidfd, process_madvise, move_pages,
migrate_pages); :class:`RealProcessCalls` makes the real calls through
:mod:`reactor.kernelfs.syscalls`, the one place reactor calls the kernel directly.

Unit tests pass a fake that implements the protocol and changes a fake /proc tree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from reactor.kernelfs import syscalls as kernel_syscalls

__all__ = (
    "MPOL_MF_MOVE",
    "MPOL_MF_MOVE_ALL",
    "ProcessCalls",
    "RealProcessCalls",
)

#: linux/mempolicy.h: move pages mapped only by this process / by any process (needs
#: CAP_SYS_NICE).
MPOL_MF_MOVE = 1 << 1
MPOL_MF_MOVE_ALL = 1 << 2


class ProcessCalls(Protocol):
    """The system calls on other processes that the actuators make.

    Every method raises :class:`~reactor.errors.TargetVanished` when the process is gone
    (ESRCH) and :class:`~reactor.errors.KernelInterfaceError` (with ``errno``) otherwise.
    """

    def pidfd_open(self, pid: int) -> int: ...

    def close(self, fd: int) -> None: ...

    def process_madvise(self, pidfd: int, ranges: Sequence[tuple[int, int]], advice: int) -> int:
        """Bytes advised (the kernel may stop early and report fewer)."""
        ...

    def move_pages(
        self, pid: int, pages: npt.NDArray[np.uint64], node: int | None, flags: int
    ) -> npt.NDArray[np.int32]:
        """Per page: its node after the call, or a negative errno. ``node`` None queries."""
        ...

    def migrate_pages(self, pid: int, old_nodes: Sequence[int], new_nodes: Sequence[int]) -> int:
        """Pages that could not be moved."""
        ...


class RealProcessCalls:
    """The real system calls (Linux x86_64/arm64)."""

    def pidfd_open(self, pid: int) -> int:
        return kernel_syscalls.pidfd_open(pid)

    def close(self, fd: int) -> None:
        os.close(fd)

    def process_madvise(self, pidfd: int, ranges: Sequence[tuple[int, int]], advice: int) -> int:
        return kernel_syscalls.process_madvise(pidfd, ranges, advice)

    def move_pages(
        self, pid: int, pages: npt.NDArray[np.uint64], node: int | None, flags: int
    ) -> npt.NDArray[np.int32]:
        return kernel_syscalls.move_pages(pid, pages, node, flags)

    def migrate_pages(self, pid: int, old_nodes: Sequence[int], new_nodes: Sequence[int]) -> int:
        return kernel_syscalls.migrate_pages(pid, old_nodes, new_nodes)
