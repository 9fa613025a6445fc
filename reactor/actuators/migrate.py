"""Moving a process's pages between NUMA nodes: ``move_pages`` and ``migrate_pages``.

``move_pages`` works on ranges: the actuator lists the pages of the requested ranges
that lie in mappings, asks the kernel where each one is (query mode: no node array),
moves the present ones to the destination in batches of at most ``chunk_bytes`` worth of
pages, and queries again; ``pages_moved`` counts pages that were elsewhere before and are
on the destination after, and ``measured`` holds the bytes per node before and after.
Pages already on the destination are passed too (the kernel leaves them, cheaply), so
the kernel's per-page answer is the record of the action.

``migrate_pages`` moves every page of the process from ``from_nodes`` to one node in a
single call (it cannot be chunked or cut short: a request larger than
``max_bytes_per_action`` is skipped with the reason). Its effect is measured from
``/proc/PID/numa_maps`` (bytes per node, about 10 ms per GiB to read).

A destination without memory is an error that names the node and the nodes that have
memory (:class:`NodeUnavailable`): the kernel answers ENODEV for move_pages and EINVAL
for migrate_pages (host-capabilities.md §2: this host has node 0 only). Query-mode calls
are reads, so a dry run makes them; it never moves anything. Pid 1, kernel threads and
reactor's own process are refused; a process that exits is a ``vanished`` outcome.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import anyio
import numpy as np
import numpy.typing as npt

from reactor.actuators._procfs import (
    Vma,
    classify,
    parse_numa_maps,
    parse_smaps,
)
from reactor.actuators._syscalls import (
    MPOL_MF_MOVE,
    MPOL_MF_MOVE_ALL,
    ProcessCalls,
    RealProcessCalls,
)
from reactor.actuators.base import (
    Action,
    Actuator,
    Limits,
    Outcome,
    OutcomeStatus,
    RefusedAction,
    Span,
    check_pid,
    frozen,
    read_proc,
    take_bytes,
)
from reactor.errors import KernelInterfaceError, TargetVanished
from reactor.kernelfs import KernelFS
from reactor.sampler.procfs import is_kernel_thread
from reactor.signals.tiers import parse_nodelist

__all__ = ("MigrateActuator", "NodeUnavailable", "memory_nodes")

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
HAS_MEMORY = "/sys/devices/system/node/has_memory"
ONLINE = "/sys/devices/system/node/online"


class NodeUnavailable(KernelInterfaceError):
    """A migration's destination is not a node with memory.

    ``node`` is the destination, ``nodes`` the nodes that have memory, ``errno`` the
    kernel's answer (ENODEV from move_pages, EINVAL from migrate_pages).
    """

    def __init__(self, call: str, node: int, nodes: Sequence[int], err: int) -> None:
        self.node = node
        self.nodes = tuple(nodes)
        have = ", ".join(str(n) for n in self.nodes) or "none found"
        super().__init__(
            call,
            f"node {node} has no memory on this machine (nodes with memory: {have})",
            errno=err,
        )


def memory_nodes(fs: KernelFS) -> tuple[int, ...]:
    """Nodes with memory (``has_memory``, or ``online`` on kernels without it)."""
    for path in (HAS_MEMORY, ONLINE):
        try:
            return parse_nodelist(fs.read_text(path), path)
        except KernelInterfaceError:
            continue
    return ()


def _pages_of(spans: Sequence[Span]) -> npt.NDArray[np.uint64]:
    """Page addresses covering ``spans`` (start rounded down, end up)."""
    parts = []
    for start, length in spans:
        lo = start - start % PAGE_SIZE
        hi = -(-(start + length) // PAGE_SIZE) * PAGE_SIZE
        parts.append(np.arange(lo, hi, PAGE_SIZE, dtype=np.uint64))
    if not parts:
        return np.zeros(0, dtype=np.uint64)
    return np.unique(np.concatenate(parts))


def _per_node(status: npt.NDArray[np.int32]) -> dict[int, int]:
    nodes, counts = np.unique(status[status >= 0], return_counts=True)
    return {int(n): int(c) for n, c in zip(nodes, counts, strict=True)}


class MigrateActuator(Actuator):
    """Move pages of other processes to a node, within limits, and count what moved.

    ``move_all`` uses MPOL_MF_MOVE_ALL (also pages shared with other processes; needs
    CAP_SYS_NICE) instead of MPOL_MF_MOVE (pages mapped only by the target).
    """

    def __init__(
        self,
        fs: KernelFS,
        *,
        calls: ProcessCalls | None = None,
        limits: Limits | None = None,
        move_all: bool = False,
    ) -> None:
        super().__init__(limits, logger_name="reactor.actuators.migrate")
        self.fs = fs
        self.calls: ProcessCalls = calls if calls is not None else RealProcessCalls()
        self.flags = MPOL_MF_MOVE_ALL if move_all else MPOL_MF_MOVE

    async def move_pages(
        self, pid: int, ranges: Sequence[Span], node: int, *, reason: str = ""
    ) -> Outcome:
        """Move the pages of ``(start, length)`` ranges of ``pid`` to ``node``."""
        return await self.apply(Action("move_pages", pid, tuple(ranges), node=node, reason=reason))

    async def migrate_pages(
        self, pid: int, node: int, from_nodes: Sequence[int] = (), *, reason: str = ""
    ) -> Outcome:
        """Move every page of ``pid`` on ``from_nodes`` (default: every other node with
        memory) to ``node``."""
        action = Action(
            "migrate_pages", pid, node=node, from_nodes=tuple(from_nodes), reason=reason
        )
        return await self.apply(action)

    async def apply(self, action: Action) -> Outcome:
        """Apply a ``move_pages`` or ``migrate_pages`` action (see module docs)."""
        if action.kind not in ("move_pages", "migrate_pages"):
            raise RefusedAction(str(action.target), f"not a migration: {action.kind!r}")
        if action.node is None:
            raise RefusedAction(str(action.target), f"{action.kind} needs a destination node")
        pid = check_pid(action.target, action.kind)
        key = f"pid:{pid}"
        t0 = anyio.current_time()
        start = Outcome(
            kind=action.kind,
            target=f"pid {pid}",
            status="skipped",
            requested_bytes=action.requested_bytes,
            dry_run=self.limits.dry_run,
            reason=action.reason,
        )
        async with self._slot(key).lock:
            try:
                if action.kind == "move_pages":
                    outcome = await self._move(action, pid, key, start)
                else:
                    outcome = await self._migrate(action, pid, key, start)
            except TargetVanished:
                self.forget(key)
                outcome = replace(start, status="vanished", skipped="target vanished")
        return self._report(replace(outcome, duration_s=anyio.current_time() - t0))

    # -- move_pages ------------------------------------------------------------------------

    async def _move(self, action: Action, pid: int, key: str, start: Outcome) -> Outcome:
        node = action.node
        assert node is not None
        vmas = await self._blocking(key, partial(self._vmas, pid))
        pieces, unmapped = classify(action.ranges, vmas)
        spans = [(p.start, p.length) for p in pieces]
        budget, why = self._budget(sum(n for _, n in spans))
        spans_kept, cut = take_bytes(spans, budget)
        skipped = [f"{unmapped} bytes lie in no mapping"] if unmapped else []
        if cut and why:
            skipped.append(why)
        pages = _pages_of(spans_kept)
        start = replace(start, skipped="; ".join(skipped) or None)
        if len(pages) == 0:
            return start
        batch = max(1, self.limits.chunk_bytes // PAGE_SIZE)
        before = await self._query(key, pid, pages, batch)
        present = pages[before >= 0]
        measures = {f"node{n}_before_bytes": c * PAGE_SIZE for n, c in _per_node(before).items()}
        measures["present_pages"] = len(present)
        self._charge(len(present) * PAGE_SIZE)
        if self.limits.dry_run:
            nodes = memory_nodes(self.fs)
            if node not in nodes:
                raise NodeUnavailable("move_pages", node, nodes, errno_mod.ENODEV)
            return replace(start, status="dry_run", measured=frozen(measures))
        if len(present) == 0:
            return replace(
                start, skipped="no page of the ranges is present", measured=frozen(measures)
            )
        errors = await self._send(key, pid, present, node, batch)
        after = await self._query(key, pid, pages, batch)
        measures |= {f"node{n}_after_bytes": c * PAGE_SIZE for n, c in _per_node(after).items()}
        moved = int(((before != node) & (after == node)).sum())
        status: OutcomeStatus = "partial" if errors or skipped else "applied"
        return replace(
            start,
            status=status,
            issued_bytes=len(present) * PAGE_SIZE,
            applied_bytes=int((after == node).sum()) * PAGE_SIZE,
            pages_moved=moved,
            measured=frozen(measures),
            errors=tuple(errors),
        )

    async def _query(
        self, key: str, pid: int, pages: npt.NDArray[np.uint64], batch: int
    ) -> npt.NDArray[np.int32]:
        """Node of every page (negative errno for pages not present), in batches."""
        out = []
        for i in range(0, len(pages), batch):
            call = partial(self.calls.move_pages, pid, pages[i : i + batch], None, 0)
            out.append(await self._blocking(key, call))
        return np.concatenate(out)

    async def _send(
        self, key: str, pid: int, pages: npt.NDArray[np.uint64], node: int, batch: int
    ) -> list[str]:
        errors: list[str] = []
        with anyio.move_on_after(self.limits.deadline_s) as scope:
            for i in range(0, len(pages), batch):
                call = partial(self.calls.move_pages, pid, pages[i : i + batch], node, self.flags)
                try:
                    await self._blocking(key, call)
                except KernelInterfaceError as exc:
                    if exc.errno in (errno_mod.ENODEV, errno_mod.EACCES):
                        raise NodeUnavailable(
                            "move_pages", node, memory_nodes(self.fs), exc.errno or 0
                        ) from exc
                    errors.append(f"pages {i}..{i + batch}: {exc}")
        if scope.cancelled_caught:
            errors.append(f"deadline of {self.limits.deadline_s:g} s reached")
        return errors

    def _vmas(self, pid: int) -> list[Vma]:
        self._check_kthread(pid)
        path = f"/proc/{pid}/smaps"
        return parse_smaps(read_proc(self.fs, path, pid), path)

    def _check_kthread(self, pid: int) -> None:
        path = f"/proc/{pid}/stat"
        if is_kernel_thread(read_proc(self.fs, path, pid), path):
            raise RefusedAction(f"pid {pid}", "it is a kernel thread (it has no user memory)")

    # -- migrate_pages ---------------------------------------------------------------------

    async def _migrate(self, action: Action, pid: int, key: str, start: Outcome) -> Outcome:
        node = action.node
        assert node is not None
        nodes = memory_nodes(self.fs)
        sources = action.from_nodes or tuple(n for n in nodes if n != node)
        before = await self._blocking(key, partial(self._numa, pid))
        measures = {f"node{n}_before_bytes": b for n, b in before.items()}
        movable = sum(b for n, b in before.items() if n in sources and n != node)
        budget, why = self._budget(movable)
        start = replace(start, requested_bytes=movable, measured=frozen(measures))
        if not sources:
            return replace(
                start, skipped=f"no source node: node {node} is the only node with memory"
            )
        if budget < movable:
            return replace(
                start,
                skipped=f"whole-process migration of {movable} bytes cannot be cut ({why}); "
                "use move_pages on ranges",
            )
        self._charge(movable)
        if self.limits.dry_run:
            if node not in nodes:
                raise NodeUnavailable("migrate_pages", node, nodes, errno_mod.EINVAL)
            return replace(start, status="dry_run")
        call = partial(self.calls.migrate_pages, pid, sources, [node])
        try:
            not_moved = await self._blocking(key, call)
        except KernelInterfaceError as exc:
            if exc.errno in (errno_mod.EINVAL, errno_mod.ENODEV):
                raise NodeUnavailable("migrate_pages", node, nodes, exc.errno or 0) from exc
            return replace(start, status="failed", errors=(str(exc),))
        after = await self._blocking(key, partial(self._numa, pid))
        measures |= {f"node{n}_after_bytes": b for n, b in after.items()}
        measures["not_moved_pages"] = not_moved
        gained = after.get(node, 0) - before.get(node, 0)
        return replace(
            start,
            status="partial" if not_moved else "applied",
            issued_bytes=movable,
            applied_bytes=max(0, movable - not_moved * PAGE_SIZE),
            pages_moved=max(0, gained) // PAGE_SIZE,
            measured=frozen(measures),
        )

    def _numa(self, pid: int) -> dict[int, int]:
        self._check_kthread(pid)
        path = f"/proc/{pid}/numa_maps"
        return parse_numa_maps(read_proc(self.fs, path, pid), path)
