"""The daemon's own cost: CPU share and RSS with 4 sources and 4 policies at a 1 s tick.

Run ``python -m benchmarks.daemon`` (``--duration 30``). Writes
``benchmarks/results/daemon.json`` and prints one summary line.

Two ``reactor serve`` daemons run side by side, in dry-run (they decide and log, change
nothing), each with four signal sources (memory PSI, vmstat, meminfo, tiers), two native
monitors on workload generators reactor starts itself (32 MiB each, split into 2 MiB
VMAs) and four reclaim policies (two per monitor). They differ only in the monitors'
intervals:

* ``native_defaults``: sampling 100 ms / aggregation 2 s (the native backend's defaults);
* ``slow_sampling``: sampling 1 s / aggregation 10 s.

Each daemon's CPU is read from its CPU-time clock (exact, all threads) after a start-up
allowance and again at the end, over the same wall interval: CPU share = CPU seconds /
wall seconds (1.0 = one core). ``/proc/<pid>/stat``'s user time (``utime``: parsing, the
region engine, controllers, logging, the event loop) and kernel time (``stime``: mostly
the ``referenced`` probe's page walks, ``clear_refs`` and ``smaps``, which the kernel
does on the daemon's behalf) are shown beside it. The native
sampler runs in the daemon's process, so its sampling is the daemon's own cost. RSS is
``VmHWM`` (peak) and ``VmRSS`` just before the daemon stops.

The probe's own kernel work is a floor no user-space work of the daemon's removes.
``probe_floor_share`` measures it for each configuration in this run: meanwhile a twin of
the monitors' workload is sampled with the probe a daemon picks for such a target
(``probe``; ``referenced`` on this host: ``clear_refs`` and ``smaps``, whose text covers
every mapping, the workload's ~240 with numpy's), at the configuration's sampling
interval, and the kernel CPU of one collect (``probe_kernel_s_per_sample``, parsing
excluded) x samples per second is the floor. It is measured at the daemon's cadence
because a sample once a second meets cold caches: 4.2 ms of kernel CPU against 2.8 ms
in a tight loop, measured here.

The split: ``sampling_share`` is what the native sampler itself spent (each monitor's
``sampling_cpu_s`` from ``reactor status``, on the sampler thread's CPU clock: the probe's
system calls with their page walks, parsing, the region engine), the monitoring work a
kdamond does in the kernel on the DAMON backend; ``control_share`` is the rest (sources,
policy ticks, actuator planning, logging, the event loop, the sampler thread's own
bookkeeping and its hand-offs of snapshots): what the daemon costs when a kdamond does
the sampling, judged against the target on its own as well (``control_met``).
``main_thread_share`` is the event loop's thread alone, on its own CPU clock: most of
control (2026-11-29: 0.34 % of a 1.05 % total, the sampler threads 0.34-0.35 % each
against 0.32-0.33 % of sampling they counted themselves).
The user/kernel split of ``/proc/PID/stat`` is tick-sampled (whole ticks charged to the
mode they interrupt) and is shown, not relied on. Targets: under 0.5 % of one core and
under 100 MiB RSS.

``--backend damon`` (the lane's guest only: it starts kdamonds; ``--out DIR`` for the
JSON, the checkout being read-only there) runs the same daemon on the DAMON backend
(monitors at 10 ms / 200 ms, ``DAMON_INTERVALS``; each reclaim policy a pageout scheme
whose quota reactor's controller commits) beside the native ``slow_sampling`` daemon, and
writes ``daemon_damon.json``, without the probe's floor: with the twin beside them under
TCG's two vCPUs, the native daemon logged no policy tick in a 20 s window (once, in
three lane runs). There a kdamond samples in the kernel, and the daemon's own
monitoring work is its monitors' snapshots (``snapshot_share``, from the monitors'
``snapshot_cpu_s``; ``snapshot_share_by_monitor``): ``w0`` reads one every tick, ``w1``
as its ``snapshot_cpu`` budget allows (``DAMON_SNAPSHOT_CPU``), side by side in the same
daemon. The guest runs under TCG, so its shares are far above a real machine's; the
ratio of the DAMON daemon's total to the native daemon's control share, measured at the
same time in the same guest, is what carries over (since 2026-11-29 with ``w1``'s
snapshots spaced out: lower than the earlier runs' ratios, which read both every tick).

``--baseline TREE`` (a checkout of an earlier build, ``git worktree add TREE REV``) runs
that build's daemon on ``slow_sampling`` beside the others, from its own tree, and
reports this build's shares as ratios of its (below 1: cheaper). On this shared machine
the same build read 0.94-2.2 % across one day, so a change is judged by such a side by
side run, not against a figure from another hour.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.sampler_vs_damon import refusal
from reactor.api.status import StatusUnavailable, query_status_sync
from reactor.kernelfs import RealKernelFS
from reactor.sampler.detect import best_probe, detect_probes
from reactor.sampler.probes import open_session

__all__ = ("main",)

RESULTS = Path(__file__).resolve().parent / "results" / "daemon.json"
ROOT = Path(__file__).resolve().parents[1]
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STARTUP_S = 8.0
#: how long a daemon may take to answer on its status socket, past STARTUP_S
READY_TIMEOUT_S = 90.0
TARGET_SHARE = 0.005
TARGET_RSS = 100 << 20
MONITORS = 2

#: name -> (sample, aggregation) of the monitors, None for the native defaults.
CONFIGS: dict[str, tuple[str, str] | None] = {
    "native_defaults": None,
    "slow_sampling": ("1s", "10s"),
}
#: ``--backend damon``'s monitors: the lane's DAMON intervals (TCG is ~50x slower)
DAMON_INTERVALS = ("10ms", "200ms")
#: ``--backend damon``: monitor index -> its ``snapshot_cpu`` (the other one reads its
#: snapshot every tick, for the side by side in the same daemon)
DAMON_SNAPSHOT_CPU = {1: "1%"}
#: the configuration ``--baseline`` runs from the earlier build, beside this one's
BASELINE_CONFIG = "slow_sampling"
#: the native backend's defaults (reactor.config.model.MonitorConfig.intervals)
NATIVE_DEFAULT_S = (0.1, 2.0)

CONFIG = """
reactor: {{backend: {backend}, tick: 1s, dry_run: true}}
signals:
  psi: {{period: 1s, resources: [memory]}}
  vmstat: {{period: 1s}}
  meminfo: {{period: 1s}}
  tiers: {{period: 1s}}
  fragmentation: {{enabled: false}}
monitors:
{monitors}
policies:
{policies}
"""


#: each monitor's target: a workload generator reactor starts (and the probe's twin)
WORKLOAD = (
    sys.executable,
    "-m",
    "reactor.testing.workload",
    "--size",
    "32M",
    "--hot",
    "10%",
    "--pattern",
    "contiguous",
    "--split-vmas",
    "--chunk",
    "2M",
)


def _config(intervals: tuple[str, str] | None, backend: str = "native") -> str:
    monitors, policies = [], []
    for i in range(MONITORS):
        entry = f"  - name: w{i}\n    targets:\n      command: [{', '.join(WORKLOAD)}]\n"
        if intervals is not None:
            entry += f"    sample: {intervals[0]}\n    aggregation: {intervals[1]}\n"
        if backend == "damon" and i in DAMON_SNAPSHOT_CPU:
            entry += f"    snapshot_cpu: {DAMON_SNAPSHOT_CPU[i]}\n"
        monitors.append(entry)
        for j, goal in enumerate(("memory_psi_some, target: 0.5%", "free_ratio, target: 5%")):
            policies.append(
                f"  - name: p{i}{j}\n    kind: reclaim\n    monitor: w{i}\n    min_age: 3s\n"
                f"    goals: [{{metric: {goal}}}]\n    quota: {{max: 64 MiB, per: 1s}}\n"
            )
    return CONFIG.format(backend=backend, monitors="".join(monitors), policies="".join(policies))


def _seconds(text: str) -> float:
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text.rstrip("s"))


def _cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, tick-sampled (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS_PER_S, int(fields[12]) / TICKS_PER_S


def _process_cpu_s(pid: int) -> float:
    """All CPU seconds of a process, exact: its CPU-time clock (clock_getcpuclockid(3):
    ``(~pid << 3) | CPUCLOCK_SCHED``), the scheduler's runtime summed over its threads,
    ended ones included, with no 10 ms tick granularity."""
    return time.clock_gettime(((~pid) << 3) | 2)


def _main_thread_cpu_s(pid: int) -> float:
    """CPU seconds of another process's main thread (its event loop: sources, policy
    ticks, the report, logging), exact: the scheduler's runtime of that thread
    (``/proc/PID/task/PID/schedstat``, nanoseconds, the counter its own
    ``CLOCK_THREAD_CPUTIME_ID`` reads). A thread CPU clock cannot be read from another
    process: clock_gettime(2) answers EINVAL outside the caller's thread group."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class _Floor:
    """The probe's own kernel work per sample (seconds), by sampling interval, measured
    on a twin of the monitors' workload at that cadence: what no user-space work of the
    daemon's removes."""

    probe: str
    per_sample_s: dict[float, float]

    def share(self, interval_s: float, samples_per_s: float) -> float:
        return samples_per_s * self.per_sample_s.get(interval_s, 0.0)


def _twin() -> subprocess.Popen[bytes]:
    """One more workload like the monitors' (the probe's floor is measured on it: its
    ``clear_refs`` must not touch the bits the daemons' samplers read)."""
    return subprocess.Popen(WORKLOAD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _probe() -> str:
    """The probe a daemon picks for a command target here: the best non-cooperative one
    (detected on a child process, so before the window: under TCG it takes seconds)."""
    return best_probe(detect_probes(RealKernelFS()), cooperating=False).name


def _probe_floor(pid: int, probe: str, intervals: Sequence[float], seconds: float) -> _Floor:
    """Sample ``pid`` with ``probe`` on a grid of each interval, for an equal part of
    ``seconds`` per interval (at least two collects each, the first not counted: it
    follows a change of cadence), and keep the kernel CPU of each collect (the probe
    session's own split: its system calls and their page walks, parsing excluded).
    Returns no sooner than ``seconds`` from the call: it is the benchmark's window. At a
    1 s cadence the caches are as cold as the daemon's sampler finds them: 1.5-2x a tight
    loop's cost here, so a tight loop of reads would understate the floor."""
    per_sample: dict[float, float] = {}
    end = time.monotonic() + seconds
    cadences = sorted(set(intervals), reverse=True)
    session = open_session(probe, RealKernelFS(), pid)
    try:
        session.start()
        for k, interval in enumerate(cadences):
            until = time.monotonic() + (end - time.monotonic()) / (len(cadences) - k)
            spent, counted = 0.0, -1
            due = time.monotonic() + interval
            while counted < 1 or due <= until:
                time.sleep(max(0.0, due - time.monotonic()))
                due += interval
                before = session.cost.kernel_s
                session.collect()
                if counted >= 0:
                    spent += session.cost.kernel_s - before
                counted += 1
            per_sample[interval] = spent / counted
    finally:
        session.close()
    time.sleep(max(0.0, end - time.monotonic()))  # the caller's window lasts ``seconds``
    return _Floor(probe, per_sample)


@dataclass
class _Run:
    name: str
    intervals: tuple[float, float]
    proc: subprocess.Popen[bytes]
    log: Path
    cpu0: tuple[float, float] = (0.0, 0.0)
    cpu1: tuple[float, float] = (0.0, 0.0)
    t0: float = 0.0
    t1: float = 0.0
    hwm: int = 0
    rss: int = 0
    scipy: bool = False
    floor: _Floor | None = None
    sampling0: float = 0.0
    sampling1: float = 0.0
    exact0: float = 0.0
    exact1: float = 0.0
    main0: float = 0.0
    main1: float = 0.0
    backend: str = "native"
    snapshot0: dict[str, float] = field(default_factory=dict)
    snapshot1: dict[str, float] = field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        wall = self.t1 - self.t0
        user = (self.cpu1[0] - self.cpu0[0]) / wall
        kernel = (self.cpu1[1] - self.cpu0[1]) / wall
        share = (self.exact1 - self.exact0) / wall
        sampling = (self.sampling1 - self.sampling0) / wall
        by_monitor = {
            name: round((cpu - self.snapshot0.get(name, 0.0)) / wall, 5)
            for name, cpu in self.snapshot1.items()
        }
        snapshot = sum(by_monitor.values())
        events = [json.loads(x) for x in self.log.read_text().splitlines() if x.startswith("{")]
        ticks = sum(1 for e in events if e.get("event") == "controller_tick")
        samples_per_s = MONITORS / self.intervals[0] if self.backend == "native" else 0.0
        floor = self.floor
        return {
            "backend": self.backend,
            "sample_interval_s": self.intervals[0],
            "aggr_interval_s": self.intervals[1],
            "duration_s": round(wall, 3),
            "cpu_s": round(self.exact1 - self.exact0, 4),
            "cpu_share": round(share, 5),
            "user_share": round(user, 5),
            "kernel_share": round(kernel, 5),
            "sampling_share": round(sampling, 5),
            # DAMON: reading the monitors' snapshots (tried_regions), part of control
            "snapshot_share": round(snapshot, 5),
            "snapshot_share_by_monitor": by_monitor,
            "control_share": round(share - sampling, 5),
            # the event loop's thread alone: the rest of control is the sampler threads'
            # bookkeeping and the worker threads
            "main_thread_share": round((self.main1 - self.main0) / wall, 5),
            "samples_per_s": samples_per_s,
            "probe": None if floor is None else floor.probe,
            "probe_kernel_s_per_sample": (
                None if floor is None else round(floor.per_sample_s.get(self.intervals[0], 0), 6)
            ),
            "probe_floor_share": (
                None if floor is None else round(floor.share(self.intervals[0], samples_per_s), 5)
            ),
            "vm_hwm_bytes": self.hwm,
            "vm_rss_bytes": self.rss,
            "controller_ticks": ticks,
            "scipy_loaded": self.scipy,
            "exit_status": self.proc.returncode,
            "met": share < TARGET_SHARE and self.hwm < TARGET_RSS,
            # the daemon's own work, what it costs where a kdamond does the sampling
            "control_met": share - sampling < TARGET_SHARE and self.hwm < TARGET_RSS,
        }


def _monitor_cpu_s(run: _Run) -> tuple[float, dict[str, float]]:
    """The daemon's native sampling CPU so far, summed over its monitors, and each
    monitor's DAMON snapshot CPU (status socket)."""
    doc = query_status_sync(str(run.log.parent / f"run-{run.name}" / "status.sock"))
    monitors = doc.get("monitors", [])
    return (
        sum(float(m.get("sampling_cpu_s") or 0.0) for m in monitors),
        {m["name"]: float(m.get("snapshot_cpu_s") or 0.0) for m in monitors},
    )


def _start(
    name: str,
    intervals: tuple[str, str] | None,
    tmp: Path,
    seconds_: float,
    *,
    tree: Path = ROOT,
    backend: str = "native",
) -> _Run:
    """Start one daemon of ``tree``'s reactor (this checkout, or ``--baseline``'s)."""
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(_config(intervals, backend))
    log = tmp / f"{name}.jsonl"
    argv = [sys.executable, "-m", "reactor.cli", "serve", str(cfg), "--log-format", "json"]
    # --duration: the daemon stops by itself even if this benchmark dies
    argv += ["--run-dir", str(tmp / f"run-{name}"), "--duration", str(seconds_)]
    env = dict(os.environ, PYTHONPATH=str(tree))  # the tree's packages before any installed
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = NATIVE_DEFAULT_S if intervals is None else tuple(map(_seconds, intervals))
    return _Run(name, (seconds[0], seconds[1]), proc, log, backend=backend)


def _wait_ready(run: _Run, timeout_s: float) -> None:
    """Wait until the daemon answers on its status socket (a slow start, under TCG in the
    lane's guest, can take longer than the start-up allowance); raise, with the end of
    its log, if it exits or does not answer within ``timeout_s``."""
    sock = run.log.parent / f"run-{run.name}" / "status.sock"
    deadline = time.monotonic() + timeout_s
    while True:
        if run.proc.poll() is not None:
            tail = run.log.read_text()[-2000:]
            raise RuntimeError(f"daemon {run.name} exited {run.proc.returncode}: {tail}")
        if sock.exists():
            try:
                query_status_sync(str(sock))
                return
            except StatusUnavailable:
                pass  # not listening yet
        if time.monotonic() > deadline:
            tail = run.log.read_text()[-2000:]
            raise RuntimeError(f"daemon {run.name}: no status within {timeout_s:g} s: {tail}")
        time.sleep(0.5)


def _stop(run: _Run) -> None:
    """End the daemon we started (by pid): SIGTERM (a clean shutdown: it ends the
    workloads it started), then SIGKILL after 30 s."""
    if run.proc.poll() is None:
        run.proc.terminate()
        try:
            run.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait()


def _summary(results: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, r in results.items():
        parts.append(
            f"{name} ({r['sample_interval_s']:g} s/{r['aggr_interval_s']:g} s) "
            f"{r['cpu_share'] * 100:.2f}% = sampling {r['sampling_share'] * 100:.2f}% "
            f"(the probe's own kernel work, measured on a twin: "
            f"{r['probe_floor_share'] * 100:.2f}%) + control "
            f"{r['control_share'] * 100:.2f}%, peak RSS {r['vm_hwm_bytes'] / 2**20:.1f} MiB"
        )
    met = [n for n, r in results.items() if r["met"]]
    verdict = f"target (<0.5%, <100 MiB) met by: {', '.join(met) or 'none'}"
    control = [n for n, r in results.items() if r["control_met"]]
    verdict += (
        f"; by the control alone (the daemon's cost where a kdamond samples): "
        f"{', '.join(control) or 'none'}"
    )
    for name, r in results.items():
        if r["met"]:
            continue
        if r["probe_floor_share"] >= TARGET_SHARE:
            verdict += (
                f"; {name} cannot: its sampling rate x the {r['probe']} probe's own kernel "
                f"work ({r['probe_kernel_s_per_sample'] * 1e3:.2f} ms per sample) alone is "
                f"{r['probe_floor_share'] * 100:.2f}%"
            )
        else:
            verdict += (
                f"; {name} misses by what lies above its probe floor: sampling "
                f"{r['sampling_share'] * 100:.2f}% and control {r['control_share'] * 100:.2f}% "
                "(sources, policy ticks, logging, the event loop)"
            )
    return "daemon: " + "; ".join(parts) + "; " + verdict


def main(argv: Sequence[str] | None = None) -> int:
    """Run both configurations for ``--duration`` seconds and report their CPU and RSS."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daemon")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="TREE",
        help="a checkout of an earlier build (git worktree add TREE REV): its daemon runs "
        f"{BASELINE_CONFIG} beside this one's, and the result carries the ratios",
    )
    parser.add_argument(
        "--backend",
        choices=("native", "damon"),
        default="native",
        help="damon: the lane's guest only (it starts kdamonds); a DAMON-backend daemon "
        "beside the native slow_sampling one, written to daemon_damon.json",
    )
    parser.add_argument(
        "--out", type=Path, help="write DIR/benchmarks/results/ (default: this checkout's)"
    )
    ns = parser.parse_args(argv)
    baseline = _baseline_tree(parser, ns.baseline)
    if ns.backend == "damon":
        if baseline is not None:
            parser.error("--baseline compares native runs: not with --backend damon")
        why = refusal()
        if why is not None:
            print(f"daemon: refusing to run --backend damon: {why}", file=sys.stderr)
            return 2
    results_dir = RESULTS.parent if ns.out is None else ns.out / "benchmarks" / "results"
    with tempfile.TemporaryDirectory(prefix="reactor-bench-") as tmp_name:
        tmp = Path(tmp_name)
        lifetime = STARTUP_S + ns.duration + 30
        if ns.backend == "damon":
            runs = [
                _start("damon", DAMON_INTERVALS, tmp, lifetime, backend="damon"),
                _start(BASELINE_CONFIG, CONFIGS[BASELINE_CONFIG], tmp, lifetime),
            ]
        else:
            runs = [_start(name, iv, tmp, lifetime) for name, iv in CONFIGS.items()]
        if baseline is not None:
            name = f"{BASELINE_CONFIG}@baseline"
            runs.append(_start(name, CONFIGS[BASELINE_CONFIG], tmp, lifetime, tree=baseline))
        twin: subprocess.Popen[bytes] | None = None
        try:
            started = time.monotonic()
            # the floor is measured on native runs only (module doc: under TCG the twin
            # crowded the native daemon beside the DAMON one)
            if ns.backend == "native":
                twin = _twin()
            probe = _probe() if twin is not None else ""
            time.sleep(max(0.0, STARTUP_S - (time.monotonic() - started)))
            for run in runs:
                _wait_ready(run, READY_TIMEOUT_S)
            for run in runs:
                run.cpu0, run.t0 = _cpu_s(run.proc.pid), time.monotonic()
                run.exact0 = _process_cpu_s(run.proc.pid)
                run.main0 = _main_thread_cpu_s(run.proc.pid)
                run.sampling0, run.snapshot0 = _monitor_cpu_s(run)
            # the window's wait: the probe's floor, measured on the twin meanwhile
            floor = None
            if twin is None:
                time.sleep(ns.duration)
            else:
                cadences = [run.intervals[0] for run in runs]
                floor = _probe_floor(twin.pid, probe, cadences, ns.duration)
            for run in runs:
                run.cpu1, run.t1 = _cpu_s(run.proc.pid), time.monotonic()
                run.exact1 = _process_cpu_s(run.proc.pid)
                run.main1 = _main_thread_cpu_s(run.proc.pid)
                run.sampling1, run.snapshot1 = _monitor_cpu_s(run)
                run.hwm = _status_kib(run.proc.pid, "VmHWM") * 1024
                run.rss = _status_kib(run.proc.pid, "VmRSS") * 1024
                # numpy ships its BLAS as libscipy_openblas64_: look for the scipy package
                maps = Path(f"/proc/{run.proc.pid}/maps").read_text()
                run.scipy = "/site-packages/scipy/" in maps
                run.floor = floor
        finally:
            for run in runs:
                _stop(run)
            if twin is not None:
                twin.terminate()
                twin.wait()
        results = {run.name: run.result() for run in runs}
    compared = None
    if baseline is not None:
        base = results.pop(f"{BASELINE_CONFIG}@baseline")
        compared = _compare(baseline, base, results[BASELINE_CONFIG])
    out: dict[str, Any] = {
        "sources": 4,
        "policies": 4,
        "monitors": MONITORS,
        "tick_s": 1.0,
        "workload": "32 MiB each, 2 MiB VMAs, 10% hot (contiguous)",
        "configs": results,
        "target": {"cpu_share": TARGET_SHARE, "rss_bytes": TARGET_RSS},
        "met_by": [n for n, r in results.items() if r["met"]],
        "control_met_by": [n for n, r in results.items() if r["control_met"]],
        "baseline": compared,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    if ns.backend == "damon":
        damon, native = results["damon"], results[BASELINE_CONFIG]
        out["damon_to_native_control"] = (
            round(damon["cpu_share"] / native["control_share"], 4)
            if native["control_share"] > 0
            else None
        )
        (results_dir / "daemon_damon.json").write_text(json.dumps(out, indent=2) + "\n")
        print(_damon_summary(damon, native, out["damon_to_native_control"]))
        return 0
    (results_dir / RESULTS.name).write_text(json.dumps(out, indent=2) + "\n")
    line = _summary(results)
    if compared is not None:
        line += (
            f"; {BASELINE_CONFIG} against the baseline {compared['commit'] or compared['tree']} "
            f"side by side: total {_times(compared['cpu_ratio'])}, sampling "
            f"{_times(compared['sampling_ratio'])}, control {_times(compared['control_ratio'])}"
        )
    print(line)
    return 0


def _damon_summary(damon: dict[str, Any], native: dict[str, Any], ratio: float | None) -> str:
    """One line for ``--backend damon`` (in the guest: absolute shares there are TCG's)."""
    return (
        f"daemon (DAMON backend, {damon['sample_interval_s'] * 1e3:g} ms/"
        f"{damon['aggr_interval_s'] * 1e3:g} ms, in the lane's guest): total "
        f"{damon['cpu_share'] * 100:.2f}%, of which reading snapshots "
        f"{damon['snapshot_share'] * 100:.2f}% ({_snapshot_split(damon)}), peak RSS "
        f"{damon['vm_hwm_bytes'] / 2**20:.1f} MiB; "
        f"beside it the native {BASELINE_CONFIG} daemon's control "
        f"{native['control_share'] * 100:.2f}% (sampling {native['sampling_share'] * 100:.2f}%); "
        f"DAMON total / native control {_times(ratio)} (same guest, same time)"
    )


def _snapshot_split(run: dict[str, Any]) -> str:
    """Each monitor's snapshot share, with its ``snapshot_cpu`` where it has one."""
    parts = []
    for i, (name, share) in enumerate(sorted(run["snapshot_share_by_monitor"].items())):
        how = f"snapshot_cpu {DAMON_SNAPSHOT_CPU[i]}" if i in DAMON_SNAPSHOT_CPU else "every tick"
        parts.append(f"{name}, {how}: {share * 100:.2f}%")
    return "; ".join(parts)


def _times(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"x{ratio:.3f}"


def _baseline_tree(parser: argparse.ArgumentParser, tree: Path | None) -> Path | None:
    """``--baseline``'s checkout, refused with the reason unless it holds reactor."""
    if tree is None:
        return None
    tree = tree.resolve()
    if not (tree / "reactor" / "cli.py").is_file():
        parser.error(
            f"--baseline {tree}: expected a checkout of reactor (a directory holding "
            "reactor/cli.py, e.g. from `git worktree add TREE REV`)"
        )
    return tree


def _compare(tree: Path, base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """This build's run against the baseline's, run at the same time on the same machine:
    the shares and their ratios (new / baseline; below 1 is cheaper)."""
    git = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )

    def ratio(key: str) -> float | None:
        return new[key] / base[key] if base[key] > 0 else None

    return {
        "tree": str(tree),
        "commit": git.stdout.strip() if git.returncode == 0 else None,
        "config": BASELINE_CONFIG,
        "result": base,
        "cpu_ratio": ratio("cpu_share"),
        "sampling_ratio": ratio("sampling_share"),
        "control_ratio": ratio("control_share"),
    }


if __name__ == "__main__":
    raise SystemExit(main())
