"""Avro schemas for change events, generated from copyjob's :class:`TableSchema`, and the way back.

The value schema is a Debezium-shaped envelope, one per table and schema version::

    record Envelope (namespace <topic>)
      before: null | Value          the row before the change (updates when known, deletes)
      after:  null | Value          the row after the change (snapshot rows, inserts, updates)
      op:     string                r (snapshot row), c, u, d
      source: copyjob.Source        connector, db, schema, table, snapshot, position (JSON), ts_ms
      ts_ms:  long                  when copyjob handled the event (epoch ms)

``Value`` has one nullable field per column (``["null", T]``, default null). Logical types: decimal(p,s) is
``bytes`` + ``decimal``; unconstrained decimals are strings; timestamptz is ``long`` + ``timestamp-micros`` (UTC);
a timestamp without time zone is ``long`` + ``local-timestamp-micros``; date ``int`` + ``date``; time ``long`` +
``time-micros``; uuid ``string`` + ``uuid``; json a string. Each field also carries ``copyjob.type`` (the logical
type), ``copyjob.column`` (the column name when it is not a valid Avro name) and, for a PostgreSQL stored generated
column, ``copyjob.generated`` (its expression; the apply side creates it generated), and the envelope carries
``copyjob.table`` and ``copyjob.primary_key``, so a consumer can rebuild the table schema from the message alone.

Single-object encoding (Avro specification): ``C3 01`` + an 8-byte little-endian CRC-64-AVRO fingerprint, then
the Avro binary datum. The fingerprint is taken over the whole schema text (:func:`fingerprint`), not over its
Parsing Canonical Form: that form drops the ``copyjob.*`` attributes, so two versions that differ only there (a
column that became NOT NULL, a new primary key) would share one key in the compacted schema topic and readers
would lose the difference. Topics written before keep their canonical-form keys and stay readable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from copyjob.core.schema import Column, LogicalType, TableName, TableSchema, parse_logical

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EMPTY64 = 0xC15D213AA4D7A795


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp & 0xFFFFFFFFFFFFFFFF)
    return table


_FP_TABLE = _fp_table()


def crc64_avro(data: bytes) -> int:
    """The Avro specification's 64-bit Rabin fingerprint (CRC-64-AVRO)."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


def canonical_form(schema: Mapping[str, Any] | str) -> str:
    from fastavro.schema import parse_schema, to_parsing_canonical_form

    parsed = json.loads(schema) if isinstance(schema, str) else dict(schema)
    return str(to_parsing_canonical_form(parse_schema(parsed, _write_hint=False)))


def full_text(schema: Mapping[str, Any] | str) -> str:
    """The schema's JSON with its keys sorted and no spaces: every attribute kept, formatting ignored."""
    parsed = json.loads(schema) if isinstance(schema, str) else schema
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(schema: Mapping[str, Any] | str) -> int:
    """CRC-64-AVRO of the whole schema (:func:`full_text`): what names a schema in the schema topic and in a
    single-object message."""
    return crc64_avro(full_text(schema).encode())


def canonical_fingerprint(schema: Mapping[str, Any] | str) -> int:
    """CRC-64-AVRO of the schema's Parsing Canonical Form: the Avro specification's fingerprint, which copyjob
    used before (the keys of older schema topics)."""
    return crc64_avro(canonical_form(schema).encode())


def single_object_header(fp: int) -> bytes:
    return SINGLE_OBJECT_MAGIC + fp.to_bytes(8, "little")


def avro_name(text: str) -> str:
    """A valid Avro name for ``text`` (invalid characters become ``_``)."""
    if _NAME.match(text):
        return text
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if name and not name[0].isdigit() else "_" + name


def avro_namespace(topic: str) -> str:
    return ".".join(avro_name(part) for part in topic.split(".") if part)


def avro_type(t: LogicalType) -> Any:
    k = t.kind
    if k == "decimal":
        if t.precision is None:
            return "string"
        return {"type": "bytes", "logicalType": "decimal", "precision": t.precision, "scale": t.scale or 0}
    simple: dict[str, Any] = {
        "int16": "int", "int32": "int", "int64": "long", "float32": "float", "float64": "double",
        "bool": "boolean", "string": "string", "binary": "bytes",
        "json": {"type": "string", "connect.name": "io.debezium.data.Json"},
        "uuid": {"type": "string", "logicalType": "uuid"},
        "date": {"type": "int", "logicalType": "date"},
        "time": {"type": "long", "logicalType": "time-micros"},
        "timestamp": {"type": "long", "logicalType": "local-timestamp-micros"},
        "timestamptz": {"type": "long", "logicalType": "timestamp-micros"},
    }
    return simple[k]


def _fields(columns: tuple[Column, ...]) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = []
    seen: set[str] = set()
    for c in columns:
        name = avro_name(c.name)
        while name in seen:
            name += "_"
        seen.add(name)
        field: dict[str, Any] = {"name": name, "type": ["null", avro_type(c.type)], "default": None,
                                 "copyjob.type": str(c.type)}
        if name != c.name:
            field["copyjob.column"] = c.name
        if not c.nullable:
            field["copyjob.nullable"] = False
        if c.generated:  # the apply side creates it generated (core.schema.Column.generated)
            field["copyjob.generated"] = c.generated
        fields.append(field)
    return fields


SOURCE_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "Source", "namespace": "copyjob",
    "fields": [
        {"name": "connector", "type": "string"},
        {"name": "db", "type": "string"},
        {"name": "schema", "type": ["null", "string"], "default": None},
        {"name": "table", "type": "string"},
        {"name": "snapshot", "type": "string"},
        {"name": "position", "type": "string"},
        {"name": "ts_ms", "type": "long"},
    ],
}


def envelope_schema(topic: str, schema: TableSchema) -> dict[str, Any]:
    """The value schema of ``topic`` for this version of the table."""
    value = {"type": "record", "name": "Value", "fields": _fields(schema.columns)}
    return {
        "type": "record", "name": "Envelope", "namespace": avro_namespace(topic),
        "fields": [
            {"name": "before", "type": ["null", value], "default": None},
            {"name": "after", "type": ["null", "Value"], "default": None},
            {"name": "op", "type": "string"},
            {"name": "source", "type": SOURCE_SCHEMA},
            {"name": "ts_ms", "type": "long"},
        ],
        "copyjob.table": str(schema.table),
        "copyjob.primary_key": list(schema.primary_key),
    }


def key_schema(topic: str, schema: TableSchema, key: tuple[str, ...]) -> dict[str, Any]:
    """The message key schema: the key columns."""
    columns = tuple(c for k in key for c in schema.columns if c.name == k)
    return {"type": "record", "name": "Key", "namespace": avro_namespace(topic), "fields": _fields(columns)}


def table_schema(avro: Mapping[str, Any]) -> TableSchema:
    """The copyjob table schema an envelope (or key) schema was generated from."""
    record = avro
    if avro.get("name") == "Envelope":
        before = next(f for f in avro["fields"] if f["name"] == "before")
        record = next(t for t in before["type"] if isinstance(t, Mapping))
    columns = tuple(
        Column(name=f.get("copyjob.column", f["name"]), type=parse_logical(f.get("copyjob.type", "string")),
               nullable=f.get("copyjob.nullable", True), generated=f.get("copyjob.generated"))
        for f in record["fields"])
    table = TableName.parse(str(avro.get("copyjob.table", avro.get("namespace", "table"))))
    return TableSchema(table=table, columns=columns, primary_key=tuple(avro.get("copyjob.primary_key", ())))


@lru_cache(maxsize=256)
def parsed(schema_json: str) -> Any:
    """fastavro's parsed form of a schema (cached by its text)."""
    from fastavro import parse_schema

    return parse_schema(json.loads(schema_json), _write_hint=False)


def column_names(avro: Mapping[str, Any]) -> dict[str, str]:
    """Avro field name → column name, for the fields whose names differ."""
    record = table_record(avro)
    return {f["name"]: f["copyjob.column"] for f in record["fields"] if "copyjob.column" in f}


def table_record(avro: Mapping[str, Any]) -> Mapping[str, Any]:
    if avro.get("name") != "Envelope":
        return avro
    before = next(f for f in avro["fields"] if f["name"] == "before")
    record: Mapping[str, Any] = next(t for t in before["type"] if isinstance(t, Mapping))
    return record
