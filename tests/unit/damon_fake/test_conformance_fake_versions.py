"""The conformance suite against the fake at older kernels (this host's 6.18, and 7.0).

Only the 7.2.12 run is checked against a real kernel; these runs keep the fake's version
branches (files, keywords, errnos that changed) consistent with the suite's version rules.
"""

from __future__ import annotations

import pytest

from tests.conformance.damon_sysfs import *  # noqa: F403  (the shared suite)
from tests.unit.damon_fake.test_conformance_fake import FakeBackend


@pytest.fixture(params=["6.18.44", "7.0.3"])
def damon(request: pytest.FixtureRequest) -> FakeBackend:
    """A fresh fake DAMON at an older kernel version."""
    return FakeBackend(str(request.param))
