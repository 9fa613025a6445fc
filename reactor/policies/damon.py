"""Reclaim on the DAMON backend: the quota of a DAMOS pageout scheme, committed online.

The scheme is the policy's ``scheme`` (``k/c/s`` into the ``damon:`` section, which the
driver lays out after the monitors' kdamonds) or a pageout scheme reactor adds to the
monitor's own kdamond (context 0, after its snapshot ``stat`` scheme) with the policy's
access pattern (``max_access``, ``min_age``).

* ``tuner: reactor``: reactor's controller sets ``sz_bytes`` per ``reset_interval_ms``
  (= ``quota.per``) each tick; a change of more than 1 % is staged and ``commit``-ed to
  the running kdamond (same pid, nothing restarted).
* ``tuner: kernel``: reactor writes DAMOS quota goals once (``some_mem_psi_us`` with
  target = share x reset interval in µs for the pressure goal; ``user_input`` for what
  the kernel cannot measure: refault rate in bytes/s, ratios in basis points, user
  signals x 1000) with ``sz_bytes`` = ``quota.max`` as the cap, then each tick feeds the
  ``user_input`` goals' current values (``commit_schemes_quota_goals``) and reads the
  kernel's effective quota (``update_schemes_effective_quotas``), which it reports.

What acted: the scheme's ``sz_tried`` growth is what DAMON asked the ops layer to page
out, ``sz_applied`` growth what it paged out (measured by the kernel's reclaim). At
shutdown a scheme from the ``damon:`` section gets its original quotas back (when its
kdamond still runs); reactor's own scheme goes with its kdamond.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import anyio

from reactor.config.damon import Kdamond, QuotaGoal, Quotas, Scheme
from reactor.errors import ReactorError
from reactor.policies.base import Acted, PolicyContext, read_goals
from reactor.policies.quota import QuotaPolicy

if TYPE_CHECKING:
    from controllers.compose import CompositeOutput
    from reactor.config import GoalConfig, PolicyConfig
    from reactor.damon.driver import DamonDriver

__all__ = ("DamonReclaim", "kernel_goals", "pageout_scheme")

_LOCKS: weakref.WeakKeyDictionary[Any, anyio.Lock] = weakref.WeakKeyDictionary()


def _lock(driver: DamonDriver) -> anyio.Lock:
    """One lock per driver: policies sharing a kdamond never interleave stage+commit."""
    lock = _LOCKS.get(driver)
    if lock is None:
        lock = _LOCKS[driver] = anyio.Lock()
    return lock


def pageout_scheme(cfg: PolicyConfig, sz_bytes: int) -> Scheme:
    """The pageout scheme reactor adds for a policy without ``scheme``."""
    assert cfg.quota is not None
    return Scheme.model_validate(
        {
            "action": "pageout",
            "access_pattern": {
                "sz_bytes": {"min": 4096, "max": "max"},
                "nr_accesses": {"min": "0 %", "max": f"{cfg.max_access * 100:g} %"},
                "age": {"min": f"{cfg.min_age:g} s", "max": "max"},
            },
            "quotas": {
                "sz_bytes": sz_bytes,
                "reset_interval_ms": round(cfg.quota.per * 1000),
            },
        }
    )


def _user_scale(goal: GoalConfig) -> float:
    """user_input values are integers: ratios in bp, rates in bytes/s, user x 1000."""
    if goal.metric == "refault_rate":
        return 1.0
    if goal.metric == "user":
        return 1000.0
    return 10_000.0


def kernel_goals(cfg: PolicyConfig) -> tuple[QuotaGoal, ...]:
    """DAMOS quota goals for ``tuner: kernel`` (kernel metrics where one exists)."""
    assert cfg.quota is not None
    reset_us = cfg.quota.per * 1e6
    goals = []
    for goal in cfg.goals:
        if goal.metric == "memory_psi_some" and cfg.cgroup is None:
            target = max(1, round(goal.target * reset_us))
            goals.append(QuotaGoal(metric="some_mem_psi_us", target_value=target))
        elif goal.metric == "node_used_ratio":
            target = max(1, round(goal.target * 10_000))
            goals.append(QuotaGoal(metric="node_mem_used_bp", nid=goal.node, target_value=target))
        else:
            target = max(1, round(goal.target * _user_scale(goal)))
            goals.append(QuotaGoal(metric="user_input", target_value=target))
    return tuple(goals)


class DamonReclaim(QuotaPolicy):
    """A pageout scheme's quota, tuned by reactor or by the kernel (module doc)."""

    output_unit = "bytes"

    def __init__(self, cfg: PolicyConfig, ctx: PolicyContext) -> None:
        super().__init__(cfg, ctx)
        assert ctx.damon is not None
        self.driver = ctx.damon.driver
        self.k, self.c, self.s = self._where()
        self.committed: float | None = None
        self.original: Quotas | None = None
        self._stats: tuple[int, int] | None = None
        self.effective_bytes: int | None = None

    def _where(self) -> tuple[int, int, int]:
        config = self.ctx.config
        if self.cfg.scheme is not None:
            k, c, s = (int(x) for x in self.cfg.scheme.split("/"))
            return len(config.monitors) + k, c, s
        names = [m.name for m in config.monitors]
        return names.index(self.cfg.monitor), 0, -1

    def _model(self) -> Kdamond:
        return self.driver.read_back(self.k)

    def _with_quotas(self, kd: Kdamond, quotas: Quotas, scheme: Scheme | None = None) -> Kdamond:
        ctx = kd.contexts[self.c]
        schemes = list(ctx.schemes)
        if scheme is not None:
            schemes.append(scheme)
        schemes[self.s] = schemes[self.s].model_copy(update={"quotas": quotas})
        contexts = list(kd.contexts)
        contexts[self.c] = ctx.model_copy(update={"schemes": tuple(schemes)})
        return kd.model_copy(update={"contexts": tuple(contexts)})

    def _quotas(self, base: Quotas, output: float) -> Quotas:
        assert self.cfg.quota is not None
        reset_ms = round(self.cfg.quota.per * 1000)
        if self.cfg.tuner == "kernel":
            return base.model_copy(
                update={
                    "sz_bytes": self.cfg.quota.max,
                    "reset_interval_ms": reset_ms,
                    "goals": kernel_goals(self.cfg),
                }
            )
        return base.model_copy(
            update={"sz_bytes": max(4096, int(output)), "reset_interval_ms": reset_ms, "goals": ()}
        )

    async def start(self) -> None:
        """Add or take over the scheme and commit its first quota (online)."""
        async with _lock(self.driver):
            kd = self._model()
            added = None
            if self.s < 0:
                added = pageout_scheme(self.cfg, int(self.state.output))
                self.s = len(kd.contexts[self.c].schemes)
                base = added.quotas
            else:
                base = kd.contexts[self.c].schemes[self.s].quotas
                self.original = base
            new = self._with_quotas(kd, self._quotas(base, self.state.output), added)
            await self._commit(new, "takeover")
        self.committed = self.state.output

    async def _commit(self, kd: Kdamond, why: str) -> None:
        scheme = kd.contexts[self.c].schemes[self.s]
        fields = {
            "kdamond": self.k,
            "context": self.c,
            "scheme": self.s,
            "why": why,
            "sz_bytes": scheme.quotas.sz_bytes,
            "reset_interval_ms": scheme.quotas.reset_interval_ms,
            "goals": len(scheme.quotas.goals),
        }
        if self.dry_run:
            self.log.info("damon_commit_dry_run", **fields)
            return
        await self.driver.commit(self.k, kd)
        self.log.debug("damon_committed", **fields)

    async def restore(self) -> None:
        """Put a ``damon:`` scheme's original quotas back while its kdamond runs."""
        if self.original is None or self.dry_run:
            return
        if self.driver.state(self.k) != "on":
            return
        async with _lock(self.driver):
            kd = self._model()
            await self.driver.commit(self.k, self._with_quotas(kd, self.original))
        self.log.info("damon_quota_restored", kdamond=self.k, scheme=self.s)

    async def _acted(self) -> Acted:
        """Growth of the scheme's sz_tried (asked) and sz_applied (paged out)."""
        if self.dry_run:
            return Acted()
        stats = (await self.driver.update_schemes_stats(self.k))[self.s]
        now = (stats.sz_tried_bytes, stats.sz_applied_bytes)
        last, self._stats = self._stats, now
        if last is None:
            return Acted(fields={"qt_exceeds": stats.qt_exceeds})
        return Acted(
            requested_bytes=max(0, now[0] - last[0]),
            measured_bytes=max(0, now[1] - last[1]),
            fields={"qt_exceeds": stats.qt_exceeds},
        )

    async def act(self, decision: CompositeOutput, now: float, dt: float) -> Acted:
        """Commit the new quota when it moved by more than 1 %; report the scheme's stats."""
        output = decision.output
        if self.committed is None or abs(output - self.committed) > 0.01 * self.committed:
            async with _lock(self.driver):
                kd = self._model()
                base = kd.contexts[self.c].schemes[self.s].quotas
                await self._commit(self._with_quotas(kd, self._quotas(base, output)), "tick")
            self.committed = output
        acted = await self._acted()
        acted.fields.update(kdamond=self.k, scheme=self.s, committed_sz_bytes=int(output))
        return acted

    async def tick(self, now: float, dt: float) -> None:
        """reactor's tuner: the shared quota tick; kernel's: feed goals, read its quota."""
        if self.cfg.tuner != "kernel":
            await super().tick(now, dt)
            return
        inputs = read_goals(self.ctx.bus, self.cfg, self.ctx.config, now)
        self.goal_inputs = inputs
        stale = [why for g in inputs if (why := g.why_missing) is not None]
        feed: dict[tuple[int, int], int] = {}
        for i, (goal, gin) in enumerate(zip(self.cfg.goals, inputs, strict=True)):
            if kernel_goals(self.cfg)[i].metric != "user_input" or gin.value is None:
                continue
            feed[(self.s, i)] = max(0, round(gin.value * _user_scale(goal)))
        try:
            if feed and not self.dry_run:
                await self.driver.commit_quota_goals(self.k, feed)
            effective = None
            if not self.dry_run:
                effective = (await self.driver.update_schemes_effective_quotas(self.k))[self.s]
        except ReactorError as exc:
            self.log.warning("damon_read_failed", error=str(exc))
            return
        self.effective_bytes = effective
        acted = await self._acted()
        acted.fields.update(kdamond=self.k, scheme=self.s, fed=len(feed) or None)
        self.emit_tick(
            inputs={g.name: g.value for g in inputs},
            terms={"tuner": "kernel", "effective_bytes": effective, "fed_goals": len(feed)},
            output=None if effective is None else float(effective),
            acted=acted,
            held="stale: " + "; ".join(stale) if stale and not feed else None,
            stale=stale,
        )
