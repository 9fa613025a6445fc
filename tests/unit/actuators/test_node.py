"""NodeActuator, only ever on a fake tree: the gate, the writes, the measured deltas."""

from __future__ import annotations

import errno
import os
import re

import pytest

from reactor.actuators import Limits, NodeActuator, RefusedAction
from reactor.errors import UnsupportedKernel
from reactor.testing import FakeKernelFS

pytestmark = pytest.mark.anyio

MIB = 1 << 20
RECLAIM = "/sys/devices/system/node/node0/reclaim"
COMPACT = "/sys/devices/system/node/node0/compact"
COMPACT_ALL = "/proc/sys/vm/compact_memory"


def node_tree(fs: FakeKernelFS) -> None:
    for path in (RECLAIM, COMPACT, COMPACT_ALL):
        fs.set_file(path, "")


async def test_refused_without_allow_node_wide(fake_kernel: FakeKernelFS) -> None:
    """Without the flag, reclaim and compaction (even dry runs) are refused; nothing is written."""
    node_tree(fake_kernel)
    for limits in (Limits(), Limits(dry_run=True)):
        act = NodeActuator(fake_kernel, limits=limits)
        with pytest.raises(RefusedAction, match=r"^refused to act on node 0: node_reclaim acts on"):
            await act.reclaim(0, 16 * MIB)
        with pytest.raises(RefusedAction, match=r"allow_node_wide=True"):
            await act.compact()
    assert fake_kernel.write_attempts == ()


async def test_reclaim_is_written_in_pieces_and_measured(fake_kernel: FakeKernelFS) -> None:
    """100 MiB of node reclaim is written as 64 + 36 MiB; node meminfo deltas are reported."""
    node_tree(fake_kernel)
    meminfo = "/sys/devices/system/node/node0/meminfo"

    def write(fs: FakeKernelFS, path: str, data: str) -> None:
        # the node gives back what was asked: MemUsed falls by the written bytes
        text = fs.file_text(meminfo)
        used = int(re.search(r"MemUsed:\s+(\d+) kB", text).group(1))  # type: ignore[union-attr]
        new = re.sub(r"MemUsed:\s+\d+ kB", f"MemUsed: {used - int(data) // 1024} kB", text)
        fs.set_file(meminfo, new)

    fake_kernel.add_write_hook(RECLAIM, write)
    out = await NodeActuator(fake_kernel, allow_node_wide=True).reclaim(0, 100 * MIB)
    assert [d for _, d in fake_kernel.writes] == [str(64 * MIB), str(36 * MIB)]
    assert out.status == "applied"
    assert out.usage_delta_bytes == -100 * MIB
    assert "pgsteal_proactive_pages" in out.measured


async def test_reclaim_eagain_stops(fake_kernel: FakeKernelFS) -> None:
    """EAGAIN on the first piece stops the action with a note."""
    node_tree(fake_kernel)

    def refuse(fs: FakeKernelFS, path: str, data: str) -> None:
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    fake_kernel.add_write_hook(RECLAIM, refuse)
    out = await NodeActuator(fake_kernel, allow_node_wide=True).reclaim(0, 200 * MIB)
    assert out.status == "partial" and out.applied_bytes == 0
    assert len(fake_kernel.write_attempts) == 1
    assert "EAGAIN" in out.notes[0]


async def test_compaction_writes_one_to_the_right_file(fake_kernel: FakeKernelFS) -> None:
    """compact(0) writes node0/compact, compact() writes /proc/sys/vm/compact_memory."""
    node_tree(fake_kernel)
    act = NodeActuator(fake_kernel, allow_node_wide=True)
    one = await act.compact(0)
    every = await act.compact()
    assert fake_kernel.writes == ((COMPACT, "1"), (COMPACT_ALL, "1"))
    assert one.target == "node 0" and every.target == "every node"
    # buddyinfo capture: order-9 blocks 1+2+2, order-10 blocks (3+752+36) count twice
    assert one.measured["free_huge_blocks_before"] == (1 + 2 + 2) + (3 + 752 + 36) * 2
    assert one.pages_moved == 0


async def test_dry_run_with_the_flag_writes_nothing(fake_kernel: FakeKernelFS) -> None:
    """With the flag and dry_run, both actions plan and write nothing."""
    node_tree(fake_kernel)
    act = NodeActuator(fake_kernel, allow_node_wide=True, limits=Limits(dry_run=True))
    assert (await act.reclaim(0, 100 * MIB)).status == "dry_run"
    assert (await act.compact(0)).status == "dry_run"
    assert fake_kernel.write_attempts == ()


async def test_missing_reclaim_file_is_unsupported(fake_kernel: FakeKernelFS) -> None:
    """A kernel without nodeN/reclaim says which file is missing."""
    with pytest.raises(UnsupportedKernel, match=r"node0/reclaim"):
        await NodeActuator(fake_kernel, allow_node_wide=True).reclaim(0, MIB)
