"""Turn pydantic's validation errors into reactor's located, worded :class:`ConfigIssue`.

pydantic's own texts ("Input should be …") never reach a user: every error type reactor's
models can produce is reworded here in the style "expected …, got …", with the file
position of the offending value (of the key, for an unknown key; of the parent mapping,
for a missing key), the key path, and the accepted values or keys.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reactor.config._types import show
from reactor.config._yaml import Loaded, Mark, Path, format_path
from reactor.errors import ConfigIssue

__all__ = ("issue_at", "parse_subpath", "translate")

_YAML11_BOOLEANS = frozenset({"yes", "no", "on", "off", "y", "n"})
_TYPE_WORDS = {
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "dict_type": "a mapping (key: value)",
    "list_type": "a list",
    "tuple_type": "a list",
    "finite_number": "a finite number",
}
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def parse_subpath(text: str) -> Path:
    """``"targets[1].pid"`` -> ``("targets", 1, "pid")``."""
    out: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", text):
        out.append(int(index) if index else name)
    return tuple(out)


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            arms = [a for a in get_args(tp) if a is not type(None)]
            if len(arms) != 1:
                return tp
            tp = arms[0]
        else:
            return tp


def _type_at(root: type[BaseModel], path: Path) -> Any:
    """The declared type at ``path`` in the model tree (None if the path leaves it)."""
    tp: Any = root
    for part in path:
        tp = _unwrap(tp)
        if isinstance(part, str) and isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
        elif isinstance(part, int) and get_origin(tp) in (tuple, list):
            tp = get_args(tp)[0]
        else:
            return None
    return _unwrap(tp)


def _raw_at(data: Any, path: Path) -> tuple[bool, Any]:
    for part in path:
        in_map = isinstance(data, dict) and isinstance(part, str) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_map or in_list):
            return False, None
        data = data[part]
    return True, data


def _path_from_loc(loc: Sequence[str | int], data: Any) -> Path:
    """Map pydantic's ``loc`` onto the raw data, dropping anything that is not a key."""
    path: list[str | int] = []
    for n, part in enumerate(loc):
        if isinstance(data, dict) and isinstance(part, str):
            if part in data:
                path.append(part)
                data = data[part]
            elif n == len(loc) - 1:
                path.append(part)  # a missing key
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            path.append(part)
            data = data[part]
    return tuple(path)


def _mark(loaded: Loaded, path: Path, *, key: bool = False) -> tuple[int, int]:
    for cut in range(len(path), -1, -1):
        mark: Mark | None = loaded.marks.get(path[:cut])
        if mark is not None:
            if key and cut == len(path):
                return mark.key_line, mark.key_column
            return mark.line, mark.column
    return 0, 0


def issue_at(
    loaded: Loaded, filename: str, path: Path, message: str, *, key: bool = False
) -> ConfigIssue:
    """An issue located at ``path`` (its key when ``key``), falling back to its parents."""
    line, column = _mark(loaded, path, key=key)
    return ConfigIssue(filename, line, column, format_path(path), message)


def _section_name(path: Path) -> str:
    return f"section {format_path(path)!r}" if path else "the top level"


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_key(root: type[BaseModel], path: Path) -> str:
    key = str(path[-1])
    model = _type_at(root, path[:-1])
    fields = getattr(model, "model_fields", None) if isinstance(model, type) else None
    accepted = list(fields or ())
    noun = "section" if len(path) == 1 else "key"
    return (
        f"unknown {noun} {key!r} in {_section_name(path[:-1])}{_did_you_mean(key, accepted)} "
        f"(accepted: {', '.join(accepted)})"
    )


def _literal(root: type[BaseModel], path: Path, value: Any) -> str:
    tp = _type_at(root, path)
    choices = [str(a) for a in get_args(tp)] if get_origin(tp) is Literal else []
    hint = _did_you_mean(value, choices) if isinstance(value, str) else ""
    return f"expected one of {', '.join(choices)}, got {show(value)}{hint}"


def _message(root: type[BaseModel], error: ErrorDetails, path: Path, value: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        return _literal(root, path, value)
    if kind in ("bool_type", "bool_parsing"):
        hint = ""
        if isinstance(value, str) and value.lower() in _YAML11_BOOLEANS:
            hint = " (YAML 1.1 words like yes/no/on/off are strings here: write true or false)"
        return f"expected true or false, got {show(value)}{hint}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {show(value)}"
    if kind in _BOUNDS:
        name, op = _BOUNDS[kind]
        return f"expected a value {op} {ctx.get(name)}, got {show(value)}"
    if kind in ("too_short", "too_long"):
        length = ctx.get("min_length", ctx.get("max_length"))
        return f"expected a list of length {length}, got {show(value)}"
    return f"invalid value {show(value)} ({kind})"


def translate(
    exc: ValidationError, root: type[BaseModel], loaded: Loaded, filename: str
) -> list[ConfigIssue]:
    """Every error of ``exc`` as a located, reworded issue."""
    issues: list[ConfigIssue] = []
    for error in exc.errors():
        path = _path_from_loc(error["loc"], loaded.data)
        found, value = _raw_at(loaded.data, path)
        kind = error["type"]
        ctx = error.get("ctx") or {}
        if kind == "reactor":
            for sub, message in ctx.get("issues") or [("", ctx["message"])]:
                issues.append(issue_at(loaded, filename, path + parse_subpath(sub), message))
        elif kind == "extra_forbidden":
            issues.append(issue_at(loaded, filename, path, _unknown_key(root, path), key=True))
        elif kind == "missing":
            parent = format_path(path[:-1])
            where = f" in {parent}" if parent else ""
            issues.append(
                issue_at(loaded, filename, path, f"missing required key {path[-1]!r}{where}")
            )
        else:
            message = _message(root, error, path, value if found else None)
            issues.append(issue_at(loaded, filename, path, message))
    return issues
