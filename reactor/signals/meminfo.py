"""/proc/meminfo: the parser and the poller.

Lines are ``Key:  value kB`` or, for the hugetlb page counts, ``Key:  value``. ``kB`` in
this file means KiB (the kernel prints pages << (PAGE_SHIFT - 10)), so values are
converted to bytes by × 1024 and every field name says ``_bytes``. Unit-less entries are
counts (``HugePages_Total`` is a number of huge pages) and are kept apart.

The same format serves /sys/devices/system/node/nodeN/meminfo except for its ``Node N``
prefix and its different keys (``MemUsed``, no ``MemAvailable``), which this parser does
not accept: :func:`reactor.signals.tiers.parse_node_meminfo` parses those files, and
:class:`~reactor.signals.tiers.TiersPoller` publishes them per node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reactor.errors import KernelFormatError
from reactor.kernelfs.base import KernelFS
from reactor.kernelfs.frozen import FrozenMap
from reactor.kernelfs.kept import KeptReader

__all__ = ("Meminfo", "MeminfoPoller", "parse_meminfo")

_LINE = re.compile(r"^([A-Za-z0-9_()]+):\s+([0-9]+)(?:\s+(\S+))?$")
KIB = 1024

#: Field name -> meminfo key, for the keys every kernel reactor supports prints
#: (MemAvailable appeared in 3.14, the anon/file LRU split in 2.6.28).
_REQUIRED = {
    "mem_total_bytes": "MemTotal",
    "mem_free_bytes": "MemFree",
    "mem_available_bytes": "MemAvailable",
    "buffers_bytes": "Buffers",
    "cached_bytes": "Cached",
    "swap_cached_bytes": "SwapCached",
    "active_anon_bytes": "Active(anon)",
    "inactive_anon_bytes": "Inactive(anon)",
    "active_file_bytes": "Active(file)",
    "inactive_file_bytes": "Inactive(file)",
    "unevictable_bytes": "Unevictable",
    "mlocked_bytes": "Mlocked",
    "swap_total_bytes": "SwapTotal",
    "swap_free_bytes": "SwapFree",
    "dirty_bytes": "Dirty",
    "writeback_bytes": "Writeback",
    "anon_pages_bytes": "AnonPages",
    "mapped_bytes": "Mapped",
    "shmem_bytes": "Shmem",
    "slab_reclaimable_bytes": "SReclaimable",
    "slab_unreclaimable_bytes": "SUnreclaim",
}


@dataclass(frozen=True)
class Meminfo:
    """The parsed file, in bytes, plus every entry by its meminfo key.

    ``bytes_by_key`` holds every ``kB`` entry converted to bytes, ``counts_by_key`` the
    unit-less ones (huge page counts).
    """

    mem_total_bytes: int
    mem_free_bytes: int
    mem_available_bytes: int
    buffers_bytes: int
    cached_bytes: int
    swap_cached_bytes: int
    active_anon_bytes: int
    inactive_anon_bytes: int
    active_file_bytes: int
    inactive_file_bytes: int
    unevictable_bytes: int
    mlocked_bytes: int
    swap_total_bytes: int
    swap_free_bytes: int
    dirty_bytes: int
    writeback_bytes: int
    anon_pages_bytes: int
    mapped_bytes: int
    shmem_bytes: int
    slab_reclaimable_bytes: int
    slab_unreclaimable_bytes: int
    anon_huge_pages_bytes: int | None
    zswap_bytes: int | None
    bytes_by_key: FrozenMap[str, int]
    counts_by_key: FrozenMap[str, int]

    @property
    def available_ratio(self) -> float:
        """MemAvailable over MemTotal (0..1): the share the kernel could hand out now."""
        return self.mem_available_bytes / self.mem_total_bytes

    @property
    def swap_used_bytes(self) -> int:
        return self.swap_total_bytes - self.swap_free_bytes

    def summary(self) -> dict[str, float | int]:
        """The fields of the one-line-per-tick log."""
        return {
            "mem_available_bytes": self.mem_available_bytes,
            "available_ratio": round(self.available_ratio, 6),
            "anon_bytes": self.active_anon_bytes + self.inactive_anon_bytes,
            "file_bytes": self.active_file_bytes + self.inactive_file_bytes,
            "swap_used_bytes": self.swap_used_bytes,
        }


def parse_meminfo(text: str, path: str) -> Meminfo:
    """Parse /proc/meminfo; ``path`` only names the file in errors.

    Every non-empty line must be ``Key: integer [kB]``; a missing required key, a
    duplicate key, a unit other than kB or a MemTotal of 0 raise KernelFormatError.
    """
    in_bytes: dict[str, int] = {}
    counts: dict[str, int] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        match = _LINE.match(raw.strip())
        if match is None:
            raise KernelFormatError(path, "expected 'Key: integer [kB]'", line=raw)
        key, value, unit = match.group(1), int(match.group(2)), match.group(3)
        if key in in_bytes or key in counts:
            raise KernelFormatError(path, f"duplicate key {key!r}", line=raw)
        if unit is None:
            counts[key] = value
        elif unit == "kB":
            in_bytes[key] = value * KIB
        else:
            raise KernelFormatError(path, f"expected unit kB, got {unit!r}", line=raw)
    missing = [key for key in _REQUIRED.values() if key not in in_bytes]
    if missing:
        raise KernelFormatError(path, f"missing {', '.join(missing)} (in kB)")
    if in_bytes["MemTotal"] <= 0:
        raise KernelFormatError(path, "MemTotal is 0")
    return Meminfo(
        **{name: in_bytes[key] for name, key in _REQUIRED.items()},
        anon_huge_pages_bytes=in_bytes.get("AnonHugePages"),  # CONFIG_TRANSPARENT_HUGEPAGE
        zswap_bytes=in_bytes.get("Zswap"),  # CONFIG_ZSWAP, 6.5+
        bytes_by_key=FrozenMap(in_bytes),
        counts_by_key=FrozenMap(counts),
    )


class MeminfoPoller:
    """Polls /proc/meminfo; a level, not a rate, so the first poll returns a value."""

    def __init__(self, fs: KernelFS, path: str = "/proc/meminfo", topic: str = "meminfo") -> None:
        self._path = path
        self._topic = topic
        self._reader = KeptReader(fs, path)

    @property
    def topic(self) -> str:
        return self._topic

    def poll(self, now: float) -> Meminfo:
        """Read and parse the file (``now`` is unused: meminfo holds levels)."""
        del now
        return parse_meminfo(self._reader.read_text(), self._path)

    def close(self) -> None:
        self._reader.close()
