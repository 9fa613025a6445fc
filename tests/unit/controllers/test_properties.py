"""Invariants of every controller for arbitrary inputs (hypothesis, derandomized)."""

from __future__ import annotations

import math
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.adaptive import AdaptiveLogGoal
from controllers.compose import Goal, GoalComposite
from controllers.feedforward import ColdFeedforward
from controllers.kernel import (
    ULONG_MAX,
    KernelQuotaTwin,
    QuotaInput,
    feed_loop_next_input,
)
from controllers.logpid import LogPID
from controllers.pid import PID
from controllers.tuners import QuotaGoalSpec, reclaim_tuner

# Reproducible runs: the same examples every time, in CI and on a laptop. Applied per
# test rather than as a global profile, so other test modules keep their own settings.
SCALES: tuple[Literal["linear", "relative", "log"], ...] = ("linear", "relative", "log")
REPRODUCIBLE = settings(derandomize=True, max_examples=150, deadline=None)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
measurement = st.one_of(st.none(), finite, st.just(math.nan), st.just(math.inf))
dts = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
gains = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@st.composite
def pids(draw: st.DrawFn) -> PID:
    low = draw(st.floats(min_value=-1e3, max_value=1e3))
    high = low + draw(st.floats(min_value=0.0, max_value=1e3))
    return PID(
        kp=draw(gains),
        ki=draw(gains),
        kd=draw(gains),
        setpoint=draw(finite),
        setpoint_weight=draw(st.floats(min_value=0.0, max_value=1.0)),
        out_min=low,
        out_max=high,
        slew_rate=draw(st.one_of(st.none(), st.floats(min_value=0.01, max_value=100.0))),
        derivative_filter_s=draw(st.floats(min_value=0.0, max_value=10.0)),
        starting_output=draw(finite),
        max_dt_s=draw(st.one_of(st.none(), st.floats(min_value=0.1, max_value=10.0))),
    )


@REPRODUCIBLE
@given(pids(), st.lists(st.tuples(measurement, dts), max_size=40))
def test_pid_output_within_limits_and_finite(
    pid: PID, ticks: list[tuple[float | None, float]]
) -> None:
    """Whatever comes in, the PID output is finite and within its limits."""
    state, now = pid.initial_state(), 0.0
    for y, dt in ticks:
        now += dt
        state, out = pid.step(state, y, now)
        assert math.isfinite(out.output)
        assert pid.out_min <= out.output <= pid.out_max
        assert pid.i_min <= state.integral <= pid.i_max


@REPRODUCIBLE
@given(pids(), st.lists(st.tuples(finite, dts), min_size=1, max_size=20))
def test_pid_reset_restores_initial_state(pid: PID, ticks: list[tuple[float, float]]) -> None:
    """A reset (initial_state()) replays the same run exactly: no hidden memory."""

    def run() -> list[float]:
        state, now, outs = pid.initial_state(), 0.0, []
        for y, dt in ticks:
            now += dt
            state, out = pid.step(state, y, now)
            outs.append(out.output)
        return outs

    first = run()
    assert (
        pid.initial_state()
        == PID(**{f: getattr(pid, f) for f in pid.__dataclass_fields__}).initial_state()
    )
    assert run() == first


@REPRODUCIBLE
@given(
    st.floats(min_value=0.01, max_value=10.0),
    st.floats(min_value=0.01, max_value=10.0),
    st.floats(min_value=-100.0, max_value=100.0),
    st.floats(min_value=0.1, max_value=100.0),
)
def test_pid_response_has_the_right_sign(kp: float, ki: float, setpoint: float, gap: float) -> None:
    """Below the setpoint a direct-acting PID raises its output; above, it lowers it."""
    pid = PID(kp=kp, ki=ki, setpoint=setpoint)
    for sign in (1.0, -1.0):
        y = setpoint - sign * gap
        state, first = pid.step(pid.initial_state(), y, 0.0)
        _, second = pid.step(state, y, 1.0)
        assert (second.output - first.output) * sign > 0


@st.composite
def logpids(draw: st.DrawFn) -> LogPID:
    low = draw(st.floats(min_value=1.0, max_value=1e6))
    high = low * draw(st.floats(min_value=1.0, max_value=1e6))
    scale = draw(st.sampled_from(SCALES))
    return LogPID(
        kp=draw(gains),
        ki=draw(gains),
        setpoint=draw(st.floats(min_value=1e-3, max_value=1e3)),
        out_min=low,
        out_max=high,
        max_factor_per_s=draw(st.one_of(st.none(), st.floats(min_value=1.1, max_value=100.0))),
        measurement_scale=scale,
        starting_output=draw(st.floats(min_value=1.0, max_value=1e12)),
    )


@REPRODUCIBLE
@given(logpids(), st.lists(st.tuples(measurement, dts), max_size=30))
def test_logpid_output_within_limits_and_finite(
    pid: LogPID, ticks: list[tuple[float | None, float]]
) -> None:
    """The log-space PID's output is finite, positive and within its limits."""
    state, now = pid.initial_state(), 0.0
    for y, dt in ticks:
        now += dt
        state, out = pid.step(state, y, now)
        assert math.isfinite(out.output)
        assert pid.out_min <= out.output <= pid.out_max


@st.composite
def goals(draw: st.DrawFn) -> AdaptiveLogGoal:
    low = draw(st.floats(min_value=1.0, max_value=1e6))
    return AdaptiveLogGoal(
        setpoint=draw(st.floats(min_value=1e-4, max_value=1e4)),
        direction=draw(st.sampled_from([1, -1])),
        out_min=low,
        out_max=low * draw(st.floats(min_value=1.0, max_value=1e6)),
        starting_output=draw(st.floats(min_value=1.0, max_value=1e12)),
        gain=draw(st.floats(min_value=0.05, max_value=1.0)),
    )


@REPRODUCIBLE
@given(goals(), st.lists(st.tuples(measurement, dts), max_size=30))
def test_adaptive_goal_within_limits_and_finite(
    goal: AdaptiveLogGoal, ticks: list[tuple[float | None, float]]
) -> None:
    """The adaptive goal seeker's output is finite and within its limits."""
    state, now = goal.initial_state(), 0.0
    for y, dt in ticks:
        now += dt
        state, out = goal.step(state, y, now)
        assert math.isfinite(out.output)
        assert goal.out_min <= out.output <= goal.out_max * (1 + 1e-12)


@REPRODUCIBLE
@given(st.floats(min_value=1e-3, max_value=1e3), st.floats(min_value=0.01, max_value=100.0))
def test_adaptive_goal_response_has_the_right_sign(setpoint: float, ratio: float) -> None:
    """Under its goal the seeker raises the output (direction +1), over it lowers it."""
    goal = AdaptiveLogGoal(setpoint=setpoint, out_min=1.0, out_max=1e9, starting_output=1e4)
    y = setpoint * ratio
    _, out = goal.step(goal.initial_state(), y, 0.0)
    if ratio < 1:
        assert out.output >= 1e4
    elif ratio > 1:
        assert out.output <= 1e4


@REPRODUCIBLE
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b"]), measurement), max_size=20))
def test_composite_is_never_above_any_live_proposal(
    ticks: list[dict[str, float | None]],
) -> None:
    """Under the min rule the applied output never exceeds any goal's own proposal."""
    a = AdaptiveLogGoal(setpoint=1.0, out_min=1.0, out_max=1e9, starting_output=100.0)
    b = AdaptiveLogGoal(setpoint=10.0, out_min=1.0, out_max=1e9, starting_output=1000.0)
    composite = GoalComposite((Goal("a", a), Goal("b", b)))
    state = composite.initial_state()
    for k, sample in enumerate(ticks):
        state, out = composite.step(state, sample, float(k))
        assert math.isfinite(out.output)
        assert all(out.output <= value for _, value in out.allowed)


@REPRODUCIBLE
@given(st.integers(min_value=0, max_value=ULONG_MAX), st.integers(min_value=0, max_value=ULONG_MAX))
def test_feedback_stays_an_unsigned_long(last: int, score: int) -> None:
    """The kernel feedback never leaves [10000 or last, ULONG_MAX] and moves the right way."""
    nxt = feed_loop_next_input(last, score)
    assert 0 <= nxt <= ULONG_MAX
    if score < 10000:
        assert nxt >= last
    elif score > 10000:
        assert nxt <= max(last, 10000)


@REPRODUCIBLE
@given(
    st.lists(st.integers(min_value=0, max_value=ULONG_MAX), min_size=1, max_size=3),
    st.lists(st.integers(min_value=0, max_value=ULONG_MAX), min_size=1, max_size=10),
)
def test_quota_twin_effective_quota_is_an_unsigned_long(
    targets: list[int], currents: list[int]
) -> None:
    """The quota twin's esz is always a valid unsigned long, capped by bytes."""
    twin = KernelQuotaTwin(bytes=2**30, goal_targets=tuple(targets))
    state = twin.initial_state()
    for k, current in enumerate(currents):
        state, out = twin.step(state, QuotaInput((current,) * len(targets)), float(k))
        assert 0 <= out.esz <= 2**30
        assert 0 <= state.esz_bp <= ULONG_MAX


# --- reset and sign for LogPID, reverse-acting PID, the composites --------------------


@REPRODUCIBLE
@given(logpids(), st.lists(st.tuples(measurement, dts), min_size=1, max_size=20))
def test_logpid_reset_restores_initial_state(
    pid: LogPID, ticks: list[tuple[float | None, float]]
) -> None:
    """A reset replays a LogPID run exactly: no hidden memory outside the state."""

    def run() -> list[float]:
        state, now, outs = pid.initial_state(), 0.0, []
        for y, dt in ticks:
            now += dt
            state, out = pid.step(state, y, now)
            outs.append(out.output)
        return outs

    first = run()
    assert run() == first


@REPRODUCIBLE
@given(
    st.floats(min_value=0.01, max_value=10.0),
    st.floats(min_value=0.01, max_value=10.0),
    st.floats(min_value=1e-3, max_value=1e3),
    st.floats(min_value=1.05, max_value=100.0),
    st.tuples(st.sampled_from(SCALES), st.sampled_from([1, -1])),
)
def test_logpid_response_has_the_right_sign(
    kp: float,
    ki: float,
    setpoint: float,
    ratio: float,
    how: tuple[Literal["linear", "relative", "log"], Literal[1, -1]],
) -> None:
    """Below the setpoint a LogPID raises its output (direction +1) or lowers it (-1);
    above the setpoint the opposite. Starts mid-range so no limit hides the move."""
    scale, direction = how
    pid = LogPID(
        kp=kp,
        ki=ki,
        setpoint=setpoint,
        direction=direction,
        out_min=1.0,
        out_max=1e12,
        starting_output=1e6,
        measurement_scale=scale,
    )
    for below in (True, False):
        y = setpoint / ratio if below else setpoint * ratio
        state, first = pid.step(pid.initial_state(), y, 0.0)
        _, second = pid.step(state, y, 1.0)
        rising = second.output > first.output
        assert rising == (below == (direction == 1))


@st.composite
def reverse_pids(draw: st.DrawFn) -> PID:
    pid = draw(pids())
    return PID(**{**{f: getattr(pid, f) for f in pid.__dataclass_fields__}, "direction": -1})


@REPRODUCIBLE
@given(reverse_pids(), st.lists(st.tuples(measurement, dts), max_size=40))
def test_reverse_pid_output_within_limits_and_finite(
    pid: PID, ticks: list[tuple[float | None, float]]
) -> None:
    """A reverse-acting PID's output is finite and within its limits for any input."""
    state, now = pid.initial_state(), 0.0
    for y, dt in ticks:
        now += dt
        state, out = pid.step(state, y, now)
        assert math.isfinite(out.output)
        assert pid.out_min <= out.output <= pid.out_max


@REPRODUCIBLE
@given(reverse_pids(), st.lists(st.tuples(finite, dts), min_size=1, max_size=20))
def test_reverse_pid_reset_restores_initial_state(
    pid: PID, ticks: list[tuple[float, float]]
) -> None:
    """A reset replays a reverse-acting PID run exactly."""

    def run() -> list[float]:
        state, now, outs = pid.initial_state(), 0.0, []
        for y, dt in ticks:
            now += dt
            state, out = pid.step(state, y, now)
            outs.append(out.output)
        return outs

    first = run()
    assert run() == first


@REPRODUCIBLE
@given(
    st.floats(min_value=0.01, max_value=10.0),
    st.floats(min_value=0.01, max_value=10.0),
    st.floats(min_value=-100.0, max_value=100.0),
    st.floats(min_value=0.1, max_value=100.0),
)
def test_reverse_pid_response_has_the_right_sign(
    kp: float, ki: float, setpoint: float, gap: float
) -> None:
    """Below the setpoint a reverse-acting PID lowers its output; above, it raises it."""
    pid = PID(kp=kp, ki=ki, setpoint=setpoint, direction=-1)
    for sign in (1.0, -1.0):
        y = setpoint - sign * gap
        state, first = pid.step(pid.initial_state(), y, 0.0)
        _, second = pid.step(state, y, 1.0)
        assert (second.output - first.output) * sign < 0


def _composite() -> GoalComposite:
    a = AdaptiveLogGoal(setpoint=1.0, out_min=1.0, out_max=1e9, starting_output=100.0)
    b = PID(ki=5.0, setpoint=10.0, out_min=1.0, out_max=1e9, starting_output=1000.0)
    return GoalComposite((Goal("a", a), Goal("b", b)))


@REPRODUCIBLE
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b"]), measurement), max_size=20))
def test_composite_reset_restores_initial_state(ticks: list[dict[str, float | None]]) -> None:
    """A reset replays a composite run exactly (outputs and binding goals)."""
    composite = _composite()

    def run() -> list[tuple[float, str | None]]:
        state, outs = composite.initial_state(), []
        for k, sample in enumerate(ticks):
            state, out = composite.step(state, sample, float(k))
            outs.append((out.output, out.binding))
        return outs

    first = run()
    assert composite.initial_state() == _composite().initial_state()
    assert run() == first


@REPRODUCIBLE
@given(
    st.floats(min_value=0.01, max_value=0.99),
    st.floats(min_value=1.01, max_value=100.0),
    st.booleans(),
)
def test_composite_response_has_the_right_sign(below: float, above: float, under: bool) -> None:
    """All goals under their setpoints: the output rises; all over: it falls."""
    composite = _composite()
    ratio = below if under else above
    state, first = composite.step(composite.initial_state(), {"a": ratio, "b": 10 * ratio}, 0.0)
    _, second = composite.step(state, {"a": ratio, "b": 10 * ratio}, 1.0)
    assert (second.output > first.output) == under
    assert second.output != first.output


def _feedforward() -> ColdFeedforward:
    return reclaim_tuner(
        [QuotaGoalSpec("psi", 0.05), QuotaGoalSpec("free", 0.3, beyond_cold=False)],
        starting_output=4 * 2**20,
    )


amounts = st.one_of(
    st.none(), st.floats(min_value=0.0, max_value=2e9), st.just(math.nan), st.just(-1.0)
)


@REPRODUCIBLE
@given(
    st.lists(
        st.tuples(
            st.fixed_dictionaries({"psi": measurement, "free": measurement, "cold_bytes": amounts}),
            dts,
        ),
        max_size=25,
    )
)
def test_feedforward_within_limits_finite_and_resettable(
    ticks: list[tuple[dict[str, float | None], float]],
) -> None:
    """The feedforward quota is finite and within its limits for any readings, and a
    reset replays the run exactly."""
    controller = _feedforward()

    def run() -> list[float]:
        state, now, outs = controller.initial_state(), 0.0, []
        for sample, dt in ticks:
            now += dt
            state, out = controller.step(state, sample, now)
            assert math.isfinite(out.output)
            assert controller.out_min <= out.output <= controller.out_max
            outs.append(out.output)
        return outs

    first = run()
    assert run() == first


@REPRODUCIBLE
@given(
    st.floats(min_value=1.05, max_value=20.0),
    st.floats(min_value=0.0, max_value=1e9),
    st.floats(min_value=0.0, max_value=1e9),
)
def test_feedforward_never_raises_the_excess_over_the_goal(
    ratio: float, cold_before: float, cold_now: float
) -> None:
    """A stall reading over its setpoint never raises the excess goals' decision,
    informative or not; one under it never lowers it (it rises or holds). (The applied
    excess may still be cut by the output limits.)"""
    controller = _feedforward()
    state, _ = controller.step(
        controller.initial_state(), {"psi": 0.05, "cold_bytes": cold_before}, 0.0
    )
    for psi, rises in ((0.05 * ratio, False), (0.05 / ratio, True)):
        _, out = controller.step(state, {"psi": psi, "cold_bytes": cold_now}, 1.0)
        before = state.excess_state.output
        if rises:
            assert out.excess_decision.output >= before
        else:
            assert out.excess_decision.output <= before
