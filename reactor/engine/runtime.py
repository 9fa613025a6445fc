"""The runtime: one task group holding every source, the report tick, reload and shutdown.

Used two ways:

* as a library inside an async application::

      async with Reactor(config) as reactor:
          sample = reactor.bus.latest("psi.memory")

  (no signal handlers are installed in library mode);
* by ``reactor serve``, through :func:`serve`, which adds SIGTERM/SIGINT shutdown and
  SIGHUP reload.

Time is read only through ``anyio.current_time()``, so tests run it on a virtual clock.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from reactor.config import Config, PolicyConfig, load_config
from reactor.damon.ownership import OwnershipStore, owned_indices, read_boot_id
from reactor.damon.probe import (
    BackendChoice,
    DamonSysfsStatus,
    choose_backend,
    read_damon_status,
)
from reactor.engine.bus import Bus
from reactor.engine.damon_monitors import DamonMonitors
from reactor.engine.monitors import NativeMonitors, access_max_age
from reactor.engine.sources import SourceRunner, SourceSpec, build_source_specs
from reactor.engine.ticker import DECIDE_PHASE, Ticker
from reactor.errors import (
    ConfigError,
    KernelInterfaceError,
    ReactorError,
    SourceFailed,
    StartupTimeout,
)
from reactor.kernelfs import KernelFS, RealKernelFS
from reactor.log import TICK_LOG_HEARTBEAT

if TYPE_CHECKING:
    from reactor.api.status import StatusDocument
    from reactor.policies import Policy, PolicyContext

__all__ = ("Reactor", "ReloadResult", "apply_overrides", "serve")

_log = structlog.get_logger("reactor")

#: Config keys a running daemon cannot change; a reload that changes them says so.
#: (``log_level`` is applied live by the logging set-up the CLI installed; in library
#: mode the application owns logging, so a change there is reported as needing a restart.)
_RESTART_KEYS = ("backend", "run_dir", "log_format")

#: seconds granted past ``reactor.startup_timeout`` for a part to report started: the
#: DAMON monitors lay out and start kdamonds (driver deadlines of their own inside), the
#: native ones probe in a child process, a policy may read its kdamond first
START_MARGIN_S = {"damon": 30.0, "native": 10.0, "policy": 30.0}


@contextmanager
def _start_within(config: Config, margin_s: float, what: str) -> Iterator[None]:
    """A deadline for a start-up step: past it, a :class:`StartupTimeout` that names
    the step and the setting (``anyio.fail_after``'s bare TimeoutError reached the user
    as a traceback)."""
    seconds = config.reactor.startup_timeout + margin_s
    with anyio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        raise StartupTimeout(
            f"{what} did not start within {seconds:g} s (reactor.startup_timeout "
            f"{config.reactor.startup_timeout:g} s + {margin_s:g} s); a kernel file that "
            "blocks, or a machine too loaded to start: raise reactor.startup_timeout"
        )


def apply_overrides(config: Config, overrides: Mapping[str, object] | None) -> Config:
    """``config`` with the ``reactor`` section's keys replaced by ``overrides`` (the
    command line's ``--dry-run`` and ``--run-dir``), which win over every file the daemon
    loads, at start and on each reload."""
    if not overrides:
        return config
    section = config.reactor.model_copy(update=dict(overrides))
    return config.model_copy(update={"reactor": section})


#: Sections a running daemon cannot change (the status socket and metrics listener).
_RESTART_SECTIONS = ("api",)


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: topics whose task was kept, started and stopped."""

    applied: bool
    kept: tuple[str, ...] = ()
    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    policies_kept: tuple[str, ...] = ()
    policies_started: tuple[str, ...] = ()
    policies_stopped: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


class Reactor:
    """The daemon's core: sources on the bus, the per-tick report, reload and shutdown."""

    def __init__(
        self,
        config: Config,
        *,
        fs: KernelFS | None = None,
        damon_fs: KernelFS | None = None,
        overrides: Mapping[str, object] | None = None,
        set_log_level: Callable[[str], None] | None = None,
    ) -> None:
        #: ``reactor`` keys that win over every loaded file (``--dry-run``, ``--run-dir``).
        self.overrides: dict[str, object] = dict(overrides or {})
        #: Applies a reloaded ``reactor.log_level`` live (the daemon's logging set-up);
        #: None in library mode, where a changed level is reported as needing a restart.
        self._set_log_level = set_log_level
        self.config = apply_overrides(config, self.overrides)
        self.fs: KernelFS = fs if fs is not None else RealKernelFS("/")
        #: Where the DAMON driver writes (tests pass a fake); None: derived from ``fs``.
        self.damon_fs = damon_fs
        self.bus = Bus()
        self.runners: dict[str, SourceRunner] = {}
        self.backend: BackendChoice | None = None
        self.native: NativeMonitors | None = None
        self.damon: DamonMonitors | None = None
        self.ticks = 0
        self.tick_overruns = 0
        #: (stale topics, tick) of the last node_sample logged at info (log_ticks: changes)
        self._sample_logged: tuple[list[str], int] | None = None
        self.started_at: float | None = None
        #: Called after each report tick with (now, dt): the recorder hooks in here.
        self.tick_hooks: list[Callable[[float, float], None]] = []
        #: Running policies by name (docs/policies.md).
        self.policies: dict[str, Policy] = {}
        self._policy_ctx: PolicyContext | None = None
        self._tg: TaskGroup | None = None
        self._outer: TaskGroup | None = None
        self._restores: list[Callable[[], Awaitable[None]]] = []

    # -- library mode -------------------------------------------------------------
    async def __aenter__(self) -> Reactor:
        self._outer = anyio.create_task_group()
        await self._outer.__aenter__()
        try:
            await self._outer.start(self.run)
        except BaseException as exc:
            self._outer.cancel_scope.cancel()
            await self._outer.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._outer is not None
        self._outer.cancel_scope.cancel()
        return await self._outer.__aexit__(exc_type, exc, tb)

    def feed(self, signal: str, value: float) -> None:
        """Publish an application's own signal for ``metric: user`` goals.

        The value lands on bus topic ``user.<signal>`` stamped now; a policy reads it
        like any source (stale after three ticks without a new value).
        """
        self.bus.publish(f"user.{signal}", float(value), anyio.current_time())

    # -- the daemon ---------------------------------------------------------------
    def on_shutdown(self, restore: Callable[[], Awaitable[None]]) -> None:
        """Register an actuator's restore step; they run in reverse order at shutdown."""
        self._restores.append(restore)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every source (concurrently), then the report tick; run until cancelled."""
        self.started_at = anyio.current_time()
        self._announce()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self._start_runners(build_source_specs(self.config, self.fs))
                await self._start_psi_triggers(tg)
                await self._start_monitors(tg)
                await self._start_policies(self.config.policies)
                await tg.start(self._report_loop)
                _log.info(
                    "started",
                    sources={t: r.state for t, r in sorted(self.runners.items())},
                    policies=sorted(self.policies) or None,
                    tick_s=self.config.reactor.tick,
                )
                task_status.started()
        finally:
            self._tg = None
            await self._restore_all()

    def stop(self, reason: str = "stop requested") -> None:
        """Cancel every task; :meth:`run` returns after actuators have restored."""
        _log.info("stopping", reason=reason)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _restore_all(self) -> None:
        in_flight = 0
        with anyio.move_on_after(self.config.reactor.shutdown_timeout, shield=True) as scope:
            while self._restores:
                restore = self._restores.pop()
                in_flight = 1
                try:
                    await restore()
                except Exception as exc:  # every other step still runs
                    _restore_failed(exc)
                in_flight = 0
        if scope.cancelled_caught:
            _log.error(
                "restore_timeout",
                timeout_s=self.config.reactor.shutdown_timeout,
                left=len(self._restores) + in_flight,  # the one cut short counts
            )

    def _announce(self) -> None:
        """Say at start what the backend is and what this version does not do yet."""
        cfg = self.config
        status = read_damon_status(self.fs)
        self.backend = choose_backend(cfg.reactor.backend, status, self._owned(status))
        _log.info(
            "backend",
            requested=self.backend.requested,
            backend=self.backend.backend,
            usable=self.backend.usable,
            reason=self.backend.reason,
        )
        inactive = []
        disabled = [p.name for p in cfg.policies if not p.enabled]
        if disabled:
            inactive.append(f"disabled policies: {', '.join(disabled)}")
        if cfg.damon.kdamonds and self.backend.backend != "damon":
            inactive.append(f"{len(cfg.damon.kdamonds)} damon kdamond(s)")
        _log.info(
            "capabilities",
            active=(
                "signals (PSI, vmstat, meminfo, memory tiers, fragmentation, cgroups) "
                "sampled and logged each tick; access monitors; reclaim, tiering and "
                "monitoring self-tuning policies"
            ),
            not_yet="lru_sort, thp and compaction policies (later issues)",
            configured_but_inactive=inactive or None,
            dry_run=cfg.reactor.dry_run,
        )

    def _owned(self, status: DamonSysfsStatus) -> frozenset[int]:
        """The kdamonds reactor's ownership record lists at their current pid (read-only)."""
        if not status.kdamonds:
            return frozenset()
        try:
            boot_id = read_boot_id(self.fs)
        except KernelInterfaceError as exc:
            _log.warning("ownership_unknown", reason=str(exc), effect="no kdamond is ours")
            return frozenset()
        store = OwnershipStore(self.config.reactor.run_dir)
        owned = owned_indices(store.load(boot_id), status)
        if store.ignored:
            _log.info("ownership_record_ignored", reason=store.ignored)
        return owned

    async def _start_runners(self, specs: list[SourceSpec]) -> None:
        """Start sources concurrently: each waits for its own first sample."""
        assert self._tg is not None
        tg = self._tg
        new = []
        for spec in specs:
            runner = SourceRunner(
                spec, self.bus, startup_timeout=lambda: self.config.reactor.startup_timeout
            )
            self.runners[spec.topic] = runner
            new.append(runner)
        async with anyio.create_task_group() as starters:
            for runner in new:
                starters.start_soon(self._start_one, tg, runner)

    async def _start_psi_triggers(self, tg: TaskGroup) -> None:
        """Arm the configured PSI triggers (or their polling fallback, with the reason)."""
        from reactor.signals.psi_trigger import PsiTrigger, run_psi_triggers

        psi = self.config.signals.psi
        if not (psi.enabled and psi.triggers):
            return
        triggers = [
            PsiTrigger(
                name=t.name,
                resource=t.resource,
                kind=t.kind,
                threshold_us=round(t.threshold * 1e6),
                window_us=round(t.window * 1e6),
                path=f"{t.cgroup.rstrip('/')}/{t.resource}.pressure" if t.cgroup else None,
                poll_period_s=t.poll_period,
            )
            for t in psi.triggers
        ]
        watchers = await tg.start(run_psi_triggers, self.fs, triggers, self.bus.publish)
        _log.info(
            "psi_triggers",
            triggers={
                w.trigger.topic: {"mode": w.mode, "fallback_reason": w.fallback_reason}
                for w in watchers
            },
        )

    async def _start_monitors(self, tg: TaskGroup) -> None:
        """Start the access monitors on the chosen backend."""
        cfg = self.config
        if not cfg.monitors and not cfg.damon.kdamonds:
            return
        assert self.backend is not None
        if not self.backend.usable:
            raise SourceFailed(
                "monitors",
                f"reactor.backend is {self.backend.requested}, which cannot run here: "
                f"{self.backend.reason}",
            )
        if self.backend.backend == "damon":
            self.damon = DamonMonitors(
                cfg,
                self._damon_fs(),
                self.bus,
                snapshot_every_s=cfg.reactor.tick,
            )
            with _start_within(cfg, START_MARGIN_S["damon"], "the DAMON monitors"):
                await tg.start(self.damon.run)
            return
        if cfg.damon.kdamonds:
            _log.warning(
                "damon_section_inactive",
                kdamonds=len(cfg.damon.kdamonds),
                reason=f"the backend is native: {self.backend.reason}",
            )
        self.native = NativeMonitors(cfg.monitors, self.fs, self.bus)
        with _start_within(cfg, START_MARGIN_S["native"], "the native monitors"):
            await tg.start(self.native.run)

    def _policy_context(self) -> PolicyContext:
        from reactor.policies import PolicyContext

        if self._policy_ctx is None:
            backend = "damon" if self.damon is not None else "native"
            self._policy_ctx = PolicyContext(
                config=self.config,
                bus=self.bus,
                fs=self.fs,
                backend=backend,
                damon=self.damon,
                native=self.native,
            )
        self._policy_ctx.config = self.config
        return self._policy_ctx

    async def _start_policies(self, configs: Sequence[PolicyConfig]) -> list[str]:
        """Start each enabled policy's task (after it took over its knob)."""
        from reactor.policies import build_policy

        if not configs:
            return []
        assert self._tg is not None
        ctx = self._policy_context()
        started = []
        for cfg in configs:
            if not cfg.enabled or cfg.name in self.policies:
                # running already: a reload during start-up started it (one instance
                # per name; a second would act beside the first and never be restored)
                continue
            policy = build_policy(cfg, ctx)
            if policy is None:
                _log.warning(
                    "policy_inactive",
                    policy=cfg.name,
                    kind=cfg.kind,
                    reason=f"{cfg.kind} policies are not in this version (docs/policies.md)",
                )
                continue
            self.policies[cfg.name] = policy
            self.on_shutdown(self._restore_of(policy))
            with _start_within(self.config, START_MARGIN_S["policy"], f"policy {cfg.name!r}"):
                await self._tg.start(policy.run)
            started.append(cfg.name)
            _log.info("policy_started", policy=cfg.name, kind=cfg.kind, impl=type(policy).__name__)
        return started

    def _restore_of(self, policy: Policy) -> Callable[[], Awaitable[None]]:
        """The shutdown step of ``policy``: restore its knob unless a reload already
        stopped it (and restored it then)."""

        async def restore() -> None:
            if self.policies.get(policy.name) is policy:
                await policy.restore()

        return restore

    def _damon_fs(self) -> KernelFS:
        """The filesystem the DAMON driver writes through: the only one that may write
        under /sys/kernel/mm/damon, made only once the backend chose DAMON."""
        if self.damon_fs is not None:
            return self.damon_fs
        if isinstance(self.fs, RealKernelFS):
            return RealKernelFS(self.fs.root, allow_damon_writes=True)
        return self.fs

    @staticmethod
    async def _start_one(tg: TaskGroup, runner: SourceRunner) -> None:
        await tg.start(runner.run)

    async def _report_loop(self, *, task_status: TaskStatus[None]) -> None:
        """One ``node_sample`` event per tick with the freshest value of every topic."""
        # Report just after the sources' reads of the same grid instant (DECIDE_PHASE:
        # never racing them, in the same wake-up). Every source that started has a value
        # by now (a rate source is ready only after its first sample, not its baseline).
        task_status.started()
        ticker = Ticker(lambda: self.config.reactor.tick, phase=DECIDE_PHASE, immediate=False)
        while True:
            tick = await ticker.next()
            self.ticks += 1
            if tick.skipped:
                self.tick_overruns += tick.skipped
                _log.warning("tick_overrun", task="report", skipped=tick.skipped)
            self._report(tick.now, tick.dt)
            for hook in self.tick_hooks:
                hook(tick.now, tick.dt)

    def _report(self, now: float, dt: float) -> None:
        values: dict[str, Any] = {}
        stale: list[str] = []
        for topic, runner in sorted(self.runners.items()):
            sample = self.bus.fresh(topic, now, runner.spec.cfg.max_age)
            if sample is None:
                stale.append(topic)
                continue
            summary = getattr(sample.value, "summary", None)
            values[topic] = summary() if callable(summary) else sample.value
        backend = "native" if self.native is not None else "damon"
        running = self.native is not None or self.damon is not None
        for monitor in self.config.monitors if running else ():
            topic = f"access.{monitor.name}"
            _, aggregation = monitor.intervals(backend)
            newest = self.bus.peek(topic)
            view = None if newest is None else newest.value
            sample = self.bus.fresh(
                topic, now, access_max_age(view, aggregation, self.config.reactor.tick)
            )
            if sample is None:
                stale.append(topic)
            else:
                values[topic] = sample.value.summary()
        emit = _log.info
        if self.config.reactor.log_ticks == "changes":
            # at info when the stale topics change and every TICK_LOG_HEARTBEAT reports
            last = self._sample_logged
            if last is not None and last[0] == stale and self.ticks - last[1] < TICK_LOG_HEARTBEAT:
                emit = _log.debug
            else:
                self._sample_logged = (stale, self.ticks)
        emit("node_sample", dt_s=round(dt, 6), stale=stale or None, **values)

    def status(self, now: float | None = None) -> StatusDocument:
        """The status document (docs/observability.md) as of ``now`` (monotonic seconds)."""
        from reactor.api.status import status_document

        policies = [p.status() for p in self.policies.values()]
        return status_document(self, now=now, policies=policies)

    # -- reload -------------------------------------------------------------------
    async def reload(self, config: Config) -> ReloadResult:
        """Apply a validated config: keep, update, start and stop source tasks.

        A task whose source reads the same files keeps running and takes the new period
        at its next deadline; only added or removed sources start or stop.
        """
        old = self.config
        config = apply_overrides(config, self.overrides)
        needs_restart = tuple(
            f"reactor.{k}"
            for k in _RESTART_KEYS
            if getattr(old.reactor, k) != getattr(config.reactor, k)
        ) + tuple(k for k in _RESTART_SECTIONS if getattr(old, k) != getattr(config, k))
        if old.reactor.log_level != config.reactor.log_level:
            if self._set_log_level is not None:
                self._set_log_level(config.reactor.log_level)
                _log.info(
                    "log_level_changed", old=old.reactor.log_level, new=config.reactor.log_level
                )
            else:
                needs_restart += ("reactor.log_level",)
        if old.signals.psi.triggers != config.signals.psi.triggers:
            needs_restart += ("signals.psi.triggers",)
        if old.monitors != config.monitors or old.damon != config.damon:
            why = await self._reconfigure_monitors(config)
            if why is not None:
                _log.warning("monitors_not_reloaded", reason=why)
                needs_restart += ("monitors/damon",)
        self.config = config
        specs = {s.topic: s for s in build_source_specs(config, self.fs)}
        kept, stopped = [], []
        for topic, runner in list(self.runners.items()):
            spec = specs.get(topic)
            if spec is not None and spec.identity == runner.spec.identity:
                runner.update(spec)
                kept.append(topic)
                del specs[topic]
            else:
                runner.stop()
                del self.runners[topic]
                stopped.append(topic)
        if specs and self._tg is not None:
            await self._start_runners(list(specs.values()))
        p_kept, p_started, p_stopped = await self._reload_policies(config)
        result = ReloadResult(
            applied=True,
            kept=tuple(kept),
            started=tuple(specs),
            stopped=tuple(stopped),
            policies_kept=p_kept,
            policies_started=p_started,
            policies_stopped=p_stopped,
            needs_restart=needs_restart,
        )
        _log.info(
            "reloaded",
            kept=result.kept,
            started=result.started or None,
            stopped=result.stopped or None,
            policies_kept=result.policies_kept or None,
            policies_started=result.policies_started or None,
            policies_stopped=result.policies_stopped or None,
        )
        if needs_restart:
            _log.warning(
                "reload_needs_restart",
                keys=list(needs_restart),
                effect="these keys take effect at the next start; the rest is applied",
            )
        return result

    async def _reconfigure_monitors(self, config: Config) -> str | None:
        """The monitors and ``damon`` sections of a reload, online where they can be
        (intervals, region bounds, schemes and quotas of running kdamonds and samplers);
        why not otherwise."""
        if self.damon is not None:
            try:
                return await self.damon.reconfigure(config)
            except ReactorError as exc:
                return f"commit failed: {exc}"
        if self.native is not None:
            if config.damon != self.config.damon:
                return "the damon section is inactive on the native backend"
            return self.native.reconfigure(config.monitors)
        return "no monitors are running"

    async def _reload_policies(
        self, config: Config
    ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """Keep policies of the same name and kind (bumpless: their controller continues
        from the output applied last), stop removed or disabled ones (restoring their
        knob), start new ones."""
        if self._tg is None:
            return (), (), ()
        if self._policy_ctx is not None:
            self._policy_ctx.config = config
        wanted = {p.name: p for p in config.policies if p.enabled}
        kept, stopped = [], []
        for name, policy in list(self.policies.items()):
            new = wanted.get(name)
            if new is not None and new.kind == policy.cfg.kind:
                policy.update(new)
                kept.append(name)
                del wanted[name]
                continue
            policy.cancel()
            del self.policies[name]
            with anyio.CancelScope(shield=True):
                try:
                    await policy.restore()
                except Exception as exc:  # the reload goes on
                    _restore_failed(exc, policy=name)
            stopped.append(name)
        started = await self._start_policies(list(wanted.values()))
        return tuple(kept), tuple(started), tuple(stopped)

    async def reload_from(self, path: str) -> ReloadResult:
        """Load, validate and apply ``path``; a broken file keeps the running config."""
        try:
            config = load_config(path)
        except ConfigError as exc:
            errors = tuple(str(i) for i in exc.issues)
            _log.error("reload_rejected", file=path, errors=list(errors), kept="old config")
            return ReloadResult(applied=False, errors=errors)
        return await self.reload(config)


async def serve(
    config: Config,
    *,
    config_path: str | None,
    fs: KernelFS | None = None,
    duration: float | None = None,
    record: str | None = None,
    overrides: Mapping[str, object] | None = None,
    set_log_level: Callable[[str], None] | None = None,
) -> None:
    """Run the daemon until SIGTERM/SIGINT (or ``duration`` seconds); SIGHUP reloads.

    The status socket starts first: a live socket at its path means another reactor runs
    there, and this one stops before touching anything. ``record`` appends every tick to
    a file (docs/observability.md). ``overrides`` (the command line's ``reactor`` keys)
    apply to ``config`` and to every config a SIGHUP reloads; ``set_log_level`` applies
    a reloaded ``reactor.log_level`` live.
    """
    from reactor.api.record import TickRecorder, config_digest, tick_record
    from reactor.api.status import serve_status

    reactor = Reactor(config, fs=fs, overrides=overrides, set_log_level=set_log_level)
    config = reactor.config
    api = config.api
    async with anyio.create_task_group() as tg:
        # first (`started` is logged later): a signal before the handlers are in would
        # meet Python's defaults (SIGINT: KeyboardInterrupt, exit status -2)
        await tg.start(_handle_signals, reactor, config_path, tg.cancel_scope.cancel)
        await tg.start(serve_status, api.status_socket_path(config.reactor.run_dir), reactor.status)
        if record is not None:
            recorder = TickRecorder(record, config_digest=config_digest(config))
            await tg.start(recorder.run)

            def submit(now: float, dt: float) -> None:
                recorder.submit(tick_record(reactor.status(now), stamp=now, dt_s=dt))

            reactor.tick_hooks.append(submit)
        await tg.start(reactor.run)
        if api.metrics.enabled:
            from reactor.api.metrics import serve_metrics

            port = await tg.start(serve_metrics, api.metrics.listen, reactor.status)
            _log.info("metrics_listening", listen=api.metrics.listen, port=port)
        if duration is not None:
            await anyio.sleep(duration)
            reactor.stop(f"--duration {duration:g} s elapsed")
            tg.cancel_scope.cancel()


async def _handle_signals(
    reactor: Reactor,
    config_path: str | None,
    cancel: Callable[[], None],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                if config_path is None:
                    _log.warning("reload_ignored", reason="no config file to reload")
                    continue
                _log.info("reload_requested", signal="SIGHUP", file=config_path)
                await reactor.reload_from(config_path)
            else:
                reactor.stop(signal.Signals(signum).name)
                cancel()
                return


def _restore_failed(exc: Exception, **fields: Any) -> None:
    """Log a restore step that raised. A kernel or config error is expected and named;
    anything else is a bug, logged with its traceback. Either way the other steps run:
    one broken restore must not leave the rest of what reactor changed unrestored."""
    if isinstance(exc, ReactorError | OSError):
        _log.error("restore_failed", error=str(exc), **fields)
    else:
        _log.error("restore_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc, **fields)
