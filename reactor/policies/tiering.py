"""Tiering: keep the fast tier's used ratio at its target while the hottest memory sits in it.

Two quotas (bytes per ``quota.per``), each from its own controller over the policy's goals
(:func:`~reactor.policies.control.quota_controller` with knob ``demote`` or ``promote``):

* **demotion** rises while the fast tier is above its target (demoting lowers its use:
  direction -1) and falls toward ``quota.min`` below it;
* **promotion** rises while the fast tier is below its target (direction +1) and hot
  memory sits off the fast tier; with no hot memory off the fast tier (native backend:
  measured by querying the hot pages' nodes) its controller holds, so it does not wind up.

At the target both quotas settle and the two moves trade places: hot pages come up,
cold pages go down, the ratio stays. Fast and slow nodes are ``fast_nodes`` /
``slow_nodes`` from the config, else the tier view (``tiers`` topic): the tier with the
lowest id that has memory is fast, the next one slow. Moves go to the node of the
destination tier with the most free memory.

* **native** (:class:`NativeTiering`): cold regions of ``access.<monitor>`` (at most
  ``max_access`` of the samples, for ``min_age``) and hot regions (at least
  ``hot_access``) are queried page by page (``move_pages`` query mode); the pages that
  are present and not yet on the destination go to
  :meth:`~reactor.actuators.migrate.MigrateActuator.move_pages`, coldest (hottest) first,
  up to the tick's share of each quota (cut to ``max_bytes_per_tick``, then the
  ``rate_limit`` bucket shared by both directions). Demotion runs first, so a full fast
  tier makes room before promotion fills it. Measured: pages the kernel reports on the
  destination after the call that were elsewhere before.
* **damon** (:class:`DamonTiering`): reactor adds two schemes to the monitor's kdamond
  (context 0, after the snapshot scheme): ``migrate_cold`` (``target_nid`` a slow node,
  the cold access pattern) and ``migrate_hot`` (``target_nid`` a fast node, nr_accesses
  from ``hot_access``); each tick both ``sz_bytes`` are staged and ``commit``-ed online
  (same kdamond pid) when one moved by more than 1 %. The quotas are capped at
  ``rate_limit x per`` and ``max_bytes_per_tick x per / tick``. Measured: the schemes'
  ``sz_applied`` growth (requested: ``sz_tried`` growth); the log adds the vmstat
  promotion/demotion/migration rates. At shutdown or removal the two schemes become
  ``stat`` schemes (indexes stay, so other policies on the kdamond keep theirs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt

from controllers.base import LogValue
from reactor.actuators.base import RefusedAction, Span
from reactor.actuators.migrate import MigrateActuator, NodeUnavailable
from reactor.config.damon import FAILURES_UNCHARGED, Kdamond, Scheme
from reactor.errors import KernelInterfaceError, ReactorError, TargetVanished
from reactor.policies.base import PAGE_SIZE, Acted, Policy, PolicyContext, read_goals
from reactor.policies.control import carry_state, quota_controller
from reactor.policies.reclaim import policy_limits
from reactor.policies.regions import Candidate, PickCache, cold_regions, hot_regions

if TYPE_CHECKING:
    from controllers.compose import CompositeOutput, CompositeState, GoalComposite
    from reactor.config import PolicyConfig
    from reactor.signals.tiers import Tiers

__all__ = (
    "DamonTiering",
    "NativeTiering",
    "TierNodes",
    "TieringPolicy",
    "migrate_schemes",
    "off_node_spans",
    "tier_nodes",
)


@dataclass(frozen=True)
class TierNodes:
    """The fast and slow nodes, and the node each direction moves pages to."""

    fast: tuple[int, ...]
    slow: tuple[int, ...]
    promote_to: int
    demote_to: int


def _freest(tiers: Tiers | None, nodes: Sequence[int]) -> int:
    """The node of ``nodes`` with the most free memory (the first without a view)."""
    if tiers is None:
        return nodes[0]
    best, free = nodes[0], -1
    for node in nodes:
        try:
            have = tiers.node(node).free_bytes  # the per-CPU free lists counted
        except (KeyError, AttributeError, ValueError):
            continue
        if have > free:
            best, free = node, have
    return best


def tier_nodes(
    fast_cfg: Sequence[int], slow_cfg: Sequence[int], tiers: Tiers | None
) -> TierNodes | None:
    """Fast and slow nodes from the config, else from the tier view (lowest tier id with
    memory = fast, the next = slow); None when there is no slow tier to move to."""
    fast, slow = tuple(fast_cfg), tuple(slow_cfg)
    if (not fast or not slow) and tiers is not None:
        with_memory = [t for t in sorted(tiers.tiers, key=lambda t: t.tier_id) if t.total_bytes]
        if not fast and with_memory:
            fast = tuple(with_memory[0].nodes)
        if not slow:
            rest = [t for t in with_memory if not set(t.nodes) & set(fast)]
            slow = tuple(rest[0].nodes) if rest else ()
    if not fast or not slow:
        return None
    return TierNodes(fast, slow, _freest(tiers, fast), _freest(tiers, slow))


def off_node_spans(
    status: npt.NDArray[np.int32], pages: npt.NDArray[np.uint64], nodes: Sequence[int]
) -> tuple[list[Span], int, int]:
    """Coalesced spans of the present pages that are not on any of ``nodes``, and the
    bytes (present) on and off ``nodes``. ``status`` is move_pages' per-page answer."""
    present = status >= 0
    on = present & np.isin(status, np.asarray(nodes, dtype=np.int32))
    off = present & ~on
    spans: list[Span] = []
    idx = np.flatnonzero(off)
    if len(idx):
        breaks = np.flatnonzero(np.diff(pages[idx]) != PAGE_SIZE) + 1
        for run in np.split(idx, breaks):
            spans.append((int(pages[run[0]]), len(run) * PAGE_SIZE))
    return spans, int(on.sum()) * PAGE_SIZE, int(off.sum()) * PAGE_SIZE


def _span_bytes(spans: Sequence[Span]) -> int:
    return sum(n for _, n in spans)


class TieringPolicy(Policy):
    """Two quota controllers (demote, promote) over the policy's goals (module doc)."""

    output_unit = "bytes"

    def __init__(self, cfg: PolicyConfig, ctx: PolicyContext) -> None:
        super().__init__(cfg, ctx)
        self.demote: GoalComposite = quota_controller(cfg, "demote")
        self.promote: GoalComposite = quota_controller(cfg, "promote")
        self.demote_state: CompositeState = self.demote.initial_state()
        self.promote_state: CompositeState = self.promote.initial_state()
        #: False once a tick saw no hot memory off the fast tier (promotion then holds).
        self.hot_off_fast: bool = True
        self.nodes: TierNodes | None = None

    def update(self, cfg: PolicyConfig) -> None:
        """New goals or bounds, both quotas continuing from the ones applied last."""
        super().update(cfg)
        demote, promote = quota_controller(cfg, "demote"), quota_controller(cfg, "promote")
        self.demote_state = carry_state(self.demote, self.demote_state, demote)
        self.promote_state = carry_state(self.promote, self.promote_state, promote)
        self.demote, self.promote = demote, promote
        self.log.info("policy_updated", goals=len(cfg.goals))

    def tiers(self, now: float) -> Tiers | None:
        """The newest fresh tier view (None when missing or stale)."""
        sample = self.ctx.bus.fresh("tiers", now, self.ctx.config.signals.tiers.max_age)
        return None if sample is None else sample.value

    def quota_cap(self, tick_s: float) -> float:
        """The largest quota per ``quota.per`` the limits allow (rate and per-tick caps)."""
        assert self.cfg.quota is not None
        cap = float(self.cfg.quota.max)
        if self.cfg.rate_limit is not None:
            cap = min(cap, self.cfg.rate_limit * self.cfg.quota.per)
        if self.cfg.max_bytes_per_tick is not None:
            cap = min(cap, self.cfg.max_bytes_per_tick * self.cfg.quota.per / tick_s)
        return max(cap, 4096.0)

    async def tick(self, now: float, dt: float) -> None:
        """Goals -> both controllers -> :meth:`act` with both quotas -> one log line."""
        inputs = read_goals(self.ctx.bus, self.cfg, self.ctx.config, now)
        self.goal_inputs = inputs
        stale = [why for g in inputs if (why := g.why_missing) is not None]
        measurement = {g.name: g.value for g in inputs}
        cap = self.quota_cap(self.ctx.config.reactor.tick)
        self.demote_state, d_dec = self.demote.step(self.demote_state, measurement, now)
        if d_dec.output > cap:
            self.demote_state = self.demote.track(self.demote_state, cap)
        promote_in = measurement if self.hot_off_fast else None
        self.promote_state, p_dec = self.promote.step(self.promote_state, promote_in, now)
        if p_dec.output > cap:
            self.promote_state = self.promote.track(self.promote_state, cap)
        demote_q, promote_q = self.demote_state.output, self.promote_state.output
        self.nodes = tier_nodes(self.cfg.fast_nodes, self.cfg.slow_nodes, self.tiers(now)) or (
            self.nodes
        )
        held: str | None = None
        if d_dec.held is not None and p_dec.held is not None and stale:
            held = "missing_sample: " + "; ".join(stale)
        elif self.nodes is None:
            held = "no slow tier: set fast_nodes and slow_nodes, or enable the tiers signal"
        acted = Acted() if held is not None else await self.act(demote_q, promote_q, now, dt)
        terms: dict[str, LogValue] = {
            "demote_quota": demote_q,
            "promote_quota": promote_q,
            "binding_goal": d_dec.binding,
            "promote_held": p_dec.held,
            "hot_off_fast": self.hot_off_fast,
        }
        terms |= _prefixed("demote", d_dec)
        terms |= _prefixed("promote", p_dec)
        if self.nodes is not None:
            acted.fields.update(
                fast_nodes=list(self.nodes.fast),
                slow_nodes=list(self.nodes.slow),
            )
        self.emit_tick(
            inputs={g.name: g.value for g in inputs},
            terms=terms,
            output=demote_q + promote_q,
            acted=acted,
            held=held,
            stale=stale,
        )

    async def act(self, demote_quota: float, promote_quota: float, now: float, dt: float) -> Acted:
        """Move pages within both quotas; report what measurably moved."""
        raise NotImplementedError


def _prefixed(name: str, decision: CompositeOutput) -> dict[str, LogValue]:
    return {
        f"{name}.{k}": v
        for k, v in decision.log_fields().items()
        if k not in ("output", "binding_goal") and not k.startswith("allowed.")
    }


class NativeTiering(TieringPolicy):
    """move_pages of the monitor's cold regions down and hot regions up (module doc)."""

    def __init__(self, cfg: PolicyConfig, ctx: PolicyContext) -> None:
        super().__init__(cfg, ctx)
        self.actuator = MigrateActuator(
            ctx.fs, limits=policy_limits(cfg, ctx.config.reactor.dry_run)
        )
        self._cold, self._hot = PickCache(), PickCache()

    def update(self, cfg: PolicyConfig) -> None:
        """New settings; a changed rate limit gets a fresh bucket."""
        old = self.cfg
        super().update(cfg)
        if cfg.rate_limit != old.rate_limit:
            self.actuator = MigrateActuator(
                self.ctx.fs, limits=policy_limits(cfg, self.ctx.config.reactor.dry_run)
            )

    def _by_pid(self, cands: list[Candidate]) -> dict[int, list[Candidate]]:
        out: dict[int, list[Candidate]] = {}
        for cand in cands:
            if cand.pid in self.cfg.exclude.pids:
                continue
            out.setdefault(cand.pid, []).append(cand)
        return out

    def _query(
        self, pid: int, cands: list[Candidate], dest: Sequence[int], stop_after: int | None
    ) -> tuple[list[Span], int, int]:
        """Spans of ``cands`` (in order) present and not on ``dest``, with bytes on and
        off ``dest``; stops once ``stop_after`` bytes were found (worker thread)."""
        spans: list[Span] = []
        on = off = 0
        for cand in cands:
            lo = cand.start - cand.start % PAGE_SIZE
            hi = -(-(cand.start + cand.length) // PAGE_SIZE) * PAGE_SIZE
            pages = np.arange(lo, hi, PAGE_SIZE, dtype=np.uint64)
            status = self.actuator.calls.move_pages(pid, pages, None, 0)
            got, c_on, c_off = off_node_spans(status, pages, dest)
            spans += got
            on += c_on
            off += c_off
            if stop_after is not None and off >= stop_after:
                break
        return spans, on, off

    async def _move(
        self,
        cands: list[Candidate],
        dest: Sequence[int],
        node: int,
        budget: int,
        what: str,
        *,
        survey: bool,
    ) -> dict[str, Any]:
        """Move up to ``budget`` bytes of ``cands`` to ``node``; ``survey`` queries every
        candidate (to report where the hot set is) instead of stopping at the budget."""
        res: dict[str, Any] = {"requested": 0, "moved": 0, "on": 0, "off": 0, "outcomes": []}
        left = budget
        for pid, pcands in self._by_pid(cands).items():
            if left <= 0 and not survey:
                break
            try:
                spans, on, off = await anyio.to_thread.run_sync(
                    partial(self._query, pid, pcands, dest, None if survey else left)
                )
            except (TargetVanished, KernelInterfaceError):
                continue  # the process exited between the snapshot and now
            res["on"] += on
            res["off"] += off
            if left <= 0 or not spans:
                continue
            cut: list[Span] = []
            for start, length in spans:
                take = min(length, left - _span_bytes(cut))
                if take <= 0:
                    break
                cut.append((start, take))
            try:
                outcome = await self.actuator.move_pages(
                    pid, cut, node, reason=f"policy {self.cfg.name}: {what}"
                )
            except NodeUnavailable:
                raise
            except RefusedAction as exc:
                self.note_once(f"refused-{pid}", "policy_note", note=str(exc), pid=pid)
                continue
            issued = outcome.issued_bytes or int(outcome.measured.get("present_pages", 0)) * (
                PAGE_SIZE
            )
            left -= issued
            res["requested"] += issued
            res["moved"] += (outcome.pages_moved or 0) * PAGE_SIZE
            res["outcomes"].append(
                {
                    "pid": pid,
                    "to": node,
                    "status": outcome.status,
                    "issued_bytes": issued,
                    "pages_moved": outcome.pages_moved,
                    "skipped": outcome.skipped,
                }
            )
        return res

    async def act(self, demote_quota: float, promote_quota: float, now: float, dt: float) -> Acted:
        """Demote cold regions, then promote hot ones, each within its tick's bytes."""
        assert self.nodes is not None
        nodes = self.nodes
        d_budget = self.tick_bytes(demote_quota, dt)
        p_budget = self.tick_bytes(promote_quota, dt)
        view, why = self.access_view(now)
        fields: dict[str, Any] = {"demote_budget_bytes": d_budget, "promote_budget_bytes": p_budget}
        if view is None:
            return Acted(fields={**fields, "access": why})
        max_access, min_age, hot_access = self.cfg.max_access, self.cfg.min_age, self.cfg.hot_access
        cold = self._cold.get(
            view,
            (max_access, min_age),
            partial(cold_regions, view, max_access=max_access, min_age_s=min_age),
        )
        hot = self._hot.get(view, (hot_access,), partial(hot_regions, view, hot_access=hot_access))
        try:
            down = await self._move(
                cold, nodes.slow, nodes.demote_to, d_budget, "cold: demote", survey=False
            )
            up = await self._move(
                hot, nodes.fast, nodes.promote_to, p_budget, "hot: promote", survey=True
            )
        except NodeUnavailable as exc:
            self.note_once("node-unavailable", "policy_note", note=str(exc))
            return Acted(fields={**fields, "error": str(exc)})
        # hot bytes off the fast tier before this tick's promotion, less what it moved
        self.hot_off_fast = up["off"] - up["moved"] > 0
        fields.update(
            cold_regions=len(cold),
            hot_regions=len(hot),
            demoted_bytes=down["moved"],
            promoted_bytes=up["moved"],
            hot_fast_bytes=up["on"] + up["moved"],
            hot_slow_bytes=max(0, up["off"] - up["moved"]),
            outcomes=(down["outcomes"] + up["outcomes"]) or None,
        )
        return Acted(
            requested_bytes=down["requested"] + up["requested"],
            measured_bytes=down["moved"] + up["moved"],
            fields=fields,
        )


def migrate_schemes(
    cfg: PolicyConfig, nodes: TierNodes, cold_sz: int, hot_sz: int, *, fail_charge: bool = False
) -> tuple[Scheme, Scheme]:
    """The ``migrate_cold`` and ``migrate_hot`` schemes reactor adds for a tiering policy.

    ``fail_charge`` (the kernel has ``fail_charge_num/denom``, 7.2): bytes a scheme tried
    but did not move are charged nothing, so each quota buys pages that changed node.
    Without it DAMOS charges every tried region's whole size, and the regions that move
    nothing rank first for as long as they stay: for migrate_cold the oldest cold regions,
    which are unmapped gaps between the target's mappings and pages already on the slow
    node; for migrate_hot the hot pages already on the fast node. In the lane (7.2.12,
    TCG) migrate_cold so spent its whole 8 MiB every second and moved nothing, for 15 s.
    """
    assert cfg.quota is not None
    reset_ms = round(cfg.quota.per * 1000)
    charge = FAILURES_UNCHARGED if fail_charge else {}
    cold = Scheme.model_validate(
        {
            "action": "migrate_cold",
            "target_nid": nodes.demote_to,
            "access_pattern": {
                "sz_bytes": {"min": 4096, "max": "max"},
                "nr_accesses": {"min": "0 %", "max": f"{cfg.max_access * 100:g} %"},
                "age": {"min": f"{cfg.min_age:g} s", "max": "max"},
            },
            "quotas": {"sz_bytes": max(4096, cold_sz), "reset_interval_ms": reset_ms, **charge},
        }
    )
    hot = Scheme.model_validate(
        {
            "action": "migrate_hot",
            "target_nid": nodes.promote_to,
            "access_pattern": {
                "sz_bytes": {"min": 4096, "max": "max"},
                "nr_accesses": {"min": f"{cfg.hot_access * 100:g} %", "max": "100 %"},
                "age": {"min": 0, "max": "max"},
            },
            "quotas": {"sz_bytes": max(4096, hot_sz), "reset_interval_ms": reset_ms, **charge},
        }
    )
    return cold, hot


class DamonTiering(TieringPolicy):
    """migrate_cold / migrate_hot schemes on the monitor's kdamond (module doc)."""

    def __init__(self, cfg: PolicyConfig, ctx: PolicyContext) -> None:
        super().__init__(cfg, ctx)
        assert ctx.damon is not None
        self.driver = ctx.damon.driver
        names = [m.name for m in ctx.config.monitors]
        self.k = names.index(cfg.monitor)
        self.c = 0
        #: scheme indexes of migrate_cold and migrate_hot (set by start).
        self.s_cold = -1
        self.s_hot = -1
        self.committed: tuple[float, float] | None = None
        self._stats: dict[int, tuple[int, int]] = {}
        self._scheme_nodes: tuple[int, int] | None = None

    def _initial_nodes(self) -> TierNodes | None:
        """Nodes from the config or a tier view read now (the schemes need them at start)."""
        tiers = self.tiers(anyio.current_time())
        if tiers is None and not (self.cfg.fast_nodes and self.cfg.slow_nodes):
            from reactor.signals.tiers import TiersPoller

            try:
                tiers = TiersPoller(self.ctx.fs).poll(anyio.current_time())
            except ReactorError:
                tiers = None
        return tier_nodes(self.cfg.fast_nodes, self.cfg.slow_nodes, tiers)

    def _with(
        self, kd: Kdamond, updates: Mapping[int, Mapping[str, Any]], add: Sequence[Scheme] = ()
    ) -> Kdamond:
        schemes = list(kd.contexts[self.c].schemes) + list(add)
        for s, upd in updates.items():
            schemes[s] = schemes[s].model_copy(update=dict(upd))
        return kd.with_schemes(self.c, schemes)

    async def _commit(self, kd: Kdamond, why: str, **fields: Any) -> None:
        info = {"kdamond": self.k, "schemes": [self.s_cold, self.s_hot], "why": why, **fields}
        if self.dry_run:
            self.log.info("damon_commit_dry_run", **info)
            return
        await self.driver.commit(self.k, kd)
        self.log.debug("damon_committed", **info)

    async def start(self) -> None:
        """Add both schemes to the running kdamond with their first quotas (online)."""
        from reactor.policies.damon import _lock

        self.nodes = self._initial_nodes()
        if self.nodes is None:
            self.log.warning(
                "policy_note",
                note="no slow tier found: set fast_nodes and slow_nodes, or enable tiers; "
                "the policy holds",
            )
            return
        ops = self.ctx.config.monitor(self.cfg.monitor).ops
        if ops != "paddr" and not self.driver.features.has("vaddr_migrate"):
            self.log.warning(
                "policy_note",
                note="this kernel has no migrate_hot/migrate_cold for vaddr (6.17+): use ops "
                "paddr or the native backend; the policy holds",
            )
            self.nodes = None
            return
        async with _lock(self.driver):
            kd = await self.driver.staged(self.k)
            n = len(kd.contexts[self.c].schemes)
            cold, hot = migrate_schemes(
                self.cfg,
                self.nodes,
                int(self.demote_state.output),
                int(self.promote_state.output),
                fail_charge=self.driver.features.has("fail_charge"),
            )
            self.s_cold, self.s_hot = n, n + 1
            try:
                await self._commit(
                    self._with(kd, {}, (cold, hot)),
                    "takeover",
                    demote_to=self.nodes.demote_to,
                    promote_to=self.nodes.promote_to,
                )
            except BaseException:
                # nothing was added: restore() must not rewrite schemes that do not exist
                self.s_cold = self.s_hot = -1
                raise
        self._scheme_nodes = (self.nodes.demote_to, self.nodes.promote_to)
        self.committed = (self.demote_state.output, self.promote_state.output)
        self.baseline_new_schemes()

    def baseline_new_schemes(self) -> None:
        """Both schemes were just added: their stats start at zero, so the first tick
        counts what they applied since the commit (without this baseline the first stats
        read only set it, and a set promoted before the first tick was never reported:
        seen in the guest, 15 MiB promoted within 3 s of the start, 0 reported)."""
        self._stats = {self.s_cold: (0, 0), self.s_hot: (0, 0)}

    async def restore(self) -> None:
        """Turn both schemes into ``stat`` schemes while the kdamond runs (indexes stay)."""
        from reactor.policies.damon import _lock

        if self.s_cold < 0 or self.dry_run or await self.driver.read_state(self.k) != "on":
            return
        async with _lock(self.driver):
            kd = await self.driver.staged(self.k)
            off = {"action": "stat", "target_nid": None}
            await self.driver.commit(self.k, self._with(kd, {self.s_cold: off, self.s_hot: off}))
        self.log.info("damon_tiering_stopped", kdamond=self.k, schemes=[self.s_cold, self.s_hot])

    async def _acted(self) -> Acted:
        if self.dry_run:
            return Acted()
        stats = await self.driver.update_schemes_stats(self.k)
        acted = Acted()
        for s, name in ((self.s_cold, "demoted"), (self.s_hot, "promoted")):
            now = (stats[s].sz_tried_bytes, stats[s].sz_applied_bytes)
            last = self._stats.get(s)
            self._stats[s] = now
            if last is None:
                continue
            tried, applied = max(0, now[0] - last[0]), max(0, now[1] - last[1])
            acted.requested_bytes += tried
            acted.measured_bytes += applied
            acted.fields[f"{name}_bytes"] = applied
            acted.fields[f"{name}_tried_bytes"] = tried
        return acted

    def _vmstat_rates(self) -> dict[str, float | None]:
        sample = self.ctx.bus.peek("vmstat")
        if sample is None:
            return {}
        rates = getattr(sample.value, "rates_per_s", None)
        if rates is None:
            return {}
        demote = [v for k, v in rates.items() if k.startswith("pgdemote_")]
        return {
            "pgpromote_success_per_s": rates.get("pgpromote_success"),
            "pgdemote_per_s": sum(demote) if demote else None,
            "pgmigrate_success_per_s": rates.get("pgmigrate_success"),
        }

    async def act(self, demote_quota: float, promote_quota: float, now: float, dt: float) -> Acted:
        """Commit both quotas when one moved by > 1 % (or a node changed); read stats."""
        from reactor.policies.damon import _lock

        if self.s_cold < 0 or self.nodes is None:
            return Acted(fields={"why": "schemes not installed (no slow tier at start)"})
        nodes = (self.nodes.demote_to, self.nodes.promote_to)
        old = self.committed
        moved = old is None or any(
            abs(new - was) > 0.01 * was
            for new, was in ((demote_quota, old[0]), (promote_quota, old[1]))
        )
        try:
            if moved or nodes != self._scheme_nodes:
                async with _lock(self.driver):
                    kd = await self.driver.staged(self.k)
                    upd = self._quota_updates(kd, demote_quota, promote_quota, nodes)
                    await self._commit(
                        self._with(kd, upd),
                        "tick",
                        demote_sz=int(demote_quota),
                        promote_sz=int(promote_quota),
                    )
                self.committed = (demote_quota, promote_quota)
                self._scheme_nodes = nodes
            acted = await self._acted()
        except ReactorError as exc:
            self.log.warning("damon_commit_failed", error=str(exc))
            return Acted(fields={"error": str(exc)})
        acted.fields.update(
            kdamond=self.k,
            schemes=[self.s_cold, self.s_hot],
            committed_demote_sz=int(demote_quota),
            committed_promote_sz=int(promote_quota),
            **self._vmstat_rates(),
        )
        return acted

    def _quota_updates(
        self, kd: Kdamond, demote_quota: float, promote_quota: float, nodes: tuple[int, int]
    ) -> dict[int, dict[str, Any]]:
        schemes = kd.contexts[self.c].schemes
        out: dict[int, dict[str, Any]] = {}
        for s, quota, nid in (
            (self.s_cold, demote_quota, nodes[0]),
            (self.s_hot, promote_quota, nodes[1]),
        ):
            quotas = schemes[s].quotas.model_copy(update={"sz_bytes": max(4096, int(quota))})
            out[s] = {"quotas": quotas, "target_nid": nid}
        return out
