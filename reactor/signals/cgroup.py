"""A target cgroup's memory: the parsers and the poller, for cgroup v2 and v1.

Files read, by version (all in the cgroup's directory):

- v2 (the memory controller enabled for the group): ``memory.current`` (bytes),
  ``memory.max`` (bytes or ``max``), ``memory.stat`` (``name value``; sizes in bytes,
  events as counts; hierarchical), ``memory.events`` (``low high max oom oom_kill
  oom_group_kill`` counts, hierarchical) and ``memory.pressure`` (PSI).
- v1 (``/sys/fs/cgroup/memory/...``): ``memory.usage_in_bytes``, ``memory.limit_in_bytes``
  (an unlimited group prints PAGE_COUNTER_MAX pages in bytes, 9223372036854771712 on
  x86-64), ``memory.failcnt`` (times a charge hit the limit) and ``memory.stat``. v1's
  ``memory.stat`` prints the group's own values and, prefixed ``total_``, the values for
  its whole subtree; the ``total_`` ones are used, so that both versions describe the
  subtree. v1 has no PSI file; on a hybrid machine (this host: memory on v1, PSI on v2)
  ``pressure_dir`` names the v2 group whose ``memory.pressure`` to pair with it.

Counters (``pg*``, ``workingset_*`` except ``workingset_nodes``, ``thp_*``, ``zswp*``,
``swpin*``/``swpout*``, ``numa_*``) become per-second rates over the poll interval; the
rest of memory.stat are levels in bytes.

A cgroup that disappears is a normal event (practice 15): ``poll`` raises
:class:`~reactor.errors.TargetVanished`, which is not a KernelInterfaceError, so the
runtime can log it at info and keep polling; when a group of the same path appears again
the poller starts a new baseline. Identity is the open files: kernfs fails every read on a
removed cgroup's open file with ENODEV, even once a new group of the same name exists, so
a re-created group can never be mistaken for the old one. Where the kernel-files seam can
report inode numbers (an ``inode(path)`` method; on cgroupfs the inode number is the
cgroup id) the sample carries it as ``cgroup_id``, and a changed id also starts a new
baseline.
"""

from __future__ import annotations

import errno as errno_mod
import re
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from reactor.errors import KernelFormatError, KernelInterfaceError, TargetVanished
from reactor.kernelfs.base import KernelFS
from reactor.kernelfs.frozen import FrozenMap
from reactor.kernelfs.kept import KeptReader
from reactor.signals.psi import PsiPoller, PsiSample

__all__ = (
    "V1_UNLIMITED_BYTES",
    "CgroupMemory",
    "CgroupPoller",
    "CgroupVersion",
    "MemoryStat",
    "is_counter",
    "parse_cgroup_int",
    "parse_limit",
    "parse_memory_events",
    "parse_memory_stat",
)

CgroupVersion = Literal["v1", "v2"]

#: What v1 ``memory.limit_in_bytes`` prints for "no limit" on x86-64 (PAGE_COUNTER_MAX pages,
#: LONG_MAX rounded down to a page); any value at least this large is treated as no limit.
V1_UNLIMITED_BYTES = 9223372036854771712

_LINE = re.compile(r"^([A-Za-z0-9_]+) (-?[0-9]+)$")
_COUNTER_PREFIXES = ("pg", "workingset_", "thp_", "zswp", "swpin", "swpout", "numa_")
_GAUGE_EXCEPTIONS = frozenset({"workingset_nodes"})

#: Files read per version: (usage, limit, stat, events-or-failcnt).
_FILES: dict[str, tuple[str, str, str, str]] = {
    "v2": ("memory.current", "memory.max", "memory.stat", "memory.events"),
    "v1": ("memory.usage_in_bytes", "memory.limit_in_bytes", "memory.stat", "memory.failcnt"),
}


def is_counter(name: str) -> bool:
    """True for a memory.stat entry that counts events (rate-able), False for a level."""
    return name not in _GAUGE_EXCEPTIONS and name.startswith(_COUNTER_PREFIXES)


class MemoryStat(FrozenMap[str, int]):
    """A parsed memory.stat (or memory.events): a read-only dict of name to value."""

    __slots__ = ()


def parse_memory_stat(text: str, path: str) -> MemoryStat:
    """Parse ``name integer`` lines (memory.stat, memory.events); ``path`` names the file.

    A line of any other shape, a duplicate name or an empty file raises KernelFormatError.
    """
    values: dict[str, int] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        match = _LINE.match(raw.strip())
        if match is None:
            raise KernelFormatError(path, "expected 'name integer'", line=raw)
        if match.group(1) in values:
            raise KernelFormatError(path, f"duplicate entry {match.group(1)!r}", line=raw)
        values[match.group(1)] = int(match.group(2))
    if not values:
        raise KernelFormatError(path, "no entries", line=text[:200])
    return MemoryStat(values)


def parse_memory_events(text: str, path: str) -> MemoryStat:
    """Parse v2 memory.events; ``max`` and ``oom_kill`` must be present (since 4.13)."""
    events = parse_memory_stat(text, path)
    missing = [k for k in ("max", "oom_kill") if k not in events]
    if missing:
        raise KernelFormatError(path, f"missing {', '.join(missing)}", line=text[:200])
    return events


def parse_cgroup_int(text: str, path: str) -> int:
    """A file holding one non-negative integer (memory.current, usage_in_bytes, failcnt)."""
    value = text.strip()
    if not value.isdigit():
        raise KernelFormatError(path, "expected one non-negative integer", line=text)
    return int(value)


def parse_limit(text: str, path: str) -> int | None:
    """A limit in bytes, or None for no limit (v2 ``max``; v1 PAGE_COUNTER_MAX)."""
    if text.strip() == "max":
        return None
    value = parse_cgroup_int(text, path)
    return None if value >= V1_UNLIMITED_BYTES else value


@dataclass(frozen=True)
class CgroupMemory:
    """One poll of a cgroup's memory, over ``interval_s`` seconds since the previous one.

    Levels (bytes): ``usage_bytes``, ``limit_bytes`` (None = no limit), and the LRU sizes
    ``anon_bytes``/``file_bytes`` (active + inactive) with their active/inactive split.
    Rates (per second): the named memory.stat counters, None where this kernel or
    version lacks them (v1 has no pgscan/pgsteal). ``limit_hits`` counts, over the
    interval, the times usage hit the limit (v2 memory.events ``max``, v1 ``failcnt``);
    ``oom_kills`` the OOM kills (v2 only, else None). ``counters`` holds the cumulative
    value of every counter (v1: from the ``total_`` entries), ``rates_per_s`` every rate.
    ``instance`` changes whenever the group was found re-created; ``cgroup_id`` is its
    inode number where the seam reports one. ``psi`` is the group's memory pressure over
    the same interval, if a pressure file is paired (None on its first poll).
    """

    path: str
    version: CgroupVersion
    instance: int
    cgroup_id: int | None
    interval_s: float
    usage_bytes: int
    limit_bytes: int | None
    anon_bytes: int
    file_bytes: int
    active_file_bytes: int
    inactive_file_bytes: int
    pgfault_per_s: float | None
    pgmajfault_per_s: float | None
    workingset_refault_file_per_s: float | None
    workingset_refault_anon_per_s: float | None
    workingset_activate_file_per_s: float | None
    pgscan_per_s: float | None
    pgsteal_per_s: float | None
    limit_hits: int
    oom_kills: int | None
    counters: FrozenMap[str, int]
    rates_per_s: FrozenMap[str, float]
    stat: MemoryStat
    psi: PsiSample | None

    def summary(self) -> dict[str, float | int]:
        """Usage, the refault and major-fault rates, limit hits, and memory PSI if paired."""
        out: dict[str, float | int] = {
            "usage_bytes": self.usage_bytes,
            "limit_hits": self.limit_hits,
        }
        for key in ("workingset_refault_file_per_s", "pgmajfault_per_s", "pgscan_per_s"):
            value = getattr(self, key)
            if value is not None:
                out[key] = round(value, 3)
        if self.oom_kills is not None:
            out["oom_kills"] = self.oom_kills
        if self.psi is not None:
            out["psi_some_share"] = round(self.psi.some_share, 6)
        return out


@runtime_checkable
class _InodeFS(Protocol):
    """A seam that can report a path's inode number (the cgroup id on cgroupfs)."""

    def inode(self, path: str) -> int: ...


@dataclass(frozen=True)
class _Reading:
    usage: int
    limit: int | None
    stat: MemoryStat
    events: MemoryStat | None
    failcnt: int | None


class CgroupPoller:
    """Polls one cgroup's memory files and publishes :class:`CgroupMemory` (rates: the
    first poll, and the first after a re-creation, return None).

    ``version`` is ``"v1"``, ``"v2"`` or ``"auto"`` (v2 if ``memory.current`` exists, else
    v1 if ``memory.usage_in_bytes`` does). ``pressure_dir`` is the directory whose
    ``memory.pressure`` to pair: the group itself by default for v2, none for v1.
    ``topic`` defaults to ``cgroup.<last path component>``.

    A group missing at construction is a KernelInterfaceError (a wrong path should be
    loud); a group that disappears later makes ``poll`` raise TargetVanished.
    """

    def __init__(
        self,
        fs: KernelFS,
        path: str,
        version: CgroupVersion | Literal["auto"] = "auto",
        *,
        pressure_dir: str | None = None,
        topic: str | None = None,
    ) -> None:
        self._fs = fs
        self._dir = path.rstrip("/") or "/"
        self._version: CgroupVersion = self._detect(version)
        self._topic = topic if topic is not None else f"cgroup.{self._dir.rsplit('/', 1)[-1]}"
        if pressure_dir is None and self._version == "v2":
            pressure_dir = self._dir
        self._pressure_path = (
            None if pressure_dir is None else f"{pressure_dir.rstrip('/')}/memory.pressure"
        )
        self._instance = 0
        self._readers: tuple[KeptReader, ...] = ()
        self._psi: PsiPoller | None = None
        self._cgroup_id: int | None = None
        self._base: tuple[float, dict[str, int], int] | None = None
        self._open()

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def version(self) -> CgroupVersion:
        return self._version

    @property
    def path(self) -> str:
        return self._dir

    def _detect(self, version: str) -> CgroupVersion:
        if version in ("v1", "v2"):
            return version  # type: ignore[return-value]  # narrowed by the check
        if version != "auto":
            raise ValueError(f"expected version 'v1', 'v2' or 'auto', got {version!r}")
        if self._fs.exists(f"{self._dir}/memory.current"):
            return "v2"
        if self._fs.exists(f"{self._dir}/memory.usage_in_bytes"):
            return "v1"
        raise KernelInterfaceError(
            self._dir,
            "not a cgroup with the memory controller (no memory.current or "
            "memory.usage_in_bytes); for PSI alone use PsiPoller.for_cgroup",
            errno=errno_mod.ENOENT,
        )

    def _open(self) -> None:
        """Open every file afresh: a new instance of the group, with no baseline."""
        self._close_readers()
        self._base = None
        readers: list[KeptReader] = []
        try:
            for name in _FILES[self._version]:
                readers.append(KeptReader(self._fs, f"{self._dir}/{name}"))
            if self._pressure_path is not None:
                self._psi = PsiPoller(
                    self._fs, "memory", path=self._pressure_path, topic=self._topic
                )
        except KernelInterfaceError:
            for reader in readers:
                reader.close()
            raise
        self._readers = tuple(readers)
        self._instance += 1
        if isinstance(self._fs, _InodeFS):
            self._cgroup_id = self._fs.inode(self._dir)

    def poll(self, now: float) -> CgroupMemory | None:
        """Read the group's files; rates since the previous poll, or None (baseline).

        Raises TargetVanished if the group's directory is gone, KernelInterfaceError for
        any other failed read.
        """
        try:
            reading, psi = self._read_all(now)
        except (KernelInterfaceError, TargetVanished) as exc:
            # TargetVanished comes from the paired PsiPoller (its directory went away).
            if not self._fs.is_dir(self._dir):
                self._close_readers()
                self._base = None
                raise TargetVanished(self._dir) from exc
            if isinstance(exc, KernelInterfaceError) and exc.errno not in (
                errno_mod.ENODEV,
                errno_mod.ENOENT,
            ):
                raise
            self._open()  # removed and created again between two polls: a new group
            reading, psi = self._read_all(now)
        if isinstance(self._fs, _InodeFS) and self._fs.inode(self._dir) != self._cgroup_id:
            self._open()
            reading, psi = self._read_all(now)
        return self._sample(now, reading, psi)

    def _read_all(self, now: float) -> tuple[_Reading, PsiSample | None]:
        if not self._readers:
            self._open()
        usage_r, limit_r, stat_r, last_r = self._readers
        usage = parse_cgroup_int(usage_r.read_text(), usage_r.path)
        limit = parse_limit(limit_r.read_text(), limit_r.path)
        stat = parse_memory_stat(stat_r.read_text(), stat_r.path)
        if self._version == "v2":
            reading = _Reading(
                usage, limit, stat, parse_memory_events(last_r.read_text(), last_r.path), None
            )
        else:
            reading = _Reading(
                usage, limit, stat, None, parse_cgroup_int(last_r.read_text(), last_r.path)
            )
        psi = self._psi.poll(now) if self._psi is not None else None
        return reading, psi

    def _sample(self, now: float, r: _Reading, psi: PsiSample | None) -> CgroupMemory | None:
        view = _subtree_view(r.stat, self._version)
        counters = {k: v for k, v in view.items() if is_counter(k)}
        if r.events is not None:
            counters.update({f"events.{k}": v for k, v in r.events.items()})
        if r.failcnt is not None:
            counters["failcnt"] = r.failcnt
        base, self._base = self._base, (now, counters, self._instance)
        if base is None or base[2] != self._instance:
            return None
        interval_s = now - base[0]
        if interval_s <= 0:
            if interval_s == 0:
                self._base = base
            return None
        old = base[1]
        deltas = {k: v - old[k] for k, v in counters.items() if k in old and v >= old[k]}
        rates = {
            k: d / interval_s
            for k, d in deltas.items()
            if not k.startswith("events.") and k != "failcnt"
        }
        hits_key = "events.max" if self._version == "v2" else "failcnt"
        return CgroupMemory(
            path=self._dir,
            version=self._version,
            instance=self._instance,
            cgroup_id=self._cgroup_id,
            interval_s=interval_s,
            usage_bytes=r.usage,
            limit_bytes=r.limit,
            anon_bytes=_level(view, "active_anon") + _level(view, "inactive_anon"),
            file_bytes=_level(view, "active_file") + _level(view, "inactive_file"),
            active_file_bytes=_level(view, "active_file"),
            inactive_file_bytes=_level(view, "inactive_file"),
            pgfault_per_s=rates.get("pgfault"),
            pgmajfault_per_s=rates.get("pgmajfault"),
            workingset_refault_file_per_s=rates.get("workingset_refault_file"),
            workingset_refault_anon_per_s=rates.get("workingset_refault_anon"),
            workingset_activate_file_per_s=rates.get("workingset_activate_file"),
            pgscan_per_s=rates.get("pgscan"),
            pgsteal_per_s=rates.get("pgsteal"),
            limit_hits=deltas.get(hits_key, 0),
            oom_kills=deltas.get("events.oom_kill") if self._version == "v2" else None,
            counters=FrozenMap(counters),
            rates_per_s=FrozenMap(rates),
            stat=r.stat,
            psi=psi,
        )

    def _close_readers(self) -> None:
        for reader in self._readers:
            reader.close()
        self._readers = ()
        if self._psi is not None:
            self._psi.close()
            self._psi = None

    def close(self) -> None:
        self._close_readers()


def _subtree_view(stat: MemoryStat, version: CgroupVersion) -> dict[str, int]:
    """memory.stat as the whole subtree sees it: v1's ``total_<name>`` entries replace
    the group-local ``<name>`` ones; v2's are hierarchical already."""
    view = dict(stat)
    if version == "v1":
        for key, value in stat.items():
            if key.startswith("total_"):
                view[key.removeprefix("total_")] = value
    return view


def _level(view: dict[str, int], key: str) -> int:
    return view.get(key, 0)
