"""What a signal source is, as the runtime sees it.

A *poller* turns kernel files into one value per call. It is synchronous because the
files it reads are cheap procfs/sysfs reads (microseconds) that may run on the event
loop; the runtime owns the timing (periods on absolute deadlines), publishing to the bus,
failure counting and readiness. Rates need two reads: a poller returns None until it
has a baseline, and the runtime signals readiness only after the first value.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ("Poller",)


class Poller(Protocol):
    """Reads one signal. ``poll`` raises KernelInterfaceError on a failed read."""

    @property
    def topic(self) -> str: ...

    def poll(self, now: float) -> Any | None:
        """Read the files and return the new value, or None while a rate has no baseline.

        ``now`` is the runtime's monotonic time in seconds, used for rates.
        """
        ...
