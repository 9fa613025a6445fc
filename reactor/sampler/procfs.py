"""Pure parsers for the per-process files the native sampler reads.

``/proc/PID/maps`` (the address layout), ``/proc/PID/smaps`` (per-mapping ``Rss`` and
``Referenced``), ``/proc/PID/stat`` (kernel-thread flag), ``/proc/PID/statm`` (RSS in
pages). smaps of a process with 16,384 chunk VMAs is about 20 MB of text, so the smaps
parser works with whole-text regular expressions (one pass per field) rather than line
by line; each mapping has every field exactly once, in order, so the field lists align.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from reactor.errors import KernelFormatError

__all__ = (
    "PF_KTHREAD",
    "Mappings",
    "is_kernel_thread",
    "parse_maps",
    "parse_smaps",
    "parse_smaps_bytes",
    "parse_statm_rss_pages",
    "three_regions",
)

#: include/linux/sched.h: the task is a kernel thread.
PF_KTHREAD = 0x00200000

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ (\d+) *(.*)$", re.MULTILINE)
_FIELD = {
    "rss": re.compile(r"^Rss:\s+(\d+) kB", re.MULTILINE),
    "referenced": re.compile(r"^Referenced:\s+(\d+) kB", re.MULTILINE),
    "anonymous": re.compile(r"^Anonymous:\s+(\d+) kB", re.MULTILINE),
    "anon_huge": re.compile(r"^AnonHugePages:\s+(\d+) kB", re.MULTILINE),
}


@dataclass(frozen=True, eq=False)
class Mappings:
    """A process's mappings, sorted by start. Byte counts are 0 when read from ``maps``.

    ``start``/``end`` are addresses, ``rss``/``referenced``/``anonymous``/``anon_huge``
    bytes (smaps gives kB), ``inode`` 0 for anonymous mappings, ``path`` the name column.
    """

    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    perms: tuple[str, ...]
    inode: npt.NDArray[np.int64]
    path: tuple[str, ...]
    rss: npt.NDArray[np.int64]
    referenced: npt.NDArray[np.int64]
    anonymous: npt.NDArray[np.int64]
    anon_huge: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.start)

    def select(self, mask: npt.NDArray[np.bool_]) -> Mappings:
        idx = np.flatnonzero(mask)
        return Mappings(
            self.start[idx],
            self.end[idx],
            tuple(self.perms[i] for i in idx),
            self.inode[idx],
            tuple(self.path[i] for i in idx),
            self.rss[idx],
            self.referenced[idx],
            self.anonymous[idx],
            self.anon_huge[idx],
        )

    def within(self, ranges: list[tuple[int, int]]) -> Mappings:
        """The mappings that intersect any of ``ranges`` (whole mappings, not clipped:
        a count per mapping cannot be split)."""
        if not ranges:
            return self.select(np.zeros(len(self), dtype=bool))
        pairs = np.asarray(sorted(ranges), dtype=np.int64).reshape(-1, 2)
        # union of the ranges: sorted, and each end the running maximum
        ends = np.maximum.accumulate(pairs[:, 1])
        # the last range starting before a mapping's end must reach past its start
        idx = np.searchsorted(pairs[:, 0], self.end, side="left") - 1
        mask = (idx >= 0) & (ends[np.maximum(idx, 0)] > self.start)
        return self.select(mask)


def _headers(path: str, text: str) -> list[tuple[str, ...]]:
    heads = _HEADER.findall(text)
    if not heads and text.strip():
        raise KernelFormatError(path, "no mapping lines", line=text.splitlines()[0])
    return heads


def _user(head: tuple[str, ...]) -> bool:
    """False for mappings above the user address space (``[vsyscall]``)."""
    return int(head[0], 16) < 1 << 63


def _build(heads: list[tuple[str, ...]], fields: dict[str, list[int]]) -> Mappings:
    keep = [i for i, h in enumerate(heads) if _user(h)]
    if len(keep) != len(heads):
        heads = [heads[i] for i in keep]
        fields = {k: [v[i] for i in keep] for k, v in fields.items()}
    n = len(heads)
    start = np.fromiter((int(h[0], 16) for h in heads), dtype=np.int64, count=n)
    end = np.fromiter((int(h[1], 16) for h in heads), dtype=np.int64, count=n)
    inode = np.fromiter((int(h[3]) for h in heads), dtype=np.int64, count=n)

    def col(name: str) -> npt.NDArray[np.int64]:
        values = fields.get(name)
        if values is None:
            return np.zeros(n, dtype=np.int64)
        return np.asarray(values, dtype=np.int64) * 1024

    return Mappings(
        start,
        end,
        tuple(h[2] for h in heads),
        inode,
        tuple(h[4] for h in heads),
        col("rss"),
        col("referenced"),
        col("anonymous"),
        col("anon_huge"),
    )


def parse_maps(text: str, path: str = "/proc/PID/maps") -> Mappings:
    """``/proc/PID/maps`` as :class:`Mappings` (byte counts zero)."""
    return _build(_headers(path, text), {})


def parse_smaps(text: str, path: str = "/proc/PID/smaps") -> Mappings:
    """``/proc/PID/smaps`` as :class:`Mappings` with Rss, Referenced, Anonymous, AnonHuge.

    Raises KernelFormatError when a field is missing for some mapping (the counts would
    no longer line up with the mappings).
    """
    heads = _headers(path, text)
    fields: dict[str, list[int]] = {}
    for name, pattern in _FIELD.items():
        values = [int(v) for v in pattern.findall(text)]
        if len(values) != len(heads):
            raise KernelFormatError(path, f"{len(heads)} mappings but {len(values)} {name} lines")
        fields[name] = values
    return _build(heads, fields)


_WINDOW = 18  # digits of the widest count read (kB); label text holds no digits


def _counts_before_kb(
    arr: npt.NDArray[np.uint8], line_starts: npt.NDArray[np.int64], line_ends: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """The number that ends each ``... <number> kB`` line, vectorized (in kB)."""
    stop = line_ends - 3  # " kB"
    idx = stop[:, None] - _WINDOW + np.arange(_WINDOW)[None, :]
    valid = idx >= line_starts[:, None]
    chars = arr[np.clip(idx, 0, None)].astype(np.int64)
    digit = valid & (chars >= 48) & (chars <= 57)
    weights = 10 ** np.arange(_WINDOW - 1, -1, -1, dtype=np.int64)
    out: npt.NDArray[np.int64] = (np.where(digit, chars - 48, 0) * weights).sum(axis=1)
    return out


def parse_smaps_bytes(raw: bytes, path: str = "/proc/PID/smaps") -> Mappings:
    """:func:`parse_smaps` over the raw bytes, vectorized with numpy (about 10x faster).

    smaps of a process with thousands of chunk VMAs is megabytes of text; the sampler's
    user-space cost must stay a small share of the kernel's page walk, so lines are
    classified by their first bytes (mapping lines start with a lowercase hex digit,
    field names with an uppercase letter) and the counts read from fixed windows before
    ``kB``. Falls back to the regex parser if the shapes do not line up.
    """
    arr = np.frombuffer(raw, dtype=np.uint8)
    if len(arr) == 0:
        return parse_smaps("", path)
    nl = np.flatnonzero(arr == 10).astype(np.int64)
    if len(nl) == 0 or nl[-1] != len(arr) - 1:
        nl = np.concatenate((nl, [len(arr)]))
    starts = np.concatenate(([0], nl[:-1] + 1)).astype(np.int64)
    keep = starts < nl
    starts, ends = starts[keep], nl[keep]
    first = arr[starts]
    second = arr[np.minimum(starts + 1, len(arr) - 1)]
    is_head = ((first >= 48) & (first <= 57)) | ((first >= 97) & (first <= 102))
    fifth = arr[np.minimum(starts + 4, len(arr) - 1)]
    fields = {
        "anon_huge": (first == ord("A")) & (second == ord("n")) & (fifth == ord("H")),
        "rss": (first == ord("R")) & (second == ord("s")),
        "referenced": (first == ord("R")) & (second == ord("e")),
        "anonymous": (first == ord("A")) & (second == ord("n")) & (fifth == ord("y")),
    }
    n = int(is_head.sum())
    if any(int(m.sum()) != n for m in fields.values()):
        return parse_smaps(raw.decode("utf-8", errors="replace"), path)
    heads: list[tuple[str, ...]] = []
    for a, b in zip(starts[is_head].tolist(), ends[is_head].tolist(), strict=True):
        parts = raw[a:b].decode("utf-8", errors="replace").split(None, 5)
        lo, _, hi = parts[0].partition("-")
        heads.append(
            (lo, hi, parts[1], parts[2], parts[3], parts[4], parts[5] if len(parts) > 5 else "")
        )
    values = {
        name: (_counts_before_kb(arr, starts[m], ends[m])).tolist() for name, m in fields.items()
    }
    # the same tuple shape as the regex headers: start, end, perms, inode, path
    return _build([(h[0], h[1], h[2], h[5], h[6]) for h in heads], values)


def three_regions(maps: Mappings) -> list[tuple[int, int]]:
    """DAMON vaddr's initial target ranges: the mapped span cut at its two largest gaps.

    Excludes ``[vsyscall]`` (outside the user address space). Fewer than three ranges
    when the process has fewer gaps.
    """
    keep = np.array([p != "[vsyscall]" for p in maps.path], dtype=bool)
    start, end = maps.start[keep], maps.end[keep]
    if len(start) == 0:
        return []
    order = np.argsort(start)
    start, end = start[order], end[order]
    gaps = start[1:] - np.maximum.accumulate(end)[:-1]
    cut_after = np.sort(np.argsort(gaps)[::-1][:2]) if len(gaps) else np.zeros(0, np.int64)
    cut_after = cut_after[gaps[cut_after] > 0]
    bounds = [0, *(int(i) + 1 for i in cut_after), len(start)]
    return [(int(start[a]), int(end[a:b].max())) for a, b in itertools.pairwise(bounds)]


def is_kernel_thread(stat_text: str, path: str = "/proc/PID/stat") -> bool:
    """Whether ``/proc/PID/stat`` describes a kernel thread (PF_KTHREAD in ``flags``).

    The command name (field 2) may contain spaces and parentheses, so fields are counted
    after its last ``)``; ``flags`` is field 9.
    """
    close = stat_text.rfind(")")
    rest = stat_text[close + 1 :].split()
    if close < 0 or len(rest) < 7:
        raise KernelFormatError(path, "not a stat line", line=stat_text.strip()[:120])
    return bool(int(rest[6]) & PF_KTHREAD)


def parse_statm_rss_pages(text: str, path: str = "/proc/PID/statm") -> int:
    """Resident pages (field 2 of ``/proc/PID/statm``)."""
    parts = text.split()
    if len(parts) < 2:
        raise KernelFormatError(path, "expected at least 2 fields", line=text.strip())
    return int(parts[1])
