"""A log-log goal seeker with an online gain estimate: reactor's per-goal tuner core.

The knobs reactor tunes (quota bytes, sampling interval, region count) act on their goal
metric through a monotonic but strongly nonlinear and load-dependent map: a DAMOS quota
does nothing to PSI until it exceeds the cold set, then stalls rise steeply and
saturate. A PID with fixed gains is tuned for one point of that map only. The kernel's
own loop (``next = last * (2 - score)``) is a fixed-gain integral controller in log space
with a x2 cap, which oscillates where the map is steep and crawls where it is far.

This controller works on ``x = ln(output)`` and ``z = ln(metric)``:

* **No signal** (metric at or below ``measurement_floor``: the goal sees nothing yet),
  it probes: ``x += direction * ln(probe_factor)`` per tick.
* **Signal**: a damped Newton step on the local log-log slope, ``dx = gain * e / g`` with
  ``e = ln(setpoint) - z``. ``g`` is estimated online by the secant between consecutive
  ticks (when the output moved enough for the change to be above noise), kept in
  ``[slope_min, slope_max]`` and smoothed. With the true slope ``g_true`` the error
  shrinks by ``1 - gain * g_true / g`` per tick: no overshoot as long as the estimate
  is not below the truth by more than ``1/gain`` (hence ``slope_init`` is chosen high:
  a cautious first step, then the secant sharpens it).
* **Deadband**: within ``deadband`` (ln units, about relative) of the setpoint, steps
  are scaled down by ``deadband_gain``, rising linearly to the full step at three times
  the deadband, so measurement noise does not turn into output churn.
* Steps are capped at ``max_factor_per_s ** dt`` either way, outputs at the limits.

It follows the :class:`~controllers.base.TrackingController` protocol: ``track`` moves
``x`` to the applied output (composition, actuator limits, manual mode), so it never
winds up; the secant uses applied outputs, so it stays valid when another goal binds.
``direction=-1`` is for metrics that *fall* as the output rises (node memory used under
reclaim).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from controllers.base import LogValue, check_finite, check_limits, clamp

__all__ = ("AdaptiveLogGoal", "AdaptiveOutput", "AdaptiveState")


@dataclass(frozen=True)
class AdaptiveState:
    """``x`` is ``ln(output)``; ``slope`` the current |d ln metric / d ln output|."""

    x: float
    slope: float
    last_time: float | None = None
    last_x: float | None = None
    last_z: float | None = None

    @property
    def output(self) -> float:
        """The output in the knob's unit."""
        return math.exp(self.x)


@dataclass(frozen=True)
class AdaptiveOutput:
    """The decision, the log error, the slope used and the phase that produced it."""

    output: float
    error: float
    slope: float
    step: float
    dt: float
    phase: Literal["probe", "seek", "deadband", "hold", "manual"]
    saturated: bool = False
    rate_limited: bool = False
    held: str | None = None

    def log_fields(self) -> Mapping[str, LogValue]:
        """Fields for the ``controller_tick`` event (``step`` and ``error`` in ln units)."""
        return {
            "output": self.output,
            "error": self.error,
            "slope": self.slope,
            "step": self.step,
            "dt": self.dt,
            "phase": self.phase,
            "saturated": self.saturated,
            "rate_limited": self.rate_limited,
            "held": self.held,
        }


@dataclass(frozen=True)
class AdaptiveLogGoal:
    """Settings. Output limits and ``starting_output`` are in the knob's unit (> 0).

    ``direction=+1``: the metric rises with the output (quota -> PSI, interval -> access
    share, regions -> CPU cost). ``gain`` is the share of the Newton step taken (<= 1).
    ``max_factor_per_s`` caps any change to that ratio per second; ``probe_factor`` is
    the per-tick growth while the metric shows no signal.
    """

    setpoint: float
    direction: Literal[1, -1] = 1
    out_min: float = 1.0
    out_max: float = 1e12
    starting_output: float = 1.0
    gain: float = 0.6
    slope_init: float = 2.0
    slope_min: float = 0.2
    slope_max: float = 8.0
    slope_smoothing: float = 0.5
    min_secant_step: float = 0.1
    secant_range: float = 4.0
    probe_factor: float = 4.0
    max_factor_per_s: float = 8.0
    measurement_floor: float = 1e-9
    deadband: float = 0.08
    deadband_gain: float = 0.1
    auto: bool = True

    def __post_init__(self) -> None:
        for name in ("setpoint", "starting_output", "gain", "slope_init"):
            check_finite(name, getattr(self, name))
        if not (self.setpoint > 0 and self.measurement_floor > 0):
            raise ValueError(
                "setpoint and measurement_floor must be > 0 (log scale), got "
                f"{self.setpoint!r}, {self.measurement_floor!r}"
            )
        if not (self.out_min > 0 and math.isfinite(self.out_max)):
            raise ValueError(
                f"output limits must be > 0 and finite, got {self.out_min!r}, {self.out_max!r}"
            )
        check_limits("output limits", self.out_min, self.out_max)
        check_limits("slope limits", self.slope_min, self.slope_max)
        if not self.slope_min > 0:
            raise ValueError(f"slope_min must be > 0, got {self.slope_min!r}")
        if not 0 < self.gain <= 1:
            raise ValueError(f"gain must be in (0, 1], got {self.gain!r}")
        if not (self.probe_factor > 1 and self.max_factor_per_s > 1):
            raise ValueError(
                "probe_factor and max_factor_per_s must be > 1, got "
                f"{self.probe_factor!r}, {self.max_factor_per_s!r}"
            )
        if not self.secant_range > 1:
            raise ValueError(f"secant_range must be > 1, got {self.secant_range!r}")
        if not 0 <= self.slope_smoothing < 1:
            raise ValueError(f"slope_smoothing must be in [0, 1), got {self.slope_smoothing!r}")

    @property
    def x_min(self) -> float:
        """ln of the lower output limit."""
        return math.log(self.out_min)

    @property
    def x_max(self) -> float:
        """ln of the upper output limit."""
        return math.log(self.out_max)

    def initial_state(self) -> AdaptiveState:
        """At ``starting_output`` with the initial (cautious) slope."""
        start = clamp(self.starting_output, self.out_min, self.out_max)
        slope = clamp(self.slope_init, self.slope_min, self.slope_max)
        return AdaptiveState(x=math.log(start), slope=slope)

    def output_of(self, state: AdaptiveState) -> float:
        """The output ``state`` stands for."""
        return clamp(state.output, self.out_min, self.out_max)

    def track(self, state: AdaptiveState, applied: float) -> AdaptiveState:
        """Follow the applied output (> 0, else ignored)."""
        if not (applied > 0 and math.isfinite(applied)):
            return state
        return replace(state, x=clamp(math.log(applied), self.x_min, self.x_max))

    def step(
        self, state: AdaptiveState, measurement: float | None, now: float
    ) -> tuple[AdaptiveState, AdaptiveOutput]:
        """One tick: probe, seek or hold; ``now`` in seconds."""
        if measurement is None or not math.isfinite(measurement) or not math.isfinite(now):
            reason = "missing_sample" if measurement is None else "non_finite_sample"
            return self._hold(state, now, reason)
        dt = 0.0 if state.last_time is None else now - state.last_time
        if dt < 0:
            return self._hold(state, None, "time_not_advancing")
        z = math.log(max(measurement, self.measurement_floor))
        error = math.log(self.setpoint) - z
        slope = self._secant(state, z)
        if not self.auto:
            new_state = replace(state, slope=slope, last_time=now, last_x=state.x, last_z=z)
            return new_state, self._out(
                new_state, error=error, slope=slope, step=0.0, dt=dt, phase="manual", held="manual"
            )
        signal = measurement > self.measurement_floor
        if not signal:
            phase: Literal["probe", "seek", "deadband"] = "probe"
            dx = self.direction * math.log(self.probe_factor)
        else:
            dx = self.direction * self.gain * error / slope * self._weight(error)
            phase = "deadband" if abs(error) <= self.deadband else "seek"
        # The cap scales with the true dt; the first tick has no dt and may move one probe.
        if state.last_time is None:
            cap = math.log(self.probe_factor)
        else:
            cap = math.log(self.max_factor_per_s) * dt
        capped = clamp(dx, -cap, cap)
        x = clamp(state.x + capped, self.x_min, self.x_max)
        new_state = AdaptiveState(x=x, slope=slope, last_time=now, last_x=state.x, last_z=z)
        out = self._out(new_state, error=error, slope=slope, step=x - state.x, dt=dt, phase=phase)
        return new_state, replace(out, saturated=x != state.x + capped, rate_limited=capped != dx)

    def _weight(self, error: float) -> float:
        """Share of the Newton step taken: ``deadband_gain`` inside the deadband, rising
        linearly to 1 at three times it, so noise near the goal moves the output little
        while a real error still gets the full step."""
        size = abs(error)
        if size <= self.deadband:
            return self.deadband_gain
        if size >= 3 * self.deadband:
            return 1.0
        share = (size - self.deadband) / (2 * self.deadband)
        return self.deadband_gain + (1.0 - self.deadband_gain) * share

    def _secant(self, state: AdaptiveState, z: float) -> float:
        """Update the slope estimate from the last applied step and its effect."""
        if state.last_x is None or state.last_z is None:
            return state.slope
        # Only near the goal (within x4 either way): far away the map saturates or sits
        # in a dead zone, and a secant there says nothing about the slope at the goal.
        goal = math.log(self.setpoint)
        near = math.log(self.secant_range)
        if abs(state.last_z - goal) > near or abs(z - goal) > near:
            return state.slope
        moved = state.x - state.last_x
        if abs(moved) < self.min_secant_step:
            return state.slope
        measured = self.direction * (z - state.last_z) / moved
        if measured <= 0:
            return state.slope
        estimate = clamp(measured, self.slope_min, self.slope_max)
        # Smooth in log space: slopes are ratios, so average their logarithms.
        a = self.slope_smoothing
        return math.exp(a * math.log(state.slope) + (1 - a) * math.log(estimate))

    def _hold(
        self, state: AdaptiveState, now: float | None, reason: str
    ) -> tuple[AdaptiveState, AdaptiveOutput]:
        if now is not None and math.isfinite(now):
            state = replace(state, last_time=now)
        return state, self._out(
            state, error=0.0, slope=state.slope, step=0.0, dt=0.0, phase="hold", held=reason
        )

    def _out(
        self,
        state: AdaptiveState,
        *,
        error: float,
        slope: float,
        step: float,
        dt: float,
        phase: Literal["probe", "seek", "deadband", "hold", "manual"],
        held: str | None = None,
    ) -> AdaptiveOutput:
        return AdaptiveOutput(
            output=self.output_of(state),
            error=error,
            slope=slope,
            step=step,
            dt=dt,
            phase=phase,
            held=held,
        )
