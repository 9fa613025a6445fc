"""Pure control algorithms: no I/O, no clock, no anyio, no reactor imports.

Every controller here is a frozen settings object with ``initial_state()`` and
``step(state, measurement, now) -> (state, decision)`` (see :mod:`controllers.base`);
docs/controllers.md describes each one, the goal-composition rule and the benchmarks.
"""

from __future__ import annotations

from controllers.adaptive import AdaptiveLogGoal, AdaptiveOutput, AdaptiveState
from controllers.base import Controller, Decision, TrackingController, clamp
from controllers.compose import CompositeOutput, CompositeState, Goal, GoalComposite
from controllers.feedforward import ColdFeedforward, FeedforwardOutput, FeedforwardState
from controllers.filtered import (
    FilteredLogGoal,
    FilteredOutput,
    FilteredState,
    SampledShare,
    sampled_share,
)
from controllers.kernel import (
    IntervalsInput,
    KernelIntervalsTwin,
    KernelQuotaTwin,
    QuotaInput,
    feed_loop_next_input,
)
from controllers.logpid import LogPID, LogPIDOutput
from controllers.pid import PID, PIDOutput, PIDState
from controllers.tuners import (
    QuotaGoalSpec,
    intervals_tuner,
    quota_tuner,
    reclaim_tuner,
    regions_tuner,
)

__all__ = (
    "PID",
    "AdaptiveLogGoal",
    "AdaptiveOutput",
    "AdaptiveState",
    "ColdFeedforward",
    "CompositeOutput",
    "CompositeState",
    "Controller",
    "Decision",
    "FeedforwardOutput",
    "FeedforwardState",
    "FilteredLogGoal",
    "FilteredOutput",
    "FilteredState",
    "Goal",
    "GoalComposite",
    "IntervalsInput",
    "KernelIntervalsTwin",
    "KernelQuotaTwin",
    "LogPID",
    "LogPIDOutput",
    "PIDOutput",
    "PIDState",
    "QuotaGoalSpec",
    "QuotaInput",
    "SampledShare",
    "TrackingController",
    "clamp",
    "feed_loop_next_input",
    "intervals_tuner",
    "quota_tuner",
    "reclaim_tuner",
    "regions_tuner",
    "sampled_share",
)
