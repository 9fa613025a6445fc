"""The child process that probe selection tests its probes on (``python -m`` this module).

It maps :data:`PAGES` pages between guard pages (its own VMA), populates them, prints the
base address, then obeys one command per stdin line and answers ``ok``: ``r N`` reads
page N, ``w N`` writes page N, ``uffd`` registers userfaultfd WP-async on the buffer.
It exits when stdin closes, so a crashed sampler leaves nothing behind.
"""

from __future__ import annotations

import sys

import numpy as np

from reactor.kernelfs.syscalls import PAGE_SIZE, UffdWriteProtect, guarded_mmap

__all__ = ("PAGES", "main")

PAGES = 16


def main() -> int:
    """Serve commands until stdin closes."""
    m, base = guarded_mmap(PAGES * PAGE_SIZE)
    buf = np.frombuffer(m, dtype=np.uint8)[PAGE_SIZE : PAGE_SIZE + PAGES * PAGE_SIZE]
    buf[::PAGE_SIZE] = 1
    uffd = None
    print(base, flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "r":
                int(buf[int(arg) * PAGE_SIZE])
            elif cmd == "w":
                buf[int(arg) * PAGE_SIZE] += 1
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
