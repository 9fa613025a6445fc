"""Hot bytes in the fast tier over time: reactor's tiering policy against plain DAMOS.

Runs only inside the real-kernel lane's guest (two memory tiers, DAMON with vaddr
migration; on the development host DAMON belongs to the machine and there is one node):
``python -m benchmarks.tiering --out DIR`` (tests/kernel/test_tiering_benchmark_guest.py
runs it with ``DIR`` = the lane's shared run directory ``$REACTOR_LANE_OUT``; the
checkout is read-only in the guest). Writes ``DIR/benchmarks/results/tiering.json`` and
prints one line.

The workload, the same for every run (a fresh child each time): two anonymous private
buffers, each its own VMA between PROT_NONE guard pages, HOT (16 MiB, every page written
every ~10 ms) and COLD (16 MiB, written once, then never touched). Before each run HOT is
moved to the slow node 1 and COLD to the fast node 0 (``move_pages``), so the right
layout is the opposite one. Every 0.5 s the benchmark reads the child's
``/proc/PID/numa_maps`` (pages per node of each buffer) and node 0's used ratio.

- ``reactor`` (``--backend native``, the default) and ``reactor_damon``
  (``--backend damon``; ``--backend native,damon`` runs both): ``reactor serve`` with a
  tiering policy on the child's pid (fast node 0, slow node 1; goal
  ``fast_tier_used_ratio`` at the ratio measured just before the daemon starts; quota
  8..64 MiB per 1 s, tick 1 s). native: its own sampler (soft-dirty, 100 ms / 1 s) and
  ``move_pages`` within the quotas; damon: migrate_hot/migrate_cold schemes on reactor's
  kdamond whose quotas the controllers commit online each tick. Time 0 is the daemon's
  ``started`` event.
- ``damos``: the same two schemes (:func:`reactor.policies.tiering.migrate_schemes`,
  same access patterns: cold = nr_accesses 0 for 2 s, hot = nr_accesses >= 50 %; bytes
  that did not move charged nothing where the kernel has ``fail_charge``, as reactor's) on
  a kdamond of their own with fixed quotas (``--damos-quota-mib`` per 1 s, default 16), no
  controller. Time 0 is the kdamond's start.

DAMON (reactor_damon and damos alike) monitors at ``DAMON_SAMPLE_US`` /
``DAMON_AGGR_US`` (10 ms / 200 ms) with ``DAMON_MIN_REGIONS`` (100)..1000 regions (TCG is
~50x slower than hardware).
Reported per run: the series (seconds, hot bytes on node 0, cold bytes on node 1, node 0's
used ratio as reactor reads it (node0/meminfo MemFree) and with the per-CPU free lists
counted as free (/proc/zoneinfo), see tests/kernel/test_policy_tiering_guest.py), the
time until 90 % of HOT sits on node 0 and 90 % of COLD on node 1, the mean share of HOT
on node 0 over the run, and the bytes the run reports migrated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from benchmarks.sampler_vs_damon import refusal
from reactor.testing.tlb import FLUSH_TLB

__all__ = (
    "CHILD",
    "DAMON_AGGR_US",
    "DAMON_MIN_REGIONS",
    "DAMON_SAMPLE_US",
    "GUARD_BYTES",
    "Workload",
    "fast_ratio",
    "fresh_ratio",
    "main",
    "node_free_fresh",
    "numa_pages",
    "place",
    "reactor_config",
    "start_workload",
)

MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
RESULT_NAME = "tiering.json"
ROOT = Path(__file__).resolve().parents[1]
QUOTA_MIN, QUOTA_MAX = 8 * MIB, 64 * MIB
SAMPLE_S = 0.5
#: DAMON's minimum region count for every DAMON run (reactor's kdamond and plain DAMOS):
#: vaddr starts from the target's three mapped areas cut into this many pieces and never
#: merges regions past (total / min), so the 16 MiB buffers span several regions each from
#: the first aggregation (with the usual 10 a region covered tens of MiB of the child's mmap
#: area).
DAMON_MIN_REGIONS = 100
#: DAMON's sampling and aggregation intervals (µs) for every DAMON run. (Before the
#: child flushed its TLB, DAMON found HOT accessed only in pieces at any intervals:
#: 50 ms / 1 s was no better than 10 ms / 200 ms; see CHILD.)
DAMON_SAMPLE_US, DAMON_AGGR_US = 10_000, 200_000

#: Guard, HOT, guard, COLD, guard in one private anonymous mapping (the guards, PROT_NONE
#: and never populated, split it into VMAs of exactly the two buffers); prints the layout
#: as JSON, then writes one byte of every HOT page every ~10 ms, each time followed by a
#: flush of its TLB (:data:`reactor.testing.tlb.FLUSH_TLB` says why DAMON under qemu TCG
#: needs it). In the lane DAMON saw 0-23 of HOT's 4,096 pages as accessed over 14 s
#: without the flush; with it, 4,051 after 1.3 s, and a migrate_hot scheme (8 MiB/s)
#: moved all of HOT in 2.4 s (10 ms / 200 ms, 2026-11-28). The child runs on node 0's
#: CPUs (argv[4]), so what it allocates after its start (the flush's scratch pages, its
#: heap) comes from the fast node, whichever CPU the scheduler would have picked: a page
#: can then reach node 1 only by being placed or demoted there.
#:
#: Why the guards are :data:`GUARD_BYTES` wide: DAMON never merges regions past its size
#: limit, total monitored bytes / min_nr_regions (a few MiB at :data:`DAMON_MIN_REGIONS`
#: for a Python child's mapped span of a few hundred MiB plus the guards; not measured
#: for this child), and a region may span VMAs. With one-page guards a region
#: could hold the end of one buffer and the start of what lies next to it (the other
#: buffer, the child's own accessed memory): its pages then move with that region's
#: access count, not their own (a CI run left 427 of COLD's 4,096 pages on node 0 for 15 s
#: while everything else had moved). A guard wider than the limit keeps every region to
#: one side of it.
GUARD_BYTES = 16 * MIB
CHILD = (
    r"""
import ctypes, json, mmap, os, sys, time
HOT, COLD, G = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if sys.argv[4]:
    os.sched_setaffinity(0, [int(c) for c in sys.argv[4].split(",")])
size = G + HOT + G + COLD + G
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_NOHUGEPAGE)
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
libc = ctypes.CDLL(None, use_errno=True)
for off in (0, G + HOT, size - G):
    assert libc.mprotect(ctypes.c_void_p(base + off), ctypes.c_size_t(G), 0) == 0
h0, c0 = G, G + HOT + G
P = mmap.PAGESIZE
m[h0:h0 + HOT] = b"\x01" * HOT
m[c0:c0 + COLD] = b"\x02" * COLD
print(json.dumps({"pid": os.getpid(), "hot": [base + h0, base + h0 + HOT],
                  "cold": [base + c0, base + c0 + COLD]}), flush=True)
n, i = HOT // P, 0
"""
    + FLUSH_TLB
    + r"""
while True:
    i = i % 250 + 3
    m[h0:h0 + HOT:P] = bytes([i]) * n
    flush_tlb()
    time.sleep(0.01)
"""
)


@dataclass(frozen=True)
class Workload:
    """The child and its two buffers' ``[start, end)`` addresses."""

    proc: subprocess.Popen[str]
    hot: tuple[int, int]
    cold: tuple[int, int]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """End the child by pid."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_workload(hot_bytes: int, cold_bytes: int) -> Workload:
    """Start the two-buffer child on node 0's CPUs; returns once it printed its layout."""
    cpus = ",".join(map(str, node_cpus(0)))
    argv = [str(hot_bytes), str(cold_bytes), str(GUARD_BYTES), cpus]
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", CHILD, *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return Workload(proc, (info["hot"][0], info["hot"][1]), (info["cold"][0], info["cold"][1]))


def node_cpus(node: int) -> list[int]:
    """The CPUs of ``node`` (empty when the machine has no such node directory)."""
    from reactor.signals.tiers import parse_nodelist

    path = Path(f"/sys/devices/system/node/node{node}/cpulist")
    try:
        return sorted(parse_nodelist(path.read_text(), str(path)))
    except FileNotFoundError:
        return []


def numa_pages(pid: int, starts: dict[str, int]) -> dict[str, dict[int, int]]:
    """Pages per node (``N<node>=`` of numa_maps) of the VMAs starting at ``starts``."""
    want = {v: k for k, v in starts.items()}
    out: dict[str, dict[int, int]] = {k: {} for k in starts}
    for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines():
        words = line.split()
        name = want.get(int(words[0], 16)) if words else None
        if name is None:
            continue
        for word in words[1:]:
            key, _, value = word.partition("=")
            if key[:1] == "N" and key[1:].isdigit():
                out[name][int(key[1:])] = int(value)
    return out


def place(w: Workload) -> None:
    """HOT onto the slow node 1, COLD onto the fast node 0 (move_pages)."""
    from reactor.actuators.migrate import MigrateActuator
    from reactor.kernelfs import RealKernelFS

    actuator = MigrateActuator(RealKernelFS("/"))

    async def go() -> None:
        for (lo, hi), node in ((w.hot, 1), (w.cold, 0)):
            outcome = await actuator.move_pages(w.pid, [(lo, hi - lo)], node, reason="placement")
            if outcome.status != "applied":
                raise RuntimeError(f"placing the workload failed: {outcome}")

    anyio.run(go)


def fast_ratio() -> float:
    """Node 0's used ratio, as reactor's goal reads it."""
    from reactor.kernelfs import RealKernelFS
    from reactor.policies.base import nodes_used_ratio
    from reactor.signals.tiers import TiersPoller

    poller = TiersPoller(RealKernelFS("/"))
    try:
        ratio = nodes_used_ratio(poller.poll(time.monotonic()), (0,))
    finally:
        poller.close()  # it keeps every file open
    if ratio is None:
        raise RuntimeError("node 0 reports no memory")
    return ratio


def node_free_fresh(node: int = 0) -> dict[str, int]:
    """Node ``node``'s memory from /proc/zoneinfo, summed over its zones (bytes):
    ``managed``, ``free`` (nr_free_pages: the buddy allocator's free pages, what
    ``nodeN/meminfo`` MemFree reports), ``pcp`` (pages on the per-CPU free lists: free but
    not counted in nr_free_pages until drained), ``pcp_high`` (the lists' ``high`` sum:
    how far MemFree can lag the truth) and ``threshold`` (vm stats threshold x CPUs: the
    per-CPU counter deltas not yet folded into nr_free_pages)."""
    out = dict.fromkeys(("managed", "free", "pcp", "pcp_high", "threshold"), 0)
    mine = False
    for line in Path("/proc/zoneinfo").read_text().splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "Node":
            mine = words[1].rstrip(",") == str(node)
        elif not mine:
            continue
        elif words[0] == "managed" and len(words) == 2:
            out["managed"] += int(words[1]) * PAGE
        elif words[0] == "nr_free_pages" and len(words) == 2:
            out["free"] += int(words[1]) * PAGE
        elif words[0] == "count:":
            out["pcp"] += int(words[1]) * PAGE
        elif words[0] == "high:":
            out["pcp_high"] += int(words[1]) * PAGE
        elif words[:3] == ["vm", "stats", "threshold:"]:
            out["threshold"] += int(words[3]) * PAGE
    return out


def fresh_ratio(node: int = 0) -> float:
    """Node ``node``'s used ratio counting the per-CPU free lists as free (zoneinfo)."""
    z = node_free_fresh(node)
    return 1.0 - (z["free"] + z["pcp"]) / z["managed"]


def reactor_config(
    tmp: Path, backend: str, pid: int, target: float, *, enabled: bool = True
) -> Path:
    """A tiering policy on ``pid``: fast node 0, slow node 1, the used-ratio goal
    (``enabled: false`` starts the daemon with the policy off, for a later reload).
    ``startup_timeout`` 60 s: the native sampler's probe detection took 14-20 s under TCG,
    past the default 5 + 10 s. ``shutdown_timeout`` 60 s: under TCG a migrating kdamond
    once left a snapshot's command unanswered for 10-11 s at SIGTERM, past the default
    5 s for that write to finish (the daemon then failed its stop and exited 1)."""
    if backend == "native":
        monitor = "probe: soft-dirty\n    sample: 100ms\n    aggregation: 1s"
    else:
        monitor = (
            f"sample: {DAMON_SAMPLE_US // 1000}ms\n"
            f"    aggregation: {DAMON_AGGR_US // 1000}ms\n"
            f"    regions: {{min: {DAMON_MIN_REGIONS}, max: 1000}}"
        )
    path = tmp / f"tiering-{backend}.yaml"
    path.write_text(
        f"""
reactor: {{backend: {backend}, tick: 1s, startup_timeout: 60s, shutdown_timeout: 60s}}
signals:
  psi: {{enabled: false}}
  meminfo: {{enabled: false}}
  fragmentation: {{enabled: false}}
  vmstat: {{period: 1s}}
  tiers: {{period: 1s}}
monitors:
  - name: work
    targets: {{pids: [{pid}]}}
    {monitor}
policies:
  - name: tiers
    kind: tiering
    enabled: {str(enabled).lower()}
    monitor: work
    fast_nodes: [0]
    slow_nodes: [1]
    min_age: 2s
    hot_access: 50%
    goals: [{{metric: fast_tier_used_ratio, target: {target * 100:.2f}%}}]
    quota: {{min: {QUOTA_MIN // MIB} MiB, max: {QUOTA_MAX // MIB} MiB, per: 1s}}
"""
    )
    return path


def _point(w: Workload, t: float) -> list[float]:
    pages = numa_pages(w.pid, {"hot": w.hot[0], "cold": w.cold[0]})
    return [
        round(t, 2),
        pages["hot"].get(0, 0) * PAGE,
        pages["cold"].get(1, 0) * PAGE,
        round(fast_ratio(), 4),
        round(fresh_ratio(), 4),
    ]


def run_reactor(
    w: Workload, backend: str, duration: float, tmp: Path, keep_log: Path | None = None
) -> dict[str, Any]:
    """``reactor serve`` for ``duration`` s; the series from its ``started`` event."""
    target = fast_ratio()
    log = tmp / f"serve-{backend}.jsonl"
    argv = [sys.executable, "-m", "reactor.cli", "serve"]
    argv += [str(reactor_config(tmp, backend, w.pid, target)), "--duration", f"{duration:g}"]
    argv += ["--log-format", "json", "--run-dir", str(tmp / f"run-{backend}")]
    series: list[list[float]] = []
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            t0 = None
            deadline = time.monotonic() + duration + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if t0 is None and '"event": "started"' in log.read_text():
                    t0 = time.monotonic()
                if t0 is not None:
                    series.append(_point(w, time.monotonic() - t0))
                time.sleep(SAMPLE_S if t0 is not None else 0.1)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    if keep_log is not None:
        keep_log.write_text(text)
    if proc.returncode != 0:
        raise RuntimeError(f"reactor serve exited {proc.returncode}: {text[-2000:]}")
    events = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    ticks = [e for e in events if e.get("event") == "controller_tick"]
    return {
        "backend": backend,
        "target_fast_used_ratio": round(target, 4),
        "quota_bytes": {"min": QUOTA_MIN, "max": QUOTA_MAX, "per_s": 1.0},
        "ticks": len(ticks),
        "migrated_bytes": sum(int(t.get("measured_bytes", 0)) for t in ticks),
        "quotas_per_tick": [
            [int(t["controller"]["demote_quota"]), int(t["controller"]["promote_quota"])]
            for t in ticks
        ],
        "series": series,
    }


def _damos_section(pid: int, quota: int, *, fail_charge: bool = False) -> Any:
    from reactor.config import PolicyConfig
    from reactor.config.damon import DamonSection
    from reactor.policies.tiering import TierNodes, migrate_schemes

    policy = PolicyConfig.model_validate(
        {
            "name": "plain",
            "kind": "tiering",
            "monitor": "work",
            "min_age": "2s",
            "hot_access": "50%",
            "goals": [{"metric": "fast_tier_used_ratio", "target": "50%"}],
            "quota": {"max": f"{quota}B", "per": "1s"},
        }
    )
    cold, hot = migrate_schemes(
        policy, TierNodes((0,), (1,), 0, 1), quota, quota, fail_charge=fail_charge
    )
    ctx = {
        "ops": "vaddr",
        "targets": [{"pid": pid}],
        "intervals": {
            "sample_us": DAMON_SAMPLE_US,
            "aggr_us": DAMON_AGGR_US,
            "ops_update_us": 1_000_000,
        },
        "nr_regions": {"min": DAMON_MIN_REGIONS, "max": 1000},
        "schemes": [cold, hot],
    }
    return DamonSection.model_validate({"kdamonds": [{"contexts": [ctx]}]})


async def _damos(w: Workload, quota: int, duration: float, run_dir: str) -> dict[str, Any]:
    from reactor.damon.driver import DamonDriver
    from reactor.kernelfs import RealKernelFS

    driver = DamonDriver(RealKernelFS("/", allow_damon_writes=True), run_dir=run_dir)
    await driver.open()
    series: list[list[float]] = []
    fail_charge = driver.features.has("fail_charge")
    await driver.apply(_damos_section(w.pid, quota, fail_charge=fail_charge))
    try:
        t0 = time.monotonic()
        while (now := time.monotonic() - t0) < duration:
            series.append(_point(w, now))
            await anyio.sleep(SAMPLE_S)
        stats = await driver.update_schemes_stats(0)
    finally:
        await driver.stop_all()
    return {
        "quota_bytes_per_s": quota,
        "fail_charge": fail_charge,
        "migrated_bytes": sum(s.sz_applied_bytes for s in stats),
        "demoted_bytes": stats[0].sz_applied_bytes,
        "promoted_bytes": stats[1].sz_applied_bytes,
        "series": series,
    }


def summarize(run: dict[str, Any], hot_bytes: int, cold_bytes: int) -> dict[str, Any]:
    """Times to 90 % of HOT on node 0 / COLD on node 1, and the mean share of HOT there."""
    series = run["series"]

    def first(col: int, total: int) -> float | None:
        return next((p[0] for p in series if p[col] >= 0.9 * total), None)

    shares = [p[1] / hot_bytes for p in series]
    last = series[-1] if series else [0.0, 0, 0, 0.0]
    return {
        "hot_fast_90_s": first(1, hot_bytes),
        "cold_slow_90_s": first(2, cold_bytes),
        "hot_fast_mean_share": round(sum(shares) / len(shares), 4) if shares else None,
        "final_hot_fast_bytes": last[1],
        "final_cold_slow_bytes": last[2],
        "final_fast_used_ratio": last[3],
    }


#: Run names for reactor's backends.
RUN_BACKENDS = {"reactor": "native", "reactor_damon": "damon"}


def run_names(runs: str, backends: str) -> list[str]:
    """The runs in order: ``--runs`` with ``reactor`` standing for one run per
    ``--backend`` (``reactor`` = native, ``reactor_damon`` = damon)."""
    out: list[str] = []
    for name in runs.split(","):
        if name == "reactor":
            out += [n for b in backends.split(",") for n, v in RUN_BACKENDS.items() if v == b]
        else:
            out.append(name)
    return out


def run_all(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every run, each on a freshly started and placed workload."""
    hot, cold = args.hot_mib * MIB, args.cold_mib * MIB
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="reactor-tiering-") as tmp:
        for name in run_names(args.runs, args.backend):
            w = start_workload(hot, cold)
            try:
                place(w)
                if name in RUN_BACKENDS:
                    backend = RUN_BACKENDS[name]
                    keep = out / f"tiering_serve_{backend}.jsonl"
                    run = run_reactor(w, backend, args.duration, Path(tmp), keep)
                elif name == "damos":
                    quota = args.damos_quota_mib * MIB
                    # reactor's damon run leaves its kdamond (off) behind; with the same
                    # ownership record the plain run takes it over instead of refusing it
                    # as a foreign one
                    run_dir = str(Path(tmp) / "run-damon")
                    run = anyio.run(_damos, w, quota, args.duration, run_dir, backend="asyncio")
                else:
                    raise SystemExit(
                        f"tiering: unknown run {name!r} ({', '.join([*RUN_BACKENDS, 'damos'])})"
                    )
            finally:
                w.stop()
            runs[name] = {**summarize(run, hot, cold), **run}
    return {
        "kernel": os.uname().release,
        "workload": {"hot_bytes": hot, "cold_bytes": cold, "start": "hot on node 1, cold on 0"},
        "duration_s": args.duration,
        "sample_s": SAMPLE_S,
        "series_columns": [
            "s",
            "hot_fast_bytes",
            "cold_slow_bytes",
            "fast_used_ratio",
            "fast_used_ratio_with_pcp",
        ],
        "runs": runs,
    }


def _show(name: str, run: dict[str, Any]) -> str:
    def s(v: float | None) -> str:
        return "never" if v is None else f"{v:.1f}s"

    return (
        f"{name}: hot on fast {run['final_hot_fast_bytes'] / MIB:.1f} MiB (90% at "
        f"{s(run['hot_fast_90_s'])}, mean share {run['hot_fast_mean_share']}), cold on slow "
        f"{run['final_cold_slow_bytes'] / MIB:.1f} MiB (90% at {s(run['cold_slow_90_s'])}), "
        f"migrated {run['migrated_bytes'] / MIB:.1f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    """Run both configurations, write the JSON under ``--out`` and print one line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiering")
    parser.add_argument("--out", default=str(ROOT))
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--hot-mib", type=int, default=16)
    parser.add_argument("--cold-mib", type=int, default=16)
    parser.add_argument("--damos-quota-mib", type=int, default=16)
    parser.add_argument(
        "--backend",
        "--reactor-backend",
        default="native",
        help="reactor's backend(s), comma-separated: native, damon (run names reactor, "
        "reactor_damon)",
    )
    parser.add_argument("--runs", default="reactor,damos", help="comma-separated")
    args = parser.parse_args(argv)
    bad = set(args.backend.split(",")) - set(RUN_BACKENDS.values())
    if bad:
        parser.error(f"--backend: unknown {', '.join(sorted(bad))} (native, damon)")
    why = refusal()
    if why is not None:
        print(f"tiering: refusing to run: {why}", file=sys.stderr)
        return 2
    out = Path(args.out)
    result = run_all(args, out)
    path = out / "benchmarks" / "results" / RESULT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    parts = [_show(name, run) for name, run in result["runs"].items()]
    print(
        f"tiering ({args.hot_mib} MiB hot from node 1, {args.cold_mib} MiB cold from node 0, "
        f"{args.duration:g} s): " + "; ".join(parts) + f" -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
