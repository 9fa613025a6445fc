"""The kdamond half of the fake DAMON: a simulated monitoring context (see damon_fake).

:class:`SimContext` is what the kernel calls a ``damon_ctx`` once ``state`` is ``on``: it
samples a simulated workload, keeps adaptive regions, applies DAMOS schemes with quotas,
the quota-goal feedback loop, watermarks and the intervals auto-tuner, and answers the
``update_*`` commands. It follows mm/damon/core.c (damon-sysfs.md §5) with these
simplifications, each chosen so that time stays cheap in tests:

- **Sampling in bulk.** The kernel checks one random page per region every sample
  interval. Between two events (an aggregation boundary, a scheme's apply time, an ops
  update) the fake draws the number of hits for the whole stretch at once from a
  binomial distribution whose probability is the region's access probability (the
  size-weighted mean of the workload ranges it covers). The distribution is the same;
  the cost is one draw per region per event instead of one per sample.
- **Event granularity.** Watermarks, refresh_ms and pause are evaluated at events (at
  least once per aggregation interval), not at every sample.
- **The ops layer is a model.** An action is "applied" to the bytes of the region that
  the workload maps (process ranges for vaddr/fvaddr, physical ranges for paddr), on
  every apply, resident or not; ops filters know only ``anon`` (all simulated memory is
  anonymous) and ``young``/``active`` (memory with a non-zero access probability), and
  gate only what walks pages (paddr actions, vaddr/fvaddr migration and ``stat``): the
  vaddr/fvaddr actions done by one ``do_madvise()`` consult no ops filter. Two
  kinds of action change the workload: a vaddr/fvaddr ``pageout``
  (:meth:`Workload.pageout`) moves the region's never-accessed pages to swap (access
  probabilities do not change), and ``migrate_hot``/``migrate_cold``
  (:meth:`Workload.migrate`) move its resident pages to the target node, applying only
  the bytes that were on another node (the kernel puts back a folio already on the
  target node and counts the pages ``migrate_pages()`` moved).
  The vaddr/fvaddr actions the kernel turns into one ``do_madvise()`` over the region
  (willneed, cold, pageout, hugepage, nohugepage, collapse) apply 0 bytes to a region
  that is not wholly mapped: madvise acts on the mapped parts (a pageout still moves
  their pages) and then fails with ENOMEM for the hole, and ``damos_madvise()`` counts
  the region as not applied; the quota charges it as a failure (``fail_charge``).
- **vaddr regions** come from the process's ranges by the kernel's "three regions" rule
  (two largest gaps skipped); with fewer than two gaps the ranges on each side of the
  gaps that exist are used.
- **Apply time** for the ``ms`` quota is modelled as 1 ns per byte tried (1 GB/s).

Everything is deterministic for a given seed (region splits use the kernel's 10–90 %
random cut; access draws use numpy's PCG64).
"""

from __future__ import annotations

import errno as errno_mod
import itertools
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = (
    "MAX_SCORE",
    "PAGE_SIZE",
    "Attrs",
    "CtxParams",
    "FilterParams",
    "GoalParams",
    "QuotaParams",
    "Region",
    "SchemeParams",
    "SchemeState",
    "SimContext",
    "TargetParams",
    "TriedRegion",
    "WatermarkParams",
    "Workload",
    "kernel_error",
)

PAGE_SIZE = 4096
MAX_SCORE = 99
ULONG_MAX = 2**64 - 1
UINT_MAX = 2**32 - 1
_MAX_AGE_IN_LOG = 32

#: Actions each ops set really applies (others are accepted and apply 0 bytes).
_OPS_ACTIONS = {
    "vaddr": frozenset(
        {"willneed", "cold", "pageout", "hugepage", "nohugepage", "collapse"}
        | {"migrate_hot", "migrate_cold", "stat"}
    ),
    "paddr": frozenset(
        {"pageout", "lru_prio", "lru_deprio", "migrate_hot", "migrate_cold", "stat"}
    ),
}
_OPS_ACTIONS["fvaddr"] = _OPS_ACTIONS["vaddr"]
#: vaddr/fvaddr actions that mm/damon/vaddr.c damon_va_apply_scheme() hands to
#: damos_madvise(): one do_madvise() over the whole region.
_MADVISE_ACTIONS = frozenset({"willneed", "cold", "pageout", "hugepage", "nohugepage", "collapse"})
_COLD_SCORED = frozenset({"pageout", "lru_deprio", "migrate_cold"})
_HOT_SCORED = frozenset({"lru_prio", "migrate_hot"})
_CORE_FILTERS = frozenset({"addr", "target"})


def kernel_error(err: int, what: str) -> OSError:
    """An ``OSError`` carrying the kernel's errno, the way a sysfs store reports it."""
    return OSError(err, f"{os.strerror(err)} ({what})")


class Workload(Protocol):
    """What the simulated kdamond sees of the machine (FakeDamon implements it)."""

    def access_probability(self, ops: str, pid: int | None, start: int, end: int) -> float:
        """Mean chance per sample that a random page of [start, end) is accessed."""
        ...

    def mapped_bytes(self, ops: str, pid: int | None, start: int, end: int) -> int:
        """Bytes of [start, end) backed by simulated memory (what an action can touch)."""
        ...

    def vmas(self, pid: int) -> list[tuple[int, int]]:
        """The process's mapped ranges, sorted; empty when it has exited."""
        ...

    def pageout(self, ops: str, pid: int | None, start: int, end: int) -> None:
        """A ``pageout`` applied to [start, end) of target ``pid`` (``MADV_PAGEOUT`` on
        vaddr/fvaddr): its resident pages that are never accessed leave RAM."""
        ...

    def migrate(self, ops: str, pid: int | None, start: int, end: int, nid: int) -> int:
        """A ``migrate_hot``/``migrate_cold`` of [start, end) of target ``pid`` to node
        ``nid``: the bytes that moved (resident, and not on ``nid`` already)."""
        ...

    def pid_alive(self, pid: int) -> bool: ...

    def goal_metric(self, metric: str, nid: int, path: str) -> int:
        """The current value the kernel would measure for a non-user_input goal metric."""
        ...

    def free_mem_permil(self) -> int: ...


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Attrs:
    """Monitoring attributes (µs, counts), as damon_set_attrs validates them."""

    sample_us: int = 5000
    aggr_us: int = 100_000
    update_us: int = 60_000_000
    min_nr_regions: int = 10
    max_nr_regions: int = 1000
    access_bp: int = 0
    aggrs: int = 0
    min_sample_us: int = 0
    max_sample_us: int = 0
    #: aggr_us / sample_us fixed when the user set the attributes (the tuner keeps it).
    aggr_samples: int = 0

    @property
    def max_nr_accesses(self) -> int:
        """Samples per aggregation: the highest nr_accesses a region can reach."""
        return max(min(self.aggr_us // max(self.sample_us, 1), UINT_MAX), 1)

    def check(self, *, min_regions_floor: int = 3) -> None:
        """Raise EINVAL as damon_set_attrs does for an invalid combination."""
        if self.aggrs:
            if self.min_sample_us > self.max_sample_us:
                raise kernel_error(errno_mod.EINVAL, "intervals_goal min_sample_us > max")
            if not self.min_sample_us <= self.sample_us <= self.max_sample_us:
                raise kernel_error(errno_mod.EINVAL, "sample_us outside intervals_goal range")
        if self.min_nr_regions < min_regions_floor:
            raise kernel_error(errno_mod.EINVAL, f"nr_regions/min < {min_regions_floor}")
        if self.min_nr_regions > self.max_nr_regions:
            raise kernel_error(errno_mod.EINVAL, "nr_regions min > max")
        if self.sample_us > self.aggr_us:
            raise kernel_error(errno_mod.EINVAL, "sample_us > aggr_us")


@dataclass(frozen=True)
class FilterParams:
    """One DAMOS filter (core or ops layer)."""

    type: str
    matching: bool
    allow: bool
    memcg_path: str = ""
    addr_start: int = 0
    addr_end: int = 0
    target_idx: int = 0
    min: int = 0
    max: int = 0


@dataclass(frozen=True)
class GoalParams:
    """One quota goal; ``current_value`` only matters for user_input."""

    metric: str
    target_value: int
    current_value: int = 0
    nid: int = 0
    path: str = ""


@dataclass(frozen=True)
class QuotaParams:
    """A scheme's quota: ms/bytes per reset_interval_ms, weights (‰), goals, tuner."""

    ms: int = 0
    sz: int = 0
    reset_interval_ms: int = 0
    weight_sz: int = 0
    weight_nr_accesses: int = 0
    weight_age: int = 0
    goals: tuple[GoalParams, ...] = ()
    goal_tuner: str = "consist"
    fail_charge_num: int = 0
    fail_charge_denom: int = 0


@dataclass(frozen=True)
class WatermarkParams:
    """Watermarks (‰ of free memory) and the re-check interval (µs)."""

    metric: str = "none"
    interval_us: int = 0
    high: int = 0
    mid: int = 0
    low: int = 0


@dataclass(frozen=True)
class SchemeParams:
    """A DAMOS scheme as built from its sysfs dir (pattern bounds are closed ranges)."""

    action: str = "stat"
    min_sz: int = 0
    max_sz: int = 0
    min_nr_accesses: int = 0
    max_nr_accesses: int = 0
    min_age: int = 0
    max_age: int = 0
    apply_interval_us: int = 0
    quota: QuotaParams = QuotaParams()
    wmarks: WatermarkParams = WatermarkParams()
    target_nid: int = -1
    dests: tuple[tuple[int, int], ...] = ()
    core_filters: tuple[FilterParams, ...] = ()
    ops_filters: tuple[FilterParams, ...] = ()
    max_nr_snapshots: int = 0


@dataclass(frozen=True)
class TargetParams:
    """A monitoring target: a pid (None for paddr) and its initial regions."""

    pid: int | None
    regions: tuple[tuple[int, int], ...] = ()
    obsolete: bool = False


@dataclass(frozen=True)
class CtxParams:
    """Everything ``on``/``commit`` builds from one context dir."""

    ops: str
    attrs: Attrs
    targets: tuple[TargetParams, ...] = ()
    schemes: tuple[SchemeParams, ...] = ()
    addr_unit: int = 1
    pause: bool = False

    @property
    def min_region_sz(self) -> int:
        """DAMON's minimum region size: a page, or page/addr_unit for paddr."""
        if self.ops == "paddr":
            return max(PAGE_SIZE // max(self.addr_unit, 1), 1)
        return PAGE_SIZE


def check_ctx_inputs(params: CtxParams, targets_running: int | None = None) -> None:
    """The checks made before anything is merged (``on``, and ``commit`` with a count).

    A failure leaves a running kdamond untouched: 7.2.12 keeps running after each of these
    (the reference had placed a self-stop on them). ``targets_running`` is the running
    context's number of targets at ``commit`` (None at ``on``). As 7.2.12 does, a
    ``node_eligible_mem_bp`` goal on a non-paddr context passes ``on`` (the goal is kept)
    and fails a ``commit`` with ENOMEM.
    """
    if params.min_region_sz & (params.min_region_sz - 1):
        raise kernel_error(errno_mod.EINVAL, "min region size is not a power of two")
    if targets_running is None:
        return
    if params.ops != "paddr" and any(
        g.metric == "node_eligible_mem_bp" for s in params.schemes for g in s.quota.goals
    ):
        raise kernel_error(errno_mod.ENOMEM, "node_eligible_mem_bp needs paddr")
    extra = params.targets[targets_running:]
    if any(t.obsolete for t in extra):
        raise kernel_error(errno_mod.EINVAL, "obsolete target has no running counterpart")


# ----------------------------------------------------------------------------- runtime


@dataclass
class Region:
    """A monitoring region [start, end) with the kernel's per-region counters."""

    start: int
    end: int
    nr_accesses: int = 0
    nr_accesses_bp: int = 0
    last_nr_accesses: int = 0
    age: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class TriedRegion:
    """One ``tried_regions/<R>`` entry produced by a walk."""

    scheme: int
    start: int
    end: int
    nr_accesses: int
    age: int
    sz_filter_passed: int


@dataclass
class Stats:
    """DAMOS stats (cumulative since the scheme was created)."""

    nr_tried: int = 0
    sz_tried: int = 0
    nr_applied: int = 0
    sz_applied: int = 0
    sz_ops_filter_passed: int = 0
    qt_exceeds: int = 0
    nr_snapshots: int = 0


@dataclass
class SchemeState:
    """A running scheme: its parameters plus the state a commit preserves."""

    params: SchemeParams
    stats: Stats = field(default_factory=Stats)
    esz: int = 0
    esz_bp: int = 0
    charged_sz: int = 0
    charged_from_ms: int = 0
    total_charged_sz: int = 0
    total_charged_ns: int = 0
    charge_target: int | None = None
    charge_addr_from: int = 0
    min_score: int = 0
    next_apply_sis: int = 0
    wm_active: bool = True
    walk_completed: bool = False
    last_psi_total: int = 0

    @property
    def quota_set(self) -> bool:
        q = self.params.quota
        return bool(self.esz or q.sz or q.ms or q.goals)

    def quota_full(self, min_region_sz: int) -> bool:
        if not self.quota_set:
            return False
        if self.charged_sz >= self.esz:
            return True
        return self.esz - self.charged_sz < min_region_sz


@dataclass
class Target:
    """A running target: its pid and current regions (address order)."""

    pid: int | None
    regions: list[Region] = field(default_factory=list)


@dataclass
class _Walk:
    total_bytes_only: bool
    results: list[TriedRegion] = field(default_factory=list)
    done: bool = False
    canceled: bool = False


def _feedback(last: int, score: int) -> int:
    """damon_feed_loop_next_input(): proportional step toward score 10000, floor 10000."""
    goal = 10000
    if score == goal:
        return last
    if score >= goal * 2:
        return goal
    diff = abs(score - goal)
    comp = last * diff // goal if last < ULONG_MAX // diff else last // goal * diff
    if score > goal:
        return max(last - comp, goal)
    return min(last + comp, ULONG_MAX)


class SimContext:
    """One simulated kdamond context (see module docs). Times are µs of simulated time."""

    def __init__(
        self,
        params: CtxParams,
        workload: Workload,
        *,
        now_us: int,
        seed: int,
        on_call: Callable[[SimContext], None] | None = None,
        split_memory: dict[str, int] | None = None,
    ) -> None:
        self.params = params
        self.attrs = self._with_samples(params.attrs)
        self.workload = workload
        self.now_us = now_us
        self.running = True
        self.schemes = [SchemeState(p) for p in params.schemes]
        self.targets = [Target(t.pid, self._initial_regions(t)) for t in params.targets]
        self._np = np.random.default_rng(seed)
        self._rand = random.Random(seed)
        self._on_call = on_call
        # The kernel's "last nr_regions" of kdamond_split_regions() is one static variable
        # shared by every kdamond; the fake shares this dict between contexts likewise.
        self._split_memory = split_memory if split_memory is not None else {}
        self._walk: _Walk | None = None
        self._max_nr_accesses = 0
        self.passed_samples = 0
        self._next_aggr = self.attrs.aggr_us // self._sample
        self._next_update = self.attrs.update_us // self._sample
        self._next_tune = self._next_aggr * self.attrs.aggrs
        for s in self.schemes:
            self._set_next_apply(s)
        self._sz_limit = self._apply_min_nr_regions()

    # -- helpers -------------------------------------------------------------------------

    @property
    def _sample(self) -> int:
        return max(self.attrs.sample_us, 1)

    @staticmethod
    def _with_samples(attrs: Attrs) -> Attrs:
        if attrs.aggr_samples:
            return attrs
        samples = attrs.aggr_us // max(attrs.sample_us, 1)
        return Attrs(**{**attrs.__dict__, "aggr_samples": samples})

    @property
    def min_region_sz(self) -> int:
        return self.params.min_region_sz

    def _set_next_apply(self, s: SchemeState) -> None:
        interval = s.params.apply_interval_us or self.attrs.aggr_us
        s.next_apply_sis = self.passed_samples + interval // self._sample

    def _initial_regions(self, t: TargetParams) -> list[Region]:
        minsz = self.params.min_region_sz
        if t.regions:
            return [
                Region(s - s % minsz, -(-e // minsz) * minsz)
                for s, e in t.regions
                if -(-e // minsz) * minsz > s - s % minsz
            ]
        if self.params.ops != "vaddr" or t.pid is None:
            return []
        return self._vaddr_regions(t.pid, even_split=True)

    def _three_regions(self, pid: int) -> list[tuple[int, int]]:
        vmas = sorted(self.workload.vmas(pid))
        if not vmas:
            return []
        gaps = [
            (vmas[i + 1][0] - vmas[i][1], i)
            for i in range(len(vmas) - 1)
            if vmas[i + 1][0] > vmas[i][1]
        ]
        cut_after = sorted(i for _, i in sorted(gaps, reverse=True)[:2])
        ranges: list[tuple[int, int]] = []
        start = vmas[0][0]
        for i in cut_after:
            ranges.append((start, vmas[i][1]))
            start = vmas[i + 1][0]
        ranges.append((start, vmas[-1][1]))
        return ranges

    def _vaddr_regions(self, pid: int, *, even_split: bool) -> list[Region]:
        ranges = self._three_regions(pid)
        if not even_split:
            return [Region(s, e) for s, e in ranges]
        total = sum(e - s for s, e in ranges)
        piece = max(total // max(self.attrs.min_nr_regions, 1), PAGE_SIZE)
        piece -= piece % PAGE_SIZE
        regions: list[Region] = []
        for s, e in ranges:
            n = max((e - s) // piece, 1)
            step = max(((e - s) // n) // PAGE_SIZE * PAGE_SIZE, PAGE_SIZE)
            cur = s
            for _ in range(n - 1):
                if cur + step >= e:
                    break
                regions.append(Region(cur, cur + step))
                cur += step
            regions.append(Region(cur, e))
        return regions

    def _target_valid(self, t: Target) -> bool:
        if self.params.ops == "paddr" or t.pid is None:
            return True
        return self.workload.pid_alive(t.pid)

    def _need_stop(self) -> bool:
        """kdamond_need_stop(): vaddr/fvaddr stop once no target is valid (or none exist)."""
        if self.params.ops == "paddr":
            return False
        return not any(self._target_valid(t) for t in self.targets)

    # -- the main loop -------------------------------------------------------------------

    def run_until(self, t_us: int) -> None:
        """Advance simulated time to ``t_us`` (or until the kdamond exits)."""
        guard = 0
        while self.running and self.now_us < t_us:
            guard += 1
            if guard > 10_000_000:  # pragma: no cover - a bug in the fake, not in a test
                raise RuntimeError("fake kdamond loop does not progress")
            self._step(t_us)

    def _step(self, limit_us: int) -> None:
        if self._need_stop():
            self.stop()
            return
        wait = self._watermark_wait_us()
        if wait:
            self.now_us = min(self.now_us + wait, max(limit_us, self.now_us + 1))
            self._call()
            self._cancel_walk()
            return
        if self.params.pause:
            # Paused: only online commits are served; walks are cancelled.
            self._cancel_walk()
            self._call()
            self.now_us = max(limit_us, self.now_us + self._sample)
            return
        event = self._next_event()
        todo = event - self.passed_samples
        room = max((limit_us - self.now_us) // self._sample, 0)
        if room < todo and self._walk is None:
            self._accumulate(room)
            self.now_us = limit_us
            return
        self._accumulate(todo)
        self._event()

    def _next_event(self) -> int:
        events = [self._next_aggr, self._next_update]
        events += [s.next_apply_sis for s in self.schemes]
        return max(min(events), self.passed_samples + 1)

    def _accumulate(self, samples: int) -> None:
        """Count ``samples`` sample intervals of accesses on every region."""
        if samples <= 0:
            return
        self.passed_samples += samples
        self.now_us += samples * self._sample
        max_nr = self.attrs.max_nr_accesses
        ops = self.params.ops
        for t in self.targets:
            if not self._target_valid(t):
                continue
            for r in t.regions:
                p = self.workload.access_probability(ops, t.pid, r.start, r.end)
                hits = int(self._np.binomial(samples, min(max(p, 0.0), 1.0))) if p > 0 else 0
                r.nr_accesses += hits
                drop = samples * (r.last_nr_accesses * 10000 // max_nr)
                r.nr_accesses_bp = max(r.nr_accesses_bp - drop, 0) + hits * 10000
                self._max_nr_accesses = max(self._max_nr_accesses, r.nr_accesses)

    def _event(self) -> None:
        at_aggr = self.passed_samples >= self._next_aggr
        next_aggr = self._next_aggr
        next_update = self._next_update
        if at_aggr:
            self._merge_regions(self._max_nr_accesses // 10, self._sz_limit)
            self._sz_limit = self._apply_min_nr_regions()
        self._call()
        if not self.running:
            return
        if self.schemes:
            self._apply_schemes()
        else:
            self._cancel_walk()
        if at_aggr:
            if self.attrs.aggrs and self.passed_samples >= self._next_tune:
                self._next_aggr = next_aggr
                self._next_tune += self.attrs.aggr_samples * self.attrs.aggrs
                self._tune_intervals()
            self._next_aggr = next_aggr + self.attrs.aggr_us // self._sample
            self._reset_aggregated()
            self._split_regions()
        if self.passed_samples >= next_update:
            self._next_update = next_update + self.attrs.update_us // self._sample
            self._ops_update()

    def _call(self) -> None:
        if self._on_call is not None:
            self._on_call(self)

    def poll_exit(self) -> None:
        """Stop now if every vaddr/fvaddr target has exited (kdamond_need_stop())."""
        if self.running and self._need_stop():
            self.stop()

    def stop(self) -> None:
        """The kdamond exits: targets are destroyed, pending walks cancelled."""
        if not self.running:
            return
        self.running = False
        self.targets = []
        self._cancel_walk()

    # -- regions -------------------------------------------------------------------------

    def _region_sz_limit(self) -> int:
        total = sum(r.size for t in self.targets for r in t.regions)
        if self.attrs.min_nr_regions:
            total //= self.attrs.min_nr_regions
        return max(total, self.min_region_sz)

    def _apply_min_nr_regions(self) -> int:
        minsz = self.min_region_sz
        limit = -(-self._region_sz_limit() // minsz) * minsz
        for t in self.targets:
            out: list[Region] = []
            for r in t.regions:
                while r.size > limit:
                    left = _copy(r, r.start, r.start + limit)
                    out.append(left)
                    r.start += limit
                out.append(r)
            t.regions = out
        return limit

    def _merge_regions(self, threshold: int, sz_limit: int) -> None:
        max_thres = self.attrs.aggr_us // self._sample
        while True:
            for t in self.targets:
                self._merge_regions_of(t, threshold, sz_limit)
            threshold = max(1, threshold * 2)
            total = sum(len(t.regions) for t in self.targets)
            if not (total > self.attrs.max_nr_regions and threshold // 2 < max_thres):
                return

    @staticmethod
    def _merge_regions_of(t: Target, thres: int, sz_limit: int) -> None:
        out: list[Region] = []
        for r in t.regions:
            if abs(r.nr_accesses - r.last_nr_accesses) > thres or (r.nr_accesses == 0) != (
                r.last_nr_accesses == 0
            ):
                r.age = 0
            else:
                r.age += 1
            prev = out[-1] if out else None
            if (
                prev is not None
                and prev.end == r.start
                and abs(prev.nr_accesses - r.nr_accesses) <= thres
                and prev.size + r.size <= sz_limit
            ):
                sl, sr = prev.size, r.size
                prev.nr_accesses = (prev.nr_accesses * sl + r.nr_accesses * sr) // (sl + sr)
                prev.nr_accesses_bp = prev.nr_accesses * 10000
                prev.age = (prev.age * sl + r.age * sr) // (sl + sr)
                prev.end = r.end
            else:
                out.append(r)
        t.regions = out

    def _reset_aggregated(self) -> None:
        for t in self.targets:
            for r in t.regions:
                r.nr_accesses_bp = r.nr_accesses * 10000
                r.last_nr_accesses = r.nr_accesses
                r.nr_accesses = 0
        self._max_nr_accesses = 0

    def _split_regions(self) -> None:
        n = sum(len(t.regions) for t in self.targets)
        if n > self.attrs.max_nr_regions // 2:
            return
        last = self._split_memory.get("last_nr_regions", -1)
        subs = 3 if (last == n and n < self.attrs.max_nr_regions // 3) else 2
        minsz = self.min_region_sz
        for t in self.targets:
            out: list[Region] = []
            for r in t.regions:
                pieces = [r]
                sz = r.size
                for _ in range(subs - 1):
                    if sz <= 2 * minsz:
                        break
                    cut = (self._rand.randint(1, 9) * sz // 10) // minsz * minsz
                    if cut == 0 or cut >= sz:
                        continue
                    left = pieces[0]
                    right = _copy(left, left.start + cut, left.end)
                    left.end = left.start + cut
                    pieces.insert(1, right)
                    sz = cut
                out.extend(pieces)
            t.regions = out
        self._split_memory["last_nr_regions"] = n

    def _ops_update(self) -> None:
        if self.params.ops != "vaddr":
            return
        for t in self.targets:
            if t.pid is not None and self._target_valid(t):
                ranges = [(r.start, r.end) for r in self._vaddr_regions(t.pid, even_split=False)]
                if ranges:
                    t.regions = set_regions(t.regions, ranges, PAGE_SIZE)

    # -- schemes -------------------------------------------------------------------------

    def _watermark_wait_us(self) -> int:
        """kdamond_wait_activation(): the sleep when every scheme is deactivated."""
        min_wait: int | None = None
        for s in self.schemes:
            wait = self._wmark_wait(s)
            min_wait = wait if min_wait is None else min(min_wait, wait)
        return min_wait or 0

    def _wmark_wait(self, s: SchemeState) -> int:
        wm = s.params.wmarks
        if wm.metric != "free_mem_rate":
            return 0
        v = self.workload.free_mem_permil()
        if v > wm.high or v < wm.low:
            s.wm_active = False
            return wm.interval_us
        if wm.mid <= v <= wm.high and not s.wm_active:
            return wm.interval_us
        s.wm_active = True
        return 0

    def _apply_schemes(self) -> None:
        due = [s for s in self.schemes if self.passed_samples >= s.next_apply_sis and s.wm_active]
        if not due:
            return
        for s in due:
            self._adjust_quota(s)
        sz_limit = self._region_sz_limit()
        for ti, t in enumerate(self.targets):
            if self._target_valid(t):
                self._apply_target(ti, t, sz_limit)
        for s in self.schemes:
            if self.passed_samples < s.next_apply_sis:
                continue
            self._walk_complete(s)
            self._set_next_apply(s)

    def _apply_target(self, ti: int, t: Target, max_region_sz: int) -> None:
        i = 0
        while i < len(t.regions):
            r = t.regions[i]
            for si, s in enumerate(self.schemes):
                self._do_apply(ti, t, i, si, s)
            r = t.regions[i]
            if i > 0:
                prev = t.regions[i - 1]
                if (
                    prev.end == r.start
                    and prev.age == r.age
                    and prev.last_nr_accesses == r.last_nr_accesses
                    and prev.nr_accesses == r.nr_accesses
                    and r.end - prev.start <= max_region_sz
                ):
                    prev.end = r.end
                    del t.regions[i]
                    continue
            i += 1

    def _do_apply(self, ti: int, t: Target, i: int, si: int, s: SchemeState) -> None:
        if self.passed_samples < s.next_apply_sis or not s.wm_active:
            return
        if s.quota_full(self.min_region_sz):
            return
        if self._skip_charged(ti, t, i, s):
            return
        if s.params.max_nr_snapshots and s.params.max_nr_snapshots <= s.stats.nr_snapshots:
            return
        r = t.regions[i]
        if self._valid_target(r, s):
            self._apply_one(ti, t, i, si, s)
        if i == len(t.regions) - 1:
            s.stats.nr_snapshots += 1

    def _skip_charged(self, ti: int, t: Target, i: int, s: SchemeState) -> bool:
        if s.charge_target is None:
            return False
        r = t.regions[i]
        if ti != s.charge_target:
            return True
        if i == len(t.regions) - 1:
            s.charge_target, s.charge_addr_from = None, 0
            return True
        if s.charge_addr_from and r.end <= s.charge_addr_from:
            return True
        if s.charge_addr_from and r.start < s.charge_addr_from:
            skip = (s.charge_addr_from - r.start) // self.min_region_sz * self.min_region_sz
            if not skip:
                if r.size <= self.min_region_sz:
                    return True
                skip = self.min_region_sz
            _split_at(t, i, skip)
            return True
        s.charge_target, s.charge_addr_from = None, 0
        return False

    def _pattern_match(self, r: Region, p: SchemeParams) -> bool:
        nr = r.nr_accesses_bp // 10000
        return (
            p.min_sz <= r.size <= p.max_sz
            and p.min_nr_accesses <= nr <= p.max_nr_accesses
            and p.min_age <= r.age <= p.max_age
        )

    def _valid_target(self, r: Region, s: SchemeState) -> bool:
        if not self._pattern_match(r, s.params):
            return False
        if not s.quota_set:
            return True
        return self.score(r, s.params) >= s.min_score

    def score(self, r: Region, p: SchemeParams) -> int:
        """The ops layer's priority score for ``r`` under scheme ``p`` (0..99)."""
        if p.action not in _COLD_SCORED | _HOT_SCORED:
            return MAX_SCORE
        q = p.quota
        freq = (r.nr_accesses_bp // 10000) * 100 // self.attrs.max_nr_accesses
        age_s = r.age * self.attrs.aggr_us // 1_000_000
        agelog = 0
        while agelog < _MAX_AGE_IN_LOG and age_s:
            agelog += 1
            age_s >>= 1
        if freq == 0:
            agelog = -agelog
        age_sub = (agelog + _MAX_AGE_IN_LOG) * 100 // _MAX_AGE_IN_LOG // 2
        wf, wa = q.weight_nr_accesses, q.weight_age
        h = wf * freq + wa * age_sub
        h = h // (wf + wa) if wf + wa else 0
        hot = min(max(h * MAX_SCORE // 100, 0), MAX_SCORE)
        return MAX_SCORE - hot if p.action in _COLD_SCORED else hot

    def _core_filter_out(self, ti: int, t: Target, i: int, s: SchemeState) -> bool:
        filters = s.params.core_filters
        for f in filters:
            r = t.regions[i]
            if f.type == "target":
                matched = ti == f.target_idx
            else:
                minsz = self.min_region_sz
                start, end = f.addr_start // minsz * minsz, f.addr_end // minsz * minsz
                if start <= r.start and r.end <= end:
                    matched = True
                elif r.end <= start or end <= r.start:
                    matched = False
                elif r.start < start:
                    _split_at(t, i, start - r.start)
                    matched = False
                else:
                    _split_at(t, i, end - r.start)
                    matched = True
            if matched == f.matching:
                return not f.allow
        if s.params.ops_filters or not filters:
            return False
        return filters[-1].allow

    def _ops_apply(self, t: Target, r: Region, s: SchemeState) -> tuple[int, int]:
        """(bytes applied, bytes passing ops filters) of the ops layer model."""
        ops, p = self.params.ops, s.params
        mapped = self.workload.mapped_bytes(ops, t.pid, r.start, r.end)
        if ops != "paddr" and p.action in _MADVISE_ACTIONS:
            # damos_madvise(): one do_madvise() over the region, which consults no ops
            # filter (sz_ops_filter_passed stays 0). It advises every VMA in the region,
            # then fails with -ENOMEM for an unmapped part (madvise_walk_vmas()), and the
            # region counts 0 bytes applied; wholly mapped, it counts its whole length.
            if p.action == "pageout" and mapped:
                self.workload.pageout(ops, t.pid, r.start, r.end)
            return (r.size if mapped >= r.size else 0), 0
        passed = mapped if self._ops_filters_pass(t, r, s) else 0
        if p.action == "stat" or p.action not in _OPS_ACTIONS.get(ops, frozenset()):
            return 0, passed
        if p.action.startswith("migrate"):
            return (self._migrate(t, r, p) if passed else 0), passed
        return passed, passed

    def _migrate(self, t: Target, r: Region, p: SchemeParams) -> int:
        """Bytes a migration of region ``r`` moved: to ``target_nid`` (none when it is
        -1), or with ``dests`` to each node its weight's share of the region, as
        consecutive slices (the kernel interleaves folios by weight; the shares are the
        same)."""
        ops = self.params.ops
        if not p.dests:
            if p.target_nid < 0:
                return 0
            return self.workload.migrate(ops, t.pid, r.start, r.end, p.target_nid)
        total = sum(weight for _, weight in p.dests)
        if total <= 0:
            return 0
        moved, lo, acc = 0, r.start, 0
        for nid, weight in p.dests:
            acc += weight
            hi = r.start + (r.size * acc // total) // PAGE_SIZE * PAGE_SIZE
            if acc == total:
                hi = r.end
            if hi > lo:
                moved += self.workload.migrate(ops, t.pid, lo, hi, nid)
            lo = max(lo, hi)
        return moved

    def _ops_filters_pass(self, t: Target, r: Region, s: SchemeState) -> bool:
        filters = s.params.ops_filters
        prob = self.workload.access_probability(self.params.ops, t.pid, r.start, r.end)
        for f in filters:
            if f.type == "anon":
                matched = True
            elif f.type in ("young", "active"):
                matched = prob > 0
            else:
                matched = False
            if matched == f.matching:
                return f.allow
        return not (filters and filters[-1].allow)

    def _apply_one(self, ti: int, t: Target, i: int, si: int, s: SchemeState) -> None:
        r = t.regions[i]
        sz = r.size
        applied = passed = 0
        if s.quota_set and s.charged_sz + sz > s.esz:
            sz = (s.esz - s.charged_sz) // self.min_region_sz * self.min_region_sz
            if not sz:
                self._update_stat(s, r.size, 0, 0)
                return
            _split_at(t, i, sz)
            r = t.regions[i]
        if self._core_filter_out(ti, t, i, s):
            return
        r = t.regions[i]
        sz = r.size
        applied, passed = self._ops_apply(t, r, s)
        if self._walk is not None and not s.walk_completed:
            nr = r.nr_accesses_bp // 10000
            self._walk.results.append(TriedRegion(si, r.start, r.end, nr, r.age, passed))
        s.total_charged_ns += max(sz, 1000)
        q = s.params.quota
        if not q.fail_charge_denom or applied > sz:
            s.charged_sz += sz
        else:
            s.charged_sz += applied + (sz - applied) * q.fail_charge_num // q.fail_charge_denom
        if s.quota_full(self.min_region_sz):
            s.charge_target, s.charge_addr_from = ti, r.end
        if s.params.action != "stat":
            r.age = 0
        self._update_stat(s, sz, applied, passed)

    @staticmethod
    def _update_stat(s: SchemeState, tried: int, applied: int, passed: int) -> None:
        s.stats.nr_tried += 1
        s.stats.sz_tried += tried
        if applied:
            s.stats.nr_applied += 1
        s.stats.sz_applied += applied
        s.stats.sz_ops_filter_passed += passed

    # -- quotas --------------------------------------------------------------------------

    def _adjust_quota(self, s: SchemeState) -> None:
        q = s.params.quota
        if not q.ms and not q.sz and not q.goals:
            return
        now_ms = self.now_us // 1000
        if not s.total_charged_sz and not s.charged_from_ms:
            s.charged_from_ms = max(now_ms, 1)
            self._set_effective_quota(s)
        if not s.charged_from_ms <= now_ms < s.charged_from_ms + q.reset_interval_ms:
            if s.quota_full(self.min_region_sz):
                s.stats.qt_exceeds += 1
            s.total_charged_sz += s.charged_sz
            s.charged_from_ms = max(now_ms, 1)
            s.charged_sz = 0
            self._set_effective_quota(s)
        hist = [0] * (MAX_SCORE + 1)
        max_score = 0
        for ti, t in enumerate(self.targets):
            for i in range(len(t.regions)):
                r = t.regions[i]
                if not self._pattern_match(r, s.params):
                    continue
                if self._core_filter_out(ti, t, i, s):
                    continue
                sc = self.score(t.regions[i], s.params)
                hist[sc] += t.regions[i].size
                max_score = max(max_score, sc)
        cum, score = 0, max_score
        while True:
            cum += hist[score]
            if cum >= s.esz or not score:
                break
            score -= 1
        s.min_score = score

    def _set_effective_quota(self, s: SchemeState) -> None:
        q = s.params.quota
        if not q.ms and not q.goals:
            s.esz = q.sz
            return
        esz = ULONG_MAX
        if q.goals:
            score = self._quota_score(s)
            if q.goal_tuner == "temporal":
                if score >= 10000:
                    s.esz_bp = 0
                else:
                    s.esz_bp = q.sz * 10000 if q.sz else ULONG_MAX
            else:
                s.esz_bp = _feedback(max(s.esz_bp, 10000), score)
            esz = s.esz_bp // 10000
        if q.ms:
            thr = (
                s.total_charged_sz * 1_000_000 // s.total_charged_ns
                if s.total_charged_ns
                else PAGE_SIZE * 1024
            )
            esz = max(min(thr * q.ms, esz), self.min_region_sz)
        if q.sz and q.sz < esz:
            esz = q.sz
        s.esz = esz

    def _quota_score(self, s: SchemeState) -> int:
        best = 0
        for g in s.params.quota.goals:
            if g.metric == "user_input":
                current = g.current_value
            elif g.metric == "some_mem_psi_us":
                total = self.workload.goal_metric(g.metric, g.nid, g.path)
                current, s.last_psi_total = total - s.last_psi_total, total
            else:
                current = self.workload.goal_metric(g.metric, g.nid, g.path)
            best = max(best, current * 10000 // g.target_value)
        return best

    # -- intervals tuning ----------------------------------------------------------------

    def _tune_intervals(self) -> None:
        a = self.attrs
        max_events = events = 0
        for t in self.targets:
            for r in t.regions:
                max_events += r.size * a.aggr_samples
                events += r.size * r.nr_accesses
        target = max(max_events * a.access_bp // 10000, 1)
        score = events * 10000 // target
        adapt = _feedback(100_000_000, score) // 10000
        if adapt <= 10000:
            adapt = 5000 + adapt // 2
        if adapt == 10000:
            return
        sample = min(a.max_sample_us, a.sample_us * adapt // 10000)
        sample = max(a.min_sample_us, sample)
        new = Attrs(**{**a.__dict__, "sample_us": sample, "aggr_us": sample * a.aggr_samples})
        self.set_attrs(new)

    def set_attrs(self, new: Attrs) -> None:
        """damon_set_attrs() on a running context: rescale results, reschedule."""
        new = self._with_samples(new)
        old = self.attrs
        aggregating = self.passed_samples < self._next_aggr
        if old.sample_us and old.aggr_us and new.sample_us and new.aggr_us:
            for t in self.targets:
                for r in t.regions:
                    _rescale(r, old, new, aggregating=aggregating)
        self.attrs = new
        self._next_aggr = self.passed_samples + new.aggr_us // self._sample
        self._next_update = self.passed_samples + new.update_us // self._sample
        for s in self.schemes:
            self._set_next_apply(s)

    # -- online commits ------------------------------------------------------------------

    def commit(self, src: CtxParams, *, stop_on_failure: bool) -> None:
        """damon_commit_ctx(): merge a validated context into this running one.

        An obsolete target without a running counterpart is refused before anything is
        merged, and the kdamond keeps running (seen on 7.2.12); so are a non-power-of-two
        minimum region size and a non-paddr ``node_eligible_mem_bp`` goal
        (:func:`check_ctx_inputs`). ``stop_on_failure`` stops the kdamond if the merge
        itself fails midway (the kernel's "maybe corrupted" path).
        """
        check_ctx_inputs(src, len(self.targets))
        try:
            self._commit(src)
        except OSError:
            if stop_on_failure:
                self.stop()
            raise

    def _commit(self, src: CtxParams) -> None:
        merged = []
        for i, p in enumerate(src.schemes):
            if i < len(self.schemes):
                old = self.schemes[i]
                old.params = p
                # damos_commit() copies the whole watermarks struct from the fresh scheme,
                # whose activation damon_new_scheme() set: a commit re-activates.
                old.wm_active = True
                merged.append(old)
            else:
                fresh = SchemeState(p)
                self._set_next_apply(fresh)
                merged.append(fresh)
        self.schemes = merged
        targets: list[Target] = []
        for i, old_t in enumerate(self.targets):
            if i < len(src.targets) and not src.targets[i].obsolete:
                st = src.targets[i]
                if st.regions:
                    old_t.regions = set_regions(old_t.regions, list(st.regions), src.min_region_sz)
                old_t.pid = st.pid
                targets.append(old_t)
            else:
                for s in self.schemes:
                    if s.charge_target == i:
                        s.charge_target, s.charge_addr_from = None, 0
        for st in src.targets[len(self.targets) :]:
            targets.append(Target(st.pid, set_regions([], list(st.regions), src.min_region_sz)))
        self.targets = targets
        new_attrs = self._with_samples(Attrs(**{**src.attrs.__dict__, "aggr_samples": 0}))
        old_cmp = {**self.attrs.__dict__, "aggr_samples": 0}
        if old_cmp != {**new_attrs.__dict__, "aggr_samples": 0}:
            self.set_attrs(new_attrs)
        self.params = src

    def commit_goals(self, goals_by_scheme: Sequence[tuple[GoalParams, ...]]) -> None:
        """commit_schemes_quota_goals: replace each scheme's goals (matched by index)."""
        for s, goals in zip(self.schemes, goals_by_scheme, strict=False):
            q = s.params.quota
            s.params = _replace_quota(s.params, QuotaParams(**{**q.__dict__, "goals": goals}))

    # -- walks ---------------------------------------------------------------------------

    def start_walk(self, *, total_bytes_only: bool) -> None:
        """damos_walk(): ECANCELED once the kdamond is gone, EBUSY if one is pending."""
        if not self.running:
            raise kernel_error(errno_mod.ECANCELED, "kdamond is not running")
        if self._walk is not None:
            raise kernel_error(errno_mod.EBUSY, "another walk is in progress")
        self._walk = _Walk(total_bytes_only)
        for s in self.schemes:
            s.walk_completed = False

    def finish_walk(self, *, max_us: int) -> list[TriedRegion]:
        """Run until the pending walk completes; raise ECANCELED if it was cancelled."""
        walk = self._walk
        if walk is None:
            raise RuntimeError("finish_walk() without start_walk()")
        deadline = self.now_us + max_us
        while not (walk.done or walk.canceled) and self.running and self.now_us < deadline:
            self._step(deadline)
        self._walk = None
        if not (walk.done or walk.canceled) and self.running:
            raise RuntimeError(
                "update_schemes_tried_regions would block forever on the kernel here "
                "(e.g. every scheme watermark-deactivated with watermarks/interval_us 0)"
            )
        if walk.canceled or not walk.done:
            raise kernel_error(errno_mod.ECANCELED, "the walk was cancelled")
        return walk.results

    def _walk_complete(self, s: SchemeState) -> None:
        walk = self._walk
        if walk is None:
            return
        s.walk_completed = True
        if all(x.walk_completed for x in self.schemes):
            for x in self.schemes:
                x.walk_completed = False
            walk.done = True

    def _cancel_walk(self) -> None:
        if self._walk is not None and not self._walk.done:
            self._walk.canceled = True

    @property
    def walk_pending(self) -> bool:
        return self._walk is not None


def _replace_quota(p: SchemeParams, q: QuotaParams) -> SchemeParams:
    return SchemeParams(**{**p.__dict__, "quota": q})


def _copy(r: Region, start: int, end: int) -> Region:
    """A piece of ``r`` with the same counters (what a split gives the new region)."""
    return Region(start, end, r.nr_accesses, r.nr_accesses_bp, r.last_nr_accesses, r.age)


def _split_at(t: Target, i: int, sz: int) -> None:
    """damon_split_region_at(): the right part copies the counters."""
    r = t.regions[i]
    if not 0 < sz < r.size:
        return
    right = Region(r.start + sz, r.end, r.nr_accesses, r.nr_accesses_bp, r.last_nr_accesses, r.age)
    r.end = r.start + sz
    t.regions.insert(i + 1, right)


def _rescale(r: Region, old: Attrs, new: Attrs, *, aggregating: bool) -> None:
    def conv(nr: int) -> int:
        bp = nr * 10000 // old.max_nr_accesses
        return bp * new.max_nr_accesses // 10000

    if not aggregating:
        r.nr_accesses = conv(r.nr_accesses)
        r.nr_accesses_bp = r.nr_accesses * 10000
    else:
        r.last_nr_accesses = conv(r.last_nr_accesses)
        r.nr_accesses_bp = r.last_nr_accesses * 10000
        r.nr_accesses = 0
    r.age = r.age * old.aggr_us // new.aggr_us


def set_regions(
    regions: list[Region], ranges: Sequence[tuple[int, int]], min_region_sz: int
) -> list[Region]:
    """damon_set_regions(): keep regions inside the new ranges, stretch edges, fill holes."""
    aligned = [(s - s % min_region_sz, -(-e // min_region_sz) * min_region_sz) for s, e in ranges]
    kept = [r for r in regions if any(r.start < e and s < r.end for s, e in aligned)]
    out: list[Region] = []
    for s, e in aligned:
        inside = [r for r in kept if r.start < e and s < r.end]
        if not inside:
            if e > s:
                out.append(Region(s, e))
            continue
        inside[0].start = s
        inside[-1].end = e
        for a, b in itertools.pairwise(inside):
            out.append(a)
            if a.end < b.start:
                out.append(Region(a.end, b.start))
        out.append(inside[-1])
    return out
