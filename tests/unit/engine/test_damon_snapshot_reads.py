"""DamonMonitors' snapshot loop against the kernel's timing, on trio's MockClock.

FakeDamon models "a tried-regions update completes at the next aggregation boundary" in
its own simulated time only: the write returns at once in real time and jumps every
simulated kdamond forward, so the time a read holds the lock, which is what this loop is
about, does not exist there. These tests stand in for the driver with
:class:`KernelTiming`, which keeps just the timing the kernel documents
(reference damon-sysfs.md §3.1, §3.4, §5.1) and the guest measures
(tests/kernel/test_address_spaces_guest.py prints every read's lock time): kdamond k's
boundaries fall every aggregation from its start, each aggregation 2 % longer than
configured (the kdamond's own work per sample); an update holds the one lock until k's
first boundary after it begins; a commit of new intervals restarts the count.
"""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import pytest

from reactor.config import load_config_text
from reactor.damon.driver import AggregationRestart
from reactor.damon.paths import attrs_dir
from reactor.damon.snapshot import TriedRegion, TriedRegions
from reactor.engine.bus import Bus
from reactor.engine.damon_monitors import DamonMonitors
from reactor.engine.snapshot_timing import margin_s
from reactor.testing import FakeKernelFS

DRIFT = 0.02
TICK = 1.0
FAST = (0.01, 0.1)  # sample, aggregation (s)
SLOW = (0.25, 5.0)
SLOWER = (0.4, 8.0)


class KernelTiming:
    """The driver's snapshot path with the kernel's timing (module doc)."""

    def __init__(self, fs: FakeKernelFS, intervals: list[tuple[float, float]]) -> None:
        self.fs = fs
        self.lock = anyio.Lock()
        now = anyio.current_time()
        self.intervals = list(intervals)
        self.started = [now] * len(intervals)  # when each count (re)started
        self.restarts = {
            k: AggregationRestart(now, s, a) for k, (s, a) in enumerate(self.intervals)
        }
        for k in range(len(intervals)):
            self._stage(k)

    def _stage(self, k: int) -> None:
        sample, aggregation = self.intervals[k]
        base = f"{attrs_dir(k)}/intervals"
        self.fs.set_file(f"{base}/sample_us", f"{round(sample * 1e6)}\n")
        self.fs.set_file(f"{base}/aggr_us", f"{round(aggregation * 1e6)}\n")

    def boundary_after(self, k: int, t: float) -> float:
        period = self.intervals[k][1] * (1 + DRIFT)
        return self.started[k] + (math.floor((t - self.started[k]) / period) + 1) * period

    async def command(self, k: int, command: str) -> None:
        assert command == "update_schemes_tried_regions", command
        async with self.lock:
            await anyio.sleep_until(self.boundary_after(k, anyio.current_time()))

    def tried_regions(self, k: int, s: int) -> TriedRegions:
        return TriedRegions(k, s, 1 << 20, (TriedRegion(0, 1 << 20, 3, 1),))

    def aggregation_restart(self, k: int) -> AggregationRestart | None:
        return self.restarts.get(k)

    async def commit_intervals(
        self, k: int, intervals: tuple[float, float], *, recorded: bool = True
    ) -> None:
        """New intervals take effect now (the count restarts); ``recorded`` as the
        driver records its own commits (False: a change reactor did not make)."""
        async with self.lock:
            self.intervals[k] = intervals
            self._stage(k)
            self.started[k] = anyio.current_time()
            if recorded:
                self.restarts[k] = AggregationRestart(self.started[k], *intervals)


CONFIG = """
reactor:
  backend: damon
  tick: 1s
  run_dir: {run_dir}
monitors:
  - name: fast
    targets: {{pids: [4242]}}
    sample: 10ms
    aggregation: 100ms
  - name: slow
    ops: paddr
    sample: 250ms
    aggregation: 5s
"""


async def run_loop(
    tmp_path: Path, seconds: float, change_at: float | None = None, recorded: bool = True
) -> tuple[DamonMonitors, dict[str, list[tuple[float, float]]]]:
    """Run the loop ``seconds`` (slow's intervals become 8 s at ``change_at``); returns the
    monitors and, per monitor, (time, age of its newest snapshot) every 10 ms."""
    config = load_config_text(CONFIG.format(run_dir=tmp_path), "timing.yaml")
    fs, bus = FakeKernelFS(allow_damon_writes=True), Bus()
    monitors = DamonMonitors(config, fs, bus, snapshot_every_s=TICK)
    kernel = KernelTiming(fs, [FAST, SLOW])
    monitors.driver = kernel  # type: ignore[assignment]
    ages: dict[str, list[tuple[float, float]]] = {"fast": [], "slow": []}

    async def watch() -> None:
        while True:
            await anyio.sleep(0.01)
            now = anyio.current_time()
            for name, seen in ages.items():
                sample = bus.peek(f"access.{name}")
                if sample is not None:
                    seen.append((now, now - sample.stamp))

    async def change() -> None:
        assert change_at is not None
        await anyio.sleep_until(change_at)
        await kernel.commit_intervals(1, SLOWER, recorded=recorded)

    async with anyio.create_task_group() as tg:
        tg.start_soon(monitors._loop)
        tg.start_soon(watch)
        if change_at is not None:
            tg.start_soon(change)
        await anyio.sleep(seconds)
        tg.cancel_scope.cancel()
    return monitors, ages


def holds(monitors: DamonMonitors, name: str, since: float = -math.inf) -> list[float]:
    return [
        r.returned - r.issued for r in monitors.reads if r.monitor == name and r.issued >= since
    ]


def fast_age_bound(slow_sample: float) -> float:
    """The oldest the fast monitor's snapshot may get, from the timing rules: it is read
    at its first boundary at least a reach (half a margin) after each tick instant, so two
    reads are at most a tick plus one aggregation apart; when it yields to the slow
    monitor it waits past the slow boundary (at most its own sample, plus the slow
    reach, after its planned one) for its next reachable boundary: one more aggregation
    and both reaches. Aggregations run 2 % long (DRIFT); the watcher samples every 10 ms."""
    aggregation = FAST[1] * (1 + DRIFT)
    return (
        TICK * (1 + DRIFT)
        + 2 * aggregation
        + margin_s(FAST[0]) / 2
        + margin_s(slow_sample) / 2
        + FAST[0]
        + slow_sample
        + 0.01
    )


@pytest.mark.anyio
async def test_a_slow_kdamond_no_longer_delays_a_fast_monitors_snapshots(tmp_path: Path) -> None:
    """A 100 ms and a 5 s monitor in one daemon: the fast one's snapshot is never older
    than its derived bound (about 1.5 s; the old loop let it reach 5 s, and policies
    hold at 3 s); the slow one is read once per aggregation; no read holds the lock much
    longer than its margin (plus the drift of the aggregations since its anchor)."""
    monitors, ages = await run_loop(tmp_path, 40.0)
    fast = [age for t, age in ages["fast"] if t > 2.0]
    assert fast and max(fast) <= fast_age_bound(SLOW[0]), max(fast)
    assert max(fast) < 3 * max(FAST[1], TICK)  # a policy on it never holds as stale
    slow_reads = [r for r in monitors.reads if r.monitor == "slow"]
    boundaries = int(40.0 // (SLOW[1] * (1 + DRIFT)))
    assert len(slow_reads) >= boundaries - 1, len(slow_reads)  # every boundary but one
    assert max(holds(monitors, "slow")) <= margin_s(SLOW[0]) + DRIFT * SLOW[1] + 1e-6
    assert max(holds(monitors, "fast")) <= FAST[1] * (1 + DRIFT) + 1e-6  # one aggregation
    fast_reads = [r for r in monitors.reads if r.monitor == "fast"]
    assert len(fast_reads) >= 38  # about once per tick


@pytest.mark.anyio
async def test_a_committed_interval_change_keeps_the_reads_on_the_boundaries(
    tmp_path: Path,
) -> None:
    """The slow monitor's aggregation goes 5 s -> 8 s by a commit at 17.3 s (as a
    monitoring policy does): the driver records the restart, the next read aims at 25.3 s
    and its lock time stays within the margin; the fast monitor stays fresh throughout."""
    monitors, ages = await run_loop(tmp_path, 45.0, change_at=17.3)
    after = [r for r in monitors.reads if r.monitor == "slow" and r.issued > 17.3]
    assert after and after[0].predicted == pytest.approx(17.3 + SLOWER[1] * (1 + DRIFT), abs=0.2)
    assert max(holds(monitors, "slow", since=17.3)) <= margin_s(SLOWER[0]) + 0.2 + 1e-6
    fast = [age for t, age in ages["fast"] if t > 2.0]
    assert max(fast) <= fast_age_bound(SLOWER[0]), max(fast)


@pytest.mark.anyio
async def test_an_unexplained_interval_change_costs_one_blind_read_then_resyncs(
    tmp_path: Path,
) -> None:
    """The same change with no restart on record (the kernel's own tuner, say): after a
    tick's grace one blind read may hold the lock up to the new aggregation (the fast
    monitor's snapshot ages meanwhile: the remaining limit); its return gives the phase,
    and the reads after it are back within their margins."""
    monitors, ages = await run_loop(tmp_path, 60.0, change_at=17.3, recorded=False)
    after = [r for r in monitors.reads if r.monitor == "slow" and r.issued > 17.3]
    blind = [r for r in after if r.predicted is None]
    assert len(blind) == 1, after
    assert blind[0].issued >= 17.3 + TICK - 0.5  # the grace (the loop wakes twice a tick)
    later = [r for r in after if r.issued > blind[0].returned]
    assert len(later) >= 3
    assert max(r.returned - r.issued for r in later) <= margin_s(SLOWER[0]) + 0.2
    settled = [age for t, age in ages["fast"] if t > blind[0].returned + TICK]
    assert max(settled) <= fast_age_bound(SLOWER[0])
