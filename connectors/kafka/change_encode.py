"""Change batches (copyjob.core.changes) into Kafka keys and values a whole batch at a time: the CDC publish path.

fastavro and ``json.dumps`` through a dict per event cost 20–40 µs an event. Here:

- ``avro``: each column of the ``before`` and ``after`` images (and of the key) is put in one Arrow array and
  encoded column-wise (:mod:`connectors.kafka.batch_encode`); the parts that vary per event (op, the source
  block's snapshot flag, position and ts_ms) are Arrow arrays too; each message is joined from its parts;
- ``json``: column by column too, as text (:mod:`connectors.kafka.change_json`);
- ``debezium``: column by column too (:mod:`connectors.kafka.debezium_changes`).

Inserts that come column-wise (:class:`~copyjob.core.changes.ColumnarInserts`, from a log reader that kept
them so) are encoded from their Arrow columns as they are, avro only (the other formats build the events).

The bytes are those of ``TableEncoder.encode_key`` / ``encode_value`` with the same ``ts_ms`` (checked on random
batches of every type and op by tests/connectors/test_kafka_change_encode.py). :func:`encode_changes` returns
None when a batch holds something this module does not do (a value Arrow does not take for its column type, a
position that is not a mapping of text keys): the caller then encodes event by event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from copyjob.connectors.kafka.arrow_bytes import I64, varints, zigzag
from copyjob.connectors.kafka.batch_encode import (
    NULL_BRANCH,
    VALUE_BRANCH,
    Unsupported,
    encode_columns,
    encode_field,
    join_rows,
)
from copyjob.connectors.kafka.change_json import json_changes

from copyjob.core.changes import OPS, UNCHANGED_TOAST, ChangeEvent, ColumnarInserts
from copyjob.core.schema import Column, arrow_type

if TYPE_CHECKING:
    from copyjob.connectors.kafka.codec import SourceInfo, TableEncoder

Encoded = tuple[list[bytes | None], list[bytes]]
_BINARY = pa.binary()
_EMPTY: Mapping[str, Any] = {}


def encode_changes(enc: TableEncoder, events: Sequence[ChangeEvent], source: SourceInfo, ts: int) -> Encoded | None:
    """Per event, its message key (None for a keyless table or an event without an image) and value; ``ts`` is
    the envelope's ``ts_ms`` (and the source's, for events without one). None: encode event by event."""
    if not events:
        return [], []
    if enc._debezium is not None:  # declines by itself (a value its converters refuse, transaction metadata)
        return enc._debezium.encode_changes(events, source, ts)
    try:
        if enc.format == "json":
            return json_changes(enc.key, events, source, ts)
        if enc.format == "avro":
            if isinstance(events, ColumnarInserts):
                return _avro_inserts(enc, events, source, ts)
            return _avro(enc, events, source, ts)
    except (Unsupported, pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    return None


def key_rows(events: Sequence[ChangeEvent]) -> list[Mapping[str, Any] | None]:
    """The image each event's key is taken from: ``after``, ``before`` for a delete, no values for a truncate."""
    return [_EMPTY if e.op == "t" else (e.before if e.op == "d" else e.after) for e in events]


# ---------------------------------------------------------------- avro


def _avro(enc: TableEncoder, events: Sequence[ChangeEvent], source: SourceInfo, ts: int) -> Encoded:
    columns = enc.schema.columns
    before = _avro_image([e.before for e in events], columns)
    after = _avro_image([e.after for e in events], columns)
    middle = _avro_op_and_source(source)
    heads = pa.array([middle[(e.op, e.snapshot or e.op == "r")] for e in events], _BINARY)
    values = _avro_values(enc, before, after, heads, position_texts([e.position for e in events]),
                          [e.ts_ms for e in events], ts)
    if not enc.key:
        return [None] * len(events), values
    key_columns = [c for k in enc.key for c in columns if c.name == k]  # as avro.key_schema
    rows = key_rows(events)
    filled = [r if r is not None else _EMPTY for r in rows]
    fields = [encode_field(pa.array([r.get(c.name) for r in filled], arrow_type(c.type)), c.type)
              for c in key_columns]
    joined = join_rows(fields, enc.key_prefix).to_pylist()
    keys: list[bytes | None] = [None if r is None else k for r, k in zip(rows, joined, strict=True)]
    return keys, values


def _avro_inserts(enc: TableEncoder, run: ColumnarInserts, source: SourceInfo, ts: int) -> Encoded:
    """:func:`_avro` of inserts held column-wise: the ``after`` fields straight from the Arrow columns, and the
    key from the same encoded fields."""
    columns = enc.schema.columns
    fields = encode_columns(run.rows, columns)
    if fields is None:
        raise Unsupported("a column Arrow does not encode")
    head = pa.scalar(_avro_op_and_source(source)[("c", False)], _BINARY)
    values = _avro_values(enc, pa.scalar(NULL_BRANCH, _BINARY), join_rows(fields, VALUE_BRANCH), head,
                          position_column_texts(run.positions, len(run)), run.ts_ms, ts)
    if not enc.key:
        return [None] * len(run), values
    index = {c.name: i for i, c in enumerate(columns)}
    key_fields = [fields[index[k]] for k in enc.key if k in index]  # as avro.key_schema
    keys: list[bytes | None] = join_rows(key_fields, enc.key_prefix).to_pylist()
    return keys, values


def _avro_values(enc: TableEncoder, before: pa.Array | pa.Scalar, after: pa.Array | pa.Scalar,
                 heads: pa.Array | pa.Scalar, positions: pa.StringArray, source_ts_ms: Sequence[int],
                 ts: int) -> list[bytes]:
    """Each envelope from its encoded parts: the images, op and source block up to the position (``heads``),
    the position text, the source's ``ts_ms`` (``ts`` where it has none), then the envelope's ``ts_ms``."""
    position_bytes = pc.cast(positions, _BINARY)
    source_ts = pa.array(source_ts_ms, I64)
    source_ts = pc.fill_null(pc.if_else(pc.equal(source_ts, 0), pa.scalar(ts, I64), source_ts), ts)
    parts = [before, after, heads, varints(zigzag(pc.cast(pc.binary_length(position_bytes), I64))), position_bytes,
             varints(zigzag(source_ts))]
    values: list[bytes] = join_rows(parts, enc.value_prefix, _avro_long(ts)).to_pylist()
    return values


def _avro_image(rows: list[Mapping[str, Any] | None], columns: Sequence[Column]) -> pa.Array | pa.Scalar:
    """Per event, the ``["null", Value]`` encoding of one image (a column missing from it is null, as fastavro
    writes the field's default; a TOASTed value left unchanged is null)."""
    present = [r is not None for r in rows]
    if not any(present):
        return pa.scalar(NULL_BRANCH, _BINARY)
    filled = [r if r is not None else _EMPTY for r in rows]
    fields = []
    for c in columns:
        name = c.name
        values = [r.get(name) for r in filled]
        if UNCHANGED_TOAST in values:
            values = [None if v is UNCHANGED_TOAST else v for v in values]
        fields.append(encode_field(pa.array(values, arrow_type(c.type)), c.type))
    record = join_rows(fields, VALUE_BRANCH)
    if all(present):
        return record
    return pc.if_else(pa.array(present), record, pa.scalar(NULL_BRANCH, _BINARY))


def _avro_op_and_source(source: SourceInfo) -> dict[tuple[str, bool], bytes]:
    """op, then the source block up to its position, for every op and snapshot flag."""
    fixed = (_avro_string(source.connector) + _avro_string(source.db)
             + (NULL_BRANCH if source.schema is None else VALUE_BRANCH + _avro_string(source.schema))
             + _avro_string(source.table))
    return {(op, snap): _avro_string(op) + fixed + _avro_string("true" if snap else "false")
            for op in OPS for snap in (False, True)}


def _avro_string(text: str) -> bytes:
    data = text.encode()
    return _avro_long(len(data)) + data


def _avro_long(n: int) -> bytes:
    zz = (n << 1) ^ (n >> 63)
    out = bytearray()
    while zz >= 0x80:
        out.append((zz & 0x7F) | 0x80)
        zz >>= 7
    out.append(zz)
    return bytes(out)


# ---------------------------------------------------------------- positions


def position_texts(positions: Sequence[Mapping[str, Any]]) -> pa.StringArray:
    """``json.dumps(dict(p), sort_keys=True, default=str)`` of every position: column-wise when all share
    their keys (an LSN and a sequence number), else one by one."""
    first = positions[0]
    if all(isinstance(k, str) for k in first) and set(map(len, positions)) == {len(first)}:
        try:  # same size and every key of the first: the same keys
            return position_column_texts({name: [p[name] for p in positions] for name in first}, len(positions))
        except KeyError:
            pass
    return pa.array([json.dumps(dict(p), sort_keys=True, default=str) for p in positions], pa.string())


def position_column_texts(columns: Mapping[str, Sequence[Any]], n: int) -> pa.StringArray:
    """:func:`position_texts` of ``n`` positions given as one column of values per (text) key."""
    names = sorted(columns)
    if not names:
        return pa.array(["{}"] * n, pa.string())
    parts: list[pa.Array | pa.Scalar] = [pa.scalar("{", pa.string())]
    for i, name in enumerate(names):
        parts.append(pa.scalar(("" if i == 0 else ", ") + json.dumps(name) + ": ", pa.string()))
        parts.append(_json_texts(columns[name]))
    parts.append(pa.scalar("}", pa.string()))
    joined: pa.StringArray = pc.binary_join_element_wise(*parts, pa.scalar("", pa.string()))
    return joined


def _json_texts(values: Sequence[Any]) -> pa.Array:
    if set(map(type, values)) == {int}:
        try:
            return pc.cast(pa.array(values, I64), pa.string())
        except (pa.ArrowException, OverflowError):
            pass
    return pa.array([json.dumps(v, sort_keys=True, default=str) for v in values], pa.string())
