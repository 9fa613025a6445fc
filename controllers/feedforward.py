"""Reclaim quota with a cold-set feedforward: take what is known cold, steer the excess.

With pressure (PSI) as its only signal a reclaim controller is blind while it reclaims
cold memory: nobody stalls until the cold set is gone, and then the quota grown
meanwhile evicts hot memory all at once (benchmark reclaim plant: PSI 0.55..0.6 against
a goal of 0.05). But a reclaim policy *knows* how much is cold: the monitor's regions
that match its access pattern. This controller uses that reading as a feedforward and
leaves only the part beyond it to the goals:

``quota = drain + refill + excess`` (bytes per ``window_s``), where

* ``drain = drain_share * cold * window_s / dt`` reclaims that share of the cold bytes
  read this tick within the tick (``dt`` the true tick, ``tick_s`` before the first);
  ``drain_share < 1`` leaves room for a cold reading that is too high: an overestimate
  by a factor ``1 + eps`` evicts nothing hot while ``drain_share * (1 + eps) <= 1``
  (0.9: up to 11 %);
* ``refill = r * window_s`` with ``r`` (bytes/s) the rate at which memory turns cold,
  estimated from consecutive readings: ``r = (cold - cold_before) / dt + taken / dt``,
  ``taken`` the bytes reclaimed in between (``cold_reclaimed_bytes`` when the policy
  measures it, else the quota applied times ``dt / window_s``), exact while cold memory
  remained (everything reclaimed was cold). Once the reading is 0 the same formula is
  only an upper bound (part of ``taken`` may have been hot), which may only lower the
  estimate; with a refault rate (``refault_key``) the bound is ``upper - refaults``
  (the hot part comes back as refaults), tight in steady state, so a refill that
  *fell* is followed too. Exponentially smoothed (``refill_smoothing``);
* ``excess``: the output of ``excess`` (a :class:`~controllers.compose.GoalComposite`
  of the stall goals: PSI, refaults), i.e. what the goals allow to reclaim *beyond* the
  cold set. In these coordinates there is no dead zone (the refill is fed forward), and
  a stall curve that is concave through 0 has a log-log slope of at most 1.

The stall goals learn only from ticks that can tell them something: the last tick left
``(1 - drain_share) * cold`` of the cold set it read, and that much of its excess took
cold memory, not hot. Unless at least ``informative_share`` (90 %) of the excess went
beyond the cold set, a stall reading says little about the excess (a zero stall during
the drain is no reason to probe, and a reading that saw only part of the excess would
make the next step overshoot by the missing part): then a goal's reading is passed
only if it asks for *less* (its metric beyond its setpoint); otherwise it holds. With
the reclaimed bytes measured (``reclaimed_key``), the cold memory the excess can have
taken is also at most what was reclaimed: where the quota was charged on memory that
held nothing (a DAMOS vaddr scheme charges a region's whole size, and the regions it
already emptied, or that span holes between mappings, rank coldest), the cold set
absorbed none of it, the stall readings describe the quota, and the excess may probe
(a guest run held the excess at its 4 MiB start for 10 s while 62.8 MiB of resident
cold sat behind emptied regions and PSI stayed at 0).
A quota the actuator did not use up tells the stall goals nothing either: when the
last tick's quota was not what limited the reclaim (``bound_key`` reads 0: DAMOS ended no
charge window with its quota full, a native plan had fewer pieces than its budget), a
larger quota would have reclaimed nothing more, so the stall readings are passed only
if they ask for less and the excess holds. Without this, once a scheme whose pattern
is the cold definition had drained the cold set, the excess probed x1.4 a tick with
the stall at 0 (tests/host/test_policy_reclaim_host.py: every tick after the drain)
and the quota it built up would take a burst at once when memory turned cold again.
Where the quota was full but charged on memory that held nothing (above), it did limit
the reclaim: the readings pass. (A scheme whose pattern matches every region, as the
reclaim benchmark's, keeps its quota full, and its excess still probes past the cold
set into warm memory until the stall goal answers: docs/policies.md.)
``absolute`` goals (free or used memory) cap the whole quota (``min``), as in
:func:`~controllers.tuners.quota_tuner`.

Missing data never makes the quota more aggressive: without a cold reading the drain
term is dropped (that stock was taken last tick) and the stall goals may only lower the
excess; without any stall reading the quota may not rise; with no reading at all it
holds. Measurement: ``{goal name: value, cold_key: bytes, reclaimed_key: bytes,
refault_key: bytes/s, bound_key: 1 or 0}`` (the last three optional; the refault rate is
read under its goal name when a refault goal exists).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from controllers.base import Decision, LogValue, check_limits, clamp
from controllers.compose import CompositeOutput, CompositeState, GoalComposite

__all__ = ("ColdFeedforward", "FeedforwardOutput", "FeedforwardState")


@dataclass(frozen=True)
class FeedforwardState:
    """Both composites' states, the applied quota and the feedforward's memory.

    ``refill`` is the cold-memory refill estimate (bytes/s, None: none yet); ``cold``
    the last cold reading (bytes); ``excess`` the excess over the feedforward applied
    last tick (bytes per window, 0 when a cap kept the quota under the feedforward).
    """

    excess_state: CompositeState
    absolute_state: CompositeState | None
    output: float
    feedforward: float = 0.0
    excess: float = 0.0
    refill: float | None = None
    cold: float | None = None
    last_time: float | None = None
    binding: str | None = None


@dataclass(frozen=True)
class FeedforwardOutput:
    """The quota, who bound it, and the feedforward's terms (bytes per window)."""

    output: float
    binding: str | None
    drain: float
    refill: float
    excess: float
    cold: float | None
    refill_rate: float | None
    informative: bool
    excess_decision: CompositeOutput
    absolute_decision: CompositeOutput | None = None
    held: str | None = None
    #: whether the last tick's quota limited the reclaim (None: not measured)
    quota_bound: bool | None = None

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Every goal's own decision (excess goals first)."""
        extra = () if self.absolute_decision is None else self.absolute_decision.decisions
        return (*self.excess_decision.decisions, *extra)

    @property
    def allowed(self) -> tuple[tuple[str, float], ...]:
        """Each goal's proposal: excess goals as whole quotas (feedforward added)."""
        ff = self.drain + self.refill
        own = tuple((name, ff + value) for name, value in self.excess_decision.allowed)
        extra = () if self.absolute_decision is None else self.absolute_decision.allowed
        return (*own, *extra)

    def log_fields(self) -> Mapping[str, LogValue]:
        """Quota, binding goal, feedforward terms, each goal's proposal."""
        fields: dict[str, LogValue] = {
            "output": self.output,
            "binding_goal": self.binding,
            "held": self.held,
            "feedforward.drain": self.drain,
            "feedforward.refill": self.refill,
            "feedforward.excess": self.excess,
            "feedforward.cold_bytes": self.cold,
            "feedforward.refill_bytes_per_s": self.refill_rate,
            "feedforward.informative": self.informative,
            "feedforward.quota_bound": self.quota_bound,
        }
        for name, allowed in self.allowed:
            fields[f"allowed.{name}"] = allowed
        for key, value in self.excess_decision.log_fields().items():
            if key.startswith("binding."):
                fields[f"excess.{key}"] = value
        return fields


@dataclass(frozen=True)
class ColdFeedforward:
    """Settings (module doc). Output limits in bytes per ``window_s``."""

    excess: GoalComposite
    absolute: GoalComposite | None = None
    window_s: float = 1.0
    tick_s: float = 1.0
    drain_share: float = 0.9
    refill_smoothing: float = 0.5
    informative_share: float = 0.9
    out_min: float = 4096.0
    out_max: float = float(2**30)
    starting_output: float = 4 * 2**20
    cold_key: str = "cold_bytes"
    reclaimed_key: str = "cold_reclaimed_bytes"
    refault_key: str | None = "refault_rate"
    bound_key: str = "quota_bound"

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.tick_s > 0):
            raise ValueError(
                f"window_s and tick_s must be > 0, got {self.window_s!r}, {self.tick_s!r}"
            )
        if not 0 < self.drain_share <= 1:
            raise ValueError(f"drain_share must be in (0, 1], got {self.drain_share!r}")
        if not 0 <= self.informative_share < 1:
            raise ValueError(f"informative_share must be in [0, 1), got {self.informative_share!r}")
        if not 0 < self.refill_smoothing <= 1:
            raise ValueError(f"refill_smoothing must be in (0, 1], got {self.refill_smoothing!r}")
        if not (self.out_min > 0 and math.isfinite(self.out_max)):
            raise ValueError(
                f"output limits must be > 0 and finite, got {self.out_min!r}, {self.out_max!r}"
            )
        check_limits("output limits", self.out_min, self.out_max)
        names = [g.name for g in self.excess.goals]
        if self.absolute is not None:
            names += [g.name for g in self.absolute.goals]
        reserved = {self.cold_key, self.reclaimed_key, self.bound_key}
        if len(set(names)) != len(names) or reserved & set(names):
            raise ValueError(
                f"goal names must be unique and not {sorted(reserved)!r}, got {names!r}"
            )

    def initial_state(self) -> FeedforwardState:
        """At ``starting_output``; the excess goals at their own start (nothing is
        known cold yet)."""
        start = clamp(self.starting_output, self.out_min, self.out_max)
        excess = self.excess.initial_state()
        absolute = None
        if self.absolute is not None:
            absolute = self.absolute.track(self.absolute.initial_state(), start)
        return FeedforwardState(
            excess_state=excess, absolute_state=absolute, output=start, excess=excess.output
        )

    def output_of(self, state: FeedforwardState) -> float:
        """The quota ``state`` stands for."""
        return state.output

    def track(self, state: FeedforwardState, applied: float) -> FeedforwardState:
        """Follow the quota really applied: the excess is what remains above the
        feedforward (see :meth:`_follow`), the absolute goals take it whole."""
        if not (applied > 0 and math.isfinite(applied)):
            return state
        excess = max(applied - state.feedforward, 0.0)
        absolute = state.absolute_state
        if self.absolute is not None and absolute is not None:
            absolute = self.absolute.track(absolute, applied)
        return replace(
            state,
            excess_state=self._follow(state.excess_state, excess),
            absolute_state=absolute,
            output=applied,
            excess=excess,
        )

    def step(
        self,
        state: FeedforwardState,
        measurement: Mapping[str, float | None] | None,
        now: float,
    ) -> tuple[FeedforwardState, FeedforwardOutput]:
        """One tick (module doc)."""
        readings: Mapping[str, float | None] = measurement or {}
        if not math.isfinite(now) or (state.last_time is not None and now <= state.last_time):
            return state, self._held(state, "time_not_advancing")
        dt = self.tick_s if state.last_time is None else now - state.last_time
        cold = _amount(readings.get(self.cold_key))
        refill = self._refill(state, readings, cold, dt)
        drain = 0.0 if cold is None else self.drain_share * cold * self.window_s / dt
        refill_term = 0.0 if refill is None else refill * self.window_s
        ff = drain + refill_term
        bound_reading = _finite(readings.get(self.bound_key))
        bound = None if bound_reading is None else bound_reading > 0
        informative = bound is not False and self._informative(
            state, dt, _amount(readings.get(self.reclaimed_key))
        )
        stall = {g.name: _finite(readings.get(g.name)) for g in self.excess.goals}
        passed = self._passed(stall, informative)
        excess_state, excess_dec = self.excess.step(state.excess_state, passed, now)
        quota = ff + excess_dec.output
        # Held (no informative stall reading): the excess is where it was and the
        # quota moves with the feedforward only.
        binding = "feedforward" if excess_dec.held else excess_dec.binding
        absolute_state, absolute_dec = state.absolute_state, None
        if self.absolute is not None and absolute_state is not None:
            absolute_state, absolute_dec = self.absolute.step(absolute_state, readings, now)
            if absolute_dec.held is None and absolute_dec.output < quota:
                quota, binding = absolute_dec.output, absolute_dec.binding
        held = None
        no_stall = all(v is None for v in stall.values())
        if no_stall and cold is None and (absolute_dec is None or absolute_dec.held):
            quota, held = state.output, "missing_sample"
        elif no_stall and quota > state.output:
            quota, binding = state.output, "no_stall_reading"
        quota = clamp(quota, self.out_min, self.out_max)
        excess = max(quota - ff, 0.0)
        new_state = FeedforwardState(
            excess_state=self._follow(excess_state, excess),
            absolute_state=absolute_state
            if self.absolute is None or absolute_state is None
            else self.absolute.track(absolute_state, quota),
            output=quota,
            feedforward=ff,
            excess=excess,
            refill=refill,
            cold=cold,  # None: the next refill estimate and informative test wait
            last_time=now,
            binding=binding,
        )
        decision = FeedforwardOutput(
            output=quota,
            binding=binding,
            drain=drain,
            refill=refill_term,
            excess=excess,
            cold=cold,
            refill_rate=refill,
            informative=informative,
            excess_decision=excess_dec,
            absolute_decision=absolute_dec,
            held=held,
            quota_bound=bound,
        )
        return new_state, decision

    def _passed(
        self, stall: Mapping[str, float | None], informative: bool
    ) -> dict[str, float | None]:
        """The stall readings the excess goals may use: all when informative, else
        only those asking for less (a gentler knob); the rest read as missing (hold)."""
        passed: dict[str, float | None] = {}
        for goal in self.excess.goals:
            value = stall[goal.name]
            usable = value is not None and (informative or _asks_less(goal.controller, value))
            passed[goal.name] = value if usable else None
        return passed

    def _held(self, state: FeedforwardState, reason: str) -> FeedforwardOutput:
        """The last quota again, nothing stepped (time did not advance)."""
        held = CompositeOutput(
            output=state.excess_state.output,
            binding=state.excess_state.binding,
            allowed=(),
            decisions=(),
            held=reason,
        )
        return FeedforwardOutput(
            output=state.output,
            binding=state.binding,
            drain=0.0,
            refill=0.0,
            excess=state.excess,
            cold=None,
            refill_rate=state.refill,
            informative=False,
            excess_decision=held,
            held=reason,
        )

    def _follow(self, state: CompositeState, excess: float) -> CompositeState:
        """The excess goals follow the excess really applied when part of theirs was cut
        (their readings will show the smaller excess: no windup); when none of it was
        applied (a cap below the feedforward) they keep their own, since the next
        readings are not informative and they hold anyway. Re-learning the excess from
        1 byte after every cap would take ln(5 MiB)/ln(1.4) = 46 ticks of probing."""
        if excess <= 0 or excess >= state.output:
            return state
        return self.excess.track(state, excess)

    def _informative(self, state: FeedforwardState, dt: float, taken: float | None) -> bool:
        """Did the last tick's excess go beyond the cold set (module doc)?

        Last tick reclaimed ``drain_share`` of the cold bytes read then, the refill and
        the excess; what it left of the cold set, ``(1 - drain_share) * cold``, absorbed
        that much of the excess, and never more than was reclaimed over the tick
        (``taken``, when measured). The readings now describe the excess only if that
        was at most ``1 - informative_share`` of it.
        """
        if state.cold is None or state.last_time is None or state.excess <= 0:
            return False
        excess_bytes = state.excess * max(dt, 0.0) / self.window_s
        left = (1 - self.drain_share) * state.cold
        if taken is not None:
            left = min(left, taken)
        return left <= (1 - self.informative_share) * excess_bytes

    def _refill(
        self,
        state: FeedforwardState,
        readings: Mapping[str, float | None],
        cold: float | None,
        dt: float,
    ) -> float | None:
        """The refill estimate after this tick's cold reading (bytes/s)."""
        if cold is None or state.cold is None or state.last_time is None or dt <= 0:
            return state.refill
        taken = _amount(readings.get(self.reclaimed_key))
        if taken is None:
            taken = state.output * dt / self.window_s
        upper = (cold - state.cold + taken) / dt
        if cold > 0:
            # Cold memory remained: everything reclaimed was cold, the formula is exact.
            estimate = max(0.0, upper)
            if state.refill is None:
                return estimate
            return state.refill + self.refill_smoothing * (estimate - state.refill)
        if state.refill is None:
            return None
        # Drained: an upper bound only (part of what was taken may have been hot). The
        # hot part comes back as refaults, so with a refault rate the bound is tight
        # (exact in steady state); either way it may only lower the estimate: refaults
        # lag the eviction, so ``upper - refaults`` overstates the refill while the
        # excess rises, and a refill that grew shows as cold memory left over.
        refaults = None if self.refault_key is None else _amount(readings.get(self.refault_key))
        bound = upper if refaults is None else upper - refaults
        lowered = max(0.0, min(state.refill, bound))
        return state.refill + self.refill_smoothing * (lowered - state.refill)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _amount(value: float | None) -> float | None:
    """A byte amount: finite and not negative, else missing."""
    value = _finite(value)
    return value if value is not None and value >= 0 else None


def _asks_less(controller: Any, value: float) -> bool:
    """True when ``value`` is beyond the goal's setpoint on the side that asks for a
    gentler knob (metric above the setpoint for direction +1, below for -1)."""
    setpoint = getattr(controller, "setpoint", None)
    if setpoint is None:
        return False
    direction = getattr(controller, "direction", 1)
    return bool(direction * (value - setpoint) > 0)
