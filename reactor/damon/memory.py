"""Physical memory ranges for paddr targets: System RAM from /proc/iomem, per NUMA node.

DAMON's sysfs interface does not fill a paddr target's regions: an empty target starts
and monitors nothing, without an error (reference/real-kernel-lane.md, gotcha 3). damo
takes the biggest System RAM range; reactor takes all of them by default (so no RAM is
left out), or the ranges of one node for tiering (a paddr kdamond per node).

``/proc/iomem`` shows real addresses only to root (CAP_SYS_ADMIN); everyone else reads
``00000000-00000000``. :func:`parse_system_ram` detects that and says so rather than
returning empty or zero-sized ranges.

Node ranges come from memory blocks: ``/sys/devices/system/node/node<N>/memory<M>``
links each online block ``M`` of node ``N``, which covers
``[M * block_size, (M + 1) * block_size)`` with ``block_size`` from
``/sys/devices/system/memory/block_size_bytes`` (hex). Blocks can include holes, so the
result is intersected with System RAM when that is readable.

All ranges are half-open ``(start, end)`` in bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from reactor.errors import KernelFormatError, KernelInterfaceError
from reactor.kernelfs import KernelFS

__all__ = (
    "IOMEM",
    "IomemEntry",
    "IomemHidden",
    "intersect",
    "merge",
    "node_memory_ranges",
    "node_ram_ranges",
    "parse_iomem",
    "parse_system_ram",
    "read_system_ram",
)

IOMEM = "/proc/iomem"
NODES = "/sys/devices/system/node"
BLOCK_SIZE = "/sys/devices/system/memory/block_size_bytes"

Range = tuple[int, int]

_LINE = re.compile(r"^(?P<indent>\s*)(?P<start>[0-9a-fA-F]+)-(?P<end>[0-9a-fA-F]+) : (?P<name>.*)$")


class IomemHidden(KernelInterfaceError):
    """/proc/iomem shows zero addresses: the reader lacks CAP_SYS_ADMIN (is not root)."""


@dataclass(frozen=True)
class IomemEntry:
    """One /proc/iomem line: ``[start, end)`` (the file's end is inclusive), nesting depth."""

    start: int
    end: int
    name: str
    depth: int


def parse_iomem(text: str, path: str = IOMEM) -> tuple[IomemEntry, ...]:
    """Every line of /proc/iomem; the depth is the indentation in steps of two spaces."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise KernelFormatError(path, "expected 'start-end : name'", line=line)
        start, end = int(match["start"], 16), int(match["end"], 16)
        out.append(IomemEntry(start, end + 1, match["name"].strip(), len(match["indent"]) // 2))
    return tuple(out)


def parse_system_ram(text: str, path: str = IOMEM) -> tuple[Range, ...]:
    """The top-level ``System RAM`` ranges, sorted; IomemHidden if they read as zero."""
    entries = [e for e in parse_iomem(text, path) if e.depth == 0 and e.name == "System RAM"]
    if entries and all(e.start == 0 and e.end == 1 for e in entries):
        raise IomemHidden(
            path,
            "System RAM ranges read as 00000000-00000000: /proc/iomem shows addresses only "
            "to root (CAP_SYS_ADMIN); run reactor as root or give the paddr target regions",
        )
    return merge((e.start, e.end) for e in entries)


def read_system_ram(fs: KernelFS) -> tuple[Range, ...]:
    """System RAM ranges of this machine (through the KernelFS)."""
    return parse_system_ram(fs.read_text(IOMEM))


def merge(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sorted ranges with touching or overlapping ones joined."""
    out: list[Range] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)


def intersect(a: Iterable[Range], b: Iterable[Range]) -> tuple[Range, ...]:
    """The parts covered by both range lists, merged and sorted (one sweep over the two
    merged lists: a process's hundreds of mappings against as many cold regions)."""
    x, y = merge(a), merge(b)
    out: list[Range] = []
    i = j = 0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if lo < hi:
            out.append((lo, hi))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def node_memory_ranges(fs: KernelFS, node: int) -> tuple[Range, ...]:
    """The online memory blocks of NUMA node ``node`` as merged byte ranges."""
    base = f"{NODES}/node{node}"
    text = fs.read_text(BLOCK_SIZE).strip()
    try:
        size = int(text, 16)
    except ValueError:
        raise KernelFormatError(BLOCK_SIZE, "expected a hexadecimal size", line=text) from None
    blocks = []
    for name in fs.listdir(base):
        if not (name.startswith("memory") and name[6:].isdigit()):
            continue
        state_file = f"{base}/{name}/state"
        if fs.exists(state_file) and fs.read_text(state_file).strip() != "online":
            continue
        m = int(name[6:])
        blocks.append((m * size, (m + 1) * size))
    return merge(blocks)


def node_ram_ranges(fs: KernelFS, node: int) -> tuple[Range, ...]:
    """Node ``node``'s memory, without the holes /proc/iomem marks as not System RAM.

    When /proc/iomem is hidden (not root) the memory-block ranges are returned as they
    are: they may include firmware holes, which DAMON's paddr ops skip page by page.
    """
    blocks = node_memory_ranges(fs, node)
    try:
        ram = read_system_ram(fs)
    except IomemHidden:
        return blocks
    return intersect(blocks, ram)
