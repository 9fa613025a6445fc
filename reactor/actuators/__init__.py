"""reactor.actuators: apply a policy's decision within limits and report what it measurably did.

- :class:`MadviseActuator`: process_madvise COLD, PAGEOUT, WILLNEED, COLLAPSE on a
  process's ranges, classified first (anonymous PAGEOUT without swap is not issued).
- :class:`MigrateActuator`: move_pages on ranges, migrate_pages on a whole process.
- :class:`CgroupReclaimer`: cgroup v2 ``memory.reclaim``, v1 by a briefly lowered limit.
- :class:`NodeActuator`: per-node reclaim and compaction, refused unless enabled.

Every actuator returns an :class:`Outcome` (requested, issued, applied and *measured*
bytes), honours :class:`Limits` (bytes per action, a byte rate, dry-run, a deadline) and
treats a vanished target as a normal outcome. docs/actuators.md describes each one.
"""

from __future__ import annotations

from reactor.actuators.base import (
    Action,
    ActionKind,
    Actuator,
    Limits,
    Outcome,
    OutcomeStatus,
    RateLimiter,
    RefusedAction,
)
from reactor.actuators.cgroup import CgroupReclaimer
from reactor.actuators.madvise import ANON_PAGEOUT_NO_SWAP, MadviseActuator
from reactor.actuators.migrate import MigrateActuator, NodeUnavailable
from reactor.actuators.node import NodeActuator

__all__ = (
    "ANON_PAGEOUT_NO_SWAP",
    "Action",
    "ActionKind",
    "Actuator",
    "CgroupReclaimer",
    "Limits",
    "MadviseActuator",
    "MigrateActuator",
    "NodeActuator",
    "NodeUnavailable",
    "Outcome",
    "OutcomeStatus",
    "RateLimiter",
    "RefusedAction",
)
