"""Reclaim: page out cold memory as fast as the goals allow.

Three actuators, one controller (:mod:`reactor.policies.control`): the quota is bytes per
``quota.per``, set each tick from the goals (pressure budget, refault budget, ...).

* **native** (:class:`NativeReclaim`): the monitor's cold regions (no access for
  ``min_age``) go to ``process_madvise(PAGEOUT)``, coldest and oldest first, up to the
  tick's share of the quota. Before handing them over the policy reads each target's
  smaps: anonymous and shmem pieces are dropped while there is no swap (PAGEOUT of them
  succeeds and does nothing; logged once per policy with the actuator's reason), and so
  are mappings with nothing resident; an address range paged out is not asked for again
  within ``min_age`` (however the next snapshots split the memory into regions), and a
  region found with nothing to page out is not looked at again within it (sooner if
  swap appears). A mapping
  whose pageout freed nothing (shared library pages other processes map, dirty file
  pages) backs off for ``min_age`` x 2**strikes, at most 64 ``min_age``; freeing bytes
  clears it. Which mappings hold what comes from the monitor's own snapshot when its
  probe reads smaps (``referenced``: :attr:`~reactor.sampler.snapshot.Snapshot.mappings`,
  the same moment as the cold regions, no extra page walk); otherwise from a reading of
  the target's smaps shared by every native reclaim policy (:func:`shared_states`) and
  kept for the decision age. The actuator reads the target again before and after it
  acts, to measure. Measured: bytes that left the target's RSS.
* **cgroup** (:class:`CgroupReclaim`): with ``cgroup`` set, the tick's bytes are written
  to the group's ``memory.reclaim`` (v2); measured: the group's usage drop.
* **damon** (:mod:`reactor.policies.damon`): the quota of a DAMOS pageout scheme.
"""

from __future__ import annotations

import bisect
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from reactor.actuators._procfs import PieceKind, mapping_kind
from reactor.actuators.base import Limits, RefusedAction, Span, take_bytes
from reactor.actuators.cgroup import CgroupReclaimer
from reactor.actuators.madvise import (
    ANON_PAGEOUT_NO_SWAP,
    MadviseActuator,
    TargetState,
    TargetStates,
)
from reactor.errors import KernelInterfaceError, TargetVanished
from reactor.kernelfs import KernelFS
from reactor.policies.base import Acted, PolicyContext
from reactor.policies.quota import QuotaPolicy
from reactor.policies.regions import Candidate, PickCache, cold_regions, target_pid
from reactor.signals.meminfo import parse_meminfo

if TYPE_CHECKING:
    from reactor.config import PolicyConfig
    from reactor.sampler.procfs import Mappings

__all__ = ("BACKOFF_MAX_FACTOR", "CgroupReclaim", "NativeReclaim", "policy_limits", "shared_states")

#: A mapping whose pageout freed nothing is not asked again for min_age x 2**strikes,
#: at most this many min_ages.
BACKOFF_MAX_FACTOR = 64

#: the oldest target reading a reclaim decision uses (see ReclaimPolicy._decision_age)
DECISION_AGE_MAX_S = 10.0

_SHARED: weakref.WeakKeyDictionary[KernelFS, TargetStates] = weakref.WeakKeyDictionary()


def shared_states(fs: KernelFS, max_age_s: float) -> TargetStates:
    """The target readings every native reclaim policy on ``fs`` shares: a process is
    read (smaps) once per tick, however many policies act on it."""
    states = _SHARED.get(fs)
    if states is None:
        states = _SHARED[fs] = TargetStates(fs, max_age_s=max_age_s)
    states.max_age_s = max_age_s
    return states


class _Resident:
    """What a decision needs of a target's mappings, in address order: where each one
    is, its resident bytes and what kind of memory it holds (from a smaps reading or
    from the monitor's sampled mappings)."""

    __slots__ = ("_spans", "ends", "kind", "rss", "starts", "state")

    def __init__(
        self,
        starts: list[int],
        ends: list[int],
        rss: Callable[[int], int],
        kind: Callable[[int], PieceKind],
        state: TargetState | None = None,
    ) -> None:
        self.starts, self.ends, self.rss, self.kind = starts, ends, rss, kind
        #: the smaps reading this view is of (None: the monitor's sampled mappings)
        self.state = state
        self._spans: dict[tuple[int, int], tuple[tuple[int, int, int, bool], ...]] = {}

    @classmethod
    def of_state(cls, state: TargetState) -> _Resident:
        vmas = state.vmas  # address order
        return cls(
            [v.start for v in vmas],
            [v.end for v in vmas],
            lambda i: vmas[i].rss,  # parse_smaps made sure every mapping has one
            lambda i: vmas[i].kind(),  # kept on the Vma, per reading
            state,
        )

    @classmethod
    def of_mappings(cls, maps: Mappings) -> _Resident:
        """The view of a sampled snapshot's mappings, made once per snapshot (every
        policy on the monitor asks each tick until the next aggregation)."""
        res = _OF_MAPPINGS.get(maps)
        if res is None:
            rss = maps.rss.tolist()
            inode, path = maps.inode, maps.path
            res = _OF_MAPPINGS[maps] = cls(
                maps.start.tolist(),
                maps.end.tolist(),
                rss.__getitem__,
                _memo(lambda i: mapping_kind(int(inode[i]), path[i]), len(maps)),
            )
        return res

    def overlapping(self, start: int, end: int) -> range:
        """Indices of the mappings that may overlap ``[start, end)`` (check each)."""
        i = max(0, bisect.bisect_right(self.starts, start) - 1)
        j = bisect.bisect_left(self.starts, end, lo=i)
        return range(i, j)

    def resident_spans(self, start: int, end: int) -> tuple[tuple[int, int, int, bool], ...]:
        """``(lo, hi, index, file)`` of ``[start, end)`` in each mapping with resident
        pages, in address order (``file``: a file-backed mapping, which pages out without
        swap); kept per range (a snapshot's view is asked about the same cold regions
        every tick until the next aggregation)."""
        spans = self._spans.get((start, end))
        if spans is None:
            spans = self._spans[(start, end)] = tuple(
                (lo, hi, i, self.kind(i) == "file")
                for i in self.overlapping(start, end)
                if (hi := min(end, self.ends[i])) > (lo := max(start, self.starts[i]))
                and self.rss(i) != 0
            )
        return spans


_OF_MAPPINGS: weakref.WeakKeyDictionary[Mappings, _Resident] = weakref.WeakKeyDictionary()


def _memo(kind: Callable[[int], PieceKind], n: int) -> Callable[[int], PieceKind]:
    """``kind`` computed once per mapping (a decision asks for each piece's)."""
    known: list[PieceKind | None] = [None] * n

    def get(i: int) -> PieceKind:
        k = known[i]
        if k is None:
            k = known[i] = kind(i)
        return k

    return get


@dataclass
class _Backoff:
    """A mapping whose last pageout freed nothing: not asked again before ``until``."""

    until: float
    strikes: int


@dataclass
class _Pick:
    """One target's share of a plan: its candidates (coldest first), the mappings the
    pieces were chosen from, and the pieces that can be paged out now."""

    pid: int
    cands: list[Candidate]
    before: _Resident
    ranges: list[Span]


@dataclass
class _Plan:
    """A native reclaim tick's candidates, computed before the controller steps.

    ``why``: the snapshot is missing or stale (nothing to act on, no cold reading);
    ``regions``: cold regions in the snapshot; ``cold_bytes``: the pieces' total.
    """

    why: str | None = None
    regions: int = 0
    picks: list[_Pick] = field(default_factory=list)
    cold_bytes: int = 0


def policy_limits(cfg: PolicyConfig, dry_run: bool) -> Limits:
    """The actuator limits a policy's config sets (rate limit, dry-run)."""
    rate = cfg.rate_limit
    return Limits(
        rate_bytes_per_s=rate,
        burst_bytes=None if rate is None else max(4096, int(rate)),
        dry_run=dry_run,
    )


class NativeReclaim(QuotaPolicy):
    """process_madvise(PAGEOUT) of the monitor's cold regions (module doc)."""

    def __init__(self, cfg: PolicyConfig, ctx: PolicyContext) -> None:
        super().__init__(cfg, ctx)
        self.limits = policy_limits(cfg, ctx.config.reactor.dry_run)
        #: readings of the targets, shared with the other policies (half a tick old at most)
        self.states = shared_states(ctx.fs, ctx.config.reactor.tick / 2)
        self.actuator = MadviseActuator(ctx.fs, limits=self.limits, states=self.states)
        #: pid -> (start, end, when) of the ranges paged out: not asked again within
        #: min_age. By address, not by region: the monitor's regions split and merge
        #: between aggregations, and the snapshot a tick decides from was sampled as the
        #: previous tick acted, so it still shows what that tick paged out as resident.
        self._issued: dict[int, list[tuple[int, int, float]]] = {}
        #: (pid, start, length) -> when it had nothing to page out (anonymous without
        #: swap, nothing resident, backing off): not looked at again within min_age.
        self._nothing: dict[tuple[int, int, int], float] = {}
        self._swap_seen: bool | None = None
        #: (pid, mapping start, mapping end) whose last pageout freed nothing
        self._fruitless: dict[tuple[int, int, int], _Backoff] = {}
        self._comm: dict[int, str] = {}
        self._cold = PickCache()
        #: bytes that left the targets' RSS in the last act (None: it did not act)
        self._reclaimed: int | None = None
        #: whether the last act's budget (not the candidates) limited it (None: no act)
        self._bound: bool | None = None

    def update(self, cfg: PolicyConfig) -> None:
        """Take new goals and bounds; a changed rate limit gets a fresh bucket."""
        old = self.cfg
        super().update(cfg)
        if cfg.rate_limit != old.rate_limit:
            self.limits = policy_limits(cfg, self.ctx.config.reactor.dry_run)
            self.actuator = MadviseActuator(self.ctx.fs, limits=self.limits, states=self.states)

    def _decision_age(self) -> float:
        """How old a target reading may be for choosing pieces: half a tick, or up to
        ``min_age`` (capped at 10 s), the time a candidate is left alone anyway."""
        tick = self.ctx.config.reactor.tick
        return max(tick / 2, min(self.cfg.min_age, DECISION_AGE_MAX_S))

    async def _resident(self, pid: int, sampled: Mappings | None) -> _Resident:
        """The target's mappings to choose pieces from: the monitor's sampled ones (the
        moment its cold regions are from), else a smaps reading kept for the decision
        age (read by whichever policy comes first: which pieces are file-backed does not
        change, and a piece that emptied meanwhile only costs a pageout that frees
        nothing, backed off). The actuator re-reads before it acts, to measure."""
        if sampled is not None:
            return _Resident.of_mappings(sampled)
        state = self.states.peek(pid, self._decision_age())
        if state is None:
            state = await anyio.to_thread.run_sync(partial(self.states.get, pid))
        return _Resident.of_state(state)

    def _excluded(self, pid: int) -> bool:
        ex = self.cfg.exclude
        if pid in ex.pids:
            return True
        if not ex.commands:
            return False
        comm = self._comm.get(pid)
        if comm is None:
            try:
                comm = self.ctx.fs.read_text(f"/proc/{pid}/comm").strip()
            except KernelInterfaceError:
                comm = ""
            self._comm[pid] = comm
        return comm in ex.commands

    def _swap_total(self) -> int:
        sample = self.ctx.bus.peek("meminfo")
        if sample is not None:
            return int(sample.value.swap_total_bytes)
        text = self.ctx.fs.read_text("/proc/meminfo")
        return parse_meminfo(text, "/proc/meminfo").swap_total_bytes

    def _pieces(
        self,
        pid: int,
        cands: list[Candidate],
        swap: bool,
        now: float,
        res: _Resident,
        *,
        held: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[list[Span], int, list[Candidate]]:
        """File pieces of ``cands`` (in their order) with something resident and not
        backing off in ``res`` (the target's mappings), the anonymous/shmem bytes
        dropped for lack of swap, and the candidates with nothing to page out; the
        ``held`` ranges (sorted, merged: paged out within ``min_age``) are left out.

        A piece that starts where the one before it in the list ends extends it (cold
        regions of equal coldness come in address order: a per-mapping probe's run of
        adjacent cold mappings is one span), so the budget cut, the plan and the calls
        go over a few spans instead of one per mapping."""
        out: list[Span] = []
        anon = 0
        empty: list[Candidate] = []
        backoffs = any(key[0] == pid for key in self._fruitless)
        # the held ranges' extent: a piece outside it needs no cutting (most of them)
        held = held or ()
        held_lo, held_hi = (held[0][0], held[-1][1]) if held else (0, 0)
        spans_of = res.resident_spans
        for cand in cands:
            found = False
            for lo, hi, i, file in spans_of(cand.start, cand.start + cand.length):
                if backoffs and self._backing_off(pid, res, i, now):
                    continue
                if not file and not swap:
                    anon += hi - lo
                    continue
                cut = lo < held_hi and hi > held_lo
                for a, b in _outside(held, lo, hi) if cut else ((lo, hi),):
                    found = True
                    if out and out[-1][0] + out[-1][1] == a:
                        out[-1] = (out[-1][0], b - out[-1][0])
                    else:
                        out.append((a, b - a))
            if not found:
                empty.append(cand)
        return out, anon, empty

    def _held(self, pid: int) -> list[tuple[int, int]]:
        """The ranges of ``pid`` paged out within ``min_age``, sorted and merged."""
        spans = self._issued.get(pid)
        if not spans:
            return []
        merged: list[tuple[int, int]] = []
        for start, end, _ in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def _hold(self, pid: int, cut: Sequence[Span], issued: int, now: float) -> None:
        """Remember what an act issued: ``issued`` bytes of the ``cut`` spans, the
        lowest addresses first where the actuator cut them further (its budget and rate
        limit cut in address order)."""
        if issued <= 0:
            return
        spans, _ = take_bytes(sorted(cut), issued)
        self._issued.setdefault(pid, []).extend((s, s + n, now) for s, n in spans)

    def _backing_off(self, pid: int, res: _Resident, i: int, now: float) -> bool:
        entry = self._fruitless.get((pid, res.starts[i], res.ends[i]))
        return entry is not None and now < entry.until

    def _judge(
        self,
        pid: int,
        issued: Sequence[Span],
        before: _Resident,
        after: TargetState,
        now: float,
    ) -> None:
        """Back off on the mappings whose Rss the pageout did not lower (shared library
        pages other processes map, dirty file pages): min_age x 2**strikes, capped at
        ``BACKOFF_MAX_FACTOR`` min_ages; a mapping that gave something back is forgiven."""
        rss_after = {(v.start, v.end): v.rss for v in after.vmas}
        touched: dict[tuple[int, int], int] = {}
        for start, length in issued:
            for i in before.overlapping(start, start + length):
                if before.ends[i] > start:
                    touched[(before.starts[i], before.ends[i])] = before.rss(i)
        min_age = max(self.cfg.min_age, 1e-3)
        for (lo, hi), rss in touched.items():
            key = (pid, lo, hi)
            left = rss_after.get((lo, hi))
            if left is not None and left >= rss:
                strikes = self._fruitless[key].strikes + 1 if key in self._fruitless else 1
                wait = min_age * min(2**strikes, BACKOFF_MAX_FACTOR)
                self._fruitless[key] = _Backoff(now + wait, strikes)
            else:
                self._fruitless.pop(key, None)

    def _prune(self, now: float) -> None:
        """Forget back-offs long expired (the process may be gone or have changed)."""
        horizon = BACKOFF_MAX_FACTOR * max(self.cfg.min_age, 1e-3)
        self._fruitless = {k: b for k, b in self._fruitless.items() if now - b.until < horizon}

    async def prepare(self, now: float) -> _Plan:
        """The tick's candidates, before the controller steps: the monitor's cold regions
        (coldest, then oldest) less those issued within ``min_age``, those known to hold
        nothing to page out and excluded processes, cut to the pieces that could be paged
        out now. ``cold_bytes`` is their total: what the feedforward drains."""
        view, why = self.access_view(now)
        if view is None:
            return _Plan(why=why)
        max_access, min_age = self.cfg.max_access, self.cfg.min_age
        cands = self._cold.get(
            view,
            (max_access, min_age),
            partial(cold_regions, view, max_access=max_access, min_age_s=min_age),
        )
        self._issued = {
            pid: kept
            for pid, spans in self._issued.items()
            if (kept := [s for s in spans if now - s[2] < min_age])
        }
        swap = self._swap_total() > 0
        if swap != self._swap_seen:
            self._nothing, self._swap_seen = {}, swap  # anonymous memory may go now
        self._nothing = {k: t for k, t in self._nothing.items() if now - t < min_age}
        self._prune(now)
        held = {pid: self._held(pid) for pid in self._issued}
        nothing = self._nothing
        excluded: dict[int, bool] = {}  # per process, once per tick (not per region)
        by_pid: dict[int, list[Candidate]] = {}
        for cand in cands:
            owner, start = cand.pid, cand.start
            if (owner, start, cand.length) in nothing:
                continue
            skip = excluded.get(owner)
            if skip is None:
                skip = excluded[owner] = self._excluded(owner)
            if skip or ((spans := held.get(owner)) and _covered(spans, start, start + cand.length)):
                continue
            group = by_pid.get(owner)
            if group is None:
                group = by_pid[owner] = []
            group.append(cand)
        sampled = {
            pid: snap.mappings
            for key, snap in view.snapshots.items()
            if snap.mappings is not None and (pid := target_pid(key)) is not None
        }
        plan = _Plan(regions=len(cands))
        for pid, pcands in by_pid.items():
            try:
                before = await self._resident(pid, sampled.get(pid))
            except (KernelInterfaceError, TargetVanished):
                self.states.drop(pid)
                continue  # the process exited between the snapshot and now
            except RefusedAction as exc:
                self.note_once(f"refused-{pid}", "policy_note", note=str(exc), pid=pid)
                continue
            ranges, anon, empty = self._pieces(pid, pcands, swap, now, before, held=held.get(pid))
            self._nothing.update(((pid, c.start, c.length), now) for c in empty)
            if anon:
                self.note_once(
                    "anon-no-swap",
                    "policy_note",
                    note=ANON_PAGEOUT_NO_SWAP,
                    pid=pid,
                    anon_cold_bytes=anon,
                )
            if ranges:
                plan.picks.append(_Pick(pid, pcands, before, ranges))
                plan.cold_bytes += sum(length for _, length in ranges)
        return plan

    def feedforward_inputs(self, plan: Any, now: float) -> dict[str, float | None]:
        """The pageable cold bytes (None without a fresh snapshot: the drain is dropped)
        and the bytes that left the targets' RSS last tick."""
        assert isinstance(plan, _Plan)
        cold = None if plan.why is not None else float(plan.cold_bytes)
        # read once: a held tick (no act) must not hand the same bytes over again
        reclaimed, self._reclaimed = self._reclaimed, None
        bound, self._bound = self._bound, None
        return {
            "cold_bytes": cold,
            "cold_reclaimed_bytes": None if reclaimed is None else float(reclaimed),
            "quota_bound": None if bound is None else float(bound),
        }

    async def act(self, decision: Any, now: float, dt: float, plan: Any = None) -> Acted:
        """Page out up to the tick's bytes of the prepared pieces; measure what left RSS."""
        if plan is None:
            plan = await self.prepare(now)
        assert isinstance(plan, _Plan)
        budget = self.tick_bytes(decision.output, dt)
        if plan.why is not None:
            return Acted(fields={"access": plan.why, "budget_bytes": budget})
        acted = Acted(
            fields={
                "budget_bytes": budget,
                "cold_regions": plan.regions,
                "cold_bytes": plan.cold_bytes,
            }
        )
        left = budget
        outcomes = []
        rate_cut = False
        for pick in plan.picks:
            if left <= 0:
                break
            pid, before = pick.pid, pick.before
            # cut here, in coldness order (the actuator would cut in address order)
            cut, _ = take_bytes(pick.ranges, left)
            if not cut:
                continue
            try:
                outcome = await self.actuator.advise(
                    pid,
                    cut,
                    "pageout",
                    reason=f"policy {self.cfg.name}: cold for >= {self.cfg.min_age:g} s",
                )
            except RefusedAction as exc:
                self.note_once(f"refused-{pid}", "policy_note", note=str(exc), pid=pid)
                continue
            rate_cut = rate_cut or "rate limit" in (outcome.skipped or "")
            issued = outcome.issued_bytes or int(outcome.measured.get("planned_bytes", 0))
            left -= issued
            acted.requested_bytes += issued
            if outcome.rss_delta_bytes is not None:
                acted.measured_bytes += max(0, -outcome.rss_delta_bytes)
            self._hold(pid, cut, issued, now)
            after = self.states.peek(pid) if outcome.status in ("applied", "partial") else None
            if after is not None and after is not before.state:
                self._judge(pid, cut, before, after, now)
            outcomes.append(
                {
                    "pid": pid,
                    "status": outcome.status,
                    "issued_bytes": issued,
                    "applied_bytes": outcome.applied_bytes,
                    "rss_delta_bytes": outcome.rss_delta_bytes,
                    "file_cache_delta_bytes": outcome.file_cache_delta_bytes,
                    "skipped": outcome.skipped,
                }
            )
        acted.fields["outcomes"] = outcomes or None
        self._reclaimed = acted.measured_bytes
        # the budget limited this act when it ran out (or the rate limit cut it) before
        # the pieces did; otherwise a larger quota would have paged out nothing more
        self._bound = left <= 0 or rate_cut
        acted.applied_output = self._applied_output(decision.output, dt, budget, rate_cut, acted)
        return acted

    def _applied_output(
        self, output: float, dt: float, budget: int, rate_cut: bool, acted: Acted
    ) -> float | None:
        """The quota the limits let through, when they cut it: ``max_bytes_per_tick``
        (the tick's budget) or the rate limit (what was issued), scaled back to bytes per
        ``quota.per``; None when neither cut (fewer candidates than the budget is not a
        limit)."""
        assert self.cfg.quota is not None
        tick = self.ctx.config.reactor.tick
        span = min(dt if dt > 0 else tick, 3 * tick)
        cap = self.cfg.max_bytes_per_tick
        limited: float | None = None
        if cap is not None and budget >= cap and output * span / self.cfg.quota.per > cap:
            limited = float(cap)
        if rate_cut:
            limited = float(acted.requested_bytes)
        if limited is None:
            return None
        return max(limited, 1.0) * self.cfg.quota.per / span


def _covered(held: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether the sorted, merged ``held`` ranges cover all of [start, end)."""
    i = bisect.bisect_right(held, (start, math.inf)) - 1
    return i >= 0 and held[i][0] <= start and held[i][1] >= end


def _outside(held: Sequence[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of [lo, hi) outside the sorted, merged ``held`` ranges."""
    out: list[tuple[int, int]] = []
    pos = lo
    for s, e in held[max(0, bisect.bisect_right(held, (lo, math.inf)) - 1) :]:
        if s >= hi:
            break
        if e <= pos:
            continue
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
    if pos < hi:
        out.append((pos, hi))
    return out


class CgroupReclaim(QuotaPolicy):
    """``memory.reclaim`` of the policy's cgroup, the tick's bytes at a time."""

    def __init__(self, cfg: PolicyConfig, ctx: PolicyContext) -> None:
        super().__init__(cfg, ctx)
        self.actuator = CgroupReclaimer(
            ctx.fs, limits=policy_limits(cfg, ctx.config.reactor.dry_run)
        )

    cold_actuator = False  # memory.reclaim picks by the kernel's LRU, not by the monitor

    async def act(self, decision: Any, now: float, dt: float, plan: Any = None) -> Acted:
        """Write the tick's bytes to ``memory.reclaim``; measure the usage drop."""
        assert self.cfg.cgroup is not None
        budget = self.tick_bytes(decision.output, dt)
        if budget <= 0:
            return Acted(fields={"budget_bytes": 0})
        outcome = await self.actuator.reclaim(
            self.cfg.cgroup, budget, reason=f"policy {self.cfg.name}"
        )
        planned = int(outcome.measured.get("planned_bytes", 0))
        delta = outcome.usage_delta_bytes
        fields: dict[str, Any] = {
            "budget_bytes": budget,
            "status": outcome.status,
            "usage_delta_bytes": delta,
            "skipped": outcome.skipped,
        }
        return Acted(
            requested_bytes=outcome.issued_bytes or planned,
            measured_bytes=max(0, -(delta or 0)),
            fields=fields,
        )
