"""YAML text -> plain Python data plus the file position of every key and value.

PyYAML's own constructors are not used: they keep the last of two duplicate keys
(yaml/pyyaml#165), build arbitrary objects from tags, and apply YAML 1.1's implicit
typing (``on``/``off``/``yes``/``no`` are booleans, ``1_000`` is 1000, ``2024-01-01`` is a
date, ``1:30`` is 90). Instead the text is *composed* into a node tree, and this module
walks the tree itself:

- scalars are typed by the YAML 1.2 core schema: ``true``/``false`` (any case form the
  spec allows) are booleans, ``null``/``~``/empty are null, decimal, ``0o`` and ``0x``
  integers, decimal floats and ``.inf``/``.nan``; everything else is a string. So
  ``enabled: yes`` is the string ``"yes"`` and is refused where a boolean is expected,
  with a hint, rather than silently becoming true;
- a duplicate key is an error that gives the line of both occurrences;
- only the standard tags (``!!str``, ``!!int``, ``!!float``, ``!!bool``, ``!!null``,
  ``!!map``, ``!!seq``) are allowed; ``!!python/object…`` and every other tag is refused;
- merge keys (``<<: *base``) are refused: they hide where a value came from. Anchors
  and aliases are allowed.

Positions are 1-based (line, column). Every problem is collected; the walk never stops at
the first one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ("Loaded", "Mark", "Path", "format_path", "parse_yaml")

#: A key path into the data: mapping keys and list indices.
Path = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "merge"

_BOOL_RE = re.compile(r"true|True|TRUE|false|False|FALSE")
_NULL_RE = re.compile(r"~|null|Null|NULL|")
_INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT_RE = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)


@dataclass(frozen=True)
class Mark:
    """Where a key and its value sit in the file (1-based; the key is the value for items)."""

    line: int
    column: int
    key_line: int
    key_column: int


@dataclass
class Loaded:
    """The result of :func:`parse_yaml`: data (None if unusable), marks and problems."""

    data: Any
    marks: dict[Path, Mark] = field(default_factory=dict)
    problems: list[tuple[int, int, Path, str]] = field(default_factory=list)


def format_path(path: Path) -> str:
    """``("policies", 0, "goals", 1, "target")`` -> ``policies[0].goals[1].target``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Resolver(yaml.resolver.Resolver):
    """Implicit typing by the YAML 1.2 core schema (see the module docstring)."""


_Resolver.yaml_implicit_resolvers = {}
for _tag, _regex, _first in (
    (_BOOL, _BOOL_RE, list("tTfF")),
    (_NULL, _NULL_RE, ["~", "n", "N", ""]),
    (_INT, _INT_RE, list("-+0123456789")),
    (_FLOAT, _FLOAT_RE, list("-+.0123456789")),
):
    _Resolver.add_implicit_resolver(_tag, re.compile(rf"^(?:{_regex.pattern})$"), _first)


class _Loader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    _Resolver,
):
    """Reads and composes only; constructing is done by :class:`_Walker`."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Resolver.__init__(self)


def _pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _scalar(tag: str, text: str) -> Any:
    """Convert a scalar's text by its (resolved or explicit) tag; ValueError if it does not fit."""
    if tag == _STR:
        return text
    if tag == _NULL:
        if not _NULL_RE.fullmatch(text):
            raise ValueError(f"!!null expects null, got {text!r}")
        return None
    if tag == _BOOL:
        if not _BOOL_RE.fullmatch(text):
            raise ValueError(f"!!bool expects true or false, got {text!r}")
        return text.lower() == "true"
    if tag == _INT:
        if not _INT_RE.fullmatch(text):
            raise ValueError(f"!!int expects an integer, got {text!r}")
        return int(text, 0) if text[:2] in ("0o", "0x") else int(text, 10)
    if not _FLOAT_RE.fullmatch(text):
        raise ValueError(f"!!float expects a number, got {text!r}")
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(text)


class _Walker:
    """Builds plain data from the node tree, recording marks and problems."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded

    def problem(self, node: Node, path: Path, message: str) -> None:
        line, column = _pos(node)
        self.loaded.problems.append((line, column, path, message))

    def walk(self, node: Node, path: Path, key_node: Node | None) -> Any:
        line, column = _pos(node)
        key_line, key_column = _pos(key_node) if key_node is not None else (line, column)
        self.loaded.marks[path] = Mark(line, column, key_line, key_column)
        if isinstance(node, MappingNode):
            if node.tag != _MAP:
                return self.bad_tag(node, path)
            return self.mapping(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                return self.bad_tag(node, path)
            return [self.walk(item, (*path, i), None) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        tag = _STR if node.tag == "!" else node.tag
        if tag not in (_STR, _INT, _FLOAT, _BOOL, _NULL):
            return self.bad_tag(node, path)
        try:
            return _scalar(tag, node.value)
        except ValueError as exc:
            self.problem(node, path, str(exc))
            return None

    def bad_tag(self, node: Node, path: Path) -> None:
        tag = node.tag.replace(_TAG, "!!")
        self.problem(
            node,
            path,
            f"YAML tag {tag!r} is not allowed: a config holds plain data only "
            "(mappings, lists, strings, numbers, true/false, null)",
        )

    def mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE or (
                isinstance(key_node, ScalarNode) and key_node.value == "<<" and not key_node.style
            ):
                self.problem(
                    key_node, path, "merge keys (<<) are not supported: write the keys out"
                )
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag not in (_STR, "!"):
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a collection"
                self.problem(key_node, path, f"expected a string key, got {shown}")
                continue
            key = key_node.value
            if key in seen:
                first_line, first_col = _pos(seen[key])
                self.problem(
                    key_node,
                    (*path, key),
                    f"duplicate key {key!r} (first at line {first_line}, column {first_col}); "
                    "each key may appear once",
                )
                continue
            seen[key] = key_node
            out[key] = self.walk(value_node, (*path, key), key_node)
        return out


def parse_yaml(text: str) -> Loaded:
    """Compose ``text`` (one YAML document) into plain data with marks and problems."""
    loaded = Loaded(data=None)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        detail = "; ".join(p for p in (exc.context, exc.problem) if p)
        loaded.problems.append((line, column, (), f"YAML syntax error: {detail}"))
        return loaded
    except yaml.YAMLError as exc:  # reader errors (e.g. control characters)
        loaded.problems.append((0, 0, (), f"YAML error: {exc}"))
        return loaded
    finally:
        loader.dispose()
    if node is None:
        return loaded
    loaded.data = _Walker(loaded).walk(node, (), None)
    return loaded
