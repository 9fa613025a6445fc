"""The JSON Schema's defaults are valid config: each validates under its own property's
schema (an editor that fills in a default gets a value the config takes) and loads."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

import reactor.config.damon as damon_models
import reactor.config.model as models
from reactor.config import json_schema, load_config_text

SCHEMA = json_schema()
DEFS: dict[str, Any] = SCHEMA["$defs"]


def violations(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """Why ``value`` fails ``schema`` (the subset of JSON Schema that pydantic emits here)."""
    if "$ref" in schema:
        return violations(value, DEFS[schema["$ref"].removeprefix("#/$defs/")], where)
    if "anyOf" in schema:
        branches = [violations(value, s, where) for s in schema["anyOf"]]
        return [] if any(not b for b in branches) else [f"{where}: no anyOf branch: {branches}"]
    problems: list[str] = []
    kind = schema.get("type")
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if kind is not None and not checks[kind](value):
        return [f"{where}: expected {kind}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        problems.append(f"{where}: {value!r} < {schema['minimum']}")
    if "maximum" in schema and isinstance(value, int | float) and value > schema["maximum"]:
        problems.append(f"{where}: {value!r} > {schema['maximum']}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += violations(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                problems += violations(item, props[key], f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}: unknown key {key!r}")
    return problems


def defaults() -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(model, key, default, property schema) for every property with a default."""
    found = []
    for model, schema in [("Config", SCHEMA), *DEFS.items()]:
        for key, prop in schema.get("properties", {}).items():
            if "default" in prop:
                found.append((model, key, prop["default"], prop))
    return found


def test_the_schema_has_defaults_to_check() -> None:
    """The check below is not vacuous: the schema gives defaults, unit-typed ones among them."""
    found = defaults()
    assert len(found) > 100
    assert any(prop.get("pattern") and isinstance(d, str) for _, _, d, prop in found)


@pytest.mark.parametrize(
    ("model", "key", "default", "prop"), defaults(), ids=lambda p: p if isinstance(p, str) else ""
)
def test_every_default_validates_under_its_own_property_schema(
    model: str, key: str, default: Any, prop: dict[str, Any]
) -> None:
    """A default written in the schema is a value its own property's schema accepts."""
    assert violations(default, prop, f"{model}.{key}") == []


def model_defaults(name: str) -> dict[str, Any] | None:
    """Every property's schema default of model ``name``; None if a key has none."""
    props = DEFS[name].get("properties", {})
    if any("default" not in p for p in props.values()):
        return None
    return {k: p["default"] for k, p in props.items()}


def models_with_defaults() -> list[str]:
    """Config models whose every key has a default, and that build from no keys at all
    (a cross-field check can still ask for a key: QuotaGoal's non-zero target_value)."""
    names = []
    for name in sorted(DEFS):
        cls = getattr(models, name, None) or getattr(damon_models, name, None)
        if cls is None or model_defaults(name) is None:
            continue
        try:
            cls.model_validate({})
        except ValueError:
            continue
        names.append(name)
    return names


@pytest.mark.parametrize("name", models_with_defaults())
def test_a_models_schema_defaults_load_to_its_own_defaults(name: str) -> None:
    """Each model fed all of its schema defaults builds the same object as no keys at all."""
    cls = getattr(models, name, None) or getattr(damon_models, name)
    assert cls.model_validate(model_defaults(name)) == cls.model_validate({})


def test_the_reactor_sections_schema_defaults_load_through_the_config_loader() -> None:
    """`reactor:` written with the schema's defaults loads, like an empty file, in YAML."""
    written = model_defaults("ReactorSection")
    assert written is not None
    text = yaml.safe_dump(
        {"reactor": written, "signals": {"psi": model_defaults("PsiSourceConfig")}}
    )
    assert load_config_text(text, "defaults.yaml") == load_config_text("{}", "empty.yaml")
