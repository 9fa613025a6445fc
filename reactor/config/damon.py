"""The ``damon:`` section: kdamonds in the schema of damo, DAMON's official user tool.

This is the format damo writes with ``damo args damon --format json`` and reads from
``--kdamonds`` files: ``kdamonds -> contexts -> (targets, intervals, nr_regions, schemes)``.
The key names and nesting follow damo's ``to_kvpairs``/``from_kvpairs`` (facts read from
damo's source, no code copied), so a file damo wrote loads here unchanged, including the
read-back values it emits (``state``, ``pid``, ``stats``, ``effective_sz_bytes``, which
reactor ignores).

Keys whose names carry a unit (``sample_us``, ``sz_bytes``, ``time_ms``, ``*_permil``,
``*_bp``) take a bare number in that unit or a string with a unit, and damo's spellings
(``1,000``, ``min``, ``max``, ``5 ms``, ``4.000 KiB``). Values are stored as ints in the
key's unit, ready to be written to DAMON's sysfs files.

Checks are those the kernel makes at ``on``/``commit`` (so that a bad file fails at load,
with its line, instead of as an EINVAL later): ``sample_us <= aggr_us``, ``nr_regions``
``3 <= min <= max``, ``paddr`` takes at most one target, regions sorted and not
overlapping, intervals-goal bounds, keyword catalogues for actions, quota-goal metrics,
filter types and watermark metrics (reference/damon-sysfs.md §2, §4). Beyond the kernel,
an action the ops set silently ignores (``cold`` on ``paddr``) is refused, since it would
do nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationInfo, WithJsonSchema, field_validator

from reactor.config._checks import Issue
from reactor.config._types import (
    AsTuple,
    DamonBp,
    DamonBytes,
    DamonCount,
    DamonMs,
    DamonPermil,
    DamonUs,
    FiniteFloat,
    Section,
    cross_check,
    damon_bp,
    damon_count,
    damon_us,
    error,
    show,
)
from reactor.units import ULONG_MAX, UnitError, parse_duration_decimal

__all__ = (
    "CORE_FILTER_TYPES",
    "DAMOS_ACTIONS",
    "FAILURES_UNCHARGED",
    "AccessBound",
    "AccessPattern",
    "AddressRange",
    "AgeRange",
    "DamonSection",
    "DamosFilter",
    "DamosStats",
    "Dest",
    "IntervalsGoal",
    "Kdamond",
    "MonitoringContext",
    "MonitoringIntervals",
    "NrAccessesRange",
    "NrRegions",
    "PrimitivesEnabled",
    "Probe",
    "ProbeFilter",
    "QuotaGoal",
    "QuotaWeights",
    "Quotas",
    "Region",
    "RegionAge",
    "RegionNrAccesses",
    "SampleControl",
    "SampleFilter",
    "Scheme",
    "SizeRange",
    "Target",
    "Watermarks",
)

Ops = Literal["vaddr", "fvaddr", "paddr"]
DamosAction = Literal[
    "willneed",
    "cold",
    "pageout",
    "hugepage",
    "nohugepage",
    "collapse",
    "lru_prio",
    "lru_deprio",
    "migrate_hot",
    "migrate_cold",
    "stat",
]
#: DAMOS actions (reference/damon-sysfs.md §4.1; the WIP ``split`` is not accepted).
DAMOS_ACTIONS: tuple[str, ...] = get_args(DamosAction)
_VIRTUAL_ONLY = frozenset({"willneed", "cold", "hugepage", "nohugepage", "collapse"})
#: vaddr/fvaddr actions mm/damon/vaddr.c hands to damos_madvise(): one madvise() over the
#: whole region, which applies no ops-layer filter (migrate_* and stat walk the pages and
#: do).
MADVISE_ACTIONS = _VIRTUAL_ONLY | {"pageout"}


def ignored_ops_filters(section: DamonSection) -> list[Issue]:
    """Ops-layer filters on vaddr/fvaddr madvise actions: the kernel accepts them and
    ignores them, so a config that has one would silently not do what it says. Checked
    on a config's ``damon:`` section only, never on a tree read back from the kernel
    (another tool may have written it; reading it must not fail)."""
    issues: list[Issue] = []
    for k, kd in enumerate(section.kdamonds):
        for c, ctx in enumerate(kd.contexts):
            if ctx.ops == "paddr":
                continue
            for i, s in enumerate(ctx.schemes):
                if s.action not in MADVISE_ACTIONS:
                    continue
                for key, filters in (("filters", s.filters), ("ops_filters", s.ops_filters)):
                    issues += [
                        (
                            f"kdamonds[{k}].contexts[{c}].schemes[{i}].{key}[{j}].filter_type",
                            f"a {f.filter_type} filter does nothing on a {ctx.ops} {s.action} "
                            "scheme: the kernel madvise()s the whole region and applies no "
                            "ops-layer filter (mm/damon/vaddr.c damos_madvise); expected a "
                            "core filter (addr, target) here, or ops paddr for anon, memcg, "
                            "young, hugepage_size, unmapped and active filters",
                        )
                        for j, f in enumerate(filters)
                        if f.filter_type not in CORE_FILTER_TYPES
                    ]
    return issues


_PHYSICAL_ONLY = frozenset({"lru_prio", "lru_deprio"})

QuotaGoalMetric = Literal[
    "user_input",
    "some_mem_psi_us",
    "node_mem_used_bp",
    "node_mem_free_bp",
    "node_memcg_used_bp",
    "node_memcg_free_bp",
    "active_mem_bp",
    "inactive_mem_bp",
    "node_eligible_mem_bp",
]
FilterType = Literal[
    "anon", "memcg", "young", "hugepage_size", "unmapped", "active", "addr", "target"
]
#: Filter types handled by DAMON's core layer; the rest are ops-layer types (§4.3).
CORE_FILTER_TYPES = frozenset({"addr", "target"})
#: ``quotas`` keys that charge a scheme's failed bytes nothing (7.2's ``fail_charge``):
#: its quota then buys only what the action applied to.
FAILURES_UNCHARGED: Mapping[str, int] = MappingProxyType(
    {"fail_charge_num": 0, "fail_charge_denom": 1}
)

_Tuple = AsTuple


# --- monitoring ------------------------------------------------------------------------


class RegionNrAccesses(Section):
    """A snapshot region's access count, as damo emits it (read-back; informational)."""

    samples: DamonCount | None = None
    percent: FiniteFloat | None = None


class RegionAge(Section):
    """A snapshot region's age, as damo emits it (read-back; informational)."""

    usec: DamonUs | None = None
    aggr_intervals: DamonCount | None = None


class Region(Section):
    """An initial monitoring region ``[start, end)`` in bytes (addr units for paddr)."""

    start: DamonBytes
    end: DamonBytes
    nr_accesses: RegionNrAccesses | None = None
    age: RegionAge | None = None
    probe_hits: Annotated[tuple[int, ...], _Tuple] = ()
    sz_filter_passed: DamonBytes = 0

    @cross_check
    def _ordered(self) -> list[Issue]:
        if self.start < self.end:
            return []
        return [("end", f"expected end > start, got start {self.start}, end {self.end}")]


class Target(Section):
    """A monitoring target: a process (``pid``, vaddr/fvaddr) or physical memory (paddr).

    ``numa_node`` (a reactor extension, not a DAMON file) makes a paddr target without
    regions cover that node's System RAM instead of all of it: one paddr kdamond per
    node is how tiering watches each tier. The driver reads the node's memory blocks
    when it stages the target, so the staged (and read-back) target has plain regions.
    """

    pid: int | None = None
    obsolete: bool = False
    regions: Annotated[tuple[Region, ...], _Tuple] = ()
    numa_node: Annotated[int, Field(ge=0)] | None = None

    @cross_check
    def _node_or_regions(self) -> list[Issue]:
        if self.numa_node is None or not self.regions:
            return []
        return [
            (
                "numa_node",
                f"numa_node {self.numa_node} chooses the regions (that node's System "
                f"RAM): give numa_node or regions, got both ({len(self.regions)} "
                "region(s))",
            )
        ]

    @cross_check
    def _sorted(self) -> list[Issue]:
        return [
            (
                f"regions[{i}].start",
                f"regions must be sorted and must not overlap: region {i} starts at "
                f"{cur.start}, before the end of region {i - 1} ({prev.end})",
            )
            for i, (prev, cur) in enumerate(zip(self.regions, self.regions[1:], strict=False), 1)
            if cur.start < prev.end
        ]


class IntervalsGoal(Section):
    """Intervals auto-tuning (Linux 6.15): ``aggrs = 0`` disables it."""

    access_bp: DamonBp = 0
    aggrs: DamonCount = 0
    min_sample_us: DamonUs = 0
    max_sample_us: DamonUs = 0

    @cross_check
    def _bounds(self) -> list[Issue]:
        if not self.aggrs or self.min_sample_us <= self.max_sample_us:
            return []
        return [
            (
                "min_sample_us",
                f"expected min_sample_us <= max_sample_us, got {self.min_sample_us} "
                f"> {self.max_sample_us}",
            )
        ]


class MonitoringIntervals(Section):
    """Sampling, aggregation and ops-update intervals, in microseconds (damo's defaults)."""

    sample_us: DamonUs = 5_000
    aggr_us: DamonUs = 100_000
    ops_update_us: DamonUs = 1_000_000
    intervals_goal: IntervalsGoal = Field(default_factory=IntervalsGoal)

    @cross_check
    def _order(self) -> list[Issue]:
        if self.sample_us <= self.aggr_us:
            return []
        return [
            ("sample_us", f"expected sample_us <= aggr_us, got {self.sample_us} > {self.aggr_us}")
        ]

    @cross_check
    def _sample_in_goal(self) -> list[Issue]:
        goal = self.intervals_goal
        if not goal.aggrs or goal.min_sample_us <= self.sample_us <= goal.max_sample_us:
            return []
        return [
            (
                "sample_us",
                "with intervals_goal enabled, expected min_sample_us <= sample_us <= "
                f"max_sample_us, got {goal.min_sample_us} <= {self.sample_us} <= "
                f"{goal.max_sample_us}",
            )
        ]


class NrRegions(Section):
    """Bounds on the number of monitoring regions; the kernel needs ``3 <= min <= max``."""

    min: DamonCount = 10
    max: DamonCount = 1000

    @cross_check
    def _kernel_minimum(self) -> list[Issue]:
        if self.min >= 3:
            return []
        return [("min", f"expected min >= 3 (the kernel's minimum), got {self.min}")]

    @cross_check
    def _order(self) -> list[Issue]:
        if self.min <= self.max:
            return []
        return [("min", f"expected min <= max, got min {self.min} > max {self.max}")]


class ProbeFilter(Section):
    """A data-attribute probe filter (Linux 7.2, in development)."""

    filter_type: Literal["anon", "memcg"]
    matching: bool
    allow: bool = False
    path: str | None = None


class Probe(Section):
    """A data-attribute monitoring probe (Linux 7.2, in development)."""

    filters: Annotated[tuple[ProbeFilter, ...], _Tuple] = ()


class PrimitivesEnabled(Section):
    """damo's access-check primitives (page table, page fault)."""

    page_table: bool = True
    page_fault: bool = False


class SampleFilter(Section):
    """damo's access-sample filter (cpumask, threads, write)."""

    filter_type: Literal["cpumask", "threads", "write"]
    matching: bool
    allow: bool = False
    cpumask: str | None = None
    tid_arr: str | None = None


class SampleControl(Section):
    """damo's access sample control (development feature; passed through)."""

    primitives_enabled: PrimitivesEnabled = Field(default_factory=PrimitivesEnabled)
    sample_filters: Annotated[tuple[SampleFilter, ...], _Tuple] = ()


# --- schemes -----------------------------------------------------------------------------


class AccessBound(Section):
    """One end of an access-pattern range: a value and its unit.

    ``unit`` is None for a bare number, whose unit comes from the pattern's
    ``nr_accesses_unit``/``age_unit`` key or, without one, damo's reading (nr_accesses
    in percent, age in microseconds).
    """

    value: float
    unit: Literal["percent", "samples", "usec", "aggr_intervals"] | None = None


def _number_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _nr_accesses_bound(value: Any) -> Any:
    if isinstance(value, AccessBound):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return AccessBound(value=float(value))
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if text in ("min", "max"):
            return AccessBound(value=0.0 if text == "min" else float(ULONG_MAX))
        match = re.fullmatch(r"(\S+?)\s*(%|samples)", text)
        number = _number_or_none(match.group(1)) if match else None
        if match and number is not None and number >= 0:
            return AccessBound(value=number, unit="percent" if match.group(2) == "%" else "samples")
    raise error(
        "expected an access frequency such as '5 %' or '3 samples' (or min, max), "
        f"got {show(value)}"
    )


def _age_bound(value: Any) -> Any:
    if isinstance(value, AccessBound):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return AccessBound(value=float(value))
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if text in ("min", "max"):
            return AccessBound(value=0.0 if text == "min" else float(ULONG_MAX))
        match = re.fullmatch(r"(\S+?)\s*aggr_intervals", text)
        if match and (number := _number_or_none(match.group(1))) is not None and number >= 0:
            return AccessBound(value=number, unit="aggr_intervals")
        try:
            seconds = parse_duration_decimal(text)
        except UnitError:
            pass
        else:
            return AccessBound(value=float(seconds * 10**6), unit="usec")
    raise error(
        f"expected an age such as '1 s' or '10 aggr_intervals' (or min, max), got {show(value)}"
    )


_NrAccessesBound = Annotated[
    AccessBound,
    BeforeValidator(_nr_accesses_bound),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
            "description": "a bare number (percent), 'N %', 'N samples', min or max",
            "examples": ["0 %", "5 samples", "max"],
        }
    ),
]
_AgeBound = Annotated[
    AccessBound,
    BeforeValidator(_age_bound),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
            "description": "a bare number (us), a duration, 'N aggr_intervals', min or max",
            "examples": ["1 s", "10 aggr_intervals", "max"],
        }
    ),
]


def _check_range(lo: AccessBound, hi: AccessBound) -> list[Issue]:
    if lo.unit is not None and hi.unit is not None and lo.unit != hi.unit:
        return [("max", f"min and max need the same unit, got {lo.unit} and {hi.unit}")]
    if lo.value > hi.value:
        return [("min", f"expected min <= max, got {lo.value:g} > {hi.value:g}")]
    return []


class SizeRange(Section):
    """Region size range in bytes (closed)."""

    min: DamonBytes = 0
    max: DamonBytes = ULONG_MAX

    @cross_check
    def _order(self) -> list[Issue]:
        if self.min <= self.max:
            return []
        return [("min", f"expected min <= max, got {self.min} > {self.max}")]


class NrAccessesRange(Section):
    """Access-frequency range: percent of the maximum, or samples per aggregation."""

    min: _NrAccessesBound = Field(default_factory=lambda: AccessBound(value=0.0))
    max: _NrAccessesBound = Field(default_factory=lambda: AccessBound(value=float(ULONG_MAX)))

    @cross_check
    def _order(self) -> list[Issue]:
        return _check_range(self.min, self.max)


class AgeRange(Section):
    """Age range: a duration (microseconds) or a number of aggregation intervals."""

    min: _AgeBound = Field(default_factory=lambda: AccessBound(value=0.0))
    max: _AgeBound = Field(default_factory=lambda: AccessBound(value=float(ULONG_MAX)))

    @cross_check
    def _order(self) -> list[Issue]:
        return _check_range(self.min, self.max)


class AccessPattern(Section):
    """Which regions a scheme acts on. By default every region (damo's default)."""

    sz_bytes: SizeRange = Field(default_factory=SizeRange)
    nr_accesses: NrAccessesRange = Field(default_factory=NrAccessesRange)
    age: AgeRange = Field(default_factory=AgeRange)
    nr_accesses_unit: Literal["percent", "samples"] | None = None
    age_unit: Literal["usec", "aggr_intervals"] | None = None

    def nr_accesses_samples(self, intervals: MonitoringIntervals) -> tuple[int, int]:
        """The range in samples per aggregation, as the kernel's sysfs files take it."""
        most = intervals.aggr_us // max(intervals.sample_us, 1)
        default = self.nr_accesses_unit or "percent"

        def convert(bound: AccessBound) -> int:
            if (bound.unit or default) == "samples":
                return int(min(bound.value, 2**32 - 1))
            return int(min(bound.value, 100.0) * most / 100)

        return convert(self.nr_accesses.min), convert(self.nr_accesses.max)

    def age_aggregations(self, intervals: MonitoringIntervals) -> tuple[int, int]:
        """The age range in aggregation intervals, as the kernel's sysfs files take it."""
        default = self.age_unit or "usec"

        def convert(bound: AccessBound) -> int:
            if (bound.unit or default) == "aggr_intervals":
                return int(min(bound.value, 2**32 - 1))
            return int(min(bound.value / max(intervals.aggr_us, 1), 2**32 - 1))

        return convert(self.age.min), convert(self.age.max)


class QuotaWeights(Section):
    """Priority weights under a quota, in permil."""

    sz_permil: DamonPermil = 0
    nr_accesses_permil: DamonPermil = 0
    age_permil: DamonPermil = 0


_NODE_METRICS = frozenset(
    {"node_mem_used_bp", "node_mem_free_bp", "node_memcg_used_bp", "node_memcg_free_bp"}
)
_MEMCG_METRICS = frozenset({"node_memcg_used_bp", "node_memcg_free_bp"})


class QuotaGoal(Section):
    """A quota auto-tuning goal; ``target_value`` is in the metric's unit (µs, bp, or any)."""

    metric: QuotaGoalMetric = "user_input"
    nid: int | None = None
    memcg_path: str | None = None
    target_value: Annotated[
        int,
        WithJsonSchema(
            {
                "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
                "description": "in the metric's unit: us for some_mem_psi_us, bp for *_bp",
            }
        ),
    ] = 0
    current_value: DamonCount = 0

    @field_validator("target_value", mode="before")
    @classmethod
    def _target_unit(cls, value: Any, info: ValidationInfo) -> int:
        if "metric" not in info.data:  # the metric itself is wrong; that error is enough
            return 1  # (a placeholder: the goal is refused with the metric's error)
        metric = info.data.get("metric")
        if metric == "some_mem_psi_us":
            return damon_us(value)
        if isinstance(metric, str) and metric.endswith("_bp"):
            return damon_bp(value)
        return damon_count(value)

    @cross_check
    def _node_given(self) -> list[Issue]:
        if self.metric in _NODE_METRICS and self.nid is None:
            return [("metric", f"metric {self.metric} needs a node id: add nid")]
        return []

    @cross_check
    def _memcg_given(self) -> list[Issue]:
        if self.metric in _MEMCG_METRICS and not self.memcg_path:
            return [("metric", f"metric {self.metric} needs a cgroup: add memcg_path")]
        return []

    @cross_check
    def _target_given(self) -> list[Issue]:
        if self.target_value != 0:
            return []
        return [
            (
                "target_value",
                "expected a non-zero target_value, got 0 (the kernel skips goals "
                "whose target is 0)",
            )
        ]


class Quotas(Section):
    """How much a scheme may do per ``reset_interval_ms``: time, bytes, goals, weights."""

    time_ms: DamonMs = 0
    sz_bytes: DamonBytes = 0
    reset_interval_ms: DamonMs = 0
    fail_charge_num: DamonCount = 0
    fail_charge_denom: DamonCount = 0
    goals: Annotated[tuple[QuotaGoal, ...], _Tuple] = ()
    goal_tuner: Literal["consist", "temporal"] = "consist"
    effective_sz_bytes: DamonBytes = 0
    weights: QuotaWeights = Field(default_factory=QuotaWeights)


class Watermarks(Section):
    """When a scheme is active: free-memory watermarks in permil (``none``: always)."""

    metric: Literal["none", "free_mem_rate"] = "none"
    interval_us: DamonUs = 0
    high_permil: DamonPermil = 0
    mid_permil: DamonPermil = 0
    low_permil: DamonPermil = 0

    @cross_check
    def _order(self) -> list[Issue]:
        if self.metric != "free_mem_rate" or (
            self.high_permil >= self.mid_permil >= self.low_permil
        ):
            return []
        return [
            (
                "high_permil",
                "expected high_permil >= mid_permil >= low_permil, got "
                f"{self.high_permil}, {self.mid_permil}, {self.low_permil}",
            )
        ]


class AddressRange(Section):
    """An address range ``[start, end)`` for an ``addr`` filter."""

    start: DamonBytes
    end: DamonBytes

    @cross_check
    def _ordered(self) -> list[Issue]:
        if self.start < self.end:
            return []
        return [("end", f"expected end > start, got start {self.start}, end {self.end}")]


_FILTER_ARGS = {
    "memcg": "memcg_path",
    "addr": "address_range",
    "target": "damon_target_idx",
    "hugepage_size": "hugepage_size",
}


class DamosFilter(Section):
    """A DAMOS filter; the argument key needed depends on ``filter_type``."""

    filter_type: FilterType
    matching: bool
    allow: bool = False
    memcg_path: str | None = None
    address_range: AddressRange | None = None
    damon_target_idx: DamonCount | None = None
    hugepage_size: Annotated[tuple[DamonBytes, ...], _Tuple] | None = None

    @cross_check
    def _args(self) -> list[Issue]:
        needed = _FILTER_ARGS.get(self.filter_type)
        if needed is not None and getattr(self, needed) in (None, ""):
            return [("filter_type", f"filter type {self.filter_type} needs {needed}")]
        return []

    @cross_check
    def _hugepage_range(self) -> list[Issue]:
        if self.hugepage_size is None or len(self.hugepage_size) == 2:
            return []
        return [("hugepage_size", f"expected [min, max], got a list of {len(self.hugepage_size)}")]


class Dest(Section):
    """A migration destination node and its weight (Linux 6.17)."""

    id: DamonCount
    weight: DamonCount = 0


class DamosStats(Section):
    """Scheme statistics as damo emits them (read-back; ignored on input)."""

    nr_tried: DamonCount = 0
    sz_tried: DamonBytes = 0
    nr_applied: DamonCount = 0
    sz_applied: DamonBytes = 0
    sz_ops_filter_passed: DamonBytes = 0
    qt_exceeds: DamonCount = 0
    nr_snapshots: DamonCount = 0
    max_nr_snapshots: DamonCount = 0


class Scheme(Section):
    """A DAMOS scheme: an action on regions matching an access pattern, within a quota.

    ``filters`` is damo's list (damo routes each to the core or ops layer by type);
    ``core_filters``/``ops_filters`` name the kernel's 6.15 directories directly and must
    hold only types of their layer.
    """

    action: DamosAction = "stat"
    target_nid: int | None = None
    dests: Annotated[tuple[Dest, ...], _Tuple] = ()
    access_pattern: AccessPattern = Field(default_factory=AccessPattern)
    apply_interval_us: DamonUs = 0
    quotas: Quotas = Field(default_factory=Quotas)
    watermarks: Watermarks = Field(default_factory=Watermarks)
    filters: Annotated[tuple[DamosFilter, ...], _Tuple] = ()
    core_filters: Annotated[tuple[DamosFilter, ...], _Tuple] = ()
    ops_filters: Annotated[tuple[DamosFilter, ...], _Tuple] = ()
    stats: DamosStats | None = None

    @cross_check
    def _destination(self) -> list[Issue]:
        if (
            self.action.startswith("migrate_")
            and not self.dests
            and (self.target_nid is None or self.target_nid < 0)
        ):
            return [
                ("action", f"action {self.action} needs a destination: add target_nid or dests")
            ]
        return []

    @cross_check
    def _core_filters(self) -> list[Issue]:
        return [
            (
                f"core_filters[{i}].filter_type",
                f"expected a core filter type (addr, target), got {f.filter_type!r}",
            )
            for i, f in enumerate(self.core_filters)
            if f.filter_type not in CORE_FILTER_TYPES
        ]

    @cross_check
    def _ops_filters(self) -> list[Issue]:
        return [
            (
                f"ops_filters[{i}].filter_type",
                f"expected an ops filter type (anon, memcg, young, hugepage_size, "
                f"unmapped, active), got {f.filter_type!r}",
            )
            for i, f in enumerate(self.ops_filters)
            if f.filter_type in CORE_FILTER_TYPES
        ]


class MonitoringContext(Section):
    """A DAMON context: an ops set, its targets, intervals, region bounds and schemes."""

    ops: Ops
    addr_unit: DamonBytes = 1
    targets: Annotated[tuple[Target, ...], _Tuple]
    intervals: MonitoringIntervals = Field(default_factory=MonitoringIntervals)
    nr_regions: NrRegions = Field(default_factory=NrRegions)
    probes: Annotated[tuple[Probe, ...], _Tuple] = ()
    sample_control: SampleControl | None = None
    pause: bool = False
    schemes: Annotated[tuple[Scheme, ...], _Tuple] = ()

    @cross_check
    def _paddr_targets(self) -> list[Issue]:
        if self.ops != "paddr" or len(self.targets) <= 1:
            return []
        return [("targets[1]", f"ops paddr takes at most one target, got {len(self.targets)}")]

    @cross_check
    def _virtual_targets(self) -> list[Issue]:
        if self.ops == "paddr":
            return []
        return [
            (
                f"targets[{i}].pid" if t.pid is not None else f"targets[{i}]",
                f"a {self.ops} target needs the pid of a process (> 0), got {show(t.pid)}",
            )
            for i, t in enumerate(self.targets)
            if t.pid is None or t.pid <= 0
        ] + [
            (
                f"targets[{i}].numa_node",
                f"numa_node is for paddr targets (a node's physical memory), got ops {self.ops}",
            )
            for i, t in enumerate(self.targets)
            if t.numa_node is not None
        ]

    @cross_check
    def _addr_unit(self) -> list[Issue]:
        if self.addr_unit == 0:
            return [("addr_unit", "expected addr_unit >= 1, got 0")]
        if self.addr_unit != 1 and self.ops != "paddr":
            return [("addr_unit", f"addr_unit is honoured only by paddr, got ops {self.ops}")]
        return []

    @cross_check
    def _actions_fit_ops(self) -> list[Issue]:
        wrong = _PHYSICAL_ONLY if self.ops != "paddr" else _VIRTUAL_ONLY
        where = "paddr" if self.ops != "paddr" else "vaddr and fvaddr"
        return [
            (
                f"schemes[{i}].action",
                f"action {s.action} does nothing on {self.ops} (it works on {where})",
            )
            for i, s in enumerate(self.schemes)
            if s.action in wrong
        ]


class Kdamond(Section):
    """A kdamond; the kernel allows at most one context per kdamond."""

    state: Literal["on", "off"] | None = None
    pid: int | None = None
    refresh_ms: DamonMs = 0
    contexts: Annotated[tuple[MonitoringContext, ...], _Tuple]

    def with_schemes(self, c: int, schemes: Sequence[Scheme]) -> Kdamond:
        """This kdamond with context ``c``'s schemes replaced (a copy: models are kept
        unchanged)."""
        contexts = list(self.contexts)
        contexts[c] = contexts[c].model_copy(update={"schemes": tuple(schemes)})
        return self.model_copy(update={"contexts": tuple(contexts)})

    @cross_check
    def _one_context(self) -> list[Issue]:
        if len(self.contexts) <= 1:
            return []
        return [
            (
                "contexts[1]",
                "a kdamond has at most one context (the kernel accepts only 0 or 1), "
                f"got {len(self.contexts)}",
            )
        ]


_SCHEME_REF = re.compile(r"(\d+)/(\d+)/(\d+)")


class DamonSection(Section):
    """``damon:`` — kdamonds in damo's schema, for operators who think in DAMON terms."""

    kdamonds: Annotated[tuple[Kdamond, ...], _Tuple] = ()

    def scheme(self, ref: str) -> Scheme | None:
        """The scheme a policy's ``scheme: "K/C/S"`` names, or None if it does not exist."""
        match = _SCHEME_REF.fullmatch(ref)
        if match is None:
            return None
        k, c, s = (int(x) for x in match.groups())
        try:
            return self.kdamonds[k].contexts[c].schemes[s]
        except IndexError:
            return None
