"""Which kdamonds reactor created: a record in the run directory, checked against the kernel.

DAMON's sysfs has no owner field. On the machines reactor runs on, kdamonds may belong to
someone else (this project's development host runs one of its own), and a single write to
any ``nr_*`` file resets all of them. So reactor writes down, in
``<run_dir>/damon-kdamonds.json``, each kdamond index it created with the pid it had when
reactor last started or stopped it (-1 while stopped), and the boot it happened in.

A kdamond counts as reactor's own only if the record lists its index, the record's boot
id is this boot's (``/proc/sys/kernel/random/boot_id``), and its current pid equals the
recorded one. A record from an earlier boot is ignored (indices and pids repeat after a
reboot); a kdamond whose pid changed was restarted by someone else and is no longer
reactor's.

This module is the only one in reactor/damon that does file I/O outside the KernelFS:
the record is reactor's own file, not a kernel file. Writes are atomic (a temporary file
in the same directory, flushed, then renamed over the record).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reactor.damon.probe import DamonSysfsStatus, KdamondInfo
from reactor.errors import UnsafeWrite
from reactor.kernelfs import KernelFS

__all__ = (
    "BOOT_ID",
    "RECORD_NAME",
    "ForeignKdamond",
    "OwnedKdamond",
    "OwnershipRecord",
    "OwnershipStore",
    "describe_foreign",
    "foreign_kdamonds",
    "owned_indices",
    "read_boot_id",
)

BOOT_ID = "/proc/sys/kernel/random/boot_id"
RECORD_NAME = "damon-kdamonds.json"
_VERSION = 1


def read_boot_id(fs: KernelFS) -> str:
    """This boot's id (a UUID that changes at every boot)."""
    return fs.read_text(BOOT_ID).strip()


@dataclass(frozen=True)
class OwnedKdamond:
    """A kdamond reactor created: its index and its pid when last started (-1: stopped)."""

    index: int
    pid: int


@dataclass(frozen=True)
class OwnershipRecord:
    """The kdamonds reactor owns in boot ``boot_id``."""

    boot_id: str
    kdamonds: tuple[OwnedKdamond, ...] = ()

    def with_pid(self, index: int, pid: int) -> OwnershipRecord:
        """The record with kdamond ``index`` (added if missing) at ``pid``."""
        rest = tuple(k for k in self.kdamonds if k.index != index)
        entries = sorted((*rest, OwnedKdamond(index, pid)), key=lambda k: k.index)
        return OwnershipRecord(self.boot_id, tuple(entries))

    def pid_of(self, index: int) -> int | None:
        """The recorded pid of kdamond ``index``, or None if it is not recorded."""
        for k in self.kdamonds:
            if k.index == index:
                return k.pid
        return None

    def to_json(self) -> str:
        """The record file's text."""
        body = {
            "version": _VERSION,
            "boot_id": self.boot_id,
            "kdamonds": [{"index": k.index, "pid": k.pid} for k in self.kdamonds],
        }
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> OwnershipRecord:
        """Parse a record; ValueError (with the reason) if it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            raise ValueError(f"expected a version {_VERSION} record, got {text[:80]!r}")
        entries = data.get("kdamonds")
        boot = data.get("boot_id")
        if not isinstance(boot, str) or not isinstance(entries, list):
            raise ValueError("expected boot_id (string) and kdamonds (list)")
        owned = []
        for e in entries:
            if not isinstance(e, dict) or not all(type(e.get(k)) is int for k in ("index", "pid")):
                raise ValueError(f"expected {{index: int, pid: int}}, got {e!r}")
            owned.append(OwnedKdamond(e["index"], e["pid"]))
        return cls(boot, tuple(sorted(owned, key=lambda k: k.index)))


@dataclass
class OwnershipStore:
    """The record file under ``run_dir`` (default /run/reactor; tests use a temp dir).

    ``ignored`` says why the last :meth:`load` found no usable record (for logs).
    """

    run_dir: str | os.PathLike[str]
    ignored: str | None = field(default=None, init=False)

    @property
    def path(self) -> Path:
        """The record file."""
        return Path(self.run_dir) / RECORD_NAME

    def load(self, boot_id: str) -> OwnershipRecord:
        """The record for this boot; an empty one if missing, unreadable or from another boot."""
        self.ignored = None
        path = self.path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return OwnershipRecord(boot_id)
        except OSError as exc:
            self.ignored = f"cannot read {path}: {exc.strerror}"
            return OwnershipRecord(boot_id)
        try:
            record = OwnershipRecord.from_json(text)
        except ValueError as exc:
            self.ignored = f"{path} is not an ownership record ({exc}); ignoring it"
            return OwnershipRecord(boot_id)
        if record.boot_id != boot_id:
            self.ignored = (
                f"{path} is from an earlier boot ({record.boot_id}, now {boot_id}); ignoring it"
            )
            return OwnershipRecord(boot_id)
        return record

    def save(self, record: OwnershipRecord) -> None:
        """Write ``record`` atomically (temp file, fsync, rename); creates ``run_dir``."""
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                f.write(record.to_json())
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the record (reactor owns no kdamond any more)."""
        self.path.unlink(missing_ok=True)


def owned_indices(record: OwnershipRecord, status: DamonSysfsStatus) -> frozenset[int]:
    """Indices of existing kdamonds that are reactor's: listed, and at the recorded pid.

    A listed kdamond that is off (pid -1) is still reactor's: a vaddr kdamond stops by
    itself when its targets exit, and nobody can restart it without getting a new pid,
    which would no longer match the record.
    """
    return frozenset(
        k.index
        for k in status.kdamonds
        if (recorded := record.pid_of(k.index)) is not None
        and (recorded == k.pid or (k.pid == -1 and k.state == "off"))
    )


def foreign_kdamonds(record: OwnershipRecord, status: DamonSysfsStatus) -> tuple[KdamondInfo, ...]:
    """Existing kdamonds that are not reactor's (see :func:`owned_indices`)."""
    mine = owned_indices(record, status)
    return tuple(k for k in status.kdamonds if k.index not in mine)


def describe_foreign(foreign: Iterable[KdamondInfo], record: OwnershipRecord) -> str:
    """Name each foreign kdamond, its pid, and why it is not reactor's."""
    parts = []
    for k in foreign:
        recorded = record.pid_of(k.index)
        why = (
            "not in reactor's ownership record"
            if recorded is None
            else f"its pid is {k.pid}, reactor recorded {recorded}: someone else restarted it"
        )
        parts.append(
            f"kdamond {k.index} (state {k.state}, pid {k.pid}, ops {k.operations or '?'}: {why})"
        )
    return "; ".join(parts)


class ForeignKdamond(UnsafeWrite):
    """A write that would touch a kdamond reactor does not own was refused.

    ``foreign`` lists those kdamonds (index, state, pid, ops); the message says what the
    user can do.
    """

    def __init__(
        self, path: str, action: str, foreign: Sequence[KdamondInfo], record: OwnershipRecord
    ) -> None:
        self.foreign = tuple(foreign)
        reason = (
            f"{action} would touch DAMON kdamonds reactor does not own: "
            f"{describe_foreign(self.foreign, record)}. reactor never writes to another "
            "user's kdamond (a write to nr_kdamonds would reset it). To let reactor use "
            "DAMON, stop that user (the tool or kernel module that started it) so that "
            "nr_kdamonds is 0, or set reactor.backend to native (auto falls back to it)"
        )
        super().__init__(path, reason)
