"""The access snapshot: what a monitor reports per target per aggregation interval.

Both backends produce it: the DAMON backend from a kdamond's regions, the native sampler
from its own region engine. Its shape is DAMON's: regions ``[start, end)`` with the number
of sampling intervals in which the region was seen accessed (``nr_accesses``, out of
``max_nr_accesses`` = aggregation / sampling interval) and ``age`` (aggregation intervals
the access frequency stayed similar). The native sampler adds ``referenced_bytes``: the
mean number of the region's bytes the probe saw accessed per sampling interval, which is
what a per-mapping probe measures exactly (the DAMON backend leaves it 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from reactor.sampler.procfs import Mappings

__all__ = ("REGION_DTYPE", "PageAccesses", "Region", "Snapshot", "regions_array")

#: One row per region; addresses in bytes, ``referenced_bytes`` a per-sample mean.
REGION_DTYPE = np.dtype(
    [
        ("start", np.uint64),
        ("end", np.uint64),
        ("nr_accesses", np.uint32),
        ("age", np.uint32),
        ("referenced_bytes", np.uint64),
    ]
)


@dataclass(frozen=True)
class Region:
    """One monitoring region: ``[start, end)`` bytes, accesses in the last aggregation
    interval (0..max_nr_accesses), age in aggregation intervals."""

    start: int
    end: int
    nr_accesses: int
    age: int
    referenced_bytes: int = 0

    @property
    def size_bytes(self) -> int:
        return self.end - self.start


def regions_array(regions: list[Region] | tuple[Region, ...]) -> npt.NDArray[Any]:
    """Regions as a :data:`REGION_DTYPE` array (for the DAMON backend's own snapshots)."""
    out = np.zeros(len(regions), dtype=REGION_DTYPE)
    for i, r in enumerate(regions):
        out[i] = (r.start, r.end, r.nr_accesses, r.age, r.referenced_bytes)
    return out


@dataclass(frozen=True, eq=False)
class PageAccesses:
    """Per-page access counts over a target's monitored ranges, for per-page probes.

    ``counts[i]`` is the number of sampling intervals of the aggregation in which page
    ``i`` was seen accessed; pages are numbered through the ranges in order
    (``range_starts``/``range_ends`` in bytes, sorted, page-aligned).
    """

    range_starts: npt.NDArray[np.int64]
    range_ends: npt.NDArray[np.int64]
    counts: npt.NDArray[np.uint16]
    page_size: int

    def addresses(self) -> npt.NDArray[np.int64]:
        """The address of every page, in the order of ``counts``."""
        parts = [
            np.arange(s, e, self.page_size, dtype=np.int64)
            for s, e in zip(self.range_starts.tolist(), self.range_ends.tolist(), strict=True)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One target's regions at the end of one aggregation interval.

    ``probe`` names the access probe (``referenced``, ``uffd-wp``, ``soft-dirty``,
    ``page-idle``, or ``damon``), ``granularity_bytes`` the finest unit it can tell apart
    (a page; or, for per-mapping probes, the smallest mapping). ``taken_at`` is the
    runtime's monotonic clock in seconds. ``pages`` is set by per-page probes that
    track every page (a Snapshot then also answers per-page questions). ``mappings`` is
    set by per-mapping probes that read smaps (``referenced``): the target's mappings
    with their ``Rss`` as of the aggregation's last sample, which a policy can decide
    from without reading the process again.
    """

    target: str
    regions: npt.NDArray[Any]
    sample_interval_s: float
    aggr_interval_s: float
    probe: str
    granularity_bytes: int
    taken_at: float
    max_nr_accesses: int
    pages: PageAccesses | None = None
    mappings: Mappings | None = None

    def region_list(self) -> tuple[Region, ...]:
        """The regions as :class:`Region` objects (convenient; the array is faster)."""
        r = self.regions
        return tuple(
            Region(int(a), int(b), int(n), int(g), int(x))
            for a, b, n, g, x in zip(
                r["start"], r["end"], r["nr_accesses"], r["age"], r["referenced_bytes"], strict=True
            )
        )

    @property
    def total_bytes(self) -> int:
        return int((self.regions["end"] - self.regions["start"]).sum())

    def hot_mask(self, min_share: float = 0.5) -> npt.NDArray[np.bool_]:
        """Regions accessed in at least ``min_share`` of the aggregation's samples."""
        need = max(1, int(np.ceil(min_share * self.max_nr_accesses)))
        mask: npt.NDArray[np.bool_] = self.regions["nr_accesses"] >= need
        return mask

    def hot_bytes(self, min_share: float = 0.5) -> int:
        """Bytes of the regions :meth:`hot_mask` selects."""
        r = self.regions[self.hot_mask(min_share)]
        return int((r["end"] - r["start"]).sum())
