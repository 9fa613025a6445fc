"""Ready-made tuners for the three knobs reactor tunes: quotas, intervals, region counts.

Each is a plain function that returns a configured controller (the protocol of
:mod:`controllers.base`), so a policy can log, replace and test it like any other.

* :func:`quota_tuner`: DAMOS quota bytes per charge window (4 KiB .. 1 GiB by default)
  for one or more goals (memory PSI stall share, refault rate, node free/used ratio, any
  user metric). Each goal is an :class:`~controllers.adaptive.AdaptiveLogGoal`; they are
  combined by the ``min`` rule (:mod:`controllers.compose`): the most conservative goal
  binds and is reported. Measurement: ``{goal name: value}``.
* :func:`intervals_tuner`: the sampling interval (µs, 1 ms .. 10 s) for a target share of
  samples that see an access (the kernel's ``access_bp``, as a fraction). The share rises
  with the interval with log-log slope at most 1 (each region's share ``1 - exp(-r S)``
  is concave with value 0 at 0, so ``S f'(S) <= f(S)``), so a Newton step with slope 1
  never overshoots; the slope is therefore pinned to 1 (``slope_min = slope_max = 1``)
  and the full step is taken (``gain = 1``): deadbeat where the share is proportional
  to the interval, monotone (undershooting) where it saturates.
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

__all__ = (
    "KIB",
    "QuotaGoalSpec",
    "intervals_tuner",
    "quota_tuner",
    "regions_tuner",
)

KIB = 1024


@dataclass(frozen=True)
class QuotaGoalSpec:
    """One goal on a quota: ``name``, ``setpoint`` in the metric's unit, and how it moves.

    ``direction=+1``: the metric rises when the quota rises (PSI, refaults, free memory
    under reclaim); ``-1``: it falls (node memory used under reclaim).
    ``floor`` is the value below which the metric is "no signal" (default: setpoint/1000).
    """

    name: str
    setpoint: float
    direction: Literal[1, -1] = 1
    floor: float | None = None


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

    ``probe_factor`` is the growth per tick while a goal sees no signal. It is 2 by
    default, as the kernel's: with a dead zone of unknown width (reclaim of truly cold
    memory stalls nobody) a faster probe overshoots by up to the probe factor on the
    first tick that sees pressure (docs/controllers.md gives the numbers).
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


def intervals_tuner(
    access_share: float = 0.04,
    *,
    starting_us: float = 5000.0,
    min_us: float = 1000.0,
    max_us: float = 10_000_000.0,
    probe_factor: float = 8.0,
    max_factor_per_s: float = 1e6,
    gain: float = 1.0,
) -> AdaptiveLogGoal:
    """A sampling-interval controller (µs) for a target access share (fraction, 0..1).

    Measurement: the observed share of samples that saw an access in the last tuning
    period (size-weighted, as the kernel's ``access_bp``). No signal (share 0) grows the
    interval by ``probe_factor`` per tick. ``max_factor_per_s`` is loose by default
    because one tick already spans several aggregation intervals.
    """
    return AdaptiveLogGoal(
        setpoint=access_share,
        direction=1,
        out_min=min_us,
        out_max=max_us,
        starting_output=starting_us,
        gain=gain,
        slope_init=1.0,
        slope_min=1.0,
        slope_max=1.0,
        probe_factor=probe_factor,
        max_factor_per_s=max_factor_per_s,
        measurement_floor=access_share / 1000,
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
