"""Typed snapshots of DAMON's output files: stats, tried regions, quotas, intervals, goals.

The kernel refreshes these files only on an explicit ``state`` command
(``update_schemes_stats`` …) or, from 6.17, every ``refresh_ms``; reading them is cheap
and always allowed. Each reader here reads files that exist and parses integers with the
kernel's own rules, so a file a kernel version lacks reads as its default (0), never as
an error; a file that exists but holds no integer is a
:class:`~reactor.errors.KernelFormatError` that quotes it.

Units are in the names: ``*_bytes`` bytes, ``*_us`` microseconds, ``age_aggrs``
aggregation intervals, ``nr_accesses`` samples per aggregation interval.
"""

from __future__ import annotations

import errno as E
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reactor.damon import paths
from reactor.errors import KernelFormatError, KernelInterfaceError
from reactor.kernelfs import KernelFS

__all__ = (
    "BUSY_READ_BUDGET_S",
    "GoalValue",
    "KdamondSnapshot",
    "SchemeStats",
    "TriedRegion",
    "TriedRegions",
    "TunedIntervals",
    "nr_schemes",
    "parse_kernel_int",
    "read_effective_quota",
    "read_goal_values",
    "read_int",
    "read_kdamond_snapshot",
    "read_scheme_stats",
    "read_text",
    "read_tried_regions",
    "read_tuned_intervals",
)


def parse_kernel_int(text: str, path: str) -> int:
    """An integer as the kernel prints it (decimal, or ``-1``), or KernelFormatError."""
    stripped = text.strip()
    try:
        return int(stripped, 10)
    except ValueError:
        raise KernelFormatError(path, "expected an integer", line=stripped) from None


#: How long a read waits out a held ``damon_sysfs_lock`` (EBUSY) before it gives up.
BUSY_READ_BUDGET_S: float = 0.5

#: First wait after an EBUSY read (doubled each time, at most 100 ms).
BUSY_READ_BACKOFF_S: float = 0.005


def read_text(
    fs: KernelFS,
    path: str,
    *,
    budget_s: float = BUSY_READ_BUDGET_S,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Read a DAMON sysfs file, waiting out a held ``damon_sysfs_lock``.

    ``state``, ``pid``, ``memcg_path`` and goal/filter ``path`` take the lock with a
    trylock and answer EBUSY while anyone holds it: another tool's command, a long
    ``update_schemes_tried_regions``, or the kernel's own ``refresh_ms`` worker (a guest
    run read EBUSY from ``state`` at shutdown, then judged reactor's own kdamond foreign
    from the unreadable pid). No other error of a read is transient, so only EBUSY is
    retried, from 5 ms doubling to 100 ms, for ``budget_s`` in all; then the EBUSY
    error is raised. Blocking: call it in a worker thread where it may wait.
    """
    deadline = time.monotonic() + budget_s
    delay = BUSY_READ_BACKOFF_S
    while True:
        try:
            return fs.read_text(path)
        except KernelInterfaceError as exc:
            left = deadline - time.monotonic()
            if exc.errno != E.EBUSY or left <= 0:
                raise
        sleep(min(delay, left))
        delay = min(delay * 2, 0.1)


def read_int(fs: KernelFS, path: str, default: int | None = None) -> int:
    """Read an integer file (EBUSY waited out, :func:`read_text`); ``default`` (if given)
    when the file does not exist."""
    if default is not None and not fs.exists(path):
        return default
    return parse_kernel_int(read_text(fs, path), path)


@dataclass(frozen=True)
class SchemeStats:
    """A scheme's cumulative statistics (``schemes/<S>/stats``), as of the last refresh.

    ``nr_snapshots``/``max_nr_snapshots`` are 0 before Linux 7.0,
    ``sz_ops_filter_passed_bytes`` before 6.14.
    """

    kdamond: int
    scheme: int
    nr_tried: int
    sz_tried_bytes: int
    nr_applied: int
    sz_applied_bytes: int
    sz_ops_filter_passed_bytes: int
    qt_exceeds: int
    nr_snapshots: int
    max_nr_snapshots: int


@dataclass(frozen=True)
class TriedRegion:
    """A region a scheme tried during one apply interval (``tried_regions/<R>``).

    ``[start, end)`` in bytes (address units for paddr with ``addr_unit`` ≠ 1),
    ``nr_accesses`` in samples per aggregation, ``age_aggrs`` in aggregation intervals;
    ``probe_hits`` holds per-probe hit counts (Linux 7.2 data-attribute probes).
    """

    start: int
    end: int
    nr_accesses: int
    age_aggrs: int
    sz_filter_passed_bytes: int = 0
    probe_hits: tuple[int, ...] = ()

    @property
    def size_bytes(self) -> int:
        """``end - start``."""
        return self.end - self.start


@dataclass(frozen=True)
class TriedRegions:
    """A scheme's tried regions after ``update_schemes_tried_regions``.

    ``total_bytes`` is the kernel's own sum (``tried_regions/total_bytes``, Linux 6.6),
    or the sum of the region sizes on older kernels.
    """

    kdamond: int
    scheme: int
    total_bytes: int
    regions: tuple[TriedRegion, ...]


@dataclass(frozen=True)
class TunedIntervals:
    """A context's sampling and aggregation intervals (µs) after ``update_tuned_intervals``."""

    kdamond: int
    sample_us: int
    aggr_us: int


@dataclass(frozen=True)
class GoalValue:
    """A quota goal: its metric, target and current value (in the metric's unit)."""

    kdamond: int
    scheme: int
    goal: int
    metric: str
    target_value: int
    current_value: int


@dataclass(frozen=True)
class KdamondSnapshot:
    """One kdamond's outputs read in one pass (what the DAMON source publishes per tick)."""

    index: int
    state: str
    pid: int
    stats: tuple[SchemeStats, ...]
    effective_quotas_bytes: tuple[int, ...]
    tuned: TunedIntervals | None
    goals: tuple[GoalValue, ...]


_kdamond = paths.kdamond_dir
_context = paths.context_dir
_scheme = paths.scheme_dir
_numbered = paths.numbered


def nr_schemes(fs: KernelFS, k: int) -> int:
    """How many scheme directories kdamond ``k``'s context has (0 without a context)."""
    return len(_numbered(fs, _context(k) + "/schemes"))


def read_scheme_stats(fs: KernelFS, k: int, s: int) -> SchemeStats:
    """``schemes/<s>/stats/*`` of kdamond ``k`` (files the kernel lacks read as 0)."""
    base = _scheme(k, s) + "/stats"

    def get(name: str) -> int:
        return read_int(fs, f"{base}/{name}", default=0)

    return SchemeStats(
        kdamond=k,
        scheme=s,
        nr_tried=get("nr_tried"),
        sz_tried_bytes=get("sz_tried"),
        nr_applied=get("nr_applied"),
        sz_applied_bytes=get("sz_applied"),
        sz_ops_filter_passed_bytes=get("sz_ops_filter_passed"),
        qt_exceeds=get("qt_exceeds"),
        nr_snapshots=get("nr_snapshots"),
        max_nr_snapshots=get("max_nr_snapshots"),
    )


def _read_regions(
    fs: KernelFS,
    base: str,
    numbers: Sequence[int],
    *,
    pattern: bool,
    passed: bool,
    probes: Sequence[int],
) -> tuple[TriedRegion, ...]:
    """Every region of ``base`` (a ``tried_regions`` directory) in one
    :meth:`~reactor.kernelfs.KernelFS.read_texts` pass: one directory descriptor for
    thousands of files, where a path walk per file was most of a snapshot's cost. These
    files take no DAMON lock; an EBUSY all the same is waited out file by file.
    ``pattern``, ``passed``: whether the regions have ``nr_accesses``/``age`` and
    ``sz_filter_passed`` (to read); ``probes``: the probes whose hits to read."""
    files = (
        ("start", "end")
        + (("nr_accesses", "age") if pattern else ())
        + (("sz_filter_passed",) if passed else ())
        + tuple(f"probes/{p}/hits" for p in probes)
    )
    names = [f"{r}/{f}" for r in numbers for f in files]
    try:
        texts = fs.read_texts(base, names)
    except KernelInterfaceError as exc:
        if exc.errno != E.EBUSY:
            raise
        texts = [read_text(fs, f"{base}/{name}") for name in names]
    values = [parse_kernel_int(t, f"{base}/{n}") for t, n in zip(texts, names, strict=True)]
    width, hits = len(files), len(files) - len(probes)
    passed_at = hits - 1
    out = []
    for i in range(0, len(values), width):
        row = values[i : i + width]
        out.append(
            TriedRegion(
                start=row[0],
                end=row[1],
                nr_accesses=row[2] if pattern else 0,
                age_aggrs=row[3] if pattern else 0,
                sz_filter_passed_bytes=row[passed_at] if passed else 0,
                probe_hits=tuple(row[hits:]),
            )
        )
    return tuple(out)


def read_tried_regions(fs: KernelFS, k: int, s: int, *, extras: bool = True) -> TriedRegions:
    """``schemes/<s>/tried_regions`` of kdamond ``k``, regions in index (address) order.

    Up to ``max_nr_regions`` (thousands) directories of four to six files, read in one
    :meth:`~reactor.kernelfs.KernelFS.read_texts` pass: which optional files exist is
    looked up on the first region only (one kernel writes every region alike), so a
    region costs its reads alone. ``extras=False`` leaves ``sz_filter_passed`` (6.14) and
    the probes' hits (7.2) unread, as 0 and ``()``: a snapshot for the policies needs
    the range, ``nr_accesses`` and ``age`` alone, a fifth fewer files."""
    base = _scheme(k, s) + "/tried_regions"
    numbers = _numbered(fs, base)
    regions: tuple[TriedRegion, ...] = ()
    if numbers:
        first = f"{base}/{numbers[0]}"
        pattern = fs.exists(first + "/nr_accesses")
        passed = extras and fs.exists(first + "/sz_filter_passed")
        # 7.2's per-probe hits: the probes the first region lists (configured per
        # context, so every region lists the same)
        probes = _numbered(fs, first + "/probes") if extras else []
        regions = _read_regions(fs, base, numbers, pattern=pattern, passed=passed, probes=probes)
    total = read_int(fs, base + "/total_bytes", default=-1)
    if total < 0:
        total = sum(r.size_bytes for r in regions)
    return TriedRegions(k, s, total, regions)


def read_effective_quota(fs: KernelFS, k: int, s: int) -> int:
    """``quotas/effective_bytes`` of scheme ``s`` (0 before Linux 6.9)."""
    return read_int(fs, _scheme(k, s) + "/quotas/effective_bytes", default=0)


def read_tuned_intervals(fs: KernelFS, k: int) -> TunedIntervals:
    """The context's ``sample_us`` and ``aggr_us`` (tuned values after the update command)."""
    base = _context(k) + "/monitoring_attrs/intervals"
    return TunedIntervals(k, read_int(fs, base + "/sample_us"), read_int(fs, base + "/aggr_us"))


def read_goal_values(fs: KernelFS, k: int, s: int) -> tuple[GoalValue, ...]:
    """Every quota goal of scheme ``s``: metric, target and current value."""
    base = _scheme(k, s) + "/quotas/goals"
    out = []
    for g in _numbered(fs, base):
        path = f"{base}/{g}"
        metric_path = path + "/target_metric"
        metric = fs.read_text(metric_path).strip() if fs.exists(metric_path) else "user_input"
        out.append(
            GoalValue(
                k,
                s,
                g,
                metric,
                read_int(fs, path + "/target_value"),
                read_int(fs, path + "/current_value"),
            )
        )
    return tuple(out)


def read_kdamond_snapshot(fs: KernelFS, k: int) -> KdamondSnapshot:
    """State, pid, every scheme's stats, effective quota and goals, and the intervals."""
    base = _kdamond(k)
    schemes = range(nr_schemes(fs, k))
    has_context = fs.is_dir(_context(k))
    return KdamondSnapshot(
        index=k,
        state=read_text(fs, base + "/state").strip(),
        pid=read_int(fs, base + "/pid"),
        stats=tuple(read_scheme_stats(fs, k, s) for s in schemes),
        effective_quotas_bytes=tuple(read_effective_quota(fs, k, s) for s in schemes),
        tuned=read_tuned_intervals(fs, k) if has_context else None,
        goals=tuple(g for s in schemes for g in read_goal_values(fs, k, s)),
    )
