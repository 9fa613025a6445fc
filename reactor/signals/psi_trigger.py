"""PSI triggers: react to a stall within its window, not at the next poll.

A :class:`PsiTrigger` names a PSI file and a threshold: ``threshold_us`` of ``some`` (or
``full``) stall within any ``window_us``. :class:`PsiTriggerWatcher` arms it through the
kernel-files seam (:meth:`KernelFS.open_trigger`) and publishes a
:class:`PsiTriggerEvent` on ``psi.trigger.<name>`` each time the kernel signals it, so a
policy waiting on that topic acts within the window (the kernel checks unprivileged
triggers on its 2 s averaging work, privileged ones every ~window/10).

Where the kernel refuses the trigger (:class:`~reactor.kernelfs.trigger.TriggerRefused`:
a window that is not a multiple of 2 s without CAP_SYS_RESOURCE, PSI disabled, ...), the
watcher logs ``psi_trigger_fallback`` with the kernel's reason and polls the file instead
(every ``window/4`` by default), firing on the same rule the kernel uses: stall growth
over the last window at or above the threshold, at most once per window
(:class:`WindowStall`). Either way the topic carries the same event; ``mode`` says which.

Waiting: the kernel signals a trigger with EPOLLPRI on a descriptor that always polls
readable, so ``anyio.wait_readable`` returns at once and cannot wait for it (see
reactor/kernelfs/trigger.py). The watcher blocks in ``poll(POLLPRI)`` in a worker thread
(``anyio.to_thread.run_sync``, abandoned on cancel) and interrupts it through the
handle's self-pipe when cancelled, then closes the descriptor (which disarms the
trigger). One thread per armed trigger, parked in the kernel: no CPU while quiet.

The runtime calls :func:`run_psi_triggers` in its task group with the configured
triggers and ``bus.publish``; it reports started once every trigger is armed or has
fallen back with its first baseline read.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus

from reactor.errors import KernelInterfaceError
from reactor.kernelfs.base import KernelFS
from reactor.kernelfs.kept import KeptReader
from reactor.kernelfs.trigger import TriggerGone, TriggerHandle, TriggerRefused
from reactor.signals.psi import PSI_RESOURCES, parse_psi

__all__ = (
    "PsiTrigger",
    "PsiTriggerEvent",
    "PsiTriggerWatcher",
    "Publish",
    "WindowStall",
    "run_psi_triggers",
)

_log = structlog.get_logger("reactor.psi_trigger")

_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$")

#: ``publish(topic, value, stamp)``: the bus's publish (``Bus.publish``) or a test's list.
Publish = Callable[[str, Any, float], Any]


@dataclass(frozen=True)
class PsiTrigger:
    """One trigger to watch: ``threshold_us`` of ``kind`` stall per ``window_us`` on ``path``.

    ``path`` is ``/proc/pressure/<resource>`` (the default) or a cgroup v2
    ``<dir>/<resource>.pressure``. The topic is ``psi.trigger.<name>``.
    ``poll_period_s`` is the fallback's read period (default: a quarter of the window,
    so a crossing is seen at most window/4 late; a read costs about 11 µs).
    """

    name: str
    resource: str
    kind: Literal["some", "full"]
    threshold_us: int
    window_us: int
    path: str | None = None
    poll_period_s: float | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"expected a trigger name of a-z, 0-9, '_', '-', '.', got {self.name!r}"
            )
        if self.resource not in PSI_RESOURCES:
            raise ValueError(f"expected a PSI resource in {PSI_RESOURCES}, got {self.resource!r}")
        if self.kind not in ("some", "full"):
            raise ValueError(f"expected kind some or full, got {self.kind!r}")
        if not 0 < self.threshold_us <= self.window_us:
            raise ValueError(
                f"expected 0 < threshold_us <= window_us, got threshold_us={self.threshold_us}, "
                f"window_us={self.window_us}"
            )
        if self.poll_period_s is not None and not self.poll_period_s > 0:
            raise ValueError(f"expected poll_period_s > 0, got {self.poll_period_s}")

    @property
    def file(self) -> str:
        """The PSI file the trigger is armed on."""
        return self.path if self.path is not None else f"/proc/pressure/{self.resource}"

    @property
    def spec(self) -> str:
        """The kernel's trigger spec: ``"<kind> <threshold_us> <window_us>"``."""
        return f"{self.kind} {self.threshold_us} {self.window_us}"

    @property
    def topic(self) -> str:
        return f"psi.trigger.{self.name}"

    @property
    def window_s(self) -> float:
        return self.window_us / 1e6

    @property
    def fallback_period_s(self) -> float:
        return self.poll_period_s if self.poll_period_s is not None else self.window_s / 4


@dataclass(frozen=True)
class PsiTriggerEvent:
    """The stall crossed a trigger's threshold within its window.

    ``mode`` is ``"trigger"`` (the kernel signalled) or ``"poll"`` (the fallback saw it);
    ``count`` numbers the events of this watcher from 1; ``total_us`` is the file's
    cumulative stall of ``kind`` when the event was handled; ``window_stall_us`` is the
    stall the fallback measured over the last window (None in trigger mode: the kernel only
    says it crossed). ``stamp`` is the runtime's monotonic time, seconds.
    """

    name: str
    path: str
    spec: str
    mode: Literal["trigger", "poll"]
    count: int
    stamp: float
    total_us: int | None
    window_stall_us: int | None

    def summary(self) -> dict[str, float | int]:
        """The fields of the one-line-per-event log."""
        out: dict[str, float | int] = {"count": self.count}
        if self.window_stall_us is not None:
            out["window_stall_us"] = self.window_stall_us
        return out


class WindowStall:
    """The fallback's firing rule, pure: stall growth over the last window vs a threshold.

    Feed ``add(now_s, total_us)`` with each read; it returns the stall over the last
    ``window_s`` (µs) when that is at least ``threshold_us`` and no event was given in the
    last window (the kernel's own rate limit: one event per window), else None.

    The base of the window is the newest sample at or before ``now - window``; until a
    whole window has been seen it is the oldest sample, so a shorter span is measured:
    stall over a shorter span that already reaches the threshold reaches it over the
    window too, so this never fires early. A ``total`` that went backwards (a re-created
    cgroup) restarts the history.
    """

    def __init__(self, threshold_us: int, window_s: float) -> None:
        self.threshold_us = threshold_us
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._last_event: float | None = None

    def add(self, now_s: float, total_us: int) -> int | None:
        if self._samples and total_us < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((now_s, total_us))
        start = now_s - self.window_s
        while len(self._samples) >= 2 and self._samples[1][0] <= start:
            self._samples.popleft()
        stall = total_us - self._samples[0][1]
        if stall < self.threshold_us:
            return None
        if self._last_event is not None and now_s - self._last_event < self.window_s:
            return None
        self._last_event = now_s
        return stall


class PsiTriggerWatcher:
    """Watches one :class:`PsiTrigger` and publishes its events (see the module docs).

    After :meth:`run` has started, :attr:`mode` is ``"trigger"`` or ``"poll"`` and
    :attr:`fallback_reason` says why the kernel refused (None in trigger mode).
    """

    def __init__(self, fs: KernelFS, trigger: PsiTrigger, publish: Publish) -> None:
        self.fs = fs
        self.trigger = trigger
        self._publish = publish
        self.mode: Literal["trigger", "poll"] | None = None
        self.fallback_reason: str | None = None
        self.fallback_errno: int | None = None
        self.events = 0
        self._reader: KeptReader | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Arm (or fall back) and publish until cancelled; started once armed or polling."""
        log = _log.bind(topic=self.trigger.topic, path=self.trigger.file, spec=self.trigger.spec)
        try:
            handle: TriggerHandle | None = self.fs.open_trigger(
                self.trigger.file, self.trigger.spec
            )
        except TriggerRefused as exc:
            handle = None
            self.fallback_reason, self.fallback_errno = exc.reason, exc.errno
            log.info("psi_trigger_fallback", reason=exc.reason, errno=exc.errno, effect="polling")
        try:
            if handle is not None:
                self.mode = "trigger"
                log.info("psi_trigger_armed")
                await self._watch(handle, log, task_status)
            else:
                self.mode = "poll"
                await self._poll(log, task_status)
        finally:
            if self._reader is not None:
                self._reader.close()

    async def _watch(self, handle: TriggerHandle, log: Any, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            while True:
                try:
                    result = await anyio.to_thread.run_sync(
                        handle.wait, None, abandon_on_cancel=True
                    )
                except TriggerGone:
                    log.info("target_vanished", effect="re-arming once the file is back")
                    handle.close()
                    handle = await self._rearm()
                    continue
                if result == "fired":
                    self._emit("trigger", None)
        finally:
            handle.close()  # interrupts the abandoned worker's poll, then disarms

    async def _rearm(self) -> TriggerHandle:
        while True:
            await anyio.sleep(self.trigger.window_s)
            try:
                return self.fs.open_trigger(self.trigger.file, self.trigger.spec)
            except TriggerRefused:
                continue  # not there yet (ENOENT): the cgroup may come back

    async def _poll(self, log: Any, task_status: TaskStatus[None]) -> None:
        rule = WindowStall(self.trigger.threshold_us, self.trigger.window_s)
        started = False
        deadline = anyio.current_time()
        while True:
            total = self._read_total(log)
            now = anyio.current_time()
            if total is not None:
                stall = rule.add(now, total)
                if stall is not None:
                    self._emit("poll", stall, total=total)
                if not started:
                    started = True
                    task_status.started()
            deadline = max(deadline + self.trigger.fallback_period_s, now)
            await anyio.sleep_until(deadline)

    def _read_total(self, log: Any) -> int | None:
        try:
            if self._reader is None:
                self._reader = KeptReader(self.fs, self.trigger.file)
            psi = parse_psi(self._reader.read_text(), self.trigger.file)
        except KernelInterfaceError as exc:
            log.warning("sample_failed", reason=str(exc))
            return None
        line = psi.some if self.trigger.kind == "some" else psi.full
        return None if line is None else line.total_us

    def _emit(
        self, mode: Literal["trigger", "poll"], stall: int | None, *, total: int | None = None
    ) -> None:
        if total is None:
            total = self._read_total(_log)
        self.events += 1
        now = anyio.current_time()
        event = PsiTriggerEvent(
            name=self.trigger.name,
            path=self.trigger.file,
            spec=self.trigger.spec,
            mode=mode,
            count=self.events,
            stamp=now,
            total_us=total,
            window_stall_us=stall,
        )
        _log.info("psi_trigger_fired", topic=self.trigger.topic, mode=mode, **event.summary())
        self._publish(self.trigger.topic, event, now)


async def run_psi_triggers(
    fs: KernelFS,
    triggers: Sequence[PsiTrigger],
    publish: Publish,
    *,
    task_status: TaskStatus[list[PsiTriggerWatcher]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Watch every trigger until cancelled; ``task_status.started(watchers)`` once each is
    armed or polling (their :attr:`~PsiTriggerWatcher.mode` and fallback reasons are set).

    For the runtime: ``watchers = await tg.start(run_psi_triggers, fs, triggers, bus.publish)``.
    Topics must be distinct (ValueError names the repeated ones).
    """
    topics = [t.topic for t in triggers]
    repeated = sorted({t for t in topics if topics.count(t) > 1})
    if repeated:
        raise ValueError(f"expected distinct trigger names, got {', '.join(repeated)} twice")
    watchers = [PsiTriggerWatcher(fs, t, publish) for t in triggers]
    async with anyio.create_task_group() as tg:
        for watcher in watchers:
            await tg.start(watcher.run)
        task_status.started(watchers)
