"""Reading a YAML file, bounded, keeping the line of every key and list item, for messages that say
``file:line``. Every problem reading or parsing it becomes one :class:`JobFileError`.

Used by the job file loader, the variable library and ``serve`` (to tell job files from other YAML).

Parsing is bounded, so that one hostile or broken file costs little time and memory:

- **size**: at most :data:`MAX_BYTES` (8 MiB) per file;
- **aliases**: anchors and aliases (``&name``, ``*name``, ``<<: *name``) may be used for small shared pieces,
  but together they may add at most :data:`MAX_ALIAS_VALUES` values to the document once expanded (an alias
  "bomb" of a few lines expanding to billions of values is refused before anything is built), and an alias
  may not sit inside its own anchor;
- **depth**: at most :data:`MAX_DEPTH` levels of nesting.

libyaml (PyYAML's C parser) builds the node graph; the values are built from it here, in one pass that is
linear in the file's size. Plain scalars follow YAML 1.2's core schema: ``true``/``false``, ``null``/``~``,
integers (``0o`` octal, ``0x`` hex) and floats; everything else is text as written (``yes``, ``on``, ``1:30``,
``2024-01-01`` and ``010`` are not the booleans, sexagesimals, dates and octals of YAML 1.1). A key given twice
in one mapping is an error.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver

from copyjob.core.collector import paused_gc
from copyjob.core.errors import JobFileError

__all__ = ["MAX_ALIAS_VALUES", "MAX_BYTES", "MAX_DEPTH", "PathKey", "read_yaml"]

PathKey = tuple[str | int, ...]
"""Where a value sits in a document: mapping keys and list indexes from the top, e.g. ``("tables", 0, "name")``."""

MAX_BYTES = 8 * 1024 * 1024
"""The largest job or variables file read (8 MiB: tens of thousands of tables)."""
MAX_ALIAS_VALUES = 10_000
"""How many values aliases may add to a document once expanded, beyond those written in the file."""
MAX_DEPTH = 64
"""Nesting levels (a job file needs six)."""

_PLAIN = "?plain"
"""The tag the parser gives a plain (unquoted, untagged) scalar: resolved here by the core schema."""
_TAG = "tag:yaml.org,2002:"
_MERGE = "<<"
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"^[-+]?[0-9]+$")
_OCT = re.compile(r"^0o[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")
_NON_TEXT_START = frozenset("0123456789+-.~nNtTfF")
"""How a null, boolean or number starts: any other plain scalar is text (most are: a quick way out)."""


def read_yaml(path: Path, *, text_scalars: bool = False) -> tuple[Any, dict[PathKey, int]]:
    """Parse YAML keeping the line of every key and list item (1-based).

    ``text_scalars``: plain scalars stay the text written (``1.10``, ``true``), only ``null``/``~``/empty
    become None: for values that are substituted into text (the variable library).
    """
    text = _read_text(path)
    with paused_gc():
        root = _compose(text, path)
        if root is None:
            return None, {}
        builder = _Builder(str(path), text_scalars)
        return builder.value(root, ()), builder.lines


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size  # 0 for a pipe: then read up to the cap
            data = f.read(min(size, MAX_BYTES) + 1 if size else MAX_BYTES + 1)
    except FileNotFoundError:
        raise JobFileError("file not found", file=str(path)) from None
    except OSError as exc:
        raise JobFileError(f"cannot read: {exc}", file=str(path)) from exc
    if len(data) > MAX_BYTES:
        raise JobFileError(f"larger than {MAX_BYTES // (1024 * 1024)} MiB ({MAX_BYTES:,} bytes), the most a job or "
                           "variables file may be: split the job into several files", file=str(path))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JobFileError(f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path)) from exc


class _Resolver(BaseResolver):
    """Leaves plain scalars for the core schema here; quoted ones are text."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode and implicit[0]:
            return _PLAIN
        return str(BaseResolver.resolve(self, kind, value, implicit))


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _Parser(CParser, _Resolver):
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            _Resolver.__init__(self)
else:  # PyYAML built without libyaml: the same nodes, at Python speed
    from yaml.composer import Composer
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser, Composer, _Resolver):  # type: ignore[no-redef]
        def __init__(self, text: str) -> None:
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            _Resolver.__init__(self)


def _compose(text: str, path: Path) -> Node | None:
    parser = _Parser(text)
    try:
        node: Node | None = parser.get_single_node()
        return node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise JobFileError(f"invalid YAML: {exc.problem or exc.context}", file=str(path), line=line) from None
    except yaml.YAMLError as exc:
        raise JobFileError(f"invalid YAML: {exc}", file=str(path)) from None
    except RecursionError:  # the pure-Python composer, on a deeply nested file
        raise JobFileError(f"nested deeper than {MAX_DEPTH} levels", file=str(path)) from None
    finally:
        parser.dispose()


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Builder:
    """Plain dicts, lists and scalars from the node graph, with the line of every key and item, in one pass.

    The bounds are kept while building: a node met a second time is an alias's repetition, counted against
    :data:`MAX_ALIAS_VALUES`, so an alias bomb stops after a few thousand values; a node met again inside
    itself is a recursive alias; depth is counted as the values nest."""

    def __init__(self, file: str, text_scalars: bool) -> None:
        self.file = file
        self.text_scalars = text_scalars
        self.lines: dict[PathKey, int] = {}
        self._seen: set[int] = set()
        self._open: set[int] = set()
        self._repeated = 0
        self._alias: Node | None = None
        """The outermost node being repeated by an alias, if any (where the anchor's values are written)."""

    def value(self, node: Node, key: PathKey) -> Any:
        if isinstance(node, ScalarNode):
            if id(node) in self._seen:
                self._repeat(node)
            self._seen.add(id(node))
            return self._scalar(node)
        ident = id(node)
        if ident in self._open:
            raise JobFileError("an alias refers to its own anchor (a recursive document)", file=self.file,
                               line=_line(node))
        if len(self._open) >= MAX_DEPTH:
            raise JobFileError(f"nested deeper than {MAX_DEPTH} levels", file=self.file, line=_line(node))
        outermost = False
        if ident in self._seen:
            outermost = self._alias is None
            if outermost:
                self._alias = node
            self._repeat(node)
        self._seen.add(ident)
        self._open.add(ident)
        try:
            if isinstance(node, SequenceNode):
                self._plain_tag(node, "seq")
                out = []
                for i, item in enumerate(node.value):
                    self.lines[(*key, i)] = _line(item)
                    out.append(self.value(item, (*key, i)))
                return out
            assert isinstance(node, MappingNode), node
            self._plain_tag(node, "map")
            return self._mapping(node, key)
        finally:
            self._open.discard(ident)
            if outermost:
                self._alias = None

    def _repeat(self, node: Node) -> None:
        self._repeated += 1
        if self._repeated > MAX_ALIAS_VALUES:
            where = self._alias or node
            raise JobFileError(f"aliases of the anchor here repeat more than {MAX_ALIAS_VALUES:,} values (an alias "
                               "bomb?): write the values out", file=self.file, line=_line(where))

    def _mapping(self, node: MappingNode, key: PathKey) -> dict[Any, Any]:
        explicit: list[tuple[Node, Node]] = []
        merged: list[MappingNode] = []
        for k_node, v_node in node.value:
            if isinstance(k_node, ScalarNode) and k_node.tag == _PLAIN and k_node.value == _MERGE:
                merged.extend(self._merge_sources(v_node))
            else:
                explicit.append((k_node, v_node))
        out: dict[Any, Any] = {}
        for source in reversed(merged):  # earlier merge sources win over later ones, explicit keys over both
            out.update(self.value(source, key))
        first_line: dict[Any, int] = {}
        for k_node, v_node in explicit:
            k = self._key(k_node)
            child = (*key, str(k))
            if k in first_line:
                raise JobFileError(f"given twice (first at line {first_line[k]})", file=self.file,
                                   line=_line(k_node), field=_field(child))
            first_line[k] = self.lines[child] = _line(k_node)
            out[k] = self.value(v_node, child)
        return out

    def _merge_sources(self, node: Node) -> list[MappingNode]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        if not all(isinstance(s, MappingNode) for s in sources):
            raise JobFileError("<< merges a mapping (<<: *name) or a list of them", file=self.file, line=_line(node))
        return list(sources)

    def _key(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise JobFileError("a key must be a plain value, not a list or a mapping", file=self.file,
                               line=_line(node))
        return self._scalar(node)

    def _plain_tag(self, node: Node, kind: str) -> None:
        if node.tag != _TAG + kind:
            raise JobFileError(f"unsupported tag {node.tag}", file=self.file, line=_line(node))

    def _scalar(self, node: ScalarNode) -> Any:
        text: str = node.value
        tag = node.tag
        if tag == _PLAIN:
            if self.text_scalars:
                return None if _NULL.match(text) else text
            return _core(text)
        if tag == _TAG + "str":
            return text
        value = _core(text)
        expected = {"null": type(None), "bool": bool, "int": int, "float": float}.get(tag.removeprefix(_TAG))
        if expected is None:
            raise JobFileError(f"unsupported tag {tag}", file=self.file, line=_line(node))
        if expected is float and type(value) is int:
            value = float(value)
        if type(value) is not expected:
            raise JobFileError(f"{text!r} is not a {tag.removeprefix(_TAG)}", file=self.file, line=_line(node))
        return value


def _core(text: str) -> Any:
    """A plain scalar by YAML 1.2's core schema."""
    if text and text[0] not in _NON_TEXT_START:
        return text
    if _NULL.match(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.match(text):
        return int(text, 10)
    if _OCT.match(text):
        return int(text[2:], 8)
    if _HEX.match(text):
        return int(text[2:], 16)
    if _FLOAT.match(text):
        return float(text)
    if _INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return text


def _field(key: PathKey) -> str:
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
