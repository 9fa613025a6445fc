"""Cross-field checks run on the fields that parsed, so a file's errors come all at once."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import ValidationError

from reactor.config import validate_text
from reactor.config.model import MonitorConfig, QuotaConfig

_MONITOR = """\
monitors:
  - name: app
    targets: {command: [sleep, "60"]}
"""
_POLICY = (
    _MONITOR
    + """\
policies:
  - name: shrink
    kind: reclaim
    monitor: app
"""
)


def _report(text: str) -> list[str]:
    config, issues = validate_text(textwrap.dedent(text), "c.yaml")
    assert config is None
    return [f"{i.line}:{i.column} {i.path}: {i.message}" for i in issues]


def test_cross_check_runs_beside_a_failed_field() -> None:
    """sample > aggregation is reported together with a bare ``update``, not after it."""
    assert _report(_MONITOR + "    sample: 200ms\n    aggregation: 100ms\n    update: 1\n") == [
        "4:13 monitors[0].sample: expected sample <= aggregation, got sample 200ms > "
        "aggregation 100ms",
        "6:13 monitors[0].update: expected a duration with a unit, got 1: add a unit, e.g. 1s",
    ]


def test_check_on_a_failed_field_is_skipped() -> None:
    """A check that needs a field that failed stays silent: that field's error stands."""
    assert _report(_MONITOR + "    sample: 5\n    aggregation: 100ms\n") == [
        "4:13 monitors[0].sample: expected a duration with a unit, got 5: add a unit, e.g. 5s",
    ]


def test_failed_nested_mapping_skips_checks_that_need_it() -> None:
    """A quota or goal that failed is not reported again as missing by the policy."""
    report = _report(
        _POLICY + "    goals: [{metric: bogus, target: 1%}]\n    quota: {max: 1 GiB, per: 0s}\n"
    )
    assert [line.split(" ")[1] for line in report] == [
        "policies[0].goals[0].metric:",
        "policies[0].quota.per:",
    ]


def test_check_not_touching_the_failed_field_still_reports() -> None:
    """``tuner: kernel`` without a scheme is reported though ``kind`` is wrong."""
    report = _report(
        _MONITOR + "policies:\n  - {name: p, kind: shrink, monitor: app, tuner: kernel}\n"
    )
    assert any("policies[0].kind: expected one of" in line for line in report)
    assert any(
        "policies[0].tuner: tuner kernel tunes a DAMON scheme's quota" in line for line in report
    )
    assert not any("needs at least one goal" in line for line in report)
    assert not any("needs quota bounds" in line for line in report)


def test_unknown_key_and_cross_check_together() -> None:
    """An unknown key does not hide the mapping's own cross-field check."""
    assert _report(_MONITOR + "    regions: {min: 50, max: 10, mx: 3}\n") == [
        "4:20 monitors[0].regions.min: expected min <= max, got min 50 > max 10",
        "4:33 monitors[0].regions.mx: unknown key 'mx' in section 'monitors[0].regions'; did "
        "you mean 'max'? (accepted: min, max)",
    ]


def test_missing_required_key_and_cross_check_together() -> None:
    """A missing ``name`` does not hide the monitor's interval checks."""
    report = _report("monitors:\n  - {targets: {pids: [42]}, aggregation: 1s, ops: sideways}\n")
    assert report == [
        "2:5 monitors[0].name: missing required key 'name' in monitors[0]",
        "2:42 monitors[0].aggregation: expected sample and aggregation together (or neither, "
        "for the backend's defaults), got only aggregation",
        "2:51 monitors[0].ops: expected one of vaddr, fvaddr, paddr, got 'sideways'",
    ]


def test_damo_context_checks_beside_failed_fields() -> None:
    """A damo context reports its ops rules, a nested min > max and a bad field at once."""
    report = _report(
        """\
        damon:
          kdamonds:
            - contexts:
                - ops: vaddr
                  targets: [{pid: 42}]
                  addr_unit: 4096
                  nr_regions: {min: 2000, max: 1000}
                  intervals: {sample_us: 1 s, aggr_us: 100 ms, ops_update_us: soon}
        """
    )
    context = "damon.kdamonds[0].contexts[0]"
    assert [line.split(" ")[1] for line in report] == [
        f"{context}.addr_unit:",
        f"{context}.nr_regions.min:",
        f"{context}.intervals.sample_us:",
        f"{context}.intervals.ops_update_us:",
    ]


def test_models_still_refuse_cross_field_violations() -> None:
    """Built directly, a model runs its cross-field checks like an after-validator."""
    with pytest.raises(ValidationError, match="expected min <= max"):
        QuotaConfig.model_validate({"min": "1 GiB", "max": "1 MiB"})
    with pytest.raises(ValidationError) as info:
        MonitorConfig.model_validate(
            {"name": "m", "targets": {"pids": [42]}, "sample": "2s", "aggregation": "1s", "x": 1}
        )
    assert [e["type"] for e in info.value.errors()] == ["extra_forbidden", "reactor"]
    ok = MonitorConfig.model_validate({"name": "m", "targets": {"pids": [42]}})
    assert ok.update == 1.0


def test_a_wrong_goal_metric_is_the_only_error_of_its_goal() -> None:
    """target_value is read in its metric's unit: with the metric wrong, its ``5%`` is
    not blamed as "expected a whole number" as well (only the metric's error)."""
    report = _report(
        """\
        damon:
          kdamonds:
            - contexts:
                - ops: vaddr
                  targets: [{pid: 1}]
                  schemes:
                    - action: pageout
                      quotas:
                        goals:
                          - {metric: some_mem_psi, target_value: 5%}
        """
    )
    assert len(report) == 1 and report[0].endswith("did you mean 'some_mem_psi_us'?"), report


def test_feedforward_controller_needs_a_native_style_reclaim_with_a_stall_goal() -> None:
    """controller feedforward drains cold regions: refused for memory.reclaim (cgroup)
    and for a policy whose goals are all memory caps; accepted otherwise."""
    policy = _POLICY + "    quota: {max: 64 MiB}\n    controller: {kind: feedforward}\n"
    assert _report(
        policy + "    cgroup: /sys/fs/cgroup/app\n    goals: [{metric: memory_psi_some, "
        "target: 0.5%}]\n"
    ) == [
        "9:24 policies[0].controller.kind: controller feedforward drains a monitor's cold "
        "regions: it is for reclaim policies without cgroup (memory.reclaim picks by LRU)"
    ]
    report = _report(policy + "    goals: [{metric: free_ratio, target: 10%}]\n")
    assert len(report) == 1 and "add one (e.g. metric memory_psi_some" in report[0], report
    config, issues = validate_text(
        textwrap.dedent(policy + "    goals: [{metric: memory_psi_some, target: 0.5%}]\n"),
        "c.yaml",
    )
    assert config is not None and not issues
