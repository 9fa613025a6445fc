"""Python source that lets a test child's accesses be seen by DAMON under qemu TCG.

:data:`FLUSH_TLB` defines ``flush_tlb()`` in a child program (standard library only, so
it runs under ``python -S -c``): a child that must look accessed to DAMON calls it after
each round of touching its hot memory. Compose it into the child's source where the
child is ready to map it: it maps 64 pages, which the kernel places in the highest gap
that fits, usually just below what the child mapped last, but inside a hole the child
has already unmapped if there is one (so map it before unmapping anything)::

    CHILD = r'''...set-up...''' + FLUSH_TLB + r'''
    while True:
        touch_hot()
        flush_tlb()
        time.sleep(0.01)
    '''

Why: DAMON's vaddr check clears a PTE's accessed bit without flushing the TLB
(``damon_ptep_mkold()``: ``ptep_clear_young_notify()``; x86 skips that flush by design),
and a CPU sets the bit again only when it walks the page table, on a TLB miss. On
hardware a hot set of thousands of pages exceeds the TLB, so its pages miss and are seen
again; qemu's TCG keeps every translation in its software TLB until the guest flushes
it, which a sleeping child's CPU may never do. In the lane DAMON then saw 0-23 of a hot
buffer's 4,096 pages as accessed over 14 s; with the flush, 4,051 after 1.3 s.

How: ``flush_tlb()`` populates a 64-page scratch mapping and drops it with
``MADV_DONTNEED``; a zap of more than ``tlb_single_page_flush_ceiling`` (33) pages
flushes the whole mm's TLB on x86. The native sampler's probes clear with
``clear_refs``, which flushes by itself: the flush changes nothing for them.
"""

from __future__ import annotations

__all__ = ("FLUSH_TLB",)

FLUSH_TLB = r"""
import mmap as _tlb_mmap
_TLB_PAGES = 64
_tlb_scratch = _tlb_mmap.mmap(
    -1, _TLB_PAGES * _tlb_mmap.PAGESIZE, flags=_tlb_mmap.MAP_PRIVATE | _tlb_mmap.MAP_ANONYMOUS
)
def flush_tlb():
    _tlb_scratch[0 : _TLB_PAGES * _tlb_mmap.PAGESIZE : _tlb_mmap.PAGESIZE] = b"\x01" * _TLB_PAGES
    _tlb_scratch.madvise(_tlb_mmap.MADV_DONTNEED)
"""
