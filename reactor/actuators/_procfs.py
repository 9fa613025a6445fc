"""Pure parsers for the per-process files the actuators read, and range classification.

``/proc/PID/smaps`` (each mapping's Rss, Anonymous, Swap, dirty counts and VmFlags: the
actuator decides per mapping what an advice can do), ``/proc/PID/smaps_rollup`` (the
process totals measured before and after), ``/proc/PID/stat`` (the kernel-thread flag),
``/proc/PID/numa_maps`` (pages per node) and ``/proc/PID/mounts`` (which paths are tmpfs,
whose pages need swap like anonymous ones). Counts in smaps are in kB (KiB) and are
converted to bytes. Fields are looked up by name; a mapping without ``Rss`` or
``Anonymous`` is a format error that quotes the mapping line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from reactor.errors import KernelFormatError

__all__ = (
    "PF_KTHREAD",
    "Piece",
    "PieceKind",
    "Vma",
    "classify",
    "is_kernel_thread",
    "parse_numa_maps",
    "parse_rollup",
    "parse_smaps",
    "swap_backed_mounts",
)

#: include/linux/sched.h: the task is a kernel thread.
PF_KTHREAD = 0x00200000
KIB = 1024

_HEADER = re.compile(
    r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) (\d+)\s*(.*)$"
)
_FIELD = re.compile(r"^([A-Za-z_]+):\s+(\d+) kB$")
_REQUIRED = ("Rss", "Anonymous")

#: Paths whose pages live in shmem (swap-backed even though a file is mapped).
_SHMEM_PREFIXES = ("/dev/shm/", "/memfd:", "/SYSV", "/dev/zero", "/[aio]")
_SWAP_BACKED_FSTYPES = frozenset({"tmpfs", "shm", "ramfs", "devtmpfs", "hugetlbfs"})

#: ``anon``: anonymous memory (heap, stack, private anonymous maps); ``shmem``: a file on
#: tmpfs or shared anonymous memory (swap-backed); ``file``: a file on a disk filesystem.
PieceKind: TypeAlias = Literal["anon", "shmem", "file"]


@dataclass(frozen=True)
class Vma:
    """One mapping of ``/proc/PID/smaps``; byte counts (smaps prints kB)."""

    start: int
    end: int
    perms: str
    dev: tuple[int, int]
    inode: int
    path: str
    fields: dict[str, int]
    vmflags: frozenset[str]

    def get(self, name: str) -> int:
        """A count in bytes (0 when this kernel does not print it)."""
        return self.fields.get(name, 0)

    @property
    def rss(self) -> int:
        return self.get("Rss")

    @property
    def anonymous(self) -> int:
        return self.get("Anonymous")

    @property
    def file_dirty(self) -> int:
        """Dirty file pages: all dirty pages of the mapping minus its anonymous (COW)
        pages, which in a private file mapping are the written ones."""
        dirty = self.get("Shared_Dirty") + self.get("Private_Dirty")
        return max(0, dirty - self.anonymous)

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"


def parse_smaps(text: str, path: str) -> list[Vma]:
    """``/proc/PID/smaps`` as a list of :class:`Vma` in address order."""
    vmas: list[Vma] = []
    head: re.Match[str] | None = None
    fields: dict[str, int] = {}
    flags: frozenset[str] = frozenset()

    def close() -> None:
        if head is None:
            return
        missing = [k for k in _REQUIRED if k not in fields]
        if missing:
            raise KernelFormatError(
                path, f"mapping without {', '.join(missing)}", line=head.group(0)
            )
        vmas.append(
            Vma(
                start=int(head.group(1), 16),
                end=int(head.group(2), 16),
                perms=head.group(3),
                dev=(int(head.group(4), 16), int(head.group(5), 16)),
                inode=int(head.group(6)),
                path=head.group(7).strip(),
                fields=dict(fields),
                vmflags=flags,
            )
        )

    for raw in text.splitlines():
        line = raw.rstrip()
        if not line:
            continue
        match = _HEADER.match(line)
        if match is not None:
            close()
            head, fields, flags = match, {}, frozenset()
            continue
        if head is None:
            raise KernelFormatError(path, "expected a mapping line first", line=raw)
        if line.startswith("VmFlags:"):
            flags = frozenset(line.split()[1:])
            continue
        field = _FIELD.match(line)
        if field is not None:
            fields[field.group(1)] = int(field.group(2)) * KIB
        # other lines (THPeligible: 0, ProtectionKey: 0) carry no bytes
    close()
    return vmas


def parse_rollup(text: str, path: str) -> dict[str, int]:
    """``/proc/PID/smaps_rollup``: every ``Key: N kB`` entry in bytes (Rss required)."""
    out: dict[str, int] = {}
    for raw in text.splitlines():
        match = _FIELD.match(raw.strip())
        if match is not None:
            out[match.group(1)] = int(match.group(2)) * KIB
    if "Rss" not in out:
        raise KernelFormatError(path, "no 'Rss: N kB' line", line=text[:200])
    return out


def is_kernel_thread(stat_text: str, path: str) -> bool:
    """Whether ``/proc/PID/stat`` describes a kernel thread (PF_KTHREAD in ``flags``).

    The command name may contain spaces and parentheses, so fields are counted after
    its last ``)``; ``flags`` is field 9 of the line.
    """
    close = stat_text.rfind(")")
    rest = stat_text[close + 1 :].split()
    if close < 0 or len(rest) < 7:
        raise KernelFormatError(path, "not a stat line", line=stat_text.strip()[:120])
    return bool(int(rest[6]) & PF_KTHREAD)


_NUMA_NODE = re.compile(r"\bN(\d+)=(\d+)\b")
_NUMA_PAGESIZE = re.compile(r"\bkernelpagesize_kB=(\d+)\b")


def parse_numa_maps(
    text: str, path: str, ranges: Sequence[tuple[int, int]] | None = None
) -> dict[int, int]:
    """Bytes per node from ``/proc/PID/numa_maps`` (``N<node>=<pages>`` per mapping).

    With ``ranges`` (``(start, length)``), only mappings that start inside one of them
    count (numa_maps gives each mapping's start, not its end).
    """
    out: dict[int, int] = {}
    for raw in text.splitlines():
        parts = raw.split(None, 1)
        if not parts:
            continue
        try:
            start = int(parts[0], 16)
        except ValueError:
            raise KernelFormatError(path, "expected '<hex start> <policy> ...'", line=raw) from None
        if ranges is not None and not any(s <= start < s + n for s, n in ranges):
            continue
        size = _NUMA_PAGESIZE.search(raw)
        page = int(size.group(1)) * KIB if size else 4096
        for node, pages in _NUMA_NODE.findall(raw):
            out[int(node)] = out.get(int(node), 0) + int(pages) * page
    return out


def swap_backed_mounts(mounts_text: str) -> tuple[str, ...]:
    """Mount points (from ``/proc/PID/mounts``) whose files live in memory (tmpfs and
    friends): their pages need swap to leave, like anonymous pages."""
    points = []
    for raw in mounts_text.splitlines():
        parts = raw.split()
        if len(parts) >= 3 and parts[2] in _SWAP_BACKED_FSTYPES:
            points.append(parts[1].replace("\\040", " "))
    return tuple(sorted(points, key=len, reverse=True))


@dataclass(frozen=True)
class Piece:
    """The part of a requested range that lies in one mapping."""

    start: int
    length: int
    kind: PieceKind
    vma: Vma


def _kind(vma: Vma, shmem_mounts: Sequence[str]) -> PieceKind:
    if vma.inode == 0 and not vma.path.startswith("/"):
        # [heap], [stack], private anonymous maps; a shared anonymous map is /dev/zero
        return "anon"
    path = vma.path.removesuffix(" (deleted)")
    if path.startswith(_SHMEM_PREFIXES):
        return "shmem"
    for point in shmem_mounts:
        if point in ("/", path) or path.startswith(point.rstrip("/") + "/"):
            return "shmem"
    return "file"


def classify(
    ranges: Sequence[tuple[int, int]], vmas: Sequence[Vma], shmem_mounts: Sequence[str] = ()
) -> tuple[list[Piece], int]:
    """Clip ``(start, length)`` ranges to the mappings they cover.

    Returns the pieces (sorted by address, overlapping requests merged) and the number of
    requested bytes that lie in no mapping (the kernel would answer ENOMEM for them).
    """
    merged: list[list[int]] = []
    for start, length in sorted(r for r in ranges if r[1] > 0):
        end = start + length
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces: list[Piece] = []
    covered = 0
    ordered = sorted(vmas, key=lambda v: v.start)
    for start, end in merged:
        for vma in ordered:
            if vma.end <= start:
                continue
            if vma.start >= end:
                break
            lo, hi = max(start, vma.start), min(end, vma.end)
            pieces.append(Piece(lo, hi - lo, _kind(vma, shmem_mounts), vma))
            covered += hi - lo
    total = sum(e - s for s, e in merged)
    return pieces, total - covered
