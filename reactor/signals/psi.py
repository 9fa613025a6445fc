"""Pressure stall information (PSI): the parser and the poller.

The kernel's format (Documentation/accounting/psi.rst), one line per kind of stall::

    some avg10=0.81 avg60=0.32 avg300=0.29 total=2433116
    full avg10=0.00 avg60=0.00 avg300=0.00 total=0

``avg*`` are the kernel's exponentially smoothed shares of wall time, in percent, over 10,
60 and 300 s; ``total`` is the cumulative stall time in microseconds. ``some`` is time in
which at least one task stalled on the resource, ``full`` time in which every non-idle
task did. System-wide ``cpu`` shows a ``full`` line of zeros since Linux 5.13 and none
before, so ``full`` may be absent.

The controller uses rates of ``total`` computed here over its own tick, not the kernel's
averages (practice 11): the averages are smoothed over fixed windows (the shortest is
10 s) and are only recomputed every 2 s, while ``total`` is brought up to date on every
read, so a 1 s tick sees the stall of exactly that second.

Topic names:

- ``psi.<resource>``: the system-wide file ``/proc/pressure/<resource>``
  (``psi.memory``, ``psi.io``, ``psi.cpu``, ``psi.irq``);
- ``psi.cgroup.<resource>``: ``<resource>.pressure`` of a cgroup v2 directory (the one
  cgroup a config names). Code that polls several cgroups passes ``topic=`` explicitly,
  for instance ``psi.cgroup.memory.<cgroup name>``;
- any other file: ``psi.<resource>`` is used unless ``topic=`` says otherwise.

A cgroup that is removed takes its pressure files with it. That is a normal event
(practice 15), as it is for :class:`~reactor.signals.cgroup.CgroupPoller`: ``poll`` raises
:class:`~reactor.errors.TargetVanished` (not a KernelInterfaceError, so the runtime logs
``target_vanished`` at info instead of counting a failed read) on every poll while the
file's directory is gone, and a group created again at the same path starts a new
baseline. A file missing when the poller is built is still a KernelInterfaceError: a
wrong path in a config must be loud.
"""

from __future__ import annotations

import errno as errno_mod
import math
import re
from dataclasses import dataclass

from reactor.errors import KernelFormatError, KernelInterfaceError, TargetVanished
from reactor.kernelfs.base import KernelFS
from reactor.kernelfs.kept import KeptReader

__all__ = (
    "PSI_RESOURCES",
    "Psi",
    "PsiLine",
    "PsiPoller",
    "PsiSample",
    "parse_psi",
    "psi_topic",
)

#: The resources the kernel reports pressure for (``irq`` needs CONFIG_IRQ_TIME_ACCOUNTING).
PSI_RESOURCES = ("memory", "io", "cpu", "irq")

_KEY_VALUE = re.compile(r"^([a-z0-9_]+)=(\S+)$")
_AVG_KEYS = ("avg10", "avg60", "avg300")


@dataclass(frozen=True)
class PsiLine:
    """One line of a PSI file: the kernel's averages (percent) and the total (µs)."""

    avg10_pct: float
    avg60_pct: float
    avg300_pct: float
    total_us: int


@dataclass(frozen=True)
class Psi:
    """A parsed PSI file. ``full`` is None where the kernel prints no ``full`` line."""

    some: PsiLine
    full: PsiLine | None


def parse_psi(text: str, path: str) -> Psi:
    """Parse the text of a PSI file; ``path`` only names the file in errors.

    Fields are looked up by label and key. Unknown labels and keys are ignored (a later
    kernel may add some); a missing ``some`` line, a missing key or a bad value raises
    :class:`KernelFormatError` quoting the line.
    """
    lines: dict[str, PsiLine] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        label, _, rest = raw.strip().partition(" ")
        fields = _parse_fields(rest, raw, path)
        if label in lines:
            raise KernelFormatError(path, f"duplicate {label!r} line", line=raw)
        if label in ("some", "full"):
            lines[label] = _psi_line(fields, raw, path)
    if "some" not in lines:
        raise KernelFormatError(path, "no 'some' line in a PSI file", line=text[:200])
    return Psi(some=lines["some"], full=lines.get("full"))


def _parse_fields(rest: str, raw: str, path: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for token in rest.split():
        match = _KEY_VALUE.match(token)
        if match is None:
            raise KernelFormatError(path, f"expected key=value, got {token!r}", line=raw)
        fields[match.group(1)] = match.group(2)
    return fields


def _psi_line(fields: dict[str, str], raw: str, path: str) -> PsiLine:
    missing = [k for k in (*_AVG_KEYS, "total") if k not in fields]
    if missing:
        raise KernelFormatError(path, f"missing {', '.join(missing)}", line=raw)
    avgs: list[float] = []
    for key in _AVG_KEYS:
        try:
            value = float(fields[key])
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise KernelFormatError(path, f"{key} is not a percentage", line=raw)
        avgs.append(value)
    total = fields["total"]
    if not total.isdigit():
        raise KernelFormatError(path, "total is not a count of microseconds", line=raw)
    return PsiLine(avgs[0], avgs[1], avgs[2], int(total))


def psi_topic(resource: str, path: str | None = None) -> str:
    """The default bus topic for ``resource`` read from ``path`` (see the module docs)."""
    if path is None or path == f"/proc/pressure/{resource}":
        return f"psi.{resource}"
    if path.endswith(f"/{resource}.pressure"):
        return f"psi.cgroup.{resource}"
    return f"psi.{resource}"


@dataclass(frozen=True)
class PsiSample:
    """Stall shares over one poll interval, with the kernel's own view alongside.

    ``some_share``/``full_share`` are stall time over wall time in the interval (0..1,
    clamped: the kernel's clock and ours differ by a few µs); ``*_stall_us`` are the raw
    deltas of ``total``. ``full_share`` is None where the file has no ``full`` line.
    ``psi`` is the file as read, for the kernel's avg10/avg60/avg300.
    """

    resource: str
    interval_s: float
    some_share: float
    full_share: float | None
    some_stall_us: int
    full_stall_us: int | None
    psi: Psi

    def summary(self) -> dict[str, float | int]:
        """The fields of the one-line-per-tick log."""
        out: dict[str, float | int] = {
            "some_share": round(self.some_share, 6),
            "some_avg10_pct": self.psi.some.avg10_pct,
        }
        if self.full_share is not None:
            out["full_share"] = round(self.full_share, 6)
        return out


class PsiPoller:
    """Polls one PSI file and publishes :class:`PsiSample` rates between polls.

    ``path`` defaults to ``/proc/pressure/<resource>``; pass ``<cgroup dir>/<resource>.pressure``
    for a cgroup v2 group. The first poll only takes a baseline (None). A ``total`` that
    went backwards (the cgroup was removed and created again) or a reopened file also
    restarts the baseline, because a rate across two different counters means nothing.

    When a read fails because the file's directory is gone (a removed cgroup), ``poll``
    raises TargetVanished with that directory as the target, on every poll until a
    directory exists there again. A group removed and created again between two polls
    (kernfs fails reads on the old group's kept file with ENODEV; the path exists) is
    reopened at once and that poll is a new baseline. Any other failed read is a
    KernelInterfaceError.
    """

    def __init__(
        self,
        fs: KernelFS,
        resource: str,
        path: str | None = None,
        topic: str | None = None,
    ) -> None:
        if resource not in PSI_RESOURCES:
            raise ValueError(f"expected a PSI resource in {PSI_RESOURCES}, got {resource!r}")
        self._resource = resource
        self._path = path if path is not None else f"/proc/pressure/{resource}"
        self._topic = topic if topic is not None else psi_topic(resource, path)
        self._fs = fs
        self._dir = self._path.rsplit("/", 1)[0] or "/"
        self._reader = KeptReader(fs, self._path)
        self._base: tuple[float, Psi, int] | None = None

    @classmethod
    def for_cgroup(
        cls, fs: KernelFS, cgroup_dir: str, resource: str, topic: str | None = None
    ) -> PsiPoller:
        """A poller of ``<cgroup_dir>/<resource>.pressure`` (cgroup v2)."""
        return cls(fs, resource, path=f"{cgroup_dir.rstrip('/')}/{resource}.pressure", topic=topic)

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def path(self) -> str:
        return self._path

    def poll(self, now: float) -> PsiSample | None:
        """Read the file; the stall shares since the previous poll, or None (baseline).

        Raises TargetVanished if the file's directory is gone, KernelInterfaceError for
        any other failed read.
        """
        psi = parse_psi(self._read_text(), self._path)
        base, self._base = self._base, (now, psi, self._reader.generation)
        if base is None or base[2] != self._reader.generation:
            return None
        then, old, _ = base
        interval_s = now - then
        if interval_s <= 0:
            if interval_s == 0:
                self._base = base  # same instant: keep the older baseline
            return None
        some_us = psi.some.total_us - old.some.total_us
        full_us = _delta(old.full, psi.full)
        if some_us < 0 or (full_us is not None and full_us < 0):
            return None  # a new counter (recreated cgroup): the new reading is the baseline
        return PsiSample(
            resource=self._resource,
            interval_s=interval_s,
            some_share=_share(some_us, interval_s),
            full_share=None if full_us is None else _share(full_us, interval_s),
            some_stall_us=some_us,
            full_stall_us=full_us,
            psi=psi,
        )

    def _read_text(self) -> str:
        try:
            return self._reader.read_text()
        except KernelInterfaceError as exc:
            if exc.errno not in (errno_mod.ENODEV, errno_mod.ENOENT):
                raise
            if not self._fs.is_dir(self._dir):
                self._base = None
                raise TargetVanished(self._dir) from exc
        # Removed and created again since the last poll: the reader has closed the old
        # file; this read opens the new one (a new generation, so a new baseline).
        return self._reader.read_text()

    def close(self) -> None:
        self._reader.close()


def _delta(old: PsiLine | None, new: PsiLine | None) -> int | None:
    if old is None or new is None:
        return None
    return new.total_us - old.total_us


def _share(stall_us: int, interval_s: float) -> float:
    return min(1.0, max(0.0, stall_us / (interval_s * 1e6)))
