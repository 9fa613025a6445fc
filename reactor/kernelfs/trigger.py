"""PSI triggers: a kernel file that wakes a poller when stall time crosses a threshold.

A trigger is armed by writing ``"<some|full> <threshold_us> <window_us>"`` to a PSI file
(``/proc/pressure/<resource>`` or a cgroup v2 ``<resource>.pressure``) opened for
reading and writing, and lives as long as that descriptor (Documentation/accounting/psi.rst).
The kernel then signals **EPOLLPRI** on the descriptor, at most once per window, whenever
the stall time within the last window exceeds the threshold.

Facts this module is built on (measured on this host, kernel 6.18, and read in
kernel/sched/psi.c):

- ``psi_trigger_poll`` always reports ``DEFAULT_POLLMASK`` (EPOLLIN | EPOLLOUT | ...), and
  adds EPOLLPRI only when the trigger fired. A wait for *readable* therefore returns at
  once, every time: ``anyio.wait_readable`` (epoll with EPOLLIN on asyncio and on trio)
  cannot wait for a trigger. :meth:`RealTrigger.wait` blocks in ``poll(2)`` for POLLPRI in
  a worker thread instead, with a self-pipe so another thread can interrupt it.
- The kernel copies the write and overwrites its *last byte* with NUL, so the spec is
  written with a trailing NUL (as the kernel documentation's example does); without it
  ``"some 150000 2000000"`` would arm a 200 ms window.
- Without CAP_SYS_RESOURCE a trigger's window must be a multiple of 2 s (the kernel then
  evaluates it on its 2 s averaging work instead of spawning an RT poller thread); any
  window must lie in 0.5..10 s and the threshold in (0, window]. A refusal is EINVAL
  (EPERM on older kernels for unprivileged writers, EOPNOTSUPP where PSI is disabled, EBUSY
  when the descriptor already holds a trigger); :class:`TriggerRefused` carries the errno
  and a sentence saying which rule most likely applies, so the caller can fall back to
  polling the file.
- When the trigger's file goes away (its cgroup was removed) kernfs reports
  EPOLLERR | EPOLLPRI: :meth:`RealTrigger.wait` raises :class:`TriggerGone`.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import re
import select
import threading
from typing import Literal, Protocol, TypeAlias

from reactor.errors import KernelInterfaceError

__all__ = (
    "UNPRIVILEGED_WINDOW_STEP_US",
    "WINDOW_MAX_US",
    "WINDOW_MIN_US",
    "RealTrigger",
    "TriggerGone",
    "TriggerHandle",
    "TriggerRefused",
    "TriggerSpec",
    "WaitResult",
    "parse_trigger_spec",
    "refusal_reason",
)

#: What one :meth:`TriggerHandle.wait` call saw: the trigger fired, the timeout passed, or
#: :meth:`TriggerHandle.interrupt` woke it (the owner is stopping).
WaitResult: TypeAlias = Literal["fired", "timeout", "interrupted"]

_SPEC = re.compile(r"^(some|full) ([0-9]+) ([0-9]+)$")

#: The kernel's bounds on a trigger window (psi.c WINDOW_MIN_US / WINDOW_MAX_US), µs.
WINDOW_MIN_US = 500_000
WINDOW_MAX_US = 10_000_000
#: Unprivileged triggers (no CAP_SYS_RESOURCE) need a window that is a multiple of this.
UNPRIVILEGED_WINDOW_STEP_US = 2_000_000


class TriggerSpec:
    """A parsed trigger: ``kind`` (some/full), ``threshold_us`` of stall per ``window_us``."""

    __slots__ = ("kind", "threshold_us", "window_us")

    def __init__(self, kind: str, threshold_us: int, window_us: int) -> None:
        self.kind = kind
        self.threshold_us = threshold_us
        self.window_us = window_us

    def text(self) -> str:
        """The spec as the kernel reads it (without the trailing NUL)."""
        return f"{self.kind} {self.threshold_us} {self.window_us}"

    def __repr__(self) -> str:
        return f"TriggerSpec({self.text()!r})"


def parse_trigger_spec(spec: str) -> TriggerSpec:
    """Parse ``"some|full <threshold_us> <window_us>"``; ValueError names what is wrong.

    Checks only the shape and ``0 < threshold <= window`` (a caller's bug); the window
    rules that depend on privilege are the kernel's to enforce, and a refusal comes back
    as :class:`TriggerRefused` from the kernel's own errno.
    """
    match = _SPEC.match(spec.strip())
    if match is None:
        raise ValueError(f"expected 'some|full <threshold_us> <window_us>', got {spec!r}")
    kind, threshold, window = match.group(1), int(match.group(2)), int(match.group(3))
    if not 0 < threshold <= window:
        raise ValueError(
            f"expected 0 < threshold_us <= window_us, got threshold_us={threshold}, "
            f"window_us={window}"
        )
    return TriggerSpec(kind, threshold, window)


class TriggerRefused(KernelInterfaceError):
    """The kernel refused to arm a trigger; ``reason`` says which rule, ``spec`` what was asked.

    A normal outcome on machines without CAP_SYS_RESOURCE (or without PSI): the caller
    polls the file instead.
    """

    def __init__(self, path: str, spec: str, err: int | None, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(path, f"trigger {spec!r} refused: {reason}", errno=err)


class TriggerGone(KernelInterfaceError):
    """The trigger's file went away (its cgroup was removed): kernfs reported POLLERR."""


def refusal_reason(err: int | None, spec: TriggerSpec) -> str:
    """A sentence for the kernel's refusal of ``spec`` with ``err``, naming the likely rule."""
    if err == errno_mod.EINVAL:
        if not WINDOW_MIN_US <= spec.window_us <= WINDOW_MAX_US:
            return f"the window must lie in 0.5..10 s, got {spec.window_us} us"
        if spec.window_us % UNPRIVILEGED_WINDOW_STEP_US:
            return (
                "without CAP_SYS_RESOURCE the kernel accepts only windows that are a "
                f"multiple of 2 s, got {spec.window_us} us"
            )
        return "the kernel rejected the spec (EINVAL)"
    if err in (errno_mod.EPERM, errno_mod.EACCES):
        return "this process may not arm triggers on this file (no CAP_SYS_RESOURCE)"
    if err == errno_mod.EOPNOTSUPP:
        return "PSI is disabled on this kernel (psi=0 or CONFIG_PSI off)"
    if err == errno_mod.ENOENT:
        return "the PSI file does not exist (no PSI, or no such cgroup)"
    if err == errno_mod.EBUSY:
        return "this descriptor already holds a trigger"
    return "the kernel refused the write"


class TriggerHandle(Protocol):
    """An armed trigger. ``wait`` blocks: run it in a worker thread, never on the loop."""

    @property
    def path(self) -> str: ...

    @property
    def spec(self) -> str: ...

    def fileno(self) -> int: ...

    def wait(self, timeout_s: float | None) -> WaitResult:
        """Block until the trigger fires, ``timeout_s`` passes (None: no limit) or
        :meth:`interrupt` is called; raises :class:`TriggerGone` if the file went away."""
        ...

    def interrupt(self) -> None:
        """Wake a thread blocked in :meth:`wait` (it returns ``"interrupted"``)."""
        ...

    def close(self) -> None:
        """Interrupt any waiter, wait for it to leave, then disarm (close the descriptor)."""
        ...


class RealTrigger:
    """A trigger on a real PSI file: the armed descriptor plus a self-pipe for interrupts."""

    def __init__(self, path: str, host_path: str, spec: str) -> None:
        self._path = path
        parsed = parse_trigger_spec(spec)
        self._spec = parsed.text()
        try:
            fd = os.open(host_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            reason = refusal_reason(exc.errno, parsed)
            raise TriggerRefused(path, self._spec, exc.errno, reason) from exc
        try:
            os.write(fd, self._spec.encode() + b"\0")
        except OSError as exc:
            os.close(fd)
            raise TriggerRefused(
                path, self._spec, exc.errno, refusal_reason(exc.errno, parsed)
            ) from exc
        self._fd: int | None = fd
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._busy = threading.Lock()  # held while a thread is inside wait()
        self._pipe_lock = threading.Lock()  # interrupt() never writes to a closed pipe

    @property
    def path(self) -> str:
        return self._path

    @property
    def spec(self) -> str:
        return self._spec

    def fileno(self) -> int:
        if self._fd is None:
            raise KernelInterfaceError(self._path, "trigger used after close")
        return self._fd

    def wait(self, timeout_s: float | None) -> WaitResult:
        with self._busy:
            fd = self.fileno()
            poller = select.poll()
            poller.register(fd, select.POLLPRI)
            poller.register(self._wake_r, select.POLLIN)
            timeout_ms = None if timeout_s is None else max(0, int(timeout_s * 1000))
            events = dict(poller.poll(timeout_ms))
        if events.get(self._wake_r):
            self._drain()
            return "interrupted"
        revents = events.get(fd, 0)
        if revents & (select.POLLERR | select.POLLNVAL):
            raise TriggerGone(self._path, "trigger's file went away", errno=errno_mod.ENODEV)
        return "fired" if revents & select.POLLPRI else "timeout"

    def interrupt(self) -> None:
        with self._pipe_lock:
            if self._fd is None:
                return  # closed: nobody can be waiting, and the pipe's numbers may be reused
            with contextlib.suppress(BlockingIOError):  # the pipe already holds a wake-up
                os.write(self._wake_w, b"x")

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 64):
                pass

    def close(self) -> None:
        if self._fd is None:
            return
        self.interrupt()
        with self._busy, self._pipe_lock:  # a waiter leaves poll() at once after the interrupt
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
                os.close(self._wake_r)
                os.close(self._wake_w)
