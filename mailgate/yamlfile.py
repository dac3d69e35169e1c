"""YAML that remembers where each value came from, so config and rules errors can name file:line:column.

`load_located(path)` returns plain Python values whose mappings are `LocatedDict` and lists `LocatedList`;
both remember the location of the node and of each key/item. Syntax errors become `Problem`s.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from .errors import Location, Problem


class LocatedDict(dict):
    """A mapping from YAML that knows where it and each of its keys and values stand."""

    where: Location
    key_where: dict[str, Location]
    value_where: dict[str, Location]


class LocatedList(list):
    """A sequence from YAML that knows where it and each of its items stand."""

    where: Location
    item_where: list[Location]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (libyaml's when present: ~10x faster) whose mappings and sequences carry their source marks."""


class _PyLoader(yaml.SafeLoader):
    """The pure-Python loader: slower, but its syntax error messages say what it found; used to explain errors."""


def _loc(path: str, node: yaml.Node) -> Location:
    return Location(path, node.start_mark.line + 1, node.start_mark.column + 1)


def _build(path: str, node: yaml.Node, loader: _Loader) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out = LocatedDict()
        out.where = _loc(path, node)
        out.key_where = {}
        out.value_where = {}
        for key_node, value_node in node.value:
            # a plain key is its text: YAML 1.1 would turn `on:`/`off:`/`yes:` keys into booleans
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) and not key_node.style else _build(path, key_node, loader)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise _Bad(Problem(_loc(path, key_node), "a mapping key must be a plain value"))
            key = str(key) if key is not None else "null"
            if key in out:
                raise _Bad(Problem(_loc(path, key_node), f"duplicate key {key!r} (first at line {out.key_where[key].line})"))
            out[key] = _build(path, value_node, loader)
            out.key_where[key] = _loc(path, key_node)
            out.value_where[key] = _loc(path, value_node)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LocatedList(_build(path, item, loader) for item in node.value)
        seq.where = _loc(path, node)
        seq.item_where = [_loc(path, item) for item in node.value]
        return seq
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2024-13-01
        raise _Bad(Problem(_loc(path, node), f"cannot read value {node.value!r}: {exc}")) from None


class _Bad(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem


def loads_located(text: str, path: str = "<string>", _loader: type = _Loader) -> Any:
    """Parse YAML text; raise `Problem`-carrying ValueError (see `load_located`) on bad syntax."""
    loader = _loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _build(path, node, loader)
    except _Bad as bad:
        raise YamlProblem(bad.problem) from None
    except yaml.MarkedYAMLError as exc:
        if _loader is not _PyLoader:
            return loads_located(text, path, _PyLoader)  # raises again, with the clearer message
        mark = exc.problem_mark or exc.context_mark
        where = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
        what = exc.problem or exc.context or "YAML syntax error"
        if exc.context and exc.problem:
            what = f"{exc.problem} ({exc.context})"
        raise YamlProblem(Problem(where, f"YAML syntax: {what}")) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(Problem(Location(path), f"YAML: {exc}")) from None
    finally:
        loader.dispose()


def load_located(path: str | Path) -> Any:
    """Read and parse a YAML file with locations; raise `YamlProblem` on unreadable files or bad syntax."""
    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlProblem(Problem(Location(p), f"not UTF-8 text ({exc.reason} at byte {exc.start})")) from None
    except OSError as exc:
        raise YamlProblem(Problem(Location(p), f"cannot read: {exc.strerror or exc}")) from None
    return loads_located(text, p)


class YamlProblem(ValueError):
    """A YAML file that cannot be read or parsed; `.problem` says where and why."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def where_of(mapping: Any, key: str | None = None) -> Location:
    """The location of `mapping[key]` (or of the mapping itself), if known."""
    if isinstance(mapping, LocatedDict):
        if key is not None and key in mapping.key_where:
            return mapping.key_where[key]
        return mapping.where
    if isinstance(mapping, LocatedList):
        return mapping.where
    return Location("<unknown>")


def value_where(mapping: Any, key: str) -> Location:
    """The location of the value stored under `key` (falls back to the key, then the mapping)."""
    if isinstance(mapping, LocatedDict) and key in mapping.value_where:
        return mapping.value_where[key]
    return where_of(mapping, key)


def nearest(word: str, choices: list[str] | set[str]) -> str:
    """' (did you mean X?)' for the closest valid choice, or ''."""
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
