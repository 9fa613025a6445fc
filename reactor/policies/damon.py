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
  and what the scheme measurably paged out since the last tick (below: What acted).
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

What acted (``requested_bytes``, ``measured_bytes``; the log's ``applied_bytes`` and
``left``): the scheme's ``sz_tried`` growth is what DAMON asked the ops layer to page
out, ``sz_applied`` growth what it applied the action to. On paddr that is the folios
reclaimed: measured. On vaddr/fvaddr it is the whole length of every region whose
``MADV_PAGEOUT`` succeeded, resident or not (the kernel's ``damos_madvise`` returns the
length): guest logs showed 223-239 MiB a tick where at most 67-82 MiB was resident and
cold, and the reclaim benchmark summed 2.1-2.7 times the swap it grew. There the
measurement is what left the target processes' RAM over the tick, read from
``/proc/PID/status`` (mm counters, no page walk) each tick with the stats, before the
cold reading (``tuner: reactor``: in ``prepare``, so the feedforward's refill estimate
sees one interval's cold change and what left within it; reported by the act that
follows): swap entries gained (``VmSwap``, anonymous pages) plus the fall of ``RssFile``
and ``RssShmem`` (:func:`left_memory`), each net of the process's own faults over the
tick (an under-count when it faults pages in as they leave); ``measured_bytes`` is the
smaller of that and ``sz_tried`` growth, all the scheme touched (the kernel's own
reclaim under a cgroup limit also moves those counters; not ``sz_applied``, which misses
the mapped parts a region over a hole pages out before its ``MADV_PAGEOUT`` fails with
ENOMEM: a CI run with ``fail_charge`` measured 158.6 MiB so against 188.6 MiB of swap
growth). At shutdown a scheme from the ``damon:`` section gets its original quotas back
(when its kdamond still runs); reactor's own scheme goes with its kdamond.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import numpy as np

from reactor.actuators._procfs import parse_status_memory
from reactor.config.damon import (
    FAILURES_UNCHARGED,
    Kdamond,
    MonitoringIntervals,
    QuotaGoal,
    Quotas,
    Scheme,
)
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
    "left_memory",
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


def pageout_scheme(cfg: PolicyConfig, sz_bytes: int, *, fail_charge: bool = False) -> Scheme:
    """The pageout scheme reactor adds for a policy without ``scheme``.

    ``fail_charge`` (the kernel has ``fail_charge_num/denom``, 7.2): failed bytes are
    charged nothing. A vaddr region over a hole between mappings is never accessed, so
    it ranks with the coldest, and its ``MADV_PAGEOUT`` fails (ENOMEM); charged in full,
    such regions can take a small quota's every window (a guest run of the reclaim
    benchmark saved nothing so). The mapped parts of a region that failed are paged
    out uncharged: cold memory by the pattern, beyond the quota."""
    assert cfg.quota is not None
    quotas: dict[str, Any] = {
        "sz_bytes": sz_bytes,
        "reset_interval_ms": round(cfg.quota.per * 1000),
    }
    if fail_charge:
        quotas.update(FAILURES_UNCHARGED)
    return Scheme.model_validate(
        {
            "action": "pageout",
            "access_pattern": {
                "sz_bytes": {"min": 4096, "max": "max"},
                "nr_accesses": {"min": "0 %", "max": f"{cfg.max_access * 100:g} %"},
                "age": {"min": f"{cfg.min_age:g} s", "max": "max"},
            },
            "quotas": quotas,
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


def left_memory(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Bytes that left a process's RAM between two ``/proc/PID/status`` readings
    (:func:`~reactor.actuators._procfs.parse_status_memory`), by kind: ``swap``, the swap
    entries it gained (anonymous pages paged out); ``file`` and ``shmem``, the fall of
    its file and shmem pages. Each is net of the process's own activity over the
    interval and never below 0: swap-ins and new file pages hide as many pages that
    left (an under-count, never an over-count of what a pageout moved, unless something
    else reclaims the same process's memory meanwhile)."""
    return {
        "swap": max(0, after["VmSwap"] - before["VmSwap"]),
        "file": max(0, before["RssFile"] - after["RssFile"]),
        "shmem": max(0, before["RssShmem"] - after["RssShmem"]),
    }


def reclaimed_bound(growth: int | None, cold_before: float | None) -> int | None:
    """What a vaddr/fvaddr pageout scheme can have paged out over an interval: what it
    measurably moved (``growth``: ``sz_applied`` growth cut to what left the target
    processes' RAM, module doc), but at most the resident cold bytes read when the
    interval began (``cold_before``).

    ``sz_applied`` alone grows by a whole region's size whenever the region's
    ``MADV_PAGEOUT`` succeeds (the kernel's ``damos_madvise`` returns the length, not
    what was reclaimed), resident or not: after a drain it keeps growing over regions
    with nothing left, and the feedforward's refill estimate, ``(cold - last cold +
    reclaimed) / dt``, took that for memory turning cold (196 MiB/s in a guest run right
    after the drain, where nothing was). The processes' counters also move when
    something else reclaims their memory (the kernel under a cgroup limit, another
    kdamond's scheme). What this scheme paged out can only have been resident and cold,
    so the growth is cut to that reading. The cut errs low only
    where the scheme pages out memory that turned cold within the interval; that
    memory is then missing from the refill estimate for a tick and shows as cold
    memory left over, which the drain term takes. (paddr's ``sz_applied`` counts the
    folios reclaimed: no bound is needed there.)"""
    if growth is None or cold_before is None:
        return growth
    return min(growth, max(0, int(cold_before)))


def _add_acted(first: Acted | None, then: Acted) -> Acted:
    """Two readings' worth of what acted, as one report (a held tick has no act to
    report its reading): bytes and ``applied_bytes``/``left`` summed, ``quota_bound``
    when either was, other fields the newer reading's."""
    if first is None:
        return then
    fields = {**first.fields, **then.fields}
    fields.pop("unmeasured", None)
    if "unmeasured" in then.fields:
        fields["unmeasured"] = then.fields["unmeasured"]
    if "applied_bytes" in first.fields or "applied_bytes" in then.fields:
        fields["applied_bytes"] = first.fields.get("applied_bytes", 0) + then.fields.get(
            "applied_bytes", 0
        )
    bounds = [a.fields["quota_bound"] for a in (first, then) if "quota_bound" in a.fields]
    if bounds:
        fields["quota_bound"] = any(bounds)
    lefts = [a.fields["left"] for a in (first, then) if a.fields.get("left") is not None]
    if lefts:
        fields["left"] = {k: sum(x.get(k, 0) for x in lefts) for k in ("swap", "file", "shmem")}
    return Acted(
        requested_bytes=first.requested_bytes + then.requested_bytes,
        measured_bytes=first.measured_bytes + then.measured_bytes,
        fields=fields,
    )


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
        #: the scheme's sz_tried, sz_applied and qt_exceeds at the last reading
        self._stats: tuple[int, int, int] | None = None
        #: whether a charge window ended with the quota full between the last two
        #: readings (None: not read twice yet)
        self._bound: bool | None = None
        #: the target processes' /proc/PID/status memory counters at the last act
        self._status: dict[int, dict[str, int]] = {}
        self.effective_bytes: int | None = None
        #: what the scheme measurably paged out between the last two readings (None:
        #: not measured), read in prepare with the cold reading
        self._applied_growth: int | None = None
        #: what was measured and not yet reported (ticks held without an act add up)
        self._unreported: Acted | None = None
        #: the cold reading handed to the feedforward last tick
        self._last_cold: float | None = None
        self._pattern: ColdPattern | None = None
        #: in a dry run, the pageout scheme reactor would have added (not in the kdamond)
        self._dry_added: Scheme | None = None

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

    async def _model(self) -> Kdamond:
        return await self.driver.staged(self.k)

    def _with_quotas(self, kd: Kdamond, quotas: Quotas, scheme: Scheme | None = None) -> Kdamond:
        schemes = list(kd.contexts[self.c].schemes)
        if scheme is not None:
            schemes.append(scheme)
        schemes[self.s] = schemes[self.s].model_copy(update={"quotas": quotas})
        return kd.with_schemes(self.c, schemes)

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
            kd = await self._model()
            added = None
            if self.s < 0:
                fail_charge = self.driver.features.has("fail_charge")
                added = pageout_scheme(self.cfg, int(self.state.output), fail_charge=fail_charge)
                self.s = len(kd.contexts[self.c].schemes)
                base = added.quotas
            else:
                base = kd.contexts[self.c].schemes[self.s].quotas
                self.original = base
            new = self._with_quotas(kd, self._quotas(base, self.state.output), added)
            await self._commit(new, "takeover")
        # a dry run commits nothing: the scheme it would add is not in the kdamond
        self._dry_added = added if self.dry_run else None
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
        if await self.driver.read_state(self.k) != "on":
            return
        async with _lock(self.driver):
            kd = await self._model()
            await self.driver.commit(self.k, self._with_quotas(kd, self.original))
        self.log.info("damon_quota_restored", kdamond=self.k, scheme=self.s)

    async def _acted(self) -> Acted:
        """Growth of the scheme's sz_tried (asked) and what measurably left since the
        last act: sz_applied growth, on vaddr/fvaddr what left the target processes'
        RAM, at most the sz_tried growth (module doc)."""
        if self.dry_run:
            return Acted()
        stats = (await self.driver.update_schemes_stats(self.k))[self.s]
        pids = self._target_pids()
        left, why = (None, None) if pids is None else self._left(pids)
        now = (stats.sz_tried_bytes, stats.sz_applied_bytes, stats.qt_exceeds)
        last, self._stats = self._stats, now
        fields: dict[str, Any] = {"qt_exceeds": stats.qt_exceeds}
        if last is None:
            return Acted(fields=fields)
        tried, applied = max(0, now[0] - last[0]), max(0, now[1] - last[1])
        fields["applied_bytes"] = applied
        # a charge window ended with the quota full: the quota limited the scheme
        fields["quota_bound"] = now[2] > last[2]
        measured = applied
        if pids is not None:
            fields["left"] = left
            measured = 0 if left is None else min(tried, sum(left.values()))
            if why is not None:
                fields["unmeasured"] = why
        return Acted(requested_bytes=tried, measured_bytes=measured, fields=fields)

    def _target_pids(self) -> list[int] | None:
        """The processes the scheme pages out in (None: physical memory, paddr): its
        ``damon:`` context's target pids, or the policy's monitor's."""
        config = self.ctx.config
        if self.cfg.scheme is not None:
            k, c, _ = (int(x) for x in self.cfg.scheme.split("/"))
            context = config.damon.kdamonds[k].contexts[c]
            if context.ops == "paddr":
                return None
            return [t.pid for t in context.targets if t.pid is not None]
        if config.monitor(self.cfg.monitor).ops == "paddr":
            return None
        assert self.ctx.damon is not None
        return list(self.ctx.damon.pids.get(self.cfg.monitor, []))

    def _left(self, pids: Sequence[int]) -> tuple[dict[str, int] | None, str | None]:
        """Bytes that left the processes' RAM since the last call, by kind
        (:func:`left_memory` summed over those read both times; a process gone or new
        counts nothing), or (None, why) when none was read both times."""
        readings: dict[int, dict[str, int]] = {}
        left = {"swap": 0, "file": 0, "shmem": 0}
        seen = 0
        for pid in pids:
            path = f"/proc/{pid}/status"
            try:
                text = self.ctx.fs.read_text(path)
            except KernelInterfaceError:
                continue  # the process is gone: what it held is no pageout's doing
            now = parse_status_memory(text, path)
            readings[pid] = now
            before = self._status.get(pid)
            if before is not None:
                for kind, n in left_memory(before, now).items():
                    left[kind] += n
                seen += 1
        self._status = readings
        if seen:
            return left, None
        return None, "no_target_process" if not readings else "first_reading"

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
        """What the scheme moved since the last tick (:meth:`_measure`), then the cold
        bytes of the monitor's newest snapshot (None: no fresh snapshot): of them, those
        resident in the monitor's processes where they are known
        (:meth:`resident_readable`; read in a worker thread: pagemap walks page tables),
        else all of them."""
        if self.cfg.tuner == "kernel":
            return None, None
        await self._measure()
        if not self.feedforward:
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

    async def _measure(self) -> None:
        """Read what the scheme moved since the last reading, just before the cold
        reading: the feedforward's refill estimate, ``(cold - last cold + reclaimed) /
        dt``, then sees one interval's cold change and what left within it (read in the
        act, after the step, it lagged a tick: a drain read as memory turning cold a
        tick later). The next act reports it."""
        had_stats = self._stats is not None
        acted = await self._acted()
        measured = had_stats and not self.dry_run and "unmeasured" not in acted.fields
        self._applied_growth = acted.measured_bytes if measured else None
        self._bound = acted.fields.get("quota_bound") if had_stats else None
        self._unreported = _add_acted(self._unreported, acted)

    def feedforward_inputs(self, plan: Any, now: float) -> dict[str, float | None]:
        """``cold_bytes`` and what the scheme paged out since the last tick's reading
        (read in :meth:`prepare`), at most the resident cold bytes read then where the
        reading is resident bytes (:func:`reclaimed_bound`)."""
        cold, _ = plan
        growth, self._applied_growth = self._applied_growth, None
        bound, self._bound = self._bound, None
        cold_before, self._last_cold = self._last_cold, cold
        if self.resident_readable(self.cfg, self.ctx):
            growth = reclaimed_bound(growth, cold_before)
        return {
            "cold_bytes": cold,
            "cold_reclaimed_bytes": None if growth is None else float(growth),
            "quota_bound": None if bound is None else float(bound),
        }

    async def act(self, decision: Any, now: float, dt: float, plan: Any = None) -> Acted:
        """Commit the new quota when it moved by more than 1 %; report what the scheme
        moved since the last act (measured in :meth:`prepare`)."""
        output = decision.output
        if self.committed is None or abs(output - self.committed) > 0.01 * self.committed:
            async with _lock(self.driver):
                kd = await self._model()
                added = self._dry_added
                base = (added or kd.contexts[self.c].schemes[self.s]).quotas
                new = self._with_quotas(kd, self._quotas(base, output), added)
                await self._commit(new, "tick")
            self.committed = output
        acted, self._unreported = self._unreported or Acted(), None
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
