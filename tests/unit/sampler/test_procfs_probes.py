"""Parsers of maps/smaps/stat on verbatim captures, and probes driven through the fake kernel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from reactor.errors import KernelFormatError, TargetVanished, UnsafeWrite
from reactor.sampler.engine import AccessedRanges
from reactor.sampler.probes import ReferencedSession, SoftDirtySession, mask_to_ranges
from reactor.sampler.procfs import (
    is_kernel_thread,
    parse_maps,
    parse_smaps,
    parse_statm_rss_pages,
    three_regions,
)
from reactor.sampler.targets import TargetSpec, discover_pids, ineligible_reason
from reactor.testing import FakeKernelFS

DATA = Path(__file__).parent / "data"
PAGE = 4096
MIB = 2**20


def layout() -> dict[str, object]:
    return json.loads((DATA / "workload_layout.json").read_text())


def test_smaps_capture_shows_the_split_chunks() -> None:
    """parse_smaps finds the workload's four 1 MiB chunk VMAs with their Rss (all populated)."""
    maps = parse_smaps((DATA / "workload_smaps").read_text())
    chunks = [tuple(c) for c in layout()["mappings"]]  # type: ignore[union-attr]
    for start, end in chunks:
        idx = np.flatnonzero(maps.start == start)
        assert len(idx) == 1 and maps.end[idx[0]] == end
        assert maps.rss[idx[0]] == MIB
    assert len(maps) == len(parse_maps((DATA / "workload_maps").read_text()))


def test_smaps_with_a_missing_field_is_refused() -> None:
    """A mapping without its Referenced line is a format error that names the counts."""
    text = (DATA / "workload_smaps").read_text().replace("Referenced:", "Xeferenced:", 1)
    with pytest.raises(KernelFormatError, match="mappings but"):
        parse_smaps(text)


def test_three_regions_skip_the_two_largest_gaps() -> None:
    """three_regions cuts the mapped span at its two largest gaps, like DAMON vaddr."""
    maps = parse_maps((DATA / "workload_maps").read_text())
    regions = three_regions(maps)
    assert len(regions) == 3
    assert all(a < b for a, b in regions)
    assert all(regions[i][1] <= regions[i + 1][0] for i in range(2))
    base = int(layout()["base"])  # type: ignore[call-overload]
    assert any(a <= base < b for a, b in regions)


def test_kernel_threads_are_recognized() -> None:
    """PF_KTHREAD in /proc/PID/stat marks kthreadd, not the workload."""
    assert is_kernel_thread((DATA / "kthreadd_stat").read_text())
    assert not is_kernel_thread((DATA / "workload_stat").read_text())
    assert parse_statm_rss_pages("100 42 3 1 0 50 0\n") == 42


def fake_process(fs: FakeKernelFS, pid: int, smaps: str, *, kthread: bool = False) -> None:
    flags = 0x00200000 if kthread else 0x400000
    fs.set_file(f"/proc/{pid}/stat", f"{pid} (work (x)) S 1 1 1 0 -1 {flags} 0 0\n")
    fs.set_file(f"/proc/{pid}/smaps", smaps)
    fs.set_file(f"/proc/{pid}/maps", smaps)
    fs.set_file(f"/proc/{pid}/clear_refs", "")
    fs.set_file(f"/proc/{pid}/comm", "work\n")
    fs.set_file(f"/proc/{pid}/statm", "1000 600 0 0 0 0 0\n")


SMAPS = """\
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Rss:                1024 kB
Referenced:          256 kB
Anonymous:          1024 kB
AnonHugePages:         0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0 [heap]
Rss:                1024 kB
Referenced:            0 kB
Anonymous:          1024 kB
AnonHugePages:         0 kB
"""


def test_referenced_probe_reads_then_clears() -> None:
    """A referenced collect reads smaps and then writes clear_refs 1, per mapping bytes."""
    fs = FakeKernelFS()
    fake_process(fs, 4242, SMAPS)
    session = ReferencedSession(fs, 4242)
    session.start()
    maps = session.collect()
    assert maps.referenced.tolist() == [256 * 1024, 0]
    assert list(fs.writes) == [("/proc/4242/clear_refs", "1")] * 2
    narrowed = ReferencedSession(fs, 4242, [(0x7F0000200000, 0x7F0000201000)]).collect()
    assert narrowed.start.tolist() == [0x7F0000200000]


def test_referenced_probe_reports_a_vanished_process() -> None:
    """A process whose /proc entry is gone raises TargetVanished, not a generic error."""
    fs = FakeKernelFS()
    fake_process(fs, 4243, SMAPS)
    session = ReferencedSession(fs, 4243)
    fs.remove("/proc/4243")
    with pytest.raises(TargetVanished):
        session.collect()


def test_clear_refs_is_never_written_to_init_or_self() -> None:
    """Probes that write clear_refs refuse pid 1 and reactor's own process."""
    fs = FakeKernelFS()
    for pid in (1, os.getpid()):
        with pytest.raises(UnsafeWrite, match="clear_refs is never written"):
            ReferencedSession(fs, pid)
        with pytest.raises(UnsafeWrite):
            SoftDirtySession(fs, pid)


def test_soft_dirty_probe_reads_bit_55() -> None:
    """Soft-dirty pages (pagemap bit 55) become accessed ranges, then clear_refs 4 is written."""
    fs = FakeKernelFS()
    fake_process(fs, 4244, "00010000-00014000 rw-p 00000000 00:00 0\n")
    entries = np.zeros(0x14000 // PAGE, dtype=np.uint64)
    first = 0x10000 // PAGE
    entries[first + 1] = np.uint64(1 << 55) | np.uint64(1 << 63)
    entries[first + 2] = np.uint64(1 << 63)
    fs.set_file("/proc/4244/pagemap", entries.tobytes())
    session = SoftDirtySession(fs, 4244)
    got = session.collect()
    assert got.starts.tolist() == [0x11000] and got.ends.tolist() == [0x12000]
    assert fs.writes[-1] == ("/proc/4244/clear_refs", "4")


def test_mask_to_ranges_groups_runs() -> None:
    """Runs of accessed pages become one range each."""
    got = mask_to_ranges(0x1000, np.array([1, 1, 0, 1, 0, 0, 1], dtype=bool), PAGE)
    assert got.starts.tolist() == [0x1000, 0x4000, 0x7000]
    assert got.ends.tolist() == [0x3000, 0x5000, 0x8000]
    assert isinstance(got, AccessedRanges)


def test_targets_exclude_init_self_and_kernel_threads() -> None:
    """Discovery never returns pid 1, reactor's own pid, kernel threads or gone processes."""
    fs = FakeKernelFS()
    fake_process(fs, 1, SMAPS)
    fake_process(fs, 500, SMAPS)
    fake_process(fs, 501, SMAPS, kthread=True)
    fake_process(fs, os.getpid(), SMAPS)
    fs.set_file("/sys/fs/cgroup/app/cgroup.procs", f"1\n500\n501\n{os.getpid()}\n777\n")
    spec = TargetSpec(name="app", cgroup="/sys/fs/cgroup/app")
    assert discover_pids(fs, spec) == [500]
    assert ineligible_reason(fs, 501) == "kernel thread"
    assert ineligible_reason(fs, 777) == "no such process"
    by_name = TargetSpec(name="sel", comm="wor.*", min_rss_bytes=600 * PAGE)
    assert discover_pids(fs, by_name) == [500]
    too_big = TargetSpec(name="sel", comm="work", min_rss_bytes=601 * PAGE)
    assert discover_pids(fs, too_big) == []


def test_target_spec_needs_exactly_one_selector() -> None:
    """A target with two selectors (or none) is refused, naming the target."""
    with pytest.raises(ValueError, match="'x': set exactly one"):
        TargetSpec(name="x", pids=(5,), comm="y")
    with pytest.raises(ValueError, match="exactly one"):
        TargetSpec(name="x")


def test_fast_smaps_parser_matches_the_regex_parser() -> None:
    """The vectorized bytes parser gives the same mappings and counts as the regex one."""
    raw = (DATA / "workload_smaps").read_bytes()
    from reactor.sampler.procfs import parse_smaps_bytes

    slow, fast = parse_smaps(raw.decode()), parse_smaps_bytes(raw)
    for name in ("start", "end", "inode", "rss", "referenced", "anonymous", "anon_huge"):
        assert np.array_equal(getattr(slow, name), getattr(fast, name)), name
    assert slow.path == fast.path and slow.perms == fast.perms
