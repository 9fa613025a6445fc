"""Signal sources as periodic tasks: build them from the config, run them on deadlines.

A source task polls its poller once per period, publishes each value to the bus, counts
and logs failed reads, and reports readiness once its first value is on the bus (a rate
source's first read is only a baseline: its first sample comes one period later). A source that
cannot read within ``startup_timeout`` is marked failed with its reason and the daemon
runs on without it (it keeps trying, and says so when it recovers); a source marked
``required`` fails start-up instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
import structlog
from anyio.abc import TaskStatus

from reactor.engine.bus import Bus
from reactor.engine.ticker import READ_PHASE, Ticker
from reactor.errors import KernelInterfaceError, SourceFailed, TargetVanished
from reactor.kernelfs import KernelFS
from reactor.log import repeat_logged
from reactor.signals.base import Poller

if TYPE_CHECKING:
    from reactor.config import Config, SourceConfig

__all__ = ("SourceRunner", "SourceSpec", "build_source_specs")

_log = structlog.get_logger("reactor.source")


@dataclass(frozen=True)
class SourceSpec:
    """One topic to poll: which config section it comes from, and how to make its poller.

    ``identity`` says what the poller reads; two specs with the same identity can hand
    over a running task (a reload that only changes the period keeps the task).
    """

    topic: str
    source: str
    identity: tuple[Any, ...]
    cfg: SourceConfig
    make_poller: Callable[[], Poller]


def build_source_specs(config: Config, fs: KernelFS) -> list[SourceSpec]:
    """The enabled sources of ``config.signals`` as one spec per bus topic."""
    from reactor.signals.cgroup import CgroupPoller
    from reactor.signals.fragmentation import FragmentationPoller
    from reactor.signals.meminfo import MeminfoPoller
    from reactor.signals.psi import PsiPoller
    from reactor.signals.tiers import TiersPoller
    from reactor.signals.vmstat import VmstatPoller

    specs: list[SourceSpec] = []
    for name, cfg in config.signals.sources().items():
        if name == "psi":
            psi = config.signals.psi
            for resource in psi.resources:
                topic = f"psi.{resource}"
                specs.append(
                    SourceSpec(
                        topic,
                        name,
                        ("psi", resource, None),
                        cfg,
                        _bind(PsiPoller, fs, resource, topic=topic),
                    )
                )
                if psi.cgroup is not None:
                    path = f"{psi.cgroup.rstrip('/')}/{resource}.pressure"
                    topic = f"psi.cgroup.{resource}"
                    specs.append(
                        SourceSpec(
                            topic,
                            name,
                            ("psi", resource, path),
                            cfg,
                            _bind(PsiPoller, fs, resource, path=path, topic=topic),
                        )
                    )
        elif name == "vmstat":
            specs.append(SourceSpec("vmstat", name, ("vmstat",), cfg, _bind(VmstatPoller, fs)))
        elif name == "meminfo":
            specs.append(SourceSpec("meminfo", name, ("meminfo",), cfg, _bind(MeminfoPoller, fs)))
        elif name == "tiers":
            specs.append(SourceSpec("tiers", name, ("tiers",), cfg, _bind(TiersPoller, fs)))
        elif name == "fragmentation":
            frag = config.signals.fragmentation
            specs.append(
                SourceSpec(
                    "fragmentation",
                    name,
                    ("fragmentation", frag.hpage_order, frag.zoneinfo_every, frag.read_debugfs),
                    cfg,
                    _bind(
                        FragmentationPoller,
                        fs,
                        hpage_order=frag.hpage_order,
                        zoneinfo_every=frag.zoneinfo_every,
                        read_debugfs=frag.read_debugfs,
                    ),
                )
            )
        else:  # the config model and this table must grow together
            raise ValueError(f"signals.{name}: no source implementation for this section")
    for cgroup in config.signals.cgroups:
        if not cgroup.enabled:
            continue
        topic = f"cgroup.{cgroup.name}"
        specs.append(
            SourceSpec(
                topic,
                f"cgroups[{cgroup.name}]",
                ("cgroup", cgroup.path, cgroup.version, cgroup.pressure_dir),
                cgroup,
                _bind(
                    CgroupPoller,
                    fs,
                    cgroup.path,
                    cgroup.version,
                    pressure_dir=cgroup.pressure_dir,
                    topic=topic,
                ),
            )
        )
    return specs


def _bind(factory: Callable[..., Poller], *args: Any, **kwargs: Any) -> Callable[[], Poller]:
    def make() -> Poller:
        return factory(*args, **kwargs)

    return make


class SourceRunner:
    """Runs one :class:`SourceSpec` as a task; its period can change while it runs."""

    def __init__(self, spec: SourceSpec, bus: Bus, *, startup_timeout: Callable[[], float]) -> None:
        self.spec = spec
        self.bus = bus
        self._startup_timeout = startup_timeout
        self.state = "starting"
        self.reason: str | None = None
        self.starts = 0
        self.reads = 0
        self.consecutive_failures = 0
        self.ticker: Ticker | None = None
        self.scope: anyio.CancelScope | None = None

    def update(self, spec: SourceSpec) -> None:
        """Take a new config for the same identity; the next deadline uses the new period."""
        if spec.identity != self.spec.identity:
            raise ValueError(f"cannot hand {self.spec.topic} over to a different source")
        self.spec = spec
        if self.ticker is not None:
            self.ticker.reschedule()

    def stop(self) -> None:
        if self.scope is not None:
            self.scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled; ``task_status.started()`` once the first value is on the
        bus, or after ``startup_timeout`` with the source marked failed.

        A rate source (PSI, vmstat, cgroup) publishes nothing on its first read, which
        only takes a baseline: it is ready after its second read, one period later.
        """
        self.starts += 1
        log = _log.bind(topic=self.spec.topic)
        with anyio.CancelScope() as self.scope:
            try:
                poller = self.spec.make_poller()
            except KernelInterfaceError as exc:
                poller = None
                self._fail(log, str(exc))
            self.ticker = Ticker(lambda: self.spec.cfg.period, phase=READ_PHASE)
            give_up_at = anyio.current_time() + self._startup_timeout()
            started = False
            while True:
                tick = await self.ticker.next()
                if tick.skipped:
                    log.warning("tick_overrun", skipped=tick.skipped, total=self.ticker.overruns)
                if poller is None:
                    try:
                        poller = self.spec.make_poller()
                    except KernelInterfaceError as exc:
                        self._fail(log, str(exc))
                read = poller is not None and self._poll_once(poller, tick.now, log)
                if not started and read == "published":
                    started = True
                    task_status.started()
                elif not started and read == "baseline":
                    # A rate source's first good read is only its baseline: its first
                    # sample is the next read, one period on, and it may take that long
                    # even past startup_timeout (which bounds reaching a good read).
                    give_up_at = max(give_up_at, tick.now + self.spec.cfg.period)
                elif not started and anyio.current_time() >= give_up_at:
                    started = True
                    self._give_up(log)
                    task_status.started()

    def _poll_once(
        self, poller: Poller, now: float, log: Any
    ) -> Literal["published", "baseline", False]:
        """Read once: ``published`` (a value is on the bus), ``baseline`` (a good read
        with nothing to publish yet: a rate source's first) or False (a failed read)."""
        try:
            value = poller.poll(now)
        except TargetVanished as exc:
            # A cgroup or process that went away is a normal event: the topic goes
            # stale (policies that need it hold), and the poller follows it if it returns.
            if self.state != "vanished":
                log.info("target_vanished", target=exc.target)
            self.state, self.reason = "vanished", str(exc)
            self.bus.record_failure(self.spec.topic, str(exc))
            return False
        except KernelInterfaceError as exc:
            self._fail(log, str(exc))
            return False
        self.reads += 1
        if self.state == "vanished":
            log.info("target_returned")
        elif self.consecutive_failures and self.state == "failed":
            log.info("source_recovered", after_failures=self.consecutive_failures)
        self.consecutive_failures = 0
        if value is None:
            if self.state != "starting":  # a source that recovers on a new baseline
                self.state, self.reason = "ready", None
            return "baseline"
        self.state, self.reason = "ready", None
        self.bus.publish(self.spec.topic, value, now)
        return "published"

    def _fail(self, log: Any, reason: str) -> None:
        self.consecutive_failures += 1
        self.reason = reason
        self.bus.record_failure(self.spec.topic, reason, failed=self.state == "failed")
        n = self.consecutive_failures
        if repeat_logged(n):  # every failure is still counted on the bus
            log.warning("sample_failed", reason=reason, consecutive=n)

    def _give_up(self, log: Any) -> None:
        reason = self.reason or "no sample"
        timeout = self._startup_timeout()
        if self.spec.cfg.required:
            raise SourceFailed(
                self.spec.topic,
                f"no good sample within {timeout:g} s ({reason}); the config marks "
                f"signals.{self.spec.source} required",
            )
        self.state = "failed"
        self.bus.record_failure(self.spec.topic, reason, failed=True)
        log.warning(
            "source_failed",
            reason=reason,
            startup_timeout_s=timeout,
            effect="running without it; policies that need it hold",
        )
