"""``format: debezium`` change batches a whole batch at a time, column by column (the CDC publish path).

A payload dict and a ``json.dumps`` per event cost 13.6 µs an event. Here the messages are joined from texts
made for the whole batch (as :mod:`connectors.kafka.change_json` does):

- the ``before`` and ``after`` images column by column: integers, booleans, text and floats by one C-level
  ``map`` over the Python values; dates, times, timestamps and precise decimals through an Arrow array and the
  snapshot path's kernels (:func:`connectors.kafka.debezium_batch.arrow_texts`); anything else (and a column
  whose values are not of the column's usual Python type) value by value through the event path's converter;
- the ``source`` block: its constant fields dumped once, around the fields that vary per event (``ts_ms``,
  ``snapshot`` and the position's ``lsn`` or ``file``/``pos``/``row``/``gtid``; ``ts_us`` and ``ts_ns`` are
  ``ts_ms``'s digits followed by zeros).

The bytes are those of :meth:`DebeziumTable.encode_key` / :meth:`DebeziumTable.encode_value` with the same
``ts_ms`` (tests/connectors/test_kafka_change_encode.py compares them on random batches). None when the batch
cannot be done here: a value a converter refuses (the event path then raises its DataError), or transaction
metadata (BEGIN/END records go out between the events, event by event).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from copyjob.connectors.kafka.change_json import joined
from copyjob.connectors.kafka.debezium import DUMPS, position_fields, source_block
from copyjob.connectors.kafka.debezium_batch import arrow_formats, arrow_texts

from copyjob.core.changes import OPS, UNCHANGED_TOAST, ChangeEvent
from copyjob.core.schema import Column, arrow_type

if TYPE_CHECKING:
    from copyjob.connectors.kafka.debezium import DebeziumTable

__all__ = ["debezium_changes"]

Encoded = tuple[list[bytes | None], list[bytes]]
Row = Mapping[str, Any]
Spec = tuple[Column, dict[str, Any], Callable[[Any], Any] | None, Any]
"""A column, its Connect schema, its payload converter and what an unchanged TOASTed value becomes."""
_EMPTY: Row = {}
_NONE = type(None)
_OPS = {op: DUMPS(op) for op in OPS}
_ARROW_TYPES: dict[str, type] = {"date": dt.date, "time": dt.time, "timestamp": dt.datetime,
                                 "timestamptz": dt.datetime, "decimal": decimal.Decimal}
"""The kinds Arrow formats (given values of exactly this Python type; a datetime is no date here)."""
_DECLINE = (TypeError, ValueError, ArithmeticError, AttributeError, KeyError, pa.ArrowException)


def debezium_changes(table: DebeziumTable, events: Sequence[ChangeEvent], source: Any, ts: int) -> Encoded | None:
    """Per event, its key (None for a keyless table or an event without a key image) and value, as
    :meth:`DebeziumTable.encode_key` and :meth:`DebeziumTable.encode_value` write them with ``now_ms=ts``;
    ``source`` is the table's codec.SourceInfo."""
    if not events:
        return [], []
    if table.options.transaction_metadata:
        return None
    try:
        return _keys(table, events), _values(table, events, source, ts)
    except _DECLINE:
        return None


# ---------------------------------------------------------------- values


def _values(table: DebeziumTable, events: Sequence[ChangeEvent], source: Any, ts: int) -> list[bytes]:
    specs = table.column_specs()
    schemas = table.options.schemas
    tail = "," + DUMPS({"ts_ms": ts, "ts_us": ts * 1000, "ts_ns": ts * 1_000_000})[1:] + ("}" if schemas else "")
    parts: list[str | list[str]] = [
        '{"before":', images([e.before for e in events], specs), ',"after":', images([e.after for e in events], specs),
        ',"source":', *_source(table, source, events, ts), ',"transaction":null,"op":',
        [_OPS.get(e.op) or DUMPS(e.op) for e in events], tail]
    payloads = map(str.encode, joined(parts))
    # the schema (kilobytes, the same for every event) is put before each payload once, as bytes: one large
    # copy a message, not two
    return list(map(table.value_head.__add__, payloads)) if schemas else list(payloads)


def _source(table: DebeziumTable, info: Any, events: Sequence[ChangeEvent], ts: int) -> list[str | list[str]]:
    """The parts of every event's ``source`` block: source_block's fields in its order, the constant ones
    dumped once."""
    connector = table.connector
    times = [e.ts_ms or ts for e in events]
    ms = texts_of(times)
    exact = all(type(t) is int for t in times) and 0 not in times  # then t * 1000 is t's digits and "000"
    varying: dict[str, list[str | list[str]]] = {
        "ts_ms": [ms],
        "snapshot": [['"true"' if e.snapshot or e.op == "r" else '"false"' for e in events]],
        "ts_us": [ms, "000"] if exact else [texts_of([t * 1000 for t in times])],
        "ts_ns": [ms, "000000"] if exact else [texts_of([t * 1_000_000 for t in times])],
    }
    positions = [e.position for e in events]
    for name, value_of in position_fields(connector).items():
        varying[name] = [texts_of(list(map(value_of, positions)))]
    parts: list[str | list[str]] = []
    text = ""
    for i, (name, value) in enumerate(source_block(connector, table.options.name, info, "false", {}, 0).items()):
        text += ("{" if i == 0 else ",") + DUMPS(name) + ":"
        for part in varying.get(name) or [DUMPS(value)]:
            if isinstance(part, str):
                text += part
            else:
                parts += [text, part]
                text = ""
    return [*parts, text + "}"]


# ---------------------------------------------------------------- keys


def _keys(table: DebeziumTable, events: Sequence[ChangeEvent]) -> list[bytes | None]:
    """From ``after`` (``before`` for a delete); a truncate's key has every column null and its own schema."""
    if not table.key:
        return [None] * len(events)
    specs = [(c, s, f, None) for c, s, f, _ in table.column_specs() if c.name in table.key]
    rows = [_EMPTY if e.op == "t" else (e.before if e.op == "d" else e.after) for e in events]
    texts = images(rows, specs)
    if table.options.schemas:
        key_head, truncate_head = table.key_head.decode(), table.truncate_key_head.decode()
        texts = joined([[truncate_head if e.op == "t" else key_head for e in events], texts, "}"])
    return [None if r is None else t.encode() for r, t in zip(rows, texts, strict=True)]


# ---------------------------------------------------------------- images


def images(rows: list[Row | None], specs: Sequence[Spec]) -> list[str]:
    """The JSON object of each image with every column of ``specs`` (missing ones null), or ``null``."""
    present = [r for r in rows if r is not None]
    if not present:
        return ["null"] * len(rows)
    if not specs:
        made = ["{}"] * len(present)
    else:
        parts: list[str | list[str]] = []
        for i, spec in enumerate(specs):
            name = spec[0].name
            parts += [("{" if i == 0 else ",") + encode_basestring(name) + ":",
                      column_texts([r.get(name) for r in present], spec)]
        made = joined([*parts, "}"])
    if len(made) == len(rows):
        return made
    found = iter(made)
    return ["null" if r is None else next(found) for r in rows]


def column_texts(values: list[Any], spec: Spec) -> list[str]:
    """The payload JSON of every value of one column, as ``DUMPS(convert(v))`` of the event path."""
    column, schema, convert, unavailable = spec
    types = set(map(type, values))
    if object in types and UNCHANGED_TOAST in values:  # the placeholder is the only bare object()
        toasted = [v is UNCHANGED_TOAST for v in values]
        texts = column_texts([None if t else v for t, v in zip(toasted, values, strict=True)], spec)
        placeholder = DUMPS(unavailable)
        return [placeholder if t else text for t, text in zip(toasted, texts, strict=True)]
    types.discard(_NONE)
    if not types:
        return ["null"] * len(values)
    fast = _bulk(values, column, schema, convert, types.pop()) if len(types) == 1 else None
    if fast is not None:
        return fast
    return ["null" if v is None else dump(v if convert is None else convert(v)) for v in values]


def _bulk(values: list[Any], column: Column, schema: dict[str, Any], convert: Callable[[Any], Any] | None,
          kind_of_value: type) -> list[str] | None:
    """The texts of a column whose values (but nulls) are of one Python type, when a C-level function or
    Arrow makes them; None: value by value."""
    kind = column.type.kind
    texts = _PYTHON.get((kind, kind_of_value))
    if texts is not None:
        nonnull = [v for v in values if v is not None]
        made = texts(nonnull)
        if made is None:
            return None
        if len(nonnull) == len(values):
            return made
        found = iter(made)
        return ["null" if v is None else next(found) for v in values]
    if _ARROW_TYPES.get(kind) is kind_of_value and arrow_formats(schema, convert):
        try:
            array = pa.array(values, arrow_type(column.type))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return None  # e.g. a decimal with more digits than the column's scale: the converter rounds it
        return arrow_texts(array, column, schema, convert)
    return None


def _floats(values: list[float]) -> list[str] | None:
    return list(map(float.__repr__, values)) if all(map(math.isfinite, values)) else None


def _base64(values: list[bytes]) -> list[str]:
    return ['"' + base64.b64encode(v).decode() + '"' for v in values]


def _ints(values: list[int]) -> list[str]:
    return list(map(int.__repr__, values))


def _strings(values: list[str]) -> list[str]:
    return list(map(encode_basestring, values))


def _bools(values: list[bool]) -> list[str]:
    return ["true" if v else "false" for v in values]


_PYTHON: dict[tuple[str, type], Callable[[list[Any]], list[str] | None]] = {
    **{(k, int): _ints for k in ("int16", "int32", "int64")},
    ("bool", bool): _bools,
    **{(k, str): _strings for k in ("string", "uuid", "json")},
    **{(k, float): _floats for k in ("float32", "float64")},
    ("binary", bytes): _base64,
}
"""Per column kind and Python type, the texts of the converted values (the converters leave these as they are,
but ``float``'s NaN and ``bytes``' base64)."""


# ---------------------------------------------------------------- texts


def dump(value: Any) -> str:
    """``DUMPS(value)``, without the encoder's setup for the common scalars."""
    quick = _QUICK.get(type(value))
    return quick(value) if quick is not None else DUMPS(value)


_QUICK: dict[type, Callable[[Any], str]] = {
    str: encode_basestring, int: int.__repr__, _NONE: lambda v: "null", bool: lambda v: "true" if v else "false"}


def texts_of(values: list[Any]) -> list[str]:
    """``DUMPS`` of every value: one ``map`` when they are all integers or all text."""
    types = set(map(type, values))
    if types == {int}:
        return list(map(int.__repr__, values))
    if types == {str}:
        return list(map(encode_basestring, values))
    return list(map(dump, values))
