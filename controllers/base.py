"""The controller protocol every policy uses, and the small helpers the controllers share.

A controller is a *frozen settings object* with two methods:

* ``initial_state()`` returns a frozen state dataclass (``reset`` is calling it again);
* ``step(state, measurement, now) -> (state, decision)`` is pure: the same arguments
  give the same result, nothing is read from a clock, a file or a global.

``now`` is float seconds on the caller's monotonic timeline (``anyio.current_time()`` in
the runtime, a plain counter in simulations); controllers only ever use differences of
it, so its origin does not matter. A ``measurement`` of ``None`` is a missing or stale
sample: the controller holds its output, integrates nothing and says so in the decision.

Controllers that take part in goal composition also offer ``track(state, applied)``:
the runtime (or the composite) tells the controller which output was really applied, so
that its internal memory (the integral) follows the knob instead of winding up. This is
also how a controller in manual (observe-only) mode follows an operator's value and
hands over without a bump.

Every decision has an ``output`` and ``log_fields()``: the terms the runtime puts in its
one ``controller_tick`` log event (P/I/D parts, clamp flags, ``dt``, binding goal, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol, TypeVar, runtime_checkable

__all__ = (
    "Controller",
    "Decision",
    "LogValue",
    "TrackingController",
    "check_finite",
    "check_limits",
    "clamp",
)

LogValue = float | int | str | bool | None
"""A value that may appear in a ``controller_tick`` log event."""

S = TypeVar("S")
M_contra = TypeVar("M_contra", contravariant=True)
D_co = TypeVar("D_co", covariant=True)


@runtime_checkable
class Decision(Protocol):
    """What one tick of a controller decided."""

    @property
    def output(self) -> float:
        """The value to apply to the knob, in the knob's unit."""
        ...

    def log_fields(self) -> Mapping[str, LogValue]:
        """Flat fields for the runtime's ``controller_tick`` event."""
        ...


class Controller(Protocol[S, M_contra, D_co]):
    """A pure controller: frozen settings with ``initial_state`` and ``step``."""

    def initial_state(self) -> S:
        """The state before the first tick; calling it again is a reset."""
        ...

    def step(self, state: S, measurement: M_contra | None, now: float) -> tuple[S, D_co]:
        """Advance one tick at monotonic time ``now`` (s); ``None`` holds the output."""
        ...


class TrackingController(Controller[S, M_contra, D_co], Protocol):
    """A controller that can follow the output really applied to its knob."""

    def track(self, state: S, applied: float) -> S:
        """Return ``state`` re-based so that its last output is ``applied``."""
        ...

    def output_of(self, state: S) -> float:
        """The output ``state`` stands for, in the knob's unit."""
        ...


def clamp(value: float, low: float, high: float) -> float:
    """``value`` limited to ``[low, high]``; NaN maps to ``low`` so it can never escape."""
    if math.isnan(value):
        return low
    return min(max(value, low), high)


def check_finite(name: str, value: float) -> None:
    """Raise ``ValueError`` naming ``name`` if ``value`` is NaN or infinite."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def check_limits(name: str, low: float, high: float) -> None:
    """Raise ``ValueError`` with both values unless ``low <= high`` (both may be infinite)."""
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(f"{name}: expected min <= max, got min={low!r}, max={high!r}")
