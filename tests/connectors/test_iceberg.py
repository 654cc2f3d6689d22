"""What belongs to the Iceberg destination alone (the contract suite covers the rest): markers in snapshot
summaries, the catalog on PostgreSQL, options, types as pyiceberg and pyarrow.parquet read them back, partitions,
and maintenance. Readers here open catalogs of their own, as another tool would."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from copyjob.core.contracts import MaintenanceSettings, StateMarker, UpdateMethod
from copyjob.core.errors import ConfigurationError, ConnectionFailed
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url

pytest.importorskip("pyiceberg")

from copyjob.connectors.iceberg import IcebergDestination

T = LogicalType
UTC = dt.UTC


def lake(tmp_path: Path, **options: str) -> IcebergDestination:
    query = "&".join(f"{k}={v}" for k, v in {"format": "iceberg", **options}.items())
    return IcebergDestination(parse_url(f"file://{tmp_path / 'lake'}?{query}"))


def own_catalog(tmp_path: Path, uri: str | None = None) -> Any:
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog("copyjob", uri=uri or f"sqlite:///{tmp_path / 'lake' / 'catalog.db'}",
                      warehouse=(tmp_path / "lake").as_uri())


def simple(name: str = "t") -> TableSchema:
    return TableSchema(TableName(name), (Column("id", T("int64"), False), Column("v", T("string"))), ("id",))


def load(dest: IcebergDestination, schema: TableSchema, rows: list[dict[str, Any]], method: UpdateMethod = "append",
         marker: StateMarker | None = None) -> None:
    session = dest.begin_load(schema, method, ("id",) if method == "merge" else ())
    session.write(pa.RecordBatch.from_pylist(rows, schema=schema.arrow_schema()))
    session.commit(marker)


# ---------------------------------------------------------------- markers


def test_the_marker_is_in_the_snapshot_summary_of_the_data_commit(tmp_path: Path) -> None:
    dest = lake(tmp_path)
    schema = simple()
    dest.create_table(schema)
    marker = StateMarker("job", "t", "run-1", {"watermark": 7})
    load(dest, schema, [{"id": 1, "v": "a"}], marker=marker)
    table = own_catalog(tmp_path).load_table(("copyjob", "t"))
    summary = table.current_snapshot().summary.additional_properties
    assert json.loads(summary['copyjob.marker:["job", "t"]']) == {"run_id": "run-1", "state": {"watermark": 7}}
    assert summary["added-records"] == "1"  # the same snapshot as the data

    # another tool appends (no marker): the marker is found by walking back
    table.append(pa.table({"id": pa.array([2], pa.int64()), "v": ["other tool"]},
                          schema=table.schema().as_arrow()))
    assert lake(tmp_path).read_marker("job", "t") == marker
    # a second job's marker is carried along by the first job's later commits
    other = StateMarker("other", "t", "run-9", {"n": 9})
    load(dest, schema, [{"id": 3}], marker=other)
    later = StateMarker("job", "t", "run-2", {"watermark": 8})
    load(dest, schema, [{"id": 4}], marker=later)
    fresh = lake(tmp_path)
    assert (fresh.read_marker("job", "t"), fresh.read_marker("other", "t")) == (later, other)


def test_a_marker_named_otherwise_is_found_through_the_namespace(tmp_path: Path) -> None:
    """The Kafka apply side names a marker per partition (``orders#0``): the table it lives in is recorded."""
    dest = lake(tmp_path)
    schema = simple("orders")
    dest.create_table(schema)
    first = StateMarker("job", "orders#0", "r", {"offset": 10})
    second = StateMarker("job", "orders#1", "r", {"offset": 3})
    load(dest, schema, [{"id": 1}], marker=first)
    load(dest, schema, [{"id": 2}], marker=second)
    fresh = lake(tmp_path)
    assert (fresh.read_marker("job", "orders#0"), fresh.read_marker("job", "orders#1")) == (first, second)
    assert fresh.read_marker("job", "orders#2") is None


# ---------------------------------------------------------------- catalog and options


def test_a_catalog_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    dest = lake(tmp_path, catalog_uri=pg_url, namespace="sales")
    schema = simple("orders")
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "v": "a"}], marker=StateMarker("job", "orders", "r", {"n": 1}))
    assert not (tmp_path / "lake" / "catalog.db").exists()
    table = own_catalog(tmp_path, "postgresql+psycopg://" + pg_url.split("://", 1)[1]).load_table(("sales", "orders"))
    assert table.scan().to_arrow().to_pylist() == [{"id": 1, "v": "a"}]
    assert lake(tmp_path, catalog_uri=pg_url, namespace="sales").read_marker("job", "orders") is not None


def test_a_wrong_catalog_password_is_redacted(tmp_path: Path, pg_url: str) -> None:
    bad = pg_url.replace("postgres:postgres@", "postgres:s3cr3t-pw@")
    with pytest.raises(ConnectionFailed) as caught:
        dest = lake(tmp_path, catalog_uri=bad)
        dest.create_table(simple())
    assert "s3cr3t-pw" not in str(caught.value)
    assert "***" in str(caught.value)


def test_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="catalgo"):
        lake(tmp_path, catalgo="sql")
    with pytest.raises(ConfigurationError, match="catalog_uri"):
        lake(tmp_path, catalog="rest")  # no test server here: a REST catalog needs its URL
    with pytest.raises(ConfigurationError, match="hive"):
        lake(tmp_path, catalog="hive")


def test_a_load_with_a_column_the_table_lacks_is_refused(tmp_path: Path) -> None:
    """Never a silent drop: the column must be added first (schema evolution)."""
    dest = lake(tmp_path)
    dest.create_table(simple())
    wider = TableSchema(TableName("t"), (*simple().columns, Column("extra", T("string"))), ("id",))
    with pytest.raises(ConfigurationError, match="extra"):
        load(dest, wider, [{"id": 1, "v": "a", "extra": "x"}])
    dest.add_columns(wider.table, wider.columns[-1:])
    load(dest, wider, [{"id": 1, "v": "a", "extra": "x"}])
    assert own_catalog(tmp_path).load_table(("copyjob", "t")).scan().to_arrow().to_pylist() == \
        [{"id": 1, "v": "a", "extra": "x"}]


# ---------------------------------------------------------------- types


TYPES = TableSchema(TableName("types"), (
    Column("id", T("int64"), False), Column("i16", T("int16")), Column("i32", T("int32")),
    Column("f32", T("float32")), Column("f64", T("float64")), Column("dec", T("decimal", precision=38, scale=10)),
    Column("wide", T("decimal", precision=60, scale=2)), Column("num", T("decimal")), Column("s", T("string")),
    Column("b", T("bool")), Column("d", T("date")), Column("tm", T("time")), Column("ts", T("timestamp")),
    Column("tstz", T("timestamptz")), Column("bin", T("binary")), Column("u", T("uuid")), Column("j", T("json"))),
    ("id",))

ICEBERG_TYPES = {"id": "long", "i16": "int", "i32": "int", "f32": "float", "f64": "double",
                 "dec": "decimal(38, 10)", "wide": "string", "num": "string", "s": "string", "b": "boolean",
                 "d": "date", "tm": "time", "ts": "timestamp", "tstz": "timestamptz", "bin": "binary", "u": "uuid",
                 "j": "string"}

U = uuid.UUID("12345678-1234-5678-1234-567812345678")
ROW = {"id": 1, "i16": -32768, "i32": 2**31 - 1, "f32": 1.5, "f64": 2.25,
       "dec": Decimal("1234567890123456789012345678.0123456789"),
       "wide": Decimal("123456789012345678901234567890123456789.50"),
       "num": "3.14159265358979323846264338327950288", "s": "naïve ☃", "b": True, "d": dt.date(1, 1, 1),
       "tm": dt.time(23, 59, 59, 999999), "ts": dt.datetime(2024, 2, 29, 12, 0, 0, 1),
       "tstz": dt.datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=UTC), "bin": b"\x00\xff", "u": str(U),
       "j": '{"a": [1, 2]}'}


def test_every_logical_type_as_pyiceberg_and_pyarrow_read_it(tmp_path: Path) -> None:
    dest = lake(tmp_path)
    dest.create_table(TYPES)
    empty = {k: None for k in ROW} | {"id": 2}
    session = dest.begin_load(TYPES, "append", ())
    session.write(pa.RecordBatch.from_pylist([ROW, empty], schema=TYPES.arrow_schema()))
    session.commit(None)

    reflected = dest.reflect(TYPES.table)
    assert reflected is not None
    assert [(c.name, str(c.type), c.nullable) for c in reflected.columns] == \
        [(c.name, str(c.type), c.nullable) for c in TYPES.columns]
    table = own_catalog(tmp_path).load_table(("copyjob", "types"))
    assert {f.name: str(f.field_type) for f in table.schema().fields} == ICEBERG_TYPES

    # pyiceberg reads a uuid back as uuid.UUID; decimals wider than 38 digits are kept as their text
    expected = {**ROW, "u": U, "wide": str(ROW["wide"])}
    scanned = sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["id"])
    assert scanned[0] == expected
    assert scanned[1] == {**{k: None for k in ROW}, "id": 2}

    files = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
    direct = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
    first = sorted(direct, key=lambda r: r["id"])[0]
    assert first == expected  # the UUID logical type of Parquet: pyarrow reads it as uuid.UUID too

    session = dest.begin_load(TYPES, "merge", ("id",))  # and back through copyjob's own merge read
    session.update_columns(pa.RecordBatch.from_pylist([{"id": 1, "s": "changed"}],
                                                      schema=TYPES.select(["id", "s"]).arrow_schema()))
    session.commit(None)
    scanned = sorted(table.refresh().scan().to_arrow().to_pylist(), key=lambda r: r["id"])
    assert scanned[0] == {**expected, "s": "changed"}


def test_a_value_that_is_no_uuid_names_the_table_and_column(tmp_path: Path) -> None:
    from copyjob.core.errors import DataError

    dest = lake(tmp_path)
    schema = TableSchema(TableName("ids"), (Column("id", T("int64"), False), Column("u", T("uuid"))), ("id",))
    dest.create_table(schema)
    with pytest.raises(DataError, match=r"ids.*'u'"):
        load(dest, schema, [{"id": 1, "u": "not a uuid"}])


# ---------------------------------------------------------------- layout and maintenance


def test_partition_by_from_the_job_file_option(tmp_path: Path) -> None:
    dest = lake(tmp_path, partition_by=json.dumps({"events": ["day"]}).replace(" ", ""))
    schema = TableSchema(TableName("events"), (Column("id", T("int64"), False), Column("day", T("date"))), ("id",))
    dest.create_table(schema)
    days = [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]
    load(dest, schema, [{"id": i, "day": days[i % 2]} for i in range(10)])
    table = own_catalog(tmp_path).load_table(("copyjob", "events"))
    assert [f.name for f in table.spec().fields] == ["day"]
    paths = sorted(t.file.file_path for t in table.scan().plan_files())
    assert len(paths) == 2 and all("day=2024-01-0" in p for p in paths)
    with pytest.raises(ConfigurationError, match="nope"):
        lake(tmp_path, partition_by=json.dumps({"x": ["nope"]}).replace(" ", "")).create_table(
            TableSchema(TableName("x"), schema.columns))


def test_maintain_compacts_expires_and_keeps_the_markers(tmp_path: Path) -> None:
    dest = lake(tmp_path)
    schema = simple()
    dest.create_table(schema)
    markers = [StateMarker("job", "t", f"run-{i}", {"n": i}) for i in range(5)]
    for i, marker in enumerate(markers):
        load(dest, schema, [{"id": i, "v": f"v{i}"}, {"id": 100 + i, "v": "x"}], method="merge", marker=marker)
    load(dest, schema, [{"id": 1000, "v": "last"}])  # a commit without a marker on top
    dry = dest.maintain(schema.table, MaintenanceSettings(retention_s=0, dry_run=True))
    assert dry.files_before == dry.files_after == 6 and dry.actions
    before = {p for p in (tmp_path / "lake").rglob("*") if p.is_file()}

    report = dest.maintain(schema.table, MaintenanceSettings(retention_s=0))
    assert (report.files_before, report.files_after) == (6, 1), report
    table = own_catalog(tmp_path).load_table(("copyjob", "t"))
    assert len(table.scan().to_arrow()) == 11
    assert lake(tmp_path).read_marker("job", "t") == markers[-1]
    assert len(table.snapshots()) <= 2  # the compaction's commit only
    after = {p for p in (tmp_path / "lake").rglob("*") if p.is_file()}
    gone = before - after
    assert any(p.suffix == ".parquet" for p in gone) and any(p.suffix == ".avro" for p in gone)
    load(dest, schema, [{"id": 1, "v": "after"}], method="merge", marker=StateMarker("job", "t", "run-9", {}))
    assert len(own_catalog(tmp_path).load_table(("copyjob", "t")).scan().to_arrow()) == 11


def test_a_merge_of_many_keys_rewrites_their_range_and_keeps_the_rows_between(tmp_path: Path) -> None:
    """Above MAX_IN_VALUES keys the touched rows are found by the keys' range: the rows in it that no key names
    are read and written back unchanged."""
    from copyjob.connectors.iceberg.session import MAX_IN_VALUES

    dest = lake(tmp_path)
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": i, "v": "old"} for i in range(5000)])
    evens = range(0, 2 * (MAX_IN_VALUES + 500), 2)
    session = dest.begin_load(schema, "merge", ("id",))
    session.write(pa.RecordBatch.from_pylist([{"id": i, "v": "new"} for i in evens], schema=schema.arrow_schema()))
    one = pa.RecordBatch.from_pylist([{"id": 1}], schema=schema.select(["id"]).arrow_schema())
    assert session.delete_keys(one) == 1
    session.commit(None)
    got = {r["id"]: r["v"] for r in own_catalog(tmp_path).load_table(("copyjob", "t")).scan().to_arrow().to_pylist()}
    assert len(got) == 4999 and 1 not in got
    assert all(got[i] == ("new" if i in set(evens) else "old") for i in got)
