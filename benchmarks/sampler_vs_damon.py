"""Native sampler against the kernel's DAMON vaddr, on one workload at the same time.

Runs only inside the real-kernel lane's guest (a kernel with DAMON_VADDR and soft-dirty;
on the development host DAMON belongs to the machine itself and must not be written):
``python -m benchmarks.sampler_vs_damon --out DIR`` (tests/kernel/test_sampler_vs_damon_guest.py
runs it with ``DIR`` = the lane's shared run directory, because the checkout is read-only
in the guest). Writes ``DIR/benchmarks/results/sampler_vs_damon.json`` and prints one line.

The workload (``reactor.testing.workload``): 128 MiB anonymous, a contiguous 25 % hot run
in the middle, *written* every 20 ms (soft-dirty sees writes only, DAMON sees both).

- native: the sampler's ``soft-dirty`` probe (clear_refs 4 + pagemap bit 55: per page,
  exact for writes; it does not clear the accessed bits DAMON reads, unlike the
  ``referenced`` probe's clear_refs 1, so the two do not disturb each other), sampling
  100 ms, aggregation 1 s. Its hot set is reported twice: per page (``native_pages``: pages
  written in the last aggregation) and per region of its DAMON-like engine
  (``native_regions``: regions with nr_accesses > 0), the latter DAMON's own granularity.
- damon: one vaddr kdamond on the same pid through :class:`reactor.damon.driver.DamonDriver`,
  sampling 10 ms, aggregation 200 ms (TCG is ~50x slower than hardware), 10..1000
  regions, one ``stat`` scheme matching every region, whose tried regions are the
  snapshot; hot = regions with nr_accesses > 0.

Both are read after ``--settle`` seconds (default 8: 40 DAMON aggregations, enough for
the adaptive regions to split down to the hot run's edges). DAMON is read again, up to
``3 x --settle`` more, until its oldest region has lived that many aggregations
(``age_aggrs``: a region never accessed since the start ages by one per aggregation,
and splits keep the age): under TCG a busy host starves the guest's kdamond, and one CI
run on a loaded host read DAMON after too few aggregations to split (16 regions, none
hot, where quiet runs had ~50). Scores are computed per 4 KiB
page inside the workload buffer: hot bytes each found, precision and recall against the
workload's truth, and the overlap of the two hot sets (Jaccard: shared hot bytes over
the union).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt

__all__ = ("main", "refusal", "score")

MIB = 2**20
RESULT_NAME = "sampler_vs_damon.json"
#: DAMON's aggregation interval here (TCG is ~50x slower than hardware)
AGGR_S = 0.2


def refusal() -> str | None:
    """Why this machine must not run the benchmark (it writes DAMON sysfs), or None."""
    try:
        params = dict(t.partition("=")[::2] for t in Path("/proc/cmdline").read_text().split())
    except OSError as exc:
        return f"cannot read /proc/cmdline: {exc}"
    if params.get("reactor_lane") != "1":
        return "not the real-kernel lane's guest (/proc/cmdline has no reactor_lane=1)"
    host = params.get("reactor_lane_host_release")
    if not host or host == os.uname().release:
        return "the running kernel is the host's"
    return None


def _mask(ranges: list[tuple[int, int]], base: int, page: int, n: int) -> npt.NDArray[np.bool_]:
    """Pages of the buffer ``[base, base + n*page)`` covered by any of ``ranges``."""
    mask = np.zeros(n, dtype=bool)
    for start, end in ranges:
        lo = max(0, (start - base) // page)
        hi = min(n, -(-(end - base) // page))
        if hi > lo:
            mask[lo:hi] = True
    return mask


def score(
    found: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_], page: int
) -> dict[str, float | int]:
    """Hot bytes found, precision and recall of a page mask against the truth."""
    tp = int((found & truth).sum())
    return {
        "hot_bytes": int(found.sum()) * page,
        "precision": round(tp / max(int(found.sum()), 1), 4),
        "recall": round(tp / max(int(truth.sum()), 1), 4),
    }


def jaccard(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Shared hot pages over the union (1.0 when both are empty)."""
    union = int((a | b).sum())
    return round(int((a & b).sum()) / union, 4) if union else 1.0


def _damon_section(pid: int) -> Any:
    from reactor.config.damon import DamonSection

    every = {"min": "min", "max": "max"}
    ctx = {
        "ops": "vaddr",
        "targets": [{"pid": pid}],
        "intervals": {
            "sample_us": 10_000,
            "aggr_us": round(AGGR_S * 1e6),
            "ops_update_us": 1_000_000,
        },
        "nr_regions": {"min": 10, "max": 1000},
        "schemes": [
            {
                "action": "stat",
                "access_pattern": {"sz_bytes": every, "nr_accesses": every, "age": every},
            }
        ],
    }
    return DamonSection.model_validate({"kdamonds": [{"contexts": [ctx]}]})


async def _run(settle_s: float, size_bytes: int) -> dict[str, Any]:
    from reactor.damon.driver import DamonDriver
    from reactor.kernelfs import RealKernelFS
    from reactor.sampler import NativeSampler, SamplerSettings, Snapshot, TargetSpec, detect_probes
    from reactor.testing.workload import WorkloadSpec, start_workload

    spec = WorkloadSpec(size_bytes=size_bytes, pattern="contiguous", mode="write")
    handle = start_workload(spec)
    try:
        fs = RealKernelFS("/")
        probes = detect_probes(fs)
        target = TargetSpec(
            name="w", pids=(handle.pid,), ranges=handle.mappings, probe="soft-dirty"
        )
        settings = SamplerSettings(sample_interval_s=0.1, aggr_interval_s=1.0, seed=0)
        snaps: list[Snapshot] = []
        sampler = NativeSampler(fs, [target], settings, probes=probes, sink=snaps.append)
        with tempfile.TemporaryDirectory(prefix="reactor-bench-") as run_dir:
            driver = DamonDriver(RealKernelFS("/", allow_damon_writes=True), run_dir=run_dir)
            await driver.open()
            await driver.apply(_damon_section(handle.pid))
            try:
                started = time.monotonic()
                with anyio.move_on_after(settle_s):
                    await sampler.run()
                tried = await driver.update_schemes_tried_regions(0)
                elapsed = time.monotonic() - started
                want = round(settle_s / AGGR_S)
                waited = time.monotonic()
                while _oldest(tried[0].regions) < want and time.monotonic() - waited < 3 * settle_s:
                    await anyio.sleep(1.0)
                    tried = await driver.update_schemes_tried_regions(0)
                waited = time.monotonic() - waited
            finally:
                await driver.stop_all()
        truth = handle.truth()
    finally:
        handle.stop()
    out = _report(spec, truth, snaps, tried[0].regions, elapsed)
    out["damon"]["oldest_region_aggregations"] = _oldest(tried[0].regions)
    out["damon"]["extra_wait_s"] = round(waited, 2)
    return out


def _oldest(regions: Any) -> int:
    """The age (aggregations) of the oldest tried region: DAMON's progress so far."""
    return max((int(t.age_aggrs) for t in regions), default=0)


def _report(
    spec: Any, truth: Any, snaps: list[Any], regions: Any, elapsed: float
) -> dict[str, Any]:
    page, base, n = truth.page_size, truth.base, int(truth.hot.size)
    last = snaps[-1]
    assert last.pages is not None, "soft-dirty gave no per-page counts"
    native_pages = last.pages.counts > 0
    r = last.regions
    native_regions = _mask(
        [
            (int(s), int(e))
            for s, e, a in zip(r["start"], r["end"], r["nr_accesses"], strict=True)
            if a > 0
        ],
        base,
        page,
        n,
    )
    damon_hot = [(t.start, t.end) for t in regions if t.nr_accesses > 0]
    damon = _mask(damon_hot, base, page, n)
    inside = [t for t in regions if t.end > base and t.start < base + n * page]
    return {
        "workload": {
            "size_bytes": spec.size_bytes,
            "pattern": spec.pattern,
            "mode": spec.mode,
            "hot_bytes": int(truth.hot.sum()) * page,
        },
        "settle_s": round(elapsed, 2),
        "kernel": os.uname().release,
        "native_pages": score(native_pages, truth.hot, page),
        "native_regions": {**score(native_regions, truth.hot, page), "regions": len(r)},
        "damon": {
            **score(damon, truth.hot, page),
            "regions_in_buffer": len(inside),
            "regions_total": len(regions),
            "max_nr_accesses": max((t.nr_accesses for t in regions), default=0),
        },
        "jaccard_native_pages_vs_damon": jaccard(native_pages, damon),
        "jaccard_native_regions_vs_damon": jaccard(native_regions, damon),
        "native_snapshots": len(snaps),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the comparison, write the JSON under ``--out`` and print one summary line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sampler_vs_damon")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--settle", type=float, default=8.0, help="seconds before reading")
    parser.add_argument("--size-mib", type=int, default=128)
    args = parser.parse_args(argv)
    why = refusal()
    if why is not None:
        print(f"sampler_vs_damon: refusing to run: {why}", file=sys.stderr)
        return 2
    result = anyio.run(_run, args.settle, args.size_mib * MIB, backend="asyncio")
    path = Path(args.out) / "benchmarks" / "results" / RESULT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    nat, dam = result["native_pages"], result["damon"]
    print(
        f"sampler_vs_damon: hot {result['workload']['hot_bytes'] // MIB} MiB; native(soft-dirty) "
        f"{nat['hot_bytes'] / MIB:.1f} MiB p={nat['precision']} r={nat['recall']}; damon "
        f"{dam['hot_bytes'] / MIB:.1f} MiB p={dam['precision']} r={dam['recall']} "
        f"({dam['regions_in_buffer']} regions); jaccard {result['jaccard_native_pages_vs_damon']} "
        f"(native regions {result['jaccard_native_regions_vs_damon']}) -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
