"""Monitoring self-tuning: each monitor's sampling interval and region count, online.

Two tuners from ``controllers/`` run per monitor (one ``monitoring`` policy per monitor):

* **intervals** (:func:`controllers.tuners.intervals_tuner`): the sampling interval (µs)
  for a target *access share*: the size-weighted share of samples that saw an access,
  ``sum(size x nr_accesses) / sum(size x max_nr_accesses)`` over the monitor's newest
  snapshot (the kernel's ``access_bp`` as a fraction). A longer interval lets more pages
  be touched between two checks, so the share rises with it. The aggregation interval
  moves with the sampling interval (their ratio, ``max_nr_accesses``, stays as
  configured, so the access patterns of other policies keep their meaning). Target and
  bounds: the monitor's ``intervals_goal`` (``access``, ``min_sample``, ``max_sample``)
  when set; else the policy's ``access_share`` and bounds derived before tuning:
  at most 10x below the configured interval (1 ms DAMON, 10 ms native: a native sample is
  a page walk) and at most so long that one aggregation fits in the smallest ``min_age``
  of the monitor's other policies (and in 10 s), so a cold region is still judged in time.
  The tuner steps once per snapshot taken wholly under the interval applied last.
* **regions** (:func:`controllers.tuners.regions_tuner`): the maximum region count for a
  monitoring CPU budget (``cpu_budget``, share of one CPU). CPU: native, the sampler's
  probe and engine CPU seconds (kernel + user) per wall second; DAMON, the kdamond
  thread's utime + stime (``/proc/<pid>/stat``) plus the daemon's own CPU reading the
  monitor's snapshots (a few sysfs files per region, every tick), per wall second. The
  accuracy goal gets
  the region *headroom* ``1 - regions / max_nr_regions``: DAMON (and the native engine)
  stop splitting once half of the maximum is used, so a monitor near its maximum cannot
  refine further (accuracy <= 0.5) and one that settles far below it would gain nothing
  from more. Bounds: ``regions.min`` .. 10 x ``regions.max`` (at most 100 000).

Applied online: DAMON, the kdamond's ``intervals`` and ``nr_regions`` are ``commit``-ed
(same pid) when either moved by more than 2 %; on kernels with ``intervals_goal`` (6.15+)
and the monitor's ``intervals_goal`` set, the kernel keeps the intervals (reactor tunes
the regions only) unless the policy says ``tuner: reactor`` explicitly, in which case
reactor zeroes the kernel's goal and tunes them itself. Native: the sampler adopts new
settings at its next aggregation boundary
(:meth:`~reactor.sampler.runner.NativeSampler.update_settings`).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from controllers.base import LogValue, clamp
from controllers.filtered import FilteredLogGoal, SampledShare
from controllers.tuners import intervals_tuner, regions_tuner
from reactor.errors import KernelInterfaceError, ReactorError
from reactor.policies.base import Acted, Policy, PolicyContext

if TYPE_CHECKING:
    from controllers.adaptive import AdaptiveState
    from controllers.compose import CompositeState, GoalComposite
    from reactor.config import MonitorConfig, PolicyConfig
    from reactor.engine.monitors import AccessView
    from reactor.sampler.runner import NativeSampler

__all__ = (
    "DamonMonitoring",
    "MonitoringPolicy",
    "NativeMonitoring",
    "interval_bounds",
    "kdamond_cpu_seconds",
    "observed_access_share",
    "region_headroom",
    "sampled_access_share",
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The shortest sampling interval per backend, seconds: DAMON checks a page's accessed
#: bit in the kernel (1 ms is the tuner's stock floor); a native sample walks page tables
#: from user space (~22 ms of CPU per GiB with ``referenced``), 10 ms is its floor here.
MIN_SAMPLE_S = {"damon": 0.001, "native": 0.01}
#: The longest aggregation interval, seconds: policies react within a few of them.
MAX_AGGREGATION_S = 10.0
#: The most regions a monitor may be given (the tuner's stock ceiling).
MAX_REGIONS = 100_000


def observed_access_share(view: AccessView) -> float | None:
    """Size-weighted share of samples that saw an access in the view's snapshots:
    sum(size x nr_accesses) / sum(size x max_nr_accesses); None without regions."""
    sampled = sampled_access_share(view)
    return None if sampled is None else sampled.share


def sampled_access_share(view: AccessView) -> SampledShare | None:
    """:func:`observed_access_share` with how many independent checks it rests on
    (:func:`controllers.filtered.sampled_share`: a region's count is binomial over its
    samples), so the intervals tuner can tell a real change from sampling noise."""
    seen = total = squares = 0.0
    for snap in view.snapshots.values():
        r = snap.regions
        if not len(r):
            continue
        sizes = (r["end"] - r["start"]).astype(np.float64)
        checks = float(max(1, snap.max_nr_accesses))
        seen += float((sizes * r["nr_accesses"]).sum())
        total += float(sizes.sum()) * checks
        squares += float((sizes * sizes).sum()) * checks
    if not (total > 0 and squares > 0):
        return None
    return SampledShare(share=seen / total, checks=total * total / squares)


def region_headroom(view: AccessView, max_regions: float) -> float | None:
    """1 - regions / max_nr_regions of the snapshot with the most regions (0..1)."""
    counts = [len(s.regions) for s in view.snapshots.values()]
    if not counts or max_regions <= 0:
        return None
    return clamp(1.0 - max(counts) / max_regions, 0.0, 1.0)


def interval_bounds(
    monitor: MonitorConfig, backend: str, policies: list[PolicyConfig]
) -> tuple[float, float, float]:
    """(min, max, start) sampling interval in seconds for ``monitor`` (module doc)."""
    sample, aggregation = monitor.intervals(backend)
    goal = monitor.intervals_goal
    if goal is not None:
        return goal.min_sample, goal.max_sample, clamp(sample, goal.min_sample, goal.max_sample)
    ratio = aggregation / sample
    low = max(MIN_SAMPLE_S[backend], sample / 10)
    ages = [p.min_age for p in policies if p.monitor == monitor.name and p.kind != "monitoring"]
    high_aggr = min([MAX_AGGREGATION_S, *ages])
    high = max(low, min(sample * 10, high_aggr / ratio))
    return low, high, clamp(sample, low, high)


def kdamond_cpu_seconds(stat_text: str) -> float:
    """utime + stime of a ``/proc/<pid>/stat`` line, in seconds."""
    fields = stat_text.rpartition(")")[2].split()
    # after the comm: state is field 3, utime 14 and stime 15 (1-based) -> 11, 12 here
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class MonitoringPolicy(Policy):
    """Both tuners for one monitor; subclasses read CPU and apply settings."""

    output_unit = "us"

    def __init__(self, cfg: PolicyConfig, ctx: PolicyContext) -> None:
        super().__init__(cfg, ctx)
        config = ctx.config
        self.monitor = config.monitor(cfg.monitor)
        backend = "native" if ctx.backend == "native" else "damon"
        sample, aggregation = self.monitor.intervals(backend)
        self.ratio = aggregation / sample
        low, high, start = interval_bounds(self.monitor, backend, list(config.policies))
        goal = self.monitor.intervals_goal
        share = goal.access if goal is not None else cfg.access_share
        self.interval_ctl: FilteredLogGoal = intervals_tuner(
            share, starting_us=start * 1e6, min_us=low * 1e6, max_us=high * 1e6
        )
        self.interval_state: AdaptiveState = self.interval_ctl.initial_state()
        top = min(MAX_REGIONS, 10 * self.monitor.regions.max)
        self.regions_ctl: GoalComposite = regions_tuner(
            cfg.cpu_budget,
            starting_output=float(self.monitor.regions.max),
            min_regions=float(self.monitor.regions.min),
            max_regions=float(max(top, self.monitor.regions.min)),
        )
        self.regions_state: CompositeState = self.regions_ctl.initial_state()
        self.sample_us = start * 1e6
        self.max_regions = float(self.monitor.regions.max)
        self.tune_intervals = True
        self._applied_at: float | None = None
        self._stepped_at: float | None = None
        self._cpu_last: tuple[float, float] | None = None

    # -- backend specific --------------------------------------------------------------
    def cpu_seconds(self) -> float | None:
        """Cumulative CPU seconds the monitor spent (None: not measurable now)."""
        raise NotImplementedError

    async def apply(self, sample_us: float, max_regions: int, now: float) -> dict[str, Any]:
        """Apply the interval and region bound online; fields for the log."""
        raise NotImplementedError

    def regions_fixed(self) -> str | None:
        """Why the region count cannot be tuned on this monitor (None: it can)."""
        return None

    # -- the tick ----------------------------------------------------------------------
    def cpu_share(self, now: float) -> float | None:
        """CPU seconds per wall second since the last tick (None on the first)."""
        try:
            used = self.cpu_seconds()
        except (KernelInterfaceError, ReactorError, ValueError, IndexError):
            used = None
        if used is None:
            self._cpu_last = None
            return None
        last, self._cpu_last = self._cpu_last, (now, used)
        if last is None or now <= last[0]:
            return None
        return max(0.0, used - last[1]) / (now - last[0])

    def _fresh_snapshot(self, view: AccessView | None) -> float | None:
        """When the newest snapshot was taken, if it is new and wholly under the applied
        interval (one aggregation after the last apply); else None."""
        if view is None or not view.snapshots:
            return None
        taken = max(s.taken_at for s in view.snapshots.values())
        if taken == self._stepped_at:
            return None
        aggregation = self.sample_us * self.ratio / 1e6
        if self._applied_at is not None and taken < self._applied_at + aggregation:
            return None
        return taken

    async def tick(self, now: float, dt: float) -> None:
        """Measure access share and CPU, step both tuners, apply what moved, log once."""
        view, why = self.access_view(now)
        sampled = None if view is None else sampled_access_share(view)
        share = None if sampled is None else sampled.share
        headroom = None if view is None else region_headroom(view, self.max_regions)
        cpu = self.cpu_share(now)
        terms: dict[str, LogValue] = {}
        taken = self._fresh_snapshot(view)
        if self.tune_intervals and taken is not None:
            self.interval_state, i_dec = self.interval_ctl.step(self.interval_state, sampled, now)
            self._stepped_at = taken
            terms |= {f"intervals.{k}": v for k, v in i_dec.log_fields().items()}
        fixed = self.regions_fixed()
        binding: str | None = None
        if fixed is None:
            self.regions_state, r_dec = self.regions_ctl.step(
                self.regions_state, {"cpu": cpu, "accuracy": headroom}, now
            )
            terms |= {f"regions.{k}": v for k, v in r_dec.log_fields().items()}
            binding = r_dec.binding
            new_regions = round(self.regions_state.output)
        else:
            self.note_once("regions-fixed", "policy_note", note=fixed)
            terms["regions.held"] = "fixed_by_probe"
            new_regions = round(self.max_regions)
        new_us = self.interval_ctl.output_of(self.interval_state) if self.tune_intervals else None
        moved = _moved(new_regions, self.max_regions) or (
            new_us is not None and _moved(new_us, self.sample_us)
        )
        fields: dict[str, Any] = {"access": why} if view is None else {}
        if moved and not (share is None and cpu is None):
            try:
                fields |= await self.apply(
                    new_us if new_us is not None else self.sample_us, new_regions, now
                )
            except ReactorError as exc:
                fields["error"] = str(exc)
            else:
                if new_us is not None:
                    self.sample_us = new_us
                self.max_regions = float(new_regions)
                self._applied_at = now
        terms |= {
            "sample_us": self.sample_us,
            "aggr_us": self.sample_us * self.ratio,
            "max_nr_regions": self.max_regions,
            "binding_goal": binding,
        }
        held = None
        if share is None and cpu is None:
            held = "missing_sample: " + (why or "no regions and no CPU reading")
        self.emit_tick(
            inputs={"access_share": share, "cpu_share": cpu, "region_headroom": headroom},
            terms=terms,
            output=self.sample_us,
            acted=Acted(fields=fields),
            held=held,
        )


def _moved(new: float, old: float) -> bool:
    return old <= 0 or abs(new - old) > 0.02 * old


class NativeMonitoring(MonitoringPolicy):
    """Self-tuning of a native sampler (module doc)."""

    def _sampler(self) -> NativeSampler | None:
        native = self.ctx.native
        return None if native is None else native.samplers.get(self.cfg.monitor)

    def cpu_seconds(self) -> float | None:
        """The sampler's probe (kernel + user) and engine CPU seconds, every target."""
        sampler = self._sampler()
        if sampler is None:
            return None
        return sum(s.probe.kernel_s + s.user_s for s in sampler.stats.values())

    def regions_fixed(self) -> str | None:
        """A sampler whose every target uses a per-mapping probe (``referenced``) has one
        region per mapping: ``max_nr_regions`` bounds nothing there, so only the
        intervals (which set its CPU) are tuned."""
        sampler = self._sampler()
        if sampler is None or not sampler.monitors:
            return None
        if any(m.session.per_page for m in sampler.monitors.values()):
            return None
        probes = sorted({m.session.name for m in sampler.monitors.values()})
        return (
            f"monitor {self.cfg.monitor}: the {', '.join(probes)} probe counts accesses per "
            "mapping, one region per mapping, which max_nr_regions does not bound: the "
            "region count is left alone; the sampling interval (and so the sampling CPU) "
            "is tuned"
        )

    async def apply(self, sample_us: float, max_regions: int, now: float) -> dict[str, Any]:
        """Stage the new settings; the sampler adopts them at its next aggregation."""
        sampler = self._sampler()
        if sampler is None:
            return {"applied": False}
        sample_s = sample_us / 1e6
        old = sampler.settings
        new = replace(
            old,
            sample_interval_s=sample_s,
            aggr_interval_s=sample_s * self.ratio,
            max_nr_regions=max(old.min_nr_regions, max_regions),
        )
        if not self.dry_run:
            sampler.update_settings(new)
        return {"applied": not self.dry_run, "sample_s": sample_s, "aggr_s": new.aggr_interval_s}


class DamonMonitoring(MonitoringPolicy):
    """Self-tuning of a monitor's kdamond (module doc)."""

    def __init__(self, cfg: PolicyConfig, ctx: PolicyContext) -> None:
        super().__init__(cfg, ctx)
        assert ctx.damon is not None
        self.driver = ctx.damon.driver
        self.k = [m.name for m in ctx.config.monitors].index(cfg.monitor)

    async def start(self) -> None:
        """Decide who tunes the intervals: the kernel (intervals_goal) or reactor."""
        explicit = "tuner" in self.cfg.model_fields_set and self.cfg.tuner == "reactor"
        kernel_goal = self.monitor.intervals_goal is not None and self.driver.features.has(
            "intervals_goal"
        )
        self.tune_intervals = not kernel_goal or explicit
        self.log.info(
            "monitoring_tuners",
            intervals="reactor" if self.tune_intervals else "kernel (intervals_goal)",
            regions="reactor",
        )

    def cpu_seconds(self) -> float | None:
        """The kdamond thread's utime + stime, plus the daemon's own CPU reading this
        monitor's snapshots (:meth:`~reactor.damon.DamonDriver.read_cpu_s`): both grow
        with the region count (None while the kdamond has no pid)."""
        from reactor.damon import paths

        text = self.ctx.fs.read_text(paths.kdamond_dir(self.k) + "/pid").strip()
        pid = int(text) if text.lstrip("-").isdigit() else -1
        if pid <= 0:
            return None
        kernel = kdamond_cpu_seconds(self.ctx.fs.read_text(f"/proc/{pid}/stat"))
        return kernel + self.driver.read_cpu_s(self.k)

    async def apply(self, sample_us: float, max_regions: int, now: float) -> dict[str, Any]:
        """Commit the context's intervals (if reactor tunes them) and nr_regions.max."""
        from reactor.config.damon import IntervalsGoal
        from reactor.policies.damon import _lock

        async with _lock(self.driver):
            kd = await self.driver.staged(self.k)
            ctx = kd.contexts[0]
            intervals = ctx.intervals
            if self.tune_intervals:
                intervals = intervals.model_copy(
                    update={
                        "sample_us": max(1, round(sample_us)),
                        "aggr_us": max(1, round(sample_us * self.ratio)),
                        "intervals_goal": IntervalsGoal(),
                    }
                )
            regions = ctx.nr_regions.model_copy(
                update={"max": max(ctx.nr_regions.min, int(max_regions))}
            )
            new_ctx = ctx.model_copy(update={"intervals": intervals, "nr_regions": regions})
            new = kd.model_copy(update={"contexts": (new_ctx, *kd.contexts[1:])})
            fields = {
                "kdamond": self.k,
                "sample_us": intervals.sample_us,
                "aggr_us": intervals.aggr_us,
                "max_nr_regions": regions.max,
            }
            if self.dry_run:
                self.log.info("damon_commit_dry_run", **fields)
                return {"applied": False, **fields}
            await self.driver.commit(self.k, new)
        return {"applied": True, **fields}
