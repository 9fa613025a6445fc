"""Guest only: the tiering policy in `reactor serve` moves a hot set up and a cold set down.

A Python child maps two anonymous private buffers, each its own VMA between PROT_NONE
guard pages: HOT (16 MiB, every page written every ~10 ms) and COLD (16 MiB, written once
at start, then never touched). The test places HOT on the slow node 1 and COLD on the
fast node 0 with :class:`~reactor.actuators.migrate.MigrateActuator`, then runs
``reactor serve`` (a subprocess, config and run dir under /tmp) with a tiering policy on
the child's pid: fast node 0, slow node 1, goal ``fast_tier_used_ratio`` at the ratio
measured just before the daemon starts, quota 8..64 MiB per 1 s, tick 1 s. Page counts
per node come from /proc/<pid>/numa_maps (``N0=``/``N1=`` of each buffer's VMA).

Bounds, derived before running:

* both quotas are clamped to [quota.min, quota.max] = [8, 64] MiB per second whichever
  way the fast tier sits from its target (above: demotion rises, promotion falls to its
  floor; below: the reverse), so every tick may move at least 8 MiB down and 8 MiB up
  (``tick_bytes`` = quota x min(dt, 3 ticks) / per) and at most 64 x 3 = 192 MiB each;
  a move issues whole pages, at most one page over the budget per span.
* native backend (soft-dirty probe, 100 ms / 1 s): HOT is written within every 100 ms
  sample, so its regions reach nr_accesses 10 of 10 >= hot_access 50 % from the first
  aggregation; COLD reads 0 and is cold once its age passes min_age 2 s. Starting from
  10 regions, the region engine splits every aggregation, so within a few aggregations
  regions lie inside one buffer. HOT (16 MiB) then needs <= 2 ticks of the 8 MiB floor,
  COLD (16 MiB, plus the interpreter's own cold anonymous pages, a few MiB, competing
  for the same budget) <= 4 ticks. A 20 s run leaves more than twice that; at the end at
  least 90 % of HOT must sit on node 0 and 90 % of COLD on node 1, and the
  ``controller_tick`` events must measure pages moved in both directions.
* fast used ratio: also read afresh from node0/meminfo by the test every 0.5 s (reported,
  not asserted: the workload moves +16 MiB up and 16+ MiB down, about 1-3 % of node 0).

The damon backend (vaddr migrate_hot/migrate_cold committed online) is not run here: on
this kernel its start is refused as a foreign kdamond, because the DAMON monitor loop's
``update_schemes_tried_regions`` holds the kernel's damon_sysfs_lock in a worker thread
while the policy's ownership check reads ``state``/``pid`` on the event loop, and those
reads return EBUSY (mm/damon/sysfs.c uses mutex_trylock there); see the issue 7 report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.tiering import (
    QUOTA_MAX,
    Workload,
    fast_ratio,
    numa_pages,
    place,
    reactor_config,
    start_workload,
)

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
HOT = 16 * MIB
COLD = 16 * MIB
DURATION = 20

Sample = tuple[float, dict[str, dict[int, int]], float]


def record(line: str) -> None:
    """Print a measured line and keep it in the lane's run directory (tiering_guest.txt)."""
    print(line)
    out = os.environ.get("REACTOR_LANE_OUT")
    if out:
        with Path(out, "tiering_guest.txt").open("a") as f:
            f.write(line + "\n")


@pytest.fixture
def child() -> Iterator[Workload]:
    """The two-buffer workload (benchmarks.tiering), ended by pid afterwards."""
    w = start_workload(HOT, COLD)
    try:
        yield w
    finally:
        w.stop()


def serve(tmp: Path, w: Workload, target: float) -> tuple[list[dict[str, Any]], list[Sample]]:
    """Run the daemon for DURATION s; its log events, and numa_maps with node 0's used
    ratio (read afresh) every 0.5 s."""
    log = tmp / "serve-native.jsonl"
    argv = [sys.executable, "-m", "reactor.cli", "serve"]
    argv += [str(reactor_config(tmp, "native", w.pid, target)), "--duration", str(DURATION)]
    argv += ["--log-format", "json", "--run-dir", str(tmp / "run")]
    starts = {"hot": w.hot[0], "cold": w.cold[0]}
    series: list[Sample] = []
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None and time.monotonic() - t0 < DURATION + 60:
                series.append((time.monotonic() - t0, numa_pages(w.pid, starts), fast_ratio()))
                time.sleep(0.5)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    lane = os.environ.get("REACTOR_LANE_OUT")
    if lane:
        Path(lane, "tiering_serve_native_test.jsonl").write_text(text)
    assert proc.returncode == 0, text[-3000:]
    events = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    return events, series


def test_tiering_promotes_the_hot_set_and_demotes_the_cold_set(
    child: Workload, tmp_path: Path
) -> None:
    """HOT placed on node 1 ends on node 0 and COLD placed on node 0 ends on node 1, with
    controller_tick events measuring the pages moved each way within the quota bounds."""
    starts = {"hot": child.hot[0], "cold": child.cold[0]}
    place(child)
    before = numa_pages(child.pid, starts)
    hot_pages, cold_pages = HOT // PAGE, COLD // PAGE
    assert before["hot"].get(1, 0) >= 0.99 * hot_pages, before
    assert before["cold"].get(0, 0) >= 0.99 * cold_pages, before
    target = fast_ratio()
    events, series = serve(tmp_path, child, target)
    after = numa_pages(child.pid, starts)
    ticks = [e for e in events if e.get("event") == "controller_tick"]
    moved = [
        (round(t.get("demoted_bytes", 0) / PAGE), round(t.get("promoted_bytes", 0) / PAGE))
        for t in ticks
    ]
    ratios = [t["inputs"].get("fast_tier_used_ratio") for t in ticks]
    quotas = [
        (
            round(t["controller"]["demote_quota"] / MIB, 1),
            round(t["controller"]["promote_quota"] / MIB, 1),
        )
        for t in ticks
    ]
    timeline = [
        (
            round(s, 1),
            p["hot"].get(0, 0),
            p["hot"].get(1, 0),
            p["cold"].get(0, 0),
            p["cold"].get(1, 0),
            round(r, 4),
        )
        for s, p, r in series
    ]
    record(
        f"tiering native: target {target:.4f}; hot N0/N1 {before['hot']} -> {after['hot']}, "
        f"cold {before['cold']} -> {after['cold']}; ticks {len(ticks)}; pages moved per tick "
        f"(demoted, promoted) {moved}; fast used ratio per tick (reactor's tiers view) "
        f"{[None if r is None else round(r, 4) for r in ratios]}; quotas (demote, promote) "
        f"MiB {quotas}; (s, hot N0, hot N1, cold N0, cold N1, node0 used ratio) {timeline}"
    )
    assert len(ticks) >= DURATION // 2
    assert after["hot"].get(0, 0) >= 0.9 * hot_pages, after
    assert after["cold"].get(1, 0) >= 0.9 * cold_pages, after
    assert sum(t["measured_bytes"] for t in ticks) > 0
    assert any(d > 0 for d, _ in moved) and any(p > 0 for _, p in moved), moved
    for t in ticks:
        for knob, what in (("demote", "demoted"), ("promote", "promoted")):
            budget = t.get(f"{knob}_budget_bytes")
            if budget is not None:  # absent on a held tick
                assert budget <= 3 * QUOTA_MAX, t
                assert t.get(f"{what}_bytes", 0) <= budget + 64 * PAGE, t
