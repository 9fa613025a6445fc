"""The shared DAMON sysfs conformance suite (tests/conformance/damon_sysfs.py) on the real kernel.

Runs inside the real-kernel lane's qemu guest only (tests/kernel/conftest.py refuses
elsewhere). The same tests run against reactor.testing.FakeDamon on the host
(tests/unit/damon_fake/test_conformance_fake.py); where the two differ, the fake is wrong.
"""

from __future__ import annotations

from tests.conformance.damon_sysfs import *  # noqa: F403  (the shared suite)
from tests.conformance.real_backend import real_damon as damon  # noqa: F401  (the fixture)
