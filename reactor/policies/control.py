"""Controllers for policies, built from config: goals -> a composite quota controller.

Every goal proposes a quota and the most conservative proposal wins
(:class:`controllers.compose.GoalComposite`, rule ``min``), so adding a goal can only
make a policy gentler. Each goal's direction says how its metric moves when the quota
grows: reclaim raises stalls, refaults and free memory (+1) and lowers used memory (-1);
demotion lowers the fast tier's use (-1), promotion raises it (+1).

A reload keeps the controller's state where it can (same goals, same kind: the state
carries over untouched, so a changed target or gain is a bumpless re-tune inside the
controller) and otherwise starts a fresh controller *at the quota applied last*
(``track``), so the knob never jumps on a reload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from controllers.adaptive import AdaptiveLogGoal
from controllers.base import clamp
from controllers.compose import CompositeState, Goal, GoalComposite
from controllers.logpid import LogPID
from controllers.tuners import QuotaGoalSpec, quota_tuner
from reactor.policies.base import goal_name

if TYPE_CHECKING:
    from reactor.config import GoalConfig, PolicyConfig

__all__ = ("MIN_QUOTA_BYTES", "Knob", "carry_state", "goal_direction", "quota_controller")

#: The smallest quota: one page (DAMON's own floor is its minimum region size).
MIN_QUOTA_BYTES = 4096
#: Where a quota starts when ``quota.min`` is 0: 4 MiB, the kernel's own probe start.
START_QUOTA_BYTES = 4 << 20

Knob = Literal["reclaim", "demote", "promote"]


def goal_direction(metric: str, knob: Knob) -> Literal[1, -1]:
    """+1 when ``metric`` rises as the knob's quota rises, -1 when it falls."""
    if metric in ("fast_tier_used_ratio", "node_used_ratio"):
        return 1 if knob == "promote" else -1
    return 1


def _limits(policy: PolicyConfig) -> tuple[float, float, float]:
    quota = policy.quota
    assert quota is not None, "reclaim and tiering policies have quota bounds (config check)"
    low = float(max(quota.min, MIN_QUOTA_BYTES))
    high = float(max(quota.max, low))
    start = clamp(float(quota.min) if quota.min else START_QUOTA_BYTES, low, high)
    return low, high, start


def _goal_controller(  # noqa: PLR0917 - private, called once
    policy: PolicyConfig, goal: GoalConfig, knob: Knob, low: float, high: float, start: float
) -> Any:
    ctl = policy.controller
    direction = goal_direction(goal.metric, knob)
    if ctl is None or ctl.kind == "adaptive":
        probe = ctl.probe_factor if ctl is not None else 1.4
        return AdaptiveLogGoal(
            setpoint=goal.target,
            direction=direction,
            out_min=low,
            out_max=high,
            starting_output=start,
            probe_factor=probe,
            max_factor_per_s=8.0,
            slope_init=4.0,
            measurement_floor=goal.target / 1000,
        )
    # log_pid: the error on a log scale (gains per ln unit); pid: the error relative to
    # the target (dimensionless gains). Both act on ln(quota): a quota spans 4 KiB .. GiB,
    # so a step is a ratio and one tuning holds across the range.
    return LogPID(
        kp=ctl.kp,
        ki=ctl.ki,
        kd=ctl.kd,
        setpoint=goal.target,
        direction=direction,
        out_min=low,
        out_max=high,
        measurement_scale="log" if ctl.kind == "log_pid" else "relative",
        measurement_floor=goal.target / 1000,
        starting_output=start,
        max_factor_per_s=8.0,
    )


def quota_controller(policy: PolicyConfig, knob: Knob = "reclaim") -> GoalComposite:
    """The policy's quota controller (bytes per ``quota.per``), one goal per config goal."""
    low, high, start = _limits(policy)
    ctl = policy.controller
    if ctl is None or ctl.kind == "adaptive":
        specs = [
            QuotaGoalSpec(
                name=goal_name(g), setpoint=g.target, direction=goal_direction(g.metric, knob)
            )
            for g in policy.goals
        ]
        return quota_tuner(
            specs,
            starting_output=start,
            out_min=low,
            out_max=high,
            probe_factor=ctl.probe_factor if ctl is not None else 1.4,
        )
    goals = tuple(
        Goal(goal_name(g), _goal_controller(policy, g, knob, low, high, start))
        for g in policy.goals
    )
    return GoalComposite(goals=goals, rule="min")


def carry_state(old: GoalComposite, state: CompositeState, new: GoalComposite) -> CompositeState:
    """The state ``new`` continues from after a reload (bumpless: the output stays)."""
    same = [g.name for g in old.goals] == [g.name for g in new.goals] and all(
        type(a.controller) is type(b.controller) for a, b in zip(old.goals, new.goals, strict=True)
    )
    base = state if same else new.initial_state()
    return new.track(base, state.output)
