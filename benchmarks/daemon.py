"""The daemon's own cost: CPU share and RSS with 4 sources and 4 policies at a 1 s tick.

Run ``python -m benchmarks.daemon`` (``--duration 30``). Writes
``benchmarks/results/daemon.json`` and prints one summary line.

``reactor serve`` runs in dry-run (it decides and logs, changes nothing) with four
signal sources (memory PSI, vmstat, meminfo, tiers), two native monitors on workload
generators reactor starts itself (32 MiB each, split into 2 MiB VMAs; sampling 100 ms,
aggregation 1 s) and four reclaim policies (two per monitor). The daemon's CPU is
read from ``/proc/<pid>/stat`` (utime + stime) after a start-up allowance and again at
the end, over the same wall interval: CPU share = CPU seconds / wall seconds (1.0 = one
core). Its RSS is ``VmHWM`` (peak) and ``VmRSS`` just before it stops. The monitors'
sampling (the native sampler runs in the daemon's process) is included: it is the
daemon's own cost. Targets: under 0.5 % of one core and under 100 MiB RSS.
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
from pathlib import Path

__all__ = ("main",)

RESULTS = Path(__file__).resolve().parent / "results" / "daemon.json"
ROOT = Path(__file__).resolve().parents[1]
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STARTUP_S = 8.0

CONFIG = """
reactor: {{backend: native, tick: 1s, dry_run: true}}
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


def _config() -> str:
    monitors, policies = [], []
    for i in range(2):
        monitors.append(
            f"  - name: w{i}\n"
            f"    targets:\n"
            f"      command: [{sys.executable}, -m, reactor.testing.workload, --size, 32M,"
            f" --hot, 10%, --pattern, contiguous, --split-vmas, --chunk, 2M]\n"
            f"    sample: 100ms\n    aggregation: 1s\n"
        )
        for j, goal in enumerate(("memory_psi_some, target: 0.5%", "free_ratio, target: 5%")):
            policies.append(
                f"  - name: p{i}{j}\n    kind: reclaim\n    monitor: w{i}\n    min_age: 3s\n"
                f"    goals: [{{metric: {goal}}}]\n    quota: {{max: 64 MiB, per: 1s}}\n"
            )
    return CONFIG.format(monitors="".join(monitors), policies="".join(policies))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon for ``--duration`` seconds and report its CPU share and RSS."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daemon")
    parser.add_argument("--duration", type=float, default=30.0)
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reactor-bench-") as tmp:
        cfg = Path(tmp) / "bench.yaml"
        cfg.write_text(_config())
        log = Path(tmp) / "log.jsonl"
        argv_ = [sys.executable, "-m", "reactor.cli", "serve", str(cfg), "--log-format", "json"]
        argv_ += ["--run-dir", str(Path(tmp) / "run"), "--duration", str(ns.duration + STARTUP_S)]
        with log.open("w") as out:
            proc = subprocess.Popen(argv_, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            try:
                time.sleep(STARTUP_S)
                cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
                time.sleep(ns.duration - 1.0)
                cpu1, t1 = _cpu_s(proc.pid), time.monotonic()
                hwm = _status_kib(proc.pid, "VmHWM") * 1024
                rss = _status_kib(proc.pid, "VmRSS") * 1024
                # numpy ships its BLAS as libscipy_openblas64_: look for the scipy package
                scipy = "/site-packages/scipy/" in Path(f"/proc/{proc.pid}/maps").read_text()
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    ticks = sum(1 for e in events if e.get("event") == "controller_tick")
    share = (cpu1 - cpu0) / (t1 - t0)
    result = {
        "duration_s": round(t1 - t0, 3),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_share": round(share, 5),
        "vm_hwm_bytes": hwm,
        "vm_rss_bytes": rss,
        "sources": 4,
        "policies": 4,
        "monitors": 2,
        "controller_ticks": ticks,
        "scipy_loaded": scipy,
        "exit_status": proc.returncode,
        "target": {"cpu_share": 0.005, "rss_bytes": 100 << 20},
        "met": share < 0.005 and hwm < 100 << 20,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(
        f"daemon: {share * 100:.2f}% of one core, peak RSS {hwm / 2**20:.1f} MiB "
        f"(4 sources, 4 policies, 2 monitors, 1 s tick, {ticks} controller ticks); "
        f"scipy loaded: {scipy}; target (<0.5%, <100 MiB) {'met' if result['met'] else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
