"""Unit-carrying field types for the config models, and the helpers their checks share.

Every validator here raises :func:`fail`, a pydantic error of type ``reactor`` whose text
is ours; :mod:`reactor.config._errors` shows it as is. Two families of types:

- reactor's own keys (:data:`Duration`, :data:`Size`, :data:`Ratio`, :data:`Rate`) take a
  string with a unit; a bare number is refused with a hint (``add a unit, e.g. 1s``);
- keys copied from DAMON's schema (damo's ``--kdamonds`` format) carry the unit in their
  name (``sample_us``, ``sz_bytes``, ``time_ms``, ``*_permil``, ``*_bp``), so they take a
  bare number in that unit *or* a string with a unit, and also what damo writes: thousands
  separators (``1,000``), ``min`` (0) and ``max`` (ULONG_MAX). Their values are stored as
  ints in the key's unit, ready for sysfs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ModelWrapValidatorHandler,
    WithJsonSchema,
    model_validator,
)

from reactor.config._checks import cross_check, error, fail, fail_many, validate_checked
from reactor.units import (
    ULONG_MAX,
    UnitError,
    parse_duration,
    parse_duration_decimal,
    parse_rate,
    parse_ratio,
    parse_size,
    parse_size_decimal,
)

__all__ = (
    "AsTuple",
    "DamonBp",
    "DamonBytes",
    "DamonCount",
    "DamonMs",
    "DamonPermil",
    "DamonUs",
    "Duration",
    "FiniteFloat",
    "PositiveDuration",
    "Rate",
    "Ratio",
    "Section",
    "Size",
    "cross_check",
    "damon_bp",
    "damon_count",
    "damon_us",
    "error",
    "fail",
    "fail_many",
    "show",
    "unit_formatters",
)


class Section(BaseModel):
    """Base of every config model: frozen, strict, and unknown keys are errors.

    Cross-field checks are methods marked with :func:`cross_check`; they run even when
    some fields failed, on those that parsed (:mod:`reactor.config._checks`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        return validate_checked(cls, data, handler)


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, for ``got …`` in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unit_value(
    value: Any, parse: Callable[[str], Any], kind: str, example: str, hint_unit: str
) -> Any:
    if isinstance(value, str):
        try:
            return parse(value)
        except UnitError as exc:
            fail(str(exc))
    if _is_number(value):
        fail(
            f"expected a {kind} with a unit, got {show(value)}: add a unit, "
            f"e.g. {show(value)}{hint_unit}"
        )
    raise error(f"expected a {kind} such as {example}, got {show(value)}")


def _duration(value: Any) -> float:
    result: float = _unit_value(value, parse_duration, "duration", "5ms, 1.5s or 2m", "s")
    return result


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        fail(f"expected a duration > 0, got {show(value)}")
    return seconds


def _size(value: Any) -> int:
    result: int = _unit_value(value, parse_size, "size", "512B, 4K, 64 KiB or 1 GiB", " KiB")
    return result


def _ratio(value: Any) -> float:
    result: float = _unit_value(value, parse_ratio, "ratio", "0.5% or 50bp", "%")
    return result


def _rate(value: Any) -> float:
    result: float = _unit_value(value, parse_rate, "rate", "64 MiB/s", " MiB/s")
    return result


def _finite(value: Any) -> float:
    if not _is_number(value):
        fail(f"expected a number, got {show(value)}")
    if not math.isfinite(value):
        fail(f"expected a finite number, got {show(value)}")
    return float(value)


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, tuple):
        return value
    raise error(f"expected a list, got {show(value)}")


def _string_schema(description: str, pattern: str, examples: list[str]) -> WithJsonSchema:
    return WithJsonSchema(
        {"type": "string", "pattern": pattern, "description": description, "examples": examples}
    )


_NUM = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
_DURATION_PATTERN = rf"^\s*({_NUM}\s*(ns|us|µs|ms|min|s|m|h|d)\s*)+$"
_SIZE_PATTERN = rf"^\s*{_NUM}\s*([bB]|[kKmMgGtTpPeE]([iI]?[bB])?)\s*$"
_RATIO_PATTERN = rf"^\s*{_NUM}\s*(%|bp)\s*$"
_RATE_PATTERN = (
    rf"^\s*{_NUM}\s*([bB]|[kKmMgGtTpPeE]([iI]?[bB])?)\s*/\s*({_NUM})?\s*(ns|us|ms|s|m|min|h|d)\s*$"
)

#: A duration with a unit (``5ms``, ``1.5 s``, ``2m``), stored as float seconds (>= 0).
Duration = Annotated[
    float,
    BeforeValidator(_duration),
    _string_schema(
        "duration with a unit (ns, us, ms, s, m, h, d); stored as seconds",
        _DURATION_PATTERN,
        ["5ms", "1.5s", "2m"],
    ),
]
#: A duration that must be > 0 (periods, ticks, timeouts).
PositiveDuration = Annotated[
    float,
    BeforeValidator(_positive_duration),
    _string_schema(
        "duration > 0 with a unit (ns, us, ms, s, m, h, d); stored as seconds",
        _DURATION_PATTERN,
        ["1s", "100ms"],
    ),
]
#: A size with a binary unit (``64 KiB``, ``4K`` = 4096), stored as int bytes.
Size = Annotated[
    int,
    BeforeValidator(_size),
    _string_schema(
        "size with a binary unit (B, K/KiB, M/MiB, G/GiB, T/TiB; K = 1024); stored as bytes",
        _SIZE_PATTERN,
        ["512B", "64 KiB", "1 GiB"],
    ),
]
#: A ratio with a unit (``0.5%``, ``50bp``), at most 100 %, stored as a float fraction.
Ratio = Annotated[
    float,
    BeforeValidator(_ratio),
    _string_schema(
        "ratio with a unit (% or bp, basis points), at most 100%; stored as a fraction",
        _RATIO_PATTERN,
        ["0.5%", "50bp"],
    ),
]
#: A byte rate (``64 MiB/s``), stored as float bytes per second.
Rate = Annotated[
    float,
    BeforeValidator(_rate),
    _string_schema(
        "byte rate: a size per duration; stored as bytes per second",
        _RATE_PATTERN,
        ["64 MiB/s", "1 GiB/10s"],
    ),
]


def unit_formatters() -> dict[str, Callable[[Any], str]]:
    """The JSON Schema ``pattern`` of each unit type and how to write a stored value
    (seconds, bytes, fraction, bytes/s) in it: the schema's defaults use these, so each
    default validates under its own property's schema."""
    from reactor.units import format_duration, format_rate, format_ratio, format_size

    return {
        _DURATION_PATTERN: format_duration,
        _SIZE_PATTERN: format_size,
        _RATIO_PATTERN: format_ratio,
        _RATE_PATTERN: format_rate,
    }


#: A finite float (gains): NaN and infinity are refused.
FiniteFloat = Annotated[float, BeforeValidator(_finite), WithJsonSchema({"type": "number"})]
#: Turns a YAML list into a tuple, so that frozen configs are immutable all the way down.
AsTuple = BeforeValidator(_as_tuple)


# --- DAMON-schema numbers -------------------------------------------------------------


def _damon_text(value: Any) -> str | int | None:
    """Common damo spellings: ints pass, ``min``/``max``, and thousands separators."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if not isinstance(value, str):
        return None
    text = value.strip().replace(",", "")
    if text == "min":
        return 0
    if text == "max":
        return ULONG_MAX
    try:
        return int(text, 10)
    except ValueError:
        return text


def _in_range(number: int, value: Any, unit: str) -> int:
    if number < 0:
        fail(f"expected a value >= 0 {unit}, got {show(value)}")
    if number > ULONG_MAX:
        fail(f"expected a value <= {ULONG_MAX} (ULONG_MAX) {unit}, got {show(value)}")
    return number


def _whole(amount: Decimal, value: Any, unit: str) -> int:
    if amount != amount.to_integral_value():
        fail(f"expected a whole number of {unit}, got {show(value)} ({amount.normalize()} {unit})")
    return int(amount)


def _damon_time(scale: Decimal, unit: str) -> Callable[[Any], int]:
    def validate(value: Any) -> int:
        text = _damon_text(value)
        if text is None:
            fail(f"expected a number of {unit} or a duration such as 5ms, got {show(value)}")
        if isinstance(text, str):
            try:
                seconds = parse_duration_decimal(text)
            except UnitError as exc:
                fail(str(exc))
            return _in_range(_whole(seconds * scale, value, unit), value, unit)
        return _in_range(text, value, unit)

    return validate


def _damon_bytes(value: Any) -> int:
    text = _damon_text(value)
    if isinstance(value, float) and value >= 0 and math.isfinite(value):
        text = int(value)  # damo truncates fractional bytes; so do we
    if text is None:
        fail(f"expected a number of bytes or a size such as 4 KiB, got {show(value)}")
    if isinstance(text, str):
        try:
            amount = parse_size_decimal(text)
        except UnitError as exc:
            fail(str(exc))
        # damo writes sizes rounded to three decimals ("4.123 KiB") and reads them back
        # truncated to whole bytes; reading them the same way keeps its files loadable.
        return _in_range(int(amount), value, "bytes")
    return _in_range(text, value, "bytes")


def _damon_fraction(per: int, unit: str) -> Callable[[Any], int]:
    def validate(value: Any) -> int:
        text = _damon_text(value)
        if text is None:
            fail(f"expected a number of {unit} or a ratio such as 5%, got {show(value)}")
        if isinstance(text, str):
            try:
                fraction = parse_ratio(text, maximum=None)
            except UnitError as exc:
                fail(str(exc))
            amount = Decimal(repr(fraction)) * per
            return _in_range(_whole(amount, value, unit), value, unit)
        return _in_range(text, value, unit)

    return validate


def _damon_count(value: Any) -> int:
    text = _damon_text(value)
    if text is None or isinstance(text, str):
        fail(f"expected a whole number, got {show(value)}")
    return _in_range(text, value, "")


#: Validators of single DAMON values, for fields whose unit depends on another field.
damon_us = _damon_time(Decimal(10) ** 6, "us")
damon_bp = _damon_fraction(10000, "bp")
damon_count = _damon_count


def _damon_schema(description: str, examples: list[Any]) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
            "description": description,
            "examples": examples,
        }
    )


#: DAMON key in microseconds (``*_us``): a bare number of µs, or a duration; stored as int µs.
DamonUs = Annotated[
    int,
    BeforeValidator(damon_us),
    _damon_schema("microseconds: a bare number of us, or a duration with a unit", [5000, "5 ms"]),
]
#: DAMON key in milliseconds (``*_ms``); stored as int ms.
DamonMs = Annotated[
    int,
    BeforeValidator(_damon_time(Decimal(10) ** 3, "ms")),
    _damon_schema("milliseconds: a bare number of ms, or a duration with a unit", [1000, "1 s"]),
]
#: DAMON key in bytes (``*_bytes``, addresses); ``min`` = 0, ``max`` = ULONG_MAX.
DamonBytes = Annotated[
    int,
    BeforeValidator(_damon_bytes),
    _damon_schema("bytes: a bare number, or a size with a binary unit", [4096, "4 KiB", "max"]),
]
#: DAMON key in permil (``*_permil``, 1/1000); stored as int permil.
DamonPermil = Annotated[
    int,
    BeforeValidator(_damon_fraction(1000, "permil")),
    _damon_schema("permil (1/1000): a bare number, or a ratio such as 5%", [500, "50 %"]),
]
#: DAMON key in basis points (``*_bp``, 1/10000); stored as int bp.
DamonBp = Annotated[
    int,
    BeforeValidator(damon_bp),
    _damon_schema("basis points (1/10000): a bare number, or a ratio such as 4%", [400, "4 %"]),
]
#: A DAMON count (regions, aggregations): a whole number; ``max`` = ULONG_MAX.
DamonCount = Annotated[
    int,
    BeforeValidator(_damon_count),
    _damon_schema("a whole number (damo also writes 1,000 and max)", [10, "1,000"]),
]
