"""A log-log goal seeker for *sampled* metrics: estimate first, then step with a margin.

The sampling-interval tuner steers a share of samples that saw an access (the kernel's
``access_bp``). That share is a binomial count: one DAMON aggregation of ``n`` regions x
``max_nr_accesses`` samples at a 4 % share holds ~160 hits at 4000 checks, so a single
reading is off by ``1/sqrt(160)`` = 8 % (1 sigma), and by 27 % at 0.34 % (the share of
the benchmark's workload at the 5 ms start). The band the tuner must stay in is
+-10 %. A memoryless controller (the kernel's, or a Newton step on each reading) turns
that noise into output moves: it enters the band but does not stay.

This controller keeps an estimate of ``m = ln(share)`` *at the current output* and its
variance ``P`` (a scalar Kalman filter on the plant's log intercept), and steps on the
estimate, not on the reading:

* **Measurement noise** ``R``: with a :class:`SampledShare` (share ``s`` over ``checks``
  effective independent checks) the binomial variance of ``ln s`` by the delta method,
  ``R = (1 - s) / (s * checks)``. With a bare float the controller learns ``R`` from its
  own innovations (``E[nu^2] = P + R``, exponentially weighted by ``noise_learning``),
  starting from the binomial value at ``fallback_checks`` (pessimistic: slower, safe).
* **Update**: ``K = P / (P + R)``, ``m += K nu``, ``P *= 1 - K`` (``nu = ln s - m``).
  Between readings ``P`` grows by ``drift_per_s * dt`` (the workload's share drifts).
  An innovation beyond ``gate`` standard deviations (``nu^2 > gate^2 (P + R)``) is a
  change (a load step), not noise: ``P`` is raised to ``nu^2`` first, so the estimate
  follows at once.
* **Step with a certainty margin**: with ``e = ln(setpoint) - m``, the output moves by
  ``sign(e) * max(0, |e| - confidence * sqrt(P)) / slope`` (times ``direction``): it
  aims ``confidence`` standard deviations *short* of the estimated goal, so it crosses
  the goal only when the estimate is wrong by more than that (one-sided probability
  2.3 % at ``confidence = 2``; an overshoot beyond 5 % needs an error of
  ``2 sigma + 0.05``). The margin shrinks as readings accumulate (``P`` ~ ``R / n``), so
  the approach is fast where the evidence is strong and careful where it is not.
* **Slope**: ``slope`` (``slope_init``) is the model's log-log slope. For a share
  ``mean(1 - exp(-rate * S))`` it is at most 1 (each term is concave through 0), so
  ``slope = 1`` never steps past the goal by model error; after a move ``dx`` the
  estimate is shifted by ``slope * dx`` and its variance grows by ``(slope_sd * dx)^2``
  (the true slope is uncertain: 0.93 at the benchmark's goal, lower where the share
  saturates), so the first reading after a big move counts almost fully.

Caps, probing (no signal), limits, holds, manual mode and ``track`` are those of
:class:`~controllers.adaptive.AdaptiveLogGoal`, which this class extends (so a policy
typed against it keeps working); ``track`` also shifts the estimate to the applied
output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from controllers.adaptive import AdaptiveLogGoal, AdaptiveOutput, AdaptiveState
from controllers.base import LogValue, clamp

__all__ = ("FilteredLogGoal", "FilteredOutput", "FilteredState", "SampledShare", "sampled_share")

_MIN_NOISE = 1e-6
"""Floor of the measurement variance (ln units): a share of 1.0 is not exact either."""


@dataclass(frozen=True)
class SampledShare:
    """A share (0..1) measured over ``checks`` effective independent checks.

    For a DAMON snapshot: ``share = sum(size x nr_accesses) / sum(size x max_nr)`` and
    ``checks = max_nr x (sum size)^2 / sum(size^2)`` (the number of equal-sized regions
    that would give the same variance, times the samples per region).
    """

    share: float
    checks: float


def sampled_share(regions: Iterable[tuple[float, float, float]]) -> SampledShare | None:
    """The size-weighted share and its effective checks from ``(size, nr_accesses,
    max_nr_accesses)`` per region (regions of several snapshots may be mixed).

    ``share = sum(s k) / sum(s M)``; a region's ``k`` is binomial over its ``M`` checks,
    so ``Var(share) = p (1 - p) sum(s^2 M) / sum(s M)^2``: the share behaves like one
    over ``checks = sum(s M)^2 / sum(s^2 M)`` equal checks. None without regions.
    """
    seen = total = squares = 0.0
    for size, nr_accesses, max_nr in regions:
        weight = size * max_nr
        seen += size * nr_accesses
        total += weight
        squares += size * weight
    if not (total > 0 and squares > 0):
        return None
    return SampledShare(share=seen / total, checks=total * total / squares)


@dataclass(frozen=True)
class FilteredState(AdaptiveState):
    """``estimate``: ln(metric) at the current output (None: none yet); ``variance``: its
    variance; ``noise``: the learned measurement variance (bare-float readings only)."""

    estimate: float | None = None
    variance: float = 0.0
    noise: float | None = None


@dataclass(frozen=True)
class FilteredOutput(AdaptiveOutput):
    """The decision plus the estimate (metric units), its sigma and the noise (ln)."""

    estimate: float | None = None
    sigma: float | None = None
    noise: float | None = None

    def log_fields(self) -> Mapping[str, LogValue]:
        """The seeker's fields plus ``estimate``, ``sigma`` and ``noise``."""
        fields = dict(super().log_fields())
        fields |= {"estimate": self.estimate, "sigma": self.sigma, "noise": self.noise}
        return fields


@dataclass(frozen=True)
class FilteredLogGoal(AdaptiveLogGoal):
    """Settings (module doc); the slope is ``slope_init`` and is not re-estimated."""

    confidence: float = 2.0
    slope_sd: float = 0.3
    drift_per_s: float = 1e-4
    gate: float = 4.0
    fallback_checks: float = 200.0
    noise_learning: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("confidence", "slope_sd", "drift_per_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if not (self.gate > 0 and self.fallback_checks > 0 and self.slope_init > 0):
            raise ValueError(
                "gate, fallback_checks and slope_init must be > 0, got "
                f"{self.gate!r}, {self.fallback_checks!r}, {self.slope_init!r}"
            )
        if not 0 < self.noise_learning <= 1:
            raise ValueError(f"noise_learning must be in (0, 1], got {self.noise_learning!r}")

    def initial_state(self) -> FilteredState:
        """At ``starting_output``, no estimate yet."""
        start = clamp(self.starting_output, self.out_min, self.out_max)
        return FilteredState(x=math.log(start), slope=self.slope_init)

    def track(self, state: AdaptiveState, applied: float) -> AdaptiveState:
        """Follow the applied output; the estimate moves with it along the model slope."""
        moved = super().track(state, applied)
        if not isinstance(moved, FilteredState) or moved.estimate is None:
            return moved
        dx = moved.x - state.x
        return replace(
            moved,
            estimate=moved.estimate + self.direction * self.slope_init * dx,
            variance=moved.variance + (self.slope_sd * dx) ** 2,
        )

    def step(
        self, state: AdaptiveState, measurement: float | SampledShare | None, now: float
    ) -> tuple[AdaptiveState, AdaptiveOutput]:
        """One reading: update the estimate, then probe, seek, or hold (module doc)."""
        if not isinstance(state, FilteredState):
            state = FilteredState(x=state.x, slope=self.slope_init, last_time=state.last_time)
        value, checks = _unpack(measurement)
        if value is None or not math.isfinite(value) or not math.isfinite(now):
            reason = "missing_sample" if value is None else "non_finite_sample"
            return self._hold(state, now, reason)
        dt = 0.0 if state.last_time is None else now - state.last_time
        if dt < 0:
            return self._hold(state, None, "time_not_advancing")
        if not value > self.measurement_floor:
            return self._probe(state, now, dt)
        z = math.log(value)
        estimate, variance, noise = self._update(state, z, value, checks, dt)
        error = math.log(self.setpoint) - estimate
        margin = self.confidence * math.sqrt(variance)
        move = math.copysign(max(0.0, abs(error) - margin), error)
        phase: Literal["seek", "deadband", "manual"] = "seek" if move else "deadband"
        if not self.auto:
            move, phase = 0.0, "manual"
        dx = self.direction * move / self.slope_init
        cap = (
            math.log(self.probe_factor)
            if state.last_time is None
            else (math.log(self.max_factor_per_s) * dt)
        )
        capped = clamp(dx, -cap, cap)
        x = clamp(state.x + capped, self.x_min, self.x_max)
        applied = x - state.x
        new_state = FilteredState(
            x=x,
            slope=self.slope_init,
            last_time=now,
            last_x=state.x,
            last_z=z,
            estimate=estimate + self.direction * self.slope_init * applied,
            variance=variance + (self.slope_sd * applied) ** 2,
            noise=noise,
        )
        out = FilteredOutput(
            output=self.output_of(new_state),
            error=error,
            slope=self.slope_init,
            step=applied,
            dt=dt,
            phase=phase,
            saturated=x != state.x + capped,
            rate_limited=capped != dx,
            held="manual" if not self.auto else None,
            estimate=math.exp(estimate),
            sigma=math.sqrt(variance),
            noise=noise if checks is None else _binomial(value, checks),
        )
        return new_state, out

    def _update(
        self, state: FilteredState, z: float, value: float, checks: float | None, dt: float
    ) -> tuple[float, float, float | None]:
        """Kalman update of ``ln(metric)``: ``(estimate, variance, learned noise)``."""
        noise = state.noise
        if checks is not None:
            r = _binomial(value, checks)
        else:
            r = noise if noise is not None else _binomial(value, self.fallback_checks)
        if state.estimate is None:
            return z, r, noise if checks is not None else r
        p = state.variance + self.drift_per_s * dt
        innovation = z - state.estimate
        if innovation**2 > self.gate**2 * (p + r):
            p = max(p, innovation**2)  # a change, not noise: follow it now
        elif checks is None:
            lam = self.noise_learning
            r = (1 - lam) * r + lam * max(innovation**2 - p, _MIN_NOISE)
            noise = r
        gain = p / (p + r)
        return state.estimate + gain * innovation, (1 - gain) * p, noise

    def _probe(
        self, state: FilteredState, now: float, dt: float
    ) -> tuple[FilteredState, FilteredOutput]:
        """No signal: grow by ``probe_factor`` (direction), forget the estimate."""
        dx = 0.0 if not self.auto else self.direction * math.log(self.probe_factor)
        cap = (
            math.log(self.probe_factor)
            if state.last_time is None
            else (math.log(self.max_factor_per_s) * dt)
        )
        capped = clamp(dx, -cap, cap)
        x = clamp(state.x + capped, self.x_min, self.x_max)
        new_state = FilteredState(
            x=x,
            slope=self.slope_init,
            last_time=now,
            last_x=state.x,
            noise=state.noise,
        )
        out = FilteredOutput(
            output=self.output_of(new_state),
            error=0.0,
            slope=self.slope_init,
            step=x - state.x,
            dt=dt,
            phase="probe" if self.auto else "manual",
            saturated=x != state.x + capped,
            rate_limited=capped != dx,
            held=None if self.auto else "manual",
        )
        return new_state, out


def _unpack(measurement: float | SampledShare | None) -> tuple[float | None, float | None]:
    if measurement is None:
        return None, None
    if isinstance(measurement, SampledShare):
        checks = measurement.checks
        usable = math.isfinite(checks) and checks > 0
        return measurement.share, checks if usable else None
    return float(measurement), None


def _binomial(share: float, checks: float) -> float:
    """Variance of ln(share) for a binomial share over ``checks`` (delta method)."""
    share = min(share, 1.0)
    return max((1.0 - share) / (share * checks), _MIN_NOISE)
