"""damo kdamonds files: load, export in damo's schema, and the round trip."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from reactor.config import load_config_text
from reactor.damon.damo import dump_damo_json, dump_damo_yaml, load_damo_text, to_damo_dict
from reactor.damon.features import probe_features
from reactor.damon.sysfs import Stager, as_staged, read_kdamond
from reactor.errors import ConfigError
from tests.conformance.damo_oracle import assert_damo_reads_like_reactor
from tests.unit.damon.conftest import KD, base_fs

#: What ``damo args damon --format json`` writes (human-formatted numbers).
DAMO: dict[str, Any] = {
    "kdamonds": [
        {
            "state": "off",
            "pid": None,
            "refresh_ms": 0,
            "contexts": [
                {
                    "ops": "paddr",
                    "addr_unit": "1",
                    "targets": [
                        {
                            "pid": None,
                            "obsolete": False,
                            "regions": [{"start": "4,096", "end": "1 GiB"}],
                        }
                    ],
                    "intervals": {
                        "sample_us": "5 ms",
                        "aggr_us": "100 ms",
                        "ops_update_us": "1 s",
                        "intervals_goal": {
                            "access_bp": "4 %",
                            "aggrs": "3",
                            "min_sample_us": "1 ms",
                            "max_sample_us": "10 ms",
                        },
                    },
                    "nr_regions": {"min": "10", "max": "1,000"},
                    "probes": [],
                    "pause": False,
                    "schemes": [
                        {
                            "action": "pageout",
                            "dests": [],
                            "access_pattern": {
                                "sz_bytes": {"min": "4.000 KiB", "max": "max"},
                                "nr_accesses": {"min": "0 %", "max": "0 %"},
                                "age": {"min": "5 s", "max": "max"},
                            },
                            "apply_interval_us": "0 ns",
                            "quotas": {
                                "time_ms": "10 ms",
                                "sz_bytes": "128 MiB",
                                "reset_interval_ms": "1 s",
                                "fail_charge_num": "0",
                                "fail_charge_denom": "0",
                                "goals": [
                                    {
                                        "metric": "some_mem_psi_us",
                                        "nid": None,
                                        "memcg_path": None,
                                        "target_value": "1 ms",
                                        "current_value": "0",
                                    }
                                ],
                                "goal_tuner": "consist",
                                "effective_sz_bytes": "0 B",
                                "weights": {
                                    "sz_permil": "0 %",
                                    "nr_accesses_permil": "0 %",
                                    "age_permil": "100 %",
                                },
                            },
                            "watermarks": {
                                "metric": "free_mem_rate",
                                "interval_us": "5 s",
                                "high_permil": "50 %",
                                "mid_permil": "40 %",
                                "low_permil": "5 %",
                            },
                            "filters": [
                                {
                                    "filter_type": "anon",
                                    "matching": True,
                                    "allow": False,
                                    "memcg_path": None,
                                    "address_range": None,
                                    "damon_target_idx": None,
                                    "hugepage_size": None,
                                }
                            ],
                            "stats": {
                                "nr_tried": "0",
                                "sz_tried": "0 B",
                                "nr_applied": "0",
                                "sz_applied": "0 B",
                                "sz_ops_filter_passed": "0 B",
                                "qt_exceeds": "0",
                                "nr_snapshots": "0",
                                "max_nr_snapshots": "0",
                            },
                        }
                    ],
                }
            ],
        }
    ]
}
DAMO_JSON = json.dumps(DAMO, indent=4)


def test_damo_json_file_loads_into_the_model() -> None:
    """damo's human-formatted JSON (units, commas, max) loads into key units."""
    section = load_damo_text(DAMO_JSON, "kdamonds.json")
    ctx = section.kdamonds[0].contexts[0]
    assert ctx.targets[0].regions[0].start == 4096 and ctx.targets[0].regions[0].end == 1 << 30
    assert ctx.intervals.intervals_goal.access_bp == 400
    scheme = ctx.schemes[0]
    assert scheme.quotas.sz_bytes == 128 << 20 and scheme.quotas.goals[0].target_value == 1000
    assert scheme.watermarks.high_permil == 500


def test_export_round_trips_through_the_loader() -> None:
    """load -> to_damo_dict -> JSON -> load gives an equal model; YAML too."""
    section = load_damo_text(DAMO_JSON)
    exported = dump_damo_json(section)
    assert load_damo_text(exported) == section
    assert load_damo_text(dump_damo_yaml(section)) == section
    data = json.loads(exported)
    pattern = data["kdamonds"][0]["contexts"][0]["schemes"][0]["access_pattern"]
    assert pattern["sz_bytes"]["max"] == 2**64 - 1
    assert pattern["age"]["max"] == "max" and pattern["nr_accesses"]["max"] == "0 %"


def test_reactor_config_damon_section_exports_and_reloads() -> None:
    """A config's damon: section exports to damo's schema and loads back equal."""
    config = load_config_text(
        """
damon:
  kdamonds:
    - contexts:
        - ops: vaddr
          targets: [{pid: 42}]
          schemes:
            - action: migrate_cold
              target_nid: 1
              dests: [{id: 1, weight: 1}]
              access_pattern:
                nr_accesses: {min: 0 samples, max: 0 samples}
                age: {min: 10 aggr_intervals, max: max}
"""
    )
    assert load_damo_text(json.dumps(to_damo_dict(config.damon))) == config.damon


def test_reactor_extensions_fold_into_damo_form() -> None:
    """core_filters/ops_filters go into damo's filters list; pattern units into bounds."""
    text = """
kdamonds:
  - contexts:
      - ops: paddr
        targets: []
        schemes:
          - action: pageout
            core_filters:
              - {filter_type: addr, matching: true, address_range: {start: 0, end: 4096}}
            ops_filters: [{filter_type: anon, matching: false}]
            access_pattern:
              nr_accesses_unit: samples
              nr_accesses: {min: 0, max: 2}
"""
    data = to_damo_dict(load_damo_text(text))
    scheme = data["kdamonds"][0]["contexts"][0]["schemes"][0]
    assert [f["filter_type"] for f in scheme["filters"]] == ["addr", "anon"]
    assert "core_filters" not in scheme and "nr_accesses_unit" not in scheme["access_pattern"]
    assert scheme["access_pattern"]["nr_accesses"] == {"min": "0 samples", "max": "2 samples"}
    again = load_damo_text(json.dumps(data))
    assert again.kdamonds[0].contexts[0].schemes[0].filters[1].filter_type == "anon"


def test_bad_damo_file_errors_carry_line_and_column() -> None:
    """An unknown action is reported at its line in the file."""
    with pytest.raises(ConfigError) as info:
        load_damo_text(
            "kdamonds:\n  - contexts:\n      - ops: vaddr\n        targets: [{pid: 1}]\n"
            "        schemes: [{action: shred}]\n",
            "k.yaml",
        )
    issue = info.value.issues[0]
    assert issue.file == "k.yaml" and issue.line == 5 and "shred" in issue.message
    with pytest.raises(ConfigError, match=r"expected a mapping with a 'kdamonds' list"):
        load_damo_text("[]")


@pytest.fixture
def damo_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """damo's model and sysfs reader, in-process, with every write and mount lookup disabled."""
    import damo as pkg

    monkeypatch.syspath_prepend(str(Path(pkg.__file__ or "").parent))
    import _damo_fs  # type: ignore[import-not-found]
    import _damon  # type: ignore[import-not-found]
    import _damon_sysfs  # type: ignore[import-not-found]

    def no_write(path: str, content: str) -> str:
        raise AssertionError(f"damo tried to write {content!r} to {path}")

    def no_mounts(dev: str) -> None:
        raise AssertionError("damo tried to look up the real sysfs mount")

    monkeypatch.setattr(_damo_fs, "write_file", no_write)
    monkeypatch.setattr(_damo_fs, "dev_mount_point", no_mounts)
    yield {"damon": _damon, "fs": _damo_fs, "sysfs": _damon_sysfs}
    for name in [m for m in sys.modules if m.startswith(("_damo", "_damon"))]:
        del sys.modules[name]


def test_damo_parses_the_export(damo_modules: dict[str, ModuleType]) -> None:
    """damo's own from_kvpairs accepts reactor's export and reads the same values."""
    section = load_damo_text(DAMO_JSON)
    kv = json.loads(dump_damo_json(section))["kdamonds"][0]
    kd = damo_modules["damon"].Kdamond.from_kvpairs(kv)
    ctx = kd.contexts[0]
    assert (ctx.ops, ctx.intervals.sample, ctx.intervals.aggr) == ("paddr", 5000, 100000)
    scheme = ctx.schemes[0]
    assert scheme.action == "pageout" and scheme.quotas.sz_bytes == 128 << 20
    assert scheme.quotas.goals[0].metric == "some_mem_psi_us"
    assert scheme.access_pattern.age_min_max[0].usec == 5_000_000
    assert [(f.filter_type, f.matching) for f in scheme.filters] == [("anon", True)]


RICH_KDAMONDS = """
kdamonds:
  - refresh_ms: 0
    contexts:
      - ops: vaddr
        targets: [{pid: 4242}, {pid: 4243, regions: [{start: 0x7E0000000000, end: 0x7E0000400000}]}]
        intervals:
          sample_us: 10 ms
          aggr_us: 200 ms
          ops_update_us: 1 s
          intervals_goal: {access_bp: 4 %, aggrs: 3, min_sample_us: 5 ms, max_sample_us: 20 ms}
        nr_regions: {min: 20, max: 500}
        schemes:
          - action: pageout
            apply_interval_us: 400 ms
            access_pattern:
              sz_bytes: {min: 4 KiB, max: 64 MiB}
              nr_accesses: {min: 0 samples, max: 2 samples}
              age: {min: 5 aggr_intervals, max: max}
            quotas:
              time_ms: 10 ms
              sz_bytes: 64 MiB
              reset_interval_ms: 1 s
              fail_charge_num: 1
              fail_charge_denom: 4
              goal_tuner: temporal
              weights: {sz_permil: 0, nr_accesses_permil: 300, age_permil: 700}
              goals:
                - {metric: user_input, target_value: 500, current_value: 100}
                - {metric: some_mem_psi_us, target_value: 1 ms}
                - {metric: node_mem_used_bp, nid: 1, target_value: 60 %}
            watermarks: {metric: free_mem_rate, interval_us: 1 s, high_permil: 900,
                         mid_permil: 500, low_permil: 100}
            filters:
              - {filter_type: anon, matching: true}
              - {filter_type: target, matching: false, allow: true, damon_target_idx: 1}
              - {filter_type: memcg, matching: true, memcg_path: /app}
              - {filter_type: addr, matching: true,
                 address_range: {start: 0x7F0000000000, end: 0x7F0000200000}}
              - {filter_type: hugepage_size, matching: true, hugepage_size: [2 MiB, 2 MiB]}
          - action: migrate_cold
            target_nid: 1
            dests: [{id: 1, weight: 3}, {id: 0, weight: 1}]
            stats: {max_nr_snapshots: 7}
  - refresh_ms: 100
    contexts:
      - ops: paddr
        targets: [{regions: [{start: 0x100000, end: 0x20000000}]}]
        schemes:
          - action: lru_prio
            quotas:
              goals: [{metric: node_memcg_used_bp, nid: 0, memcg_path: /app, target_value: 30 %}]
"""


def test_damo_reads_what_the_stager_wrote(
    damo_modules: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """damo, pointed at the materialized fake after reactor staged two rich kdamonds, reads
    every field as reactor's own read_kdamond(..., outputs=True) does."""
    from reactor.testing import damon_fake

    fs = base_fs()
    fake = damon_fake.FakeDamon(fs, kernel="7.2.12")
    fake.add_process(4242, [(0x7F0000000000, 0x7F0000400000, 1.0)])
    fake.add_process(4243, [(0x7E0000000000, 0x7E0000400000, 0.0)])
    section = load_damo_text(RICH_KDAMONDS)
    fs.write_text(KD + "/nr_kdamonds", "2")
    stager = Stager(fs, probe_features(fs))
    for k, kd in enumerate(section.kdamonds):
        stager.stage_kdamond(k, kd)
        assert read_kdamond(fs, k) == as_staged(kd, stager.features)
    fs.materialize(tmp_path)
    sysfs = damo_modules["sysfs"]
    monkeypatch.setattr(sysfs, "sysfs_root", str(tmp_path / "sys"))
    kdamonds = sysfs.files_content_to_kdamonds(
        damo_modules["fs"].read_files(sysfs.get_kdamonds_dir())
    )
    compared = assert_damo_reads_like_reactor(kdamonds, fs)
    assert compared > 100  # two kdamonds, three schemes, five filters, four goals
