"""Guest only: the native sampler's soft-dirty probe on a kernel with CONFIG_MEM_SOFT_DIRTY.

The development host lacks soft-dirty (clear_refs 4 is accepted, bit 55 never sets), so
these run only in the real-kernel lane's guest (tests/kernel/conftest.py refuses
elsewhere). Bounds, derived before running: soft-dirty marks a page on its first write
after ``clear_refs 4``; the workload writes every hot page every 20 ms, inside every
100 ms sampling interval, so the per-page count is exact (0 pages off). A write that
lands between the pagemap read and the next clear_refs is cleared unseen, but the page is
written again 20 ms later, within the same interval.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from reactor.kernelfs import RealKernelFS
from reactor.sampler import (
    NativeSampler,
    ProbeInfo,
    SamplerSettings,
    Snapshot,
    TargetSpec,
    detect_probes,
)
from reactor.testing.workload import WorkloadHandle, WorkloadSpec, start_workload

MIB = 2**20


@pytest.fixture
def anyio_backend() -> str:
    """asyncio: the sampler's probe work runs in worker threads on real time."""
    return "asyncio"


@pytest.fixture(scope="module")
def probes() -> tuple[ProbeInfo, ...]:
    """Probe detection, once for the module; its time is kept in the lane's run directory
    (native_sampler_guest.txt): one CI run took 30 s here where others took 2-8 s."""
    t = time.monotonic()
    found = detect_probes(RealKernelFS())
    line = f"detect_probes: {time.monotonic() - t:.2f} s, " + ", ".join(
        f"{p.name} {'yes' if p.available else 'no'}" for p in found
    )
    print(line)
    out = os.environ.get("REACTOR_LANE_OUT")
    if out:
        with Path(out, "native_sampler_guest.txt").open("a") as f:
            f.write(line + "\n")
    return found


@pytest.fixture
def writer() -> Iterator[WorkloadHandle]:
    """A 64 MiB workload writing a scattered 25 % hot set, stopped by pid afterwards."""
    handle = start_workload(WorkloadSpec(size_bytes=64 * MIB, pattern="scattered", mode="write"))
    yield handle
    handle.stop()


def test_soft_dirty_is_detected_by_its_effect(probes: tuple[ProbeInfo, ...]) -> None:
    """On the guest kernel, writing a page after clear_refs 4 sets its soft-dirty bit."""
    by_name = {p.name: p for p in probes}
    assert by_name["soft-dirty"].available, by_name["soft-dirty"].detail


@pytest.mark.anyio
async def test_soft_dirty_is_exact_per_page(
    probes: tuple[ProbeInfo, ...], writer: WorkloadHandle
) -> None:
    """The soft-dirty probe finds exactly the written pages (0 false positives or negatives)."""
    target = TargetSpec(name="w", pids=(writer.pid,), ranges=writer.mappings, probe="soft-dirty")
    settings = SamplerSettings(sample_interval_s=0.1, aggr_interval_s=1.0, seed=0)
    got: list[Snapshot] = []
    sampler = NativeSampler(RealKernelFS(), [target], settings, probes=probes, sink=got.append)
    with anyio.move_on_after(3.3):
        await sampler.run()
    truth = writer.truth()
    pages = got[-1].pages
    assert pages is not None
    seen = pages.counts > 0
    assert int((seen & ~truth.hot).sum()) == 0
    assert int((~seen & truth.hot).sum()) == 0
