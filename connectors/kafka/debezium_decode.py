"""Decoding Kafka Connect JSON change events (Debezium's connectors, or copyjob's ``format: debezium``) into
copyjob's change events.

A message is the Connect JSON of ``org.apache.kafka.connect.json.JsonConverter``: with ``schemas.enable``
``{"schema": …, "payload": {before, after, source, op, ts_ms}}``, without it the payload alone; keys the same
way. Column types come from the inline Connect schema: the literal type (``int32``, ``bytes``, …) and the
semantic type in its ``name`` (Debezium's defaults: ``org.apache.kafka.connect.data.Decimal`` is the base64
of the big-endian two's complement unscaled value with the scale as a parameter,
``io.debezium.time.MicroTimestamp`` microseconds since the epoch, ``io.debezium.time.ZonedTimestamp`` ISO
text, …: see :data:`SEMANTIC`). Without schemas the types come from the destination table (``reflect``),
read as Debezium's defaults write them (``time.precision.mode: adaptive`` for microsecond columns,
``decimal.handling.mode: precise``).

Debezium's placeholder for a value it did not read (``__debezium_unavailable_value``, its UTF-8 bytes for a
binary column: PostgreSQL's unchanged TOASTed values) becomes :data:`copyjob.core.changes.UNCHANGED_TOAST`,
so apply keeps the destination's value. ``source.snapshot`` ``true``/``first``/``last``/``incremental``
(and the per-collection forms) marks a snapshot row. The key columns are the fields of the message key.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from copyjob.apply.changes import APPEND_COLUMNS
from copyjob.connectors.kafka.codec import DecodedMessage

from copyjob.core.changes import UNCHANGED_TOAST
from copyjob.core.errors import ConnectorError, TableNotFound
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema

__all__ = ["SEMANTIC", "UNAVAILABLE", "DebeziumDecoder", "SchemaUnknown", "column_of", "unwrap"]

UNAVAILABLE = "__debezium_unavailable_value"
"""Debezium's ``unavailable.value.placeholder`` (its default)."""
_UNAVAILABLE_BYTES = base64.b64encode(UNAVAILABLE.encode()).decode()
"""The same placeholder in a ``bytes`` field (its UTF-8 bytes, base64 in JSON)."""
SNAPSHOT_MARKS = frozenset({"true", "first", "last", "incremental", "first_in_data_collection",
                            "last_in_data_collection"})
_POSITION_FIELDS = ("lsn", "txId", "sequence", "file", "pos", "row", "gtid", "server_id", "commit_lsn",
                    "change_lsn", "event_serial_no", "scn")
_CHANGE_COLUMNS = frozenset(c.name for c in APPEND_COLUMNS)
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DAY = dt.date(1970, 1, 1)
_FRACTION = re.compile(r"(\.\d{6})\d+")

Convert = Callable[[Any], Any]


class SchemaUnknown(TableNotFound):
    """A message without an inline schema for a destination table that does not exist: copyjob cannot tell
    the column types. Retriable: once the table is created the same messages apply."""

    retriable = True


# ---------------------------------------------------------------- values


def _days(v: Any) -> Any:
    try:
        return _EPOCH_DAY + dt.timedelta(days=v)
    except OverflowError:
        return int(v)  # beyond Python's dates: Arrow takes the days (copyjob.core.temporal)


def _time_of(micros: int) -> Any:
    if not 0 <= micros < 86_400_000_000:
        return int(micros)  # 24:00:00: Arrow takes the microseconds
    seconds, us = divmod(micros, 1_000_000)
    return dt.time(seconds // 3600, seconds // 60 % 60, seconds % 60, us)


def _timestamp_of(micros: int) -> Any:
    try:
        return _EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:
        return int(micros)


def _scaled(unit: int, to: Callable[[int], Any]) -> Convert:
    """Integers in ``unit`` per second (1000: ms, 10**6: µs, 10**9: ns) to a value of microseconds."""
    if unit == 10**6:
        return lambda v: to(int(v))
    if unit < 10**6:
        return lambda v: to(int(v) * (10**6 // unit))
    return lambda v: to(int(v) // (unit // 10**6))


def _zoned_timestamp(v: Any) -> Any:
    text = _FRACTION.sub(r"\1", str(v))  # nanoseconds: Python keeps microseconds
    value = dt.datetime.fromisoformat(text)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _iso_timestamp(v: Any) -> Any:
    return dt.datetime.fromisoformat(_FRACTION.sub(r"\1", str(v).removesuffix("Z")))


def _iso_time(v: Any) -> Any:
    return dt.time.fromisoformat(_FRACTION.sub(r"\1", str(v).removesuffix("Z")))


def _unscaled(v: Any, scale: int) -> decimal.Decimal:
    if isinstance(v, int | float):  # decimal.handling.mode double, or a number written by hand
        return decimal.Decimal(str(v))
    raw = base64.b64decode(v)
    return decimal.Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale)


def _variable_decimal(v: Any) -> Any:
    if isinstance(v, Mapping):
        return str(_unscaled(v["value"], int(v.get("scale") or 0)))
    return str(v)


def _base64(v: Any) -> bytes:
    return base64.b64decode(v)


def _json_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def _floats(v: Any) -> Any:
    if isinstance(v, str):  # Connect writes NaN and infinities as these texts
        return float(v)
    return v


@dataclass(frozen=True)
class _Field:
    type: LogicalType
    convert: Convert | None


def _decimal_field(params: Mapping[str, Any]) -> _Field:
    scale = int(params.get("scale") or 0)
    precision = params.get("connect.decimal.precision")
    if precision is None:  # an unconstrained numeric: carried as text, as copyjob does
        return _Field(LogicalType("decimal"), lambda v: str(_unscaled(v, scale)))
    return _Field(LogicalType("decimal", precision=int(precision), scale=scale), lambda v: _unscaled(v, scale))


SEMANTIC: dict[str, Callable[[Mapping[str, Any]], _Field]] = {
    "org.apache.kafka.connect.data.Decimal": _decimal_field,
    "io.debezium.data.VariableScaleDecimal": lambda p: _Field(LogicalType("decimal"), _variable_decimal),
    "org.apache.kafka.connect.data.Date": lambda p: _Field(LogicalType("date"), _days),
    "io.debezium.time.Date": lambda p: _Field(LogicalType("date"), _days),
    "org.apache.kafka.connect.data.Time": lambda p: _Field(LogicalType("time"), _scaled(1000, _time_of)),
    "io.debezium.time.Time": lambda p: _Field(LogicalType("time"), _scaled(1000, _time_of)),
    "io.debezium.time.MicroTime": lambda p: _Field(LogicalType("time"), _scaled(10**6, _time_of)),
    "io.debezium.time.NanoTime": lambda p: _Field(LogicalType("time"), _scaled(10**9, _time_of)),
    "org.apache.kafka.connect.data.Timestamp": lambda p: _Field(LogicalType("timestamp"),
                                                                _scaled(1000, _timestamp_of)),
    "io.debezium.time.Timestamp": lambda p: _Field(LogicalType("timestamp"), _scaled(1000, _timestamp_of)),
    "io.debezium.time.MicroTimestamp": lambda p: _Field(LogicalType("timestamp"), _scaled(10**6, _timestamp_of)),
    "io.debezium.time.NanoTimestamp": lambda p: _Field(LogicalType("timestamp"), _scaled(10**9, _timestamp_of)),
    "io.debezium.time.ZonedTimestamp": lambda p: _Field(LogicalType("timestamptz"), _zoned_timestamp),
    "io.debezium.time.ZonedTime": lambda p: _Field(LogicalType("string"), None),  # copyjob has no time with zone
    "io.debezium.time.IsoDate": lambda p: _Field(LogicalType("date"), lambda v: dt.date.fromisoformat(v[:10])),
    "io.debezium.time.IsoTime": lambda p: _Field(LogicalType("time"), _iso_time),
    "io.debezium.time.IsoTimestamp": lambda p: _Field(LogicalType("timestamp"), _iso_timestamp),
    "io.debezium.data.Uuid": lambda p: _Field(LogicalType("uuid"), None),
    "io.debezium.data.Json": lambda p: _Field(LogicalType("json"), None),
    "io.debezium.data.Bits": lambda p: _Field(LogicalType("binary"), _base64),
}
"""Connect's and Debezium's semantic types (the field schema's ``name``) → copyjob's type and value reader."""

_LITERAL: dict[str, _Field] = {
    "int8": _Field(LogicalType("int16"), None),
    "int16": _Field(LogicalType("int16"), None),
    "int32": _Field(LogicalType("int32"), None),
    "int64": _Field(LogicalType("int64"), None),
    "float32": _Field(LogicalType("float32"), _floats),
    "float": _Field(LogicalType("float32"), _floats),
    "float64": _Field(LogicalType("float64"), _floats),
    "double": _Field(LogicalType("float64"), _floats),
    "boolean": _Field(LogicalType("bool"), None),
    "string": _Field(LogicalType("string"), None),
    "bytes": _Field(LogicalType("binary"), _base64),
    # arrays, maps and structs (PostgreSQL arrays, geometries) land as JSON text
    "array": _Field(LogicalType("json"), _json_text),
    "map": _Field(LogicalType("json"), _json_text),
    "struct": _Field(LogicalType("json"), _json_text),
}


def _field_of(schema: Mapping[str, Any]) -> _Field:
    semantic = SEMANTIC.get(schema.get("name") or "")
    if semantic is not None:
        return semantic(schema.get("parameters") or {})
    found = _LITERAL.get(schema.get("type") or "")
    if found is None:
        raise ConnectorError(f"field {schema.get('field')!r}: unknown Connect type {schema.get('type')!r}")
    return found


def column_of(schema: Mapping[str, Any]) -> Column:
    """The copyjob column of a Connect field schema (``{"type", "optional", "name"?, "parameters"?, "field"}``)."""
    native = schema.get("name") or schema.get("type") or ""
    return Column(str(schema["field"]), _field_of(schema).type, nullable=bool(schema.get("optional", True)),
                  native_type=native)


def _reader_of_type(t: LogicalType) -> Convert | None:
    """How a value written without a schema is read, by the destination column's type (Debezium's defaults)."""
    kind = t.kind
    if kind == "decimal":
        scale = t.scale or 0

        def read_decimal(v: Any) -> Any:
            if isinstance(v, int | float) or (isinstance(v, str) and ("." in v or v.startswith("-"))):
                value = decimal.Decimal(str(v))  # decimal.handling.mode string or double (never base64)
            else:
                value = _unscaled(v, scale)
            return value if t.precision is not None else str(value)

        return read_decimal
    if kind == "date":
        return lambda v: dt.date.fromisoformat(v[:10]) if isinstance(v, str) else _days(v)
    if kind == "time":
        micro = _scaled(10**6, _time_of)
        return lambda v: _iso_time(v) if isinstance(v, str) else micro(v)
    if kind == "timestamp":
        micro = _scaled(10**6, _timestamp_of)
        return lambda v: _iso_timestamp(v) if isinstance(v, str) else micro(v)
    if kind == "timestamptz":
        return _zoned_timestamp
    if kind == "binary":
        return _base64
    if kind in ("float32", "float64"):
        return _floats
    if kind == "json":
        return _json_text
    return None


# ---------------------------------------------------------------- messages


def unwrap(doc: Any) -> Any:
    """The payload of a Connect JSON document with schemas enabled (``{"schema", "payload"}``), else ``doc``."""
    if isinstance(doc, dict) and len(doc) == 2 and "schema" in doc and "payload" in doc:
        return doc["payload"]
    return doc


@dataclass(frozen=True)
class _Shape:
    schema: TableSchema
    readers: dict[str, Convert]
    binary: frozenset[str]


def _no_destination() -> TableSchema | None:
    return None


class DebeziumDecoder:
    """Decodes one topic's Connect JSON messages for the table ``table``.

    For messages without an inline schema the destination table's schema is asked of ``reflect`` (set by
    :meth:`attach`; destination column names, mapped back through ``rename``: source → destination), once,
    when the first such message arrives."""

    def __init__(self, table: TableName, topic: str = "", rename: Mapping[str, str] | None = None,
                 reflect: Callable[[], TableSchema | None] = _no_destination) -> None:
        self.table = table
        self.topic = topic
        self._reflect = reflect
        self._source_names = {v: k for k, v in (rename or {}).items()}
        self._shapes: dict[tuple[str, tuple[str, ...]], _Shape] = {}
        self._by_text: dict[tuple[bytes, tuple[str, ...]], _Shape] = {}
        self._reflected: TableSchema | None = None

    def decode(self, value: bytes | None, key: bytes | None = None,
               headers: Sequence[tuple[str, bytes | None]] | None = None) -> DecodedMessage:
        key_fields = self._key(key)
        if value is None:
            return DecodedMessage(op=None, before=None, after=None, source={}, ts_ms=None, key=key_fields)
        pk = tuple(key_fields) if key_fields else ()
        payload, shape = self._parse(value, pk)
        source = dict(payload.get("source") or {})
        snapshot = str(source.get("snapshot", "false")).lower() in SNAPSHOT_MARKS
        if "position" not in source:
            source["position"] = json.dumps({k: source[k] for k in _POSITION_FIELDS if source.get(k) is not None},
                                            sort_keys=True, default=str)
        source["snapshot"] = "true" if snapshot else "false"  # as copyjob's DecodedMessage.to_event reads it
        op = str(payload["op"])
        return DecodedMessage(op="r" if snapshot and op == "c" else op,
                              before=self._row(shape, payload.get("before"), unchanged=False),
                              after=self._row(shape, payload.get("after"), unchanged=True), source=source,
                              ts_ms=payload.get("ts_ms"), key=key_fields, schema=shape.schema)

    def attach(self, reflect: Callable[[], TableSchema | None]) -> None:
        """Where the destination table's schema is read (the apply side's writer thread owns the connection)."""
        self._reflect = reflect
        self._reflected = None
        self._shapes.clear()
        self._by_text.clear()

    # ------------------------------------------------------------ internals

    @staticmethod
    def _key(key: bytes | None) -> dict[str, Any] | None:
        if not key:
            return None
        try:
            found = unwrap(json.loads(key))
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    def _parse(self, value: bytes, pk: tuple[str, ...]) -> tuple[dict[str, Any], _Shape]:
        """The payload and the shape of its rows. JsonConverter's compact layout is split at its payload: the
        schema (the same text for every message of a version) is parsed once, not per message."""
        split = _split(value)
        if split is not None:
            schema_text, payload = split
            found = self._by_text.get((schema_text, pk))
            if found is None:
                found = self._by_text[(schema_text, pk)] = self._shape(json.loads(schema_text), pk)
            return _change_event(payload, value), found
        try:
            doc = json.loads(value)
        except ValueError as exc:
            raise ConnectorError(f"not Kafka Connect JSON: {value[:40]!r}") from exc
        if not isinstance(doc, dict):
            raise ConnectorError(f"not a Debezium change event: {value[:40]!r}")
        envelope = doc.get("schema") if "payload" in doc and "schema" in doc else None
        return _change_event(unwrap(doc), value), self._shape(envelope, pk)

    def _shape(self, envelope: Mapping[str, Any] | None, pk: tuple[str, ...]) -> _Shape:
        row_schema = _row_schema(envelope) if envelope is not None else None
        cache_key = (json.dumps(row_schema, sort_keys=True) if row_schema is not None else "", pk)
        found = self._shapes.get(cache_key)
        if found is None:
            found = self._shapes[cache_key] = (self._from_schema(row_schema, pk) if row_schema is not None
                                               else self._from_destination(pk))
        return found

    def _from_schema(self, row_schema: Mapping[str, Any], pk: tuple[str, ...]) -> _Shape:
        fields = row_schema.get("fields") or []
        columns = tuple(column_of(f) for f in fields)
        readers = {str(f["field"]): r for f in fields if (r := _field_of(f).convert) is not None}
        binary = frozenset(str(f["field"]) for f in fields if f.get("type") == "bytes")
        names = {c.name for c in columns}
        return _Shape(TableSchema(self.table, columns, tuple(k for k in pk if k in names)), readers, binary)

    def _from_destination(self, pk: tuple[str, ...]) -> _Shape:
        if self._reflected is None:
            self._reflected = self._reflect()
        reflected = self._reflected
        if reflected is None:
            raise SchemaUnknown(f"topic {self.topic or self.table}: its messages carry no schema (JsonConverter "
                                f"schemas.enable=false) and the destination table {self.table} does not exist: "
                                "create it with the columns' types first, or publish with schemas enabled")
        names = self._source_names
        columns = tuple(replace(c, name=names.get(c.name, c.name)) for c in reflected.columns
                        if c.name not in _CHANGE_COLUMNS)  # an append table's own columns are not the source's
        schema = TableSchema(self.table, columns, tuple(names.get(k, k) for k in reflected.primary_key))
        readers = {c.name: r for c in schema.columns if (r := _reader_of_type(c.type)) is not None}
        binary = frozenset(c.name for c in schema.columns if c.type.kind == "binary")
        key = tuple(k for k in pk if schema.column(k) is not None) or schema.primary_key
        return _Shape(TableSchema(self.table, schema.columns, key), readers, binary)

    @staticmethod
    def _row(shape: _Shape, row: Any, *, unchanged: bool) -> dict[str, Any] | None:
        if row is None:
            return None
        readers = shape.readers
        out: dict[str, Any] = {}
        for name, v in row.items():
            if v is None:
                out[name] = None
            elif v == UNAVAILABLE or (v == _UNAVAILABLE_BYTES and name in shape.binary):
                out[name] = UNCHANGED_TOAST if unchanged else None
            else:
                reader = readers.get(name)
                try:
                    out[name] = reader(v) if reader is not None else v
                except (ValueError, TypeError, ArithmeticError) as exc:
                    raise ConnectorError(f"column {name}: cannot read {str(v)[:60]!r}: {exc}") from exc
        return out


_SCHEMA_HEAD = b'{"schema":'
_PAYLOAD_SEP = b',"payload":'


def _split(value: bytes) -> tuple[bytes, Any] | None:
    """JsonConverter's compact ``{"schema":…,"payload":…}`` as the schema's raw text and the parsed payload;
    None for another layout (or when the cut was not the real one: the payload then does not parse)."""
    if not value.startswith(_SCHEMA_HEAD):
        return None
    cut = value.find(_PAYLOAD_SEP)
    body = value.rstrip()
    if cut < 0 or not body.endswith(b"}"):
        return None
    try:
        payload = json.loads(body[cut + len(_PAYLOAD_SEP):-1])
    except ValueError:
        return None
    return value[len(_SCHEMA_HEAD):cut], payload


def _change_event(payload: Any, value: bytes) -> dict[str, Any]:
    if not isinstance(payload, dict) or not payload.get("op"):
        raise ConnectorError(f"not a Debezium change event (no op): an unwrapped row (ExtractNewRecordState) or "
                             f"another kind of message: {value[:40]!r}")
    return payload


def _row_schema(envelope: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The row struct of an envelope schema: its ``after`` field (else ``before``)."""
    by_name = {f.get("field"): f for f in envelope.get("fields") or []}
    found = by_name.get("after") or by_name.get("before")
    return found if isinstance(found, Mapping) else None
