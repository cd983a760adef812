"""YAML loading that remembers where every value came from.

Admins edit YAML by hand; an error that says ``router.yaml:42: ...`` is the
difference between a two-minute fix and a bad night. PyYAML's composer keeps
a mark on every node, so we load through it and keep a map from the path of
each value (``("rules", 0, "targets", 1, "queue")``) to its line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


class ConfigError(Exception):
    """A config file that cannot be used, with every problem as ``FILE:LINE: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class SourceMap:
    """Lines of the values of one YAML document, by path."""

    file: str
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int:
        """Line of the value at ``path``, or of its nearest ancestor that exists."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)

    def where(self, path: Sequence[str | int]) -> str:
        return f"{self.file}:{self.line_of(path)}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _index(
    node: yaml.Node, path: PathKey, out: dict[PathKey, int], loader: yaml.SafeLoader
) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            child = (*path, key if isinstance(key, str | int) else str(key))
            # Point a key's errors at the key's own line: for a block mapping
            # value the value node starts on the following line.
            _index(value_node, child, out, loader)
            out[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), out, loader)


def load_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Parse ``path``; return the plain data and the map of lines.

    Raises ConfigError with ``FILE:LINE: message`` for unreadable files and
    YAML syntax errors.
    """
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{name}:1: config file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}:1: cannot read config file: {exc}"]) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> tuple[Any, SourceMap]:
    """Parse YAML text (named ``name`` in errors) into data and a SourceMap."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, SourceMap(name, {(): 1})
        smap = SourceMap(name)
        _index(node, (), smap.lines, loader)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{problem} ({exc.context})"
        raise ConfigError([f"{name}:{line}: YAML syntax error: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{name}:1: YAML error: {exc}"]) from None
    finally:
        loader.dispose()
    return data, smap
