"""`reactor serve` as a user runs it: a real process on this machine's real /proc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
REACTOR = [sys.executable, "-m", "reactor.cli"]


def run_lines(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, _ = proc.communicate(timeout=60)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def start(*args: str, run_dir: Path, cwd: Path = ROOT) -> subprocess.Popen[str]:
    """Start reactor with JSON logs on a pipe and a run directory of its own (never
    /run/reactor: a real daemon may own that; the test's tmp_path, which pytest removes);
    the test ends it by its own pid."""
    return subprocess.Popen(
        [*REACTOR, *args, "--log-format", "json", "--run-dir", run_dir],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(proc: subprocess.Popen[str], path: Path, event: str, timeout: float = 20) -> None:
    """Wait until the log file holds ``event`` (the daemon logs to a file in these tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and f'"event": "{event}"' in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"reactor exited {proc.returncode}: {path.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"no {event} within {timeout} s: {path.read_text()}")


def serve_to(
    out: IO[str], config: str, run_dir: str, *extra: str, cwd: Path = ROOT
) -> subprocess.Popen[str]:
    """``reactor serve CONFIG`` with JSON logs written to ``out`` (a file the test reads
    with :func:`wait_for`) and ``run_dir`` of its own; the test ends it by its pid."""
    return subprocess.Popen(
        [*REACTOR, "serve", config, *extra, "--log-format", "json", "--run-dir", run_dir],
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_node_yaml_for_five_seconds_logs_real_samples_and_exits_0(tmp_path: Path) -> None:
    """The default config runs on this machine, logs real PSI/vmstat each tick, exits 0."""
    proc = start("serve", "configs/node.yaml", "--duration", "5", run_dir=tmp_path / "run")
    lines = run_lines(proc)
    assert proc.returncode == 0, lines[-5:]
    names = [e["event"] for e in lines]
    assert names.count("node_sample") >= 4
    backend = next(e for e in lines if e["event"] == "backend")
    assert backend["reason"]
    assert any(e["event"] == "capabilities" and e["not_yet"] for e in lines)
    last = [e for e in lines if e["event"] == "node_sample"][-1]
    assert 0.0 <= last["psi.memory"]["some_share"] <= 1.0
    assert last["meminfo"]["mem_available_bytes"] > 0
    assert last["vmstat"]
    assert names[-1] == "stopped"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_cleanly_with_status_0(tmp_path: Path, signum: int) -> None:
    """SIGTERM (systemd) and SIGINT (Ctrl-C) stop the daemon within seconds, exit 0."""
    log = tmp_path / "log.jsonl"
    with log.open("w") as out:
        proc = serve_to(out, "configs/node.yaml", str(tmp_path / "run"))
        try:
            wait_for(proc, log, "started")
            sent = time.monotonic()
            proc.send_signal(signum)
            status = proc.wait(timeout=15)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert status == 0, log.read_text()[-2000:]
    # shutdown_timeout defaults to 5 s: the bound the daemon promises, plus start-up slack.
    assert took < 10
    assert '"event": "stopped"' in log.read_text()


def test_sigint_during_start_up_stops_cleanly_with_status_0(tmp_path: Path) -> None:
    """Ctrl-C as soon as the daemon says anything (its status socket is up; sources,
    backend choice and policies are still starting) is a clean stop, exit 0, not a
    KeyboardInterrupt traceback (the handlers are installed before the first line; one
    CI run caught SIGINT between `started` and the handlers, exit -2)."""
    log = tmp_path / "log.jsonl"
    argv = [*REACTOR, "serve", "configs/node.yaml", "--log-format", "json"]
    argv += ["--run-dir", str(tmp_path / "run")]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(proc, log, "status_listening")
            proc.send_signal(signal.SIGINT)
            status = proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert status == 0, text[-2000:]
    assert "KeyboardInterrupt" not in text
    assert '"event": "stopped"' in text


def test_sighup_reload_changes_a_period_and_a_broken_file_keeps_the_old(tmp_path: Path) -> None:
    """SIGHUP applies an edited period with no task restarted; a broken edit is refused."""
    cfg = tmp_path / "node.yaml"
    shutil.copy(ROOT / "configs" / "node.yaml", cfg)
    log = tmp_path / "log.jsonl"
    with log.open("w") as out:
        proc = serve_to(out, str(cfg), str(tmp_path / "run"), cwd=tmp_path)
        try:
            wait_for(proc, log, "started")
            cfg.write_text(cfg.read_text() + "\n# edited\n")
            text = cfg.read_text()
            cfg.write_text(text.replace("period: 1s", "period: 500ms", 1))
            assert cfg.read_text() != text, "node.yaml must set a period: 1s to edit"
            proc.send_signal(signal.SIGHUP)
            wait_for(proc, log, "reloaded")
            cfg.write_text("reactor:\n  tick: 1\n")
            proc.send_signal(signal.SIGHUP)
            wait_for(proc, log, "reload_rejected")
            time.sleep(1.5)
            assert proc.poll() is None, "a broken reload must not stop the daemon"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    reloaded = next(e for e in events if e["event"] == "reloaded")
    assert reloaded["started"] is None and reloaded["stopped"] is None
    assert set(reloaded["kept"]) >= {"psi.memory", "vmstat", "meminfo"}
    rejected = next(e for e in events if e["event"] == "reload_rejected")
    assert "add a unit" in rejected["errors"][0]
    # the daemon went on sampling after the rejected reload
    after = events.index(rejected)
    assert any(e["event"] == "node_sample" for e in events[after:])


def test_sighup_keeps_the_command_lines_dry_run_and_run_dir(tmp_path: Path) -> None:
    """A `serve --dry-run --run-dir` daemon is still a dry run on that run dir after SIGHUP."""
    cfg = tmp_path / "node.yaml"
    shutil.copy(ROOT / "configs" / "node.yaml", cfg)
    log = tmp_path / "log.jsonl"
    run = tmp_path / "run"
    with log.open("w") as out:
        proc = serve_to(out, str(cfg), str(run), "--dry-run", cwd=tmp_path)
        try:
            wait_for(proc, log, "started")
            proc.send_signal(signal.SIGHUP)
            wait_for(proc, log, "reloaded")
            shown = subprocess.run(
                [*REACTOR, "status", "--socket", str(run / "status.sock"), "--json"],
                capture_output=True,
                text=True,
                check=False,
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["dry_run"] is True
    assert '"reload_needs_restart"' not in log.read_text()


def test_the_readmes_library_snippet_gets_a_value_right_after_start() -> None:
    """README's `async with Reactor(...)` snippet, run as written on this machine's /proc,
    finds a PSI sample on the bus at once (rate sources are ready after their first sample)."""
    import re
    import textwrap

    import anyio

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    snippet = next(b for b in blocks if "async with Reactor(" in b)
    imports = "".join(line + "\n" for line in snippet.splitlines() if line.startswith("from "))
    body = "".join(line + "\n" for line in snippet.splitlines() if not line.startswith("from "))
    source = f"{imports}\nasync def snippet():\n{textwrap.indent(body, '    ')}    return sample\n"
    # the snippet names configs/node.yaml relative to the clone
    source = source.replace('"configs/node.yaml"', repr(str(ROOT / "configs" / "node.yaml")))
    scope: dict[str, Any] = {}
    exec(compile(source, "README.md", "exec"), scope)  # our own README, run as written
    sample = anyio.run(scope["snippet"])
    assert sample is not None, "bus.latest('psi.memory') right after start returned None"
    assert 0.0 <= sample.value.some_share <= 1.0


def test_validate_exits_0_on_every_shipped_config() -> None:
    """Every file under configs/ validates."""
    files = sorted(str(p) for p in (ROOT / "configs").rglob("*.yaml"))
    assert files
    proc = subprocess.run(
        [*REACTOR, "validate", *files], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_validate_prints_every_error_with_location_and_exits_2(tmp_path: Path) -> None:
    """A file with two mistakes gets both reported as file:line:column, and status 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("reactor:\n  tick: 1\n  backend: dmaon\n")
    proc = subprocess.run(
        [*REACTOR, "validate", str(bad)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert f"{bad}:2:9: reactor.tick" in proc.stderr
    assert f"{bad}:3:12: reactor.backend" in proc.stderr
    assert "auto" in proc.stderr and "native" in proc.stderr


def test_serve_with_a_bad_config_exits_2_before_starting(tmp_path: Path) -> None:
    """An invalid config stops `serve` before any task starts, with status 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("signals:\n  psi:\n    period: -1s\n")
    proc = subprocess.run(
        [*REACTOR, "serve", str(bad)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "bad.yaml:3:" in proc.stderr
    assert "started" not in proc.stdout


def test_schema_prints_a_json_schema_with_every_section() -> None:
    """`reactor schema` prints JSON Schema naming each top-level section."""
    proc = subprocess.run([*REACTOR, "schema"], capture_output=True, text=True, check=True)
    schema = json.loads(proc.stdout)
    assert set(schema["properties"]) >= {
        "reactor",
        "api",
        "signals",
        "monitors",
        "policies",
        "damon",
    }


def test_schema_into_a_closed_pipe_exits_quietly() -> None:
    """`reactor schema | head -1`: the reader closing the pipe ends reactor without a traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before reactor writes a byte
    try:
        proc = subprocess.run(
            [*REACTOR, "schema"], stdout=write_end, stderr=subprocess.PIPE, text=True, check=False
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 1


def test_version_prints_the_package_version() -> None:
    """`reactor version` prints the installed version."""
    from reactor import __version__

    proc = subprocess.run([*REACTOR, "version"], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == f"reactor {__version__}"


@pytest.mark.root
def test_damon_sysfs_is_never_written(tmp_path: Path) -> None:
    """The machine's kdamond is still the one that was running (same pid, still on)."""
    base = Path("/sys/kernel/mm/damon/admin/kdamonds")
    if not base.exists():
        pytest.skip("this machine has no DAMON sysfs; nothing to protect")

    def snapshot() -> list[tuple[str, str, str]]:
        return [
            (d.name, (d / "state").read_text(), (d / "pid").read_text())
            for d in sorted(base.iterdir())
            if d.is_dir()
        ]

    before = (base / "nr_kdamonds").read_text(), snapshot()
    proc = start("serve", "configs/node.yaml", "--duration", "2", run_dir=tmp_path / "run")
    run_lines(proc)
    assert proc.returncode == 0
    assert ((base / "nr_kdamonds").read_text(), snapshot()) == before


def test_demo_config_monitors_its_own_workload_and_stops_it(tmp_path: Path) -> None:
    """configs/demo.yaml samples the workload it starts, logs its accesses, ends it on exit.

    Bounds: the workload maps a 128 MiB file in 2 MiB VMAs and reads its middle 10 %
    (12.8 MiB, within 7 or 8 VMAs) every 20 ms; the ``referenced`` probe counts per VMA,
    so at least those 12.8 MiB are seen accessed, and their regions reach 10 of 10 samples
    per 1 s aggregation (100 ms sampling). A loaded 2-core machine may deschedule the
    workload past a sample, so the test asks for at least 5 of 10.
    """
    # The shipped demo, with its workload's file moved to this test's own directory.
    shipped = "/var/tmp/reactor-demo.bin"
    data = tmp_path / "reactor-demo.bin"
    demo = (ROOT / "configs" / "demo.yaml").read_text()
    assert shipped in demo
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(demo.replace(shipped, str(data)))
    proc = start("serve", str(cfg), "--duration", "8", "--dry-run", run_dir=tmp_path / "run")
    try:
        lines = run_lines(proc)
    finally:
        data.unlink(missing_ok=True)  # the demo workload's file
    assert proc.returncode == 0, lines[-5:]
    added = [e for e in lines if e["event"] == "target_added"]
    assert len(added) == 1
    pid = int(added[0]["target"].rsplit(":", 1)[1])
    views = [e["access.demo"] for e in lines if e["event"] == "node_sample" and "access.demo" in e]
    assert views, "no access summary was logged"
    last = views[-1]
    assert last["targets"] == 1
    assert last["accessed_bytes"] >= 12.8 * 2**20
    assert 5 <= last["max_nr_accesses"] <= 10
    # the demo's policy decided each tick (dry run: it changes nothing)
    assert any(e["event"] == "controller_tick" for e in lines)
    # the workload's own output became log events, not raw lines in the log stream
    assert any(e["event"] == "command_output" and '"ready"' in e["line"] for e in lines)
    assert not Path(f"/proc/{pid}").exists(), "reactor must stop the command it started"


def connect_as_nobody(sock: Path) -> str:
    """Try to connect to ``sock`` as uid 65534 (nobody); return the error's type name."""
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1]); print('connected')\n"
        "except OSError as e:\n    print(type(e).__name__)\n"
    )
    out = subprocess.run(
        ["/usr/bin/python3", "-c", probe, str(sock)],
        capture_output=True,
        text=True,
        check=True,
        user=65534,
        group=65534,
        extra_groups=[],
    )
    return out.stdout.strip()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A world-traversable directory (mode 0755 under /tmp, unlike tmp_path's 0700
    parents), removed after the test."""
    public = Path(tempfile.mkdtemp(prefix="reactor-test-public-"))
    try:
        public.chmod(0o755)
        yield public
    finally:
        shutil.rmtree(public, ignore_errors=True)


def test_status_command_reads_the_running_daemon_over_its_root_only_socket(
    tmp_path: Path, public_dir: Path
) -> None:
    """`reactor status` shows the running daemon's sources; the socket is mode 0600."""
    log = tmp_path / "log.jsonl"
    # The run directory's parent is world-traversable, so only reactor's own modes (run
    # dir 0700, socket 0600) keep a non-root user out.
    public = public_dir
    run = public / "run"
    record = tmp_path / "ticks.jsonl"
    with log.open("w") as out:
        proc = serve_to(out, "configs/node.yaml", str(run), "--record", str(record))
        try:
            wait_for(proc, log, "started")
            time.sleep(2.5)
            sock = run / "status.sock"
            assert sock.stat().st_mode & 0o777 == 0o600
            refused = connect_as_nobody(sock) if os.geteuid() == 0 else None
            shown = subprocess.run(
                [*REACTOR, "status", "--socket", str(sock), "--json"],
                capture_output=True,
                text=True,
                check=False,
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert shown.returncode == 0, shown.stderr
    if refused is not None:
        assert refused == "PermissionError", "a non-root user must not reach the socket"
    doc = json.loads(shown.stdout)
    assert doc["sources"]["psi.memory"]["state"] == "ready"
    assert not (run / "status.sock").exists(), "the socket is removed at shutdown"
    from reactor.api.record import read_recording

    ticks = [r for r in read_recording(record) if "sources" in r]
    assert len(ticks) >= 2


def test_status_without_a_daemon_says_so(tmp_path: Path) -> None:
    """`reactor status` with no daemon running names the missing socket, exit 1."""
    proc = subprocess.run(
        [*REACTOR, "status", "--socket", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "is reactor running? no socket at" in proc.stderr


def _ended(pid: int) -> bool:
    """Gone, or a zombie no one has reaped yet (its parent died: pid 1 reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_killed_daemon_takes_the_commands_it_started_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves no shutdown to stop a monitor's ``command:``; the kernel ends it
    (the parent-death signal reactor asks for at spawn), not a leftover workload that
    runs on with no one to stop it."""
    cfg = tmp_path / "cmd.yaml"
    cfg.write_text(
        "reactor: {backend: native, tick: 1s}\n"
        "signals: {vmstat: {enabled: false}, meminfo: {enabled: false}, "
        "tiers: {enabled: false}, fragmentation: {enabled: false}}\n"
        "monitors:\n  - name: w\n"
        f"    targets: {{command: [{sys.executable}, -c, 'import time; time.sleep(120)']}}\n"
    )
    log = tmp_path / "log.jsonl"
    with log.open("w") as out:
        proc = serve_to(out, str(cfg), str(tmp_path / "run"))
    pid = None
    try:
        wait_for(proc, log, "target_added")
        added = next(
            json.loads(line) for line in log.read_text().splitlines() if '"target_added"' in line
        )
        pid = int(added["target"].rsplit(":", 1)[1])
        assert not _ended(pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while not _ended(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _ended(pid), f"the command {pid} outlived the daemon that started it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if pid is not None and not _ended(pid):
            os.kill(pid, signal.SIGKILL)  # the test's own workload, by pid


def test_a_command_that_is_not_there_fails_start_up_with_its_name(tmp_path: Path) -> None:
    """Exit 1 with one ``failed`` event naming the target and the command, no traceback."""
    cfg = tmp_path / "missing.yaml"
    cfg.write_text(
        "reactor: {backend: native, tick: 1s}\n"
        "monitors:\n  - name: w\n    targets: {command: [no-such-reactor-command, -x]}\n"
    )
    proc = start("serve", str(cfg), "--duration", "5", run_dir=tmp_path / "run")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out[-2000:]
    assert "Traceback" not in out
    failed = [json.loads(x) for x in out.splitlines() if '"event": "failed"' in x]
    assert len(failed) == 1 and failed[0]["error_type"] == "CommandNotFound"
    assert "target 'w.command': command 'no-such-reactor-command'" in failed[0]["error"]
