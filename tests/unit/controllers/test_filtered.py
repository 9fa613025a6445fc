"""The estimate-then-step seeker for sampled shares, on hand-worked readings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.filtered import FilteredLogGoal, FilteredState, SampledShare, sampled_share

GOAL = 0.04


def _goal(**kwargs: float) -> FilteredLogGoal:
    base: dict[str, float] = {
        "setpoint": GOAL,
        "out_min": 1000.0,
        "out_max": 1e7,
        "starting_output": 5000.0,
        "slope_init": 1.0,
        "slope_min": 1.0,
        "slope_max": 1.0,
        "probe_factor": 8.0,
        "max_factor_per_s": 1e6,
        "measurement_floor": GOAL / 1000,
    }
    return FilteredLogGoal(**{**base, **kwargs})  # type: ignore[arg-type]


def test_sampled_share_weights_by_size_and_counts_effective_checks() -> None:
    """Two regions, sizes 1 and 3, 20 samples each, 2 and 0 hits: share = 2/(4*20) =
    0.025; checks = (4*20)^2 / (1*20 + 9*20) = 6400/200 = 32 (not 40: unequal sizes)."""
    reading = sampled_share([(1.0, 2.0, 20.0), (3.0, 0.0, 20.0)])
    assert reading == SampledShare(share=0.025, checks=32.0)
    assert sampled_share([]) is None


def test_first_reading_steps_two_sigma_short() -> None:
    """Share 0.4 % over 4000 checks: R = 0.996/16 = 0.06225, sigma 0.2495; e =
    ln(0.04/0.004) = 2.3026; the step is e - 2 sigma = 1.8036 (capped at ln 8 = 2.08)."""
    goal = _goal()
    state, out = goal.step(goal.initial_state(), SampledShare(0.004, 4000.0), 0.0)
    sigma = math.sqrt(0.996 / 16)
    assert out.sigma == pytest.approx(sigma)
    assert out.step == pytest.approx(math.log(10) - 2 * sigma)
    assert out.output == pytest.approx(5000.0 * math.exp(math.log(10) - 2 * sigma))
    assert isinstance(state, FilteredState)
    # The estimate moved with the output (slope 1), its variance grew by (0.3 * dx)^2.
    assert state.estimate == pytest.approx(math.log(0.004) + out.step)
    assert state.variance == pytest.approx(sigma**2 + (0.3 * out.step) ** 2)


def test_within_the_margin_the_output_holds() -> None:
    """A reading 5 % under the goal with sigma 0.25 (2 sigma = 0.5 > 0.051): no move."""
    goal = _goal()
    _, out = goal.step(goal.initial_state(), SampledShare(0.038, 420.0), 0.0)
    assert (out.step, out.phase) == (0.0, "deadband")


def test_readings_average_and_the_margin_shrinks() -> None:
    """Repeated readings at the goal's level shrink the variance like 1/n (Kalman):
    P_n = R/n with no drift between readings."""
    goal = _goal(drift_per_s=0.0)
    state = goal.initial_state()
    r = (1 - 0.0392) / (0.0392 * 4000)
    for n in range(1, 6):
        state, out = goal.step(state, SampledShare(0.0392, 4000.0), float(n))
        assert out.step == 0.0  # within 2 sigma of the goal every time
        assert isinstance(state, FilteredState)
        assert state.variance == pytest.approx(r / n)


def test_a_jump_beyond_the_gate_is_followed_at_once() -> None:
    """After settling, a reading 4x higher (> 4 sigma) moves the estimate almost fully."""
    goal = _goal(drift_per_s=0.0)
    state = goal.initial_state()
    for n in range(10):
        state, _ = goal.step(state, SampledShare(0.04, 4000.0), float(n))
    state, out = goal.step(state, SampledShare(0.16, 4000.0), 10.0)
    assert out.estimate == pytest.approx(0.16, rel=0.02)
    assert out.step < -1.0  # ln 4 = 1.39 down, minus the margin


def test_bare_share_learns_the_noise_from_innovations() -> None:
    """With a bare float the noise starts at the fallback (200 checks) and is learned:
    a steady true share read exactly makes the learned noise fall toward the floor."""
    goal = _goal()
    state = goal.initial_state()
    state, first = goal.step(state, 0.04, 0.0)
    assert first.noise == pytest.approx((1 - 0.04) / (0.04 * 200))
    for n in range(1, 40):
        state, out = goal.step(state, 0.04, float(n))
    assert out.noise is not None and out.noise < first.noise * 0.05


def test_track_shifts_the_estimate_with_the_output() -> None:
    """track(): the output doubles, the estimate rises by ln 2 (slope 1)."""
    goal = _goal()
    state, _ = goal.step(goal.initial_state(), SampledShare(0.039, 4000.0), 0.0)
    assert isinstance(state, FilteredState) and state.estimate is not None
    moved = goal.track(state, 2 * goal.output_of(state))
    assert isinstance(moved, FilteredState) and moved.estimate is not None
    assert moved.estimate - state.estimate == pytest.approx(math.log(2))


def test_no_signal_probes_and_missing_holds() -> None:
    """Share 0: grow by the probe factor and forget the estimate; None: hold."""
    goal = _goal()
    state, out = goal.step(goal.initial_state(), SampledShare(0.0, 4000.0), 0.0)
    assert (out.phase, out.output) == ("probe", pytest.approx(40000.0))
    held_state, held = goal.step(state, None, 1.0)
    assert (held.held, held.output) == ("missing_sample", out.output)
    assert isinstance(held_state, FilteredState) and held_state.estimate is None


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.none(),
                st.floats(min_value=0.0, max_value=1.0),
                st.builds(
                    SampledShare,
                    st.floats(min_value=0.0, max_value=1.0),
                    st.floats(min_value=0.0, max_value=1e6),
                ),
                st.just(math.nan),
            ),
            st.floats(min_value=0.0, max_value=100.0),
        ),
        max_size=30,
    )
)
def test_within_limits_finite_and_resettable(
    ticks: list[tuple[float | SampledShare | None, float]],
) -> None:
    """Any readings: output finite and within the limits; a reset replays the run."""
    goal = _goal()

    def run() -> list[float]:
        state, now, outs = goal.initial_state(), 0.0, []
        for reading, dt in ticks:
            now += dt
            state, out = goal.step(state, reading, now)
            assert math.isfinite(out.output)
            assert goal.out_min <= out.output <= goal.out_max * (1 + 1e-12)
            outs.append(out.output)
        return outs

    first = run()
    assert run() == first


@settings(derandomize=True, max_examples=100, deadline=None)
@given(st.floats(min_value=1e-4, max_value=0.999), st.floats(min_value=10.0, max_value=1e6))
def test_response_has_the_right_sign(share: float, checks: float) -> None:
    """Under the goal the interval never shrinks; over it, it never grows."""
    goal = _goal()
    _, out = goal.step(goal.initial_state(), SampledShare(share, checks), 0.0)
    start = 5000.0  # exp(ln 5000) may differ in the last bit
    if share < GOAL:
        assert out.output >= start * (1 - 1e-12)
    elif share > GOAL:
        assert out.output <= start * (1 + 1e-12)
