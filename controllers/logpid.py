"""Log-space (multiplicative) PID for knobs that span orders of magnitude.

A DAMOS quota runs from one page (4 KiB) to GiB per interval, a sampling interval from
1 ms to 10 s. An additive controller tuned for one end of such a range is either
sluggish or unstable at the other. Acting on ``ln(output)`` makes each step a *ratio*:
the same error moves 4 KiB to 8 KiB or 1 GiB to 2 GiB, and the slew limit reads as "at
most x ``max_factor_per_s`` per second".

The measurement is taken on one of three scales:

* ``"linear"``: error in the measurement's own unit (gains per unit);
* ``"relative"``: error as a share of the setpoint, ``(setpoint - y) / setpoint``, so
  gains are dimensionless; implemented as linear gains divided by the setpoint, which
  keeps the derivative on measurement and makes a setpoint change a bumpless re-tune;
* ``"log"``: error ``ln(setpoint) - ln(max(y, measurement_floor))``; with a plant whose
  output is roughly proportional to its input, a gain of 1 per tick is a deadbeat step.

Internally this is a :class:`~controllers.pid.PID` on the transformed signals; every PID
property (anti-windup, bumpless transfer, manual mode, holds) carries over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from controllers.base import LogValue, check_finite, check_limits, clamp
from controllers.pid import PID, PIDOutput, PIDState

__all__ = ("LogPID", "LogPIDOutput")

Scale = Literal["linear", "relative", "log"]


@dataclass(frozen=True)
class LogPIDOutput:
    """The decision in the knob's unit, with the PID terms in log units."""

    output: float
    log: PIDOutput

    def log_fields(self) -> Mapping[str, LogValue]:
        """PID terms (``p``, ``i``, ``d`` are in ln units) plus the linear output."""
        fields = dict(self.log.log_fields())
        fields["log_output"] = self.log.output
        fields["output"] = self.output
        return fields


@dataclass(frozen=True)
class LogPID:
    """PID acting on ``ln(output)``; limits and starting output are in the knob's unit.

    ``max_factor_per_s`` bounds the change per second to a ratio (2.0: at most double or
    halve each second). The inner PID's integral is unbounded (see :mod:`controllers.pid`:
    the integral that holds an output is ``u - P - D``, which can lie anywhere, and
    back-calculation bounds it during saturation), so gain changes, setpoint changes of
    the ``relative`` scale and manual-to-automatic switches are exactly bumpless.
    """

    kp: float = 0.0
    ki: float = 0.0
    kd: float = 0.0
    setpoint: float = 1.0
    setpoint_weight: float = 1.0
    direction: Literal[1, -1] = 1
    out_min: float = 1.0
    out_max: float = 1e12
    max_factor_per_s: float | None = None
    measurement_scale: Scale = "relative"
    measurement_floor: float = 1e-9
    derivative_filter_s: float = 0.0
    tracking_time_s: float | None = None
    max_dt_s: float | None = None
    starting_output: float = 1.0
    auto: bool = True

    def __post_init__(self) -> None:
        check_finite("setpoint", self.setpoint)
        check_finite("starting_output", self.starting_output)
        if not (self.out_min > 0 and math.isfinite(self.out_max)):
            raise ValueError(
                f"log-space output limits must be > 0 and finite, got "
                f"min={self.out_min!r}, max={self.out_max!r}"
            )
        check_limits("output limits", self.out_min, self.out_max)
        if self.measurement_scale == "relative" and self.setpoint == 0:
            raise ValueError("relative measurement scale needs a non-zero setpoint, got 0")
        if self.measurement_scale == "log" and not (
            self.setpoint > 0 and self.measurement_floor > 0
        ):
            raise ValueError(
                f"log measurement scale needs setpoint > 0 and measurement_floor > 0, got "
                f"setpoint={self.setpoint!r}, measurement_floor={self.measurement_floor!r}"
            )
        if self.max_factor_per_s is not None and not self.max_factor_per_s > 1:
            raise ValueError(f"max_factor_per_s must be > 1 or None, got {self.max_factor_per_s!r}")
        _ = self.inner  # validate the gains now, not on the first tick

    @cached_property
    def inner(self) -> PID:
        """The PID on ``ln(output)`` and the transformed measurement."""
        scale = 1.0
        setpoint = self.setpoint
        if self.measurement_scale == "relative":
            scale = 1.0 / abs(self.setpoint)
        elif self.measurement_scale == "log":
            setpoint = math.log(self.setpoint)
        slew = None if self.max_factor_per_s is None else math.log(self.max_factor_per_s)
        start = clamp(self.starting_output, self.out_min, self.out_max)
        return PID(
            kp=self.kp * scale,
            ki=self.ki * scale,
            kd=self.kd * scale,
            setpoint=setpoint,
            setpoint_weight=self.setpoint_weight,
            direction=self.direction,
            out_min=math.log(self.out_min),
            out_max=math.log(self.out_max),
            slew_rate=slew,
            derivative_filter_s=self.derivative_filter_s,
            tracking_time_s=self.tracking_time_s,
            max_dt_s=self.max_dt_s,
            starting_output=math.log(start),
            auto=self.auto,
        )

    def initial_state(self) -> PIDState:
        """State at ``starting_output``."""
        return self.inner.initial_state()

    def transform(self, measurement: float) -> float:
        """The measurement on the scale the inner PID sees."""
        if self.measurement_scale == "log":
            return math.log(max(measurement, self.measurement_floor))
        return measurement

    def output_of(self, state: PIDState) -> float:
        """The output ``state`` stands for, in the knob's unit."""
        return clamp(math.exp(state.output), self.out_min, self.out_max)

    def track(self, state: PIDState, applied: float) -> PIDState:
        """Follow the applied output (knob units, must be > 0 to be taken)."""
        if not (applied > 0 and math.isfinite(applied)):
            return state
        return self.inner.track(state, math.log(applied))

    def step(
        self, state: PIDState, measurement: float | None, now: float
    ) -> tuple[PIDState, LogPIDOutput]:
        """One tick; ``output`` is ``exp`` of the inner PID's output, in the knob's unit."""
        value = None
        if measurement is not None:
            value = self.transform(measurement) if math.isfinite(measurement) else math.nan
        state, out = self.inner.step(state, value, now)
        linear = clamp(math.exp(out.output), self.out_min, self.out_max)
        return state, LogPIDOutput(output=linear, log=out)
