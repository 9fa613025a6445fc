"""Goal composition: the most conservative goal binds, the others do not wind up."""

from __future__ import annotations

import pytest

from controllers.adaptive import AdaptiveLogGoal
from controllers.compose import Goal, GoalComposite
from controllers.pid import PID


def _seeker(setpoint: float, start: float = 100.0) -> AdaptiveLogGoal:
    return AdaptiveLogGoal(setpoint=setpoint, out_min=1.0, out_max=1e9, starting_output=start)


def test_min_rule_reports_the_binding_goal() -> None:
    """The smallest proposal is applied and its goal is named; all proposals are logged."""
    composite = GoalComposite((Goal("psi", _seeker(1.0)), Goal("refaults", _seeker(1.0))))
    state = composite.initial_state()
    # psi is over its goal (wants less), refaults under it (wants more).
    state, out = composite.step(state, {"psi": 4.0, "refaults": 0.5}, 0.0)
    assert out.binding == "psi"
    assert out.output == min(v for _, v in out.allowed)
    assert out.output < 100.0
    fields = out.log_fields()
    assert fields["binding_goal"] == "psi"
    assert set(fields) >= {"allowed.psi", "allowed.refaults", "binding.phase"}


def test_max_rule_mirrors() -> None:
    """rule='max' applies the largest proposal."""
    composite = GoalComposite((Goal("a", _seeker(1.0)), Goal("b", _seeker(1.0))), rule="max")
    _, out = composite.step(composite.initial_state(), {"a": 4.0, "b": 0.5}, 0.0)
    assert out.binding == "b"
    assert out.output > 100.0


def test_non_binding_goal_does_not_wind_up() -> None:
    """A goal out-voted for 200 ticks proposes a step from the applied output, not a backlog."""
    composite = GoalComposite((Goal("tight", _seeker(1.0)), Goal("loose", _seeker(1.0))))
    state = composite.initial_state()
    for k in range(200):  # 'tight' sits exactly at its goal; 'loose' sees no pressure at all
        state, out = composite.step(state, {"tight": 1.0, "loose": 0.0}, float(k))
        assert out.binding == "tight"
    applied = out.output
    state, out = composite.step(state, {"tight": 0.5, "loose": 0.0}, 200.0)
    # The loose goal asks for one probe step (x4) over the applied output, not 200 of them.
    assert dict(out.allowed)["loose"] == pytest.approx(applied * 4.0)


def test_missing_goal_holds_and_all_missing_holds_output() -> None:
    """A goal without a sample proposes the current output; with none at all, hold."""
    composite = GoalComposite((Goal("a", _seeker(1.0)), Goal("b", _seeker(1.0))))
    state = composite.initial_state()
    state, out = composite.step(state, {"a": 0.0}, 0.0)
    assert out.output == pytest.approx(100.0)  # b holds at 100 and binds, a wanted x4
    assert out.binding == "b"
    state, out = composite.step(state, {}, 1.0)
    assert out.held == "missing_sample"
    assert out.output == pytest.approx(100.0)


def test_pid_goals_compose_too() -> None:
    """PIDs are tracking controllers: a PID goal follows the applied output."""
    slow = PID(ki=1.0, setpoint=10.0, out_min=0.0, out_max=100.0, starting_output=5.0)
    fast = PID(ki=5.0, setpoint=10.0, out_min=0.0, out_max=100.0, starting_output=5.0)
    composite = GoalComposite((Goal("slow", slow), Goal("fast", fast)))
    state = composite.initial_state()
    for k in range(5):
        state, out = composite.step(state, {"slow": 0.0, "fast": 0.0}, float(k))
    assert out.binding == "slow"
    assert out.output == pytest.approx(5.0 + 4 * 10.0)  # 4 ticks of ki*e*dt = 10


def test_composite_needs_unique_goals() -> None:
    """Duplicate or missing goals are refused with the names."""
    with pytest.raises(ValueError, match=r"goal names must be unique, got \['a', 'a'\]"):
        GoalComposite((Goal("a", _seeker(1.0)), Goal("a", _seeker(1.0))))
    with pytest.raises(ValueError, match="at least one goal"):
        GoalComposite(())
