"""The status socket: root-only modes, the protocol, stale and live sockets, client errors."""

from __future__ import annotations

import os
import re
import socket
import stat
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from reactor.api.status import (
    SCHEMA_VERSION,
    StatusSocketError,
    StatusSocketInUse,
    StatusUnavailable,
    format_status,
    query_status,
    query_status_sync,
    serve_status,
    status_document,
    to_json,
)
from reactor.config import load_config_text
from reactor.damon.probe import BackendChoice
from reactor.engine.runtime import Reactor
from tests.captures import host_node

DOC: dict[str, Any] = {"schema": SCHEMA_VERSION, "version": "test", "sources": {}, "ticks": 3}


@asynccontextmanager
async def serving(
    path: Path, get_status: Callable[[], Mapping[str, Any]] = lambda: DOC
) -> AsyncIterator[None]:
    """Run serve_status at ``path`` for the body of the block, then stop it."""
    async with anyio.create_task_group() as tg:
        await tg.start(serve_status, str(path), get_status)
        yield
        tg.cancel_scope.cancel()


def stale_socket(path: Path) -> None:
    """Leave a socket file at ``path`` that nobody listens on (as a killed daemon would)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


@pytest.mark.anyio
async def test_socket_is_0600_in_a_new_0700_directory(run_dir: Path) -> None:
    """The socket file has mode 0600 and its directory, created by the server, mode 0700."""
    path = run_dir / "status.sock"
    async with serving(path):
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        assert [p.name for p in run_dir.iterdir()] == ["status.sock"]  # no staging left


@pytest.mark.anyio
async def test_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    """A directory that already exists (e.g. made by systemd) is not re-moded."""
    tmp_path.chmod(0o755)
    async with serving(tmp_path / "s.sock"):
        assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
        assert stat.S_IMODE((tmp_path / "s.sock").lstat().st_mode) == 0o600


@pytest.mark.anyio
async def test_status_and_ping_round_trip(run_dir: Path) -> None:
    """`status` returns the provider's document as JSON; `ping` answers with version and pid."""
    path = run_dir / "status.sock"
    calls = []

    def provide() -> Mapping[str, Any]:
        calls.append(1)
        return {**DOC, "ratio": 0.25, "nan": float("nan")}

    async with serving(path, provide):
        doc = await query_status(str(path))
        pong = await query_status(str(path), "ping")
    assert doc == {**DOC, "ratio": 0.25, "nan": None}  # NaN is not JSON: null
    assert len(calls) == 1
    assert pong["pong"] is True
    assert pong["pid"] == os.getpid()


@pytest.mark.anyio
async def test_unknown_request_is_an_error_naming_the_requests(run_dir: Path) -> None:
    """An unknown request gets an error reply that lists what the server understands."""
    path = run_dir / "status.sock"
    async with serving(path):
        with pytest.raises(StatusUnavailable, match=r"unknown request 'shutdown'.*ping, status"):
            await query_status(str(path), "shutdown")


@pytest.mark.anyio
async def test_a_failing_provider_costs_one_answer_not_the_server(run_dir: Path) -> None:
    """If get_status raises, that client gets an error and the server keeps serving."""
    path = run_dir / "status.sock"
    calls = []

    def provide() -> Mapping[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return DOC

    async with serving(path, provide):
        with pytest.raises(StatusUnavailable, match=r"could not build its status.*boom"):
            await query_status(str(path))
        assert await query_status(str(path)) == DOC


@pytest.mark.anyio
async def test_clients_that_hang_up_do_not_stop_the_server(run_dir: Path) -> None:
    """A client that disconnects without a request, or mid-line, does not stop the server."""
    path = run_dir / "status.sock"
    async with serving(path):
        stream = await anyio.connect_unix(str(path))
        await stream.aclose()
        stream = await anyio.connect_unix(str(path))
        await stream.send(b"sta")
        await stream.aclose()
        stream = await anyio.connect_unix(str(path))
        await stream.send(b"x" * 1000 + b"\n")  # longer than any request
        await stream.aclose()
        assert await query_status(str(path)) == DOC


@pytest.mark.anyio
async def test_stale_socket_is_replaced(run_dir: Path) -> None:
    """A socket nobody listens on (connection refused) is replaced by the new server."""
    run_dir.mkdir()
    path = run_dir / "status.sock"
    stale_socket(path)
    old_inode = path.lstat().st_ino
    async with serving(path):
        assert path.lstat().st_ino != old_inode
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert await query_status(str(path)) == DOC


@pytest.mark.anyio
async def test_live_socket_is_refused_and_left_alone(run_dir: Path) -> None:
    """A second server on a live socket fails with an error naming the path; the first runs on."""
    path = run_dir / "status.sock"
    async with serving(path):
        with pytest.raises(StatusSocketInUse, match=re.escape(str(path))) as info:
            await serve_status(str(path), dict)
        assert "another reactor is already running" in str(info.value)
        assert info.value.path == str(path)
        assert await query_status(str(path)) == DOC
    assert not path.exists()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["file", "directory"])
async def test_a_path_that_is_not_a_socket_is_refused(run_dir: Path, kind: str) -> None:
    """A regular file or directory at the socket path is refused, named, and kept as it was."""
    run_dir.mkdir()
    path = run_dir / "status.sock"
    if kind == "file":
        path.write_text("keep me")
    else:
        path.mkdir()
    with pytest.raises(StatusSocketError, match=rf"{re.escape(str(path))}: exists and is not"):
        await serve_status(str(path), dict)
    if kind == "file":
        assert path.read_text() == "keep me"
    else:
        assert path.is_dir()
    assert sorted(p.name for p in run_dir.iterdir()) == ["status.sock"]


@pytest.mark.anyio
async def test_socket_is_removed_on_shutdown(run_dir: Path) -> None:
    """Cancelling the server removes its socket file (and nothing else)."""
    path = run_dir / "status.sock"
    async with serving(path):
        assert path.exists()
    assert not path.exists()
    assert run_dir.is_dir()


@pytest.mark.anyio
async def test_a_replaced_socket_file_is_not_removed_on_shutdown(run_dir: Path) -> None:
    """If someone replaced the socket file meanwhile, shutdown leaves their file alone."""
    path = run_dir / "status.sock"
    async with serving(path):
        path.unlink()
        path.write_text("someone else's")
    assert path.read_text() == "someone else's"


@pytest.mark.anyio
async def test_too_long_a_path_is_refused_with_the_limit(tmp_path: Path) -> None:
    """A path longer than sun_path allows fails with its length and the limit."""
    path = tmp_path / ("x" * 120)
    with pytest.raises(StatusSocketError, match=r"path too long.*allows 107"):
        await serve_status(str(path), dict)


@pytest.mark.anyio
async def test_missing_socket_asks_whether_reactor_runs(tmp_path: Path) -> None:
    """No socket at the path: the error asks whether reactor is running and names the path."""
    path = tmp_path / "status.sock"
    with pytest.raises(StatusUnavailable, match=rf"^is reactor running\? no socket at {path}$"):
        await query_status(str(path))


@pytest.mark.anyio
async def test_stale_socket_error_for_the_client(tmp_path: Path) -> None:
    """A socket nobody listens on: the client says no reactor listens there."""
    path = tmp_path / "status.sock"
    stale_socket(path)
    with pytest.raises(StatusUnavailable, match=r"no reactor is listening at .*stale socket"):
        await query_status(str(path))


@pytest.mark.anyio
async def test_permission_denied_says_the_socket_is_root_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES on connect: the error names the path, says root-only, and suggests sudo."""

    async def denied(path: str) -> Any:
        raise PermissionError(13, "Permission denied", path)

    # Root bypasses the permission check, so the kernel's answer is simulated here;
    # tests/host/test_cli_serve.py gets it from the kernel, connecting as nobody.
    monkeypatch.setattr(anyio, "connect_unix", denied)
    path = tmp_path / "status.sock"
    with pytest.raises(
        StatusUnavailable, match=rf"^permission denied on {path}: .*root-only.*sudo reactor status"
    ):
        await query_status(str(path))


@pytest.mark.anyio
async def test_sync_client_from_a_thread(run_dir: Path) -> None:
    """The CLI's synchronous wrapper gets the same document (it runs its own event loop)."""
    path = run_dir / "status.sock"
    async with serving(path):
        doc = await anyio.to_thread.run_sync(query_status_sync, str(path))
    assert doc == DOC


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_round_trip_on_trio(run_dir: Path) -> None:
    """The server and client use anyio only, so they work on trio as well as asyncio."""
    path = run_dir / "status.sock"
    async with serving(path):
        assert await query_status(str(path)) == DOC
    assert not path.exists()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
async def test_status_document_of_a_running_reactor() -> None:
    """A Reactor on the fake kernel yields a JSON-ready document with every source's state."""
    config = load_config_text("reactor:\n  tick: 1s\n  startup_timeout: 3s\n", "test.yaml")
    async with Reactor(config, fs=host_node()) as reactor:
        started = anyio.current_time()
        await anyio.sleep(5)
        doc = status_document(reactor, started_at=started)
        text = to_json(doc)
        pretty = format_status(doc)
    assert doc["schema"] == SCHEMA_VERSION
    assert doc["uptime_s"] == pytest.approx(5, abs=0.01)
    assert doc["ticks"] == reactor.ticks >= 4
    assert doc["monitors"] == [] and doc["policies"] == []
    assert doc["backend"] is not None
    memory = doc["sources"]["psi.memory"]
    assert memory["state"] == "ready" and not memory["stale"]
    assert memory["published"] >= 4 and memory["period_s"] == 1.0
    assert memory["summary"] is not None and "some_share" in memory["summary"]
    assert doc["sources"]["meminfo"]["summary"]["mem_available_bytes"] > 0  # type: ignore[index]
    assert '"psi.memory"' in text
    assert "psi.memory: ready" in pretty and "policies: none" in pretty


def test_format_status_shows_policies_goals_and_held() -> None:
    """The terminal view lists each policy's goals, the binding one, output and held reason."""
    doc = {
        "version": "x",
        "sources": {},
        "policies": [
            {
                "name": "reclaim-cold",
                "kind": "reclaim",
                "monitor": "node",
                "goals": [
                    {
                        "metric": "memory_psi_some",
                        "target": 0.005,
                        "measurement": 0.002,
                        "binding": True,
                    },
                ],
                "output": 1048576.0,
                "output_unit": "bytes",
                "controller": {"p": 1.0, "i": 2.0, "d": 0.0},
                "acted": {"requested_bytes": 10, "measured_bytes": 8},
                "held": "psi.memory stale",
            }
        ],
    }
    text = format_status(doc)
    assert "reclaim-cold (reclaim on node): output 1048576.0 bytes, HELD: psi.memory stale" in text
    assert "goal memory_psi_some: target 0.005, measured 0.002 <- binding" in text
    assert "acted: 10 B requested, 8 B measured" in text
    assert "decided by" not in text  # a goal decided: it is marked
    pol = doc["policies"][0]  # type: ignore[index]
    pol["goals"][0]["binding"] = False
    pol["binding"] = "feedforward"
    assert "  decided by: feedforward (no goal)" in format_status(doc)


class _View:
    """Stands in for an access snapshot view on the bus: only its summary is read."""

    def summary(self) -> dict[str, int]:
        return {"targets": 2, "regions": 17, "monitored_bytes": 4096}


def test_monitors_are_listed_with_state_and_newest_snapshot() -> None:
    """Configured monitors appear inactive (with why) off native, running once snapshots arrive."""
    config = load_config_text(
        "monitors:\n"
        "  - name: web\n    targets: {pids: [4242]}\n    sample: 100ms\n    aggregation: 1s\n"
        "  - name: phys\n    ops: paddr\n",
        "test.yaml",
    )
    reactor = Reactor(config, fs=host_node())
    reactor.backend = BackendChoice("auto", "damon", True, "test")
    inactive = status_document(reactor, now=10.0)["monitors"]
    assert [(m["name"], m["state"]) for m in inactive] == [
        ("web", "inactive"),
        ("phys", "inactive"),
    ]
    assert "damon backend" in (inactive[0]["reason"] or "")

    reactor.native = SimpleNamespace(skipped=("phys",))  # type: ignore[assignment]
    reactor.bus.publish("access.web", _View(), stamp=9.5)
    web, phys = status_document(reactor, now=10.0)["monitors"]
    assert web["state"] == "running" and web["backend"] == "native"
    assert (web["targets"], web["nr_regions"]) == (2, 17)
    assert web["last_sample_age_s"] == 0.5 and not web["stale"]
    assert (web["sample_interval_s"], web["aggregation_interval_s"]) == (0.1, 1.0)
    assert phys["state"] == "inactive" and "paddr" in (phys["reason"] or "")
    assert "web: native running, 2 target(s), 17 regions" in format_status(
        status_document(reactor, now=10.0)
    )
    # stale after three aggregations or three ticks, whichever is longer (snapshots are
    # read once per tick at most): 1 s aggregation and tick, 2.9 s old is fresh, 3.1 s not
    assert not status_document(reactor, now=12.4)["monitors"][0]["stale"]
    assert status_document(reactor, now=12.6)["monitors"][0]["stale"]
    reactor.config = load_config_text(
        "reactor: {tick: 2s}\nmonitors:\n  - name: web\n    targets: {pids: [4242]}\n"
        "    sample: 20ms\n    aggregation: 200ms\n",
        "test.yaml",
    )
    # a 200 ms aggregation read each 2 s tick: 5.9 s old is fresh
    assert not status_document(reactor, now=15.4)["monitors"][0]["stale"]


def test_format_status_shows_what_each_monitor_costs_reactor() -> None:
    """A native monitor shows its sampling CPU, a DAMON one its snapshot-read CPU."""
    doc = {
        "version": "x",
        "sources": {},
        "monitors": [
            {
                "name": "web",
                "backend": "native",
                "state": "running",
                "targets": 2,
                "nr_regions": 37,
                "sampling_cpu_s": 41.2,
                "snapshot_cpu_s": None,
            },
            {
                "name": "node",
                "backend": "damon",
                "state": "running",
                "targets": 1,
                "nr_regions": 900,
                "sampling_cpu_s": None,
                "snapshot_cpu_s": 3.25,
            },
        ],
    }
    text = format_status(doc)
    assert "web: native running, 2 target(s), 37 regions, sampling CPU 41.200 s" in text
    assert "node: damon running, 1 target(s), 900 regions, snapshot-read CPU 3.250 s" in text
