"""A fake DAMON sysfs interface with the kernel's semantics at a stated kernel version.

:class:`FakeDamon` plugs into a :class:`~reactor.testing.fakefs.FakeKernelFS` (built with
``allow_damon_writes=True``) and gives ``/sys/kernel/mm/damon/admin`` the behaviour of
mm/damon/sysfs.c and sysfs-schemes.c (docs/reference: damon-sysfs.md §1–§3, §6, §8)::

    fs = FakeKernelFS(allow_damon_writes=True)
    damon = FakeDamon(fs, kernel="7.2.12")
    damon.add_process(4242, [(0x7F0000000000, 0x7F0000400000, 1.0),   # hot 4 MiB
                             (0x7F0000401000, 0x7F0002401000, 0.0)])  # cold 32 MiB
    fs.write_text(".../kdamonds/nr_kdamonds", "1")   # ... stage a context, then "on"
    damon.advance(2.0)                               # two simulated seconds

What it models, file by file:

- every file of the tree with its default, created or hidden by kernel version (§8), so
  that feature probes by file existence see the version's tree;
- ``nr_*`` files remove and recreate all children with defaults, even at the same value;
- integers parsed like ``kstrto*(buf, 0)`` (``010`` is octal 8, ``0x10`` is 16, ``+`` and
  one trailing newline allowed; garbage EINVAL, overflow ERANGE, or EINVAL where the
  kernel maps every error to EINVAL); booleans like ``kstrtobool`` (read back ``Y``/``N``);
  keywords with ``sysfs_streq`` (unknown or newer-than-the-kernel words are EINVAL);
- read-only (0400) files refuse writes with EACCES, as kernfs does at open;
- a write of 0 bytes changes nothing and succeeds (sysfs never calls the store; seen on
  the lane's 7.2.12 guest), on every writable file, ``state`` and ``nr_*`` included;
- every ``state`` command with the errno the kernel version gives (§3.1, §3.2), context
  building and its validation order (§3.3), ``commit`` merging by index (§3.4);
- output files (stats, tried_regions, effective_bytes, tuned intervals) change only on
  the ``update_*`` commands or through ``refresh_ms``;
- a simulated kdamond per running context (:mod:`reactor.testing.damon_sim`) whose
  regions, ages, stats and effective quotas move with simulated time (:meth:`advance`);
- simulated processes (:meth:`FakeDamon.add_process`) with ``/proc/PID/maps``,
  ``/proc/PID/pagemap`` and ``/proc/PID/status``: a vaddr/fvaddr ``pageout`` moves the
  resident pages of their never-accessed ranges to swap (pagemap, ``RssAnon`` and
  ``VmSwap`` follow); pages with an access chance are faulted straight back.

What it does not model: file modes live beside the tree (:meth:`FakeDamon.mode`), not in
it; reads never fail with EBUSY (only writes see :meth:`FakeDamon.hold_lock`; a test
injects an EBUSY read with :meth:`FakeKernelFS.inject_fault`); ``pid``
and ``state`` are refreshed at each write and each :meth:`advance`, so a kdamond whose
targets exited reads ``on`` until the next one (the kernel notices within a sample
interval); a paddr ``pageout`` moves nothing (physical ranges have no pages to swap);
swapped pages never come back (the ranges they lie in are never accessed).
"""

from __future__ import annotations

import errno as errno_mod
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from reactor.testing.damon_sim import (
    PAGE_SIZE,
    Attrs,
    CtxParams,
    FilterParams,
    GoalParams,
    QuotaParams,
    SchemeParams,
    SimContext,
    TargetParams,
    WatermarkParams,
    check_ctx_inputs,
    kernel_error,
)
from reactor.testing.fakefs import FakeKernelFS

__all__ = (
    "ACTIONS",
    "ADMIN",
    "FEATURES",
    "FILTER_TYPES",
    "GOAL_METRICS",
    "KDAMONDS",
    "MAX_PROBES",
    "MODULES",
    "PAGE_SIZE",
    "PROC_PID_STATUS_TEMPLATE",
    "STATE_COMMANDS",
    "FakeDamon",
    "module_param",
    "parse_kernel_version",
    "render_status",
)

DAMON_ROOT = "/sys/kernel/mm/damon"
ADMIN = DAMON_ROOT + "/admin"
KDAMONDS = ADMIN + "/kdamonds"

Version = tuple[int, int, int]

#: sysfs features by first mainline release (damon-sysfs.md §8). "7.2?" items are placed
#: at 7.2: the guest's 7.2.12 decides (see docs/damon-fake.md, "to confirm").
FEATURES: dict[str, tuple[int, int]] = {
    "avail_operations": (5, 19),
    "tried_regions": (6, 2),
    "filters": (6, 3),
    "total_bytes": (6, 6),
    "filter_addr_target": (6, 6),
    "apply_interval_us": (6, 7),
    "quota_goals": (6, 8),
    "target_metric": (6, 9),
    "effective_bytes": (6, 9),
    "target_nid": (6, 11),
    "filter_allow": (6, 14),
    "sz_ops_filter_passed": (6, 14),
    "sz_filter_passed": (6, 14),
    "core_ops_filters": (6, 15),
    "filter_min_max": (6, 15),
    "intervals_goal": (6, 15),
    "goal_nid": (6, 16),
    "dests": (6, 17),
    "refresh_ms": (6, 17),
    "addr_unit": (6, 18),
    "obsolete_target": (6, 19),
    "goal_path": (6, 19),
    "nr_snapshots": (7, 0),
    "goal_tuner": (7, 1),
    "pause": (7, 2),
    "fail_charge": (7, 2),
    "probes": (7, 2),
    # behaviours rather than files
    "min_nr_regions_3": (6, 18),
    "call_ecanceled": (7, 1),
    "commit_stops_on_failure": (7, 1),
}

#: In-kernel DAMON modules that run an exclusive context, by first release, with their
#: ``enabled`` parameter (damon-sysfs.md §3.2): while one runs, a sysfs ``on`` is EBUSY,
#: and enabling one is EBUSY while any kdamond runs.
MODULES: dict[str, tuple[int, int]] = {
    "damon_reclaim": (5, 16),
    "damon_lru_sort": (6, 0),
    "damon_stat": (6, 17),
}


def module_param(name: str) -> str:
    """The ``enabled`` parameter file of DAMON module ``name``."""
    return f"/sys/module/{name}/parameters/enabled"


#: DAMOS actions by release (§4.1).
ACTIONS: dict[str, tuple[int, int]] = {
    "willneed": (5, 18),
    "cold": (5, 18),
    "pageout": (5, 18),
    "hugepage": (5, 18),
    "nohugepage": (5, 18),
    "collapse": (7, 2),
    "lru_prio": (6, 0),
    "lru_deprio": (6, 0),
    "migrate_hot": (6, 11),
    "migrate_cold": (6, 11),
    "stat": (5, 18),
}

#: Quota goal metrics by release (§4.2).
GOAL_METRICS: dict[str, tuple[int, int]] = {
    "user_input": (6, 9),
    "some_mem_psi_us": (6, 9),
    "node_mem_used_bp": (6, 16),
    "node_mem_free_bp": (6, 16),
    "node_memcg_used_bp": (6, 19),
    "node_memcg_free_bp": (6, 19),
    "active_mem_bp": (7, 0),
    "inactive_mem_bp": (7, 0),
    "node_eligible_mem_bp": (7, 2),
}

#: DAMOS filter types by release, with their layer (§4.3).
FILTER_TYPES: dict[str, tuple[tuple[int, int], str]] = {
    "anon": ((6, 3), "ops"),
    "memcg": ((6, 3), "ops"),
    "addr": ((6, 6), "core"),
    "target": ((6, 6), "core"),
    "young": ((6, 10), "ops"),
    "hugepage_size": ((6, 15), "ops"),
    "unmapped": ((6, 15), "ops"),
    "active": ((6, 15), "ops"),
}

#: ``state`` keywords by release (§3.1).
STATE_COMMANDS: dict[str, tuple[int, int]] = {
    "on": (5, 18),
    "off": (5, 18),
    "commit": (5, 19),
    "commit_schemes_quota_goals": (6, 8),
    "update_schemes_stats": (5, 18),
    "update_schemes_tried_bytes": (6, 6),
    "update_schemes_tried_regions": (6, 2),
    "clear_schemes_tried_regions": (6, 2),
    "update_schemes_effective_quotas": (6, 9),
    "update_tuned_intervals": (6, 15),
}

#: DAMON_MAX_PROBES (probes/nr_probes above it is EINVAL); to confirm on 7.2.
MAX_PROBES = 4

#: ``/proc/PID/status`` as the kernel prints it: a verbatim copy of
#: tests/fixtures/captured/host-6.18/proc_pid_status (``cat /proc/self/status`` on the
#: host's 6.18.44, see that directory's README). A simulated process's status is this text
#: with its own pid and memory counters put in (:func:`render_status`); every other line
#: stays as captured.
PROC_PID_STATUS_TEMPLATE = (
    "Name:\tcat\n"
    "Umask:\t0022\n"
    "State:\tR (running)\n"
    "Tgid:\t3128\n"
    "Ngid:\t0\n"
    "Pid:\t3128\n"
    "PPid:\t3126\n"
    "TracerPid:\t0\n"
    "Uid:\t0\t0\t0\t0\n"
    "Gid:\t0\t0\t0\t0\n"
    "FDSize:\t256\n"
    "Groups:\t \n"
    "NStgid:\t3128\n"
    "NSpid:\t3128\n"
    "NSpgid:\t3126\n"
    "NSsid:\t2298\n"
    "Kthread:\t0\n"
    "VmPeak:\t    3060 kB\n"
    "VmSize:\t    3060 kB\n"
    "VmLck:\t       0 kB\n"
    "VmPin:\t       0 kB\n"
    "VmHWM:\t    1720 kB\n"
    "VmRSS:\t    1720 kB\n"
    "RssAnon:\t     116 kB\n"
    "RssFile:\t    1604 kB\n"
    "RssShmem:\t       0 kB\n"
    "VmData:\t     360 kB\n"
    "VmStk:\t     132 kB\n"
    "VmExe:\t      20 kB\n"
    "VmLib:\t    1528 kB\n"
    "VmPTE:\t      52 kB\n"
    "VmSwap:\t       0 kB\n"
    "HugetlbPages:\t       0 kB\n"
    "CoreDumping:\t0\n"
    "THP_enabled:\t1\n"
    "untag_mask:\t0xffffffffffffffff\n"
    "Threads:\t1\n"
    "SigQ:\t0/96365\n"
    "SigPnd:\t0000000000000000\n"
    "ShdPnd:\t0000000000000000\n"
    "SigBlk:\t0000000000000000\n"
    "SigIgn:\t0000000000000000\n"
    "SigCgt:\t0000000000000000\n"
    "CapInh:\t0000000000000000\n"
    "CapPrm:\t000001fffeffffff\n"
    "CapEff:\t000001fffeffffff\n"
    "CapBnd:\t000001fffeffffff\n"
    "CapAmb:\t0000000000000000\n"
    "NoNewPrivs:\t0\n"
    "Seccomp:\t0\n"
    "Seccomp_filters:\t0\n"
    "Speculation_Store_Bypass:\tvulnerable\n"
    "SpeculationIndirectBranch:\talways enabled\n"
    "Cpus_allowed:\t3\n"
    "Cpus_allowed_list:\t0-1\n"
    "Mems_allowed:\t00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,"
    "00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,"
    "00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000000,"
    "00000000,00000000,00000000,00000000,00000000,00000000,00000000,00000001\n"
    "Mems_allowed_list:\t0\n"
    "voluntary_ctxt_switches:\t2\n"
    "nonvoluntary_ctxt_switches:\t0\n"
)

_OPS = ("vaddr", "fvaddr", "paddr")
_ULONG, _UINT, _INT = 64, 32, -32
_ULONG_MAX = 2**64 - 1


def _kb(nbytes: int) -> str:
    """A memory line's value as task_mem() prints it: ``%8lu kB``."""
    return f"{nbytes // 1024:8d} kB"


def render_status(pid: int, *, mapped: int, resident: int, swapped: int, peak_rss: int) -> str:
    """``/proc/PID/status`` of a simulated process: :data:`PROC_PID_STATUS_TEMPLATE` with
    the lines the fake knows put in, the others kept as captured.

    The fake's mappings are private anonymous read-write memory and nothing else (no
    stack, text or library mapping; no file or shmem pages), so ``VmSize``/``VmPeak``
    and ``VmData`` are the mapped bytes, ``VmRSS`` = ``RssAnon`` = the resident bytes,
    ``RssFile``/``RssShmem``/``VmStk``/``VmExe``/``VmLib`` are 0, ``VmSwap`` is the
    swapped bytes and ``VmHWM`` the highest RSS seen. Sizes are bytes, printed in kB.
    """
    values = {
        "Name": "simulated",
        "Tgid": str(pid),
        "Pid": str(pid),
        "NStgid": str(pid),
        "NSpid": str(pid),
        "VmPeak": _kb(mapped),
        "VmSize": _kb(mapped),
        "VmHWM": _kb(peak_rss),
        "VmRSS": _kb(resident),
        "RssAnon": _kb(resident),
        "RssFile": _kb(0),
        "RssShmem": _kb(0),
        "VmData": _kb(mapped),
        "VmStk": _kb(0),
        "VmExe": _kb(0),
        "VmLib": _kb(0),
        "VmSwap": _kb(swapped),
    }
    lines = []
    for line in PROC_PID_STATUS_TEMPLATE.splitlines():
        key = line.split(":\t", 1)[0]
        lines.append(f"{key}:\t{values[key]}" if key in values else line)
    return "\n".join(lines) + "\n"


def _with_interval(intervals: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """Sorted, disjoint ``intervals`` with [lo, hi) added (touching ones are joined)."""
    out: list[tuple[int, int]] = []
    placed = False
    for s, e in intervals:
        if e < lo:
            out.append((s, e))
        elif hi < s:
            if not placed:
                out.append((lo, hi))
                placed = True
            out.append((s, e))
        else:
            lo, hi = min(lo, s), max(hi, e)
    if not placed:
        out.append((lo, hi))
    return out


def _without(lo: int, hi: int, holes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [lo, hi) outside the sorted, disjoint ``holes``."""
    out: list[tuple[int, int]] = []
    pos = lo
    for s, e in holes:
        if e <= pos or s >= hi:
            continue
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
    if pos < hi:
        out.append((pos, hi))
    return out


def _on_node(
    placed: list[tuple[int, int, int]], lo: int, hi: int, nid: int, home: int
) -> tuple[list[tuple[int, int, int]], int]:
    """``placed`` (sorted, disjoint (start, end, node) spans of the pages that are not on
    ``home``, the node every page starts on) with [lo, hi) put on node ``nid``, and how
    many bytes of [lo, hi) were on another node before (the bytes that moved)."""
    kept: list[tuple[int, int, int]] = []
    covered = already = 0
    for s, e, n in placed:
        if e <= lo or s >= hi:
            kept.append((s, e, n))
            continue
        part = min(e, hi) - max(s, lo)
        covered += part
        already += part if n == nid else 0
        if s < lo:
            kept.append((s, lo, n))
        if e > hi:
            kept.append((hi, e, n))
    if nid == home:
        already += (hi - lo) - covered
    else:
        kept.append((lo, hi, nid))
    merged: list[tuple[int, int, int]] = []
    for s, e, n in sorted(kept):
        if merged and merged[-1][1] == s and merged[-1][2] == n:
            merged[-1] = (merged[-1][0], e, n)
        else:
            merged.append((s, e, n))
    return merged, (hi - lo) - already


@dataclass
class _Process:
    """A simulated process: its ranges (start, end, access chance per sample), the parts of
    them paged out to swap (sorted, disjoint), the spans of its pages that a migration put
    off the first memory node (sorted, disjoint (start, end, node)) and its highest RSS."""

    ranges: list[tuple[int, int, float]]
    swapped: list[tuple[int, int]] = field(default_factory=list)
    peak_rss: int = 0
    placed: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def mapped(self) -> int:
        return sum(e - s for s, e, _ in self.ranges)

    @property
    def swapped_bytes(self) -> int:
        return sum(e - s for s, e in self.swapped)

    def pageout(self, start: int, end: int) -> bool:
        """MADV_PAGEOUT of [start, end): the resident pages of never-accessed ranges go to
        swap; pages with an access chance are faulted straight back (no lasting change).
        Returns whether anything left RAM."""
        before = self.swapped_bytes
        for s, e, prob in self.ranges:
            lo, hi = max(s, start), min(e, end)
            if prob == 0.0 and lo < hi:
                self.swapped = _with_interval(self.swapped, lo, hi)
        return self.swapped_bytes != before

    def resident(self, start: int, end: int) -> list[tuple[int, int]]:
        """The resident parts of [start, end): mapped, not paged out."""
        out: list[tuple[int, int]] = []
        for s, e, _ in self.ranges:
            lo, hi = max(s, start), min(e, end)
            if lo < hi:
                out.extend(_without(lo, hi, self.swapped))
        return out

    def migrate(self, start: int, end: int, nid: int, home: int) -> int:
        """Move the resident pages of [start, end) to node ``nid``; the bytes that moved
        (pages already there stay and do not count)."""
        moved = 0
        for lo, hi in self.resident(start, end):
            self.placed, n = _on_node(self.placed, lo, hi, nid, home)
            moved += n
        return moved

    def node_bytes(self, home: int) -> dict[int, int]:
        """Resident bytes per node."""
        out: dict[int, int] = {}
        for lo, hi in self.resident(0, 2**64):
            covered = 0
            for s, e, n in self.placed:
                part = min(e, hi) - max(s, lo)
                if part > 0:
                    out[n] = out.get(n, 0) + part
                    covered += part
            if hi - lo > covered:
                out[home] = out.get(home, 0) + (hi - lo - covered)
        return out

    def status(self, pid: int) -> str:
        resident = self.mapped - self.swapped_bytes
        self.peak_rss = max(self.peak_rss, resident)
        return render_status(
            pid,
            mapped=self.mapped,
            resident=resident,
            swapped=self.swapped_bytes,
            peak_rss=self.peak_rss,
        )

    def pagemap(self, offset: int, size: int) -> bytes:
        return _pagemap(tuple((s, e) for s, e, _ in self.ranges), tuple(self.swapped), offset, size)


def parse_kernel_version(text: str) -> Version:
    """``"7.2.12+deb14-amd64"`` → ``(7, 2, 12)``; raises ValueError on anything else."""
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if m is None:
        raise ValueError(f"expected a kernel version like '7.2.12', got {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _strip_newline(data: str) -> str:
    return data[:-1] if data.endswith("\n") else data


def kstrto(data: str, bits: int) -> int:
    """``kstrto{ul,uint,int}(buf, 0, …)``: ``bits`` 64/32 unsigned, -32 for signed int.

    Raises OSError EINVAL for malformed text and ERANGE for values that do not fit.
    """
    s = _strip_newline(data)
    negative = False
    if bits < 0 and s.startswith("-"):
        negative, s = True, s[1:]
    elif s.startswith("+"):
        s = s[1:]
    if s[:2].lower() == "0x" and len(s) > 2 and s[2] in "0123456789abcdefABCDEF":
        base, digits = 16, s[2:]
    elif s.startswith("0"):
        base, digits = 8, s
    else:
        base, digits = 10, s
    valid = "0123456789abcdef"[:base]
    if not digits or any(c.lower() not in valid for c in digits):
        raise kernel_error(errno_mod.EINVAL, f"not an integer: {data!r}")
    value = int(digits, base)
    if value > _ULONG_MAX:
        raise kernel_error(errno_mod.ERANGE, f"out of range: {data!r}")
    if bits < 0:
        value = -value if negative else value
        if not -(2**31) <= value < 2**31:
            raise kernel_error(errno_mod.ERANGE, f"out of int range: {data!r}")
    elif value >= 2**bits:
        raise kernel_error(errno_mod.ERANGE, f"out of range: {data!r}")
    return value


def kstrtobool(data: str) -> bool:
    """``kstrtobool``: y/Y/1/t/T/on → True; n/N/0/f/F/off → False; else EINVAL."""
    s = data
    if s[:1] in ("y", "Y", "1", "t", "T"):
        return True
    if s[:1] in ("n", "N", "0", "f", "F"):
        return False
    if s[:1] in ("o", "O") and s[1:2] in ("n", "N"):
        return True
    if s[:1] in ("o", "O") and s[1:2] in ("f", "F"):
        return False
    raise kernel_error(errno_mod.EINVAL, f"not a boolean: {data!r}")


@dataclass(frozen=True)
class _Kind:
    """How a file takes writes: a type, and for nr_* files how to rebuild children."""

    kind: str  # ulong uint int bool keyword string nr state ro
    words: tuple[str, ...] = ()
    einval_only: bool = False
    locked: bool = False
    nr_max: int | None = None
    child: Callable[[str], None] | None = None


@dataclass
class _Kdamond:
    """The kernel-side half of a kdamond dir: its context (kept after ``off``) and pid."""

    ctx: SimContext | None = None
    pid: int = -1
    foreign: bool = False

    @property
    def running(self) -> bool:
        return self.ctx is not None and self.ctx.running


class FakeDamon:
    """The DAMON sysfs interface of a kernel version, on a FakeKernelFS (see module docs).

    ``pid_exists`` decides which pids resolve at ``on``/``commit`` (default: the pids of
    :meth:`add_process`); ``memcg_paths`` are the memcg paths that resolve (the root
    ``/`` always does); ``exclusive_users`` names DAMON modules (damon_reclaim,
    damon_stat…) that run an exclusive context, so ``on`` fails with EBUSY.
    ``memory_nodes`` are the NUMA nodes with memory (default 0 and 1, as in the lane's
    guest); every simulated page starts on the first of them, and a ``migrate_hot`` or
    ``migrate_cold`` scheme moves pages between them (:meth:`migrate`).
    """

    def __init__(
        self,
        fs: FakeKernelFS,
        *,
        kernel: str = "7.2.12",
        pid_exists: Callable[[int], bool] | None = None,
        memcg_paths: Collection[str] = (),
        avail_operations: Sequence[str] = _OPS,
        exclusive_users: Collection[str] = (),
        seed: int = 0,
        memory_nodes: Collection[int] = (0, 1),
    ) -> None:
        # FakeKernelFS keeps the flag private; the fake must not silently get UnsafeWrite.
        if not getattr(fs, "_allow_damon_writes", False):
            raise ValueError(
                "FakeDamon needs a FakeKernelFS built with allow_damon_writes=True "
                "(writes under /sys/kernel/mm/damon are refused otherwise)"
            )
        if not memory_nodes or min(memory_nodes) < 0:
            raise ValueError(
                f"memory_nodes: expected one or more node ids >= 0, got {tuple(memory_nodes)}"
            )
        self._fs = fs
        self._kernel = kernel
        self._nodes = tuple(sorted(set(memory_nodes)))
        #: spans of the simulated physical memory a paddr migration put off the first node
        self._physical_placed: list[tuple[int, int, int]] = []
        self._v = parse_kernel_version(kernel)
        self._processes: dict[int, _Process] = {}
        self._physical: list[tuple[int, int, float]] = []
        self._pid_exists = pid_exists or (lambda pid: pid in self._processes)
        self._memcgs = frozenset(memcg_paths) | {"/"}
        self._avail = tuple(o for o in avail_operations if o in _OPS)
        self._exclusive = set(exclusive_users)
        self._seed = seed
        self._kinds: dict[str, _Kind] = {}
        self._kd: list[_Kdamond] = []
        self._lock_depth = 0
        self._now_us = 0
        self._next_refresh_us = 0
        self._next_kdamond_pid = 900
        self._split_memory: dict[str, int] = {}
        self._goal_metrics: dict[tuple[str, int], int] = {}
        #: Free memory in ‰ of total RAM: the ``free_mem_rate`` watermark metric.
        self.free_memory_permil = 500
        fs.mkdir(KDAMONDS)
        self._file(KDAMONDS + "/nr_kdamonds", "0", _Kind("nr", locked=True, child=self._kdamond))
        fs.add_write_hook(DAMON_ROOT, self._on_write)
        for name, since in MODULES.items():
            if self._v[:2] >= since:
                fs.set_file(module_param(name), "Y\n" if name in self._exclusive else "N\n")
                fs.add_write_hook(module_param(name), self._on_module_write)

    # -- public API ------------------------------------------------------------------------

    @property
    def kernel(self) -> str:
        """The kernel version string this fake behaves like."""
        return self._kernel

    @property
    def version(self) -> Version:
        return self._v

    @property
    def now_us(self) -> int:
        """Simulated time since the fake was built, in µs."""
        return self._now_us

    def has(self, feature: str) -> bool:
        """Whether this kernel version has a FEATURES entry (files, keywords, behaviours)."""
        return self._v[:2] >= FEATURES[feature]

    def add_process(self, pid: int, regions: Sequence[tuple[int, int, float]]) -> None:
        """A simulated process: [start, end) ranges with an access chance per sample,
        every page of them resident at first.

        Its ``/proc/PID/maps`` lists the ranges as private anonymous mappings
        (``rw-p``). A ``pageout`` action applied by a vaddr/fvaddr scheme to a region
        of it does what the kernel's ``MADV_PAGEOUT`` does to such memory: the resident
        pages of the region's part in ranges with access chance 0 go to swap for good
        (they are never accessed again); pages in ranges with a chance above 0 are paged
        out and faulted straight back, so nothing lasting changes there. The scheme's
        ``sz_applied`` still counts the region's whole length on every apply, resident
        or not (as ``damos_madvise`` returns the whole length), but nothing for a region
        that reaches past the ranges, into a gap between them or beyond: there the
        kernel's madvise pages out the mapped parts and then fails with ENOMEM, which
        ``damos_madvise`` reports as 0 bytes applied. ``/proc/PID/pagemap``
        shows resident pages present (bit 63), swapped ones swapped (bit 62, without a
        type or offset), the rest of the address space neither; ``/proc/PID/status`` is
        the kernel's format (:data:`PROC_PID_STATUS_TEMPLATE`) with the process's pid,
        ``VmRSS`` = ``RssAnon`` = its resident bytes, ``RssFile``/``RssShmem`` 0 and
        ``VmSwap`` its swapped bytes, rewritten whenever a pageout moves pages. Adding a
        pid again starts it afresh (every page resident)."""
        for start, end, prob in regions:
            if not (0 <= start < end and 0.0 <= prob <= 1.0):
                raise ValueError(f"expected start < end and 0 <= prob <= 1, got {start, end, prob}")
        proc = _Process(sorted(regions))
        self._processes[pid] = proc
        self._fs.set_file(
            f"/proc/{pid}/maps",
            "".join(f"{s:x}-{e:x} rw-p 00000000 00:00 0 \n" for s, e, _ in proc.ranges),
        )
        self._fs.set_sparse_file(f"/proc/{pid}/pagemap", proc.pagemap)
        self._fs.set_file(f"/proc/{pid}/status", proc.status(pid))

    def swapped_bytes(self, pid: int) -> int:
        """Bytes of simulated process ``pid`` that pageouts moved to swap (0 if unknown)."""
        proc = self._processes.get(pid)
        return proc.swapped_bytes if proc is not None else 0

    def remove_process(self, pid: int) -> None:
        """The process exits (its /proc/PID files go): kdamonds whose vaddr targets all
        exited stop themselves."""
        self._processes.pop(pid, None)
        if self._fs.exists(f"/proc/{pid}"):
            self._fs.remove(f"/proc/{pid}")
        for kd in self._kd:
            if kd.ctx is not None:
                kd.ctx.poll_exit()
        self._sync_state()

    def add_physical_range(self, start: int, end: int, prob: float) -> None:
        """Physical memory in use for paddr contexts (other physical memory is free)."""
        self._physical.append((start, end, prob))
        self._physical.sort()

    def set_goal_metric(self, metric: str, value: int, *, nid: int = 0) -> None:
        """The value the kernel would measure for a quota goal metric (default 0)."""
        self._goal_metrics[(metric, nid)] = value

    def set_exclusive_user(self, name: str, running: bool) -> None:
        """Start or stop an exclusive DAMON user (DAMON_RECLAIM, DAMON_STAT…), as if by its
        module parameter but without its checks (``enabled`` follows when it exists)."""
        if running:
            self._exclusive.add(name)
        else:
            self._exclusive.discard(name)
        if self._fs.exists(module_param(name)):
            self._fs.set_file(module_param(name), "Y\n" if running else "N\n")

    def _on_module_write(self, fs: FakeKernelFS, path: str, data: str) -> None:
        """``/sys/module/damon_*/parameters/enabled``: damon_start(exclusive=true)."""
        name = path.split("/")[3]
        enable = kstrtobool(data)
        if enable == (name in self._exclusive):
            return  # the kernel returns at once when the value does not change
        if enable:
            self._sync_state()
            busy = [f"kdamond {i}" for i, kd in enumerate(self._kd) if kd.running]
            busy += sorted(self._exclusive)
            if busy:
                raise kernel_error(errno_mod.EBUSY, f"DAMON contexts running: {busy}")
        self.set_exclusive_user(name, enable)

    @contextmanager
    def hold_lock(self) -> Iterator[None]:
        """Hold damon_sysfs_lock (as a long update_schemes_tried_regions would): EBUSY."""
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass for every running kdamond."""
        if seconds < 0:
            raise ValueError(f"expected seconds >= 0, got {seconds}")
        self._run_all_until(self._now_us + round(seconds * 1_000_000))

    def kdamond_pid(self, index: int) -> int | None:
        """The pid of kdamond ``index`` while it runs, else None."""
        if 0 <= index < len(self._kd) and self._kd[index].running:
            return self._kd[index].pid
        return None

    def context(self, index: int) -> SimContext | None:
        """The kernel's context of kdamond ``index`` (running or kept after off), or None.

        For tests that check what was really committed (the selftests use drgn for this).
        """
        if 0 <= index < len(self._kd):
            return self._kd[index].ctx
        return None

    def start_foreign_kdamond(
        self,
        *,
        ops: str = "paddr",
        pid: int | None = None,
        regions: Sequence[tuple[int, int]] = ((0x100000, 0x40000000),),
        action: str = "pageout",
    ) -> int:
        """Append a running kdamond, as if another tool had set it up; returns its index.

        The new kdamond dir is added without rewriting ``nr_kdamonds`` children (the other
        tool did that before), with one context, one target and one scheme, and ``on``.
        """
        index = len(self._kd)
        base = f"{KDAMONDS}/{index}"
        self._kdamond(base)
        self._fs.set_file(KDAMONDS + "/nr_kdamonds", f"{index + 1}\n")
        self._kd[index].foreign = True
        stage = [
            (f"{base}/contexts/nr_contexts", "1"),
            (f"{base}/contexts/0/operations", ops),
            (f"{base}/contexts/0/targets/nr_targets", "1"),
            (f"{base}/contexts/0/targets/0/pid_target", str(pid if pid is not None else -1)),
            (f"{base}/contexts/0/targets/0/regions/nr_regions", str(len(regions))),
            (f"{base}/contexts/0/schemes/nr_schemes", "1"),
            (f"{base}/contexts/0/schemes/0/action", action),
        ]
        for i, (start, end) in enumerate(regions):
            stage.append((f"{base}/contexts/0/targets/0/regions/{i}/start", str(start)))
            stage.append((f"{base}/contexts/0/targets/0/regions/{i}/end", str(end)))
        stage.append((f"{base}/state", "on"))
        for path, value in stage:
            self._on_write(self._fs, path, value)
        return index

    def mode(self, path: str) -> int | None:
        """The permission bits the kernel gives ``path`` (0o600, 0o400, dirs 0o755), or None.

        The in-memory tree has no modes; this is the fake's record of what sysfs shows.
        """
        if self._fs.is_dir(path):
            return 0o755
        if not self._fs.exists(path):
            return None
        kind = self._kinds.get(path)
        return 0o400 if kind is None or kind.kind == "ro" else 0o600

    # -- Workload (for the simulated kdamonds) -------------------------------------------

    def _ranges(self, ops: str, pid: int | None) -> list[tuple[int, int, float]]:
        if ops == "paddr":
            return self._physical
        proc = self._processes.get(pid) if pid is not None else None
        return proc.ranges if proc is not None else []

    def access_probability(self, ops: str, pid: int | None, start: int, end: int) -> float:
        total = 0.0
        for s, e, p in self._ranges(ops, pid):
            overlap = min(e, end) - max(s, start)
            if overlap > 0:
                total += overlap * p
        return total / (end - start) if end > start else 0.0

    def mapped_bytes(self, ops: str, pid: int | None, start: int, end: int) -> int:
        return sum(max(min(e, end) - max(s, start), 0) for s, e, _ in self._ranges(ops, pid))

    def vmas(self, pid: int) -> list[tuple[int, int]]:
        return [(s, e) for s, e, _ in self._ranges("vaddr", pid)]

    def pageout(self, ops: str, pid: int | None, start: int, end: int) -> None:
        """A vaddr/fvaddr pageout of [start, end) in process ``pid`` (see add_process);
        paddr pages nothing out. ``/proc/PID/status`` is rewritten when pages moved."""
        if ops == "paddr" or pid is None:
            return
        proc = self._processes.get(pid)
        if proc is None or not proc.pageout(start, end):
            return
        if self._fs.exists(f"/proc/{pid}/status"):
            self._fs.set_file(f"/proc/{pid}/status", proc.status(pid))

    def migrate(self, ops: str, pid: int | None, start: int, end: int, nid: int) -> int:
        """A migration of [start, end) of target ``pid`` (the physical ranges for paddr)
        to node ``nid``: the bytes that moved. As mm/damon/ops-common.c
        ``__damon_migrate_folio_list()``: folios already on ``nid`` are put back, not
        migrated, and a node without memory takes nothing (``migrate_pages()`` finds no
        page to allocate there); paged-out pages are not present, so the page walk does
        not find them. Physical pages keep their addresses here (the kernel copies them to
        new frames on ``nid``): only the node they count for changes."""
        if nid not in self._nodes:
            return 0
        home = self._nodes[0]
        if ops == "paddr":
            moved = 0
            for s, e, _ in self._physical:
                lo, hi = max(s, start), min(e, end)
                if lo < hi:
                    self._physical_placed, n = _on_node(self._physical_placed, lo, hi, nid, home)
                    moved += n
            return moved
        proc = self._processes.get(pid) if pid is not None else None
        return 0 if proc is None else proc.migrate(start, end, nid, home)

    def node_bytes(self, pid: int) -> dict[int, int]:
        """Resident bytes of process ``pid`` on each node (nodes holding none left out)."""
        proc = self._processes.get(pid)
        return {} if proc is None else proc.node_bytes(self._nodes[0])

    def pid_alive(self, pid: int) -> bool:
        return self._pid_exists(pid)

    def goal_metric(self, metric: str, nid: int, path: str) -> int:
        return self._goal_metrics.get((metric, nid), 0)

    def free_mem_permil(self) -> int:
        return self.free_memory_permil

    # -- building the tree -----------------------------------------------------------------

    def _file(self, path: str, default: str, kind: _Kind) -> None:
        self._fs.set_file(path, default + "\n")
        self._kinds[path] = kind

    def _ro(self, path: str, default: str = "0") -> None:
        self._file(path, default, _Kind("ro"))

    def _kw(self, path: str, default: str, words: Sequence[str]) -> None:
        self._file(path, default, _Kind("keyword", tuple(words)))

    def _num(self, path: str, bits: int, default: int = 0, *, einval: bool = False) -> None:
        kind = {_ULONG: "ulong", _UINT: "uint", _INT: "int"}[bits]
        self._file(path, str(default), _Kind(kind, einval_only=einval))

    def _bool(self, path: str) -> None:
        self._file(path, "N", _Kind("bool"))

    def _nr(self, path: str, child: Callable[[str], None], nr_max: int | None = None) -> None:
        self._file(path, "0", _Kind("nr", locked=True, nr_max=nr_max, child=child))

    def _kdamond(self, base: str) -> None:
        index = int(base.rsplit("/", 1)[1])
        while len(self._kd) <= index:
            self._kd.append(_Kdamond())
        self._kd[index] = _Kdamond()
        self._file(base + "/state", "off", _Kind("state", locked=True))
        self._ro(base + "/pid", "-1")
        if self.has("refresh_ms"):
            self._num(base + "/refresh_ms", _UINT)
        self._nr(base + "/contexts/nr_contexts", self._context, nr_max=1)

    def _context(self, base: str) -> None:
        if self.has("avail_operations"):
            self._ro(base + "/avail_operations", "\n".join(self._avail))
        ops = [o for o in _OPS if o != "fvaddr" or self._v[:2] >= (5, 19)]
        self._kw(base + "/operations", "vaddr", ops)
        if self.has("addr_unit"):
            self._file(base + "/addr_unit", "1", _Kind("ulong"))
        if self.has("pause"):
            self._bool(base + "/pause")
        attrs = base + "/monitoring_attrs"
        for name, default in (("sample_us", 5000), ("aggr_us", 100_000), ("update_us", 60_000_000)):
            self._num(f"{attrs}/intervals/{name}", _ULONG, default)
        if self.has("intervals_goal"):
            for name in ("access_bp", "aggrs", "min_sample_us", "max_sample_us"):
                self._num(f"{attrs}/intervals/intervals_goal/{name}", _ULONG)
        # the ul_range files return kstrtoul's own error (ERANGE on overflow; seen on 7.2.12)
        self._num(attrs + "/nr_regions/min", _ULONG, 10)
        self._num(attrs + "/nr_regions/max", _ULONG, 1000)
        if self.has("probes"):
            self._nr(attrs + "/probes/nr_probes", self._probe, nr_max=MAX_PROBES)
        self._nr(base + "/targets/nr_targets", self._target)
        self._nr(base + "/schemes/nr_schemes", self._scheme)

    def _probe(self, base: str) -> None:
        self._nr(base + "/filters/nr_filters", self._probe_filter)

    def _probe_filter(self, base: str) -> None:
        self._kw(base + "/type", "anon", ("anon", "memcg"))
        self._bool(base + "/matching")
        self._bool(base + "/allow")
        self._file(base + "/path", "", _Kind("string", locked=True))

    def _target(self, base: str) -> None:
        self._num(base + "/pid_target", _INT, einval=True)
        if self.has("obsolete_target"):
            self._bool(base + "/obsolete_target")
        self._nr(base + "/regions/nr_regions", self._region)

    def _region(self, base: str) -> None:
        self._num(base + "/start", _ULONG)
        self._num(base + "/end", _ULONG)

    def _scheme(self, base: str) -> None:
        self._kw(base + "/action", "stat", [a for a, v in ACTIONS.items() if self._v[:2] >= v])
        if self.has("target_nid"):
            self._num(base + "/target_nid", _INT, -1)
        if self.has("apply_interval_us"):
            self._num(base + "/apply_interval_us", _ULONG)
        for name in ("sz", "nr_accesses", "age"):
            self._num(f"{base}/access_pattern/{name}/min", _ULONG)
            self._num(f"{base}/access_pattern/{name}/max", _ULONG)
        self._quotas(base + "/quotas")
        wm = base + "/watermarks"
        self._kw(wm + "/metric", "none", ("none", "free_mem_rate"))
        for name in ("interval_us", "high", "mid", "low"):
            self._num(f"{wm}/{name}", _ULONG)
        if self.has("filters"):
            self._nr(base + "/filters/nr_filters", self._filter_for("both"))
        if self.has("core_ops_filters"):
            self._nr(base + "/core_filters/nr_filters", self._filter_for("core"))
            self._nr(base + "/ops_filters/nr_filters", self._filter_for("ops"))
        if self.has("dests"):
            self._nr(base + "/dests/nr_dests", self._dest)
        self._stats(base + "/stats")
        if self.has("tried_regions"):
            self._fs.mkdir(base + "/tried_regions")
            if self.has("total_bytes"):
                self._ro(base + "/tried_regions/total_bytes")

    def _quotas(self, q: str) -> None:
        for name in ("ms", "bytes", "reset_interval_ms"):
            self._num(f"{q}/{name}", _ULONG, einval=True)
        if self.has("effective_bytes"):
            self._ro(q + "/effective_bytes")
        if self.has("goal_tuner"):
            self._kw(q + "/goal_tuner", "consist", ("consist", "temporal"))
        if self.has("fail_charge"):
            self._num(q + "/fail_charge_num", _UINT, einval=True)
            self._num(q + "/fail_charge_denom", _UINT, einval=True)
        for name in ("sz_permil", "nr_accesses_permil", "age_permil"):
            self._num(f"{q}/weights/{name}", _UINT)
        if self.has("quota_goals"):
            self._nr(q + "/goals/nr_goals", self._goal)

    def _goal(self, base: str) -> None:
        if self.has("target_metric"):
            metrics = [m for m, v in GOAL_METRICS.items() if self._v[:2] >= v]
            self._kw(base + "/target_metric", "user_input", metrics)
        self._num(base + "/target_value", _ULONG)
        self._num(base + "/current_value", _ULONG)
        if self.has("goal_nid"):
            self._num(base + "/nid", _INT)
        if self.has("goal_path"):
            self._file(base + "/path", "", _Kind("string", locked=True))

    def _filter_for(self, layer: str) -> Callable[[str], None]:
        def make(base: str) -> None:
            types = [
                name
                for name, (since, where) in FILTER_TYPES.items()
                if self._v[:2] >= since and layer in ("both", where)
            ]
            # The default reads "anon" in every dir, even where it cannot be written.
            self._kw(base + "/type", "anon", types)
            self._bool(base + "/matching")
            if self.has("filter_allow"):
                self._bool(base + "/allow")
            self._file(base + "/memcg_path", "", _Kind("string", locked=True))
            if self.has("filter_addr_target"):
                self._num(base + "/addr_start", _ULONG)
                self._num(base + "/addr_end", _ULONG)
                self._num(base + "/damon_target_idx", _INT)
            if self.has("filter_min_max"):
                self._num(base + "/min", _ULONG)
                self._num(base + "/max", _ULONG)

        return make

    def _dest(self, base: str) -> None:
        self._num(base + "/id", _UINT)
        self._num(base + "/weight", _UINT)

    def _stats(self, base: str) -> None:
        names = ["nr_tried", "sz_tried", "nr_applied", "sz_applied", "qt_exceeds"]
        if self.has("sz_ops_filter_passed"):
            names.append("sz_ops_filter_passed")
        if self.has("nr_snapshots"):
            names.append("nr_snapshots")
            self._num(base + "/max_nr_snapshots", _ULONG)
        for name in names:
            self._ro(f"{base}/{name}")

    # -- writes ------------------------------------------------------------------------------

    def _on_write(self, fs: FakeKernelFS, path: str, data: str) -> None:
        """The write hook for everything under /sys/kernel/mm/damon."""
        try:
            self._write(path, data)
        finally:
            self._sync_state()

    def _write(self, path: str, data: str) -> None:
        if self._fs.is_dir(path):
            raise kernel_error(errno_mod.EISDIR, path)
        if not self._fs.exists(path):
            raise kernel_error(errno_mod.ENOENT, path)
        kind = self._kinds.get(path)
        if kind is None or kind.kind == "ro":
            raise kernel_error(errno_mod.EACCES, f"{path} is read-only")
        if data == "":
            return  # sysfs_kf_write: a write of 0 bytes never reaches the store
        if kind.kind == "nr":
            self._write_nr(path, data, kind)
        elif kind.kind == "state":
            self._write_state(path, data)
        elif kind.kind == "string":
            self._check_lock()
            self._fs.set_file(path, data + "\n")
        else:
            self._fs.set_file(path, self._parse(path, data, kind) + "\n")

    def _parse(self, path: str, data: str, kind: _Kind) -> str:
        """The canonical text a store leaves behind (what a later read returns)."""
        if kind.kind == "bool":
            return "Y" if kstrtobool(data) else "N"
        if kind.kind == "keyword":
            word = _strip_newline(data)
            if word not in kind.words:
                raise kernel_error(errno_mod.EINVAL, f"unknown keyword {data!r}")
            return word
        bits = {"ulong": _ULONG, "uint": _UINT, "int": _INT}[kind.kind]
        try:
            value = kstrto(data, bits)
        except OSError as exc:
            if kind.einval_only:
                raise kernel_error(errno_mod.EINVAL, str(exc)) from exc
            raise
        if path.endswith("/addr_unit") and value == 0:
            raise kernel_error(errno_mod.EINVAL, "addr_unit must not be 0")
        return str(value)

    def _check_lock(self) -> None:
        if self._lock_depth:
            raise kernel_error(errno_mod.EBUSY, "damon_sysfs_lock is held")

    def _write_nr(self, path: str, data: str, kind: _Kind) -> None:
        nr = kstrto(data, _INT)
        if nr < 0 or (kind.nr_max is not None and nr > kind.nr_max):
            raise kernel_error(errno_mod.EINVAL, f"{path}: {nr} out of range")
        self._check_lock()
        parent = path.rsplit("/", 1)[0]
        if path == KDAMONDS + "/nr_kdamonds":
            if any(kd.running for kd in self._kd):
                raise kernel_error(errno_mod.EBUSY, "a kdamond is running")
            self._kd = []
        for name in self._fs.listdir(parent):
            if name.isdigit():
                self._remove(f"{parent}/{name}")
        assert kind.child is not None
        for i in range(nr):
            kind.child(f"{parent}/{i}")
        self._fs.set_file(path, f"{nr}\n")

    def _remove(self, path: str) -> None:
        self._fs.remove(path)
        prefix = path + "/"
        for key in [k for k in self._kinds if k.startswith(prefix)]:
            del self._kinds[key]

    # -- state commands ----------------------------------------------------------------------

    def _write_state(self, path: str, data: str) -> None:
        self._check_lock()
        word = _strip_newline(data)
        since = STATE_COMMANDS.get(word)
        if since is None or self._v[:2] < since:
            raise kernel_error(errno_mod.EINVAL, f"unknown state command {data!r}")
        base = path.rsplit("/", 1)[0]
        kd = self._kd[int(base.rsplit("/", 1)[1])]
        if word != "off" and self._text(base + "/contexts/nr_contexts") != "1":
            raise kernel_error(errno_mod.EINVAL, "contexts/nr_contexts is not 1")
        handler = getattr(self, "_cmd_" + word)
        handler(base, kd)

    def _cmd_on(self, base: str, kd: _Kdamond) -> None:
        if kd.running:
            raise kernel_error(errno_mod.EBUSY, "already running")
        kd.ctx = None  # the previous run's results are freed first, even if on fails
        params = self._build(base + "/contexts/0")
        check_ctx_inputs(params)
        if self._exclusive:
            raise kernel_error(errno_mod.EBUSY, f"exclusive DAMON user: {sorted(self._exclusive)}")
        index = self._kd.index(kd)
        kd.ctx = SimContext(
            params,
            self,
            now_us=self._now_us,
            seed=self._seed * 1000 + index,
            on_call=lambda ctx: self._refresh(index, ctx),
            split_memory=self._split_memory,
        )
        kd.pid = self._next_kdamond_pid
        self._next_kdamond_pid += 1
        if self.has("refresh_ms"):
            self._next_refresh_us = self._now_us + int(self._text(base + "/refresh_ms")) * 1000

    def _cmd_off(self, base: str, kd: _Kdamond) -> None:
        if kd.ctx is None:
            raise kernel_error(errno_mod.EINVAL, "never started")
        if not kd.ctx.running:
            # EPERM through 7.2.12 (seen in the lane); the reference expected success on
            # the newest kernels, which no released kernel has shown yet.
            raise kernel_error(errno_mod.EPERM, "already stopped")
        kd.ctx.stop()

    def _running_ctx(self, kd: _Kdamond) -> SimContext:
        if kd.ctx is None:
            raise kernel_error(errno_mod.EINVAL, "no context (never started)")
        if not kd.ctx.running:
            err = errno_mod.ECANCELED if self.has("call_ecanceled") else errno_mod.EINVAL
            raise kernel_error(err, "kdamond is not running")
        return kd.ctx

    def _cmd_commit(self, base: str, kd: _Kdamond) -> None:
        ctx = self._running_ctx(kd)
        params = self._build(base + "/contexts/0")
        ctx.commit(params, stop_on_failure=self.has("commit_stops_on_failure"))

    def _cmd_commit_schemes_quota_goals(self, base: str, kd: _Kdamond) -> None:
        ctx = self._running_ctx(kd)
        schemes = base + "/contexts/0/schemes"
        nr = int(self._text(schemes + "/nr_schemes"))
        goals = []
        for i in range(min(nr, len(ctx.schemes))):
            try:
                goals.append(self._goals(f"{schemes}/{i}/quotas/goals"))
            except OSError as exc:
                raise kernel_error(errno_mod.EINVAL, str(exc)) from exc
        ctx.commit_goals(goals)

    def _cmd_update_schemes_stats(self, base: str, kd: _Kdamond) -> None:
        self._copy_stats(base, self._running_ctx(kd))

    def _cmd_update_schemes_effective_quotas(self, base: str, kd: _Kdamond) -> None:
        self._copy_effective_quotas(base, self._running_ctx(kd))

    def _cmd_update_tuned_intervals(self, base: str, kd: _Kdamond) -> None:
        self._copy_tuned_intervals(base, self._running_ctx(kd))

    def _cmd_clear_schemes_tried_regions(self, base: str, kd: _Kdamond) -> None:
        self._clear_tried(base)

    def _cmd_update_schemes_tried_bytes(self, base: str, kd: _Kdamond) -> None:
        self._update_tried(base, kd, total_bytes_only=True)

    def _cmd_update_schemes_tried_regions(self, base: str, kd: _Kdamond) -> None:
        self._update_tried(base, kd, total_bytes_only=False)

    def _update_tried(self, base: str, kd: _Kdamond, *, total_bytes_only: bool) -> None:
        if kd.ctx is None:
            raise kernel_error(errno_mod.EINVAL, "no context (never started)")
        self._clear_tried(base)
        ctx = kd.ctx
        if not ctx.running and not self.has("call_ecanceled"):
            raise kernel_error(errno_mod.EINVAL, "kdamond is not running")
        ctx.start_walk(total_bytes_only=total_bytes_only)
        # The kernel blocks until every scheme passed one apply interval; simulated time
        # passes for every kdamond meanwhile.
        longest = max([s.params.apply_interval_us or ctx.attrs.aggr_us for s in ctx.schemes] or [0])
        results = ctx.finish_walk(max_us=10 * longest + 60_000_000)
        self._run_all_until(max(ctx.now_us, self._now_us))
        schemes = base + "/contexts/0/schemes"
        nr = int(self._text(schemes + "/nr_schemes"))
        counters = [0] * nr
        for tr in results:
            if tr.scheme >= nr:
                continue
            tried = f"{schemes}/{tr.scheme}/tried_regions"
            if self.has("total_bytes"):
                total = int(self._text(tried + "/total_bytes")) + (tr.end - tr.start)
                self._fs.set_file(tried + "/total_bytes", f"{total}\n")
            if total_bytes_only:
                continue
            rdir = f"{tried}/{counters[tr.scheme]}"
            counters[tr.scheme] += 1
            for name, value in (
                ("start", tr.start),
                ("end", tr.end),
                ("nr_accesses", tr.nr_accesses),
                ("age", tr.age),
            ):
                self._ro(f"{rdir}/{name}", str(value))
            if self.has("sz_filter_passed"):
                self._ro(rdir + "/sz_filter_passed", str(tr.sz_filter_passed))
            if self.has("probes"):
                self._fs.mkdir(rdir + "/probes")

    def _clear_tried(self, base: str) -> None:
        schemes = base + "/contexts/0/schemes"
        for i in range(int(self._text(schemes + "/nr_schemes"))):
            tried = f"{schemes}/{i}/tried_regions"
            if not self._fs.is_dir(tried):
                continue
            for name in self._fs.listdir(tried):
                if name.isdigit():
                    self._remove(f"{tried}/{name}")
            if self._fs.exists(tried + "/total_bytes"):
                self._fs.set_file(tried + "/total_bytes", "0\n")

    # -- output files ------------------------------------------------------------------------

    def _scheme_dirs(self, base: str, ctx: SimContext) -> Iterator[tuple[str, int]]:
        schemes = base + "/contexts/0/schemes"
        nr = int(self._text(schemes + "/nr_schemes"))
        for i in range(min(nr, len(ctx.schemes))):
            yield f"{schemes}/{i}", i

    def _copy_stats(self, base: str, ctx: SimContext) -> None:
        for sdir, i in self._scheme_dirs(base, ctx):
            st = ctx.schemes[i].stats
            values = {
                "nr_tried": st.nr_tried,
                "sz_tried": st.sz_tried,
                "nr_applied": st.nr_applied,
                "sz_applied": st.sz_applied,
                "sz_ops_filter_passed": st.sz_ops_filter_passed,
                "qt_exceeds": st.qt_exceeds,
                "nr_snapshots": st.nr_snapshots,
            }
            for name, value in values.items():
                if self._fs.exists(f"{sdir}/stats/{name}"):
                    self._fs.set_file(f"{sdir}/stats/{name}", f"{value}\n")

    def _copy_effective_quotas(self, base: str, ctx: SimContext) -> None:
        for sdir, i in self._scheme_dirs(base, ctx):
            if self._fs.exists(sdir + "/quotas/effective_bytes"):
                self._fs.set_file(sdir + "/quotas/effective_bytes", f"{ctx.schemes[i].esz}\n")

    def _copy_tuned_intervals(self, base: str, ctx: SimContext) -> None:
        intervals = base + "/contexts/0/monitoring_attrs/intervals"
        if not self._fs.is_dir(intervals):
            return
        self._fs.set_file(intervals + "/sample_us", f"{ctx.attrs.sample_us}\n")
        self._fs.set_file(intervals + "/aggr_us", f"{ctx.attrs.aggr_us}\n")

    def _refresh(self, index: int, ctx: SimContext) -> None:
        """damon_sysfs_repeat_call_fn(): refresh_ms copies outputs without commands."""
        if index >= len(self._kd) or self._kd[index].ctx is not ctx:
            return
        base = f"{KDAMONDS}/{index}"
        if not self._fs.exists(base + "/refresh_ms"):
            return
        refresh_ms = int(self._text(base + "/refresh_ms"))
        if not refresh_ms or ctx.now_us < self._next_refresh_us:
            return
        self._next_refresh_us = ctx.now_us + refresh_ms * 1000
        if self._lock_depth or self._text(base + "/contexts/nr_contexts") != "1":
            return
        self._copy_tuned_intervals(base, ctx)
        self._copy_stats(base, ctx)
        self._copy_effective_quotas(base, ctx)

    # -- building a context (§3.3) -------------------------------------------------------------

    def _text(self, path: str) -> str:
        return self._fs.file_text(path).strip()

    def _int(self, path: str, default: int = 0) -> int:
        return int(self._text(path)) if self._fs.exists(path) else default

    def _flag(self, path: str) -> bool:
        return self._fs.exists(path) and self._text(path) == "Y"

    def _raw(self, path: str) -> str:
        """A string attribute's stored value (the written bytes, without the read's \\n)."""
        return self._fs.file_text(path)[:-1] if self._fs.exists(path) else ""

    def _build(self, ctx: str) -> CtxParams:
        """Build a context from the staged files, in the kernel's validation order."""
        ops = self._text(ctx + "/operations")
        if ops not in self._avail:
            raise kernel_error(errno_mod.EINVAL, f"operations {ops!r} is not registered")
        addr_unit = self._int(ctx + "/addr_unit", 1)
        intervals = ctx + "/monitoring_attrs/intervals"
        goal = intervals + "/intervals_goal"
        attrs = Attrs(
            sample_us=self._int(intervals + "/sample_us"),
            aggr_us=self._int(intervals + "/aggr_us"),
            update_us=self._int(intervals + "/update_us"),
            min_nr_regions=self._int(ctx + "/monitoring_attrs/nr_regions/min"),
            max_nr_regions=self._int(ctx + "/monitoring_attrs/nr_regions/max"),
            access_bp=self._int(goal + "/access_bp"),
            aggrs=self._int(goal + "/aggrs"),
            min_sample_us=self._int(goal + "/min_sample_us"),
            max_sample_us=self._int(goal + "/max_sample_us"),
        )
        attrs.check(min_regions_floor=3 if self.has("min_nr_regions_3") else 1)
        self._check_probes(ctx + "/monitoring_attrs/probes")
        targets = self._targets(ctx + "/targets", ops)
        schemes = []
        for i in range(self._int(ctx + "/schemes/nr_schemes")):
            try:
                schemes.append(self._scheme_params(f"{ctx}/schemes/{i}"))
            except OSError as exc:
                # damon_sysfs_add_schemes() reports any failed scheme as ENOMEM.
                raise kernel_error(errno_mod.ENOMEM, f"scheme {i}: {exc}") from exc
        return CtxParams(
            ops=ops,
            attrs=attrs,
            targets=tuple(targets),
            schemes=tuple(schemes),
            addr_unit=addr_unit,
            pause=self._flag(ctx + "/pause"),
        )

    def _check_probes(self, probes: str) -> None:
        for p in range(self._int(probes + "/nr_probes")):
            filters = f"{probes}/{p}/filters"
            for f in range(self._int(filters + "/nr_filters")):
                fdir = f"{filters}/{f}"
                if self._text(fdir + "/type") == "memcg" and not self._memcg_ok(fdir + "/path"):
                    raise kernel_error(errno_mod.EINVAL, f"{fdir}/path does not resolve")

    def _memcg_ok(self, path_file: str) -> bool:
        return self._raw(path_file) in self._memcgs

    def _targets(self, targets: str, ops: str) -> list[TargetParams]:
        nr = self._int(targets + "/nr_targets")
        if ops == "paddr" and nr > 1:
            raise kernel_error(errno_mod.EINVAL, "paddr takes at most one target")
        out = []
        for i in range(nr):
            tdir = f"{targets}/{i}"
            pid: int | None = None
            if ops != "paddr":
                pid = self._int(tdir + "/pid_target")
                if pid <= 0 or not self._pid_exists(pid):
                    raise kernel_error(errno_mod.EINVAL, f"{tdir}: no process {pid}")
            regions: list[tuple[int, int]] = []
            for r in range(self._int(tdir + "/regions/nr_regions")):
                rdir = f"{tdir}/regions/{r}"
                start, end = self._int(rdir + "/start"), self._int(rdir + "/end")
                if regions and regions[-1][1] > start:
                    raise kernel_error(errno_mod.EINVAL, f"{rdir}: regions overlap or unsorted")
                regions.append((start, end))
            obsolete = self._flag(tdir + "/obsolete_target")
            out.append(TargetParams(pid=pid, regions=tuple(regions), obsolete=obsolete))
        return out

    def _goals(self, goals: str) -> tuple[GoalParams, ...]:
        out = []
        for g in range(self._int(goals + "/nr_goals")):
            gdir = f"{goals}/{g}"
            target = self._int(gdir + "/target_value")
            if not target:  # newest kernels skip goals without a target
                continue
            metric = (
                self._text(gdir + "/target_metric")
                if self._fs.exists(gdir + "/target_metric")
                else "user_input"
            )
            if metric in ("node_memcg_used_bp", "node_memcg_free_bp") and not self._memcg_ok(
                gdir + "/path"
            ):
                raise kernel_error(errno_mod.EINVAL, f"{gdir}/path does not resolve")
            out.append(
                GoalParams(
                    metric=metric,
                    target_value=target,
                    current_value=self._int(gdir + "/current_value"),
                    nid=self._int(gdir + "/nid"),
                    path=self._raw(gdir + "/path"),
                )
            )
        return tuple(out)

    def _filters(self, fdir: str) -> list[FilterParams]:
        out = []
        for f in range(self._int(fdir + "/nr_filters")):
            d = f"{fdir}/{f}"
            ftype = self._text(d + "/type")
            if ftype == "memcg" and not self._memcg_ok(d + "/memcg_path"):
                raise kernel_error(errno_mod.EINVAL, f"{d}/memcg_path does not resolve")
            out.append(
                FilterParams(
                    type=ftype,
                    matching=self._flag(d + "/matching"),
                    allow=self._flag(d + "/allow"),
                    memcg_path=self._raw(d + "/memcg_path"),
                    addr_start=self._int(d + "/addr_start"),
                    addr_end=self._int(d + "/addr_end"),
                    target_idx=self._int(d + "/damon_target_idx"),
                    min=self._int(d + "/min"),
                    max=self._int(d + "/max"),
                )
            )
        return out

    def _scheme_params(self, s: str) -> SchemeParams:
        q = s + "/quotas"
        goals = self._goals(q + "/goals") if self._fs.is_dir(q + "/goals") else ()
        quota = QuotaParams(
            ms=self._int(q + "/ms"),
            sz=self._int(q + "/bytes"),
            reset_interval_ms=self._int(q + "/reset_interval_ms"),
            weight_sz=self._int(q + "/weights/sz_permil"),
            weight_nr_accesses=self._int(q + "/weights/nr_accesses_permil"),
            weight_age=self._int(q + "/weights/age_permil"),
            goals=goals,
            goal_tuner=self._text(q + "/goal_tuner") if self.has("goal_tuner") else "consist",
            fail_charge_num=self._int(q + "/fail_charge_num"),
            fail_charge_denom=self._int(q + "/fail_charge_denom"),
        )
        wm = s + "/watermarks"
        filters: list[FilterParams] = []
        for name in ("core_filters", "ops_filters", "filters"):
            if self._fs.is_dir(f"{s}/{name}"):
                filters += self._filters(f"{s}/{name}")
        core = tuple(f for f in filters if f.type in ("addr", "target"))
        ops = tuple(f for f in filters if f.type not in ("addr", "target"))
        dests = tuple(
            (self._int(f"{s}/dests/{d}/id"), self._int(f"{s}/dests/{d}/weight"))
            for d in range(self._int(s + "/dests/nr_dests"))
        )
        ap = s + "/access_pattern"
        return SchemeParams(
            action=self._text(s + "/action"),
            min_sz=self._int(ap + "/sz/min"),
            max_sz=self._int(ap + "/sz/max"),
            min_nr_accesses=self._int(ap + "/nr_accesses/min") & 0xFFFFFFFF,
            max_nr_accesses=self._int(ap + "/nr_accesses/max") & 0xFFFFFFFF,
            min_age=self._int(ap + "/age/min") & 0xFFFFFFFF,
            max_age=self._int(ap + "/age/max") & 0xFFFFFFFF,
            apply_interval_us=self._int(s + "/apply_interval_us"),
            quota=quota,
            wmarks=WatermarkParams(
                metric=self._text(wm + "/metric"),
                interval_us=self._int(wm + "/interval_us"),
                high=self._int(wm + "/high"),
                mid=self._int(wm + "/mid"),
                low=self._int(wm + "/low"),
            ),
            target_nid=self._int(s + "/target_nid", -1),
            dests=dests,
            core_filters=core,
            ops_filters=ops,
            max_nr_snapshots=self._int(s + "/stats/max_nr_snapshots"),
        )

    # -- time and state files ----------------------------------------------------------------

    def _run_all_until(self, t_us: int) -> None:
        for kd in self._kd:
            if kd.ctx is not None and kd.ctx.running:
                kd.ctx.run_until(t_us)
        self._now_us = max(self._now_us, t_us)
        self._sync_state()

    def _sync_state(self) -> None:
        """Keep each kdamond's ``state`` and ``pid`` files equal to what a read returns."""
        for i, kd in enumerate(self._kd):
            base = f"{KDAMONDS}/{i}"
            if not self._fs.exists(base + "/state"):
                continue
            state, pid = ("on", kd.pid) if kd.running else ("off", -1)
            if self._fs.file_text(base + "/state") != state + "\n":
                self._fs.set_file(base + "/state", state + "\n")
            if self._fs.file_text(base + "/pid") != f"{pid}\n":
                self._fs.set_file(base + "/pid", f"{pid}\n")


def _pagemap(
    ranges: tuple[tuple[int, int], ...],
    swapped: tuple[tuple[int, int], ...],
    offset: int,
    size: int,
) -> bytes:
    """``size`` bytes of a pagemap at ``offset``: 8 bytes a page, bit 63 (present) set for
    the pages of ``ranges``, then bit 62 (swapped) alone for those of ``swapped``; a read
    past the 47-bit user address space ends short."""
    first = offset // 8
    end = min((offset + size) // 8, (1 << 47) // PAGE_SIZE)
    entries = bytearray(max(0, end - first) * 8)
    for spans, bit in ((ranges, 63), (swapped, 62)):
        entry = (1 << bit).to_bytes(8, "little")
        for start, stop in spans:
            lo, hi = max(first, start // PAGE_SIZE), min(end, -(-stop // PAGE_SIZE))
            if lo < hi:
                entries[(lo - first) * 8 : (hi - first) * 8] = entry * (hi - lo)
    return bytes(entries)
