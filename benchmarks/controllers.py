"""Closed-loop benchmark: reactor's tuners against the kernel's own, on the plant models.

Run ``python -m benchmarks.controllers`` (or ``make bench``). Writes
``benchmarks/results/controllers.json`` and prints one summary line.

For every plant both contenders get the same seeds (so the same noise draws), the same
starting output, the same tick and the same output limits; only the control law
differs. Everything is judged on the plant's noise-free controlled variable:

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

from controllers.kernel import IntervalsInput, KernelIntervalsTwin, KernelQuotaTwin, QuotaInput
from controllers.tuners import QuotaGoalSpec, intervals_tuner, quota_tuner
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


def _run_quota(
    plant_step: Callable[[float], float],
    plant_time: Callable[[], float],
    true_value: Callable[[], float],
    kind: str,
) -> Trace:
    trace = Trace([], [], [])
    output = float(QUOTA_START)
    measured = plant_step(output)
    if kind == "twin":
        twin = _twin_quota()
        tstate = twin.initial_state()
        for k in range(QUOTA_TICKS):
            stall_us = int(measured * WINDOW_S * 1e6)
            tstate, tdec = twin.step(tstate, QuotaInput((stall_us,)), float(k + 1))
            output = _limit(tdec.output)
            measured = plant_step(output)
            trace.times.append(plant_time())
            trace.values.append(true_value())
            trace.outputs.append(output)
        return trace
    tuner = quota_tuner(
        [QuotaGoalSpec("psi", QUOTA_GOAL)],
        starting_output=QUOTA_START,
        out_min=QUOTA_MIN,
        out_max=QUOTA_MAX,
    )
    state = tuner.initial_state()
    for k in range(QUOTA_TICKS):
        state, dec = tuner.step(state, {"psi": measured}, float(k + 1))
        output = _limit(dec.output)
        measured = plant_step(output)
        trace.times.append(plant_time())
        trace.values.append(true_value())
        trace.outputs.append(output)
    return trace


def quota_psi_run(seed: int, kind: str) -> Trace:
    """QuotaPsiPlant: dead zone 64 MiB, scale 256 MiB, lag 0.5 s, 5 % noise."""
    plant = QuotaPsiPlant(tau_s=0.5, noise_rel=0.05, seed=seed)
    return _run_quota(
        lambda u: plant.step(u, WINDOW_S), lambda: plant.time_s, lambda: plant.true_output, kind
    )


def reclaim_run(seed: int, kind: str) -> Trace:
    """ReclaimPlant: 512 MiB cold set refilling at 32 MiB/s; PSI from refaults."""
    plant = ReclaimPlant(seed=seed)
    return _run_quota(
        lambda u: plant.step(u, WINDOW_S).psi,
        lambda: plant.time_s,
        lambda: plant.true_output,
        kind,
    )


# --- intervals plant ----------------------------------------------------------------

ACCESS_GOAL = 0.04  # the kernel's documented rule of thumb, access_bp = 400
AGGR_SAMPLES = 20
AGGRS = 3
SAMPLE_START_US = 5000
SAMPLE_MIN_US, SAMPLE_MAX_US = 1000, 10_000_000
INTERVAL_TICKS = 40


def _intervals_plant(seed: int) -> IntervalsPlant:
    # A mostly idle workload: per-page access rates 0.001 .. 5 per second.
    return IntervalsPlant(
        n_regions=200, rate_min=0.001, rate_max=5.0, aggr_samples=AGGR_SAMPLES, seed=seed
    )


def intervals_run(seed: int, kind: str) -> Trace:
    """Both tune once per ``AGGRS`` aggregations on the same samples.

    The twin sees the last aggregation's regions, as the kernel does; reactor's tuner
    uses every aggregation of the period (the same draws, three times the samples).
    """
    plant = _intervals_plant(seed)
    trace = Trace([], [], [])
    sample_us = float(SAMPLE_START_US)
    twin = KernelIntervalsTwin(
        sample_us=SAMPLE_START_US,
        aggr_us=SAMPLE_START_US * AGGR_SAMPLES,
        access_bp=int(ACCESS_GOAL * 10000),
        aggrs=AGGRS,
        min_sample_us=SAMPLE_MIN_US,
        max_sample_us=SAMPLE_MAX_US,
    )
    tstate = twin.initial_state()
    tuner = intervals_tuner(
        ACCESS_GOAL, starting_us=SAMPLE_START_US, min_us=SAMPLE_MIN_US, max_us=SAMPLE_MAX_US
    )
    state = tuner.initial_state()
    for _ in range(INTERVAL_TICKS):
        obs = plant.step(sample_us / 1e6, aggregations=AGGRS)
        if kind == "twin":
            for _ in range(AGGRS):
                tstate, tdec = twin.step(tstate, IntervalsInput(obs.regions), plant.time_s)
            sample_us = tdec.output
        else:
            state, dec = tuner.step(state, obs.period_share, plant.time_s)
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

NOTES = {
    "quota_psi": (
        "Dead zone: below the 64 MiB cold set PSI reads 0, so no controller knows where "
        "pressure starts; the last zero-PSI quota can be anywhere in (64/F, 64] MiB and "
        "one probe step of factor F lands anywhere up to 64*F MiB. 5 % overshoot needs "
        "the landing at or under psi^-1(0.0525) = 92.4 MiB, i.e. F <= 1.44: the twin's "
        "x2 lands at up to 128 MiB (PSI 0.11; 0.096 = +91 % one lagged tick later), "
        "reactor probes at x1.4 (<= 89.6 MiB). The twin then never stays in the band: "
        "its loop gain at the goal is the "
        "plant's log-log slope, 3.2 > 2, so it oscillates; the speedup is a lower bound "
        "(the twin is charged the whole 120 s run). Its first entries (10..45 s) are "
        "luck within the oscillation."
    ),
    "reclaim": (
        "Integrating dead zone: PSI stays 0 until the 512 MiB cold set (refilling at "
        "32 MiB/s) is drained, then jumps to psi(q - 32 MiB/s) with the quota q grown "
        "meanwhile (about 300 MiB for reactor, 512 MiB for the twin): PSI 0.5..0.6 "
        "against a goal of 0.05, +1000 %. With PSI as the only signal no controller "
        "can see the end of the cold set coming, so the 5 % overshoot target is "
        "impossible here; what differs is the recovery: reactor settles at the "
        "steady-state quota 37.6 MiB (PSI in band 22..25 s in), the twin cuts to "
        "10000 bp (1 byte) on score >= 2x, regrows, drains the refilled pool again "
        "and never settles. A cold-set goal (DAMON's cold bytes) would remove the "
        "spike; not benchmarked here."
    ),
    "intervals": (
        "Share rises with the interval with log-log slope <= 1, so reactor's full "
        "Newton step with slope 1 never overshoots (the 3 % seen is binomial noise "
        "moving the output); the twin is limited to x2 per tuning and, reading only "
        "the last aggregation (about 8 % noise), keeps leaving the +-10 % band, so its "
        "enter-and-stay time is long while its first entries (6..11 s) are close to "
        "reactor's (2.7 s). reactor uses all three aggregations of the period."
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
    for kind in ("reactor", "twin"):
        runs = [score(runner(seed, kind), goal, start_value(seed)) for seed in SEEDS]
        result[kind] = {"runs": runs, "summary": _summarise(runs)}
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
