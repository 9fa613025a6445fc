"""Command-line overrides and ``reactor.log_level`` across reloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reactor.config import Config, load_config_text
from reactor.engine.runtime import Reactor
from tests.captures import host_node


def config(text: str = "") -> Config:
    base = "reactor:\n  tick: 1s\n  startup_timeout: 3s\n"
    return load_config_text(base + text, "test.yaml")


@pytest.mark.anyio
async def test_dry_run_and_run_dir_overrides_survive_a_reload_from_file(tmp_path: Path) -> None:
    """A daemon started with --dry-run/--run-dir stays a dry run on that run dir after SIGHUP."""
    path = tmp_path / "node.yaml"
    path.write_text("reactor:\n  tick: 1s\n  startup_timeout: 3s\n")
    run_dir = str(tmp_path / "run")
    overrides = {"dry_run": True, "run_dir": run_dir}
    async with Reactor(config(), fs=host_node(), overrides=overrides) as reactor:
        assert reactor.config.reactor.dry_run is True
        result = await reactor.reload_from(str(path))
        assert result.applied
        assert reactor.config.reactor.dry_run is True
        assert reactor.config.reactor.run_dir == run_dir
        assert result.needs_restart == ()
        assert reactor.status()["dry_run"] is True


@pytest.mark.anyio
async def test_a_log_level_change_is_applied_live_when_the_daemon_can() -> None:
    """With a level setter (the daemon's logging), a reload applies the new log level."""
    levels: list[str] = []
    async with Reactor(config(), fs=host_node(), set_log_level=levels.append) as reactor:
        result = await reactor.reload(config("  log_level: debug\n"))
    assert levels == ["debug"]
    assert "reactor.log_level" not in result.needs_restart


@pytest.mark.anyio
async def test_a_log_level_change_in_library_mode_is_reported_as_needing_restart(
    logs: list[dict[str, Any]],
) -> None:
    """Without a level setter (library mode) a changed log level is not silently ignored."""
    async with Reactor(config(), fs=host_node()) as reactor:
        result = await reactor.reload(config("  log_level: debug\n"))
    assert result.needs_restart == ("reactor.log_level",)
    warned = [e for e in logs if e["event"] == "reload_needs_restart"]
    assert warned and warned[0]["keys"] == ["reactor.log_level"]
