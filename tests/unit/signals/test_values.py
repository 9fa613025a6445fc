"""What every poller publishes: frozen, plain data, and a Poller by the runtime's protocol."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from reactor.kernelfs import FrozenMap
from reactor.signals.base import Poller
from reactor.signals.meminfo import MeminfoPoller
from reactor.signals.psi import PsiPoller
from reactor.signals.vmstat import VmstatPoller
from reactor.testing import FakeKernelFS


def published(fake_kernel: FakeKernelFS) -> list[Any]:
    pollers: list[Poller] = [
        PsiPoller(fake_kernel, "io"),
        VmstatPoller(fake_kernel),
        MeminfoPoller(fake_kernel),
    ]
    for p in pollers:
        p.poll(0.0)
    return [p.poll(1.0) for p in pollers]


def test_topics(fake_kernel: FakeKernelFS) -> None:
    """Default topics are psi.<resource>, vmstat and meminfo."""
    assert PsiPoller(fake_kernel, "cpu").topic == "psi.cpu"
    assert VmstatPoller(fake_kernel).topic == "vmstat"
    assert MeminfoPoller(fake_kernel).topic == "meminfo"


def test_values_are_frozen_plain_data(fake_kernel: FakeKernelFS) -> None:
    """Published values are frozen dataclasses that survive pickle, deepcopy and asdict,
    and whose summary() is a flat JSON object of numbers."""
    for value in published(fake_kernel):
        is_dataclass = dataclasses.is_dataclass(value)  # kept apart: it would narrow `value`
        assert is_dataclass
        assert pickle.loads(pickle.dumps(value)) == value
        assert copy.deepcopy(value) == value
        json.dumps(dataclasses.asdict(value))
        summary = value.summary()
        assert summary and all(isinstance(v, int | float) for v in summary.values())
        json.dumps(summary)
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.summary = None


def test_frozen_map_refuses_changes() -> None:
    """A FrozenMap refuses every mutation with TypeError but reads like a dict."""
    m = FrozenMap({"a": 1})
    changes: list[Callable[[], object]] = [
        lambda: m.__setitem__("a", 2),
        lambda: m.update(a=2),
        lambda: m.pop("a"),
        lambda: m.setdefault("b", 1),
        m.clear,
        m.popitem,
    ]
    for change in changes:
        with pytest.raises(TypeError, match=r"^FrozenMap is read-only$"):
            change()
    assert m == {"a": 1} and m | {"b": 2} == {"a": 1, "b": 2}
