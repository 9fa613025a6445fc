"""Proactive reclaim of a memory cgroup: v2 ``memory.reclaim``, v1 by a lowered limit.

cgroup v2 (Linux 5.19+): the actuator writes the byte count to ``memory.reclaim`` in
pieces of at most ``chunk_bytes`` (64 MiB), each in a worker thread, with the action's
deadline checked between pieces. EAGAIN means the kernel reclaimed less than that piece
asked (nothing more is easy to take): the actuator stops there and says so.

cgroup v1 has no reclaim file (this host: the memory controller is on v1 only,
host-capabilities.md §3). The actuator lowers ``memory.limit_in_bytes`` to
``usage - piece`` and puts the original limit back right after each piece: the kernel
reclaims inside the write (it sets the new limit only once usage is under it, and
answers EBUSY when it cannot get there), so the cgroup's own allocations see the lower
limit only for the duration of one write. Following the take-over rules (style practice
7): the original limit is recorded when the action starts; it is re-read before every
write, and if someone else changed it meanwhile the new value becomes the one to restore;
the restore also runs in ``finally`` under a shielded ``move_on_after``, so a cancelled
or timed-out action never leaves the limit lowered. ``memory.force_empty`` was rejected:
it reclaims everything the group has (it cannot be asked for N bytes) and is refused
while tasks remain in the group. The residual risk of the v1 method is an allocation
burst inside the group during the write when its memory cannot be reclaimed (anonymous
memory without swap): the group may then hit its (briefly lowered) limit; keep pieces
small where that matters.

Measured: usage (``memory.current`` or ``memory.usage_in_bytes``) before and after, and
the file/anonymous deltas from ``memory.stat``. A cgroup that vanishes (ENOENT, ENODEV,
or a new cgroup at the same path, seen as a new inode: identity is the cgroup id) is a
``vanished`` outcome, not an error.
"""

from __future__ import annotations

import errno as errno_mod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal, TypeAlias, TypeVar

import anyio

from reactor.actuators.base import (
    Action,
    Actuator,
    Limits,
    Outcome,
    OutcomeStatus,
    RefusedAction,
    frozen,
)
from reactor.errors import KernelInterfaceError, TargetVanished, UnsupportedKernel
from reactor.kernelfs import KernelFS, normalize_path
from reactor.signals.cgroup import parse_cgroup_int, parse_limit, parse_memory_stat

__all__ = ("CgroupReclaimer", "CgroupVersion")

CgroupVersion: TypeAlias = Literal["v1", "v2"]
PAGE_SIZE = 4096
_T = TypeVar("_T")
_GONE = frozenset({errno_mod.ENOENT, errno_mod.ENODEV})

#: memory.stat keys (file pages, anonymous pages) per version; v1's total_* include
#: descendants as v2's counters do.
_STAT_KEYS: dict[str, tuple[str, str]] = {
    "v2": ("file", "anon"),
    "v1": ("total_cache", "total_rss"),
}
_USAGE = {"v2": "memory.current", "v1": "memory.usage_in_bytes"}


@dataclass
class _Run:
    """Progress of one reclaim action."""

    applied_bytes: int = 0
    sent_bytes: int = 0
    writes: int = 0
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    vanished: bool = False


class CgroupReclaimer(Actuator):
    """Reclaim N bytes from a memory cgroup and measure how much its usage fell.

    ``restore_timeout_s`` bounds the shielded restore of a v1 limit after a cancelled
    or failed action.
    """

    def __init__(
        self, fs: KernelFS, *, limits: Limits | None = None, restore_timeout_s: float = 5.0
    ) -> None:
        super().__init__(limits, logger_name="reactor.actuators.cgroup")
        self.fs = fs
        self.restore_timeout_s = restore_timeout_s

    async def reclaim(self, cgroup: str, nbytes: int, *, reason: str = "") -> Outcome:
        """Reclaim ``nbytes`` from the cgroup directory ``cgroup`` (a kernel path)."""
        return await self.apply(Action("cgroup_reclaim", cgroup, nbytes=nbytes, reason=reason))

    async def apply(self, action: Action) -> Outcome:
        """Apply a ``cgroup_reclaim`` action (see module docs)."""
        if action.kind != "cgroup_reclaim" or not isinstance(action.target, str):
            raise RefusedAction(str(action.target), "cgroup_reclaim needs a cgroup path")
        path = normalize_path(action.target)
        if not path.startswith("/sys/fs/cgroup/"):
            raise RefusedAction(path, "not a cgroup directory under /sys/fs/cgroup")
        key = f"cgroup:{path}"
        t0 = anyio.current_time()
        start = Outcome(
            kind="cgroup_reclaim",
            target=path,
            status="skipped",
            requested_bytes=action.requested_bytes,
            dry_run=self.limits.dry_run,
            reason=action.reason,
        )
        async with self._slot(key).lock:
            try:
                outcome = await self._reclaim(path, key, start)
            except TargetVanished:
                self.forget(key)
                outcome = replace(start, status="vanished", skipped="cgroup vanished")
        return self._report(replace(outcome, duration_s=anyio.current_time() - t0))

    # -- one action ------------------------------------------------------------------------

    async def _reclaim(self, path: str, key: str, start: Outcome) -> Outcome:
        version = self._version(path)
        inode = self._read(path, lambda: self.fs.inode(path))
        usage_before, stat_before = self._measure(path, version)
        start = replace(start, usage_before_bytes=usage_before)
        budget, why = self._budget(start.requested_bytes)
        if budget <= 0:
            return replace(start, skipped=why or "nothing requested")
        chunks = _chunks(budget, self.limits.chunk_bytes)
        self._charge(budget)
        measures = {"planned_writes": len(chunks), "version": 2 if version == "v2" else 1}
        if self.limits.dry_run:
            return replace(start, status="dry_run", skipped=why, measured=frozen(measures))
        run = _Run()
        if version == "v2":
            await self._v2(path, key, chunks, run)
        else:
            await self._v1(path, key, chunks, run)
        if not run.vanished and self._read(path, lambda: self.fs.inode(path)) != inode:
            run.vanished = True
        if run.vanished:
            self.forget(key)
            return replace(
                start,
                status="vanished",
                issued_bytes=run.sent_bytes,
                applied_bytes=run.applied_bytes,
                notes=tuple(run.notes),
                errors=tuple(run.errors),
            )
        usage_after, stat_after = self._measure(path, version)
        file_key, anon_key = _STAT_KEYS[version]
        measures |= {
            "writes": run.writes,
            "anon_delta_bytes": stat_after.get(anon_key, 0) - stat_before.get(anon_key, 0),
        }
        return replace(
            start,
            status=_status(run, budget, why),
            skipped=why,
            issued_bytes=run.sent_bytes,
            applied_bytes=run.applied_bytes,
            usage_after_bytes=usage_after,
            file_cache_delta_bytes=stat_after.get(file_key, 0) - stat_before.get(file_key, 0),
            measured=frozen(measures),
            notes=tuple(run.notes),
            errors=tuple(run.errors),
        )

    # -- v2 ----------------------------------------------------------------------------------

    async def _v2(self, path: str, key: str, chunks: list[int], run: _Run) -> None:
        file = f"{path}/memory.reclaim"
        with anyio.move_on_after(self.limits.deadline_s) as scope:
            for chunk in chunks:
                run.sent_bytes += chunk
                run.writes += 1
                try:
                    await self._blocking(key, partial(self._write, file, str(chunk)))
                except TargetVanished:
                    run.vanished = True
                    return
                except KernelInterfaceError as exc:
                    if exc.errno == errno_mod.EAGAIN:
                        run.notes.append(
                            f"the kernel reclaimed less than the {chunk} bytes asked in write "
                            f"{run.writes} (EAGAIN); stopped"
                        )
                    else:
                        run.errors.append(str(exc))
                    return
                run.applied_bytes += chunk
        if scope.cancelled_caught:
            run.errors.append(f"deadline of {self.limits.deadline_s:g} s reached")

    # -- v1 ----------------------------------------------------------------------------------

    async def _v1(self, path: str, key: str, chunks: list[int], run: _Run) -> None:
        limit_file = f"{path}/memory.limit_in_bytes"
        original = self._read_limit(limit_file)
        lowered: int | None = None  # the value we wrote and have not yet restored
        try:
            with anyio.move_on_after(self.limits.deadline_s) as scope:
                for chunk in chunks:
                    current = self._read_limit(limit_file)
                    if current != original:
                        run.notes.append(
                            f"memory.limit_in_bytes changed by someone else from {original} "
                            f"to {current}; that value is the one restored"
                        )
                        original = current
                    usage = self._read_int(f"{path}/memory.usage_in_bytes")
                    target = (usage - chunk) // PAGE_SIZE * PAGE_SIZE
                    if target <= 0:
                        run.notes.append(f"usage {usage} bytes is not above {chunk}; stopped")
                        break
                    run.sent_bytes += chunk
                    run.writes += 1
                    lowered = target
                    done = await self._lower(limit_file, key, target, run)
                    lowered = await self._restore(limit_file, key, original, lowered, run)
                    if not done or lowered is not None:
                        break  # a failed restore is retried once more in finally
                    run.applied_bytes += chunk
            if scope.cancelled_caught:
                run.errors.append(f"deadline of {self.limits.deadline_s:g} s reached")
        finally:
            if lowered is not None:
                with anyio.move_on_after(self.restore_timeout_s, shield=True):
                    await self._restore(limit_file, key, original, lowered, run)

    async def _lower(self, limit_file: str, key: str, target: int, run: _Run) -> bool:
        """Write the lowered limit (the kernel reclaims inside the write); True on success."""
        try:
            await self._blocking(key, partial(self._write, limit_file, str(target)))
        except TargetVanished:
            run.vanished = True
            return False
        except KernelInterfaceError as exc:
            if exc.errno == errno_mod.EBUSY:
                run.notes.append(
                    f"the kernel could not reclaim the group down to {target} bytes (EBUSY); "
                    "stopped"
                )
            else:
                run.errors.append(str(exc))
            return False
        return True

    async def _restore(
        self, limit_file: str, key: str, original: int | None, lowered: int, run: _Run
    ) -> int | None:
        """Put the original limit back unless someone else changed it since our write.

        Returns None once restored (or nothing needs restoring), else ``lowered``.
        """
        try:
            current = self._read_limit(limit_file)
            if current != lowered:
                if current != original:
                    run.notes.append(
                        f"memory.limit_in_bytes is {current} (written by someone else while "
                        "reclaiming); left as it is"
                    )
                return None
            value = "-1" if original is None else str(original)
            await self._blocking(key, partial(self._write, limit_file, value))
        except TargetVanished:
            run.vanished = True
            return None
        except KernelInterfaceError as exc:
            run.errors.append(f"restoring memory.limit_in_bytes failed: {exc}")
            return lowered
        return None

    # -- reading and writing -----------------------------------------------------------------

    def _version(self, path: str) -> CgroupVersion:
        if not self.fs.is_dir(path):
            raise TargetVanished(path)
        if self.fs.exists(f"{path}/memory.reclaim"):
            return "v2"
        if self.fs.exists(f"{path}/memory.limit_in_bytes"):
            return "v1"
        if self.fs.exists(f"{path}/memory.current"):
            raise UnsupportedKernel("cgroup v2 memory.reclaim", "5.19")
        raise RefusedAction(path, "no memory controller files here (memory.current or v1 files)")

    def _measure(self, path: str, version: str) -> tuple[int, dict[str, int]]:
        usage = self._read_int(f"{path}/{_USAGE[version]}")
        stat_path = f"{path}/memory.stat"
        stat = self._read(
            stat_path, lambda: parse_memory_stat(self.fs.read_text(stat_path), stat_path)
        )
        return usage, dict(stat)

    def _read_int(self, file: str) -> int:
        return parse_cgroup_int(self._read(file, lambda: self.fs.read_text(file)), file)

    def _read_limit(self, file: str) -> int | None:
        """A v1 limit in bytes; None means no limit (restored by writing ``-1``)."""
        return parse_limit(self._read(file, lambda: self.fs.read_text(file)), file)

    def _read(self, path: str, func: Callable[[], _T]) -> _T:
        try:
            return func()
        except KernelInterfaceError as exc:
            if exc.errno in _GONE:
                raise TargetVanished(path) from exc
            raise

    def _write(self, file: str, value: str) -> None:
        self._read(file, lambda: self.fs.write_text(file, value))


def _chunks(total: int, chunk: int) -> list[int]:
    """``total`` as pieces of at most ``chunk`` bytes."""
    full, rest = divmod(total, chunk)
    return [chunk] * full + ([rest] if rest else [])


def _status(run: _Run, budget: int, cut: str | None) -> OutcomeStatus:
    if run.errors and run.applied_bytes == 0:
        return "failed"
    if run.errors or run.applied_bytes < budget or cut:
        return "partial"
    return "applied"
