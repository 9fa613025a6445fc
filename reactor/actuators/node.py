"""Node-wide actions: per-node proactive reclaim and compaction. Off unless enabled.

These change the whole machine, not one process or cgroup, so the actuator refuses every
action (:class:`~reactor.actuators.base.RefusedAction`, dry-run included) unless it was
built with ``allow_node_wide=True``, which operators set in config. On the development
and CI machines they run only inside the qemu guest; the unit tests drive them on a
FakeKernelFS.

- Reclaim: ``/sys/devices/system/node/nodeN/reclaim`` (write-only; takes a byte count).
  Written in pieces of at most ``chunk_bytes`` (64 MiB) in worker threads, the deadline
  checked between pieces; EAGAIN means the kernel reclaimed less than that piece asked,
  and the actuator stops there. Without swap only file pages can go (16 MiB took 12 ms
  and stole 4069 file pages here, host-capabilities.md §2). Measured from the node's
  meminfo (MemUsed and FilePages before and after) and /proc/vmstat
  ``pgsteal_proactive`` (pages).
- Compaction: ``/sys/devices/system/node/nodeN/compact`` for one node (65–81 ms here) or
  ``/proc/sys/vm/compact_memory`` for all of them (149–200 ms); one write of ``1``, which
  cannot be chunked. Measured from /proc/buddyinfo (free blocks of order 9 and above,
  i.e. free 2 MiB blocks, before and after) and /proc/vmstat ``pgmigrate_success`` (pages
  moved) and ``compact_*`` deltas.
"""

from __future__ import annotations

import errno as errno_mod
from dataclasses import replace
from functools import partial

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
from reactor.errors import KernelInterfaceError, UnsupportedKernel
from reactor.kernelfs import KernelFS
from reactor.signals.fragmentation import parse_buddyinfo
from reactor.signals.tiers import NodeMeminfo, parse_node_meminfo
from reactor.signals.vmstat import parse_vmstat

__all__ = ("COMPACT_ALL", "HUGE_ORDER", "NodeActuator", "compact_path", "reclaim_path")

COMPACT_ALL = "/proc/sys/vm/compact_memory"
#: Order of a PMD huge page (2 MiB of 4 KiB pages): the blocks compaction is for.
HUGE_ORDER = 9
PAGE_SIZE = 4096
NODE_ROOT = "/sys/devices/system/node"
_VMSTAT_COMPACT = (
    "pgmigrate_success",
    "pgmigrate_fail",
    "compact_migrate_scanned",
    "compact_free_scanned",
)


def reclaim_path(node: int) -> str:
    """The per-node proactive reclaim file of ``node``."""
    return f"{NODE_ROOT}/node{node}/reclaim"


def compact_path(node: int | None) -> str:
    """The compaction trigger of ``node`` (None: every node)."""
    return COMPACT_ALL if node is None else f"{NODE_ROOT}/node{node}/compact"


class NodeActuator(Actuator):
    """Node-wide reclaim and compaction, refused unless ``allow_node_wide`` is True."""

    def __init__(
        self, fs: KernelFS, *, allow_node_wide: bool = False, limits: Limits | None = None
    ) -> None:
        super().__init__(limits, logger_name="reactor.actuators.node")
        self.fs = fs
        self.allow_node_wide = allow_node_wide

    async def reclaim(self, node: int, nbytes: int, *, reason: str = "") -> Outcome:
        """Reclaim ``nbytes`` from NUMA node ``node``."""
        return await self.apply(
            Action("node_reclaim", node, nbytes=nbytes, node=node, reason=reason)
        )

    async def compact(self, node: int | None = None, *, reason: str = "") -> Outcome:
        """Compact the memory of ``node`` (None: every node)."""
        target: int | str = "all" if node is None else node
        return await self.apply(Action("compact", target, node=node, reason=reason))

    async def apply(self, action: Action) -> Outcome:
        """Apply a ``node_reclaim`` or ``compact`` action (see module docs)."""
        if action.kind not in ("node_reclaim", "compact"):
            raise RefusedAction(str(action.target), f"not a node-wide action: {action.kind!r}")
        what = "every node" if action.node is None else f"node {action.node}"
        if not self.allow_node_wide:
            raise RefusedAction(
                what,
                f"{action.kind} acts on the whole machine and is off by default; the operator "
                "enables it in config (allow_node_wide=True)",
            )
        if action.kind == "node_reclaim" and action.node is None:
            raise RefusedAction(what, "node_reclaim needs a node number")
        if action.kind == "node_reclaim":
            assert action.node is not None
            path = reclaim_path(action.node)
        else:
            path = compact_path(action.node)
        if not self.fs.exists(path):
            raise UnsupportedKernel(f"{path} (for {what})", None)
        key = f"node:{what}"
        t0 = anyio.current_time()
        start = Outcome(
            kind=action.kind,
            target=what,
            status="skipped",
            requested_bytes=action.requested_bytes,
            dry_run=self.limits.dry_run,
            reason=action.reason,
        )
        async with self._slot(key).lock:
            if action.kind == "node_reclaim":
                outcome = await self._reclaim(path, key, action.node or 0, start)
            else:
                outcome = await self._compact(path, key, action.node, start)
        return self._report(replace(outcome, duration_s=anyio.current_time() - t0))

    # -- reclaim -----------------------------------------------------------------------------

    async def _reclaim(self, path: str, key: str, node: int, start: Outcome) -> Outcome:
        before = self._node_meminfo(node)
        steal_before = self._vmstat().get("pgsteal_proactive", 0)
        start = replace(start, usage_before_bytes=before.mem_used_bytes)
        budget, why = self._budget(start.requested_bytes)
        if budget <= 0:
            return replace(start, skipped=why or "nothing requested")
        full, rest = divmod(budget, self.limits.chunk_bytes)
        chunks = [self.limits.chunk_bytes] * full + ([rest] if rest else [])
        self._charge(budget)
        if self.limits.dry_run:
            return replace(
                start,
                status="dry_run",
                skipped=why,
                measured=frozen({"planned_writes": len(chunks)}),
            )
        applied = sent = 0
        notes: list[str] = []
        errors: list[str] = []
        with anyio.move_on_after(self.limits.deadline_s) as scope:
            for chunk in chunks:
                sent += chunk
                try:
                    await self._blocking(key, partial(self.fs.write_text, path, str(chunk)))
                except KernelInterfaceError as exc:
                    if exc.errno == errno_mod.EAGAIN:
                        notes.append(
                            f"the kernel reclaimed less than the {chunk} bytes asked (EAGAIN); "
                            "stopped"
                        )
                    else:
                        errors.append(str(exc))
                    break
                applied += chunk
        if scope.cancelled_caught:
            errors.append(f"deadline of {self.limits.deadline_s:g} s reached")
        after = self._node_meminfo(node)
        steal = self._vmstat().get("pgsteal_proactive", 0) - steal_before
        file_before = before.bytes_by_key.get("FilePages", 0)
        file_after = after.bytes_by_key.get("FilePages", 0)
        status: OutcomeStatus = "applied"
        if errors and applied == 0:
            status = "failed"
        elif errors or applied < start.requested_bytes:
            status = "partial"
        return replace(
            start,
            status=status,
            skipped=why,
            issued_bytes=sent,
            applied_bytes=applied,
            usage_after_bytes=after.mem_used_bytes,
            file_cache_delta_bytes=file_after - file_before,
            measured=frozen(
                {
                    "writes": len(chunks),
                    "pgsteal_proactive_pages": steal,
                    "mem_free_delta_bytes": after.mem_free_bytes - before.mem_free_bytes,
                }
            ),
            notes=tuple(notes),
            errors=tuple(errors),
        )

    # -- compaction ----------------------------------------------------------------------------

    async def _compact(self, path: str, key: str, node: int | None, start: Outcome) -> Outcome:
        huge_before = self._free_huge_blocks(node)
        vm_before = self._vmstat()
        measures = {"free_huge_blocks_before": huge_before}
        if self.limits.dry_run:
            return replace(start, status="dry_run", measured=frozen(measures))
        errors: list[str] = []
        with anyio.move_on_after(self.limits.deadline_s) as scope:
            try:
                await self._blocking(key, partial(self.fs.write_text, path, "1"))
            except KernelInterfaceError as exc:
                errors.append(str(exc))
        if scope.cancelled_caught:
            errors.append(f"deadline of {self.limits.deadline_s:g} s reached")
        vm_after = self._vmstat()
        measures["free_huge_blocks_after"] = self._free_huge_blocks(node)
        for name in _VMSTAT_COMPACT:
            measures[f"{name}_delta"] = vm_after.get(name, 0) - vm_before.get(name, 0)
        return replace(
            start,
            status="failed" if errors else "applied",
            pages_moved=measures["pgmigrate_success_delta"],
            measured=frozen(measures),
            errors=tuple(errors),
        )

    # -- readings ------------------------------------------------------------------------------

    def _node_meminfo(self, node: int) -> NodeMeminfo:
        path = f"{NODE_ROOT}/node{node}/meminfo"
        return parse_node_meminfo(self.fs.read_text(path), path, node)

    def _vmstat(self) -> dict[str, int]:
        return dict(parse_vmstat(self.fs.read_text("/proc/vmstat"), "/proc/vmstat"))

    def _free_huge_blocks(self, node: int | None) -> int:
        """Free blocks of order HUGE_ORDER or more, counted in 2 MiB units."""
        buddy = parse_buddyinfo(self.fs.read_text("/proc/buddyinfo"), "/proc/buddyinfo")
        total = 0
        for zone in buddy.zones:
            if node is not None and zone.node != node:
                continue
            for order, blocks in enumerate(zone.free_blocks):
                if order >= HUGE_ORDER:
                    total += blocks << (order - HUGE_ORDER)
        return total
