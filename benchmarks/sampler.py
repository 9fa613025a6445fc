"""Native sampler benchmark: accuracy and overhead per probe and RSS size, on this machine.

Run ``python -m benchmarks.sampler`` (``--sizes 64M,256M`` for a shorter run). Writes
``benchmarks/results/sampler.json`` and prints one summary line.

For each probe this machine has and each buffer size (64 MiB to 4 GiB), a workload from
``reactor.testing.workload`` (25 % hot, scattered pages, touched every 20 ms) is sampled
for ten aggregation intervals (sampling 100 ms, aggregation 1 s; ``--aggregations``;
the interval grows to three of the workload's touch rounds where those are slower, so
that every hot page is touched in every interval, as the truth says: 4 GiB):

* ``referenced``: plain anonymous mapping, reads; accuracy per mapping in bytes
  (``referenced_bytes`` against the truth's hot bytes in that mapping);
* ``referenced-chunks``: the same, the workload splitting its buffer into chunks
  (64 KiB, or larger so that there are at most 8192 chunks); accuracy per chunk;
* ``uffd-wp``: writes, the workload registers userfaultfd WP-async; accuracy per page
  (pages seen written in the last aggregation against the hot pages).

Precision = correctly reported hot bytes / reported hot bytes, recall = correctly reported
hot bytes / true hot bytes. Overhead: the probe's kernel CPU (system time of the sampling
thread: clear_refs, smaps, PAGEMAP_SCAN page walks) and the sampler's user CPU (parsing
plus the region engine), per sample and per sampled GiB; ``user_over_kernel`` is the
ratio the issue bounds at 0.25. The kernel side counts both the sampler thread's system
time and the target's extra system time while sampled (uffd-wp's write-protect faults
are the probe's kernel work too, paid in the target). ``target_slowdown`` is the
workload's mean time per touch round while sampled over the same without sampling,
minus one.

The sampler's side is measured on its thread's CPU clock, section by section
(:class:`reactor.sampler.probes.ProbeCost`): user = parsing and masks, kernel = the
system calls (with the few Python calls that issue them: 0.3 of 8.7 ms per 256 MiB
chunked sample in a tight loop). getrusage's user/system split is not used: the kernel
charges each 4 ms tick wholly to the mode it interrupts, a sampler that wakes every
100 ms meets the tick at the same phase each time, and that split swung the 256 MiB
chunked ratio between 0.08 and 0.42 from run to run. The target's extra system time
(uffd-wp's faults) still comes from its rusage over seconds, where ticks average out.

A separate entry measures the region engine alone at 100,000 regions (one sampling
interval: observe; and one aggregation), against the kernel cost of the probes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from reactor.kernelfs import RealKernelFS
from reactor.sampler import NativeSampler, SamplerSettings, Snapshot, TargetSpec, detect_probes
from reactor.sampler.engine import AccessedRanges, EngineSettings, RegionEngine
from reactor.testing.workload import Truth, WorkloadSpec, parse_size, start_workload

__all__ = ("main",)

GIB = 2**30
RESULTS = Path(__file__).resolve().parent / "results" / "sampler.json"
SIZES = ("64M", "256M", "1G", "4G")
SAMPLE_S = 0.1
AGGR_S = 1.0
TARGET_RECALL = 0.95
TARGET_PRECISION = 0.90
TARGET_USER_OVER_KERNEL = 0.25


def _per_mapping_accuracy(snap: Snapshot, truth: Truth) -> tuple[float, float]:
    r = snap.regions
    reported = r["referenced_bytes"].astype(np.int64)
    want = np.array(
        [truth.hot_bytes_in(int(s), int(e)) for s, e in zip(r["start"], r["end"], strict=True)]
    )
    inside = (r["end"].astype(np.int64) > truth.base) & (
        r["start"].astype(np.int64) < truth.base + truth.size_bytes
    )
    tp = np.minimum(reported, want)[inside].sum()
    return float(tp / max(reported[inside].sum(), 1)), float(tp / truth.hot_bytes)


def _per_page_accuracy(snap: Snapshot, truth: Truth) -> tuple[float, float]:
    assert snap.pages is not None
    seen = snap.pages.counts > 0
    tp = int((seen & truth.hot).sum())
    return tp / max(int(seen.sum()), 1), tp / max(int(truth.hot.sum()), 1)


def _interval(round_s: float) -> float:
    """The sampling interval for a workload whose touch round takes ``round_s``: 100 ms,
    or three rounds if that is longer (the truth, every hot page touched in every
    interval, must hold: 262,144 scattered pages of a 4 GiB buffer take longer than
    100 ms to touch), in whole 10 ms."""
    return max(SAMPLE_S, math.ceil(3 * round_s / 0.01) * 0.01)


async def _sample(
    target: TargetSpec, probes: Any, seconds: float, sample_s: float
) -> tuple[NativeSampler, list[Snapshot]]:
    got: list[Snapshot] = []
    settings = SamplerSettings(
        sample_interval_s=sample_s, aggr_interval_s=sample_s * AGGR_S / SAMPLE_S, seed=0
    )
    sampler = NativeSampler(RealKernelFS(), [target], settings, probes=probes, sink=got.append)
    with anyio.move_on_after(seconds):
        await sampler.run()
    return sampler, got


def _round_time(before: dict[str, Any], after: dict[str, Any]) -> float:
    rounds = after["rounds"] - before["rounds"]
    return (after["touch_s"] - before["touch_s"]) / max(rounds, 1)


def run_case(probe: str, size: int, probes: Any, aggregations: int) -> dict[str, Any]:
    """One probe on one buffer size; returns the JSON entry."""
    chunk = max(64 * 1024, size // 8192)
    spec = WorkloadSpec(
        size_bytes=size,
        hot_fraction=0.25,
        pattern="scattered",
        mode="write" if probe == "uffd-wp" else "read",
        chunk_bytes=chunk,
        split_vmas=probe == "referenced-chunks",
        uffd_wp=probe == "uffd-wp",
    )
    with start_workload(spec, timeout_s=120) as w:
        time.sleep(0.5)
        s0 = w.stats()
        time.sleep(1.5)
        s1 = w.stats()
        ranges = w.mappings if probe != "referenced" else ((w.base, w.base + size),)
        target = TargetSpec(
            name="w", pids=(w.pid,), ranges=ranges, probe=probe.removesuffix("-chunks")
        )
        sample_s = _interval(_round_time(s0, s1))
        first_try: dict[str, float] | None = None
        r1 = s1  # the workload's stats when the measured run started
        while True:
            aggr_s = sample_s * AGGR_S / SAMPLE_S
            run = anyio.run(_sample, target, probes, aggr_s * aggregations + 0.3, sample_s)
            s2 = w.stats()
            sampled_round = _round_time(r1, s2)
            slower = _interval(sampled_round)
            # the probe slows the target (clear_refs makes every touch set its accessed
            # bit again): if its touch rounds no longer fit the interval, the truth does
            # not hold; measure again, once, at three of the rounds seen while sampled
            if first_try is not None or slower <= sample_s:
                break
            first_try = {"sample_interval_s": sample_s, "round_s_sampled": sampled_round}
            sample_s, r1 = slower, s2
        sampler, snaps = run
        truth = w.truth()
    monitor = sampler_stats(sampler)
    snap = snaps[-1]
    if probe == "uffd-wp":
        precision, recall = _per_page_accuracy(snap, truth)
    else:
        precision, recall = _per_mapping_accuracy(snap, truth)
    samples = max(monitor.samples, 1)
    # The probe's kernel work happens on both sides: page walks in the sampler's thread,
    # and (uffd-wp) write-protect faults in the target: its extra system time.
    base_rate = (s1["sys_s"] - s0["sys_s"]) / (s1["elapsed_s"] - s0["elapsed_s"])
    run_rate = (s2["sys_s"] - r1["sys_s"]) / (s2["elapsed_s"] - r1["elapsed_s"])
    target_kernel = max(0.0, run_rate - base_rate) * sample_s
    sampler_kernel = monitor.probe.kernel_s / samples
    kernel = sampler_kernel + target_kernel
    user = monitor.user_s / samples
    gib = size / GIB
    return {
        "probe": probe,
        "rss_bytes": size,
        "granularity_bytes": snap.granularity_bytes if probe != "referenced" else size,
        "sample_interval_s": round(sample_s, 3),
        "first_try": first_try,
        "regions": len(snap.regions),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "samples": monitor.samples,
        "kernel_s_per_sample": round(kernel, 5),
        "sampler_kernel_s_per_sample": round(sampler_kernel, 5),
        "target_kernel_s_per_sample": round(target_kernel, 5),
        "user_s_per_sample": round(user, 5),
        "engine_s_per_sample": round(monitor.engine_s / samples, 5),
        "cpu_s_per_gib_sample": round((kernel + user) / gib, 5),
        "user_over_kernel": round(user / kernel, 4) if kernel > 0 else None,
        "target_slowdown": round(_round_time(r1, s2) / max(_round_time(s0, s1), 1e-9) - 1, 4),
        "met": bool(
            recall >= TARGET_RECALL
            and precision >= TARGET_PRECISION
            and kernel > 0
            and user / kernel <= TARGET_USER_OVER_KERNEL
        ),
    }


def sampler_stats(sampler: NativeSampler) -> Any:
    """The (only) monitor's stats, kept after it was closed."""
    return next(iter(sampler.stats.values()))


def engine_at_100k() -> dict[str, Any]:
    """The region engine alone: one sampling interval and one aggregation at 100k regions."""
    n = 100_000
    base = 0x7F00_0000_0000
    es = EngineSettings(min_nr_regions=n, max_nr_regions=2 * n, samples_per_aggr=10)
    engine = RegionEngine([(base, base + n * 16 * 4096)], es, rng=np.random.default_rng(0))
    pages = np.sort(np.random.default_rng(1).choice(n * 16, n * 4, replace=False))
    hot = AccessedRanges(base + pages * 4096, base + (pages + 1) * 4096)
    t0 = time.process_time()
    for _ in range(10):
        engine.observe(hot)
    observe = (time.process_time() - t0) / 10
    t0 = time.process_time()
    engine.aggregate()
    aggregate = time.process_time() - t0
    return {
        "regions": n,
        "monitored_bytes": n * 16 * 4096,
        "observe_s": round(observe, 5),
        "aggregate_s": round(aggregate, 5),
        "per_sample_s": round(observe + aggregate / es.samples_per_aggr, 5),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every case and write the results; exit 0 (the JSON says what was met)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.sampler")
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--aggregations", type=int, default=10)
    ns = p.parse_args(argv)
    probes = detect_probes(RealKernelFS())
    available = {i.name for i in probes if i.available}
    cases = []
    for size_text in ns.sizes.split(","):
        size = parse_size(size_text)
        for probe in ("referenced", "referenced-chunks", "uffd-wp"):
            if probe.removesuffix("-chunks") in available:
                cases.append(run_case(probe, size, probes, ns.aggregations))
                print(json.dumps(cases[-1]), file=sys.stderr)
    engine = engine_at_100k()
    result = {
        "probes": [
            {
                "name": i.name,
                "available": i.available,
                "granularity_bytes": i.granularity_bytes,
                "sees": i.sees,
                "detail": i.detail,
            }
            for i in probes
        ],
        "settings": {"sample_interval_s": SAMPLE_S, "aggr_interval_s": AGGR_S, "hot": 0.25},
        "targets": {
            "recall": TARGET_RECALL,
            "precision": TARGET_PRECISION,
            "user_over_kernel": TARGET_USER_OVER_KERNEL,
        },
        "cases": cases,
        "engine_100k": engine,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    met = sum(c["met"] for c in cases)
    worst_ratio = max((c["user_over_kernel"] or 0) for c in cases) if cases else 0
    print(
        f"sampler: {met}/{len(cases)} cases met recall>={TARGET_RECALL} precision>="
        f"{TARGET_PRECISION} user/kernel<={TARGET_USER_OVER_KERNEL}; "
        f"min recall {min(c['recall'] for c in cases):.3f}, "
        f"min precision {min(c['precision'] for c in cases):.3f}, "
        f"worst user/kernel {worst_ratio:.2f}; engine {engine['per_sample_s'] * 1e3:.1f} ms/sample "
        f"at 100k regions -> {RESULTS.name}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
