"""NUMA nodes and memory tiers: the parsers, the tier view and the poller.

Files read (each on a kept descriptor; the sysfs ones take a few µs):

- ``/sys/devices/system/node/{possible,online,has_cpu,has_memory,has_normal_memory}``:
  node lists in the kernel's list format (``0``, ``0-1,4``; empty when no node
  qualifies). A CPU-less memory node (``has_memory`` but not ``has_cpu``) is the usual
  shape of a slow tier (CXL, PMEM via dax kmem, or the guest's second node).
- ``/sys/devices/system/node/nodeN/meminfo``: like /proc/meminfo with a ``Node N`` prefix
  and a different set of keys (``MemUsed``, no ``MemAvailable``); ``kB`` means KiB.
  ``MemTotal`` is the node's *managed* memory, so on a kernel that initialises memory
  lazily it is smaller than the machine's RAM until all of it is touched (this host:
  node0 shows 4 GiB of 24 GiB).
- ``/sys/devices/system/node/nodeN/distance``: the SLIT distance to every *online* node,
  in the order of ``online``; keyed here by node id (10 = local).
- ``/sys/devices/system/node/nodeN/cpulist``.
- ``/sys/devices/virtual/memory_tiering/memory_tierT/nodelist`` (6.1+): the nodes of
  each tier. ``T`` is the tier's abstract distance divided by the chunk size
  (``MEMTIER_CHUNK_BITS``), so a smaller ``T`` is a faster tier (DRAM is tier 4 by
  default); the directory may be absent (no tiering support).
- ``/sys/kernel/mm/numa/demotion_enabled`` (5.15+): ``true``/``false``, whether reclaim
  demotes pages to a slower tier instead of discarding them.
- ``/proc/zoneinfo`` (every poll, for the per-CPU free lists; see below).

The tier view sums each tier's nodes: total from the nodes' ``MemTotal``, free from their
``MemFree`` *plus the pages on their per-CPU free lists*, used = total − free (bytes).

Why the per-CPU lists: node meminfo's ``MemFree`` is the sum of the node's zones'
``NR_FREE_PAGES`` (drivers/base/node.c ``node_read_meminfo`` prints ``si_meminfo_node``'s
``freeram``, which mm/show_mem.c sums over the zones with ``sum_zone_node_page_state``).
That counter moves only when pages enter or leave the buddy allocator's free lists
(mm/page_alloc.c ``account_freepages``); a page freed to a CPU's per-CPU list ("pcp")
stays out of it until the list is drained back, and an allocation refills the list from
the buddy in batches that leave MemFree at once. So MemFree leaves out free pages that are
sitting on those lists: up to the lists' ``high`` per CPU and zone (~6,800 pages per CPU
in the qemu guest, ~5.5 % of its node 0; 25,853 pages = 101 MiB on this host in the
capture), and a freed or migrated page may not show in MemFree until its list is drained
(the guest's tiering runs saw MemFree "frozen" while pages moved). mm/show_mem.c prints
the two apart (``free:`` and ``free_pcp:``). zoneinfo's ``pagesets`` print, per zone and
online CPU, the list's ``count`` in pages (``pcp->count``, to which mm/page_alloc.c adds
``1 << order`` per block); :func:`~reactor.signals.fragmentation.zoneinfo_pcp_pages`
sums them per node (one scan for the zone headers and counts: ~30 µs on this host, 2
vCPUs and 5 zones, where the whole parse takes ~200 µs) and
:attr:`NumaNode.pcp_free_bytes` carries the sum. Reading zoneinfo costs ~10–45 µs more:
done on every poll, because the lists change between any two polls. ``NodeMeminfo``
stays exactly what the file says.
"""

from __future__ import annotations

import re
import resource
from dataclasses import dataclass

from reactor.errors import KernelFormatError, KernelInterfaceError
from reactor.kernelfs.base import KernelFS
from reactor.kernelfs.frozen import FrozenMap
from reactor.kernelfs.kept import KeptReader
from reactor.signals.fragmentation import ZONEINFO, zoneinfo_pcp_pages

__all__ = (
    "NODE_SYSFS",
    "TIERING_SYSFS",
    "NodeMeminfo",
    "NumaNode",
    "Tier",
    "Tiers",
    "TiersPoller",
    "build_tiers",
    "parse_demotion_enabled",
    "parse_distance",
    "parse_node_meminfo",
    "parse_nodelist",
)

NODE_SYSFS = "/sys/devices/system/node"
TIERING_SYSFS = "/sys/devices/virtual/memory_tiering"
DEMOTION_ENABLED = "/sys/kernel/mm/numa/demotion_enabled"
KIB = 1024

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_NODE_MEMINFO = re.compile(r"^Node (\d+) ([A-Za-z0-9_()]+):\s+(\d+)(?:\s+(\S+))?$")
_TIER_DIR = re.compile(r"^memory_tier(\d+)$")


def parse_nodelist(text: str, path: str) -> tuple[int, ...]:
    """Parse a kernel list (``0``, ``0-3,8``, or empty) into sorted ids.

    Raises KernelFormatError for anything else, including a range that runs backwards.
    """
    body = text.strip()
    if not body:
        return ()
    ids: set[int] = set()
    for part in body.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise KernelFormatError(path, f"expected a list like '0-3,8', got {part!r}", line=text)
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise KernelFormatError(path, f"range {part!r} runs backwards", line=text)
        ids.update(range(first, last + 1))
    return tuple(sorted(ids))


def parse_distance(text: str, path: str, online: tuple[int, ...]) -> FrozenMap[int, int]:
    """Parse ``nodeN/distance`` into {node id: distance}.

    The kernel prints one distance per online node, in ``online`` order; a count that
    does not match ``online`` (read in between, or a format change) is an error rather
    than a guess.
    """
    tokens = text.split()
    if len(tokens) != len(online) or not all(t.isdigit() for t in tokens):
        raise KernelFormatError(
            path, f"expected {len(online)} distances (online nodes {list(online)})", line=text
        )
    return FrozenMap(dict(zip(online, (int(t) for t in tokens), strict=True)))


def parse_demotion_enabled(text: str, path: str = DEMOTION_ENABLED) -> bool:
    """``true``/``false`` (the kernel also accepts 1/0 when written, but prints words)."""
    value = text.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise KernelFormatError(path, "expected 'true' or 'false'", line=text)


@dataclass(frozen=True)
class NodeMeminfo:
    """A node's meminfo in bytes; ``bytes_by_key``/``counts_by_key`` hold every entry."""

    node: int
    mem_total_bytes: int
    mem_free_bytes: int
    mem_used_bytes: int
    active_file_bytes: int | None
    inactive_file_bytes: int | None
    active_anon_bytes: int | None
    inactive_anon_bytes: int | None
    bytes_by_key: FrozenMap[str, int]
    counts_by_key: FrozenMap[str, int]


def parse_node_meminfo(text: str, path: str, node: int | None = None) -> NodeMeminfo:
    """Parse ``nodeN/meminfo`` (``Node N Key: value [kB]``); ``path`` names the file in errors.

    Every line must carry the same node number (``node`` when given); MemTotal, MemFree
    and MemUsed are required, a duplicate key or a unit other than kB is an error.
    """
    in_bytes: dict[str, int] = {}
    counts: dict[str, int] = {}
    seen_node = node
    for raw in text.splitlines():
        if not raw.strip():
            continue
        match = _NODE_MEMINFO.match(raw.strip())
        if match is None:
            raise KernelFormatError(path, "expected 'Node N Key: integer [kB]'", line=raw)
        line_node, key, value, unit = (
            int(match.group(1)),
            match.group(2),
            int(match.group(3)),
            match.group(4),
        )
        if seen_node is None:
            seen_node = line_node
        elif line_node != seen_node:
            raise KernelFormatError(
                path, f"expected node {seen_node}, got node {line_node}", line=raw
            )
        if key in in_bytes or key in counts:
            raise KernelFormatError(path, f"duplicate key {key!r}", line=raw)
        if unit is None:
            counts[key] = value
        elif unit == "kB":
            in_bytes[key] = value * KIB
        else:
            raise KernelFormatError(path, f"expected unit kB, got {unit!r}", line=raw)
    missing = [k for k in ("MemTotal", "MemFree", "MemUsed") if k not in in_bytes]
    if missing or seen_node is None:
        raise KernelFormatError(path, f"missing {', '.join(missing) or 'every key'} (in kB)")
    return NodeMeminfo(
        node=seen_node,
        mem_total_bytes=in_bytes["MemTotal"],
        mem_free_bytes=in_bytes["MemFree"],
        mem_used_bytes=in_bytes["MemUsed"],
        active_file_bytes=in_bytes.get("Active(file)"),
        inactive_file_bytes=in_bytes.get("Inactive(file)"),
        active_anon_bytes=in_bytes.get("Active(anon)"),
        inactive_anon_bytes=in_bytes.get("Inactive(anon)"),
        bytes_by_key=FrozenMap(in_bytes),
        counts_by_key=FrozenMap(counts),
    )


@dataclass(frozen=True)
class NumaNode:
    """One online node: its roles, CPUs, distances (to online nodes) and memory.

    ``meminfo`` is the node's meminfo as the kernel printed it. ``pcp_free_bytes`` is the
    memory on the node's per-CPU free lists (zoneinfo ``pagesets`` counts, summed over the
    node's zones and the online CPUs): free, but not in meminfo's MemFree (see the module
    docs). None where /proc/zoneinfo could not be read when the poller was built.
    ``free_bytes``/``used_bytes``/``used_ratio`` count it as free; they are what the tier
    view sums.
    """

    node: int
    has_cpu: bool
    has_memory: bool
    has_normal_memory: bool
    cpus: tuple[int, ...]
    distances: FrozenMap[int, int]
    meminfo: NodeMeminfo
    pcp_free_bytes: int | None = None

    @property
    def total_bytes(self) -> int:
        """The node's managed memory (meminfo MemTotal)."""
        return self.meminfo.mem_total_bytes

    @property
    def free_bytes(self) -> int:
        """MemFree plus the per-CPU free lists, at most MemTotal (the two files are read a
        few µs apart, and the kernel's free counter may lag by its per-CPU thresholds)."""
        free = self.meminfo.mem_free_bytes + (self.pcp_free_bytes or 0)
        return min(free, self.total_bytes)

    @property
    def used_bytes(self) -> int:
        """MemTotal − :attr:`free_bytes`."""
        return self.total_bytes - self.free_bytes

    @property
    def used_ratio(self) -> float:
        """used / total (0..1); 0 for a memoryless node."""
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True)
class Tier:
    """One memory tier: its id (smaller is faster), nodes and summed memory in bytes."""

    tier_id: int
    nodes: tuple[int, ...]
    total_bytes: int
    free_bytes: int
    used_bytes: int

    @property
    def used_ratio(self) -> float:
        """used / total (0..1); 0 for a tier of memoryless nodes."""
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True)
class Tiers:
    """The node and tier view of one poll.

    ``tiers`` is empty where the kernel has no memory_tiering directory;
    ``demotion_enabled`` is None where it has no such file. ``untiered_nodes`` lists
    online memory nodes no tier claims (normally none).
    """

    possible: tuple[int, ...]
    online: tuple[int, ...]
    nodes: tuple[NumaNode, ...]
    tiers: tuple[Tier, ...]
    demotion_enabled: bool | None

    @property
    def untiered_nodes(self) -> tuple[int, ...]:
        tiered = {n for t in self.tiers for n in t.nodes}
        return tuple(n.node for n in self.nodes if n.has_memory and n.node not in tiered)

    def node(self, node: int) -> NumaNode:
        for n in self.nodes:
            if n.node == node:
                return n
        raise KeyError(f"node {node} is not online")

    def summary(self) -> dict[str, float | int]:
        """Per tier: used bytes and used ratio; the node count; demotion as 0/1 if known."""
        out: dict[str, float | int] = {"nodes": len(self.nodes)}
        for t in self.tiers:
            out[f"tier{t.tier_id}_used_bytes"] = t.used_bytes
            out[f"tier{t.tier_id}_used_ratio"] = round(t.used_ratio, 6)
        if self.demotion_enabled is not None:
            out["demotion_enabled"] = int(self.demotion_enabled)
        return out


def build_tiers(
    nodes: tuple[NumaNode, ...], tier_nodes: dict[int, tuple[int, ...]]
) -> tuple[Tier, ...]:
    """The tier view: each tier's nodes summed (bytes): total = MemTotal, free = MemFree
    plus the per-CPU free lists (:attr:`NumaNode.free_bytes`), used = total − free.

    A node a tier names that is not online (hot-removed in between) counts nothing.
    """
    by_id = {n.node: n for n in nodes}
    tiers = []
    for tier_id in sorted(tier_nodes):
        members = [by_id[n] for n in tier_nodes[tier_id] if n in by_id]
        total = sum(m.total_bytes for m in members)
        free = sum(m.free_bytes for m in members)
        tiers.append(Tier(tier_id, tier_nodes[tier_id], total, free, total - free))
    return tuple(tiers)


@dataclass(frozen=True)
class _Layout:
    """What a :class:`TiersPoller` keeps between polls: the node roles, each node's CPUs
    and distances, and the tiers' nodes, as read when ``key`` (the ``online`` and
    ``has_memory`` texts) was current."""

    key: tuple[str, str]
    possible: tuple[int, ...]
    has_cpu: frozenset[int]
    has_normal: frozenset[int]
    nodes: dict[int, tuple[tuple[int, ...], FrozenMap[int, int]]]
    tier_nodes: dict[int, tuple[int, ...]]


class TiersPoller:
    """Polls the node and tier files and publishes :class:`Tiers`; a level (first poll
    returns a value).

    Every file is kept open. Each poll reads what moves: the nodes' meminfo,
    /proc/zoneinfo, ``demotion_enabled`` and the two lists that change when memory or a
    node comes or goes (``online``, ``has_memory``). The layout (``possible``,
    ``has_cpu``, ``has_normal_memory``, each node's CPUs and distances, the tiers and
    their nodes) is read again when either list changed, every ``rescan_every`` polls
    (a CPU brought online), and at once when one of its files fails to read; a node that
    went offline is dropped on the next poll. Half the files a poll used to read
    (5 instead of 11 on a one-node machine), on a wake-up where each read costs a
    cold-cache system call. /proc/zoneinfo is read on every poll for the per-CPU free
    lists, where it exists when the poller is built (it always does with procfs; a fake
    kernel tree may lack it, and then ``pcp_free_bytes`` is None and free is MemFree
    alone). ``page_size`` (bytes) converts its page counts; it defaults to the running
    system's.
    """

    def __init__(
        self,
        fs: KernelFS,
        topic: str = "tiers",
        *,
        rescan_every: int = 60,
        page_size: int | None = None,
    ) -> None:
        if rescan_every < 1:
            raise ValueError(f"expected rescan_every >= 1, got {rescan_every}")
        if page_size is not None and page_size <= 0:
            raise ValueError(f"expected page_size > 0 (bytes), got {page_size}")
        self._fs = fs
        self._topic = topic
        self._rescan_every = rescan_every
        self._page_size = page_size if page_size is not None else resource.getpagesize()
        self._readers: dict[str, KeptReader] = {}
        self._layout: _Layout | None = None
        self._polls = 0
        self._read(f"{NODE_SYSFS}/online")  # fail at construction if there is no node sysfs
        self._pcp = fs.exists(ZONEINFO)

    @property
    def topic(self) -> str:
        return self._topic

    def poll(self, now: float) -> Tiers:
        """Read every file that moves (``now`` is unused: these are levels)."""
        del now
        online_text = self._read(f"{NODE_SYSFS}/online")
        memory_text = self._read(f"{NODE_SYSFS}/has_memory")
        online = parse_nodelist(online_text, f"{NODE_SYSFS}/online")
        has_memory = set(parse_nodelist(memory_text, f"{NODE_SYSFS}/has_memory"))
        self._polls += 1
        key = (online_text, memory_text)
        layout = self._layout
        if layout is None or layout.key != key or self._polls % self._rescan_every == 0:
            try:
                layout = self._read_layout(key, online)
            except KernelInterfaceError:  # a tier (or node) went away: list again, once more
                layout = self._read_layout(key, online)
            self._layout = layout
        pcp = self._pcp_pages()
        nodes = tuple(self._node(n, layout, n in has_memory, pcp=pcp) for n in online)
        self._forget_offline(online)
        return Tiers(
            possible=layout.possible,
            online=online,
            nodes=nodes,
            tiers=build_tiers(nodes, layout.tier_nodes),
            demotion_enabled=self._demotion(),
        )

    def _read_layout(self, key: tuple[str, str], online: tuple[int, ...]) -> _Layout:
        """The files that change only when a node, a CPU or a tier comes or goes (the tier
        directory is listed again too: a tier appears when a memory node comes)."""
        tier_dirs = self._scan_tiers()
        nodes = {}
        for n in online:
            base = f"{NODE_SYSFS}/node{n}"
            nodes[n] = (
                parse_nodelist(*self._text(f"{base}/cpulist")),
                parse_distance(*self._text(f"{base}/distance"), online),
            )
        return _Layout(
            key=key,
            possible=parse_nodelist(*self._text(f"{NODE_SYSFS}/possible")),
            has_cpu=frozenset(parse_nodelist(*self._text(f"{NODE_SYSFS}/has_cpu"))),
            has_normal=frozenset(self._optional_list(f"{NODE_SYSFS}/has_normal_memory")),
            nodes=nodes,
            tier_nodes={t: parse_nodelist(*self._text(f"{d}/nodelist")) for t, d in tier_dirs},
        )

    def _pcp_pages(self) -> dict[int, int] | None:
        """Pages on each node's per-CPU free lists, or None without zoneinfo."""
        if not self._pcp:
            return None
        return zoneinfo_pcp_pages(self._read(ZONEINFO), ZONEINFO)

    def _node(
        self, node: int, layout: _Layout, memory: bool, *, pcp: dict[int, int] | None
    ) -> NumaNode:
        meminfo_path = f"{NODE_SYSFS}/node{node}/meminfo"
        cpus, distances = layout.nodes[node]
        return NumaNode(
            node=node,
            has_cpu=node in layout.has_cpu,
            has_memory=memory,
            has_normal_memory=node in layout.has_normal,
            cpus=cpus,
            distances=distances,
            meminfo=parse_node_meminfo(self._read(meminfo_path), meminfo_path, node),
            # a node zoneinfo does not list (memoryless) has no per-CPU lists: 0
            pcp_free_bytes=None if pcp is None else pcp.get(node, 0) * self._page_size,
        )

    def _scan_tiers(self) -> list[tuple[int, str]]:
        if not self._fs.is_dir(TIERING_SYSFS):
            return []
        found = []
        for name in self._fs.listdir(TIERING_SYSFS):
            match = _TIER_DIR.match(name)
            if match is not None:
                found.append((int(match.group(1)), f"{TIERING_SYSFS}/{name}"))
        return sorted(found)

    def _demotion(self) -> bool | None:
        if DEMOTION_ENABLED not in self._readers and not self._fs.exists(DEMOTION_ENABLED):
            return None
        return parse_demotion_enabled(*self._text(DEMOTION_ENABLED))

    def _optional_list(self, path: str) -> tuple[int, ...]:
        if path not in self._readers and not self._fs.exists(path):
            return ()
        return parse_nodelist(*self._text(path))

    def _forget_offline(self, online: tuple[int, ...]) -> None:
        keep = {f"{NODE_SYSFS}/node{n}/" for n in online}
        for path in list(self._readers):
            if path.startswith(f"{NODE_SYSFS}/node") and not any(path.startswith(k) for k in keep):
                self._readers.pop(path).close()

    def _read(self, path: str) -> str:
        reader = self._readers.get(path)
        if reader is None:
            reader = self._readers[path] = KeptReader(self._fs, path)
        try:
            return reader.read_text()
        except KernelInterfaceError:
            self._readers.pop(path, None)  # reopen next time: the file may be back
            raise

    def _text(self, path: str) -> tuple[str, str]:
        return self._read(path), path

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
