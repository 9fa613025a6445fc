"""Raw system calls and ioctls that are not reads or writes of kernel text.

These are part of the kernel seam (reactor/kernelfs/) so that every place where reactor
touches the kernel stays in one package: ``PAGEMAP_SCAN`` on ``/proc/PID/pagemap``,
``userfaultfd`` write-protect (for a cooperating process that registers its own memory),
``pidfd_open`` and ``process_madvise`` (for actuators). Everything is ctypes over libc's
``syscall(2)`` and ``ioctl(2)``; the numbers and struct layouts are x86_64 (and arm64 where
the generic table agrees) as in the kernel's uapi headers (``linux/fs.h``,
``linux/userfaultfd.h``). Failures raise :class:`~reactor.errors.KernelInterfaceError`
with the errno, or :class:`~reactor.errors.TargetVanished` when the process is gone.
"""

# The seam works on raw descriptors (ioctl needs one), so os.open is used here on purpose.
# ruff: noqa: PTH100, PTH118

from __future__ import annotations

import ctypes
import errno as errno_mod
import mmap
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reactor.errors import KernelInterfaceError, TargetVanished, UnsafeWrite, UnsupportedKernel
from reactor.kernelfs.base import is_damon_path

if TYPE_CHECKING:  # numpy is imported where it is used: the probe child runs without it
    import numpy as np
    import numpy.typing as npt

__all__ = (
    "MADV_COLD",
    "MADV_COLLAPSE",
    "MADV_PAGEOUT",
    "MADV_WILLNEED",
    "PAGEMAP_SCAN",
    "PAGE_IS_FILE",
    "PAGE_IS_HUGE",
    "PAGE_IS_PRESENT",
    "PAGE_IS_SOFT_DIRTY",
    "PAGE_IS_WPALLOWED",
    "PAGE_IS_WRITTEN",
    "PAGE_SIZE",
    "PM_SCAN_CHECK_WPASYNC",
    "PM_SCAN_WP_MATCHING",
    "UFFD_FEATURE_WP_ASYNC",
    "UFFD_FEATURE_WP_UNPOPULATED",
    "PagemapScanner",
    "ScanResult",
    "UffdWriteProtect",
    "guarded_mmap",
    "migrate_pages",
    "move_pages",
    "pidfd_open",
    "process_madvise",
    "pwrite_kernel_file",
    "userfaultfd_features",
)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# System call numbers (x86_64; arm64 uses the generic table where these agree).
_SYSCALLS = {
    "x86_64": {
        "userfaultfd": 323,
        "pidfd_open": 434,
        "process_madvise": 440,
        "move_pages": 279,
        "migrate_pages": 256,
    },
    "aarch64": {
        "userfaultfd": 282,
        "pidfd_open": 434,
        "process_madvise": 440,
        "move_pages": 239,
        "migrate_pages": 238,
    },
}

# linux/fs.h: PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg) with a 96-byte argument.
PAGEMAP_SCAN = 0xC0606610
PM_SCAN_WP_MATCHING = 1 << 0
PM_SCAN_CHECK_WPASYNC = 1 << 1
PAGE_IS_WPALLOWED = 1 << 0
PAGE_IS_WRITTEN = 1 << 1
PAGE_IS_FILE = 1 << 2
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
PAGE_IS_PFNZERO = 1 << 5
PAGE_IS_HUGE = 1 << 6
PAGE_IS_SOFT_DIRTY = 1 << 7

# linux/userfaultfd.h
_UFFD_API = 0xAA
_UFFD_USER_MODE_ONLY = 1
_UFFDIO_API = 0xC018AA3F
_UFFDIO_REGISTER = 0xC020AA00
_UFFDIO_UNREGISTER = 0x8010AA01
_UFFDIO_WRITEPROTECT = 0xC018AA06
_UFFDIO_REGISTER_MODE_WP = 1 << 1
_UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15

# linux/mman.h: the advices process_madvise accepts (host-capabilities.md §2).
MADV_COLD = 20
MADV_PAGEOUT = 21
MADV_WILLNEED = 3
MADV_COLLAPSE = 25


class _PageRegion(ctypes.Structure):
    _fields_ = (
        ("start", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("categories", ctypes.c_uint64),
    )


class _PmScanArg(ctypes.Structure):
    _fields_ = (
        ("size", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("start", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("walk_end", ctypes.c_uint64),
        ("vec", ctypes.c_uint64),
        ("vec_len", ctypes.c_uint64),
        ("max_pages", ctypes.c_uint64),
        ("category_inverted", ctypes.c_uint64),
        ("category_mask", ctypes.c_uint64),
        ("category_anyof_mask", ctypes.c_uint64),
        ("return_mask", ctypes.c_uint64),
    )


class _UffdioApi(ctypes.Structure):
    _fields_ = (
        ("api", ctypes.c_uint64),
        ("features", ctypes.c_uint64),
        ("ioctls", ctypes.c_uint64),
    )


class _UffdioRange(ctypes.Structure):
    _fields_ = (("start", ctypes.c_uint64), ("len", ctypes.c_uint64))


class _UffdioRegister(ctypes.Structure):
    _fields_ = (("range", _UffdioRange), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64))


class _UffdioWriteprotect(ctypes.Structure):
    _fields_ = (("range", _UffdioRange), ("mode", ctypes.c_uint64))


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)


def _nr(name: str) -> int:
    table = _SYSCALLS.get(platform.machine())
    if table is None:
        raise UnsupportedKernel(f"{name} on {platform.machine()}", None)
    return table[name]


def _syscall(name: str, *args: object) -> int:
    """Call syscall ``name``; return its result or raise OSError with the errno."""
    ret = int(_libc.syscall(ctypes.c_long(_nr(name)), *args))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _ioctl(fd: int, request: int, arg: ctypes.Structure) -> int:
    ret = int(_libc.ioctl(fd, request, ctypes.byref(arg)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def pidfd_open(pid: int) -> int:
    """A pidfd for ``pid`` (Linux 5.3); the caller closes it. TargetVanished if gone."""
    try:
        return _syscall("pidfd_open", ctypes.c_int(pid), ctypes.c_uint(0))
    except OSError as exc:
        if exc.errno == errno_mod.ESRCH:
            raise TargetVanished(f"pid {pid}") from exc
        raise KernelInterfaceError(f"pidfd_open({pid})", "refused", errno=exc.errno) from exc


def process_madvise(pidfd: int, ranges: Sequence[tuple[int, int]], advice: int) -> int:
    """Apply ``advice`` to ``(start, length)`` ranges of the pidfd's process (Linux 5.10).

    Returns the bytes the kernel advised (it may stop early: the caller compares with the
    total). The kernel takes at most UIO_MAXIOV (1024) ranges per call; callers batch.
    """
    vec = (_Iovec * len(ranges))(*[_Iovec(start, length) for start, length in ranges])
    try:
        return _syscall(
            "process_madvise",
            ctypes.c_int(pidfd),
            vec,
            ctypes.c_size_t(len(ranges)),
            ctypes.c_int(advice),
            ctypes.c_uint(0),
        )
    except OSError as exc:
        if exc.errno == errno_mod.ESRCH:
            raise TargetVanished(f"pidfd {pidfd}") from exc
        raise KernelInterfaceError(
            "process_madvise", f"advice {advice} refused", errno=exc.errno
        ) from exc


def _on_process(name: str, pid: int, *args: object) -> int:
    """A system call on process ``pid``: TargetVanished for ESRCH, else
    KernelInterfaceError naming the call, with the errno."""
    try:
        return _syscall(name, ctypes.c_int(pid), *args)
    except OSError as exc:
        if exc.errno == errno_mod.ESRCH:
            raise TargetVanished(f"pid {pid}") from exc
        raise KernelInterfaceError(name, f"pid {pid}", errno=exc.errno) from exc


def move_pages(
    pid: int, pages: npt.NDArray[np.uint64], node: int | None, flags: int
) -> npt.NDArray[np.int32]:
    """move_pages(2): per page its node after the call, or a negative errno; ``node``
    None only queries."""
    import numpy as np

    count = len(pages)
    addrs = np.ascontiguousarray(pages, dtype=np.uint64)
    status = np.full(count, -errno_mod.ENOENT, dtype=np.int32)
    nodes_ptr: ctypes.c_void_p | None = None
    if node is not None:
        nodes = np.full(count, node, dtype=np.int32)
        nodes_ptr = ctypes.c_void_p(nodes.ctypes.data)
    _on_process(
        "move_pages",
        pid,
        ctypes.c_ulong(count),
        ctypes.c_void_p(addrs.ctypes.data),
        nodes_ptr,
        ctypes.c_void_p(status.ctypes.data),
        ctypes.c_int(flags),
    )
    return status


def _node_mask(nodes: Sequence[int], words: int) -> ctypes.Array[ctypes.c_ulong]:
    mask = (ctypes.c_ulong * words)()
    for node in nodes:
        mask[node // 64] |= 1 << (node % 64)
    return mask


def migrate_pages(pid: int, old_nodes: Sequence[int], new_nodes: Sequence[int]) -> int:
    """migrate_pages(2): the number of pages that could not be moved."""
    words = max([*old_nodes, *new_nodes, 0]) // 64 + 1
    old, new = _node_mask(old_nodes, words), _node_mask(new_nodes, words)
    # the kernel reads maxnode - 1 bits (a historical off-by-one every libnuma caller
    # follows), so pass one more than the mask holds
    return _on_process(
        "migrate_pages",
        pid,
        ctypes.c_ulong(words * 64 + 1),
        ctypes.byref(old),
        ctypes.byref(new),
    )


@dataclass(frozen=True)
class ScanResult:
    """Page ranges a PAGEMAP_SCAN matched: ``starts``/``ends`` (bytes, half-open, sorted)
    and each range's category bits."""

    starts: npt.NDArray[np.uint64]
    ends: npt.NDArray[np.uint64]
    categories: npt.NDArray[np.uint64]
    calls: int


class PagemapScanner:
    """``PAGEMAP_SCAN`` (Linux 6.7) on one process's pagemap, the descriptor kept open.

    ``root`` is the kernel filesystem root (``RealKernelFS.root``); the path opened is
    ``<root>/proc/<pid>/pagemap``. One scan walks the page tables of the given ranges in
    the kernel and returns matching page ranges; with ``PM_SCAN_WP_MATCHING`` it also
    write-protects again the pages it reports, so scan and re-arm are one walk (4–10 ms
    per GiB here, host-capabilities.md §1).
    """

    def __init__(self, pid: int, *, root: str = "/", vec_len: int = 65536) -> None:
        self.pid = pid
        self.path = f"/proc/{pid}/pagemap"
        host = os.path.join(os.path.abspath(root), self.path.lstrip("/"))
        try:
            self._fd: int | None = os.open(host, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise TargetVanished(f"pid {pid}") from exc
        except OSError as exc:
            raise KernelInterfaceError(self.path, "cannot open", errno=exc.errno) from exc
        self._vec = (_PageRegion * vec_len)()
        self._vec_len = vec_len

    def scan(
        self,
        start: int,
        end: int,
        *,
        flags: int = 0,
        category_mask: int = 0,
        category_anyof_mask: int = 0,
        category_inverted: int = 0,
        return_mask: int = PAGE_IS_WRITTEN,
    ) -> ScanResult:
        """Matching page ranges in ``[start, end)``, following the walk to its end.

        The kernel stops a walk when the output vector is full and says where in
        ``walk_end``; a walk that filled fewer entries than the vector is complete (the
        kernel can report a short ``walk_end`` after a complete walk, and a second call
        then returns nothing, so a non-full answer is the end).
        """
        if self._fd is None:
            raise KernelInterfaceError(self.path, "scan after close")
        import numpy as np

        parts: list[npt.NDArray[np.uint64]] = []
        calls = 0
        pos = start
        while pos < end:
            arg = _PmScanArg(
                size=ctypes.sizeof(_PmScanArg),
                flags=flags,
                start=pos,
                end=end,
                vec=ctypes.addressof(self._vec),
                vec_len=self._vec_len,
                category_inverted=category_inverted,
                category_mask=category_mask,
                category_anyof_mask=category_anyof_mask,
                return_mask=return_mask,
            )
            try:
                n = _ioctl(self._fd, PAGEMAP_SCAN, arg)
            except OSError as exc:
                if exc.errno == errno_mod.ESRCH:
                    raise TargetVanished(f"pid {self.pid}") from exc
                raise KernelInterfaceError(self.path, "PAGEMAP_SCAN", errno=exc.errno) from exc
            calls += 1
            if n:
                raw = np.ctypeslib.as_array(self._vec)[:n]
                parts.append(raw.view(np.uint64).reshape(n, 3).copy())
            if n < self._vec_len or arg.walk_end <= pos:
                break
            pos = int(arg.walk_end)
        table = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.uint64)
        return ScanResult(table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy(), calls)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> PagemapScanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_libc.mprotect.restype = ctypes.c_int
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def guarded_mmap(size: int, fd: int = -1) -> tuple[mmap.mmap, int]:
    """Map ``size`` bytes between two inaccessible guard pages; return the map and the
    address of the usable part (which starts one page into the map).

    The guards (``PROT_NONE``) keep the kernel from merging the buffer's VMA with a
    neighbouring anonymous mapping, so smaps and maps show the buffer as its own
    mapping(s). Used by cooperating processes (the workload generator, probe tests).
    With ``fd`` the map is ``MAP_SHARED`` over that file (at least ``size`` + 2 pages).
    """
    total = size + 2 * PAGE_SIZE
    if fd >= 0:
        m = mmap.mmap(fd, total, flags=mmap.MAP_SHARED)
    else:
        m = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    for guard in (addr, addr + PAGE_SIZE + size):
        if _libc.mprotect(ctypes.c_void_p(guard), PAGE_SIZE, 0) != 0:  # PROT_NONE
            err = ctypes.get_errno()
            raise KernelInterfaceError("mprotect", "cannot protect a guard page", errno=err)
    return m, addr + PAGE_SIZE


def pwrite_kernel_file(root: str, path: str, offset: int, data: bytes) -> None:
    """Write binary ``data`` at ``offset`` of kernel file ``path`` under ``root``.

    For binary kernel files that take positioned writes (the page-idle bitmap takes
    8-byte words at 8-byte offsets); text attributes go through ``KernelFS.write_text``.
    """
    if is_damon_path(path):
        raise UnsafeWrite(path, "the native sampler never writes the DAMON sysfs tree")
    host = os.path.join(os.path.abspath(root), path.lstrip("/"))
    try:
        fd = os.open(host, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise KernelInterfaceError(path, "cannot open for writing", errno=exc.errno) from exc
    try:
        written = os.pwrite(fd, data, offset)
    except OSError as exc:
        raise KernelInterfaceError(path, f"write at {offset} refused", errno=exc.errno) from exc
    finally:
        os.close(fd)
    if written != len(data):
        raise KernelInterfaceError(path, f"short write ({written} of {len(data)} bytes)")


def _uffd_open() -> int:
    flags = os.O_CLOEXEC | os.O_NONBLOCK | _UFFD_USER_MODE_ONLY
    try:
        return _syscall("userfaultfd", ctypes.c_int(flags))
    except OSError as exc:
        raise KernelInterfaceError("userfaultfd", "cannot create", errno=exc.errno) from exc


def userfaultfd_features() -> int:
    """The userfaultfd feature bits this kernel offers (an API handshake on a scratch fd)."""
    fd = _uffd_open()
    try:
        api = _UffdioApi(api=_UFFD_API, features=0)
        try:
            _ioctl(fd, _UFFDIO_API, api)
        except OSError as exc:
            raise KernelInterfaceError("userfaultfd", "UFFDIO_API", errno=exc.errno) from exc
        return int(api.features)
    finally:
        os.close(fd)


class UffdWriteProtect:
    """Userfaultfd write-protect in async mode over this process's own memory.

    For a cooperating process (the workload generator, or an application embedding
    reactor): it registers ranges of its own address space; the kernel then resolves a
    first write to a protected page by itself (``UFFD_FEATURE_WP_ASYNC``: no message, about
    0.8 µs per page here) and marks the page written, which ``PAGEMAP_SCAN`` reports and
    re-arms from any process. Keep the object alive while monitoring: closing the
    descriptor unregisters everything.
    """

    def __init__(self) -> None:
        available = userfaultfd_features()
        if not available & UFFD_FEATURE_WP_ASYNC:
            raise UnsupportedKernel("userfaultfd UFFD_FEATURE_WP_ASYNC", "6.7")
        wanted = UFFD_FEATURE_WP_ASYNC | (available & UFFD_FEATURE_WP_UNPOPULATED)
        self.features = wanted
        self._fd: int | None = _uffd_open()
        api = _UffdioApi(api=_UFFD_API, features=wanted)
        try:
            _ioctl(self._fd, _UFFDIO_API, api)
        except OSError as exc:
            self.close()
            raise KernelInterfaceError("userfaultfd", "UFFDIO_API", errno=exc.errno) from exc

    def register(self, start: int, length: int) -> None:
        """Register ``[start, start+length)`` for write-protect and protect it now."""
        if self._fd is None:
            raise KernelInterfaceError("userfaultfd", "register after close")
        reg = _UffdioRegister(range=_UffdioRange(start, length), mode=_UFFDIO_REGISTER_MODE_WP)
        wp = _UffdioWriteprotect(
            range=_UffdioRange(start, length), mode=_UFFDIO_WRITEPROTECT_MODE_WP
        )
        try:
            _ioctl(self._fd, _UFFDIO_REGISTER, reg)
            _ioctl(self._fd, _UFFDIO_WRITEPROTECT, wp)
        except OSError as exc:
            raise KernelInterfaceError(
                "userfaultfd", f"cannot write-protect {start:#x}+{length:#x}", errno=exc.errno
            ) from exc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> UffdWriteProtect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
