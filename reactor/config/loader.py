"""Load a config file once, strictly, reporting every problem of the file at once."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reactor.config._errors import issue_at, translate
from reactor.config._types import unit_formatters
from reactor.config._yaml import Loaded, format_path, parse_yaml
from reactor.config.model import Config, reference_issues
from reactor.errors import ConfigError, ConfigIssue

__all__ = ("json_schema", "load_config", "load_config_text", "validate_files", "validate_text")

_SECTIONS = ", ".join(Config.model_fields)


def _structure_issues(loaded: Loaded, filename: str) -> list[ConfigIssue]:
    if loaded.data is None and not loaded.problems:
        return [
            ConfigIssue(
                filename,
                1,
                1,
                "",
                "the file is empty (no sections): write {} for a config with every default",
            )
        ]
    if loaded.data is not None and not isinstance(loaded.data, dict):
        return [
            issue_at(
                loaded,
                filename,
                (),
                f"expected a mapping of sections ({_SECTIONS}), got a "
                f"{'list' if isinstance(loaded.data, list) else 'single value'}",
            )
        ]
    return []


def validate_text(text: str, filename: str = "<string>") -> tuple[Config | None, list[ConfigIssue]]:
    """Parse and validate ``text``: the config (None if invalid) and every issue, in file order."""
    loaded = parse_yaml(text)
    issues = [
        ConfigIssue(filename, line, column, format_path(path), message)
        for line, column, path, message in loaded.problems
    ]
    issues += _structure_issues(loaded, filename)
    config: Config | None = None
    if isinstance(loaded.data, dict):
        try:
            config = Config.model_validate(loaded.data)
        except ValidationError as exc:
            translated = translate(exc, Config, loaded, filename)
            # The values behind YAML problems (a refused tag, a bad !!int) were dropped;
            # their "expected …, got null" would only repeat the first report.
            dropped = {i.path for i in issues}
            issues += [i for i in translated if i.path not in dropped]
            if not any(e["loc"] == () for e in exc.errors()):
                # Config's own cross-section check did not run: run it on the raw data.
                issues += [
                    issue_at(loaded, filename, path, message)
                    for path, message in reference_issues(loaded.data)
                ]
    issues = sorted(dict.fromkeys(issues), key=lambda i: (i.line, i.column))
    return (config if not issues else None), issues


def load_config_text(text: str, filename: str = "<string>") -> Config:
    """Build a :class:`Config` from YAML text; :class:`ConfigError` carries every issue."""
    config, issues = validate_text(text, filename)
    if config is None:
        raise ConfigError(issues)
    return config


def _read(path: str | os.PathLike[str]) -> tuple[str | None, list[ConfigIssue]]:
    name = os.fspath(path)
    try:
        return Path(name).read_text(encoding="utf-8"), []
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    return None, [ConfigIssue(name, 0, 0, "", f"cannot read the config file: {reason}")]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load a config file; a missing, unreadable or invalid file raises :class:`ConfigError`."""
    text, issues = _read(path)
    if text is None:
        raise ConfigError(issues)
    return load_config_text(text, os.fspath(path))


def validate_files(paths: Iterable[str | os.PathLike[str]]) -> list[ConfigIssue]:
    """Every issue of every file (an empty list means all are valid)."""
    issues: list[ConfigIssue] = []
    for path in paths:
        text, read_issues = _read(path)
        issues += read_issues
        if text is not None:
            issues += validate_text(text, os.fspath(path))[1]
    return issues


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config file, for editors and ``reactor schema``."""
    schema = Config.model_json_schema(mode="validation")
    _defaults_in_unit_form(schema, schema.get("$defs", {}))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "reactor configuration",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def _defaults_in_unit_form(node: Any, defs: dict[str, Any]) -> None:
    """Rewrite every ``default`` the models store as a number (seconds, bytes, fraction)
    in the unit form the config takes (``1s``, ``0 B``, ``4%``), in place."""
    if isinstance(node, dict):
        for prop in node.get("properties", {}).values():
            if "default" in prop:
                prop["default"] = _unit_form(prop["default"], prop, defs)
        for value in node.values():
            _defaults_in_unit_form(value, defs)
    elif isinstance(node, list):
        for value in node:
            _defaults_in_unit_form(value, defs)


def _unit_form(value: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """``value`` (a stored default) as the config would write it under ``schema``."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        schema = defs.get(ref.removeprefix("#/$defs/"), {})
    if value is None or isinstance(value, bool):
        return value
    if "anyOf" in schema:
        for branch in schema["anyOf"]:
            converted = _unit_form(value, branch, defs)
            if converted is not value:
                return converted
        return value
    formatter = unit_formatters().get(schema.get("pattern", ""))
    if formatter is not None and isinstance(value, int | float):
        return formatter(value)
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: _unit_form(v, props[k], defs) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_unit_form(v, schema["items"], defs) for v in value]
    return value
