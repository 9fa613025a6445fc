"""DAMON's monitoring algorithm in numpy: pure, no I/O, reproducible with a seeded RNG.

:class:`RegionEngine` is the per-page-probe engine (damon-sysfs.md §5.1–5.3):

- per sampling interval, one random page per region is checked (:meth:`~RegionEngine.
  sample_addresses` picks, :meth:`~RegionEngine.sample` counts); with a probe that reports
  every accessed page (all of ours do), :meth:`~RegionEngine.observe` does both and also
  adds the region's accessed bytes;
- per aggregation interval (:meth:`~RegionEngine.aggregate`): merge similar neighbours
  (age updated on each pass, threshold doubling while there are more than
  ``max_nr_regions``), split regions larger than the size limit (min_nr_regions
  enforcement, newest kernels), report, reset the counts, then split every region in two
  or three at random points while there are at most ``max_nr_regions / 2``;
- at the update interval (:meth:`~RegionEngine.set_ranges`): regions outside the new
  target ranges are dropped, edge regions clipped, holes filled (``damon_set_regions``).

Everything is vectorized over regions. Two deliberate differences from the kernel, both
for vectorization: the merge compares a region with its unmerged left neighbour (the
kernel compares with the running weighted mean of the merged run), and a merged run is
kept within one ``sz_limit``-sized bin of its run (so it never exceeds ``sz_limit``, as in
the kernel, but may stop merging a little earlier). Region counts are per target (the
kernel counts them per context, over all targets).

:class:`MappingEngine` is the per-mapping-probe engine (``referenced``): regions are the
target's mappings as the probe reports them; ``nr_accesses`` counts the sampling
intervals in which a mapping had referenced bytes, ``referenced_bytes`` keeps the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reactor.sampler.snapshot import REGION_DTYPE, PageAccesses

__all__ = (
    "AccessedRanges",
    "EngineSettings",
    "MappingEngine",
    "PageCounter",
    "RegionEngine",
    "covered_bytes",
    "in_ranges",
)

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class AccessedRanges:
    """Page ranges a probe saw accessed in one sampling interval: sorted, disjoint,
    half-open ``[starts[i], ends[i])`` in bytes."""

    starts: I64
    ends: I64

    @classmethod
    def empty(cls) -> AccessedRanges:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[int, int]]) -> AccessedRanges:
        arr = np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)
        return cls(arr[:, 0].copy(), arr[:, 1].copy())

    @property
    def total_bytes(self) -> int:
        return int((self.ends - self.starts).sum())


def in_ranges(ranges: AccessedRanges, addrs: I64) -> npt.NDArray[np.bool_]:
    """For each address, whether it lies in one of ``ranges``."""
    if len(ranges.starts) == 0:
        return np.zeros(len(addrs), dtype=bool)
    idx = np.searchsorted(ranges.starts, addrs, side="right") - 1
    ok = idx >= 0
    hit: npt.NDArray[np.bool_] = ok & (addrs < ranges.ends[np.maximum(idx, 0)])
    return hit


def _covered_below(ranges: AccessedRanges, x: I64) -> I64:
    """Bytes of ``ranges`` below each address in ``x``."""
    sizes = ranges.ends - ranges.starts
    prefix = np.concatenate(([0], np.cumsum(sizes)))
    i = np.searchsorted(ranges.starts, x, side="right")
    excess = np.where(i > 0, ranges.ends[np.maximum(i - 1, 0)] - x, 0)
    out: I64 = prefix[i] - np.clip(excess, 0, None)
    return out


def covered_bytes(ranges: AccessedRanges, starts: I64, ends: I64) -> I64:
    """Bytes of ``ranges`` inside each ``[starts[i], ends[i])``."""
    if len(ranges.starts) == 0:
        return np.zeros(len(starts), dtype=np.int64)
    return _covered_below(ranges, ends) - _covered_below(ranges, starts)


@dataclass(frozen=True)
class EngineSettings:
    """DAMON's monitoring attributes for one target.

    ``samples_per_aggr`` is aggregation / sampling interval (the kernel's ``max_nr``);
    ``min_region_bytes`` the kernel's MINSZ (a page).
    """

    min_nr_regions: int = 10
    max_nr_regions: int = 1000
    samples_per_aggr: int = 20
    min_region_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.min_nr_regions < 3 or self.min_nr_regions > self.max_nr_regions:
            raise ValueError(
                "need 3 <= min_nr_regions <= max_nr_regions, got "
                f"min_nr_regions={self.min_nr_regions}, max_nr_regions={self.max_nr_regions}"
            )
        if self.samples_per_aggr < 1:
            raise ValueError(f"samples_per_aggr must be >= 1, got {self.samples_per_aggr}")
        size = self.min_region_bytes
        if size < 1 or size & (size - 1):
            raise ValueError(f"min_region_bytes must be a power of two, got {size}")


def _aligned_ranges(ranges: Sequence[tuple[int, int]], align: int) -> list[tuple[int, int]]:
    out = []
    for s, e in sorted(ranges):
        a, b = s // align * align, -(-e // align) * align
        if b > a:
            out.append((a, b))
    return out


class RegionEngine:
    """DAMON's adaptive regions over one target's address ranges (see the module doc)."""

    def __init__(
        self,
        ranges: Sequence[tuple[int, int]],
        settings: EngineSettings | None = None,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.rng = rng if rng is not None else np.random.default_rng()
        self._last_split_n = 0
        self.samples = 0
        self._picked: I64 | None = None
        self._init_regions(_aligned_ranges(ranges, self.settings.min_region_bytes))
        self.ranges = _aligned_ranges(ranges, self.settings.min_region_bytes)

    # ------------------------------------------------------------------ state
    def _set(  # noqa: PLR0917 - the six region arrays, always all together
        self, start: I64, end: I64, nr: I64, last: I64, age: I64, ref: I64
    ) -> None:
        self.start, self.end = start, end
        self.nr_accesses, self.last_nr_accesses, self.age = nr, last, age
        self.ref_sum = ref

    def _init_regions(self, ranges: list[tuple[int, int]]) -> None:
        """Split the ranges evenly into about ``min_nr_regions`` pieces (vaddr's init)."""
        minsz = self.settings.min_region_bytes
        total = sum(e - s for s, e in ranges)
        piece = max(total // self.settings.min_nr_regions // minsz * minsz, minsz)
        starts: list[I64] = []
        ends: list[I64] = []
        for s, e in ranges:
            n = max(1, (e - s) // piece)
            cuts = s + ((e - s) // minsz * np.arange(n + 1, dtype=np.int64) // n) * minsz
            cuts[-1] = e
            starts.append(cuts[:-1])
            ends.append(cuts[1:])
        start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        end = np.concatenate(ends) if ends else np.zeros(0, np.int64)
        keep = end > start
        start, end = start[keep], end[keep]
        z = np.zeros(len(start), np.int64)
        self._set(start, end, z, z.copy(), z.copy(), z.copy())

    @property
    def nr_regions(self) -> int:
        return len(self.start)

    @property
    def total_bytes(self) -> int:
        return int((self.end - self.start).sum())

    # ------------------------------------------------------------------ sampling
    def sample_addresses(self) -> I64:
        """One random page-aligned address per region (DAMON's prepare_access_checks)."""
        minsz = self.settings.min_region_bytes
        size = self.end - self.start
        offset = (self.rng.random(len(size)) * size).astype(np.int64) // minsz * minsz
        self._picked = self.start + offset
        return self._picked

    def sample(self, accessed: npt.NDArray[np.bool_], referenced_bytes: I64 | None = None) -> None:
        """Count one sampling interval: ``accessed[i]`` says region i's picked page was
        accessed; ``referenced_bytes`` (optional) the region's bytes seen accessed."""
        if len(accessed) != self.nr_regions:
            raise ValueError(f"expected {self.nr_regions} flags, got {len(accessed)}")
        self.nr_accesses += accessed
        if referenced_bytes is not None:
            self.ref_sum += referenced_bytes
        self.samples += 1
        self._picked = None

    def observe(self, accessed: AccessedRanges) -> None:
        """One sampling interval from a probe that reports every accessed page."""
        picked = self._picked if self._picked is not None else self.sample_addresses()
        self.sample(in_ranges(accessed, picked), covered_bytes(accessed, self.start, self.end))

    # ------------------------------------------------------------------ aggregation
    def sz_limit(self) -> int:
        minsz = self.settings.min_region_bytes
        return max(self.total_bytes // self.settings.min_nr_regions, minsz)

    def aggregate(self) -> npt.NDArray[Any]:
        """End an aggregation interval: merge, report, reset, split (kernel order).

        Returns the regions as a :data:`~reactor.sampler.snapshot.REGION_DTYPE` array as
        they were after the merge, with the aggregation's counts.
        """
        max_nr = int(self.nr_accesses.max()) if self.nr_regions else 0
        limit = self.sz_limit()
        self._merge(max_nr // 10, limit)
        self._split_oversized(limit)
        out = np.zeros(self.nr_regions, dtype=REGION_DTYPE)
        out["start"], out["end"] = self.start, self.end
        out["nr_accesses"], out["age"] = self.nr_accesses, self.age
        out["referenced_bytes"] = self.ref_sum // max(self.samples, 1)
        self.last_nr_accesses = self.nr_accesses
        self.nr_accesses = np.zeros(self.nr_regions, np.int64)
        self.ref_sum = np.zeros(self.nr_regions, np.int64)
        self.samples = 0
        self._split_random()
        return out

    def _update_age(self, thres: int) -> None:
        nr, last = self.nr_accesses, self.last_nr_accesses
        reset = (np.abs(nr - last) > thres) | ((nr == 0) != (last == 0))
        self.age = np.where(reset, 0, self.age + 1)

    def _merge(self, thres: int, sz_limit: int) -> None:
        """Merge passes with a doubling threshold (damon-sysfs.md §5.2)."""
        max_nr = self.settings.samples_per_aggr
        while True:
            self._update_age(thres)
            self._merge_pass(thres, sz_limit)
            thres = max(1, thres * 2)
            if not (self.nr_regions > self.settings.max_nr_regions and thres // 2 < max_nr):
                return

    def _merge_pass(self, thres: int, sz_limit: int) -> None:
        n = self.nr_regions
        if n < 2:
            return
        start, end, nr = self.start, self.end, self.nr_accesses
        joins = (start[1:] == end[:-1]) & (np.abs(nr[1:] - nr[:-1]) <= thres)
        head = np.concatenate(([True], ~joins))
        # Keep each merged run inside one sz_limit-sized bin of its run, so that no merged
        # region exceeds sz_limit: a region that straddles a bin edge stays on its own.
        run_id = np.cumsum(head) - 1
        run_base = start[np.flatnonzero(head)][run_id]
        first_bin = (start - run_base) // sz_limit
        last_bin = (end - 1 - run_base) // sz_limit
        straddles = first_bin != last_bin
        head[1:] |= (first_bin[1:] != first_bin[:-1]) | straddles[1:] | straddles[:-1]
        heads = np.flatnonzero(head)
        if len(heads) == n:
            return
        pages = (end - start) // self.settings.min_region_bytes
        tail = np.concatenate((heads[1:], [n])) - 1
        wsum = np.add.reduceat(pages, heads)
        self._set(
            start[heads],
            end[tail],
            np.add.reduceat(nr * pages, heads) // wsum,
            self.last_nr_accesses[heads],
            np.add.reduceat(self.age * pages, heads) // wsum,
            np.add.reduceat(self.ref_sum, heads),
        )

    def _split_oversized(self, sz_limit: int) -> None:
        """Cut regions larger than ``sz_limit`` into equal pieces (min_nr_regions)."""
        minsz = self.settings.min_region_bytes
        limit = -(-sz_limit // minsz) * minsz
        size = self.end - self.start
        pieces = np.maximum(1, -(-size // limit))
        if int(pieces.max(initial=1)) == 1:
            return
        parent = np.repeat(np.arange(self.nr_regions), pieces)
        first = np.concatenate(([0], np.cumsum(pieces)[:-1]))
        k = np.arange(len(parent)) - first[parent]
        pages = size // minsz
        start = self.start[parent] + (pages[parent] * k // pieces[parent]) * minsz
        end = self.start[parent] + (pages[parent] * (k + 1) // pieces[parent]) * minsz
        end = np.where(k == pieces[parent] - 1, self.end[parent], end)
        self._take(parent, start, end)

    def _take(self, parent: I64, start: I64, end: I64) -> None:
        """New regions ``[start, end)`` that inherit their parent's counters."""
        ref = self.ref_sum[parent] * (end - start) // np.maximum((self.end - self.start)[parent], 1)
        self._set(
            start,
            end,
            self.nr_accesses[parent],
            self.last_nr_accesses[parent],
            self.age[parent],
            ref,
        )

    def _split_random(self) -> None:
        """Split each region in 2 or 3 at random 10%..90% points (damon-sysfs.md §5.2)."""
        n = self.nr_regions
        max_regions = self.settings.max_nr_regions
        if n == 0 or n > max_regions // 2:
            return
        subs = 3 if (n == self._last_split_n and n < max_regions // 3) else 2
        minsz = self.settings.min_region_bytes
        left = self.end - self.start
        cuts: list[I64] = []
        for _ in range(subs - 1):
            frac = self.rng.integers(1, 10, size=n)
            cut = frac * left // 10 // minsz * minsz
            ok = (left > 2 * minsz) & (cut > 0) & (cut < left)
            cuts.append((self.start + cut)[ok])
            left = np.where(ok, cut, left)
        self._last_split_n = n
        new_start = np.sort(np.concatenate([self.start, *cuts]))
        parent = np.searchsorted(self.start, new_start, side="right") - 1
        same_next = np.concatenate((parent[1:] == parent[:-1], [False]))
        nxt = np.concatenate((new_start[1:], [0]))
        new_end = np.where(same_next, nxt, self.end[parent])
        self._take(parent, new_start, new_end)

    # ------------------------------------------------------------------ ranges
    def set_ranges(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Follow new target ranges (the update interval): drop regions outside them,
        clip the edge regions, and fill holes with fresh regions (damon_set_regions)."""
        minsz = self.settings.min_region_bytes
        new = _aligned_ranges(ranges, minsz)
        self.ranges = new
        if self.nr_regions == 0:
            self._init_regions(new)
            return
        parts: list[tuple[I64, I64, I64]] = []  # (start, end, parent or -1)
        for s, e in new:
            lo = int(np.searchsorted(self.end, s, side="right"))
            hi = int(np.searchsorted(self.start, e, side="left"))
            if hi <= lo:
                parts.append((np.array([s]), np.array([e]), np.array([-1])))
                continue
            idx = np.arange(lo, hi)
            rs = np.maximum(self.start[idx], s)
            re = np.minimum(self.end[idx], e)
            rs[0], re[-1] = s, e  # first and last cover the range's edges
            bounds_s = np.concatenate((rs, re[:-1]))
            bounds_e = np.concatenate((re, rs[1:]))
            par = np.concatenate((idx, np.full(len(idx) - 1, -1)))
            keep = bounds_e > bounds_s
            order = np.argsort(bounds_s[keep], kind="stable")
            parts.append((bounds_s[keep][order], bounds_e[keep][order], par[keep][order]))
        start = np.concatenate([p[0] for p in parts]).astype(np.int64)
        end = np.concatenate([p[1] for p in parts]).astype(np.int64)
        parent = np.concatenate([p[2] for p in parts]).astype(np.int64)
        fresh = parent < 0
        safe = np.where(fresh, 0, parent)
        z = np.zeros(len(start), np.int64)
        self._set(
            start,
            end,
            np.where(fresh, z, self.nr_accesses[safe]),
            np.where(fresh, z, self.last_nr_accesses[safe]),
            np.where(fresh, z, self.age[safe]),
            z,
        )


class PageCounter:
    """Per-page access counts over fixed ranges (per-page probes' exact view)."""

    def __init__(self, ranges: Sequence[tuple[int, int]], page_size: int = 4096) -> None:
        rng = _aligned_ranges(ranges, page_size)
        self.page_size = page_size
        self.range_starts = np.array([s for s, _ in rng], dtype=np.int64)
        self.range_ends = np.array([e for _, e in rng], dtype=np.int64)
        pages = (self.range_ends - self.range_starts) // page_size
        self._offset = np.concatenate(([0], np.cumsum(pages))).astype(np.int64)
        self.counts = np.zeros(int(self._offset[-1]), dtype=np.uint16)

    def _index(self, addrs: I64) -> I64:
        r = np.clip(np.searchsorted(self.range_starts, addrs, side="right") - 1, 0, None)
        inside = np.clip(addrs, self.range_starts[r], self.range_ends[r])
        out: I64 = self._offset[r] + (inside - self.range_starts[r]) // self.page_size
        return out

    def add(self, accessed: AccessedRanges) -> None:
        """Count one sampling interval's accessed pages (ranges outside are clipped)."""
        if len(accessed.starts) == 0 or len(self.counts) == 0:
            return
        lo = self._index(accessed.starts)
        hi = self._index(accessed.ends - 1) + 1
        n = len(self.counts)
        delta = np.bincount(lo, minlength=n + 1) - np.bincount(hi, minlength=n + 1)
        self.counts += np.cumsum(delta[:n]).astype(np.uint16)

    def take(self) -> PageAccesses:
        """The counts so far, and a fresh start for the next aggregation."""
        out = PageAccesses(self.range_starts, self.range_ends, self.counts, self.page_size)
        self.counts = np.zeros_like(self.counts)
        return out


class MappingEngine:
    """Regions are the target's mappings (a per-mapping probe: ``referenced``).

    ``observe`` takes one sampling interval's mappings and referenced bytes; counters of
    a mapping that keeps its ``[start, end)`` carry over, new mappings start at zero,
    vanished ones are dropped. Age follows DAMON's rule (threshold: a tenth of the
    aggregation's largest count).
    """

    def __init__(self) -> None:
        z = np.zeros(0, np.int64)
        self.start, self.end = z, z.copy()
        self.nr_accesses, self.last_nr_accesses, self.age = z.copy(), z.copy(), z.copy()
        self.ref_sum = z.copy()
        self.samples = 0

    @property
    def nr_regions(self) -> int:
        return len(self.start)

    def _relayout(self, start: I64, end: I64) -> None:
        if np.array_equal(start, self.start) and np.array_equal(end, self.end):
            return
        n_old = len(self.start)
        if n_old == 0:
            z = np.zeros(len(start), np.int64)
            self.nr_accesses, self.last_nr_accesses = z, z.copy()
            self.age, self.ref_sum = z.copy(), z.copy()
        else:
            pos = np.clip(np.searchsorted(self.start, start), 0, n_old - 1)
            same = (self.start[pos] == start) & (self.end[pos] == end)
            self.nr_accesses = np.where(same, self.nr_accesses[pos], 0)
            self.last_nr_accesses = np.where(same, self.last_nr_accesses[pos], 0)
            self.age = np.where(same, self.age[pos], 0)
            self.ref_sum = np.where(same, self.ref_sum[pos], 0)
        self.start, self.end = start, end

    def observe(self, start: I64, end: I64, referenced_bytes: I64) -> None:
        """One sampling interval: mappings (sorted by start) and their referenced bytes."""
        self._relayout(np.asarray(start, np.int64), np.asarray(end, np.int64))
        ref = np.asarray(referenced_bytes, np.int64)
        self.nr_accesses = self.nr_accesses + (ref > 0)
        self.ref_sum = self.ref_sum + ref
        self.samples += 1

    def aggregate(self) -> npt.NDArray[Any]:
        """Report the aggregation's counts and reset them."""
        max_nr = int(self.nr_accesses.max()) if self.nr_regions else 0
        thres = max_nr // 10
        nr, last = self.nr_accesses, self.last_nr_accesses
        reset = (np.abs(nr - last) > thres) | ((nr == 0) != (last == 0))
        self.age = np.where(reset, 0, self.age + 1)
        out = np.zeros(self.nr_regions, dtype=REGION_DTYPE)
        out["start"], out["end"] = self.start, self.end
        out["nr_accesses"], out["age"] = nr, self.age
        out["referenced_bytes"] = self.ref_sum // max(self.samples, 1)
        self.last_nr_accesses = nr
        self.nr_accesses = np.zeros(self.nr_regions, np.int64)
        self.ref_sum = np.zeros(self.nr_regions, np.int64)
        self.samples = 0
        return out
