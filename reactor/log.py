"""Structured logging set-up for the daemon (the CLI calls it; library mode does not).

JSON lines when stderr is not a terminal (journald, Kubernetes, files), a readable console
rendering on a terminal. Wall-clock timestamps exist only here, in logs: control maths
uses the runtime's monotonic clock.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

__all__ = (
    "TICK_LOG_HEARTBEAT",
    "LogFormat",
    "configure_logging",
    "output_moved",
    "repeat_logged",
    "resolve_format",
    "set_log_level",
)

#: Under ``reactor.log_ticks: changes`` a per-tick line that brings nothing new still
#: goes at info every this many ticks (a minute at the default 1 s tick), so a quiet
#: log shows the daemon alive and its current values.
TICK_LOG_HEARTBEAT = 60

LogFormat = Literal["auto", "json", "console"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _LevelFilter:
    """Drops events below a level that can change while the daemon runs (a SIGHUP that
    edits ``reactor.log_level``). It is a processor, not structlog's filtering wrapper
    class, because loggers bound before the change (``log.bind(topic=...)`` in long-lived
    tasks) keep their wrapper class but share the processor list."""

    def __init__(self, level: int) -> None:
        self.level = level

    def __call__(
        self, logger: object, method_name: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        if _LEVELS.get(method_name, logging.CRITICAL) < self.level:
            raise structlog.DropEvent
        return event_dict


_level_filter = _LevelFilter(logging.INFO)


def set_log_level(level: str) -> None:
    """Change the level of the logging :func:`configure_logging` set up, live."""
    _level_filter.level = _level(level)


def _level(level: str) -> int:
    if level not in _LEVELS:
        raise ValueError(f"log level: expected one of {', '.join(_LEVELS)}, got {level!r}")
    return _LEVELS[level]


def resolve_format(fmt: str, stream: TextIO) -> Literal["json", "console"]:
    """``auto`` means console on a TTY and JSON lines otherwise."""
    if fmt == "auto":
        return "console" if stream.isatty() else "json"
    if fmt in ("json", "console"):
        return fmt  # type: ignore[return-value]
    raise ValueError(f"log format: expected one of auto, json, console, got {fmt!r}")


def configure_logging(
    fmt: str = "auto", level: str = "info", stream: TextIO | None = None
) -> Literal["json", "console"]:
    """Configure structlog globally for the daemon; returns the format chosen."""
    out = stream if stream is not None else sys.stderr
    chosen = resolve_format(fmt, out)
    _level_filter.level = _level(level)
    processors: list[structlog.typing.Processor] = [
        _level_filter,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if chosen == "json":
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False, default=_json_default),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    return chosen


#: A failure repeated in a row is logged the first time, then every this-many-th time
#: (each is still counted where it is kept), so a broken file cannot flood the log.
REPEAT_LOG_EVERY = 60


def repeat_logged(consecutive: int) -> bool:
    """Whether the ``consecutive``-th failure in a row goes to the log (the first, then
    every :data:`REPEAT_LOG_EVERY`-th)."""
    return consecutive == 1 or consecutive % REPEAT_LOG_EVERY == 0


def output_moved(new: float | None, old: float | None) -> bool:
    """Whether a controller output moved enough to log: appeared, vanished, or changed
    by more than 1 % of the larger magnitude (an integrator's crawl is no news)."""
    if new is None or old is None:
        return new is not old
    return abs(new - old) > 0.01 * max(abs(new), abs(old))


def _json_default(obj: object) -> object:
    """Render values JSON does not know (dataclasses, tuples of them) readably."""
    summary = getattr(obj, "summary", None)
    if callable(summary):
        return summary()
    return repr(obj)
