"""The library API: an application that embeds reactor monitors its own memory.

A cooperating application knows its memory: it registers its own ranges, and it can
make probes finer at no kernel cost:

- :func:`split_into_chunks` makes the kernel keep one VMA per chunk of a buffer
  (alternating the harmless ``MADV_DONTDUMP``/``MADV_DODUMP`` flags), so the
  ``referenced`` probe counts per chunk instead of per buffer (bounded by
  ``vm.max_map_count``, 65530 by default);
- :func:`watch_own_memory` registers userfaultfd write-protect (async mode) on the
  ranges and runs a :class:`~reactor.sampler.runner.NativeSampler` on the own process
  with the ``uffd-wp`` probe (per page, writes only; no clear_refs is written to the
  own process), handing snapshots out through a memory object stream.

Example::

    async with watch_own_memory([(base, base + size)], SamplerSettings(...)) as snapshots:
        async for snap in snapshots:
            ...
"""

from __future__ import annotations

import mmap
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from reactor.kernelfs import KernelFS, RealKernelFS
from reactor.sampler.probes import PAGE_SIZE, ProbeInfo
from reactor.sampler.runner import NativeSampler, SamplerSettings
from reactor.sampler.snapshot import Snapshot
from reactor.sampler.targets import TargetSpec

__all__ = ("UFFD_WP_INFO", "split_into_chunks", "watch_own_memory")

#: The uffd-wp probe as a cooperating process knows it (registration itself is the test).
UFFD_WP_INFO = ProbeInfo(
    name="uffd-wp",
    available=True,
    per_page=True,
    granularity_bytes=PAGE_SIZE,
    sees="writes",
    needs_cooperation=True,
    detail="registered by the monitored process itself",
)


def split_into_chunks(
    buffer: mmap.mmap, chunk_bytes: int, *, offset: int = 0, length: int | None = None
) -> int:
    """Make ``buffer[offset:offset+length]`` one VMA per ``chunk_bytes``; return the count.

    Neighbouring chunks differ in the dump flag, which nothing but core dumps reads,
    so the kernel cannot merge them. ``chunk_bytes`` must be a multiple of the page size.
    """
    if chunk_bytes < PAGE_SIZE or chunk_bytes % PAGE_SIZE:
        raise ValueError(
            f"chunk_bytes must be a positive multiple of {PAGE_SIZE}, got {chunk_bytes}"
        )
    end = len(buffer) if length is None else offset + length
    count = 0
    for i, pos in enumerate(range(offset, end, chunk_bytes)):
        advice = mmap.MADV_DONTDUMP if i % 2 else mmap.MADV_DODUMP
        buffer.madvise(advice, pos, min(chunk_bytes, end - pos))
        count += 1
    return count


@asynccontextmanager
async def watch_own_memory(
    ranges: Sequence[tuple[int, int]],
    settings: SamplerSettings | None = None,
    *,
    fs: KernelFS | None = None,
    buffer: int = 4,
) -> AsyncIterator[MemoryObjectReceiveStream[Snapshot]]:
    """Monitor ``ranges`` of this process with uffd-wp; yield a stream of snapshots.

    The stream holds at most ``buffer`` snapshots: when the application reads slower
    than snapshots come, the newest are dropped (and counted in the sampler's log)
    rather than queued without bound. Leaving the block stops the sampler and
    unregisters the ranges.
    """
    from reactor.kernelfs.syscalls import UffdWriteProtect

    registered = [(int(s), int(e)) for s, e in ranges]
    send, receive = anyio.create_memory_object_stream[Snapshot](buffer)
    dropped = 0

    def sink(snap: Snapshot) -> None:
        nonlocal dropped
        try:
            send.send_nowait(snap)
        except anyio.WouldBlock:
            dropped += 1

    with UffdWriteProtect() as uffd:
        for s, e in registered:
            uffd.register(s, e - s)
        spec = TargetSpec(
            name="self",
            pids=(os.getpid(),),
            ranges=tuple(registered),
            probe="uffd-wp",
            self_ok=True,
        )
        sampler = NativeSampler(
            fs or RealKernelFS(), [spec], settings, probes=[UFFD_WP_INFO], sink=sink
        )
        async with anyio.create_task_group() as tg:
            await tg.start(sampler.run)
            try:
                async with receive:
                    yield receive
            finally:
                tg.cancel_scope.cancel()
                send.close()
