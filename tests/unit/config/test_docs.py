"""docs/configuration.md stays in step with the config models."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from reactor.config import Config
from reactor.config.damon import AccessBound

DOC = Path(__file__).parents[3] / "docs" / "configuration.md"


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) in (Annotated, Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0]
    return tp


def _model_paths(model: type[BaseModel], prefix: str) -> set[str]:
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.add(path)
        tp = _unwrap(field.annotation)
        if get_origin(tp) is tuple:
            inner = _unwrap(get_args(tp)[0])
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                paths |= _model_paths(inner, f"{path}[].")
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and tp is not AccessBound:
            paths |= _model_paths(tp, f"{path}.")
    return paths


def _documented_paths() -> set[str]:
    reference = DOC.read_text(encoding="utf-8").split("\n## Reference\n", 1)[1]
    return set(re.findall(r"^\| `([^`]+)` \|", reference, re.MULTILINE))


def _model_key_paths() -> set[str]:
    paths: set[str] = set()
    for name, field in Config.model_fields.items():
        tp = _unwrap(field.annotation)
        if get_origin(tp) is tuple:
            paths |= _model_paths(_unwrap(get_args(tp)[0]), f"{name}[].")
        else:
            paths |= _model_paths(tp, f"{name}.")
    return paths


def test_every_model_key_is_documented() -> None:
    """Every field of every section appears in the reference tables of the doc."""
    missing = _model_key_paths() - _documented_paths()
    assert not missing, f"undocumented keys: {sorted(missing)}"


def test_doc_names_no_unknown_key() -> None:
    """The reference tables name no key that the model lacks."""
    extra = _documented_paths() - _model_key_paths()
    assert not extra, f"documented but not in the model: {sorted(extra)}"


def test_every_section_has_a_heading() -> None:
    """Each top-level section has its own heading in the reference."""
    text = DOC.read_text(encoding="utf-8")
    for section in Config.model_fields:
        assert f"### `{section}`" in text
