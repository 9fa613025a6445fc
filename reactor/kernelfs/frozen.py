"""A read-only dict for values parsed from kernel files.

Parsed values are published on the bus, logged and exported, so they must not change
after parsing, yet stay plain data: ``json.dumps``, ``pickle``, ``copy.deepcopy`` and
``dataclasses.asdict`` all work on a :class:`FrozenMap` (they fail on ``MappingProxyType``).
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

__all__ = ("FrozenMap",)

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(dict[K, V]):
    """A dict whose content is fixed at construction; every mutator raises TypeError."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only")

    __setitem__ = _refuse
    __delitem__ = _refuse
    __ior__ = _refuse
    clear = _refuse
    pop = _refuse
    popitem = _refuse
    setdefault = _refuse
    update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild through the constructor: the default dict protocol would call the
        # refused __setitem__ (pickle, copy.deepcopy).
        return (type(self), (dict(self),))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"
