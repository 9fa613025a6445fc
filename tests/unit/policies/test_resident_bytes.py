"""The DAMON reclaim feedforward's resident reading: cold spans cut to what is in RAM."""

from __future__ import annotations

import pytest

from reactor.errors import TargetVanished
from reactor.policies.base import PAGE_SIZE
from reactor.policies.damon import resident_bytes
from reactor.testing import FakeKernelFS

MIB = 1 << 20
A = 0x7F0000000000
PRESENT, SWAPPED = 1 << 63, 1 << 62


def process(fs: FakeKernelFS, pid: int, vmas: list[tuple[int, int]], pages: dict[int, int]) -> None:
    """A process with ``vmas`` (maps) and pagemap entries ``pages`` (page -> entry, 0 else)."""
    fs.set_file(f"/proc/{pid}/maps", "".join(f"{s:x}-{e:x} rw-p 0 00:00 0\n" for s, e in vmas))

    def read(offset: int, size: int) -> bytes:
        first = offset // 8
        return b"".join(pages.get(first + i, 0).to_bytes(8, "little") for i in range(size // 8))

    fs.set_sparse_file(f"/proc/{pid}/pagemap", read)


def test_holes_swapped_and_untouched_pages_are_not_resident() -> None:
    """Two 4 MiB mappings 12 MiB apart; the span covers both and the hole. Of the first,
    half its pages present; of the second, 10 present and 20 swapped out (bit 62 only).
    Resident: 512 + 10 pages, whatever the hole and the swapped pages."""
    fs = FakeKernelFS()
    first, second = (A, A + 4 * MIB), (A + 16 * MIB, A + 20 * MIB)
    base1, base2 = first[0] // PAGE_SIZE, second[0] // PAGE_SIZE
    pages = {base1 + i: PRESENT for i in range(0, 1024, 2)}
    pages |= {base2 + i: PRESENT for i in range(10)}
    pages |= {base2 + 100 + i: SWAPPED for i in range(20)}
    process(fs, 7, [first, second], pages)
    assert resident_bytes(fs, 7, [(A, A + 20 * MIB)]) == (512 + 10) * PAGE_SIZE
    # spans cut inside a mapping count only their own pages
    assert resident_bytes(fs, 7, [(A, A + MIB)]) == 128 * PAGE_SIZE
    assert resident_bytes(fs, 7, [(A + 4 * MIB, A + 16 * MIB)]) == 0  # the hole alone
    assert resident_bytes(fs, 7, []) == 0


def test_a_span_larger_than_one_pagemap_batch_is_read_whole() -> None:
    """600 MiB all present: more pages than one pagemap read takes (65,536)."""
    fs = FakeKernelFS()
    span = (A, A + 600 * MIB)
    base = A // PAGE_SIZE
    n = 600 * MIB // PAGE_SIZE
    process(fs, 8, [span], {base + i: PRESENT for i in range(n)})
    assert resident_bytes(fs, 8, [span]) == 600 * MIB


def test_a_gone_process_is_a_vanished_target() -> None:
    """No /proc/PID: TargetVanished naming the pid."""
    with pytest.raises(TargetVanished, match="pid 9"):
        resident_bytes(FakeKernelFS(), 9, [(A, A + MIB)])
