"""resident_bytes on this kernel's real pagemap: a mapping of this process, half touched."""

from __future__ import annotations

import ctypes
import mmap
import os

from reactor.kernelfs import RealKernelFS
from reactor.policies.damon import resident_bytes

PAGE = mmap.PAGESIZE


def test_touched_pages_are_resident_and_untouched_ones_are_not() -> None:
    """8 MiB private anonymous, MADV_NOHUGEPAGE (no huge page fills the rest), every
    other page written: exactly those are present; a span beyond the mapping adds nothing."""
    size = 8 << 20
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        m.madvise(mmap.MADV_NOHUGEPAGE)
        for off in range(0, size, 2 * PAGE):
            m[off] = 1
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        fs = RealKernelFS()
        assert resident_bytes(fs, os.getpid(), [(addr, addr + size)]) == size // 2
        assert resident_bytes(fs, os.getpid(), [(addr, addr + PAGE)]) == PAGE
        assert resident_bytes(fs, os.getpid(), [(addr + PAGE, addr + 2 * PAGE)]) == 0
        del addr
    finally:
        m.close()
