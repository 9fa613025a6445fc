"""reactor's config sections: frozen, typed, unit-carrying.

Types carry the unit: :data:`~reactor.config._types.Duration` fields are float seconds,
``Size`` fields int bytes, ``Ratio`` fields a float fraction, ``Rate`` fields float bytes
per second. Every model is frozen (and its lists are tuples) so a config cannot change
under a running task; a reload builds a new one.

Cross-field checks live next to their fields (``min <= max``, ``sample <= aggregation``),
as methods marked :func:`~reactor.config._checks.cross_check`: they run on the fields that
parsed even when others failed, so that every error of a file is reported at once;
cross-section references (a policy's ``monitor`` and ``scheme``, unique names) are checked
by :func:`reference_issues`, which works on plain data too, so that a file with other
errors still gets them reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, WithJsonSchema, field_validator, model_validator

from reactor.config._checks import Issue
from reactor.config._types import (
    AsTuple,
    FiniteFloat,
    PositiveDuration,
    Rate,
    Ratio,
    Section,
    Size,
    cross_check,
    fail,
    fail_many,
    show,
)
from reactor.config.damon import DamonSection, ignored_ops_filters
from reactor.units import UnitError, format_duration, format_size, parse_rate, parse_ratio

__all__ = (
    "ApiConfig",
    "CgroupSourceConfig",
    "Config",
    "ControllerConfig",
    "ExcludeConfig",
    "FragmentationSourceConfig",
    "GoalConfig",
    "IntervalsGoalConfig",
    "MetricsConfig",
    "MonitorConfig",
    "PolicyConfig",
    "PsiSourceConfig",
    "PsiTriggerConfig",
    "QuotaConfig",
    "ReactorSection",
    "RegionsConfig",
    "SelectorConfig",
    "Signals",
    "SourceConfig",
    "TargetsConfig",
    "TiersSourceConfig",
    "reference_issues",
)

_NAME = re.compile(r"[a-z0-9_-]+")
_SCHEME_REF = re.compile(r"(\d+)/(\d+)/(\d+)")
_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        fail(
            f"expected a name of lowercase letters, digits, '_' and '-' ([a-z0-9_-]+), "
            f"got {show(value)}"
        )
    return value


# --- reactor ---------------------------------------------------------------------------


class ReactorSection(Section):
    """``reactor:`` — the daemon itself."""

    backend: Literal["auto", "damon", "native"] = "auto"
    tick: PositiveDuration = 1.0
    dry_run: bool = False
    run_dir: str = "/run/reactor"
    startup_timeout: PositiveDuration = 5.0
    shutdown_timeout: PositiveDuration = 5.0
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``every``: each policy's ``controller_tick`` and the ``node_sample`` line go at
    #: info every tick; ``changes``: at info only when something changed (docs/
    #: observability.md), at least every :data:`reactor.log.TICK_LOG_HEARTBEAT` ticks,
    #: otherwise at debug (``--record`` and the status keep every tick either way)
    log_ticks: Literal["every", "changes"] = "every"


# --- api -------------------------------------------------------------------------------


class MetricsConfig(Section):
    """``api.metrics:`` — the Prometheus exporter (served by a later issue)."""

    enabled: bool = False
    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        match = _LISTEN.fullmatch(value)
        if match is None or int(match.group("port")) > 65535:
            fail(
                "expected host:port such as 127.0.0.1:9464 or [::1]:9464 "
                f"(port 0-65535), got {show(value)}"
            )
        return value


class ApiConfig(Section):
    """``api:`` — status socket and metrics (served by a later issue)."""

    status_socket: str | None = None
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    def status_socket_path(self, run_dir: str) -> str:
        """The status socket path: ``status_socket``, or ``<run_dir>/status.sock``."""
        return self.status_socket or f"{run_dir.rstrip('/')}/status.sock"


# --- signals ---------------------------------------------------------------------------


class SourceConfig(Section):
    """A signal source (vmstat, meminfo): how often it samples and when data is stale."""

    enabled: bool = True
    period: PositiveDuration = 1.0
    required: bool = False
    stale_after: PositiveDuration | None = None

    @cross_check
    def _stale_after_period(self) -> list[Issue]:
        if self.stale_after is None or self.stale_after >= self.period:
            return []
        return [
            (
                "stale_after",
                f"expected stale_after >= period, got stale_after "
                f"{format_duration(self.stale_after)} < period "
                f"{format_duration(self.period)}",
            )
        ]

    @property
    def max_age(self) -> float:
        """Seconds after which a sample is too old to act on: ``stale_after`` or 3 × period."""
        return self.stale_after if self.stale_after is not None else 3 * self.period


class PsiTriggerConfig(Section):
    """One PSI trigger (``signals.psi.triggers[]``): the kernel wakes reactor when
    ``kind`` stall reaches ``threshold`` within ``window`` (docs/signals.md)."""

    name: str
    resource: Literal["memory", "io", "cpu"] = "memory"
    kind: Literal["some", "full"] = "some"
    threshold: PositiveDuration
    window: PositiveDuration = 2.0
    cgroup: str | None = None
    poll_period: PositiveDuration | None = None

    @field_validator("name")
    @classmethod
    def _trigger_name(cls, value: str) -> str:
        return _name(value)

    @cross_check
    def _window(self) -> list[Issue]:
        if 0.5 <= self.window <= 10.0:
            return []
        return [
            (
                "window",
                f"expected a window from 500ms to 10s (the kernel's range), got "
                f"{format_duration(self.window)}",
            )
        ]

    @cross_check
    def _threshold_in_window(self) -> list[Issue]:
        if self.threshold <= self.window:
            return []
        return [
            (
                "threshold",
                f"expected threshold <= window, got {format_duration(self.threshold)} > "
                f"{format_duration(self.window)}",
            )
        ]


class PsiSourceConfig(SourceConfig):
    """``signals.psi:`` — pressure stall information, system-wide and optionally a cgroup."""

    resources: Annotated[tuple[Literal["memory", "io", "cpu"], ...], AsTuple] = (
        "memory",
        "io",
        "cpu",
    )
    cgroup: str | None = None
    triggers: Annotated[tuple[PsiTriggerConfig, ...], AsTuple] = ()

    @field_validator("triggers")
    @classmethod
    def _distinct_triggers(
        cls, value: tuple[PsiTriggerConfig, ...]
    ) -> tuple[PsiTriggerConfig, ...]:
        names = [t.name for t in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            fail(f"expected unique trigger names, got {', '.join(repeated)} more than once")
        return value

    @field_validator("resources")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            fail("expected at least one of memory, io, cpu, got an empty list")
        repeated = sorted({r for r in value if value.count(r) > 1})
        if repeated:
            fail(f"expected each resource once, got {', '.join(repeated)} more than once")
        return value


class TiersSourceConfig(SourceConfig):
    """``signals.tiers:`` — NUMA nodes and memory tiers (levels change slowly: 5 s)."""

    period: PositiveDuration = 5.0


class FragmentationSourceConfig(SourceConfig):
    """``signals.fragmentation:`` — buddyinfo/zoneinfo: the kernel's fragmentation indices."""

    period: PositiveDuration = 5.0
    hpage_order: int = Field(default=9, ge=1, le=10)
    zoneinfo_every: int = Field(default=60, ge=1)
    read_debugfs: bool = True


class CgroupSourceConfig(SourceConfig):
    """One entry of ``signals.cgroups:`` — a memory cgroup (v1 or v2) to sample."""

    name: str
    path: str
    version: Literal["auto", "v1", "v2"] = "auto"
    pressure_dir: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            fail(f"expected a name of a-z, 0-9, '_' and '-', got {value!r}")
        return value

    @field_validator("path", "pressure_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            fail(f"expected an absolute cgroup directory path, got {value!r}")
        return value


class Signals(Section):
    """``signals:`` — the node's own signals."""

    psi: PsiSourceConfig = Field(default_factory=PsiSourceConfig)
    vmstat: SourceConfig = Field(default_factory=SourceConfig)
    meminfo: SourceConfig = Field(default_factory=SourceConfig)
    tiers: TiersSourceConfig = Field(default_factory=TiersSourceConfig)
    fragmentation: FragmentationSourceConfig = Field(default_factory=FragmentationSourceConfig)
    cgroups: Annotated[tuple[CgroupSourceConfig, ...], AsTuple] = ()

    @field_validator("cgroups")
    @classmethod
    def _unique_names(cls, value: tuple[CgroupSourceConfig, ...]) -> tuple[CgroupSourceConfig, ...]:
        names = [c.name for c in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            fail(f"expected unique cgroup names, got {', '.join(repeated)} more than once")
        return value

    def sources(self) -> dict[str, SourceConfig]:
        """The enabled node-wide sources by name (``psi``, ``vmstat``, ``meminfo``,
        ``tiers``, ``fragmentation``); cgroups are in :attr:`cgroups`."""
        every: dict[str, SourceConfig] = {
            "psi": self.psi,
            "vmstat": self.vmstat,
            "meminfo": self.meminfo,
            "tiers": self.tiers,
            "fragmentation": self.fragmentation,
        }
        return {name: source for name, source in every.items() if source.enabled}


# --- monitors --------------------------------------------------------------------------


class SelectorConfig(Section):
    """Pick processes by name and/or resident size."""

    name: str | None = None
    min_rss: Size | None = None


class TargetsConfig(Section):
    """What a vaddr/fvaddr monitor watches: pids, a command reactor starts, a cgroup."""

    pids: Annotated[tuple[int, ...], AsTuple] = ()
    command: Annotated[tuple[str, ...], AsTuple] | None = None
    cgroup: str | None = None
    selector: SelectorConfig | None = None

    @field_validator("pids")
    @classmethod
    def _real_pids(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [
            (f"[{i}]", f"expected a process id > 1 (never init), got {p}")
            for i, p in enumerate(value)
            if p <= 1
        ]
        if bad:
            fail_many(bad)
        return value

    @field_validator("command")
    @classmethod
    def _argv(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            fail("expected a command line such as [python3, app.py], got an empty list")
        return value

    def is_empty(self) -> bool:
        """True when no target is named."""
        return not (self.pids or self.command or self.cgroup or self.selector)


class RegionsConfig(Section):
    """Bounds on the number of monitoring regions (DAMON's adaptive regions)."""

    min: int = Field(default=10, ge=3)
    max: int = 1000

    @cross_check
    def _order(self) -> list[Issue]:
        if self.min <= self.max:
            return []
        return [("min", f"expected min <= max, got min {self.min} > max {self.max}")]


class IntervalsGoalConfig(Section):
    """Sampling-interval auto-tuning toward an observed access ratio."""

    access: Ratio
    aggrs: int = Field(ge=1)
    min_sample: PositiveDuration
    max_sample: PositiveDuration

    @cross_check
    def _order(self) -> list[Issue]:
        if self.min_sample <= self.max_sample:
            return []
        return [
            (
                "min_sample",
                f"expected min_sample <= max_sample, got "
                f"{format_duration(self.min_sample)} > "
                f"{format_duration(self.max_sample)}",
            )
        ]


class MonitorConfig(Section):
    """``monitors[]`` — one access monitor (a DAMON context, or the native sampler)."""

    name: str
    ops: Literal["vaddr", "fvaddr", "paddr"] = "vaddr"
    targets: TargetsConfig = Field(default_factory=TargetsConfig)
    probe: Literal["auto", "referenced", "uffd-wp", "soft-dirty", "page-idle"] = "auto"
    sample: PositiveDuration | None = None
    aggregation: PositiveDuration | None = None
    update: PositiveDuration = 1.0
    regions: RegionsConfig = Field(default_factory=RegionsConfig)
    intervals_goal: IntervalsGoalConfig | None = None
    #: DAMON backend: the share of one CPU that reading this monitor's snapshots may take
    #: on average; a read that costs more than that over a tick spaces the next ones out
    #: (reactor.engine.damon_monitors). None: a snapshot every tick.
    snapshot_cpu: Ratio | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _name(value)

    @field_validator("snapshot_cpu")
    @classmethod
    def _positive_budget(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            fail(
                "expected a share of one CPU > 0% (or leave it out for a snapshot every "
                f"tick), got {value * 100:g}%"
            )
        return value

    @cross_check
    def _intervals(self) -> list[Issue]:
        if (self.sample is None) != (self.aggregation is None):
            given = "sample" if self.sample is not None else "aggregation"
            return [
                (
                    given,
                    "expected sample and aggregation together (or neither, for the "
                    f"backend's defaults), got only {given}",
                )
            ]
        if self.sample is None or self.aggregation is None or self.sample <= self.aggregation:
            return []
        return [
            (
                "sample",
                f"expected sample <= aggregation, got sample {format_duration(self.sample)}"
                f" > aggregation {format_duration(self.aggregation)}",
            )
        ]

    @cross_check
    def _sample_in_goal(self) -> list[Issue]:
        goal = self.intervals_goal
        if goal is None or self.sample is None or goal.min_sample <= self.sample <= goal.max_sample:
            return []
        return [
            (
                "sample",
                "expected intervals_goal.min_sample <= sample <= intervals_goal.max_sample,"
                f" got {format_duration(goal.min_sample)} <= {format_duration(self.sample)}"
                f" <= {format_duration(goal.max_sample)}",
            )
        ]

    @cross_check
    def _targets_fit_ops(self) -> list[Issue]:
        if self.ops == "paddr" and not self.targets.is_empty():
            return [("targets", "ops paddr monitors physical memory and takes no targets")]
        if self.ops != "paddr" and self.targets.is_empty():
            return [
                (
                    "targets",
                    f"ops {self.ops} needs at least one target: pids, command, cgroup or selector",
                )
            ]
        return []

    def intervals(self, backend: str) -> tuple[float, float]:
        """(sample, aggregation) in seconds: as configured, or the backend's defaults.

        DAMON samples in the kernel (5 ms / 100 ms, the kernel's defaults); the native
        sampler pays a page walk per sample (about 22 ms of kernel CPU per GiB with the
        ``referenced`` probe), so it defaults to 100 ms / 2 s.
        """
        if self.sample is not None and self.aggregation is not None:
            return self.sample, self.aggregation
        return DEFAULT_INTERVALS[backend]


#: Default (sample, aggregation) seconds per backend; see MonitorConfig.intervals.
DEFAULT_INTERVALS = {"damon": (0.005, 0.1), "native": (0.1, 2.0)}


# --- policies --------------------------------------------------------------------------

GoalMetric = Literal[
    "memory_psi_some",
    "memory_psi_full",
    "refault_rate",
    "free_ratio",
    "fast_tier_used_ratio",
    "node_used_ratio",
    "user",
]
_RATIO_METRICS = frozenset(
    {"memory_psi_some", "memory_psi_full", "free_ratio", "fast_tier_used_ratio", "node_used_ratio"}
)


class GoalConfig(Section):
    """A goal: keep ``metric`` at ``target``.

    The unit of ``target`` follows the metric: a ratio (``0.5%``) for the ratio metrics
    (PSI shares, free/used ratios), a byte rate (``64 MiB/s``) for ``refault_rate``, and a
    plain number in the application's own unit for ``user`` (which names its ``signal``).
    Stored as a fraction, bytes per second, or the number.
    """

    metric: GoalMetric
    target: Annotated[
        float,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "description": "a ratio (0.5%) or a rate (64 MiB/s)"},
                    {"type": "number", "description": "for metric user only"},
                ],
                "examples": ["0.5%", "64 MiB/s"],
            }
        ),
    ]
    signal: str | None = None
    node: int | None = Field(default=None, ge=0)

    @field_validator("target", mode="before")
    @classmethod
    def _target_unit(cls, value: Any, info: ValidationInfo) -> float:
        metric = info.data.get("metric")
        if metric is None:  # the metric itself is wrong; that error is enough
            return 0.0
        try:
            if metric in _RATIO_METRICS:
                if not isinstance(value, str):
                    fail(
                        f"metric {metric} takes a ratio with a unit, got {show(value)}: add "
                        f"a unit, e.g. {show(value)}%"
                    )
                return parse_ratio(value)
            if metric == "refault_rate":
                if not isinstance(value, str):
                    fail(
                        f"metric refault_rate takes a byte rate such as 64 MiB/s, got {show(value)}"
                    )
                return parse_rate(value)
        except UnitError as exc:
            fail(str(exc))
        if not isinstance(value, int | float) or isinstance(value, bool):
            fail(f"metric user takes a number (in the signal's own unit), got {show(value)}")
        return float(value)

    @cross_check
    def _user_signal(self) -> list[Issue]:
        if self.metric == "user" and not self.signal:
            return [("signal", "metric user needs the name of the signal: add signal")]
        return []

    @cross_check
    def _numa_node(self) -> list[Issue]:
        if self.metric == "node_used_ratio" and self.node is None:
            return [("metric", "metric node_used_ratio needs a NUMA node id: add node")]
        return []


class QuotaConfig(Section):
    """How much a policy may act per ``per``: between ``min`` and ``max`` bytes."""

    min: Size = 0
    max: Size
    per: PositiveDuration = 1.0

    @cross_check
    def _order(self) -> list[Issue]:
        if self.min <= self.max:
            return []
        return [
            (
                "min",
                f"expected min <= max, got min {format_size(self.min)} > max "
                f"{format_size(self.max)}",
            )
        ]


#: goal metrics that cap a reclaim quota as a whole (not stalls the cold set's drain causes)
_MEMORY_GOAL_METRICS = frozenset({"free_ratio", "node_used_ratio", "fast_tier_used_ratio"})


class ControllerConfig(Section):
    """The feedback controller that turns goal error into quota (gains must be finite).

    ``adaptive`` (the default when no controller is given) is reactor's log-log goal
    seeker (controllers.tuners.quota_tuner): no gains to tune; ``probe_factor`` is its
    growth per tick while no goal sees a signal. ``log_pid`` runs a PID on ln(quota)
    with the error on a log scale (gains per ln unit); ``pid`` the same PID on
    ln(quota) with the error relative to the target (dimensionless gains).
    ``feedforward`` (reclaim only, with at least one stall goal) takes the cold bytes the
    monitor shows and leaves only the quota beyond them to the goals
    (controllers.feedforward); it is what a native reclaim policy without a ``kind``
    runs, and opt-in on the DAMON backend (docs/policies.md says why).
    """

    kind: Literal["adaptive", "pid", "log_pid", "feedforward"] = "adaptive"
    kp: FiniteFloat = 0.0
    ki: FiniteFloat = 0.0
    kd: FiniteFloat = 0.0
    probe_factor: FiniteFloat = Field(default=1.4, gt=1.0)


class ExcludeConfig(Section):
    """Processes a policy must never act on, by pid or by command name."""

    pids: Annotated[tuple[int, ...], AsTuple] = ()
    commands: Annotated[tuple[str, ...], AsTuple] = ()


class PolicyConfig(Section):
    """``policies[]`` — a goal-driven action on a monitor's regions (docs/policies.md).

    ``min_age`` and ``max_access`` say which regions are cold (no more than
    ``max_access`` of the samples saw an access, for at least ``min_age``);
    ``hot_access`` which are hot (tiering promotes them). ``max_bytes_per_tick`` and
    ``rate_limit`` bound what the actuator may touch; ``cgroup`` (a cgroup v2
    directory) makes reclaim write ``memory.reclaim`` there and read the cgroup's
    pressure. ``fast_nodes``/``slow_nodes`` name the tiers for tiering (default: the
    fastest memory tier and the next one). ``access_share`` and ``cpu_budget`` are the
    monitoring policy's goals (share of samples that see an access; monitoring CPU as
    a share of one CPU).
    """

    name: str
    kind: Literal["reclaim", "tiering", "monitoring"]
    monitor: str
    enabled: bool = True
    tuner: Literal["reactor", "kernel"] = "reactor"
    scheme: str | None = None
    goals: Annotated[tuple[GoalConfig, ...], AsTuple] = ()
    quota: QuotaConfig | None = None
    controller: ControllerConfig | None = None
    rate_limit: Rate | None = None
    max_bytes_per_tick: Size | None = None
    min_age: PositiveDuration = 5.0
    max_access: Ratio = 0.0
    hot_access: Ratio = 0.5
    cgroup: str | None = None
    fast_nodes: Annotated[tuple[int, ...], AsTuple] = ()
    slow_nodes: Annotated[tuple[int, ...], AsTuple] = ()
    access_share: Ratio = 0.04
    cpu_budget: Ratio = 0.01
    exclude: ExcludeConfig = Field(default_factory=ExcludeConfig)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _name(value)

    @field_validator("scheme")
    @classmethod
    def _scheme_ref(cls, value: str | None) -> str | None:
        if value is not None and not _SCHEME_REF.fullmatch(value):
            fail(
                "expected a scheme reference kdamond/context/scheme such as '0/0/1', "
                f"got {show(value)}"
            )
        return value

    @field_validator("cgroup")
    @classmethod
    def _cgroup_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            fail(f"expected an absolute cgroup v2 directory path, got {show(value)}")
        return value

    @field_validator("max_bytes_per_tick")
    @classmethod
    def _positive_bytes(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            fail(f"expected a size > 0 (or leave it out for no cap), got {value} bytes")
        return value

    @cross_check
    def _kernel_tuner_scheme(self) -> list[Issue]:
        if self.tuner == "kernel" and self.scheme is None:
            return [
                ("tuner", "tuner kernel tunes a DAMON scheme's quota: add scheme (e.g. '0/0/0')")
            ]
        return []

    @cross_check
    def _kernel_tuner_kind(self) -> list[Issue]:
        if self.tuner == "kernel" and self.kind == "tiering":
            return [("tuner", "tuner kernel is for reclaim and monitoring; tiering uses reactor")]
        return []

    @cross_check
    def _feedforward_fits(self) -> list[Issue]:
        if self.controller is None or self.controller.kind != "feedforward":
            return []
        if self.kind != "reclaim" or self.cgroup is not None:
            return [
                (
                    "controller.kind",
                    "controller feedforward drains a monitor's cold regions: it is for "
                    "reclaim policies without cgroup (memory.reclaim picks by LRU)",
                )
            ]
        if self.goals and all(g.metric in _MEMORY_GOAL_METRICS for g in self.goals):
            return [
                (
                    "controller.kind",
                    "controller feedforward steers what lies beyond the cold set by a stall "
                    "goal: add one (e.g. metric memory_psi_some, target 0.5%)",
                )
            ]
        return []

    @cross_check
    def _goals_given(self) -> list[Issue]:
        if self.kind in ("reclaim", "tiering") and not self.goals:
            return [
                (
                    "goals",
                    f"a {self.kind} policy needs at least one goal (e.g. metric "
                    "memory_psi_some, target 0.5%)",
                )
            ]
        return []

    @cross_check
    def _quota_given(self) -> list[Issue]:
        if self.kind in ("reclaim", "tiering") and self.quota is None:
            return [
                ("quota", f"a {self.kind} policy needs quota bounds: add quota: {{max: 64 MiB}}")
            ]
        return []

    @cross_check
    def _tiers_apart(self) -> list[Issue]:
        overlap = sorted(set(self.fast_nodes) & set(self.slow_nodes))
        if not overlap:
            return []
        return [
            (
                "fast_nodes",
                f"expected fast_nodes and slow_nodes apart, got node(s) "
                f"{', '.join(map(str, overlap))} in both",
            )
        ]

    @cross_check
    def _hot_above_cold(self) -> list[Issue]:
        if self.hot_access <= self.max_access and self.kind == "tiering":
            return [
                (
                    "hot_access",
                    f"expected hot_access > max_access (hot regions above cold ones), got "
                    f"{self.hot_access:.4g} <= {self.max_access:.4g}",
                )
            ]
        return []


# --- the whole file --------------------------------------------------------------------


def _items(data: Mapping[str, Any], key: str) -> list[tuple[int, Mapping[str, Any]]]:
    value = data.get(key)
    if not isinstance(value, list | tuple):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, Mapping)]


def _duplicates(
    data: Mapping[str, Any], section: str
) -> tuple[set[str], list[tuple[tuple[str | int, ...], str]]]:
    names: dict[str, int] = {}
    issues: list[tuple[tuple[str | int, ...], str]] = []
    for i, item in _items(data, section):
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if name in names:
            issues.append(
                (
                    (section, i, "name"),
                    f"duplicate {section[:-1]} name {name!r} (also {section}[{names[name]}])",
                )
            )
        else:
            names[name] = i
    return set(names), issues


def _scheme_exists(data: Mapping[str, Any], ref: str) -> bool:
    match = _SCHEME_REF.fullmatch(ref)
    if match is None:
        return True  # a malformed reference is reported by PolicyConfig
    k, c, s = (int(x) for x in match.groups())
    damon = data.get("damon")
    try:
        schemes = damon["kdamonds"][k]["contexts"][c].get("schemes", ())  # type: ignore[index]
        return isinstance(schemes, list | tuple) and s < len(schemes)
    except (KeyError, IndexError, TypeError, AttributeError):
        return False


def _scheme_ids(data: Mapping[str, Any]) -> list[str]:
    """Every ``kdamond/context/scheme`` id the damon section defines (any shape tolerated)."""
    damon = data.get("damon")
    kdamonds = damon.get("kdamonds") if isinstance(damon, Mapping) else None
    ids = []
    for k, kdamond in enumerate(kdamonds if isinstance(kdamonds, list | tuple) else ()):
        contexts = kdamond.get("contexts") if isinstance(kdamond, Mapping) else None
        for c, context in enumerate(contexts if isinstance(contexts, list | tuple) else ()):
            schemes = context.get("schemes") if isinstance(context, Mapping) else None
            if isinstance(schemes, list | tuple):
                ids += [f"{k}/{c}/{s}" for s in range(len(schemes))]
    return ids


def reference_issues(data: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-section checks on plain data: unique names, policies' monitors and schemes.

    Works on the raw YAML data (tolerating any shape) and on ``Config.model_dump()``.
    """
    monitors, issues = _duplicates(data, "monitors")
    _, policy_issues = _duplicates(data, "policies")
    issues += policy_issues
    for i, policy in _items(data, "policies"):
        monitor = policy.get("monitor")
        if isinstance(monitor, str) and monitor not in monitors:
            known = ", ".join(sorted(monitors)) or "none defined"
            issues.append(
                (
                    ("policies", i, "monitor"),
                    f"policy names monitor {monitor!r}, which does not exist (monitors: {known})",
                )
            )
        scheme = policy.get("scheme")
        if isinstance(scheme, str) and not _scheme_exists(data, scheme):
            known = ", ".join(_scheme_ids(data)) or "none defined"
            issues.append(
                (
                    ("policies", i, "scheme"),
                    f"policy names scheme {scheme!r} (kdamond/context/scheme), which does "
                    f"not exist in the damon section (schemes: {known})",
                )
            )
    return issues


class Config(Section):
    """A whole reactor config file. Build it with :func:`reactor.config.load_config`."""

    reactor: ReactorSection = Field(default_factory=ReactorSection)
    api: ApiConfig = Field(default_factory=ApiConfig)
    signals: Signals = Field(default_factory=Signals)
    monitors: Annotated[tuple[MonitorConfig, ...], AsTuple] = ()
    policies: Annotated[tuple[PolicyConfig, ...], AsTuple] = ()
    damon: DamonSection = Field(default_factory=DamonSection)

    @cross_check
    def _damon_filters(self) -> list[Issue]:
        return [(f"damon.{path}", message) for path, message in ignored_ops_filters(self.damon)]

    @model_validator(mode="after")
    def _references(self) -> Config:
        issues = reference_issues(self.model_dump())
        if issues:
            fail_many([(_dotted(path), message) for path, message in issues])
        return self

    def monitor(self, name: str) -> MonitorConfig:
        """The monitor called ``name`` (KeyError if there is none)."""
        for monitor in self.monitors:
            if monitor.name == name:
                return monitor
        raise KeyError(name)


def _dotted(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
