"""Access monitors in the runtime: config ``monitors`` -> samplers -> ``access.<name>`` topics.

Each monitor publishes an :class:`AccessView` (the newest snapshot of every target it
watches) on the bus topic ``access.<monitor>`` whenever one of its targets completes an
aggregation interval. On the native backend a monitor is a
:class:`~reactor.sampler.runner.NativeSampler`; the probes are detected once (by their
effect, on a child process reactor starts) and shared; one capacity limiter makes the
samplers' page walks take turns, so two monitors never walk at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus

from reactor.engine.bus import Bus
from reactor.kernelfs import KernelFS
from reactor.sampler.runner import NativeSampler, SamplerSettings
from reactor.sampler.snapshot import Snapshot
from reactor.sampler.targets import TargetSpec

if TYPE_CHECKING:
    from reactor.config import MonitorConfig

__all__ = (
    "AccessView",
    "NativeMonitors",
    "access_max_age",
    "native_targets",
    "sampler_settings",
)

_log = structlog.get_logger("reactor.monitors")


@dataclass(frozen=True)
class AccessView:
    """The newest snapshot of each target of one monitor (keyed ``<spec>:<pid>``)."""

    monitor: str
    backend: str
    snapshots: Mapping[str, Snapshot] = field(default_factory=dict)
    #: how often the monitor publishes when that is longer than a tick (a DAMON monitor
    #: whose snapshot reads ``snapshot_cpu`` spaces out), None otherwise
    period_s: float | None = None

    def summary(self) -> dict[str, int | float]:
        """Targets, regions, monitored bytes, bytes seen accessed, the hottest region
        (computed once per view: a view is reported every tick until the next one)."""
        cached: dict[str, int | float] | None = self.__dict__.get("_summary")
        if cached is None:
            cached = self._summarize()
            object.__setattr__(self, "_summary", cached)
        return dict(cached)

    def _summarize(self) -> dict[str, int | float]:
        snaps = list(self.snapshots.values())
        regions = sum(len(s.regions) for s in snaps)
        total = sum(s.total_bytes for s in snaps)
        accessed = sum(
            int((s.regions["end"] - s.regions["start"])[s.regions["nr_accesses"] > 0].sum())
            for s in snaps
        )
        hottest = max(
            (int(s.regions["nr_accesses"].max()) for s in snaps if len(s.regions)), default=0
        )
        return {
            "targets": len(self.snapshots),
            "regions": regions,
            "monitored_bytes": total,
            "accessed_bytes": accessed,
            "max_nr_accesses": hottest,
        }


def access_max_age(view: AccessView | None, aggregation_s: float, tick_s: float) -> float:
    """How old a monitor's newest view may be before it is stale: three times the longest
    of its aggregation interval (the given one, or the one its snapshots ran with when a
    monitoring policy lengthened it), the tick (snapshots are read once a tick at most:
    a 200 ms aggregation read every 1 s tick is fresh) and the monitor's publishing period
    (:attr:`AccessView.period_s`). The policies, the per-tick report and the status all
    judge a view by it."""
    longest = max(aggregation_s, tick_s)
    if view is not None:
        for snap in view.snapshots.values():
            longest = max(longest, snap.aggr_interval_s)
        if view.period_s is not None:
            longest = max(longest, view.period_s)
    return 3 * longest


def native_targets(monitor: MonitorConfig) -> list[TargetSpec]:
    """The sampler targets of a vaddr monitor: one spec per kind of target it names."""
    t = monitor.targets
    specs: list[TargetSpec] = []
    probe = monitor.probe
    if t.pids:
        specs.append(TargetSpec(name=f"{monitor.name}.pids", pids=t.pids, probe=probe))
    if t.command:
        specs.append(TargetSpec(name=f"{monitor.name}.command", command=t.command, probe=probe))
    if t.cgroup:
        specs.append(TargetSpec(name=f"{monitor.name}.cgroup", cgroup=t.cgroup, probe=probe))
    if t.selector is not None:
        specs.append(
            TargetSpec(
                name=f"{monitor.name}.selector",
                comm=t.selector.name or ".*",
                min_rss_bytes=t.selector.min_rss or 0,
                probe=probe,
            )
        )
    return specs


def sampler_settings(monitor: MonitorConfig) -> SamplerSettings:
    """The monitor's intervals and region bounds for the native sampler."""
    sample, aggregation = monitor.intervals("native")
    return SamplerSettings(
        sample_interval_s=sample,
        aggr_interval_s=aggregation,
        update_interval_s=monitor.update,
        min_nr_regions=monitor.regions.min,
        max_nr_regions=monitor.regions.max,
    )


class NativeMonitors:
    """Every configured monitor as a native sampler publishing to the bus."""

    def __init__(self, monitors: Sequence[MonitorConfig], fs: KernelFS, bus: Bus) -> None:
        self.monitors = tuple(m for m in monitors if m.ops != "paddr")
        self.skipped = tuple(m.name for m in monitors if m.ops == "paddr")
        self.fs = fs
        self.bus = bus
        self.samplers: dict[str, NativeSampler] = {}
        self._views: dict[str, dict[str, Snapshot]] = {}
        self._limiter = anyio.CapacityLimiter(1)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Detect the probes once, start every sampler (each after its first sample)."""
        from reactor.sampler.detect import detect_probes

        if self.skipped:
            _log.warning(
                "monitor_inactive",
                monitors=list(self.skipped),
                reason="ops paddr needs the DAMON backend: the native sampler watches "
                "processes (vaddr), not physical memory",
            )
        probes = await anyio.to_thread.run_sync(detect_probes, self.fs, limiter=self._limiter)
        async with anyio.create_task_group() as tg:
            for monitor in self.monitors:
                sampler = NativeSampler(
                    self.fs,
                    native_targets(monitor),
                    sampler_settings(monitor),
                    probes=probes,
                    sink=self._sink(monitor.name),
                    limiter=self._limiter,
                )
                self.samplers[monitor.name] = sampler
                self._views[monitor.name] = {}
                with structlog.contextvars.bound_contextvars(monitor=monitor.name):
                    await tg.start(sampler.run)
            task_status.started()

    def reconfigure(self, monitors: Sequence[MonitorConfig]) -> str | None:
        """Take reloaded monitors online: new intervals and region bounds go to the
        running samplers (each adopts them at its next aggregation boundary). Returns
        None when done, or why it cannot be done online (then nothing was changed)."""
        kept = tuple(m for m in monitors if m.ops != "paddr")
        old = {m.name: native_targets(m) for m in self.monitors}
        if {m.name: native_targets(m) for m in kept} != old or {m.name: m.probe for m in kept} != {
            m.name: m.probe for m in self.monitors
        }:
            return "monitors were added, removed, renamed, retargeted or given another probe"
        for monitor in kept:
            sampler = self.samplers.get(monitor.name)
            settings = sampler_settings(monitor)
            if sampler is not None and sampler.settings != settings:
                sampler.update_settings(settings)
        self.monitors = kept
        return None

    def _sink(self, name: str) -> Any:
        def publish(snapshot: Snapshot) -> None:
            view = self._views[name]
            view[snapshot.target] = snapshot
            sampler = self.samplers[name]
            for gone in sampler.vanished:
                view.pop(gone, None)
            value = AccessView(name, "native", MappingProxyType(dict(view)))
            self.bus.publish(f"access.{name}", value, anyio.current_time())

        return publish
