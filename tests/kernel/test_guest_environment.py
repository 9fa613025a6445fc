"""The guest is what the lane promises: DAMON idle and complete, two memory tiers, zram
swap, cgroup v2 with the memory controller, the set-up's THP/sysctls, and a kdamond that
really monitors a process.  Every other guest test builds on these."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reactor.signals.meminfo import parse_meminfo
from reactor.signals.psi import parse_psi
from reactor.testing.tlb import FLUSH_TLB
from tests.kernel.conftest import read, write

NODES = Path("/sys/devices/system/node")
TIERS = Path("/sys/devices/virtual/memory_tiering")
CGROUP = Path("/sys/fs/cgroup")
REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20
ULONG_MAX = 2**64 - 1
UINT_MAX = 2**32 - 1


def node_list(text: str) -> set[int]:
    """'0-1,3' -> {0, 1, 3}; '' -> set()."""
    nodes: set[int] = set()
    for part in filter(None, text.strip().split(",")):
        lo, _, hi = part.partition("-")
        nodes.update(range(int(lo), int(hi or lo) + 1))
    return nodes


def meminfo_kb(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        words = line.replace(":", " ").split()
        if key in words:
            return int(words[words.index(key) + 1])
    raise AssertionError(f"{key} not in {path}")


# --------------------------------------------------------------------------- the lane itself


def test_guest_is_the_lane_guest(lane: dict[str, str]) -> None:
    """A different kernel from the host's, the one the host says it booted, with a nonce."""
    assert os.uname().release == lane["reactor_lane_kernel"]
    assert os.uname().release != lane["reactor_lane_host_release"]
    assert len(lane["reactor_lane_nonce"]) >= 16


def test_checkout_is_read_only_and_results_dir_writable() -> None:
    """Guest writes never reach the checkout; the lane's results dir is written through."""
    with pytest.raises(OSError):
        (REPO / "tests" / "kernel" / f".lane-probe-{os.getpid()}").write_text("x")
    out = Path(os.environ["REACTOR_LANE_OUT"])
    probe = out / "write-probe"
    probe.write_text("ok")
    assert probe.read_text() == "ok"
    probe.unlink()
    assert sys.dont_write_bytecode


# --------------------------------------------------------------------------- DAMON


def test_damon_sysfs_present_and_idle() -> None:
    """No kdamond at start: DAMON_STAT is off (its exclusive context would EBUSY ours)."""
    assert Path("/sys/kernel/mm/damon/admin/kdamonds").is_dir()
    assert read("/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds") == "0"
    assert "damon_stat.enabled=N" in read("/proc/cmdline").split()
    assert read("/sys/module/damon_stat/parameters/enabled") == "N"
    for module in ("damon_reclaim", "damon_lru_sort"):
        enabled = Path(f"/sys/module/{module}/parameters/enabled")
        if enabled.exists():
            assert read(enabled) == "N", f"{module} runs a kdamond of its own"


def test_avail_operations_lists_all_three(kdamonds: Path) -> None:
    write(kdamonds / "nr_kdamonds", 1)
    write(kdamonds / "0" / "contexts" / "nr_contexts", 1)
    ctx = kdamonds / "0" / "contexts" / "0"
    assert {"vaddr", "fvaddr", "paddr"} <= set(read(ctx / "avail_operations").split())
    assert read(kdamonds / "0" / "state") == "off"


HOT_CHILD = (
    r"""
import json, mmap, os, sys, time
HOT, COLD = int(sys.argv[1]), int(sys.argv[2])
hot = mmap.mmap(-1, HOT)
cold = mmap.mmap(-1, COLD)
for off in range(0, COLD, 4096):
    cold[off] = 1
base = lambda m: __import__("ctypes").addressof(__import__("ctypes").c_char.from_buffer(m))
print(json.dumps({"hot": [base(hot), base(hot) + HOT], "cold": [base(cold), base(cold) + COLD]}),
      flush=True)
"""
    + FLUSH_TLB
    + r"""
i = 0
while True:
    i = (i + 1) % 255 or 1
    for off in range(0, HOT, 4096):
        hot[off] = i
    flush_tlb()  # so DAMON sees the next round's writes (reactor.testing.tlb)
    time.sleep(0.002)
"""
)


@dataclass(frozen=True)
class Child:
    proc: subprocess.Popen[str]
    hot: tuple[int, int]
    cold: tuple[int, int]


@pytest.fixture
def hot_child() -> Iterator[Child]:
    """A python child touching a 8 MiB buffer continuously, with a 32 MiB one left cold.
    How long it took to be ready and to end goes to the run's guest_environment.txt."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", HOT_CHILD, str(8 * MiB), str(32 * MiB)],
        stdout=subprocess.PIPE,
        text=True,
    )
    ready = None
    # where a slow start's CPU goes (user or kernel, and the kernel stack): 1-54 s here
    stop = threading.Event()
    watch: list[str] = []
    watcher = threading.Thread(target=_watch, args=(proc.pid, t0, stop, watch), daemon=True)
    watcher.start()
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        ready = time.monotonic() - t0
        stop.set()
        watcher.join()
        # a CI run's child took 27.5 s to be ready (1.3 s alone): was it running (its CPU
        # time), waiting for memory or I/O (PSI totals since boot), or the guest busy?
        state = _child_state(proc.pid)
        yield Child(proc, tuple(info["hot"]), tuple(info["cold"]))
    finally:
        t1 = time.monotonic()
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        with Path(os.environ["REACTOR_LANE_OUT"], "guest_environment.txt").open("a") as f:
            f.write(
                f"hot child: ready after {ready if ready is None else round(ready, 2)} s "
                f"({state if ready is not None else 'never ready'}), ended in "
                f"{time.monotonic() - t1:.2f} s\n"
                f"hot child start, every 2 s (s, user s, kernel s, wchan, stack): {watch}\n"
            )


def _watch(pid: int, t0: float, stop: threading.Event, out: list[str]) -> None:
    """Every 2 s until ``stop``: the child's user and kernel CPU seconds, wchan and
    kernel stack (function names), appended to ``out``."""
    tick = os.sysconf("SC_CLK_TCK")
    while not stop.wait(2.0):
        try:
            fields = read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
            wchan = read(f"/proc/{pid}/wchan").strip()
            stack = [
                line.partition("] ")[2].partition("+")[0]
                for line in read(f"/proc/{pid}/stack").splitlines()
            ]
        except OSError:
            return
        user, kernel = int(fields[11]) / tick, int(fields[12]) / tick
        out.append(f"({time.monotonic() - t0:.0f}, {user:.1f}, {kernel:.1f}, {wchan}, {stack[:6]})")


def _child_state(pid: int) -> str:
    """The child's CPU seconds and major faults, the guest's load, free memory and swap,
    and the PSI ``some`` totals (s since boot) of cpu, memory and io, for the record."""
    fields = read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    info = parse_meminfo(read("/proc/meminfo"), "/proc/meminfo")
    mem = {
        "MemFree": info.mem_free_bytes // MiB,
        "Cached": info.cached_bytes // MiB,
        "SwapTotal": info.swap_total_bytes // MiB,
        "SwapFree": info.swap_free_bytes // MiB,
    }
    psi = {}
    for res in ("cpu", "memory", "io"):
        path = f"/proc/pressure/{res}"
        psi[res] = round(parse_psi(read(path), path).some.total_us / 1e6, 1)
    load = read("/proc/loadavg").split()[:3]
    return (
        f"child CPU {cpu:.2f} s, majflt {fields[9]}; loadavg {load}; MiB {mem}; "
        f"PSI some total s {psi}"
    )


def tried_regions(kd: Path, scheme: Path) -> list[tuple[int, int, int]]:
    """(start, end, nr_accesses) of the regions ``scheme`` last tried."""
    write(kd / "state", "update_schemes_tried_regions")
    regions = []
    for entry in (scheme / "tried_regions").iterdir():
        if entry.name.isdigit():
            start, end = int(read(entry / "start")), int(read(entry / "end"))
            regions.append((start, end, int(read(entry / "nr_accesses"))))
    return regions


def test_vaddr_kdamond_monitors_a_hot_buffer(kdamonds: Path, hot_child: Child) -> None:
    """A real kdamond on a real process: on with a pid, sees the hot buffer, stops."""
    # where the time goes: the polls saw HOT at once in runs where the test took 38.7 s,
    # so each phase's end (s since the test started) is recorded with them
    begun = time.monotonic()
    phases: dict[str, float] = {}
    write(kdamonds / "nr_kdamonds", 1)
    kd = kdamonds / "0"
    write(kd / "contexts" / "nr_contexts", 1)
    ctx = kd / "contexts" / "0"
    write(ctx / "operations", "vaddr")
    intervals = ctx / "monitoring_attrs" / "intervals"
    write(intervals / "sample_us", 10_000)  # TCG: 10 ms sampling, 200 ms aggregation
    write(intervals / "aggr_us", 200_000)
    write(intervals / "update_us", 1_000_000)
    # start fine-grained (the default min of 10 regions over ~300 MiB takes many
    # aggregations of random splits to isolate a 8 MiB buffer under TCG)
    write(ctx / "monitoring_attrs" / "nr_regions" / "min", 100)
    write(ctx / "targets" / "nr_targets", 1)
    write(ctx / "targets" / "0" / "pid_target", hot_child.proc.pid)
    # a "stat" scheme matching everything, to read the monitored regions back
    write(ctx / "schemes" / "nr_schemes", 1)
    scheme = ctx / "schemes" / "0"
    write(scheme / "action", "stat")
    pattern = scheme / "access_pattern"
    for name, hi in (("sz", ULONG_MAX), ("nr_accesses", UINT_MAX), ("age", UINT_MAX)):
        write(pattern / name / "min", 0)  # 7.2: every max defaults to 0, matching nothing
        write(pattern / name / "max", hi)

    phases["staged"] = round(time.monotonic() - begun, 2)
    write(kd / "state", "on")
    phases["on"] = round(time.monotonic() - begun, 2)
    assert read(kd / "state") == "on"
    pid = int(read(kd / "pid"))
    assert pid > 0
    assert read(f"/proc/{pid}/comm").startswith("kdamond")

    # Regions start coarse (min 10 over the whole address space) and split each
    # aggregation; poll the stat scheme's snapshot until the hot buffer shows.
    hot_lo, hot_hi = hot_child.hot
    cold_lo, cold_hi = hot_child.cold
    regions: list[tuple[int, int, int]] = []
    # (s since on, s the read took, regions, their largest nr_accesses on HOT): this test
    # took 3-5 s in some full lane runs and 34-35 s in others, so each run keeps its polls
    polls: list[tuple[float, float, int, int]] = []
    t0 = time.monotonic()
    deadline = t0 + 20
    while time.monotonic() < deadline:
        time.sleep(1)
        t = time.monotonic()
        regions = tried_regions(kd, scheme)
        seen = max((acc for lo, hi, acc in regions if lo < hot_hi and hi > hot_lo), default=0)
        polls.append((round(t - t0, 1), round(time.monotonic() - t, 2), len(regions), seen))
        if seen:
            break
    phases["seen"] = round(time.monotonic() - begun, 2)
    record = Path(os.environ["REACTOR_LANE_OUT"], "guest_environment.txt")
    with record.open("a") as f:
        f.write(f"vaddr kdamond polls (s, read s, regions, hot max nr_accesses): {polls}\n")
    assert regions, "the kdamond reported no regions"
    hot = [acc for lo, hi, acc in regions if lo < hot_hi and hi > hot_lo]
    assert hot and max(hot) > 0, (
        f"no access seen on the hot buffer {hot_child.hot} (child alive: "
        f"{hot_child.proc.poll() is None}); cold {hot_child.cold}; regions {sorted(regions)}"
    )
    cold_only = [acc for lo, hi, acc in regions if lo >= cold_lo and hi <= cold_hi]
    assert all(acc == 0 for acc in cold_only), f"accesses on the cold buffer: {sorted(regions)}"

    write(kd / "state", "off")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (read(kd / "state") != "off" or kdamond_alive(pid)):
        time.sleep(0.05)
    phases["off"] = round(time.monotonic() - begun, 2)
    with record.open("a") as f:
        f.write(f"vaddr kdamond phases (s since the test began; the fixtures outside): {phases}\n")
    assert read(kd / "state") == "off"
    assert not kdamond_alive(pid), f"kdamond thread {pid} still there 10 s after off"
    assert read(kd / "pid") == "-1"


def kdamond_alive(pid: int) -> bool:
    try:
        return read(f"/proc/{pid}/comm").startswith("kdamond")
    except OSError:
        return False


# --------------------------------------------------------------------------- NUMA and tiers


def test_two_numa_nodes_second_without_cpus() -> None:
    assert node_list(read(NODES / "online")) == {0, 1}
    assert node_list(read(NODES / "has_cpu")) == {0}
    assert node_list(read(NODES / "has_memory")) == {0, 1}
    assert read(NODES / "node1" / "cpulist") == ""
    assert meminfo_kb(NODES / "node0" / "meminfo", "MemTotal") > 800 * 1024
    assert meminfo_kb(NODES / "node1" / "meminfo", "MemTotal") > 400 * 1024


def test_memory_tiers_put_node1_below_node0() -> None:
    """HMAT gives node1 4x the latency: a lower (higher-numbered) memory tier, like CXL."""
    tier_of: dict[int, int] = {}
    for tier in TIERS.glob("memory_tier*"):
        for node in node_list(read(tier / "nodelist")):
            tier_of[node] = int(tier.name.removeprefix("memory_tier"))
    assert set(tier_of) == {0, 1}, tier_of
    assert tier_of[1] > tier_of[0], tier_of


# --------------------------------------------------------------------------- swap, cgroups


def test_zram_swap_active() -> None:
    lines = read("/proc/swaps").splitlines()[1:]
    zram = [line.split() for line in lines if line.startswith("/dev/zram0 ")]
    assert zram, f"no zram swap: {lines}"
    _name, kind, size_kb, _used, prio = zram[0]
    assert kind == "partition"
    assert int(size_kb) >= 500 * 1024
    assert int(prio) == 100
    assert meminfo_kb(Path("/proc/meminfo"), "SwapTotal") >= 500 * 1024


def test_cgroup2_with_memory_controller() -> None:
    mounts = [line.split() for line in read("/proc/mounts").splitlines()]
    assert any(m[1] == str(CGROUP) and m[2] == "cgroup2" for m in mounts)
    assert "memory" in read(CGROUP / "cgroup.controllers").split()
    assert {"memory", "cpu", "io"} <= set(read(CGROUP / "cgroup.subtree_control").split())
    child = CGROUP / f"lane-test-{os.getpid()}"
    child.mkdir()
    try:
        write(child / "memory.max", 64 * MiB)
        assert read(child / "memory.max") == str(64 * MiB)
        assert (child / "memory.pressure").exists()
        assert (child / "memory.swap.max").exists()
    finally:
        child.rmdir()


def test_thp_and_sysctls_as_set_up() -> None:
    """The state .ci/guest_setup.sh promises."""
    assert "[madvise]" in read("/sys/kernel/mm/transparent_hugepage/enabled").split()
    assert "[madvise]" in read("/sys/kernel/mm/transparent_hugepage/defrag").split()
    assert read("/proc/sys/vm/swappiness") == "100"
    assert read("/proc/sys/kernel/numa_balancing") == "0"
    assert read("/sys/kernel/mm/numa/demotion_enabled") == "true"
