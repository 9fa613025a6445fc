"""Read-only look at the DAMON sysfs tree, and the backend choice it implies.

Nothing here writes: reading the tree is always allowed, even when its kdamonds belong
to someone else (on this project's machines they belong to the machine itself).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from reactor.damon.snapshot import read_text
from reactor.errors import KernelInterfaceError
from reactor.kernelfs import KernelFS

__all__ = (
    "BackendChoice",
    "DamonSysfsStatus",
    "KdamondInfo",
    "choose_backend",
    "read_damon_status",
)

ADMIN = "/sys/kernel/mm/damon/admin"
KDAMONDS = ADMIN + "/kdamonds"


@dataclass(frozen=True)
class KdamondInfo:
    """One kdamond as sysfs shows it: index, ``state`` (on/off, ``unknown`` when it could
    not be read, as when DAMON's sysfs lock stayed held), ``pid`` (-1 when off or
    unreadable), and the operations set of its context, if it has one."""

    index: int
    state: str
    pid: int
    operations: str | None


@dataclass(frozen=True)
class DamonSysfsStatus:
    """What the DAMON sysfs tree holds. ``present`` is False when the kernel lacks it."""

    present: bool
    kdamonds: tuple[KdamondInfo, ...]
    detail: str


@dataclass(frozen=True)
class BackendChoice:
    """The backend reactor would use and why, in words an operator can act on."""

    requested: str
    backend: str
    usable: bool
    reason: str


def _read(fs: KernelFS, path: str) -> str | None:
    """The file's text, EBUSY waited out (``state`` and ``pid`` take DAMON's sysfs lock);
    None if it cannot be read."""
    try:
        return read_text(fs, path).strip()
    except KernelInterfaceError:
        return None


def read_damon_status(fs: KernelFS) -> DamonSysfsStatus:
    """Read ``nr_kdamonds`` and each kdamond's state, pid and operations."""
    if not fs.is_dir(ADMIN):
        return DamonSysfsStatus(False, (), f"{ADMIN} does not exist (no CONFIG_DAMON_SYSFS)")
    raw = _read(fs, KDAMONDS + "/nr_kdamonds")
    if raw is None or not raw.lstrip("+").isdigit():
        return DamonSysfsStatus(True, (), f"{KDAMONDS}/nr_kdamonds is unreadable ({raw!r})")
    infos = []
    for index in range(int(raw)):
        base = f"{KDAMONDS}/{index}"
        pid_text = _read(fs, base + "/pid")
        pid = int(pid_text) if pid_text and pid_text.lstrip("-").isdigit() else -1
        infos.append(
            KdamondInfo(
                index=index,
                state=_read(fs, base + "/state") or "unknown",
                pid=pid,
                operations=_read(fs, base + "/contexts/0/operations"),
            )
        )
    return DamonSysfsStatus(True, tuple(infos), f"{len(infos)} kdamond(s)")


def choose_backend(
    requested: str, status: DamonSysfsStatus, owned: Collection[int] = ()
) -> BackendChoice:
    """Decide between the DAMON and native backends.

    reactor writes ``nr_kdamonds`` only when it is 0 or every kdamond is its own
    (``owned`` holds the indices its ownership record lists): writing any ``nr_*`` file
    removes and recreates every kdamond, the machine's own included.
    """
    foreign = [k for k in status.kdamonds if k.index not in owned]
    if not status.present:
        why = f"DAMON sysfs is absent: {status.detail}"
        if requested == "damon":
            return BackendChoice(requested, "damon", False, why)
        return BackendChoice(requested, "native", True, why + "; using the native sampler")
    if foreign:
        names = ", ".join(
            f"kdamond {k.index} (state {k.state}, pid {k.pid}, ops {k.operations or '?'})"
            for k in foreign
        )
        why = (
            f"DAMON sysfs is in use by someone else: {names}. reactor never writes to a "
            "kdamond it does not own (a write to nr_kdamonds would reset it). To use the "
            "DAMON backend, stop that user's kdamonds (for example the tool or kernel "
            "module that started them) so that nr_kdamonds is 0"
        )
        if requested == "damon":
            return BackendChoice(requested, "damon", False, why)
        return BackendChoice(requested, "native", True, why + "; using the native sampler")
    why = "DAMON sysfs is present and free (no kdamonds reactor does not own)"
    if requested == "native":
        return BackendChoice(requested, "native", True, "native backend requested; " + why)
    return BackendChoice(requested, "damon", True, why)
