"""reactor.testing: shipped helpers for testing code that embeds reactor.

:class:`FakeKernelFS` is an in-memory kernel tree (see :mod:`reactor.testing.fakefs`).
"""

from __future__ import annotations

from reactor.testing.fakefs import FakeKernelFS

__all__ = ("FakeKernelFS",)
