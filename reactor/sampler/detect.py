"""Probe selection by effect: each probe is tried on a child process reactor starts.

A write the kernel accepts is no proof (this machine accepts ``clear_refs 4`` and never
sets a soft-dirty bit), so every probe is judged by what it reports after the child
touched known pages of a 16-page buffer:

- ``referenced``: after ``clear_refs 1``, the child reads 4 pages; smaps ``Referenced``
  of the buffer must show at least those 16 KiB and less than the whole buffer;
- ``soft-dirty``: after ``clear_refs 4``, the child writes page 2; pagemap bit 55 must be
  set for page 2 and clear for page 5;
- ``page-idle``: all buffer pages marked idle, the child reads page 1; page 1 must read
  not idle, page 6 idle;
- ``uffd-wp``: the child registers WP-async; after a re-arming scan it writes page 4;
  the next scan must report exactly page 4.

Only the child is ever sampled (clear_refs is never written to another process). Each
test is retried a few times, because the machine's own DAMON clears the same accessed
bits and could race with one attempt.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reactor.errors import KernelInterfaceError, ReactorError
from reactor.kernelfs import KernelFS
from reactor.sampler.probes import (
    PAGE_IDLE_BITMAP,
    PAGE_SIZE,
    PageIdleSession,
    ProbeInfo,
    SoftDirtySession,
    UffdWpSession,
)
from reactor.sampler.procfs import parse_smaps

__all__ = ("ProbeChild", "best_probe", "detect_probes")

_ATTEMPTS = 3
_PAGES = 16


class ProbeChild:
    """The test child: a 16-page buffer and a command pipe (see ``_probe_child``)."""

    def __init__(self) -> None:
        child = Path(__file__).with_name("_probe_child.py")  # by path: see its module doc
        # the child imports this very reactor, installed or not (``-m`` used to find it
        # through the working directory)
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-P", str(child)],
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pid = self._proc.pid
        assert self._proc.stdout is not None
        self.base = int(self._proc.stdout.readline())
        self.ranges = [(self.base, self.base + _PAGES * PAGE_SIZE)]

    def command(self, text: str) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(text + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"probe child: {text!r} -> {answer!r}")

    def close(self) -> None:
        """End the child: close its stdin, then wait (it exits on EOF)."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, 9)
            self._proc.wait(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> ProbeChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _retry(test: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    detail = ""
    for _ in range(_ATTEMPTS):
        ok, detail = test()
        if ok:
            return True, detail
    return False, detail


def _test_referenced(fs: KernelFS, child: ProbeChild) -> tuple[bool, str]:
    def referenced() -> int:
        maps = parse_smaps(fs.read_text(f"/proc/{child.pid}/smaps"))
        idx = np.flatnonzero(maps.start == child.base)
        return int(maps.referenced[idx[0]]) if len(idx) else -1

    def once() -> tuple[bool, str]:
        fs.write_text(f"/proc/{child.pid}/clear_refs", "1")
        for page in range(4):
            child.command(f"r {page}")
        got = referenced()
        ok = 4 * PAGE_SIZE <= got < _PAGES * PAGE_SIZE
        return ok, f"read 4 pages after clear_refs 1: Referenced {got // 1024} kB (want 16..63)"

    return _retry(once)


def _test_soft_dirty(fs: KernelFS, child: ProbeChild) -> tuple[bool, str]:
    session = SoftDirtySession(fs, child.pid, child.ranges)

    def once() -> tuple[bool, str]:
        session.start()
        child.command("w 2")
        got = session.collect()
        pages = sorted({(int(s) - child.base) // PAGE_SIZE for s in got.starts})
        ok = len(got.starts) == 1 and pages == [2] and got.total_bytes == PAGE_SIZE
        return ok, f"wrote page 2 after clear_refs 4: soft-dirty pages {pages} (want [2])"

    return _retry(once)


def _test_page_idle(fs: KernelFS, child: ProbeChild) -> tuple[bool, str]:
    if not fs.exists(PAGE_IDLE_BITMAP):
        return False, f"{PAGE_IDLE_BITMAP} is absent (CONFIG_IDLE_PAGE_TRACKING)"
    session = PageIdleSession(fs, child.pid, child.ranges)

    def once() -> tuple[bool, str]:
        session.start()
        child.command("r 1")
        got = session.collect()
        pages = sorted(
            p
            for s, e in zip(got.starts.tolist(), got.ends.tolist(), strict=True)
            for p in range((s - child.base) // PAGE_SIZE, (e - child.base) // PAGE_SIZE)
        )
        ok = 1 in pages and 6 not in pages
        return ok, f"read page 1 after marking idle: accessed pages {pages} (want 1, not 6)"

    return _retry(once)


def _test_uffd_wp(fs: KernelFS, child: ProbeChild) -> tuple[bool, str]:
    child.command("uffd")
    session = UffdWpSession(fs.root, child.pid, child.ranges)
    try:

        def once() -> tuple[bool, str]:
            session.start()
            child.command("w 4")
            got = session.collect()
            pages = [(int(s) - child.base) // PAGE_SIZE for s in got.starts]
            ok = pages == [4] and got.total_bytes == PAGE_SIZE
            return ok, f"wrote page 4 after a re-arming scan: written pages {pages} (want [4])"

        return _retry(once)
    finally:
        session.close()


@dataclass(frozen=True)
class _Spec:
    name: str
    per_page: bool
    sees: str
    cooperation: bool
    test: Callable[[KernelFS, ProbeChild], tuple[bool, str]]


_SPECS = (
    _Spec("page-idle", True, "reads and writes", False, _test_page_idle),
    _Spec("soft-dirty", True, "writes", False, _test_soft_dirty),
    _Spec("uffd-wp", True, "writes", True, _test_uffd_wp),
    _Spec("referenced", False, "reads and writes", False, _test_referenced),
)


def detect_probes(fs: KernelFS) -> tuple[ProbeInfo, ...]:
    """Every probe's status on this machine, best first, tested on a child process.

    ``uffd-wp`` runs last on the child (registering changes how its writes fault).
    """
    results: dict[str, ProbeInfo] = {}
    with ProbeChild() as child:
        for spec in sorted(_SPECS, key=lambda s: s.name == "uffd-wp"):
            try:
                ok, detail = spec.test(fs, child)
            except (ReactorError, KernelInterfaceError, OSError, RuntimeError) as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            results[spec.name] = ProbeInfo(
                name=spec.name,
                available=ok,
                per_page=spec.per_page,
                granularity_bytes=PAGE_SIZE if spec.per_page else 0,
                sees=spec.sees,
                needs_cooperation=spec.cooperation,
                detail=detail,
            )
    return tuple(results[s.name] for s in _SPECS)


def best_probe(infos: tuple[ProbeInfo, ...], *, cooperating: bool) -> ProbeInfo:
    """The best available probe for a target: per page first; ``uffd-wp`` only for a
    cooperating target (it must register its memory). Raises if none works."""
    for info in infos:
        if info.available and (cooperating or not info.needs_cooperation):
            return info
    tried = "; ".join(f"{i.name}: {i.detail}" for i in infos)
    raise KernelInterfaceError("/proc", f"no access probe works on this machine ({tried})")
