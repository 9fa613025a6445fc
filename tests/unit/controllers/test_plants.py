"""The shipped plant models behave as their docstrings say."""

from __future__ import annotations

import math

import pytest

from reactor.testing.plants import (
    FirstOrderDeadTime,
    Integrating,
    IntervalsPlant,
    QuotaPsiPlant,
    ReclaimPlant,
    RegionCountPlant,
)

MIB = 2**20


def test_fopdt_step_response_is_analytic() -> None:
    """A unit step gives K (1 - exp(-(t - theta)/tau)) after the dead time, 0 before."""
    plant = FirstOrderDeadTime(gain=2.0, tau_s=5.0, dead_time_s=1.0)
    values = [plant.step(1.0, 0.5) for _ in range(20)]
    assert values[0] == 0.0 and values[1] == 0.0  # t = 0.5, 1.0: still dead time
    for k, v in enumerate(values, start=1):
        t = 0.5 * k
        expected = 2.0 * (1 - math.exp(-(t - 1.0) / 5.0)) if t > 1.0 else 0.0
        assert v == pytest.approx(expected, abs=2e-3)


def test_integrating_plant_ramps() -> None:
    """A constant input ramps the integrator at K u per second."""
    plant = Integrating(gain=0.5)
    for _ in range(10):
        plant.step(2.0, 1.0)
    assert plant.true_output == pytest.approx(10.0)


def test_plants_are_reproducible_by_seed() -> None:
    """The same seed gives the same noise; a different seed does not."""
    a = [QuotaPsiPlant(seed=1).step(100 * MIB, 1.0) for _ in range(1)]
    b = [QuotaPsiPlant(seed=1).step(100 * MIB, 1.0) for _ in range(1)]
    c = [QuotaPsiPlant(seed=2).step(100 * MIB, 1.0) for _ in range(1)]
    assert a == b != c


def test_quota_psi_dead_zone_and_saturation() -> None:
    """No stalls up to the cold set; saturation at psi_max; inverse() inverts static()."""
    plant = QuotaPsiPlant(noise_rel=0.0)
    assert plant.static(64 * MIB) == 0.0
    assert plant.static(100 * 2**30) == pytest.approx(0.5)
    assert plant.static(plant.inverse(0.05)) == pytest.approx(0.05)


def test_reclaim_beyond_the_cold_set_refaults() -> None:
    """Reclaiming within the cold set is free; beyond it, refaults and stalls appear."""
    plant = ReclaimPlant(cold_bytes=0.0, noise_rel=0.0)
    calm = plant.step(plant.cold_rate * 1.0, 1.0)
    assert calm.refault_rate == pytest.approx(0.0) and calm.psi == pytest.approx(0.0)
    for _ in range(10):
        hurt = plant.step(plant.cold_rate + 20 * MIB, 1.0)
    assert hurt.refault_rate == pytest.approx(20 * MIB, rel=1e-3)
    assert hurt.psi > 0.1


def test_intervals_share_rises_with_interval() -> None:
    """The expected access share grows with the sampling interval, with elasticity <= 1."""
    plant = IntervalsPlant(seed=0)
    shares = [plant.expected_share(s) for s in (0.001, 0.01, 0.1, 1.0)]
    assert shares == sorted(shares)
    for (s1, a), (s2, b) in zip(
        zip((0.001, 0.01, 0.1, 1.0), shares, strict=True),
        zip((0.01, 0.1, 1.0, 10.0), [*shares[1:], plant.expected_share(10.0)], strict=True),
        strict=True,
    ):
        assert math.log(b / a) <= math.log(s2 / s1) + 1e-12


def test_region_count_cost_linear_accuracy_saturates() -> None:
    """Cost doubles with regions; accuracy approaches 1."""
    plant = RegionCountPlant()
    assert plant.cost(200) == pytest.approx(2 * plant.cost(100))
    assert plant.accuracy(3000) > 0.99
