"""SmapsReader: counts re-read at known positions while the mappings stay; ranges restrict."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from reactor.sampler.procfs import SmapsReader, parse_smaps, parse_smaps_bytes

DATA = Path(__file__).parent / "data"


def _raw() -> bytes:
    return (DATA / "workload_smaps").read_bytes()


def _bump_referenced(raw: bytes, index: int, kb: int) -> bytes:
    """The same text with mapping ``index``'s Referenced count replaced (same width)."""
    matches = list(re.finditer(rb"^Referenced:( +)(\d+) kB$", raw, re.MULTILINE))
    m = matches[index]
    width = len(m.group(1)) + len(m.group(2))
    line = b"Referenced:" + str(kb).encode().rjust(width) + b" kB"
    return raw[: m.start()] + line + raw[m.end() :]


def test_counts_are_re_read_from_the_same_layout() -> None:
    """A second read with only a count changed re-uses the layout and sees the new count."""
    raw = _raw()
    reader = SmapsReader()
    first = reader.parse(raw)
    changed = _bump_referenced(raw, 3, 4096)
    second = reader.parse(changed)
    assert (reader.fresh, reader.reused) == (1, 1)
    assert second.referenced[3] == 4096 * 1024
    want = parse_smaps(changed.decode())
    for name in ("start", "end", "inode", "rss", "referenced", "anonymous", "anon_huge"):
        assert np.array_equal(getattr(second, name), getattr(want, name)), name
    assert second.path == first.path == want.path


def test_a_changed_mapping_is_parsed_afresh() -> None:
    """A mapping line that changed (here: a renamed file) makes the reader parse again."""
    raw = _raw()
    reader = SmapsReader()
    reader.parse(raw)
    renamed = raw.replace(b"/usr/lib", b"/usr/lyb", 1)
    maps = reader.parse(renamed)
    assert (reader.fresh, reader.reused) == (2, 0)
    assert maps.path == parse_smaps(renamed.decode()).path


def test_ranges_keep_the_mappings_they_touch() -> None:
    """With ranges, the reader keeps what Mappings.within keeps, on fresh and re-used parses."""
    raw = _raw()
    whole = parse_smaps(raw.decode())
    ranges = [
        (int(whole.start[2]), int(whole.end[4])),
        (int(whole.start[10]) + 1, int(whole.start[10]) + 2),
    ]
    want = whole.within(ranges)
    reader = SmapsReader(ranges)
    for _ in range(2):
        got = reader.parse(raw)
        assert np.array_equal(got.start, want.start) and np.array_equal(got.rss, want.rss)
        assert got.path == want.path
    assert np.array_equal(parse_smaps_bytes(raw, ranges=ranges).start, want.start)
