"""Pure parsers for the per-process files the actuators read, and range classification.

``/proc/PID/smaps`` (each mapping's Rss, Anonymous, Swap, dirty counts and VmFlags: the
actuator decides per mapping what an advice can do), ``/proc/PID/smaps_rollup`` (the
process totals measured before and after), ``/proc/PID/status`` (the memory counters a
DAMON pageout moves, read without a page walk), ``/proc/PID/stat`` (the kernel-thread flag),
``/proc/PID/numa_maps`` (pages per node) and ``/proc/PID/mounts`` (which paths are tmpfs,
whose pages need swap like anonymous ones). Counts in smaps are in kB (KiB) and are
converted to bytes. Fields are looked up by name; a mapping without ``Rss`` or
``Anonymous`` is a format error that quotes the mapping line.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, TypeAlias

from reactor.errors import KernelFormatError

__all__ = (
    "ROLLUP_FIELDS",
    "STATUS_FIELDS",
    "Piece",
    "PieceKind",
    "Vma",
    "classify",
    "mapping_kind",
    "parse_numa_maps",
    "parse_rollup",
    "parse_smaps",
    "parse_smaps_totals",
    "parse_status_memory",
    "piece_kind",
    "smaps_totals",
    "swap_backed_mounts",
)

KIB = 1024

_HEAD = re.compile(
    r"\n([0-9a-f]+)-([0-9a-f]+) (\S{4}) [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) (\d+)[ \t]*([^\n]*)"
)
_FIELD = re.compile(r"^([A-Za-z_]+):\s+(\d+) kB$")
_BODY_FIELD = re.compile(r"\n([A-Za-z_]+):[ \t]+(\d+) kB(?=[ \t]*(?:\n|$))")
_REQUIRED = ("Rss", "Anonymous")
#: The smaps_rollup entries :func:`smaps_totals` sums (the ones the actuators measure).
ROLLUP_FIELDS = ("Rss", "Anonymous", "Swap", "AnonHugePages", "FilePmdMapped")
_TOTALS = re.compile(r"\n(" + "|".join(ROLLUP_FIELDS) + r"):[ \t]+(\d+) kB")

#: Paths whose pages live in shmem (swap-backed even though a file is mapped).
_SHMEM_PREFIXES = ("/dev/shm/", "/memfd:", "/SYSV", "/dev/zero", "/[aio]")
_SWAP_BACKED_FSTYPES = frozenset({"tmpfs", "shm", "ramfs", "devtmpfs", "hugetlbfs"})

#: ``anon``: anonymous memory (heap, stack, private anonymous maps); ``shmem``: a file on
#: tmpfs or shared anonymous memory (swap-backed); ``file``: a file on a disk filesystem.
PieceKind: TypeAlias = Literal["anon", "shmem", "file"]


@dataclass(frozen=True)
class Vma:
    """One mapping of ``/proc/PID/smaps``; byte counts (smaps prints kB).

    The mapping line is parsed at once; the counts (``fields``) and ``vmflags`` when
    first asked for, from the mapping's own lines (``body``): a policy or action looks
    at the few mappings its ranges touch, not at the hundreds of a process's libraries.
    """

    start: int
    end: int
    perms: str
    dev: tuple[int, int]
    inode: int
    path: str
    body: str = field(default="", repr=False, compare=False)

    @cached_property
    def fields(self) -> dict[str, int]:
        """Every ``Name: N kB`` count of the mapping, in bytes."""
        return {k: int(v) * KIB for k, v in _BODY_FIELD.findall(self.body)}

    def kind(self, shmem_mounts: Sequence[str] = ()) -> PieceKind:
        """:func:`mapping_kind`, once per mount list (asked of every piece, every tick
        a reading is kept)."""
        kinds: dict[tuple[str, ...], PieceKind] = self.__dict__.setdefault("_kinds", {})
        key = tuple(shmem_mounts)
        kind = kinds.get(key)
        if kind is None:
            kind = kinds[key] = mapping_kind(self.inode, self.path, key)
        return kind

    @cached_property
    def vmflags(self) -> frozenset[str]:
        """The two-letter ``VmFlags`` (``nh``: MADV_NOHUGEPAGE)."""
        at = self.body.find("\nVmFlags:")
        if at < 0:
            return frozenset()
        stop = self.body.find("\n", at + 1)
        return frozenset(self.body[at + 9 : stop if stop >= 0 else None].split())

    def get(self, name: str) -> int:
        """A count in bytes (0 when this kernel does not print it).

        Before :attr:`fields` is parsed, one count is looked up on its own (a policy
        checking the Rss of a few hundred mappings does not parse their other 20 lines).
        """
        fields = self.__dict__.get("fields")
        if fields is not None:
            return int(fields.get(name, 0))
        # a reading kept across ticks is asked the same few counts each tick
        got: dict[str, int] = self.__dict__.setdefault("_got", {})
        value = got.get(name)
        if value is None:
            value = got[name] = self._find(name)
        return value

    def _find(self, name: str) -> int:
        at = self.body.find(f"\n{name}:")
        if at < 0:
            return 0
        stop = self.body.find(" kB", at)
        try:
            return int(self.body[at + len(name) + 2 : stop]) * KIB
        except ValueError:
            return self.fields.get(name, 0)

    @property
    def rss(self) -> int:
        return self.get("Rss")

    @property
    def anonymous(self) -> int:
        return self.get("Anonymous")

    @cached_property
    def file_dirty(self) -> int:
        """Dirty file pages: all dirty pages of the mapping minus its anonymous (COW)
        pages, which in a private file mapping are the written ones."""
        dirty = self.get("Shared_Dirty") + self.get("Private_Dirty")
        return max(0, dirty - self.anonymous)

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"


def parse_smaps(text: str, path: str) -> list[Vma]:
    """``/proc/PID/smaps`` as a list of :class:`Vma` in address order.

    One regular-expression pass finds the mapping lines; each mapping's counts are
    parsed when first used (:attr:`Vma.fields`). Every mapping must have ``Rss`` and
    ``Anonymous`` (checked by counting them; the error quotes the first mapping
    without them).
    """
    return parse_smaps_totals(text, path)[0]


def parse_smaps_totals(text: str, path: str) -> tuple[list[Vma], dict[str, int]]:
    """:func:`parse_smaps` and :func:`smaps_totals` of one text, in one pass each."""
    src = "\n" + text
    heads = list(_HEAD.finditer(src))
    lead = src[: heads[0].start()] if heads else src
    if lead.strip():
        line = next(x for x in lead.splitlines() if x.strip())
        raise KernelFormatError(path, "expected a mapping line first", line=line)
    ends = [m.start() for m in heads[1:]] + [len(src)]
    vmas = [
        Vma(
            start=int(m.group(1), 16),
            end=int(m.group(2), 16),
            perms=m.group(3),
            dev=(int(m.group(4), 16), int(m.group(5), 16)),
            inode=int(m.group(6)),
            path=m.group(7).strip(),
            body=src[m.end() : stop],
        )
        for m, stop in zip(heads, ends, strict=True)
    ]
    totals = dict.fromkeys(ROLLUP_FIELDS, 0)
    seen = dict.fromkeys(ROLLUP_FIELDS, 0)
    for name, value in _TOTALS.findall(text):
        totals[name] += int(value) * KIB
        seen[name] += 1
    if any(seen[k] < len(vmas) for k in _REQUIRED):
        for vma, m in zip(vmas, heads, strict=True):
            missing = [k for k in _REQUIRED if k not in vma.fields]
            if missing:
                raise KernelFormatError(
                    path, f"mapping without {', '.join(missing)}", line=m.group(0).strip()
                )
    return vmas, totals


def smaps_totals(text: str) -> dict[str, int]:
    """The :data:`ROLLUP_FIELDS` summed over every mapping of a smaps text, in bytes:
    what ``smaps_rollup`` reports (the same page walk, summed), without a second walk."""
    out = dict.fromkeys(ROLLUP_FIELDS, 0)
    for name, value in _TOTALS.findall(text):
        out[name] += int(value) * KIB
    return out


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


#: The ``/proc/PID/status`` counters a pageout moves: anonymous pages leave ``RssAnon``
#: for swap entries (``VmSwap``); file and shmem pages leave ``RssFile``/``RssShmem``
#: (shmem's swapped pages are not in ``VmSwap``, which counts swap entries in page tables).
STATUS_FIELDS = ("RssAnon", "RssFile", "RssShmem", "VmSwap")
_STATUS = re.compile(r"^(" + "|".join(STATUS_FIELDS) + r"):[ \t]+(\d+) kB$", re.MULTILINE)


def parse_status_memory(text: str, path: str) -> dict[str, int]:
    """The :data:`STATUS_FIELDS` of a ``/proc/PID/status`` text, in bytes. The kernel
    prints them from the mm's counters (no page walk: cheap to read every tick); a
    kernel thread has none of them, which is a format error here (name the process's
    path, the fields missing)."""
    out = {name: int(value) * KIB for name, value in _STATUS.findall(text)}
    missing = [name for name in STATUS_FIELDS if name not in out]
    if missing:
        raise KernelFormatError(
            path, f"no {', '.join(f'{m}: N kB' for m in missing)} line(s)", line=text[:200]
        )
    return out


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


def piece_kind(vma: Vma, shmem_mounts: Sequence[str] = ()) -> PieceKind:
    """What kind of memory a mapping holds (see :data:`PieceKind`)."""
    return vma.kind(shmem_mounts)


def mapping_kind(inode: int, path: str, shmem_mounts: Sequence[str] = ()) -> PieceKind:
    """:func:`piece_kind` of a mapping given by its inode and path column."""
    if inode == 0 and not path.startswith("/"):
        # [heap], [stack], private anonymous maps; a shared anonymous map is /dev/zero
        return "anon"
    path = path.removesuffix(" (deleted)")
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
    ordered = vmas
    starts = [v.start for v in vmas]
    if any(map(operator.gt, starts, starts[1:])):
        ordered = sorted(vmas, key=lambda v: v.start)  # smaps is in address order already
        starts.sort()
    for start, end in merged:
        i = max(0, bisect.bisect_right(starts, start) - 1)
        for vma in itertools.islice(ordered, i, None):
            if vma.end <= start:
                continue
            if vma.start >= end:
                break
            lo, hi = max(start, vma.start), min(end, vma.end)
            pieces.append(Piece(lo, hi - lo, piece_kind(vma, shmem_mounts), vma))
            covered += hi - lo
    total = sum(e - s for s, e in merged)
    return pieces, total - covered
