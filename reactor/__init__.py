"""reactor: DAMON's user-space policy half, a data-access-aware memory controller."""

from __future__ import annotations

from reactor._version import __version__

__all__ = ("__version__",)
