"""reactor.sampler: the native backend, DAMON's monitoring algorithm in user space.

Where the kernel has no usable DAMON, reactor monitors processes itself and produces the
snapshots the DAMON backend does (:class:`Snapshot`: regions with start, end,
nr_accesses and age per aggregation interval):

- :mod:`reactor.sampler.engine`: the region engine (numpy, pure): DAMON's sampling,
  aggregation, age and adaptive merge/split; and the per-mapping engine;
- :mod:`reactor.sampler.probes`: access probes (page-idle, soft-dirty, uffd-wp,
  referenced) behind one interface; :mod:`reactor.sampler.detect` picks them by effect;
- :mod:`reactor.sampler.targets`: pids, commands, cgroups, selectors;
- :mod:`reactor.sampler.runner`: :class:`NativeSampler`, the async task;
- :mod:`reactor.sampler.library`: a cooperating application monitors its own memory.

See docs/sampler.md.
"""

from __future__ import annotations

from reactor.sampler.detect import best_probe, detect_probes
from reactor.sampler.engine import AccessedRanges, EngineSettings, MappingEngine, RegionEngine
from reactor.sampler.library import split_into_chunks, watch_own_memory
from reactor.sampler.probes import ProbeInfo, open_session
from reactor.sampler.runner import MonitorStats, NativeSampler, SamplerSettings
from reactor.sampler.snapshot import REGION_DTYPE, PageAccesses, Region, Snapshot
from reactor.sampler.targets import TargetSpec

__all__ = (
    "REGION_DTYPE",
    "AccessedRanges",
    "EngineSettings",
    "MappingEngine",
    "MonitorStats",
    "NativeSampler",
    "PageAccesses",
    "ProbeInfo",
    "Region",
    "RegionEngine",
    "SamplerSettings",
    "Snapshot",
    "TargetSpec",
    "best_probe",
    "detect_probes",
    "open_session",
    "split_into_chunks",
    "watch_own_memory",
)
