"""Policies: a goal + a controller + an actuator, one tick at a time (docs/policies.md).

:func:`build_policy` picks the implementation for a policy's kind and the backend:

=========== ============================ ======================================
kind        native backend               damon backend
=========== ============================ ======================================
reclaim     process_madvise PAGEOUT      DAMOS pageout quota (tuner reactor or
            (memory.reclaim with cgroup) kernel); memory.reclaim with cgroup
tiering     move_pages of cold regions   migrate_cold + migrate_hot schemes
            down, hot regions up         (quotas committed online)
monitoring  sampler settings online      kdamond intervals / nr_regions commits
            (intervals, region bound)    (kernel keeps intervals_goal on 6.15+)
=========== ============================ ======================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reactor.policies.base import Acted, GoalInput, Policy, PolicyContext, read_goals

if TYPE_CHECKING:
    from reactor.config import PolicyConfig

__all__ = ("Acted", "GoalInput", "Policy", "PolicyContext", "build_policy", "read_goals")


def build_policy(cfg: PolicyConfig, ctx: PolicyContext) -> Policy | None:
    """The policy object for ``cfg`` on ``ctx.backend`` (None: not in this version;
    the runtime logs ``policy_inactive`` with the reason)."""
    if cfg.kind == "tiering":
        from reactor.policies.tiering import DamonTiering, NativeTiering

        return DamonTiering(cfg, ctx) if ctx.backend == "damon" else NativeTiering(cfg, ctx)
    if cfg.kind == "monitoring":
        from reactor.policies.monitoring import DamonMonitoring, NativeMonitoring

        if ctx.backend == "damon":
            return DamonMonitoring(cfg, ctx)
        return NativeMonitoring(cfg, ctx)
    from reactor.policies.reclaim import CgroupReclaim, NativeReclaim

    if cfg.cgroup is not None:
        return CgroupReclaim(cfg, ctx)
    if ctx.backend == "damon":
        from reactor.policies.damon import DamonReclaim

        return DamonReclaim(cfg, ctx)
    return NativeReclaim(cfg, ctx)
