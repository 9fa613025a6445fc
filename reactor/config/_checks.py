"""How the config models raise errors, and cross-field checks that run on what did parse.

Every check raises a pydantic error of type ``reactor`` whose text is ours (:func:`fail`,
:func:`fail_many`); :mod:`reactor.config._errors` shows it as is.

A cross-field check (``min <= max``, ``sample <= aggregation``) is a method of a config
model marked with :func:`cross_check` that returns its issues as ``(sub-path, message)``
pairs. :func:`validate_checked` (the wrap validator of every config model) runs them after
the model's fields parsed, like an after-validator; unlike one, it also runs them when some
fields failed, so that a file's errors are all reported at once. Then each check sees the
fields that parsed (those not given have their defaults), and a check that reads a field
that failed is skipped: that field's own error stands for it. The checks are the one
source of truth either way; which fields a check involves is found by running it, so a
check whose outcome does not depend on the failed field (``tuner: reactor`` needs no
``scheme``) still reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar, get_args

from pydantic import BaseModel, ValidationError, create_model
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

__all__ = (
    "Issue",
    "cross_check",
    "error",
    "fail",
    "fail_many",
    "validate_checked",
)

#: A problem a check found: the sub-path of the field it is about (``"min"``,
#: ``"targets[1].pid"``, relative to the model) and the message.
Issue = tuple[str, str]
_Check = Callable[[Any], Sequence[Issue]]
_F = TypeVar("_F", bound=Callable[..., Sequence[Issue]])
_M = TypeVar("_M", bound=BaseModel)

_MARKED: set[Callable[..., Sequence[Issue]]] = set()
_CHECKS: dict[type[BaseModel], tuple[_Check, ...]] = {}
_SHADOWS: dict[type[BaseModel], type[BaseModel]] = {}
_KNOWN_ERROR_TYPES = frozenset(get_args(ErrorType))


def error(message: str) -> PydanticCustomError:
    """A validation error whose user-facing text is exactly ``message`` (to ``raise``)."""
    return PydanticCustomError("reactor", "{message}", {"message": message})


def fail(message: str) -> NoReturn:
    """Raise :func:`error`."""
    raise error(message)


def _issues_error(issues: Sequence[Issue]) -> PydanticCustomError:
    return PydanticCustomError(
        "reactor",
        "{message}",
        {"message": "; ".join(m for _, m in issues), "issues": list(issues)},
    )


def fail_many(issues: Sequence[Issue]) -> NoReturn:
    """Raise several issues at once, each at a sub-path (``"regions.min"``) of the model."""
    raise _issues_error(issues)


def cross_check(func: _F) -> _F:
    """Mark a model method as a cross-field check: ``(self) -> [(sub-path, message)]``.

    The method reads the fields it needs as attributes of ``self`` and returns its issues
    (empty when all is well). Keep one condition per check: when a field failed, every
    check that reads it is skipped, and only those.
    """
    _MARKED.add(func)
    return func


def _checks_of(cls: type[BaseModel]) -> tuple[_Check, ...]:
    """The cross-field checks of ``cls`` and its bases, in definition order (bases first)."""
    if cls not in _CHECKS:
        found: dict[str, _Check] = {}
        if cls not in _SHADOWS.values():
            for klass in reversed(cls.__mro__):
                found |= {n: f for n, f in vars(klass).items() if _is_marked(f)}
        _CHECKS[cls] = tuple(found.values())
    return _CHECKS[cls]


def _is_marked(value: Any) -> bool:
    try:
        return value in _MARKED
    except TypeError:  # an unhashable class attribute cannot be a check
        return False


def _run(checks: Sequence[_Check], model: Any) -> list[Issue]:
    issues: list[Issue] = []
    for check in checks:
        try:
            issues += check(model)
        except _Unparsed:
            continue  # the check reads a field that failed; that field's error stands
    return issues


def validate_checked(cls: type[_M], data: Any, handler: Callable[[Any], _M]) -> _M:
    """Validate ``data`` as ``cls`` with ``handler``, then run the model's cross-field
    checks; when fields failed, run them on the fields that parsed and raise every error
    together (see the module docstring)."""
    checks = _checks_of(cls)
    if not checks:
        return handler(data)
    try:
        model = handler(data)
    except ValidationError as exc:
        partial = _parsed_fields(cls, data, exc)
        issues = _run(checks, partial) if partial is not None else []
        if not issues:
            raise
        raise _with_issues(exc, issues, data) from None
    issues = _run(checks, model)
    if issues:
        fail_many(issues)
    return model


class _Unparsed(Exception):
    """A check read a field whose value failed to parse."""


class _Partial:
    """The fields of a model that parsed; reading one that failed raises :class:`_Unparsed`."""

    __slots__ = ("_failed", "_model")

    def __init__(self, model: BaseModel, failed: frozenset[str]) -> None:
        self._model = model
        self._failed = failed

    def __getattr__(self, name: str) -> Any:
        if name in self._failed:
            raise _Unparsed(name)
        return getattr(self._model, name)


def _failed_fields(cls: type[BaseModel], exc: ValidationError) -> set[str] | None:
    """The fields ``exc`` reports errors under (None if it reports the model as a whole)."""
    failed: set[str] = set()
    for e in exc.errors():
        if not e["loc"]:
            return None
        if e["loc"][0] in cls.model_fields:
            failed.add(str(e["loc"][0]))
    return failed


def _parsed_fields(cls: type[BaseModel], data: Any, exc: ValidationError) -> _Partial | None:
    """The fields of ``data`` that parse as ``cls``'s, with defaults for the missing ones
    (None if that cannot be told).

    They are parsed again by a copy of ``cls`` whose required fields are optional and that
    has no cross-field checks: pydantic keeps no partial result of a failed validation.
    """
    failed = _failed_fields(cls, exc)
    if failed is None or not isinstance(data, Mapping):
        return None
    parsed = {k: v for k, v in data.items() if k in cls.model_fields and k not in failed}
    try:
        model = _shadow(cls).model_validate(parsed)
    except ValidationError:
        return None  # a field's validator depends on one that failed: no guessing
    return _Partial(model, frozenset(failed))


def _shadow(cls: type[BaseModel]) -> type[BaseModel]:
    """``cls`` with every required field optional (default None) and no cross-field checks."""
    if cls not in _SHADOWS:
        optional: dict[str, Any] = {
            name: (field.rebuild_annotation(), None)
            for name, field in cls.model_fields.items()
            if field.is_required()
        }
        _SHADOWS[cls] = create_model(
            f"{cls.__name__}Parsed", __base__=cls, __module__=cls.__module__, **optional
        )
    return _SHADOWS[cls]


def _with_issues(exc: ValidationError, issues: Sequence[Issue], data: Any) -> ValidationError:
    """``exc``'s errors and one more at the model holding ``issues``."""
    details: list[InitErrorDetails] = [_details(e) for e in exc.errors()]
    details.append({"type": _issues_error(issues), "loc": (), "input": data})
    return ValidationError.from_exception_data(exc.title, details)


def _details(e: Mapping[str, Any]) -> InitErrorDetails:
    """One error of ``ValidationError.errors()`` in the form that builds it again."""
    ctx: dict[str, Any] = dict(e.get("ctx") or {})
    kind: str | PydanticCustomError = e["type"]
    if kind not in _KNOWN_ERROR_TYPES:  # ours ("reactor"): its text is ctx["message"]
        kind = PydanticCustomError(str(kind), "{message}", {"message": e["msg"], **ctx})
    details: InitErrorDetails = {"type": kind, "loc": tuple(e["loc"]), "input": e["input"]}
    if ctx and isinstance(kind, str):
        details["ctx"] = ctx
    return details
