"""MigrateActuator on a fake process: page counts per node, unknown nodes, vanishing."""

from __future__ import annotations

import errno

import pytest

from reactor.actuators import Limits, MigrateActuator, NodeUnavailable
from reactor.testing import FakeKernelFS
from tests.unit.actuators.fakes import MIB, FakeMapping, FakeProcess

pytestmark = pytest.mark.anyio

PID = 5151
AT = 0x7E0000000000


def make(fs: FakeKernelFS, nodes: tuple[int, ...] = (0,)) -> FakeProcess:
    proc = FakeProcess(fs, PID, [FakeMapping(AT, 4 * MIB, "anon")], nodes=nodes)
    proc.mappings[0].resident[512:] = False  # 2 MiB present, 2 MiB not
    proc.render()
    return proc


async def test_move_to_the_only_node_counts_pages_per_node(fake_kernel: FakeKernelFS) -> None:
    """Moving to node 0 on a one-node machine moves nothing and counts the pages there."""
    proc = make(fake_kernel)
    out = await MigrateActuator(fake_kernel, calls=proc).move_pages(PID, [(AT, 4 * MIB)], 0)
    assert out.status == "applied"
    assert out.pages_moved == 0
    assert out.measured["present_pages"] == 512
    assert out.measured["node0_before_bytes"] == out.measured["node0_after_bytes"] == 2 * MIB
    assert (512, 0) in proc.move_calls  # the present pages were passed to the kernel


async def test_move_counts_pages_that_changed_node(fake_kernel: FakeKernelFS) -> None:
    """On two nodes, pages moved from node 0 to node 1 are counted as moved."""
    fake_kernel.set_file("/sys/devices/system/node/has_memory", "0-1\n")
    proc = make(fake_kernel, nodes=(0, 1))
    out = await MigrateActuator(fake_kernel, calls=proc).move_pages(PID, [(AT, 4 * MIB)], 1)
    assert out.pages_moved == 512
    assert out.measured["node1_after_bytes"] == 2 * MIB


async def test_move_to_a_node_without_memory_names_the_nodes(fake_kernel: FakeKernelFS) -> None:
    """ENODEV from move_pages becomes an error naming the node and the nodes with memory."""
    proc = make(fake_kernel)
    with pytest.raises(
        NodeUnavailable, match=r"node 1 has no memory .*\(nodes with memory: 0\)"
    ) as info:
        await MigrateActuator(fake_kernel, calls=proc).move_pages(PID, [(AT, 4 * MIB)], 1)
    assert info.value.errno == errno.ENODEV
    assert info.value.nodes == (0,)


async def test_move_pages_chunks_by_chunk_bytes(fake_kernel: FakeKernelFS) -> None:
    """Queries and moves go in batches of chunk_bytes worth of pages."""
    proc = make(fake_kernel)
    act = MigrateActuator(fake_kernel, calls=proc, limits=Limits(chunk_bytes=1 * MIB))
    await act.move_pages(PID, [(AT, 4 * MIB)], 0)
    assert max(n for n, _ in proc.move_calls) == 256


async def test_dry_run_queries_but_never_moves(fake_kernel: FakeKernelFS) -> None:
    """A dry run makes query-mode calls only (node None)."""
    proc = make(fake_kernel)
    act = MigrateActuator(fake_kernel, calls=proc, limits=Limits(dry_run=True))
    out = await act.move_pages(PID, [(AT, 4 * MIB)], 0)
    assert out.status == "dry_run"
    assert all(node is None for _, node in proc.move_calls)


async def test_migrate_pages_without_another_node_is_skipped(fake_kernel: FakeKernelFS) -> None:
    """With node 0 the only node with memory, there is nothing to migrate from."""
    proc = make(fake_kernel)
    out = await MigrateActuator(fake_kernel, calls=proc).migrate_pages(PID, 0)
    assert out.status == "skipped"
    assert out.skipped == "no source node: node 0 is the only node with memory"


async def test_migrate_pages_to_a_missing_node_names_the_nodes(fake_kernel: FakeKernelFS) -> None:
    """EINVAL from migrate_pages becomes NodeUnavailable naming node 1 and node 0."""
    proc = make(fake_kernel)
    with pytest.raises(NodeUnavailable, match=r"node 1 has no memory"):
        await MigrateActuator(fake_kernel, calls=proc).migrate_pages(PID, 1)


async def test_vanished_process_is_an_outcome(fake_kernel: FakeKernelFS) -> None:
    """A process that has exited gives a vanished outcome for both calls."""
    proc = make(fake_kernel)
    proc.vanish()
    act = MigrateActuator(fake_kernel, calls=proc)
    assert (await act.move_pages(PID, [(AT, 4 * MIB)], 0)).vanished
    assert (await act.migrate_pages(PID, 0, [0])).vanished
