"""Closed-loop benchmark: reactor's tuners against the kernel's own, on the plant models.

Run ``python -m benchmarks.controllers`` (or ``make bench``). Writes
``benchmarks/results/controllers.json`` and prints one summary line.

For every plant both contenders get the same seeds (so the same noise draws), the same
starting output, the same tick (one charge window on the quota plants, one aggregation
on the intervals plant: the rate the shipped policies step their controllers) and the
same output limits. What each reads is stated, not hidden: on the intervals plant both
see every aggregation's regions (the twin uses every ``AGGRS``-th, as the kernel does;
reactor uses each with its number of checks); on the reclaim plant reactor also reads
the cold bytes, which the reclaim policy knows and the kernel's quota loop has no
input for (``reactor_psi_only`` is reactor without it). Everything is judged on the
plant's noise-free controlled variable:

* ``time_to_band``: the first tick (and simulated second) after which the variable stays
  within ``band`` (relative) of the goal until the end of the run (None: never);
  ``first_in_band_s`` is the first entry, for reference;
* ``overshoot``: the largest excursion beyond the goal, on the far side from where the
  run started, as a share of the goal;
* ``iae``: integral of |error| / goal over simulated seconds;
* ``churn``: sum of |ln(output change)| over the run (knobs span orders of magnitude, so
  a doubling counts the same at 4 KiB and at 1 GiB).

Target (issue 3): enter the band at least 3x faster than the twin with overshoot at
most 5 %, on every plant. The JSON says per plant whether it was met and, where not,
why (see also docs/controllers.md).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controllers.filtered import SampledShare, sampled_share
from controllers.kernel import IntervalsInput, KernelIntervalsTwin, KernelQuotaTwin, QuotaInput
from controllers.tuners import QuotaGoalSpec, intervals_tuner, quota_tuner, reclaim_tuner
from reactor.testing.plants import IntervalsPlant, QuotaPsiPlant, ReclaimPlant

__all__ = ("Trace", "main", "score")

MIB = 2**20
SEEDS = (0, 1, 2, 3, 4)
BAND = 0.10
RESULTS = Path(__file__).resolve().parent / "results" / "controllers.json"


@dataclass
class Trace:
    """One run: per tick, the simulated time at its end, the true variable and output."""

    times: list[float]
    values: list[float]
    outputs: list[float]


def score(
    trace: Trace, goal: float, start_output_value: float, band: float = BAND
) -> dict[str, Any]:
    """The four measures of one run (see the module docstring)."""
    inside = [abs(v - goal) <= band * goal for v in trace.values]
    enter_tick: int | None = None
    for k in range(len(inside) - 1, -1, -1):
        if not inside[k]:
            break
        enter_tick = k
    below = start_output_value < goal
    if below:
        excursion = max((v - goal for v in trace.values), default=0.0)
    else:
        excursion = max((goal - v for v in trace.values), default=0.0)
    iae = 0.0
    last_t = 0.0
    for t, v in zip(trace.times, trace.values, strict=True):
        iae += abs(v - goal) / goal * (t - last_t)
        last_t = t
    churn = sum(
        abs(math.log(b / a)) for a, b in zip(trace.outputs, trace.outputs[1:], strict=False)
    )
    first = next((k for k, ok in enumerate(inside) if ok), None)
    return {
        "first_in_band_s": None if first is None else trace.times[first],
        "time_to_band_ticks": None if enter_tick is None else enter_tick + 1,
        "time_to_band_s": None if enter_tick is None else trace.times[enter_tick],
        "overshoot": max(0.0, excursion) / goal,
        "iae": iae,
        "churn": churn,
        "final_output": trace.outputs[-1],
        "run_s": trace.times[-1],
    }


# --- quota plants -------------------------------------------------------------------

QUOTA_GOAL = 0.05  # memory PSI "some" share: 5 % of the time stalled
QUOTA_START = 4 * MIB
QUOTA_MIN, QUOTA_MAX = 4096.0, float(2**30)
QUOTA_TICKS = 120
WINDOW_S = 1.0  # the tick and the kernel's reset_interval: one charge window


def _limit(value: float) -> float:
    return min(max(value, QUOTA_MIN), QUOTA_MAX)


def _twin_quota() -> KernelQuotaTwin:
    # some_mem_psi_us: stall µs per window; target = 5 % of a 1 s window.
    return KernelQuotaTwin(
        bytes=int(QUOTA_MAX),
        reset_interval_ms=int(WINDOW_S * 1000),
        goal_targets=(int(QUOTA_GOAL * WINDOW_S * 1e6),),
        starting_esz_bp=QUOTA_START * 10000,
    )


Readings = dict[str, float]


def _psi_only() -> Any:
    """reactor's quota controller with the PSI goal alone (:func:`quota_tuner`)."""
    return quota_tuner(
        [QuotaGoalSpec("psi", QUOTA_GOAL)],
        starting_output=QUOTA_START,
        out_min=QUOTA_MIN,
        out_max=QUOTA_MAX,
    )


def _with_cold_feedforward() -> Any:
    """reactor's reclaim controller: the PSI goal on the excess over the cold-set
    feedforward (:func:`reclaim_tuner`); reads ``psi`` and ``cold_bytes``."""
    return reclaim_tuner(
        [QuotaGoalSpec("psi", QUOTA_GOAL)],
        starting_output=QUOTA_START,
        out_min=QUOTA_MIN,
        out_max=QUOTA_MAX,
        window_s=WINDOW_S,
        tick_s=WINDOW_S,
    )


def _run_quota(
    plant_step: Callable[[float], Readings],
    plant_time: Callable[[], float],
    true_value: Callable[[], float],
    controller: Any,
) -> Trace:
    """``controller`` None: the kernel twin (reads ``psi`` only); else a reactor
    controller stepped with every reading the plant gives."""
    trace = Trace([], [], [])
    output = float(QUOTA_START)
    readings = plant_step(output)
    twin = _twin_quota()
    tstate = twin.initial_state()
    state = None if controller is None else controller.initial_state()
    for k in range(QUOTA_TICKS):
        if controller is None:
            stall_us = int(readings["psi"] * WINDOW_S * 1e6)
            tstate, tdec = twin.step(tstate, QuotaInput((stall_us,)), float(k + 1))
            output = _limit(tdec.output)
        else:
            state, dec = controller.step(state, readings, float(k + 1))
            output = _limit(dec.output)
        readings = plant_step(output)
        trace.times.append(plant_time())
        trace.values.append(true_value())
        trace.outputs.append(output)
    return trace


def quota_psi_run(seed: int, kind: str) -> Trace:
    """QuotaPsiPlant: dead zone 64 MiB, scale 256 MiB, lag 0.5 s, 5 % noise. PSI only
    (no cold reading here): reactor is :func:`quota_tuner`."""
    plant = QuotaPsiPlant(tau_s=0.5, noise_rel=0.05, seed=seed)
    return _run_quota(
        lambda u: {"psi": plant.step(u, WINDOW_S)},
        lambda: plant.time_s,
        lambda: plant.true_output,
        None if kind == "twin" else _psi_only(),
    )


def reclaim_run(seed: int, kind: str) -> Trace:
    """ReclaimPlant: 512 MiB cold set refilling at 32 MiB/s; PSI from refaults.

    ``reactor``: the cold-set feedforward (reads PSI and the cold bytes, as the reclaim
    policy can); ``reactor_psi_only``: :func:`quota_tuner` on PSI alone; ``twin``: the
    kernel's loop on PSI.
    """
    plant = ReclaimPlant(seed=seed)

    def read(u: float) -> Readings:
        obs = plant.step(u, WINDOW_S)
        return {"psi": obs.psi, "cold_bytes": obs.cold_bytes}

    controllers = {"reactor": _with_cold_feedforward, "reactor_psi_only": _psi_only}
    factory = controllers.get(kind)
    return _run_quota(
        read,
        lambda: plant.time_s,
        lambda: plant.true_output,
        None if factory is None else factory(),
    )


# --- intervals plant ----------------------------------------------------------------

ACCESS_GOAL = 0.04  # the kernel's documented rule of thumb, access_bp = 400
AGGR_SAMPLES = 20
AGGRS = 3
SAMPLE_START_US = 5000
SAMPLE_MIN_US, SAMPLE_MAX_US = 1000, 10_000_000
INTERVAL_AGGREGATIONS = 120
"""Both contenders see every aggregation: one reading per snapshot, as the shipped
monitoring policy steps its tuner (reactor/policies/monitoring.py)."""


def _intervals_plant(seed: int) -> IntervalsPlant:
    # A mostly idle workload: per-page access rates 0.001 .. 5 per second.
    return IntervalsPlant(
        n_regions=200, rate_min=0.001, rate_max=5.0, aggr_samples=AGGR_SAMPLES, seed=seed
    )


def intervals_run(seed: int, kind: str) -> Trace:
    """One aggregation per step; both contenders get the same snapshot every time.

    ``twin``: the kernel's tuner, counting aggregations and tuning on every
    ``AGGRS``-th with that aggregation's regions (as the kernel does; ``twin_aggrs_1``:
    the kernel's tuner set to tune on every aggregation, for reference). ``reactor``: the
    intervals tuner stepped on every snapshot with its share and effective checks
    (:func:`controllers.filtered.sampled_share` of the snapshot's regions: what the
    policy must pass); ``reactor_bare_share``: the same with the bare share only (what
    the policy passed before this change; the noise is then learned).
    """
    plant = _intervals_plant(seed)
    trace = Trace([], [], [])
    sample_us = float(SAMPLE_START_US)
    twin = KernelIntervalsTwin(
        sample_us=SAMPLE_START_US,
        aggr_us=SAMPLE_START_US * AGGR_SAMPLES,
        access_bp=int(ACCESS_GOAL * 10000),
        aggrs=1 if kind == "twin_aggrs_1" else AGGRS,
        min_sample_us=SAMPLE_MIN_US,
        max_sample_us=SAMPLE_MAX_US,
    )
    tstate = twin.initial_state()
    tuner = intervals_tuner(
        ACCESS_GOAL, starting_us=SAMPLE_START_US, min_us=SAMPLE_MIN_US, max_us=SAMPLE_MAX_US
    )
    state = tuner.initial_state()
    for _ in range(INTERVAL_AGGREGATIONS):
        obs = plant.step(sample_us / 1e6, aggregations=1)
        if kind.startswith("twin"):
            tstate, tdec = twin.step(tstate, IntervalsInput(obs.regions), plant.time_s)
            sample_us = tdec.output
        else:
            reading: float | SampledShare | None = obs.access_share
            if kind == "reactor":
                reading = sampled_share((s, k, AGGR_SAMPLES) for s, k in obs.regions)
            state, dec = tuner.step(state, reading, plant.time_s)
            sample_us = min(max(dec.output, SAMPLE_MIN_US), SAMPLE_MAX_US)
        trace.times.append(plant.time_s)
        trace.values.append(plant.expected_share(sample_us / 1e6))
        trace.outputs.append(sample_us)
    return trace


# --- driver -------------------------------------------------------------------------

PLANTS: dict[str, tuple[Callable[[int, str], Trace], float, Callable[[int], float]]] = {
    "quota_psi": (quota_psi_run, QUOTA_GOAL, lambda seed: 0.0),
    "reclaim": (reclaim_run, QUOTA_GOAL, lambda seed: 0.0),
    "intervals": (
        intervals_run,
        ACCESS_GOAL,
        lambda seed: _intervals_plant(seed).expected_share(SAMPLE_START_US / 1e6),
    ),
}

EXTRA_KINDS: dict[str, tuple[str, ...]] = {
    "intervals": ("reactor_bare_share", "twin_aggrs_1"),
    "reclaim": ("reactor_psi_only",),
}
"""Variants reported beside the main contenders (not part of the target)."""

NOTES = {
    "quota_psi": (
        "Dead zone: below the 64 MiB cold set PSI reads 0, so no controller knows where "
        "pressure starts; the last zero-PSI quota can be anywhere in (64/F, 64] MiB and "
        "one probe step of factor F lands anywhere up to 64*F MiB. 5 % overshoot needs "
        "the landing at or under psi^-1(0.0525) = 92.4 MiB, i.e. F <= 1.44: the twin's "
        "x2 lands at up to 128 MiB (PSI 0.11; 0.096 = +91 % one lagged tick later), "
        "reactor probes at x1.4 (<= 89.6 MiB). The twin then never stays in the band: "
        "its loop gain at the goal is the plant's log-log slope, 3.2 > 2, so it "
        "oscillates; the speedup is a lower bound (the twin is charged the whole 120 s "
        "run). Its first entries (10..45 s) are luck within the oscillation. No cold "
        "reading on this plant: reactor is the PSI-only quota_tuner."
    ),
    "reclaim": (
        "PSI stays 0 until the 512 MiB cold set (refilling at 32 MiB/s) is drained. "
        "PSI alone cannot see the end coming: to keep the true PSI <= 5.25 % when the "
        "cold set runs out, the hot eviction reached within one lagged tick, "
        "(q - 32 MiB/s)(1 - e^-1), must stay <= 5.86 MiB/s, so q <= 41.3 MiB/s while "
        "draining: >= 512 / 9.3 = 55 s, at most 120 / 55 = 2.2x against the twin "
        "(reactor_psi_only: 25..30 s in band but +997 %). reactor therefore reads the "
        "cold bytes the reclaim policy knows and feeds them forward "
        "(controllers.feedforward): quota = 0.9 x cold + refill estimate + excess, with "
        "the PSI goal steering only the excess beyond the cold set (no dead zone there, "
        "log-log slope <= 1, gain 0.24 = the most a one-tick first-order lag allows "
        "without oscillation) and holding while the drain still absorbs it. In band "
        "after 9..11 s on every seed, overshoot <= 1.4 %, steady quota 37.6 MiB "
        "(= 32 + 5.6 MiB/s of refaults at PSI 0.05). The twin cuts to 10000 bp (1 "
        "byte) on score >= 2x, regrows, drains the refilled pool again and never "
        "settles (charged 120 s: the speedup is a lower bound). Limits, with numbers: "
        "a cold reading too high by more than 1/0.9 - 1 = 11 % evicts hot memory at "
        "the drain (every 1 MiB of it is 1 MiB/s of refaults against a 5.6 MiB/s "
        "budget); a refill that falls is only seen with a refault reading "
        "(refault_rate): without it PSI stays at 0.13 (2.7x the goal) after a 32 -> 16 MiB/s "
        "drop, with it the goal band is back within 13 ticks."
    ),
    "intervals": (
        "Each aggregation's share is a binomial count: 4000 checks, ~160 hits at the "
        "4 % goal, so one reading is off by ~8 % (1 sigma), by ~27 % at the 5 ms start "
        "(share 0.34 %, ~14 hits). A memoryless law turns that into output moves: the "
        "twin's first entries are at 6.5..11 s but it leaves the +-10 % band again "
        "(set to tune every aggregation, twin_aggrs_1, it enters at 2..4 s and stays "
        "even less). reactor estimates ln(share) at the current interval (Kalman "
        "filter with the binomial variance from the snapshot's checks) and steps with "
        "slope 1 (the share's log-log slope is <= 1) stopping 2 sigma short of the "
        "estimated goal: in band after 2.4..7.8 s, overshoot 0 on every seed, >= 5.5x. "
        "With the bare share only (what the monitoring policy passed before: "
        "reactor_bare_share) the noise must be learned from the readings: 25..56 s, "
        "overshoot 0, 1.3..5x: not met on seed 2 (twin 43 s)."
    ),
}


def _summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ticks = [r["time_to_band_ticks"] for r in runs]
    seconds = [r["time_to_band_s"] for r in runs]
    settled = [s for s in seconds if s is not None]
    return {
        "time_to_band_s_median": statistics.median(settled) if settled else None,
        "time_to_band_ticks_median": (
            statistics.median([t for t in ticks if t is not None]) if settled else None
        ),
        "runs_never_in_band": sum(t is None for t in ticks),
        "overshoot_max": max(r["overshoot"] for r in runs),
        "overshoot_median": statistics.median(r["overshoot"] for r in runs),
        "iae_median": statistics.median(r["iae"] for r in runs),
        "churn_median": statistics.median(r["churn"] for r in runs),
    }


def _speedups(mine: Sequence[dict[str, Any]], twin: Sequence[dict[str, Any]]) -> list[float]:
    """Per seed: twin's time to band over reactor's (simulated seconds).

    A twin that never stays in the band is charged the whole run (a lower bound on its
    true time, so the ratio is a lower bound too); a reactor run that never does scores 0.
    """
    ratios = []
    for m, t in zip(mine, twin, strict=True):
        if m["time_to_band_s"] is None:
            ratios.append(0.0)
            continue
        twin_s = t["time_to_band_s"] if t["time_to_band_s"] is not None else t["run_s"]
        ratios.append(twin_s / max(m["time_to_band_s"], 1e-9))
    return ratios


def run_plant(name: str) -> dict[str, Any]:
    """Both contenders on every seed of one plant, with the per-seed measures."""
    runner, goal, start_value = PLANTS[name]
    result: dict[str, Any] = {"goal": goal, "band": BAND, "seeds": list(SEEDS)}
    for kind in ("reactor", "twin", *EXTRA_KINDS.get(name, ())):
        runs = [score(runner(seed, kind), goal, start_value(seed)) for seed in SEEDS]
        result[kind] = {"runs": runs, "summary": _summarise(runs)}
    for kind in EXTRA_KINDS.get(name, ()):
        if kind.startswith("twin"):
            # Another twin setting: reactor's speedup against it.
            extra = _speedups(result["reactor"]["runs"], result[kind]["runs"])
            overshoot = result["reactor"]["summary"]["overshoot_max"]
        else:
            extra = _speedups(result[kind]["runs"], result["twin"]["runs"])
            overshoot = result[kind]["summary"]["overshoot_max"]
        result[kind]["speedup_per_seed"] = extra
        result[kind]["target_met"] = min(extra) >= 3 and overshoot <= 0.05
    ratios = _speedups(result["reactor"]["runs"], result["twin"]["runs"])
    overshoot = result["reactor"]["summary"]["overshoot_max"]
    result["speedup_per_seed"] = ratios
    result["speedup_min"] = min(ratios)
    result["speedup_median"] = statistics.median(ratios)
    result["speedup_is_lower_bound"] = result["twin"]["summary"]["runs_never_in_band"] > 0
    result["target_met"] = min(ratios) >= 3 and overshoot <= 0.05
    result["note"] = NOTES[name]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run every plant, write the JSON, print one line."""
    del argv
    results = {name: run_plant(name) for name in PLANTS}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"band": BAND, "plants": results}, indent=2, default=str))
    parts = []
    for name, r in results.items():
        bound = ">=" if r["speedup_is_lower_bound"] else ""
        parts.append(
            f"{name} {bound}{r['speedup_min']:.1f}x faster (worst seed), overshoot "
            f"{r['reactor']['summary']['overshoot_max']:.1%} vs twin "
            f"{r['twin']['summary']['overshoot_max']:.1%}"
        )
    met = sum(r["target_met"] for r in results.values())
    print(f"controllers: {'; '.join(parts)}; target met on {met}/{len(results)} plants")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
