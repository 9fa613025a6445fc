"""A policy whose knob is a quota (bytes per ``quota.per``): reclaim and tiering.

The tick is the same for every backend: goals from the bus, the composite controller's
pure ``step``, then :meth:`QuotaPolicy.act` (backend specific) with the quota. When
every goal is missing or stale the controller holds and nothing is acted on (a native
policy never acts on absent data; a DAMON scheme keeps the quota last committed).
"""

from __future__ import annotations

from typing import Any

from controllers.compose import CompositeOutput, CompositeState, GoalComposite
from reactor.policies.base import Acted, Policy, PolicyContext, read_goals
from reactor.policies.control import Knob, carry_state, quota_controller

__all__ = ("QuotaPolicy",)


class QuotaPolicy(Policy):
    """Goals -> quota controller -> :meth:`act`; subclasses implement ``act``."""

    knob: Knob = "reclaim"

    def __init__(self, cfg: Any, ctx: PolicyContext) -> None:
        super().__init__(cfg, ctx)
        self.controller: GoalComposite = quota_controller(cfg, self.knob)
        self.state: CompositeState = self.controller.initial_state()

    def update(self, cfg: Any) -> None:
        """New goals, gains or quota bounds, continuing from the quota applied last."""
        super().update(cfg)
        new = quota_controller(cfg, self.knob)
        self.state = carry_state(self.controller, self.state, new)
        self.controller = new
        self.log.info("policy_updated", output=self.state.output, goals=len(cfg.goals))

    async def tick(self, now: float, dt: float) -> None:
        """Read goals, step the controller, act with the quota, log one line."""
        inputs = read_goals(self.ctx.bus, self.cfg, self.ctx.config, now)
        self.goal_inputs = inputs
        stale = [why for g in inputs if (why := g.why_missing) is not None]
        measurement = {g.name: g.value for g in inputs}
        self.state, decision = self.controller.step(self.state, measurement, now)
        held = decision.held
        if held is not None and stale:
            held = f"{held}: " + "; ".join(stale)
        acted = Acted() if decision.held is not None else await self.act(decision, now, dt)
        self.emit_tick(
            inputs={g.name: g.value for g in inputs},
            terms=decision.log_fields(),
            output=decision.output,
            acted=acted,
            held=held,
            stale=stale,
        )

    async def act(self, decision: CompositeOutput, now: float, dt: float) -> Acted:
        """Apply the quota ``decision.output``; report what measurably happened."""
        raise NotImplementedError
