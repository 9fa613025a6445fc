"""Loading configs: defaults, frozen objects, the shipped configs, the schema, damo files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from reactor.config import (
    Config,
    ConfigError,
    json_schema,
    load_config,
    load_config_text,
    validate_files,
)

ROOT = Path(__file__).parents[3]
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


def test_empty_mapping_gives_every_default() -> None:
    """``{}`` is a valid config whose values are the documented defaults."""
    config = load_config_text("{}")
    assert config.reactor.backend == "auto"
    assert config.reactor.tick == 1.0
    assert config.reactor.run_dir == "/run/reactor"
    assert config.reactor.startup_timeout == 5.0
    assert config.api.status_socket is None
    assert config.api.status_socket_path("/run/reactor") == "/run/reactor/status.sock"
    assert config.api.metrics.listen == "127.0.0.1:9464"
    assert config.signals.psi.resources == ("memory", "io", "cpu")
    assert config.monitors == ()
    assert config.policies == ()
    assert config.damon.kdamonds == ()


def test_empty_file_is_an_error() -> None:
    """An empty file is refused (a truncated file must not become an all-defaults config)."""
    with pytest.raises(ConfigError, match=r"the file is empty"):
        load_config_text("# only a comment\n", "x.yaml")


def test_sources_and_max_age() -> None:
    """Signals.sources() lists enabled sources; max_age is stale_after or 3 x period."""
    config = load_config_text(
        "signals:\n  vmstat: {enabled: false}\n  psi: {period: 2s}\n"
        "  meminfo: {period: 1s, stale_after: 10s}\n"
    )
    sources = config.signals.sources()
    assert set(sources) == {"psi", "meminfo", "tiers", "fragmentation"}
    assert sources["psi"].max_age == 6.0
    assert sources["tiers"].max_age == 15.0  # tiers default to a 5 s period
    assert sources["meminfo"].max_age == 10.0


def test_config_is_frozen() -> None:
    """Config objects cannot be mutated, down to their lists."""
    config = load_config(ROOT / "configs" / "examples" / "reclaim-psi.yaml")
    with pytest.raises(ValidationError):
        config.reactor.tick = 2.0  # type: ignore[misc]
    assert isinstance(config.monitors, tuple)
    assert isinstance(config.monitors[0].targets.command, tuple)


def test_units_are_converted() -> None:
    """Values arrive in the unit their type states: seconds, bytes, fractions."""
    config = load_config(ROOT / "configs" / "examples" / "reclaim-psi.yaml")
    monitor = config.monitor("app")
    assert monitor.sample == 0.005
    policy = config.policies[0]
    assert policy.quota is not None and policy.quota.max == 256 * 2**20
    assert policy.goals[0].target == 0.005
    assert policy.goals[1].target == 32 * 2**20
    assert policy.rate_limit == 64 * 2**20


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_validate(path: Path) -> None:
    """Every file in configs/ validates."""
    assert validate_files([path]) == []


def test_node_yaml_acts_on_nothing() -> None:
    """configs/node.yaml defines no monitor, policy or kdamond (it must not act on processes)."""
    config = load_config(ROOT / "configs" / "node.yaml")
    assert config.monitors == () and config.policies == () and config.damon.kdamonds == ()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the config file"):
        load_config(tmp_path / "nope.yaml")


def test_json_schema_covers_every_section() -> None:
    """The JSON schema is draft 2020-12 JSON and has every top-level section."""
    schema = json.loads(json.dumps(json_schema()))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == set(Config.model_fields)
    defs = schema["$defs"]
    tick = defs["ReactorSection"]["properties"]["tick"]
    assert tick["type"] == "string" and "pattern" in tick and tick["examples"]
    sample_us = defs["MonitoringIntervals"]["properties"]["sample_us"]
    assert {"type": "integer", "minimum": 0} in sample_us["anyOf"]
    assert {"type": "string"} in sample_us["anyOf"]


def test_damo_spellings_are_accepted() -> None:
    """damo's number spellings (bare, units, commas, min/max) load into key units."""
    config = load_config_text(
        """
damon:
  kdamonds:
    - state: off
      pid: null
      contexts:
        - ops: paddr
          addr_unit: 1
          targets: [{pid: null, obsolete: false, regions: [{start: "4,096", end: 1 GiB}]}]
          intervals: {sample_us: 5 ms, aggr_us: "100,000", ops_update_us: 1 m 30 s}
          nr_regions: {min: "10", max: "1,000"}
          schemes:
            - action: lru_prio
              access_pattern:
                sz_bytes: {min: "4.000 KiB", max: max}
                nr_accesses: {min: 5 samples, max: 20 samples}
                age: {min: 0 aggr_intervals, max: 10 aggr_intervals}
              quotas:
                time_ms: 1 s
                sz_bytes: 0 B
                reset_interval_ms: 1000
                weights: {sz_permil: 0 %, nr_accesses_permil: 50 %, age_permil: 500}
              stats: {nr_tried: "1,234", sz_tried: 5.000 MiB}
"""
    )
    context = config.damon.kdamonds[0].contexts[0]
    assert context.targets[0].regions[0].start == 4096
    assert context.intervals.aggr_us == 100_000
    assert context.intervals.ops_update_us == 90_000_000
    assert context.nr_regions.max == 1000
    scheme = context.schemes[0]
    assert scheme.access_pattern.sz_bytes.max == 2**64 - 1
    assert scheme.quotas.time_ms == 1000
    assert scheme.quotas.weights.nr_accesses_permil == 500
    assert scheme.access_pattern.nr_accesses_samples(context.intervals) == (5, 20)
    assert config.damon.scheme("0/0/0") is scheme
    assert config.damon.scheme("0/0/1") is None


def test_damo_keys_take_bare_numbers_but_reactor_keys_do_not() -> None:
    """A bare number is fine under sample_us (µs) but asks for a unit under a reactor key."""
    good = "damon: {kdamonds: [{contexts: [{ops: vaddr, targets: [{pid: 42}], "
    good += "intervals: {sample_us: 5000}}]}]}"
    assert load_config_text(good).damon.kdamonds[0].contexts[0].intervals.sample_us == 5000
    with pytest.raises(ConfigError, match=r"add a unit, e\.g\. 5000s"):
        load_config_text("reactor: {tick: 5000}")


def test_damo_non_whole_microseconds_are_refused() -> None:
    """A duration that is not a whole number of the key's unit is refused."""
    text = "damon: {kdamonds: [{contexts: [{ops: vaddr, targets: [{pid: 42}], "
    text += "intervals: {sample_us: 1.5 us}}]}]}"
    with pytest.raises(ConfigError, match=r"whole number of us, got '1\.5 us'"):
        load_config_text(text)


def test_action_that_the_ops_ignores_is_refused() -> None:
    """An action the ops set silently ignores (cold on paddr) is an error naming both."""
    text = "damon: {kdamonds: [{contexts: [{ops: paddr, targets: [], schemes: [{action: cold}]}]}]}"
    with pytest.raises(ConfigError, match=r"action cold does nothing on paddr"):
        load_config_text(text)


def test_ops_filter_that_a_vaddr_madvise_action_ignores_is_refused() -> None:
    """vaddr's pageout madvise()s whole regions and applies no ops-layer filter: an anon
    filter there is an error naming the scheme's filter; an addr filter is fine, and so
    are the same anon filter on paddr and on a vaddr migrate_cold (which walks pages)."""

    def damon(ops: str, action: str, filters: str) -> str:
        target = "[{pid: 42}]" if ops == "vaddr" else "[]"
        return (
            f"damon: {{kdamonds: [{{contexts: [{{ops: {ops}, targets: {target}, schemes: "
            f"[{{action: {action}, target_nid: 1, filters: [{filters}]}}]}}]}}]}}"
        )

    anon = "{filter_type: anon, matching: true, allow: false}"
    with pytest.raises(ConfigError) as info:
        load_config_text(damon("vaddr", "pageout", anon))
    (issue,) = info.value.issues
    assert issue.path == "damon.kdamonds[0].contexts[0].schemes[0].filters[0].filter_type"
    assert "anon filter does nothing on a vaddr pageout scheme" in issue.message
    addr = "{filter_type: addr, matching: true, address_range: {start: 4096, end: 8192}}"
    load_config_text(damon("vaddr", "pageout", addr))
    load_config_text(damon("paddr", "pageout", anon))
    load_config_text(damon("vaddr", "migrate_cold", anon))


def test_quota_goal_needs_its_inputs() -> None:
    """A node_* quota goal without nid and a zero target are reported together."""
    text = (
        "damon: {kdamonds: [{contexts: [{ops: paddr, targets: [], schemes: [{action: pageout,"
        " quotas: {goals: [{metric: node_mem_free_bp, target_value: 0}]}}]}]}]}"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    messages = [i.message for i in info.value.issues]
    assert any("needs a node id" in m for m in messages)
    assert any("non-zero target_value" in m for m in messages)


def test_yaml_11_quirks_stay_strings() -> None:
    """Timestamps, 1_000 and sexagesimal numbers are strings, refused where a number is due."""
    with pytest.raises(ConfigError, match=r"expected a whole number, got '1_000'"):
        load_config_text(
            "monitors: [{name: a, targets: {pids: [42]}, regions: {min: 10, max: 1_000}}]"
        )
    config = load_config_text("reactor: {run_dir: 2024-01-01}")
    assert config.reactor.run_dir == "2024-01-01"


def test_kernel_tuner_needs_a_scheme() -> None:
    """tuner: kernel without a scheme reference is an error."""
    text = (
        "monitors: [{name: a, targets: {pids: [42]}}]\n"
        "policies: [{name: p, kind: reclaim, monitor: a, tuner: kernel}]\n"
    )
    with pytest.raises(ConfigError, match=r"policies\[0\]\.tuner: tuner kernel"):
        load_config_text(text)


def test_cgroup_sources_need_unique_names_and_absolute_paths() -> None:
    """Two cgroups with one name, or a relative path, are errors that say what is accepted."""
    with pytest.raises(ConfigError) as info:
        load_config_text(
            "signals:\n  cgroups:\n"
            "    - {name: app, path: /sys/fs/cgroup/memory/app}\n"
            "    - {name: app, path: sys/fs/cgroup/memory/b}\n",
            "c.yaml",
        )
    text = str(info.value)
    assert "signals.cgroups[1].path: expected an absolute cgroup directory path" in text


def test_cgroup_source_names_are_unique() -> None:
    """Two cgroup sources may not share a name: their topics would collide."""
    expected = r"signals\.cgroups: expected unique cgroup names, got app"
    with pytest.raises(ConfigError, match=expected):
        load_config_text(
            "signals:\n  cgroups:\n"
            "    - {name: app, path: /sys/fs/cgroup/memory/a}\n"
            "    - {name: app, path: /sys/fs/cgroup/memory/b}\n",
            "c.yaml",
        )
