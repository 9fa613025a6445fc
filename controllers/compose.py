"""Several goals on one knob, combined by one stated rule.

Rule (``rule="min"``, the default, for knobs where *more is more aggressive*: reclaim
quota, demotion bytes, region count under a cost budget): every goal runs its own
controller and proposes the output *it* would allow; the **smallest proposal wins**, i.e.
the most conservative goal binds. Each tick reports which goal bound. ``rule="max"`` is
the mirror image for knobs where *less* is more aggressive (e.g. a sampling interval,
where a shorter interval costs more).

Why the non-binding goals do not wind up: after the choice, every goal's controller is
told the output really applied (``track``). Each goal therefore proposes a change
*relative to the applied output*; a goal that has been out-voted for an hour does not
carry an hour of integral, and takes over without a bump the moment it becomes the
most conservative one. (The kernel's own rule, "the highest score wins", is the same
rule for its proportional loop; :mod:`controllers.kernel` reproduces it.)

Missing samples: a goal whose measurement is missing holds, i.e. proposes the current
output. Under ``min`` that means a goal without data can stop the knob from becoming
more aggressive but never makes it so. If every goal is missing, the output holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controllers.base import Decision, LogValue, TrackingController

__all__ = ("CompositeOutput", "CompositeState", "Goal", "GoalComposite")


@dataclass(frozen=True)
class Goal:
    """A named goal and the controller that turns its measurement into an allowed output."""

    name: str
    controller: TrackingController[Any, float, Decision]


@dataclass(frozen=True)
class CompositeState:
    """Per-goal controller states (in goal order), the applied output and who bound it."""

    goals: tuple[Any, ...]
    output: float
    binding: str | None = None


@dataclass(frozen=True)
class CompositeOutput:
    """The combined output, the binding goal and every goal's own proposal."""

    output: float
    binding: str | None
    allowed: tuple[tuple[str, float], ...]
    decisions: tuple[Decision, ...]
    held: str | None = None

    def log_fields(self) -> Mapping[str, LogValue]:
        """Output, binding goal, each goal's proposal, and the binding goal's terms."""
        fields: dict[str, LogValue] = {
            "output": self.output,
            "binding_goal": self.binding,
            "held": self.held,
        }
        for name, allowed in self.allowed:
            fields[f"allowed.{name}"] = allowed
        for (name, _), decision in zip(self.allowed, self.decisions, strict=True):
            if name == self.binding:
                for key, value in decision.log_fields().items():
                    if key != "output":
                        fields[f"binding.{key}"] = value
        return fields


@dataclass(frozen=True)
class GoalComposite:
    """Goals combined by ``rule`` (``"min"``: most conservative proposal wins)."""

    goals: tuple[Goal, ...]
    rule: Literal["min", "max"] = "min"

    def __post_init__(self) -> None:
        if not self.goals:
            raise ValueError("a goal composite needs at least one goal, got none")
        names = [g.name for g in self.goals]
        if len(set(names)) != len(names):
            raise ValueError(f"goal names must be unique, got {names!r}")
        if self.rule not in ("min", "max"):
            raise ValueError(f"rule must be 'min' or 'max', got {self.rule!r}")

    def _pick(self, proposals: list[tuple[str, float]]) -> tuple[str, float]:
        if self.rule == "min":
            return min(proposals, key=lambda item: item[1])
        return max(proposals, key=lambda item: item[1])

    def initial_state(self) -> CompositeState:
        """Every goal at its starting output, re-based onto the combined one."""
        states = [g.controller.initial_state() for g in self.goals]
        starts = [
            (g.name, g.controller.output_of(s)) for g, s in zip(self.goals, states, strict=True)
        ]
        _, output = self._pick(starts)
        tracked = tuple(
            g.controller.track(s, output) for g, s in zip(self.goals, states, strict=True)
        )
        return CompositeState(goals=tracked, output=output)

    def track(self, state: CompositeState, applied: float) -> CompositeState:
        """Follow the output really applied (e.g. an actuator's rate limit)."""
        tracked = tuple(
            g.controller.track(s, applied) for g, s in zip(self.goals, state.goals, strict=True)
        )
        return CompositeState(goals=tracked, output=applied, binding=state.binding)

    def step(
        self,
        state: CompositeState,
        measurement: Mapping[str, float | None] | None,
        now: float,
    ) -> tuple[CompositeState, CompositeOutput]:
        """Step every goal with its own measurement, apply the rule, track the result."""
        measurements: Mapping[str, float | None] = measurement or {}
        states: list[Any] = []
        decisions: list[Decision] = []
        proposals: list[tuple[str, float]] = []
        live: list[tuple[str, float]] = []
        for goal, goal_state in zip(self.goals, state.goals, strict=True):
            new_state, decision = goal.controller.step(goal_state, measurements.get(goal.name), now)
            states.append(new_state)
            decisions.append(decision)
            proposals.append((goal.name, decision.output))
            if measurements.get(goal.name) is not None:
                live.append((goal.name, decision.output))
        if not live:
            held = CompositeOutput(
                output=state.output,
                binding=state.binding,
                allowed=tuple(proposals),
                decisions=tuple(decisions),
                held="missing_sample",
            )
            return CompositeState(tuple(states), state.output, state.binding), held
        binding, output = self._pick(proposals)
        tracked = tuple(
            g.controller.track(s, output) for g, s in zip(self.goals, states, strict=True)
        )
        decision = CompositeOutput(
            output=output,
            binding=binding,
            allowed=tuple(proposals),
            decisions=tuple(decisions),
        )
        return CompositeState(goals=tracked, output=output, binding=binding), decision
