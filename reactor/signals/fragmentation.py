"""Free-memory fragmentation: /proc/buddyinfo, /proc/zoneinfo, debugfs extfrag, the poller.

What the kernel prints, and what is computed here from it:

- ``/proc/buddyinfo``: one line per populated zone, ``Node N, zone NAME`` followed by the
  number of free blocks of each order (a block of order ``k`` is ``2**k`` contiguous
  pages), order 0 first. The column index *is* the order: that is the format, not a
  positional shortcut; zones are keyed by (node, zone name).
- The *unusable free space index* and the *fragmentation index* of every order, computed
  exactly as mm/vmstat.c computes them for ``/sys/kernel/debug/extfrag/unusable_index``
  and ``extfrag_index`` (``fill_contig_page_info``, ``unusable_free_index``,
  ``__fragmentation_index``), in the kernel's integer thousandths:

  * ``free_pages = Σ nr_free[k] << k``, ``free_blocks_total = Σ nr_free[k]``,
    ``free_blocks_suitable(order) = Σ_{k >= order} nr_free[k] << (k - order)``;
  * unusable index = ``(free_pages - (suitable << order)) * 1000 // free_pages``
    (1000 when nothing is free): the share of free memory in blocks too small for the
    order, 0 (none) to 1000 (all);
  * fragmentation index = -1000 when a block of the order is free (an allocation would
    succeed, the index does not apply), 0 when nothing is free, else
    ``1000 - (1000 + free_pages * 1000 // 2**order) // free_blocks_total``: towards 0 an
    allocation would fail for lack of memory (reclaim helps), towards 1000 for
    fragmentation (compaction helps). The kernel compares it with
    ``vm.extfrag_threshold`` (default 500) before compacting for costly orders.

  Both come from buddyinfo alone, so they cost no debugfs mount; where debugfs is mounted
  the kernel's own files are parsed too (:func:`parse_extfrag`) and tests check that the
  two agree.
- The score the kernel's *proactive compaction* uses (mm/compaction.c):
  ``fragmentation_score_zone`` = ``extfrag_for_order(zone, COMPACTION_HPAGE_ORDER)``
  = ``(free_pages - (suitable << order)) * 100 // free_pages`` (percent of free pages in
  blocks smaller than a huge page; 0 when nothing is free), weighted by the zone's share
  of the node's present pages: ``present * score // (node_present + 1)``, summed over the
  node's populated zones (``fragmentation_score_node``). kcompactd compacts a node when
  this exceeds the high watermark ``min(max(100 - proactiveness, 5) + 10, 100)`` and
  stops below the low one ``max(100 - proactiveness, 5)`` (``vm.compaction_proactiveness``,
  default 20: 90 and 80). ``COMPACTION_HPAGE_ORDER`` is the PMD order, 9 on x86-64 and
  arm64 with 4 KiB pages. The weights need ``present`` pages from ``/proc/zoneinfo``,
  which is why it is parsed here (keyed; it is the costliest file read, 22 µs).

Free pages are in pages of the base page size (4 KiB on x86-64); ``*_bytes`` fields
multiply by ``page_size``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import structlog

from reactor.errors import KernelFormatError, KernelInterfaceError
from reactor.kernelfs.base import KernelFS
from reactor.kernelfs.frozen import FrozenMap
from reactor.kernelfs.kept import KeptReader
from reactor.log import repeat_logged

__all__ = (
    "BUDDYINFO",
    "COMPACTION_HPAGE_ORDER",
    "EXTFRAG_INDEX",
    "UNUSABLE_INDEX",
    "ZONEINFO",
    "BuddyZone",
    "Buddyinfo",
    "ContigInfo",
    "ExtfragZone",
    "Fragmentation",
    "FragmentationPoller",
    "NodeFragmentation",
    "Pageset",
    "ZoneFragmentation",
    "Zoneinfo",
    "ZoneinfoZone",
    "compaction_wmarks",
    "compute_fragmentation",
    "contig_page_info",
    "extfrag_for_order",
    "fragmentation_index",
    "fragmentation_score_node",
    "parse_buddyinfo",
    "parse_extfrag",
    "parse_zoneinfo",
    "unusable_free_index",
    "zoneinfo_pcp_pages",
)

BUDDYINFO = "/proc/buddyinfo"
ZONEINFO = "/proc/zoneinfo"
UNUSABLE_INDEX = "/sys/kernel/debug/extfrag/unusable_index"
EXTFRAG_INDEX = "/sys/kernel/debug/extfrag/extfrag_index"
PROACTIVENESS = "/proc/sys/vm/compaction_proactiveness"

_log = structlog.get_logger("reactor.fragmentation")

#: The order of a PMD-mapped huge page with 4 KiB base pages (x86-64, arm64 4K): the
#: order the kernel's proactive compaction scores against.
COMPACTION_HPAGE_ORDER = 9

_ZONE_HEAD = r"^Node (\d+), zone\s+(\S+)"
_BUDDY_LINE = re.compile(_ZONE_HEAD + r"((?:\s+\d+)+)\s*$")
_EXTFRAG_LINE = re.compile(_ZONE_HEAD + r"((?:\s+\S+)+)\s*$")
#: One value of a debugfs extfrag file: C's ``%d.%03d`` of ``index / 1000`` and
#: ``index % 1000`` (see :func:`_milli`). The fraction is three digits, or, when the index
#: is negative, a minus sign and at least two digits (``%03d`` counts the sign in its width).
_EXTFRAG_VALUE = re.compile(r"^(-?\d+)\.(\d{3}|-\d{2,3})$")
_ZONE_LINE = re.compile(_ZONE_HEAD + r"\s*$")
_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")
_PAGES_FREE = re.compile(r"^pages free\s+(\d+)$")
_PROTECTION = re.compile(r"^protection: \(([-\d, ]*)\)$")
_COLON_KEY = re.compile(r"^[a-z_][a-z0-9_ ]*$")


# --- the kernel's arithmetic (mm/vmstat.c, mm/compaction.c), on free-block counts ---


@dataclass(frozen=True)
class ContigInfo:
    """mm/vmstat.c ``struct contig_page_info`` for one zone and order (all in pages or blocks).

    ``free_blocks_suitable`` counts blocks of the requested order that the free blocks
    of that order or larger could supply.
    """

    free_pages: int
    free_blocks_total: int
    free_blocks_suitable: int


def contig_page_info(free_blocks: Sequence[int], order: int) -> ContigInfo:
    """``fill_contig_page_info``: free pages, free blocks and suitable blocks for ``order``.

    ``free_blocks[k]`` is the number of free blocks of order ``k`` (a buddyinfo row).
    """
    free_pages = total = suitable = 0
    for k, blocks in enumerate(free_blocks):
        total += blocks
        free_pages += blocks << k
        if k >= order:
            suitable += blocks << (k - order)
    return ContigInfo(free_pages, total, suitable)


def unusable_free_index(free_blocks: Sequence[int], order: int) -> int:
    """The kernel's unusable free space index for ``order``, in thousandths (0..1000).

    The share of free pages that sit in blocks too small for an allocation of ``order``;
    1000 when the zone has no free page at all (the kernel's convention).
    """
    info = contig_page_info(free_blocks, order)
    if info.free_pages == 0:
        return 1000
    return (info.free_pages - (info.free_blocks_suitable << order)) * 1000 // info.free_pages


def fragmentation_index(free_blocks: Sequence[int], order: int) -> int:
    """The kernel's fragmentation index for ``order``, in thousandths.

    -1000 if a free block of that order exists (the allocation would succeed, so the
    index does not apply); 0 when nothing is free; otherwise up to 1000, low meaning an
    allocation would fail for lack of memory and high for fragmentation. The formula's
    ``1000 +`` term makes a zone with a single small free block negative (down to -500),
    as the kernel's own value is. ``order`` beyond
    the last column raises ValueError (the kernel WARNs and returns 0).
    """
    if not 0 <= order < len(free_blocks):
        raise ValueError(f"expected an order in 0..{len(free_blocks) - 1}, got {order}")
    info = contig_page_info(free_blocks, order)
    if info.free_blocks_total == 0:
        return 0
    if info.free_blocks_suitable:
        return -1000
    requested = 1 << order
    return 1000 - (1000 + info.free_pages * 1000 // requested) // info.free_blocks_total


def extfrag_for_order(free_blocks: Sequence[int], order: int) -> int:
    """mm/vmstat.c ``extfrag_for_order``: percent (0..100) of free pages in blocks smaller
    than ``order``; 0 when nothing is free (unlike the unusable index)."""
    info = contig_page_info(free_blocks, order)
    if info.free_pages == 0:
        return 0
    return (info.free_pages - (info.free_blocks_suitable << order)) * 100 // info.free_pages


def fragmentation_score_node(zones: Sequence[tuple[int, int]], node_present_pages: int) -> int:
    """mm/compaction.c ``fragmentation_score_node`` from (present pages, zone score) pairs.

    Each populated zone's score (``extfrag_for_order`` at the huge page order, percent)
    is weighted by ``present // (node_present + 1)`` in integer arithmetic, exactly as
    ``fragmentation_score_zone_weighted`` does, so small zones (DMA, DMA32) barely count.
    """
    return sum(present * score // (node_present_pages + 1) for present, score in zones)


def compaction_wmarks(proactiveness: int) -> tuple[int, int]:
    """(low, high) watermarks of the node score for ``vm.compaction_proactiveness``.

    mm/compaction.c ``fragmentation_score_wmark`` (Linux 6.x): kcompactd starts proactive
    compaction above ``high`` and each zone stops at or below ``low``. Proactiveness 0
    disables it (the caller must check; the watermarks are still returned).
    """
    low = max(100 - proactiveness, 5)
    return low, min(low + 10, 100)


# --- /proc/buddyinfo ---


@dataclass(frozen=True)
class BuddyZone:
    """One buddyinfo row: free blocks per order (order 0 first) of one zone."""

    node: int
    zone: str
    free_blocks: tuple[int, ...]

    @property
    def free_pages(self) -> int:
        """Free pages in the buddy allocator (per-CPU lists are not included)."""
        return sum(blocks << order for order, blocks in enumerate(self.free_blocks))


@dataclass(frozen=True)
class Buddyinfo:
    """The parsed file: populated zones in the kernel's order (node, then zone index)."""

    zones: tuple[BuddyZone, ...]

    @property
    def nr_orders(self) -> int:
        """Number of orders per row (``NR_PAGE_ORDERS``: 11 on x86-64, orders 0..10)."""
        return len(self.zones[0].free_blocks)

    def zone(self, node: int, name: str) -> BuddyZone:
        """The row of zone ``name`` on ``node``; KeyError if the kernel printed none."""
        for z in self.zones:
            if z.node == node and z.zone == name:
                return z
        raise KeyError(f"no zone {name!r} on node {node} in buddyinfo")


def parse_buddyinfo(text: str, path: str = BUDDYINFO) -> Buddyinfo:
    """Parse /proc/buddyinfo; ``path`` only names the file in errors.

    Every non-empty line must be ``Node N, zone NAME c0 c1 ...`` with the same number of
    orders on every line; a zone may appear once per node.
    """
    zones: list[BuddyZone] = []
    seen: set[tuple[int, str]] = set()
    for raw in text.splitlines():
        if not raw.strip():
            continue
        match = _BUDDY_LINE.match(raw.strip())
        if match is None:
            raise KernelFormatError(path, "expected 'Node N, zone NAME count...'", line=raw)
        key = (int(match.group(1)), match.group(2))
        counts = tuple(int(c) for c in match.group(3).split())
        if key in seen:
            raise KernelFormatError(path, f"duplicate zone {key[1]!r} of node {key[0]}", line=raw)
        if zones and len(counts) != len(zones[0].free_blocks):
            raise KernelFormatError(
                path, f"expected {len(zones[0].free_blocks)} orders, got {len(counts)}", line=raw
            )
        seen.add(key)
        zones.append(BuddyZone(key[0], key[1], counts))
    if not zones:
        raise KernelFormatError(path, "no zones", line=text[:200])
    return Buddyinfo(tuple(zones))


# --- debugfs extfrag/{unusable_index,extfrag_index} ---


@dataclass(frozen=True)
class ExtfragZone:
    """One row of a debugfs extfrag file, in the kernel's thousandths per order."""

    node: int
    zone: str
    index_milli: tuple[int, ...]


def parse_extfrag(text: str, path: str) -> tuple[ExtfragZone, ...]:
    """Parse ``unusable_index`` or ``extfrag_index`` (``Node N, zone NAME -1.000  0.-62 ...``).

    mm/vmstat.c prints each value with ``"%d.%03d"`` (``unusable_show_print``) or
    ``"%2d.%03d"`` (``extfrag_show_print``) of ``index / 1000`` and ``index % 1000``, both
    truncated toward zero in C, so a negative index puts its sign on both parts: -1000
    prints ``-1.000``, -500 ``0.-500``, -62 ``0.-62`` and -7 ``0.-07``. The values are
    turned back into the kernel's integer thousandths (see :func:`_milli`). A value of
    another shape raises KernelFormatError quoting the line.
    """
    rows: list[ExtfragZone] = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        match = _EXTFRAG_LINE.match(raw.strip())
        if match is None:
            raise KernelFormatError(path, "expected 'Node N, zone NAME d.ddd...'", line=raw)
        values = tuple(_milli(token, path, raw) for token in match.group(3).split())
        rows.append(ExtfragZone(int(match.group(1)), match.group(2), values))
    if not rows:
        raise KernelFormatError(path, "no zones", line=text[:200])
    return tuple(rows)


def _milli(token: str, path: str, raw: str) -> int:
    """One printed index back in thousandths: ``whole * 1000 + frac``.

    The kernel printed ``whole = index / 1000`` and ``frac = index % 1000`` (C division:
    both truncate toward zero, so both carry the index's sign, and ``whole`` is 0 for
    -999..-1, where only ``frac`` shows the sign). So ``0.-62`` is -62 (‰, i.e. -0.062),
    ``-1.000`` is -1000. Parts with opposite signs (``1.-500``) cannot come from that
    printf and are an error, as is any other shape.
    """
    match = _EXTFRAG_VALUE.match(token)
    if match is None:
        raise KernelFormatError(
            path,
            f"expected values printed as '%d.%03d' (like 0.050, -1.000, 0.-62), got {token!r}",
            line=raw,
        )
    whole, frac = int(match.group(1)), int(match.group(2))
    if (whole > 0 and frac < 0) or (match.group(1).startswith("-") and frac > 0):
        raise KernelFormatError(
            path, f"value {token!r}: the two parts of one index carry opposite signs", line=raw
        )
    return whole * 1000 + frac


# --- /proc/zoneinfo ---


@dataclass(frozen=True)
class Pageset:
    """One online CPU's per-CPU free list ("pcp") of a zone, from zoneinfo's ``pagesets``.

    ``count_pages`` is the number of free pages the list holds (mm/vmstat.c
    ``zoneinfo_show_print`` prints ``pcp->count``; mm/page_alloc.c adds ``1 << order``
    for every block it puts on the list, so it counts base pages even where the list
    holds higher-order blocks). These pages are free but are not in the zone's
    ``nr_free_pages`` until the list is drained back to the buddy allocator (see
    :attr:`ZoneinfoZone.pcp_pages`). ``high_pages`` is the level above which the kernel
    drains the list, ``batch_pages`` the chunk it moves at a time; ``stat_threshold`` is
    the ``vm stats threshold`` printed after the CPU (the per-CPU vmstat deltas that may
    be unfolded, CONFIG_SMP only). ``entries`` holds every integer the CPU's block printed,
    by key (``count``, ``high``, ``batch``, ``high_min``, ``high_max`` on 6.7+, ...).
    """

    cpu: int
    count_pages: int
    high_pages: int | None
    batch_pages: int | None
    stat_threshold: int | None
    entries: FrozenMap[str, int]


@dataclass(frozen=True)
class ZoneinfoZone:
    """The parts of one zone of /proc/zoneinfo that fragmentation and watermarks need.

    Page counts are in base pages. ``spanned`` is the pfn range, ``present`` the pages that
    exist in it, ``managed`` those the buddy allocator manages (smaller while memory is
    still being initialised lazily, as on this host). ``min``/``low``/``high`` are the
    reclaim watermarks, ``promo`` the promotion watermark (6.1+; None before). ``stats``
    holds every other ``name value`` entry of the zone (``nr_free_pages``, ...) and the
    integer ``key: value`` lines after the per-CPU blocks (``node_unreclaimable``,
    ``start_pfn``). ``pagesets`` are the per-CPU free lists, one per online CPU (none for
    an unpopulated zone).
    """

    node: int
    zone: str
    free_pages: int
    min_pages: int
    low_pages: int
    high_pages: int
    promo_pages: int | None
    spanned_pages: int
    present_pages: int
    managed_pages: int
    protection_pages: tuple[int, ...]
    stats: FrozenMap[str, int]
    pagesets: tuple[Pageset, ...] = ()

    @property
    def populated(self) -> bool:
        """The kernel's ``populated_zone``: the zone has present pages."""
        return self.present_pages > 0

    @property
    def pcp_pages(self) -> int:
        """Free pages on the zone's per-CPU lists, summed over the CPUs printed.

        They are not in ``free_pages``/``nr_free_pages`` (nor in node meminfo's MemFree,
        which sums the zones' NR_FREE_PAGES): that counter moves only when pages enter or
        leave the buddy free lists (mm/page_alloc.c ``account_freepages``), and a page
        freed to a per-CPU list stays out of it until the list is drained. mm/show_mem.c
        prints the two apart (``free:`` and ``free_pcp:``, the same sum over online CPUs).
        """
        return sum(p.count_pages for p in self.pagesets)


@dataclass(frozen=True)
class Zoneinfo:
    """The parsed file: every zone (populated or not) and each node's ``per-node stats``."""

    zones: tuple[ZoneinfoZone, ...]
    node_stats: FrozenMap[int, FrozenMap[str, int]]

    def node_present_pages(self, node: int) -> int:
        """``pgdat->node_present_pages``: the sum of the node's zones' present pages."""
        return sum(z.present_pages for z in self.zones if z.node == node)

    def node_pcp_pages(self) -> dict[int, int]:
        """Free pages on the per-CPU lists of each node (every node zoneinfo lists)."""
        out: dict[int, int] = {}
        for z in self.zones:
            out[z.node] = out.get(z.node, 0) + z.pcp_pages
        return out

    def zone(self, node: int, name: str) -> ZoneinfoZone:
        for z in self.zones:
            if z.node == node and z.zone == name:
                return z
        raise KeyError(f"no zone {name!r} on node {node} in zoneinfo")


_ZONE_KEYS = {
    "min": "min_pages",
    "low": "low_pages",
    "high": "high_pages",
    "promo": "promo_pages",
    "spanned": "spanned_pages",
    "present": "present_pages",
    "managed": "managed_pages",
}
_REQUIRED_ZONE_KEYS = ("min", "low", "high", "spanned", "present", "managed")
#: ``key:`` lines printed once per zone after the per-CPU blocks (any kernel since 2.6):
#: they end the last CPU's block.
_ZONE_TAIL_KEYS = frozenset(
    {"node_unreclaimable", "all_unreclaimable", "start_pfn", "inactive_ratio", "prev_priority"}
)


class _ZoneinfoParser:
    """A line-by-line state machine over the sections of one zone.

    Sections: the ``Node N, zone NAME`` header; ``per-node stats`` (first populated zone
    of a node only); ``pages free N`` then ``name value`` zone entries and ``protection:``;
    ``pagesets``: per online CPU a ``cpu: N`` line and its ``key: value`` lines
    (``count:`` required; ``vm stats threshold:`` belongs to the CPU above it), ended by
    the zone's ``node_unreclaimable:`` and ``start_pfn:``. Unpopulated zones stop after
    ``protection:``. The common ``name value`` line is tried first (it is most lines).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.zones: list[ZoneinfoZone] = []
        self.node_stats: dict[int, dict[str, int]] = {}
        self.head: tuple[int, str] | None = None
        self.section = ""
        self.values: dict[str, int] = {}
        self.protection: tuple[int, ...] = ()
        self.pagesets: list[Pageset] = []
        self.cpu: tuple[int, dict[str, int]] | None = None

    def feed(self, raw: str) -> None:
        line = raw.strip()
        section = self.section
        if section in ("node", "zone"):
            words = line.split()
            if len(words) == 2 and words[1].isdigit() and _KEY.match(words[0]) is not None:
                self._put(words[0], int(words[1]), raw)
                return
        if line.startswith("Node "):
            self._head(line, raw)
        elif self.head is None:
            raise KernelFormatError(self.path, "expected 'Node N, zone NAME' first", line=raw)
        elif section in ("pagesets", "tail"):
            self._pageset_line(line, raw)
        elif line == "per-node stats":
            self.section = "node"
        elif line == "pagesets":
            self.section = "pagesets"
        elif (free := _PAGES_FREE.match(line)) is not None:
            self.section = "zone"
            self.values["pages free"] = int(free.group(1))
        elif (prot := _PROTECTION.match(line)) is not None and section == "zone":
            self.protection = tuple(int(v) for v in prot.group(1).split(","))
        else:
            raise KernelFormatError(self.path, "unexpected line in zoneinfo", line=raw)

    def _head(self, line: str, raw: str) -> None:
        head = _ZONE_LINE.match(line)
        if head is None:
            raise KernelFormatError(self.path, "expected 'Node N, zone NAME'", line=raw)
        self.finish()
        self.head, self.section = (int(head.group(1)), head.group(2)), "head"
        self.values, self.protection, self.pagesets = {}, (), []

    def _pageset_line(self, line: str, raw: str) -> None:
        key, colon, text = line.partition(":")
        key, text = key.strip(), text.strip()
        if not colon or _COLON_KEY.match(key) is None:
            raise KernelFormatError(self.path, "expected 'key: value' in pagesets", line=raw)
        try:
            value = int(text)
        except ValueError:
            raise KernelFormatError(
                self.path, f"expected an integer after {key!r} in pagesets", line=raw
            ) from None
        if key == "cpu" and self.section == "pagesets":
            self._end_cpu()
            self.cpu = (value, {})
        elif key in _ZONE_TAIL_KEYS or self.section == "tail":
            self._end_cpu()
            self.section = "tail"
            self._put(key, value, raw)
        elif self.cpu is None:
            raise KernelFormatError(self.path, f"{key!r} before any 'cpu: N' line", line=raw)
        elif key in self.cpu[1]:
            raise KernelFormatError(self.path, f"duplicate {key!r} of cpu {self.cpu[0]}", line=raw)
        else:
            self.cpu[1][key] = value

    def _end_cpu(self) -> None:
        if self.cpu is None:
            return
        cpu, entries = self.cpu
        self.cpu = None
        if "count" not in entries:
            assert self.head is not None
            raise KernelFormatError(
                self.path, f"cpu {cpu} of zone {self.head[1]!r} of node {self.head[0]} lacks count"
            )
        self.pagesets.append(
            Pageset(
                cpu=cpu,
                count_pages=entries["count"],
                high_pages=entries.get("high"),
                batch_pages=entries.get("batch"),
                stat_threshold=entries.get("vm stats threshold"),
                entries=FrozenMap(entries),
            )
        )

    def _put(self, key: str, value: int, raw: str) -> None:
        assert self.head is not None
        target = (
            self.node_stats.setdefault(self.head[0], {}) if self.section == "node" else self.values
        )
        if key in target:
            raise KernelFormatError(self.path, f"duplicate entry {key!r}", line=raw)
        target[key] = value

    def finish(self) -> None:
        if self.head is None:
            return
        self._end_cpu()
        node, name = self.head
        missing = [k for k in ("pages free", *_REQUIRED_ZONE_KEYS) if k not in self.values]
        if missing:
            raise KernelFormatError(
                self.path, f"zone {name!r} of node {node} lacks {', '.join(missing)}"
            )
        named = {field: self.values.get(key) for key, field in _ZONE_KEYS.items()}
        stats = {k: v for k, v in self.values.items() if k not in _ZONE_KEYS and k != "pages free"}
        self.zones.append(
            ZoneinfoZone(
                node=node,
                zone=name,
                free_pages=self.values["pages free"],
                protection_pages=self.protection,
                stats=FrozenMap(stats),
                pagesets=tuple(self.pagesets),
                **named,  # type: ignore[arg-type]  # required keys checked above
            )
        )
        self.head = None


def parse_zoneinfo(text: str, path: str = ZONEINFO) -> Zoneinfo:
    """Parse /proc/zoneinfo; ``path`` only names the file in errors.

    Entries are looked up by name within each zone's section. A zone lacking ``pages
    free``, ``min``, ``low``, ``high``, ``spanned``, ``present`` or ``managed``, a CPU block
    without ``count:``, a line of no known shape, or a duplicate entry raises
    KernelFormatError.
    """
    parser = _ZoneinfoParser(path)
    for raw in text.splitlines():
        if raw.strip():
            parser.feed(raw)
    parser.finish()
    if not parser.zones:
        raise KernelFormatError(path, "no zones", line=text[:200])
    return Zoneinfo(
        zones=tuple(parser.zones),
        node_stats=FrozenMap({n: FrozenMap(s) for n, s in parser.node_stats.items()}),
    )


_PCP_LINE = re.compile(r"^Node (\d+), +zone +\S+$|^ +count: +(\d+)$", re.M)


def zoneinfo_pcp_pages(text: str, path: str = ZONEINFO) -> dict[int, int]:
    """Free pages on the per-CPU lists of each node zoneinfo lists: what
    :meth:`Zoneinfo.node_pcp_pages` gives, from one scan for the zone headers and the CPU
    blocks' ``count:`` lines (about 30 µs against 200 µs for a whole parse of a small
    machine's zoneinfo: the memory tiers poll it every period). ``path`` names the file
    in errors: KernelFormatError when no zone is listed or a count comes before one."""
    out: dict[int, int] = {}
    node: int | None = None
    for match in _PCP_LINE.finditer(text):
        header, count = match.groups()
        if header is not None:
            node = int(header)
            out.setdefault(node, 0)
        elif node is None:
            raise KernelFormatError(path, "a per-CPU count before any zone", line=match[0])
        else:
            out[node] += int(count)
    if node is None:
        raise KernelFormatError(path, "no zones", line=text[:200])
    return out


# --- the published value and the poller ---


@dataclass(frozen=True)
class ZoneFragmentation:
    """Fragmentation of one populated zone, per order (index = order).

    ``unusable_index_milli`` and ``fragmentation_index_milli`` are the kernel's integer
    thousandths (see the module docs; -1000 in the latter means a block of that order is
    free). ``score_pct`` is the kernel's zone score (``extfrag_for_order`` at the huge page
    order, 0..100) and ``weighted_score`` its share in the node score. ``present_pages``
    and ``managed_pages`` come from zoneinfo.
    """

    node: int
    zone: str
    free_pages: int
    free_bytes: int
    free_blocks: tuple[int, ...]
    unusable_index_milli: tuple[int, ...]
    fragmentation_index_milli: tuple[int, ...]
    score_pct: int
    weighted_score: int
    present_pages: int
    managed_pages: int


@dataclass(frozen=True)
class NodeFragmentation:
    """A node's proactive-compaction view: the kernel's score and its watermarks.

    ``score`` is ``fragmentation_score_node`` (0..100). ``wmark_low``/``wmark_high`` follow
    ``vm.compaction_proactiveness`` when it could be read (else None);
    ``above_wmark_high`` is True when kcompactd would start proactive compaction (it
    also skips it while kswapd runs, which user space cannot see).
    """

    node: int
    score: int
    present_pages: int
    free_pages: int
    hpage_free_blocks: int
    wmark_low: int | None
    wmark_high: int | None
    above_wmark_high: bool | None


@dataclass(frozen=True)
class Fragmentation:
    """One poll: per-zone indices, per-node scores, and the kernel's debugfs files if read.

    ``hpage_order`` is the order the scores use. ``kernel_unusable_index_milli`` and
    ``kernel_extfrag_index_milli`` map ``"<node>/<zone>"`` to the kernel's own rows where
    debugfs is mounted (else empty); they are read in a separate file read, so they may
    differ from the computed ones by what changed in between. When reading or parsing
    them failed, both are empty, ``kernel_index_error`` says why (the rest of the value is
    complete: it comes from buddyinfo and zoneinfo), and ``kernel_index_failures`` counts
    the polls whose debugfs read failed since the poller was built.
    """

    hpage_order: int
    page_size: int
    zones: tuple[ZoneFragmentation, ...]
    nodes: tuple[NodeFragmentation, ...]
    proactiveness: int | None
    kernel_unusable_index_milli: FrozenMap[str, tuple[int, ...]]
    kernel_extfrag_index_milli: FrozenMap[str, tuple[int, ...]]
    kernel_index_error: str | None = None
    kernel_index_failures: int = 0

    def summary(self) -> dict[str, float | int]:
        """Per node: the score and free huge-page-sized blocks; the worst zone's unusable
        index at the huge page order (0..1)."""
        out: dict[str, float | int] = {}
        for n in self.nodes:
            out[f"node{n.node}_score"] = n.score
            out[f"node{n.node}_hpage_free_blocks"] = n.hpage_free_blocks
        worst = max(z.unusable_index_milli[self.hpage_order] for z in self.zones)
        out["max_unusable_hpage"] = worst / 1000
        return out


class FragmentationPoller:
    """Polls buddyinfo (and zoneinfo, proactiveness, debugfs extfrag where present).

    A level, not a rate: the first poll returns a value. zoneinfo is the costly file
    (about 22 µs to read on a kept descriptor and ~180 µs to parse on this host, against
    4 µs for buddyinfo), and ``present`` pages change only with memory hotplug, so it is
    re-read every ``zoneinfo_every`` polls (default 60), and whenever buddyinfo shows a
    zone zoneinfo did not. ``hpage_order`` defaults to 9 (x86-64/arm64 with 4 KiB pages).
    debugfs extfrag files are read only if they exist when the poller is built
    (``read_debugfs``); reactor never mounts debugfs. They are a cross-check, not an
    input: a failed read or an unparsable row drops only the ``kernel_*`` maps of that
    poll (``kernel_index_error`` says why; logged as ``debugfs_extfrag_failed``, counted in
    ``kernel_index_failures``) and the poll still publishes the computed indices.
    """

    def __init__(
        self,
        fs: KernelFS,
        topic: str = "fragmentation",
        *,
        hpage_order: int = COMPACTION_HPAGE_ORDER,
        page_size: int = 4096,
        zoneinfo_every: int = 60,
        read_debugfs: bool = True,
    ) -> None:
        if hpage_order < 0 or page_size <= 0 or zoneinfo_every < 1:
            raise ValueError(
                "expected hpage_order >= 0, page_size > 0 and zoneinfo_every >= 1, got "
                f"{hpage_order}, {page_size}, {zoneinfo_every}"
            )
        self._fs = fs
        self._topic = topic
        self._order = hpage_order
        self._page_size = page_size
        self._every = zoneinfo_every
        self._buddy = KeptReader(fs, BUDDYINFO)
        self._zoneinfo_reader = KeptReader(fs, ZONEINFO)
        self._zoneinfo: Zoneinfo | None = None
        self._polls = 0
        self._proactiveness = KeptReader(fs, PROACTIVENESS) if fs.exists(PROACTIVENESS) else None
        self._debugfs: tuple[KeptReader, KeptReader] | None = None
        if read_debugfs and fs.exists(UNUSABLE_INDEX) and fs.exists(EXTFRAG_INDEX):
            self._debugfs = (KeptReader(fs, UNUSABLE_INDEX), KeptReader(fs, EXTFRAG_INDEX))
        self._debugfs_failures = 0
        self._debugfs_consecutive = 0

    @property
    def topic(self) -> str:
        return self._topic

    def poll(self, now: float) -> Fragmentation:
        """Read the files and compute every index (``now`` is unused: these are levels)."""
        del now
        buddy = parse_buddyinfo(self._buddy.read_text(), BUDDYINFO)
        zoneinfo = self._current_zoneinfo(buddy)
        proactiveness = self._read_proactiveness()
        unusable, extfrag, error = self._read_debugfs()
        frag = compute_fragmentation(
            buddy,
            zoneinfo,
            hpage_order=self._order,
            page_size=self._page_size,
            proactiveness=proactiveness,
            kernel_unusable=unusable,
            kernel_extfrag=extfrag,
        )
        if self._debugfs is None:
            return frag
        return replace(frag, kernel_index_error=error, kernel_index_failures=self._debugfs_failures)

    def _read_debugfs(
        self,
    ) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]], str | None]:
        """The kernel's own rows, or two empty maps and the reason they are missing."""
        unusable: dict[str, tuple[int, ...]] = {}
        extfrag: dict[str, tuple[int, ...]] = {}
        if self._debugfs is None:
            return unusable, extfrag, None
        try:
            for reader, out in zip(self._debugfs, (unusable, extfrag), strict=True):
                for row in parse_extfrag(reader.read_text(), reader.path):
                    out[f"{row.node}/{row.zone}"] = row.index_milli
        except KernelInterfaceError as exc:
            self._debugfs_failures += 1
            self._debugfs_consecutive += 1
            n = self._debugfs_consecutive
            if repeat_logged(n):  # each still counted in kernel_index_failures
                _log.warning(
                    "debugfs_extfrag_failed",
                    topic=self._topic,
                    reason=str(exc),
                    consecutive=n,
                    failures=self._debugfs_failures,
                    effect="kernel_* index maps left empty; computed indices published",
                )
            return {}, {}, str(exc)
        if self._debugfs_consecutive:
            _log.info(
                "debugfs_extfrag_recovered",
                topic=self._topic,
                after_failures=self._debugfs_consecutive,
            )
            self._debugfs_consecutive = 0
        return unusable, extfrag, None

    def _current_zoneinfo(self, buddy: Buddyinfo) -> Zoneinfo:
        self._polls += 1
        stale = self._zoneinfo is None or self._polls % self._every == 0
        if not stale:
            assert self._zoneinfo is not None
            known = {(z.node, z.zone) for z in self._zoneinfo.zones if z.populated}
            stale = any((z.node, z.zone) not in known for z in buddy.zones)
        if stale:
            self._zoneinfo = parse_zoneinfo(self._zoneinfo_reader.read_text(), ZONEINFO)
        assert self._zoneinfo is not None
        return self._zoneinfo

    def _read_proactiveness(self) -> int | None:
        if self._proactiveness is None:
            return None
        text = self._proactiveness.read_text().strip()
        if not text.isdigit():
            raise KernelFormatError(PROACTIVENESS, "expected an integer 0..100", line=text)
        return int(text)

    def close(self) -> None:
        for reader in (self._buddy, self._zoneinfo_reader, self._proactiveness):
            if reader is not None:
                reader.close()
        for reader in self._debugfs or ():
            reader.close()


def compute_fragmentation(
    buddy: Buddyinfo,
    zoneinfo: Zoneinfo,
    *,
    hpage_order: int = COMPACTION_HPAGE_ORDER,
    page_size: int = 4096,
    proactiveness: int | None = None,
    kernel_unusable: dict[str, tuple[int, ...]] | None = None,
    kernel_extfrag: dict[str, tuple[int, ...]] | None = None,
) -> Fragmentation:
    """Every index and score from parsed buddyinfo and zoneinfo (pure; see module docs).

    Raises KernelFormatError if buddyinfo lists a zone zoneinfo lacks, or ValueError if
    ``hpage_order`` exceeds the orders buddyinfo prints.
    """
    if hpage_order >= buddy.nr_orders:
        raise ValueError(f"hpage_order {hpage_order} beyond buddyinfo's {buddy.nr_orders} orders")
    zones: list[ZoneFragmentation] = []
    for b in buddy.zones:
        try:
            zi = zoneinfo.zone(b.node, b.zone)
        except KeyError:
            raise KernelFormatError(
                ZONEINFO, f"buddyinfo lists zone {b.zone!r} of node {b.node}, zoneinfo does not"
            ) from None
        orders = range(len(b.free_blocks))
        score = extfrag_for_order(b.free_blocks, hpage_order)
        node_present = zoneinfo.node_present_pages(b.node)
        zones.append(
            ZoneFragmentation(
                node=b.node,
                zone=b.zone,
                free_pages=b.free_pages,
                free_bytes=b.free_pages * page_size,
                free_blocks=b.free_blocks,
                unusable_index_milli=tuple(unusable_free_index(b.free_blocks, k) for k in orders),
                fragmentation_index_milli=tuple(
                    fragmentation_index(b.free_blocks, k) for k in orders
                ),
                score_pct=score,
                weighted_score=zi.present_pages * score // (node_present + 1),
                present_pages=zi.present_pages,
                managed_pages=zi.managed_pages,
            )
        )
    nodes = tuple(
        _node(
            node,
            [z for z in zones if z.node == node],
            zoneinfo,
            order=hpage_order,
            proactiveness=proactiveness,
        )
        for node in sorted({z.node for z in zones})
    )
    return Fragmentation(
        hpage_order=hpage_order,
        page_size=page_size,
        zones=tuple(zones),
        nodes=nodes,
        proactiveness=proactiveness,
        kernel_unusable_index_milli=FrozenMap(kernel_unusable or {}),
        kernel_extfrag_index_milli=FrozenMap(kernel_extfrag or {}),
    )


def _node(
    node: int,
    zones: list[ZoneFragmentation],
    zoneinfo: Zoneinfo,
    *,
    order: int,
    proactiveness: int | None,
) -> NodeFragmentation:
    wmarks = compaction_wmarks(proactiveness) if proactiveness is not None else None
    present = zoneinfo.node_present_pages(node)
    score = fragmentation_score_node([(z.present_pages, z.score_pct) for z in zones], present)
    above = None
    if wmarks is not None:
        above = bool(proactiveness) and score > wmarks[1]
    return NodeFragmentation(
        node=node,
        score=score,
        present_pages=present,
        free_pages=sum(z.free_pages for z in zones),
        hpage_free_blocks=sum(
            contig_page_info(z.free_blocks, order).free_blocks_suitable for z in zones
        ),
        wmark_low=wmarks[0] if wmarks else None,
        wmark_high=wmarks[1] if wmarks else None,
        above_wmark_high=above,
    )
