"""What is Delta-specific (the shared contract runs in test_destination_contract.py): the marker rides in the
load's one commit, every logical type's Delta type and its values read back by deltalake's reader and by
pyarrow.parquet on the data files, partitioning, schema evolution on write, table folders inside the root."""

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
from copyjob.core.errors import ConfigurationError
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url

deltalake = pytest.importorskip("deltalake")

from copyjob.connectors.delta import DeltaDestination  # noqa: E402
from copyjob.connectors.delta.types import from_storage  # noqa: E402

T = LogicalType
UTC = dt.UTC


def open_lake(tmp_path: Path, **query: str) -> DeltaDestination:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return DeltaDestination(parse_url(f"file://{tmp_path / 'lake'}?format=delta{extra}"))


def simple(name: str = "t") -> TableSchema:
    return TableSchema(TableName(name), (Column("id", T("int64"), False), Column("v", T("string"))), ("id",))


def rows_of(schema: TableSchema, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema.arrow_schema())


def load(dest: DeltaDestination, schema: TableSchema, rows: list[dict[str, Any]], method: UpdateMethod = "append",
         marker: StateMarker | None = None) -> None:
    session = dest.begin_load(schema, method, ("id",) if method == "merge" else ())
    session.write(rows_of(schema, rows))
    session.commit(marker)


# ---------------------------------------------------------------- the marker in the commit


@pytest.mark.parametrize("method", ["append", "overwrite", "merge"])
def test_a_load_with_deletes_and_updates_is_one_commit_that_carries_the_marker(tmp_path: Path,
                                                                              method: UpdateMethod) -> None:
    dest = open_lake(tmp_path)
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": i, "v": "a"} for i in range(1, 6)])
    before = dest.table(schema.table).version()
    session = dest.begin_load(schema, method, ("id",))
    session.write(rows_of(schema, [{"id": 7, "v": "b"}]))
    session.delete_keys(pa.RecordBatch.from_pylist([{"id": 2}], schema=schema.select(["id"]).arrow_schema()))
    session.update_columns(rows_of(schema, [{"id": 3, "v": "c"}]))
    marker = StateMarker("job", "t", "run-1", {"position": "0/16B3748"})
    session.commit(marker)
    table = dest.table(schema.table)
    assert table.version() == before + 1
    last = table.history(1)[0]
    assert json.loads(last["copyjob.marker"])["state"] == {"position": "0/16B3748"}
    assert table.transaction_version("copyjob:job:t") == 1
    assert dest.read_marker("job", "t") == marker
    load(dest, schema, [{"id": 8, "v": "d"}], "merge", StateMarker("job", "t", "run-2", {"n": 2}))
    assert dest.table(schema.table).transaction_version("copyjob:job:t") == 2
    assert dest.read_marker("job", "t") == StateMarker("job", "t", "run-2", {"n": 2})


def test_the_marker_is_found_behind_many_commits_and_after_compaction(tmp_path: Path) -> None:
    dest = open_lake(tmp_path)
    schema = simple()
    dest.create_table(schema)
    marker = StateMarker("job", "t", "run-1", {"n": 1})
    load(dest, schema, [{"id": 0, "v": "a"}], marker=marker)
    for i in range(1, 60):  # later commits without a marker (another writer, or loads that carry none)
        load(dest, schema, [{"id": i, "v": "a"}])
    assert dest.read_marker("job", "t") == marker
    report = dest.maintain(schema.table, MaintenanceSettings())
    assert (report.files_before, report.files_after) == (60, 1)
    assert dest.table(schema.table).history(1)[0]["operation"] == "OPTIMIZE"
    assert dest.read_marker("job", "t") == marker
    assert dest.read_marker("other", "t") is None


def test_markers_per_partition_live_in_the_table_and_survive_compaction(tmp_path: Path) -> None:
    """The Kafka apply side keeps one marker per partition (``<table>#<partition>``) beside the table's rows."""
    dest = open_lake(tmp_path)
    schema = simple("orders")
    dest.create_table(schema)
    first = StateMarker("job", "orders#0", "r", {"offset": 7})
    second = StateMarker("job", "orders#1", "r", {"offset": 3})
    load(dest, schema, [{"id": 1, "v": "a"}], "merge", first)
    load(dest, schema, [{"id": 2, "v": "b"}], "merge", second)
    load(dest, schema, [{"id": 3, "v": "c"}], "merge")
    assert (dest.read_marker("job", "orders#0"), dest.read_marker("job", "orders#1")) == (first, second)
    assert dest.read_marker("job", "orders#2") is None and dest.read_marker("job", "orders") is None
    dest.maintain(schema.table, MaintenanceSettings())
    assert (dest.read_marker("job", "orders#0"), dest.read_marker("job", "orders#1")) == (first, second)


def test_maintenance_dry_run_changes_nothing(tmp_path: Path) -> None:
    dest = open_lake(tmp_path)
    schema = simple()
    dest.create_table(schema)
    for i in range(3):
        load(dest, schema, [{"id": i, "v": "a"}])
    version = dest.table(schema.table).version()
    report = dest.maintain(schema.table, MaintenanceSettings(dry_run=True))
    assert (report.files_before, report.files_after) == (3, 3)
    assert report.actions[0].startswith("would compact 3 file(s)")
    assert dest.table(schema.table).version() == version


@pytest.mark.parametrize("method", ["append", "overwrite", "merge"])
def test_a_large_load_is_spooled_to_a_private_file_and_streamed_into_its_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: UpdateMethod) -> None:
    import tempfile

    monkeypatch.setattr("copyjob.connectors.delta.spool.SPILL_ROWS", 3)
    spools = tmp_path / "spool"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    dest = open_lake(tmp_path)
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": 100, "v": "old"}])
    session = dest.begin_load(schema, method, ("id",))
    for i in range(0, 10, 2):
        session.write(rows_of(schema, [{"id": i, "v": "a"}, {"id": i + 1, "v": "b"}]))
    spooled = list(spools.iterdir())
    assert len(spooled) == 1 and oct(spooled[0].stat().st_mode & 0o777) == "0o600"
    session.commit(StateMarker("job", "t", "r", {}))
    assert list(spools.iterdir()) == []
    ids = sorted(r["id"] for r in pa.table(dest.table(schema.table).to_pyarrow_table()).to_pylist())
    assert ids == list(range(10)) + ([] if method == "overwrite" else [100])
    session = dest.begin_load(schema, "append", ("id",))  # a delete after the spill: the rows come back to memory
    for i in range(20, 30, 2):
        session.write(rows_of(schema, [{"id": i, "v": "a"}, {"id": i + 1, "v": "b"}]))
    assert session.delete_keys(pa.RecordBatch.from_pylist([{"id": 21}, {"id": 1}],
                                                          schema=schema.select(["id"]).arrow_schema())) == 2
    session.write(rows_of(schema, [{"id": 30, "v": "c"}]))
    session.commit(None)
    assert list(spools.iterdir()) == []
    ids = sorted(r["id"] for r in pa.table(dest.table(schema.table).to_pyarrow_table()).to_pylist())
    assert ids == [0, *range(2, 10), *range(20, 21), *range(22, 31)] + ([] if method == "overwrite" else [100])


# ---------------------------------------------------------------- types


EVERY_TYPE = TableSchema(TableName("types"), (
    Column("id", T("int64"), False), Column("i16", T("int16")), Column("i32", T("int32")),
    Column("f32", T("float32")), Column("f64", T("float64")), Column("dec", T("decimal", precision=38, scale=10)),
    Column("wide", T("decimal", precision=50, scale=5)), Column("num", T("decimal")), Column("s", T("string")),
    Column("s10", T("string", length=10)), Column("b", T("bool")), Column("d", T("date")), Column("tm", T("time")),
    Column("ts", T("timestamp")), Column("tstz", T("timestamptz")), Column("bin", T("binary")),
    Column("u", T("uuid")), Column("j", T("json"))), ("id",))
DELTA_TYPES = {"id": "long", "i16": "short", "i32": "integer", "f32": "float", "f64": "double",
               "dec": "decimal(38,10)", "wide": "string", "num": "string", "s": "string", "s10": "string",
               "b": "boolean", "d": "date", "tm": "long", "ts": "timestamp_ntz", "tstz": "timestamp", "bin": "binary",
               "u": "string", "j": "string"}
VALUES = {"id": 1, "i16": -32768, "i32": 2**31 - 1, "f32": 1.5, "f64": -2.25,
          "dec": Decimal("1234567890123456789012345678.0123456789"),
          "wide": Decimal("123456789012345678901234567890123.12345"),
          "num": "3.14159265358979323846264338327950288419716939937510", "s": "héllo ✓", "s10": "ten chars!",
          "b": True, "d": dt.date(1, 1, 1), "tm": dt.time(23, 59, 59, 999999),
          "ts": dt.datetime(9999, 12, 31, 23, 59, 59, 999999), "tstz": dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
          "bin": b"\x00\xff", "u": str(uuid.UUID(int=7)), "j": '{"a": [1, null]}'}


def test_every_logical_type_round_trips_through_delta_types(tmp_path: Path) -> None:
    dest = open_lake(tmp_path)
    dest.create_table(EVERY_TYPE)
    schema_json = json.loads(dest.table(EVERY_TYPE.table).schema().to_json())
    assert {f["name"]: f["type"] for f in schema_json["fields"]} == DELTA_TYPES
    reflected = dest.reflect(EVERY_TYPE.table)
    assert reflected is not None
    assert [(c.name, str(c.type), c.nullable) for c in reflected.columns] == \
        [(c.name, str(c.type), c.nullable) for c in EVERY_TYPE.columns]
    empty = {name: None for name in VALUES} | {"id": 2}
    load(dest, EVERY_TYPE, [VALUES, empty], "merge")
    # deltalake's own reader, then the logical types back
    table = dest.table(EVERY_TYPE.table)
    read = from_storage(pa.table(table.to_pyarrow_table()), EVERY_TYPE)
    assert sorted(read.to_pylist(), key=lambda r: r["id"]) == [VALUES, empty]
    # pyarrow.parquet on the data files: Delta's storage values (time as microseconds since midnight)
    stored = pa.concat_tables([pq.read_table(u.removeprefix("file://")) for u in table.file_uris()])
    first = next(r for r in stored.to_pylist() if r["id"] == 1)
    assert first["tm"] == ((23 * 60 + 59) * 60 + 59) * 1_000_000 + 999999
    assert first["dec"] == VALUES["dec"] and first["wide"] == str(VALUES["wide"]) and first["tstz"] == VALUES["tstz"]
    assert stored.schema.field("ts").type == pa.timestamp("us") and stored.schema.field("tstz").type.tz == "UTC"


def test_a_table_written_by_another_tool_reflects_from_its_delta_types(tmp_path: Path) -> None:
    deltalake.write_deltalake(str(tmp_path / "lake" / "other"), pa.table({
        "n": pa.array([1], pa.int8()), "x": pa.array([Decimal("1.5")], pa.decimal128(5, 1)),
        "t": pa.array([0], pa.timestamp("us", "UTC")), "s": ["a"]}))
    reflected = open_lake(tmp_path).reflect(TableName("other"))
    assert reflected is not None
    assert [str(c.type) for c in reflected.columns] == ["int16", "decimal(5,1)", "timestamptz", "string"]
    assert reflected.primary_key == ()


# ---------------------------------------------------------------- layout


def test_partition_by_from_the_job_file_partitions_the_new_table(tmp_path: Path) -> None:
    dest = open_lake(tmp_path, partition_by=json.dumps({"events": ["day"]}))
    schema = TableSchema(TableName("events"), (Column("id", T("int64"), False), Column("day", T("date"))), ("id",))
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "day": dt.date(2026, 1, 1)}, {"id": 2, "day": dt.date(2026, 1, 2)}], "merge")
    table = dest.table(schema.table)
    assert table.metadata().partition_columns == ["day"]
    assert len(table.file_uris()) == 2
    dest.create_table(simple("plain"))  # tables the option does not name are not partitioned
    assert dest.table(TableName("plain")).metadata().partition_columns == []
    with pytest.raises(ConfigurationError, match="partition_by"):
        open_lake(tmp_path, partition_by=json.dumps({"bad": ["nope"]})).create_table(simple("bad"))


def test_a_load_with_columns_the_table_lacks_adds_them(tmp_path: Path) -> None:
    """Schema evolution on write: a change stream that starts with rows of a column added at the source while
    copyjob was not running."""
    dest = open_lake(tmp_path)
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "v": "a"}])
    wider = TableSchema(schema.table, (*schema.columns, Column("extra", T("int32"))), ("id",))
    load(dest, wider, [{"id": 1, "v": "b", "extra": 5}], "merge")
    reflected = dest.reflect(schema.table)
    assert reflected is not None and reflected.column_names == ["id", "v", "extra"]
    assert pa.table(dest.table(schema.table).to_pyarrow_table()).to_pylist() == [{"id": 1, "v": "b", "extra": 5}]


@pytest.mark.parametrize("name", ["a/b", "..", "../escape", "x\\y", "%2E%2E", "~7e", "naïve?#"])
def test_table_folders_stay_inside_the_root(tmp_path: Path, name: str) -> None:
    dest = open_lake(tmp_path)
    schema = simple(name)
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "v": "a"}], marker=StateMarker("j", name, "r", {}))
    lake = (tmp_path / "lake").resolve()
    folders = [p for p in lake.iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0].parent == lake
    assert dest.read_marker("j", name) == StateMarker("j", name, "r", {})


def test_s3_storage_options_come_from_the_endpoint_options() -> None:
    from copyjob.connectors.delta.storage import _s3_storage_options

    options = _s3_storage_options({"endpoint_url": "http://127.0.0.1:9000", "access_key": "k", "secret_key": "s"})
    assert options["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000" and options["AWS_ALLOW_HTTP"] == "true"
    assert (options["AWS_ACCESS_KEY_ID"], options["AWS_SECRET_ACCESS_KEY"]) == ("k", "s")
