"""The cold-set feedforward of the reclaim quota, on hand-worked ticks."""

from __future__ import annotations

import pytest

from controllers.tuners import QuotaGoalSpec, reclaim_tuner

MIB = 2**20


def _tuner(**kwargs: float) -> object:
    return reclaim_tuner([QuotaGoalSpec("psi", 0.05)], starting_output=4 * MIB, **kwargs)


def test_drain_then_refill_by_hand() -> None:
    """540 MiB cold, no refill known: q = 0.9*540 + 4 = 490 MiB. Next tick 82 MiB cold:
    refill = (82 - 540 + 490)/1 = 32 MiB/s, q = 0.9*82 + 32 + 4 = 109.8 MiB."""
    tuner = _tuner()
    state = tuner.initial_state()  # type: ignore[attr-defined]
    state, out = tuner.step(state, {"psi": 0.0, "cold_bytes": 540 * MIB}, 1.0)  # type: ignore[attr-defined]
    assert out.output == pytest.approx(490 * MIB)
    assert (out.binding, out.informative, out.refill_rate) == ("feedforward", False, None)
    state, out = tuner.step(state, {"psi": 0.0, "cold_bytes": 82 * MIB}, 2.0)  # type: ignore[attr-defined]
    assert out.refill_rate == pytest.approx(32 * MIB)
    assert out.output == pytest.approx((0.9 * 82 + 32 + 4) * MIB)
    fields = out.log_fields()
    assert fields["feedforward.drain"] == pytest.approx(0.9 * 82 * MIB)
    assert fields["feedforward.refill"] == pytest.approx(32 * MIB)


def test_informative_only_when_the_excess_went_beyond_the_cold_set() -> None:
    """Last tick left 0.1 x cold of the cold set; informative iff that is <= 10 % of the
    4 MiB excess, i.e. cold <= 4 MiB. At 4.2 MiB a zero PSI does not probe."""
    tuner = _tuner()
    state = tuner.initial_state()  # type: ignore[attr-defined]
    state, _ = tuner.step(state, {"psi": 0.0, "cold_bytes": 4.2 * MIB}, 1.0)  # type: ignore[attr-defined]
    state, out = tuner.step(state, {"psi": 0.0, "cold_bytes": 0.0}, 2.0)  # type: ignore[attr-defined]
    assert not out.informative
    assert out.excess == pytest.approx(4 * MIB)  # held, not probed x1.4
    _, out = tuner.step(state, {"psi": 0.0, "cold_bytes": 0.0}, 3.0)  # type: ignore[attr-defined]
    assert out.informative
    assert out.excess == pytest.approx(4 * 1.4 * MIB)  # no signal beyond the cold set: probe


def test_a_cold_set_the_quota_cannot_reach_lets_the_excess_probe() -> None:
    """60 MiB read cold each tick and nothing reclaimed (the quota was charged on
    regions holding nothing): the excess can have taken no cold memory, so a PSI under
    the goal is informative and the excess probes x1.4 a tick (4 -> 5.6 -> 7.84 MiB).
    Without the measurement the last tick's 0.1 x 60 = 6 MiB left of the cold set is
    more than 10 % of the 4 MiB excess: not informative, the excess holds at 4 MiB."""
    for taken, excesses in ((0.0, [4, 5.6, 7.84]), (None, [4, 4, 4])):
        tuner = _tuner()
        state = tuner.initial_state()  # type: ignore[attr-defined]
        seen = []
        for t in (1.0, 2.0, 3.0):
            reading = {"psi": 0.0, "cold_bytes": 60 * MIB, "cold_reclaimed_bytes": taken}
            state, out = tuner.step(state, reading, t)  # type: ignore[attr-defined]
            seen.append(out.excess / MIB)
        assert seen == pytest.approx(excesses), (taken, seen)


def test_a_quota_the_actuator_did_not_use_holds_the_excess() -> None:
    """Cold set drained, PSI 0 (no signal: the excess would probe x1.4 a tick). Reported
    unbound (the actuator ran out of candidates before the quota), the stall readings
    say nothing about a larger quota: the excess holds at 4 MiB. Bound, or not reported,
    it probes 4 -> 5.6 -> 7.84 MiB as before. A PSI over the goal still lowers it."""
    for bound, excesses in ((0.0, [4, 4, 4]), (1.0, [4, 5.6, 7.84]), (None, [4, 5.6, 7.84])):
        tuner = _tuner()
        state = tuner.initial_state()  # type: ignore[attr-defined]
        seen, flags = [], []
        for t in (1.0, 2.0, 3.0):
            reading = {"psi": 0.0, "cold_bytes": 0.0, "quota_bound": bound}
            state, out = tuner.step(state, reading, t)  # type: ignore[attr-defined]
            seen.append(out.excess / MIB)
            flags.append(out.log_fields()["feedforward.quota_bound"])
        assert seen == pytest.approx(excesses), (bound, seen)
        assert flags == [None if bound is None else bound > 0] * 3
    reading = {"psi": 0.5, "cold_bytes": 0.0, "quota_bound": 0.0}
    _, out = tuner.step(state, reading, 4.0)  # type: ignore[attr-defined]
    assert out.excess < 7.84 * MIB


def test_reclaim_that_took_the_cold_set_keeps_the_old_test() -> None:
    """Reclaimed bytes at least what the drain left of the cold set change nothing: 4.2
    MiB cold, 4.2 MiB reclaimed: the 0.42 MiB left > 10 % of the 4 MiB excess, held."""
    tuner = _tuner()
    state = tuner.initial_state()  # type: ignore[attr-defined]
    state, _ = tuner.step(state, {"psi": 0.0, "cold_bytes": 4.2 * MIB}, 1.0)  # type: ignore[attr-defined]
    reading = {"psi": 0.0, "cold_bytes": 0.0, "cold_reclaimed_bytes": 4.2 * MIB}
    _, out = tuner.step(state, reading, 2.0)  # type: ignore[attr-defined]
    assert not out.informative
    assert out.excess == pytest.approx(4 * MIB)


def test_over_the_goal_is_heard_even_while_draining() -> None:
    """During the drain a PSI over the goal still lowers the excess (never raises it)."""
    tuner = _tuner()
    state = tuner.initial_state()  # type: ignore[attr-defined]
    _, out = tuner.step(state, {"psi": 0.2, "cold_bytes": 500 * MIB}, 1.0)  # type: ignore[attr-defined]
    assert not out.informative
    assert out.excess < 4 * MIB


def test_missing_cold_reading_drops_the_drain_and_never_raises() -> None:
    """Without a cold reading the drain term goes (that stock was taken), the refill
    stays, and with no stall reading either the quota holds."""
    tuner = _tuner()
    state = tuner.initial_state()  # type: ignore[attr-defined]
    state, _ = tuner.step(state, {"psi": 0.0, "cold_bytes": 540 * MIB}, 1.0)  # type: ignore[attr-defined]
    state, first = tuner.step(state, {"psi": 0.0, "cold_bytes": 82 * MIB}, 2.0)  # type: ignore[attr-defined]
    state, out = tuner.step(state, {"psi": 0.01}, 3.0)  # type: ignore[attr-defined]
    assert out.drain == 0.0
    assert out.refill == pytest.approx(32 * MIB)
    assert out.output <= first.output
    _, held = tuner.step(state, {}, 4.0)  # type: ignore[attr-defined]
    assert (held.held, held.output) == ("missing_sample", out.output)


def test_no_stall_reading_never_raises_the_quota() -> None:
    """Cold memory grew but PSI is missing: the quota may not rise."""
    tuner = _tuner()
    state = tuner.initial_state()  # type: ignore[attr-defined]
    state, first = tuner.step(state, {"psi": 0.0, "cold_bytes": 10 * MIB}, 1.0)  # type: ignore[attr-defined]
    _, out = tuner.step(state, {"cold_bytes": 900 * MIB}, 2.0)  # type: ignore[attr-defined]
    assert out.output == first.output
    assert out.binding == "no_stall_reading"


def test_a_cap_below_the_feedforward_keeps_the_learned_excess() -> None:
    """An absolute goal capping the quota under the feedforward leaves the excess goals'
    own excess alone (re-learning it from 1 byte would take 46 ticks)."""
    tuner = reclaim_tuner(
        [QuotaGoalSpec("psi", 0.05), QuotaGoalSpec("free", 0.01, beyond_cold=False)],
        starting_output=4 * MIB,
    )
    state = tuner.initial_state()
    state, out = tuner.step(state, {"psi": 0.0, "free": 0.5, "cold_bytes": 900 * MIB}, 1.0)
    assert out.binding == "free"
    assert out.output < out.drain
    assert out.excess == 0.0
    assert state.excess_state.output == pytest.approx(4 * MIB)


def test_goal_names_may_not_shadow_the_inputs() -> None:
    """A goal called cold_bytes would be read as the cold reading: refused."""
    with pytest.raises(ValueError, match="goal names must be unique and not"):
        reclaim_tuner([QuotaGoalSpec("cold_bytes", 1.0)])
    with pytest.raises(ValueError, match="at least one beyond_cold goal"):
        reclaim_tuner([QuotaGoalSpec("free", 0.2, beyond_cold=False)])


def test_time_not_advancing_holds() -> None:
    """A tick at or before the last one holds the quota and changes nothing."""
    tuner = _tuner()
    state, out = tuner.step(tuner.initial_state(), {"psi": 0.0, "cold_bytes": 1e8}, 5.0)  # type: ignore[attr-defined]
    same, held = tuner.step(state, {"psi": 0.0, "cold_bytes": 9e8}, 5.0)  # type: ignore[attr-defined]
    assert (held.held, held.output, same) == ("time_not_advancing", out.output, state)
