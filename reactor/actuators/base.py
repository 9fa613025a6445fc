"""What every actuator shares: the request, the measured outcome, limits and the runner.

An actuator takes an :class:`Action` (what a policy decided), applies it within its
:class:`Limits` (bytes per action, a byte rate, dry-run, a deadline) and returns an
:class:`Outcome` that says what *measurably* happened: bytes that left the target's RSS
or the page cache, swap-outs, pages that changed node. What the syscall reported
(``applied_bytes``) is kept apart from what was measured, because the two differ on real
kernels: anonymous ``MADV_PAGEOUT`` without swap returns success for every byte and frees
nothing (host-capabilities.md §2).

Blocking work (syscalls, smaps walks, reclaim writes) runs in worker threads through
:meth:`Actuator._blocking`, one call at a time per target (a ``CapacityLimiter(1)`` per
target) and one action at a time per target (an ``anyio.Lock`` per target), so two
policies acting on the same process or cgroup never interleave their before/after
measurements. Large requests are cut into chunks; the action's deadline is checked
between chunks, and a deadline that passes ends the action with what was done so far
(reported, not raised).
"""

from __future__ import annotations

import errno as errno_mod
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, TypeVar

import anyio
import anyio.to_thread
import structlog

from reactor.errors import KernelInterfaceError, ReactorError, TargetVanished
from reactor.kernelfs.base import KernelFS
from reactor.kernelfs.frozen import FrozenMap

__all__ = (
    "MIB",
    "Action",
    "ActionKind",
    "Actuator",
    "Limits",
    "Outcome",
    "OutcomeStatus",
    "RateLimiter",
    "RefusedAction",
    "Span",
    "check_pid",
    "chunk_spans",
    "frozen",
    "read_proc",
    "take_bytes",
)

MIB = 1 << 20
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
T = TypeVar("T")

#: The kinds of action reactor's actuators implement.
ActionKind: TypeAlias = Literal[
    "cold",
    "pageout",
    "willneed",
    "collapse",
    "move_pages",
    "migrate_pages",
    "cgroup_reclaim",
    "node_reclaim",
    "compact",
]

#: ``applied``: everything issued was accepted; ``partial``: part of the request was cut
#: (limits, refusals of some ranges, deadline, a kernel that stopped early);
#: ``skipped``: nothing was issued (``skipped`` says why); ``dry_run``: computed and
#: logged, never issued; ``vanished``: the target disappeared (a normal event);
#: ``failed``: the kernel refused the first call (``errors`` says how).
OutcomeStatus: TypeAlias = Literal["applied", "partial", "skipped", "dry_run", "vanished", "failed"]

#: An address range ``(start, length)`` in bytes.
Span: TypeAlias = tuple[int, int]


class RefusedAction(ReactorError):
    """An action reactor will not perform on this target, whatever the limits say.

    Raised (not returned) because it is a caller's mistake, not a run-time event: pid 1,
    a kernel thread, reactor's own process, a node-wide action that the operator did not
    enable, an advice process_madvise does not accept. ``target`` and ``reason`` are
    attributes too.
    """

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"refused to act on {target}: {reason}")


@dataclass(frozen=True)
class Action:
    """What a policy asks an actuator to do.

    ``target`` is a pid (process actions), a cgroup directory's kernel path (cgroup
    reclaim) or a node number (node-wide actions). ``ranges`` are ``(start, length)``
    byte ranges of the target's address space; ``nbytes`` is the amount for reclaim
    actions (for range actions it defaults to the ranges' total). ``node`` is the
    destination of a migration (or the node of a node-wide action), ``from_nodes`` the
    sources of a whole-process migration. ``reason`` is carried into logs and the outcome.
    """

    kind: ActionKind
    target: int | str
    ranges: tuple[Span, ...] = ()
    nbytes: int | None = None
    node: int | None = None
    from_nodes: tuple[int, ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        for start, length in self.ranges:
            if start < 0 or length < 0:
                raise ValueError(
                    f"{self.kind}: ranges are (start, length) with both >= 0, "
                    f"got ({start:#x}, {length})"
                )
        if any(n < 0 for n in self.from_nodes) or (self.node is not None and self.node < 0):
            raise ValueError(
                f"{self.kind}: node numbers are >= 0, got {self.node}, {self.from_nodes}"
            )
        if self.nbytes is not None and self.nbytes < 0:
            raise ValueError(f"{self.kind}: nbytes must be >= 0, got {self.nbytes}")

    @property
    def requested_bytes(self) -> int:
        """``nbytes`` if given, else the total length of ``ranges``."""
        if self.nbytes is not None:
            return self.nbytes
        return sum(length for _, length in self.ranges)


@dataclass(frozen=True)
class Outcome:
    """What an action measurably did.

    Bytes throughout. ``requested_bytes`` is what the policy asked for,
    ``issued_bytes`` what was handed to the kernel after limits and refusals,
    ``applied_bytes`` what the kernel reported back (``process_madvise``'s return,
    the bytes of accepted reclaim writes): none of the three says what changed.

    Measured effects (None where the actuator does not measure that quantity):
    ``rss_before_bytes``/``rss_after_bytes`` (the target's RSS from smaps_rollup) and
    ``rss_delta_bytes`` = after - before (negative: memory left RSS);
    ``file_cache_delta_bytes`` (meminfo ``Cached``, or the cgroup's file pages, after -
    before; system-wide for process actions, so other activity adds noise);
    ``usage_before_bytes``/``usage_after_bytes``/``usage_delta_bytes`` (a cgroup's usage
    or a node's used memory); ``swap_out_pages`` (growth of the target's ``Swap``);
    ``pages_moved`` (pages that changed node). ``measured`` holds further per-actuator
    quantities under names that carry their unit.

    ``skipped`` says why nothing (or part of the request) was issued, ``notes`` what the
    caller should know (dirty pages that cannot leave, ranges not mapped), ``errors``
    what the kernel refused. ``duration_s`` is wall time of the whole action including
    the measurements, on the monotonic clock.
    """

    kind: ActionKind
    target: str
    status: OutcomeStatus
    requested_bytes: int
    issued_bytes: int = 0
    applied_bytes: int = 0
    dry_run: bool = False
    skipped: str | None = None
    rss_before_bytes: int | None = None
    rss_after_bytes: int | None = None
    file_cache_delta_bytes: int | None = None
    usage_before_bytes: int | None = None
    usage_after_bytes: int | None = None
    swap_out_pages: int | None = None
    pages_moved: int | None = None
    measured: FrozenMap[str, int] = field(default_factory=FrozenMap)
    notes: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    duration_s: float = 0.0
    reason: str = ""
    rss_delta_bytes: int | None = field(init=False)
    usage_delta_bytes: int | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "rss_delta_bytes", _delta(self.rss_before_bytes, self.rss_after_bytes)
        )
        object.__setattr__(
            self, "usage_delta_bytes", _delta(self.usage_before_bytes, self.usage_after_bytes)
        )
        if not isinstance(self.measured, FrozenMap):
            object.__setattr__(self, "measured", FrozenMap(self.measured))

    @property
    def vanished(self) -> bool:
        """True when the target disappeared before or during the action."""
        return self.status == "vanished"

    def log_fields(self) -> dict[str, object]:
        """The outcome as flat log fields (None values left out)."""
        out: dict[str, object] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None or value == () or (name == "measured" and not value):
                continue
            out[name] = dict(value) if name == "measured" else value
        return out


def _delta(before: int | None, after: int | None) -> int | None:
    if before is None or after is None:
        return None
    return after - before


class RateLimiter:
    """A token bucket in bytes: ``rate_bytes_per_s`` refill, at most ``burst_bytes`` saved.

    Pure: it never reads a clock; every call passes ``now`` (seconds on one monotonic
    timeline, e.g. ``anyio.current_time()``), so tests drive it with plain numbers. The
    bucket starts full. A ``now`` earlier than the last one is treated as no time passed
    (clocks are monotonic; this only guards against a caller mixing timelines).
    """

    def __init__(self, rate_bytes_per_s: float, burst_bytes: int, now: float) -> None:
        if not (rate_bytes_per_s > 0 and math.isfinite(rate_bytes_per_s)):
            raise ValueError(f"rate_bytes_per_s must be finite and > 0, got {rate_bytes_per_s}")
        if burst_bytes <= 0:
            raise ValueError(f"burst_bytes must be > 0, got {burst_bytes}")
        self.rate_bytes_per_s = rate_bytes_per_s
        self.burst_bytes = burst_bytes
        self._tokens = float(burst_bytes)
        self._stamp = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(float(self.burst_bytes), self._tokens + elapsed * self.rate_bytes_per_s)
        self._stamp = max(self._stamp, now)

    def available(self, now: float) -> int:
        """Whole bytes that may be spent at ``now``."""
        self._refill(now)
        return int(self._tokens)

    def take(self, want: int, now: float) -> int:
        """Spend up to ``want`` bytes; return how many were granted (possibly 0)."""
        if want < 0:
            raise ValueError(f"want must be >= 0, got {want}")
        granted = min(want, self.available(now))
        self._tokens -= granted
        return granted

    def wait_s(self, want: int, now: float) -> float:
        """Seconds until ``want`` bytes (capped at the burst) are available."""
        missing = min(want, self.burst_bytes) - self.available(now)
        return max(0.0, missing / self.rate_bytes_per_s)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one actuator does.

    ``max_bytes_per_action``: a request larger than this is cut to it (None: no cap).
    ``rate_bytes_per_s`` with ``burst_bytes``: a token bucket shared by every action of
    the actuator (None: no rate limit; the burst defaults to one second's worth).
    ``dry_run``: compute the plan (classification, limits, chunks), log it and return it,
    never call the kernel. ``deadline_s``: wall time allowed for the kernel calls of one
    action; checked between chunks. ``chunk_bytes``: the largest amount handed to the
    kernel in one call or write (64 MiB keeps a single PAGEOUT call near 60 ms and a
    COLLAPSE call near 140 ms here, host-capabilities.md §2).
    """

    max_bytes_per_action: int | None = None
    rate_bytes_per_s: float | None = None
    burst_bytes: int | None = None
    dry_run: bool = False
    deadline_s: float = 10.0
    chunk_bytes: int = 64 * MIB

    def __post_init__(self) -> None:
        if self.max_bytes_per_action is not None and self.max_bytes_per_action <= 0:
            raise ValueError(
                f"max_bytes_per_action must be > 0 (or None), got {self.max_bytes_per_action}"
            )
        if self.rate_bytes_per_s is not None and not (
            self.rate_bytes_per_s > 0 and math.isfinite(self.rate_bytes_per_s)
        ):
            raise ValueError(
                f"rate_bytes_per_s must be finite and > 0 (or None), got {self.rate_bytes_per_s}"
            )
        if self.burst_bytes is not None and self.burst_bytes <= 0:
            raise ValueError(f"burst_bytes must be > 0 (or None), got {self.burst_bytes}")
        if not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            raise ValueError(f"deadline_s must be finite and > 0, got {self.deadline_s}")
        if self.chunk_bytes < 4096:
            raise ValueError(f"chunk_bytes must be >= 4096, got {self.chunk_bytes}")

    def rate_limiter(self, now: float) -> RateLimiter | None:
        """A fresh bucket for these limits (None when there is no rate limit)."""
        if self.rate_bytes_per_s is None:
            return None
        burst = self.burst_bytes or max(4096, int(self.rate_bytes_per_s))
        return RateLimiter(self.rate_bytes_per_s, burst, now)


def take_bytes(spans: Sequence[Span], budget: int) -> tuple[tuple[Span, ...], int]:
    """The first ``budget`` bytes of ``spans`` (in order) and how many bytes were cut."""
    out: list[Span] = []
    left = budget
    total = 0
    for start, length in spans:
        total += length
        if left <= 0:
            continue
        use = min(length, left)
        out.append((start, use))
        left -= use
    kept = sum(length for _, length in out)
    return tuple(out), total - kept


def chunk_spans(
    spans: Sequence[Span],
    *,
    batch_bytes: int,
    piece_bytes: int | None = None,
    align: int = 1,
    max_pieces: int = 1024,
) -> Iterator[tuple[Span, ...]]:
    """Cut ``spans`` into batches: each batch holds at most ``batch_bytes`` and
    ``max_pieces`` spans, each span at most ``piece_bytes``.

    Cuts fall on multiples of ``align`` in the address space (absolute, not relative to
    a span's start), so a 2 MiB-aligned block that COLLAPSE could turn into a huge page
    is never split between two calls. ``max_pieces`` defaults to UIO_MAXIOV (1024), the
    most iovecs the kernel takes per call.
    """
    if batch_bytes < align:
        raise ValueError(f"batch_bytes ({batch_bytes}) must be >= align ({align})")
    piece_cap = min(piece_bytes or batch_bytes, batch_bytes)
    batch: list[Span] = []
    used = 0
    for start, length in spans:
        pos, end = start, start + length
        while pos < end:
            room = batch_bytes - used
            size = min(end - pos, room, piece_cap)
            stop = pos + size
            if stop < end and align > 1:
                aligned = stop - stop % align
                if aligned > pos:
                    stop = aligned
                elif used:
                    # no aligned cut fits the room left: close this batch first
                    yield tuple(batch)
                    batch, used = [], 0
                    continue
            batch.append((pos, stop - pos))
            used += stop - pos
            pos = stop
            if used >= batch_bytes or len(batch) >= max_pieces:
                yield tuple(batch)
                batch, used = [], 0
    if batch:
        yield tuple(batch)


@dataclass
class _Slot:
    lock: anyio.Lock
    limiter: anyio.CapacityLimiter


def check_pid(pid: object, kind: str) -> int:
    """``pid`` if reactor may act on it; RefusedAction for pid 1 (and below) and for
    reactor's own process (kernel threads are refused once /proc/PID/stat is read)."""
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise RefusedAction(str(pid), f"{kind} needs a pid (an int) as target")
    if pid <= 1:
        raise RefusedAction(f"pid {pid}", "pid 1 (init) and pids below it are never acted on")
    if pid == os.getpid():
        raise RefusedAction(f"pid {pid}", "reactor's own process is never acted on")
    return pid


def read_proc(fs: KernelFS, path: str, pid: int) -> str:
    """Read a /proc/PID file; TargetVanished when the process is gone (ENOENT, ESRCH)."""
    try:
        return fs.read_text(path)
    except KernelInterfaceError as exc:
        if exc.errno in (errno_mod.ENOENT, errno_mod.ESRCH):
            raise TargetVanished(f"pid {pid}") from exc
        raise


class Actuator:
    """Shared machinery: limits, the rate bucket, per-target serialisation, threads.

    Subclasses implement ``apply(action) -> Outcome``. The rate bucket is created on
    first use with the event loop's clock (``anyio.current_time()``).
    """

    def __init__(self, limits: Limits | None = None, *, logger_name: str) -> None:
        self.limits = limits if limits is not None else Limits()
        self._bucket: RateLimiter | None = None
        self._bucket_made = False
        self._slots: dict[str, _Slot] = {}
        self._log = structlog.get_logger(logger_name)

    # -- per-target serialisation ----------------------------------------------------------

    def _slot(self, key: str) -> _Slot:
        slot = self._slots.get(key)
        if slot is None:
            slot = _Slot(anyio.Lock(), anyio.CapacityLimiter(1))
            self._slots[key] = slot
        return slot

    def forget(self, key: str) -> None:
        """Drop the per-target state of a target that has gone."""
        self._slots.pop(key, None)

    async def _blocking(self, key: str, func: Callable[[], T]) -> T:
        """Run ``func`` in a worker thread, one at a time for target ``key``."""
        return await anyio.to_thread.run_sync(func, limiter=self._slot(key).limiter)

    # -- limits ----------------------------------------------------------------------------

    def _budget(self, requested: int) -> tuple[int, str | None]:
        """Bytes this action may issue now, and why it was cut (None: not cut)."""
        budget, why = requested, None
        cap = self.limits.max_bytes_per_action
        if cap is not None and budget > cap:
            budget, why = cap, f"cut to max_bytes_per_action ({cap} bytes)"
        bucket = self._rate_bucket()
        if bucket is not None:
            now = anyio.current_time()
            avail = bucket.available(now)
            if budget > avail:
                wait = bucket.wait_s(budget, now)
                budget = avail
                why = (
                    f"rate limit {bucket.rate_bytes_per_s:g} bytes/s: {avail} bytes available "
                    f"now, {wait:.3g} s until the request fits"
                )
        if why is not None:
            # a cut falls on a page boundary: the kernel acts on whole pages (madvise
            # rounds a length up, move_pages takes every page a range touches)
            budget -= budget % PAGE_SIZE
        return budget, why

    def _charge(self, nbytes: int) -> None:
        """Spend ``nbytes`` of the rate bucket (what was issued, or planned in dry-run)."""
        bucket = self._rate_bucket()
        if bucket is not None and nbytes > 0:
            bucket.take(nbytes, anyio.current_time())

    def _rate_bucket(self) -> RateLimiter | None:
        if not self._bucket_made:
            self._bucket = self.limits.rate_limiter(anyio.current_time())
            self._bucket_made = True
        return self._bucket

    # -- logging ---------------------------------------------------------------------------

    def _report(self, outcome: Outcome) -> Outcome:
        """Log the outcome (one line per action) and return it."""
        event = "actuator_dry_run" if outcome.dry_run else "actuator_outcome"
        if outcome.status == "vanished":
            self._log.info(event, **outcome.log_fields())
        elif outcome.status == "failed":
            self._log.warning(event, **outcome.log_fields())
        else:
            self._log.info(event, **outcome.log_fields())
        return outcome


def frozen(values: Mapping[str, int]) -> FrozenMap[str, int]:
    """``values`` as a read-only map for :attr:`Outcome.measured`."""
    return FrozenMap(dict(values))
