"""reactor.testing: shipped helpers for testing code that embeds reactor.

- :class:`FakeKernelFS`: an in-memory kernel tree (:mod:`reactor.testing.fakefs`).
- :class:`RecordingKernelFS`: logs every write made through any KernelFS (a real one
  too), to assert what code under test never wrote.
- :class:`FakeDamon`: the kernel's DAMON sysfs semantics at a stated kernel version, on a
  FakeKernelFS, with a simulated workload (:mod:`reactor.testing.damon_fake`).
- :mod:`reactor.testing.plants`: plant models for tuning controllers in simulated time.
- :mod:`reactor.testing.tlb`: source for a test child whose accesses DAMON must see
  under qemu TCG (``flush_tlb()`` after each round of touches).
"""

from __future__ import annotations

from reactor.testing.damon_fake import FakeDamon
from reactor.testing.fakefs import FakeKernelFS, RecordingKernelFS

__all__ = ("FakeDamon", "FakeKernelFS", "RecordingKernelFS")
