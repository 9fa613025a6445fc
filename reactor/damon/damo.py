"""damo's kdamonds files: read them into the model, and export reactor's own.

damo (DAMON's user-space tool) describes kdamonds as ``{"kdamonds": [...]}`` in JSON or
YAML (``damo args damon --format json``, ``damo start --kdamonds FILE``). The model in
:mod:`reactor.config.damon` uses damo's key names, so loading is validation with
file:line errors (the config loader's machinery), and exporting is a walk that writes
damo's spellings:

- access-pattern bounds keep their unit (``"5 samples"``, ``"10 aggr_intervals"``,
  ``"2 s"`` as µs, ``"5 %"``); a bound without one is written bare (damo reads a bare
  number as percent for ``nr_accesses`` and µs for ``age``, as reactor does); the
  ``ULONG_MAX`` "no limit" value is written ``max``;
- reactor's two extensions are folded into damo's form: ``core_filters``/``ops_filters``
  are written into damo's single ``filters`` list (damo routes it by type, explicit
  core and ops filters first), and the pattern-level ``nr_accesses_unit``/``age_unit``
  into each bound's unit.

Round trip: for a model that uses neither extension, ``load(export(m)) == m``.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import ValidationError

from reactor.config._errors import translate
from reactor.config._yaml import format_path, parse_yaml
from reactor.config.damon import (
    AccessBound,
    AccessPattern,
    DamonSection,
    DamosFilter,
    Kdamond,
    MonitoringContext,
    QuotaGoal,
    Region,
    Scheme,
    Target,
)
from reactor.config.loader import _read
from reactor.errors import ConfigError, ConfigIssue
from reactor.units import ULONG_MAX

__all__ = ("dump_damo_json", "dump_damo_yaml", "load_damo_file", "load_damo_text", "to_damo_dict")

_UNIT_WORD = {
    "samples": "samples",
    "aggr_intervals": "aggr_intervals",
    "percent": "%",
    "usec": "us",
}


def _number(value: float) -> int | float | str:
    if value >= float(ULONG_MAX):
        return "max"
    return int(value) if float(value).is_integer() else value


def _bound(bound: AccessBound, default_unit: str | None) -> int | float | str:
    unit = bound.unit or default_unit
    if unit is None:
        return _number(bound.value)
    number = str(ULONG_MAX) if bound.value >= float(ULONG_MAX) else str(_number(bound.value))
    return f"{number} {_UNIT_WORD[unit]}"


def _pattern(p: AccessPattern) -> dict[str, Any]:
    return {
        "sz_bytes": {"min": p.sz_bytes.min, "max": p.sz_bytes.max},
        "nr_accesses": {
            "min": _bound(p.nr_accesses.min, p.nr_accesses_unit),
            "max": _bound(p.nr_accesses.max, p.nr_accesses_unit),
        },
        "age": {"min": _bound(p.age.min, p.age_unit), "max": _bound(p.age.max, p.age_unit)},
    }


def _filter(f: DamosFilter) -> dict[str, Any]:
    ar = f.address_range
    return {
        "filter_type": f.filter_type,
        "matching": f.matching,
        "allow": f.allow,
        "memcg_path": f.memcg_path,
        "address_range": {"start": ar.start, "end": ar.end} if ar is not None else None,
        "damon_target_idx": f.damon_target_idx,
        "hugepage_size": list(f.hugepage_size) if f.hugepage_size is not None else None,
    }


def _goal(g: QuotaGoal) -> dict[str, Any]:
    return {
        "metric": g.metric,
        "nid": g.nid,
        "memcg_path": g.memcg_path,
        "target_value": g.target_value,
        "current_value": g.current_value,
    }


def _scheme(s: Scheme) -> dict[str, Any]:
    q = s.quotas
    out: dict[str, Any] = {"action": s.action, "dests": [d.model_dump() for d in s.dests]}
    if s.target_nid is not None:
        out["target_nid"] = s.target_nid
    out |= {
        "access_pattern": _pattern(s.access_pattern),
        "apply_interval_us": s.apply_interval_us,
        "quotas": {
            "time_ms": q.time_ms,
            "sz_bytes": q.sz_bytes,
            "reset_interval_ms": q.reset_interval_ms,
            "fail_charge_num": q.fail_charge_num,
            "fail_charge_denom": q.fail_charge_denom,
            "goals": [_goal(g) for g in q.goals],
            "goal_tuner": q.goal_tuner,
            "effective_sz_bytes": q.effective_sz_bytes,
            "weights": q.weights.model_dump(),
        },
        "watermarks": s.watermarks.model_dump(),
        "filters": [_filter(f) for f in (*s.core_filters, *s.ops_filters, *s.filters)],
    }
    if s.stats is not None:
        out["stats"] = s.stats.model_dump()
    return out


def _region(r: Region) -> dict[str, Any]:
    out: dict[str, Any] = {"start": r.start, "end": r.end}
    if r.nr_accesses is not None:
        out["nr_accesses"] = r.nr_accesses.model_dump()
        out["age"] = r.age.model_dump() if r.age is not None else None
        out["probe_hits"] = list(r.probe_hits)
        out["sz_filter_passed"] = r.sz_filter_passed
    return out


def _target(t: Target) -> dict[str, Any]:
    return {"pid": t.pid, "obsolete": t.obsolete, "regions": [_region(r) for r in t.regions]}


def _context(c: MonitoringContext) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ops": c.ops,
        "addr_unit": c.addr_unit,
        "targets": [_target(t) for t in c.targets],
        "intervals": c.intervals.model_dump(),
        "nr_regions": c.nr_regions.model_dump(),
        "probes": [p.model_dump() for p in c.probes],
    }
    if c.sample_control is not None:
        out["sample_control"] = c.sample_control.model_dump()
    out["pause"] = c.pause
    out["schemes"] = [_scheme(s) for s in c.schemes]
    return out


def _kdamond(k: Kdamond) -> dict[str, Any]:
    return {
        "state": k.state,
        "pid": k.pid,
        "refresh_ms": k.refresh_ms,
        "contexts": [_context(c) for c in k.contexts],
    }


def to_damo_dict(section: DamonSection) -> dict[str, Any]:
    """``section`` in damo's kdamonds schema (JSON-ready: dicts, lists, str, int, bool)."""
    return {"kdamonds": [_kdamond(k) for k in section.kdamonds]}


def dump_damo_json(section: DamonSection) -> str:
    """damo's JSON form (what ``damo start --kdamonds FILE`` reads)."""
    return json.dumps(to_damo_dict(section), indent=4) + "\n"


def dump_damo_yaml(section: DamonSection) -> str:
    """damo's YAML form, keys in damo's order."""
    return yaml.safe_dump(to_damo_dict(section), sort_keys=False)


def load_damo_text(text: str, filename: str = "<string>") -> DamonSection:
    """Load a damo kdamonds file (JSON or YAML): :class:`ConfigError` lists every issue
    with its line and column."""
    loaded = parse_yaml(text)
    issues = [
        ConfigIssue(filename, line, column, format_path(path), message)
        for line, column, path, message in loaded.problems
    ]
    if not issues and not isinstance(loaded.data, dict):
        issues.append(
            ConfigIssue(
                filename, 1, 1, "", "expected a mapping with a 'kdamonds' list (damo's format)"
            )
        )
    if issues:
        raise ConfigError(issues)
    try:
        return DamonSection.model_validate(loaded.data)
    except ValidationError as exc:
        raise ConfigError(translate(exc, DamonSection, loaded, filename)) from None


def load_damo_file(path: str) -> DamonSection:
    """Load a damo kdamonds file from disk (a user file, read like a config file)."""
    text, issues = _read(path)
    if text is None:
        raise ConfigError(issues)
    return load_damo_text(text, path)
