"""The child process that probe selection tests its probes on.

:class:`reactor.sampler.detect.ProbeChild` runs this file by path (``python -P``), not as
``-m reactor.sampler._probe_child``: that would import the ``reactor.sampler`` package and
numpy first (~9 s under qemu's TCG, a lane diagnostic of 2026-11-28); this file needs only
the standard library and :mod:`reactor.kernelfs.syscalls`.

It maps :data:`PAGES` pages between guard pages (its own VMA), populates them, prints the
base address, then obeys one command per stdin line and answers ``ok``: ``r N`` reads
page N, ``w N`` writes page N, ``uffd`` registers userfaultfd WP-async on the buffer.
It exits when stdin closes, so a crashed sampler leaves nothing behind.
"""

from __future__ import annotations

import sys

from reactor.kernelfs.syscalls import PAGE_SIZE, UffdWriteProtect, guarded_mmap

__all__ = ("PAGES", "main")

PAGES = 16


def main() -> int:
    """Serve commands until stdin closes."""
    m, base = guarded_mmap(PAGES * PAGE_SIZE)
    buf = memoryview(m)[PAGE_SIZE : PAGE_SIZE + PAGES * PAGE_SIZE]
    for page in range(PAGES):
        buf[page * PAGE_SIZE] = 1
    uffd = None
    print(base, flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "r":
                _ = buf[int(arg) * PAGE_SIZE]  # the read is the point
            elif cmd == "w":
                buf[int(arg) * PAGE_SIZE] = (buf[int(arg) * PAGE_SIZE] + 1) % 256
            elif cmd == "uffd":
                uffd = UffdWriteProtect()
                uffd.register(base, PAGES * PAGE_SIZE)
            print("ok", flush=True)
        except Exception as exc:  # report, do not die: the parent decides
            print(f"error {type(exc).__name__}: {exc}", flush=True)
    if uffd is not None:
        uffd.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
