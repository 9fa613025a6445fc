"""Plant models for closed-loop tests of controllers, in simulated time.

Shipped so that users can test their own tuning the way reactor tests its own. Every
plant is clock-free and seeded: ``step(u, dt)`` applies input ``u`` for ``dt`` simulated
seconds and returns what a sensor would read at the end (noise included, from a seeded
``numpy.random.Generator``); ``true_output`` is the same value without noise, which is
what settling and overshoot are judged on. ``load`` is a disturbance a test can change
between steps (a load step). Nothing here reads a clock or a file.

The models, and the analysis each one supports:

* :class:`FirstOrderDeadTime`: ``tau * y' = K * (u(t - theta) + load) - y``; a PI tuned on
  it has a closed-loop pole you can place (see tests/unit/controllers/test_closed_loop.py).
* :class:`Integrating`: ``y' = K * (u(t - theta) + load)``; needs integral-free P for zero
  error on setpoint changes, and I to reject a constant load.
* :class:`QuotaPsiPlant`: DAMOS quota (bytes per charge window) to memory PSI stall share,
  with a dead zone (the cold memory that can go without stalls), exponential saturation,
  a first-order lag and multiplicative noise.
* :class:`ReclaimPlant`: a cold set that refills at ``cold_rate``; reclaim first takes cold
  memory; reclaiming more than the cold set reclaims hot memory, which refaults and
  creates pressure. Reports PSI, refault rate and free memory.
* :class:`IntervalsPlant`: regions with per-page access rates; the share of samples that
  see an access depends on the sampling interval (``1 - exp(-rate * interval)``), with the
  binomial noise of real sampling; returns DAMON-shaped ``(size, nr_accesses)`` regions.
* :class:`RegionCountPlant`: monitoring CPU cost grows with regions per sampling interval;
  accuracy saturates (``1 - exp(-n / n_structure)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = (
    "FirstOrderDeadTime",
    "Integrating",
    "IntervalsObservation",
    "IntervalsPlant",
    "QuotaPsiPlant",
    "ReclaimObservation",
    "ReclaimPlant",
    "RegionCountObservation",
    "RegionCountPlant",
)

_MAX_SUBSTEPS = 10_000


@dataclass
class _Delay:
    """Input history for a dead time: the value applied at ``t - dead_time_s``."""

    dead_time_s: float
    initial: float
    history: list[tuple[float, float]] = field(default_factory=list)

    def push(self, time_s: float, value: float) -> None:
        self.history.append((time_s, value))
        # Keep one entry older than the delay horizon; drop the rest.
        horizon = time_s - self.dead_time_s
        while len(self.history) > 1 and self.history[1][0] <= horizon:
            self.history.pop(0)

    def at(self, time_s: float) -> float:
        target = time_s - self.dead_time_s
        value = self.initial
        for stamp, applied in self.history:
            if stamp <= target + 1e-12:
                value = applied
            else:
                break
        return value


class FirstOrderDeadTime:
    """First order plus dead time: gain ``K``, time constant ``tau_s``, delay ``theta``."""

    def __init__(
        self,
        *,
        gain: float = 1.0,
        tau_s: float = 10.0,
        dead_time_s: float = 0.0,
        y0: float = 0.0,
        u0: float = 0.0,
        noise_std: float = 0.0,
        seed: int = 0,
    ) -> None:
        if tau_s <= 0 or dead_time_s < 0:
            raise ValueError(f"need tau_s > 0 and dead_time_s >= 0, got {tau_s!r}, {dead_time_s!r}")
        self.gain, self.tau_s, self.noise_std = gain, tau_s, noise_std
        self.time_s = 0.0
        self.load = 0.0
        self.true_output = y0
        self._delay = _Delay(dead_time_s, u0)
        self._rng = np.random.default_rng(seed)

    def step(self, u: float, dt: float) -> float:
        """Apply ``u`` for ``dt`` seconds (zero-order hold); return the noisy output."""
        self._delay.push(self.time_s, u)
        n = max(1, min(_MAX_SUBSTEPS, math.ceil(dt / (self.tau_s / 20))))
        h = dt / n
        decay = math.exp(-h / self.tau_s)
        for k in range(n):
            drive = self.gain * (self._delay.at(self.time_s + k * h) + self.load)
            self.true_output = drive + (self.true_output - drive) * decay
        self.time_s += dt
        return self.true_output + self.noise_std * float(self._rng.standard_normal())


class Integrating:
    """Pure integrator with dead time: ``y' = K * (u(t - theta) + load)``."""

    def __init__(
        self,
        *,
        gain: float = 1.0,
        dead_time_s: float = 0.0,
        y0: float = 0.0,
        noise_std: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.gain, self.noise_std = gain, noise_std
        self.time_s = 0.0
        self.load = 0.0
        self.true_output = y0
        self._delay = _Delay(dead_time_s, 0.0)
        self._rng = np.random.default_rng(seed)

    def step(self, u: float, dt: float) -> float:
        """Apply ``u`` for ``dt`` seconds; return the noisy output."""
        self._delay.push(self.time_s, u)
        n = max(1, min(_MAX_SUBSTEPS, math.ceil(dt / 0.05)))
        h = dt / n
        for k in range(n):
            self.true_output += h * self.gain * (self._delay.at(self.time_s + k * h) + self.load)
        self.time_s += dt
        return self.true_output + self.noise_std * float(self._rng.standard_normal())


class QuotaPsiPlant:
    """Quota (bytes per window) to memory PSI "some" stall share (0..1).

    Static map: ``psi = psi_max * (1 - exp(-max(0, u - cold_bytes) / scale_bytes))``:
    reclaiming up to ``cold_bytes`` per window stalls nobody; beyond it stalls rise and
    saturate at ``psi_max``. The share then follows with lag ``tau_s`` and is read with
    multiplicative log-normal noise ``noise_rel``. ``load`` (bytes) shifts the cold set.
    """

    def __init__(
        self,
        *,
        cold_bytes: float = 64 * 2**20,
        scale_bytes: float = 256 * 2**20,
        psi_max: float = 0.5,
        tau_s: float = 2.0,
        noise_rel: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.cold_bytes, self.scale_bytes = cold_bytes, scale_bytes
        self.psi_max, self.tau_s, self.noise_rel = psi_max, tau_s, noise_rel
        self.load = 0.0
        self.time_s = 0.0
        self.true_output = 0.0
        self._rng = np.random.default_rng(seed)

    def static(self, u: float) -> float:
        """Steady-state stall share for quota ``u`` (bytes per window)."""
        excess = max(0.0, u - (self.cold_bytes + self.load))
        return self.psi_max * (1.0 - math.exp(-excess / self.scale_bytes))

    def inverse(self, psi: float) -> float:
        """The quota whose steady state is ``psi`` (for test analysis)."""
        psi = min(max(psi, 0.0), self.psi_max * (1 - 1e-12))
        return self.cold_bytes + self.load - self.scale_bytes * math.log(1 - psi / self.psi_max)

    def step(self, u: float, dt: float) -> float:
        """Apply quota ``u`` for ``dt`` seconds; return the measured stall share."""
        target = self.static(u)
        self.true_output = target + (self.true_output - target) * math.exp(-dt / self.tau_s)
        self.time_s += dt
        noise = math.exp(self.noise_rel * float(self._rng.standard_normal()))
        return self.true_output * noise


@dataclass(frozen=True)
class ReclaimObservation:
    """What a reclaim policy can read: stall share, refaults (bytes/s), free share."""

    psi: float
    refault_rate: float
    free_ratio: float
    cold_bytes: float


class ReclaimPlant:
    """Proactive reclaim against a cold set that refills.

    Reclaim ``u`` bytes per ``window_s`` takes cold memory first. Reclaiming more than the
    cold set evicts hot memory, which comes back as refaults (first-order, ``tau_s``) and
    stalls: ``psi = psi_max * (1 - exp(-refault_rate / refault_scale))``. Cold memory
    appears at ``cold_rate`` bytes/s (pages cooling) plus ``load``; free memory grows by
    what reclaim frees and shrinks by refaults and allocations (``alloc_rate``).
    """

    def __init__(
        self,
        *,
        total_bytes: float = 16 * 2**30,
        free_bytes: float = 2 * 2**30,
        cold_bytes: float = 512 * 2**20,
        cold_rate: float = 32 * 2**20,
        alloc_rate: float = 16 * 2**20,
        refault_scale: float = 64 * 2**20,
        psi_max: float = 0.6,
        window_s: float = 1.0,
        tau_s: float = 1.0,
        noise_rel: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.total_bytes, self.free_bytes = total_bytes, free_bytes
        self.cold_bytes, self.cold_rate, self.alloc_rate = cold_bytes, cold_rate, alloc_rate
        self.refault_scale, self.psi_max = refault_scale, psi_max
        self.window_s, self.tau_s, self.noise_rel = window_s, tau_s, noise_rel
        self.load = 0.0
        self.time_s = 0.0
        self.refault_rate = 0.0
        self._rng = np.random.default_rng(seed)

    @property
    def true_output(self) -> float:
        """Noise-free stall share."""
        return self.psi_max * (1.0 - math.exp(-self.refault_rate / self.refault_scale))

    def steady_quota(self, psi: float) -> float:
        """Quota per window whose steady state (cold set drained) gives stall share ``psi``."""
        refaults = -self.refault_scale * math.log(1 - psi / self.psi_max)
        return (self.cold_rate + self.load + refaults) * self.window_s

    def step(self, u: float, dt: float) -> ReclaimObservation:
        """Reclaim at ``u`` bytes per window for ``dt`` seconds; return the readings."""
        rate = max(0.0, u) / self.window_s
        self.cold_bytes += (self.cold_rate + self.load) * dt
        from_cold = min(rate * dt, self.cold_bytes)
        self.cold_bytes -= from_cold
        hot_evicted_rate = (rate * dt - from_cold) / dt if dt > 0 else 0.0
        decay = math.exp(-dt / self.tau_s)
        self.refault_rate = hot_evicted_rate + (self.refault_rate - hot_evicted_rate) * decay
        freed = rate * dt - (self.refault_rate + self.alloc_rate) * dt
        self.free_bytes = min(max(self.free_bytes + freed, 0.0), self.total_bytes)
        self.time_s += dt
        noise = math.exp(self.noise_rel * float(self._rng.standard_normal()))
        return ReclaimObservation(
            psi=self.true_output * noise,
            refault_rate=self.refault_rate * noise,
            free_ratio=self.free_bytes / self.total_bytes,
            cold_bytes=self.cold_bytes,
        )


@dataclass(frozen=True)
class IntervalsObservation:
    """The last aggregation's regions and access share (0..1), the share over the whole
    step (``period_share``: every aggregation of the step), and the step's duration (s)."""

    regions: tuple[tuple[int, int], ...]
    access_share: float
    aggregation_s: float
    period_share: float


class IntervalsPlant:
    """Observed access share as a function of the sampling interval.

    ``n_regions`` regions of equal size; region ``i``'s pages are accessed at a rate drawn
    log-uniformly in ``[rate_min, rate_max]`` per second (x ``load`` factor when set); a
    sample sees an access with probability ``1 - exp(-rate * interval)``, and a region's
    ``nr_accesses`` over ``aggr_samples`` samples is binomial. The share is the kernel's
    ``access_bp`` ratio: size-weighted accesses over size x samples.
    """

    def __init__(
        self,
        *,
        n_regions: int = 200,
        region_bytes: int = 4 * 2**20,
        rate_min: float = 0.01,
        rate_max: float = 50.0,
        aggr_samples: int = 20,
        seed: int = 0,
    ) -> None:
        self._rng = np.random.default_rng(seed)
        self.region_bytes = region_bytes
        self.aggr_samples = aggr_samples
        exponents = self._rng.uniform(math.log(rate_min), math.log(rate_max), n_regions)
        self.rates = np.exp(exponents)
        self.load = 1.0
        self.time_s = 0.0
        self.true_output = 0.0

    def expected_share(self, sample_s: float) -> float:
        """Noise-free share of samples that see an access at interval ``sample_s``."""
        p = 1.0 - np.exp(-self.rates * self.load * sample_s)
        return float(np.mean(p))

    def step(self, sample_s: float, aggregations: int = 1) -> IntervalsObservation:
        """Monitor ``aggregations`` aggregation intervals at ``sample_s``; return the last."""
        if aggregations < 1:
            raise ValueError(f"aggregations must be >= 1, got {aggregations!r}")
        p = 1.0 - np.exp(-self.rates * self.load * sample_s)
        total = 0
        for _ in range(aggregations):
            counts = self._rng.binomial(self.aggr_samples, p)
            total += int(np.sum(counts))
        duration = sample_s * self.aggr_samples * aggregations
        self.time_s += duration
        self.true_output = float(np.mean(p))
        regions = tuple((self.region_bytes, int(c)) for c in counts)
        per_aggregation = len(counts) * self.aggr_samples
        return IntervalsObservation(
            regions=regions,
            access_share=float(np.sum(counts)) / per_aggregation,
            aggregation_s=duration,
            period_share=total / (per_aggregation * aggregations),
        )


@dataclass(frozen=True)
class RegionCountObservation:
    """Monitoring CPU share (0..1) and accuracy (0..1) for a region count."""

    cpu_share: float
    accuracy: float


class RegionCountPlant:
    """Region count ``n`` to monitoring cost and accuracy.

    Cost: each region costs ``cost_per_check_s`` CPU seconds per sample, so the CPU share
    is ``n * cost_per_check_s / sample_s`` (plus relative noise). Accuracy saturates:
    ``1 - exp(-n / n_structure)``, where ``n_structure`` is the number of distinct access
    patterns in the workload (more regions than that buy little).
    """

    def __init__(
        self,
        *,
        cost_per_check_s: float = 2e-7,
        sample_s: float = 0.005,
        n_structure: float = 300.0,
        noise_rel: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.cost_per_check_s, self.sample_s = cost_per_check_s, sample_s
        self.n_structure, self.noise_rel = n_structure, noise_rel
        self.load = 1.0
        self.time_s = 0.0
        self.true_output = 0.0
        self._rng = np.random.default_rng(seed)

    def cost(self, n: float) -> float:
        """Noise-free CPU share of ``n`` regions."""
        return n * self.cost_per_check_s * self.load / self.sample_s

    def accuracy(self, n: float) -> float:
        """Noise-free accuracy of ``n`` regions."""
        return 1.0 - math.exp(-n / self.n_structure)

    def step(self, n: float, dt: float) -> RegionCountObservation:
        """Monitor with ``n`` regions for ``dt`` seconds; return cost and accuracy."""
        self.time_s += dt
        self.true_output = self.cost(n)
        noise = math.exp(self.noise_rel * float(self._rng.standard_normal()))
        acc_noise = 0.01 * float(self._rng.standard_normal())
        return RegionCountObservation(
            cpu_share=self.true_output * noise,
            accuracy=min(1.0, max(0.0, self.accuracy(n) + acc_noise)),
        )
