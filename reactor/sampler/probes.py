"""Access probes: how the native sampler learns which memory a process touched.

One interface (:class:`ProbeSession`: ``start``, ``collect``, ``ranges``, ``close``) per
process, four implementations, best first where the kernel has them:

=============  ==============================================  ===========  ============
probe          mechanism                                       granularity  sees
=============  ==============================================  ===========  ============
``page-idle``  /sys/kernel/mm/page_idle/bitmap + pagemap PFNs  page         reads+writes
``soft-dirty`` ``clear_refs 4`` + pagemap bit 55               page         writes
``uffd-wp``    userfaultfd WP-async in the target (it          page         writes
               cooperates) + PAGEMAP_SCAN from here
``referenced`` ``clear_refs 1`` + smaps ``Referenced``         mapping      reads+writes
=============  ==============================================  ===========  ============

Per-page probes return :class:`~reactor.sampler.engine.AccessedRanges` (every page seen
accessed since the previous ``collect``); ``referenced`` returns
:class:`~reactor.sampler.procfs.Mappings` with one exact byte count per mapping (on 4 KiB
anonymous mappings; coarser under THP and on file mappings with large folios).

``clear_refs`` resets the accessed bits the kernel's LRU and any running DAMON also read,
so the probes that write it refuse pid 1 and reactor's own process (machine rule: only
processes reactor or the test started are ever sampled this way).

Each session accounts its own cost (:class:`ProbeCost`): kernel CPU (system time of the
calling thread: the page walks of clear_refs, smaps, pagemap, PAGEMAP_SCAN) and user CPU
(parsing), from ``getrusage(RUSAGE_THREAD)`` around each collect.
"""

from __future__ import annotations

import errno as errno_mod
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from reactor.errors import KernelInterfaceError, TargetVanished, UnsafeWrite
from reactor.kernelfs import KeptFile, KernelFS
from reactor.sampler.engine import AccessedRanges
from reactor.sampler.procfs import Mappings, SmapsReader, parse_maps

__all__ = (
    "PAGE_IDLE_BITMAP",
    "PROBE_NAMES",
    "PageIdleSession",
    "ProbeCost",
    "ProbeInfo",
    "ProbeSession",
    "ReferencedSession",
    "SoftDirtySession",
    "UffdWpSession",
    "check_clear_refs_target",
    "mask_to_ranges",
    "open_session",
)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PAGE_IDLE_BITMAP = "/sys/kernel/mm/page_idle/bitmap"
PROBE_NAMES = ("page-idle", "soft-dirty", "uffd-wp", "referenced")

_PM_SOFT_DIRTY = np.uint64(1 << 55)
_PM_PRESENT = np.uint64(1 << 63)
_PM_PFN_MASK = np.uint64((1 << 55) - 1)


@dataclass(frozen=True)
class ProbeInfo:
    """What a probe offers on this machine, as measured by testing its effect.

    ``granularity_bytes`` is the page size for per-page probes and 0 for ``referenced``
    (one count per mapping: as fine as the target's mappings). ``detail`` says what was
    tried and seen, or why the probe is unavailable.
    """

    name: str
    available: bool
    per_page: bool
    granularity_bytes: int
    sees: str
    needs_cooperation: bool
    detail: str


@dataclass
class ProbeCost:
    """CPU seconds a probe session spent, over ``calls`` starts and collects:
    ``user_s`` in the sections that work on what the kernel returned (parsing, masks:
    marked with :meth:`user`), ``kernel_s`` in the rest (the system calls whose page
    walks are the probe's kernel cost, with the Python calls that issue them).

    Both come from the thread's CPU clock (exact), not from getrusage's user/system
    split: the kernel charges each timer tick wholly to the mode it interrupts, and a
    sampler that wakes every 100 ms meets the 4 ms tick at the same phase of its work
    each time, so that split swung the 256 MiB chunked ratio between 0.08 and 0.42.
    """

    kernel_s: float = 0.0
    user_s: float = 0.0
    calls: int = 0
    _user_in_call: float = field(default=0.0, repr=False)

    @contextmanager
    def measure(self) -> Iterator[None]:
        """One start or collect."""
        self._user_in_call = 0.0
        before = time.thread_time()
        try:
            yield
        finally:
            total = time.thread_time() - before
            self.user_s += self._user_in_call
            self.kernel_s += max(total - self._user_in_call, 0.0)
            self.calls += 1

    @contextmanager
    def user(self) -> Iterator[None]:
        """A user-space section inside :meth:`measure`."""
        before = time.thread_time()
        try:
            yield
        finally:
            self._user_in_call += time.thread_time() - before


class ProbeSession(Protocol):
    """A probe attached to one process."""

    name: str
    pid: int
    per_page: bool
    cost: ProbeCost

    def start(self) -> None:
        """Arm the probe: accesses before this call are not reported."""
        ...

    def ranges(self) -> list[tuple[int, int]]:
        """The address ranges monitored now (re-read at the update interval)."""
        ...

    def collect(self) -> AccessedRanges | Mappings:
        """What was accessed since the previous collect (or start), and re-arm."""
        ...

    def close(self) -> None: ...


def check_clear_refs_target(pid: int) -> None:
    """Refuse pid 1 and this process: clear_refs would wipe accessed bits they rely on."""
    if pid <= 1 or pid == os.getpid():
        who = "pid 1" if pid == 1 else "reactor's own process" if pid == os.getpid() else "pid"
        raise UnsafeWrite(
            f"/proc/{pid}/clear_refs",
            f"clear_refs is never written to {who} ({pid}); sample processes reactor "
            "started, or use the uffd-wp probe for the own process",
        )


def mask_to_ranges(
    base: int, mask: npt.NDArray[np.bool_], page_size: int = PAGE_SIZE
) -> AccessedRanges:
    """Runs of True pages in ``mask`` (page 0 at ``base``) as byte ranges."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded)).reshape(-1, 2).astype(np.int64)
    return AccessedRanges(base + edges[:, 0] * page_size, base + edges[:, 1] * page_size)


def _concat(parts: Sequence[AccessedRanges]) -> AccessedRanges:
    if not parts:
        return AccessedRanges.empty()
    starts = np.concatenate([p.starts for p in parts])
    ends = np.concatenate([p.ends for p in parts])
    order = np.argsort(starts, kind="stable")
    return AccessedRanges(starts[order], ends[order])


def _vanished_or_raise(
    pid: int, exc: KernelInterfaceError
) -> TargetVanished | KernelInterfaceError:
    if exc.errno in (errno_mod.ENOENT, errno_mod.ESRCH):
        return TargetVanished(f"pid {pid}")
    return exc


class _ProcSession:
    """Shared parts of the probes that read /proc/PID through a KernelFS."""

    name = "?"
    per_page = True

    def __init__(
        self, fs: KernelFS, pid: int, ranges: Sequence[tuple[int, int]] | None = None
    ) -> None:
        self.fs = fs
        self.pid = pid
        self.fixed_ranges = [(int(s), int(e)) for s, e in ranges] if ranges else None
        self.cost = ProbeCost()

    def _read(self, name: str) -> str:
        try:
            return self.fs.read_text(f"/proc/{self.pid}/{name}")
        except KernelInterfaceError as exc:
            raise _vanished_or_raise(self.pid, exc) from exc

    def _write(self, name: str, value: str) -> None:
        try:
            self.fs.write_text(f"/proc/{self.pid}/{name}", value)
        except KernelInterfaceError as exc:
            raise _vanished_or_raise(self.pid, exc) from exc

    def mappings(self) -> Mappings:
        maps = parse_maps(self._read("maps"), f"/proc/{self.pid}/maps")
        if self.fixed_ranges is not None:
            maps = maps.within(self.fixed_ranges)
        return maps

    def ranges(self) -> list[tuple[int, int]]:
        if self.fixed_ranges is not None:
            return list(self.fixed_ranges)
        maps = self.mappings()
        return [(int(s), int(e)) for s, e in zip(maps.start, maps.end, strict=True)]

    def close(self) -> None:
        return None


class ReferencedSession(_ProcSession):
    """``clear_refs 1`` + smaps ``Referenced``: one exact count per mapping, any process.

    A collect reads smaps, then clears the bits, then parses (:class:`~reactor.sampler.
    procfs.SmapsReader`: counts only, at the byte positions of the previous read, while
    the mappings stay the same). An access that lands between the read
    and the clear is lost for this interval (the race window is the clear_refs walk,
    about 12 ms per GiB here); a page touched more often than once per sampling interval
    is seen again in the next one.
    """

    name = "referenced"
    per_page = False

    def __init__(
        self, fs: KernelFS, pid: int, ranges: Sequence[tuple[int, int]] | None = None
    ) -> None:
        check_clear_refs_target(pid)
        super().__init__(fs, pid, ranges)
        self.reader = SmapsReader(self.fixed_ranges, f"/proc/{pid}/smaps")
        self._smaps: KeptFile | None = None

    def start(self) -> None:
        with self.cost.measure():
            self._write("clear_refs", "1")

    def _read_smaps(self) -> bytes:
        """The whole of smaps as bytes (megabytes with thousands of mappings: no text
        decoding), through a descriptor and buffer kept for the session."""
        try:
            if self._smaps is not None:
                raw = self._smaps.read_bytes()
                if raw:
                    return raw
                # An open smaps is bound to the address space it was opened on: after
                # an exec (a started command through a shell or a pyenv shim) it reads
                # empty for good. Open it again: the process's current one.
                self._smaps.close()
            self._smaps = self.fs.keep(f"/proc/{self.pid}/smaps")
            return self._smaps.read_bytes()
        except KernelInterfaceError as exc:
            raise _vanished_or_raise(self.pid, exc) from exc

    def collect(self) -> Mappings:
        with self.cost.measure():
            raw = self._read_smaps()
            self._write("clear_refs", "1")
            # only the registered ranges' mappings; the layout is re-used between samples
            with self.cost.user():
                return self.reader.parse(raw)

    def close(self) -> None:
        if self._smaps is not None:
            self._smaps.close()
            self._smaps = None


class _PagemapSession(_ProcSession):
    """Reads pagemap entries (8 bytes per page) of the monitored mappings."""

    def _entries(self, maps: Mappings) -> Iterator[tuple[int, npt.NDArray[np.uint64]]]:
        path = f"/proc/{self.pid}/pagemap"
        try:
            kept = self.fs.keep(path)
        except KernelInterfaceError as exc:
            raise _vanished_or_raise(self.pid, exc) from exc
        try:
            for s, e in zip(maps.start.tolist(), maps.end.tolist(), strict=True):
                npages = (e - s) // PAGE_SIZE
                raw = kept.pread(npages * 8, s // PAGE_SIZE * 8)
                yield s, np.frombuffer(raw, dtype=np.uint64)
        except KernelInterfaceError as exc:
            raise _vanished_or_raise(self.pid, exc) from exc
        finally:
            kept.close()


class SoftDirtySession(_PagemapSession):
    """``clear_refs 4`` + pagemap bit 55 (CONFIG_MEM_SOFT_DIRTY): per page, writes only."""

    name = "soft-dirty"

    def __init__(
        self, fs: KernelFS, pid: int, ranges: Sequence[tuple[int, int]] | None = None
    ) -> None:
        check_clear_refs_target(pid)
        super().__init__(fs, pid, ranges)

    def start(self) -> None:
        with self.cost.measure():
            self._write("clear_refs", "4")

    def collect(self) -> AccessedRanges:
        with self.cost.measure():
            maps = self.mappings()
            parts = []
            for s, entries in self._entries(maps):
                with self.cost.user():
                    parts.append(mask_to_ranges(s, (entries & _PM_SOFT_DIRTY) != 0))
            self._write("clear_refs", "4")
            with self.cost.user():
                return _concat(parts)


class PageIdleSession(_PagemapSession):
    """The idle page bitmap (CONFIG_IDLE_PAGE_TRACKING): per page, reads and writes.

    Each collect reads the PFNs of the monitored pages from pagemap, reports present
    pages whose idle bit the kernel cleared (accessed), then marks them idle again.
    Needs root (PFNs are hidden otherwise).
    """

    name = "page-idle"

    def start(self) -> None:
        with self.cost.measure():
            pfns = np.concatenate(
                [
                    e[(e & _PM_PRESENT) != 0] & _PM_PFN_MASK
                    for _, e in self._entries(self.mappings())
                ]
                or [np.zeros(0, np.uint64)]
            )
            self._set_idle(pfns.astype(np.int64))

    def _idle_words(self, lo_word: int, hi_word: int) -> npt.NDArray[np.uint64]:
        raw = self.fs.read_bytes(PAGE_IDLE_BITMAP, lo_word * 8, (hi_word - lo_word) * 8)
        return np.frombuffer(raw, dtype=np.uint64)

    def _set_idle(self, pfns: npt.NDArray[np.int64]) -> None:
        if len(pfns) == 0:
            return
        from reactor.kernelfs.syscalls import pwrite_kernel_file

        words = pfns // 64
        lo, hi = int(words.min()), int(words.max()) + 1
        bits = np.zeros(hi - lo, dtype=np.uint64)
        np.bitwise_or.at(
            bits, words - lo, np.left_shift(np.uint64(1), (pfns % 64).astype(np.uint64))
        )
        nonzero = np.flatnonzero(bits)
        # Writes must be whole 8-byte words; write runs of non-zero words.
        if len(nonzero) == 0:
            return
        breaks = np.flatnonzero(np.diff(nonzero) != 1) + 1
        for run in np.split(nonzero, breaks):
            a, b = int(run[0]), int(run[-1]) + 1
            pwrite_kernel_file(self.fs.root, PAGE_IDLE_BITMAP, (lo + a) * 8, bits[a:b].tobytes())

    def collect(self) -> AccessedRanges:
        with self.cost.measure():
            parts = []
            all_pfns = []
            for s, entries in self._entries(self.mappings()):
                with self.cost.user():
                    present = (entries & _PM_PRESENT) != 0
                    pfns = (entries & _PM_PFN_MASK).astype(np.int64)
                    accessed = np.zeros(len(entries), dtype=bool)
                    p = pfns[present]
                if len(p):
                    lo, hi = int(p.min() // 64), int(p.max() // 64) + 1
                    words = self._idle_words(lo, hi)
                    with self.cost.user():
                        bit = (words[p // 64 - lo] >> (p % 64).astype(np.uint64)) & np.uint64(1)
                        accessed[present] = bit == 0
                        all_pfns.append(p)
                with self.cost.user():
                    parts.append(mask_to_ranges(s, accessed))
            if all_pfns:
                self._set_idle(np.concatenate(all_pfns))
        return _concat(parts)


class UffdWpSession:
    """userfaultfd WP-async + PAGEMAP_SCAN: per page, writes only, exact.

    The target process registered ``ranges`` itself (:class:`~reactor.kernelfs.syscalls.
    UffdWriteProtect`); each collect is one PAGEMAP_SCAN per range that reports the
    pages written since the last scan and write-protects them again in the same walk.
    """

    name = "uffd-wp"
    per_page = True

    def __init__(self, root: str, pid: int, ranges: Sequence[tuple[int, int]]) -> None:
        from reactor.kernelfs.syscalls import PagemapScanner

        if not ranges:
            raise ValueError("uffd-wp needs the ranges the target registered")
        self.pid = pid
        self.fixed_ranges = [(int(s), int(e)) for s, e in ranges]
        self.cost = ProbeCost()
        self._scanner = PagemapScanner(pid, root=root)

    def ranges(self) -> list[tuple[int, int]]:
        return list(self.fixed_ranges)

    def _scan(self) -> AccessedRanges:
        from reactor.kernelfs.syscalls import (
            PAGE_IS_WRITTEN,
            PM_SCAN_CHECK_WPASYNC,
            PM_SCAN_WP_MATCHING,
        )

        parts = []
        for s, e in self.fixed_ranges:
            res = self._scanner.scan(
                s,
                e,
                flags=PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                category_mask=PAGE_IS_WRITTEN,
                return_mask=PAGE_IS_WRITTEN,
            )
            with self.cost.user():
                parts.append(AccessedRanges(res.starts.astype(np.int64), res.ends.astype(np.int64)))
        with self.cost.user():
            return _concat(parts)

    def start(self) -> None:
        with self.cost.measure():
            self._scan()

    def collect(self) -> AccessedRanges:
        with self.cost.measure():
            return self._scan()

    def close(self) -> None:
        self._scanner.close()


def open_session(
    probe: str, fs: KernelFS, pid: int, ranges: Sequence[tuple[int, int]] | None = None
) -> ProbeSession:
    """A session of ``probe`` on ``pid`` (``ranges``: what the target registered, if any)."""
    if probe == "referenced":
        return ReferencedSession(fs, pid, ranges)
    if probe == "soft-dirty":
        return SoftDirtySession(fs, pid, ranges)
    if probe == "page-idle":
        return PageIdleSession(fs, pid, ranges)
    if probe == "uffd-wp":
        return UffdWpSession(fs.root, pid, ranges or [])
    raise ValueError(f"probe must be one of {PROBE_NAMES}, got {probe!r}")
