"""Decoding Kafka Connect JSON (Debezium's change events) into copyjob's change events, type by type, with and
without the schema/payload envelope. The messages are shaped as Debezium 3's PostgreSQL connector writes them
(the interop tests in tests/interop run the real connector)."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from typing import Any

import pytest
from copyjob.connectors.kafka.debezium_decode import UNAVAILABLE, DebeziumDecoder, SchemaUnknown, column_of

from copyjob.core.changes import UNCHANGED_TOAST
from copyjob.core.errors import ConnectorError, is_retriable
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema

TABLE = TableName("items", "public")


def field(name: str, type_: str, semantic: str | None = None, optional: bool = True,
          parameters: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "optional": optional, "field": name}
    if semantic:
        out["name"] = semantic
        out["version"] = 1
    if parameters:
        out["parameters"] = parameters
    return out


FIELDS = [
    field("id", "int32", optional=False),
    field("big", "int64"),
    field("small", "int16"),
    field("tiny", "int8"),
    field("name", "string"),
    field("amount", "bytes", "org.apache.kafka.connect.data.Decimal",
          parameters={"scale": "2", "connect.decimal.precision": "12"}),
    field("free", "struct", "io.debezium.data.VariableScaleDecimal"),
    field("at_tz", "string", "io.debezium.time.ZonedTimestamp"),
    field("at", "int64", "io.debezium.time.MicroTimestamp"),
    field("at_ms", "int64", "io.debezium.time.Timestamp"),
    field("at_ns", "int64", "io.debezium.time.NanoTimestamp"),
    field("day", "int32", "io.debezium.time.Date"),
    field("clock", "int64", "io.debezium.time.MicroTime"),
    field("clock_ms", "int32", "io.debezium.time.Time"),
    field("clock_ns", "int64", "io.debezium.time.NanoTime"),
    field("flag", "boolean"),
    field("ref", "string", "io.debezium.data.Uuid"),
    field("doc", "string", "io.debezium.data.Json"),
    field("blob", "bytes"),
    field("ratio", "double"),
    field("f32", "float"),
    field("tags", "array"),
]
ROW_STRUCT = {"type": "struct", "fields": FIELDS, "optional": True, "name": "dbz.public.items.Value"}
ENVELOPE_SCHEMA: dict[str, Any] = {"type": "struct", "name": "dbz.public.items.Envelope", "optional": False, "fields": [
    {**ROW_STRUCT, "field": "before"}, {**ROW_STRUCT, "field": "after"},
    {"type": "struct", "field": "source", "optional": False, "fields": []},
    {"type": "string", "field": "op", "optional": False}, {"type": "int64", "field": "ts_ms", "optional": True}]}
KEY_SCHEMA = {"type": "struct", "name": "dbz.public.items.Key", "optional": False,
              "fields": [field("id", "int32", optional=False)]}


def unscaled(value: str, scale: int) -> str:
    n = int(decimal.Decimal(value).scaleb(scale))
    return base64.b64encode(n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)).decode()


ROW = {
    "id": 1, "big": 9_000_000_000, "small": -3, "tiny": 7, "name": "Ann",
    "amount": unscaled("-1234.50", 2),
    "free": {"scale": 3, "value": unscaled("3.141", 3)},
    "at_tz": "2026-03-01T10:11:12.123456Z",
    "at": 1_772_359_872_123_456,  # 2026-03-01T10:11:12.123456
    "at_ms": 1_772_359_872_123,
    "at_ns": 1_772_359_872_123_456_789,
    "day": 20_513,  # 2026-03-01
    "clock": 37_872_123_456,  # 10:31:12.123456
    "clock_ms": 37_872_123,
    "clock_ns": 37_872_123_456_789,
    "flag": True,
    "ref": "0e6b7a2c-7c7e-4e4b-9a1d-3f0f1d2c3b4a",
    "doc": "{\"a\": [1, 2]}",
    "blob": base64.b64encode(b"\x00\xffraw").decode(),
    "ratio": 0.25, "f32": "NaN", "tags": [1, 2],
}
SOURCE = {"version": "3.6.1.Final", "connector": "postgresql", "name": "dbz", "ts_ms": 1_772_359_872_000,
          "snapshot": "false", "db": "shop", "schema": "public", "table": "items", "txId": 771, "lsn": 24023128,
          "sequence": "[null,\"24023128\"]", "ts_us": 1, "ts_ns": 1, "xmin": None}


def envelope(fields: list[dict[str, Any]]) -> dict[str, Any]:
    row = {**ROW_STRUCT, "fields": fields}
    return {**ENVELOPE_SCHEMA, "fields": [{**row, "field": "before"}, {**row, "field": "after"},
                                          *ENVELOPE_SCHEMA["fields"][2:]]}


def message(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, *, schemas: bool = True,
            snapshot: str = "false", schema: dict[str, Any] | None = None) -> bytes:
    payload = {"before": before, "after": after, "source": {**SOURCE, "snapshot": snapshot}, "op": op,
               "ts_ms": 1_772_359_872_500, "transaction": None}
    doc = {"schema": schema or ENVELOPE_SCHEMA, "payload": payload} if schemas else payload
    return json.dumps(doc).encode()


def key(id_: int, *, schemas: bool = True) -> bytes:
    return json.dumps({"schema": KEY_SCHEMA, "payload": {"id": id_}} if schemas else {"id": id_}).encode()


def no_destination() -> TableSchema | None:
    return None


def decoder(reflect: Any = no_destination) -> DebeziumDecoder:
    return DebeziumDecoder(TABLE, topic="dbz.public.items", reflect=reflect)


def test_every_type_with_the_inline_schema() -> None:
    msg = decoder().decode(message("c", None, ROW), key(1))
    after = msg.after
    assert after is not None
    assert after["id"] == 1 and after["big"] == 9_000_000_000 and after["small"] == -3 and after["tiny"] == 7
    assert after["name"] == "Ann"
    assert after["amount"] == decimal.Decimal("-1234.50")
    assert after["free"] == "3.141"
    assert after["at_tz"] == dt.datetime(2026, 3, 1, 10, 11, 12, 123456, tzinfo=dt.UTC)
    assert after["at"] == dt.datetime(2026, 3, 1, 10, 11, 12, 123456)
    assert after["at_ms"] == dt.datetime(2026, 3, 1, 10, 11, 12, 123000)
    assert after["at_ns"] == dt.datetime(2026, 3, 1, 10, 11, 12, 123456)
    assert after["day"] == dt.date(2026, 3, 1)
    assert after["clock"] == dt.time(10, 31, 12, 123456)
    assert after["clock_ms"] == dt.time(10, 31, 12, 123000)
    assert after["clock_ns"] == dt.time(10, 31, 12, 123456)
    assert after["flag"] is True
    assert after["ref"] == "0e6b7a2c-7c7e-4e4b-9a1d-3f0f1d2c3b4a"
    assert after["doc"] == "{\"a\": [1, 2]}"
    assert after["blob"] == b"\x00\xffraw"
    assert after["ratio"] == 0.25 and after["f32"] != after["f32"]  # NaN
    assert after["tags"] == "[1,2]"
    assert msg.before is None and msg.op == "c" and msg.key == {"id": 1}


def test_the_schema_carries_types_nullability_and_the_key_columns() -> None:
    schema = decoder().decode(message("c", None, ROW), key(1)).schema
    assert schema is not None
    types = {c.name: str(c.type) for c in schema.columns}
    assert types == {
        "id": "int32", "big": "int64", "small": "int16", "tiny": "int16", "name": "string",
        "amount": "decimal(12,2)", "free": "decimal", "at_tz": "timestamptz", "at": "timestamp",
        "at_ms": "timestamp", "at_ns": "timestamp", "day": "date", "clock": "time", "clock_ms": "time",
        "clock_ns": "time", "flag": "bool", "ref": "uuid", "doc": "json", "blob": "binary", "ratio": "float64",
        "f32": "float32", "tags": "json"}
    id_column, name_column = schema.column("id"), schema.column("name")
    assert id_column is not None and id_column.nullable is False
    assert name_column is not None and name_column.nullable is True
    assert schema.primary_key == ("id",) and schema.table == TABLE


def test_a_decimal_without_precision_is_carried_as_text() -> None:
    col = column_of(field("n", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "1"}))
    assert col.type == LogicalType("decimal")


def test_a_new_column_is_a_new_schema() -> None:
    d = decoder()
    first = d.decode(message("c", None, ROW), key(1)).schema
    wider = envelope([*FIELDS, field("added", "string")])
    second = d.decode(message("c", None, {**ROW, "added": "x"}, schema=wider), key(1)).schema
    assert first is not None and second is not None and first != second
    assert second.column("added") == Column("added", LogicalType("string"), True, "string")


def test_unavailable_values_keep_the_destinations_value() -> None:
    placeholder_bytes = base64.b64encode(UNAVAILABLE.encode()).decode()
    after = {**ROW, "doc": UNAVAILABLE, "blob": placeholder_bytes, "name": UNAVAILABLE}
    msg = decoder().decode(message("u", None, after), key(1))
    assert msg.after is not None
    assert msg.after["doc"] is UNCHANGED_TOAST and msg.after["blob"] is UNCHANGED_TOAST
    assert msg.after["name"] is UNCHANGED_TOAST
    after_event = msg.to_event().after
    assert after_event is not None and after_event["doc"] is UNCHANGED_TOAST


@pytest.mark.parametrize("mark", ["true", "first", "last", "incremental", "last_in_data_collection"])
def test_snapshot_marks_are_snapshot_rows(mark: str) -> None:
    event = decoder().decode(message("r", None, ROW, snapshot=mark), key(1)).to_event()
    assert event.snapshot is True and event.op == "r"


def test_streamed_changes_are_not_snapshot_rows_and_keep_their_position() -> None:
    event = decoder().decode(message("u", ROW, ROW), key(1)).to_event()
    assert event.snapshot is False and event.op == "u"
    assert event.position == {"lsn": 24023128, "sequence": "[null,\"24023128\"]", "txId": 771}
    assert event.ts_ms == 1_772_359_872_000


def test_deletes_and_tombstones() -> None:
    d = decoder()
    deleted = d.decode(message("d", {**{k: None for k in ROW}, "id": 5}, None), key(5))
    assert deleted.op == "d" and deleted.before == {**{k: None for k in ROW}, "id": 5} and deleted.after is None
    tombstone = d.decode(None, key(5))
    assert tombstone.op is None and tombstone.key == {"id": 5}


def test_without_schemas_types_come_from_the_destination_table() -> None:
    destination = TableSchema(TABLE, (
        Column("id", LogicalType("int32"), nullable=False), Column("amount", LogicalType("decimal", 12, 2)),
        Column("at_tz", LogicalType("timestamptz")), Column("at", LogicalType("timestamp")),
        Column("day", LogicalType("date")), Column("clock", LogicalType("time")),
        Column("blob", LogicalType("binary")), Column("doc", LogicalType("json")),
        Column("name", LogicalType("string"))), ("id",))
    asked = []

    def reflect() -> TableSchema:
        asked.append(1)
        return destination

    d = decoder(reflect)
    row = {k: ROW[k] for k in ("id", "amount", "at_tz", "at", "day", "clock", "blob", "doc", "name")}
    msg = d.decode(message("c", None, row, schemas=False), key(1, schemas=False))
    assert msg.after == {"id": 1, "amount": decimal.Decimal("-1234.50"),
                         "at_tz": dt.datetime(2026, 3, 1, 10, 11, 12, 123456, tzinfo=dt.UTC),
                         "at": dt.datetime(2026, 3, 1, 10, 11, 12, 123456), "day": dt.date(2026, 3, 1),
                         "clock": dt.time(10, 31, 12, 123456), "blob": b"\x00\xffraw", "doc": "{\"a\": [1, 2]}",
                         "name": "Ann"}
    assert msg.schema is not None and msg.schema.primary_key == ("id",)
    d.decode(message("u", None, row, schemas=False), key(1, schemas=False))
    assert len(asked) == 1  # reflected once
    # decimal.handling.mode string / double
    for written, read in (("12.50", decimal.Decimal("12.50")), (12.5, decimal.Decimal("12.5"))):
        image = d.decode(message("c", None, {**row, "amount": written}, schemas=False)).after
        assert image is not None and image["amount"] == read


def test_without_schemas_and_without_a_destination_table_is_an_error_naming_the_topic() -> None:
    with pytest.raises(SchemaUnknown, match=r"dbz\.public\.items") as caught:
        decoder().decode(message("c", None, ROW, schemas=False), key(1, schemas=False))
    assert is_retriable(caught.value)  # applies once the table is created; nothing is skipped


@pytest.mark.parametrize("value", [b"not json", b"[1]", json.dumps({"id": 1, "name": "unwrapped"}).encode()])
def test_what_is_not_a_change_event_is_a_connector_error(value: bytes) -> None:
    with pytest.raises(ConnectorError) as caught:
        decoder().decode(value)
    assert not is_retriable(caught.value)


def test_a_value_that_does_not_fit_its_type_names_the_column() -> None:
    with pytest.raises(ConnectorError, match="at_tz"):
        decoder().decode(message("c", None, {**ROW, "at_tz": "yesterday"}), key(1))


def compact(value: bytes) -> bytes:
    """The message as JsonConverter writes it: no spaces, schema first."""
    return json.dumps(json.loads(value), separators=(",", ":")).encode()


def test_the_compact_layout_decodes_the_same_and_parses_each_schema_once() -> None:
    d = decoder()
    plain = {**ROW, "f32": 1.5}  # NaN equals nothing
    tricky = {**plain, "name": 'a,"payload":{"op":"d"} b'}  # the separator inside a value
    for row in (plain, tricky):
        spaced = d.decode(message("u", None, row), key(1))
        dense = d.decode(compact(message("u", None, row)), key(1))
        assert dense == spaced
    assert len(d._by_text) == 1  # one schema version, parsed once
    with pytest.raises(ConnectorError, match="no op"):
        d.decode(compact(json.dumps({"schema": ENVELOPE_SCHEMA, "payload": {"id": 1}}).encode()))
