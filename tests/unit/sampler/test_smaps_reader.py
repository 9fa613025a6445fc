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


def test_any_changed_byte_of_any_mapping_line_is_noticed() -> None:
    """Every byte of every mapping line is compared (word by word): a same-length change
    anywhere in one (any digit of an address, offset, device or inode, the permissions
    after an mprotect) makes the reader parse afresh and report the new line."""
    raw = _raw()
    heads = [
        m.span()
        for m in re.finditer(rb"^[0-9a-f]+-[0-9a-f]+ [^\n]*$", raw, re.MULTILINE)
        if b"[vsyscall]" not in m.group()  # a changed digit there overflows int64
    ]
    assert len(heads) > 10
    # the first, last and three lines between (every byte of each): words are aligned
    # to the text, so these land at different offsets within their words
    for k in sorted({0, 1, len(heads) // 3, len(heads) // 2, len(heads) - 1}):
        a, b = heads[k]
        for pos in range(a, b):
            if raw[pos] in b"0123456789abcdef":
                new = b"1" if raw[pos] != ord("1") else b"2"
            elif pos - a < 40 and raw[pos] in b"rwx":  # permissions
                new = b"-"
            else:
                continue
            reader = SmapsReader()
            reader.parse(raw)
            changed = bytearray(raw)
            changed[pos] = new[0]
            got = reader.parse(bytes(changed))
            assert reader.fresh == 2, (k, pos - a, raw[a:b])
            want = parse_smaps(bytes(changed).decode())
            assert np.array_equal(got.start, want.start) and got.perms == want.perms


def test_a_count_wider_than_its_column_is_parsed_afresh() -> None:
    """The kernel pads counts to 8 digits: a 9-digit count moves the line's end, so the
    reader parses afresh instead of reading a cut-off number."""
    raw = _raw()
    reader = SmapsReader()
    reader.parse(raw)
    wide = 123_456_789
    m = list(re.finditer(rb"^Referenced:( +)(\d+) kB$", raw, re.MULTILINE))[2]
    changed = raw[: m.start()] + b"Referenced: " + str(wide).encode() + b" kB" + raw[m.end() :]
    got = reader.parse(changed)
    assert reader.fresh == 2
    assert got.referenced[2] == wide * 1024


def test_a_wider_count_behind_a_shorter_line_is_parsed_afresh() -> None:
    """A 9-digit Rss whose line still ends where it did (a line before it in the same
    mapping is one byte shorter) is not read as its last 8 digits."""
    raw = _raw()
    reader = SmapsReader()
    reader.parse(raw)
    size = list(re.finditer(rb"^Size:( +)", raw, re.MULTILINE))[2]
    rss = list(re.finditer(rb"^Rss:( +)(\d+) kB$", raw, re.MULTILINE))[2]
    assert size.end() < rss.start()
    wide = b"Rss:" + b"123456789".rjust(len(rss.group(1)) + len(rss.group(2)) + 1) + b" kB"
    changed = raw[: size.end() - 1] + raw[size.end() : rss.start()] + wide + raw[rss.end() :]
    assert len(changed) == len(raw)
    got = reader.parse(changed)
    assert reader.fresh == 2
    assert got.rss[2] == 123_456_789 * 1024


def test_a_text_that_ends_on_a_count_line_is_parsed_every_time() -> None:
    """Mappings whose last line is a kept count (AnonHugePages here, the fields after it
    dropped) in a text without a final newline: parsed right twice, never indexing past
    the end."""
    raw = _raw()
    lines = raw.decode().split("\n")
    kept: list[str] = []
    skipping = False
    for line in lines:
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            skipping = False
        if not skipping and line:
            kept.append(line)
        if line.startswith("AnonHugePages:"):
            skipping = True
    text = "\n".join(kept).encode()  # no newline after the last count
    want = parse_smaps(text.decode())
    reader = SmapsReader()
    for _ in range(2):
        got = reader.parse(text)
        assert np.array_equal(got.anon_huge, want.anon_huge)
        assert np.array_equal(got.rss, want.rss)
