"""Guest only: the reclaim policy acts through cgroup v2 ``memory.reclaim`` (issue 7).

The test creates a cgroup (``/sys/fs/cgroup/reactor-reclaim-test``) and starts a Python
child inside it (its pid is written to ``cgroup.procs`` before exec, so every page it
touches is charged there): COLD, 64 MiB of anonymous memory written once and never again,
and HOT, 4 MiB written every ~10 ms. ``reactor serve`` then runs a reclaim policy with
``cgroup`` set to that directory (:class:`~reactor.policies.reclaim.CgroupReclaim`, the
actuator :class:`~reactor.actuators.cgroup.CgroupReclaimer`): goal free_ratio 99 % (never
reached, so the quota rises from its floor), quota 16..32 MiB per 1 s, tick 1 s, for
RUN s (``startup_timeout`` 60 s: the native sampler's probe detection took 14-20 s
under TCG, past the 5 + 10 s default). Afterwards the child is ended and the cgroup
removed.

Bounds, derived before running:

* requested: the quota's floor asks 16 MiB per tick; RUN = 10 s gives >= 6 ticks after
  start-up even under TCG, >= 96 MiB asked, more than the group holds (64 + 4 MiB and the
  interpreter's ~10 MiB of anonymous pages; its libraries' page cache was charged to the
  group that first read it, not this one). The kernel reclaims the group's inactive
  anonymous pages first (zram swap has 512 MiB free, swappiness 100) and COLD is never
  touched after its first write, so COLD is the first to go: memory.current must drop by
  at least 90 % of COLD (57.6 MiB; the 10 % covers pages the kernel skips while they sit
  in per-CPU LRU batches or are under writeback when a write ends), and
  memory.swap.current must rise by at least as much as 90 % of COLD (each page reclaimed
  from anonymous memory takes a swap slot charged to the group).
* measured vs memory.current: each tick the actuator reports the group's usage drop
  across its writes (``usage_delta_bytes``; ``measured_bytes`` = max(0, -delta)); their
  sum differs from the test's own before/after reading of memory.current only by what
  the group charged between the actuator's readings: pages faulted back in (HOT pages
  the kernel took and the child wrote again: memory.stat ``workingset_refault_anon`` /
  ``_file``, and ``pswpin`` where the kernel has it), the interpreter's own growth
  (1 MiB allowance), and the memcg charge caches (each CPU holds up to 64 pages
  pre-charged: 2 CPUs x 64 pages x 4 KiB = 512 KiB, at each of the two readings).
  |sum(measured) - drop| must be within that.
* the cgroup directory is gone after the test: the fixture ends the child by pid and
  removes the directory (retrying for up to 10 s while the kernel still holds the
  exiting task), failing the test's teardown otherwise.
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

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
CG = Path("/sys/fs/cgroup/reactor-reclaim-test")
COLD = 64 * MIB
HOT = 4 * MIB
RUN = 10
CHARGE_STOCK = 2 * 2 * 64 * PAGE  # two readings x 2 CPUs x MEMCG_CHARGE_BATCH pages
INTERPRETER = 1 * MIB

CHILD = r"""
import mmap, sys, time
COLD, HOT = int(sys.argv[1]), int(sys.argv[2])
P = mmap.PAGESIZE
cold = mmap.mmap(-1, COLD, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
hot = mmap.mmap(-1, HOT, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
cold[:] = b"\x02" * COLD
hot[:] = b"\x01" * HOT
print("ready", flush=True)
n, i = HOT // P, 0
while True:
    i = i % 250 + 3
    hot[0:HOT:P] = bytes([i]) * n
    time.sleep(0.01)
"""


def record(line: str) -> None:
    """Print a measured line and keep it in the lane's run directory."""
    print(line)
    out = os.environ.get("REACTOR_LANE_OUT")
    if out:
        with Path(out, "cgroup_reclaim_guest.txt").open("a") as f:
            f.write(line + "\n")


def read_int(name: str) -> int:
    return int((CG / name).read_text().split()[0])


def stat() -> dict[str, int]:
    out = {}
    for line in (CG / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out


def _join_cgroup() -> None:
    """In the forked child before exec: move into the test's cgroup."""
    with (CG / "cgroup.procs").open("w") as f:
        f.write(str(os.getpid()))


@pytest.fixture
def group() -> Iterator[subprocess.Popen[str]]:
    """The cgroup with the child in it; the child ended and the cgroup removed afterwards."""
    assert not CG.exists(), f"{CG} is left over"
    CG.mkdir()
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", CHILD, str(COLD), str(HOT)],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_join_cgroup,  # noqa: PLW1509 - the test process starts no threads
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()
        deadline = time.monotonic() + 10
        while CG.exists():
            try:
                CG.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def config(tmp: Path, pid: int) -> Path:
    path = tmp / "cgroup-reclaim.yaml"
    path.write_text(
        f"""
reactor: {{backend: native, tick: 1s, startup_timeout: 60s}}
signals:
  psi: {{enabled: false}}
  fragmentation: {{enabled: false}}
  meminfo: {{period: 1s}}
monitors:
  - name: work
    targets: {{pids: [{pid}]}}
    sample: 1s
    aggregation: 5s
policies:
  - name: squeeze
    kind: reclaim
    monitor: work
    cgroup: {CG}
    goals: [{{metric: free_ratio, target: 99%}}]
    quota: {{min: 16 MiB, max: 32 MiB, per: 1s}}
"""
    )
    return path


def test_reclaim_policy_through_cgroup_memory_reclaim(
    group: subprocess.Popen[str], tmp_path: Path
) -> None:
    """memory.current falls by most of COLD, swap rises as much, the policy's measured
    bytes match memory.current's drop within the derived tolerance."""
    assert (CG / "memory.reclaim").exists()
    assert int((CG / "cgroup.procs").read_text().split()[0]) == group.pid
    current0, swap0, stat0 = read_int("memory.current"), read_int("memory.swap.current"), stat()
    log = tmp_path / "serve.jsonl"
    argv = [sys.executable, "-m", "reactor.cli", "serve", str(config(tmp_path, group.pid))]
    argv += ["--duration", str(RUN), "--log-format", "json", "--run-dir", str(tmp_path / "run")]
    with log.open("w") as out:
        proc = subprocess.run(
            argv, check=False, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=180
        )
    current1, swap1, stat1 = read_int("memory.current"), read_int("memory.swap.current"), stat()
    text = log.read_text()
    lane = os.environ.get("REACTOR_LANE_OUT")
    if lane:
        Path(lane, "cgroup_reclaim_serve.jsonl").write_text(text)
    assert proc.returncode == 0, text[-3000:]
    events: list[dict[str, Any]] = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    ticks = [e for e in events if e.get("event") == "controller_tick"]
    measured = sum(int(t.get("measured_bytes", 0)) for t in ticks)
    drop = current0 - current1
    refaults = sum(
        stat1.get(k, 0) - stat0.get(k, 0)
        for k in ("workingset_refault_anon", "workingset_refault_file")
    )
    swapins = stat1.get("pswpin", 0) - stat0.get("pswpin", 0)
    tolerance = max(refaults, swapins) * PAGE + INTERPRETER + CHARGE_STOCK
    per_tick = [
        (
            round(t.get("requested_bytes", 0) / MIB, 1),
            round(t.get("measured_bytes", 0) / MIB, 1),
            t.get("status"),
        )
        for t in ticks
    ]
    record(
        f"cgroup reclaim: memory.current {current0 / MIB:.1f} -> {current1 / MIB:.1f} MiB "
        f"(drop {drop / MIB:.1f}), swap {swap0 / MIB:.1f} -> {swap1 / MIB:.1f} MiB, anon "
        f"{stat0.get('anon', 0) / MIB:.1f} -> {stat1.get('anon', 0) / MIB:.1f} MiB, file "
        f"{stat0.get('file', 0) / MIB:.1f} -> {stat1.get('file', 0) / MIB:.1f} MiB; ticks "
        f"{len(ticks)}, measured {measured / MIB:.2f} MiB, |measured - drop| "
        f"{abs(measured - drop) / MIB:.2f} MiB <= tolerance {tolerance / MIB:.2f} MiB "
        f"(refaults {refaults} pages, pswpin {swapins}); per tick (requested MiB, measured "
        f"MiB, status) {per_tick}"
    )
    assert len(ticks) >= 5, per_tick
    assert drop >= 0.9 * COLD, (current0, current1)
    assert swap1 - swap0 >= 0.9 * COLD, (swap0, swap1)
    assert abs(measured - drop) <= tolerance, (measured, drop, tolerance)
