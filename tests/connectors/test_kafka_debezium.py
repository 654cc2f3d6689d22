"""``kafka.format: debezium``: every logical type's Connect schema and payload value, the envelope, keys, the
source blocks, snapshot markers and transaction metadata. The expected schemas and values are what Debezium
3.6.1's PostgreSQL connector wrote for the same column types and values (JsonConverter, schemas.enable=true);
tests/interop/test_debezium_side_by_side.py compares with the running connector itself."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from typing import Any

import pyarrow as pa
import pytest
from copyjob.connectors.kafka.codec import Encoder, SourceInfo, TableEncoder
from copyjob.connectors.kafka.debezium import DebeziumOptions
from copyjob.connectors.kafka.debezium_transactions import Transactions, transaction_id
from copyjob.connectors.kafka.debezium_types import unscaled_bytes

from copyjob.core.changes import UNCHANGED_TOAST, ChangeEvent
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema

PG = SourceInfo(connector="postgresql", db="shop", schema="public", table="t")
MY = SourceInfo(connector="mysql", db="shop", schema="shop", table="t")


def encoder(columns: list[Column], key: tuple[str, ...] = ("id",), **options: Any) -> TableEncoder:
    schema = TableSchema(TableName("t", "public"), (Column("id", LogicalType("int32"), nullable=False), *columns),
                         key)
    opts = DebeziumOptions(name="shop", **options)
    return Encoder("debezium", None, opts).for_table("shop.public.t", schema, key)


def one(column: Column, value: Any, **options: Any) -> tuple[dict[str, Any], Any]:
    """The Connect field of ``column`` and the payload value of ``value`` in an insert's ``after``."""
    enc = encoder([column], **options)
    doc = json.loads(enc.encode_value(ChangeEvent("c", None, {"id": 1, column.name: value}, {"lsn": 7, "seq": 0},
                                                  1000), PG))
    after = next(f for f in doc["schema"]["fields"] if f["field"] == "after")
    return after["fields"][1], doc["payload"]["after"][column.name]


CASES = [
    (Column("small", LogicalType("int16")), 3, {"type": "int16", "optional": True, "field": "small"}, 3),
    (Column("i", LogicalType("int32"), nullable=False), -7, {"type": "int32", "optional": False, "field": "i"}, -7),
    (Column("big", LogicalType("int64")), 10_000_000_000, {"type": "int64", "optional": True, "field": "big"},
     10_000_000_000),
    (Column("f4", LogicalType("float32")), 1.5, {"type": "float", "optional": True, "field": "f4"}, 1.5),
    (Column("f8", LogicalType("float64")), 2.25, {"type": "double", "optional": True, "field": "f8"}, 2.25),
    (Column("f", LogicalType("float64")), float("nan"), {"type": "double", "optional": True, "field": "f"}, "NaN"),
    (Column("b", LogicalType("bool")), True, {"type": "boolean", "optional": True, "field": "b"}, True),
    (Column("txt", LogicalType("string")), "a", {"type": "string", "optional": True, "field": "txt"}, "a"),
    (Column("vc", LogicalType("string", length=20), native_type="character varying(20)"), "v",
     {"type": "string", "optional": True, "field": "vc"}, "v"),
    (Column("amount", LogicalType("decimal", 12, 2), native_type="numeric(12,2)"), decimal.Decimal("12.50"),
     {"type": "bytes", "optional": True, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
      "parameters": {"scale": "2", "connect.decimal.precision": "12"}, "field": "amount"}, "BOI="),
    (Column("amount", LogicalType("decimal", 12, 2)), decimal.Decimal("-0.01"),
     {"type": "bytes", "optional": True, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
      "parameters": {"scale": "2", "connect.decimal.precision": "12"}, "field": "amount"}, "/w=="),
    (Column("num", LogicalType("decimal")), "3.14159",
     {"type": "struct", "fields": [{"type": "int32", "optional": False, "field": "scale"},
                                   {"type": "bytes", "optional": False, "field": "value"}],
      "optional": True, "name": "io.debezium.data.VariableScaleDecimal", "version": 1,
      "doc": "Variable scaled decimal", "field": "num"}, {"scale": 5, "value": "BMsv"}),
    (Column("num", LogicalType("decimal")), "NaN", None, None),
    (Column("tz", LogicalType("timestamptz")), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
     {"type": "string", "optional": True, "name": "io.debezium.time.ZonedTimestamp", "version": 1, "field": "tz"},
     "2024-01-02T03:04:05.000000Z"),
    (Column("tz", LogicalType("timestamptz")),
     dt.datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=dt.timezone(dt.timedelta(hours=2))), None,
     "2024-05-06T05:08:09.500000Z"),
    (Column("ts", LogicalType("timestamp")), dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
     {"type": "int64", "optional": True, "name": "io.debezium.time.MicroTimestamp", "version": 1, "field": "ts"},
     1704164645123456),
    (Column("ts3", LogicalType("timestamp"), native_type="timestamp(3) without time zone"),
     dt.datetime(2024, 1, 2, 3, 4, 5, 123000),
     {"type": "int64", "optional": True, "name": "io.debezium.time.Timestamp", "version": 1, "field": "ts3"},
     1704164645123),
    (Column("d", LogicalType("date")), dt.date(2024, 1, 2),
     {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "version": 1, "field": "d"}, 19724),
    (Column("tm", LogicalType("time")), dt.time(3, 4, 5, 500000),
     {"type": "int64", "optional": True, "name": "io.debezium.time.MicroTime", "version": 1, "field": "tm"},
     11045500000),
    (Column("u", LogicalType("uuid")), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
     {"type": "string", "optional": True, "name": "io.debezium.data.Uuid", "version": 1, "field": "u"},
     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    (Column("j", LogicalType("json")), '{"a": 1}',
     {"type": "string", "optional": True, "name": "io.debezium.data.Json", "version": 1, "field": "j"},
     '{"a": 1}'),
    (Column("bin", LogicalType("binary")), b"\x01\x02\xff", {"type": "bytes", "optional": True, "field": "bin"},
     "AQL/"),
]


@pytest.mark.parametrize(("column", "value", "field", "payload"), CASES,
                         ids=[f"{c.name}-{c.type}-{v!r}"[:40] for c, v, _, _ in CASES])
def test_each_logical_type_as_debezium_writes_it(column: Column, value: Any, field: dict[str, Any] | None,
                                                 payload: Any) -> None:
    got_field, got = one(column, value)
    if field is not None:
        assert got_field == field
    assert got == payload


@pytest.mark.parametrize(("handling", "field", "payload"), [
    ("string", {"type": "string", "optional": True, "field": "amount"}, "-1234.50"),
    ("double", {"type": "double", "optional": True, "field": "amount"}, -1234.5),
])
def test_decimal_handling_string_and_double(handling: str, field: dict[str, Any], payload: Any) -> None:
    got_field, got = one(Column("amount", LogicalType("decimal", 12, 2)), decimal.Decimal("-1234.50"),
                         decimal_handling=handling)
    assert (got_field, got) == (field, payload)


@pytest.mark.parametrize("n", [0, 1, 127, 128, -128, -129, 255, -256, 2**63, -(2**63), 10**37])
def test_unscaled_bytes_are_javas_big_integer_to_byte_array(n: int) -> None:
    raw = unscaled_bytes(n)
    assert int.from_bytes(raw, "big", signed=True) == n
    # Java's toByteArray: the shortest two's complement, so one byte fewer would not hold n
    assert len(raw) == 1 or int.from_bytes(raw[1:], "big", signed=True) != n
    assert unscaled_bytes(-128) == b"\x80" and unscaled_bytes(128) == b"\x00\x80"


def test_precise_decimals_are_rescaled_to_the_column_scale() -> None:
    _, got = one(Column("amount", LogicalType("decimal", 12, 2)), decimal.Decimal("7"))
    assert int.from_bytes(base64.b64decode(got), "big", signed=True) == 700


def test_mysql_datetime_and_timestamp_follow_the_declared_fraction() -> None:
    enc = encoder([Column("dt0", LogicalType("timestamp"), native_type="datetime"),
                   Column("dt6", LogicalType("timestamp"), native_type="datetime(6)"),
                   Column("ts0", LogicalType("timestamptz"), native_type="timestamp"),
                   Column("ts3", LogicalType("timestamptz"), native_type="timestamp(3)")],
                  connector="mysql")
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678901)
    row = {"id": 1, "dt0": when, "dt6": when, "ts0": when.replace(tzinfo=dt.UTC), "ts3": when.replace(tzinfo=dt.UTC)}
    doc = json.loads(enc.encode_value(ChangeEvent("c", None, row, {"file": "b.1", "pos": 4, "row": 1}), MY))
    after = next(f for f in doc["schema"]["fields"] if f["field"] == "after")
    names = {f["field"]: f.get("name") for f in after["fields"]}
    assert names["dt0"] == "io.debezium.time.Timestamp" and names["dt6"] == "io.debezium.time.MicroTimestamp"
    assert doc["payload"]["after"] == {"id": 1, "dt0": 1704164645678, "dt6": 1704164645678901,
                                       "ts0": "2024-01-02T03:04:05Z", "ts3": "2024-01-02T03:04:05.678Z"}


def test_envelope_key_and_compact_json() -> None:
    enc = encoder([Column("txt", LogicalType("string"))])
    key = enc.encode_key({"id": 5, "txt": "x"})
    assert key == (b'{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}],'
                   b'"optional":false,"name":"shop.public.t.Key"},"payload":{"id":5}}')
    value = enc.encode_value(ChangeEvent("u", {"id": 5, "txt": "w"}, {"id": 5, "txt": "x"}, {"lsn": 9, "seq": 2},
                                         1_700_000_000_123), PG)
    assert b": " not in value and b", " not in value
    doc = json.loads(value)
    assert doc["schema"]["name"] == "shop.public.t.Envelope" and doc["schema"]["version"] == 2
    assert [f["field"] for f in doc["schema"]["fields"]] == ["before", "after", "source", "transaction", "op",
                                                            "ts_ms", "ts_us", "ts_ns"]
    assert doc["schema"]["fields"][0]["name"] == "shop.public.t.Value"
    payload = doc["payload"]
    assert list(payload) == ["before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"]
    assert payload["before"] == {"id": 5, "txt": "w"} and payload["op"] == "u" and payload["transaction"] is None
    assert payload["ts_us"] == payload["ts_ms"] * 1000 and payload["ts_ns"] == payload["ts_ms"] * 10**6
    assert enc.headers == []


def test_postgresql_source_block() -> None:
    enc = encoder([])
    doc = json.loads(enc.encode_value(ChangeEvent("c", None, {"id": 1}, {"lsn": 26374632, "seq": 3},
                                                  1_700_000_000_123), PG))
    source_schema = next(f for f in doc["schema"]["fields"] if f["field"] == "source")
    assert source_schema["name"] == "io.debezium.connector.postgresql.Source"
    assert [f["field"] for f in source_schema["fields"]] == [
        "version", "connector", "name", "ts_ms", "snapshot", "db", "sequence", "ts_us", "ts_ns", "schema", "table",
        "txId", "lsn", "xmin", "origin", "origin_lsn"]
    source = doc["payload"]["source"]
    assert source["version"].startswith("copyjob")
    assert {k: v for k, v in source.items() if k != "version"} == {
        "connector": "postgresql", "name": "shop", "ts_ms": 1_700_000_000_123, "snapshot": "false", "db": "shop",
        "sequence": None, "ts_us": 1_700_000_000_123_000, "ts_ns": 1_700_000_000_123_000_000, "schema": "public",
        "table": "t", "txId": None, "lsn": 26374632, "xmin": None, "origin": None, "origin_lsn": None}


@pytest.mark.parametrize("connector", ["mysql", "mariadb"])
def test_binlog_source_block(connector: str) -> None:
    enc = encoder([], connector=connector)
    info = SourceInfo(connector=connector, db="shop", schema="shop", table="t")
    doc = json.loads(enc.encode_value(ChangeEvent("d", {"id": 1}, None, {"file": "binlog.000003", "pos": 4567,
                                                                         "row": 2, "gtid": "0-1-17"}, 5), info))
    source_schema = next(f for f in doc["schema"]["fields"] if f["field"] == "source")
    assert source_schema["name"] == f"io.debezium.connector.{connector}.Source"
    assert [f["field"] for f in source_schema["fields"]][9:] == ["table", "server_id", "gtid", "file", "pos", "row",
                                                                 "thread", "query"]
    source = doc["payload"]["source"]
    assert {k: source[k] for k in ("connector", "db", "table", "server_id", "gtid", "file", "pos", "row", "thread",
                                   "query")} == {
        "connector": connector, "db": "shop", "table": "t", "server_id": 0, "gtid": "0-1-17",
        "file": "binlog.000003", "pos": 4567, "row": 2, "thread": None, "query": None}


def test_without_schemas_only_payloads() -> None:
    enc = encoder([Column("txt", LogicalType("string"))], schemas=False)
    assert enc.encode_key({"id": 5}) == b'{"id":5}'
    doc = json.loads(enc.encode_value(ChangeEvent("c", None, {"id": 5, "txt": "é"}, {"lsn": 1, "seq": 0}), PG))
    assert set(doc) == {"before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"}
    assert doc["after"] == {"id": 5, "txt": "é"}
    batch = pa.RecordBatch.from_pylist([{"id": 1, "txt": "a"}])
    keys, values = enc.encode_batch(batch, "r", PG, {"lsn": 1, "seq": -1})
    assert keys == [b'{"id":1}'] and json.loads(values[0])["after"] == {"id": 1, "txt": "a"}


def test_unchanged_toast_is_debeziums_placeholder() -> None:
    enc = encoder([Column("note", LogicalType("string")), Column("blob", LogicalType("binary")),
                   Column("n", LogicalType("int32"))])
    doc = json.loads(enc.encode_value(ChangeEvent("u", None, {"id": 1, "note": UNCHANGED_TOAST,
                                                              "blob": UNCHANGED_TOAST, "n": 3}, {}), PG))
    assert doc["payload"]["after"] == {"id": 1, "note": "__debezium_unavailable_value",
                                       "blob": base64.b64encode(b"__debezium_unavailable_value").decode(), "n": 3}


def test_a_delete_image_with_only_the_key_has_the_other_columns_null() -> None:
    enc = encoder([Column("txt", LogicalType("string"))])
    doc = json.loads(enc.encode_value(ChangeEvent("d", {"id": 3}, None, {"lsn": 1, "seq": 0}), PG))
    assert doc["payload"]["before"] == {"id": 3, "txt": None} and doc["payload"]["after"] is None


def test_batch_rows_equal_event_rows_and_snapshot_markers() -> None:
    columns = [c for c, _, _, _ in CASES if c.name not in ("i", "f")]
    columns = list({c.name: c for c in columns}.values())
    enc = encoder(columns)
    row = {"id": 1, **{c.name: v for c, v, _, _ in CASES if c.name in {x.name for x in columns}}}
    row["amount"], row["num"] = decimal.Decimal("12.50"), "3.14159"
    row["tz"] = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    rows: list[dict[str, Any]] = [row, {"id": 2}, {**row, "id": 3}]
    schema = TableSchema(TableName("t"), (Column("id", LogicalType("int32"), nullable=False), *columns), ("id",))
    batch = pa.RecordBatch.from_pylist(rows, schema=schema.arrow_schema())
    position = {"lsn": 42, "seq": -1}
    keys, values = enc.encode_batch(batch, "r", PG, position)
    _, more = enc.encode_batch(batch, "r", PG, position, last=True)
    docs = [json.loads(v) for v in values]
    assert [d["payload"]["source"]["snapshot"] for d in docs] == ["first", "true", "true"]
    assert [json.loads(v)["payload"]["source"]["snapshot"] for v in more] == ["true", "true", "last"]
    for r, key, doc in zip(rows, keys, docs, strict=True):
        event = json.loads(enc.encode_value(ChangeEvent("r", None, {c.name: r.get(c.name) for c in schema.columns},
                                                        position, snapshot=True), PG))
        assert doc["schema"] == event["schema"]
        assert doc["payload"]["after"] == event["payload"]["after"]
        assert doc["payload"]["op"] == "r" and doc["payload"]["before"] is None
        assert key == enc.encode_key(r)


def test_transaction_metadata_begin_blocks_end() -> None:
    tx = Transactions()
    first, block1 = tx.event("public.a", {"lsn": 100, "seq": 0}, 5)
    none, block2 = tx.event("public.b", {"lsn": 100, "seq": 1}, 5)
    third, block3 = tx.event("public.a", {"lsn": 100, "seq": 2}, 5)
    ended, block4 = tx.event("public.a", {"lsn": 200, "seq": 0}, 6)
    assert none == [] and third == []
    assert (block1, block2, block3) == ({"id": "100", "total_order": 1, "data_collection_order": 1},
                                        {"id": "100", "total_order": 2, "data_collection_order": 1},
                                        {"id": "100", "total_order": 3, "data_collection_order": 2})
    assert block4 == {"id": "200", "total_order": 1, "data_collection_order": 1}
    begin = json.loads(first[0][1])
    assert json.loads(first[0][0]) == {"schema": {"type": "struct", "fields": [
        {"type": "string", "optional": False, "field": "id"}], "optional": False,
        "name": "io.debezium.connector.common.TransactionMetadataKey", "version": 1}, "payload": {"id": "100"}}
    assert begin["schema"]["name"] == "io.debezium.connector.common.TransactionMetadataValue"
    assert begin["payload"] == {"status": "BEGIN", "id": "100", "event_count": None, "data_collections": None,
                                "ts_ms": 5}
    assert [json.loads(v)["payload"]["status"] for _, v in ended] == ["END", "BEGIN"]
    assert json.loads(ended[0][1])["payload"] == {
        "status": "END", "id": "100", "event_count": 3, "ts_ms": 5,
        "data_collections": [{"data_collection": "public.a", "event_count": 2},
                             {"data_collection": "public.b", "event_count": 1}]}
    assert [json.loads(v)["payload"]["id"] for _, v in tx.close()] == ["200"] and tx.close() == []


def test_transaction_ids_from_positions() -> None:
    assert transaction_id({"lsn": 5, "seq": 1}) == "5"
    assert transaction_id({"file": "b.1", "pos": 4, "row": 2, "gtid": "0-1-17"}) == "0-1-17"
    assert transaction_id({"file": "b.1", "pos": 4, "row": 2}) == "b.1:4"
    assert transaction_id({"watermark": "x"}) is None


def test_event_carries_its_transaction_block() -> None:
    enc = encoder([])
    doc = json.loads(enc.encode_value(ChangeEvent("c", None, {"id": 1}, {"lsn": 1, "seq": 0}), PG,
                                      {"id": "1", "total_order": 1, "data_collection_order": 1}))
    assert doc["payload"]["transaction"] == {"id": "1", "total_order": 1, "data_collection_order": 1}


def test_truncate_key_allows_nulls() -> None:
    enc = encoder([])
    doc = json.loads(enc.encode_key({}, truncate=True) or b"")
    assert doc["payload"] == {"id": None} and doc["schema"]["fields"][0]["optional"] is True


def test_job_file_takes_the_debezium_format_and_partitioner() -> None:
    from copyjob.jobfile import KafkaSettings

    s = KafkaSettings.model_validate({"bootstrap_servers": "k:9092", "format": "debezium",
                                      "debezium": {"schemas": False, "decimal_handling": "string",
                                                   "transaction_metadata": True},
                                      "partitioner": "murmur2_random"})
    opts = DebeziumOptions.of(s.debezium, "shop", "postgresql")
    assert (opts.schemas, opts.decimal_handling, opts.transaction_metadata) == (False, "string", True)
    assert s.partitioner == "murmur2_random"
    with pytest.raises(ValueError, match="decimal_handling"):
        KafkaSettings.model_validate({"bootstrap_servers": "k", "format": "debezium",
                                      "debezium": {"decimal_handling": "exact"}})


def test_the_partitioner_reaches_librdkafka() -> None:
    from confluent_kafka import KafkaException
    from copyjob.connectors.kafka.client import Producer

    Producer("127.0.0.1:1", {}, partitioner="murmur2_random").close()
    with pytest.raises(KafkaException, match="partitioner"):
        Producer("127.0.0.1:1", {}, partitioner="no_such_partitioner")


# ---------------------------------------------------------------- through the CLI, against the real services


def _ops(messages: list[tuple[bytes | None, bytes | None]]) -> dict[str, int]:
    found: dict[str, int] = {}
    for _, v in messages:
        op = json.loads(v)["payload"]["op"] if v is not None else "tombstone"
        found[op] = found.get(op, 0) + 1
    return found


def test_transaction_metadata_through_the_cli(tmp_path: Any, kafka_broker: Any, pg_url: str) -> None:
    from tests.interop.debezium import capture, job_file, payloads, read_topic
    from tests.pg_cdc import drop_slots, execute

    try:
        execute(pg_url, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        job, prefix = job_file(tmp_path, kafka_broker, pg_url, f"sqlite:///{tmp_path}/d.db", "t",
                               debezium={"transaction_metadata": True})
        capture(job)
        execute(pg_url, "BEGIN", "INSERT INTO t VALUES (3, 'c'), (4, 'd')", "UPDATE t SET v = 'z' WHERE id = 1",
                "COMMIT", "DELETE FROM t WHERE id = 2")
        capture(job)
    finally:
        drop_slots(pg_url)
    records = payloads(read_topic(kafka_broker, f"{prefix}.transaction", lambda m: len(m) == 4))
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:  # keyed by transaction id: ordered within one, not across the topic's partitions
        by_id.setdefault(record["id"], []).append(record)
    both = sorted(by_id.values(), key=lambda t: -(t[-1]["event_count"] or 0))
    assert [[(p["status"], p["event_count"]) for p in t] for t in both] == [
        [("BEGIN", None), ("END", 3)], [("BEGIN", None), ("END", 1)]]
    tx = both[0] + both[1]
    assert tx[1]["data_collections"] == [{"data_collection": "public.t", "event_count": 3}]
    changes = payloads(read_topic(kafka_broker, f"{prefix}.public.t", lambda m: _ops(m) == {
        "r": 2, "c": 2, "u": 1, "d": 1, "tombstone": 1}))
    blocks = {(p["op"], (p["after"] or p["before"])["id"]): p["transaction"] for p in changes}
    assert blocks[("r", 1)] is None and blocks[("r", 2)] is None
    assert sorted((b["total_order"], b["data_collection_order"]) for k, b in blocks.items()
                  if k in {("c", 3), ("c", 4), ("u", 1)}) == [(1, 1), (2, 2), (3, 3)]
    assert {blocks[k]["id"] for k in (("c", 3), ("c", 4), ("u", 1))} == {tx[0]["id"]}
    assert blocks[("d", 2)] == {"id": tx[2]["id"], "total_order": 1, "data_collection_order": 1}


def test_mariadb_source_block_through_the_cli(tmp_path: Any, kafka_broker: Any, mariadb_server: Any,
                                              mariadb_url: str) -> None:
    pytest.importorskip("pymysqlreplication")
    from tests.interop.debezium import capture, job_file, read_topic

    database = mariadb_url.rsplit("/", 1)[1]
    mariadb_server.execute_all(database, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, "
                               "amount DECIMAL(12,2), at DATETIME, ts TIMESTAMP(3) NULL) ENGINE=InnoDB",
                               "INSERT INTO items VALUES (1, 'a', 1.50, '2024-01-02 03:04:05', NULL), "
                               "(2, 'b', NULL, NULL, '2024-01-02 03:04:05.678')")
    job, prefix = job_file(tmp_path, kafka_broker, mariadb_url, f"sqlite:///{tmp_path}/d.db", "items")
    capture(job)
    mariadb_server.execute_all(database, "INSERT INTO items VALUES (3, 'c', -2.25, '2024-05-06 07:08:09', NULL)",
                               "UPDATE items SET name = 'z' WHERE id = 1", "DELETE FROM items WHERE id = 2")
    capture(job)
    messages = read_topic(kafka_broker, f"{prefix}.{database}.items", lambda m: _ops(m) == {
        "r": 2, "c": 1, "u": 1, "d": 1, "tombstone": 1})
    docs = [json.loads(v) for _, v in messages if v is not None]
    source_schema = next(f for f in docs[0]["schema"]["fields"] if f["field"] == "source")
    assert source_schema["name"] == "io.debezium.connector.mysql.Source"
    assert [f["field"] for f in source_schema["fields"]] == [
        "version", "connector", "name", "ts_ms", "snapshot", "db", "sequence", "ts_us", "ts_ns", "table",
        "server_id", "gtid", "file", "pos", "row", "thread", "query"]
    after = {f["field"]: f for f in next(f for f in docs[0]["schema"]["fields"] if f["field"] == "after")["fields"]}
    assert after["name"]["optional"] is False and after["at"]["name"] == "io.debezium.time.Timestamp"
    assert after["ts"]["name"] == "io.debezium.time.ZonedTimestamp"
    assert after["amount"]["parameters"] == {"scale": "2", "connect.decimal.precision": "12"}
    snapshot = sorted(d["payload"]["source"]["snapshot"] for d in docs if d["payload"]["op"] == "r")
    assert snapshot == ["first", "last"]
    by_op = {d["payload"]["op"]: d["payload"] for d in docs if d["payload"]["op"] != "r"}
    assert by_op["c"]["after"] == {"id": 3, "name": "c", "amount": base64.b64encode(
        (-225).to_bytes(2, "big", signed=True)).decode(), "at": 1714979289000, "ts": None}
    assert by_op["u"]["before"]["name"] == "a" and by_op["u"]["after"]["name"] == "z"
    assert by_op["d"]["before"]["ts"] == "2024-01-02T03:04:05.678Z"
    for payload in by_op.values():
        source = payload["source"]
        assert (source["connector"], source["name"], source["db"], source["table"], source["snapshot"]) == (
            "mysql", prefix, database, "items", "false")
        assert source["file"] and source["pos"] > 0 and source["row"] >= 1 and source["gtid"]
        assert isinstance(source["server_id"], int) and source["thread"] is None and source["query"] is None
    assert len({(p["source"]["file"], p["source"]["pos"]) for p in by_op.values()}) == 3


@pytest.mark.parametrize("connector", ["postgresql", "mysql"])
def test_batch_path_equals_event_path_on_edge_values(connector: str) -> None:
    columns = [Column("amount", LogicalType("decimal", 38, 4)), Column("f", LogicalType("float64")),
               Column("ts", LogicalType("timestamp"), native_type="timestamp"),
               Column("ts3", LogicalType("timestamp"), native_type="datetime(3)"),
               Column("tz", LogicalType("timestamptz")), Column("tz0", LogicalType("timestamptz"),
                                                                native_type="timestamp(0)"),
               Column("d", LogicalType("date")), Column("tm", LogicalType("time")),
               Column("txt", LogicalType("string")), Column("bin", LogicalType("binary")),
               Column("num", LogicalType("decimal"))]
    enc = encoder(columns, connector=connector)
    old = dt.datetime(1969, 12, 31, 23, 59, 59, 999999)
    rows: list[dict[str, Any]] = [
        {"id": 1, "amount": decimal.Decimal("-0.0128"), "f": float("-inf"), "ts": old, "ts3": old,
         "tz": dt.datetime(1, 1, 1, tzinfo=dt.UTC), "tz0": old.replace(tzinfo=dt.UTC), "d": dt.date(1, 1, 1),
         "tm": dt.time(23, 59, 59, 999999), "txt": 'quote " and \\ and é and \n', "bin": b"",
         "num": "-0.000"},
        {"id": 2, "amount": decimal.Decimal("99999999999999999999999999999999.9999"), "f": 1e300,
         "ts": dt.datetime(9999, 12, 31, 23, 59, 59), "ts3": dt.datetime(2024, 1, 1, 0, 0, 0, 1000),
         "tz": dt.datetime(9999, 12, 31, tzinfo=dt.UTC), "tz0": None, "d": None, "tm": dt.time(0), "txt": "",
         "bin": b"\x00" * 5, "num": "1E+3"},
        {"id": 3},
    ]
    schema = TableSchema(TableName("t"), (Column("id", LogicalType("int32"), nullable=False), *columns), ("id",))
    batch = pa.RecordBatch.from_pylist(rows, schema=schema.arrow_schema())
    keys, values = enc.encode_batch(batch, "u", PG, {"lsn": 1, "seq": 0})
    for r, key, value in zip(rows, keys, values, strict=True):
        event = json.loads(enc.encode_value(ChangeEvent("u", None, {c.name: r.get(c.name) for c in schema.columns},
                                                        {"lsn": 1, "seq": 0}), PG))
        assert json.loads(value)["payload"]["after"] == event["payload"]["after"]
        assert key == enc.encode_key(r)
    infinite = pa.RecordBatch.from_arrays(
        [pa.array([1], pa.int32()), pa.array([2**63 - 1], pa.int64()).cast(pa.timestamp("us", "UTC"))],
        names=["id", "tz"])
    _, values = encoder([Column("tz", LogicalType("timestamptz"))]).encode_batch(infinite, "r", PG, {})
    assert json.loads(values[0])["payload"]["after"]["tz"] == "infinity"
