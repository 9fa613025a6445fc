"""Guest-only suite: refuses, loudly, to be collected anywhere but the lane's qemu guest.

These tests write DAMON sysfs, swap and cgroup files of the machine they run on. On the
development and CI machines that would touch the machine's own kdamond (design.md, "Rules
that protect the machine"), so importing this conftest outside the guest raises and the
pytest run errors out: never a quiet skip. Run them with `make test-kernel`
(.ci/kernel_lane.py), which boots the guest with `reactor_lane=1` on its command line.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CMDLINE = Path("/proc/cmdline")
DAMON_ADMIN = Path("/sys/kernel/mm/damon/admin")
KDAMONDS = DAMON_ADMIN / "kdamonds"


def lane_params() -> dict[str, str]:
    """The kernel command line as key=value (bare words map to "")."""
    params: dict[str, str] = {}
    for token in CMDLINE.read_text().split():
        key, _, value = token.partition("=")
        params[key] = value
    return params


def refusal() -> str | None:
    """Why this is not the lane's guest, or None when it is."""
    try:
        params = lane_params()
    except OSError as exc:
        return f"cannot read /proc/cmdline: {exc}"
    if params.get("reactor_lane") != "1":
        return "/proc/cmdline has no reactor_lane=1"
    host = params.get("reactor_lane_host_release")
    if not host or host == os.uname().release:
        return f"the running kernel {os.uname().release} is the host's"
    return None


_WHY = refusal()
if _WHY is not None:
    raise pytest.UsageError(
        f"tests/kernel runs only inside the real-kernel lane's qemu guest ({_WHY}); "
        "run `make test-kernel`, never pytest tests/kernel on a host"
    )

from tests.conformance.real_backend import RealBackend  # noqa: E402 - after the guard

# No guest test uses hypothesis: the lane disables its pytest plugin (it added ~7 s to
# the pytest start under TCG). A guest test that uses it must set ``database=None``:
# the checkout is read-only here.


def read(path: Path | str) -> str:
    return Path(path).read_text().strip()


def write(path: Path | str, value: object) -> None:
    """One write(2) per value, so the kernel's errno surfaces as OSError."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


@pytest.fixture
def lane() -> dict[str, str]:
    """The lane's kernel command-line parameters (reactor_lane_*)."""
    return {k: v for k, v in lane_params().items() if k.startswith("reactor_lane")}


@pytest.fixture
def kdamonds() -> Iterator[Path]:
    """The guest's DAMON sysfs kdamonds directory, back to zero kdamonds afterwards."""
    assert read(KDAMONDS / "nr_kdamonds") == "0", "a kdamond is left over from another test"
    yield KDAMONDS
    for entry in sorted(KDAMONDS.iterdir()):
        state = entry / "state"
        if entry.name.isdigit() and read(state) != "off":
            with contextlib.suppress(OSError):
                write(state, "off")
    write(KDAMONDS / "nr_kdamonds", 0)


@pytest.fixture
def anyio_backend() -> str:
    """asyncio (modules that need another say so): DAMON writes run in worker threads
    on real time."""
    return "asyncio"


@pytest.fixture
def damon() -> Iterator[RealBackend]:
    """The conformance suite's real backend (children by pid, every kdamond off and
    ``nr_kdamonds`` 0 afterwards), starting from no kdamond at all."""
    backend = RealBackend()
    assert backend.fs.read_text(f"{KDAMONDS}/nr_kdamonds").strip() == "0", "leaked kdamonds"
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def run_benchmark(
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., dict[str, Any]]:
    """``run(main, result, *argv)``: a benchmark's ``main`` in this process, with
    ``--out`` the lane's shared run directory (``$REACTOR_LANE_OUT``; the checkout is
    read-only here). It must exit 0; its one-line summary goes to the test's output
    (pytest.log); returns its JSON, ``benchmarks/results/<result>`` (on the host:
    ``<lane cache>/runs/<time>-<nonce>/benchmarks/results/``)."""

    def run(main: Callable[[list[str]], int], result: str, *argv: str) -> dict[str, Any]:
        out = Path(os.environ.get("REACTOR_LANE_OUT", "/tmp"))
        assert main(["--out", str(out), *argv]) == 0
        print(capsys.readouterr().out.strip().splitlines()[-1])
        doc: dict[str, Any] = json.loads((out / "benchmarks" / "results" / result).read_text())
        return doc

    return run
