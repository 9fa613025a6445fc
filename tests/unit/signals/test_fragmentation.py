"""Fragmentation: buddyinfo/zoneinfo/extfrag parsers on captures and malformed text, the
kernel's indices and node score by hand, and the poller on the fake kernel tree."""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import pickle
import re
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from reactor.errors import KernelFormatError, KernelInterfaceError
from reactor.signals.fragmentation import (
    EXTFRAG_INDEX,
    UNUSABLE_INDEX,
    FragmentationPoller,
    compaction_wmarks,
    compute_fragmentation,
    contig_page_info,
    extfrag_for_order,
    fragmentation_index,
    fragmentation_score_node,
    parse_buddyinfo,
    parse_extfrag,
    parse_zoneinfo,
    unusable_free_index,
    zoneinfo_pcp_pages,
)
from reactor.signals.vmstat import VmstatPoller
from reactor.testing import FakeKernelFS
from tests.captures import CAPTURED

Captured = Callable[[str], str]

# The captured Normal zone (host-6.18/proc_buddyinfo), free blocks of order 0..10.
NORMAL = (22, 2, 0, 7, 15, 5, 4, 2, 4, 2, 36)


def test_parse_buddyinfo_capture(captured: Captured) -> None:
    """The host capture parses to the three populated zones of node 0 with 11 orders each."""
    buddy = parse_buddyinfo(captured("proc_buddyinfo"))
    assert [(z.node, z.zone) for z in buddy.zones] == [(0, "DMA"), (0, "DMA32"), (0, "Normal")]
    assert buddy.nr_orders == 11
    assert buddy.zone(0, "Normal").free_blocks == NORMAL
    assert buddy.zone(0, "DMA").free_blocks == (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3)
    # DMA32: 1 + 1*2 + 4*4 + 2*8 + 5*16 + 4*32 + 3*64 + 3*128 + 4*256 + 2*512 + 752*1024
    assert buddy.zone(0, "DMA32").free_pages == 772915
    with pytest.raises(KeyError):
        buddy.zone(1, "Normal")


def test_hand_computation_on_captured_normal_zone() -> None:
    """The kernel's arithmetic on the captured Normal zone, written out by hand."""
    # free pages = Σ count[k] << k
    #   = 22 + 2*2 + 0*4 + 7*8 + 15*16 + 5*32 + 4*64 + 2*128 + 4*256 + 2*512 + 36*1024
    #   = 22 + 4 + 0 + 56 + 240 + 160 + 256 + 256 + 1024 + 1024 + 36864 = 39906
    # free blocks = 22+2+0+7+15+5+4+2+4+2+36 = 99
    # order 9: suitable blocks = count[9] + count[10] << 1 = 2 + 72 = 74 -> 74 << 9 = 37888 pages
    info = contig_page_info(NORMAL, 9)
    assert (info.free_pages, info.free_blocks_total, info.free_blocks_suitable) == (39906, 99, 74)
    # unusable(9) = (39906 - 37888) * 1000 // 39906 = 2018000 // 39906 = 50  (0.050)
    assert unusable_free_index(NORMAL, 9) == 50
    # order 5: suitable = 5 + 4*2 + 2*4 + 4*8 + 2*16 + 36*32 = 5+8+8+32+32+1152 = 1237 -> 39584
    # unusable(5) = (39906 - 39584) * 1000 // 39906 = 322000 // 39906 = 8  (0.008)
    assert unusable_free_index(NORMAL, 5) == 8
    # order 0: every free page is usable -> 0
    assert unusable_free_index(NORMAL, 0) == 0
    # A block of order 9 is free, so an order-9 allocation would succeed: -1000 (-1.000).
    assert fragmentation_index(NORMAL, 9) == -1000
    # Proactive compaction's zone score: (39906 - 37888) * 100 // 39906 = 201800 // 39906 = 5
    assert extfrag_for_order(NORMAL, 9) == 5


def test_hand_computation_fragmentation_index_when_allocation_fails() -> None:
    """Where no block of the order is free, the index says whether memory or contiguity
    is lacking, in the kernel's integer thousandths."""
    # 100 free single pages and 50 free pairs: 200 free pages in 150 blocks, none of 4 pages.
    blocks = (100, 50, 0, 0)
    # order 2 (4 pages): 1000 - (1000 + 200*1000 // 4) // 150 = 1000 - 51000 // 150
    #                  = 1000 - 340 = 660 -> fragmentation more than lack of memory
    assert fragmentation_index(blocks, 2) == 660
    # order 3 (8 pages): 1000 - (1000 + 200000 // 8) // 150 = 1000 - 26000 // 150 = 1000 - 173 = 827
    assert fragmentation_index(blocks, 3) == 827
    # order 1: a pair is free -> the allocation succeeds -> -1000
    assert fragmentation_index(blocks, 1) == -1000
    # unusable(2) = (200 - 0) * 1000 // 200 = 1000: every free page is in too-small blocks
    assert unusable_free_index(blocks, 2) == 1000
    # A lone free block of 8 pages, asking for 16: 1000 - (1000 + 8000 // 16) // 1
    #   = 1000 - 1500 = -500: the formula's "1000 +" goes negative with a single block, and
    #   the kernel prints it as "0.-500" (index / 1000 = 0, index % 1000 = -500).
    assert fragmentation_index((0, 0, 0, 1, 0), 4) == -500
    (row,) = parse_extfrag("Node 0, zone   Normal -1.000  0.-500  0.660 \n", EXTFRAG_INDEX)
    assert row.index_milli == (-1000, -500, 660)


def test_empty_zone_conventions() -> None:
    """With nothing free: unusable is 1000, fragmentation index 0, zone score 0 (kernel's)."""
    empty = (0,) * 11
    assert unusable_free_index(empty, 3) == 1000
    assert fragmentation_index(empty, 3) == 0
    assert extfrag_for_order(empty, 9) == 0


def test_fragmentation_index_rejects_orders_beyond_the_file() -> None:
    """An order past the last buddyinfo column is a caller bug: ValueError with the range."""
    with pytest.raises(ValueError, match=r"^expected an order in 0\.\.10, got 11$"):
        fragmentation_index(NORMAL, 11)


def test_computed_indices_equal_the_kernels_debugfs_rows(captured: Captured) -> None:
    """Indices computed from the captured buddyinfo equal the kernel's own
    unusable_index and extfrag_index rows captured with it (buddyinfo was read before
    and after the debugfs files and was unchanged)."""
    buddy = parse_buddyinfo(captured("proc_buddyinfo"))
    unusable = parse_extfrag(captured("sys_kernel_debug_extfrag_unusable_index"), UNUSABLE_INDEX)
    extfrag = parse_extfrag(captured("sys_kernel_debug_extfrag_extfrag_index"), EXTFRAG_INDEX)
    for zone, u_row, e_row in zip(buddy.zones, unusable, extfrag, strict=True):
        assert (zone.node, zone.zone) == (u_row.node, u_row.zone) == (e_row.node, e_row.zone)
        orders = range(buddy.nr_orders)
        assert tuple(unusable_free_index(zone.free_blocks, k) for k in orders) == u_row.index_milli
        assert tuple(fragmentation_index(zone.free_blocks, k) for k in orders) == e_row.index_milli
    assert unusable[2].index_milli[9] == 50  # "0.050" in the file
    assert extfrag[0].index_milli[0] == -1000  # "-1.000" in the file


def test_parse_zoneinfo_capture(captured: Captured) -> None:
    """zoneinfo parses to five zones keyed by name, with present/managed pages and node stats."""
    info = parse_zoneinfo(captured("proc_zoneinfo"))
    assert [z.zone for z in info.zones] == ["DMA", "DMA32", "Normal", "Movable", "Device"]
    normal = info.zone(0, "Normal")
    assert (normal.free_pages, normal.present_pages, normal.managed_pages) == (
        31075,
        5505024,
        589824,
    )
    assert (normal.min_pages, normal.low_pages, normal.high_pages, normal.promo_pages) == (
        7292, 9115, 10938, 12761,
    )  # fmt: skip
    assert normal.spanned_pages == 5505024 and normal.stats["nr_free_pages"] == 31075
    assert info.zone(0, "DMA").protection_pages == (0, 3019, 5323, 5323, 5323)
    assert info.zone(0, "DMA32").present_pages == 782336
    assert not info.zone(0, "Movable").populated and info.zone(0, "Normal").populated
    assert info.node_present_pages(0) == 3998 + 782336 + 5505024
    assert info.node_stats[0]["nr_inactive_anon"] == 19939
    assert "nr_inactive_anon" not in normal.stats


def test_parse_zoneinfo_pagesets_capture(captured: Captured) -> None:
    """Each populated zone's per-CPU free lists parse keyed per CPU (count, high, batch,
    high_min, high_max, vm stats threshold); unpopulated zones have none; the lines after
    the CPUs (node_unreclaimable, start_pfn) are zone entries, not a CPU's."""
    info = parse_zoneinfo(captured("proc_zoneinfo"))
    cpu0, cpu1 = info.zone(0, "Normal").pagesets
    assert (cpu0.cpu, cpu0.count_pages, cpu0.high_pages, cpu0.batch_pages) == (0, 15290, 20845, 63)
    assert cpu0.stat_threshold == 24
    assert cpu0.entries == {
        "count": 15290, "high": 20845, "batch": 63, "high_min": 4557, "high_max": 36864,
        "vm stats threshold": 24,
    }  # fmt: skip
    assert (cpu1.cpu, cpu1.count_pages, cpu1.high_pages) == (1, 10563, 18832)
    assert info.zone(0, "Normal").pcp_pages == 15290 + 10563
    assert [p.count_pages for p in info.zone(0, "DMA32").pagesets] == [0, 0]
    assert info.zone(0, "Movable").pagesets == () and info.zone(0, "Movable").pcp_pages == 0
    assert info.zone(0, "Normal").stats["start_pfn"] == 1048576
    assert info.zone(0, "Normal").stats["node_unreclaimable"] == 0
    # 25,853 pages = 101.0 MiB of node 0 that node0/meminfo's MemFree leaves out
    assert info.node_pcp_pages() == {0: 25853}


def test_parse_zoneinfo_pagesets_guest_capture() -> None:
    """The guest kernel's zoneinfo (7.2.12, two nodes): per-CPU lists on both nodes, the
    CPU-less node 1 included (any CPU frees its pages to its own list for that zone)."""
    info = parse_zoneinfo(guest("proc_zoneinfo"))
    assert [p.count_pages for p in info.zone(0, "DMA").pagesets] == [0, 0]
    assert [p.count_pages for p in info.zone(0, "DMA32").pagesets] == [2607, 5573]
    assert [p.high_pages for p in info.zone(0, "DMA32").pagesets] == [6838, 6838]
    assert [p.count_pages for p in info.zone(1, "DMA32").pagesets] == [2849, 2341]
    # node 0: 8,180 pages = 31.95 MiB; node 1: 5,190 pages = 20.27 MiB
    assert info.node_pcp_pages() == {0: 8180, 1: 5190}


def test_node_score_by_hand(captured: Captured) -> None:
    """The node's proactive compaction score from the captures, written out by hand."""
    # Zone scores at order 9 (extfrag_for_order):
    #   DMA    free 3840 pages, suitable 1 + 3*2 = 7 blocks = 3584 pages: 256*100//3840 = 6
    #   DMA32  free 772915, suitable 2 + 752*2 = 1506 blocks = 771072: 184300//772915 = 0
    #   Normal free 39906, suitable 74 blocks = 37888: 201800//39906 = 5
    # node_present = 3998 + 782336 + 5505024 + 0 + 0 = 6291358
    # weighted = present * score // (node_present + 1):
    #   DMA 3998*6//6291359 = 0; DMA32 0; Normal 5505024*5//6291359 = 27525120//6291359 = 4
    assert fragmentation_score_node([(3998, 6), (782336, 0), (5505024, 5)], 6291358) == 4
    frag = compute_fragmentation(
        parse_buddyinfo(captured("proc_buddyinfo")),
        parse_zoneinfo(captured("proc_zoneinfo")),
        proactiveness=20,
    )
    assert [z.score_pct for z in frag.zones] == [6, 0, 5]
    assert [z.weighted_score for z in frag.zones] == [0, 0, 4]
    (node,) = frag.nodes
    assert (node.node, node.score, node.present_pages) == (0, 4, 6291358)
    # Free order-9 blocks: DMA 7, DMA32 1506, Normal 74
    assert node.hpage_free_blocks == 7 + 1506 + 74
    assert (node.wmark_low, node.wmark_high, node.above_wmark_high) == (80, 90, False)
    assert frag.summary() == {
        "node0_score": 4,
        "node0_hpage_free_blocks": 1587,
        "max_unusable_hpage": 0.066,
    }


def test_compaction_wmarks() -> None:
    """kcompactd's watermarks: low = max(100 - p, 5), high = min(low + 10, 100)."""
    assert compaction_wmarks(20) == (80, 90)
    assert compaction_wmarks(0) == (100, 100)
    assert compaction_wmarks(100) == (5, 15)


BUDDY_SHAPE = "expected 'Node N, zone NAME count...'"
DMA, NORM = "Node 0, zone DMA ", "Node 0, zone Normal "
ZI = "Node 0, zone DMA\n  pages free 1\n"


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("Node 0, zone Normal 1 2 x\n", BUDDY_SHAPE, "Node 0, zone Normal 1 2 x"),
        ("Node 0 zone Normal 1 2\n", BUDDY_SHAPE, "Node 0 zone Normal 1 2"),
        ("Node 0, zone Normal\n", BUDDY_SHAPE, "Node 0, zone Normal"),
        (f"{DMA}1 2\n{NORM}1 2 3\n", "expected 2 orders, got 3", f"{NORM}1 2 3"),
        (f"{DMA}1\n{DMA}2\n", "duplicate zone 'DMA' of node 0", f"{DMA}2"),
        ("\n", "no zones", "\n"),
    ],
)  # fmt: skip
def test_parse_buddyinfo_malformed(text: str, message: str, line: str) -> None:
    """A malformed buddyinfo line raises KernelFormatError naming the file and quoting it."""
    with pytest.raises(KernelFormatError, match=rf"^/proc/buddyinfo: {re.escape(message)}") as info:
        parse_buddyinfo(text)
    assert info.value.line == line


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("  pages free 1\n", "expected 'Node N, zone NAME' first", "  pages free 1"),
        (f"{ZI}  min 1\n", "zone 'DMA' of node 0 lacks low, high", None),
        (f"{ZI}  weird line here\n", "unexpected line in zoneinfo", "  weird line here"),
        (f"{ZI}  min 1\n  min 2\n", "duplicate entry 'min'", "  min 2"),
        (f"{ZI}  pagesets\n    cpu 0\n", "expected 'key: value' in pagesets", "    cpu 0"),
        (f"{ZI}  pagesets\n    count: 3\n", "'count' before any 'cpu: N' line", "    count: 3"),
        (f"{ZI}  pagesets\n    cpu: 0\n    count: x\n",
         "expected an integer after 'count' in pagesets", "    count: x"),
        (f"{ZI}  pagesets\n    cpu: 0\n    count: 1\n    count: 2\n",
         "duplicate 'count' of cpu 0", "    count: 2"),
        (f"{ZI}  pagesets\n    cpu: 0\n    high: 1\n  start_pfn: 1\n",
         "cpu 0 of zone 'DMA' of node 0 lacks count", None),
        ("", "no zones", ""),
    ],
)  # fmt: skip
def test_parse_zoneinfo_malformed(text: str, message: str, line: str | None) -> None:
    """A zoneinfo line of no known shape, a duplicate or a missing entry raises
    KernelFormatError naming the file (and quoting the line where there is one)."""
    with pytest.raises(KernelFormatError, match=rf"^/proc/zoneinfo: {re.escape(message)}") as info:
        parse_zoneinfo(text)
    assert info.value.line == line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Node 0, zone DMA 0.5 1.000", "expected values printed as '%d.%03d' (like 0.050, "
         "-1.000, 0.-62), got '0.5'"),
        ("Node 0, zone DMA 0.-5 1.000", "expected values printed as '%d.%03d' (like 0.050, "
         "-1.000, 0.-62), got '0.-5'"),
        ("Node 0, zone DMA 1.-500", "value '1.-500': the two parts of one index carry "
         "opposite signs"),
        ("Node 0, zone DMA -1.500", "value '-1.500': the two parts of one index carry "
         "opposite signs"),
        ("Node 0, zone DMA", "expected 'Node N, zone NAME d.ddd...'"),
    ],
)  # fmt: skip
def test_parse_extfrag_malformed(text: str, message: str) -> None:
    """A value the kernel's ``%d.%03d`` cannot have printed (a fraction of one digit, or
    parts of opposite signs) or a row without values raises KernelFormatError naming the
    file, quoting the line, and saying what is accepted."""
    with pytest.raises(
        KernelFormatError, match=rf"^{re.escape(UNUSABLE_INDEX)}: {re.escape(message)}"
    ) as info:
        parse_extfrag(text + "\n", UNUSABLE_INDEX)
    assert info.value.line == text


#: The kernel's two debugfs rows for a zone whose only free block is one page (order 0),
#: written out from mm/vmstat.c's printf formats: ``extfrag_show_print`` prints each
#: order's index with "%2d.%03d " of ``index / 1000`` and ``index % 1000``, C's
#: truncating division, so both parts carry a negative index's sign and "%03d" counts the
#: minus sign in its width of 3: -1000 -> "-1.000", -500 -> " 0.-500", -62 -> " 0.-62",
#: -7 -> " 0.-07", 0 -> " 0.000". ``unusable_show_print`` uses "%d.%03d ".
ONE_FREE_PAGE_EXTFRAG = (
    "Node 0, zone      DMA -1.000  0.-500  0.-250  0.-125  0.-62  0.-31  0.-15  0.-07 "
    " 0.-03  0.-01  0.000 \n"
)
ONE_FREE_PAGE_UNUSABLE = (
    "Node 0, zone      DMA 0.000 1.000 1.000 1.000 1.000 1.000 1.000 1.000 1.000 1.000 1.000 \n"
)
ONE_FREE_PAGE = (1,) + (0,) * 10


def test_one_free_block_indices_by_hand_and_as_the_kernel_prints_them() -> None:
    """A zone with one free page: the fragmentation index is negative at every order the
    page cannot serve, and the kernel's debugfs row for it ("0.-62": index -62 ‰) parses
    back to exactly the computed values."""
    # free_pages = 1, free_blocks_total = 1, no block of order >= 1:
    #   index(k) = 1000 - (1000 + 1 * 1000 // 2**k) // 1 = -(1000 // 2**k)
    #   k=1: -500, 2: -250, 3: -125, 4: -62 (1000 // 16), 5: -31, 6: -15, 7: -7, 8: -3,
    #   9: -1, 10: 0 (1000 // 1024 = 0); k=0: the page itself is a suitable block: -1000.
    expected = (-1000, -500, -250, -125, -62, -31, -15, -7, -3, -1, 0)
    assert tuple(fragmentation_index(ONE_FREE_PAGE, k) for k in range(11)) == expected
    (row,) = parse_extfrag(ONE_FREE_PAGE_EXTFRAG, EXTFRAG_INDEX)
    assert (row.node, row.zone, row.index_milli) == (0, "DMA", expected)
    # unusable: order 0 uses the page (0), every larger order cannot (1000 = 1.000)
    (row,) = parse_extfrag(ONE_FREE_PAGE_UNUSABLE, UNUSABLE_INDEX)
    assert row.index_milli == tuple(unusable_free_index(ONE_FREE_PAGE, k) for k in range(11))
    assert row.index_milli == (0,) + (1000,) * 10


def frag_fs(captured: Captured, *, debugfs: bool = False) -> FakeKernelFS:
    fs = FakeKernelFS()
    fs.set_file("/proc/buddyinfo", captured("proc_buddyinfo"))
    fs.set_file("/proc/zoneinfo", captured("proc_zoneinfo"))
    fs.set_file("/proc/sys/vm/compaction_proactiveness", "20\n")
    if debugfs:
        fs.set_file(UNUSABLE_INDEX, captured("sys_kernel_debug_extfrag_unusable_index"))
        fs.set_file(EXTFRAG_INDEX, captured("sys_kernel_debug_extfrag_extfrag_index"))
    return fs


def test_poller_levels_and_debugfs(captured: Captured) -> None:
    """The poller returns a value on its first poll, and carries the kernel's debugfs rows
    (which agree with the computed ones) where debugfs is there."""
    poller = FragmentationPoller(frag_fs(captured, debugfs=True))
    assert poller.topic == "fragmentation"
    frag = poller.poll(0.0)
    assert frag.nodes[0].score == 4 and frag.proactiveness == 20
    for z in frag.zones:
        assert frag.kernel_unusable_index_milli[f"{z.node}/{z.zone}"] == z.unusable_index_milli
        assert frag.kernel_extfrag_index_milli[f"{z.node}/{z.zone}"] == z.fragmentation_index_milli
    assert frag.zones[2].free_bytes == 39906 * 4096
    no_debugfs = FragmentationPoller(frag_fs(captured)).poll(0.0)
    assert not no_debugfs.kernel_unusable_index_milli


def _one_free_page_fs(captured: Captured) -> FakeKernelFS:
    """The host captures with the DMA zone down to a single free page, and the kernel's
    debugfs rows for that buddyinfo (DMA from the printf above, DMA32 and Normal from
    the captured files, which match the captured buddyinfo)."""
    fs = frag_fs(captured, debugfs=True)
    buddy = captured("proc_buddyinfo").splitlines(keepends=True)
    assert buddy[0].startswith("Node 0, zone      DMA ")
    fs.set_file("/proc/buddyinfo", "Node 0, zone      DMA      1      0      0      0      0 "
                "     0      0      0      0      0      0 \n" + "".join(buddy[1:]))  # fmt: skip
    for path, dma_row, name in (
        (EXTFRAG_INDEX, ONE_FREE_PAGE_EXTFRAG, "sys_kernel_debug_extfrag_extfrag_index"),
        (UNUSABLE_INDEX, ONE_FREE_PAGE_UNUSABLE, "sys_kernel_debug_extfrag_unusable_index"),
    ):
        rows = captured(name).splitlines(keepends=True)
        fs.set_file(path, dma_row + "".join(rows[1:]))
    return fs


def test_poller_reads_the_kernels_negative_indices(captured: Captured) -> None:
    """With debugfs rows that print negative indices ("0.-62") the poller publishes them,
    equal to the computed ones, instead of failing the whole topic."""
    frag = FragmentationPoller(_one_free_page_fs(captured)).poll(0.0)
    dma = frag.zones[0]
    assert dma.free_blocks == ONE_FREE_PAGE and dma.fragmentation_index_milli[4] == -62
    assert frag.kernel_extfrag_index_milli["0/DMA"] == dma.fragmentation_index_milli
    assert frag.kernel_unusable_index_milli["0/DMA"] == dma.unusable_index_milli
    assert frag.kernel_index_error is None and frag.kernel_index_failures == 0


def test_debugfs_failure_drops_only_the_kernel_maps(captured: Captured) -> None:
    """A debugfs read that fails (EIO) or a row that does not parse leaves the kernel_*
    maps empty with the reason, counts the failure and logs it once; the computed indices
    and scores are still published; the next good read brings the maps back (logged)."""
    fs = _one_free_page_fs(captured)
    poller = FragmentationPoller(fs)
    good = poller.poll(0.0)
    fs.inject_fault(EXTFRAG_INDEX, errno.EIO, ops=("read",))
    unusable = fs.file_text(UNUSABLE_INDEX)
    with capture_logs() as logs:
        failed = poller.poll(1.0)
        fs.set_file(UNUSABLE_INDEX, unusable.replace("1.000", "1.0", 1))
        garbled = poller.poll(2.0)
        fs.set_file(UNUSABLE_INDEX, unusable)
        back = poller.poll(3.0)
    assert failed.zones == good.zones and failed.nodes == good.nodes
    assert not failed.kernel_extfrag_index_milli and not failed.kernel_unusable_index_milli
    assert failed.kernel_index_error is not None
    assert re.match(rf"^{re.escape(EXTFRAG_INDEX)}: cannot read \(EIO", failed.kernel_index_error)
    assert (failed.kernel_index_failures, garbled.kernel_index_failures) == (1, 2)
    assert garbled.kernel_index_error is not None and "got '1.0'" in garbled.kernel_index_error
    assert garbled.zones == good.zones and not garbled.kernel_unusable_index_milli
    assert back.kernel_index_error is None and back.kernel_index_failures == 2
    assert back.kernel_extfrag_index_milli == good.kernel_extfrag_index_milli
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [
        ("debugfs_extfrag_failed", "warning"),  # the second, consecutive, is counted only
        ("debugfs_extfrag_recovered", "info"),
    ]
    assert logs[0]["consecutive"] == 1 and logs[1]["after_failures"] == 2
    assert logs[0]["reason"] == failed.kernel_index_error


def test_poller_rereads_zoneinfo_rarely(captured: Captured) -> None:
    """zoneinfo is read on the first poll and then every zoneinfo_every polls, while
    buddyinfo is read on every poll."""
    fs = frag_fs(captured)
    poller = FragmentationPoller(fs, zoneinfo_every=3)
    for i in range(6):
        poller.poll(float(i))
    assert fs.open_count("/proc/buddyinfo") == 1  # kept open
    fs.set_file("/proc/zoneinfo", "garbage\n")
    poller.poll(6.0)  # poll 7: not a multiple of 3, the cached zoneinfo is used
    poller.poll(7.0)  # poll 8
    with pytest.raises(KernelFormatError):
        poller.poll(8.0)  # poll 9 re-reads zoneinfo


def test_poller_failed_read_is_an_error(captured: Captured) -> None:
    """A failed buddyinfo read raises KernelInterfaceError (the runtime counts it)."""
    fs = frag_fs(captured)
    poller = FragmentationPoller(fs)
    fs.inject_fault("/proc/buddyinfo", errno.EIO, times=2, ops=("read",))
    with pytest.raises(KernelInterfaceError, match=r"^/proc/buddyinfo: cannot read \(EIO"):
        poller.poll(0.0)


def test_vmstat_compaction_thp_and_numa_hint_counters_are_rates(captured: Captured) -> None:
    """The vmstat poller reports compact_*, thp_* and numa_hint_faults* as per-second rates,
    with named fields for the ones policies read (checked here on the captured file)."""
    text = captured("proc_vmstat")
    fs = FakeKernelFS({"proc/vmstat": text})
    poller = VmstatPoller(fs)
    poller.poll(0.0)
    bumped = {
        "compact_stall": 4,
        "thp_fault_alloc": 10,
        "numa_hint_faults": 6,
        "compact_success": 2,
    }
    lines = []
    for line in text.splitlines():
        name, value = line.split(" ")
        lines.append(f"{name} {int(value) + bumped.get(name, 0)}")
    fs.set_file("/proc/vmstat", "\n".join(lines) + "\n")
    r = poller.poll(2.0)
    assert r is not None
    assert (r.compact_stall_per_s, r.compact_success_per_s, r.compact_fail_per_s) == (2.0, 1.0, 0.0)
    assert (r.thp_fault_alloc_per_s, r.numa_hint_faults_per_s) == (5.0, 3.0)
    assert r.numa_hint_faults_local_per_s == 0.0 and r.thp_split_page_per_s == 0.0
    assert len(r.family("compact_")) == 9 and len(r.family("thp_")) == 25
    assert r.family("numa_hint_faults") == {"numa_hint_faults": 3.0, "numa_hint_faults_local": 0.0}


def test_published_value_is_plain_frozen_data(captured: Captured) -> None:
    """The published Fragmentation survives pickle, deepcopy and asdict -> JSON, and its
    summary is a flat JSON object of numbers."""
    value = FragmentationPoller(frag_fs(captured, debugfs=True)).poll(0.0)
    assert pickle.loads(pickle.dumps(value)) == value == copy.deepcopy(value)
    json.dumps(dataclasses.asdict(value))
    assert all(isinstance(v, int | float) for v in value.summary().values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.hpage_order = 0  # type: ignore[misc]


def guest(name: str) -> str:
    return (CAPTURED / "guest-debian-7.2" / name).read_text()


def test_guest_two_nodes_by_hand() -> None:
    """On the guest kernel's captures (7.2.12, two nodes), node 1's score by hand: the
    ``+ 1`` in the kernel's denominator makes a single-zone node score 3, not 4."""
    frag = compute_fragmentation(
        parse_buddyinfo(guest("proc_buddyinfo")), parse_zoneinfo(guest("proc_zoneinfo"))
    )
    assert [(z.node, z.zone) for z in frag.zones] == [(0, "DMA"), (0, "DMA32"), (1, "DMA32")]
    # Node 1 DMA32 free blocks 90 84 76 55 34 28 22 6 3 2 104:
    #   free = 90 + 168 + 304 + 440 + 544 + 896 + 1408 + 768 + 768 + 1024 + 106496 = 112906
    #   suitable(9) = 2 + 104*2 = 210 blocks = 107520 pages
    #   score = (112906 - 107520) * 100 // 112906 = 538600 // 112906 = 4
    #   node_present = 131039 (its only populated zone)
    #   weighted = 131039 * 4 // (131039 + 1) = 524156 // 131040 = 3
    node1 = frag.zones[2]
    assert (node1.free_pages, node1.score_pct, node1.weighted_score) == (112906, 4, 3)
    assert [(n.node, n.score, n.present_pages) for n in frag.nodes] == [
        (0, 0, 3998 + 258048),
        (1, 3, 131039),
    ]
    assert frag.proactiveness is None
    assert frag.nodes[1].wmark_high is None and frag.nodes[1].above_wmark_high is None


@pytest.mark.parametrize("capture", ["guest", "host"])
def test_pcp_scan_agrees_with_the_parser(capture: str, captured: Captured) -> None:
    """The tiers source's count-only scan gives the whole parser's per-node sums on both
    captures (node 1 of the guest included), and on an edit of each: a CPU block's count
    changed by 1000 moves exactly that node's sum."""
    text = guest("proc_zoneinfo") if capture == "guest" else captured("proc_zoneinfo")
    assert zoneinfo_pcp_pages(text) == parse_zoneinfo(text).node_pcp_pages()
    # the last CPU block of the file: the last zone's (node 1 in the guest, 0 on the host)
    head, sep, tail = text.rpartition("count:")
    number = tail.split()[0]
    edited = head + sep + tail.replace(number, str(int(number) + 1000), 1)
    expected = parse_zoneinfo(edited).node_pcp_pages()
    assert zoneinfo_pcp_pages(edited) == expected
    last_node = max(expected)
    assert expected[last_node] == parse_zoneinfo(text).node_pcp_pages()[last_node] + 1000


def test_pcp_scan_refuses_a_file_without_zones() -> None:
    """No zone header, or a count before one: KernelFormatError naming the file."""
    with pytest.raises(KernelFormatError, match="no zones"):
        zoneinfo_pcp_pages("nothing here\n", "/proc/zoneinfo")
    with pytest.raises(KernelFormatError, match="before any zone"):
        zoneinfo_pcp_pages("    cpu: 0\n              count: 5\n", "/proc/zoneinfo")
