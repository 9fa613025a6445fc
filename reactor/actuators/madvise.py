"""``process_madvise`` on another process's ranges: COLD, PAGEOUT, WILLNEED, COLLAPSE.

Before acting, the actuator reads the target's ``/proc/PID/smaps`` and classifies every
requested byte by the mapping it lies in (anonymous, shmem/tmpfs, or a file on disk),
because what an advice can do depends on that (host-capabilities.md §2, measured here):

- PAGEOUT of anonymous or shmem pages without swap is a no-op that *activates* the pages
  (the call succeeds): those ranges are not issued, and the outcome says so. PAGEOUT of
  clean file pages frees them at once (RSS and page cache drop); dirty file pages mostly
  stay (they are activated): the outcome counts the dirty bytes and notes that only clean
  pages leave (the caller may msync/fsync files it knows are safe to sync; the actuator
  does not).
- WILLNEED reads file pages into the page cache (it does not map them, so the target's
  RSS does not rise until it touches them); each call reads at most the backing device's
  readahead size (``read_ahead_kb``, 8 MiB here), so file ranges are cut into pieces of
  that size. Anonymous WILLNEED without swap has nothing to read back: not issued.
- COLLAPSE works on whole 2 MiB-aligned blocks (THP mode ``madvise`` is enough); ranges
  are trimmed to them, and mappings with MADV_NOHUGEPAGE (``nh`` in VmFlags, where the
  kernel answers EINVAL) are not issued.
- COLD deactivates pages; RSS is unchanged by design.

Measured before and after: the target's totals (Rss, Anonymous, Swap, AnonHugePages,
FilePmdMapped: what smaps_rollup reports, summed from the same smaps read, so one page
walk per reading), the Rss of the mappings acted on, and /proc/meminfo ``Cached``
(system-wide, so concurrent activity adds noise). Readings go through
:class:`TargetStates`: a policy's actuators share one, so a process is read once per
tick however many policies look at it. Never pid 1, a kernel thread or
reactor's own process (:class:`~reactor.actuators.base.RefusedAction`). A process that
exits is a ``vanished`` outcome, not an error. Acting on another process needs
CAP_SYS_NICE (the kernel answers EPERM otherwise).
"""

from __future__ import annotations

import bisect
import errno as errno_mod
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal, TypeAlias

import anyio

from reactor.actuators._procfs import (
    Piece,
    Vma,
    classify,
    parse_smaps_totals,
    swap_backed_mounts,
)
from reactor.actuators._syscalls import ProcessCalls, RealProcessCalls
from reactor.actuators.base import (
    MIB,
    Action,
    Actuator,
    Limits,
    Outcome,
    OutcomeStatus,
    RefusedAction,
    Span,
    check_pid,
    chunk_spans,
    frozen,
    read_proc,
    take_bytes,
)
from reactor.errors import KernelInterfaceError, TargetVanished
from reactor.kernelfs import KernelFS
from reactor.kernelfs.syscalls import MADV_COLD, MADV_COLLAPSE, MADV_PAGEOUT, MADV_WILLNEED
from reactor.sampler.procfs import is_kernel_thread
from reactor.signals.meminfo import parse_meminfo

__all__ = (
    "ADVICE",
    "ANON_PAGEOUT_NO_SWAP",
    "ANON_WILLNEED_NO_SWAP",
    "HUGE_BYTES",
    "NOHUGEPAGE_COLLAPSE",
    "WILLNEED_MAX_PIECE_BYTES",
    "Advice",
    "MadviseActuator",
    "TargetState",
    "TargetStates",
)

Advice: TypeAlias = Literal["cold", "pageout", "willneed", "collapse"]

#: The advices process_madvise accepts for another process (others give EINVAL here).
ADVICE: dict[str, int] = {
    "cold": MADV_COLD,
    "pageout": MADV_PAGEOUT,
    "willneed": MADV_WILLNEED,
    "collapse": MADV_COLLAPSE,
}

ANON_PAGEOUT_NO_SWAP = (
    "anonymous pageout without swap does nothing: the call succeeds and activates the "
    "pages; not issued"
)
ANON_PAGEOUT_SWAP_FULL = (
    "anonymous pageout with swap full does nothing: the pages cannot be written out and "
    "are activated; not issued"
)
ANON_WILLNEED_NO_SWAP = (
    "anonymous WILLNEED without swap has nothing to read back (no anonymous page can be "
    "swapped out); not issued"
)
NOHUGEPAGE_COLLAPSE = (
    "COLLAPSE on a mapping with MADV_NOHUGEPAGE (VmFlags nh) fails with EINVAL; not issued"
)
SHORT_COLLAPSE = "COLLAPSE needs whole 2 MiB-aligned blocks; parts shorter than one not issued"
UNMAPPED = "part of the request lies in no mapping (the kernel would answer ENOMEM); not issued"

#: One PMD huge page (x86-64, arm64 with 4 KiB pages).
HUGE_BYTES = 2 * MIB
#: The largest WILLNEED piece: one call reads at most max(read_ahead_kb, io_pages) of a
#: file (force_page_cache_ra), 8 MiB here; a device with a larger readahead still gets
#: 8 MiB pieces so one call stays short.
WILLNEED_MAX_PIECE_BYTES = 8 * MIB
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

#: errnos after which further batches would fail the same way.
_FATAL = frozenset({errno_mod.EPERM, errno_mod.EINVAL, errno_mod.ENOSYS, errno_mod.EACCES})


@dataclass
class TargetState:
    """A target process as read before or after an action (reads only, no syscalls):
    its mappings (smaps, in address order), their totals (``rollup``: what smaps_rollup
    reports, summed from the same read), /proc/meminfo's page cache and swap, its tmpfs
    mount points, and when it was read (``taken_at``, the states' clock)."""

    vmas: list[Vma]
    rollup: dict[str, int]
    cached_bytes: int
    swap_total_bytes: int
    swap_free_bytes: int
    shmem_mounts: tuple[str, ...] = ()
    taken_at: float = 0.0


class TargetStates:
    """Readings of target processes, kept for ``max_age_s`` and shared by every actuator
    and policy given the same instance.

    Several policies acting on one process each tick would otherwise each read and
    parse its whole smaps (a page walk plus hundreds of mappings) and then again in the
    actuator: with one shared instance, a process is read once per tick (``max_age_s``
    about half a tick). An action that issues anything drops the process's reading before
    its first call and stores the reading measured after it, so a later action in the
    same tick starts from what the kernel did. ``max_age_s=0`` (the default of a lone
    actuator) reads afresh every time. Thread-safe in the sense it needs: readings are
    replaced whole, and two threads reading at once both read.
    """

    def __init__(
        self,
        fs: KernelFS,
        *,
        max_age_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fs = fs
        self.max_age_s = max_age_s
        self.clock = clock
        self._states: dict[int, TargetState] = {}
        #: fresh reads, and reads answered from a kept reading
        self.reads = 0
        self.hits = 0

    def peek(self, pid: int, max_age_s: float | None = None) -> TargetState | None:
        """The kept reading of ``pid`` if it is younger than ``max_age_s`` (default: the
        instance's), else None."""
        limit = self.max_age_s if max_age_s is None else max_age_s
        state = self._states.get(pid)
        if state is None or limit <= 0 or self.clock() - state.taken_at > limit:
            return None
        self.hits += 1
        return state

    def get(self, pid: int) -> TargetState:
        """The kept reading, or a fresh one (blocking: call it in a worker thread)."""
        return self.peek(pid) or self.read(pid)

    def read(self, pid: int, *, with_mounts: bool = True) -> TargetState:
        """Read the target's files afresh and keep the reading (blocking: smaps walks the
        page tables, about 10 ms per GiB). RefusedAction for a kernel thread."""
        self.reads += 1
        fs = self.fs
        stat_path = f"/proc/{pid}/stat"
        stat = read_proc(fs, stat_path, pid)
        if is_kernel_thread(stat, stat_path):
            raise RefusedAction(f"pid {pid}", "it is a kernel thread (it has no user memory)")
        smaps_path = f"/proc/{pid}/smaps"
        vmas, totals = parse_smaps_totals(read_proc(fs, smaps_path, pid), smaps_path)
        vmas.sort(key=lambda v: v.start)  # the kernel's order already: linear
        mem = parse_meminfo(fs.read_text("/proc/meminfo"), "/proc/meminfo")
        mounts: tuple[str, ...] = ()
        if with_mounts:
            try:
                mounts = swap_backed_mounts(fs.read_text(f"/proc/{pid}/mounts"))
            except KernelInterfaceError:
                mounts = ()
        else:
            old = self._states.get(pid)
            mounts = old.shmem_mounts if old is not None else ()
        state = TargetState(
            vmas,
            totals,
            mem.cached_bytes,
            mem.swap_total_bytes,
            mem.swap_free_bytes,
            mounts,
            self.clock(),
        )
        self._states[pid] = state
        return state

    def drop(self, pid: int) -> None:
        """Forget ``pid``'s reading (it is about to change, or the process is gone)."""
        self._states.pop(pid, None)


@dataclass
class _Ctx:
    """One action in progress: the request, the target, its pidfd and its first reading."""

    action: Action
    pid: int
    key: str
    pidfd: int | None
    before: TargetState


@dataclass
class _Sent:
    """What the kernel calls of one action did."""

    applied_bytes: int = 0
    sent_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    vanished: bool = False


@dataclass
class _Plan:
    issue: list[Span] = field(default_factory=list)
    issue_pieces: list[Piece] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dirty_file_bytes: int = 0

    def skip(self, reason: str, nbytes: int) -> None:
        if nbytes > 0:
            self.skipped[reason] = self.skipped.get(reason, 0) + nbytes


class MadviseActuator(Actuator):
    """Advise ranges of other processes, within limits, and measure the effect.

    ``fs`` reads /proc and /sys (a :class:`~reactor.kernelfs.RealKernelFS` in
    production); ``calls`` makes the system calls (real by default).
    ``willneed_piece_bytes`` overrides the readahead-derived WILLNEED piece size.
    """

    def __init__(
        self,
        fs: KernelFS,
        *,
        calls: ProcessCalls | None = None,
        limits: Limits | None = None,
        willneed_piece_bytes: int | None = None,
        states: TargetStates | None = None,
    ) -> None:
        super().__init__(limits, logger_name="reactor.actuators.madvise")
        self.fs = fs
        self.calls: ProcessCalls = calls if calls is not None else RealProcessCalls()
        self.willneed_piece_bytes = willneed_piece_bytes
        #: readings of the targets (shared with a policy's other actuators, or private
        #: and read afresh for every action)
        self.states = states if states is not None else TargetStates(fs)
        #: the last plan, by (kind, ranges, reading): see :meth:`_planned`
        self._last_plan: tuple[str, tuple[Span, ...], TargetState, _Plan, int] | None = None

    # -- public API ------------------------------------------------------------------------

    async def advise(
        self, pid: int, ranges: Sequence[Span], advice: Advice, *, reason: str = ""
    ) -> Outcome:
        """Apply ``advice`` to ``(start, length)`` byte ranges of process ``pid``."""
        return await self.apply(Action(advice, pid, tuple(ranges), reason=reason))

    async def apply(self, action: Action) -> Outcome:
        """Apply a ``cold``/``pageout``/``willneed``/``collapse`` action (see module docs)."""
        if action.kind not in ADVICE:
            raise RefusedAction(
                str(action.target),
                f"process_madvise accepts only {', '.join(ADVICE)} for another process, "
                f"got {action.kind!r}",
            )
        pid = check_pid(action.target, action.kind)
        key = f"pid:{pid}"
        async with self._slot(key).lock:
            return await self._apply(action, pid, key)

    # -- one action ------------------------------------------------------------------------

    async def _apply(self, action: Action, pid: int, key: str) -> Outcome:
        t0 = anyio.current_time()
        start = Outcome(
            kind=action.kind,
            target=f"pid {pid}",
            status="skipped",
            requested_bytes=action.requested_bytes,
            dry_run=self.limits.dry_run,
            reason=action.reason,
        )
        pidfd: int | None = None
        try:
            if not self.limits.dry_run:
                pidfd = await self._blocking(key, partial(self.calls.pidfd_open, pid))
            # a dry run measures nothing: any kept reading plans as well as a fresh one
            before = self.states.peek(pid, math.inf if self.limits.dry_run else None)
            if before is None:
                before = await self._blocking(key, partial(self.states.read, pid))
        except BaseException as exc:
            self._close(pidfd)
            if not isinstance(exc, TargetVanished):
                raise
            self.forget(key)
            self.states.drop(pid)
            return self._report(
                replace(
                    start,
                    status="vanished",
                    skipped="target vanished before the action",
                    duration_s=anyio.current_time() - t0,
                )
            )
        try:
            outcome = await self._act(_Ctx(action, pid, key, pidfd, before), start)
        finally:
            self._close(pidfd)
        return self._report(replace(outcome, duration_s=anyio.current_time() - t0))

    async def _act(self, ctx: _Ctx, start: Outcome) -> Outcome:
        before = ctx.before
        plan, mapped_rss = self._planned(ctx.action.kind, ctx.action.ranges, before)
        budget, cut_reason = self._budget(sum(n for _, n in plan.issue))
        issue, cut = take_bytes(plan.issue, budget)
        if cut and cut_reason:
            plan.skip(cut_reason, cut)
        measures = _plan_measures(plan, before, mapped_rss)
        start = replace(
            start,
            rss_before_bytes=before.rollup["Rss"],
            notes=tuple(plan.notes),
            skipped="; ".join(plan.skipped) or None,
            measured=frozen(measures),
        )
        if not issue:
            return start
        batches = self._batches(ctx.action.kind, issue, before)
        issued = sum(n for _, n in issue)
        self._charge(issued)
        if self.limits.dry_run:
            measures |= {"planned_calls": len(batches), "planned_bytes": issued}
            return replace(start, status="dry_run", measured=frozen(measures))
        assert ctx.pidfd is not None
        self.states.drop(ctx.pid)  # whatever was read before no longer holds
        sent = await self._issue(ctx.key, ctx.pidfd, ctx.action.kind, batches)
        vanished = sent.vanished
        after: TargetState | None = None
        if not vanished:
            try:
                read = partial(self.states.read, ctx.pid, with_mounts=False)
                after = await self._blocking(ctx.key, read)
            except TargetVanished:
                vanished = True
        if vanished:
            self.forget(ctx.key)
        measures |= {"calls": len(batches), "sent_bytes": sent.sent_bytes}
        outcome = replace(
            start,
            status=_status(vanished, sent, issued, plan),
            issued_bytes=issued,
            applied_bytes=sent.applied_bytes,
            errors=tuple(sent.errors),
        )
        if after is None:
            return replace(outcome, measured=frozen(measures))
        measures |= _effect(before, after, plan.issue_pieces)
        swap_growth = after.rollup.get("Swap", 0) - before.rollup.get("Swap", 0)
        return replace(
            outcome,
            rss_after_bytes=after.rollup["Rss"],
            file_cache_delta_bytes=after.cached_bytes - before.cached_bytes,
            swap_out_pages=max(0, swap_growth) // PAGE_SIZE,
            measured=frozen(measures),
        )

    async def _issue(
        self, key: str, pidfd: int, kind: str, batches: list[tuple[Span, ...]]
    ) -> _Sent:
        """Send the batches until done, the deadline, a fatal error or the target's exit."""
        out = _Sent()
        advice = ADVICE[kind]
        with anyio.move_on_after(self.limits.deadline_s) as scope:
            for i, batch in enumerate(batches):
                total = sum(n for _, n in batch)
                try:
                    n = await self._blocking(
                        key, partial(self.calls.process_madvise, pidfd, batch, advice)
                    )
                except TargetVanished:
                    out.vanished = True
                    break
                except KernelInterfaceError as exc:
                    out.sent_bytes += total
                    out.errors.append(f"batch {i + 1}/{len(batches)}: {_explain(kind, exc)}")
                    if exc.errno in _FATAL:
                        break
                    continue
                out.sent_bytes += total
                out.applied_bytes += n
                if n < total:
                    out.errors.append(
                        f"batch {i + 1}/{len(batches)}: the kernel advised {n} of {total} bytes "
                        "(it stops at the first range it cannot advise)"
                    )
        if scope.cancelled_caught:
            out.errors.append(
                f"deadline of {self.limits.deadline_s:g} s reached after {out.sent_bytes} of "
                f"{sum(n for b in batches for _, n in b)} bytes"
            )
        return out

    # -- planning --------------------------------------------------------------------------

    def _planned(
        self, kind: str, ranges: tuple[Span, ...], state: TargetState
    ) -> tuple[_Plan, int]:
        """:meth:`_plan` and the Rss of the mappings its pieces lie in, computed once for
        the same kind, ranges and reading (the same object): a dry run plans from a
        kept reading, and a policy asks for the same ranges every tick until its monitor's
        next snapshot. A copy each time: the caller adds its own skips."""
        last = self._last_plan
        if last is not None and last[2] is state and last[0] == kind and last[1] == ranges:
            plan, rss = last[3], last[4]
        else:
            plan = self._plan(kind, ranges, state)
            rss = _mapped_rss(state.vmas, plan.issue_pieces)
            self._last_plan = (kind, ranges, state, plan, rss)
        copy = replace(
            plan,
            issue=list(plan.issue),
            issue_pieces=list(plan.issue_pieces),
            skipped=dict(plan.skipped),
            notes=list(plan.notes),
        )
        return copy, rss

    def _plan(self, kind: str, ranges: Sequence[Span], state: TargetState) -> _Plan:
        pieces, unmapped = classify(ranges, state.vmas, state.shmem_mounts)
        plan = _Plan()
        plan.skip(UNMAPPED, unmapped)
        no_swap = state.swap_total_bytes == 0
        swap_full = not no_swap and state.swap_free_bytes == 0
        for piece in pieces:
            swap_backed = piece.kind in ("anon", "shmem")
            if kind == "pageout" and swap_backed and (no_swap or swap_full):
                plan.skip(ANON_PAGEOUT_NO_SWAP if no_swap else ANON_PAGEOUT_SWAP_FULL, piece.length)
                continue
            if kind == "willneed" and swap_backed and no_swap:
                plan.skip(ANON_WILLNEED_NO_SWAP, piece.length)
                continue
            if kind == "collapse":
                if "nh" in piece.vma.vmflags:
                    plan.skip(NOHUGEPAGE_COLLAPSE, piece.length)
                    continue
                lo = -(-piece.start // HUGE_BYTES) * HUGE_BYTES
                hi = (piece.start + piece.length) // HUGE_BYTES * HUGE_BYTES
                plan.skip(SHORT_COLLAPSE, piece.length - max(0, hi - lo))
                if hi <= lo:
                    continue
                piece = Piece(lo, hi - lo, piece.kind, piece.vma)  # noqa: PLW2901
            plan.issue.append((piece.start, piece.length))
            plan.issue_pieces.append(piece)
        if kind == "pageout":
            _note_pageout(plan)
        return plan

    def _batches(
        self, kind: str, issue: Sequence[Span], state: TargetState
    ) -> list[tuple[Span, ...]]:
        """Cut the issued spans into calls of at most ``chunk_bytes`` (and 1024 iovecs);
        WILLNEED file spans also into readahead-sized pieces."""
        spans: list[Span] = list(issue)
        if kind == "willneed":
            spans = []
            for start, length in issue:
                cap = self._willneed_piece(start, state)
                spans.extend(_split(start, length, cap))
        align = HUGE_BYTES if kind == "collapse" else 1
        batch = max(self.limits.chunk_bytes // align * align, align)
        return list(chunk_spans(spans, batch_bytes=batch, align=align))

    def _willneed_piece(self, addr: int, state: TargetState) -> int:
        if self.willneed_piece_bytes is not None:
            return self.willneed_piece_bytes
        vma = next((v for v in state.vmas if v.start <= addr < v.end), None)
        if vma is None or vma.inode == 0:
            return WILLNEED_MAX_PIECE_BYTES
        path = f"/sys/class/bdi/{vma.dev[0]}:{vma.dev[1]}/read_ahead_kb"
        try:
            ra = int(self.fs.read_text(path).strip()) * 1024
        except (KernelInterfaceError, ValueError):
            return WILLNEED_MAX_PIECE_BYTES
        return min(WILLNEED_MAX_PIECE_BYTES, max(PAGE_SIZE, ra))

    def _close(self, fd: int | None) -> None:
        if fd is not None:
            self.calls.close(fd)


def _split(start: int, length: int, piece: int) -> list[Span]:
    return [(pos, min(piece, start + length - pos)) for pos in range(start, start + length, piece)]


def _note_pageout(plan: _Plan) -> None:
    file_vmas = {id(p.vma): p.vma for p in plan.issue_pieces if p.kind == "file"}
    dirty = sum(v.file_dirty for v in file_vmas.values())
    plan.dirty_file_bytes = dirty
    if dirty:
        plan.notes.append(
            f"{dirty} bytes of the file mappings are dirty: PAGEOUT frees only clean pages "
            "(dirty ones are activated); msync/fsync first where the file may be synced"
        )
    cow = sum(v.anonymous for v in file_vmas.values() if not v.shared)
    if cow:
        plan.notes.append(
            f"{cow} bytes of private file mappings are anonymous copies (written pages), "
            "which need swap to leave"
        )


def _plan_measures(plan: _Plan, before: TargetState, mapped_rss: int) -> dict[str, int]:
    return {
        "skipped_bytes": sum(plan.skipped.values()),
        "dirty_file_bytes": plan.dirty_file_bytes,
        "anon_before_bytes": before.rollup.get("Anonymous", 0),
        "swap_before_bytes": before.rollup.get("Swap", 0),
        "anon_huge_before_bytes": before.rollup.get("AnonHugePages", 0),
        "mapped_rss_before_bytes": mapped_rss,
    }


def _mapped_rss(vmas: Sequence[Vma], pieces: Sequence[Piece]) -> int:
    """Rss of the mappings the pieces lie in (whole mappings: smaps counts per mapping).
    ``vmas`` in address order (a :class:`TargetState`'s are)."""
    spans = sorted((p.start, p.start + p.length) for p in pieces)
    if not spans:
        return 0
    hit: set[int] = set()
    starts = [v.start for v in vmas]
    for lo, hi in spans:
        i = max(0, bisect.bisect_right(starts, lo) - 1)
        while i < len(vmas) and vmas[i].start < hi:
            if vmas[i].end > lo:
                hit.add(i)
            i += 1
    return sum(vmas[i].rss for i in hit)


def _effect(before: TargetState, after: TargetState, pieces: Sequence[Piece]) -> dict[str, int]:
    def delta(name: str) -> int:
        return after.rollup.get(name, 0) - before.rollup.get(name, 0)

    mapped_after = _mapped_rss(after.vmas, pieces)
    return {
        "anon_delta_bytes": delta("Anonymous"),
        "swap_delta_bytes": delta("Swap"),
        "anon_huge_delta_bytes": delta("AnonHugePages"),
        "anon_huge_after_bytes": after.rollup.get("AnonHugePages", 0),
        "file_pmd_delta_bytes": delta("FilePmdMapped"),
        "mapped_rss_after_bytes": mapped_after,
        "mapped_rss_delta_bytes": mapped_after - _mapped_rss(before.vmas, pieces),
        "cached_before_bytes": before.cached_bytes,
        "cached_after_bytes": after.cached_bytes,
    }


def _status(vanished: bool, sent: _Sent, issued: int, plan: _Plan) -> OutcomeStatus:
    if vanished:
        return "vanished"
    if sent.errors and sent.applied_bytes == 0:
        return "failed"
    if sent.errors or sent.applied_bytes < issued or plan.skipped:
        return "partial"
    return "applied"


def _explain(kind: str, exc: KernelInterfaceError) -> str:
    if exc.errno == errno_mod.EPERM:
        return f"{exc} (process_madvise on another process needs CAP_SYS_NICE)"
    if exc.errno == errno_mod.EINVAL and kind == "collapse":
        return f"{exc} (COLLAPSE needs THP enabled and no MADV_NOHUGEPAGE on the range)"
    return str(exc)
