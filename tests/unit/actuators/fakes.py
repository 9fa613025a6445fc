"""A fake process for actuator unit tests: the system calls, and its /proc files.

:class:`FakeProcess` implements :class:`reactor.actuators._syscalls.ProcessCalls` over a
per-page model of a few mappings and renders ``/proc/PID/{stat,smaps,smaps_rollup,
mounts,numa_maps}`` into a FakeKernelFS after every change, with /proc/meminfo's
``Cached`` following the file pages. The kernel behaviour it models is the one measured
on the host (host-capabilities.md §2): PAGEOUT frees clean file pages and, without swap,
leaves anonymous pages where they are; WILLNEED reads at most ``willneed_cap_bytes`` per
range into the page cache (it maps nothing); COLLAPSE turns whole 2 MiB-aligned blocks
of anonymous pages into huge pages; move_pages answers ENODEV for a node without memory.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from reactor.errors import KernelInterfaceError, TargetVanished
from reactor.testing import FakeKernelFS

PAGE = 4096
MIB = 1 << 20
HUGE = 2 * MIB
ADV_COLD, ADV_PAGEOUT, ADV_WILLNEED, ADV_COLLAPSE = 20, 21, 3, 25


@dataclass
class FakeMapping:
    """One mapping: ``resident``/``dirty``/``huge`` per page, ``cached`` per page for files."""

    start: int
    size: int
    kind: Literal["anon", "file", "shmem"]
    path: str = ""
    vmflags: str = "rd wr mr mw me ac"
    resident: npt.NDArray[np.bool_] = field(init=False)
    dirty: npt.NDArray[np.bool_] = field(init=False)
    huge: npt.NDArray[np.bool_] = field(init=False)
    swapped: npt.NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        n = self.size // PAGE
        self.resident = np.ones(n, dtype=bool)
        self.dirty = np.zeros(n, dtype=bool)
        self.huge = np.zeros(n, dtype=bool)
        self.swapped = np.zeros(n, dtype=bool)

    @property
    def end(self) -> int:
        return self.start + self.size

    def pages(self, start: int, length: int) -> slice:
        lo = max(start, self.start)
        hi = min(start + length, self.end)
        if hi <= lo:
            return slice(0, 0)
        return slice((lo - self.start) // PAGE, -(-(hi - self.start) // PAGE))


class FakeProcess:
    """A process in a FakeKernelFS that answers the actuators' system calls."""

    def __init__(
        self,
        fs: FakeKernelFS,
        pid: int,
        mappings: list[FakeMapping],
        *,
        kernel_thread: bool = False,
        willneed_cap_bytes: int = 8 * MIB,
        nodes: tuple[int, ...] = (0,),
    ) -> None:
        self.fs = fs
        self.pid = pid
        self.mappings = mappings
        self.kernel_thread = kernel_thread
        self.willneed_cap_bytes = willneed_cap_bytes
        self.nodes = nodes
        self.alive = True
        self.calls: list[tuple[str, tuple[tuple[int, int], ...], int]] = []
        self.move_calls: list[tuple[int, int | None]] = []
        self.open_fds: set[int] = set()
        self.fail_next: int | None = None
        self.vanish_after_calls: int | None = None
        self.page_node: dict[int, int] = {}
        self._next_fd = 100
        self.adjust_cached(4 << 30)  # room for the file pages the tests move around
        self.render()

    # -- the /proc files ---------------------------------------------------------------------

    def render(self) -> None:
        if not self.alive:
            return
        base = f"/proc/{self.pid}"
        flags = 0x00200000 if self.kernel_thread else 0x400000
        self.fs.set_file(f"{base}/stat", f"{self.pid} (fake worker) S 1 1 1 0 -1 {flags} 0 0\n")
        ordered = sorted(self.mappings, key=lambda m: m.start)  # the kernel's order
        self.fs.set_file(f"{base}/smaps", "".join(self._smaps_entry(m) for m in ordered))
        self.fs.set_file(f"{base}/smaps_rollup", self._rollup())
        self.fs.set_file(f"{base}/mounts", "/dev/vda / ext4 rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n")
        numa = "".join(
            f"{m.start:x} default anon={int(m.resident.sum())} N0={int(m.resident.sum())} "
            "kernelpagesize_kB=4\n"
            for m in ordered
        )
        self.fs.set_file(f"{base}/numa_maps", numa)

    def _counts(self, m: FakeMapping) -> dict[str, int]:
        """Every count line of one mapping, in bytes, in the order and with the names the
        kernel prints them (6.x ``show_smap``; the host's smaps shows the same)."""
        rss = int(m.resident.sum()) * PAGE
        dirty = int((m.resident & m.dirty).sum()) * PAGE
        anon = rss if m.kind == "anon" else 0
        shared_dirty = dirty if m.kind != "anon" else 0
        private_dirty = dirty if m.kind == "anon" else 0
        return {
            "Size": m.size,
            "KernelPageSize": PAGE,
            "MMUPageSize": PAGE,
            "Rss": rss,
            "Pss": rss,
            "Pss_Dirty": dirty,
            "Shared_Clean": 0,
            "Shared_Dirty": shared_dirty,
            "Private_Clean": rss - dirty,
            "Private_Dirty": private_dirty,
            "Referenced": rss,
            "Anonymous": anon,
            "KSM": 0,
            "LazyFree": 0,
            "AnonHugePages": int((m.resident & m.huge).sum()) * PAGE if m.kind == "anon" else 0,
            "ShmemPmdMapped": 0,
            "FilePmdMapped": 0,
            "Shared_Hugetlb": 0,
            "Private_Hugetlb": 0,
            "Swap": int(m.swapped.sum()) * PAGE,
            "SwapPss": int(m.swapped.sum()) * PAGE,
            "Locked": 0,
        }

    @staticmethod
    def _lines(counts: dict[str, int]) -> str:
        # the kernel pads each label so that the count, right-aligned in 8 columns,
        # ends at column 24 ("Rss:                   8 kB")
        return "".join(f"{k + ':':<16}{v // 1024:>8} kB\n" for k, v in counts.items())

    def _smaps_entry(self, m: FakeMapping) -> str:
        inode = 0 if m.kind == "anon" else 4242
        dev = "00:00" if m.kind == "anon" else "fe:00"
        perms = "rw-p" if m.kind == "anon" else "rw-s"
        head = f"{m.start:x}-{m.end:x} {perms} 00000000 {dev} {inode}   {m.path}\n"
        tail = f"{'THPeligible:':<16}{0:>8}\nVmFlags: {m.vmflags}\n"
        return head + self._lines(self._counts(m)) + tail

    def _rollup(self) -> str:
        total: dict[str, int] = {}
        for m in self.mappings:
            for k, v in self._counts(m).items():
                if k not in ("Size", "KernelPageSize", "MMUPageSize"):
                    total[k] = total.get(k, 0) + v
        return "00400000-7fff00000000 ---p 00000000 00:00 0   [rollup]\n" + self._lines(total)

    def adjust_cached(self, delta_bytes: int) -> None:
        text = self.fs.file_text("/proc/meminfo")
        match = re.search(r"^Cached:\s+(\d+) kB$", text, re.MULTILINE)
        assert match is not None
        value = int(match.group(1)) + delta_bytes // 1024
        self.fs.set_file(
            "/proc/meminfo", text.replace(match.group(0), f"Cached:         {value} kB")
        )

    def vanish(self) -> None:
        """The process exits: its /proc directory goes, calls answer ESRCH."""
        self.alive = False
        if self.fs.exists(f"/proc/{self.pid}"):
            self.fs.remove(f"/proc/{self.pid}")

    # -- ProcessCalls ------------------------------------------------------------------------

    def pidfd_open(self, pid: int) -> int:
        if pid != self.pid or not self.alive:
            raise TargetVanished(f"pid {pid}")
        self._next_fd += 1
        self.open_fds.add(self._next_fd)
        return self._next_fd

    def close(self, fd: int) -> None:
        self.open_fds.remove(fd)

    def process_madvise(self, pidfd: int, ranges: object, advice: int) -> int:
        spans = tuple((int(s), int(n)) for s, n in ranges)  # type: ignore[attr-defined]
        assert pidfd in self.open_fds
        if self.vanish_after_calls is not None and len(self.calls) >= self.vanish_after_calls:
            self.vanish()
        if not self.alive:
            raise TargetVanished(f"pidfd {pidfd}")
        self.calls.append(("madvise", spans, advice))
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise KernelInterfaceError("process_madvise", "refused", errno=err)
        for start, length in spans:
            for m in self.mappings:
                self._advise(m, m.pages(start, length), advice)
        self.render()
        return sum(n for _, n in spans)

    def _advise(self, m: FakeMapping, sl: slice, advice: int) -> None:
        if sl.stop <= sl.start:
            return
        if advice == ADV_PAGEOUT and m.kind == "file":
            leave = m.resident[sl] & ~m.dirty[sl]
            self.adjust_cached(-int(leave.sum()) * PAGE)
            m.resident[sl] &= ~leave
        elif advice == ADV_WILLNEED and m.kind == "file":
            # one range reads at most the readahead size into the page cache; nothing is mapped
            cap = self.willneed_cap_bytes // PAGE
            self.adjust_cached(min(cap, sl.stop - sl.start) * PAGE)
        elif advice == ADV_COLLAPSE and m.kind == "anon":
            first = -(-(m.start + sl.start * PAGE) // HUGE) * HUGE
            last = (m.start + sl.stop * PAGE) // HUGE * HUGE
            if last > first:
                m.huge[(first - m.start) // PAGE : (last - m.start) // PAGE] = True

    def move_pages(
        self, pid: int, pages: npt.NDArray[np.uint64], node: int | None, flags: int
    ) -> npt.NDArray[np.int32]:
        if not self.alive:
            raise TargetVanished(f"pid {pid}")
        self.move_calls.append((len(pages), node))
        if node is not None and node not in self.nodes:
            raise KernelInterfaceError("move_pages", f"pid {pid}", errno=errno.ENODEV)
        status = np.full(len(pages), -errno.ENOENT, dtype=np.int32)
        for i, addr in enumerate(pages.tolist()):
            for m in self.mappings:
                if m.start <= addr < m.end and m.resident[(addr - m.start) // PAGE]:
                    if node is not None:
                        self.page_node[addr] = node
                    status[i] = self.page_node.get(addr, 0)
        return status

    def migrate_pages(self, pid: int, old_nodes: object, new_nodes: object) -> int:
        if not self.alive:
            raise TargetVanished(f"pid {pid}")
        if any(n not in self.nodes for n in new_nodes):  # type: ignore[attr-defined]
            raise KernelInterfaceError("migrate_pages", f"pid {pid}", errno=errno.EINVAL)
        return 0
