"""A workload with a known hot set, for testing access samplers (reactor's and yours).

Run it as a program::

    python -m reactor.testing.workload --size 256M --hot 25% --pattern scattered \\
        --mode read [--file PATH] [--chunk 64K --split-vmas] [--uffd-wp]

It maps ``--size`` bytes (anonymous private memory, or ``MAP_SHARED`` over ``--file``),
populates every page, optionally splits the mapping into one VMA per ``--chunk`` (a
cooperating process's trick: alternating ``MADV_DONTDUMP``/``MADV_DODUMP``, harmless
flags, makes smaps ``Referenced`` exact per chunk) and optionally registers userfaultfd
write-protect (async mode) over it, so that ``PAGEMAP_SCAN`` can see its writes from
outside. Then it touches the hot set every ``--period`` (20 ms): one byte per hot page,
read or written.

It prints its ground truth as one JSON line on stdout (``"event": "ready"``: pid, base
address, page size, the spec, the VMA layout, the monotonic start time) and one line per
hot-set change (``"event": "phase"``, pattern ``moving``). The hot pages of a phase are
not printed (a 4 GiB workload has a million); :func:`hot_pages` recomputes them from the
spec, exactly as the workload does. A line ``stats`` on stdin makes it print its touch
statistics (rounds and seconds spent touching, to measure a sampler's slowdown).

Patterns (``--hot`` is the share of pages that are hot):

- ``scattered``: pages picked at random (seeded) over the whole buffer;
- ``contiguous``: one run of pages in the middle of the buffer;
- ``chunked``: whole ``--chunk``-sized chunks picked at random;
- ``moving``: one run that jumps to the next disjoint run every ``--move-period``.

From Python, :func:`start_workload` runs it as a child process and returns a
:class:`WorkloadHandle` (``.pid``, ``.truth()``, ``.stats()``, ``.stop()``, by pid).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = (
    "Pattern",
    "Truth",
    "WorkloadHandle",
    "WorkloadSpec",
    "hot_pages",
    "main",
    "parse_size",
    "start_workload",
)

PAGE_SIZE = mmap.PAGESIZE
Pattern = Literal["scattered", "contiguous", "chunked", "moving"]
PATTERNS: tuple[Pattern, ...] = ("scattered", "contiguous", "chunked", "moving")


def parse_size(text: str) -> int:
    """``"256M"``, ``"64K"``, ``"4G"``, ``"4096"`` as bytes (binary multiples)."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in "KMGT" else text
    return int(float(number) * mult)


@dataclass(frozen=True)
class WorkloadSpec:
    """What the workload maps and touches. Sizes in bytes, times in seconds."""

    size_bytes: int = 64 * 2**20
    hot_fraction: float = 0.25
    pattern: Pattern = "scattered"
    mode: Literal["read", "write"] = "read"
    file: str | None = None
    chunk_bytes: int = 64 * 2**10
    split_vmas: bool = False
    uffd_wp: bool = False
    thp: bool = False
    seed: int = 0
    period_s: float = 0.02
    move_period_s: float = 2.0

    def __post_init__(self) -> None:
        if self.size_bytes < PAGE_SIZE or self.size_bytes % PAGE_SIZE:
            raise ValueError(f"size_bytes must be a positive multiple of {PAGE_SIZE}")
        if not 0.0 <= self.hot_fraction <= 1.0:
            raise ValueError(f"hot_fraction must be within [0, 1], got {self.hot_fraction}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if self.chunk_bytes < PAGE_SIZE or self.chunk_bytes % PAGE_SIZE:
            raise ValueError(f"chunk_bytes must be a positive multiple of {PAGE_SIZE}")
        if self.uffd_wp and self.file is not None:
            raise ValueError("uffd_wp needs anonymous memory (ext4 files cannot be WP-registered)")

    @property
    def nr_pages(self) -> int:
        return self.size_bytes // PAGE_SIZE

    def argv(self) -> list[str]:
        """Command-line arguments that reproduce this spec."""
        args = [
            f"--size={self.size_bytes}",
            f"--hot={self.hot_fraction}",
            f"--pattern={self.pattern}",
            f"--mode={self.mode}",
            f"--chunk={self.chunk_bytes}",
            f"--seed={self.seed}",
            f"--period={self.period_s}",
            f"--move-period={self.move_period_s}",
        ]
        if self.file:
            args.append(f"--file={self.file}")
        for flag, on in (("--split-vmas", self.split_vmas), ("--uffd-wp", self.uffd_wp)):
            if on:
                args.append(flag)
        if self.thp:
            args.append("--thp")
        return args


def hot_pages(spec: WorkloadSpec, phase: int = 0) -> npt.NDArray[np.int64]:
    """Sorted indices (pages from the buffer's base) of the hot set in ``phase``."""
    n = spec.nr_pages
    nhot = round(spec.hot_fraction * n)
    if spec.pattern == "scattered":
        rng = np.random.default_rng(spec.seed)
        return np.sort(rng.choice(n, size=nhot, replace=False)).astype(np.int64)
    if spec.pattern == "contiguous":
        first = (n - nhot) // 2
        return np.arange(first, first + nhot, dtype=np.int64)
    if spec.pattern == "chunked":
        per = spec.chunk_bytes // PAGE_SIZE
        nchunks = n // per
        rng = np.random.default_rng(spec.seed)
        chosen = np.sort(
            rng.choice(nchunks, size=round(spec.hot_fraction * nchunks), replace=False)
        )
        return (chosen[:, None] * per + np.arange(per)[None, :]).ravel().astype(np.int64)
    # moving: a run of nhot pages that jumps to the next disjoint run each phase.
    first = (phase * nhot) % n if nhot else 0
    return np.sort((first + np.arange(nhot, dtype=np.int64)) % n)


@dataclass(frozen=True)
class Truth:
    """Ground truth of one phase: the buffer and which of its bytes are hot.

    ``mappings`` are the buffer's VMAs as ``(start, end)`` addresses (one per chunk when
    the workload split them), ``hot`` a boolean per page of the buffer.
    """

    base: int
    size_bytes: int
    page_size: int
    phase: int
    hot: npt.NDArray[np.bool_]
    mappings: tuple[tuple[int, int], ...]

    @property
    def hot_bytes(self) -> int:
        return int(self.hot.sum()) * self.page_size

    def hot_ranges(self) -> npt.NDArray[np.int64]:
        """Hot runs as an ``(n, 2)`` array of ``[start, end)`` addresses."""
        padded = np.concatenate(([False], self.hot, [False])).astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        pairs = edges.reshape(-1, 2).astype(np.int64)
        return self.base + pairs * self.page_size

    def hot_bytes_in(self, start: int, end: int) -> int:
        """Hot bytes of the buffer inside ``[start, end)``."""
        lo = max(0, (start - self.base) // self.page_size)
        hi = min(len(self.hot), -(-(end - self.base) // self.page_size))
        return int(self.hot[lo:hi].sum()) * self.page_size if hi > lo else 0


# --------------------------------------------------------------------------- the process


def _madvise(m: mmap.mmap, advice: int, start: int, length: int) -> None:
    m.madvise(advice, start, length)


def _buffer(spec: WorkloadSpec) -> tuple[mmap.mmap, int]:
    """The buffer between guard pages (its own VMA), and its base address."""
    from reactor.kernelfs.syscalls import guarded_mmap

    if spec.file:
        fd = os.open(spec.file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, spec.size_bytes + 2 * PAGE_SIZE)
            m, base = guarded_mmap(spec.size_bytes, fd)
        finally:
            os.close(fd)
    else:
        m, base = guarded_mmap(spec.size_bytes)
    if spec.thp:
        _madvise(m, mmap.MADV_HUGEPAGE, PAGE_SIZE, spec.size_bytes)
    return m, base


def _split(m: mmap.mmap, spec: WorkloadSpec, base: int) -> list[tuple[int, int]]:
    """One VMA per chunk: neighbours differ in the DONTDUMP flag, so the kernel keeps
    them apart. Returns the chunk layout (the truth's ``mappings``)."""
    if not spec.split_vmas:
        return [(base, base + spec.size_bytes)]
    out = []
    for i, off in enumerate(range(0, spec.size_bytes, spec.chunk_bytes)):
        length = min(spec.chunk_bytes, spec.size_bytes - off)
        _madvise(m, mmap.MADV_DONTDUMP if i % 2 else mmap.MADV_DODUMP, PAGE_SIZE + off, length)
        out.append((base + off, base + off + length))
    return out


@dataclass
class _Stats:
    rounds: int = 0
    touch_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _stdin_commands(stats: _Stats, stop: threading.Event, exit_on_eof: bool) -> None:
    for line in sys.stdin:
        if line.strip() == "stats":
            with stats.lock:
                _emit(
                    {
                        "event": "stats",
                        "rounds": stats.rounds,
                        "touch_s": stats.touch_s,
                        "elapsed_s": time.monotonic() - stats.started,
                        "cpu_s": time.process_time(),
                        "user_s": os.times().user,
                        "sys_s": os.times().system,
                    }
                )
    if exit_on_eof:
        stop.set()


def run(spec: WorkloadSpec, *, duration_s: float | None = None, exit_on_eof: bool = False) -> None:
    """Map, populate, announce the truth, then touch the hot set until told to stop."""
    m, base = _buffer(spec)
    buf = np.frombuffer(m, dtype=np.uint8)[PAGE_SIZE : PAGE_SIZE + spec.size_bytes]
    buf[::PAGE_SIZE] = 1  # populate every page (4 KiB each unless --thp)
    mappings = _split(m, spec, base)
    uffd = None
    if spec.uffd_wp:
        from reactor.kernelfs.syscalls import UffdWriteProtect

        uffd = UffdWriteProtect()
        uffd.register(base, spec.size_bytes)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stats = _Stats()
    threading.Thread(target=_stdin_commands, args=(stats, stop, exit_on_eof), daemon=True).start()
    t0 = time.monotonic()
    _emit(
        {
            "event": "ready",
            "pid": os.getpid(),
            "base": base,
            "page_size": PAGE_SIZE,
            "spec": asdict(spec),
            "mappings": mappings,
            "t0": t0,
            "uffd_features": uffd.features if uffd else None,
        }
    )
    _touch_loop(buf, spec, stats, stop, t0, duration_s)
    if uffd is not None:
        uffd.close()


def _touch_loop(  # noqa: PLR0917 - private, called once
    buf: npt.NDArray[np.uint8],
    spec: WorkloadSpec,
    stats: _Stats,
    stop: threading.Event,
    t0: float,
    duration_s: float | None,
) -> None:
    phase = 0
    offsets = hot_pages(spec, 0) * PAGE_SIZE
    value = np.uint8(0)
    while not stop.is_set():
        now = time.monotonic()
        if duration_s is not None and now - t0 >= duration_s:
            break
        if spec.pattern == "moving":
            current = int((now - t0) // spec.move_period_s)
            if current != phase:
                phase = current
                offsets = hot_pages(spec, phase) * PAGE_SIZE
                _emit({"event": "phase", "phase": phase, "t": time.monotonic()})
        if spec.mode == "write":
            value = np.uint8((int(value) + 1) & 0xFF)
            buf[offsets] = value
        else:
            int(buf[offsets].sum())
        spent = time.monotonic() - now
        with stats.lock:
            stats.rounds += 1
            stats.touch_s += spent
        stop.wait(max(0.0, spec.period_s - spent))


def _parse_args(argv: Sequence[str] | None) -> tuple[WorkloadSpec, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m reactor.testing.workload", description=__doc__)
    p.add_argument("--size", default="64M", help="buffer size (K/M/G suffixes, binary)")
    p.add_argument("--hot", default="25%", help="hot share of pages: 25%% or 0.25")
    p.add_argument("--pattern", choices=PATTERNS, default="scattered")
    p.add_argument("--mode", choices=("read", "write"), default="read")
    p.add_argument("--file", default=None, help="map this file MAP_SHARED instead of anon")
    p.add_argument("--chunk", default="64K", help="chunk size (chunked pattern, --split-vmas)")
    p.add_argument("--split-vmas", action="store_true", help="one VMA per chunk")
    p.add_argument("--uffd-wp", action="store_true", help="register userfaultfd WP-async")
    p.add_argument("--thp", action="store_true", help="madvise(MADV_HUGEPAGE) the buffer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--period", type=float, default=0.02, help="seconds between touches")
    p.add_argument("--move-period", type=float, default=2.0, help="seconds per moving phase")
    p.add_argument("--duration", type=float, default=None, help="exit after this many s")
    p.add_argument("--exit-on-eof", action="store_true", help="exit when stdin closes")
    ns = p.parse_args(argv)
    hot = ns.hot.strip()
    fraction = float(hot[:-1]) / 100 if hot.endswith("%") else float(hot)
    spec = WorkloadSpec(
        size_bytes=parse_size(ns.size),
        hot_fraction=fraction,
        pattern=ns.pattern,
        mode=ns.mode,
        file=ns.file,
        chunk_bytes=parse_size(ns.chunk),
        split_vmas=ns.split_vmas,
        uffd_wp=ns.uffd_wp,
        thp=ns.thp,
        seed=ns.seed,
        period_s=ns.period,
        move_period_s=ns.move_period,
    )
    return spec, ns


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m reactor.testing.workload``."""
    spec, ns = _parse_args(argv)
    run(spec, duration_s=ns.duration, exit_on_eof=ns.exit_on_eof)
    return 0


# --------------------------------------------------------------------------- the handle


class WorkloadHandle:
    """A running workload child process. Stop it with :meth:`stop` (it ends it by pid)."""

    def __init__(self, proc: subprocess.Popen[str], spec: WorkloadSpec, ready: dict[str, Any]):
        self._proc = proc
        self.spec = spec
        self.pid: int = int(ready["pid"])
        self.base: int = int(ready["base"])
        self.t0: float = float(ready["t0"])
        self.mappings: tuple[tuple[int, int], ...] = tuple(
            (int(a), int(b)) for a, b in ready["mappings"]
        )
        self._phases: list[tuple[int, float]] = [(0, self.t0)]
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        if stream is None:
            return
        for line in stream:
            event = json.loads(line)
            if event.get("event") == "phase":
                with self._lock:
                    self._phases.append((int(event["phase"]), float(event["t"])))
            else:
                self._replies.put(event)

    def phase_at(self, t: float | None = None) -> int:
        """The phase the workload was in at monotonic time ``t`` (default: now).

        Computed from the spec's move period, which is what the workload itself does,
        so it is right even before the phase line has been read.
        """
        if self.spec.pattern != "moving":
            return 0
        when = time.monotonic() if t is None else t
        return max(0, int((when - self.t0) // self.spec.move_period_s))

    def truth(self, phase: int | None = None) -> Truth:
        """The ground truth of ``phase`` (default: the current one)."""
        current = self.phase_at() if phase is None else phase
        mask = np.zeros(self.spec.nr_pages, dtype=bool)
        mask[hot_pages(self.spec, current)] = True
        return Truth(self.base, self.spec.size_bytes, PAGE_SIZE, current, mask, self.mappings)

    def stats(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The workload's touch statistics: rounds, touch_s, elapsed_s, cpu_s, user_s,
        sys_s (seconds; sys_s includes the kernel's work for probes, e.g. uffd-wp faults)."""
        if self._proc.stdin is None:
            raise RuntimeError("workload stdin is closed")
        self._proc.stdin.write("stats\n")
        self._proc.stdin.flush()
        return self._replies.get(timeout=timeout_s)

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the workload by its pid (SIGTERM, then SIGKILL after ``timeout_s``)."""
        if self._proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self._proc.wait(timeout_s)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> WorkloadHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_workload(spec: WorkloadSpec, *, timeout_s: float = 60.0) -> WorkloadHandle:
    """Start the workload as a child process; return once it has announced its truth.

    The child exits when this process closes its stdin (or dies), so a crashed test
    leaves no workload behind.
    """
    cmd = [sys.executable, "-m", "reactor.testing.workload", *spec.argv(), "--exit-on-eof"]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stdout is not None
    result: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: result.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        line = result.get(timeout=timeout_s)
    except queue.Empty:
        line = ""
    if not line:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        raise RuntimeError(f"workload {cmd} did not start (exit status {proc.returncode})")
    return WorkloadHandle(proc, spec, json.loads(line))


if __name__ == "__main__":
    raise SystemExit(main())
