"""Ready-made tuners for the three knobs reactor tunes: quotas, intervals, region counts.

Each is a plain function that returns a configured controller (the protocol of
:mod:`controllers.base`), so a policy can log, replace and test it like any other.

* :func:`quota_tuner`: DAMOS quota bytes per charge window (4 KiB .. 1 GiB by default)
  for one or more goals (memory PSI stall share, refault rate, node free/used ratio, any
  user metric). Each goal is an :class:`~controllers.adaptive.AdaptiveLogGoal`; they are
  combined by the ``min`` rule (:mod:`controllers.compose`): the most conservative goal
  binds and is reported. Measurement: ``{goal name: value}``.
* :func:`intervals_tuner`: the sampling interval (µs, 1 ms .. 10 s) for a target share of
  samples that see an access (the kernel's ``access_bp``, as a fraction), stepped once
  per aggregation snapshot. The share is a binomial count (8 % noise per aggregation
  at 4000 checks), so the tuner estimates ``ln(share)`` at the current interval (a
  Kalman filter, :class:`~controllers.filtered.FilteredLogGoal`) and steps on the
  estimate with slope 1 (each region's share ``1 - exp(-r S)`` is concave through 0,
  so ``S f'(S) <= f(S)``: the log-log slope is at most 1 and a slope-1 step never
  passes the goal by model error), stopping ``confidence`` sigmas short of the
  estimated goal (noise can carry it past the goal only with a > 2 sigma error).
* :func:`regions_tuner`: the maximum region count for a monitoring CPU budget while
  keeping accuracy: two goals under the ``min`` rule, ``cpu`` (share of a CPU, grows
  about linearly with regions) and ``accuracy`` (saturates: past the workload's
  structure more regions buy nothing, so the accuracy goal stops asking for them). The
  kernel does not tune region counts at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from controllers.adaptive import AdaptiveLogGoal
from controllers.compose import Goal, GoalComposite
from controllers.feedforward import ColdFeedforward
from controllers.filtered import FilteredLogGoal

__all__ = (
    "KIB",
    "QuotaGoalSpec",
    "intervals_tuner",
    "quota_tuner",
    "reclaim_tuner",
    "regions_tuner",
)

KIB = 1024


@dataclass(frozen=True)
class QuotaGoalSpec:
    """One goal on a quota: ``name``, ``setpoint`` in the metric's unit, and how it moves.

    ``direction=+1``: the metric rises when the quota rises (PSI, refaults, free memory
    under reclaim); ``-1``: it falls (node memory used under reclaim).
    ``floor`` is the value below which the metric is "no signal" (default: setpoint/1000).
    ``beyond_cold`` (used by :func:`reclaim_tuner` only): the metric responds to reclaim
    *beyond* the cold set (stalls, refaults), so it steers the excess over the cold-set
    feedforward; ``False`` (free or used memory, which any reclaim moves): it caps the
    whole quota.
    """

    name: str
    setpoint: float
    direction: Literal[1, -1] = 1
    floor: float | None = None
    beyond_cold: bool = True


def quota_tuner(
    goals: Sequence[QuotaGoalSpec],
    *,
    starting_output: float = 4 * KIB * KIB,
    out_min: float = 4 * KIB,
    out_max: float = float(2**30),
    max_factor_per_s: float = 8.0,
    probe_factor: float = 1.4,
    slope_init: float = 4.0,
) -> GoalComposite:
    """A quota controller: each goal proposes a quota, the smallest wins.

    ``probe_factor`` is the growth per tick while a goal sees no signal: 1.4 by default,
    gentler than the kernel's loop, which doubles (x2) per window at score 0. With a
    dead zone of unknown width (reclaim of truly cold memory stalls nobody) the first
    tick that sees pressure can land up to the probe factor beyond the dead zone's end,
    so the probe factor bounds the approach overshoot: on the benchmark's PSI plant
    <= 5 % needs a factor <= 1.44 (docs/controllers.md gives the numbers).
    """
    built = tuple(
        Goal(
            name=spec.name,
            controller=AdaptiveLogGoal(
                setpoint=spec.setpoint,
                direction=spec.direction,
                out_min=out_min,
                out_max=out_max,
                starting_output=starting_output,
                probe_factor=probe_factor,
                max_factor_per_s=max_factor_per_s,
                slope_init=slope_init,
                measurement_floor=spec.floor if spec.floor is not None else spec.setpoint / 1000,
            ),
        )
        for spec in goals
    )
    return GoalComposite(goals=built, rule="min")


EXCESS_GAIN = 0.24
"""Share of the Newton step the excess goals take: the most a loop with a one-tick
first-order lag (``a = exp(-tick / tau)``, ``tau`` = tick: the refaults' lag in the
reclaim plant) can take without oscillating. Linearised in log space with slope ``s``,
``x' = x + G (z* - z)``, ``z' = a z + (1 - a) s x`` has real poles iff
``G s <= (1 - sqrt(a)) / (1 + sqrt(a))`` = 0.24 for ``a = exp(-1)``; the slope of a stall
curve that is concave through 0 is at most 1, so ``G = 0.24`` with the slope pinned at
1 keeps ``G s <= 0.24``."""


def reclaim_tuner(
    goals: Sequence[QuotaGoalSpec],
    *,
    starting_output: float = 4 * KIB * KIB,
    out_min: float = 4 * KIB,
    out_max: float = float(2**30),
    window_s: float = 1.0,
    tick_s: float = 1.0,
    drain_share: float = 0.9,
    excess_gain: float = EXCESS_GAIN,
    max_factor_per_s: float = 8.0,
    probe_factor: float = 1.4,
    starting_excess: float | None = None,
) -> ColdFeedforward:
    """A reclaim quota with the cold-set feedforward (:mod:`controllers.feedforward`).

    Goals with ``beyond_cold`` (stalls, refaults) steer the excess over the feedforward:
    slope pinned at 1 (a stall curve concave through 0 has a log-log slope <= 1 in the
    excess) and ``excess_gain`` (:data:`EXCESS_GAIN`: no oscillation through a one-tick
    lag). Their excess starts at ``starting_excess`` (default ``starting_output``): it
    is held while the cold set drains and then reclaimed from hot memory at once, so it
    must be at most what the strictest stall goal allows beyond the cold set (the
    benchmark plant: 5.86 MiB/s for PSI <= 5.25 %, 2 MiB/s for refaults <= 2 MiB/s);
    below that it costs a few ticks of probing (x1.4, then a Newton step of 0.24 of the
    log error once the stall shows). Other goals cap the whole quota as in
    :func:`quota_tuner`. Measurement:
    ``{goal name: value, "cold_bytes": bytes}`` plus, optionally,
    ``"cold_reclaimed_bytes"`` and ``"refault_rate"`` (bytes/s).
    """
    excess = [spec for spec in goals if spec.beyond_cold]
    whole = [spec for spec in goals if not spec.beyond_cold]
    if not excess:
        raise ValueError("reclaim_tuner needs at least one beyond_cold goal (stalls, refaults)")
    excess_goals = tuple(
        Goal(
            name=spec.name,
            controller=AdaptiveLogGoal(
                setpoint=spec.setpoint,
                direction=spec.direction,
                out_min=1.0,
                out_max=out_max,
                starting_output=starting_output if starting_excess is None else starting_excess,
                gain=excess_gain,
                slope_init=1.0,
                slope_min=1.0,
                slope_max=1.0,
                probe_factor=probe_factor,
                max_factor_per_s=max_factor_per_s,
                measurement_floor=spec.floor if spec.floor is not None else spec.setpoint / 1000,
            ),
        )
        for spec in excess
    )
    absolute = None
    if whole:
        absolute = quota_tuner(
            whole,
            starting_output=starting_output,
            out_min=out_min,
            out_max=out_max,
            max_factor_per_s=max_factor_per_s,
            probe_factor=probe_factor,
        )
    return ColdFeedforward(
        excess=GoalComposite(goals=excess_goals, rule="min"),
        absolute=absolute,
        window_s=window_s,
        tick_s=tick_s,
        drain_share=drain_share,
        out_min=out_min,
        out_max=out_max,
        starting_output=starting_output,
    )


def intervals_tuner(
    access_share: float = 0.04,
    *,
    starting_us: float = 5000.0,
    min_us: float = 1000.0,
    max_us: float = 10_000_000.0,
    probe_factor: float = 8.0,
    max_factor_per_s: float = 1e6,
    confidence: float = 2.0,
    drift_per_s: float = 1e-4,
) -> FilteredLogGoal:
    """A sampling-interval controller (µs) for a target access share (fraction, 0..1).

    Step it once per aggregation snapshot with that snapshot's share, best as a
    :class:`~controllers.filtered.SampledShare` (share and effective number of checks:
    the binomial noise is then known); a bare float share also works (the noise is then
    learned from the readings, which is slower). The estimate-then-step law
    (:mod:`controllers.filtered`) with slope 1 (the share's log-log slope is at most 1)
    and a ``confidence``-sigma margin. No signal (share 0) grows the interval by
    ``probe_factor`` per reading. ``max_factor_per_s`` is loose by default: the margin,
    not a rate limit, keeps the approach safe.
    """
    return FilteredLogGoal(
        setpoint=access_share,
        direction=1,
        out_min=min_us,
        out_max=max_us,
        starting_output=starting_us,
        slope_init=1.0,
        slope_min=1.0,
        slope_max=1.0,
        probe_factor=probe_factor,
        max_factor_per_s=max_factor_per_s,
        measurement_floor=access_share / 1000,
        confidence=confidence,
        drift_per_s=drift_per_s,
    )


def regions_tuner(
    cpu_budget: float = 0.01,
    accuracy_target: float = 0.9,
    *,
    starting_output: float = 1000.0,
    min_regions: float = 10.0,
    max_regions: float = 100_000.0,
    max_factor_per_s: float = 4.0,
) -> GoalComposite:
    """Max region count: CPU share within ``cpu_budget``, accuracy up to its target.

    Measurement: ``{"cpu": share of one CPU spent monitoring, "accuracy": 0..1}``. The
    accuracy signal is whatever the runtime can compute (e.g. agreement of the hot set
    at two resolutions); where it is missing, that goal holds and the budget decides.
    """
    cpu = AdaptiveLogGoal(
        setpoint=cpu_budget,
        out_min=min_regions,
        out_max=max_regions,
        starting_output=starting_output,
        slope_init=1.0,
        slope_min=0.5,
        slope_max=2.0,
        max_factor_per_s=max_factor_per_s,
        measurement_floor=cpu_budget / 1000,
    )
    accuracy = AdaptiveLogGoal(
        setpoint=accuracy_target,
        out_min=min_regions,
        out_max=max_regions,
        starting_output=starting_output,
        slope_init=0.5,
        slope_min=0.05,
        slope_max=1.0,
        max_factor_per_s=max_factor_per_s,
        measurement_floor=1e-3,
        deadband=0.02,
    )
    return GoalComposite(goals=(Goal("cpu", cpu), Goal("accuracy", accuracy)), rule="min")
