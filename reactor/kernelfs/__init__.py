"""The one seam between reactor and /proc, /sys and cgroupfs.

Nothing else in reactor opens kernel files (tests/unit/test_layering.py checks it).
Paths given to a :class:`KernelFS` are absolute kernel paths (``/proc/pressure/memory``);
an implementation maps them under its root, so the same code reads the real machine
(root ``/``), a materialized fake tree in a temporary directory, or an in-memory fake.

Writes under ``/sys/kernel/mm/damon`` are refused unless the filesystem was built with
``allow_damon_writes=True``: on the development and CI machines that tree belongs to the
machine's own kdamond, and a write to any ``nr_*`` file there resets it.
"""

from __future__ import annotations

from reactor.kernelfs.base import DAMON_SYSFS, KeptFile, KernelFS, is_damon_path, normalize_path
from reactor.kernelfs.frozen import FrozenMap
from reactor.kernelfs.kept import KeptReader
from reactor.kernelfs.real import RealKernelFS

__all__ = (
    "DAMON_SYSFS",
    "FrozenMap",
    "KeptFile",
    "KeptReader",
    "KernelFS",
    "RealKernelFS",
    "is_damon_path",
    "normalize_path",
)
