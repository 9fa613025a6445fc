"""Nodes and memory tiers: parsers on this host's captures and malformed text, the tier
view, and the poller on the fake kernel tree (one node here; two tiers as the guest has)."""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import pickle
import re
from collections.abc import Callable

import pytest

from reactor.errors import KernelFormatError, KernelInterfaceError
from reactor.signals.fragmentation import ZONEINFO
from reactor.signals.tiers import (
    DEMOTION_ENABLED,
    NODE_SYSFS,
    TIERING_SYSFS,
    TiersPoller,
    parse_demotion_enabled,
    parse_distance,
    parse_node_meminfo,
    parse_nodelist,
)
from reactor.testing import FakeKernelFS
from tests.captures import CAPTURED

Captured = Callable[[str], str]
MEMINFO = f"{NODE_SYSFS}/node0/meminfo"
GUEST = CAPTURED / "guest-debian-7.2"


def host_fs(captured: Captured) -> FakeKernelFS:
    """This host's node and tier files, from the captures, at their kernel paths."""
    fs = FakeKernelFS()
    for name in ("possible", "online", "has_cpu", "has_memory", "has_normal_memory"):
        fs.set_file(f"{NODE_SYSFS}/{name}", captured(f"sys_devices_system_node_{name}"))
    for name in ("meminfo", "distance", "cpulist"):
        fs.set_file(f"{NODE_SYSFS}/node0/{name}", captured(f"sys_devices_system_node_node0_{name}"))
    fs.set_file(
        f"{TIERING_SYSFS}/memory_tier4/nodelist",
        captured("sys_devices_virtual_memory_tiering_memory_tier4_nodelist"),
    )
    fs.set_file(DEMOTION_ENABLED, captured("sys_kernel_mm_numa_demotion_enabled"))
    fs.set_file(ZONEINFO, captured("proc_zoneinfo"))
    return fs


def node_meminfo(node: int, total_kib: int, free_kib: int) -> str:
    return (
        f"Node {node} MemTotal: {total_kib:>15} kB\n"
        f"Node {node} MemFree: {free_kib:>16} kB\n"
        f"Node {node} MemUsed: {total_kib - free_kib:>16} kB\n"
        f"Node {node} HugePages_Total:     0\n"
    )


def zoneinfo(counts: dict[tuple[int, str], tuple[int, ...]]) -> str:
    """A minimal /proc/zoneinfo in the kernel's layout: per zone, the per-CPU list
    ``count:`` of each CPU (``counts[(node, zone)]``, one value per CPU)."""
    out = []
    for (node, zone), per_cpu in counts.items():
        out.append(
            f"Node {node}, zone {zone:>8}\n  pages free     100\n        min      1\n"
            "        low      2\n        high     3\n        spanned  1000\n"
            "        present  1000\n        managed  900\n"
            "        protection: (0, 0)\n      nr_free_pages 100\n  pagesets\n"
        )
        for cpu, count in enumerate(per_cpu):
            out.append(
                f"    cpu: {cpu}\n              count:    {count}\n"
                "              high:     200\n              batch:    63\n"
                "  vm stats threshold: 24\n"
            )
        out.append("  node_unreclaimable:  0\n  start_pfn:           4096\n")
    return "".join(out)


def two_tier_fs() -> FakeKernelFS:
    """The guest's shape: node 0 with CPUs (DRAM, tier 4), node 1 CPU-less (slow, tier 22)."""
    return FakeKernelFS(
        {
            "sys/devices/system/node": {
                "possible": "0-1\n",
                "online": "0-1\n",
                "has_cpu": "0\n",
                "has_memory": "0-1\n",
                "has_normal_memory": "0-1\n",
                "node0": {
                    "meminfo": node_meminfo(0, 1000, 250),
                    "distance": "10 20\n",
                    "cpulist": "0-1\n",
                },
                "node1": {
                    "meminfo": node_meminfo(1, 3000, 2000),
                    "distance": "20 10\n",
                    "cpulist": "\n",
                },
            },
            "sys/devices/virtual/memory_tiering": {
                "memory_tier4": {"nodelist": "0\n"},
                "memory_tier22": {"nodelist": "1\n"},
                "power": {},
            },
            "sys/kernel/mm/numa/demotion_enabled": "true\n",
        }
    )


@pytest.mark.parametrize(
    ("text", "ids"),
    [("0\n", (0,)), ("0-1\n", (0, 1)), ("0-2,5,7-8\n", (0, 1, 2, 5, 7, 8)), ("\n", ())],
)
def test_parse_nodelist(text: str, ids: tuple[int, ...]) -> None:
    """Kernel lists parse to sorted ids; an empty list is no node."""
    assert parse_nodelist(text, "/x") == ids


@pytest.mark.parametrize(
    ("text", "message"),
    [("0-\n", "expected a list like '0-3,8', got '0-'"), ("3-1\n", "range '3-1' runs backwards")],
)
def test_parse_nodelist_malformed(text: str, message: str) -> None:
    """A malformed list raises KernelFormatError naming the file and quoting the text."""
    with pytest.raises(KernelFormatError, match=rf"^/x: {re.escape(message)}") as info:
        parse_nodelist(text, "/x")
    assert info.value.line == text


def test_parse_host_captures(captured: Captured) -> None:
    """The host's node files: node 0 only, 2 CPUs, distance 10 to itself, demotion off."""
    online = parse_nodelist(captured("sys_devices_system_node_online"), "online")
    assert online == (0,)
    assert parse_nodelist(captured("sys_devices_system_node_has_generic_initiator"), "g") == ()
    assert parse_nodelist(captured("sys_devices_system_node_node0_cpulist"), "c") == (0, 1)
    assert parse_distance(captured("sys_devices_system_node_node0_distance"), "d", online) == {
        0: 10
    }
    assert parse_demotion_enabled(captured("sys_kernel_mm_numa_demotion_enabled")) is False


def test_parse_node_meminfo_capture(captured: Captured) -> None:
    """node0/meminfo parses keyed, in bytes (kB × 1024), with its Node prefix checked."""
    m = parse_node_meminfo(captured("sys_devices_system_node_node0_meminfo"), MEMINFO, 0)
    assert m.node == 0
    assert m.mem_total_bytes == 5466316 * 1024
    assert m.mem_free_bytes == 3231320 * 1024
    assert m.mem_used_bytes == 2234996 * 1024 == m.mem_total_bytes - m.mem_free_bytes
    assert m.active_file_bytes == 420592 * 1024
    assert m.counts_by_key["HugePages_Total"] == 0
    assert m.bytes_by_key["Shmem"] == 8872 * 1024


TOTAL = "Node 0 MemTotal: 10 kB\n"


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        (f"{TOTAL}Node 1 MemFree: 5 kB\n", "expected node 0, got node 1", "Node 1 MemFree: 5 kB"),
        ("MemTotal: 10 kB\n", "expected 'Node N Key: integer [kB]'", "MemTotal: 10 kB"),
        ("Node 0 MemTotal: 10 MB\n", "expected unit kB, got 'MB'", "Node 0 MemTotal: 10 MB"),
        (f"{TOTAL}{TOTAL}", "duplicate key 'MemTotal'", TOTAL.strip()),
        (TOTAL, "missing MemFree, MemUsed (in kB)", None),
    ],
)  # fmt: skip
def test_parse_node_meminfo_malformed(text: str, message: str, line: str | None) -> None:
    """Malformed node meminfo raises KernelFormatError naming the file and quoting the line."""
    with pytest.raises(KernelFormatError, match=rf"^{MEMINFO}: {re.escape(message)}") as info:
        parse_node_meminfo(text, MEMINFO, 0)
    assert info.value.line == line


def test_distance_count_must_match_online() -> None:
    """A distance row whose length is not the online node count is an error, not a guess."""
    with pytest.raises(KernelFormatError, match=r"expected 2 distances \(online nodes \[0, 1\]\)"):
        parse_distance("10\n", "/d", (0, 1))


def test_demotion_enabled_malformed() -> None:
    """demotion_enabled must say true or false."""
    with pytest.raises(KernelFormatError, match="expected 'true' or 'false'"):
        parse_demotion_enabled("maybe\n")


#: Host capture, node 0: MemTotal 5,466,316 kB, MemFree 3,231,320 kB (node0/meminfo;
#: zoneinfo read with it shows the same: managed 1,366,579 pages, nr_free_pages 807,830),
#: and 15,290 + 10,563 = 25,853 pages on the Normal zone's per-CPU lists (zoneinfo):
#: 25,853 x 4 KiB = 103,412 KiB (101.0 MiB, 1.9 % of the node) that MemFree leaves out.
HOST_PCP_KIB = 25853 * 4
HOST_USED_KIB = 5466316 - 3231320 - HOST_PCP_KIB  # 2,131,584 kB, not MemUsed's 2,234,996


def test_poller_on_host_captures(captured: Captured) -> None:
    """On this host's files: one tier (memory_tier4) holding node 0, sized by its meminfo,
    with the pages on the per-CPU free lists (zoneinfo) counted as free."""
    poller = TiersPoller(host_fs(captured), page_size=4096)
    assert poller.topic == "tiers"
    tiers = poller.poll(0.0)
    assert tiers.online == tiers.possible == (0,)
    (node,) = tiers.nodes
    assert node.has_cpu and node.has_memory and node.cpus == (0, 1)
    assert node.pcp_free_bytes == HOST_PCP_KIB * 1024 == 105_893_888
    assert node.meminfo.mem_free_bytes == 3231320 * 1024  # the file, as printed
    assert node.free_bytes == (3231320 + HOST_PCP_KIB) * 1024
    (tier,) = tiers.tiers
    assert (tier.tier_id, tier.nodes) == (4, (0,))
    assert tier.total_bytes == 5466316 * 1024
    assert tier.free_bytes == (3231320 + HOST_PCP_KIB) * 1024
    assert tier.used_bytes == HOST_USED_KIB * 1024 == node.used_bytes
    assert tiers.demotion_enabled is False and tiers.untiered_nodes == ()
    assert tiers.summary() == {
        "nodes": 1,
        "tier4_used_bytes": HOST_USED_KIB * 1024,
        "tier4_used_ratio": round(HOST_USED_KIB / 5466316, 6),
        "demotion_enabled": 0,
    }


def test_per_cpu_lists_follow_each_poll_and_free_is_capped() -> None:
    """zoneinfo is read on every poll (the lists change between any two), each node gets
    its own zones' counts, and free never exceeds MemTotal (the files are read apart)."""
    fs = two_tier_fs()
    fs.set_file(ZONEINFO, zoneinfo({(0, "Normal"): (10, 20), (1, "Normal"): (5, 0)}))
    poller = TiersPoller(fs, page_size=4096)
    tiers = poller.poll(0.0)
    assert [n.pcp_free_bytes for n in tiers.nodes] == [30 * 4096, 5 * 4096]
    fast, slow = tiers.tiers
    assert fast.free_bytes == 250 * 1024 + 30 * 4096 and fast.used_bytes == 750 * 1024 - 30 * 4096
    assert slow.used_bytes == 1000 * 1024 - 5 * 4096
    fs.set_file(ZONEINFO, zoneinfo({(0, "Normal"): (0, 200), (1, "Normal"): (0, 0)}))
    fast, slow = poller.poll(1.0).tiers
    assert fast.free_bytes == fast.total_bytes == 1000 * 1024 and fast.used_bytes == 0
    assert slow.free_bytes == 2000 * 1024
    assert fs.open_count(ZONEINFO) == 1  # a kept descriptor


def test_without_zoneinfo_free_is_memfree() -> None:
    """Where the tree has no /proc/zoneinfo (a fake), the lists are unknown (None) and free
    is MemFree alone."""
    tiers = TiersPoller(two_tier_fs()).poll(0.0)
    assert [n.pcp_free_bytes for n in tiers.nodes] == [None, None]
    assert tiers.tiers[0].free_bytes == 250 * 1024


def test_zoneinfo_read_failure_is_an_error() -> None:
    """A failed zoneinfo read fails the poll (counted by the runtime) rather than publish
    a view that silently lags by the per-CPU lists."""
    fs = two_tier_fs()
    fs.set_file(ZONEINFO, zoneinfo({(0, "Normal"): (1, 1)}))
    poller = TiersPoller(fs)
    poller.poll(0.0)
    fs.inject_fault(ZONEINFO, errno.EIO, ops=("read",))
    with pytest.raises(KernelInterfaceError, match=r"^/proc/zoneinfo: cannot read \(EIO"):
        poller.poll(1.0)
    assert poller.poll(2.0).nodes[0].pcp_free_bytes is not None  # reopened


def test_poller_two_tiers() -> None:
    """Two nodes in two tiers: tiers sorted fastest first, each summing its own nodes;
    distances keyed by node id; the CPU-less node has no CPUs."""
    tiers = TiersPoller(two_tier_fs()).poll(0.0)
    assert [(t.tier_id, t.nodes) for t in tiers.tiers] == [(4, (0,)), (22, (1,))]
    fast, slow = tiers.tiers
    assert (fast.total_bytes, fast.free_bytes, fast.used_bytes) == (
        1000 * 1024,
        250 * 1024,
        750 * 1024,
    )
    assert slow.used_ratio == pytest.approx(1000 / 3000)
    assert tiers.node(1).distances == {0: 20, 1: 10}
    assert not tiers.node(1).has_cpu and tiers.node(1).cpus == ()
    assert tiers.demotion_enabled is True


def test_poller_without_tiering_support(captured: Captured) -> None:
    """Without memory_tiering and demotion_enabled (older kernels) there are no tiers and
    demotion is None."""
    fs = host_fs(captured)
    fs.remove(TIERING_SYSFS)
    fs.remove(DEMOTION_ENABLED)
    tiers = TiersPoller(fs).poll(0.0)
    assert tiers.tiers == () and tiers.demotion_enabled is None
    assert tiers.untiered_nodes == (0,)


def test_poller_follows_node_and_tier_changes() -> None:
    """A node that goes offline leaves the view; a tier removed is noticed at once."""
    fs = two_tier_fs()
    poller = TiersPoller(fs, rescan_every=1000)
    poller.poll(0.0)
    fs.set_file(f"{NODE_SYSFS}/online", "0\n")
    fs.set_file(f"{NODE_SYSFS}/has_memory", "0\n")
    fs.set_file(f"{NODE_SYSFS}/node0/distance", "10\n")
    fs.remove(f"{NODE_SYSFS}/node1")
    fs.remove(f"{TIERING_SYSFS}/memory_tier22")
    tiers = poller.poll(1.0)
    assert [n.node for n in tiers.nodes] == [0]
    assert [t.tier_id for t in tiers.tiers] == [4]


def test_poller_reads_the_layout_again_when_memory_comes_or_every_rescan() -> None:
    """Each poll reads the meminfo; a node's CPUs, distances and tiers are kept until
    ``online`` or ``has_memory`` changes, or ``rescan_every`` polls have passed."""
    fs = two_tier_fs()
    poller = TiersPoller(fs, rescan_every=3)
    poller.poll(0.0)  # poll 1
    fs.set_file(f"{NODE_SYSFS}/node0/meminfo", node_meminfo(0, 1000, 100))
    fs.set_file(f"{NODE_SYSFS}/node0/cpulist", "0\n")
    tiers = poller.poll(1.0)  # poll 2: the meminfo moved, the layout is kept
    assert tiers.node(0).meminfo.mem_free_bytes == 100 << 10
    assert tiers.node(0).cpus == (0, 1)
    assert poller.poll(2.0).node(0).cpus == (0,)  # poll 3: the rescan
    fs.set_file(f"{NODE_SYSFS}/has_cpu", "0-1\n")
    fs.set_file(f"{NODE_SYSFS}/has_memory", "0\n")  # node 1's memory went away
    tiers = poller.poll(3.0)  # poll 4: at once
    assert tiers.node(1).has_cpu and not tiers.node(1).has_memory


def test_poller_missing_node_sysfs_fails_at_construction() -> None:
    """A kernel without node sysfs is a KernelInterfaceError when the poller is built."""
    with pytest.raises(KernelInterfaceError, match="/sys/devices/system/node/online"):
        TiersPoller(FakeKernelFS({"proc": {}}))


def test_published_value_is_plain_frozen_data() -> None:
    """The published Tiers survives pickle, deepcopy and asdict -> JSON, and its summary
    is a flat JSON object of numbers."""
    value = TiersPoller(two_tier_fs()).poll(0.0)
    assert pickle.loads(pickle.dumps(value)) == value == copy.deepcopy(value)
    json.dumps(dataclasses.asdict(value))
    assert all(isinstance(v, int | float) for v in value.summary().values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.online = ()  # type: ignore[misc]


def test_guest_two_tiers_from_captures() -> None:
    """The guest kernel's node meminfo files (7.2.12) in the guest's tier layout (tier 4:
    node 0, tier 90: the CPU-less node 1, from its tiering listing) give each tier its
    own node's memory."""
    fs = two_tier_fs()
    for node in (0, 1):
        text = (
            CAPTURED / "guest-debian-7.2" / f"sys_devices_system_node_node{node}_meminfo"
        ).read_text()
        fs.set_file(f"{NODE_SYSFS}/node{node}/meminfo", text)
    fs.remove(f"{TIERING_SYSFS}/memory_tier22")
    fs.set_file(f"{TIERING_SYSFS}/memory_tier90/nodelist", "1\n")
    fs.set_file(ZONEINFO, (GUEST / "proc_zoneinfo").read_text())
    tiers = TiersPoller(fs, page_size=4096).poll(0.0)
    fast, slow = tiers.tiers
    # zoneinfo, captured with them (managed and nr_free_pages equal the meminfo files):
    # node 0 DMA32 2,607 + 5,573 = 8,180 pages (32,720 KiB, 3.3 % of the node), node 1
    # DMA32 2,849 + 2,341 = 5,190 pages (20,760 KiB, 4.0 %) on the per-CPU lists.
    assert [n.pcp_free_bytes for n in tiers.nodes] == [32720 * 1024, 20760 * 1024]
    assert (fast.tier_id, fast.nodes, fast.total_bytes) == (4, (0,), 987796 * 1024)
    assert (fast.used_bytes, fast.free_bytes) == (
        (132632 - 32720) * 1024,  # MemUsed 132,632 kB less the lists: 99,912 kB
        (855164 + 32720) * 1024,
    )
    assert (slow.tier_id, slow.nodes, slow.total_bytes) == (90, (1,), 513704 * 1024)
    assert slow.used_bytes == (62080 - 20760) * 1024  # 41,320 kB
    assert tiers.node(1).meminfo.active_anon_bytes == 26256 * 1024


def test_node_goals_read_the_view_with_the_per_cpu_lists_free() -> None:
    """The policies' node_used_ratio / fast_tier_used_ratio (fast_nodes given) read the
    same corrected used bytes as the tier view, not node meminfo's MemUsed: 750 KiB used
    of 1000 KiB less 30 pages on node 0's per-CPU lists."""
    from reactor.policies.base import fast_used_ratio, nodes_used_ratio

    fs = two_tier_fs()
    fs.set_file(ZONEINFO, zoneinfo({(0, "Normal"): (10, 20), (1, "Normal"): (5, 0)}))
    tiers = TiersPoller(fs, page_size=4096).poll(0.0)
    want = (750 * 1024 - 30 * 4096) / (1000 * 1024)
    assert nodes_used_ratio(tiers, [0]) == pytest.approx(want)
    assert fast_used_ratio(tiers, [0]) == pytest.approx(want)
