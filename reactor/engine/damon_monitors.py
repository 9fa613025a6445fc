"""Access monitors on the DAMON backend: config -> reactor's own kdamonds -> ``access.*``.

Each configured monitor becomes one kdamond (one context) with a ``stat`` scheme that
matches every region, the way damo reads snapshots: ``update_schemes_tried_regions``
then lists the context's regions with their ``nr_accesses`` and age. Kdamonds written
by the expert in the ``damon:`` section follow, in their order, and run as given.

A monitor's command targets are started here (reactor owns them and stops them at
exit); DAMON monitors fixed pids, so cgroup and selector targets, which come and go,
are native-only for now and refused with that reason.

Shutdown stops reactor's kdamonds (never anyone else's) before the commands end.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus

from reactor.damon import paths
from reactor.damon.commands import DamonSysfsError
from reactor.damon.driver import DamonDriver, DamonTimeout
from reactor.damon.paths import attrs_dir
from reactor.damon.snapshot import TriedRegions
from reactor.engine.bus import Bus
from reactor.engine.monitors import AccessView
from reactor.engine.ticker import Ticker
from reactor.errors import KernelInterfaceError, ReactorError
from reactor.kernelfs import KernelFS
from reactor.log import repeat_logged
from reactor.sampler.snapshot import Region, Snapshot, regions_array
from reactor.sampler.targets import OwnedCommand

if TYPE_CHECKING:
    from reactor.config import Config, DamonSection, MonitorConfig

__all__ = ("DamonMonitors", "monitor_kdamond", "section_for")

_log = structlog.get_logger("reactor.monitors")

#: The access pattern that matches every region (damo's snapshot scheme).
_EVERYTHING = {
    "sz_bytes": {"min": 0, "max": "max"},
    "nr_accesses": {"min": 0, "max": "max"},
    "age": {"min": 0, "max": "max"},
}


def _transient(exc: DamonTimeout | DamonSysfsError) -> bool:
    """A snapshot failure worth another try next tick: the command's deadline passed
    (the kdamond was busy) or DAMON's sysfs lock stayed held (EBUSY); not a kdamond
    that stopped or a file that is gone."""
    return isinstance(exc, DamonTimeout) or exc.errno == errno.EBUSY


class UnsupportedTarget(ReactorError):
    """A monitor target the DAMON backend cannot follow."""


def monitor_kdamond(monitor: MonitorConfig, pids: Sequence[int]) -> dict[str, Any]:
    """One monitor as a kdamond in damo's schema (a snapshot ``stat`` scheme included)."""
    sample, aggregation = monitor.intervals("damon")
    intervals: dict[str, Any] = {
        "sample_us": round(sample * 1e6),
        "aggr_us": round(aggregation * 1e6),
        "ops_update_us": round(monitor.update * 1e6),
    }
    goal = monitor.intervals_goal
    if goal is not None:
        intervals["intervals_goal"] = {
            "access_bp": round(goal.access * 10_000),
            "aggrs": goal.aggrs,
            "min_sample_us": round(goal.min_sample * 1e6),
            "max_sample_us": round(goal.max_sample * 1e6),
        }
    if monitor.ops == "paddr":
        targets: list[dict[str, Any]] = [{"pid": None, "regions": []}]
    else:
        targets = [{"pid": pid, "regions": []} for pid in pids]
    return {
        "contexts": [
            {
                "ops": monitor.ops,
                "targets": targets,
                "intervals": intervals,
                "nr_regions": {"min": monitor.regions.min, "max": monitor.regions.max},
                "schemes": [{"action": "stat", "access_pattern": _EVERYTHING}],
            }
        ]
    }


def section_for(config: Config, pids: dict[str, list[int]]) -> DamonSection:
    """Monitors first (kdamond i = monitor i), then the expert's own kdamonds."""
    from reactor.config import DamonSection

    monitors = [monitor_kdamond(m, pids.get(m.name, [])) for m in config.monitors]
    ours = DamonSection.model_validate({"kdamonds": monitors})
    return ours.model_copy(update={"kdamonds": ours.kdamonds + config.damon.kdamonds})


def tried_to_snapshot(
    name: str, tried: TriedRegions, sample_s: float, aggregation_s: float, now: float
) -> Snapshot:
    """A kernel snapshot in the shape the native sampler produces (probe ``damon``)."""
    regions = regions_array(
        [Region(r.start, r.end, r.nr_accesses, r.age_aggrs) for r in tried.regions]
    )
    return Snapshot(
        target=f"{name}:damon",
        regions=regions,
        sample_interval_s=sample_s,
        aggr_interval_s=aggregation_s,
        probe="damon",
        granularity_bytes=4096,
        taken_at=now,
        max_nr_accesses=max(1, round(aggregation_s / sample_s)),
    )


class DamonMonitors:
    """Every configured monitor as a kdamond of reactor's, publishing to the bus."""

    def __init__(self, config: Config, fs: KernelFS, bus: Bus, *, snapshot_every_s: float) -> None:
        self.config = config
        self.fs = fs
        self.bus = bus
        self.snapshot_every_s = snapshot_every_s
        self.driver = DamonDriver(fs, run_dir=config.reactor.run_dir, kernel_release=None)
        self.commands: dict[str, OwnedCommand] = {}
        #: the pids each monitor's kdamond follows (a started command's included)
        self.pids: dict[str, list[int]] = {}
        #: monitor -> snapshots in a row the kernel did not give in time
        self._late_count: dict[str, int] = {}

    def _pids(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {}
        for m in self.config.monitors:
            t = m.targets
            if t.cgroup or t.selector is not None:
                raise UnsupportedTarget(
                    f"monitor {m.name!r}: cgroup and selector targets come and go, and a "
                    "DAMON target is a fixed pid; use the native backend for them, or "
                    "name pids or a command"
                )
            pids[m.name] = list(t.pids)
            if t.command:
                self.commands[m.name] = OwnedCommand(t.command, where=f"monitor {m.name!r}")
                pids[m.name].append(self.commands[m.name].pid)
        return pids

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Lay out and start reactor's kdamonds; publish snapshots until cancelled."""
        try:
            await self.driver.open()
            self.pids = self._pids()
            section = section_for(self.config, self.pids)
            await self.driver.apply(section)
            _log.info(
                "damon_kdamonds_started",
                kdamonds={k: self.driver.state(k) for k in range(len(section.kdamonds))},
                monitors=[m.name for m in self.config.monitors],
            )
            task_status.started()
            await self._loop()
        except BaseException as exc:
            await self._shut_down(exc)
            raise
        await self._shut_down(None)

    async def _shut_down(self, cause: BaseException | None) -> None:
        """Stop reactor's kdamonds, then the workloads it started (even when the
        kdamonds could not stop). A stop that fails is raised when the monitors were
        stopping in order (cancelled, or done); when another error ends them (a start-up
        failure) that error is the cause: the stop's own failure is only logged
        (``damon_stop_failed``), so it cannot hide it."""
        orderly = cause is None or isinstance(cause, anyio.get_cancelled_exc_class())
        try:
            await self._stop_kdamonds()
        except ReactorError:
            if orderly:
                raise
        finally:
            self._stop_commands()

    def _stop_commands(self) -> None:
        """End the workloads reactor started, even when its kdamonds could not stop."""
        for command in self.commands.values():
            command.stop()

    async def _stop_kdamonds(self) -> None:
        """Stop reactor's kdamonds; say so when they may still run (a stop that failed
        or ran out of time is logged and raised: the exit status shows it).

        ``shutdown_timeout`` bounds each of two steps: a DAMON job the cancellation
        abandoned (a write the kernel has not answered yet) finishing in its thread, then
        the stop itself."""
        if not self.driver.opened:
            return  # open() failed: reactor laid out nothing
        timeout = self.config.reactor.shutdown_timeout
        left = (
            "reactor's kdamonds may still run: the next reactor start with this run_dir "
            "takes them over, or write 'off' to their state files"
        )
        with anyio.CancelScope(shield=True):
            try:
                await self.driver.settle(timeout)
                with anyio.move_on_after(timeout) as scope:
                    await self.driver.stop_all()
            except ReactorError as exc:
                _log.error(
                    "damon_stop_failed",
                    error=str(exc),
                    recorded=self._recorded(),
                    note=left,
                    kdamonds=self._whereabouts(),
                )
                raise
            if scope.cancelled_caught:
                _log.error(
                    "damon_stop_timeout",
                    timeout_s=timeout,
                    recorded=self._recorded(),
                    note=left,
                    kdamonds=self._whereabouts(),
                )
                raise DamonTimeout(
                    paths.KDAMONDS,
                    f"reactor's kdamonds {self._recorded()} did not stop within "
                    f"reactor.shutdown_timeout ({timeout:g} s); {left}",
                    errno=errno.ETIMEDOUT,
                )
            _log.info("damon_kdamonds_stopped", owned=sorted(self.driver.owned()))

    def _whereabouts(self) -> dict[int, dict[str, object]]:
        """Each recorded kdamond's place in the kernel, for a stop that failed."""
        return {k: self.driver.kdamond_task(k) for k in self._recorded()}

    def _recorded(self) -> list[int]:
        """The kdamonds reactor's ownership record lists as started (no sysfs read)."""
        return sorted(k.index for k in self.driver.record.kdamonds if k.pid != -1)

    async def reconfigure(self, config: Config) -> str | None:
        """Commit a reloaded config's monitors and ``damon`` section into the running
        kdamonds, online (each keeps its pid). Returns None when done, or why it cannot
        be done online (then nothing was changed).

        Online means the same kdamonds, contexts, operations and targets: what changes is
        each context's intervals, region bounds and schemes. A monitor's kdamond keeps
        the schemes policies added after its snapshot scheme; a scheme a policy tunes
        (``scheme: k/c/s``) keeps the quota the policy committed (the policy owns it).
        """
        old, pids = self.config, self.pids
        if [(m.name, m.ops, m.targets) for m in old.monitors] != [
            (m.name, m.ops, m.targets) for m in config.monitors
        ]:
            return "monitors were added, removed, renamed or retargeted"
        new = section_for(config, pids)
        tuned = {
            tuple(int(x) for x in p.scheme.split("/"))
            for p in config.policies
            if p.enabled and p.scheme is not None
        }
        n_monitors = len(config.monitors)
        plans = []
        for k, want in enumerate(new.kdamonds):
            running = await self.driver.read(k)
            if len(running.contexts) != len(want.contexts):
                return f"kdamond {k} would change its number of contexts"
            contexts = []
            for c, (have, ctx) in enumerate(zip(running.contexts, want.contexts, strict=True)):
                same_targets = [t.pid for t in have.targets] == [t.pid for t in ctx.targets]
                if have.ops != ctx.ops or not same_targets:
                    return f"kdamond {k} context {c} would change its operations or targets"
                if k < n_monitors:  # the snapshot scheme, then what policies added
                    schemes = (ctx.schemes[0], *have.schemes[1:])
                else:
                    if len(have.schemes) != len(ctx.schemes):
                        return f"kdamond {k} context {c} would change its number of schemes"
                    schemes = tuple(
                        s.model_copy(update={"quotas": h.quotas})
                        if (k - n_monitors, c, i) in tuned
                        else s
                        for i, (h, s) in enumerate(zip(have.schemes, ctx.schemes, strict=True))
                    )
                contexts.append(
                    have.model_copy(
                        update={
                            "intervals": ctx.intervals,
                            "nr_regions": ctx.nr_regions,
                            "schemes": schemes,
                        }
                    )
                )
            plans.append((k, running, running.model_copy(update={"contexts": tuple(contexts)})))
        committed = []
        for k, running, kd in plans:
            if kd != running:
                await self.driver.commit(k, kd)
                committed.append(k)
        self.config = config
        _log.info("damon_reconfigured", committed=committed, online=True)
        return None

    def _late(self, name: str, k: int, exc: ReactorError) -> None:
        """Log a snapshot the kernel did not give in time (first, then every 60th in a
        row): its kdamond was busy past the command's deadline (a long pass of
        migrations under emulation took over 10 s), or another DAMON user held the
        sysfs lock. Where the kdamond is in the kernel goes with it
        (:meth:`~reactor.damon.driver.DamonDriver.kdamond_task`). The monitor stays up
        and tries again next tick."""
        n = self._late_count[name] = self._late_count.get(name, 0) + 1
        if repeat_logged(n):
            _log.warning(
                "damon_snapshot_late",
                monitor=name,
                error=str(exc),
                consecutive=n,
                **self.driver.kdamond_task(k),
            )

    def _intervals(self, k: int, monitor: MonitorConfig) -> tuple[float, float]:
        """The kdamond's intervals as staged now (a self-tuning policy may have committed
        new ones), in seconds; the configured ones if the files cannot be read."""
        base = f"{attrs_dir(k)}/intervals"
        try:
            sample_us = int(self.fs.read_text(f"{base}/sample_us").strip())
            aggr_us = int(self.fs.read_text(f"{base}/aggr_us").strip())
        except (KernelInterfaceError, ValueError):
            return monitor.intervals("damon")
        if sample_us <= 0 or aggr_us <= 0:
            return monitor.intervals("damon")
        return sample_us / 1e6, aggr_us / 1e6

    def _period(self, monitor: MonitorConfig, cost_s: float) -> float:
        """Seconds from one snapshot of ``monitor`` to its next: a tick, or, with
        ``snapshot_cpu``, as many whole ticks as keep the reads' average CPU within it
        (the last snapshot's cost over the budget: 30 ms of reads under a 0.2 % budget
        is one snapshot every 15 s)."""
        tick = self.snapshot_every_s
        budget = monitor.snapshot_cpu
        if budget is None or cost_s <= budget * tick:
            return tick
        return math.ceil(cost_s / budget / tick - 1e-9) * tick

    async def _loop(self) -> None:
        # on the process-wide grid, with the sources (reactor.engine.ticker); with no
        # monitor (only the damon: section's kdamonds) this waits: they run until shutdown
        ticker = Ticker(lambda: self.snapshot_every_s, phase=0.0)
        due: dict[str, float] = {}
        while True:
            tick = await ticker.next()
            # the config of now: a reload may change snapshot_cpu (never the monitors)
            for k, monitor in enumerate(self.config.monitors):
                if tick.now < due.get(monitor.name, -math.inf):
                    continue  # spaced out by snapshot_cpu: the last view stays fresh
                spent = self.driver.read_cpu_s(k)
                # the snapshot scheme's alone (0): policies' schemes have theirs too
                try:
                    (tried,) = await self.driver.update_schemes_tried_regions(k, (0,), extras=False)
                except (DamonTimeout, DamonSysfsError) as exc:
                    if not _transient(exc):
                        raise
                    self._late(monitor.name, k, exc)
                    continue  # the snapshot ages: policies hold on it
                self._late_count.pop(monitor.name, None)
                sample, aggregation = self._intervals(k, monitor)
                now = anyio.current_time()
                period = self._period(monitor, self.driver.read_cpu_s(k) - spent)
                # from this tick's instant, half a tick early: the next read comes on the
                # grid instant ``period`` later, however long this one took
                due[monitor.name] = tick.now + period - self.snapshot_every_s / 2
                snap = tried_to_snapshot(monitor.name, tried, sample, aggregation, now)
                view = AccessView(
                    monitor.name,
                    "damon",
                    MappingProxyType({snap.target: snap}),
                    period_s=period if period > self.snapshot_every_s else None,
                )
                self.bus.publish(f"access.{monitor.name}", view, now)
