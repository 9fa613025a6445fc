"""Shared fixtures: the fake kernel tree and the verbatim captures it is built from."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import structlog

from reactor.testing import FakeKernelFS
from tests.captures import CAPTURED, HOST_CAPTURES, host_node

__all__ = ("CAPTURED", "HOST_CAPTURES")


@pytest.fixture
def captured() -> Callable[[str], str]:
    """Text of a verbatim capture, by file name under tests/fixtures/captured/host-6.18."""

    def read(name: str) -> str:
        return (CAPTURED / "host-6.18" / name).read_text()

    return read


@pytest.fixture
def fake_kernel() -> FakeKernelFS:
    """A fresh in-memory kernel tree holding this host's captures at their kernel paths."""
    return host_node()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults (a CLI test may have configured it)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``root`` need root (CI runs as root); elsewhere they say why they skip."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (marker 'root'); CI runs as root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
