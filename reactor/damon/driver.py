"""The async DAMON driver: lays out reactor's kdamonds, commits online, reads snapshots.

:class:`DamonDriver` is the only object in reactor that writes DAMON's sysfs. Every
write it makes

- targets a kdamond reactor owns (:mod:`reactor.damon.ownership`): the owner check is
  repeated before each write, against the kdamond's current pid, so a kdamond someone
  else restarted is never touched; ``nr_kdamonds`` is written only when it is 0 or every
  existing kdamond is reactor's, and otherwise :class:`ForeignKdamond` names the others;
- runs in a worker thread (``anyio.to_thread.run_sync``) through a per-driver
  ``CapacityLimiter(1)`` (one DAMON write at a time, as the kernel's sysfs lock would
  force anyway) under an ``anyio.fail_after`` deadline, because ``on``, ``off`` and
  ``update_schemes_tried_regions`` wait for the kdamond (the last one for a whole apply
  interval);
- fails as :class:`~reactor.damon.commands.DamonSysfsError` (path, value, errno and a
  sentence), :class:`~reactor.errors.UnsupportedKernel` (feature and release) or
  :class:`DamonTimeout`.

Cheap reads (state, pid, stats files: microseconds each) stay on the event loop.

Typical use (the runtime owns one driver per process)::

    driver = DamonDriver(RealKernelFS("/", allow_damon_writes=True), run_dir="/run/reactor")
    await driver.open()                      # boot id, ownership record, feature probe
    await driver.apply(config.damon)         # layout, stage, start (or commit if running)
    stats = await driver.update_schemes_stats(0)
    await driver.commit_quota_goals(0, {(0, 0): 4200})
    await driver.stop_all()
"""

from __future__ import annotations

import errno as E
import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import anyio
import anyio.to_thread
import structlog

from reactor.config.damon import DamonSection, Kdamond
from reactor.damon import paths
from reactor.damon.commands import DamonSysfsError, StateCommand, send_state, translate
from reactor.damon.features import KernelFeatures, command_feature, probe_features
from reactor.damon.memory import node_ram_ranges, read_system_ram
from reactor.damon.ownership import (
    ForeignKdamond,
    OwnershipRecord,
    OwnershipStore,
    foreign_kdamonds,
    owned_indices,
    read_boot_id,
)
from reactor.damon.probe import DamonSysfsStatus, read_damon_status
from reactor.damon.snapshot import (
    BUSY_READ_BUDGET_S,
    KdamondSnapshot,
    SchemeStats,
    TriedRegions,
    TunedIntervals,
    nr_schemes,
    read_effective_quota,
    read_int,
    read_kdamond_snapshot,
    read_scheme_stats,
    read_text,
    read_tried_regions,
    read_tuned_intervals,
)
from reactor.damon.sysfs import (
    NodeRanges,
    ObsoleteRemoval,
    Stager,
    check_kdamond,
    read_kdamond,
    read_nr_kdamonds,
    require_node_ram,
    without_obsolete_targets,
)
from reactor.errors import KernelInterfaceError, ReactorError
from reactor.kernelfs import KernelFS

__all__ = ("DamonDriver", "DamonTimeout")

_log = structlog.get_logger("reactor.damon")

T = TypeVar("T")

Ranges = Sequence[tuple[int, int]]


#: kernel stack frames kept in a log line (innermost first; the rest is the kdamond loop)
STACK_FRAMES = 12


def _frame(line: str) -> str:
    """``[<0>] damon_va_migrate+0x1d3/0x2c0`` -> ``damon_va_migrate``."""
    text = line.strip()
    if text.startswith("[<"):
        text = text.partition("] ")[2]
    return text.partition("+")[0].strip()


class DamonTimeout(KernelInterfaceError):
    """A DAMON write did not finish within its deadline (errno ETIMEDOUT)."""


def _ram_needs(kdamonds: Sequence[Kdamond]) -> tuple[bool, frozenset[int]]:
    """Whether some paddr target takes all System RAM, and which nodes' RAM others take."""
    system, nodes = False, set()
    for kd in kdamonds:
        for ctx in kd.contexts:
            if ctx.ops != "paddr":
                continue
            system |= not ctx.targets
            for t in ctx.targets:
                if t.regions:
                    continue
                if t.numa_node is None:
                    system = True
                else:
                    nodes.add(t.numa_node)
    return system, frozenset(nodes)


class DamonDriver:
    """Async facade over the DAMON sysfs core for the kdamonds reactor owns.

    ``fs`` must be built with ``allow_damon_writes=True`` (only for this driver, and only
    when the backend chose DAMON); ``run_dir`` holds the ownership record.
    ``command_timeout_s`` bounds a ``state`` command (EBUSY retries included) and
    ``stage_timeout_s`` a whole staging pass; ``update_schemes_tried_regions`` gets
    ``command_timeout_s`` plus three times the kdamond's longest apply interval.
    """

    def __init__(
        self,
        fs: KernelFS,
        *,
        run_dir: str,
        kernel_release: str | None = None,
        command_timeout_s: float = 5.0,
        stage_timeout_s: float = 10.0,
    ) -> None:
        if not (command_timeout_s > 0 and stage_timeout_s > 0):
            raise ValueError(
                f"expected positive timeouts, got command_timeout_s={command_timeout_s}, "
                f"stage_timeout_s={stage_timeout_s}"
            )
        self.fs = fs
        self.store = OwnershipStore(run_dir)
        self.kernel_release = kernel_release
        self.command_timeout_s = command_timeout_s
        self.stage_timeout_s = stage_timeout_s
        self._limiter = anyio.CapacityLimiter(1)
        #: Held by the worker thread for the whole job: a job abandoned at its deadline or
        #: at cancellation keeps running (and may hold the kernel's sysfs lock) after the
        #: limiter lets the next job in; the next job waits for it here.
        self._job = threading.Lock()
        #: the job holding ``_job`` (its ``what``) and when it began (monotonic), so a job
        #: left waiting on it can say what it waits for
        self._running: tuple[str, float] | None = None
        self._record: OwnershipRecord | None = None
        self._features: KernelFeatures | None = None
        self._models: dict[int, Kdamond] = {}
        #: kdamond index -> CPU seconds spent reading its tried regions (worker thread)
        self._read_cpu_s: dict[int, float] = {}
        #: kdamond index -> every input file's text as the last finished staging pass left
        #: it (Stager ``known``); dropped when a pass fails or nr_kdamonds is written
        self._written: dict[int, dict[str, str]] = {}

    # -- set-up and introspection ----------------------------------------------------------

    def read_cpu_s(self, k: int) -> float:
        """CPU seconds this driver has spent on kdamond ``k``'s tried regions, on the
        worker thread's own clock: the ``update_schemes_tried_regions`` command (the
        kernel removes the previous walk's region directories in the writer's context)
        and reading the new ones (a few sysfs files per region). What monitoring costs the
        daemon itself on the DAMON backend, beside the kdamond's sampling in the kernel."""
        return self._read_cpu_s.get(k, 0.0)

    def _metered(self, k: int, func: Callable[[], T]) -> Callable[[], T]:
        """``func``, its thread's CPU time added to :meth:`read_cpu_s` of ``k``."""

        def run() -> T:
            t0 = time.thread_time()
            try:
                return func()
            finally:
                self._read_cpu_s[k] = self.read_cpu_s(k) + time.thread_time() - t0

        return run

    async def open(self) -> None:
        """Read the boot id and the ownership record, and probe features (reads only)."""
        boot = read_boot_id(self.fs)
        self._record = self.store.load(boot)
        if self.store.ignored:
            _log.info("damon_ownership_record_ignored", reason=self.store.ignored)
        self._features = await self._thread(
            self._probe, timeout=self.stage_timeout_s, what=paths.ADMIN
        )

    def _probe(self) -> KernelFeatures:
        return probe_features(self.fs, self.kernel_release)

    @property
    def features(self) -> KernelFeatures:
        """The probed features (after :meth:`open`)."""
        if self._features is None:
            raise RuntimeError("DamonDriver.open() has not run")
        return self._features

    @property
    def opened(self) -> bool:
        """Whether :meth:`open` has run (its record and features are there)."""
        return self._record is not None and self._features is not None

    @property
    def record(self) -> OwnershipRecord:
        """The ownership record in use (after :meth:`open`)."""
        if self._record is None:
            raise RuntimeError("DamonDriver.open() has not run")
        return self._record

    def status(self) -> DamonSysfsStatus:
        """Every kdamond's index, state, pid and ops, read now."""
        return read_damon_status(self.fs)

    def owned(self) -> frozenset[int]:
        """Indices of existing kdamonds that are reactor's (index and pid match the record)."""
        return owned_indices(self.record, self.status())

    # -- the worker-thread seam --------------------------------------------------------------

    async def _thread(
        self, call: Callable[[], T], *, timeout: float, what: str, job: str | None = None
    ) -> T:
        """Run blocking ``call`` in a worker thread, one at a time, within ``timeout`` s.
        ``job`` says what the call does where ``what`` (the path errors name) does not.

        One at a time even across abandonment: a job cancelled or timed out here keeps
        running in its thread (a kernel write cannot be interrupted), so the next job
        first waits, within its own ``timeout``, for that thread to finish. Seen in the
        guest: a shutdown's restore ran beside an abandoned job and read EBUSY.
        """
        deadline = time.monotonic() + timeout

        def serialized() -> T:
            if not self._job.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise DamonTimeout(
                    what,
                    f"waited {timeout:g} s for an earlier, abandoned DAMON job to finish"
                    + self._describe_running(),
                    errno=E.ETIMEDOUT,
                )
            self._running = (job or what, time.monotonic())
            try:
                return call()
            finally:
                self._running = None
                self._job.release()

        try:
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(
                    serialized, limiter=self._limiter, abandon_on_cancel=True
                )
        except TimeoutError:
            raise DamonTimeout(
                what,
                f"did not finish within {timeout:g} s (the worker thread was abandoned; the "
                "kdamond may still be busy)" + self._describe_running(),
                errno=E.ETIMEDOUT,
            ) from None

    def _describe_running(self) -> str:
        running = self._running
        if running is None:
            return ""
        return f" (in flight: {running[0]}, for {time.monotonic() - running[1]:.1f} s)"

    async def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for a job abandoned earlier (cancelled at a signal, or
        past its deadline, while the kernel still held its write) to finish in its
        thread (``damon_job_awaited`` says what for, and how long it took). Raises
        :class:`DamonTimeout`, naming the job and how long it has run, when it is still
        running then.

        A shutdown settles first, so its stop gets its own time rather than spending it
        waiting on a write the kernel has not answered (seen under TCG: a tiering
        kdamond left a snapshot's command unanswered for more than 10 s).
        """
        running = self._running
        t0 = time.monotonic()

        def wait() -> bool:
            if not self._job.acquire(timeout=timeout):
                return False
            self._job.release()
            return True

        if not await anyio.to_thread.run_sync(wait, abandon_on_cancel=True):
            raise DamonTimeout(
                paths.KDAMONDS,
                f"an earlier DAMON job did not finish within {timeout:g} s"
                + self._describe_running()
                + "; the kernel has not answered its write",
                errno=E.ETIMEDOUT,
            )
        if running is not None:
            _log.info(
                "damon_job_awaited",
                job=running[0],
                running_s=round(t0 - running[1], 3),
                waited_s=round(time.monotonic() - t0, 3),
            )

    def kdamond_task(self, k: int) -> dict[str, object]:
        """Where reactor's kdamond ``k`` is in the kernel, for the log line when it does
        not answer: ``kdamond_pid`` (from the ownership record, since DAMON's sysfs may be
        locked), ``kdamond_sched`` (the scheduler state letter, /proc/PID/stat),
        ``kdamond_wchan`` and ``kdamond_stack`` (its kernel stack, innermost first,
        function names only; root only). A field that cannot be read is left out; none
        raises."""
        pid = self._record.pid_of(k) if self._record is not None else None
        if pid is None or pid <= 0:
            return {}
        out: dict[str, object] = {"kdamond_pid": pid}
        base = f"/proc/{pid}"
        try:
            stat = self.fs.read_text(f"{base}/stat")
            comm, _, rest = stat.partition("(")[2].rpartition(")")
            state = rest.split()[0]
        except (KernelInterfaceError, IndexError):
            return out  # gone (or not a process this filesystem shows)
        if not comm.startswith("kdamond"):
            return out  # the kdamond ended and its pid went to another task
        out["kdamond_sched"] = state
        wchan = self._read_or_empty(f"{base}/wchan").strip()
        if wchan not in ("", "0"):
            out["kdamond_wchan"] = wchan
        frames = [
            f for line in self._read_or_empty(f"{base}/stack").splitlines() if (f := _frame(line))
        ]
        if frames:
            out["kdamond_stack"] = frames[:STACK_FRAMES]
        return out

    def _read_or_empty(self, path: str) -> str:
        try:
            return self.fs.read_text(path)
        except KernelInterfaceError:
            return ""

    # -- ownership guard ---------------------------------------------------------------------

    def _require_own(self, k: int, action: str) -> None:
        status = self.status()
        if any(info.index == k for info in status.kdamonds) and k in owned_indices(
            self.record, status
        ):
            return
        foreign = tuple(info for info in status.kdamonds if info.index == k)
        if foreign and foreign[0].state == "unknown":
            # state and pid stayed EBUSY: whose it is cannot be told, so nothing is
            # written; and it is not called foreign (it may well be reactor's own)
            raise DamonSysfsError(
                paths.state_file(k),
                f"{action}: cannot tell whether kdamond {k} is still reactor's: its state "
                f"and pid stayed unreadable for {BUSY_READ_BUDGET_S:g} s (DAMON's sysfs lock was "
                "held, by another DAMON user or a long command); nothing was written, try "
                "again",
                errno=E.EBUSY,
                value=None,
                kdamond=k,
            )
        if not foreign:
            raise KernelInterfaceError(
                paths.kdamond_dir(k),
                f"{action}: kdamond {k} does not exist ({len(status.kdamonds)} kdamond(s))",
                errno=E.ENOENT,
            )
        raise ForeignKdamond(paths.kdamond_dir(k), action, foreign, self.record)

    def _guarded(self, k: int, action: str, call: Callable[[], T]) -> Callable[[], T]:
        """``call`` preceded by the ownership check, both in the same worker-thread job.

        The check reads ``state`` and ``pid``, which the kernel answers with EBUSY while
        its DAMON sysfs lock is held (a long ``update_schemes_tried_regions`` holds it);
        run on the event loop beside such a job, a pid read as -1 would make reactor's own
        kdamond look foreign. Under the driver's limiter the check never overlaps reactor's
        own jobs.
        """

        def run() -> T:
            self._require_own(k, action)
            return call()

        return run

    def _save(self, record: OwnershipRecord) -> None:
        self._record = record
        self.store.save(record)

    # -- layout ----------------------------------------------------------------------------

    async def apply(
        self,
        section: DamonSection,
        *,
        paddr_ram: Ranges | None = None,
        node_ram: NodeRanges | None = None,
    ) -> None:
        """Make reactor's kdamonds run ``section``: lay out, stage, start or commit.

        If the number of kdamonds changes, reactor's running kdamonds are stopped,
        ``nr_kdamonds`` is written, and all of them are staged and started again (logged as
        ``damon_kdamonds_resized``); otherwise each running kdamond gets an online
        ``commit`` (:meth:`commit`, obsolete targets included) and each stopped one is
        started, without its obsolete targets (there is nothing to remove them from, and
        ``on`` would monitor them). Refused with :class:`ForeignKdamond` if any existing
        kdamond is not reactor's. ``paddr_ram`` gives the regions of paddr targets without
        any (default: every System RAM range of /proc/iomem), ``node_ram`` those of paddr
        targets with a ``numa_node`` (default: the node's memory blocks cut to System RAM,
        :func:`~reactor.damon.memory.node_ram_ranges`).
        """
        features = self.features
        status = self.status()
        foreign = foreign_kdamonds(self.record, status)
        if foreign:
            raise ForeignKdamond(
                paths.NR_KDAMONDS,
                f"laying out {len(section.kdamonds)} kdamond(s)",
                foreign,
                self.record,
            )
        for i, kd in enumerate(section.kdamonds):
            check_kdamond(kd, features, index=i)
        ram, nodes = self._ram(section.kdamonds, paddr_ram, node_ram)
        n = len(section.kdamonds)
        if len(status.kdamonds) != n:
            await self._resize(status, n)
        for k, kd in enumerate(section.kdamonds):
            if read_text(self.fs, paths.state_file(k)).strip() == "on":
                await self.commit(k, kd, paddr_ram=ram, node_ram=nodes)
                continue
            fresh, removal = without_obsolete_targets(kd)
            if removal is not None:
                self._log_removal(k, removal, "kdamond not running: obsolete targets left out")
            await self.stage(k, fresh, paddr_ram=ram, node_ram=nodes)
            await self.start(k)

    def _ram(
        self, kdamonds: Sequence[Kdamond], paddr_ram: Ranges | None, node_ram: NodeRanges | None
    ) -> tuple[Ranges, NodeRanges]:
        """System RAM and per-node RAM ranges for the paddr targets without regions (read
        from the filesystem unless given)."""
        system, nodes = _ram_needs(kdamonds)
        ram: Ranges = ()
        if system:
            ram = paddr_ram if paddr_ram is not None else read_system_ram(self.fs)
        given = dict(node_ram or {})
        per_node: dict[int, Ranges] = {}
        for n in sorted(nodes):
            per_node[n] = given[n] if n in given else self._node_ram(n)
        for n in nodes:
            require_node_ram(per_node, n)  # before anything is written
        return ram, per_node

    def _node_ram(self, node: int) -> Ranges:
        try:
            return node_ram_ranges(self.fs, node)
        except KernelInterfaceError as exc:
            raise KernelInterfaceError(
                exc.path,
                f"a paddr target with numa_node {node} needs that node's memory blocks, and "
                f"they cannot be read ({exc}); is there a NUMA node {node} "
                "(/sys/devices/system/node/online)?",
                errno=exc.errno,
            ) from exc

    async def _resize(self, status: DamonSysfsStatus, n: int) -> None:
        running = [info.index for info in status.kdamonds if info.state == "on"]
        for k in running:
            await self.stop(k)
        _log.info(
            "damon_kdamonds_resized",
            old=len(status.kdamonds),
            new=n,
            stopped=running,
            reason="nr_kdamonds can change only while no kdamond runs; restarting them",
        )
        await self._thread(
            functools.partial(self._write_nr_kdamonds, n),
            timeout=self.command_timeout_s,
            what=paths.NR_KDAMONDS,
        )
        self._models.clear()
        self._written.clear()
        record = OwnershipRecord(self.record.boot_id)
        for k in range(n):
            record = record.with_pid(k, -1)
        self._save(record)

    def _write_nr_kdamonds(self, n: int) -> None:
        # Re-checked in the thread, right before the write: nothing foreign appeared.
        status = read_damon_status(self.fs)
        foreign = foreign_kdamonds(self.record, status)
        if foreign:
            raise ForeignKdamond(
                paths.NR_KDAMONDS, f"writing nr_kdamonds = {n}", foreign, self.record
            )
        if read_nr_kdamonds(self.fs) == n:
            return
        try:
            self.fs.write_text(paths.NR_KDAMONDS, str(n))
        except KernelInterfaceError as exc:
            raise translate(self.fs, exc, str(n)) from exc

    async def stage(
        self,
        k: int,
        kd: Kdamond,
        *,
        paddr_ram: Ranges | None = None,
        node_ram: NodeRanges | None = None,
    ) -> None:
        """Write ``kd`` into reactor's kdamond ``k`` (staged only: start or commit applies it).

        paddr targets without regions get ``paddr_ram`` (or ``node_ram[n]`` with
        ``numa_node`` n); ranges not given are read as :meth:`apply` reads them.
        """
        ram, nodes = self._ram((kd,), paddr_ram, node_ram)
        # what this driver staged last, if the pass finished: unchanged files are not
        # written again (Stager); after a failed or abandoned pass, every file is
        stager = Stager(self.fs, self.features, known=self._written.pop(k, None))
        await self._thread(
            self._guarded(
                k,
                f"staging kdamond {k}",
                functools.partial(stager.stage_kdamond, k, kd, ram, nodes),
            ),
            timeout=self.stage_timeout_s,
            what=paths.kdamond_dir(k),
        )
        self._models[k] = kd
        self._written[k] = stager.written
        _log.debug("damon_staged", kdamond=k, writes=stager.writes)
        if stager.resized and "table" in self.features.evidence.values():
            # reactor's own staged directories now show which files this kernel has; a
            # pass that made no directory (a quota commit) shows nothing new
            self._features = probe_features(self.fs, self.kernel_release)

    def read_back(self, k: int, *, outputs: bool = False) -> Kdamond:
        """Kdamond ``k`` as its files hold it (see :func:`reactor.damon.sysfs.read_kdamond`)."""
        return read_kdamond(self.fs, k, outputs=outputs)

    async def read(self, k: int) -> Kdamond:
        """:meth:`read_back` in the driver's worker thread, one job at a time with its
        commands (a state command in flight holds the kernel's sysfs lock)."""
        return await self._thread(
            functools.partial(self.read_back, k),
            timeout=self.command_timeout_s,
            what=paths.kdamond_dir(k),
        )

    async def staged(self, k: int) -> Kdamond:
        """Kdamond ``k`` as reactor staged it last, without reading its files (:meth:`read`
        when this driver has not staged it). The two agree: every write to an input file
        of reactor's kdamonds is this driver's (:meth:`stage` keeps the model, and
        :meth:`commit_quota_goals` the goals' current values), and the kernel rewrites
        only the intervals files, on ``update_tuned_intervals``, which :meth:`commit`
        handles. A policy's quota commit each tick starts from this: a read-back was
        about 90 files and a model validation per commit."""
        kd = self._models.get(k)
        return kd if kd is not None else await self.read(k)

    # -- commands ----------------------------------------------------------------------------

    def walk_period_s(self, k: int) -> float | None:
        """The longest apply interval of kdamond ``k``'s schemes (a scheme's 0 is its
        context's aggregation interval), as reactor staged it, in seconds: an
        ``update_schemes_tried_regions`` returns once every scheme has been applied,
        within this long. None for a kdamond reactor has not staged."""
        kd = self._models.get(k)
        if kd is None:
            return None
        longest_us = 0
        for ctx in kd.contexts:
            applies = [s.apply_interval_us or ctx.intervals.aggr_us for s in ctx.schemes]
            longest_us = max([longest_us, ctx.intervals.aggr_us, *applies])
        return longest_us / 1e6

    def _timeout_for(self, k: int, command: StateCommand) -> float:
        if command != "update_schemes_tried_regions":
            return self.command_timeout_s
        return self.command_timeout_s + 3 * (self.walk_period_s(k) or 0.0)

    async def command(self, k: int, command: StateCommand, *, metered: bool = False) -> None:
        """Write a ``state`` command to reactor's kdamond ``k`` (EBUSY retried, deadline);
        ``metered``: its CPU counts in :meth:`read_cpu_s`."""
        self.features.require(command_feature(command), what=f"state command {command}")
        send: Callable[[], None] = functools.partial(send_state, self.fs, k, command)
        await self._thread(
            self._guarded(
                k,
                f"writing {command!r} to kdamond {k}",
                self._metered(k, send) if metered else send,
            ),
            timeout=self._timeout_for(k, command),
            what=paths.state_file(k),
            job=f"{command!r} to {paths.state_file(k)}",
        )

    async def start(self, k: int) -> int:
        """Turn kdamond ``k`` on; records and returns its pid.

        ``on``, the pid read and the record's save are one worker-thread job: a start
        cancelled at SIGTERM still finishes in its thread and records the pid (the stop
        that follows waits for it), so a kdamond reactor turned on is never left
        unrecorded, running, and later taken for someone else's. If the pid cannot be
        read, the kdamond just turned on is turned off again before the error is raised.
        """
        self.features.require(command_feature("on"), what="state command on")
        pid = await self._thread(
            self._guarded(k, f"writing 'on' to kdamond {k}", functools.partial(self._start, k)),
            timeout=2 * self.command_timeout_s,  # on, then the pid read (or an off)
            what=paths.state_file(k),
        )
        _log.info("damon_kdamond_started", kdamond=k, pid=pid)
        return pid

    def _start(self, k: int) -> int:
        send_state(self.fs, k, "on")
        try:
            pid = read_int(self.fs, paths.kdamond_dir(k) + "/pid")
        except KernelInterfaceError:
            try:
                send_state(self.fs, k, "off")
            except KernelInterfaceError as exc:
                _log.error(
                    "damon_kdamond_unrecorded",
                    kdamond=k,
                    error=str(exc),
                    note="it was turned on but its pid could not be read, and turning it "
                    "off failed: write 'off' to its state file",
                )
            raise
        self._save(self.record.with_pid(k, pid))
        return pid

    async def stop(self, k: int) -> None:
        """Turn kdamond ``k`` off (a kdamond that already stopped is not an error)."""
        try:
            await self.command(k, "off")
        except DamonSysfsError as exc:
            if (
                exc.errno not in (E.EINVAL, E.EPERM)
                or read_text(self.fs, paths.state_file(k)).strip() != "off"
            ):
                raise
        self._save(self.record.with_pid(k, -1))
        _log.info("damon_kdamond_stopped", kdamond=k)

    async def stop_all(self) -> None:
        """Stop every running kdamond reactor owns (never another's).

        A recorded kdamond whose state could not be read (``unknown``: the sysfs lock
        stayed held) is not skipped: :meth:`stop` checks it again and raises if it still
        cannot tell, so a running kdamond is never left behind silently.
        """
        status = await self._thread(self.status, timeout=self.command_timeout_s, what=paths.ADMIN)
        owned = owned_indices(self.record, status)
        failed: list[tuple[int, ReactorError]] = []
        for info in status.kdamonds:
            recorded = self.record.pid_of(info.index) not in (None, -1)
            if (info.state == "on" and info.index in owned) or (
                info.state == "unknown" and recorded
            ):
                try:
                    await self.stop(info.index)
                except ReactorError as exc:
                    failed.append((info.index, exc))  # the others are still tried
        if len(failed) == 1:
            raise failed[0][1]
        if failed:
            raise DamonSysfsError(
                paths.KDAMONDS,
                "could not stop reactor's kdamonds "
                + "; ".join(f"{k} ({exc})" for k, exc in failed),
                errno=failed[0][1].errno
                if isinstance(failed[0][1], KernelInterfaceError)
                else None,
                value="off",
            )

    async def commit(
        self,
        k: int,
        kd: Kdamond,
        *,
        paddr_ram: Ranges | None = None,
        node_ram: NodeRanges | None = None,
    ) -> ObsoleteRemoval | None:
        """Online update: stage ``kd`` into running kdamond ``k`` and ``commit`` it.

        On a failed commit the kernel may stop the kdamond (newer kernels); the error's
        sentence says so, and :meth:`state` tells.

        Targets marked ``obsolete`` leave the running context, and the kernel shifts the
        later ones down but leaves the staged target directories as they were. So after a
        successful commit the driver drops them from its model and stages the result
        (``nr_targets`` changes, so the target directories are rebuilt): the tree, what
        :meth:`read_back` returns and the kernel then agree, and the next commit of the
        read-back moves no target's regions onto another. ``target`` filters name targets
        by index and the kernel resolves them against the new array, so they are staged
        renumbered for that same commit; one that named a removed target is dropped. The
        removal is logged (``damon_obsolete_targets_removed``) and returned; None when no
        target was obsolete.
        """
        kd = await self._keeping_tuned_intervals(k, kd)
        ram, nodes = self._ram((kd,), paddr_ram, node_ram)
        after, removal = without_obsolete_targets(kd)
        if removal is None:
            await self.stage(k, kd, paddr_ram=ram, node_ram=nodes)
            await self.command(k, "commit")
            return None
        # Filters renumbered for the array the kernel holds once this commit is done.
        during = kd.model_copy(
            update={
                "contexts": tuple(
                    c.model_copy(update={"schemes": a.schemes})
                    for c, a in zip(kd.contexts, after.contexts, strict=True)
                )
            }
        )
        await self.stage(k, during, paddr_ram=ram, node_ram=nodes)
        try:
            await self.command(k, "commit")
        except Exception:
            if during != kd:  # the tree should say what the caller staged, not our renumbering
                await self._restage_quietly(k, kd, ram, nodes)
            raise
        await self.stage(k, after, paddr_ram=ram, node_ram=nodes)
        self._log_removal(k, removal, "committed; target directories rebuilt to match")
        return removal

    async def _restage_quietly(self, k: int, kd: Kdamond, ram: Ranges, nodes: NodeRanges) -> None:
        try:
            await self.stage(k, kd, paddr_ram=ram, node_ram=nodes)
        except Exception as exc:  # the commit's own error is the one to raise
            _log.warning("damon_restage_failed", kdamond=k, error=str(exc))

    @staticmethod
    def _log_removal(k: int, removal: ObsoleteRemoval, what: str) -> None:
        _log.info(
            "damon_obsolete_targets_removed",
            kdamond=k,
            targets=list(removal.removed),
            pids=list(removal.pids),
            filters_renumbered=[
                f"scheme {f.scheme} {f.layer}[{f.index}]: target {f.old} -> {f.new}"
                for f in removal.filters
                if f.new is not None
            ],
            filters_dropped=[
                f"scheme {f.scheme} {f.layer}[{f.index}]: named removed target {f.old}"
                for f in removal.dropped_filters
            ],
            note=what,
        )

    async def _keeping_tuned_intervals(self, k: int, kd: Kdamond) -> Kdamond:
        """``kd``, with the kernel's tuned sampling and aggregation intervals in place of
        the staged ones where the kernel tunes them and the caller keeps them.

        ``damon_commit_ctx()`` calls ``damon_set_attrs()`` when the committed attributes
        differ from the running ones. With intervals auto-tuning on
        (``intervals_goal/aggrs`` != 0) the running intervals are the tuner's, and the
        files hold what was staged (or the tuned values of the last refresh): committing
        them back, as a quota change read back from the files does, would put the
        intervals where the tuner started, every time. So when the caller's intervals
        are the ones in the files or the ones reactor staged last, the driver fetches
        the tuned ones (``update_tuned_intervals``) and commits those: the attributes
        are equal and the kernel keeps tuning from where it is. Intervals the caller
        changed (a reload, reactor's own intervals tuner) are committed as given."""
        # (no state read: the state file takes DAMON's sysfs lock, EBUSY while another
        # command holds it; a commit needs a running kdamond anyway)
        if not kd.contexts or not kd.contexts[0].intervals.intervals_goal.aggrs:
            return kd
        intervals = kd.contexts[0].intervals
        files = read_tuned_intervals(self.fs, k)  # the files, before the command
        kept = {(files.sample_us, files.aggr_us)}
        model = self._models.get(k)
        if model is not None and model.contexts:
            staged = model.contexts[0].intervals
            kept.add((staged.sample_us, staged.aggr_us))
        if (intervals.sample_us, intervals.aggr_us) not in kept:
            return kd
        await self.command(k, "update_tuned_intervals")
        tuned = read_tuned_intervals(self.fs, k)
        if (tuned.sample_us, tuned.aggr_us) == (intervals.sample_us, intervals.aggr_us):
            return kd
        _log.debug(
            "damon_tuned_intervals_kept",
            kdamond=k,
            sample_us=tuned.sample_us,
            aggr_us=tuned.aggr_us,
            staged_sample_us=intervals.sample_us,
        )
        new = intervals.model_copy(update={"sample_us": tuned.sample_us, "aggr_us": tuned.aggr_us})
        contexts = (kd.contexts[0].model_copy(update={"intervals": new}), *kd.contexts[1:])
        return kd.model_copy(update={"contexts": contexts})

    async def commit_quota_goals(self, k: int, current: Mapping[tuple[int, int], int]) -> None:
        """Feed ``user_input`` goals: write ``current_value`` of (scheme, goal) pairs, then
        ``commit_schemes_quota_goals`` (the cheap path: nothing else is re-read)."""
        values = dict(current)

        def write() -> None:
            self._require_own(k, f"feeding quota goals of kdamond {k}")
            for (s, g), value in values.items():
                path = paths.goal_dir(k, s, g) + "/current_value"
                try:
                    self.fs.write_text(path, str(value))
                except KernelInterfaceError as exc:
                    raise translate(self.fs, exc, str(value)) from exc

        try:
            await self._thread(
                write, timeout=self.command_timeout_s, what=paths.context_dir(k) + "/schemes"
            )
        except BaseException:
            self._written.pop(k, None)  # some values may be written: stage every file next
            raise
        model = self._models.get(k)
        if model is not None:
            self._models[k] = _with_goal_values(model, values)
        written = self._written.get(k)
        if written is not None:
            for (s, g), value in values.items():
                written[paths.goal_dir(k, s, g) + "/current_value"] = str(value)
        await self.command(k, "commit_schemes_quota_goals")

    def state(self, k: int) -> str:
        """``on`` or ``off``, read now (blocking: EBUSY is waited out, see
        :func:`~reactor.damon.snapshot.read_text`; :meth:`read_state` from async code)."""
        return read_text(self.fs, paths.state_file(k)).strip()

    async def read_state(self, k: int) -> str:
        """:meth:`state` in the driver's worker thread, after any job in flight."""
        return await self._thread(
            functools.partial(self.state, k),
            timeout=self.command_timeout_s,
            what=paths.state_file(k),
        )

    def _refreshed_by_kernel(self, k: int) -> bool:
        """refresh_ms ≠ 0: the kernel refreshes stats, quotas and intervals itself."""
        return read_int(self.fs, paths.kdamond_dir(k) + "/refresh_ms", default=0) != 0

    async def update_schemes_stats(self, k: int) -> tuple[SchemeStats, ...]:
        """Refresh (unless refresh_ms does it) and read every scheme's stats."""
        if not self._refreshed_by_kernel(k):
            await self.command(k, "update_schemes_stats")
        return tuple(read_scheme_stats(self.fs, k, s) for s in range(nr_schemes(self.fs, k)))

    async def update_schemes_tried_regions(
        self, k: int, schemes: Sequence[int] | None = None, *, extras: bool = True
    ) -> tuple[TriedRegions, ...]:
        """Collect one walk's tried regions (blocks until every scheme has been applied
        once, up to :meth:`walk_period_s`) and read those of ``schemes`` (default: every
        scheme), in that order; ``extras=False`` skips the files the policies do not use
        (:func:`~reactor.damon.snapshot.read_tried_regions`).

        Reading them is thousands of files with ``max_nr_regions`` in the thousands, so
        it runs in the worker thread (on the event loop it stalled a guest daemon's ticks
        for 11 s under TCG while its kdamond migrated), and a caller reads only the
        schemes it needs."""
        await self.command(k, "update_schemes_tried_regions", metered=True)

        def read() -> tuple[TriedRegions, ...]:
            wanted = range(nr_schemes(self.fs, k)) if schemes is None else schemes
            return tuple(read_tried_regions(self.fs, k, s, extras=extras) for s in wanted)

        return await self._thread(
            self._metered(k, read),
            timeout=self.command_timeout_s,
            what=paths.context_dir(k) + "/schemes",
        )

    async def update_schemes_effective_quotas(self, k: int) -> tuple[int, ...]:
        """Every scheme's effective quota in bytes."""
        if not self._refreshed_by_kernel(k):
            await self.command(k, "update_schemes_effective_quotas")
        return tuple(read_effective_quota(self.fs, k, s) for s in range(nr_schemes(self.fs, k)))

    async def update_tuned_intervals(self, k: int) -> TunedIntervals:
        """The auto-tuned sampling and aggregation intervals."""
        if not self._refreshed_by_kernel(k):
            await self.command(k, "update_tuned_intervals")
        return read_tuned_intervals(self.fs, k)

    def snapshot(self, k: int) -> KdamondSnapshot:
        """Read kdamond ``k``'s outputs as they are now (no command written)."""
        return read_kdamond_snapshot(self.fs, k)


def _with_goal_values(kd: Kdamond, values: Mapping[tuple[int, int], int]) -> Kdamond:
    """``kd`` (context 0) with the goals' ``current_value`` written by
    :meth:`DamonDriver.commit_quota_goals`, so the model still says what the files hold."""
    if not kd.contexts:
        return kd
    schemes = list(kd.contexts[0].schemes)
    for (s, g), value in values.items():
        if s >= len(schemes) or g >= len(schemes[s].quotas.goals):
            continue
        quotas = schemes[s].quotas
        goals = list(quotas.goals)
        goals[g] = goals[g].model_copy(update={"current_value": value})
        schemes[s] = schemes[s].model_copy(
            update={"quotas": quotas.model_copy(update={"goals": tuple(goals)})}
        )
    return kd.with_schemes(0, schemes)
