"""``state`` commands, and every DAMON sysfs errno translated into a sentence.

A failed write to DAMON's sysfs raises :class:`DamonSysfsError`: a
:class:`~reactor.errors.KernelInterfaceError` whose message names the path, the value
written and the errno, plus a sentence that says what the errno means *there* and what
would be accepted. The same errno means different things on different files (EBUSY on
``on`` is an exclusive DAMON user or a running kdamond; on ``nr_kdamonds`` a running
kdamond; elsewhere a contended lock), so the sentence is chosen by file and, for
``state``, by command, reading the tree (never writing) to name the cause:
reference/damon-sysfs.md §1, §3.2–§3.4.

EBUSY from a contended ``damon_sysfs_lock`` is transient: :func:`send_state` retries it
with a short backoff, and so does the async driver.
"""

from __future__ import annotations

import errno as E
import time
from collections.abc import Callable, Iterator
from typing import Final, Literal, get_args

from reactor.config.damon import DAMOS_ACTIONS
from reactor.damon import paths
from reactor.errors import KernelInterfaceError
from reactor.kernelfs import KernelFS

__all__ = (
    "ACCEPTED_KEYWORDS",
    "EXCLUSIVE_MODULES",
    "NEEDS_RUNNING",
    "DamonSysfsError",
    "KdamondNotRunning",
    "StateCommand",
    "diagnose_staged",
    "exclusive_users",
    "explain",
    "send_state",
    "translate",
)

StateCommand = Literal[
    "on",
    "off",
    "commit",
    "commit_schemes_quota_goals",
    "update_schemes_stats",
    "update_schemes_tried_bytes",
    "update_schemes_tried_regions",
    "clear_schemes_tried_regions",
    "update_schemes_effective_quotas",
    "update_tuned_intervals",
]
_COMMANDS: Final = get_args(StateCommand)

#: Commands the kernel refuses unless the kdamond runs (EINVAL, or ECANCELED on kernels
#: with the 2026 fix; both mean "not running").
NEEDS_RUNNING: Final = frozenset(_COMMANDS) - {"on", "off", "clear_schemes_tried_regions"}

#: In-kernel DAMON users that run exclusively: while one runs, ``on`` fails with EBUSY.
#: Module name → the parameter file that enables it.
EXCLUSIVE_MODULES: Final = {
    "DAMON_RECLAIM": "/sys/module/damon_reclaim/parameters/enabled",
    "DAMON_LRU_SORT": "/sys/module/damon_lru_sort/parameters/enabled",
    "DAMON_STAT": "/sys/module/damon_stat/parameters/enabled",
}

_FILTER_TYPES = ("anon", "memcg", "young", "hugepage_size", "unmapped", "active", "addr", "target")
_METRICS = (
    "user_input",
    "some_mem_psi_us",
    "node_mem_used_bp",
    "node_mem_free_bp",
    "node_memcg_used_bp",
    "node_memcg_free_bp",
    "active_mem_bp",
    "inactive_mem_bp",
    "node_eligible_mem_bp",
)

#: Keyword files and the words each accepts (unknown word → EINVAL).
ACCEPTED_KEYWORDS: Final[dict[str, tuple[str, ...]]] = {
    "state": _COMMANDS,
    "operations": ("vaddr", "fvaddr", "paddr"),
    "action": DAMOS_ACTIONS,
    "type": _FILTER_TYPES,
    "target_metric": _METRICS,
    "metric": ("none", "free_mem_rate"),
    "goal_tuner": ("consist", "temporal"),
}
_BOOLEANS = frozenset({"matching", "allow", "obsolete_target", "pause"})


class DamonSysfsError(KernelInterfaceError):
    """A write to DAMON's sysfs failed; ``sentence`` says why, in words.

    Carries ``path``, ``value`` and ``errno`` (from KernelInterfaceError), and the
    ``command`` and ``kdamond`` index when the path was a ``state`` file.
    """

    def __init__(
        self,
        path: str,
        sentence: str,
        *,
        errno: int | None,
        value: str | None,
        command: str | None = None,
        kdamond: int | None = None,
    ) -> None:
        super().__init__(path, sentence, errno=errno, value=value)
        self.sentence = sentence
        self.command = command
        self.kdamond = kdamond


class KdamondNotRunning(DamonSysfsError):
    """A command that needs a running kdamond found it stopped (it may have exited)."""


def _read(fs: KernelFS, path: str) -> str | None:
    try:
        return fs.read_text(path).strip()
    except KernelInterfaceError:
        return None


def _kdamond_of(path: str) -> int | None:
    rest = path.removeprefix(paths.KDAMONDS + "/")
    head = rest.split("/", 1)[0]
    return int(head) if head.isdigit() and rest != path else None


def exclusive_users(fs: KernelFS) -> list[str]:
    """The exclusive in-kernel DAMON users that are enabled, as ``NAME (param = Y)``."""
    out = []
    for name, param in EXCLUSIVE_MODULES.items():
        value = _read(fs, param)
        if value is not None and value[:1] in ("Y", "y", "1"):
            out.append(f"{name} ({param} = {value})")
    return out


# --- diagnosing a staged context that `on`/`commit` refused -------------------------------


def _ints(fs: KernelFS, *files: str) -> list[int | None]:
    out: list[int | None] = []
    for f in files:
        text = _read(fs, f)
        out.append(int(text) if text is not None and text.lstrip("-").isdigit() else None)
    return out


def _diagnose_attrs(fs: KernelFS, k: int) -> Iterator[str]:
    iv = paths.attrs_dir(k) + "/intervals"
    sample, aggr = _ints(fs, iv + "/sample_us", iv + "/aggr_us")
    if sample is not None and aggr is not None and sample > aggr:
        yield f"{iv}/sample_us ({sample}) must be <= aggr_us ({aggr})"
    goal = iv + "/intervals_goal"
    aggrs, lo, hi = _ints(fs, goal + "/aggrs", goal + "/min_sample_us", goal + "/max_sample_us")
    if (
        aggrs
        and lo is not None
        and hi is not None
        and sample is not None
        and not lo <= sample <= hi
    ):
        yield (
            f"with {goal}/aggrs = {aggrs}, need min_sample_us <= sample_us <= "
            f"max_sample_us, got {lo} <= {sample} <= {hi}"
        )
    nr = paths.attrs_dir(k) + "/nr_regions"
    lo, hi = _ints(fs, nr + "/min", nr + "/max")
    if lo is not None and lo < 3:
        yield f"{nr}/min is {lo}; the kernel needs at least 3"
    if lo is not None and hi is not None and lo > hi:
        yield f"{nr}/min ({lo}) must be <= max ({hi})"


def _diagnose_targets(fs: KernelFS, k: int, ops: str | None) -> Iterator[str]:
    targets = paths.numbered(fs, paths.context_dir(k) + "/targets")
    if ops == "paddr" and len(targets) > 1:
        yield f"a paddr context takes one target, {paths.context_dir(k)}/targets has {len(targets)}"
    for t in targets:
        base = paths.target_dir(k, t)
        if ops in ("vaddr", "fvaddr"):
            (pid,) = _ints(fs, base + "/pid_target")
            if pid is None or pid <= 0 or not fs.exists(f"/proc/{pid}"):
                yield f"{base}/pid_target is {pid}: no such process (it may have exited)"
        bounds = [
            _ints(fs, f"{base}/regions/{r}/start", f"{base}/regions/{r}/end")
            for r in paths.numbered(fs, base + "/regions")
        ]
        prev_end = 0
        for r, (start, end) in enumerate(bounds):
            if start is None or end is None:
                continue
            if start >= end or start < prev_end:
                yield (
                    f"{base}/regions/{r} is [{start}, {end}): regions must be non-empty, "
                    f"sorted and must not overlap (previous end {prev_end})"
                )
            prev_end = end


def diagnose_staged(fs: KernelFS, k: int) -> list[str]:
    """What in kdamond ``k``'s staged files the kernel's ``on``/``commit`` checks refuse.

    Reads only. Covers the checks of reference/damon-sysfs.md §3.3 that can be seen from
    the files: ops registered, intervals, nr_regions bounds, paddr target count, pids,
    region order, and paddr's power-of-two minimum region size.
    """
    problems: list[str] = []
    ctx = paths.context_dir(k)
    if not fs.is_dir(ctx):
        return [f"{paths.kdamond_dir(k)}/contexts/nr_contexts is not 1 (no context staged)"]
    ops = _read(fs, ctx + "/operations")
    avail = _read(fs, ctx + "/avail_operations")
    if ops is not None and avail is not None and ops not in avail.split():
        problems.append(
            f"{ctx}/operations is {ops!r}, which this kernel did not register "
            f"(avail_operations: {', '.join(avail.split()) or 'none'})"
        )
    (unit,) = _ints(fs, ctx + "/addr_unit")
    if ops == "paddr" and unit and unit < 4096:
        minsz = max(4096 // unit, 1)
        if minsz & (minsz - 1):
            problems.append(
                f"{ctx}/addr_unit is {unit}: below the page size it must make "
                f"4096/addr_unit a power of two (got {minsz})"
            )
    problems += _diagnose_attrs(fs, k)
    problems += _diagnose_targets(fs, k, ops)
    return problems


def _memcg_paths(fs: KernelFS, k: int) -> list[str]:
    found = []
    for s in paths.numbered(fs, paths.context_dir(k) + "/schemes"):
        base = paths.scheme_dir(k, s)
        for d in ("filters", "core_filters", "ops_filters"):
            for f in paths.numbered(fs, f"{base}/{d}"):
                if _read(fs, f"{base}/{d}/{f}/type") == "memcg":
                    found.append(f"{base}/{d}/{f}/memcg_path")
        for g in paths.numbered(fs, base + "/quotas/goals"):
            if (_read(fs, f"{paths.goal_dir(k, s, g)}/target_metric") or "").startswith(
                "node_memcg"
            ):
                found.append(f"{paths.goal_dir(k, s, g)}/path")
    return found


def _node_eligible_goals(fs: KernelFS, k: int) -> list[str]:
    """Goal dirs with a node_eligible_mem_bp metric in a context that is not paddr."""
    if _read(fs, paths.context_dir(k) + "/operations") == "paddr":
        return []
    return [
        paths.goal_dir(k, s, g)
        for s in paths.numbered(fs, paths.context_dir(k) + "/schemes")
        for g in paths.numbered(fs, paths.scheme_dir(k, s) + "/quotas/goals")
        if _read(fs, f"{paths.goal_dir(k, s, g)}/target_metric") == "node_eligible_mem_bp"
    ]


def _explain_enomem(fs: KernelFS, k: int) -> str:
    head = (
        "the kernel could not build a scheme (it reports every scheme-construction "
        "failure as ENOMEM); usually a memcg path does not name an online cgroup"
    )
    eligible = _node_eligible_goals(fs, k)
    if eligible:
        # 7.2.12 (lane): accepted at on, refused at commit with ENOMEM
        head += (
            "; or a node_eligible_mem_bp goal in a context that is not paddr (the metric "
            f"works only with paddr): {', '.join(eligible)}"
        )
    described = []
    for p in _memcg_paths(fs, k):
        value = _read(fs, p) or ""
        exists = bool(value) and fs.is_dir("/sys/fs/cgroup/" + value.lstrip("/"))
        described.append(f"{p} = {value!r}" + ("" if exists else " (no such cgroup)"))
    if described:
        head += ": " + "; ".join(described)
    return head + ". Paths are relative to the cgroup v2 mount, such as /system.slice"


def _explain_state(fs: KernelFS, k: int, command: str, err: int) -> str:
    state = _read(fs, paths.state_file(k))
    if command not in _COMMANDS:
        return f"{command!r} is not a state command; accepted: {', '.join(_COMMANDS)}"
    if command == "on" and err == E.EBUSY:
        if state == "on":
            return f"kdamond {k} is already running; write 'off' first or use 'commit'"
        users = exclusive_users(fs)
        if users:
            return (
                f"{' and '.join(users)} runs DAMON exclusively, so no sysfs kdamond can start; "
                "disable it (echo N > that parameter, or boot with damon_stat.enabled=N for "
                "DAMON_STAT) or use the native backend"
            )
        return (
            "an exclusive DAMON user (DAMON_RECLAIM, DAMON_LRU_SORT or DAMON_STAT) is "
            "running, or DAMON's sysfs lock was held by another writer; check "
            "/sys/module/damon_*/parameters/enabled"
        )
    if command in ("on", "commit") and err == E.EINVAL:
        problems = diagnose_staged(fs, k)
        detail = (
            "; ".join(problems)
            if problems
            else (
                "no cause visible in the files: check operations against avail_operations, "
                "sample_us <= aggr_us, 3 <= nr_regions min <= max, sorted regions, one paddr "
                "target, and that vaddr pids exist"
            )
        )
        if command == "commit":
            detail += ". A failed commit can stop the kdamond on newer kernels: re-read its state"
        return f"the kernel refused kdamond {k}'s staged parameters: {detail}"
    if command in ("on", "commit") and err == E.ENOMEM:
        return _explain_enomem(fs, k)
    if command == "off" and err in (E.EINVAL, E.EPERM):
        return f"kdamond {k} is not running (state reads {state!r}); nothing to stop"
    if command.startswith("update_schemes_tried") and err == E.EBUSY:
        return "another tried-regions walk is in progress on this kdamond; retry after it ends"
    if command.startswith("update_schemes_tried") and err == E.ECANCELED:
        return (
            f"kdamond {k} cancelled the walk: it has no schemes, is paused, all its schemes "
            "are deactivated by watermarks, or it exited"
        )
    if command in NEEDS_RUNNING and err in (E.EINVAL, E.ECANCELED, E.EPERM):
        return (
            f"{command} needs a running kdamond, and kdamond {k} is not running "
            f"(state reads {state!r}; a vaddr kdamond stops by itself when its processes exit)"
        )
    if err == E.EINVAL:
        return (
            f"the kernel refused {command!r} on kdamond {k}: contexts/nr_contexts must be 1 "
            "for every command except off"
        )
    return _explain_generic(paths.state_file(k), err)


def _explain_generic(path: str, err: int) -> str:
    name = path.rsplit("/", 1)[-1]
    if err == E.EBUSY:
        if path == paths.NR_KDAMONDS:
            return "a kdamond is running: the kernel refuses to change nr_kdamonds until all stop"
        return "DAMON's sysfs lock is held by another writer (retry shortly)"
    if err == E.ENOENT:
        return (
            f"{name} does not exist: this kernel lacks the feature, or the directory was "
            "recreated by a write to an nr_* file"
        )
    if err in (E.EACCES, E.EPERM):
        return "DAMON's sysfs files are root-only (mode 0600/0400)"
    if err == E.ERANGE:
        return f"the value is out of range for {name} (ulong: 0..2**64-1, uint: 0..2**32-1)"
    if err == E.EINVAL:
        if name in ACCEPTED_KEYWORDS:
            return f"{name} accepts one of: {', '.join(ACCEPTED_KEYWORDS[name])}"
        if name == "nr_contexts":
            return "nr_contexts accepts only 0 or 1"
        if name.startswith("nr_"):
            return f"{name} accepts a count >= 0"
        if name == "addr_unit":
            return "addr_unit accepts an integer >= 1"
        if name in _BOOLEANS:
            return f"{name} accepts Y or N"
        return f"{name} accepts a decimal integer"
    return f"the kernel refused the write to {name}"


def explain(fs: KernelFS, path: str, value: str, err: int | None) -> str:
    """The sentence for a failed write of ``value`` to ``path`` with ``err``.

    Reads the tree (state, staged files, module parameters) to name the cause; never
    writes.
    """
    if err is None:
        return "the write failed without an OS error"
    k = _kdamond_of(path)
    if k is not None and path == paths.state_file(k):
        return _explain_state(fs, k, value.strip(), err)
    return _explain_generic(path, err)


def translate(fs: KernelFS, exc: KernelInterfaceError, value: str) -> DamonSysfsError:
    """``exc`` (from a KernelFS write) as a :class:`DamonSysfsError` with its sentence."""
    k = _kdamond_of(exc.path)
    is_state = k is not None and exc.path == paths.state_file(k)
    command = value.strip() if is_state else None
    sentence = explain(fs, exc.path, value, exc.errno)
    cls = DamonSysfsError
    if (
        command in NEEDS_RUNNING
        and exc.errno in (E.EINVAL, E.ECANCELED, E.EPERM)
        and _read(fs, exc.path) != "on"
    ):
        cls = KdamondNotRunning
    return cls(
        exc.path,
        sentence,
        errno=exc.errno,
        value=value,
        command=command,
        kdamond=k if is_state else None,
    )


def send_state(
    fs: KernelFS,
    k: int,
    command: StateCommand,
    *,
    attempts: int = 5,
    backoff_s: float = 0.01,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write ``command`` to kdamond ``k``'s ``state`` file; retry a contended lock.

    EBUSY is retried up to ``attempts`` times, waiting ``backoff_s`` doubled each time
    (10, 20, 40, 80 ms by default), except ``on`` on a kdamond that already runs, which
    no wait fixes. Every other errno raises at once. Blocking: run it off the event loop
    (the async driver does). ``sleep`` is injectable for tests.
    """
    if command not in _COMMANDS:
        raise ValueError(f"expected a state command ({', '.join(_COMMANDS)}), got {command!r}")
    path = paths.state_file(k)
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            fs.write_text(path, command)
        except KernelInterfaceError as exc:
            busy = exc.errno == E.EBUSY
            permanent = command == "on" and _read(fs, path) == "on"
            if busy and not permanent and attempt < attempts:
                sleep(delay)
                delay *= 2
                continue
            raise translate(fs, exc, command) from exc
        return
