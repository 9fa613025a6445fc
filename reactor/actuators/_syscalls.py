"""The process system calls the actuators make, behind one small protocol.

:class:`ProcessCalls` is what the actuators need (pidfd, process_madvise, move_pages,
migrate_pages); :class:`RealProcessCalls` makes the real calls: ``pidfd_open`` and
``process_madvise`` come from :mod:`reactor.kernelfs.syscalls`, ``move_pages`` and
``migrate_pages`` are defined here with ctypes. They belong in reactor/kernelfs/ with the
other raw system calls (the lead moves them there); until then this module is the only
place in reactor/actuators/ that calls the kernel other than through a KernelFS.

Unit tests pass a fake that implements the protocol and changes a fake /proc tree.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import platform
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from reactor.errors import KernelInterfaceError, TargetVanished, UnsupportedKernel
from reactor.kernelfs import syscalls as kernel_syscalls

__all__ = (
    "MPOL_MF_MOVE",
    "MPOL_MF_MOVE_ALL",
    "ProcessCalls",
    "RealProcessCalls",
    "SyscallError",
)

#: linux/mempolicy.h: move pages mapped only by this process / by any process (needs
#: CAP_SYS_NICE).
MPOL_MF_MOVE = 1 << 1
MPOL_MF_MOVE_ALL = 1 << 2

_NUMBERS = {
    "x86_64": {"move_pages": 279, "migrate_pages": 256},
    "aarch64": {"move_pages": 239, "migrate_pages": 238},
}


class SyscallError(KernelInterfaceError):
    """A system call failed with ``errno``; ``call`` names it."""

    def __init__(self, call: str, message: str, err: int) -> None:
        self.call = call
        super().__init__(call, message, errno=err)


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


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _nr(name: str) -> int:
    table = _NUMBERS.get(platform.machine())
    if table is None:
        raise UnsupportedKernel(f"{name} on {platform.machine()}", None)
    return table[name]


def _call(name: str, pid: int, *args: object) -> int:
    ret = int(_libc.syscall(ctypes.c_long(_nr(name)), ctypes.c_int(pid), *args))
    if ret < 0:
        err = ctypes.get_errno()
        if err == errno_mod.ESRCH:
            raise TargetVanished(f"pid {pid}")
        raise SyscallError(name, f"pid {pid}", err)
    return ret


def _node_mask(nodes: Sequence[int], words: int) -> ctypes.Array[ctypes.c_ulong]:
    mask = (ctypes.c_ulong * words)()
    for node in nodes:
        mask[node // 64] |= 1 << (node % 64)
    return mask


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
        count = len(pages)
        addrs = np.ascontiguousarray(pages, dtype=np.uint64)
        status = np.full(count, -errno_mod.ENOENT, dtype=np.int32)
        nodes_ptr: ctypes.c_void_p | None = None
        if node is not None:
            nodes = np.full(count, node, dtype=np.int32)
            nodes_ptr = ctypes.c_void_p(nodes.ctypes.data)
        _call(
            "move_pages",
            pid,
            ctypes.c_ulong(count),
            ctypes.c_void_p(addrs.ctypes.data),
            nodes_ptr,
            ctypes.c_void_p(status.ctypes.data),
            ctypes.c_int(flags),
        )
        return status

    def migrate_pages(self, pid: int, old_nodes: Sequence[int], new_nodes: Sequence[int]) -> int:
        words = max([*old_nodes, *new_nodes, 0]) // 64 + 1
        old, new = _node_mask(old_nodes, words), _node_mask(new_nodes, words)
        # the kernel reads maxnode - 1 bits (a historical off-by-one every libnuma caller
        # follows), so pass one more than the mask holds
        return _call(
            "migrate_pages",
            pid,
            ctypes.c_ulong(words * 64 + 1),
            ctypes.byref(old),
            ctypes.byref(new),
        )
