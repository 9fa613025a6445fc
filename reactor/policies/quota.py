"""A policy whose knob is a quota (bytes per ``quota.per``): reclaim and tiering.

The tick is the same for every backend: goals from the bus, then
:meth:`QuotaPolicy.prepare` (what the actuator could act on now: a reclaim policy's
pageable cold bytes, which the cold-set feedforward needs *before* it steps), the
controller's pure ``step``, then :meth:`QuotaPolicy.act` (backend specific) with the
quota and the prepared plan. When the actuator's limits let through less than the quota
(``Acted.applied_output``), the controller tracks what was applied, so it does not wind
up against a limit. When every input is missing or stale the controller holds and
nothing is acted on (a native policy never acts on absent data; a DAMON scheme keeps the
quota last committed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controllers.feedforward import ColdFeedforward
from reactor.policies.base import PAGE_SIZE, Acted, Policy, PolicyContext, read_goals
from reactor.policies.control import (
    Knob,
    QuotaController,
    QuotaState,
    carry_state,
    quota_controller,
    reclaim_controller,
)

__all__ = ("QuotaPolicy",)


class QuotaPolicy(Policy):
    """Goals -> quota controller -> :meth:`act`; subclasses implement ``act``."""

    knob: Knob = "reclaim"
    #: whether this actuator acts on the policy's cold regions (a cold-set feedforward
    #: applies); ``memory.reclaim`` picks by the kernel's LRU, not by the monitor
    cold_actuator = True
    #: whether the feedforward is the default when the config names no controller kind
    feedforward_default = True

    def __init__(self, cfg: Any, ctx: PolicyContext) -> None:
        super().__init__(cfg, ctx)
        self.controller: QuotaController = self._build(cfg)
        self.state: QuotaState = self.controller.initial_state()

    def _build(self, cfg: Any) -> QuotaController:
        if not self.cold_actuator:
            return quota_controller(cfg, self.knob)
        return reclaim_controller(
            cfg, self.ctx.config.reactor.tick, feedforward_default=self.feedforward_default
        )

    @property
    def feedforward(self) -> bool:
        """True when the controller is the cold-set feedforward (it reads cold bytes)."""
        return isinstance(self.controller, ColdFeedforward)

    def update(self, cfg: Any) -> None:
        """New goals, gains or quota bounds, continuing from the quota applied last."""
        super().update(cfg)
        new = self._build(cfg)
        self.state = carry_state(self.controller, self.state, new)
        self.controller = new
        self.log.info("policy_updated", output=self.state.output, goals=len(cfg.goals))

    async def tick(self, now: float, dt: float) -> None:
        """Read goals, prepare, step the controller, act with the quota, log one line."""
        inputs = read_goals(self.ctx.bus, self.cfg, self.ctx.config, now)
        self.goal_inputs = inputs
        stale = [why for g in inputs if (why := g.why_missing) is not None]
        measurement: dict[str, float | None] = {g.name: g.value for g in inputs}
        plan = await self.prepare(now)
        extra: dict[str, float | None] = {}
        if self.feedforward:
            extra.update(self.feedforward_inputs(plan, now))
            if "refault_rate" not in measurement:
                extra["refault_rate"] = self._refault_rate(now)
        for key, value in extra.items():
            measurement.setdefault(key, value)
        self.state, decision = self.controller.step(self.state, measurement, now)  # type: ignore[arg-type]
        held = decision.held
        if held is not None and stale:
            held = f"{held}: " + "; ".join(stale)
        acted = Acted() if decision.held is not None else await self.act(decision, now, dt, plan)
        applied = acted.applied_output
        if applied is not None and applied < decision.output:
            self.state = self.controller.track(self.state, applied)  # type: ignore[arg-type]
        inputs_log: dict[str, Any] = {g.name: g.value for g in inputs}
        inputs_log.update(extra)
        self.emit_tick(
            inputs=inputs_log,
            terms=decision.log_fields(),
            output=decision.output,
            acted=acted,
            held=held,
            stale=stale,
        )

    def _refault_rate(self, now: float) -> float | None:
        """The node's refault rate (bytes/s, vmstat) for the feedforward's refill bound
        when no goal reads it already (None: no fresh vmstat sample)."""
        sample = self.ctx.bus.fresh("vmstat", now, self.ctx.config.signals.vmstat.max_age)
        if sample is None:
            return None
        anon = getattr(sample.value, "workingset_refault_anon_per_s", None)
        file = getattr(sample.value, "workingset_refault_file_per_s", None)
        if anon is None and file is None:
            return None
        return float((anon or 0.0) + (file or 0.0)) * PAGE_SIZE

    async def prepare(self, now: float) -> Any:
        """What the actuator could act on now, computed before the step and handed to
        :meth:`act` (default: nothing to prepare)."""
        return None

    def feedforward_inputs(self, plan: Any, now: float) -> Mapping[str, float | None]:
        """The feedforward's extra readings (``cold_bytes``, ``cold_reclaimed_bytes``,
        ``refault_rate``) from the prepared ``plan``; default: none (hold the drain)."""
        return {}

    async def act(self, decision: Any, now: float, dt: float, plan: Any = None) -> Acted:
        """Apply the quota ``decision.output``; report what measurably happened."""
        raise NotImplementedError
