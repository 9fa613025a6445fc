"""Cost of the signal sources on this machine: µs per read, CPU share of a 1 Hz loop.

Run ``python -m benchmarks.signals`` (or ``make bench``). Writes
``benchmarks/results/signals.json`` and prints one summary line. Read-only: it reads
/proc, /sys and this process's own cgroup, and creates nothing.

Method:

* **µs per read**: each poller's ``poll`` (read through its kept descriptors *and*
  parse into the published value) is called ``--reads`` times after a warm-up; the median
  and p99 of the per-call wall time (``perf_counter_ns``) are reported.
* **CPU share, scaled**: every poller is polled once per iteration, ``--fast-iterations``
  times back to back; CPU time (``time.process_time``: user + system, so the kernel's
  cost of generating the files counts too) per iteration is what one 1 Hz tick costs, and
  dividing by 1 s gives the share of one core. The fragmentation source's zoneinfo
  re-read every 60 polls is amortised because the run spans many of them.
* **CPU share, real**: a true 1 Hz loop (absolute deadlines) over ``--real-seconds``
  (default 20; 0 skips it), CPU time over wall time; this includes the loop's own sleeping
  and wake-up overhead.

Target (issue 4): under 0.3 % of one core for a 1 Hz loop over all sources.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reactor.kernelfs import RealKernelFS
from reactor.signals.base import Poller
from reactor.signals.cgroup import CgroupPoller
from reactor.signals.fragmentation import FragmentationPoller
from reactor.signals.meminfo import MeminfoPoller
from reactor.signals.psi import PsiPoller
from reactor.signals.tiers import TiersPoller
from reactor.signals.vmstat import VmstatPoller

__all__ = ("build_pollers", "main")

RESULTS = Path(__file__).resolve().parent / "results" / "signals.json"
TARGET_PCT = 0.3


def _own_memory_cgroup() -> tuple[str, str | None] | None:
    """This process's memory cgroup directory and, on a hybrid host, the v2 PSI directory."""
    v1 = v2 = None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1 = f"/sys/fs/cgroup/memory{path}".rstrip("/")
        elif controllers == "":
            v2 = path
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if v2 is not None and Path(f"{root}{v2}/memory.current").exists():
            return f"{root}{v2}".rstrip("/"), None
    if v1 is not None and Path(f"{v1}/memory.usage_in_bytes").exists():
        pressure = f"/sys/fs/cgroup/unified{v2 or ''}".rstrip("/")
        return v1, pressure if Path(f"{pressure}/memory.pressure").exists() else None
    return None


def build_pollers(fs: RealKernelFS) -> list[Poller]:
    """Every signal source this machine offers, as the runtime would build them."""
    pollers: list[Poller] = [PsiPoller(fs, r) for r in ("memory", "io", "cpu")]
    pollers += [VmstatPoller(fs), MeminfoPoller(fs), TiersPoller(fs), FragmentationPoller(fs)]
    cgroup = _own_memory_cgroup()
    if cgroup is not None:
        pollers.append(CgroupPoller(fs, cgroup[0], pressure_dir=cgroup[1], topic="cgroup.self"))
    return pollers


def per_read(poller: Poller, reads: int) -> dict[str, float]:
    """Median and p99 wall time of one ``poll`` in µs."""
    for i in range(10):
        poller.poll(float(i))
    samples = []
    for i in range(reads):
        t0 = time.perf_counter_ns()
        poller.poll(10.0 + i)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return {
        "us_per_read_median": round(statistics.median(samples), 2),
        "us_per_read_p99": round(samples[int(0.99 * (len(samples) - 1))], 2),
    }


def scaled_loop(pollers: Sequence[Poller], iterations: int) -> dict[str, Any]:
    """CPU seconds per tick of a loop over all pollers, run back to back."""
    now = 1e6
    cpu0 = time.process_time()
    for _ in range(iterations):
        now += 1.0
        for p in pollers:
            p.poll(now)
    cpu_per_tick = (time.process_time() - cpu0) / iterations
    return {
        "method": "back-to-back iterations, process_time per iteration / 1 s",
        "iterations": iterations,
        "cpu_us_per_tick": round(cpu_per_tick * 1e6, 1),
        "share_of_one_core_pct": round(cpu_per_tick * 100, 4),
    }


def real_loop(pollers: Sequence[Poller], seconds: float) -> dict[str, Any]:
    """CPU over wall time of a true 1 Hz loop on absolute deadlines."""
    start = deadline = time.monotonic()
    cpu0 = time.process_time()
    ticks = 0
    while deadline - start < seconds:
        for p in pollers:
            p.poll(time.monotonic())
        ticks += 1
        deadline += 1.0
        time.sleep(max(0.0, deadline - time.monotonic()))
    wall = time.monotonic() - start
    cpu = time.process_time() - cpu0
    return {
        "method": "1 Hz loop on absolute deadlines, process_time / wall time",
        "ticks": ticks,
        "wall_s": round(wall, 2),
        "cpu_ms": round(cpu * 1e3, 2),
        "share_of_one_core_pct": round(cpu / wall * 100, 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, write the JSON, print one line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.signals")
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--fast-iterations", type=int, default=600)
    parser.add_argument("--real-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    fs = RealKernelFS("/")
    pollers = build_pollers(fs)
    sources = {p.topic: per_read(p, args.reads) for p in pollers}
    scaled = scaled_loop(pollers, args.fast_iterations)
    real = real_loop(pollers, args.real_seconds) if args.real_seconds > 0 else None
    worst = max(scaled["share_of_one_core_pct"], real["share_of_one_core_pct"] if real else 0.0)
    result = {
        "machine": {"kernel": os.uname().release, "cpus": os.cpu_count()},
        "sources": sources,
        "loop_scaled": scaled,
        "loop_real": real,
        "target_pct": TARGET_PCT,
        "target_met": worst < TARGET_PCT,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    costs = ", ".join(f"{t} {v['us_per_read_median']:.0f}" for t, v in sources.items())
    real_text = f", real {real['share_of_one_core_pct']:.3f}%" if real else ""
    print(
        f"signals: µs/read {costs}; 1 Hz loop over {len(pollers)} sources: "
        f"{scaled['share_of_one_core_pct']:.3f}% of one core scaled{real_text} "
        f"(target < {TARGET_PCT}%: {'met' if result['target_met'] else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
