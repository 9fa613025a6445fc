"""damo as an oracle: its reading of a DAMON sysfs tree, field by field against reactor's.

damo (DAMON's own user tool) parses the sysfs tree with its own code. Both sides read the
same tree here: damo in-process (on the host pointed at the fake's materialized copy,
never the damo command; in the lane's guest at the real /sys), and reactor through
``read_kdamond(fs, k, outputs=True)`` and ``read_tried_regions``. Every field both models
hold is compared, so a difference in either reader (or in what the fake materializes)
fails with the field's path.

Used by tests/unit/damon/test_damo.py, tests/unit/damon_fake/test_damon_fake.py and
tests/kernel/test_damon_driver_guest.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reactor.config.damon import DamosFilter, Kdamond, MonitoringContext, Scheme
from reactor.damon.snapshot import read_tried_regions
from reactor.damon.sysfs import read_kdamond, read_nr_kdamonds
from reactor.kernelfs import KernelFS

__all__ = ("assert_damo_reads_like_reactor",)


class _Diff:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.compared = 0

    def eq(self, where: str, theirs: Any, ours: Any) -> None:
        self.compared += 1
        if theirs != ours:
            self.problems.append(f"{where}: damo {theirs!r}, reactor {ours!r}")


def _text(value: Any) -> str:
    return str(value).strip()


def _filter(d: _Diff, where: str, theirs: Any, ours: DamosFilter) -> None:
    d.eq(f"{where}.filter_type", _text(theirs.filter_type), ours.filter_type)
    d.eq(f"{where}.matching", theirs.matching, ours.matching)
    d.eq(f"{where}.allow", theirs.allow, ours.allow)
    if ours.filter_type == "memcg":
        d.eq(f"{where}.memcg_path", _text(theirs.memcg_path), ours.memcg_path or "")
    elif ours.filter_type == "addr":
        assert ours.address_range is not None
        got = (theirs.address_range.start, theirs.address_range.end)
        d.eq(f"{where}.address_range", got, (ours.address_range.start, ours.address_range.end))
    elif ours.filter_type == "target":
        d.eq(f"{where}.damon_target_idx", theirs.damon_target_idx, ours.damon_target_idx)
    elif ours.filter_type == "hugepage_size":
        d.eq(f"{where}.hugepage_size", list(theirs.hugepage_size), list(ours.hugepage_size or ()))


def _scheme(d: _Diff, where: str, theirs: Any, ours: Scheme) -> None:
    d.eq(f"{where}.action", _text(theirs.action), ours.action)
    nid = ours.target_nid if ours.target_nid is not None else -1
    d.eq(f"{where}.target_nid", int(theirs.target_nid), nid)
    d.eq(f"{where}.apply_interval_us", theirs.apply_interval_us, ours.apply_interval_us)
    d.eq(
        f"{where}.dests",
        [(x.id, x.weight) for x in theirs.dests],
        [(x.id, x.weight) for x in ours.dests],
    )
    ap_t, ap_o = theirs.access_pattern, ours.access_pattern
    d.eq(f"{where}.sz_bytes", list(ap_t.sz_bytes), [ap_o.sz_bytes.min, ap_o.sz_bytes.max])
    d.eq(
        f"{where}.nr_accesses",
        [b.samples for b in ap_t.nr_acc_min_max],
        [int(ap_o.nr_accesses.min.value), int(ap_o.nr_accesses.max.value)],
    )
    d.eq(
        f"{where}.age",
        [b.aggr_intervals for b in ap_t.age_min_max],
        [int(ap_o.age.min.value), int(ap_o.age.max.value)],
    )
    q_t, q_o = theirs.quotas, ours.quotas
    for name, t_value, o_value in (
        ("time_ms", q_t.time_ms, q_o.time_ms),
        ("sz_bytes", q_t.sz_bytes, q_o.sz_bytes),
        ("reset_interval_ms", q_t.reset_interval_ms, q_o.reset_interval_ms),
        ("weights.sz_permil", q_t.weight_sz_permil, q_o.weights.sz_permil),
        (
            "weights.nr_accesses_permil",
            q_t.weight_nr_accesses_permil,
            q_o.weights.nr_accesses_permil,
        ),
        ("weights.age_permil", q_t.weight_age_permil, q_o.weights.age_permil),
        ("fail_charge_num", int(q_t.fail_charge_num), q_o.fail_charge_num),
        ("fail_charge_denom", int(q_t.fail_charge_denom), q_o.fail_charge_denom),
        ("goal_tuner", _text(q_t.goal_tuner), q_o.goal_tuner),
        ("effective_sz_bytes", q_t.effective_sz_bytes, q_o.effective_sz_bytes),
    ):
        d.eq(f"{where}.quotas.{name}", t_value, o_value)
    d.eq(f"{where}.quotas.goals", len(q_t.goals), len(q_o.goals))
    for g, (g_t, g_o) in enumerate(zip(q_t.goals, q_o.goals, strict=False)):
        gw = f"{where}.quotas.goals[{g}]"
        d.eq(f"{gw}.metric", _text(g_t.metric), g_o.metric)
        d.eq(f"{gw}.target_value", g_t.target_value, g_o.target_value)
        d.eq(f"{gw}.current_value", g_t.current_value, g_o.current_value)
        if g_o.nid is not None:
            d.eq(f"{gw}.nid", g_t.nid, g_o.nid)
        if g_o.memcg_path is not None:
            d.eq(f"{gw}.memcg_path", g_t.memcg_path, g_o.memcg_path)
    w_t, w_o = theirs.watermarks, ours.watermarks
    for name, t_value, o_value in (
        ("metric", _text(w_t.metric), w_o.metric),
        ("interval_us", w_t.interval_us, w_o.interval_us),
        ("high", w_t.high_permil, w_o.high_permil),
        ("mid", w_t.mid_permil, w_o.mid_permil),
        ("low", w_t.low_permil, w_o.low_permil),
    ):
        d.eq(f"{where}.watermarks.{name}", t_value, o_value)
    # damo lists core_filters, then ops_filters, then the legacy filters/ dir: so do we.
    ours_filters = (*ours.core_filters, *ours.ops_filters, *ours.filters)
    d.eq(f"{where}.filters", len(theirs.filters), len(ours_filters))
    for i, (f_t, f_o) in enumerate(zip(theirs.filters, ours_filters, strict=False)):
        _filter(d, f"{where}.filters[{i}]", f_t, f_o)
    s_t, s_o = theirs.stats, ours.stats
    if s_o is not None:
        for name in (
            "nr_tried",
            "sz_tried",
            "nr_applied",
            "sz_applied",
            "sz_ops_filter_passed",
            "qt_exceeds",
            "nr_snapshots",
            "max_nr_snapshots",
        ):
            d.eq(f"{where}.stats.{name}", getattr(s_t, name), getattr(s_o, name))


def _context(d: _Diff, where: str, theirs: Any, ours: MonitoringContext) -> None:
    d.eq(f"{where}.ops", _text(theirs.ops), ours.ops)
    d.eq(f"{where}.addr_unit", int(theirs.addr_unit), ours.addr_unit)
    d.eq(f"{where}.pause", theirs.pause, ours.pause)
    iv_t, iv_o = theirs.intervals, ours.intervals
    d.eq(
        f"{where}.intervals",
        (iv_t.sample, iv_t.aggr, iv_t.ops_update),
        (iv_o.sample_us, iv_o.aggr_us, iv_o.ops_update_us),
    )
    g_t, g_o = iv_t.intervals_goal, iv_o.intervals_goal
    d.eq(
        f"{where}.intervals.intervals_goal",
        (g_t.access_bp, g_t.aggrs, g_t.min_sample_us, g_t.max_sample_us),
        (g_o.access_bp, g_o.aggrs, g_o.min_sample_us, g_o.max_sample_us),
    )
    d.eq(
        f"{where}.nr_regions",
        (theirs.nr_regions.minimum, theirs.nr_regions.maximum),
        (ours.nr_regions.min, ours.nr_regions.max),
    )
    d.eq(f"{where}.targets", len(theirs.targets), len(ours.targets))
    for t, (t_t, t_o) in enumerate(zip(theirs.targets, ours.targets, strict=False)):
        tw = f"{where}.targets[{t}]"
        if ours.ops != "paddr":  # paddr ignores pid_target (reactor reads it as None)
            d.eq(f"{tw}.pid", t_t.pid, t_o.pid)
        d.eq(f"{tw}.obsolete", t_t.obsolete, t_o.obsolete)
        d.eq(
            f"{tw}.regions",
            [(r.start, r.end) for r in t_t.regions],
            [(r.start, r.end) for r in t_o.regions],
        )
    d.eq(f"{where}.schemes", len(theirs.schemes), len(ours.schemes))
    for s, (s_t, s_o) in enumerate(zip(theirs.schemes, ours.schemes, strict=False)):
        _scheme(d, f"{where}.schemes[{s}]", s_t, s_o)


def _kdamond(d: _Diff, fs: KernelFS, k: int, theirs: Any, ours: Kdamond) -> None:
    where = f"kdamonds[{k}]"
    d.eq(f"{where}.state", _text(theirs.state), ours.state)
    d.eq(f"{where}.pid", int(theirs.pid), ours.pid if ours.pid is not None else -1)
    d.eq(f"{where}.refresh_ms", int(theirs.refresh_ms), ours.refresh_ms)
    d.eq(f"{where}.contexts", len(theirs.contexts), len(ours.contexts))
    for c, (c_t, c_o) in enumerate(zip(theirs.contexts, ours.contexts, strict=False)):
        _context(d, f"{where}.contexts[{c}]", c_t, c_o)
        for s, s_t in enumerate(c_t.schemes):
            tried = read_tried_regions(fs, k, s)
            sw = f"{where}.contexts[{c}].schemes[{s}].tried_regions"
            d.eq(
                sw,
                [
                    (r.start, r.end, r.nr_accesses.samples, r.age.aggr_intervals)
                    for r in s_t.tried_regions
                ],
                [(r.start, r.end, r.nr_accesses, r.age_aggrs) for r in tried.regions],
            )
            if s_t.tried_regions:
                d.eq(f"{sw}.total_bytes", s_t.tried_bytes, tried.total_bytes)


def assert_damo_reads_like_reactor(theirs: Sequence[Any], fs: KernelFS) -> int:
    """Compare damo's kdamonds (``_damon.Kdamond`` objects, as damo's sysfs reader returns
    them) with reactor's reading of the same tree through ``fs``; every differing field is
    listed in the assertion message. Returns how many fields were compared."""
    d = _Diff()
    d.eq("nr_kdamonds", len(theirs), read_nr_kdamonds(fs))
    for k, kd in enumerate(theirs):
        _kdamond(d, fs, k, kd, read_kdamond(fs, k, outputs=True))
    assert not d.problems, "damo and reactor read the tree differently:\n" + "\n".join(d.problems)
    return d.compared
