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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from reactor.errors import KernelFormatError

__all__ = (
    "PF_KTHREAD",
    "Mappings",
    "SmapsReader",
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


def _count_windows(
    line_starts: npt.NDArray[np.int64], line_ends: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Byte indices of the ``_WINDOW`` bytes before each line's `` kB``, and which of
    them lie inside the line."""
    stop = line_ends - 3  # " kB"
    idx = stop[:, None] - _WINDOW + np.arange(_WINDOW)[None, :]
    valid = idx >= line_starts[:, None]
    return np.clip(idx, 0, None), valid


_WEIGHTS = 10 ** np.arange(_WINDOW - 1, -1, -1, dtype=np.int64)


def _read_counts(
    arr: npt.NDArray[np.uint8], idx: npt.NDArray[np.int64], valid: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """The numbers in prepared windows (see :func:`_count_windows`), in kB."""
    chars = arr[idx]
    digit = valid & (chars >= 48) & (chars <= 57)
    out: npt.NDArray[np.int64] = np.where(digit, chars.astype(np.int64) - 48, 0) @ _WEIGHTS
    return out


_U64 = np.uint64


@dataclass(frozen=True, eq=False)
class _Counts:
    """Where the 8-byte count fields of some lines are, as two aligned words each."""

    lo: npt.NDArray[np.int64]
    hi: npt.NDArray[np.int64]
    shift: npt.NDArray[np.uint64]
    #: the byte before each field (a padding space or the label's colon)
    before: npt.NDArray[np.int64]

    def read(self, arr: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        """The counts in ``arr`` (a text of the same layout).

        Each field is 8 bytes, loaded as one little-endian word from its two aligned
        words, and turned into a number without a loop over digits: ``& 0x0F`` maps a
        digit to its value and a padding space to 0, then three multiply-and-add steps
        join neighbouring digits into pairs, quads and the whole (the first byte is the
        most significant digit)."""
        words = _words(arr)
        lo, hi = words[self.lo], words[self.hi]
        val = np.where(self.shift == 0, lo, (lo >> self.shift) | (hi << (_U64(64) - self.shift)))
        v = val & _U64(0x0F0F0F0F0F0F0F0F)
        v = (v * _U64(10) + (v >> _U64(8))) & _U64(0x00FF00FF00FF00FF)
        v = (v * _U64(100) + (v >> _U64(16))) & _U64(0x0000FFFF0000FFFF)
        v = (v * _U64(10000) + (v >> _U64(32))) & _U64(0xFFFFFFFF)
        return v.astype(np.int64)


def _count_fields(
    arr: npt.NDArray[np.uint8],
    line_starts: npt.NDArray[np.int64],
    line_ends: npt.NDArray[np.int64],
    label_ends: npt.NDArray[np.int64],
) -> _Counts | None:
    """The 8 bytes before each line's `` kB``, where the kernel right-aligns its count
    (``seq_put_decimal_ull_width(..., 8)``, after a label padded so that at least 8
    bytes follow its ``:``). A count of more digits moves the line's end, which
    :meth:`_Layout.matches` notices. None (use the general parser) when some field is
    not 8 bytes of digits and spaces after a space or the label's ``:`` (a count of 9
    digits or more), or lies in the text's last word."""
    stop = line_ends - 3  # " kB"
    first = stop - 8
    if len(first) == 0:
        return _Counts(first, first, first.astype(np.uint64), first)
    if bool((first <= np.maximum(label_ends, line_starts)).any()):
        return None
    field = arr[first[:, None] + np.arange(8)[None, :]]
    if not bool(((field == 32) | ((field >= 48) & (field <= 57))).all()):
        return None
    before = arr[first - 1]
    if not bool(((before == 32) | (before == 58)).all()):  # a wider count: cut off
        return None
    lo = first >> 3
    if int(lo.max()) + 1 >= len(arr) // 8:
        return None
    shift = ((first & 7) * 8).astype(np.uint64)
    return _Counts(lo, lo + 1, shift, first - 1)


def _counts_before_kb(
    arr: npt.NDArray[np.uint8], line_starts: npt.NDArray[np.int64], line_ends: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """The number that ends each ``... <number> kB`` line, vectorized (in kB)."""
    return _read_counts(arr, *_count_windows(line_starts, line_ends))


#: smaps fields the sampler keeps: the kernel's name -> the Mappings column.
_SMAPS_NAMES = {
    b"Rss": "rss",
    b"Referenced": "referenced",
    b"Anonymous": "anonymous",
    b"AnonHugePages": "anon_huge",
}


#: a kept column -> the offset of the ``:`` that ends its label (``Rss:``: 3)
_LABEL_LEN = {column: len(name) for name, column in _SMAPS_NAMES.items()}


def _lines(arr: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start and end (the newline's index) of every non-empty line."""
    nl = np.flatnonzero(arr == 10)
    if len(nl) == 0 or nl[-1] != len(arr) - 1:
        nl = np.concatenate((nl, [len(arr)]))
    starts = np.empty(len(nl), dtype=np.int64)
    starts[0], starts[1:] = 0, nl[:-1] + 1
    keep = starts < nl
    if not keep.all():
        starts, nl = starts[keep], nl[keep]
    return starts, nl.astype(np.int64, copy=False)


def _uniform_layout(
    raw: bytes, arr: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64]
) -> tuple[int, dict[str, int]] | None:
    """Lines per mapping and each kept field's line offset, when every mapping of ``raw``
    prints the same fields in the same order (one kernel always does); else None."""
    first = arr[starts]
    is_head = ((first >= 48) & (first <= 57)) | ((first >= 97) & (first <= 102))
    heads = np.flatnonzero(is_head)
    if len(heads) == 0 or heads[0] != 0:
        return None
    per = int(heads[1]) if len(heads) > 1 else len(starts)
    if per < 2 or len(starts) != per * len(heads) or np.any(heads != np.arange(len(heads)) * per):
        return None
    offsets: dict[str, int] = {}
    for k in range(1, per):
        a = int(starts[k])
        name = raw[a : raw.find(b":", a, a + 40)]
        if name in _SMAPS_NAMES:
            offsets[_SMAPS_NAMES[name]] = k
    if len(offsets) != len(_SMAPS_NAMES):
        return None
    # every mapping's kept field lines must start like the first mapping's
    for k in offsets.values():
        rows = starts[k::per]
        for j in (0, 2):
            c = arr[np.minimum(rows + j, len(arr) - 1)]
            if np.any(c != c[0]):
                return None
    return per, offsets


def _ranges_mask(
    start: npt.NDArray[np.int64], end: npt.NDArray[np.int64], ranges: Sequence[tuple[int, int]]
) -> npt.NDArray[np.bool_]:
    """Which mappings intersect any of ``ranges`` (the rule of :meth:`Mappings.within`)."""
    if not ranges:
        return np.zeros(len(start), dtype=bool)
    pairs = np.asarray(sorted(ranges), dtype=np.int64).reshape(-1, 2)
    ends = np.maximum.accumulate(pairs[:, 1])
    idx = np.searchsorted(pairs[:, 0], end, side="left") - 1
    out: npt.NDArray[np.bool_] = (idx >= 0) & (ends[np.maximum(idx, 0)] > start)
    return out


def _words(arr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """``arr`` as aligned 8-byte words (a view; a tail of under 8 bytes is left out).
    Comparing lines word by word gathers 8 times fewer items."""
    n = len(arr) // 8
    return arr[: n * 8].view(np.uint64)


def _word_cover(
    starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], size: int
) -> npt.NDArray[np.int64]:
    """Indices of the aligned words (see :func:`_words`) that hold the bytes
    ``starts[i] .. ends[i]`` of every line. A word may also hold a neighbour's bytes (a
    change there only costs a fresh parse). Bytes in a partial word at the very end are
    not covered: smaps ends with field lines, never with a mapping line."""
    first, last = starts // 8, np.minimum(ends, size - 1) // 8
    count = last - first + 1
    steps = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    idx = np.repeat(first, count) + steps
    return np.unique(idx[idx < size // 8])


@dataclass(frozen=True, eq=False)
class _Layout:
    """Where things are in one smaps text: enough to re-read its counts from the next
    read of the same process when the mappings did not change (see :class:`SmapsReader`)."""

    size: int
    newlines: npt.NDArray[np.int64]
    head_index: npt.NDArray[np.int64]
    head_words: npt.NDArray[np.uint64]
    counts: _Counts
    columns: tuple[str, ...]
    base: Mappings

    def matches(self, arr: npt.NDArray[np.uint8]) -> bool:
        """Whether ``arr`` has this layout: the same size and mapping lines (every byte),
        and each kept count line still ends where it did with its 8-byte field after a
        space or its label's ``:``. Other lines may change only in ways that keep these:
        a count of 9 digits or more moves its own line's end, or (if an earlier line of
        the same mapping shrank by as much) pushes a digit before the field."""
        if len(arr) != self.size:
            return False
        if not bool(np.array_equal(_words(arr)[self.head_index], self.head_words)):
            return False
        if not bool((arr[self.newlines] == 10).all()):
            return False
        before = arr[self.counts.before]
        return bool(((before == 32) | (before == 58)).all())

    def read(self, arr: npt.NDArray[np.uint8]) -> Mappings:
        counts = self.counts.read(arr) * 1024
        cols = dict(zip(self.columns, counts.reshape(len(self.columns), -1), strict=True))
        b = self.base
        return Mappings(
            b.start,
            b.end,
            b.perms,
            b.inode,
            b.path,
            cols["rss"],
            cols["referenced"],
            cols["anonymous"],
            cols["anon_huge"],
        )


def _layout(
    raw: bytes,
    arr: npt.NDArray[np.uint8],
    ranges: Sequence[tuple[int, int]] | None,
) -> _Layout | None:
    """The layout of a uniform smaps text (None if it is not uniform)."""
    starts, ends = _lines(arr)
    shape = _uniform_layout(raw, arr, starts)
    if shape is None:
        return None
    per, offsets = shape
    h_start, h_end = starts[::per], ends[::per]
    heads: list[tuple[str, ...]] = []
    for a, b in zip(h_start.tolist(), h_end.tolist(), strict=True):
        parts = raw[a:b].decode("utf-8", errors="replace").split(None, 5)
        lo, _, hi = parts[0].partition("-")
        heads.append((lo, hi, parts[1], parts[4], parts[5] if len(parts) > 5 else ""))
    idx = np.arange(len(heads))
    user = np.fromiter((_user(h) for h in heads), dtype=bool, count=len(heads))
    base = _build(heads, {})
    keep = np.ones(len(base), dtype=bool)
    if ranges is not None:
        keep = _ranges_mask(base.start, base.end, ranges)
        base = base.select(keep)
    rows = idx[user][keep]
    columns = tuple(offsets)
    line_rows = np.concatenate([rows * per + offsets[c] for c in columns])
    label_len = np.concatenate([np.full(len(rows), _LABEL_LEN[c], dtype=np.int64) for c in columns])
    if len(line_rows) and int(ends[line_rows].max()) >= len(arr):
        return None  # a count line without its newline (a cut text): the general parser
    counts = _count_fields(arr, starts[line_rows], ends[line_rows], starts[line_rows] + label_len)
    if counts is None:
        return None
    head_index = _word_cover(h_start, h_end, len(arr))
    return _Layout(
        len(arr),
        ends[line_rows],
        head_index,
        _words(arr)[head_index].copy(),
        counts,
        columns,
        base,
    )


class SmapsReader:
    """Parses successive ``/proc/PID/smaps`` reads of one process, cheaply.

    Between two samples a process's mappings rarely change, and the kernel prints every
    count right-aligned in a fixed-width column, so the text keeps its size, its line
    breaks and its mapping lines: the reader then only re-reads the counts from the
    byte positions it found the time before (a few numpy gathers, no Python loop over
    mappings). Anything else (a mapping added, removed, resized or renamed, a count
    wider than its column) is a fresh parse. With ``ranges``, only the mappings that
    intersect them are kept (as :meth:`Mappings.within`). Not thread-safe: one reader
    per probe session.
    """

    def __init__(
        self, ranges: Sequence[tuple[int, int]] | None = None, path: str = "/proc/PID/smaps"
    ) -> None:
        self.ranges = [(int(s), int(e)) for s, e in ranges] if ranges is not None else None
        self.path = path
        self._layout: _Layout | None = None
        #: parses that re-used the previous layout / that parsed afresh
        self.reused = 0
        self.fresh = 0

    def parse(self, raw: bytes) -> Mappings:
        arr = np.frombuffer(raw, dtype=np.uint8)
        layout = self._layout
        if layout is not None and layout.matches(arr):
            self.reused += 1
            return layout.read(arr)
        self.fresh += 1
        self._layout = layout = _layout(raw, arr, self.ranges) if len(arr) else None
        if layout is not None:
            return layout.read(arr)
        maps = _parse_lines(raw, self.path)
        return maps if self.ranges is None else maps.within(self.ranges)


def parse_smaps_bytes(
    raw: bytes, path: str = "/proc/PID/smaps", ranges: Sequence[tuple[int, int]] | None = None
) -> Mappings:
    """:func:`parse_smaps` over the raw bytes, vectorized with numpy.

    smaps of a process with thousands of chunk VMAs is megabytes of text; the sampler's
    user-space cost must stay a small share of the kernel's page walk. One kernel prints
    the same fields in the same order for every mapping, so the lines are found once
    (newlines), the layout read from the first mapping and checked for all, and the
    counts read from fixed windows before ``kB``. With ``ranges``, only the mappings
    that intersect them are kept. :class:`SmapsReader` also re-uses the layout between
    reads of one process.
    """
    return SmapsReader(ranges, path).parse(raw)


def _parse_lines(raw: bytes, path: str) -> Mappings:
    """The general bytes parser: every line classified by its first bytes (mapping lines
    start with a lowercase hex digit, field names with an uppercase letter). Falls back
    to the regex parser if the shapes do not line up."""
    arr = np.frombuffer(raw, dtype=np.uint8)
    if len(arr) == 0:
        return parse_smaps("", path)
    starts, ends = _lines(arr)
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
        heads.append((lo, hi, parts[1], parts[4], parts[5] if len(parts) > 5 else ""))
    values = {
        name: (_counts_before_kb(arr, starts[m], ends[m])).tolist() for name, m in fields.items()
    }
    return _build(heads, values)


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
