"""The synchronous core: write a kdamond model into DAMON's sysfs tree and read it back.

The model is :mod:`reactor.config.damon` (damo's kdamonds schema). Three rules shape
every write here (reference/damon-sysfs.md §1, §2, §3.5; real-kernel-lane.md gotchas):

- **``nr_*`` files are written only when the count changes.** Writing one destroys and
  recreates every child directory with defaults, even at the same value, which would
  drop staged values, retained stats and tried regions.
- **Every field of every scheme is written**, whatever its value. On recent kernels a
  new scheme's access-pattern maxima default to 0, so a scheme whose maxima are left
  unwritten matches nothing; and since children survive when a count is unchanged, a
  field left unwritten would keep the previous scheme's value.
- **A paddr target without regions gets the System RAM ranges** passed in (the kernel's
  empty default silently monitors nothing); a paddr context without targets gets one.

Before the first write, :func:`check_kdamond` checks every feature the model uses
against the probed :class:`~reactor.damon.features.KernelFeatures`, so an unsupported
feature fails with the release that introduced it, and nothing is half-staged.

Access patterns are staged in the kernel's units (samples per aggregation, aggregation
intervals). :func:`as_staged` gives the model exactly as the kernel will hold it, and
:func:`read_kdamond` reads it back in that form, so ``read_kdamond(…) == as_staged(…)``.

Writes go through the :class:`~reactor.kernelfs.KernelFS` given, which must allow DAMON
writes; the ownership checks are the driver's job (:mod:`reactor.damon.driver`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from reactor.config.damon import (
    CORE_FILTER_TYPES,
    AccessBound,
    AccessPattern,
    AgeRange,
    DamosFilter,
    DamosStats,
    IntervalsGoal,
    Kdamond,
    MonitoringContext,
    NrAccessesRange,
    Probe,
    QuotaGoal,
    Region,
    Scheme,
    SizeRange,
    Target,
)
from reactor.damon import paths
from reactor.damon.commands import translate
from reactor.damon.features import (
    FEATURES,
    KernelFeatures,
    action_feature,
    filter_type_feature,
    goal_metric_feature,
)
from reactor.damon.snapshot import parse_kernel_int, read_text
from reactor.errors import KernelFormatError, KernelInterfaceError, UnsafeWrite, UnsupportedKernel
from reactor.kernelfs import KernelFS

__all__ = (
    "NODE_METRICS",
    "NodeRanges",
    "ObsoleteRemoval",
    "Stager",
    "TargetFilterChange",
    "as_staged",
    "check_kdamond",
    "format_bool",
    "read_kdamond",
    "read_nr_kdamonds",
    "require_node_ram",
    "route_filters",
    "without_obsolete_targets",
)

#: Quota-goal metrics that take a node id / a memcg path (§4.2).
NODE_METRICS = frozenset(
    {
        "node_mem_used_bp",
        "node_mem_free_bp",
        "node_memcg_used_bp",
        "node_memcg_free_bp",
        "node_eligible_mem_bp",
    }
)
MEMCG_METRICS = frozenset({"node_memcg_used_bp", "node_memcg_free_bp"})
UINT_MAX = 2**32 - 1

Ranges = Sequence[tuple[int, int]]
#: RAM ranges by NUMA node id (bytes), for paddr targets with ``numa_node``.
NodeRanges = Mapping[int, Ranges]


def format_bool(value: bool) -> str:
    """A kernel boolean as the kernel prints it (``Y``/``N``)."""
    return "Y" if value else "N"


# --- features the model needs ------------------------------------------------------------


def _scheme_features(scheme: Scheme, ops: str) -> Iterator[tuple[str | None, str]]:
    yield action_feature(scheme.action), f"action {scheme.action}"
    if scheme.action.startswith("migrate_") and ops != "paddr":
        yield "vaddr_migrate", f"action {scheme.action} on {ops}"
    if scheme.apply_interval_us:
        yield "apply_interval_us", "apply_interval_us"
    if scheme.target_nid is not None and scheme.target_nid >= 0:
        yield "target_nid", "target_nid"
    if scheme.dests:
        yield "dests", "dests"
    q = scheme.quotas
    if q.goals:
        yield "quota_goals", "quota goals"
    for g in q.goals:
        yield goal_metric_feature(g.metric), f"goal metric {g.metric}"
        if g.metric != "user_input":
            yield "goal:target_metric", f"goal metric {g.metric}"
        if g.metric in NODE_METRICS:
            yield "goal:nid", f"goal metric {g.metric} (nid)"
        if g.metric in MEMCG_METRICS:
            yield "goal:path", f"goal metric {g.metric} (memcg path)"
    if q.goal_tuner != "consist":
        yield "goal_tuner", f"goal_tuner {q.goal_tuner}"
    if q.fail_charge_num or q.fail_charge_denom:
        yield "fail_charge", "fail_charge_num/fail_charge_denom"
    if scheme.core_filters or scheme.ops_filters:
        yield "core_ops_filters", "core_filters/ops_filters"
    for f in (*scheme.filters, *scheme.core_filters, *scheme.ops_filters):
        yield filter_type_feature(f.filter_type), f"filter type {f.filter_type}"
        if f.allow:
            yield "filter_allow", "filter allow"
    if scheme.stats is not None and scheme.stats.max_nr_snapshots:
        yield "nr_snapshots", "max_nr_snapshots"


def _kdamond_features(kd: Kdamond) -> Iterator[tuple[str | None, str]]:
    if kd.refresh_ms:
        yield "refresh_ms", "refresh_ms"
    for ctx in kd.contexts:
        yield f"ops:{ctx.ops}", f"operations {ctx.ops}"
        if ctx.addr_unit != 1:
            yield "addr_unit", "addr_unit"
        if ctx.pause:
            yield "pause", "pause"
        if ctx.intervals.intervals_goal != IntervalsGoal():
            yield "intervals_goal", "intervals_goal"
        if ctx.probes:
            yield "probes", "probes"
        if any(t.obsolete for t in ctx.targets):
            yield "obsolete_target", "obsolete target"
        for i, scheme in enumerate(ctx.schemes):
            for name, what in _scheme_features(scheme, ctx.ops):
                yield name, f"scheme {i} {what}"


def check_kdamond(kd: Kdamond, features: KernelFeatures, *, index: int | None = None) -> None:
    """Raise :class:`UnsupportedKernel` for the first feature ``kd`` uses that is missing."""
    where = f"kdamond {index}: " if index is not None else ""
    for name, what in _kdamond_features(kd):
        features.require(name, what=where + what)
    for ctx in kd.contexts:
        if ctx.sample_control is not None and ctx.sample_control.sample_filters:
            raise UnsupportedKernel(
                where + "sample_control (damo's access sample filters, not in any kernel's sysfs)",
                None,
                features.release,
            )


# --- the staged form -----------------------------------------------------------------------


def _pattern_in_kernel_units(ctx: MonitoringContext, pattern: AccessPattern) -> AccessPattern:
    nr_lo, nr_hi = pattern.nr_accesses_samples(ctx.intervals)
    age_lo, age_hi = pattern.age_aggregations(ctx.intervals)
    return AccessPattern(
        sz_bytes=SizeRange(min=pattern.sz_bytes.min, max=pattern.sz_bytes.max),
        nr_accesses=NrAccessesRange(
            min=AccessBound(value=float(nr_lo), unit="samples"),
            max=AccessBound(value=float(nr_hi), unit="samples"),
        ),
        age=AgeRange(
            min=AccessBound(value=float(age_lo), unit="aggr_intervals"),
            max=AccessBound(value=float(age_hi), unit="aggr_intervals"),
        ),
    )


def _filter_args_only(f: DamosFilter) -> DamosFilter:
    """The filter with only the argument its type uses (the one that is staged)."""
    t = f.filter_type
    return DamosFilter(
        filter_type=t,
        matching=f.matching,
        allow=f.allow,
        memcg_path=f.memcg_path if t == "memcg" else None,
        address_range=f.address_range if t == "addr" else None,
        damon_target_idx=f.damon_target_idx if t == "target" else None,
        hugepage_size=f.hugepage_size if t == "hugepage_size" else None,
    )


def route_filters(
    scheme: Scheme, features: KernelFeatures
) -> tuple[tuple[DamosFilter, ...], tuple[DamosFilter, ...], tuple[DamosFilter, ...]]:
    """``(core, ops, legacy)`` filter lists as they are staged.

    On 6.15+ (``core_filters``/``ops_filters`` exist) damo's ``filters`` list is routed by
    type, after the explicit ``core_filters``/``ops_filters``, and the deprecated
    ``filters/`` directory is left empty; before 6.15 everything goes to ``filters/``.
    """
    if features.has("core_ops_filters"):
        core = (
            *scheme.core_filters,
            *(f for f in scheme.filters if f.filter_type in CORE_FILTER_TYPES),
        )
        ops = (
            *scheme.ops_filters,
            *(f for f in scheme.filters if f.filter_type not in CORE_FILTER_TYPES),
        )
        return tuple(map(_filter_args_only, core)), tuple(map(_filter_args_only, ops)), ()
    return (), (), tuple(map(_filter_args_only, scheme.filters))


def _staged_goal(g: QuotaGoal) -> QuotaGoal:
    return QuotaGoal(
        metric=g.metric,
        nid=g.nid if g.metric in NODE_METRICS else None,
        memcg_path=g.memcg_path if g.metric in MEMCG_METRICS else None,
        target_value=g.target_value,
        current_value=g.current_value,
    )


def _staged_scheme(ctx: MonitoringContext, s: Scheme, features: KernelFeatures) -> Scheme:
    core, ops, legacy = route_filters(s, features)
    snapshots = s.stats.max_nr_snapshots if s.stats is not None else 0
    quotas = s.quotas.model_copy(
        update={"goals": tuple(map(_staged_goal, s.quotas.goals)), "effective_sz_bytes": 0}
    )
    nid = s.target_nid if s.target_nid is not None and s.target_nid >= 0 else None
    return Scheme(
        action=s.action,
        target_nid=nid,
        dests=s.dests,
        access_pattern=_pattern_in_kernel_units(ctx, s.access_pattern),
        apply_interval_us=s.apply_interval_us,
        quotas=quotas,
        watermarks=s.watermarks,
        filters=legacy,
        core_filters=core,
        ops_filters=ops,
        stats=DamosStats(max_nr_snapshots=snapshots) if snapshots else None,
    )


def _paddr_regions(ctx: MonitoringContext, ram: Ranges) -> tuple[Region, ...]:
    unit = ctx.addr_unit
    return tuple(Region(start=s // unit, end=-(-e // unit)) for s, e in ram)


def require_node_ram(node_ram: NodeRanges, node: int) -> Ranges:
    """``node_ram[node]``, or an error naming the node when it has no ranges."""
    ram = node_ram.get(node, ())
    if not ram:
        known = sorted(n for n, r in node_ram.items() if r) or "none"
        raise KernelInterfaceError(
            f"/sys/devices/system/node/node{node}",
            f"a paddr target with numa_node {node} needs that node's System RAM ranges, and "
            f"none were found (nodes with ranges: {known}); name a node that has memory "
            "(/sys/devices/system/node/has_memory), or give the target regions",
        )
    return ram


def _staged_targets(
    ctx: MonitoringContext, ram: Ranges, node_ram: NodeRanges
) -> tuple[Target, ...]:
    if ctx.ops != "paddr":
        return tuple(
            Target(
                pid=t.pid,
                obsolete=t.obsolete,
                regions=tuple(Region(start=r.start, end=r.end) for r in t.regions),
            )
            for t in ctx.targets
        )
    targets = ctx.targets or (Target(),)
    out = []
    for t in targets:
        regions = tuple(Region(start=r.start, end=r.end) for r in t.regions)
        if not regions and t.numa_node is not None:
            regions = _paddr_regions(ctx, require_node_ram(node_ram, t.numa_node))
        if not regions:
            if not ram:
                raise KernelInterfaceError(
                    "/proc/iomem",
                    "a paddr target without regions needs the System RAM ranges, and none "
                    "were given (read /proc/iomem as root, or give the target regions)",
                )
            regions = _paddr_regions(ctx, ram)
        out.append(Target(pid=None, obsolete=t.obsolete, regions=regions))
    return tuple(out)


def _staged_probe(p: Probe) -> Probe:
    return Probe(
        filters=tuple(
            f.model_copy(update={"path": f.path if f.filter_type == "memcg" else None})
            for f in p.filters
        )
    )


def as_staged(
    kd: Kdamond,
    features: KernelFeatures,
    paddr_ram: Ranges = (),
    node_ram: NodeRanges | None = None,
) -> Kdamond:
    """``kd`` as the kernel will hold it once staged (what :func:`read_kdamond` returns).

    Access patterns in samples and aggregation intervals, filters routed to their layer
    with only their type's argument, paddr regions filled from ``paddr_ram`` (bytes; or
    from ``node_ram[n]`` for a target with ``numa_node`` n), ``target_nid`` -1 as None,
    no read-back values (state, pid, stats, effective quota).
    """
    node_ram = node_ram or {}
    contexts = []
    for ctx in kd.contexts:
        goal = ctx.intervals.intervals_goal if features.has("intervals_goal") else IntervalsGoal()
        contexts.append(
            MonitoringContext(
                ops=ctx.ops,
                addr_unit=ctx.addr_unit,
                targets=_staged_targets(ctx, paddr_ram, node_ram),
                intervals=ctx.intervals.model_copy(update={"intervals_goal": goal}),
                nr_regions=ctx.nr_regions,
                probes=tuple(map(_staged_probe, ctx.probes)),
                pause=ctx.pause,
                schemes=tuple(_staged_scheme(ctx, s, features) for s in ctx.schemes),
            )
        )
    return Kdamond(refresh_ms=kd.refresh_ms, contexts=tuple(contexts))


# --- obsolete targets ----------------------------------------------------------------------


@dataclass(frozen=True)
class TargetFilterChange:
    """A ``target`` filter of scheme ``scheme`` whose ``damon_target_idx`` had to change.

    ``layer`` is the list it sits in (``filters`` or ``core_filters``) and ``index`` its
    position there in the committed model; ``new`` is None when the filter named a
    removed target and was dropped.
    """

    scheme: int
    layer: str
    index: int
    old: int
    new: int | None


@dataclass(frozen=True)
class ObsoleteRemoval:
    """What removing a kdamond's obsolete targets changed in its model.

    ``removed`` are the removed targets' indices in the committed model, ``pids`` the
    pids they had (None for paddr); ``filters`` lists every ``target`` filter that was
    renumbered or dropped.
    """

    removed: tuple[int, ...]
    pids: tuple[int | None, ...]
    filters: tuple[TargetFilterChange, ...]

    @property
    def dropped_filters(self) -> tuple[TargetFilterChange, ...]:
        """The filters that named a removed target (they are gone from the model)."""
        return tuple(f for f in self.filters if f.new is None)


def _renumbered(
    scheme: Scheme, s: int, gone: Sequence[int]
) -> tuple[Scheme, list[TargetFilterChange]]:
    changes: list[TargetFilterChange] = []
    update: dict[str, tuple[DamosFilter, ...]] = {}
    for layer in ("filters", "core_filters"):
        kept: list[DamosFilter] = []
        for i, f in enumerate(getattr(scheme, layer)):
            old = f.damon_target_idx
            if f.filter_type != "target" or old is None:
                kept.append(f)
                continue
            new = None if old in gone else old - sum(1 for g in gone if g < old)
            if new != old:
                changes.append(TargetFilterChange(s, layer, i, old, new))
            if new is not None:
                kept.append(f.model_copy(update={"damon_target_idx": new}))
        update[layer] = tuple(kept)
    return scheme.model_copy(update=update), changes


def without_obsolete_targets(kd: Kdamond) -> tuple[Kdamond, ObsoleteRemoval | None]:
    """``kd`` as the kernel holds it after a successful ``commit`` of ``kd``.

    The kernel removes each target staged with ``obsolete_target`` Y and shifts the later
    ones down (damon-sysfs.md §2.5, §3.4), but it leaves the sysfs target directories as
    they were: mirroring the new array is the writer's job, and a stale tree would remove
    the wrong target at the next commit. ``target`` filters name a target by its index,
    which the kernel resolves against the new array, so each is renumbered, and one that
    named a removed target is dropped. Returns ``(kd, None)`` when nothing is obsolete.
    """
    if not any(t.obsolete for ctx in kd.contexts for t in ctx.targets):
        return kd, None
    contexts: list[MonitoringContext] = []
    removed: tuple[int, ...] = ()
    pids: tuple[int | None, ...] = ()
    changes: list[TargetFilterChange] = []
    for ctx in kd.contexts:
        gone = [i for i, t in enumerate(ctx.targets) if t.obsolete]
        removed += tuple(gone)
        pids += tuple(ctx.targets[i].pid for i in gone)
        schemes = []
        for s, scheme in enumerate(ctx.schemes):
            renumbered, moved = _renumbered(scheme, s, gone)
            schemes.append(renumbered)
            changes.extend(moved)
        targets = tuple(t for t in ctx.targets if not t.obsolete)
        contexts.append(ctx.model_copy(update={"targets": targets, "schemes": tuple(schemes)}))
    after = kd.model_copy(update={"contexts": tuple(contexts)})
    return after, ObsoleteRemoval(removed, pids, tuple(changes))


# --- writing -------------------------------------------------------------------------------


def _as_text(value: str | int | bool) -> str:
    """A staged value as its file takes it: ints in decimal, booleans as Y/N."""
    return format_bool(value) if isinstance(value, bool) else str(value)


class Stager:
    """Writes staged values through a KernelFS, translating every error into a sentence.

    ``writes`` counts the writes issued. ``known`` (path -> text) is what the same
    driver staged into this kdamond last, every file of it: a value the file already
    holds is not written again, so a quota change stages one file, not the ~90 of a
    context with three schemes. It holds because every write to reactor's kdamonds'
    input files is the driver's; a written ``nr_*`` file recreates its children with
    defaults, so what was known below it is forgotten and written again; the intervals
    files, which the kernel rewrites itself (``update_tuned_intervals``, ``refresh_ms``),
    are always written. ``written`` is, after a pass, every file's staged text: the
    ``known`` of the next pass. Without ``known`` every field is written.
    """

    #: input files the kernel itself rewrites (tuned intervals): never taken as known
    ALWAYS = ("/monitoring_attrs/intervals/sample_us", "/monitoring_attrs/intervals/aggr_us")

    def __init__(
        self, fs: KernelFS, features: KernelFeatures, known: dict[str, str] | None = None
    ) -> None:
        self.fs = fs
        self.features = features
        self.writes = 0
        self.known = dict(known) if known is not None else None
        self.written: dict[str, str] = {}
        #: an ``nr_*`` file was written: the kernel made or removed directories
        self.resized = False

    def _held(self, path: str, text: str) -> bool:
        """Whether the file holds ``text`` already (staged so last time, nothing since)."""
        if self.known is None or self.known.get(path) != text:
            return False
        if path.endswith(self.ALWAYS):
            return False
        self.written[path] = text
        return True

    def write(self, path: str, value: str | int | bool) -> None:
        """Write one value (ints in decimal, booleans as Y/N); errors as DamonSysfsError."""
        text = _as_text(value)
        if self._held(path, text):
            return
        try:
            self.fs.write_text(path, text)
        except KernelInterfaceError as exc:
            raise translate(self.fs, exc, text) from exc
        self.writes += 1
        self.written[path] = text

    def optional(
        self, path: str, value: str | int | bool, default: str | int | bool, feature: str
    ) -> None:
        """Write a file that only newer kernels have.

        Written whenever it exists (every field, every time). Missing, it is skipped if
        ``value`` is the kernel's default (nothing is lost), and otherwise refused with
        :class:`UnsupportedKernel`: the file, not the version table, has the last word.
        """
        text = _as_text(value)
        if self._held(path, text):
            return
        if self.fs.exists(path):
            self.write(path, value)
        elif value != default:
            self._missing(path, feature)

    def has_dir(self, path: str, *, needed: bool, feature: str) -> bool:
        """Whether directory ``path`` exists; UnsupportedKernel if it is ``needed`` but missing."""
        if self.fs.is_dir(path):
            return True
        if needed:
            self._missing(path, feature)
        return False

    def _missing(self, path: str, feature: str) -> None:
        row = FEATURES[feature]
        raise UnsupportedKernel(
            f"{row.description} ({path} does not exist)", row.since.release, self.features.release
        )

    def count(self, path: str, n: int) -> None:
        """Set an ``nr_*`` file to ``n`` only if it differs (see the module docs); a
        write recreates everything below the file's directory, which is then unknown."""
        if self._held(path, str(n)):
            return
        if parse_kernel_int(self.fs.read_text(path), path) != n:
            self.write(path, n)
            self.resized = True
            if self.known is not None:
                below = path.rsplit("/", 1)[0] + "/"
                self.known = {p: t for p, t in self.known.items() if not p.startswith(below)}
        self.written[path] = str(n)

    # -- the tree -------------------------------------------------------------------------

    def stage_kdamond(
        self,
        k: int,
        kd: Kdamond,
        paddr_ram: Ranges = (),
        node_ram: NodeRanges | None = None,
    ) -> None:
        """Write ``kd`` under ``kdamonds/<k>`` (the directory must exist)."""
        check_kdamond(kd, self.features, index=k)
        staged = as_staged(kd, self.features, paddr_ram, node_ram)
        base = paths.kdamond_dir(k)
        if not staged.contexts and read_text(self.fs, base + "/state").strip() == "on":
            # Removing the context of a running kdamond crashes unpatched kernels (§3.2).
            raise UnsafeWrite(
                base + "/contexts/nr_contexts",
                f"kdamond {k} is running: stop it before staging a kdamond without a context",
            )
        self.optional(base + "/refresh_ms", staged.refresh_ms, 0, "refresh_ms")
        self.count(base + "/contexts/nr_contexts", len(staged.contexts))
        for ctx in staged.contexts:
            self._context(k, ctx)

    def _context(self, k: int, ctx: MonitoringContext) -> None:
        base = paths.context_dir(k)
        self.write(base + "/operations", ctx.ops)
        self.optional(base + "/addr_unit", ctx.addr_unit, 1, "addr_unit")
        self.optional(base + "/pause", ctx.pause, False, "pause")
        attrs = paths.attrs_dir(k)
        iv = ctx.intervals
        self.write(attrs + "/intervals/sample_us", iv.sample_us)
        self.write(attrs + "/intervals/aggr_us", iv.aggr_us)
        self.write(attrs + "/intervals/update_us", iv.ops_update_us)
        goal_dir = attrs + "/intervals/intervals_goal"
        tuned = iv.intervals_goal != IntervalsGoal()
        if self.has_dir(goal_dir, needed=tuned, feature="intervals_goal"):
            g = iv.intervals_goal
            for name, value in (
                ("access_bp", g.access_bp),
                ("aggrs", g.aggrs),
                ("min_sample_us", g.min_sample_us),
                ("max_sample_us", g.max_sample_us),
            ):
                self.write(f"{goal_dir}/{name}", value)
        self.write(attrs + "/nr_regions/min", ctx.nr_regions.min)
        self.write(attrs + "/nr_regions/max", ctx.nr_regions.max)
        if self.has_dir(attrs + "/probes", needed=bool(ctx.probes), feature="probes"):
            self._probes(attrs + "/probes", ctx.probes)
        self.count(base + "/targets/nr_targets", len(ctx.targets))
        for t, target in enumerate(ctx.targets):
            self._target(paths.target_dir(k, t), target)
        self.count(base + "/schemes/nr_schemes", len(ctx.schemes))
        for s, scheme in enumerate(ctx.schemes):
            self._scheme(paths.scheme_dir(k, s), scheme)

    def _probes(self, base: str, probes: Sequence[Probe]) -> None:
        self.count(base + "/nr_probes", len(probes))
        for p, probe in enumerate(probes):
            fdir = f"{base}/{p}/filters"
            self.count(fdir + "/nr_filters", len(probe.filters))
            for i, f in enumerate(probe.filters):
                self.write(f"{fdir}/{i}/type", f.filter_type)
                self.write(f"{fdir}/{i}/matching", f.matching)
                self.write(f"{fdir}/{i}/allow", f.allow)
                if f.filter_type == "memcg" and f.path:
                    self.write(f"{fdir}/{i}/path", f.path)

    def _target(self, base: str, target: Target) -> None:
        if target.pid is not None:
            self.write(base + "/pid_target", target.pid)
        self.optional(base + "/obsolete_target", target.obsolete, False, "obsolete_target")
        self.count(base + "/regions/nr_regions", len(target.regions))
        for r, region in enumerate(target.regions):
            self.write(f"{base}/regions/{r}/start", region.start)
            self.write(f"{base}/regions/{r}/end", region.end)

    def _scheme(self, base: str, s: Scheme) -> None:
        self.write(base + "/action", s.action)
        nid = -1 if s.target_nid is None else s.target_nid
        self.optional(base + "/target_nid", nid, -1, "target_nid")
        self.optional(base + "/apply_interval_us", s.apply_interval_us, 0, "apply_interval_us")
        ap = s.access_pattern
        self.write(base + "/access_pattern/sz/min", ap.sz_bytes.min)
        self.write(base + "/access_pattern/sz/max", ap.sz_bytes.max)
        self.write(base + "/access_pattern/nr_accesses/min", int(ap.nr_accesses.min.value))
        self.write(base + "/access_pattern/nr_accesses/max", int(ap.nr_accesses.max.value))
        self.write(base + "/access_pattern/age/min", int(ap.age.min.value))
        self.write(base + "/access_pattern/age/max", int(ap.age.max.value))
        self._quotas(base + "/quotas", s)
        wm = s.watermarks
        self.write(base + "/watermarks/metric", wm.metric)
        self.write(base + "/watermarks/interval_us", wm.interval_us)
        self.write(base + "/watermarks/high", wm.high_permil)
        self.write(base + "/watermarks/mid", wm.mid_permil)
        self.write(base + "/watermarks/low", wm.low_permil)
        for name, filters, feature in (
            ("filters", s.filters, "filters"),
            ("core_filters", s.core_filters, "core_ops_filters"),
            ("ops_filters", s.ops_filters, "core_ops_filters"),
        ):
            if self.has_dir(f"{base}/{name}", needed=bool(filters), feature=feature):
                self._filters(f"{base}/{name}", filters)
        if self.has_dir(base + "/dests", needed=bool(s.dests), feature="dests"):
            self.count(base + "/dests/nr_dests", len(s.dests))
            for d, dest in enumerate(s.dests):
                self.write(f"{base}/dests/{d}/id", dest.id)
                self.write(f"{base}/dests/{d}/weight", dest.weight)
        snapshots = s.stats.max_nr_snapshots if s.stats is not None else 0
        self.optional(base + "/stats/max_nr_snapshots", snapshots, 0, "nr_snapshots")

    def _quotas(self, base: str, s: Scheme) -> None:
        q = s.quotas
        self.write(base + "/ms", q.time_ms)
        self.write(base + "/bytes", q.sz_bytes)
        self.write(base + "/reset_interval_ms", q.reset_interval_ms)
        self.write(base + "/weights/sz_permil", q.weights.sz_permil)
        self.write(base + "/weights/nr_accesses_permil", q.weights.nr_accesses_permil)
        self.write(base + "/weights/age_permil", q.weights.age_permil)
        self.optional(base + "/goal_tuner", q.goal_tuner, "consist", "goal_tuner")
        self.optional(base + "/fail_charge_num", q.fail_charge_num, 0, "fail_charge")
        self.optional(base + "/fail_charge_denom", q.fail_charge_denom, 0, "fail_charge")
        if not self.has_dir(base + "/goals", needed=bool(q.goals), feature="quota_goals"):
            return
        self.count(base + "/goals/nr_goals", len(q.goals))
        for g, goal in enumerate(q.goals):
            gdir = f"{base}/goals/{g}"
            self.optional(gdir + "/target_metric", goal.metric, "user_input", "goal:target_metric")
            self.write(gdir + "/target_value", goal.target_value)
            self.write(gdir + "/current_value", goal.current_value)
            self.optional(gdir + "/nid", goal.nid or 0, 0, "goal:nid")
            if goal.metric in MEMCG_METRICS and goal.memcg_path:
                self.write(gdir + "/path", goal.memcg_path)

    def _filters(self, base: str, filters: Sequence[DamosFilter]) -> None:
        self.count(base + "/nr_filters", len(filters))
        for i, f in enumerate(filters):
            fdir = f"{base}/{i}"
            self.write(fdir + "/type", f.filter_type)
            self.write(fdir + "/matching", f.matching)
            self.optional(fdir + "/allow", f.allow, False, "filter_allow")
            if f.filter_type == "memcg" and f.memcg_path:
                self.write(fdir + "/memcg_path", f.memcg_path)
            ar = f.address_range
            self.optional(fdir + "/addr_start", ar.start if ar else 0, 0, "filter:addr")
            self.optional(fdir + "/addr_end", ar.end if ar else 0, 0, "filter:addr")
            self.optional(fdir + "/damon_target_idx", f.damon_target_idx or 0, 0, "filter:target")
            hp = f.hugepage_size or (0, 0)
            self.optional(fdir + "/min", hp[0], 0, "filter:hugepage_size")
            self.optional(fdir + "/max", hp[1], 0, "filter:hugepage_size")


# --- reading back --------------------------------------------------------------------------


class _Reader:
    def __init__(self, fs: KernelFS, outputs: bool) -> None:
        self.fs = fs
        self.outputs = outputs

    def text(self, path: str, default: str | None = None) -> str:
        if default is not None and not self.fs.exists(path):
            return default
        return read_text(self.fs, path).strip()

    def num(self, path: str, default: int | None = None) -> int:
        if default is not None and not self.fs.exists(path):
            return default
        return parse_kernel_int(read_text(self.fs, path), path)

    def flag(self, path: str) -> bool:
        return self.text(path, "N")[:1] in ("Y", "y", "1")

    def kdamond(self, k: int) -> dict[str, Any]:
        base = paths.kdamond_dir(k)
        out: dict[str, Any] = {"refresh_ms": self.num(base + "/refresh_ms", 0)}
        if self.outputs:
            out["state"] = self.text(base + "/state")
            pid = self.num(base + "/pid")
            out["pid"] = pid if pid >= 0 else None
        nr = self.num(base + "/contexts/nr_contexts")
        out["contexts"] = [self.context(k)] if nr else []
        return out

    def context(self, k: int) -> dict[str, Any]:
        base = paths.context_dir(k)
        attrs = paths.attrs_dir(k)
        ops = self.text(base + "/operations")
        goal = attrs + "/intervals/intervals_goal"
        intervals: dict[str, Any] = {
            "sample_us": self.num(attrs + "/intervals/sample_us"),
            "aggr_us": self.num(attrs + "/intervals/aggr_us"),
            "ops_update_us": self.num(attrs + "/intervals/update_us"),
        }
        if self.fs.is_dir(goal):
            intervals["intervals_goal"] = {
                n: self.num(f"{goal}/{n}")
                for n in ("access_bp", "aggrs", "min_sample_us", "max_sample_us")
            }
        return {
            "ops": ops,
            "addr_unit": self.num(base + "/addr_unit", 1),
            "pause": self.flag(base + "/pause"),
            "intervals": intervals,
            "nr_regions": {
                "min": self.num(attrs + "/nr_regions/min"),
                "max": self.num(attrs + "/nr_regions/max"),
            },
            "probes": [
                self.probe(f"{attrs}/probes/{p}")
                for p in paths.numbered(self.fs, attrs + "/probes")
            ],
            "targets": [
                self.target(paths.target_dir(k, t), ops)
                for t in paths.numbered(self.fs, base + "/targets")
            ],
            "schemes": [
                self.scheme(paths.scheme_dir(k, s))
                for s in paths.numbered(self.fs, base + "/schemes")
            ],
        }

    def probe(self, base: str) -> dict[str, Any]:
        filters = []
        for i in paths.numbered(self.fs, base + "/filters"):
            fdir = f"{base}/filters/{i}"
            kind = self.text(fdir + "/type")
            filters.append(
                {
                    "filter_type": kind,
                    "matching": self.flag(fdir + "/matching"),
                    "allow": self.flag(fdir + "/allow"),
                    "path": self.text(fdir + "/path", "") or None if kind == "memcg" else None,
                }
            )
        return {"filters": filters}

    def target(self, base: str, ops: str) -> dict[str, Any]:
        regions = [
            {
                "start": self.num(f"{base}/regions/{r}/start"),
                "end": self.num(f"{base}/regions/{r}/end"),
            }
            for r in paths.numbered(self.fs, base + "/regions")
        ]
        return {
            "pid": None if ops == "paddr" else self.num(base + "/pid_target"),
            "obsolete": self.flag(base + "/obsolete_target"),
            "regions": regions,
        }

    def scheme(self, base: str) -> dict[str, Any]:
        ap = base + "/access_pattern"

        def bound(path: str, unit: str) -> AccessBound:
            return AccessBound(value=float(self.num(path)), unit=unit)  # type: ignore[arg-type]

        nid = self.num(base + "/target_nid", -1)
        out: dict[str, Any] = {
            "action": self.text(base + "/action"),
            "target_nid": nid if nid >= 0 else None,
            "dests": [
                {
                    "id": self.num(f"{base}/dests/{d}/id"),
                    "weight": self.num(f"{base}/dests/{d}/weight"),
                }
                for d in paths.numbered(self.fs, base + "/dests")
            ],
            "access_pattern": {
                "sz_bytes": {"min": self.num(ap + "/sz/min"), "max": self.num(ap + "/sz/max")},
                "nr_accesses": {
                    "min": bound(ap + "/nr_accesses/min", "samples"),
                    "max": bound(ap + "/nr_accesses/max", "samples"),
                },
                "age": {
                    "min": bound(ap + "/age/min", "aggr_intervals"),
                    "max": bound(ap + "/age/max", "aggr_intervals"),
                },
            },
            "apply_interval_us": self.num(base + "/apply_interval_us", 0),
            "quotas": self.quotas(base + "/quotas"),
            "watermarks": {
                "metric": self.text(base + "/watermarks/metric"),
                "interval_us": self.num(base + "/watermarks/interval_us"),
                "high_permil": self.num(base + "/watermarks/high"),
                "mid_permil": self.num(base + "/watermarks/mid"),
                "low_permil": self.num(base + "/watermarks/low"),
            },
        }
        for name in ("filters", "core_filters", "ops_filters"):
            out[name] = [
                self.filter(f"{base}/{name}/{i}") for i in paths.numbered(self.fs, f"{base}/{name}")
            ]
        out["stats"] = self.stats(base + "/stats")
        return out

    def stats(self, base: str) -> dict[str, int] | None:
        snapshots = self.num(base + "/max_nr_snapshots", 0)
        if not self.outputs:
            return {"max_nr_snapshots": snapshots} if snapshots else None
        names = (
            "nr_tried",
            "sz_tried",
            "nr_applied",
            "sz_applied",
            "sz_ops_filter_passed",
            "qt_exceeds",
            "nr_snapshots",
        )
        return {n: self.num(f"{base}/{n}", 0) for n in names} | {"max_nr_snapshots": snapshots}

    def quotas(self, base: str) -> dict[str, Any]:
        goals = []
        for g in paths.numbered(self.fs, base + "/goals"):
            gdir = f"{base}/goals/{g}"
            metric = self.text(gdir + "/target_metric", "user_input")
            goals.append(
                {
                    "metric": metric,
                    "nid": self.num(gdir + "/nid", 0) if metric in NODE_METRICS else None,
                    "memcg_path": self.text(gdir + "/path", "") or None
                    if metric in MEMCG_METRICS
                    else None,
                    "target_value": self.num(gdir + "/target_value"),
                    "current_value": self.num(gdir + "/current_value"),
                }
            )
        return {
            "time_ms": self.num(base + "/ms"),
            "sz_bytes": self.num(base + "/bytes"),
            "reset_interval_ms": self.num(base + "/reset_interval_ms"),
            "fail_charge_num": self.num(base + "/fail_charge_num", 0),
            "fail_charge_denom": self.num(base + "/fail_charge_denom", 0),
            "goals": goals,
            "goal_tuner": self.text(base + "/goal_tuner", "consist"),
            "effective_sz_bytes": self.num(base + "/effective_bytes", 0) if self.outputs else 0,
            "weights": {
                n: self.num(f"{base}/weights/{n}")
                for n in ("sz_permil", "nr_accesses_permil", "age_permil")
            },
        }

    def filter(self, base: str) -> dict[str, Any]:
        kind = self.text(base + "/type")
        out: dict[str, Any] = {
            "filter_type": kind,
            "matching": self.flag(base + "/matching"),
            "allow": self.flag(base + "/allow"),
        }
        if kind == "memcg":
            out["memcg_path"] = self.text(base + "/memcg_path", "")
        elif kind == "addr":
            out["address_range"] = {
                "start": self.num(base + "/addr_start"),
                "end": self.num(base + "/addr_end"),
            }
        elif kind == "target":
            out["damon_target_idx"] = self.num(base + "/damon_target_idx")
        elif kind == "hugepage_size":
            out["hugepage_size"] = [self.num(base + "/min"), self.num(base + "/max")]
        return out


def read_nr_kdamonds(fs: KernelFS) -> int:
    """``kdamonds/nr_kdamonds``."""
    return parse_kernel_int(fs.read_text(paths.NR_KDAMONDS), paths.NR_KDAMONDS)


def read_kdamond(fs: KernelFS, k: int, *, outputs: bool = False) -> Kdamond:
    """Read kdamond ``k``'s staged parameters back into the model (reads only).

    ``outputs`` adds what the kernel reports (state, pid, stats, effective quota); without
    it the result compares equal to :func:`as_staged` of what was written. A tree the
    model cannot hold (a foreign kdamond's goal with target 0, say) raises
    :class:`KernelFormatError` naming the kdamond and the problem.
    """
    raw = _Reader(fs, outputs).kdamond(k)
    try:
        return Kdamond.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise KernelFormatError(
            paths.kdamond_dir(k),
            f"cannot be read into the kdamond model at {where}: {first['msg']}",
        ) from exc
