"""``format: json`` change events a whole batch at a time, column by column (the CDC publish path).

A dict and ``json.dumps`` per event cost 20 µs; an f-string per event with a type lookup per value still 8 µs.
Here every column of the images becomes the JSON text of all its values with one C-level ``map`` when the
column holds one Python type (the usual case), and the messages are joined from those texts and the constant
parts between them (``"".join`` over ``zip``: a ``str.format`` template is parsed again on every call). Images
whose keys differ in name or order from the batch's first, and columns of mixed types, go value by value
through the same text functions.

The bytes are those of ``TableEncoder.encode_key`` / ``encode_value`` (tests/connectors/
test_kafka_change_encode.py compares them on random batches of every type and op).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from json.encoder import encode_basestring_ascii as json_string
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

from copyjob.connectors.kafka.values import to_json_value

from copyjob.core.changes import OPS, UNCHANGED_TOAST, ChangeEvent

if TYPE_CHECKING:
    from copyjob.connectors.kafka.codec import SourceInfo

Row = Mapping[str, Any]
_EMPTY: Row = {}
_befores, _afters, _positions = attrgetter("before"), attrgetter("after"), attrgetter("position")


def json_changes(key: Sequence[str], events: Sequence[ChangeEvent], source: SourceInfo,
                 ts: int) -> tuple[list[bytes | None], list[bytes]]:
    """Per event, its key (None without ``key`` or an image) and value, as the event-by-event JSON encoder
    writes them with the envelope's ``ts_ms`` = ``ts``."""
    schema = "null" if source.schema is None else json_string(source.schema)
    ops = {op: json_string(op) for op in OPS}
    texts = joined(['{"before": ', images(list(map(_befores, events))),
                    ', "after": ', images(list(map(_afters, events))),
                    ', "op": ', [ops[e.op] for e in events],
                    f', "source": {{"connector": {json_string(source.connector)}, "db": {json_string(source.db)}, '
                    f'"schema": {schema}, "table": {json_string(source.table)}, "snapshot": ',
                    ['"true"' if e.snapshot or e.op == "r" else '"false"' for e in events],
                    ', "position": ', position_json(list(map(_positions, events))),
                    ', "ts_ms": ', [str(e.ts_ms or ts) for e in events], f'}}, "ts_ms": {ts}}}'])
    values = list(map(str.encode, texts))
    if not key:
        return [None] * len(events), values
    return keys(key, events), values


def keys(key: Sequence[str], events: Sequence[ChangeEvent]) -> list[bytes | None]:
    """The JSON object of the key columns, from ``after`` (``before`` for a delete, nothing for a truncate)."""
    rows = [_EMPTY if e.op == "t" else (e.before if e.op == "d" else e.after) for e in events]
    filled = [_EMPTY if r is None else r for r in rows]
    texts = joined(_object([(k, column_texts([r.get(k) for r in filled], _TEXT)) for k in key]))
    return [None if r is None else text.encode() for r, text in zip(rows, texts, strict=True)]


def images(rows: list[Row | None]) -> list[str]:
    """``json.dumps`` of each image as the event path cleans it: its own column order, unchanged values null."""
    present = [r for r in rows if r is not None]
    if not present:
        return ["null"] * len(rows)
    names = tuple(present[0])
    if not names or not all(map(names.__eq__, map(tuple, present))):
        made = [_image(r) for r in present]
    else:
        made = joined(_object([(n, column_texts(list(map(itemgetter(n), present)), _IMAGE_TEXT)) for n in names]))
    if len(made) == len(rows):
        return made
    found = iter(made)
    return ["null" if r is None else next(found) for r in rows]


def joined(parts: Sequence[str | list[str]]) -> list[str]:
    """Per row, the concatenation of ``parts``: a text is the same in every row, a list holds one per row (at
    least one part is a list)."""
    return list(map("".join, zip(*(repeat(p) if isinstance(p, str) else p for p in parts),
                                 strict=False)))  # the texts repeat without end


def _object(members: Sequence[tuple[str, list[str]]]) -> list[str | list[str]]:
    """The parts of a JSON object of named members (each name with its values' texts)."""
    parts: list[str | list[str]] = []
    for i, (name, texts) in enumerate(members):
        parts += [("{" if i == 0 else ", ") + json.dumps(name) + ": ", texts]
    return [*parts, "}"]


def column_texts(values: list[Any], texts: Mapping[type, Callable[[Any], str]]) -> list[str]:
    """The JSON text of every value: one ``map`` when they share a type, else a lookup per value."""
    types = set(map(type, values))
    if len(types) == 1:
        (kind,) = types
        bulk = _BULK.get(kind)
        return bulk(values) if bulk is not None else list(map(texts.get(kind, _any_text), values))
    get = texts.get
    return [get(type(v), _any_text)(v) for v in values]


def position_json(positions: list[Mapping[str, Any]]) -> list[str]:
    """The JSON string of ``json.dumps(dict(p), sort_keys=True, default=str)`` of every position: joined from
    parts when all have the same text keys and integer values (an LSN and a sequence number), else one by one."""
    first = positions[0]
    names = sorted(first) if all(isinstance(k, str) for k in first) else None
    if names and all(len(p) == len(names) for p in positions):
        try:
            columns = [list(map(itemgetter(n), positions)) for n in names]
        except KeyError:
            columns = []
        if columns and all(set(map(type, c)) == {int} for c in columns):
            # digits need no escaping: the escaped text is the escaped names between the numbers
            parts: list[str | list[str]] = []
            for i, (name, column) in enumerate(zip(names, columns, strict=True)):
                text = json_string(("{" if i == 0 else ", ") + json.dumps(name) + ": ")[1:-1]
                parts += ['"' + text if i == 0 else text, list(map(int.__repr__, column))]
            return joined([*parts, '}"'])
    return [json_string(json.dumps(dict(p), sort_keys=True, default=str)) for p in positions]


def _image(row: Row) -> str:
    get = _IMAGE_TEXT.get
    return "{" + ", ".join([json.dumps(k) + ": " + get(type(v), _any_text)(v) for k, v in row.items()]) + "}"


def _any_text(value: Any) -> str:
    return json.dumps(to_json_value(value), default=str)


def _float_text(value: float) -> str:
    return float.__repr__(value) if math.isfinite(value) else _any_text(value)


def _quoted(texts: Any) -> list[str]:
    return list(map('"{}"'.format, texts))


_TEXT: dict[type, Callable[[Any], str]] = {
    type(None): lambda v: "null",
    bool: lambda v: "true" if v else "false",
    int: int.__repr__,
    float: _float_text,
    str: json_string,
    # ASCII without quotes or backslashes: ISO dates, decimals, base64
    decimal.Decimal: lambda v: f'"{v}"',
    dt.datetime: lambda v: f'"{v.isoformat()}"',
    dt.date: lambda v: f'"{v.isoformat()}"',
    dt.time: lambda v: f'"{v.isoformat()}"',
    bytes: lambda v: f'"{base64.b64encode(v).decode()}"',
}
_IMAGE_TEXT = {**_TEXT, type(UNCHANGED_TOAST): lambda v: "null"}
"""In an image only UNCHANGED_TOAST is a bare ``object()``: null, as ``codec._clean`` makes it."""
_BULK: dict[type, Callable[[list[Any]], list[str]]] = {
    type(None): lambda vs: ["null"] * len(vs),
    int: lambda vs: list(map(int.__repr__, vs)),
    str: lambda vs: list(map(json_string, vs)),
    decimal.Decimal: _quoted,
    dt.datetime: lambda vs: _quoted(map(dt.datetime.isoformat, vs)),
    dt.date: lambda vs: _quoted(map(dt.date.isoformat, vs)),
    dt.time: lambda vs: _quoted(map(dt.time.isoformat, vs)),
}
"""Whole columns of one type through C functions (the same texts as :data:`_TEXT`)."""
