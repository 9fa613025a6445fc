"""Values that carry their unit: durations, sizes, ratios and byte rates.

reactor's config never takes a bare number where a unit matters: ``tick: 1`` could mean
one second or one millisecond, so it is refused with a hint (``add a unit, e.g. 1s``).
This module is the one place that turns unit strings into numbers and back.

Syntax (whitespace between number and unit is optional, units are case-sensitive for
durations and case-insensitive for sizes):

- durations: ``ns``, ``us`` (or ``µs``), ``ms``, ``s``, ``m`` (or ``min``), ``h``, ``d``;
  compound forms add up (``1m 30s``, ``1 m 30 s`` as damo writes them). Parsed to float
  **seconds**.
- sizes: ``B``, then ``K``/``KB``/``KiB`` … ``E``/``EB``/``EiB``. **All binary**
  (K = KiB = 1024), as DAMON's tools read them; ``4k`` is 4096. Parsed to int **bytes**.
- ratios: ``%`` or ``bp`` (basis points, 1/10000). Parsed to a float **fraction**
  (``0.5%`` -> 0.005).
- rates: a size per duration, ``64 MiB/s``, ``1 GiB/10s``, ``512 KiB/m``. Parsed to float
  **bytes per second**.

Numbers are read as exact decimals (:class:`decimal.Decimal`) so that ``1.1 ms`` is
exactly 1100 µs before the final conversion; ``format_*`` produce strings that parse back
to exactly the same value (tested with hypothesis). Negative values, NaN and infinity are
refused: none of these quantities can be negative.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation, localcontext

__all__ = (
    "ULONG_MAX",
    "UnitError",
    "format_duration",
    "format_rate",
    "format_ratio",
    "format_size",
    "parse_duration",
    "parse_duration_decimal",
    "parse_rate",
    "parse_ratio",
    "parse_size",
    "parse_size_decimal",
)

#: The largest value a DAMON sysfs ``ulong`` file takes; damo spells it ``max``.
ULONG_MAX = 2**64 - 1

# Enough precision for any decimal a person types plus the unit scaling (up to 10^18
# for EiB), so that parsing is exact; the default of 28 digits is not enough for
# "1.2345678901234567 EiB".
_PRECISION = 80

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"

_DURATION_UNITS: dict[str, Decimal] = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "min": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION_TOKEN = re.compile(rf"\s*({_NUMBER})\s*(ns|us|µs|ms|min|s|m|h|d)(?![A-Za-z])\s*")

_SIZE_UNITS: dict[str, int] = {"b": 1}
for _i, _p in enumerate("kmgtpe", start=1):
    for _suffix in ("", "b", "ib"):
        _SIZE_UNITS[_p + _suffix] = 1024**_i
_SIZE_RE = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]*)\s*")

_RATIO_RE = re.compile(rf"\s*({_NUMBER})\s*(%|bp)\s*")
_RATIO_SCALE = {"%": 2, "bp": 4}

_BARE_NUMBER = re.compile(rf"\s*{_NUMBER}\s*")


class UnitError(ValueError):
    """A value could not be read as a quantity with a unit. The message is user-facing."""


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regexes only pass numbers
        raise UnitError(f"expected a number, got {text!r}") from None


def _plain(value: Decimal) -> str:
    """A decimal in plain notation with no trailing zeros (``5``, ``1.5``, ``0.001``)."""
    return format(value.normalize(), "f")


def _check_sign(value: Decimal, what: str, text: str) -> None:
    if value < 0:
        raise UnitError(f"{what} cannot be negative, got {text!r}")


def _float(value: Decimal, what: str, text: str) -> float:
    result = float(value)
    if not math.isfinite(result):
        raise UnitError(f"{what} is too large, got {text!r}")
    return result


def parse_duration_decimal(text: str) -> Decimal:
    """Parse a duration such as ``5ms``, ``1.5 s`` or ``1m 30s`` to exact seconds."""
    if _BARE_NUMBER.fullmatch(text):
        raise UnitError(
            f"expected a duration with a unit, got {text!r}: add a unit, e.g. {text.strip()}s"
        )
    pos = 0
    total = Decimal(0)
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        for match in _DURATION_TOKEN.finditer(text):
            if match.start() != pos:
                break
            number = _decimal(match.group(1))
            _check_sign(number, "a duration", text)
            total += number * _DURATION_UNITS[match.group(2)]
            pos = match.end()
    if pos != len(text) or not text.strip():
        raise UnitError(
            "expected a duration such as 5ms, 1.5s or 2m "
            f"(units ns, us, ms, s, m, h, d), got {text!r}"
        )
    return total


def parse_duration(text: str) -> float:
    """Parse a duration to float seconds (``"5ms"`` -> 0.005)."""
    return _float(parse_duration_decimal(text), "the duration", text)


def parse_size_decimal(text: str) -> Decimal:
    """Parse a size such as ``64 KiB``, ``4k`` or ``512B`` to exact bytes (binary units)."""
    if _BARE_NUMBER.fullmatch(text):
        raise UnitError(
            f"expected a size with a unit, got {text!r}: add a unit, e.g. {text.strip()} B "
            f"or {text.strip()} KiB"
        )
    match = _SIZE_RE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise UnitError(
            "expected a size such as 512B, 4K, 64 KiB or 1 GiB "
            f"(binary units: K = KiB = 1024), got {text!r}"
        )
    number = _decimal(match.group(1))
    _check_sign(number, "a size", text)
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return number * _SIZE_UNITS[unit]


def parse_size(text: str) -> int:
    """Parse a size to int bytes (``"64 KiB"`` -> 65536); it must be a whole number of bytes."""
    value = parse_size_decimal(text)
    if value != value.to_integral_value():
        raise UnitError(f"expected a whole number of bytes, got {text!r} ({_plain(value)} bytes)")
    return int(value)


def parse_ratio(text: str, *, maximum: float | None = 1.0) -> float:
    """Parse a ratio such as ``0.5%`` or ``50bp`` to a float fraction (0.005).

    ``maximum`` (a fraction, default 1.0 = 100 %) bounds the value; None lifts the bound.
    """
    if _BARE_NUMBER.fullmatch(text):
        raise UnitError(
            f"expected a ratio with a unit, got {text!r}: add a unit, e.g. {text.strip()}% "
            f"or {text.strip()}bp"
        )
    match = _RATIO_RE.fullmatch(text)
    if match is None:
        raise UnitError(f"expected a ratio such as 0.5% or 50bp, got {text!r}")
    number = _decimal(match.group(1))
    _check_sign(number, "a ratio", text)
    value = _float(number.scaleb(-_RATIO_SCALE[match.group(2)]), "the ratio", text)
    if maximum is not None and value > maximum:
        raise UnitError(f"expected a ratio of at most {format_ratio(maximum)}, got {text!r}")
    return value


def parse_rate(text: str) -> float:
    """Parse a byte rate such as ``64 MiB/s`` or ``1 GiB/10s`` to float bytes per second."""
    size_text, slash, per_text = text.partition("/")
    if not slash:
        raise UnitError(f"expected a rate such as 64 MiB/s or 1 GiB/10s, got {text!r}")
    size = parse_size_decimal(size_text)
    per = per_text.strip()
    if per in _DURATION_UNITS:
        per = "1" + per
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        seconds = parse_duration_decimal(per)
        if seconds == 0:
            raise UnitError(f"a rate needs a non-zero period, got {text!r}")
        return _float(size / seconds, "the rate", text)


def _check_format_input(value: float, what: str) -> float:
    """``value`` as a float (ints are accepted: ``float.is_integer`` is what the
    formatters use, and ``int.is_integer`` only exists from Python 3.12)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be finite and non-negative, got {value!r}")
    return float(value)


def format_duration(seconds: float) -> str:
    """Format float seconds as the shortest exact duration string (``0.005`` -> ``5ms``)."""
    seconds = _check_format_input(seconds, "a duration")
    if seconds == 0:
        return "0s"
    # Minutes and hours only for exact multiples, so the string stays exact.
    if seconds.is_integer() and seconds < 2**53:
        whole = int(seconds)
        if whole % 3600 == 0:
            return f"{whole // 3600}h"
        if whole % 60 == 0 and whole >= 60:
            return f"{whole // 60}m"
    exact = Decimal(repr(seconds))
    for unit, shift in (("s", 0), ("ms", 3), ("us", 6)):
        if seconds >= 10.0**-shift:
            return f"{_plain(exact.scaleb(shift))}{unit}"
    return f"{_plain(exact.scaleb(9))}ns"


def format_size(size: int) -> str:
    """Format int bytes with the largest binary unit that keeps it exact (``65536`` -> ``64 KiB``).

    Up to three decimals are used (``1536`` -> ``1.5 KiB``); otherwise bytes.
    """
    if size < 0:
        raise ValueError(f"a size must be non-negative, got {size!r}")
    for exponent, unit in reversed(list(enumerate(("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"), 1))):
        factor = 1024**exponent
        if size >= factor and (size * 1000) % factor == 0:
            return f"{_plain(Decimal(size * 1000 // factor).scaleb(-3))} {unit}"
    return f"{size} B"


def format_ratio(fraction: float) -> str:
    """Format a fraction as an exact percentage (``0.005`` -> ``0.5%``)."""
    fraction = _check_format_input(fraction, "a ratio")
    return f"{_plain(Decimal(repr(fraction)).scaleb(2))}%"


def format_rate(bytes_per_second: float) -> str:
    """Format bytes per second (``67108864.0`` -> ``64 MiB/s``)."""
    bytes_per_second = _check_format_input(bytes_per_second, "a rate")
    if bytes_per_second.is_integer():
        return f"{format_size(int(bytes_per_second))}/s"
    return f"{_plain(Decimal(repr(bytes_per_second)))} B/s"
