"""The workload generator's ground truth: patterns, sizes and moving phases."""

from __future__ import annotations

import numpy as np
import pytest

from reactor.testing.workload import WorkloadSpec, hot_pages, parse_size

MIB = 2**20


@pytest.mark.parametrize("pattern", ["scattered", "contiguous", "chunked", "moving"])
def test_hot_share_is_as_asked(pattern: str) -> None:
    """Every pattern makes the asked share of pages hot, as sorted unique page indices."""
    spec = WorkloadSpec(size_bytes=64 * MIB, hot_fraction=0.25, pattern=pattern)  # type: ignore[arg-type]
    pages = hot_pages(spec)
    assert len(pages) == spec.nr_pages // 4
    assert np.all(np.diff(pages) > 0) and pages[0] >= 0 and pages[-1] < spec.nr_pages


def test_chunked_pattern_takes_whole_chunks() -> None:
    """The chunked pattern's hot pages fill whole chunks."""
    spec = WorkloadSpec(size_bytes=16 * MIB, pattern="chunked", chunk_bytes=64 * 1024)
    per = 16
    chunks = hot_pages(spec) // per
    assert np.all(np.bincount(chunks)[np.unique(chunks)] == per)


def test_moving_phases_are_disjoint() -> None:
    """Successive phases of the moving pattern share no page (the hot set really moves)."""
    spec = WorkloadSpec(size_bytes=16 * MIB, pattern="moving", hot_fraction=0.25)
    a, b = hot_pages(spec, 0), hot_pages(spec, 1)
    assert not np.intersect1d(a, b).size
    assert np.array_equal(hot_pages(spec, 4), a)


def test_argv_round_trips() -> None:
    """A spec's argv, parsed again, gives the same spec."""
    from reactor.testing.workload import _parse_args

    spec = WorkloadSpec(
        size_bytes=8 * MIB,
        hot_fraction=0.1,
        pattern="chunked",
        mode="write",
        chunk_bytes=2 * MIB,
        split_vmas=True,
        uffd_wp=True,
        seed=3,
    )
    assert _parse_args(spec.argv())[0] == spec


def test_sizes_and_bad_specs() -> None:
    """Sizes take binary suffixes; impossible specs are refused."""
    assert (
        parse_size("64K") == 65536
        and parse_size("1.5M") == 3 * 2**19
        and parse_size("4GiB") == 2**32
    )
    with pytest.raises(ValueError, match="uffd_wp needs anonymous"):
        WorkloadSpec(uffd_wp=True, file="/tmp/x")
    with pytest.raises(ValueError, match="hot_fraction"):
        WorkloadSpec(hot_fraction=1.5)
