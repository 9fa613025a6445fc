"""Controllers for policies, built from config: goals -> a composite quota controller.

Every goal proposes a quota and the most conservative proposal wins
(:class:`controllers.compose.GoalComposite`, rule ``min``), so adding a goal can only
make a policy gentler. Each goal's direction says how its metric moves when the quota
grows: reclaim raises stalls, refaults and free memory (+1) and lowers used memory (-1);
demotion lowers the fast tier's use (-1), promotion raises it (+1).

Reclaim (:func:`reclaim_controller`) gets the cold-set feedforward
(:func:`controllers.tuners.reclaim_tuner`) unless the config names a controller kind:
``quota = drain + refill + excess``, the stall goals (PSI, refaults, user signals)
steering only the excess beyond the cold bytes the policy reads each tick, the memory
goals (free, node or fast-tier used ratio) capping the whole quota. It needs one stall
goal at least (the excess has nothing to steer it otherwise); without one, and with an
explicit ``controller.kind``, the per-goal composite runs as before.

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
from controllers.feedforward import ColdFeedforward, FeedforwardState
from controllers.logpid import LogPID
from controllers.tuners import QuotaGoalSpec, quota_tuner, reclaim_tuner
from reactor.policies.base import goal_name

if TYPE_CHECKING:
    from reactor.config import GoalConfig, PolicyConfig

__all__ = (
    "MEMORY_METRICS",
    "MIN_QUOTA_BYTES",
    "Knob",
    "QuotaController",
    "QuotaState",
    "carry_state",
    "goal_direction",
    "quota_controller",
    "reclaim_controller",
    "uses_feedforward",
)

#: The smallest quota: one page (DAMON's own floor is its minimum region size).
MIN_QUOTA_BYTES = 4096
#: Where a quota starts when ``quota.min`` is 0: 4 MiB, the kernel's own probe start.
START_QUOTA_BYTES = 4 << 20

Knob = Literal["reclaim", "demote", "promote"]
#: A quota policy's controller and its state: the per-goal composite, or (reclaim) the
#: cold-set feedforward.
QuotaController = GoalComposite | ColdFeedforward
QuotaState = CompositeState | FeedforwardState

#: Goals any reclaim moves (not only reclaim beyond the cold set): they cap the whole
#: reclaim quota (``beyond_cold=False``); every other goal is a stall signal that
#: steers the excess over the cold-set feedforward.
MEMORY_METRICS = frozenset({"free_ratio", "node_used_ratio", "fast_tier_used_ratio"})


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


def uses_feedforward(policy: PolicyConfig, *, default: bool = True) -> bool:
    """Whether a reclaim policy gets the cold-set feedforward: ``controller.kind:
    feedforward``, or no ``kind`` written and ``default`` (an explicit other kind,
    ``adaptive`` included, keeps the per-goal composite); always with at least one stall
    goal (not a :data:`MEMORY_METRICS` goal: the config checks it for an explicit kind)."""
    ctl = policy.controller
    if ctl is not None and "kind" in ctl.model_fields_set:
        chosen = ctl.kind == "feedforward"
    else:
        chosen = default
    return chosen and any(g.metric not in MEMORY_METRICS for g in policy.goals)


def reclaim_controller(
    policy: PolicyConfig, tick_s: float, *, feedforward_default: bool = True
) -> QuotaController:
    """A reclaim policy's quota controller (bytes per ``quota.per``; module doc).

    The feedforward's excess starts at the quota's own start (``quota.min``, else
    4 MiB): what the strictest stall goal allows beyond the cold set is not known
    before the first stall, and the excess is reclaimed from hot memory at once once
    the cold set is drained, so it starts where the composite's quota would.
    """
    if not uses_feedforward(policy, default=feedforward_default):
        return quota_controller(policy, "reclaim")
    low, high, start = _limits(policy)
    assert policy.quota is not None
    specs = [
        QuotaGoalSpec(
            name=goal_name(g),
            setpoint=g.target,
            direction=goal_direction(g.metric, "reclaim"),
            beyond_cold=g.metric not in MEMORY_METRICS,
        )
        for g in policy.goals
    ]
    ctl = policy.controller
    return reclaim_tuner(
        specs,
        starting_output=start,
        out_min=low,
        out_max=high,
        window_s=policy.quota.per,
        tick_s=tick_s,
        starting_excess=start,
        probe_factor=ctl.probe_factor if ctl is not None else 1.4,
    )


def _same_goals(old: QuotaController, new: QuotaController) -> bool:
    """Same kind of controller with the same goals, each of the same controller type."""
    if type(old) is not type(new):
        return False
    if isinstance(old, ColdFeedforward) and isinstance(new, ColdFeedforward):
        pairs = [(old.excess, new.excess)]
        if (old.absolute is None) != (new.absolute is None):
            return False
        if old.absolute is not None and new.absolute is not None:
            pairs.append((old.absolute, new.absolute))
    else:
        assert isinstance(old, GoalComposite) and isinstance(new, GoalComposite)
        pairs = [(old, new)]
    return all(
        [(g.name, type(g.controller)) for g in a.goals]
        == [(g.name, type(g.controller)) for g in b.goals]
        for a, b in pairs
    )


def carry_state(old: QuotaController, state: Any, new: QuotaController) -> Any:
    """The state ``new`` continues from after a reload (bumpless: the output stays).

    Same goals and kind: the state carries over (a changed target or gain re-tunes
    inside the controller). Otherwise ``new`` starts fresh and tracks the quota applied
    last; a fresh feedforward keeps its stall goals' own starting excess (it follows
    only an applied quota below it), so its next quota is the feedforward plus that.
    """
    same = _same_goals(old, new)
    if isinstance(new, ColdFeedforward):
        fresh: FeedforwardState = state if same else new.initial_state()
        return new.track(fresh, state.output)
    base: CompositeState = state if same else new.initial_state()
    return new.track(base, state.output)
