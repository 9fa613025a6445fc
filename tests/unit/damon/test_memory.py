"""System RAM ranges from a captured /proc/iomem, and per-node ranges from memory blocks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor.damon.memory import (
    IomemHidden,
    intersect,
    merge,
    node_memory_ranges,
    node_ram_ranges,
    parse_iomem,
    parse_system_ram,
    read_system_ram,
)
from reactor.errors import KernelFormatError
from reactor.kernelfs import RealKernelFS
from reactor.testing import FakeKernelFS
from tests.unit.damon.conftest import CAPTURED

IOMEM = (CAPTURED / "host-6.18" / "proc_iomem").read_text()
GiB = 1 << 30


def test_captured_iomem_gives_the_three_top_level_ram_ranges() -> None:
    """The host's capture has System RAM at 4 KiB-640 KiB, 1 MiB-3 GiB and 4 GiB-25 GiB."""
    assert parse_system_ram(IOMEM) == (
        (0x1000, 0x9FC00),
        (0x100000, 0xC0000000),
        (0x100000000, 0x640000000),
    )
    total = sum(end - start for start, end in parse_system_ram(IOMEM))
    assert 23 * GiB < total < 24 * GiB


def test_nested_entries_are_not_ram() -> None:
    """Kernel code/data nested under System RAM keep their depth and are not counted again."""
    entries = parse_iomem(IOMEM)
    code = next(e for e in entries if e.name == "Kernel code")
    assert code.depth == 1 and code.start == 0x01000000 and code.end == 0x0220BB08


def test_zero_addresses_as_non_root_are_reported() -> None:
    """A non-root read (all zeros) raises IomemHidden saying root is needed."""
    hidden = "00000000-00000000 : Reserved\n00000000-00000000 : System RAM\n"
    with pytest.raises(IomemHidden, match=r"shows addresses only to root \(CAP_SYS_ADMIN\)"):
        parse_system_ram(hidden)


def test_malformed_line_is_quoted() -> None:
    """A line that is not 'start-end : name' is a KernelFormatError quoting it."""
    with pytest.raises(KernelFormatError, match=r"'garbage here'"):
        parse_iomem("00001000-0009fbff : System RAM\ngarbage here\n")


def _two_nodes() -> FakeKernelFS:
    """The lane guest's shape: node0 1 GiB (blocks 0-7), node1 512 MiB (blocks 8-11)."""
    fs = FakeKernelFS()
    fs.set_file("/sys/devices/system/memory/block_size_bytes", "8000000\n")
    for m in range(12):
        node = 0 if m < 8 else 1
        fs.add_tree(f"/sys/devices/system/node/node{node}/memory{m}", {"state": "online\n"})
    fs.set_file("/sys/devices/system/node/node1/memory11/state", "offline\n")
    fs.set_file(
        "/proc/iomem",
        "00000000-00000fff : Reserved\n00001000-0009fbff : System RAM\n"
        "00100000-5ffdffff : System RAM\n  01000000-01ffffff : Kernel code\n",
    )
    return fs


def test_node_ranges_come_from_online_memory_blocks() -> None:
    """Blocks merge into one range per run; an offline block is left out."""
    fs = _two_nodes()
    assert node_memory_ranges(fs, 0) == ((0, GiB),)
    assert node_memory_ranges(fs, 1) == ((GiB, GiB + 3 * 128 * (1 << 20)),)


def test_node_ranges_are_cut_to_system_ram() -> None:
    """Node 0's blocks intersected with System RAM drop the low reserved page and the top hole."""
    fs = _two_nodes()
    assert node_ram_ranges(fs, 0) == ((0x1000, 0x9FC00), (0x100000, GiB))
    assert node_ram_ranges(fs, 1) == ((GiB, 0x58000000),)  # block 11 is offline


def test_this_host_reads_its_ram_through_the_seam() -> None:
    """As root on this host, read_system_ram returns ranges that cover node 0's memory."""
    fs = RealKernelFS("/")
    try:
        ram = read_system_ram(fs)
    except IomemHidden:
        pytest.skip("not root: /proc/iomem hides addresses")
    assert ram and all(start < end for start, end in ram)
    if fs.is_dir("/sys/devices/system/node/node0"):
        assert node_ram_ranges(fs, 0)


_RANGES = st.lists(
    st.tuples(st.integers(0, 200), st.integers(1, 40)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=12,
)


@given(_RANGES, _RANGES)
def test_intersect_is_the_merged_pairwise_overlap(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    """The one-sweep intersection equals every pairwise overlap, merged, for unsorted
    and overlapping inputs (a process's mappings against a monitor's cold regions)."""
    pairwise = [
        (max(s1, s2), min(e1, e2)) for s1, e1 in a for s2, e2 in b if max(s1, s2) < min(e1, e2)
    ]
    assert intersect(a, b) == merge(pairwise)
