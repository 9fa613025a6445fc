"""reactor's knob tuners in closed loop on the shipped plants (noisy, seeded)."""

from __future__ import annotations

import math

from controllers.tuners import QuotaGoalSpec, intervals_tuner, quota_tuner, regions_tuner
from reactor.testing.plants import IntervalsPlant, QuotaPsiPlant, ReclaimPlant, RegionCountPlant

MIB = 2**20

# --- quota -> PSI ---------------------------------------------------------------------
#
# QuotaPsiPlant defaults: cold set 64 MiB, scale 256 MiB, psi_max 0.5, lag 0.5 s here,
# 5 % noise. Goal 0.05: q* = 64 - 256 ln(1 - 0.05/0.5) = 91.0 MiB. Log-log slope at q*:
# q* psi'(q*)/psi = 91 * (0.5/256) e^{-27/256} / 0.05 = 3.2.
# Approach: PSI reads 0 below 64 MiB; the probe (x1.4 per tick) from 4 MiB needs
#   ln(64/4)/ln(1.4) = 8.2 ticks; the last zero-PSI quota is <= 64 MiB, so the first
#   pressured one is <= 89.6 MiB < q*: no approach overshoot.
# Seek: slope_init 4 >= 3.2, gain 0.6: the log error shrinks by 1 - 0.6*3.2/4 = 0.52 per
#   tick from at most ln(0.05/psi(q*/1.4)) ~ 2.5 to the 10 % band (0.1 / 3.2 in quota)
#   in ~6 ticks. Bound: in band by tick 9 + 6 + lag/noise margin 5 = 20, overshoot
#   (noise-free PSI) <= 5 %.
# Load step: the cold set grows by 64 MiB; new q* = 155 MiB, PSI falls to ~0 at once:
#   probe x1.4 for ln(155/91)/ln(1.4) = 1.6 ticks, then the seek again: back in band
#   within 15 ticks.


def _quota_loop(
    plant: QuotaPsiPlant, ticks: int, tuner: object, state: object, t0: int
) -> tuple[list[float], object]:
    values = []
    y = plant.step(plant.inverse(0.0) / 16, 1.0) if t0 == 0 else plant.true_output
    for k in range(ticks):
        state, out = tuner.step(state, {"psi": y}, float(t0 + k))  # type: ignore[attr-defined]
        y = plant.step(out.output, 1.0)
        values.append(plant.true_output)
    return values, state


def _first_stay_in_band(values: list[float], goal: float, band: float = 0.1) -> int | None:
    first = None
    for k, v in enumerate(values):
        if abs(v - goal) > band * goal:
            first = None
        elif first is None:
            first = k
    return first


def test_quota_tuner_settles_on_psi_goal_without_overshoot() -> None:
    """From 4 MiB the quota reaches the PSI goal band by tick 20 with <= 5 % overshoot."""
    plant = QuotaPsiPlant(tau_s=0.5, noise_rel=0.05, seed=3)
    tuner = quota_tuner([QuotaGoalSpec("psi", 0.05)], starting_output=4 * MIB)
    values, _ = _quota_loop(plant, 80, tuner, tuner.initial_state(), 0)
    enter = _first_stay_in_band(values, 0.05)
    assert enter is not None and enter <= 20
    assert max(values) <= 0.05 * 1.05


def test_quota_tuner_recovers_after_load_step() -> None:
    """After the cold set grows by 64 MiB the quota is back in band within 15 ticks."""
    plant = QuotaPsiPlant(tau_s=0.5, noise_rel=0.05, seed=4)
    tuner = quota_tuner([QuotaGoalSpec("psi", 0.05)], starting_output=4 * MIB)
    _, state = _quota_loop(plant, 60, tuner, tuner.initial_state(), 0)
    plant.load = 64 * MIB
    values, _ = _quota_loop(plant, 60, tuner, state, 60)
    enter = _first_stay_in_band(values, 0.05)
    assert enter is not None and enter <= 15


# --- reclaim: several goals on one quota ----------------------------------------------
#
# ReclaimPlant defaults: cold set refills at 32 MiB/s; hot evictions refault; PSI =
# 0.6 (1 - exp(-refaults / 64 MiB/s)). Goals: PSI <= 0.05 (allows 5.6 MiB/s of
# refaults) and refaults <= 2 MiB/s (PSI 0.018). The refault goal is the stricter one,
# so it must bind in steady state, at q = 32 + 2 = 34 MiB per 1 s window.


def test_reclaim_goals_compose_and_the_stricter_binds() -> None:
    """With PSI and refault goals, the refault goal binds and holds refaults near 2 MiB/s."""
    plant = ReclaimPlant(cold_bytes=64 * MIB, seed=5)
    tuner = quota_tuner(
        [QuotaGoalSpec("psi", 0.05), QuotaGoalSpec("refaults", 2 * MIB)],
        starting_output=16 * MIB,
    )
    state = tuner.initial_state()
    obs = plant.step(16 * MIB, 1.0)
    bindings, refaults = [], []
    for k in range(150):
        state, out = tuner.step(state, {"psi": obs.psi, "refaults": obs.refault_rate}, float(k))
        obs = plant.step(out.output, 1.0)
        bindings.append(out.binding)
        refaults.append(plant.refault_rate)
    assert bindings[-20:] == ["refaults"] * 20
    assert all(abs(r - 2 * MIB) <= 0.25 * 2 * MIB for r in refaults[-20:])
    assert math.isclose(out.output, 34 * MIB, rel_tol=0.05)


# --- sampling intervals ---------------------------------------------------------------
#
# IntervalsPlant: share(S) = mean(1 - exp(-rate S)); each term is concave with value 0
# at 0, so S share'(S) <= share(S): the log-log slope is <= 1 everywhere. The tuner's
# step is gain * ln(goal/share) with slope pinned at 1: while share < goal the step is
# at most the distance (no overshoot; with slope s the log error shrinks by 1 - 0.6 s
# per tick). With rates 0.001..5 /s and 5 ms start, share(5 ms) = 0.6 % vs goal 4 %:
# e = 1.9; ticks to the 10 % band with slope ~0.8 near the goal: ln(1.9/0.1)/-ln(0.52)
# = 4.5, plus the binomial noise (~5 % with 3 aggregations): in band by tick 10.


def _intervals_loop(
    plant: IntervalsPlant, ticks: int, tuner: object, state: object, t0: int = 0
) -> tuple[list[float], object]:
    sample_us = tuner.output_of(state)  # type: ignore[attr-defined]
    values = []
    for k in range(ticks):
        obs = plant.step(sample_us / 1e6, aggregations=3)
        state, out = tuner.step(state, obs.period_share, float(t0 + k))  # type: ignore[attr-defined]
        sample_us = out.output
        values.append(plant.expected_share(sample_us / 1e6))
    return values, state


def test_intervals_tuner_reaches_access_goal() -> None:
    """The sampling interval brings the access share into its band by tick 10, no overshoot."""
    plant = IntervalsPlant(rate_min=0.001, rate_max=5.0, seed=6)
    tuner = intervals_tuner(0.04)
    values, _ = _intervals_loop(plant, 40, tuner, tuner.initial_state())
    enter = _first_stay_in_band(values, 0.04)
    assert enter is not None and enter <= 10
    assert max(values) <= 0.04 * 1.05


def test_intervals_tuner_follows_a_load_change() -> None:
    """When pages get 4x hotter, the interval shrinks back into the band within 10 ticks."""
    plant = IntervalsPlant(rate_min=0.001, rate_max=5.0, seed=7)
    tuner = intervals_tuner(0.04)
    _, state = _intervals_loop(plant, 30, tuner, tuner.initial_state())
    plant.load = 4.0
    values, _ = _intervals_loop(plant, 30, tuner, state, 30)
    enter = _first_stay_in_band(values, 0.04)
    assert enter is not None and enter <= 10


# --- region counts --------------------------------------------------------------------
#
# RegionCountPlant defaults: CPU share = n * 2e-7 / 5 ms = n * 4e-5; accuracy =
# 1 - exp(-n / 300). Budget 1 %: n_cpu = 250. Accuracy 0.9 needs n = 300 ln 10 = 691 >
# 250: the budget binds, n -> 250. Accuracy 0.5 needs n = 300 ln 2 = 208 < 250: the
# accuracy goal binds (more regions would buy nothing we asked for), n -> 208.


def _regions_loop(budget: float, accuracy: float) -> tuple[float, str | None]:
    plant = RegionCountPlant(seed=8)
    tuner = regions_tuner(budget, accuracy, starting_output=1000.0)
    state = tuner.initial_state()
    obs = plant.step(1000.0, 1.0)
    for k in range(60):
        state, out = tuner.step(state, {"cpu": obs.cpu_share, "accuracy": obs.accuracy}, float(k))
        obs = plant.step(out.output, 1.0)
    return out.output, out.binding


def test_regions_tuner_keeps_cpu_budget() -> None:
    """When accuracy would need more than the budget allows, the budget binds at ~250."""
    n, binding = _regions_loop(0.01, 0.9)
    assert binding == "cpu"
    assert abs(n - 250) <= 25


def test_regions_tuner_stops_at_enough_accuracy() -> None:
    """When accuracy is met below the budget, accuracy binds at ~208 regions."""
    n, binding = _regions_loop(0.01, 0.5)
    assert binding == "accuracy"
    assert abs(n - 208) <= 25
