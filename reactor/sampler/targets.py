"""Which processes the native sampler monitors.

A :class:`TargetSpec` names them one of four ways: fixed pids; a command reactor starts
(and owns: it is stopped by its pid when the sampler stops); every process of a cgroup
(``cgroup.procs`` re-read at each update interval, so processes are followed as they
come and go); or a selector (``/proc/PID/comm`` matching a regex, optionally with a
minimum RSS). Whatever the spec says, pid 1, kernel threads and reactor's own process
are never targets (:func:`ineligible_reason`), except that an embedding application may
monitor itself with the ``uffd-wp`` probe (``self_ok``), which writes no clear_refs.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import structlog

from reactor.errors import CommandNotFound, KernelInterfaceError
from reactor.kernelfs import KernelFS
from reactor.sampler.procfs import is_kernel_thread, parse_statm_rss_pages

__all__ = ("OwnedCommand", "TargetSpec", "discover_pids", "ineligible_reason")

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class TargetSpec:
    """One monitored target (possibly several processes).

    Exactly one of ``pids``, ``command``, ``cgroup``, ``comm`` selects processes.
    ``ranges`` are address ranges the target registered itself (a cooperating process:
    required for ``uffd-wp``; for other probes they narrow monitoring to those ranges).
    ``probe`` is a probe name or ``auto`` (the best one this machine offers for it).
    ``cgroup`` is a kernel path (``/sys/fs/cgroup/...``), ``min_rss_bytes`` bytes.
    """

    name: str
    pids: tuple[int, ...] = ()
    command: tuple[str, ...] = ()
    cgroup: str | None = None
    comm: str | None = None
    min_rss_bytes: int = 0
    ranges: tuple[tuple[int, int], ...] | None = None
    probe: str = "auto"
    self_ok: bool = False

    def __post_init__(self) -> None:
        chosen = [
            bool(self.pids),
            bool(self.command),
            self.cgroup is not None,
            self.comm is not None,
        ]
        if sum(chosen) != 1:
            raise ValueError(
                f"target {self.name!r}: set exactly one of pids, command, cgroup, comm "
                f"(got {sum(chosen)})"
            )
        if self.comm is not None:
            re.compile(self.comm)

    @property
    def cooperating(self) -> bool:
        return self.ranges is not None


def ineligible_reason(fs: KernelFS, pid: int, *, self_ok: bool = False) -> str | None:
    """Why ``pid`` must not be a target (None when it may): pid 1, this process, a
    kernel thread (PF_KTHREAD), or a process that has gone."""
    if pid <= 1:
        return "pid 1 (init) is never sampled"
    if pid == os.getpid() and not self_ok:
        return "reactor's own process is never sampled"
    try:
        stat = fs.read_text(f"/proc/{pid}/stat")
    except KernelInterfaceError:
        return "no such process"
    if is_kernel_thread(stat, f"/proc/{pid}/stat"):
        return "kernel thread"
    return None


def _pids_of_cgroup(fs: KernelFS, cgroup: str) -> list[int]:
    text = fs.read_text(cgroup.rstrip("/") + "/cgroup.procs")
    return sorted(int(line) for line in text.split())


def _pids_by_comm(fs: KernelFS, pattern: str, min_rss_bytes: int) -> list[int]:
    regex = re.compile(pattern)
    out = []
    for name in fs.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            comm = fs.read_text(f"/proc/{name}/comm").strip()
            if not regex.fullmatch(comm):
                continue
            if min_rss_bytes:
                rss = parse_statm_rss_pages(fs.read_text(f"/proc/{name}/statm")) * PAGE_SIZE
                if rss < min_rss_bytes:
                    continue
        except KernelInterfaceError:
            continue  # gone while we looked
        out.append(int(name))
    return out


def discover_pids(fs: KernelFS, spec: TargetSpec, owned: Sequence[int] = ()) -> list[int]:
    """The eligible pids ``spec`` selects now (``owned``: pids of its started command)."""
    if spec.pids:
        candidates = list(spec.pids)
    elif spec.command:
        candidates = list(owned)
    elif spec.cgroup is not None:
        candidates = _pids_of_cgroup(fs, spec.cgroup)
    else:
        assert spec.comm is not None
        candidates = _pids_by_comm(fs, spec.comm, spec.min_rss_bytes)
    return [p for p in candidates if ineligible_reason(fs, p, self_ok=spec.self_ok) is None]


def _relay(stream: IO[bytes], pid: int) -> None:
    """Log each line a started command prints (at most 1000 characters of it)."""
    log = structlog.get_logger("reactor.command").bind(pid=pid)
    with stream:
        for raw in stream:
            log.info("command_output", line=raw.decode(errors="replace").rstrip()[:1000])


@functools.cache
def _note_no_guard() -> None:
    structlog.get_logger("reactor.command").warning(
        "command_orphan_guard",
        note="setpriv --pdeathsig (util-linux 2.33+) is not usable here: a daemon killed "
        "with SIGKILL leaves the commands it started running (end them by pid)",
    )


@functools.cache
def _parent_death_prefix() -> tuple[str, ...]:
    """``setpriv --pdeathsig KILL --`` when this machine's setpriv (util-linux 2.33+)
    can run a command that way, else () (then a daemon killed with SIGKILL leaves its
    commands running; ``command_orphan_guard`` says so once)."""
    setpriv, true = shutil.which("setpriv"), shutil.which("true")
    if setpriv is None or true is None:
        return ()
    prefix = (setpriv, "--pdeathsig", "KILL", "--")
    try:
        ran = subprocess.run([*prefix, true], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return prefix if ran.returncode == 0 else ()


class OwnedCommand:
    """A command reactor started; ended by its pid (SIGTERM, then SIGKILL).

    It runs under ``setpriv --pdeathsig KILL`` (util-linux), which has the kernel send
    it SIGKILL when the thread that started it ends: a daemon killed with SIGKILL (no
    shutdown to stop it) takes its commands with it. reactor starts commands from the
    event loop's thread, which lives as long as the daemon. setpriv execs the command,
    so the pid is the command's. Without a usable setpriv the command starts plainly
    and ``command_orphan_guard`` is logged once.
    """

    def __init__(self, argv: Sequence[str], *, where: str | None = None) -> None:
        """``where`` names the config entry in errors (``monitor 'w'``)."""
        self.argv = tuple(argv)
        if not self.argv or shutil.which(self.argv[0]) is None:
            name = self.argv[0] if self.argv else ""
            whose = f"{where}: " if where is not None else ""
            raise CommandNotFound(
                errno.ENOENT,
                f"{whose}command {name!r} is not on PATH or not executable "
                "(targets.command: a path, or a name on PATH)",
                name,
            )
        prefix = _parent_death_prefix()
        if not prefix:
            _note_no_guard()
        # The child's output becomes `command_output` log events, so the daemon's log
        # stream stays one event per line (JSON lines off a terminal).
        self._proc = subprocess.Popen(
            (*prefix, *self.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.pid = self._proc.pid
        assert self._proc.stdout is not None
        threading.Thread(
            target=_relay, args=(self._proc.stdout, self.pid), daemon=True, name=f"relay-{self.pid}"
        ).start()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``. A command that has not ended
        ``timeout_s`` after SIGKILL (stuck in the kernel, state D) is logged
        (``command_stop_timeout``, error) and left: shutdown goes on with its other
        steps rather than raising here."""
        if self._proc.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                structlog.get_logger("reactor.command").error(
                    "command_stop_timeout",
                    pid=self.pid,
                    argv=list(self.argv),
                    waited_s=2 * timeout_s,
                    note="still running after SIGTERM and SIGKILL (stuck in the kernel?)",
                )
