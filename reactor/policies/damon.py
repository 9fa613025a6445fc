"""Reclaim on the DAMON backend: the quota of a DAMOS pageout scheme, committed online.

The scheme is the policy's ``scheme`` (``k/c/s`` into the ``damon:`` section, which the
driver lays out after the monitors' kdamonds) or a pageout scheme reactor adds to the
monitor's own kdamond (context 0, after its snapshot ``stat`` scheme) with the policy's
access pattern (``max_access``, ``min_age``).

* ``tuner: reactor``: reactor's controller sets ``sz_bytes`` per ``reset_interval_ms``
  (= ``quota.per``) each tick; a change of more than 1 % is staged and ``commit``-ed to
  the running kdamond (same pid, nothing restarted). The cold-set feedforward
  (:func:`~reactor.policies.control.reclaim_controller`) reads, before it steps, the
  cold bytes of the monitor's newest snapshot: the regions matching the scheme's access
  pattern *and* the policy's cold definition (``max_access``, ``min_age``; the same
  thing for the scheme reactor adds; for a ``scheme:`` whose pattern is wider, e.g. one
  that matches every region, the pattern alone would feed the hot set forward as cold),
  and the growth of the scheme's ``sz_applied`` since the last tick (what it paged out).
  With a vaddr/fvaddr monitor (the default there) the cold regions are cut to what is
  resident in its processes (:func:`resident_bytes`: mappings, then pagemap): a region
  over the holes between mappings, or over memory a ``scheme:`` on another kdamond
  already paged out (the monitor's ages do not notice), reads cold but holds nothing
  to page out.
* ``tuner: kernel``: reactor writes DAMOS quota goals once (``some_mem_psi_us`` with
  target = share x reset interval in µs for the pressure goal; ``user_input`` for what
  the kernel cannot measure: refault rate in bytes/s, ratios in basis points, user
  signals x 1000) with ``sz_bytes`` = ``quota.max`` as the cap, then each tick feeds the
  ``user_input`` goals' current values (``commit_schemes_quota_goals``) and reads the
  kernel's effective quota (``update_schemes_effective_quotas``), which it reports.

What acted: the scheme's ``sz_tried`` growth is what DAMON asked the ops layer to page
out, ``sz_applied`` growth what it applied the action to: on paddr the folios reclaimed,
on vaddr/fvaddr the whole length of every region whose ``MADV_PAGEOUT`` succeeded,
resident or not (an upper bound: :func:`reclaimed_bound`). At
shutdown a scheme from the ``damon:`` section gets its original quotas back (when its
kdamond still runs); reactor's own scheme goes with its kdamond.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import numpy as np

from reactor.config.damon import Kdamond, MonitoringIntervals, QuotaGoal, Quotas, Scheme
from reactor.damon.memory import intersect, merge
from reactor.errors import KernelInterfaceError, ReactorError, TargetVanished
from reactor.kernelfs import KernelFS
from reactor.policies.base import PAGE_SIZE, Acted, PolicyContext, read_goals
from reactor.policies.quota import QuotaPolicy
from reactor.sampler.procfs import parse_maps

if TYPE_CHECKING:
    from reactor.config import GoalConfig, PolicyConfig
    from reactor.damon.driver import DamonDriver
    from reactor.engine.monitors import AccessView

__all__ = (
    "ColdPattern",
    "DamonReclaim",
    "cold_pattern",
    "kernel_goals",
    "pageout_scheme",
    "reclaimed_bound",
    "resident_bytes",
)

_LOCKS: weakref.WeakKeyDictionary[Any, anyio.Lock] = weakref.WeakKeyDictionary()


def _lock(driver: DamonDriver) -> anyio.Lock:
    """One lock per driver: policies sharing a kdamond never interleave stage+commit."""
    lock = _LOCKS.get(driver)
    if lock is None:
        lock = _LOCKS[driver] = anyio.Lock()
    return lock


def pageout_scheme(cfg: PolicyConfig, sz_bytes: int) -> Scheme:
    """The pageout scheme reactor adds for a policy without ``scheme``."""
    assert cfg.quota is not None
    return Scheme.model_validate(
        {
            "action": "pageout",
            "access_pattern": {
                "sz_bytes": {"min": 4096, "max": "max"},
                "nr_accesses": {"min": "0 %", "max": f"{cfg.max_access * 100:g} %"},
                "age": {"min": f"{cfg.min_age:g} s", "max": "max"},
            },
            "quotas": {
                "sz_bytes": sz_bytes,
                "reset_interval_ms": round(cfg.quota.per * 1000),
            },
        }
    )


@dataclass(frozen=True)
class ColdPattern:
    """Which snapshot regions count as cold for a pageout scheme, in units that do not
    depend on the monitor's intervals: size in bytes, access share of the aggregation's
    samples (0..1), age in seconds (closed ranges)."""

    sz_min: float
    sz_max: float
    share_min: float
    share_max: float
    age_min_s: float
    age_max_s: float

    def cold_spans(self, view: AccessView) -> tuple[tuple[int, int], ...]:
        """The view's regions within the pattern, as merged half-open address spans."""
        spans: list[tuple[int, int]] = []
        for snap in view.snapshots.values():
            r = snap.regions
            if not len(r):
                continue
            size = (r["end"] - r["start"]).astype(np.float64)
            share = r["nr_accesses"].astype(np.float64) / max(1, snap.max_nr_accesses)
            age = r["age"].astype(np.float64) * snap.aggr_interval_s
            keep = (
                (size >= self.sz_min)
                & (size <= self.sz_max)
                & (share >= self.share_min - 1e-9)
                & (share <= self.share_max + 1e-9)
                & (age >= self.age_min_s - 1e-9)
                & (age <= self.age_max_s)
            )
            spans.extend(zip(r["start"][keep].tolist(), r["end"][keep].tolist(), strict=True))
        return merge(spans)


#: pagemap entries read per call (8 bytes each: 512 KiB), so a big cold span never needs
#: one big buffer
_PAGEMAP_BATCH = 65536
_PRESENT = np.uint64(63)


def resident_bytes(fs: KernelFS, pid: int, spans: Sequence[tuple[int, int]]) -> int:
    """Bytes of the half-open ``spans`` of process ``pid``'s address space that are in
    RAM now: the spans are cut to its mappings first (``/proc/PID/maps``, no page walk:
    the holes between mappings cost nothing), then pagemap is read over the rest (8
    bytes a page; the kernel walks only those page tables) and pages with the present
    bit (63) counted: a page swapped out (bit 62) or never touched is not resident.
    TargetVanished when the process is gone."""
    try:
        maps = parse_maps(fs.read_text(f"/proc/{pid}/maps"), f"/proc/{pid}/maps")
        kept = fs.keep(f"/proc/{pid}/pagemap")
    except KernelInterfaceError as exc:
        raise TargetVanished(f"pid {pid}") from exc
    total = 0
    try:
        vmas = zip(maps.start.tolist(), maps.end.tolist(), strict=True)
        for lo, hi in intersect(spans, vmas):
            first, end = lo // PAGE_SIZE, -(-hi // PAGE_SIZE)
            for at in range(first, end, _PAGEMAP_BATCH):
                n = min(_PAGEMAP_BATCH, end - at)
                entries = np.frombuffer(kept.pread(n * 8, at * 8), dtype=np.uint64)
                total += int(np.count_nonzero(entries >> _PRESENT))
    except KernelInterfaceError as exc:
        raise TargetVanished(f"pid {pid}") from exc
    finally:
        kept.close()
    return total * PAGE_SIZE


def cold_pattern(cfg: PolicyConfig, scheme: Scheme, intervals: MonitoringIntervals) -> ColdPattern:
    """The scheme's access pattern (its units read against its own context's
    ``intervals``), narrowed to the policy's cold definition: at most ``max_access`` of
    the samples, at least ``min_age`` old."""
    pattern = scheme.access_pattern
    most = max(1, intervals.aggr_us // max(intervals.sample_us, 1))
    lo, hi = pattern.nr_accesses_samples(intervals)
    age_lo, age_hi = pattern.age_aggregations(intervals)
    aggr_s = intervals.aggr_us / 1e6
    age_max = math.inf if age_hi >= 2**32 - 1 else age_hi * aggr_s
    return ColdPattern(
        sz_min=float(pattern.sz_bytes.min),
        sz_max=float(pattern.sz_bytes.max),
        share_min=lo / most,
        share_max=min(hi / most, cfg.max_access),
        age_min_s=max(age_lo * aggr_s, cfg.min_age),
        age_max_s=age_max,
    )


def _user_scale(goal: GoalConfig) -> float:
    """user_input values are integers: ratios in bp, rates in bytes/s, user x 1000."""
    if goal.metric == "refault_rate":
        return 1.0
    if goal.metric == "user":
        return 1000.0
    return 10_000.0


def kernel_goals(cfg: PolicyConfig) -> tuple[QuotaGoal, ...]:
    """DAMOS quota goals for ``tuner: kernel`` (kernel metrics where one exists)."""
    assert cfg.quota is not None
    reset_us = cfg.quota.per * 1e6
    goals = []
    for goal in cfg.goals:
        if goal.metric == "memory_psi_some" and cfg.cgroup is None:
            target = max(1, round(goal.target * reset_us))
            goals.append(QuotaGoal(metric="some_mem_psi_us", target_value=target))
        elif goal.metric == "node_used_ratio":
            target = max(1, round(goal.target * 10_000))
            goals.append(QuotaGoal(metric="node_mem_used_bp", nid=goal.node, target_value=target))
        else:
            target = max(1, round(goal.target * _user_scale(goal)))
            goals.append(QuotaGoal(metric="user_input", target_value=target))
    return tuple(goals)


def reclaimed_bound(growth: int | None, cold_before: float | None) -> int | None:
    """What a vaddr/fvaddr pageout scheme can have paged out over an interval: its
    ``sz_applied`` growth, but at most the resident cold bytes read when the interval
    began (``cold_before``).

    On those operations ``sz_applied`` grows by a whole region's size whenever the
    region's ``MADV_PAGEOUT`` succeeds (the kernel's ``damos_madvise`` returns the
    length, not what was reclaimed), resident or not: after a drain it keeps growing
    over regions with nothing left, and the feedforward's refill estimate, ``(cold -
    last cold + reclaimed) / dt``, took that for memory turning cold (196 MiB/s in a
    guest run right after the drain, where nothing was). What left can only have been
    resident and cold, so the growth is cut to that reading. The cut errs low only
    where the scheme pages out memory that turned cold within the interval; that
    memory is then missing from the refill estimate for a tick and shows as cold
    memory left over, which the drain term takes. (paddr's ``sz_applied`` counts the
    folios reclaimed: no bound is needed there.)"""
    if growth is None or cold_before is None:
        return growth
    return min(growth, max(0, int(cold_before)))


class DamonReclaim(QuotaPolicy):
    """A pageout scheme's quota, tuned by reactor or by the kernel (module doc)."""

    output_unit = "bytes"

    def __init__(self, cfg: PolicyConfig, ctx: PolicyContext) -> None:
        self.feedforward_default = self.resident_readable(cfg, ctx)
        super().__init__(cfg, ctx)
        assert ctx.damon is not None
        self.driver = ctx.damon.driver
        self.k, self.c, self.s = self._where()
        self.committed: float | None = None
        self.original: Quotas | None = None
        self._stats: tuple[int, int] | None = None
        self.effective_bytes: int | None = None
        #: growth of the scheme's sz_applied over the last tick (None: not read)
        self._applied_growth: int | None = None
        #: the cold readings handed to the feedforward the tick before last and last tick
        self._colds: tuple[float | None, float | None] = (None, None)
        self._pattern: ColdPattern | None = None

    @staticmethod
    def resident_readable(cfg: PolicyConfig, ctx: PolicyContext) -> bool:
        """Whether the cold reading can be cut to resident bytes: the policy's monitor
        watches processes (vaddr, fvaddr: their pids are known), whether the scheme is
        the policy's own or a ``damon:`` one. The cold-set feedforward is the default
        only then: a region's bytes alone count the holes between a process's mappings
        and what is already paged out (never accessed, so still "cold"; the guest
        reclaim benchmark read 686-727 MiB against 192 MiB cold, and PSI stayed above
        its goal 7.3 s against 3.0 s with the composite); a paddr monitor (physical
        regions: free memory reads cold too) opts in with ``controller: {kind:
        feedforward}``."""
        return ctx.config.monitor(cfg.monitor).ops != "paddr"

    def _where(self) -> tuple[int, int, int]:
        config = self.ctx.config
        if self.cfg.scheme is not None:
            k, c, s = (int(x) for x in self.cfg.scheme.split("/"))
            return len(config.monitors) + k, c, s
        names = [m.name for m in config.monitors]
        return names.index(self.cfg.monitor), 0, -1

    def _model(self) -> Kdamond:
        return self.driver.read_back(self.k)

    def _with_quotas(self, kd: Kdamond, quotas: Quotas, scheme: Scheme | None = None) -> Kdamond:
        ctx = kd.contexts[self.c]
        schemes = list(ctx.schemes)
        if scheme is not None:
            schemes.append(scheme)
        schemes[self.s] = schemes[self.s].model_copy(update={"quotas": quotas})
        contexts = list(kd.contexts)
        contexts[self.c] = ctx.model_copy(update={"schemes": tuple(schemes)})
        return kd.model_copy(update={"contexts": tuple(contexts)})

    def _quotas(self, base: Quotas, output: float) -> Quotas:
        assert self.cfg.quota is not None
        reset_ms = round(self.cfg.quota.per * 1000)
        if self.cfg.tuner == "kernel":
            return base.model_copy(
                update={
                    "sz_bytes": self.cfg.quota.max,
                    "reset_interval_ms": reset_ms,
                    "goals": kernel_goals(self.cfg),
                }
            )
        return base.model_copy(
            update={"sz_bytes": max(4096, int(output)), "reset_interval_ms": reset_ms, "goals": ()}
        )

    async def start(self) -> None:
        """Add or take over the scheme and commit its first quota (online)."""
        async with _lock(self.driver):
            kd = self._model()
            added = None
            if self.s < 0:
                added = pageout_scheme(self.cfg, int(self.state.output))
                self.s = len(kd.contexts[self.c].schemes)
                base = added.quotas
            else:
                base = kd.contexts[self.c].schemes[self.s].quotas
                self.original = base
            new = self._with_quotas(kd, self._quotas(base, self.state.output), added)
            await self._commit(new, "takeover")
        self.committed = self.state.output

    async def _commit(self, kd: Kdamond, why: str) -> None:
        scheme = kd.contexts[self.c].schemes[self.s]
        fields = {
            "kdamond": self.k,
            "context": self.c,
            "scheme": self.s,
            "why": why,
            "sz_bytes": scheme.quotas.sz_bytes,
            "reset_interval_ms": scheme.quotas.reset_interval_ms,
            "goals": len(scheme.quotas.goals),
        }
        if self.dry_run:
            self.log.info("damon_commit_dry_run", **fields)
            return
        await self.driver.commit(self.k, kd)
        self.log.debug("damon_committed", **fields)

    async def restore(self) -> None:
        """Put a ``damon:`` scheme's original quotas back while its kdamond runs."""
        if self.original is None or self.dry_run:
            return
        if self.driver.state(self.k) != "on":
            return
        async with _lock(self.driver):
            kd = self._model()
            await self.driver.commit(self.k, self._with_quotas(kd, self.original))
        self.log.info("damon_quota_restored", kdamond=self.k, scheme=self.s)

    async def _acted(self) -> Acted:
        """Growth of the scheme's sz_tried (asked) and sz_applied (paged out)."""
        if self.dry_run:
            return Acted()
        stats = (await self.driver.update_schemes_stats(self.k))[self.s]
        now = (stats.sz_tried_bytes, stats.sz_applied_bytes)
        last, self._stats = self._stats, now
        if last is None:
            return Acted(fields={"qt_exceeds": stats.qt_exceeds})
        return Acted(
            requested_bytes=max(0, now[0] - last[0]),
            measured_bytes=max(0, now[1] - last[1]),
            fields={"qt_exceeds": stats.qt_exceeds},
        )

    def update(self, cfg: PolicyConfig) -> None:
        """Take new goals and bounds; the cold pattern is read again."""
        self.feedforward_default = self.resident_readable(cfg, self.ctx)
        super().update(cfg)
        self._pattern = None

    def cold_pattern(self) -> ColdPattern:
        """The pattern of the policy's scheme (its own: the policy's cold definition at
        the monitor's intervals; a ``damon:`` scheme: its pattern at its context's)."""
        if self._pattern is None:
            config = self.ctx.config
            if self.cfg.scheme is not None:
                k, c, _ = (int(x) for x in self.cfg.scheme.split("/"))
                scheme = config.damon.scheme(self.cfg.scheme)
                assert scheme is not None, "the config checks that the scheme exists"
                intervals = config.damon.kdamonds[k].contexts[c].intervals
            else:
                scheme = pageout_scheme(self.cfg, 4096)
                sample, aggregation = config.monitor(self.cfg.monitor).intervals("damon")
                intervals = MonitoringIntervals(
                    sample_us=round(sample * 1e6), aggr_us=round(aggregation * 1e6)
                )
            self._pattern = cold_pattern(self.cfg, scheme, intervals)
        return self._pattern

    async def prepare(self, now: float) -> tuple[float | None, str | None]:
        """The cold bytes of the monitor's newest snapshot (None: no fresh snapshot):
        of them, those resident in the monitor's processes where they are known
        (:meth:`resident_readable`; read in a worker thread: pagemap walks page tables),
        else all of them."""
        if self.cfg.tuner == "kernel" or not self.feedforward:
            return None, None
        view, why = self.access_view(now)
        if view is None:
            return None, why
        spans = self.cold_pattern().cold_spans(view)
        if not self.resident_readable(self.cfg, self.ctx):
            return float(sum(e - s for s, e in spans)), None
        assert self.ctx.damon is not None
        pids = self.ctx.damon.pids.get(self.cfg.monitor, [])
        if not spans:
            return 0.0, None
        total, seen = 0, 0
        for pid in pids:
            # regions carry no pid: with several processes a span is read in each (an
            # address two of them map counts twice: an over-estimate, never an under)
            try:
                total += await anyio.to_thread.run_sync(resident_bytes, self.ctx.fs, pid, spans)
            except TargetVanished:
                continue
            seen += 1
        if not seen:
            return None, "no_target_process"
        return float(total), None

    def feedforward_inputs(self, plan: Any, now: float) -> dict[str, float | None]:
        """``cold_bytes`` and what the scheme paged out over the last tick: its
        ``sz_applied`` growth, at most the resident cold bytes read then where the
        reading is resident bytes (:func:`reclaimed_bound`)."""
        cold, _ = plan
        # read once: a held tick (no act) must not hand the same bytes over again
        growth, self._applied_growth = self._applied_growth, None
        # that growth was read by the last act, over the tick before it: what it paged
        # out was resident and cold at the reading before last
        before_last, self._colds = self._colds[0], (self._colds[1], cold)
        if self.resident_readable(self.cfg, self.ctx):
            growth = reclaimed_bound(growth, before_last)
        return {
            "cold_bytes": cold,
            "cold_reclaimed_bytes": None if growth is None else float(growth),
        }

    async def act(self, decision: Any, now: float, dt: float, plan: Any = None) -> Acted:
        """Commit the new quota when it moved by more than 1 %; report the scheme's stats."""
        output = decision.output
        if self.committed is None or abs(output - self.committed) > 0.01 * self.committed:
            async with _lock(self.driver):
                kd = self._model()
                base = kd.contexts[self.c].schemes[self.s].quotas
                await self._commit(self._with_quotas(kd, self._quotas(base, output)), "tick")
            self.committed = output
        had_stats = self._stats is not None
        acted = await self._acted()
        self._applied_growth = acted.measured_bytes if had_stats and not self.dry_run else None
        committed = self.committed
        assert committed is not None
        acted.fields.update(kdamond=self.k, scheme=self.s, committed_sz_bytes=int(committed))
        if plan is not None and plan[1] is not None:
            acted.fields["access"] = plan[1]
        if committed < output:
            # within the 1 % commit threshold: the kernel runs the quota committed last
            acted.applied_output = committed
        return acted

    async def tick(self, now: float, dt: float) -> None:
        """reactor's tuner: the shared quota tick; kernel's: feed goals, read its quota."""
        if self.cfg.tuner != "kernel":
            await super().tick(now, dt)
            return
        inputs = read_goals(self.ctx.bus, self.cfg, self.ctx.config, now)
        self.goal_inputs = inputs
        stale = [why for g in inputs if (why := g.why_missing) is not None]
        feed: dict[tuple[int, int], int] = {}
        for i, (goal, gin) in enumerate(zip(self.cfg.goals, inputs, strict=True)):
            if kernel_goals(self.cfg)[i].metric != "user_input" or gin.value is None:
                continue
            feed[(self.s, i)] = max(0, round(gin.value * _user_scale(goal)))
        try:
            if feed and not self.dry_run:
                await self.driver.commit_quota_goals(self.k, feed)
            effective = None
            if not self.dry_run:
                effective = (await self.driver.update_schemes_effective_quotas(self.k))[self.s]
        except ReactorError as exc:
            self.log.warning("damon_read_failed", error=str(exc))
            return
        self.effective_bytes = effective
        acted = await self._acted()
        acted.fields.update(kdamond=self.k, scheme=self.s, fed=len(feed) or None)
        self.emit_tick(
            inputs={g.name: g.value for g in inputs},
            terms={"tuner": "kernel", "effective_bytes": effective, "fed_goals": len(feed)},
            output=None if effective is None else float(effective),
            acted=acted,
            held="stale: " + "; ".join(stale) if stale and not feed else None,
            stale=stale,
        )
