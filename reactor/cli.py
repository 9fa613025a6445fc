"""The ``reactor`` command: parse arguments, call the library. Nothing runs at import.

Exit status: 0 success (including shutdown by SIGTERM/SIGINT or --duration); 1 a
runtime failure (for example a required source that cannot be read, or a reader that
closed the output pipe early, which ends the command quietly); 2 invalid usage or an
invalid config.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Sequence

__all__ = ("main",)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _duration(text: str) -> float:
    """``--duration`` takes seconds (``5``) or a duration with a unit (``2m``)."""
    try:
        value = float(text)
    except ValueError:
        from reactor.units import parse_duration

        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration > 0, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reactor", description="Data-access-aware memory controller for Linux."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("config", metavar="CONFIG", help="YAML config file")
    serve.add_argument(
        "--dry-run", action="store_true", help="compute and log every decision, change nothing"
    )
    serve.add_argument(
        "--duration",
        type=_duration,
        metavar="S",
        help="stop cleanly after S seconds (or a duration such as 2m)",
    )
    serve.add_argument(
        "--log-format",
        choices=("json", "console"),
        help="log rendering (default: the config's reactor.log_format; auto picks console "
        "on a terminal, JSON lines otherwise)",
    )
    serve.add_argument(
        "--record",
        metavar="FILE",
        help="append every tick to FILE as JSON lines (docs/observability.md)",
    )
    serve.add_argument(
        "--run-dir",
        metavar="DIR",
        help="run-time directory (status socket, ownership record); overrides reactor.run_dir",
    )
    status = sub.add_parser("status", help="show the running daemon's status (root-only socket)")
    status.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG",
        help="config whose api.status_socket / reactor.run_dir to use (default: /run/reactor)",
    )
    status.add_argument("--socket", metavar="PATH", help="status socket path (overrides CONFIG)")
    status.add_argument("--json", action="store_true", help="print the raw JSON document")
    status.add_argument("--timeout", type=_duration, default=5.0, metavar="S")
    validate = sub.add_parser("validate", help="check config files; exit 2 on any error")
    validate.add_argument("configs", metavar="CONFIG", nargs="+")
    sub.add_parser("schema", help="print the JSON Schema of the config")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reactor`` console script."""
    args = _parser().parse_args(argv)
    try:
        status = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (``reactor schema | head``): stop quietly, as CLIs do.
        # Closing stdout (its failed flush ignored) drops what is still buffered, so the
        # interpreter's final flush has nothing to fail on and prints no traceback.
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.close()
        return EXIT_FAILURE
    return status


def _run(args: argparse.Namespace) -> int:
    if args.command == "version":
        from reactor import __version__

        print(f"reactor {__version__}")
        return EXIT_OK
    if args.command == "schema":
        from reactor.config import json_schema

        print(json.dumps(json_schema(), indent=2, sort_keys=False))
        return EXIT_OK
    if args.command == "validate":
        return _validate(args.configs)
    if args.command == "status":
        return _status(args)
    return _serve(args)


def _validate(paths: Sequence[str]) -> int:
    from reactor.config import validate_files

    issues = validate_files(paths)
    for issue in issues:
        print(issue, file=sys.stderr)
    if issues:
        files = len({i.file for i in issues})
        print(f"{len(issues)} error(s) in {files} file(s)", file=sys.stderr)
        return EXIT_USAGE
    for path in paths:
        print(f"{path}: ok")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    import anyio
    import structlog

    from reactor.config import load_config
    from reactor.engine.runtime import apply_overrides
    from reactor.errors import ConfigError
    from reactor.log import configure_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_USAGE
    overrides: dict[str, object] = {}
    if args.dry_run:
        overrides["dry_run"] = True
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    config = apply_overrides(config, overrides)
    configure_logging(args.log_format or config.reactor.log_format, config.reactor.log_level)
    log = structlog.get_logger("reactor")
    try:
        anyio.run(_serve_async, config, args.config, args.duration, args.record, overrides)
    except BaseException as exc:
        error = _reactor_error(exc)
        if error is None:
            raise
        log.error("failed", error=str(error), error_type=type(error).__name__)
        return EXIT_FAILURE
    log.info("stopped", exit_status=EXIT_OK)
    return EXIT_OK


def _reactor_error(exc: BaseException) -> BaseException | None:
    """The ReactorError inside ``exc`` (task groups wrap errors in exception groups)."""
    from reactor.errors import ReactorError

    if isinstance(exc, ReactorError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _reactor_error(inner)
            if found is not None:
                return found
    return None


async def _serve_async(
    config: object,
    path: str,
    duration: float | None,
    record: str | None,
    overrides: dict[str, object],
) -> None:
    from reactor.config import Config
    from reactor.engine.runtime import serve
    from reactor.log import set_log_level

    assert isinstance(config, Config)
    await serve(
        config,
        config_path=path,
        duration=duration,
        record=record,
        overrides=overrides,
        set_log_level=set_log_level,
    )


def _status(args: argparse.Namespace) -> int:
    from reactor.api.status import StatusUnavailable, format_status, query_status_sync
    from reactor.config import ApiConfig, ReactorSection, load_config
    from reactor.errors import ConfigError

    path = args.socket
    if path is None:
        if args.config:
            try:
                cfg = load_config(args.config)
            except ConfigError as exc:
                for issue in exc.issues:
                    print(issue, file=sys.stderr)
                return EXIT_USAGE
            path = cfg.api.status_socket_path(cfg.reactor.run_dir)
        else:
            path = ApiConfig().status_socket_path(ReactorSection().run_dir)
    try:
        doc = query_status_sync(path, timeout_s=args.timeout)
    except StatusUnavailable as exc:
        print(f"reactor status: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(doc, indent=2) if args.json else format_status(doc))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
