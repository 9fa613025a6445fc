"""The kernel twins reproduce mm/damon/core.c's integer arithmetic on hand-worked inputs.

Every expected value below is worked out from the formulas of damon-sysfs.md §5.4/§5.6
(shown in the comment beside it), not by running the code under test.
"""

from __future__ import annotations

import pytest

from controllers.kernel import (
    ULONG_MAX,
    IntervalsInput,
    KernelIntervalsTwin,
    KernelQuotaTwin,
    QuotaInput,
    feed_loop_next_input,
    intervals_adaptation_bp,
    intervals_score_bp,
    mult_frac,
    quota_score,
)


@pytest.mark.parametrize(
    ("last", "score", "expected"),
    [
        (10000, 10000, 10000),  # score == goal: unchanged
        (10000, 0, 20000),  # comp = 10000*10000/10000 = 10000; 10000 + 10000
        (20000, 5000, 30000),  # comp = 20000*5000/10000 = 10000
        (30000, 15000, 15000),  # over: comp = 30000*5000/10000 = 15000; 30000 - 15000
        (12345, 20000, 10000),  # score >= 2*goal: min_input
        (12345, 19999, 10000),  # comp = 12345*9999/10000 = 12343; max(2, 10000)
        (10001, 9999, 10002),  # comp = 10001*1/10000 = 1 (truncated)
        # Overflow branch: 2**62 >= ULONG_MAX/5000, so comp = 2**62/10000*5000
        # = 461168601842738 * 5000 = 2305843009213690000 (exact x1.5 would end ...81856).
        (2**62, 5000, 4611686018427387904 + 2305843009213690000),
        # Cap: comp = (2**63+2**62)/10000*10000 = 13835058055282160000 and
        # last >= ULONG_MAX - comp, so ULONG_MAX.
        (2**63 + 2**62, 0, ULONG_MAX),
    ],
)
def test_feed_loop_next_input(last: int, score: int, expected: int) -> None:
    """damon_feed_loop_next_input, case by case."""
    assert feed_loop_next_input(last, score) == expected


def test_mult_frac_truncates_and_wraps_like_the_kernel() -> None:
    """mult_frac(7, 10000, 3) = 2*10000 + 1*10000/3 = 23333; q*n wraps modulo 2**64."""
    assert mult_frac(7, 10000, 3) == 23333
    # q = ULONG_MAX/3 = 6148914691236517205, r = 0; q*10000 mod 2**64:
    assert mult_frac(ULONG_MAX, 10000, 3) == (6148914691236517205 * 10000) % 2**64


def test_quota_score_highest_wins_and_skips_zero_targets() -> None:
    """Scores 500*10000/1000 = 5000 and 80*10000/100 = 8000: goal 1 binds; target 0 skipped."""
    assert quota_score((500, 80), (1000, 100)) == (8000, 1)
    assert quota_score((500, 10**9), (1000, 0)) == (5000, 0)
    assert quota_score((1,), (0,)) == (0, None)


def test_consist_tuner_sequence() -> None:
    """esz_bp from 0: x2, x2, x1.5, x0.5, then score 2x goal resets to 10000 bp.

    One computation per evaluation: each evaluation (1 s apart) ends the 1 s window.
    """
    twin = KernelQuotaTwin(goal_targets=(1000,), reset_interval_ms=1000)
    state = twin.initial_state()
    expected = [
        (0, 20000, 2),  # feed(max(0,10000), 0) = 20000; esz = 20000/10000
        (0, 40000, 4),  # feed(20000, 0)
        (500, 60000, 6),  # score 5000: 40000 + 40000*5000/10000
        (1500, 30000, 3),  # score 15000: 60000 - 60000*5000/10000
        (2000, 10000, 1),  # score 20000: min_input
    ]
    for k, (current, esz_bp, esz) in enumerate(expected):
        state, out = twin.step(state, QuotaInput((current,)), float(k))
        assert (state.esz_bp, out.esz) == (esz_bp, esz)
        assert out.recomputed


@pytest.mark.parametrize(
    ("kernel", "reset_ms", "first_esz_bp", "first_esz"),
    [
        # 7.2 (>= 6.18): the first-window branch computes, and with reset 0 the
        # new-window branch (jiffies >= charged_from + 0) computes again:
        # feed(10000, 0) = 20000, feed(20000, 0) = 40000 -> esz 4.
        ((7, 2), 0, 40000, 4),
        ((7, 2), 1000, 20000, 2),  # window not over: once
        # 6.17: charged_from set without esz; reset 0 ends the window at once: once.
        ((6, 17), 0, 20000, 2),
        ((6, 17), 1000, 0, 0),  # first window without esz (0 = no limit)
        # before 6.17: charged_from 0 is long past: the new-window branch, once.
        ((6, 16), 0, 20000, 2),
        ((6, 16), 1000, 20000, 2),
    ],
)
def test_first_evaluation_by_kernel_version(
    kernel: tuple[int, int], reset_ms: int, first_esz_bp: int, first_esz: int
) -> None:
    """The first evaluation's esz computations follow damos_adjust_quota per version."""
    twin = KernelQuotaTwin(goal_targets=(1000,), reset_interval_ms=reset_ms, kernel=kernel)
    state, out = twin.step(twin.initial_state(), QuotaInput((0,)), 5.0)
    assert (state.esz_bp, out.esz) == (first_esz_bp, first_esz)
    # Later evaluations: one computation each when the window has ended.
    _, out = twin.step(state, QuotaInput((0,)), 5.0 + max(reset_ms, 1) / 1000)
    assert out.esz_bp == max(first_esz_bp, 10000) * 2


def test_zero_target_goals_are_dropped() -> None:
    """Goals with target 0 are not built by the kernel: esz is the bytes quota, every
    evaluation (the twin used to keep them and double 2 -> 4 -> 8)."""
    twin = KernelQuotaTwin(bytes=12345, goal_targets=(0, 0), reset_interval_ms=1000)
    state = twin.initial_state()
    for k in range(3):
        state, out = twin.step(state, QuotaInput((500, 7)), float(k))
        assert (out.esz, out.esz_bp, out.score, out.binding) == (12345, 0, None, None)
    only_zero = KernelQuotaTwin(goal_targets=(0,))
    _, out = only_zero.step(only_zero.initial_state(), QuotaInput((1,)), 0.0)
    assert out.held == "no_quota"  # no ms, no bytes, no kept goal: no quota at all


def test_binding_goal_index_counts_dropped_goals() -> None:
    """Goal 0 (target 0) is dropped; goals 1 and 2 score 5000 and 8000: goal 2 binds."""
    twin = KernelQuotaTwin(goal_targets=(0, 1000, 100), reset_interval_ms=1000)
    _, out = twin.step(twin.initial_state(), QuotaInput((10**9, 500, 80)), 0.0)
    assert (out.score, out.binding) == (8000, 2)


def test_time_quota_throughput_mult_frac_by_version() -> None:
    """From 6.17 the throughput is mult_frac(sz, 1e6, ns); before, sz*1e6 wrapped.

    sz = 2**45 = 35184372088832 bytes, ns = 1e12: mult_frac = 35*1e6 +
    184372088832*1e6/1e12 = 35000000 + 184372 = 35184372 bytes/ms; plain:
    2**45*1e6 mod 2**64 = 16737628015122448384, /1e12 = 16737628. ms = 1.
    """
    new = KernelQuotaTwin(ms=1, reset_interval_ms=1000)
    _, out = new.step(new.initial_state(), QuotaInput((), 2**45, 10**12), 0.0)
    assert out.esz == 35184372
    old = KernelQuotaTwin(ms=1, reset_interval_ms=1000, kernel=(6, 16))
    _, out = old.step(old.initial_state(), QuotaInput((), 2**45, 10**12), 0.0)
    assert out.esz == 16737628


def test_temporal_tuner() -> None:
    """temporal: under the goal, bytes*10000 (or ULONG_MAX); at or over it, 0."""
    twin = KernelQuotaTwin(bytes=4096, goal_targets=(1000,), tuner="temporal")
    state, out = twin.step(twin.initial_state(), QuotaInput((999,)), 0.0)
    assert (out.esz_bp, out.esz) == (40960000, 4096)
    _, out = twin.step(state, QuotaInput((1000,)), 1.0)
    assert (out.esz_bp, out.esz) == (0, 0)
    unbounded = KernelQuotaTwin(goal_targets=(1000,), tuner="temporal")
    _, out = unbounded.step(unbounded.initial_state(), QuotaInput((0,)), 0.0)
    assert out.esz == ULONG_MAX // 10000


def test_time_quota_throughput() -> None:
    """ms quota: esz = throughput*ms, throughput 4 MiB/ms until something was charged."""
    twin = KernelQuotaTwin(ms=10)
    _, out = twin.step(twin.initial_state(), QuotaInput(()), 0.0)
    assert out.esz == 4096 * 1024 * 10
    # 1e9 bytes in 2e9 ns: 1e9*1e6/2e9 = 500000 bytes per ms; x10 ms.
    _, out = twin.step(twin.initial_state(), QuotaInput((), 10**9, 2 * 10**9), 0.0)
    assert out.esz == 5_000_000
    # The ms path floors esz at MINSZ (newest kernels).
    _, out = twin.step(twin.initial_state(), QuotaInput((), 1, 10**12), 0.0)
    assert out.esz == 4096


def test_only_bytes_means_fixed_quota_and_none_means_no_quota() -> None:
    """No ms and no goals: esz = bytes; nothing set: the quota logic is skipped."""
    twin = KernelQuotaTwin(bytes=12345)
    _, out = twin.step(twin.initial_state(), QuotaInput(()), 0.0)
    assert out.esz == 12345
    none = KernelQuotaTwin()
    _, out = none.step(none.initial_state(), QuotaInput(()), 0.0)
    assert out.held == "no_quota"


def test_charge_window_gates_recomputation() -> None:
    """esz is recomputed only when now leaves [charged_from, charged_from + reset)."""
    twin = KernelQuotaTwin(goal_targets=(1000,), reset_interval_ms=1000)
    state, out = twin.step(twin.initial_state(), QuotaInput((0,)), 10.0)
    assert out.recomputed
    state, out = twin.step(state, QuotaInput((0,)), 10.5)
    assert (out.recomputed, out.held, out.esz) == (False, "within_charge_window", 2)
    _, out = twin.step(state, QuotaInput((0,)), 11.0)
    assert (out.recomputed, out.esz) == (True, 4)


def test_missing_sample_holds_the_quota() -> None:
    """A missing measurement leaves esz and the tuner's memory alone."""
    twin = KernelQuotaTwin(goal_targets=(1000,))
    state, _ = twin.step(twin.initial_state(), QuotaInput((0,)), 0.0)
    new_state, out = twin.step(state, None, 1.0)
    assert new_state == state
    assert out.held == "missing_sample"


def test_intervals_score_by_hand() -> None:
    """max = (4096+12288)*20 = 327680; events = 4096*2 = 8192; target = 327680*400/10000
    = 13107; score = 8192*10000/13107 = 6250."""
    assert intervals_score_bp([(4096, 2), (12288, 0)], 20, 400) == 6250


def test_intervals_score_guards_zero_target() -> None:
    """With no regions the target is floored at 1 event, so the score is 0, not a crash."""
    assert intervals_score_bp([], 20, 400) == 0


@pytest.mark.parametrize(
    ("score", "adaptation"),
    [
        (0, 20000),  # feed(1e8, 0) = 2e8 -> /10000 = 20000: double
        (6250, 13750),  # 1e8 + 1e8*3750/10000 = 1.375e8
        (10000, 10000),  # unchanged
        (15000, 7500),  # 1e8 - 5e7 = 5e7 -> 5000 -> 5000 + 5000/2
        (20000, 5000),  # min_input 10000 -> 1 -> 5000 + 1/2 = 5000: halve
    ],
)
def test_intervals_adaptation(score: int, adaptation: int) -> None:
    """The adaptation factor, with the shrink side rescaled to [5000, 10000]."""
    assert intervals_adaptation_bp(score) == adaptation


def test_intervals_twin_tunes_every_aggrs_aggregations() -> None:
    """aggrs=3: two aggregations pass, the third scales S by 13750 bp and A = S*20."""
    twin = KernelIntervalsTwin(
        sample_us=5000,
        aggr_us=100_000,
        access_bp=400,
        aggrs=3,
        min_sample_us=1000,
        max_sample_us=1_000_000,
    )
    sample = IntervalsInput(((4096, 2), (12288, 0)))
    state = twin.initial_state()
    for k in range(2):
        state, out = twin.step(state, sample, float(k))
        assert (out.tuned, out.held, out.sample_us) == (False, "not_due", 5000)
    state, out = twin.step(state, sample, 2.0)
    assert (out.tuned, out.score_bp, out.sample_us, out.aggr_us) == (True, 6250, 6875, 137500)
    assert state.aggregations == 0


def test_intervals_twin_clamps_to_min_and_max() -> None:
    """Doubling stops at max_sample_us, halving at min_sample_us."""
    twin = KernelIntervalsTwin(
        sample_us=5000, aggr_us=100_000, aggrs=1, min_sample_us=4000, max_sample_us=8000
    )
    idle = IntervalsInput(((4096, 0),))
    busy = IntervalsInput(((4096, 20),))
    state, out = twin.step(twin.initial_state(), idle, 0.0)
    assert out.sample_us == 8000  # 10000 clamped
    _, out = twin.step(state, busy, 1.0)
    assert out.sample_us == 4000  # 8000/2 = 4000


def test_intervals_twin_refuses_inconsistent_bounds() -> None:
    """min <= sample <= max is required when tuning is on, as the kernel's EINVAL."""
    with pytest.raises(ValueError, match=r"min_sample_us <= sample_us <= max_sample_us"):
        KernelIntervalsTwin(sample_us=5000, min_sample_us=6000, max_sample_us=9000)
