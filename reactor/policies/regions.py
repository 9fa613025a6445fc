"""Picking regions out of an :class:`~reactor.engine.monitors.AccessView`: cold and hot.

Cold: ``nr_accesses`` at most ``max_access`` of the aggregation's samples, for at
least ``min_age`` (DAMON's age, in aggregation intervals, times the interval),
coldest first, then oldest. Hot: at least ``hot_access`` of the samples, hottest
first. Ranges are page-aligned ``(start, length)`` bytes per pid; only targets whose
key names a pid (``<spec>:<pid>``, the native sampler's) can be acted on by pid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from reactor.engine.monitors import AccessView
    from reactor.sampler.snapshot import Snapshot

__all__ = (
    "Candidate",
    "PickCache",
    "cold_regions",
    "hot_regions",
    "target_pid",
)


@dataclass(frozen=True)
class Candidate:
    """One region of one process: ``[start, start + length)`` bytes."""

    pid: int
    start: int
    length: int
    nr_accesses: int
    age_s: float


class PickCache:
    """The candidates last picked from a view, kept while the view and the picking
    parameters stay the same: a monitor publishes a new view per aggregation (a view is
    replaced, never changed), while a policy ticks every second; re-picking hundreds of
    regions each tick would be the same work for the same answer."""

    def __init__(self) -> None:
        self._view: AccessView | None = None
        self._key: tuple[object, ...] = ()
        self._picked: list[Candidate] = []

    def get(
        self, view: AccessView, key: tuple[object, ...], pick: Callable[[], list[Candidate]]
    ) -> list[Candidate]:
        if view is not self._view or key != self._key:
            self._view, self._key, self._picked = view, key, pick()
        return self._picked


def target_pid(key: str) -> int | None:
    """The pid of a snapshot key ``<spec>:<pid>`` (None for ``<monitor>:damon``)."""
    _, _, tail = key.rpartition(":")
    return int(tail) if tail.isdigit() else None


def _pick(
    view: AccessView,
    keep: Callable[[Snapshot], np.ndarray],
    order: Callable[[np.ndarray], np.ndarray],
) -> list[Candidate]:
    out: list[Candidate] = []
    for key, snap in view.snapshots.items():
        pid = target_pid(key)
        regions = snap.regions
        if pid is None or not len(regions):
            continue
        chosen = regions[keep(snap)]
        chosen = chosen[order(chosen)]
        # whole columns to Python at once (a structured row read per field costs ~1 µs)
        ages = (chosen["age"].astype(np.float64) * snap.aggr_interval_s).tolist()
        for start, end, nr, age_s in zip(
            chosen["start"].tolist(),
            chosen["end"].tolist(),
            chosen["nr_accesses"].tolist(),
            ages,
            strict=True,
        ):
            if end > start:
                out.append(Candidate(pid, start, end - start, nr, age_s))
    return out


def cold_regions(view: AccessView, *, max_access: float, min_age_s: float) -> list[Candidate]:
    """Regions with at most ``max_access`` of samples accessed for ``min_age_s`` or longer,
    coldest first, then oldest (across targets, so the budget goes to the coldest)."""

    def keep(snap: Snapshot) -> np.ndarray:
        r = snap.regions
        limit = math.floor(max_access * snap.max_nr_accesses + 1e-9)
        return (r["nr_accesses"] <= limit) & (
            r["age"].astype(np.float64) * snap.aggr_interval_s >= min_age_s - 1e-9
        )

    def order(rows: np.ndarray) -> np.ndarray:
        return np.lexsort((-rows["age"].astype(np.int64), rows["nr_accesses"]))

    found = _pick(view, keep, order)
    found.sort(key=lambda c: (c.nr_accesses, -c.age_s))
    return found


def hot_regions(view: AccessView, *, hot_access: float) -> list[Candidate]:
    """Regions with at least ``hot_access`` of samples accessed, hottest first."""

    def keep(snap: Snapshot) -> np.ndarray:
        limit = math.ceil(hot_access * snap.max_nr_accesses - 1e-9)
        return snap.regions["nr_accesses"] >= max(1, limit)

    def order(rows: np.ndarray) -> np.ndarray:
        return np.argsort(-rows["nr_accesses"].astype(np.int64), kind="stable")

    found = _pick(view, keep, order)
    found.sort(key=lambda c: -c.nr_accesses)
    return found
