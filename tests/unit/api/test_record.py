"""Tick recordings: header, one flushed line per tick, reading back, crash tolerance."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import anyio
import pytest

from reactor.api.record import (
    RECORDING_FORMAT,
    RECORDING_VERSION,
    RecordingError,
    TickRecorder,
    config_digest,
    read_recording,
    tick_record,
)
from reactor.config import load_config_text


def doc(tick: int) -> dict[str, Any]:
    """A small status document for tick ``tick``."""
    return {
        "ticks": tick,
        "sources": {
            "psi.memory": {
                "state": "ready",
                "stale": False,
                "last_sample_age_s": 0.5,
                "published": tick,
                "summary": {"some_share": tick / 1000},
            }
        },
        "monitors": [],
        "policies": [{"name": "p", "output": float(tick)}],
    }


def test_recorder_writes_a_header_and_n_ticks_that_read_back(tmp_path: Path) -> None:
    """N ticks written through the recorder read back, after one header, in order."""
    path = tmp_path / "run.jsonl"
    with TickRecorder(str(path), config_digest="sha256:abc") as recorder:
        for i in range(1, 6):
            recorder.write(tick_record(doc(i), stamp=100.0 + i, dt_s=1.0))
            # flushed per line: a reader sees each tick as soon as it is written
            assert len(path.read_text().splitlines()) == i + 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    records = list(read_recording(str(path)))
    header, ticks = records[0], records[1:]
    assert header["type"] == "header"
    assert header["format"] == RECORDING_FORMAT
    assert header["format_version"] == RECORDING_VERSION
    assert header["config_digest"] == "sha256:abc"
    assert [t["tick"] for t in ticks] == [1, 2, 3, 4, 5]
    assert [t["stamp"] for t in ticks] == [101.0, 102.0, 103.0, 104.0, 105.0]
    assert ticks[2]["sources"]["psi.memory"] == {
        "state": "ready",
        "stale": False,
        "age_s": 0.5,
        "summary": {"some_share": 0.003},
    }
    assert ticks[4]["policies"] == [{"name": "p", "output": 5.0}]
    assert all(isinstance(t["wall"], float) for t in ticks)


def test_appending_starts_a_new_session(tmp_path: Path) -> None:
    """Opening an existing recording appends a second header and keeps the first session."""
    path = str(tmp_path / "run.jsonl")
    for _ in range(2):
        with TickRecorder(path) as recorder:
            recorder.write(tick_record(doc(1), stamp=1.0))
    types = [r["type"] for r in read_recording(path)]
    assert types == ["header", "tick", "header", "tick"]


def test_a_last_line_cut_short_is_skipped(tmp_path: Path) -> None:
    """A crash mid-line loses only that line: the reader skips an unterminated last line."""
    path = tmp_path / "run.jsonl"
    with TickRecorder(str(path)) as recorder:
        recorder.write(tick_record(doc(1), stamp=1.0))
    with path.open("a") as file:
        file.write('{"type": "tick", "tick": 2, "sta')
    assert [r["type"] for r in read_recording(str(path))] == ["header", "tick"]


def test_a_broken_line_in_the_middle_names_file_and_line(tmp_path: Path) -> None:
    """A damaged line that is not the last raises an error naming path:line."""
    path = tmp_path / "run.jsonl"
    with TickRecorder(str(path)) as recorder:
        recorder.write(tick_record(doc(1), stamp=1.0))
    path.write_text(path.read_text() + "garbage\n" + '{"type": "tick"}\n')
    with pytest.raises(RecordingError, match=rf"^{path}:3: not a JSON line"):
        list(read_recording(str(path)))


def test_a_file_that_is_not_a_recording_is_refused(tmp_path: Path) -> None:
    """A JSON-lines file without the recording header is refused at line 1."""
    path = tmp_path / "other.jsonl"
    path.write_text('{"type": "tick"}\n')
    with pytest.raises(RecordingError, match=rf"^{path}:1: not a reactor recording"):
        list(read_recording(str(path)))


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    """A recording from a newer format version asks for a newer reactor."""
    path = tmp_path / "new.jsonl"
    path.write_text(f'{{"type": "header", "format": "{RECORDING_FORMAT}", "format_version": 99}}\n')
    with pytest.raises(RecordingError, match=r"format version 99.*use a newer reactor"):
        list(read_recording(str(path)))


def test_missing_file_and_unwritable_path_errors(tmp_path: Path) -> None:
    """Reading a missing file and writing into a missing directory raise RecordingError."""
    with pytest.raises(RecordingError, match="cannot open"):
        list(read_recording(str(tmp_path / "absent.jsonl")))
    with pytest.raises(RecordingError, match="cannot open for writing"):
        TickRecorder(str(tmp_path / "no" / "dir.jsonl")).open()


def test_non_finite_values_are_written_as_null(tmp_path: Path) -> None:
    """NaN and infinities (not JSON) are recorded as null, so every line stays valid JSON."""
    path = str(tmp_path / "run.jsonl")
    with TickRecorder(path) as recorder:
        recorder.write({"type": "tick", "x": float("inf"), "y": [float("nan")]})
    tick = list(read_recording(path))[1]
    assert tick["x"] is None and tick["y"] == [None]


def test_config_digest_is_stable_and_sensitive() -> None:
    """Equal configs give equal digests; a changed value changes the digest."""
    a = load_config_text("reactor:\n  tick: 1s\n", "a.yaml")
    b = load_config_text("reactor:\n  tick: 1000ms\n", "b.yaml")
    c = load_config_text("reactor:\n  tick: 2s\n", "c.yaml")
    assert config_digest(a) == config_digest(b)
    assert config_digest(a) != config_digest(c)
    assert config_digest(a).startswith("sha256:")


@pytest.mark.anyio
async def test_the_recorder_task_writes_submitted_ticks_and_closes(tmp_path: Path) -> None:
    """As a task, the recorder writes every submitted record off the loop and closes on exit."""
    path = str(tmp_path / "run.jsonl")
    recorder = TickRecorder(path)
    assert recorder.submit({"type": "tick"}) is False  # not running yet: dropped, counted
    assert recorder.dropped == 1
    async with anyio.create_task_group() as tg:
        await tg.start(recorder.run)
        for i in range(1, 11):
            assert recorder.submit(tick_record(doc(i), stamp=float(i)))
            await anyio.sleep(0.01)
        with anyio.fail_after(5):
            while recorder.written < 11:  # the header and ten ticks
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert recorder.submit({"type": "tick"}) is False  # stopped: dropped again
    ticks = [r for r in read_recording(path) if r["type"] == "tick"]
    assert [t["tick"] for t in ticks] == list(range(1, 11))


@pytest.mark.anyio
async def test_a_lagging_writer_drops_ticks_rather_than_block(tmp_path: Path) -> None:
    """Submitting faster than the writer drains never blocks: the excess is dropped and counted."""
    recorder = TickRecorder(str(tmp_path / "run.jsonl"))
    async with anyio.create_task_group() as tg:
        await tg.start(recorder.run)
        accepted = sum(recorder.submit({"type": "tick", "tick": i}) for i in range(100))
        assert accepted < 100
        assert recorder.dropped == 100 - accepted
        tg.cancel_scope.cancel()
