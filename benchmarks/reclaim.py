"""Proactive reclaim under a pressure goal: uncontrolled DAMOS vs ``tuner: reactor`` vs
``tuner: kernel``, end to end with ``reactor serve`` on the real kernel (issue 7).

Runs only inside the real-kernel lane's guest (DAMON, zram swap and cgroup v2 are the
guest's own; on the development host DAMON belongs to the machine):
``python -m benchmarks.reclaim --out DIR`` (tests/kernel/test_reclaim_benchmark_guest.py
runs it with ``DIR`` = the lane's shared run directory ``$REACTOR_LANE_OUT``). Writes
``DIR/benchmarks/results/reclaim.json`` and prints one line with the runs side by side.

The workload, the same for every run (a fresh child each time, in a fresh cgroup v2
``/sys/fs/cgroup/reactor-reclaim-<pid>-<run>``, removed afterwards): one anonymous
private mapping, COLD (192 MiB, every byte 0x02, written once in 1 MiB pieces, never
touched again) followed by HOT (16 MiB, one byte of every page written every ~10 ms).
The child times each write round of HOT (a round that refaults pages from zram is
slow) and appends per-0.5 s statistics to a file the benchmark reads.

The cgroup gets ``memory.max`` = COLD + HOT + 96 MiB: a container limit that does not
bind while nothing is reclaimed. That is deliberate: with a binding limit the kernel's
own memcg reclaim would save the memory (and stall the workload) whatever the
controller did, and the runs would measure memcg reclaim. Here every stall comes from
the proactive reclaim itself, which is what a pressure goal has to keep in check.

Every run is ``reactor serve CONFIG --log-format json --record FILE`` on the damon
backend with the same kdamond in the ``damon:`` section: vaddr on the child, 10 ms /
200 ms, 10..1000 regions, one ``pageout`` scheme whose access pattern matches every
region (any ``nr_accesses``, any age) with quota weights that rank the coldest first
(``nr_accesses_permil`` = ``age_permil`` = 1000): the quota alone decides how deep
reclaim cuts, cold regions first. A quota above what is cold (COLD plus the
interpreter's idle pages) reaches HOT, whose pages then refault from zram: memory PSI
``some``. The config also has the monitor the policy names (a second, coarse kdamond on
the child: 50 ms / 1 s, 10..100 regions, the snapshot ``stat`` scheme), in every run.

- ``uncontrolled``: no policy; the scheme's quota is fixed at ``--fixed-quota-mib``
  (512 MiB) per 500 ms: aggressive, no goal.
- ``reactor``: a reclaim policy ``tuner: reactor``, ``scheme: 0/0/0``, goal
  ``memory_psi_some`` <= ``--goal`` (0.5 %), quota 4 MiB .. 512 MiB per 500 ms; reactor's
  controller commits ``sz_bytes`` online each 1 s tick.
- ``kernel``: the same policy with ``tuner: kernel``: reactor writes the
  ``some_mem_psi_us`` goal (0.5 % x 500 ms = 2500 us) once, the kernel tunes the
  effective quota (cap 512 MiB) from the system's memory PSI, reactor reads it back.

The goal is the system's memory PSI (the only PSI metric DAMOS quota goals have; in the
guest the child is the only process under memory pressure). Measured from outside the
daemon every 0.5 s: the cgroup's ``memory.current``, ``memory.swap.current``,
``memory.stat`` anon, ``memory.pressure`` and ``/proc/pressure/memory`` some totals
(stall share per interval), zram's ``mem_used_total``, and the child's touch rounds.
Time 0 is the daemon's ``started`` event (samples from its launch carry negative times:
its kdamonds start just before). Reported per run: bytes saved (``memory.current`` at
the launch minus the mean of the last three samples; also swap growth and zram's
growth), the time to 80 % of that saving, seconds with the stall share above the goal
and its peak (system and cgroup), the child's touch-round times, and the quotas per
tick from the recording. What the policy says it moved, summed over its ticks:
``measured_bytes`` (what left the child's RAM, at most the scheme's ``sz_tried``
growth), ``requested_bytes`` (``sz_tried`` growth), ``applied_bytes`` (``sz_applied``
growth: whole regions on vaddr), ``left_bytes`` by kind (swap, file, shmem); beside it
``swap_event_bytes``, the pages the kernel gave a swap entry over the run
(``/proc/vmstat`` :data:`SWAP_EVENTS`), which bounds the swap that left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.sampler_vs_damon import refusal as lane_refusal
from reactor.config.damon import FAILURES_UNCHARGED
from reactor.signals.vmstat import parse_vmstat
from reactor.testing.tlb import FLUSH_TLB

__all__ = ("CHILD", "main", "refusal", "run_all")

MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
RESULT_NAME = "reclaim.json"
ROOT = Path(__file__).resolve().parents[1]
CGROUP_ROOT = Path("/sys/fs/cgroup")
KDAMONDS = Path("/sys/kernel/mm/damon/admin/kdamonds")
ZRAM_MM_STAT = Path("/sys/block/zram0/mm_stat")
LRU_GEN = Path("/sys/kernel/mm/lru_gen/enabled")
SAMPLE_S = 0.5
QUOTA_MIN = 4 * MIB
PER_MS = 500
RUNS = ("uncontrolled", "reactor", "kernel")

#: COLD then HOT in one private anonymous mapping; prints its pid as JSON once filled,
#: then writes one byte of every HOT page every ~10 ms and appends, every ~0.5 s,
#: ``monotonic rounds touch_seconds worst_round_seconds`` to the stats file. After each
#: round it flushes its TLB (:data:`reactor.testing.tlb.FLUSH_TLB`), outside the timed
#: write: under qemu TCG DAMON otherwise does not see HOT accessed at all
#: (benchmarks.tiering.CHILD has the measurement), so HOT would rank as cold as COLD for
#: the pageout scheme.
CHILD = (
    r"""
import json, mmap, os, sys, time
COLD, HOT, STATS = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
P = mmap.PAGESIZE
m = mmap.mmap(-1, COLD + HOT, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_NOHUGEPAGE)
piece = b"\x02" * (1 << 20)
for off in range(0, COLD, len(piece)):
    m[off:off + len(piece)] = piece[: COLD - off]
del piece
h0 = COLD
for off in range(0, HOT, 1 << 20):
    m[h0 + off:h0 + min(HOT, off + (1 << 20))] = b"\x01" * min(1 << 20, HOT - off)
out = open(STATS, "a", buffering=1)
print(json.dumps({"pid": os.getpid()}), flush=True)
n, i = HOT // P, 0
"""
    + FLUSH_TLB
    + r"""
rounds, spent, worst, last = 0, 0.0, 0.0, time.monotonic()
while True:
    i = i % 250 + 3
    t = time.monotonic()
    m[h0:h0 + HOT:P] = bytes([i]) * n
    d = time.monotonic() - t
    rounds, spent, worst = rounds + 1, spent + d, max(worst, d)
    if t - last >= 0.5:
        out.write(f"{t:.3f} {rounds} {spent:.6f} {worst:.6f}\n")
        rounds, spent, worst, last = 0, 0.0, 0.0, t
    flush_tlb()
    time.sleep(0.01)
"""
)


def refusal() -> str | None:
    """Why this machine must not run the benchmark, or None (the guest, with swap)."""
    why = lane_refusal()
    if why is not None:
        return why
    try:
        swaps = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError as exc:
        return f"cannot read /proc/swaps: {exc}"
    if not swaps:
        return "no swap is on (the lane's guest set-up turns zram swap on)"
    if not (CGROUP_ROOT / "cgroup.subtree_control").exists():
        return "no cgroup v2 at /sys/fs/cgroup"
    return None


def _write(path: Path, value: object) -> None:
    """One write(2), so the kernel's errno surfaces."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _kdamonds_off() -> None:
    """No kdamond left running, and none left configured (guest only)."""
    nr = KDAMONDS / "nr_kdamonds"
    if nr.read_text().strip() == "0":
        return
    for entry in sorted(KDAMONDS.iterdir()):
        if entry.name.isdigit() and (entry / "state").read_text().strip() != "off":
            with contextlib.suppress(OSError):
                _write(entry / "state", "off")
    _write(nr, 0)


@dataclass
class Workload:
    """The child, its cgroup and its stats file."""

    proc: subprocess.Popen[str]
    cgroup: Path
    stats: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """End the child by pid, then remove its cgroup."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        for _ in range(50):
            try:
                self.cgroup.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)  # the cgroup empties a moment after the child is reaped


def start_workload(name: str, cold: int, hot: int, tmp: Path) -> Workload:
    """A fresh cgroup with ``memory.max`` set, and the child started inside it."""
    cgroup = CGROUP_ROOT / f"reactor-reclaim-{os.getpid()}-{name}"
    cgroup.mkdir()
    _write(cgroup / "memory.max", cold + hot + 96 * MIB)
    procs = str(cgroup / "cgroup.procs")
    stats = tmp / f"touch-{name}.txt"

    def enter() -> None:  # in the child, before exec: the cgroup owns all its memory
        _write(Path(procs), os.getpid())

    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", CHILD, str(cold), str(hot), str(stats)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=enter,  # noqa: PLW1509 - a single write(2), no locks taken
    )
    w = Workload(proc, cgroup, stats)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the workload exited {proc.wait()} before it was ready")
        json.loads(line)
    except BaseException:
        w.stop()
        raise
    return w


#: /proc/vmstat counters of pages given a swap entry: written to swap, found zero-filled
#: (not written, since 6.12), or swapped in (still in the swap cache, so a pageout needs
#: no write). A page that leaves a process for swap is counted by one of them.
SWAP_EVENTS = ("pswpout", "swpout_zero", "pswpin")


def _swap_events() -> int:
    """The sum of :data:`SWAP_EVENTS` in ``/proc/vmstat`` (absent counters count 0)."""
    stat = parse_vmstat(Path("/proc/vmstat").read_text(), "/proc/vmstat")
    return sum(stat.get(name, 0) for name in SWAP_EVENTS)


def _psi_some_us(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("some "):
            return int(line.rsplit("total=", 1)[1])
    raise RuntimeError(f"{path}: no 'some' line")


def _stat(cgroup: Path, key: str) -> int:
    for line in (cgroup / "memory.stat").read_text().splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    return 0


def _zram_used() -> int:
    try:
        return int(ZRAM_MM_STAT.read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 0


def sample(cgroup: Path) -> dict[str, float]:
    """One outside reading: the cgroup's memory and pressure, the system's pressure."""
    return {
        "mono": time.monotonic(),
        "current": int((cgroup / "memory.current").read_text()),
        "swap": int((cgroup / "memory.swap.current").read_text()),
        "anon": _stat(cgroup, "anon"),
        "cg_some_us": _psi_some_us(cgroup / "memory.pressure"),
        "sys_some_us": _psi_some_us(Path("/proc/pressure/memory")),
        "zram_used": _zram_used(),
    }


def _scheme(sz_bytes: int) -> dict[str, Any]:
    return {
        "action": "pageout",
        "access_pattern": {
            "sz_bytes": {"min": 4096, "max": "max"},
            "nr_accesses": {"min": 0, "max": "max"},
            "age": {"min": 0, "max": "max"},
        },
        "quotas": {
            "sz_bytes": sz_bytes,
            "reset_interval_ms": PER_MS,
            "weights": {"sz_permil": 0, "nr_accesses_permil": 1000, "age_permil": 1000},
            # A region over a hole between mappings is never accessed, so it ranks with
            # the coldest, and MADV_PAGEOUT on it fails (ENOMEM): charged in full, such
            # regions took a small quota's whole window in one lane run (reactor: 115-248
            # MiB tried a tick, nothing applied, nothing saved). Failed bytes are charged
            # nothing (7.2's fail_charge; applied bytes as before), so every tuner's
            # quota reaches the memory it can page out.
            **FAILURES_UNCHARGED,
        },
    }


def config(name: str, pid: int, cgroup: Path, goal: float, quota_max: int) -> dict[str, Any]:
    """The run's ``reactor serve`` config (as data; written out as JSON, which is YAML)."""
    doc: dict[str, Any] = {
        "reactor": {"backend": "damon", "tick": "1s"},
        "signals": {
            "psi": {"period": "1s", "resources": ["memory"], "cgroup": str(cgroup)},
            "meminfo": {"period": "1s"},
            "fragmentation": {"enabled": False},
            "tiers": {"enabled": False},
            "vmstat": {"period": "1s"},
        },
        "monitors": [
            {
                "name": "work",
                "targets": {"pids": [pid]},
                "sample": "50ms",
                "aggregation": "1s",
                "regions": {"min": 10, "max": 100},
            }
        ],
        "damon": {
            "kdamonds": [
                {
                    "contexts": [
                        {
                            "ops": "vaddr",
                            "targets": [{"pid": pid}],
                            "intervals": {
                                "sample_us": 10_000,
                                "aggr_us": 200_000,
                                "ops_update_us": 1_000_000,
                            },
                            "nr_regions": {"min": 10, "max": 1000},
                            "schemes": [
                                _scheme(quota_max if name == "uncontrolled" else QUOTA_MIN)
                            ],
                        }
                    ]
                }
            ]
        },
    }
    if name != "uncontrolled":
        doc["policies"] = [
            {
                "name": "reclaim",
                "kind": "reclaim",
                "monitor": "work",
                "tuner": name,
                "scheme": "0/0/0",
                "goals": [{"metric": "memory_psi_some", "target": f"{goal * 100:g}%"}],
                "quota": {
                    "min": f"{QUOTA_MIN}B",
                    "max": f"{quota_max}B",
                    "per": f"{PER_MS}ms",
                },
            }
        ]
    return doc


def _kernel_goals() -> list[dict[str, str]]:
    """The quota goals on the section's kdamond (index 1: after the monitor's), as the
    kernel shows them."""
    goals_dir = KDAMONDS / "1" / "contexts" / "0" / "schemes" / "0" / "quotas" / "goals"
    out = []
    with contextlib.suppress(OSError, ValueError):
        for i in range(int((goals_dir / "nr_goals").read_text())):
            g = goals_dir / str(i)
            out.append(
                {
                    "target_metric": (g / "target_metric").read_text().strip(),
                    "target_value": (g / "target_value").read_text().strip(),
                }
            )
    return out


def _touch(path: Path, t0: float) -> list[list[float]]:
    """The child's rows: (s, rounds, mean round ms, worst round ms)."""
    rows = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 4:
                continue
            t, rounds, spent, worst = float(parts[0]), int(parts[1]), float(parts[2]), parts[3]
            mean = 1000 * spent / rounds if rounds else 0.0
            rows.append([round(t - t0, 2), rounds, round(mean, 3), round(1000 * float(worst), 3)])
    return rows


def serve(name: str, w: Workload, args: argparse.Namespace, tmp: Path, out: Path) -> dict[str, Any]:
    """``reactor serve`` for ``--duration`` s with outside samples every 0.5 s."""
    quota_max = args.quota_max_mib * MIB
    cfg = tmp / f"reclaim-{name}.yaml"
    cfg.write_text(json.dumps(config(name, w.pid, w.cgroup, args.goal, quota_max), indent=1))
    log, rec = tmp / f"serve-{name}.jsonl", tmp / f"record-{name}.jsonl"
    argv = [sys.executable, "-m", "reactor.cli", "serve", str(cfg)]
    argv += ["--duration", f"{args.duration:g}", "--log-format", "json"]
    argv += ["--record", str(rec), "--run-dir", str(tmp / f"run-{name}")]
    base = sample(w.cgroup)
    swap_events = _swap_events()
    samples: list[dict[str, float]] = []
    goals: list[dict[str, str]] = []
    t0: float | None = None
    with log.open("w") as logf:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + args.duration + 150
            while proc.poll() is None and time.monotonic() < deadline:
                samples.append(sample(w.cgroup))
                if t0 is None and '"event": "started"' in log.read_text():
                    t0 = time.monotonic()
                if name == "kernel" and t0 is not None and not goals:
                    goals = _kernel_goals()
                time.sleep(SAMPLE_S)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    swap_events = _swap_events() - swap_events
    text = log.read_text()
    (out / f"reclaim_serve_{name}.jsonl").write_text(text)
    if proc.returncode != 0:
        raise RuntimeError(f"reactor serve ({name}) exited {proc.returncode}: {text[-3000:]}")
    if t0 is None:
        raise RuntimeError(f"reactor serve ({name}) logged no 'started': {text[-3000:]}")
    events = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    ticks = [e for e in events if e.get("event") == "controller_tick"]
    from reactor.api.record import read_recording

    records = [r for r in read_recording(rec) if r["type"] == "tick"]
    quotas = []
    for r in records:
        for p in r.get("policies") or ():
            if p.get("output") is not None:
                quotas.append([round(r["stamp"], 2), int(p["output"])])
    run = summarize(base, samples, t0, args.goal)
    run.update(
        {
            "ticks": len(ticks),
            "record_ticks": len(records),
            "quota_fixed_bytes": quota_max if name == "uncontrolled" else None,
            "quotas": quotas,
            "measured_bytes": sum(int(t.get("measured_bytes", 0)) for t in ticks),
            "requested_bytes": sum(int(t.get("requested_bytes", 0)) for t in ticks),
            "applied_bytes": sum(int(t.get("applied_bytes", 0)) for t in ticks),
            "left_bytes": {
                kind: sum(int((t.get("left") or {}).get(kind, 0)) for t in ticks)
                for kind in ("swap", "file", "shmem")
            },
            "swap_event_bytes": swap_events * PAGE,
            "kernel_goals": goals or None,
            "touch": _touch(w.stats, t0),
        }
    )
    run["touch_summary"] = _touch_summary(run["touch"])
    return run


def summarize(
    base: dict[str, float], samples: list[dict[str, float]], t0: float, goal: float
) -> dict[str, Any]:
    """Saving, its timing, and the stall shares against the goal."""
    series = []
    prev = base
    above = {"sys": 0.0, "cg": 0.0}
    peak = {"sys": 0.0, "cg": 0.0}
    stall = {"sys": 0.0, "cg": 0.0}
    span = 0.0
    for s in samples:
        dt = s["mono"] - prev["mono"]
        shares = {}
        for k in ("sys", "cg"):
            d = s[f"{k}_some_us"] - prev[f"{k}_some_us"]
            shares[k] = d / (dt * 1e6) if dt > 0 else 0.0
            stall[k] += d / 1e6
            peak[k] = max(peak[k], shares[k])
            if shares[k] > goal:
                above[k] += dt
        span += dt
        prev = s
        series.append(
            [
                round(s["mono"] - t0, 2),
                int(base["current"] - s["current"]),
                int(s["swap"] - base["swap"]),
                int(s["anon"]),
                round(shares["sys"], 5),
                round(shares["cg"], 5),
                int(s["zram_used"] - base["zram_used"]),
            ]
        )
    tail = [p[1] for p in series[-3:]]
    saved = int(sum(tail) / len(tail)) if tail else 0
    t80 = next((p[0] for p in series if saved > 0 and p[1] >= 0.8 * saved), None)
    last = series[-1] if series else [0.0, 0, 0, 0, 0.0, 0.0, 0]
    return {
        "base_current_bytes": int(base["current"]),
        "saved_bytes": saved,
        "max_saved_bytes": max((p[1] for p in series), default=0),
        "saved_80_s": t80,
        "swap_growth_bytes": last[2],
        "zram_growth_bytes": last[6],
        "psi_above_goal_s": round(above["sys"], 2),
        "psi_peak_share": round(peak["sys"], 5),
        "psi_mean_share": round(stall["sys"] / span, 5) if span else None,
        "cgroup_psi_above_goal_s": round(above["cg"], 2),
        "cgroup_psi_peak_share": round(peak["cg"], 5),
        "cgroup_psi_mean_share": round(stall["cg"] / span, 5) if span else None,
        "series": series,
    }


def _touch_summary(rows: list[list[float]]) -> dict[str, Any]:
    after = [r for r in rows if r[0] >= 0]
    rounds = sum(int(r[1]) for r in after)
    mean = sum(r[1] * r[2] for r in after) / rounds if rounds else None
    return {
        "rounds": rounds,
        "mean_round_ms": None if mean is None else round(mean, 3),
        "worst_round_ms": max((r[3] for r in after), default=None),
    }


@contextlib.contextmanager
def lru_gen(mode: str) -> Iterator[str | None]:
    """MGLRU off for the runs (``off``), put back afterwards; ``keep`` leaves it.

    With MGLRU on (Debian's default) a page DAMOS paged out and the workload faults
    back from zram is not a memstall: PSI stays at 0 however much of the hot set
    thrashes (seen in the guest). With the classic LRU, MADV_PAGEOUT of an active page
    marks it workingset and its refault is a memstall, which is what a PSI goal sees.
    """
    old = LRU_GEN.read_text().strip() if LRU_GEN.exists() else None
    if mode == "off" and old is not None and old != "0x0000":
        _write(LRU_GEN, 0)
    try:
        yield old
    finally:
        if mode == "off" and old is not None and old != "0x0000":
            _write(LRU_GEN, old)


def run_all(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every run in ``--runs``, each on a fresh workload in a fresh cgroup."""
    cold, hot = args.cold_mib * MIB, args.hot_mib * MIB
    runs: dict[str, Any] = {}
    with (
        lru_gen(args.lru_gen) as lru_before,
        tempfile.TemporaryDirectory(prefix="reactor-reclaim-") as tmpdir,
    ):
        tmp = Path(tmpdir)
        for name in args.runs.split(","):
            if name not in RUNS:
                raise SystemExit(f"reclaim: unknown run {name!r} ({', '.join(RUNS)})")
            _kdamonds_off()
            w = start_workload(name, cold, hot, tmp)
            try:
                runs[name] = serve(name, w, args, tmp, out)
            finally:
                w.stop()
                _kdamonds_off()
    return {
        "kernel": os.uname().release,
        "workload": {"cold_bytes": cold, "hot_bytes": hot, "hot_period_s": 0.01},
        "cgroup_memory_max_bytes": cold + hot + 96 * MIB,
        "lru_gen": {"before": lru_before, "during": args.lru_gen},
        "goal": {"metric": "memory_psi_some (system)", "target_share": args.goal},
        "quota": {"min": QUOTA_MIN, "max": args.quota_max_mib * MIB, "per_ms": PER_MS},
        "duration_s": args.duration,
        "sample_s": SAMPLE_S,
        "series_columns": [
            "s",
            "saved_bytes",
            "swap_growth_bytes",
            "anon_bytes",
            "psi_some_share",
            "cgroup_psi_some_share",
            "zram_growth_bytes",
        ],
        "touch_columns": ["s", "rounds", "mean_round_ms", "worst_round_ms"],
        "runs": runs,
    }


def _show(name: str, run: dict[str, Any]) -> str:
    t80 = "never" if run["saved_80_s"] is None else f"{run['saved_80_s']:.1f}s"
    q = [b for _, b in run["quotas"]]
    quota = (
        f"fixed {run['quota_fixed_bytes'] / MIB:g}"
        if run["quota_fixed_bytes"] is not None
        else (f"{min(q) / MIB:.1f}..{max(q) / MIB:.1f}" if q else "none")
    )
    touch = run["touch_summary"]
    return (
        f"{name}: saved {run['saved_bytes'] / MIB:.1f} MiB (80% at {t80}), PSI>goal "
        f"{run['psi_above_goal_s']:.1f}s peak {run['psi_peak_share'] * 100:.2f}% mean "
        f"{(run['psi_mean_share'] or 0) * 100:.2f}%, quota {quota} MiB/{PER_MS}ms, touch "
        f"mean {touch['mean_round_ms']} ms worst {touch['worst_round_ms']} ms"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the configurations, write the JSON under ``--out`` and print one line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reclaim")
    parser.add_argument("--out", default=str(ROOT))
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--cold-mib", type=int, default=192)
    parser.add_argument("--hot-mib", type=int, default=16)
    parser.add_argument("--goal", type=float, default=0.005, help="PSI some share, 0..1")
    parser.add_argument("--quota-max-mib", type=int, default=512, help="per 500 ms")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated")
    parser.add_argument("--lru-gen", choices=("off", "keep"), default="off", help="MGLRU")
    args = parser.parse_args(argv)
    why = refusal()
    if why is not None:
        print(f"reclaim: refusing to run: {why}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_all(args, out)
    path = out / "benchmarks" / "results" / RESULT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    parts = [_show(name, run) for name, run in result["runs"].items()]
    print(
        f"reclaim ({args.cold_mib} MiB cold + {args.hot_mib} MiB hot, goal PSI some "
        f"<= {args.goal * 100:g}%, {args.duration:g} s): " + "; ".join(parts) + f" -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
