"""DAMON sysfs features: which kernel introduced each one, and which this kernel has.

Probing never writes. It answers, for each feature, in this order of trust:

1. **files**: a feature that shows as a file or directory (``refresh_ms``, ``addr_unit``,
   ``quotas/goal_tuner`` …) is present exactly when that file exists in a directory of
   its level (a kdamond, a context, a scheme, a quota goal, a filter …). The directories
   looked at are those that exist: reactor's own staged kdamonds and, read-only, any
   other kdamond (reading is always allowed; writing to stage a probe is not).
2. **table**: with no directory of the level to look into (no scheme staged yet, say),
   and for features that are keywords rather than files (actions, goal metrics, filter
   types, ``state`` commands), :data:`FEATURES` says which release introduced it.

The table comes from reference/damon-sysfs.md §8 (damo's feature list, kept by the DAMON
maintainer), checked against what the real-kernel lane observed on Debian
``7.2.12+deb14-amd64``: its populated tree (every file row of 7.2 and earlier is there,
including pause, probes and fail_charge_*, which the reference could only place as "7.2?").
The keywords no file proves (actions, goal metrics, filter types, ``state`` commands) were
confirmed by the DAMON conformance suite run in the lane's guest
(tests/kernel/test_conformance_real.py): 7.2.12 accepts every word of the table, including
``collapse`` and ``node_eligible_mem_bp`` (no row is ``provisional`` any more).
The table row ``observed`` notes what was seen on a real kernel: the 6.18 host's own
kdamond tree (read-only) and the lane's 7.2.12 guest.

Using a feature the kernel lacks raises :class:`~reactor.errors.UnsupportedKernel` naming
the feature, the running kernel and the release that introduced it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from reactor.errors import KernelInterfaceError, UnsupportedKernel
from reactor.kernelfs import KernelFS

__all__ = (
    "FEATURES",
    "Evidence",
    "Feature",
    "KernelFeatures",
    "KernelVersion",
    "Level",
    "action_feature",
    "command_feature",
    "filter_type_feature",
    "goal_metric_feature",
    "level_dirs",
    "parse_kernel_version",
    "probe_features",
    "read_kernel_release",
)

KDAMONDS = "/sys/kernel/mm/damon/admin/kdamonds"


@dataclass(frozen=True, order=True)
class KernelVersion:
    """A mainline release number ``major.minor.patch`` (patch 0 when absent)."""

    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" if self.patch else self.release

    @property
    def release(self) -> str:
        """``major.minor``: how release notes and error messages name it."""
        return f"{self.major}.{self.minor}"


_VERSION = re.compile(r"\s*(\d+)\.(\d+)(?:\.(\d+))?")


def parse_kernel_version(release: str) -> KernelVersion:
    """The version in a ``uname -r`` string, ignoring distribution suffixes.

    ``"7.2.12+deb14-amd64"`` → 7.2.12, ``"6.18.44-fc-v669"`` → 6.18.44,
    ``"6.8.0-rc4"`` → 6.8.0. Raises ValueError (quoting the text) for anything else.
    """
    match = _VERSION.match(release)
    if match is None:
        raise ValueError(
            f"expected a kernel release such as '6.18.44' or '7.2.12+deb14-amd64', got {release!r}"
        )
    major, minor, patch = match.groups()
    return KernelVersion(int(major), int(minor), int(patch or 0))


def read_kernel_release(fs: KernelFS) -> str | None:
    """``/proc/sys/kernel/osrelease`` (what ``uname -r`` prints), or None if unreadable."""
    try:
        return fs.read_text("/proc/sys/kernel/osrelease").strip() or None
    except KernelInterfaceError:
        return None


#: The directory a feature's file lives in. ``filter`` is any entry of ``filters/``,
#: ``core_filters/`` or ``ops_filters/``; ``intervals`` is ``monitoring_attrs/intervals``.
Level = Literal[
    "admin",
    "kdamond",
    "context",
    "attrs",
    "intervals",
    "target",
    "scheme",
    "quotas",
    "goal",
    "filter",
    "stats",
    "tried_regions",
    "tried_region",
]


@dataclass(frozen=True)
class Feature:
    """One row of the feature table.

    ``since`` is the first mainline release that has the feature; ``probe`` the file (at
    its level) whose existence proves it, or None for keywords, which only the table
    knows; ``provisional`` marks rows the reference could not yet pin to a release.
    """

    name: str
    since: KernelVersion
    description: str
    probe: tuple[Level, str] | None = None
    provisional: bool = False
    observed: str = ""


def _v(text: str) -> KernelVersion:
    return parse_kernel_version(text)


_HOST = "6.18.44 host (read-only tree)"
#: The lane's populated 7.2.12 tree (tests/fixtures/captured/guest-debian-7.2/
#: sys_kernel_mm_damon.populated.listing) and its DAMON run (real-kernel-lane.md).
_LANE = "7.2.12 lane guest"
_BOTH = f"{_HOST}; {_LANE}"

_ROWS: tuple[Feature, ...] = (
    Feature(
        "sysfs", _v("5.18"), "the DAMON sysfs interface", ("admin", "kdamonds"), observed=_BOTH
    ),
    Feature("ops:vaddr", _v("5.18"), "virtual address space monitoring", observed=_LANE),
    Feature("ops:paddr", _v("5.18"), "physical address space monitoring", observed=_BOTH),
    Feature("ops:fvaddr", _v("5.19"), "fixed virtual address ranges", observed=_LANE),
    Feature(
        "avail_operations",
        _v("5.19"),
        "contexts/<C>/avail_operations",
        ("context", "avail_operations"),
        observed=_BOTH,
    ),
    Feature("command:commit", _v("5.19"), "online commit of staged parameters", observed=_LANE),
    Feature("action:lru_prio", _v("6.0"), "DAMOS action lru_prio", observed=_LANE),
    Feature("action:lru_deprio", _v("6.0"), "DAMOS action lru_deprio", observed=_LANE),
    Feature(
        "tried_regions",
        _v("6.2"),
        "schemes/<S>/tried_regions and update_schemes_tried_regions",
        ("scheme", "tried_regions"),
        observed=_BOTH,
    ),
    Feature(
        "filters", _v("6.3"), "DAMOS filters (anon, memcg)", ("scheme", "filters"), observed=_HOST
    ),
    Feature(
        "tried_bytes",
        _v("6.6"),
        "tried_regions/total_bytes and update_schemes_tried_bytes",
        ("tried_regions", "total_bytes"),
        observed=_HOST,
    ),
    Feature(
        "filter:addr", _v("6.6"), "DAMOS filter type addr", ("filter", "addr_start"), observed=_HOST
    ),
    Feature(
        "filter:target",
        _v("6.6"),
        "DAMOS filter type target",
        ("filter", "damon_target_idx"),
        observed=_LANE,
    ),
    Feature(
        "apply_interval_us",
        _v("6.7"),
        "schemes/<S>/apply_interval_us",
        ("scheme", "apply_interval_us"),
        observed=_HOST,
    ),
    Feature(
        "quota_goals",
        _v("6.8"),
        "quotas/goals (user_input feedback)",
        ("quotas", "goals"),
        observed=_BOTH,
    ),
    Feature(
        "command:commit_schemes_quota_goals",
        _v("6.8"),
        "state command commit_schemes_quota_goals",
        observed=_LANE,
    ),
    Feature(
        "goal:target_metric",
        _v("6.9"),
        "quota goal target_metric",
        ("goal", "target_metric"),
        observed=_LANE,
    ),
    Feature("metric:user_input", _v("6.8"), "quota goal metric user_input", observed=_LANE),
    Feature(
        "metric:some_mem_psi_us", _v("6.9"), "quota goal metric some_mem_psi_us", observed=_LANE
    ),
    Feature(
        "effective_bytes",
        _v("6.9"),
        "quotas/effective_bytes and update_schemes_effective_quotas",
        ("quotas", "effective_bytes"),
        observed=_BOTH,
    ),
    Feature("filter:young", _v("6.10"), "DAMOS filter type young", observed=_LANE),
    Feature("action:migrate_hot", _v("6.11"), "DAMOS action migrate_hot", observed=_LANE),
    Feature("action:migrate_cold", _v("6.11"), "DAMOS action migrate_cold", observed=_LANE),
    Feature(
        "target_nid", _v("6.11"), "schemes/<S>/target_nid", ("scheme", "target_nid"), observed=_BOTH
    ),
    Feature(
        "filter_allow", _v("6.14"), "filter allow (pass) files", ("filter", "allow"), observed=_HOST
    ),
    Feature(
        "stats:sz_ops_filter_passed",
        _v("6.14"),
        "stats/sz_ops_filter_passed",
        ("stats", "sz_ops_filter_passed"),
        observed=_HOST,
    ),
    Feature(
        "tried_region:sz_filter_passed",
        _v("6.14"),
        "tried_regions/<R>/sz_filter_passed",
        ("tried_region", "sz_filter_passed"),
        observed=_LANE,
    ),
    Feature(
        "core_ops_filters",
        _v("6.15"),
        "schemes/<S>/core_filters and ops_filters",
        ("scheme", "core_filters"),
        observed=_HOST,
    ),
    Feature(
        "filter:hugepage_size",
        _v("6.15"),
        "DAMOS filter type hugepage_size",
        ("filter", "min"),
        observed=_HOST,
    ),
    Feature("filter:unmapped", _v("6.15"), "DAMOS filter type unmapped", observed=_LANE),
    Feature("filter:active", _v("6.15"), "DAMOS filter type active", observed=_LANE),
    Feature(
        "intervals_goal",
        _v("6.15"),
        "monitoring intervals auto-tuning and update_tuned_intervals",
        ("intervals", "intervals_goal"),
        observed=_HOST,
    ),
    Feature("goal:nid", _v("6.16"), "quota goal nid", ("goal", "nid"), observed=_LANE),
    Feature(
        "metric:node_mem_used_bp", _v("6.16"), "quota goal metric node_mem_used_bp", observed=_LANE
    ),
    Feature(
        "metric:node_mem_free_bp", _v("6.16"), "quota goal metric node_mem_free_bp", observed=_LANE
    ),
    Feature(
        "dests",
        _v("6.17"),
        "schemes/<S>/dests (weighted migration)",
        ("scheme", "dests"),
        observed=_HOST,
    ),
    Feature(
        "refresh_ms",
        _v("6.17"),
        "kdamonds/<K>/refresh_ms",
        ("kdamond", "refresh_ms"),
        observed=_HOST,
    ),
    Feature("vaddr_migrate", _v("6.17"), "migrate_hot/migrate_cold on vaddr", observed=_LANE),
    Feature(
        "addr_unit", _v("6.18"), "contexts/<C>/addr_unit", ("context", "addr_unit"), observed=_HOST
    ),
    Feature(
        "obsolete_target",
        _v("6.19"),
        "targets/<T>/obsolete_target",
        ("target", "obsolete_target"),
        observed=_LANE,
    ),
    Feature("goal:path", _v("6.19"), "quota goal path (memcg)", ("goal", "path"), observed=_LANE),
    Feature(
        "metric:node_memcg_used_bp",
        _v("6.19"),
        "quota goal metric node_memcg_used_bp",
        observed=_LANE,
    ),
    Feature(
        "metric:node_memcg_free_bp",
        _v("6.19"),
        "quota goal metric node_memcg_free_bp",
        observed=_LANE,
    ),
    Feature(
        "nr_snapshots",
        _v("7.0"),
        "stats/nr_snapshots and stats/max_nr_snapshots",
        ("stats", "max_nr_snapshots"),
        observed=_LANE,
    ),
    Feature("metric:active_mem_bp", _v("7.0"), "quota goal metric active_mem_bp", observed=_LANE),
    Feature(
        "metric:inactive_mem_bp", _v("7.0"), "quota goal metric inactive_mem_bp", observed=_LANE
    ),
    Feature(
        "goal_tuner",
        _v("7.1"),
        "quotas/goal_tuner (consist, temporal)",
        ("quotas", "goal_tuner"),
        observed=_LANE,
    ),
    Feature("action:collapse", _v("7.2"), "DAMOS action collapse", observed=_LANE),
    Feature(
        "metric:node_eligible_mem_bp",
        _v("7.2"),
        "quota goal metric node_eligible_mem_bp",
        observed=_LANE,
    ),
    Feature("pause", _v("7.2"), "contexts/<C>/pause", ("context", "pause"), observed=_LANE),
    Feature(
        "fail_charge",
        _v("7.2"),
        "quotas/fail_charge_num and fail_charge_denom",
        ("quotas", "fail_charge_num"),
        observed=_LANE,
    ),
    Feature(
        "probes",
        _v("7.2"),
        "monitoring_attrs/probes (data attributes)",
        ("attrs", "probes"),
        observed=_LANE,
    ),
)

#: The feature table, by name.
FEATURES: Mapping[str, Feature] = {f.name: f for f in _ROWS}

_ALWAYS = _v("5.18")
_ACTIONS_5_18 = frozenset({"willneed", "cold", "pageout", "hugepage", "nohugepage", "stat"})
_FILTERS_6_3 = frozenset({"anon", "memcg"})
_COMMANDS = {
    "on": None,
    "off": None,
    "update_schemes_stats": None,
    "commit": "command:commit",
    "commit_schemes_quota_goals": "command:commit_schemes_quota_goals",
    "update_schemes_tried_regions": "tried_regions",
    "clear_schemes_tried_regions": "tried_regions",
    "update_schemes_tried_bytes": "tried_bytes",
    "update_schemes_effective_quotas": "effective_bytes",
    "update_tuned_intervals": "intervals_goal",
}


def action_feature(action: str) -> str | None:
    """The feature an action needs beyond the 5.18 interface (None: always there)."""
    return None if action in _ACTIONS_5_18 else f"action:{action}"


def goal_metric_feature(metric: str) -> str:
    """The feature a quota-goal metric needs."""
    return f"metric:{metric}"


def filter_type_feature(filter_type: str) -> str:
    """The feature a DAMOS filter type needs."""
    return "filters" if filter_type in _FILTERS_6_3 else f"filter:{filter_type}"


def command_feature(command: str) -> str | None:
    """The feature a ``state`` command needs (None: part of the 5.18 interface)."""
    if command not in _COMMANDS:
        raise ValueError(
            f"expected a DAMON state command ({', '.join(_COMMANDS)}), got {command!r}"
        )
    return _COMMANDS[command]


#: How a feature's presence was decided: a file seen or missed, or the version table.
Evidence = Literal["file", "no-file", "table", "unknown-kernel"]


@dataclass(frozen=True)
class KernelFeatures:
    """What this kernel's DAMON offers, with how each answer was reached.

    ``kernel`` is None when the release could not be read or parsed; the table then
    answers "present" (the kernel itself will refuse what it lacks, with its errno).
    """

    release: str | None
    kernel: KernelVersion | None
    present: Mapping[str, bool]
    evidence: Mapping[str, Evidence] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        """Whether the kernel has feature ``name`` (a row of :data:`FEATURES`)."""
        if name not in FEATURES:
            raise KeyError(f"unknown DAMON feature {name!r}; known: {', '.join(FEATURES)}")
        return self.present.get(name, True)

    def require(self, name: str | None, *, what: str | None = None) -> None:
        """Raise :class:`UnsupportedKernel` unless the kernel has ``name``.

        ``what`` names the use in the message (``"scheme 0 action collapse"``).
        """
        if name is None or self.has(name):
            return
        row = FEATURES[name]
        label = f"{what} ({row.description})" if what else row.description
        if row.provisional:
            label += "; the release is provisional (merged in mm.git, not yet seen released)"
        raise UnsupportedKernel(label, row.since.release, self.release)

    def describe(self) -> list[str]:
        """One line per feature: name, present or not, and why; for logs and ``status``."""
        return [
            f"{name}: {'yes' if self.has(name) else 'no'} "
            f"({self.evidence.get(name, 'table')}, since {row.since.release})"
            for name, row in FEATURES.items()
        ]


def _children(fs: KernelFS, path: str) -> list[str]:
    """Numbered child directories of ``path`` (``0``, ``1`` …), sorted; none if missing."""
    try:
        names = fs.listdir(path)
    except KernelInterfaceError:
        return []
    return [f"{path}/{n}" for n in sorted((n for n in names if n.isdigit()), key=int)]


def level_dirs(
    fs: KernelFS, kdamond_indices: Iterable[int] | None = None
) -> dict[Level, list[str]]:
    """Every existing directory of each level under the given kdamonds (default: all).

    Only ``listdir``/``is_dir`` calls: safe on a tree reactor does not own.
    """
    out: dict[Level, list[str]] = {"admin": ["/sys/kernel/mm/damon/admin"]}
    if not fs.is_dir(KDAMONDS):
        out["admin"] = []
        return out
    kdamonds = _children(fs, KDAMONDS)
    if kdamond_indices is not None:
        wanted = {f"{KDAMONDS}/{i}" for i in kdamond_indices}
        kdamonds = [k for k in kdamonds if k in wanted]

    def add(level: Level, paths: Iterable[str]) -> None:
        out.setdefault(level, []).extend(paths)

    add("kdamond", kdamonds)
    for k in kdamonds:
        for c in _children(fs, k + "/contexts"):
            add("context", [c])
            add("attrs", [c + "/monitoring_attrs"])
            add("intervals", [c + "/monitoring_attrs/intervals"])
            add("target", _children(fs, c + "/targets"))
            for s in _children(fs, c + "/schemes"):
                add("scheme", [s])
                add("quotas", [s + "/quotas"])
                add("stats", [s + "/stats"])
                add("tried_regions", [s + "/tried_regions"])
                add("tried_region", _children(fs, s + "/tried_regions"))
                add("goal", _children(fs, s + "/quotas/goals"))
                for d in ("filters", "core_filters", "ops_filters"):
                    add("filter", _children(fs, f"{s}/{d}"))
    return {level: [p for p in paths if fs.is_dir(p)] for level, paths in out.items()}


def _probe_one(
    fs: KernelFS, row: Feature, dirs: Mapping[Level, list[str]], kernel: KernelVersion | None
) -> tuple[bool, Evidence]:
    if row.probe is not None:
        level, rel = row.probe
        seen = dirs.get(level, [])
        if seen:
            found = any(fs.exists(f"{d}/{rel}") for d in seen)
            return found, "file" if found else "no-file"
    if kernel is None:
        return True, "unknown-kernel"
    return kernel >= row.since, "table"


def probe_features(
    fs: KernelFS,
    release: str | None = None,
    *,
    kdamond_indices: Iterable[int] | None = None,
) -> KernelFeatures:
    """Probe DAMON's features by reading only (see the module docs for the order of trust).

    ``release`` defaults to ``/proc/sys/kernel/osrelease``. ``kdamond_indices`` limits the
    file probe to those kdamonds (reactor's own); by default every kdamond is looked at,
    which only reads.
    """
    release = release if release is not None else read_kernel_release(fs)
    try:
        kernel = parse_kernel_version(release) if release else None
    except ValueError:
        kernel = None
    dirs = level_dirs(fs, kdamond_indices)
    present: dict[str, bool] = {}
    evidence: dict[str, Evidence] = {}
    for name, row in FEATURES.items():
        present[name], evidence[name] = _probe_one(fs, row, dirs, kernel)
    _ops_from_avail(fs, dirs, present, evidence)
    return KernelFeatures(release, kernel, present, evidence)


def _ops_from_avail(
    fs: KernelFS,
    dirs: Mapping[Level, list[str]],
    present: dict[str, bool],
    evidence: dict[str, Evidence],
) -> None:
    """``avail_operations`` lists the ops sets this kernel registered: trust it over the table."""
    for context in dirs.get("context", []):
        try:
            text = fs.read_text(context + "/avail_operations")
        except KernelInterfaceError:
            continue
        names = set(text.split())
        for ops in ("vaddr", "fvaddr", "paddr"):
            present[f"ops:{ops}"] = ops in names
            evidence[f"ops:{ops}"] = "file"
        return
