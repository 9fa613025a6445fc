"""A PID controller with the practical parts, pure and clock-free.

What it does beyond the textbook formula, and why:

* **Derivative on measurement**, through a first-order filter (time constant
  ``derivative_filter_s``): a setpoint change does not kick the D term, and sampling
  noise is not amplified without bound. The filter is discretised with backward Euler
  (``alpha = dt / (tf + dt)``), which is stable for every ``dt``, late ticks included.
* **Integral in output units** (``ki`` is folded in as it accumulates), so changing
  ``ki`` online never moves the output.
* **Anti-windup** by back-calculation: while the output is limited, the integral is
  pulled towards the output the limits allow, with time constant ``tracking_time_s``
  (default ``Ti = kp/ki``, see :attr:`PID.tracking_s`), so after any saturation the
  controller leaves the limit as soon as the error changes sign, from where a
  controller at rest at the limit would be. While the slew limit holds the output
  back, the integral stops growing in that direction (conditional integration) but
  the P demand is kept, so the output keeps moving at the slew rate.
* **Integral clamp**: ``[integral_min, integral_max]``, **unbounded by default**. Why not
  the output limits: the integral is not an output. At any tick ``u = P + I + D``, so
  the integral that holds a given output ``u`` is ``u - P - D``, and ``P = kp (b r - y)``
  ranges over the whole real line with the measurement. Even at rest (``y = r``,
  ``D = 0``) the integral is ``u - kp (b - 1) r``, outside ``[out_min, out_max]``
  whenever ``b != 1``. Clamping it to the output range therefore makes some outputs
  unreachable in some states, and every bumpless re-base below (first tick, retune,
  manual to automatic) that needs such an integral would jump instead (kp 1 -> 10 at
  limits [0, 100] moved the output 5.2 -> 20). Windup needs no clamp: back-calculation
  already bounds the integral during saturation to ``u_limit - P - D`` (within
  ``Tt``). Explicit limits are a hard bound the caller chose: they always hold, so a
  re-base that needs an integral beyond them is not bumpless; the tick says so
  (``integral_clamped``).
* **Output limits** and a **slew-rate limit** (largest change per second, scaled by the
  true ``dt``, so a late tick may move further but never faster). The slew limit holds
  from the first tick on: the knob sits at ``starting_output`` when the controller
  takes it over, and the first tick has no elapsed time (``dt = 0``), so with
  ``bumpless_start=False`` the first output is still ``starting_output`` and the P
  demand is approached at the slew rate from the next tick.
* **Setpoint weighting** ``b``: ``P = kp * (b * setpoint - measurement)``. A setpoint
  change moves the output by exactly ``kp * b * change``: this kick is a design choice,
  kept on purpose (``b = 1``, the default, is the classic PID: a new setpoint is acted on
  at once). For a bumpless setpoint change use ``b = 0``: the output does not move and
  the integral does the work. A setpoint change is *not* re-based (unlike a gain
  change): re-basing it would cancel exactly the response ``b`` asks for.
* **Bumpless transfer**: (a) the first measured tick outputs ``starting_output`` exactly
  (the knob's value when reactor took it over; the error present then is removed by the
  integral, so a P-only controller should set ``bumpless_start=False``, which starts
  from ``u = P + starting_output`` instead); (b) when ``kp``, ``kd``, ``b`` or
  ``direction`` change between ticks (a new settings object), the integral is re-based so
  that the output at the last measurement is unchanged (exact: the re-based integral
  is not clamped unless explicit integral limits are set, see above); (c) in manual mode
  (``auto=False``, observe-only) the controller follows the applied value (see
  :meth:`PID.track`) and keeps its integral consistent, so switching to automatic
  continues from the applied value.
* **Irregular dt and missing samples**: ``dt`` is ``now - last tick``; it is capped at
  ``max_dt_s`` for integration (a long stall should not be integrated on one stale
  error). ``None`` or a non-finite measurement holds the output, integrates nothing and
  reports why; the time of the held tick is not integrated later either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from controllers.base import LogValue, check_finite, check_limits, clamp

__all__ = ("PID", "PIDOutput", "PIDState")

HoldReason = Literal["missing_sample", "non_finite_sample", "time_not_advancing", "manual"]


@dataclass(frozen=True)
class PIDState:
    """Everything a PID remembers between ticks.

    ``integral`` is in output units. ``p`` and ``d`` are the terms of the last measured
    tick and ``tuning`` the gains that produced them (used for bumpless re-basing).
    ``derivative`` is the filtered rate of change of the measurement, per second.
    """

    output: float
    integral: float
    last_time: float | None = None
    last_measurement: float | None = None
    last_measurement_time: float | None = None
    derivative: float = 0.0
    p: float = 0.0
    d: float = 0.0
    tuning: tuple[float, float, float, float] | None = None
    setpoint: float | None = None


@dataclass(frozen=True)
class PIDOutput:
    """One tick's decision and the terms that made it (all in output units)."""

    output: float
    p: float
    i: float
    d: float
    error: float
    dt: float
    saturated: bool = False
    rate_limited: bool = False
    integral_clamped: bool = False
    held: HoldReason | None = None
    mode: Literal["auto", "manual"] = "auto"

    def log_fields(self) -> Mapping[str, LogValue]:
        """Fields for the ``controller_tick`` event."""
        return {
            "output": self.output,
            "p": self.p,
            "i": self.i,
            "d": self.d,
            "error": self.error,
            "dt": self.dt,
            "saturated": self.saturated,
            "rate_limited": self.rate_limited,
            "integral_clamped": self.integral_clamped,
            "held": self.held,
            "mode": self.mode,
        }


@dataclass(frozen=True)
class PID:
    """PID settings; ``step`` computes, nothing here changes.

    Units: ``kp`` output per measurement unit; ``ki`` output per (measurement unit x s);
    ``kd`` output x s per measurement unit; ``slew_rate`` output units per second;
    times in seconds. ``direction=+1`` raises the output when the measurement is below
    the setpoint; ``-1`` lowers it (reverse acting, e.g. more reclaim lowers free memory
    goals of the "used" kind).
    """

    kp: float = 0.0
    ki: float = 0.0
    kd: float = 0.0
    setpoint: float = 0.0
    setpoint_weight: float = 1.0
    direction: Literal[1, -1] = 1
    out_min: float = -math.inf
    out_max: float = math.inf
    integral_min: float | None = None
    integral_max: float | None = None
    slew_rate: float | None = None
    derivative_filter_s: float = 0.0
    tracking_time_s: float | None = None
    max_dt_s: float | None = None
    starting_output: float = 0.0
    bumpless_start: bool = True
    auto: bool = True

    def __post_init__(self) -> None:
        for name in ("kp", "ki", "kd", "setpoint", "setpoint_weight", "starting_output"):
            check_finite(name, getattr(self, name))
        for name in ("kp", "ki", "kd", "derivative_filter_s"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"{name} must be >= 0 (use direction=-1), got {getattr(self, name)!r}"
                )
        if self.direction not in (1, -1):
            raise ValueError(f"direction must be 1 or -1, got {self.direction!r}")
        check_limits("output limits", self.out_min, self.out_max)
        check_limits("integral limits", self.i_min, self.i_max)
        for name in ("slew_rate", "tracking_time_s", "max_dt_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")

    @property
    def i_min(self) -> float:
        """Lower integral clamp (output units); unbounded unless set (module doc)."""
        return -math.inf if self.integral_min is None else self.integral_min

    @property
    def i_max(self) -> float:
        """Upper integral clamp (output units); unbounded unless set (module doc)."""
        return math.inf if self.integral_max is None else self.integral_max

    @property
    def tracking_s(self) -> float | None:
        """Back-calculation time constant: ``tracking_time_s``, else ``Ti = kp / ki``.

        With ``Tt = Ti`` the integral settles, during saturation, at the saturated output
        itself (``ki * e * Tt = kp * e`` cancels P), which is where a controller that had
        been at rest there would hold it: leaving the limit is then bumpless. With
        ``kp = 0`` (pure I) the integral tracks fully each tick (``None``); with
        ``ki = 0`` there is no integral action to wind up and nothing is tracked.
        """
        if self.tracking_time_s is not None:
            return self.tracking_time_s
        if self.kp > 0 and self.ki > 0:
            return self.kp / self.ki
        return None

    @property
    def tuning(self) -> tuple[float, float, float, float]:
        """The settings whose change would bump the output (re-based on change)."""
        return (self.kp, self.kd, self.setpoint_weight, float(self.direction))

    def initial_state(self) -> PIDState:
        """Start at ``starting_output`` (clamped), with an empty history."""
        start = clamp(self.starting_output, self.out_min, self.out_max)
        return PIDState(output=start, integral=clamp(start, self.i_min, self.i_max))

    def output_of(self, state: PIDState) -> float:
        """The output ``state`` stands for (output units)."""
        return state.output

    def track(self, state: PIDState, applied: float) -> PIDState:
        """Follow the output really applied (manual value, actuator limit, composite).

        The integral moves by the same amount as the output, so the next tick continues
        from ``applied`` instead of from what this controller last asked for.
        """
        if not math.isfinite(applied):
            return state
        applied = clamp(applied, self.out_min, self.out_max)
        integral = clamp(state.integral + applied - state.output, self.i_min, self.i_max)
        return replace(state, output=applied, integral=integral)

    def step(
        self, state: PIDState, measurement: float | None, now: float
    ) -> tuple[PIDState, PIDOutput]:
        """One tick at monotonic time ``now`` (s) with ``measurement`` (None = missing)."""
        if measurement is None:
            return self._hold(state, now, "missing_sample")
        if not (math.isfinite(measurement) and math.isfinite(now)):
            return self._hold(state, now, "non_finite_sample")
        dt = 0.0 if state.last_time is None else now - state.last_time
        if dt < 0:
            return self._hold(state, None, "time_not_advancing")
        state = self._rebase(state)
        derivative = self._derivative(state, measurement, now)
        sign = self.direction
        p = sign * self.kp * (self.setpoint_weight * self.setpoint - measurement)
        d = -sign * self.kd * derivative
        error = sign * (self.setpoint - measurement)
        terms = _Terms(p=p, d=d, error=error, dt=dt, derivative=derivative)
        if not self.auto:
            return self._manual(state, measurement, now, terms)
        if state.last_measurement is None and self.bumpless_start:
            # Bumpless start: the first measured tick outputs the starting output
            # (clamped, and flagged, in _finish only if explicit limits forbid it).
            integral = state.output - p - d
        elif state.last_measurement is None:
            integral = state.integral
        else:
            dt_i = dt if self.max_dt_s is None else min(dt, self.max_dt_s)
            integral = state.integral + self.ki * error * dt_i
        return self._finish(state, measurement, now, terms, integral)

    def _finish(
        self,
        state: PIDState,
        measurement: float,
        now: float,
        t: _Terms,
        integral: float,
    ) -> tuple[PIDState, PIDOutput]:
        if math.isnan(integral):
            # Only reachable through float overflow (inf - inf): keep the last memory.
            integral = state.integral
        clamped_i = clamp(integral, self.i_min, self.i_max)
        integral_clamped = clamped_i != integral
        unsat = t.p + clamped_i + t.d
        limited = clamp(unsat, self.out_min, self.out_max)
        if limited != unsat and (self.ki > 0 or self.tracking_time_s is not None):
            # Back-calculation: pull the integral towards the output the limits allow.
            # Without integral action (ki = 0) nothing winds up, and moving the
            # integral (then a fixed bias) would change the P law after saturation.
            tracking = self.tracking_s
            # Ti = kp / ki can underflow to 0 for extreme gains: track fully then.
            share = 1.0 if tracking is None or tracking <= 0 else min(1.0, t.dt / tracking)
            clamped_i = clamp(clamped_i + share * (limited - unsat), self.i_min, self.i_max)
        out = limited
        rate_limited = False
        if self.slew_rate is not None:
            # From the first tick on: with no elapsed time (dt = 0) the knob stays put.
            step_max = self.slew_rate * t.dt
            out = clamp(limited, state.output - step_max, state.output + step_max)
            rate_limited = out != limited
            if rate_limited and (integral - state.integral) * (limited - out) > 0:
                # Conditional integration: while the slew limit holds the output back,
                # this tick's integral growth in that direction is dropped (no windup),
                # but the P demand stays, so the output keeps moving at the slew rate.
                clamped_i = clamp(state.integral, self.i_min, self.i_max)
        new_state = PIDState(
            output=out,
            integral=clamped_i,
            last_time=now,
            last_measurement=measurement,
            last_measurement_time=now,
            derivative=t.derivative,
            p=t.p,
            d=t.d,
            tuning=self.tuning,
            setpoint=self.setpoint,
        )
        decision = PIDOutput(
            output=out,
            p=t.p,
            i=clamped_i,
            d=t.d,
            error=t.error,
            dt=t.dt,
            saturated=limited != unsat,
            rate_limited=rate_limited,
            integral_clamped=integral_clamped,
        )
        return new_state, decision

    def _manual(
        self, state: PIDState, measurement: float, now: float, t: _Terms
    ) -> tuple[PIDState, PIDOutput]:
        # Observe-only: the output stays where the operator (track) put it; the integral
        # is kept so that P + I + D equals it, which makes the switch to auto bumpless.
        wanted = state.output - t.p - t.d
        integral = clamp(wanted, self.i_min, self.i_max)
        new_state = PIDState(
            output=state.output,
            integral=integral,
            last_time=now,
            last_measurement=measurement,
            last_measurement_time=now,
            derivative=t.derivative,
            p=t.p,
            d=t.d,
            tuning=self.tuning,
            setpoint=self.setpoint,
        )
        decision = PIDOutput(
            output=state.output,
            p=t.p,
            i=integral,
            d=t.d,
            error=t.error,
            dt=t.dt,
            integral_clamped=integral != wanted,
            held="manual",
            mode="manual",
        )
        return new_state, decision

    def _hold(
        self, state: PIDState, now: float | None, reason: HoldReason
    ) -> tuple[PIDState, PIDOutput]:
        # The held tick's time is consumed (not integrated later); the derivative keeps
        # the time of the last real measurement so it spans the gap correctly.
        if now is not None and math.isfinite(now):
            state = replace(state, last_time=now)
        decision = PIDOutput(
            output=state.output,
            p=state.p,
            i=state.integral,
            d=state.d,
            error=0.0,
            dt=0.0,
            held=reason,
            mode="auto" if self.auto else "manual",
        )
        return state, decision

    def _rebase(self, state: PIDState) -> PIDState:
        """Keep the output continuous when gains change (bumpless retuning)."""
        if state.tuning is None or state.tuning == self.tuning:
            return state
        if state.last_measurement is None or state.setpoint is None:
            return state
        sign = self.direction
        p_new = sign * self.kp * (self.setpoint_weight * state.setpoint - state.last_measurement)
        d_new = -sign * self.kd * state.derivative
        # Not clamped here: _finish clamps (explicit limits only) and flags it.
        integral = state.integral + (state.p + state.d) - (p_new + d_new)
        return replace(
            state,
            integral=integral,
            p=p_new,
            d=d_new,
            tuning=self.tuning,
        )

    def _derivative(self, state: PIDState, measurement: float, now: float) -> float:
        if state.last_measurement is None or state.last_measurement_time is None:
            return 0.0
        dt_m = now - state.last_measurement_time
        if dt_m <= 0:
            return state.derivative
        raw = (measurement - state.last_measurement) / dt_m
        alpha = dt_m / (self.derivative_filter_s + dt_m)
        return state.derivative + alpha * (raw - state.derivative)


@dataclass(frozen=True)
class _Terms:
    p: float
    d: float
    error: float
    dt: float
    derivative: float
