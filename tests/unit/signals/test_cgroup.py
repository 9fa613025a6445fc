"""Cgroup memory: parsers on the captured v1 files (a 64 MiB-limited group under a
file-backed workload on this host) and malformed text, the poller for v1 and v2, and a
cgroup that vanishes, or is re-created under the same path."""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import pickle
import re
from collections.abc import Callable

import pytest

from reactor.errors import KernelFormatError, KernelInterfaceError, TargetVanished
from reactor.signals.cgroup import (
    V1_UNLIMITED_BYTES,
    CgroupPoller,
    is_counter,
    parse_cgroup_int,
    parse_limit,
    parse_memory_events,
    parse_memory_stat,
)
from reactor.testing import FakeKernelFS
from tests.captures import CAPTURED

Captured = Callable[[str], str]
V1 = "/sys/fs/cgroup/memory/app"
V2 = "/sys/fs/cgroup/app"
PSI_DIR = "/sys/fs/cgroup/unified/app"
PSI0 = (
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)
PSI1 = (
    "some avg10=5.00 avg60=1.00 avg300=0.20 total=250000\n"
    "full avg10=4.00 avg60=1.00 avg300=0.20 total=200000\n"
)

# cgroup v2 memory.stat in the kernel's format (mm/memcontrol.c memory_stat_format; this
# host has no v2 memory controller, so it is written out here: sizes in bytes, events as
# counts). Guest-kernel captures will replace it when they arrive.
V2_STAT = """anon 1048576
file 67108864
kernel 524288
shmem 0
file_mapped 4096
inactive_anon 1048576
active_anon 0
inactive_file 50331648
active_file 16777216
unevictable 0
workingset_nodes 12
workingset_refault_anon 0
workingset_refault_file {refault}
workingset_activate_anon 0
workingset_activate_file 10
pgscan {pgscan}
pgsteal 900
pgfault 5000
pgmajfault {majfault}
thp_fault_alloc 0
"""
V2_EVENTS = "low 0\nhigh 0\nmax {max}\noom 0\noom_kill {kill}\noom_group_kill 0\n"


def v1_fs(captured: Captured) -> FakeKernelFS:
    """The captured v1 group at V1, with the captured v2 PSI of its paired group at PSI_DIR."""
    fs = FakeKernelFS()
    for name in ("memory.stat", "memory.usage_in_bytes", "memory.limit_in_bytes", "memory.failcnt"):
        fs.set_file(f"{V1}/{name}", captured(f"cgroup_memory_limited_{name}"))
    fs.set_file(f"{PSI_DIR}/memory.pressure", PSI0)
    return fs


def v2_files(
    refault: int = 0, pgscan: int = 0, majfault: int = 0, max_: int = 0, kill: int = 0
) -> dict[str, str]:
    return {
        "memory.current": "68157440\n",
        "memory.max": "max\n",
        "memory.stat": V2_STAT.format(refault=refault, pgscan=pgscan, majfault=majfault),
        "memory.events": V2_EVENTS.format(max=max_, kill=kill),
        "memory.pressure": PSI0,
    }  # fmt: skip


def v2_fs(**counters: int) -> FakeKernelFS:
    fs = FakeKernelFS()
    fs.add_tree(V2, v2_files(**counters))
    return fs


def test_parse_v1_captures(captured: Captured) -> None:
    """The captured limited v1 group: memory.stat keyed with local and total_ entries, usage
    at its 64 MiB limit, and the limit hits counted in failcnt."""
    stat = parse_memory_stat(captured("cgroup_memory_limited_memory.stat"), f"{V1}/memory.stat")
    assert stat["pgmajfault"] == 131072 == stat["total_pgmajfault"]  # two passes of 65536 pages
    assert stat["workingset_refault_file"] == 65536
    assert stat["hierarchical_memory_limit"] == 64 << 20
    assert stat["total_inactive_file"] == 65859584
    assert (
        parse_cgroup_int(captured("cgroup_memory_limited_memory.usage_in_bytes"), "u") == 64 << 20
    )
    assert parse_limit(captured("cgroup_memory_limited_memory.limit_in_bytes"), "l") == 64 << 20
    assert parse_cgroup_int(captured("cgroup_memory_limited_memory.failcnt"), "f") == 117039


def test_limits() -> None:
    """'max' (v2) and PAGE_COUNTER_MAX bytes (v1) both mean no limit."""
    assert parse_limit("max\n", "m") is None
    assert parse_limit(f"{V1_UNLIMITED_BYTES}\n", "m") is None
    assert parse_limit("4096\n", "m") == 4096


@pytest.mark.parametrize(
    ("parse", "text", "message", "line"),
    [
        (parse_memory_stat, "anon 1\nfile\n", "expected 'name integer'", "file"),
        (parse_memory_stat, "anon 1\nanon 2\n", "duplicate entry 'anon'", "anon 2"),
        (parse_memory_stat, "", "no entries", ""),
        (parse_memory_events, "low 0\nhigh 0\n", "missing max, oom_kill", "low 0\nhigh 0\n"),
        (parse_cgroup_int, "12 kB\n", "expected one non-negative integer", "12 kB\n"),
        (parse_limit, "-1\n", "expected one non-negative integer", "-1\n"),
    ],
)
def test_parse_malformed(
    parse: Callable[[str, str], object], text: str, message: str, line: str
) -> None:
    """Malformed cgroup files raise KernelFormatError naming the file and quoting the line."""
    with pytest.raises(KernelFormatError, match=rf"^/cg/f: {re.escape(message)}") as info:
        parse(text, "/cg/f")
    assert info.value.line == line


def test_counters_and_levels() -> None:
    """Event counts are counters; sizes and workingset_nodes are levels."""
    assert is_counter("pgmajfault") and is_counter("workingset_refault_file")
    assert is_counter("thp_fault_alloc") and is_counter("pgpgin") and is_counter("zswpout")
    assert not is_counter("workingset_nodes") and not is_counter("anon")
    assert not is_counter("inactive_file") and not is_counter("hierarchical_memory_limit")


def test_v1_poller_rates(captured: Captured) -> None:
    """v1: the first poll is a baseline; then rates of the total_ counters, failcnt hits
    over the interval, LRU levels, and the paired v2 group's memory PSI."""
    fs = v1_fs(captured)
    poller = CgroupPoller(fs, V1, pressure_dir=PSI_DIR)
    assert (poller.version, poller.topic) == ("v1", "cgroup.app")
    assert poller.poll(10.0) is None
    stat = captured("cgroup_memory_limited_memory.stat")
    fs.set_file(
        f"{V1}/memory.stat",
        stat.replace("total_pgmajfault 131072", "total_pgmajfault 196608").replace(
            "total_workingset_refault_file 65536", "total_workingset_refault_file 98304"
        ),
    )
    fs.set_file(f"{V1}/memory.failcnt", "117539\n")
    fs.set_file(f"{PSI_DIR}/memory.pressure", PSI1)
    s = poller.poll(12.0)
    assert s is not None
    assert s.interval_s == 2.0
    assert s.pgmajfault_per_s == (196608 - 131072) / 2  # the total_ entry, not the local one
    assert s.workingset_refault_file_per_s == (98304 - 65536) / 2
    assert s.pgscan_per_s is None and s.oom_kills is None  # v1 has neither
    assert s.limit_hits == 500
    assert (s.usage_bytes, s.limit_bytes) == (64 << 20, 64 << 20)
    assert s.file_bytes == 65859584 and s.anon_bytes == 0
    assert s.counters["pgmajfault"] == 196608 and s.counters["failcnt"] == 117539
    assert s.psi is not None and s.psi.some_stall_us == 250000
    assert s.summary() == {
        "usage_bytes": 64 << 20,
        "limit_hits": 500,
        "workingset_refault_file_per_s": 16384.0,
        "pgmajfault_per_s": 32768.0,
        "psi_some_share": 0.125,
    }


def test_v2_poller_rates_and_events() -> None:
    """v2 (auto-detected): stat rates, memory.events deltas as limit hits and OOM kills,
    and the group's own memory.pressure."""
    fs = v2_fs()
    poller = CgroupPoller(fs, V2)
    assert poller.version == "v2"
    assert poller.poll(0.0) is None
    fs.add_tree(V2, v2_files(refault=40, pgscan=2000, majfault=30, max_=3, kill=1))
    s = poller.poll(0.5)
    assert s is not None
    assert s.pgscan_per_s == 4000.0 and s.workingset_refault_file_per_s == 80.0
    assert s.pgmajfault_per_s == 60.0 and s.pgsteal_per_s == 0.0
    assert (s.limit_hits, s.oom_kills) == (3, 1)
    assert s.limit_bytes is None and s.usage_bytes == 68157440
    assert s.psi is not None and s.psi.some_share == 0.0
    assert "workingset_nodes" not in s.rates_per_s and "events.max" not in s.rates_per_s


def test_missing_cgroup_at_construction_is_loud() -> None:
    """A path that is not a memory cgroup when the poller is built is a KernelInterfaceError
    (a wrong config path should not pass as a vanished target)."""
    with pytest.raises(KernelInterfaceError, match=r"^/sys/fs/cgroup/app: not a cgroup with"):
        CgroupPoller(FakeKernelFS({"sys/fs/cgroup": {}}), V2)
    assert not issubclass(TargetVanished, KernelInterfaceError)


def test_vanished_cgroup_then_recreated() -> None:
    """A removed group raises TargetVanished on every poll until a group of the same path
    exists again, which is a new instance with a new baseline."""
    fs = v2_fs()
    poller = CgroupPoller(fs, V2)
    poller.poll(0.0)
    assert poller.poll(1.0) is not None
    fs.remove(V2)
    with pytest.raises(TargetVanished, match=rf"^target {V2} has vanished$") as info:
        poller.poll(2.0)
    assert info.value.target == V2
    with pytest.raises(TargetVanished):
        poller.poll(3.0)
    fs.add_tree(V2, v2_files(pgscan=5))
    assert poller.poll(4.0) is None
    s = poller.poll(5.0)
    assert s is not None and s.instance == 2 and s.pgscan_per_s == 0.0


def test_recreated_between_polls_starts_a_new_baseline() -> None:
    """A group removed and created again between two polls is not the same group: its old
    files fail with ENODEV, so the poller reopens and returns a new baseline, not a rate
    across two groups' counters."""
    fs = v2_fs(pgscan=1_000_000)
    poller = CgroupPoller(fs, V2)
    poller.poll(0.0)
    fs.remove(V2)
    fs.add_tree(V2, v2_files(pgscan=10))
    assert poller.poll(1.0) is None
    s = poller.poll(2.0)
    assert s is not None and s.instance == 2 and s.pgscan_per_s == 0.0


def test_other_failures_are_kernel_interface_errors() -> None:
    """A read that fails while the group still exists is a KernelInterfaceError (counted
    by the runtime), not a vanished target."""
    fs = v2_fs()
    poller = CgroupPoller(fs, V2)
    fs.inject_fault(f"{V2}/memory.stat", errno.EIO, ops=("read",))
    with pytest.raises(KernelInterfaceError, match=r"memory.stat: cannot read \(EIO"):
        poller.poll(0.0)
    assert poller.poll(1.0) is None  # recovered: baseline


def test_paired_pressure_group_removed_while_memory_group_stays(captured: Captured) -> None:
    """On a hybrid host, removing the paired v2 group (its memory.pressure now raises
    TargetVanished in PsiPoller) while the v1 memory group stays is a failed read naming
    the pressure file, not the memory group vanishing; the group's return resumes it."""
    fs = v1_fs(captured)
    poller = CgroupPoller(fs, V1, pressure_dir=PSI_DIR)
    poller.poll(0.0)
    fs.remove(PSI_DIR)
    with pytest.raises(KernelInterfaceError, match=rf"^{PSI_DIR}/memory.pressure: cannot open"):
        poller.poll(1.0)
    fs.set_file(f"{PSI_DIR}/memory.pressure", PSI1)
    assert poller.poll(2.0) is None  # reopened: a new baseline
    s = poller.poll(3.0)
    assert s is not None and s.psi is not None and s.psi.some_stall_us == 0


class InodeFakeFS(FakeKernelFS):
    """A fake seam that reports inode numbers (the cgroup id on cgroupfs)."""

    ids: dict[str, int]

    def inode(self, path: str) -> int:
        return self.ids[path]


def test_cgroup_id_from_the_seam() -> None:
    """Where the seam reports inode numbers the sample carries the cgroup id, and a new id
    at the same path starts a new baseline."""
    fs = InodeFakeFS()
    fs.ids = {V2: 101}
    fs.add_tree(V2, v2_files())
    poller = CgroupPoller(fs, V2)
    poller.poll(0.0)
    s = poller.poll(1.0)
    assert s is not None and s.cgroup_id == 101
    fs.ids[V2] = 202
    assert poller.poll(2.0) is None
    s = poller.poll(3.0)
    assert s is not None and (s.cgroup_id, s.instance) == (202, 2)


def test_published_value_is_plain_frozen_data(captured: Captured) -> None:
    """The published CgroupMemory survives pickle, deepcopy and asdict -> JSON, and its
    summary is a flat JSON object of numbers."""
    fs = v1_fs(captured)
    poller = CgroupPoller(fs, V1, pressure_dir=PSI_DIR)
    poller.poll(0.0)
    value = poller.poll(1.0)
    assert value is not None
    assert pickle.loads(pickle.dumps(value)) == value == copy.deepcopy(value)
    json.dumps(dataclasses.asdict(value))
    assert all(isinstance(v, int | float) for v in value.summary().values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.usage_bytes = 0  # type: ignore[misc]


def guest(name: str) -> str:
    return (CAPTURED / "guest-debian-7.2" / name).read_text()


def test_parse_guest_v2_captures() -> None:
    """The guest kernel's v2 files (7.2.12, a group pushed under memory.max=64M): memory.stat
    keyed, memory.events with its limit hits, memory.pressure with a full line."""
    stat = parse_memory_stat(guest("cgroup_lane-capture_memory.stat"), "s")
    assert (stat["pgscan"], stat["pgsteal"], stat["pgmajfault"]) == (149118, 138184, 24579)
    assert stat["pgdemote_direct"] == 58893 and stat["anon"] == 66584576
    assert is_counter("pgdemote_direct") and is_counter("swpout_zero")
    events = parse_memory_events(guest("cgroup_lane-capture_memory.events"), "e")
    assert (events["max"], events["oom_kill"], events["sock_throttled"]) == (1702, 0, 0)


def test_v2_poller_on_guest_captures() -> None:
    """A v2 poller over the guest's captured stat, events and pressure (memory.current and
    memory.max were not captured and are given here): a second reading with more scanning
    and limit hits gives their rates and deltas."""
    fs = FakeKernelFS()
    stat = guest("cgroup_lane-capture_memory.stat")
    events = guest("cgroup_lane-capture_memory.events")
    fs.add_tree(V2, {
        "memory.current": "67108864\n", "memory.max": "67108864\n", "memory.stat": stat,
        "memory.events": events, "memory.pressure": guest("cgroup_lane-capture_memory.pressure"),
    })  # fmt: skip
    poller = CgroupPoller(fs, V2, "v2")
    assert poller.poll(0.0) is None
    fs.set_file(f"{V2}/memory.stat", stat.replace("pgscan 149118", "pgscan 149618"))
    fs.set_file(f"{V2}/memory.events", events.replace("max 1702", "max 1712"))
    s = poller.poll(2.0)
    assert s is not None
    assert s.pgscan_per_s == 250.0 and s.limit_hits == 10 and s.oom_kills == 0
    assert s.anon_bytes == 38150144 + 28434432 and s.file_bytes == 0
    assert s.limit_bytes == 64 << 20
