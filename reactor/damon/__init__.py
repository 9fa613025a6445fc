"""reactor.damon: the DAMON sysfs driver.

Layers, bottom up (each usable on its own):

- :mod:`~reactor.damon.paths`: where things live in ``/sys/kernel/mm/damon/admin``;
- :mod:`~reactor.damon.features`: feature → first release table, kernel version parsing,
  probing by reading existing files only;
- :mod:`~reactor.damon.sysfs`: write a kdamond model (damo's schema,
  :mod:`reactor.config.damon`) and read it back; ``nr_*`` only when counts change,
  every scheme field always;
- :mod:`~reactor.damon.commands`: ``state`` commands with EBUSY retry, and every errno
  translated into a sentence;
- :mod:`~reactor.damon.snapshot`: stats, tried regions, effective quotas, tuned
  intervals and goal values as frozen dataclasses;
- :mod:`~reactor.damon.memory`: System RAM ranges from /proc/iomem, per NUMA node;
- :mod:`~reactor.damon.ownership`: which kdamonds are reactor's (run-dir record, boot id,
  pid check);
- :mod:`~reactor.damon.driver`: :class:`DamonDriver`, the async facade (worker threads,
  deadlines, ownership guard on every write);
- :mod:`~reactor.damon.damo`: damo JSON/YAML files in and out;
- :mod:`~reactor.damon.probe`: the read-only status and backend choice the runtime uses.
"""

from __future__ import annotations

from reactor.damon.commands import DamonSysfsError, KdamondNotRunning, send_state
from reactor.damon.damo import dump_damo_json, load_damo_text, to_damo_dict
from reactor.damon.driver import DamonDriver, DamonTimeout
from reactor.damon.features import KernelFeatures, parse_kernel_version, probe_features
from reactor.damon.memory import IomemHidden, node_ram_ranges, read_system_ram
from reactor.damon.ownership import ForeignKdamond, OwnershipRecord, OwnershipStore
from reactor.damon.probe import choose_backend, read_damon_status
from reactor.damon.snapshot import SchemeStats, TriedRegion, TriedRegions, TunedIntervals
from reactor.damon.sysfs import ObsoleteRemoval, Stager, as_staged, read_kdamond

__all__ = (
    "DamonDriver",
    "DamonSysfsError",
    "DamonTimeout",
    "ForeignKdamond",
    "IomemHidden",
    "KdamondNotRunning",
    "KernelFeatures",
    "ObsoleteRemoval",
    "OwnershipRecord",
    "OwnershipStore",
    "SchemeStats",
    "Stager",
    "TriedRegion",
    "TriedRegions",
    "TunedIntervals",
    "as_staged",
    "choose_backend",
    "dump_damo_json",
    "load_damo_text",
    "node_ram_ranges",
    "parse_kernel_version",
    "probe_features",
    "read_damon_status",
    "read_kdamond",
    "read_system_ram",
    "send_state",
    "to_damo_dict",
)
