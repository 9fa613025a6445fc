"""reactor.log: JSON lines off a TTY, console on one, and a level that can change live."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from reactor.log import configure_logging, resolve_format, set_log_level


class FakeTTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_auto_picks_console_on_a_tty_and_json_lines_otherwise() -> None:
    """`auto` resolves by the stream: console on a terminal, JSON on a pipe or file."""
    assert resolve_format("auto", FakeTTY()) == "console"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", FakeTTY()) == "json"
    assert resolve_format("console", io.StringIO()) == "console"


def test_an_unknown_format_or_level_is_refused() -> None:
    """A format or level outside the accepted ones names what is accepted."""
    with pytest.raises(ValueError, match=r"expected one of auto, json, console, got 'xml'"):
        resolve_format("xml", io.StringIO())
    with pytest.raises(ValueError, match=r"expected one of debug, info, warning, error"):
        configure_logging("json", "loud", stream=io.StringIO())


def test_json_lines_carry_event_level_timestamp_and_fields() -> None:
    """On a non-TTY stream each event is one JSON object with its bound fields."""
    out = io.StringIO()
    assert configure_logging("auto", "info", stream=out) == "json"
    structlog.get_logger("t").bind(topic="psi.memory").info("node_sample", dt_s=1.0)
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "node_sample"
    assert event["level"] == "info"
    assert event["topic"] == "psi.memory" and event["dt_s"] == 1.0
    assert event["timestamp"].endswith("Z")


def test_console_rendering_on_a_tty_is_not_json() -> None:
    """On a TTY the event is rendered for people: the event name and key=value fields."""
    out = FakeTTY()
    assert configure_logging("auto", "info", stream=out) == "console"
    structlog.get_logger("t").info("node_sample", dt_s=1.0)
    text = out.getvalue()
    assert "node_sample" in text and "dt_s" in text
    assert not text.lstrip().startswith("{")


def test_level_filters_and_changes_live_for_already_bound_loggers() -> None:
    """Events below the level are dropped; set_log_level applies to loggers bound before it."""
    out = io.StringIO()
    configure_logging("json", "warning", stream=out)
    log = structlog.get_logger("t").bind(topic="vmstat")
    log.info("hidden")
    log.warning("shown")
    set_log_level("debug")
    log.debug("now_shown")
    set_log_level("error")
    log.warning("hidden_again")
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["shown", "now_shown"]
