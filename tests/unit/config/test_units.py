"""Units: parsing and formatting of durations, sizes, ratios and rates."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor.units import (
    UnitError,
    format_duration,
    format_rate,
    format_ratio,
    format_size,
    parse_duration,
    parse_rate,
    parse_ratio,
    parse_size,
)

finite_non_negative = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5ms", 0.005),
        ("1.5 s", 1.5),
        ("2m", 120.0),
        ("3us", 3e-6),
        ("3µs", 3e-6),
        ("1h", 3600.0),
        ("250ns", 250e-9),
        ("1 m 30 s", 90.0),
        ("1m30s", 90.0),
        ("2min", 120.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """Durations in every unit, and damo's compound form, parse to seconds."""
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1", r"add a unit, e\.g\. 1s"),
        ("-5s", r"cannot be negative"),
        ("5 parsecs", r"expected a duration such as 5ms"),
        ("nan s", r"expected a duration"),
        ("", r"expected a duration"),
        ("1e999 s", r"too large"),
    ],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    """Bad durations are refused with a message that says what is wanted."""
    with pytest.raises(UnitError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64 KiB", 65536),
        ("1 GiB", 1 << 30),
        ("4K", 4096),
        ("4k", 4096),
        ("4 KB", 4096),
        ("512B", 512),
        ("1.5 MiB", 1536 * 1024),
        ("2 TiB", 2 << 40),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    """Sizes are all binary (K = KiB = 1024), case-insensitive, as DAMON's tools read them."""
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("12", r"add a unit, e\.g\. 12 B or 12 KiB"),
        ("64 XB", r"expected a size such as"),
        ("-1K", r"cannot be negative"),
        ("4.1 KiB", r"whole number of bytes"),
    ],
)
def test_parse_size_errors(text: str, message: str) -> None:
    """Bad sizes are refused with a clear message."""
    with pytest.raises(UnitError, match=message):
        parse_size(text)


def test_parse_ratio() -> None:
    """Percent and basis points parse to a fraction; over 100% and bare numbers are refused."""
    assert parse_ratio("0.5%") == 0.005
    assert parse_ratio("50bp") == 0.005
    assert parse_ratio("100%") == 1.0
    with pytest.raises(UnitError, match=r"at most 100%, got '150%'"):
        parse_ratio("150%")
    assert parse_ratio("150%", maximum=None) == 1.5
    with pytest.raises(UnitError, match=r"add a unit, e\.g\. 0\.5%"):
        parse_ratio("0.5")


def test_parse_rate() -> None:
    """A rate is a size per duration, in bytes per second."""
    assert parse_rate("64 MiB/s") == 64 * 2**20
    assert parse_rate("1 GiB/10s") == 2**30 / 10
    assert parse_rate("60 KiB/m") == 1024
    with pytest.raises(UnitError, match="non-zero period"):
        parse_rate("1 KiB/0s")
    with pytest.raises(UnitError, match="expected a rate"):
        parse_rate("64 MiB")


def test_format_examples() -> None:
    """Formatting picks the largest exact unit."""
    assert format_duration(0.005) == "5ms"
    assert format_duration(90.0) == "90s"
    assert format_duration(7200.0) == "2h"
    assert format_duration(0) == "0s"
    assert format_size(65536) == "64 KiB"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(1025) == "1025 B"
    assert format_ratio(0.005) == "0.5%"
    assert format_rate(64.0 * 2**20) == "64 MiB/s"


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_format_refuses_nonsense(bad: float) -> None:
    """Negative, NaN and infinite values cannot be formatted."""
    with pytest.raises(ValueError, match="finite and non-negative"):
        format_duration(bad)


@given(finite_non_negative)
def test_duration_round_trip(seconds: float) -> None:
    """Formatting then parsing a duration gives back exactly the same float."""
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert format_duration(parse_duration(text)) == text


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_size_round_trip(size: int) -> None:
    """Formatting then parsing a size gives back exactly the same byte count."""
    text = format_size(size)
    assert parse_size(text) == size
    assert format_size(parse_size(text)) == text


@given(st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
def test_ratio_round_trip(fraction: float) -> None:
    """Formatting then parsing a ratio gives back exactly the same fraction."""
    text = format_ratio(fraction)
    assert parse_ratio(text) == fraction
    assert format_ratio(parse_ratio(text)) == text


@given(st.integers(min_value=0, max_value=2**60))
def test_rate_round_trip(rate: int) -> None:
    """Formatting then parsing a whole byte rate gives it back exactly."""
    text = format_rate(float(rate))
    assert parse_rate(text) == float(rate)


@pytest.mark.parametrize(
    ("formatted", "expected"),
    [
        (lambda: format_duration(90), "90s"),
        (lambda: format_duration(120), "2m"),
        (lambda: format_ratio(1), "100%"),
        (lambda: format_rate(1024), "1 KiB/s"),
    ],
)
def test_format_takes_ints_as_well_as_floats(formatted: Any, expected: str) -> None:
    """An int (``90``) formats like the float of the same value (3.11 has no int.is_integer)."""
    assert formatted() == expected
