"""Reading a YAML file (ruamel.yaml) keeping the line of every key and list item, for messages that say
``file:line``. Every problem reading or parsing it becomes one :class:`JobFileError`.

Used by the job file loader, the variable library and ``serve`` (to tell job files from other YAML).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from copyjob.core.errors import JobFileError

PathKey = tuple[str | int, ...]
"""Where a value sits in a document: mapping keys and list indexes from the top, e.g. ``("tables", 0, "name")``."""


def read_yaml(path: Path) -> tuple[Any, dict[PathKey, int]]:
    """Parse YAML keeping the line of every key and list item (1-based)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobFileError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobFileError(f"cannot read: {exc}", file=str(path)) from exc
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise JobFileError(f"invalid YAML: {exc.problem or exc.context}", file=str(path), line=line) from exc
    except YAMLError as exc:
        raise JobFileError(f"invalid YAML: {exc}", file=str(path)) from exc
    lines: dict[PathKey, int] = {}
    _collect_lines(doc, (), lines)
    return doc, lines


def _collect_lines(node: Any, key: PathKey, lines: dict[PathKey, int]) -> None:
    lc = getattr(node, "lc", None)
    if isinstance(node, Mapping):
        for k in node:
            child = (*key, str(k))
            if lc is not None:
                try:
                    lines[child] = lc.key(k)[0] + 1
                except (KeyError, TypeError):
                    pass
            _collect_lines(node[k], child, lines)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            child = (*key, i)
            if lc is not None:
                try:
                    lines[child] = lc.item(i)[0] + 1
                except (KeyError, TypeError, IndexError):
                    pass
            _collect_lines(item, child, lines)
