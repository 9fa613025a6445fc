"""PID behaviour, tick by tick, on hand-computed values."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from controllers.logpid import LogPID
from controllers.pid import PID


def _run(pid: PID, measurements: list[float | None], dt: float = 1.0) -> list[float]:
    state = pid.initial_state()
    outputs = []
    for k, y in enumerate(measurements):
        state, out = pid.step(state, y, k * dt)
        outputs.append(out.output)
    return outputs


def test_first_tick_outputs_starting_output() -> None:
    """The first measured tick applies the starting output unchanged (bumpless takeover)."""
    pid = PID(kp=2.0, ki=1.0, setpoint=10.0, starting_output=5.0)
    _, out = pid.step(pid.initial_state(), 3.0, 100.0)
    assert out.output == 5.0
    assert out.p == 14.0
    assert out.i == -9.0


def test_pi_increments_by_hand() -> None:
    """After the first tick the output moves by kp*dP + ki*e*dt, computed by hand."""
    pid = PID(kp=2.0, ki=0.5, setpoint=10.0, starting_output=0.0)
    state = pid.initial_state()
    state, _ = pid.step(state, 4.0, 0.0)  # P = 12, I = -12, u = 0
    state, out = pid.step(state, 6.0, 2.0)  # P = 8, I = -12 + 0.5*4*2 = -8, u = 0
    assert out.p == 8.0
    assert out.i == pytest.approx(-8.0)
    assert out.output == pytest.approx(0.0)
    state, out = pid.step(state, 6.0, 3.0)  # I = -8 + 0.5*4*1 = -6, u = 2
    assert out.output == pytest.approx(2.0)


def test_missing_sample_holds_and_does_not_integrate() -> None:
    """None holds the output, integrates nothing and names the reason."""
    pid = PID(ki=1.0, setpoint=1.0)
    state, _ = pid.step(pid.initial_state(), 0.0, 0.0)
    state, out = pid.step(state, 0.0, 1.0)
    held_state, held = pid.step(state, None, 5.0)
    assert held.output == out.output
    assert held.held == "missing_sample"
    assert held_state.integral == state.integral
    # The held interval is not integrated later: the next dt counts from the held tick.
    _, nxt = pid.step(held_state, 0.0, 6.0)
    assert nxt.dt == 1.0
    assert nxt.output == pytest.approx(out.output + 1.0)


def test_non_finite_sample_holds() -> None:
    """NaN and inf measurements hold like a missing sample."""
    pid = PID(kp=1.0, ki=1.0, setpoint=1.0)
    state, _ = pid.step(pid.initial_state(), 0.0, 0.0)
    for bad in (math.nan, math.inf):
        _, out = pid.step(state, bad, 1.0)
        assert out.held == "non_finite_sample"
        assert out.output == state.output


def test_time_going_backwards_holds() -> None:
    """A tick earlier than the last one holds and keeps the last tick's time."""
    pid = PID(ki=1.0, setpoint=1.0)
    state, _ = pid.step(pid.initial_state(), 0.0, 10.0)
    new_state, out = pid.step(state, 0.0, 9.0)
    assert out.held == "time_not_advancing"
    assert new_state.last_time == 10.0


def test_irregular_dt_integrates_true_dt_and_caps_it() -> None:
    """A late tick integrates its true dt, up to max_dt_s."""
    pid = PID(ki=1.0, setpoint=1.0, max_dt_s=3.0)
    state, _ = pid.step(pid.initial_state(), 0.0, 0.0)
    late, out = pid.step(state, 0.0, 2.5)
    assert out.output == pytest.approx(2.5)
    _, out = pid.step(late, 0.0, 12.5)  # 10 s gap, capped at 3 s
    assert out.output == pytest.approx(5.5)


def test_output_limits_and_saturation_flag() -> None:
    """The output never leaves its limits, and saturation is flagged."""
    # P-only, so no bumpless start (it would hold the takeover output with I = -P).
    pid = PID(kp=10.0, setpoint=100.0, out_min=-1.0, out_max=1.0, bumpless_start=False)
    state, _ = pid.step(pid.initial_state(), 0.0, 0.0)
    _, out = pid.step(state, 0.0, 1.0)
    assert out.output == 1.0
    assert out.saturated


def test_slew_rate_limits_change_per_second() -> None:
    """With slew_rate 2/s the output moves at most 2 per second, late ticks 2*dt."""
    pid = PID(kp=100.0, setpoint=0.0, slew_rate=2.0)
    state, _ = pid.step(pid.initial_state(), 0.0, 0.0)
    state, out = pid.step(state, -10.0, 1.0)
    assert out.output == 2.0
    assert out.rate_limited
    _, out = pid.step(state, -10.0, 4.0)
    assert out.output == 8.0


def test_back_calculation_prevents_windup() -> None:
    """After long saturation the output leaves the limit on the first tick the error flips."""
    pid = PID(kp=0.5, ki=1.0, setpoint=10.0, out_min=0.0, out_max=1.0)
    state = pid.initial_state()
    for k in range(1000):
        state, out = pid.step(state, 0.0, float(k))
    assert out.output == 1.0
    assert state.integral <= 1.0  # 1000 s of error were not accumulated
    _, out = pid.step(state, 20.0, 1000.0)  # now far above the setpoint
    assert out.output < 1.0


def test_integral_clamp() -> None:
    """The integral never leaves [integral_min, integral_max] and says when clamped."""
    pid = PID(ki=1.0, setpoint=1.0, integral_min=-0.5, integral_max=0.5)
    state, _ = pid.step(pid.initial_state(), 0.0, 0.0)
    state, out = pid.step(state, 0.0, 10.0)
    assert out.i == 0.5
    assert out.integral_clamped


def test_setpoint_weighting_sets_the_kick() -> None:
    """A setpoint change moves the output by exactly kp*b*change (b=0: no kick)."""
    for b in (0.0, 0.5, 1.0):
        pid = PID(kp=2.0, ki=0.1, setpoint=1.0, setpoint_weight=b)
        state, _ = pid.step(pid.initial_state(), 1.0, 0.0)
        state, before = pid.step(state, 1.0, 1.0)
        moved = replace(pid, setpoint=3.0)
        _, after = moved.step(state, 1.0, 1.0 + 1e-9)
        assert after.output - before.output == pytest.approx(2.0 * b * 2.0, abs=1e-6)


def test_derivative_on_measurement_has_no_setpoint_kick() -> None:
    """The D term reacts to the measurement only: a setpoint change leaves it at 0."""
    pid = PID(kd=5.0, setpoint=0.0)
    state, _ = pid.step(pid.initial_state(), 1.0, 0.0)
    _, out = replace(pid, setpoint=100.0).step(state, 1.0, 1.0)
    assert out.d == 0.0


def test_derivative_filter_by_hand() -> None:
    """The filtered derivative follows alpha = dt/(tf+dt): 2/(2+2) of a unit slope."""
    pid = PID(kd=1.0, derivative_filter_s=2.0)
    state, _ = pid.step(pid.initial_state(), 0.0, 0.0)
    _, out = pid.step(state, 4.0, 2.0)  # raw slope 2/s, filtered 1/s
    assert out.d == pytest.approx(-1.0)


def test_bumpless_gain_change() -> None:
    """Changing kp, kd or b between ticks leaves the output where it was."""
    pid = PID(kp=1.0, ki=0.2, kd=0.5, setpoint=5.0, derivative_filter_s=1.0)
    state = pid.initial_state()
    for k, y in enumerate([0.0, 1.0, 2.5, 3.0]):
        state, out = pid.step(state, y, float(k))
    retuned = replace(pid, kp=4.0, kd=3.0, setpoint_weight=0.3, ki=0.9)
    _, nxt = retuned.step(state, 3.0, 3.0 + 1e-12)
    assert nxt.output == pytest.approx(out.output, abs=1e-6)


def test_manual_mode_follows_and_hands_over_bumplessly() -> None:
    """Manual mode outputs the tracked value; switching to auto continues from it."""
    manual = PID(kp=1.0, ki=0.5, setpoint=10.0, auto=False)
    state = manual.initial_state()
    state = manual.track(state, 7.0)
    for k in range(5):
        state, out = manual.step(state, 4.0 + k, float(k))
        assert out.output == 7.0
        assert out.mode == "manual"
    auto = replace(manual, auto=True)
    _, out = auto.step(state, 8.0, 5.0)
    # Only this tick's own change: -kp*dy + ki*e*dt = -1*(8-8) ... P moved by -(8-8)=0.
    assert out.output == pytest.approx(7.0 + 0.5 * (10.0 - 8.0) * 1.0 - 0.0)


def test_track_rebases_output_and_integral() -> None:
    """track() moves the output and the integral by the same amount."""
    pid = PID(kp=1.0, ki=1.0, setpoint=1.0)
    state, _ = pid.step(pid.initial_state(), 0.0, 0.0)
    tracked = pid.track(state, 3.0)
    assert tracked.output == 3.0
    assert tracked.integral - state.integral == pytest.approx(3.0 - state.output)


def test_reverse_direction() -> None:
    """direction=-1 lowers the output when the measurement is below the setpoint."""
    pid = PID(ki=1.0, setpoint=1.0, direction=-1)
    outputs = _run(pid, [0.0, 0.0, 0.0])
    assert outputs[-1] < outputs[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kp": -1.0}, r"^kp must be >= 0 \(use direction=-1\), got -1\.0$"),
        (
            {"out_min": 2.0, "out_max": 1.0},
            r"^output limits: expected min <= max, got min=2\.0, max=1\.0$",
        ),
        ({"slew_rate": 0.0}, r"^slew_rate must be > 0 or None, got 0\.0$"),
        ({"ki": math.nan}, r"^ki must be finite, got nan$"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    """Invalid settings raise ValueError naming the field and the values."""
    with pytest.raises(ValueError, match=message):
        PID(**kwargs)  # type: ignore[arg-type]


def test_logpid_moves_by_ratios_and_respects_limits() -> None:
    """LogPID's slew limit is a ratio per second and its output stays in its limits."""
    pid = LogPID(
        ki=10.0,
        setpoint=1.0,
        out_min=4096,
        out_max=2**30,
        max_factor_per_s=2.0,
        starting_output=2**20,
        measurement_scale="relative",
    )
    state, out = pid.step(pid.initial_state(), 0.0, 0.0)
    assert out.output == pytest.approx(2**20)
    for k in range(1, 4):
        state, out = pid.step(state, 0.0, float(k))
        assert out.output == pytest.approx(2**20 * 2**k)
    for k in range(4, 40):
        state, out = pid.step(state, 0.0, float(k))
    assert out.output == pytest.approx(2**30)


def test_logpid_relative_scale_setpoint_change_is_bumpless_with_b0() -> None:
    """In relative scale with b=0, changing the setpoint does not move the output."""
    pid = LogPID(kp=1.0, ki=0.5, setpoint=0.05, setpoint_weight=0.0, starting_output=1e6)
    state = pid.initial_state()
    for k in range(3):
        state, out = pid.step(state, 0.04, float(k))
    _, nxt = replace(pid, setpoint=0.02).step(state, 0.04, 2.0 + 1e-12)
    assert nxt.output == pytest.approx(out.output, rel=1e-6)


def test_back_calculation_survives_a_tracking_time_that_underflows_to_zero() -> None:
    """kp / ki rounding to 0.0 (extreme gains) tracks fully instead of dividing by zero."""
    pid = PID(kp=5e-324, ki=1e10, out_min=0.0, out_max=1.0, setpoint=1.0, integral_max=10.0)
    assert pid.tracking_s == 0.0
    state = pid.initial_state()
    for now in (0.0, 1.0, 2.0):
        state, out = pid.step(state, -1e6, now)
        assert 0.0 <= out.output <= 1.0


# --- bumpless transfer with finite output limits ------------------------------------
#
# The integral that holds an output u is u - P - D; P = kp (b r - y) can be anywhere, so
# an integral clamped to the output limits made these transfers jump (the default
# integral clamp is now unbounded; back-calculation keeps saturation from winding up).


def test_bumpless_gain_change_with_finite_limits() -> None:
    """kp 1 -> 10 with limits [0, 100] keeps the output at 5.2 (a clamped I gave 20)."""
    pid = PID(kp=1.0, ki=0.1, setpoint=10.0, out_min=0.0, out_max=100.0, starting_output=5.0)
    state, out = pid.step(pid.initial_state(), 8.0, 0.0)  # P = 2, I = 3, u = 5
    state, out = pid.step(state, 8.0, 1.0)  # I = 3 + 0.1*2*1 = 3.2, u = 5.2
    assert out.output == pytest.approx(5.2)
    retuned = replace(pid, kp=10.0)
    # Re-based: P = 20, I = 3.2 + 2 - 20 = -14.8 (outside [0, 100]), u = 5.2.
    state, out = retuned.step(state, 8.0, 1.0 + 1e-9)
    assert out.output == pytest.approx(5.2, abs=1e-6)
    assert not out.integral_clamped
    _, out = retuned.step(state, 8.0, 2.0)  # I = -14.8 + 0.2 = -14.6, u = 5.4
    assert out.output == pytest.approx(5.4, abs=1e-6)


def test_bumpless_setpoint_change_with_b0_and_finite_limits() -> None:
    """With b = 0 a setpoint change does not move the output; the integral does the work.

    Takeover at y = r = 200: P = -kp*y = -200, I = 5 + 200 = 205 (above out_max 100:
    a clamped I gave u = -100 -> 0 at once). The setpoint step 200 -> 210 leaves u = 5;
    one second later I = 205 + 0.1*10 = 206, u = 6.
    """
    pid = PID(
        kp=1.0,
        ki=0.1,
        setpoint=200.0,
        setpoint_weight=0.0,
        out_min=0.0,
        out_max=100.0,
        starting_output=5.0,
    )
    state, out = pid.step(pid.initial_state(), 200.0, 0.0)
    assert out.output == pytest.approx(5.0)
    moved = replace(pid, setpoint=210.0)
    state, out = moved.step(state, 200.0, 1e-9)
    assert out.output == pytest.approx(5.0, abs=1e-6)
    _, out = moved.step(state, 200.0, 1.0)
    assert out.output == pytest.approx(6.0, abs=1e-6)


def test_setpoint_kick_with_b1_is_the_documented_design() -> None:
    """With the default b = 1 a setpoint change moves the output by exactly kp * change."""
    pid = PID(kp=2.0, ki=0.1, setpoint=50.0, out_min=0.0, out_max=100.0, starting_output=5.0)
    state, before = pid.step(pid.initial_state(), 50.0, 0.0)
    _, after = replace(pid, setpoint=53.0).step(state, 50.0, 1e-9)
    assert after.output - before.output == pytest.approx(2.0 * 3.0, abs=1e-6)


def test_manual_to_auto_with_finite_limits() -> None:
    """Manual at 2 with P = 3.5 keeps I = -1.5 (below out_min 0); auto continues at 2."""
    manual = PID(kp=1.0, ki=0.5, setpoint=10.0, out_min=0.0, out_max=100.0, auto=False)
    state = manual.track(manual.initial_state(), 2.0)
    state, out = manual.step(state, 6.5, 0.0)  # P = 3.5, I = 2 - 3.5 = -1.5
    assert (out.output, out.i) == (2.0, pytest.approx(-1.5))
    _, out = replace(manual, auto=True).step(state, 6.5, 1e-9)
    assert out.output == pytest.approx(2.0, abs=1e-6)  # a clamped I (0) gave 3.5


def test_bumpless_start_with_finite_limits() -> None:
    """Start 5 at P = 14 needs I = -9 (below out_min 0): the first output is still 5."""
    pid = PID(kp=2.0, ki=1.0, setpoint=10.0, out_min=0.0, out_max=100.0, starting_output=5.0)
    _, out = pid.step(pid.initial_state(), 3.0, 0.0)
    assert (out.output, out.i, out.integral_clamped) == (5.0, -9.0, False)


def test_explicit_integral_limits_are_hard_and_flagged_on_the_first_tick() -> None:
    """Explicit integral limits hold even at takeover, and the first tick says so."""
    pid = PID(
        kp=2.0,
        ki=1.0,
        setpoint=10.0,
        integral_min=0.0,
        integral_max=100.0,
        starting_output=5.0,
    )
    _, out = pid.step(pid.initial_state(), 3.0, 0.0)  # wanted I = -9, clamped to 0
    assert (out.output, out.i, out.integral_clamped) == (14.0, 0.0, True)


def test_logpid_gain_change_is_bumpless_at_finite_log_limits() -> None:
    """LogPID always has finite limits (ln 1 .. ln 1e12): kp 1 -> 100 keeps the output.

    Relative scale, setpoint 0.05, y = 0.04: inner kp = 1/0.05 = 20, P = 20*0.01 = 0.2,
    I = ln(1e6) - 0.2 = 13.6. kp = 100: P = 20, I = -6.2 (below ln 1 = 0; clamped it
    gave exp(20) = 4.9e8 instead of 1e6).
    """
    pid = LogPID(kp=1.0, ki=0.5, setpoint=0.05, starting_output=1e6)
    state, out = pid.step(pid.initial_state(), 0.04, 0.0)
    assert out.output == pytest.approx(1e6)
    _, out = replace(pid, kp=100.0).step(state, 0.04, 1e-9)
    assert out.output == pytest.approx(1e6, rel=1e-6)


def test_slew_limit_holds_on_the_first_tick_without_bumpless_start() -> None:
    """bumpless_start=False: the first tick (dt = 0) stays at the start; then 1 per s."""
    pid = PID(kp=1.0, setpoint=1000.0, bumpless_start=False, slew_rate=1.0)
    state, out = pid.step(pid.initial_state(), 0.0, 0.0)
    assert (out.output, out.rate_limited) == (0.0, True)  # was 1000 at slew 1/s
    state, out = pid.step(state, 0.0, 1.0)
    assert out.output == pytest.approx(1.0)
    _, out = pid.step(state, 0.0, 3.0)
    assert out.output == pytest.approx(3.0)
