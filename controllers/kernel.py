"""Twins of the kernel's own DAMON tuners, in the kernel's integer arithmetic.

Two feedback loops live in ``mm/damon/core.c`` (reference: damon-sysfs.md §5.4, §5.6):

* the DAMOS **quota goal** loop (``damos_set_effective_quota``): every charge window, a
  score ``current * 10000 / target`` per goal (the *highest* wins: the least aggressive
  goal dominates) moves the effective quota ``esz`` by the shared feedback function;
  tuners ``consist`` (proportional, the default) and ``temporal`` (bang-bang, 7.1);
* the **monitoring intervals** auto-tuner (``intervals_goal``, 6.15): every ``aggrs``
  aggregations, the ratio of observed access events to ``access_bp`` of the maximum
  scales the sampling interval, at most x2 up and x0.5 down.

The twins let reactor run the kernel's behaviour on kernels that lack it, and they are
the baselines reactor's own controllers are measured against. The arithmetic is the
kernel's: ``unsigned long`` is 64 bits (sums and products wrap modulo 2**64 where the C
code would), divisions truncate, the feedback function switches to ``last / 10000 *
diff`` where ``last * diff`` would overflow, and ``ULONG_MAX`` caps the growth. Facts
taken from the kernel source; the code is written from the formulas.

Timing: the quota twin recomputes ``esz`` only when ``now`` leaves the current charge
window ``[charged_from, charged_from + reset_interval_ms)``, as the kernel does (it uses
jiffies; here ``now`` is seconds). The intervals twin counts aggregations: call its
``step`` once per aggregation interval and it tunes on every ``aggrs``-th call, which is
what the kernel's sample-count schedule amounts to.

Kernel versions (``KernelQuotaTwin.kernel``, default ``(7, 2)``: the Debian 7.2.12 guest
of the real-kernel lane). ``damos_adjust_quota`` changed in 2025, and the twin follows
the version it is given (facts from mm/damon/core.c and the patches' mm-commits mails):

* first evaluation of a scheme (no charge window yet):

  - before 6.17: ``charged_from`` is 0, so the "new window" branch fires at once and
    computes ``esz`` once;
  - 6.17 ("set quota->charged_from to jiffies at first charge window"): the first
    window starts now *without* computing ``esz``; it stays 0 (no limit) for that
    window, unless ``reset_interval_ms`` is 0, whose window ends at once (one
    computation);
  - 6.18 and later ("set effective quota on first charge window"), so 7.2: the
    first-window branch computes ``esz``, and with ``reset_interval_ms = 0`` the "new
    window" branch fires in the same evaluation (``jiffies >= charged_from + 0``) and
    computes it *again*: the consist tuner moves twice (``esz_bp`` 0 -> 20000 -> 40000,
    ``esz`` 4 on the first evaluation under score 0). The kernel re-reads the goals'
    current values for the second run: the same for ``user_input`` and the ratio
    metrics, but ``some_mem_psi_us`` is a delta since the last read, about 0 a moment
    later; the twin feeds the same ``current_values`` to both runs, so for PSI goals
    pass what the second read would see if it matters. Both fixes went to stable 5.16+
    too, so an older *stable* kernel may behave like 6.18: pass the version whose code
    it runs.

* the ``ms`` quota's throughput: ``mult_frac(total_charged_sz, 1000000,
  total_charged_ns)`` from 6.17 ("prevent unnecessary overflow"), before it the plain
  ``total_charged_sz * 1000000 / total_charged_ns``, which wraps once 2**64 / 1e6 bytes
  (about 17 TiB) were charged.

* goals whose ``target_value`` is 0 are dropped when the sysfs files are turned into a
  scheme (``damos_sysfs_add_quota_score`` skips them on every version with goals), so
  they are not goals at all: with only such goals ``esz`` is the ``bytes`` quota (or
  there is no quota). The twin drops them at construction; reported goal indices stay
  those of ``goal_targets`` (the sysfs goal directories).

* the goal score is ``mult_frac(current, 10000, target)`` in the kernel, while
  damon-sysfs.md writes it as ``current * 10000 / target``: the two differ only where
  ``current * 10000`` overflows 64 bits (current > 1.8e15); the twin keeps the kernel's
  ``mult_frac``.

* the ``ms`` path's MINSZ floor ("disallow time-quota setting zero esz", April 2026) is
  applied on every version (the 7.2 guest has it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from controllers.base import LogValue

__all__ = (
    "FEEDBACK_GOAL",
    "PAGE_SIZE",
    "ULONG_MAX",
    "IntervalsDecision",
    "IntervalsInput",
    "KernelIntervalsState",
    "KernelIntervalsTwin",
    "KernelQuotaState",
    "KernelQuotaTwin",
    "QuotaDecision",
    "QuotaInput",
    "feed_loop_next_input",
    "intervals_adaptation_bp",
    "intervals_score_bp",
    "mult_frac",
    "quota_score",
)

ULONG_MAX = (1 << 64) - 1
PAGE_SIZE = 4096
FEEDBACK_GOAL = 10000
"""The feedback function's fixed goal and floor, in basis points."""


def _u64(value: int) -> int:
    """Wrap like C ``unsigned long`` arithmetic on a 64-bit kernel."""
    return value & ULONG_MAX


def mult_frac(x: int, numer: int, denom: int) -> int:
    """The kernel's ``mult_frac(x, n, d)``: ``(x/d)*n + ((x%d)*n)/d`` in u64."""
    quot, rem = divmod(x, denom)
    return _u64(_u64(quot * numer) + _u64(rem * numer) // denom)


def feed_loop_next_input(last_input: int, score: int) -> int:
    """``damon_feed_loop_next_input``: next input for a goal score of 10000 bp.

    ``next = max(last * (2 - score/10000), 10000)`` for ``score < 20000``, in integers:
    the compensation ``last * diff / 10000`` is computed as ``last / 10000 * diff``
    when the product would overflow; growth saturates at ``ULONG_MAX``.
    """
    goal = min_input = FEEDBACK_GOAL
    if score == goal:
        return last_input
    if score >= goal * 2:
        return min_input
    over_achieving = score > goal
    diff = score - goal if over_achieving else goal - score
    if last_input < ULONG_MAX // diff:
        compensation = last_input * diff // goal
    else:
        compensation = last_input // goal * diff
    if over_achieving:
        return max(last_input - compensation, min_input)
    if last_input < ULONG_MAX - compensation:
        return last_input + compensation
    return ULONG_MAX


def quota_score(currents: Sequence[int], targets: Sequence[int]) -> tuple[int, int | None]:
    """``damos_quota_score``: the highest ``mult_frac(current, 10000, target)``.

    Returns ``(score, index of the goal that gave it)``; goals with target 0 are skipped
    (the kernel never has them: they are dropped when the scheme is built, see the
    module doc). The first of equal scores binds.
    """
    best, binding = 0, None
    for index, (current, target) in enumerate(zip(currents, targets, strict=True)):
        if target == 0:
            continue
        score = mult_frac(current, FEEDBACK_GOAL, target)
        if binding is None or score > best:
            best, binding = score, index
    return best, binding


@dataclass(frozen=True)
class QuotaInput:
    """One evaluation's inputs: each goal's current value, and time-quota history.

    ``current_values`` are in each goal metric's unit (µs of PSI stall in the window,
    bp of node memory, or the user's value), in the order of ``goal_targets``.
    ``total_charged_sz`` (bytes) and ``total_charged_ns`` feed the ``ms`` quota's
    throughput estimate and matter only when ``ms`` is set.
    """

    current_values: tuple[int, ...]
    total_charged_sz: int = 0
    total_charged_ns: int = 0


@dataclass(frozen=True)
class KernelQuotaState:
    """``esz_bp`` is the tuner's memory; ``esz`` the effective quota in bytes."""

    esz_bp: int
    esz: int
    charged_from: float | None = None


@dataclass(frozen=True)
class QuotaDecision:
    """The effective quota (bytes per charge window) and how it was reached."""

    output: float
    esz: int
    esz_bp: int
    score: int | None
    binding: int | None
    recomputed: bool
    held: str | None = None

    def log_fields(self) -> Mapping[str, LogValue]:
        """Fields for the ``controller_tick`` event."""
        return {
            "output": self.output,
            "esz": self.esz,
            "esz_bp": self.esz_bp,
            "score_bp": self.score,
            "binding_goal": self.binding,
            "recomputed": self.recomputed,
            "held": self.held,
        }


@dataclass(frozen=True)
class KernelQuotaTwin:
    """The DAMOS quota with goals, as ``damos_adjust_quota`` computes it.

    ``bytes`` and ``ms`` are the user's hard quotas (0 = unset); ``goal_targets`` the
    goals' ``target_value`` in order. ``starting_esz_bp`` is the tuner's initial memory
    (the kernel starts at 0, i.e. 1 byte; benchmarks start both contenders at the same
    output). ``min_region_sz`` is the MINSZ floor of the ``ms`` path. ``kernel`` is the
    ``(major, minor)`` version whose code to follow (module doc: first charge window,
    ``ms`` throughput). Goals with ``target_value`` 0 are dropped, as the kernel does.
    An ``esz`` of 0 means no limit in the kernel (6.17's first window).
    """

    bytes: int = 0
    ms: int = 0
    reset_interval_ms: int = 0
    goal_targets: tuple[int, ...] = ()
    tuner: Literal["consist", "temporal"] = "consist"
    min_region_sz: int = PAGE_SIZE
    starting_esz_bp: int = 0
    kernel: tuple[int, int] = (7, 2)

    def __post_init__(self) -> None:
        for name in ("bytes", "ms", "reset_interval_ms", "starting_esz_bp"):
            value = getattr(self, name)
            if not 0 <= value <= ULONG_MAX:
                raise ValueError(f"{name} must be an unsigned long, got {value!r}")
        if any(not 0 <= t <= ULONG_MAX for t in self.goal_targets):
            raise ValueError(f"goal targets must be unsigned longs, got {self.goal_targets!r}")
        if self.tuner not in ("consist", "temporal"):
            raise ValueError(f"tuner must be 'consist' or 'temporal', got {self.tuner!r}")
        if len(self.kernel) != 2 or min(self.kernel) < 0:
            raise ValueError(f"kernel must be (major, minor), got {self.kernel!r}")

    @property
    def goals(self) -> tuple[int, ...]:
        """Indices (in ``goal_targets``) of the goals the kernel keeps: target != 0."""
        return tuple(i for i, target in enumerate(self.goal_targets) if target)

    @property
    def quota_set(self) -> bool:
        """The kernel skips all quota logic unless ms, bytes or a (kept) goal is set."""
        return bool(self.ms or self.bytes or self.goals)

    def _first_evaluation_runs(self) -> int:
        """How many times the first evaluation computes ``esz`` (module doc)."""
        if self.kernel >= (6, 18):
            return 2 if self.reset_interval_ms == 0 else 1
        if self.kernel >= (6, 17):
            return 1 if self.reset_interval_ms == 0 else 0
        return 1

    def initial_state(self) -> KernelQuotaState:
        """Before the first charge window: ``esz`` 0, tuner memory ``starting_esz_bp``."""
        return KernelQuotaState(esz_bp=self.starting_esz_bp, esz=0)

    def step(
        self, state: KernelQuotaState, measurement: QuotaInput | None, now: float
    ) -> tuple[KernelQuotaState, QuotaDecision]:
        """Evaluate the scheme at ``now`` (s); recompute ``esz`` if a window ended."""
        if measurement is None:
            return state, self._decision(state, None, None, False, "missing_sample")
        if not self.quota_set:
            return state, self._decision(state, None, None, False, "no_quota")
        if state.charged_from is None:
            runs = self._first_evaluation_runs()
        else:
            window_s = self.reset_interval_ms / 1000.0
            if now < state.charged_from + window_s:
                return state, self._decision(state, None, None, False, "within_charge_window")
            runs = 1
        esz_bp, esz = state.esz_bp, state.esz
        score = binding = None
        for _ in range(runs):
            esz_bp, esz, score, binding = self.effective_quota(esz_bp, measurement)
        new_state = KernelQuotaState(esz_bp=esz_bp, esz=esz, charged_from=now)
        return new_state, self._decision(new_state, score, binding, runs > 0, None)

    def effective_quota(
        self, esz_bp: int, measurement: QuotaInput
    ) -> tuple[int, int, int | None, int | None]:
        """``damos_set_effective_quota``: ``(esz_bp, esz, score, binding goal)``."""
        goals = self.goals
        if not self.ms and not goals:
            return esz_bp, self.bytes, None, None
        esz = ULONG_MAX
        score = binding = None
        if goals:
            currents = [measurement.current_values[i] for i in goals]
            score, kept = quota_score(currents, [self.goal_targets[i] for i in goals])
            binding = None if kept is None else goals[kept]
            esz_bp = self._tune(esz_bp, score)
            esz = esz_bp // FEEDBACK_GOAL
        if self.ms:
            charged_sz, charged_ns = measurement.total_charged_sz, measurement.total_charged_ns
            if charged_ns and self.kernel >= (6, 17):
                throughput = mult_frac(charged_sz, 1_000_000, charged_ns)
            elif charged_ns:
                throughput = _u64(charged_sz * 1_000_000) // charged_ns
            else:
                throughput = PAGE_SIZE * 1024
            esz = min(_u64(throughput * self.ms), esz)
            esz = max(self.min_region_sz, esz)
        if self.bytes and self.bytes < esz:
            esz = self.bytes
        return esz_bp, esz, score, binding

    def _tune(self, esz_bp: int, score: int) -> int:
        if self.tuner == "consist":
            return feed_loop_next_input(max(esz_bp, FEEDBACK_GOAL), score)
        if score >= FEEDBACK_GOAL:
            return 0
        return _u64(self.bytes * FEEDBACK_GOAL) if self.bytes else ULONG_MAX

    def _decision(
        self,
        state: KernelQuotaState,
        score: int | None,
        binding: int | None,
        recomputed: bool,
        held: str | None,
    ) -> QuotaDecision:
        return QuotaDecision(
            output=float(state.esz),
            esz=state.esz,
            esz_bp=state.esz_bp,
            score=score,
            binding=binding,
            recomputed=recomputed,
            held=held,
        )


def intervals_score_bp(
    regions: Sequence[tuple[int, int]], aggr_samples: int, access_bp: int
) -> int:
    """Observed access events over the target events, in bp (``damon_get_intervals_score``).

    ``regions`` are ``(size_bytes, nr_accesses)`` pairs of the current aggregation.
    The target is at least 1 event (newest kernels guard the division).
    """
    max_events = events = 0
    for size, nr_accesses in regions:
        max_events = _u64(max_events + _u64(size * aggr_samples))
        events = _u64(events + _u64(size * nr_accesses))
    target = max(_u64(max_events * access_bp) // 10000, 1)
    return _u64(events * 10000) // target


def intervals_adaptation_bp(score_bp: int) -> int:
    """Scale factor for the sampling interval, in bp: 5000 (halve) .. 20000 (double)."""
    adaptation = feed_loop_next_input(100_000_000, score_bp) // 10000
    if adaptation <= 10000:
        adaptation = 5000 + adaptation // 2
    return adaptation


@dataclass(frozen=True)
class IntervalsInput:
    """One aggregation's regions: ``(size_bytes, nr_accesses)`` pairs."""

    regions: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class KernelIntervalsState:
    """Current intervals (µs) and aggregations since the last tuning."""

    sample_us: int
    aggr_us: int
    aggregations: int = 0


@dataclass(frozen=True)
class IntervalsDecision:
    """The sampling interval to use (µs), the aggregation interval, and the score."""

    output: float
    sample_us: int
    aggr_us: int
    score_bp: int | None
    adaptation_bp: int | None
    tuned: bool
    held: str | None = None

    def log_fields(self) -> Mapping[str, LogValue]:
        """Fields for the ``controller_tick`` event."""
        return {
            "output": self.output,
            "sample_us": self.sample_us,
            "aggr_us": self.aggr_us,
            "score_bp": self.score_bp,
            "adaptation_bp": self.adaptation_bp,
            "tuned": self.tuned,
            "held": self.held,
        }


@dataclass(frozen=True)
class KernelIntervalsTwin:
    """``kdamond_tune_intervals`` with ``intervals_goal`` (access_bp, aggrs, min/max).

    ``sample_us``/``aggr_us`` are the intervals set by the user; ``aggr_samples`` is
    fixed from them (``aggr_us / sample_us``) and kept while tuning, as in the kernel.
    """

    sample_us: int = 5000
    aggr_us: int = 100_000
    access_bp: int = 400
    aggrs: int = 3
    min_sample_us: int = 5000
    max_sample_us: int = 10_000_000

    def __post_init__(self) -> None:
        if self.sample_us > self.aggr_us:
            raise ValueError(
                f"sample_us must be <= aggr_us, got {self.sample_us!r} > {self.aggr_us!r}"
            )
        if self.aggrs and not (self.min_sample_us <= self.sample_us <= self.max_sample_us):
            raise ValueError(
                "intervals_goal needs min_sample_us <= sample_us <= max_sample_us, got "
                f"{self.min_sample_us!r}, {self.sample_us!r}, {self.max_sample_us!r}"
            )

    @property
    def aggr_samples(self) -> int:
        """Samples per aggregation, fixed when the attributes were set."""
        return self.aggr_us // (self.sample_us or 1)

    def initial_state(self) -> KernelIntervalsState:
        """At the user's intervals, no aggregation counted yet."""
        return KernelIntervalsState(sample_us=self.sample_us, aggr_us=self.aggr_us)

    def step(
        self, state: KernelIntervalsState, measurement: IntervalsInput | None, now: float
    ) -> tuple[KernelIntervalsState, IntervalsDecision]:
        """One aggregation boundary; tunes on every ``aggrs``-th (``now`` is unused)."""
        del now  # the kernel counts samples, not time
        if measurement is None:
            return state, self._decision(state, None, None, False, "missing_sample")
        if not self.aggrs:
            return state, self._decision(state, None, None, False, "disabled")
        count = state.aggregations + 1
        if count < self.aggrs:
            state = replace(state, aggregations=count)
            return state, self._decision(state, None, None, False, "not_due")
        score = intervals_score_bp(measurement.regions, self.aggr_samples, self.access_bp)
        adaptation = intervals_adaptation_bp(score)
        sample_us = state.sample_us
        if adaptation != 10000:
            sample_us = min(self.max_sample_us, _u64(state.sample_us * adaptation) // 10000)
            sample_us = max(self.min_sample_us, sample_us)
        new_state = KernelIntervalsState(
            sample_us=sample_us,
            aggr_us=_u64(sample_us * self.aggr_samples),
            aggregations=0,
        )
        return new_state, self._decision(new_state, score, adaptation, True, None)

    def _decision(
        self,
        state: KernelIntervalsState,
        score: int | None,
        adaptation: int | None,
        tuned: bool,
        held: str | None,
    ) -> IntervalsDecision:
        return IntervalsDecision(
            output=float(state.sample_us),
            sample_us=state.sample_us,
            aggr_us=state.aggr_us,
            score_bp=score,
            adaptation_bp=adaptation,
            tuned=tuned,
            held=held,
        )
