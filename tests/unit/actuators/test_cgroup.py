"""CgroupReclaimer on fake cgroupfs trees: v2 memory.reclaim, v1 lowered limits, vanishing."""

from __future__ import annotations

import errno
import os
import time

import pytest

from reactor.actuators import CgroupReclaimer, Limits
from reactor.errors import UnsupportedKernel
from reactor.testing import FakeKernelFS

pytestmark = pytest.mark.anyio

MIB = 1 << 20
V2 = "/sys/fs/cgroup/app"
V1 = "/sys/fs/cgroup/memory/app"
UNLIMITED = "9223372036854771712"


class V2Group:
    """A v2 group whose memory.reclaim frees up to ``reclaimable`` bytes, then EAGAIN."""

    def __init__(self, fs: FakeKernelFS, usage: int, reclaimable: int) -> None:
        self.fs, self.usage, self.reclaimable = fs, usage, reclaimable
        fs.add_tree(V2, {"memory.reclaim": "", "memory.current": "", "memory.stat": ""})
        fs.add_write_hook(f"{V2}/memory.reclaim", self.write)
        self.render()

    def render(self) -> None:
        self.fs.set_file(f"{V2}/memory.current", f"{self.usage}\n")
        self.fs.set_file(
            f"{V2}/memory.stat", f"anon {self.usage - self.reclaimable}\nfile {self.reclaimable}\n"
        )

    def write(self, fs: FakeKernelFS, path: str, data: str) -> None:
        want = int(data)
        got = min(want, self.reclaimable)
        self.usage -= got
        self.reclaimable -= got
        self.render()
        if got < want:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))


class V1Group:
    """A v1 group: a limit below usage reclaims file pages, or EBUSY when it cannot."""

    def __init__(
        self, fs: FakeKernelFS, usage: int, reclaimable: int, limit: str = UNLIMITED
    ) -> None:
        self.fs, self.usage, self.reclaimable = fs, usage, reclaimable
        self.slow_s = 0.0
        fs.add_tree(
            V1,
            {
                "memory.limit_in_bytes": f"{limit}\n",
                "memory.usage_in_bytes": "",
                "memory.stat": "",
            },
        )
        fs.add_write_hook(f"{V1}/memory.limit_in_bytes", self.write)
        self.render()

    def render(self) -> None:
        self.fs.set_file(f"{V1}/memory.usage_in_bytes", f"{self.usage}\n")
        self.fs.set_file(
            f"{V1}/memory.stat",
            f"total_cache {self.reclaimable}\ntotal_rss {self.usage - self.reclaimable}\n",
        )

    def write(self, fs: FakeKernelFS, path: str, data: str) -> None:
        value = UNLIMITED if data.strip() == "-1" else data.strip()
        need = self.usage - int(value)
        if need > 0:
            time.sleep(self.slow_s)
            if need > self.reclaimable:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
            self.usage -= need
            self.reclaimable -= need
            self.render()
        fs.set_file(path, f"{value}\n")

    def limit_writes(self) -> list[str]:
        return [d for p, d in self.fs.writes if p.endswith("limit_in_bytes")]


async def test_v2_reclaim_is_written_in_64_mib_pieces(fake_kernel: FakeKernelFS) -> None:
    """200 MiB is written as 64+64+64+8 MiB and the usage drop is measured."""
    V2Group(fake_kernel, usage=1024 * MIB, reclaimable=512 * MIB)
    out = await CgroupReclaimer(fake_kernel).reclaim(V2, 200 * MIB)
    assert [d for _, d in fake_kernel.writes] == [str(64 * MIB)] * 3 + [str(8 * MIB)]
    assert out.status == "applied"
    assert out.usage_delta_bytes == -200 * MIB
    assert out.file_cache_delta_bytes == -200 * MIB


async def test_v2_eagain_stops_and_reports_the_measured_drop(fake_kernel: FakeKernelFS) -> None:
    """EAGAIN (less reclaimed than asked) stops the action; usage says what really left."""
    V2Group(fake_kernel, usage=1024 * MIB, reclaimable=100 * MIB)
    out = await CgroupReclaimer(fake_kernel).reclaim(V2, 256 * MIB)
    assert out.status == "partial"
    assert out.usage_delta_bytes == -100 * MIB
    assert len(fake_kernel.write_attempts) == 2
    assert any("EAGAIN" in n for n in out.notes)


async def test_v2_without_memory_reclaim_is_unsupported(fake_kernel: FakeKernelFS) -> None:
    """A v2 group without memory.reclaim names the feature and Linux 5.19."""
    fake_kernel.add_tree(V2, {"memory.current": "5\n"})
    with pytest.raises(UnsupportedKernel, match=r"memory\.reclaim; it needs Linux 5\.19"):
        await CgroupReclaimer(fake_kernel).reclaim(V2, MIB)


async def test_v1_lowers_the_limit_and_restores_it_after_each_piece(
    fake_kernel: FakeKernelFS,
) -> None:
    """v1: each piece writes usage - piece, then the original limit (here: -1 for none)."""
    group = V1Group(fake_kernel, usage=1024 * MIB, reclaimable=512 * MIB)
    out = await CgroupReclaimer(fake_kernel).reclaim(V1, 100 * MIB)
    assert group.limit_writes() == [str(960 * MIB), "-1", str(924 * MIB), "-1"]
    assert fake_kernel.file_text(f"{V1}/memory.limit_in_bytes").strip() == UNLIMITED
    assert out.status == "applied"
    assert out.usage_delta_bytes == -100 * MIB


async def test_v1_restores_a_finite_limit(fake_kernel: FakeKernelFS) -> None:
    """A finite original limit is written back as its number."""
    group = V1Group(fake_kernel, usage=500 * MIB, reclaimable=400 * MIB, limit=str(2048 * MIB))
    await CgroupReclaimer(fake_kernel).reclaim(V1, 10 * MIB)
    assert group.limit_writes() == [str(490 * MIB), str(2048 * MIB)]


async def test_v1_ebusy_stops_and_leaves_the_limit_as_it_was(fake_kernel: FakeKernelFS) -> None:
    """When the group cannot shrink (EBUSY), the action stops and the limit is unchanged."""
    V1Group(fake_kernel, usage=1024 * MIB, reclaimable=80 * MIB)
    out = await CgroupReclaimer(fake_kernel).reclaim(V1, 192 * MIB)
    assert out.status == "partial"
    assert out.usage_delta_bytes == -64 * MIB
    assert any("EBUSY" in n for n in out.notes)
    assert fake_kernel.file_text(f"{V1}/memory.limit_in_bytes").strip() == UNLIMITED


async def test_v1_follows_a_limit_changed_by_someone_else(fake_kernel: FakeKernelFS) -> None:
    """A limit changed between two pieces becomes the value that is restored."""
    group = V1Group(fake_kernel, usage=1024 * MIB, reclaimable=512 * MIB)
    original_write = group.write
    calls = 0

    def write(fs: FakeKernelFS, path: str, data: str) -> None:
        nonlocal calls
        original_write(fs, path, data)
        calls += 1
        if calls == 2:  # after our first restore, an operator sets 3 GiB
            fs.set_file(path, f"{3072 * MIB}\n")

    fake_kernel.add_write_hook(f"{V1}/memory.limit_in_bytes", write)
    out = await CgroupReclaimer(fake_kernel).reclaim(V1, 100 * MIB)
    assert group.limit_writes()[-1] == str(3072 * MIB)
    assert any("changed by someone else" in n for n in out.notes)


async def test_v1_deadline_still_restores_the_limit(fake_kernel: FakeKernelFS) -> None:
    """A deadline that passes inside a lowering write still ends with the limit restored."""
    group = V1Group(fake_kernel, usage=1024 * MIB, reclaimable=512 * MIB)
    group.slow_s = 0.2
    act = CgroupReclaimer(fake_kernel, limits=Limits(deadline_s=0.05))
    out = await act.reclaim(V1, 256 * MIB)
    assert fake_kernel.file_text(f"{V1}/memory.limit_in_bytes").strip() == UNLIMITED
    assert group.limit_writes()[-1] == "-1"
    assert any("deadline" in e for e in out.errors)


async def test_dry_run_writes_nothing(fake_kernel: FakeKernelFS) -> None:
    """A dry run reads usage, plans the pieces and writes nothing."""
    V1Group(fake_kernel, usage=1024 * MIB, reclaimable=512 * MIB)
    out = await CgroupReclaimer(fake_kernel, limits=Limits(dry_run=True)).reclaim(V1, 200 * MIB)
    assert out.status == "dry_run"
    assert out.measured["planned_writes"] == 4
    assert fake_kernel.writes == ()


async def test_vanished_cgroup_is_an_outcome(fake_kernel: FakeKernelFS) -> None:
    """A cgroup directory that is gone gives a vanished outcome."""
    out = await CgroupReclaimer(fake_kernel).reclaim("/sys/fs/cgroup/memory/gone", MIB)
    assert out.vanished


async def test_cgroup_removed_mid_action_is_an_outcome(fake_kernel: FakeKernelFS) -> None:
    """A group removed between pieces ends the action as vanished, without an exception."""
    group = V1Group(fake_kernel, usage=1024 * MIB, reclaimable=512 * MIB)
    original_write = group.write

    def write(fs: FakeKernelFS, path: str, data: str) -> None:
        original_write(fs, path, data)
        if data == "-1":
            fs.remove(V1)

    fake_kernel.add_write_hook(f"{V1}/memory.limit_in_bytes", write)
    out = await CgroupReclaimer(fake_kernel).reclaim(V1, 200 * MIB)
    assert out.vanished
