"""One tick of a policy: newest samples -> pure controller step -> actuator -> one log line.

A policy is a goal (one or more :class:`~reactor.config.GoalConfig`), a controller
(pure, from ``controllers/``) and an actuator. Each tick (``reactor.tick``, half a tick
after the sources' reads so it never races them) it

1. reads the newest sample of every topic its goals need (``bus.fresh``); a sample older
   than its source's ``max_age`` counts as missing, and the tick says which topic and how
   old it was (``stale`` field), so the controller holds instead of acting on old data;
2. calls the controller's pure ``step`` (a missing goal proposes the current output:
   it can stop the knob from becoming more aggressive, never make it so);
3. hands the decision to its actuator within the policy's limits (``max_bytes_per_tick``,
   ``rate_limit``, dry-run), which reports what measurably happened;
4. logs ONE ``controller_tick`` event: inputs, controller terms (``decision.log_fields()``),
   output, binding goal, and requested vs measured bytes; and keeps a
   :class:`~reactor.api.status.PolicyStatus` for ``reactor status`` and the metrics.

Goal metrics and the bus topics they read (docs/policies.md):

=======================  =====================================================
memory_psi_some / _full  ``psi.memory`` (``psi.cgroup.memory`` with ``cgroup``)
refault_rate             ``vmstat`` workingset_refault_{anon,file}/s x page size
                         (the cgroup source's when one samples ``cgroup``)
free_ratio               ``meminfo`` MemAvailable / MemTotal
fast_tier_used_ratio     ``tiers``: used / total of the fast nodes (or tier)
node_used_ratio          ``tiers``: used / total of ``node``
user                     ``user.<signal>`` (fed by :meth:`Reactor.feed`)
=======================  =====================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus

from controllers.base import LogValue
from reactor.engine.monitors import access_max_age
from reactor.engine.ticker import DECIDE_PHASE, Ticker
from reactor.log import TICK_LOG_HEARTBEAT, output_moved

if TYPE_CHECKING:
    from reactor.api.status import GoalStatus, PolicyStatus
    from reactor.config import Config, GoalConfig, PolicyConfig
    from reactor.engine.bus import Bus
    from reactor.engine.damon_monitors import DamonMonitors
    from reactor.engine.monitors import AccessView, NativeMonitors
    from reactor.kernelfs import KernelFS

__all__ = (
    "PAGE_SIZE",
    "Acted",
    "GoalInput",
    "Policy",
    "PolicyContext",
    "goal_name",
    "goal_source",
    "goal_value",
    "read_goals",
)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_log = structlog.get_logger("reactor.policy")


@dataclass
class PolicyContext:
    """What a policy reads and acts through; ``config`` is replaced on reload."""

    config: Config
    bus: Bus
    fs: KernelFS
    backend: str
    damon: DamonMonitors | None = None
    native: NativeMonitors | None = None


@dataclass(frozen=True)
class GoalInput:
    """One goal's input this tick: the value (None: missing or stale) and why."""

    name: str
    goal: GoalConfig
    topic: str
    value: float | None
    age_s: float | None
    max_age_s: float

    @property
    def why_missing(self) -> str | None:
        """``None`` when the value is there, else which topic and how old it was."""
        if self.value is not None:
            return None
        if self.age_s is None:
            return f"{self.topic}: no sample yet"
        if self.age_s > self.max_age_s:
            return f"{self.topic}: sample {self.age_s:.3g} s old (max {self.max_age_s:.3g} s)"
        return f"{self.topic}: no {self.goal.metric} in the sample"


@dataclass
class Acted:
    """What the actuator did this tick: bytes asked for and bytes measured to move
    (left RSS or the page cache, changed node), with further fields for the log.

    ``applied_output``: the quota (controller output units) the actuator's limits let
    through when they cut the one asked for (``max_bytes_per_tick``, the rate limit, a
    commit threshold); None when nothing limited it. Running out of candidates is not a
    limit: the quota was there, nothing more was cold.
    """

    requested_bytes: int = 0
    measured_bytes: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    applied_output: float | None = None


def goal_name(goal: GoalConfig) -> str:
    """The goal's name in controller logs: the metric, with its signal or node."""
    if goal.metric == "user":
        return f"user.{goal.signal}"
    if goal.node is not None:
        return f"{goal.metric}.node{goal.node}"
    return goal.metric


def goal_source(goal: GoalConfig, policy: PolicyConfig, config: Config) -> tuple[str, float]:
    """(bus topic, max age in seconds) a goal reads."""
    signals = config.signals
    if goal.metric in ("memory_psi_some", "memory_psi_full"):
        topic = "psi.cgroup.memory" if policy.cgroup is not None else "psi.memory"
        return topic, signals.psi.max_age
    if goal.metric == "refault_rate":
        cgroup = _cgroup_source(policy, config)
        if cgroup is not None:
            return f"cgroup.{cgroup.name}", cgroup.max_age
        return "vmstat", signals.vmstat.max_age
    if goal.metric == "free_ratio":
        return "meminfo", signals.meminfo.max_age
    if goal.metric in ("fast_tier_used_ratio", "node_used_ratio"):
        return "tiers", signals.tiers.max_age
    return f"user.{goal.signal}", 3 * config.reactor.tick


def _cgroup_source(policy: PolicyConfig, config: Config) -> Any:
    if policy.cgroup is None:
        return None
    for cgroup in config.signals.cgroups:
        if cgroup.enabled and cgroup.path.rstrip("/") == policy.cgroup.rstrip("/"):
            return cgroup
    return None


def goal_value(goal: GoalConfig, policy: PolicyConfig, value: Any) -> float | None:
    """The goal's measurement from its topic's sample, in the goal's unit."""
    metric = goal.metric
    try:
        if metric == "memory_psi_some":
            return float(value.some_share)
        if metric == "memory_psi_full":
            full = value.full_share
            return None if full is None else float(full)
        if metric == "refault_rate":
            anon = value.workingset_refault_anon_per_s
            file = value.workingset_refault_file_per_s
            if anon is None and file is None:
                return None
            return ((anon or 0.0) + (file or 0.0)) * PAGE_SIZE
        if metric == "free_ratio":
            return float(value.available_ratio)
        if metric == "fast_tier_used_ratio":
            return fast_used_ratio(value, policy.fast_nodes)
        if metric == "node_used_ratio":
            assert goal.node is not None
            return nodes_used_ratio(value, (goal.node,))
        return float(value)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def nodes_used_ratio(tiers: Any, nodes: Sequence[int]) -> float | None:
    """Used / total memory of ``nodes`` (0..1), from a :class:`~reactor.signals.tiers.Tiers`:
    the pages on the per-CPU free lists count as free (:attr:`~reactor.signals.tiers.
    NumaNode.used_bytes`; node meminfo's MemUsed counts them used, up to ~5 % of a node)."""
    total = used = 0
    for node in nodes:
        view = tiers.node(node)
        total += view.total_bytes
        used += view.used_bytes
    return used / total if total else None


def fast_used_ratio(tiers: Any, fast_nodes: Sequence[int]) -> float | None:
    """The fast tier's used ratio: of ``fast_nodes``, else of the fastest memory tier."""
    if fast_nodes:
        return nodes_used_ratio(tiers, fast_nodes)
    for tier in tiers.tiers:
        if tier.total_bytes:
            return float(tier.used_ratio)
    return None


def read_goals(bus: Bus, policy: PolicyConfig, config: Config, now: float) -> list[GoalInput]:
    """Every goal's newest fresh value (None when missing or stale, with the reason)."""
    out = []
    for goal in policy.goals:
        topic, max_age = goal_source(goal, policy, config)
        sample = bus.fresh(topic, now, max_age)
        if sample is None:
            last = bus.peek(topic)
            age = None if last is None else now - last.stamp
            out.append(GoalInput(goal_name(goal), goal, topic, None, age, max_age))
            continue
        value = goal_value(goal, policy, sample.value)
        if value is not None and not math.isfinite(value):
            value = None
        out.append(GoalInput(goal_name(goal), goal, topic, value, now - sample.stamp, max_age))
    return out


class Policy:
    """The tick loop, logging and status every policy shares.

    Subclasses implement :meth:`tick` (one control step: read, step, act) and may
    override :meth:`start` (take over the knob), :meth:`update` (a reload) and
    :meth:`restore` (give the knob back at shutdown).
    """

    output_unit = "bytes"

    def __init__(self, cfg: PolicyConfig, ctx: PolicyContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.log = _log.bind(policy=cfg.name, kind=cfg.kind, monitor=cfg.monitor)
        self.output: float | None = None
        self.held: str | None = None
        self.controller_terms: dict[str, float | None] = {}
        self.goal_inputs: list[GoalInput] = []
        self.binding: str | None = None
        self.requested_total = 0
        self.measured_total = 0
        self.ticks = 0
        self._noted: set[str] = set()
        #: ((held, binding, stale), output, emitted) of the last tick logged at info, and
        #: the ticks emitted so far, for ``reactor.log_ticks: changes``
        self._logged: tuple[Any, ...] | None = None
        self._emitted = 0
        self._scope: anyio.CancelScope | None = None
        self.ticker: Ticker | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def dry_run(self) -> bool:
        return self.ctx.config.reactor.dry_run

    # -- the task ----------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Take over the knob, then tick on absolute deadlines until cancelled."""
        with anyio.CancelScope() as self._scope:
            await self.start()
            task_status.started()
            # Just after the sources' reads of each grid instant, in the same wake-up
            # (reactor.engine.ticker.DECIDE_PHASE). The first step comes 1.5 to 2.5
            # ticks after the start, with a whole tick behind it (the first grid point
            # is passed).
            await anyio.sleep(self.ctx.config.reactor.tick / 2)
            self.ticker = Ticker(
                lambda: self.ctx.config.reactor.tick, phase=DECIDE_PHASE, immediate=False
            )
            await self.ticker.next()
            while True:
                tick = await self.ticker.next()
                if tick.skipped:
                    self.log.warning("tick_overrun", task="policy", skipped=tick.skipped)
                await self.tick(tick.now, tick.dt)
                self.ticks += 1

    def cancel(self) -> None:
        """Stop this policy's task (a reload removed or replaced it)."""
        if self._scope is not None:
            self._scope.cancel()

    async def start(self) -> None:
        """Take over the knob (default: nothing to take over)."""

    async def restore(self) -> None:
        """Give the knob back at shutdown (default: nothing was changed)."""

    async def tick(self, now: float, dt: float) -> None:
        """One control step; subclasses implement it."""
        raise NotImplementedError

    def update(self, cfg: PolicyConfig) -> None:
        """A reload kept this policy (same name and kind): take the new settings."""
        self.cfg = cfg
        self.log = _log.bind(policy=cfg.name, kind=cfg.kind, monitor=cfg.monitor)

    # -- helpers for subclasses --------------------------------------------------------
    def tick_bytes(self, quota: float, dt: float) -> int:
        """Bytes one tick may act on: ``quota`` per ``quota.per`` scaled to the tick (a
        late tick counts at most three ticks), cut to ``max_bytes_per_tick``, in whole
        pages (the kernel acts on whole pages: a budget of 4,115 bytes cut as a range of
        4,115 bytes would page out or move two)."""
        assert self.cfg.quota is not None
        tick = self.ctx.config.reactor.tick
        span = dt if dt > 0 else tick
        nbytes = int(quota * min(span, 3 * tick) / self.cfg.quota.per)
        if self.cfg.max_bytes_per_tick is not None:
            nbytes = min(nbytes, self.cfg.max_bytes_per_tick)
        return nbytes - nbytes % PAGE_SIZE

    def note_once(self, key: str, event: str, **fields: Any) -> None:
        """Log ``event`` once per policy (e.g. why anonymous memory is not paged out)."""
        if key in self._noted:
            return
        self._noted.add(key)
        self.log.info(event, **fields)

    def access_view(self, now: float) -> tuple[AccessView | None, str | None]:
        """The monitor's newest fresh snapshot view, or (None, why it is missing)."""
        config = self.ctx.config
        topic = f"access.{self.cfg.monitor}"
        backend = "native" if self.ctx.backend == "native" else "damon"
        _, aggregation = config.monitor(self.cfg.monitor).intervals(backend)
        last = self.ctx.bus.peek(topic)
        view = None if last is None else last.value
        max_age = access_max_age(view, aggregation, config.reactor.tick)
        sample = self.ctx.bus.fresh(topic, now, max_age)
        if sample is None:
            last = self.ctx.bus.peek(topic)
            if last is None:
                return None, f"{topic}: no snapshot yet"
            return None, f"{topic}: snapshot {now - last.stamp:.3g} s old (max {max_age:.3g} s)"
        return sample.value, None

    def emit_tick(
        self,
        *,
        inputs: Mapping[str, LogValue],
        terms: Mapping[str, LogValue],
        output: float | None,
        acted: Acted,
        held: str | None,
        stale: Sequence[str] = (),
    ) -> None:
        """Log the one ``controller_tick`` event and update the status fields."""
        self.output = output
        self.held = held
        self.requested_total += acted.requested_bytes
        self.measured_total += acted.measured_bytes
        binding = terms.get("binding_goal")
        self.binding = binding if isinstance(binding, str) else None
        self.controller_terms = {
            k: float(v)
            for k, v in terms.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "output"
        }
        emit = self.log.info if self._tick_news(output, held, acted, stale) else self.log.debug
        emit(
            "controller_tick",
            inputs=dict(inputs),
            stale=list(stale) or None,
            controller=dict(terms),
            output=output,
            output_unit=self.output_unit,
            held=held,
            requested_bytes=acted.requested_bytes,
            measured_bytes=acted.measured_bytes,
            dry_run=self.dry_run,
            **acted.fields,
        )

    def _tick_news(
        self, output: float | None, held: str | None, acted: Acted, stale: Sequence[str]
    ) -> bool:
        """Whether this tick's line goes at info: always under ``log_ticks: every``;
        under ``changes`` when bytes were asked for or moved, the held reason, binding
        goal or stale topics changed, the output moved (:func:`reactor.log.output_moved`),
        or :data:`~reactor.log.TICK_LOG_HEARTBEAT` ticks passed since the last one."""
        self._emitted += 1
        key = (held, self.binding, tuple(stale))
        last = self._logged
        news = (
            self.ctx.config.reactor.log_ticks == "every"
            or last is None
            or acted.requested_bytes > 0
            or acted.measured_bytes > 0
            or key != last[0]
            or output_moved(output, last[1])
            or self._emitted - last[2] >= TICK_LOG_HEARTBEAT
        )
        if news:
            self._logged = (key, output, self._emitted)
        return news

    def status(self) -> PolicyStatus:
        """The policy's entry in the status document (docs/observability.md)."""
        from reactor.api.status import ActedStatus, GoalStatus, PolicyStatus

        goals: list[GoalStatus] = [
            GoalStatus(
                metric=g.name,
                target=g.goal.target,
                measurement=g.value,
                binding=g.name == self.binding,
            )
            for g in self.goal_inputs
        ]
        if not self.goal_inputs:
            goals = [
                GoalStatus(metric=goal_name(g), target=g.target, measurement=None, binding=False)
                for g in self.cfg.goals
            ]
        held = self.held
        if held is None and self.dry_run:
            held = "dry_run"
        return PolicyStatus(
            name=self.cfg.name,
            kind=self.cfg.kind,
            monitor=self.cfg.monitor,
            goals=goals,
            binding=self.binding,
            output=self.output,
            output_unit=self.output_unit,
            controller=dict(self.controller_terms),
            acted=ActedStatus(
                requested_bytes=self.requested_total, measured_bytes=self.measured_total
            ),
            held=held,
        )
