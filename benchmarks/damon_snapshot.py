"""Reading a DAMON snapshot: one directory descriptor for every region file, against a
path walk per file (the previous design).

The DAMON backend reads ``tried_regions`` every tick: four files per region (``start``,
``end``, ``nr_accesses``, ``age``; five from 6.14 with ``sz_filter_passed``), up to
``max_nr_regions`` (1000 by default) regions, each file 13 directories deep
(``/sys/kernel/mm/damon/admin/kdamonds/K/contexts/0/schemes/S/tried_regions/R/start``).
On the development host's sysfs an open-read-close by full path through
``RealKernelFS.read_text`` cost about 14 µs of CPU at depth 5, against about 7 µs opened
relative to one directory descriptor (``RealKernelFS.read_texts``); a 1000-region
snapshot a second was then several per cent of a core on its own.

Runs only inside the real-kernel lane's guest (it starts a kdamond):
``python -m benchmarks.damon_snapshot --out DIR`` (tests/kernel/test_damon_snapshot_guest.py
runs it with ``DIR`` = the lane's shared run directory). A paddr kdamond with
``--regions`` .. 2 x ``--regions`` regions and a ``stat`` scheme on every region is
started, one ``update_schemes_tried_regions`` fills the directory, and both readers read
the same directory ``--rounds`` times each, alternating, on this thread's CPU clock, with
a third reader: the policies' snapshot (``extras=False``, four files a region). The
result carries each reader's CPU per snapshot and per file and its ratio to the path per
file (below 1 is cheaper); the guest runs under TCG, so absolute times there are far above a
real machine's and only the ratio carries over. Then ``--rounds`` quota commits each way,
alternating: staged whole (by a driver that staged nothing: the previous design) and
staged as changed files only (the driver that staged the kdamond), the process's CPU per
``commit``. Writes
``DIR/benchmarks/results/damon_snapshot.json`` and prints one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from benchmarks.sampler_vs_damon import refusal
from reactor.config.damon import DamonSection, Kdamond
from reactor.damon import DamonDriver
from reactor.damon.paths import numbered
from reactor.damon.snapshot import TriedRegion, read_int, read_tried_regions
from reactor.kernelfs import KernelFS, RealKernelFS

__all__ = ("compare", "main", "read_per_path")

ROOT = Path(__file__).resolve().parents[1]
RESULT_NAME = "damon_snapshot.json"
KDAMONDS = "/sys/kernel/mm/damon/admin/kdamonds"
#: light intervals for TCG: the kdamond checks one page per region per sample
SAMPLE_US, AGGR_US = 100_000, 1_000_000


def read_per_path(fs: KernelFS, k: int, s: int) -> tuple[TriedRegion, ...]:
    """The previous design: each region file read by its full path (``read_int``)."""
    base = f"{KDAMONDS}/{k}/contexts/0/schemes/{s}/tried_regions"
    numbers = numbered(fs, base)
    if not numbers:
        return ()
    first = f"{base}/{numbers[0]}"
    pattern = fs.exists(first + "/nr_accesses")
    passed = fs.exists(first + "/sz_filter_passed")
    probes = numbered(fs, first + "/probes") if fs.exists(first + "/probes") else []
    out = []
    for r in numbers:
        path = f"{base}/{r}"
        out.append(
            TriedRegion(
                start=read_int(fs, path + "/start"),
                end=read_int(fs, path + "/end"),
                nr_accesses=read_int(fs, path + "/nr_accesses") if pattern else 0,
                age_aggrs=read_int(fs, path + "/age") if pattern else 0,
                sz_filter_passed_bytes=read_int(fs, path + "/sz_filter_passed") if passed else 0,
                probe_hits=tuple(read_int(fs, f"{path}/probes/{p}/hits") for p in probes),
            )
        )
    return tuple(out)


def _files_per_region(fs: KernelFS, k: int, s: int) -> int:
    base = f"{KDAMONDS}/{k}/contexts/0/schemes/{s}/tried_regions"
    numbers = numbered(fs, base)
    if not numbers:
        return 0
    first = f"{base}/{numbers[0]}"
    probes = numbered(fs, first + "/probes") if fs.exists(first + "/probes") else []
    names = ("nr_accesses", "age", "sz_filter_passed")
    return 2 + sum(fs.exists(f"{first}/{n}") for n in names) + len(probes)


def compare(fs: KernelFS, k: int, s: int, rounds: int) -> dict[str, Any]:
    """The readers on the same, already filled ``tried_regions``, alternating: CPU
    seconds per snapshot (the minimum and the median of ``rounds``), per file read, and
    the ratio of each to the previous design's median. ``policy_snapshot`` is what the
    DAMON monitors read each tick (``extras=False``: no ``sz_filter_passed`` or probe
    hits)."""
    readers: dict[str, Callable[[], tuple[TriedRegion, ...]]] = {
        "path_per_file": lambda: read_per_path(fs, k, s),
        "one_descriptor": lambda: read_tried_regions(fs, k, s).regions,
        "policy_snapshot": lambda: read_tried_regions(fs, k, s, extras=False).regions,
    }
    full = readers["one_descriptor"]()
    policy = readers["policy_snapshot"]()
    same = full == readers["path_per_file"]() and [
        (r.start, r.end, r.nr_accesses, r.age_aggrs) for r in full
    ] == [(r.start, r.end, r.nr_accesses, r.age_aggrs) for r in policy]
    times: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(rounds):
        for name, read in readers.items():
            t0 = time.thread_time()
            read()
            times[name].append(time.thread_time() - t0)
    regions = len(full)
    per_region = _files_per_region(fs, k, s)
    files = {
        "path_per_file": regions * per_region,
        "one_descriptor": regions * per_region,
        "policy_snapshot": regions * 4,
    }
    out: dict[str, dict[str, float]] = {}
    for name, v in times.items():
        ordered = sorted(v)
        median = ordered[len(ordered) // 2]
        out[name] = {
            "files": files[name],
            "min_s": round(ordered[0], 6),
            "median_s": round(median, 6),
            "per_file_us": round(median / max(files[name], 1) * 1e6, 3),
        }
    base = max(out["path_per_file"]["median_s"], 1e-9)
    return {
        "regions": regions,
        "files": files["one_descriptor"],
        "same_regions": same,
        "rounds": rounds,
        "readers": out,
        "ratio_median": round(out["one_descriptor"]["median_s"] / base, 4),
        "policy_ratio_median": round(out["policy_snapshot"]["median_s"] / base, 4),
    }


async def _run(regions: int, rounds: int) -> dict[str, Any]:
    fs = RealKernelFS("/", allow_damon_writes=True)
    with tempfile.TemporaryDirectory(prefix="reactor-snapbench-") as run_dir:
        driver = DamonDriver(fs, run_dir=run_dir)
        await driver.open()
        section = DamonSection.model_validate(
            {
                "kdamonds": [
                    {
                        "contexts": [
                            {
                                "ops": "paddr",
                                "targets": [],
                                "intervals": {"sample_us": SAMPLE_US, "aggr_us": AGGR_US},
                                "nr_regions": {"min": regions, "max": 2 * regions},
                                "schemes": [{"action": "stat"}],
                            }
                        ]
                    }
                ]
            }
        )
        await driver.apply(section)
        try:
            (tried,) = await driver.update_schemes_tried_regions(0, (0,))
            result = await anyio.to_thread.run_sync(compare, fs, 0, 0, rounds)
            result["kernel_regions"] = len(tried.regions)
            result["commits"] = await _commits(driver, fs, run_dir, rounds)
        finally:
            await driver.stop_all()
    return result


async def _commits(driver: DamonDriver, fs: KernelFS, run_dir: str, rounds: int) -> dict[str, Any]:
    """A quota commit staged whole (a driver that staged nothing, as before the change)
    against one staged by the driver that knows what the files hold (only the changed
    files): this process's CPU per ``commit`` (staging in the worker thread, the command),
    alternating, each with a new quota."""
    kd = await driver.staged(0)
    times: dict[str, list[float]] = {"whole": [], "changed_files": []}
    for i in range(rounds):
        fresh = DamonDriver(fs, run_dir=run_dir)
        await fresh.open()
        for name, who, mib in (("whole", fresh, 8 + i), ("changed_files", driver, 64 + i)):
            new = _with_quota(kd, mib << 20)
            t0 = time.process_time()
            await who.commit(0, new)
            times[name].append(time.process_time() - t0)
    med = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
    return {
        "whole_median_s": round(med["whole"], 6),
        "changed_files_median_s": round(med["changed_files"], 6),
        "ratio_median": round(med["changed_files"] / max(med["whole"], 1e-9), 4),
    }


def _with_quota(kd: Kdamond, sz: int) -> Kdamond:
    first, *rest = kd.contexts[0].schemes
    quotas = first.quotas.model_copy(update={"sz_bytes": sz})
    return kd.with_schemes(0, (first.model_copy(update={"quotas": quotas}), *rest))


def main(argv: list[str] | None = None) -> int:
    """Start the kdamond, compare the readers, write the JSON under ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.damon_snapshot")
    parser.add_argument("--out", default=str(ROOT))
    parser.add_argument("--regions", type=int, default=1000, help="min_nr_regions")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.regions < 3 or args.rounds < 1:
        parser.error(
            f"expected --regions >= 3 and --rounds >= 1, got {args.regions}, {args.rounds}"
        )
    why = refusal()
    if why is not None:
        print(f"damon_snapshot: refusing to run: {why}", file=sys.stderr)
        return 2
    result = anyio.run(_run, args.regions, args.rounds)
    path = Path(args.out) / "benchmarks" / "results" / RESULT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    r, c = result["readers"], result["commits"]

    def show(name: str) -> str:
        return f"{r[name]['median_s'] * 1e3:.1f} ms ({r[name]['per_file_us']:.1f} µs/file)"

    print(
        f"damon_snapshot: {result['regions']} regions, {result['files']} files: one "
        f"descriptor {show('one_descriptor')} against a path per file {show('path_per_file')}, "
        f"x{result['ratio_median']:.3f} side by side; the policies' snapshot (4 files a "
        f"region) {show('policy_snapshot')}, x{result['policy_ratio_median']:.3f} (CPU, "
        f"median of {result['rounds']}; same regions: {result['same_regions']}); a quota "
        f"commit staged whole {c['whole_median_s'] * 1e3:.1f} ms against the changed files "
        f"{c['changed_files_median_s'] * 1e3:.1f} ms, x{c['ratio_median']:.3f} -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
