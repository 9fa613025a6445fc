"""The native sampler as an async task: probes, region engines and snapshots on deadlines.

:class:`NativeSampler` runs one loop on absolute deadlines of the sampling interval
(``reactor.engine.ticker``): at each tick it collects every target's probe and feeds its
engine; at every ``aggr_interval_s / sample_interval_s``-th tick it aggregates and hands
one :class:`~reactor.sampler.snapshot.Snapshot` per target to ``sink`` (and keeps it in
``latest``); every ``update_interval_s`` it re-discovers the targets' processes (cgroup
members come and go, commands exit) and refreshes their address ranges.

Probe work blocks (clear_refs on a 1 GiB process walks its page tables for about 12 ms),
so the loop runs in a thread of its own (started with ``anyio.to_thread.run_sync``),
on the process-wide grid of ``time.monotonic()`` (:class:`~reactor.engine.ticker.
ThreadTicker`): it wakes the event loop only to hand over snapshots and logged events
(``anyio.from_thread.run_sync``), and snapshots are stamped there, on the event loop's
clock. A process that exits is dropped with
an ``info`` log line (``target_vanished``); a failed collect is logged
(``sample_failed``) and counted, never fatal. Commands the sampler started are ended by
pid when it stops.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from reactor.engine.ticker import READ_PHASE, ThreadTicker
from reactor.errors import KernelInterfaceError, ReactorError, TargetVanished, UnsupportedKernel
from reactor.kernelfs import KernelFS
from reactor.sampler.engine import (
    AccessedRanges,
    EngineSettings,
    MappingEngine,
    PageCounter,
    RegionEngine,
)
from reactor.sampler.probes import PAGE_SIZE, ProbeCost, ProbeInfo, ProbeSession, open_session
from reactor.sampler.procfs import Mappings, parse_maps, three_regions
from reactor.sampler.snapshot import Snapshot
from reactor.sampler.targets import OwnedCommand, TargetSpec, discover_pids

__all__ = ("MonitorStats", "NativeSampler", "SamplerSettings")

_log = structlog.get_logger("reactor.sampler")


@dataclass(frozen=True)
class SamplerSettings:
    """Monitoring attributes, as DAMON's (seconds and counts).

    ``track_pages_max_bytes``: per-page probes also keep exact per-page counts
    (``Snapshot.pages``) when the monitored ranges are at most this large (2 bytes per
    page: 8 MiB of counts for 16 GiB).
    """

    sample_interval_s: float = 0.1
    aggr_interval_s: float = 2.0
    update_interval_s: float = 1.0
    min_nr_regions: int = 10
    max_nr_regions: int = 1000
    track_pages_max_bytes: int = 16 * 2**30
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.sample_interval_s <= self.aggr_interval_s:
            raise ValueError(
                "need 0 < sample_interval_s <= aggr_interval_s, got "
                f"sample_interval_s={self.sample_interval_s}, "
                f"aggr_interval_s={self.aggr_interval_s}"
            )
        if self.update_interval_s <= 0:
            raise ValueError(f"update_interval_s must be > 0, got {self.update_interval_s}")
        self.engine_settings()  # validates the region counts

    @property
    def samples_per_aggr(self) -> int:
        return max(1, round(self.aggr_interval_s / self.sample_interval_s))

    def engine_settings(self) -> EngineSettings:
        return EngineSettings(
            min_nr_regions=self.min_nr_regions,
            max_nr_regions=self.max_nr_regions,
            samples_per_aggr=self.samples_per_aggr,
            min_region_bytes=PAGE_SIZE,
        )


@dataclass
class MonitorStats:
    """Cost and progress of one monitored process: probe CPU split into kernel and user
    seconds, the engine's own CPU seconds, samples and aggregations done."""

    probe: ProbeCost
    engine_s: float = 0.0
    samples: int = 0
    aggregations: int = 0
    failures: int = 0

    @property
    def user_s(self) -> float:
        """All user-space CPU the sampler spent on this target (parse + engine)."""
        return self.probe.user_s + self.engine_s


@dataclass
class _Monitor:
    key: str
    spec: TargetSpec
    pid: int
    fs: KernelFS
    session: ProbeSession
    settings: SamplerSettings
    rng_seed: int | None
    engine: RegionEngine | MappingEngine = field(init=False)
    pages: PageCounter | None = None
    stats: MonitorStats = field(init=False)
    #: a per-mapping probe's last reading (with Rss), for :attr:`Snapshot.mappings`
    last_mappings: Mappings | None = None

    def __post_init__(self) -> None:
        import numpy as np

        self.stats = MonitorStats(self.session.cost)
        if self.session.per_page:
            ranges = self.target_ranges()
            self.engine = RegionEngine(
                ranges, self.settings.engine_settings(), rng=np.random.default_rng(self.rng_seed)
            )
            self._track(ranges)
        else:
            self.engine = MappingEngine()

    def target_ranges(self) -> list[tuple[int, int]]:
        """Registered ranges, or DAMON vaddr's three regions of the process's mappings."""
        if self.spec.ranges is not None:
            return [(int(s), int(e)) for s, e in self.spec.ranges]
        try:
            text = self.fs.read_text(f"/proc/{self.pid}/maps")
        except KernelInterfaceError as exc:
            raise TargetVanished(f"pid {self.pid}") from exc
        return three_regions(parse_maps(text))

    def _track(self, ranges: list[tuple[int, int]]) -> None:
        total = sum(e - s for s, e in ranges)
        if self.spec.ranges is not None and total <= self.settings.track_pages_max_bytes:
            self.pages = PageCounter(ranges, PAGE_SIZE)

    def refresh(self) -> None:
        if isinstance(self.engine, RegionEngine) and self.spec.ranges is None:
            self.engine.set_ranges(self.target_ranges())

    def sample(self) -> None:
        observed = self.session.collect()
        t0 = time.thread_time()
        if isinstance(self.engine, RegionEngine):
            assert isinstance(observed, AccessedRanges)
            self.engine.observe(observed)
            if self.pages is not None:
                self.pages.add(observed)
        else:
            assert isinstance(observed, Mappings)
            self.engine.observe(observed.start, observed.end, observed.referenced)
            self.last_mappings = observed
        self.stats.engine_s += time.thread_time() - t0
        self.stats.samples += 1

    def aggregate(self, now: float, probe: ProbeInfo) -> Snapshot:
        t0 = time.thread_time()
        regions = self.engine.aggregate()
        pages = self.pages.take() if self.pages is not None else None
        self.stats.engine_s += time.thread_time() - t0
        self.stats.aggregations += 1
        if probe.per_page:
            granularity = PAGE_SIZE
        else:
            sizes = regions["end"] - regions["start"]
            granularity = int(sizes.max()) if len(sizes) else 0
        return Snapshot(
            target=self.key,
            regions=regions,
            sample_interval_s=self.settings.sample_interval_s,
            aggr_interval_s=self.settings.aggr_interval_s,
            probe=probe.name,
            granularity_bytes=granularity,
            taken_at=now,
            max_nr_accesses=self.settings.samples_per_aggr,
            pages=pages,
            mappings=self.last_mappings,
        )


@dataclass
class _LoopState:
    """Where the sampling loop is: samples since the last aggregation (or settings
    change) and when the targets are next re-discovered (the thread's clock)."""

    next_update: float
    samples: int = 0


class NativeSampler:
    """Monitors targets with the native probes and publishes snapshots (module doc).

    ``probes`` are the detected probe infos (:func:`~reactor.sampler.detect.
    detect_probes`); when None they are detected when the sampler starts (a child
    process is started for it). ``sink`` receives each snapshot on the event loop.
    """

    def __init__(
        self,
        fs: KernelFS,
        targets: Sequence[TargetSpec],
        settings: SamplerSettings | None = None,
        *,
        probes: Sequence[ProbeInfo] | None = None,
        sink: Callable[[Snapshot], None] | None = None,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.fs = fs
        self.targets = tuple(targets)
        self.settings = settings or SamplerSettings()
        self.probes: tuple[ProbeInfo, ...] | None = tuple(probes) if probes is not None else None
        self.sink = sink
        self._limiter = limiter
        self.latest: dict[str, Snapshot] = {}
        self.monitors: dict[str, _Monitor] = {}
        self.vanished: list[str] = []
        #: Every monitored process's cost and progress, kept after it is dropped.
        self.stats: dict[str, MonitorStats] = {}
        self._owned: dict[str, OwnedCommand] = {}
        self._next_seed = self.settings.seed
        self.ticker: ThreadTicker | None = None
        self._pending: SamplerSettings | None = None

    def cpu_seconds(self) -> float:
        """CPU seconds spent sampling and aggregating every target since start, gone
        ones included: the probe's system calls (and the page walks they make the kernel
        do), parsing, the region engine; on the sampler thread's CPU clock."""
        return sum(s.probe.kernel_s + s.user_s for s in self.stats.values())

    # ------------------------------------------------------------ probes and targets
    def probe_for(self, spec: TargetSpec) -> ProbeInfo:
        """The probe ``spec`` asks for (or the best available one for ``auto``)."""
        assert self.probes is not None
        if spec.probe == "auto":
            for info in self.probes:
                if info.available and not info.needs_cooperation:
                    return info
            raise UnsupportedKernel("any non-cooperative access probe", None)
        for info in self.probes:
            if info.name == spec.probe:
                if not info.available:
                    raise UnsupportedKernel(f"the {info.name} probe ({info.detail})", None)
                return info
        raise ValueError(f"target {spec.name!r}: unknown probe {spec.probe!r}")

    def _seed(self) -> int | None:
        if self._next_seed is None:
            return None
        self._next_seed += 1
        return self._next_seed - 1

    def _refresh(self) -> list[tuple[str, str]]:
        """Re-discover processes (worker thread). Returns (event, key) pairs to log."""
        events: list[tuple[str, str]] = []
        seen: set[str] = set()
        for spec in self.targets:
            owned = self._owned.get(spec.name)
            own = [owned.pid] if owned is not None and owned.alive else []
            try:
                pids = discover_pids(self.fs, spec, own)
            except KernelInterfaceError as exc:
                events.append(("discover_failed", f"{spec.name}: {exc}"))
                continue
            for pid in pids:
                key = f"{spec.name}:{pid}"
                seen.add(key)
                if key in self.monitors:
                    continue
                try:
                    events.append(self._add(spec, pid, key))
                except TargetVanished:
                    continue
        for key in [k for k in self.monitors if k not in seen]:
            self._drop(key)
            events.append(("target_vanished", key))
        for monitor in list(self.monitors.values()):
            try:
                monitor.refresh()
            except TargetVanished:
                self._drop(monitor.key)
                events.append(("target_vanished", monitor.key))
        return events

    def _add(self, spec: TargetSpec, pid: int, key: str) -> tuple[str, str]:
        info = self.probe_for(spec)
        ranges = list(spec.ranges) if spec.ranges is not None else None
        session = open_session(info.name, self.fs, pid, ranges)
        try:
            session.start()
            monitor = _Monitor(key, spec, pid, self.fs, session, self.settings, self._seed())
            self.monitors[key] = monitor
            self.stats[key] = monitor.stats
        except BaseException:
            session.close()
            raise
        return ("target_added", key)

    def _drop(self, key: str) -> None:
        monitor = self.monitors.pop(key, None)
        if monitor is not None:
            monitor.session.close()
            self.vanished.append(key)

    def _sample_all(self) -> list[tuple[str, str]]:
        events: list[tuple[str, str]] = []
        for key, monitor in list(self.monitors.items()):
            try:
                monitor.sample()
            except TargetVanished:
                self._drop(key)
                events.append(("target_vanished", key))
            except (KernelInterfaceError, ReactorError) as exc:
                monitor.stats.failures += 1
                events.append(("sample_failed", f"{key}: {exc}"))
        return events

    def _step(self, refresh: bool, aggregate: bool) -> tuple[list[tuple[str, str]], list[Snapshot]]:
        """One sample (worker thread): re-discover processes first when ``refresh``,
        then sample every target, then aggregate when ``aggregate`` (the snapshots'
        ``taken_at`` is stamped on the event loop's clock by the caller)."""
        events = self._refresh() if refresh else []
        events += self._sample_all()
        snaps = self._aggregate_all(math.nan) if aggregate else []
        return events, snaps

    def _aggregate_all(self, now: float) -> list[Snapshot]:
        assert self.probes is not None
        infos = {i.name: i for i in self.probes}
        return [m.aggregate(now, infos[m.session.name]) for m in self.monitors.values()]

    # ------------------------------------------------------------ the task
    async def _thread(self, func: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sample until cancelled; ``task_status.started()`` after the first sample."""
        if self.probes is None:
            from reactor.sampler.detect import detect_probes

            self.probes = await self._thread(detect_probes, self.fs)
        _log.info(
            "sampler_probes",
            probes=[
                {
                    "name": p.name,
                    "available": p.available,
                    "granularity_bytes": p.granularity_bytes,
                    "sees": p.sees,
                    "needs_cooperation": p.needs_cooperation,
                    "detail": p.detail,
                }
                for p in self.probes
            ],
        )
        for spec in self.targets:
            self.probe_for(spec)  # fail fast, before any process is started
        try:
            for spec in self.targets:
                if spec.command:
                    self._owned[spec.name] = OwnedCommand(
                        spec.command, where=f"target {spec.name!r}"
                    )
            await self._loop(task_status)
        finally:
            with anyio.CancelScope(shield=True):
                await self._thread(self._close)

    def update_settings(self, settings: SamplerSettings) -> None:
        """Change the sampling interval, aggregation and region bounds online.

        The new settings take effect at the next aggregation boundary (so no snapshot
        mixes two ``samples_per_aggr``: its ``nr_accesses`` stay within its
        ``max_nr_accesses``); every target's region engine keeps its regions and adopts
        the new bounds there.
        """
        self._pending = settings

    def _apply_pending(self) -> bool:
        """Adopt settings staged by :meth:`update_settings`; True when there were some."""
        new, self._pending = self._pending, None
        if new is None:
            return False
        self.settings = new
        for monitor in self.monitors.values():
            monitor.settings = new
            if isinstance(monitor.engine, RegionEngine):
                monitor.engine.settings = new.engine_settings()
        return True

    def _close(self) -> None:
        try:
            for key in list(self.monitors):
                monitor = self.monitors.pop(key)
                monitor.session.close()
        finally:
            # the commands reactor started end even if closing a probe session failed
            for owned in self._owned.values():
                owned.stop()

    async def _loop(self, task_status: TaskStatus[None]) -> None:
        """Sample until cancelled: the first sample through a worker thread (the task
        has started after it), then the loop in a thread of its own.

        That thread sleeps and samples by itself: the event loop wakes only when there
        is something to hand over (a snapshot, a logged event). A worker-thread hand-off
        per sample woke the event loop two or three times per sample: at the 100 ms
        default interval, ~8 ms of the main thread's CPU per second for two monitors,
        more than the daemon's sources and policies together."""
        stop = threading.Event()
        self.ticker = ThreadTicker(lambda: self.settings.sample_interval_s, phase=READ_PHASE)
        state = _LoopState(next_update=-math.inf)
        first = await self._thread(self._iteration, stop, state)
        if first is None:
            return
        self._deliver(*first)
        task_status.started()

        finished = threading.Event()

        def sample_until_stopped() -> None:
            try:
                self._sample_thread(stop, state)
            finally:
                finished.set()

        try:
            # its own limiter: the thread holds its token for as long as it runs. A
            # cancel returns at once (abandon_on_cancel); the thread is then stopped
            # and waited for, so its targets are closed after it and not under it.
            await anyio.to_thread.run_sync(
                sample_until_stopped, limiter=anyio.CapacityLimiter(1), abandon_on_cancel=True
            )
        finally:
            stop.set()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(finished.wait)

    def _sample_thread(self, stop: threading.Event, state: _LoopState) -> None:
        """The sampling loop, in its own thread until ``stop``: hands snapshots and
        events to the event loop when there are some."""
        while (done := self._iteration(stop, state)) is not None:
            events, snaps = done
            if events or snaps:
                anyio.from_thread.run_sync(self._deliver, events, snaps)

    def _iteration(
        self, stop: threading.Event, state: _LoopState
    ) -> tuple[list[tuple[str, str]], list[Snapshot]] | None:
        """Wait for the next tick on the grid, then sample every target (and aggregate
        every ``samples_per_aggr``-th sample); None once ``stop`` is set."""
        assert self.ticker is not None
        tick = self.ticker.next(stop)
        if tick is None:
            return None
        if tick.skipped:
            _log.warning("tick_overrun", skipped=tick.skipped, total=self.ticker.overruns)
        s = self.settings
        refresh = tick.now >= state.next_update
        if refresh:
            state.next_update = tick.now + s.update_interval_s
        state.samples += 1
        aggregate = state.samples % s.samples_per_aggr == 0
        events, snaps = self._step(refresh, aggregate)
        if aggregate and self._apply_pending():
            state.samples = 0
        return events, snaps

    def _deliver(self, events: list[tuple[str, str]], snaps: list[Snapshot]) -> None:
        """On the event loop: log the events, stamp and publish the snapshots."""
        self._log(events)
        if snaps:
            now = anyio.current_time()
            for taken in snaps:
                snap = replace(taken, taken_at=now)
                self.latest[snap.target] = snap
                if self.sink is not None:
                    self.sink(snap)

    @staticmethod
    def _log(events: list[tuple[str, str]]) -> None:
        for event, what in events:
            if event in {"sample_failed", "discover_failed"}:
                _log.warning(event, detail=what)
            else:
                _log.info(event, target=what)
