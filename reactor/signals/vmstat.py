"""/proc/vmstat: the parser and the rate poller.

The file is one ``name value`` pair per line. Most entries are cumulative event counters
(``pgfault``, ``pgscan_kswapd``); the rest are gauges of pages in some state
(``nr_free_pages``, ``nr_dirty``), whose per-second rate means nothing and which go down
as often as up. :func:`is_gauge` tells them apart: names starting ``nr_`` are gauges
except the few that count events (``nr_dirtied``, ``nr_written``, ...), plus
``workingset_nodes``. The poller reports rates for counters and current values for gauges.

Reclaim counters on 6.x kernels, and how the derived groups sum them:

- ``pgscan_{kswapd,direct,khugepaged,proactive}`` split the pages scanned by who scanned
  them; their sum is the total. ``pgscan_{anon,file}`` split the same pages by type, so
  adding them to the total would count each page twice. ``pgscan_direct_throttle``
  counts throttling events, not pages, and is in no group.
- ``pgsteal_*`` likewise (pages reclaimed).
- ``pgdemote_{kswapd,direct,khugepaged,proactive}`` sum to the pages demoted.

Every other counter is a rate in ``VmstatRates.rates_per_s`` too: NUMA balancing
(``numa_hint_faults``, ``numa_hint_faults_local``, ``numa_pages_migrated``; present with
CONFIG_NUMA_BALANCING), page migration (``pgmigrate_*``), THP (``thp_*``: faults, fallbacks,
collapses, splits, swap-outs) and compaction (``compact_*``: stalls, failures, successes,
kcompactd wake-ups and scanned pages). The ones the tiering, THP and compaction policies
read are also named fields; :meth:`VmstatRates.family` gives all rates of one prefix.

A counter this kernel does not have is absent from the rates, and a group none of whose
members exist is None: nothing is invented.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from reactor.errors import KernelFormatError
from reactor.kernelfs.base import KernelFS
from reactor.kernelfs.frozen import FrozenMap
from reactor.kernelfs.kept import KeptReader

__all__ = (
    "RECLAIMERS",
    "Vmstat",
    "VmstatPoller",
    "VmstatRates",
    "is_gauge",
    "parse_vmstat",
)

#: Who scans, reclaims or demotes pages: the suffixes that partition pgscan/pgsteal/pgdemote.
RECLAIMERS = ("kswapd", "direct", "khugepaged", "proactive")

#: ``nr_*`` entries that are cumulative event counts, not gauges.
_NR_COUNTERS = frozenset(
    {
        "nr_dirtied",
        "nr_written",
        "nr_throttled_written",
        "nr_vmscan_write",
        "nr_vmscan_immediate_reclaim",
        "nr_foll_pin_acquired",
        "nr_foll_pin_released",
    }
)
#: Gauges whose names do not start with ``nr_``.
_OTHER_GAUGES = frozenset({"workingset_nodes"})

_LINE = re.compile(r"^([A-Za-z0-9_]+) (-?[0-9]+)$")
#: every well-formed line of a whole file at once (checked against the line count)
_LINES = re.compile(_LINE.pattern, re.MULTILINE)


@functools.cache  # a kernel's few hundred names, asked about every poll
def is_gauge(name: str) -> bool:
    """True for a vmstat entry that is a current amount rather than a cumulative count."""
    if name in _OTHER_GAUGES:
        return True
    return name.startswith("nr_") and name not in _NR_COUNTERS and not name.startswith("nr_tlb_")


class Vmstat(FrozenMap[str, int]):
    """The parsed file: a read-only dict of entry name to value (pages or events)."""

    __slots__ = ()


def parse_vmstat(text: str, path: str) -> Vmstat:
    """Parse /proc/vmstat (or a node's vmstat); ``path`` only names the file in errors.

    Every non-empty line must be ``name integer``; a duplicate name is an error too.
    """
    pairs = _LINES.findall(text)
    values = {name: int(value) for name, value in pairs}
    lines = text.count("\n") + (not text.endswith("\n"))
    if len(values) != len(pairs) or len(pairs) != lines:
        # a blank or malformed line, or a duplicate: line by line, to skip or name it
        values = _parse_lines(text, path)
    if not values:
        raise KernelFormatError(path, "no entries", line=text[:200])
    return Vmstat(values)


def _parse_lines(text: str, path: str) -> dict[str, int]:
    """Line by line, to name the line a whole-file parse could not account for."""
    values: dict[str, int] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        match = _LINE.match(raw.strip())
        if match is None:
            raise KernelFormatError(path, "expected 'name integer'", line=raw)
        name = match.group(1)
        if name in values:
            raise KernelFormatError(path, f"duplicate entry {name!r}", line=raw)
        values[name] = int(match.group(2))
    return values


@dataclass(frozen=True)
class VmstatRates:
    """Per-second rates of the vmstat counters over one poll interval.

    ``rates_per_s`` holds every counter that had a baseline (events or pages per second);
    ``gauges`` the current value of every gauge (pages). The named fields are the groups a
    reclaim or tiering policy reads, None where this kernel lacks every member.
    """

    interval_s: float
    rates_per_s: FrozenMap[str, float]
    gauges: FrozenMap[str, int]
    pgscan_per_s: float | None
    pgscan_kswapd_per_s: float | None
    pgscan_direct_per_s: float | None
    pgscan_khugepaged_per_s: float | None
    pgscan_proactive_per_s: float | None
    pgscan_anon_per_s: float | None
    pgscan_file_per_s: float | None
    pgsteal_per_s: float | None
    pgsteal_kswapd_per_s: float | None
    pgsteal_direct_per_s: float | None
    pgsteal_khugepaged_per_s: float | None
    pgsteal_proactive_per_s: float | None
    pgsteal_anon_per_s: float | None
    pgsteal_file_per_s: float | None
    workingset_refault_anon_per_s: float | None
    workingset_refault_file_per_s: float | None
    workingset_activate_anon_per_s: float | None
    workingset_activate_file_per_s: float | None
    pswpin_per_s: float | None
    pswpout_per_s: float | None
    pgpromote_success_per_s: float | None
    pgdemote_per_s: float | None
    pgfault_per_s: float | None
    pgmajfault_per_s: float | None
    numa_hint_faults_per_s: float | None
    numa_hint_faults_local_per_s: float | None
    numa_pages_migrated_per_s: float | None
    pgmigrate_success_per_s: float | None
    pgmigrate_fail_per_s: float | None
    thp_fault_alloc_per_s: float | None
    thp_fault_fallback_per_s: float | None
    thp_collapse_alloc_per_s: float | None
    thp_split_page_per_s: float | None
    compact_stall_per_s: float | None
    compact_fail_per_s: float | None
    compact_success_per_s: float | None
    compact_daemon_wake_per_s: float | None

    def family(self, prefix: str) -> dict[str, float]:
        """Every rate whose counter name starts with ``prefix`` (``"thp_"``, ``"compact_"``,
        ``"numa_hint_faults"``), per second."""
        return {k: v for k, v in self.rates_per_s.items() if k.startswith(prefix)}

    def summary(self) -> dict[str, float | int]:
        """The reclaim-related rates for the one-line-per-tick log (absent ones left out)."""
        keys = (
            "pgscan_per_s",
            "pgsteal_per_s",
            "workingset_refault_anon_per_s",
            "workingset_refault_file_per_s",
            "pswpin_per_s",
            "pswpout_per_s",
            "pgmajfault_per_s",
        )
        out: dict[str, float | int] = {}
        for key in keys:
            value = getattr(self, key)
            if value is not None:
                out[key] = round(value, 3)
        return out


class VmstatPoller:
    """Polls /proc/vmstat and publishes :class:`VmstatRates`; the first poll returns None.

    Each counter keeps its own baseline: one that went backwards (it cannot, short of a
    wrap or a different file) is left out of that poll's rates and restarts from its new
    value, while the other counters keep their rates.
    """

    def __init__(self, fs: KernelFS, path: str = "/proc/vmstat", topic: str = "vmstat") -> None:
        self._path = path
        self._topic = topic
        self._reader = KeptReader(fs, path)
        self._base: tuple[float, Vmstat, int] | None = None

    @property
    def topic(self) -> str:
        return self._topic

    def poll(self, now: float) -> VmstatRates | None:
        """Read the file; counter rates since the previous poll, or None (baseline)."""
        stat = parse_vmstat(self._reader.read_text(), self._path)
        base, self._base = self._base, (now, stat, self._reader.generation)
        if base is None or base[2] != self._reader.generation:
            return None
        then, old, _ = base
        interval_s = now - then
        if interval_s <= 0:
            if interval_s == 0:
                self._base = base
            return None
        rates: dict[str, float] = {}
        gauges: dict[str, int] = {}
        for name, value in stat.items():
            if is_gauge(name):
                gauges[name] = value
            elif (then_value := old.get(name)) is not None and value >= then_value:
                rates[name] = (value - then_value) / interval_s
        return _rates(interval_s, rates, gauges, stat)

    def close(self) -> None:
        self._reader.close()


def _group(rates: Mapping[str, float], stat: Vmstat, family: str) -> float | None:
    """Sum of ``<family>_<reclaimer>``; None if none exists, or one has no rate this poll
    (re-baselined), since a partial sum would under-report."""
    members = [f"{family}_{who}" for who in RECLAIMERS if f"{family}_{who}" in stat]
    if not members or any(m not in rates for m in members):
        return None
    return sum(rates[m] for m in members)


def _rates(
    interval_s: float, rates: dict[str, float], gauges: dict[str, int], stat: Vmstat
) -> VmstatRates:
    get = rates.get
    return VmstatRates(
        interval_s=interval_s,
        rates_per_s=FrozenMap(rates),
        gauges=FrozenMap(gauges),
        pgscan_per_s=_group(rates, stat, "pgscan"),
        pgscan_kswapd_per_s=get("pgscan_kswapd"),
        pgscan_direct_per_s=get("pgscan_direct"),
        pgscan_khugepaged_per_s=get("pgscan_khugepaged"),
        pgscan_proactive_per_s=get("pgscan_proactive"),
        pgscan_anon_per_s=get("pgscan_anon"),
        pgscan_file_per_s=get("pgscan_file"),
        pgsteal_per_s=_group(rates, stat, "pgsteal"),
        pgsteal_kswapd_per_s=get("pgsteal_kswapd"),
        pgsteal_direct_per_s=get("pgsteal_direct"),
        pgsteal_khugepaged_per_s=get("pgsteal_khugepaged"),
        pgsteal_proactive_per_s=get("pgsteal_proactive"),
        pgsteal_anon_per_s=get("pgsteal_anon"),
        pgsteal_file_per_s=get("pgsteal_file"),
        workingset_refault_anon_per_s=get("workingset_refault_anon"),
        workingset_refault_file_per_s=get("workingset_refault_file"),
        workingset_activate_anon_per_s=get("workingset_activate_anon"),
        workingset_activate_file_per_s=get("workingset_activate_file"),
        pswpin_per_s=get("pswpin"),
        pswpout_per_s=get("pswpout"),
        pgpromote_success_per_s=get("pgpromote_success"),
        pgdemote_per_s=_group(rates, stat, "pgdemote"),
        pgfault_per_s=get("pgfault"),
        pgmajfault_per_s=get("pgmajfault"),
        numa_hint_faults_per_s=get("numa_hint_faults"),
        numa_hint_faults_local_per_s=get("numa_hint_faults_local"),
        numa_pages_migrated_per_s=get("numa_pages_migrated"),
        pgmigrate_success_per_s=get("pgmigrate_success"),
        pgmigrate_fail_per_s=get("pgmigrate_fail"),
        thp_fault_alloc_per_s=get("thp_fault_alloc"),
        thp_fault_fallback_per_s=get("thp_fault_fallback"),
        thp_collapse_alloc_per_s=get("thp_collapse_alloc"),
        thp_split_page_per_s=get("thp_split_page"),
        compact_stall_per_s=get("compact_stall"),
        compact_fail_per_s=get("compact_fail"),
        compact_success_per_s=get("compact_success"),
        compact_daemon_wake_per_s=get("compact_daemon_wake"),
    )
