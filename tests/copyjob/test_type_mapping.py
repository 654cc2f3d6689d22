"""The type mapping round trip for every pair of connectors: a table holding every logical type (and a row
of NULLs) is made in the source system, copied by the real CLI, and read back from the destination."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from copyjob.connectors import open_destination, open_source

from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url
from tests.helpers import copyjob, write_job

SCHEMA = TableSchema(TableName("alltypes"), (
    Column("id", LogicalType("int64"), nullable=False),
    Column("i16", LogicalType("int16")),
    Column("i32", LogicalType("int32")),
    Column("f32", LogicalType("float32")),
    Column("f64", LogicalType("float64")),
    Column("dec", LogicalType("decimal", precision=12, scale=2)),
    Column("wide", LogicalType("decimal", precision=30, scale=10)),
    Column("s", LogicalType("string")),
    Column("vs", LogicalType("string", length=20)),
    Column("b", LogicalType("bool")),
    Column("d", LogicalType("date")),
    Column("t", LogicalType("time")),
    Column("ts", LogicalType("timestamp")),
    Column("tstz", LogicalType("timestamptz")),
    Column("bin", LogicalType("binary")),
    Column("u", LogicalType("uuid")),
    Column("j", LogicalType("json")),
), primary_key=("id",))

FULL = {
    "id": 1, "i16": -32768, "i32": 2_147_483_647, "f32": 1.5, "f64": 3.141592653589793,
    "dec": Decimal("-1234567890.12"), "wide": Decimal("12345678901234567890.0123456789"),
    "s": "héllo, \"world\"\n\ttab ✓", "vs": "short", "b": True, "d": dt.date(1999, 12, 31),
    "t": dt.time(23, 59, 59, 999_999), "ts": dt.datetime(2026, 3, 29, 2, 30, 0, 123_456),
    "tstz": dt.datetime(2026, 11, 25, 23, 0, 0, 654_321, tzinfo=dt.UTC), "bin": b"\x00\x01\xfe\xff",
    "u": str(uuid.UUID("12345678-1234-5678-1234-567812345678")), "j": '{"a": [1, 2, {"b": null}]}',
}
NULLS = {c.name: (2 if c.name == "id" else None) for c in SCHEMA.columns}
SOURCES = ["postgres", "mariadb", "sqlite", "duckdb"]
DESTINATIONS = ["postgres", "mariadb", "sqlite", "duckdb", "parquet"]


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest, role: str) -> str:
    if kind == "postgres":
        return str(request.getfixturevalue("pg_url" if role == "source" else "pg_url2"))
    if kind == "mariadb":
        server = request.getfixturevalue("mariadb_server")
        return str(server.create_database(f"{role}_{uuid.uuid4().hex[:8]}"))
    suffix = {"sqlite": "db", "duckdb": "duckdb", "parquet": ""}[kind]
    return f"{kind}:///{role}.{suffix}".rstrip(".") if suffix else f"{kind}:///{role}_dir"


def _make_source(url: str, base: Path) -> None:
    dest = open_destination(parse_url(url, base))
    try:
        dest.create_table(SCHEMA)
        session = dest.begin_load(SCHEMA, "append", ())
        rows = [FULL, NULLS]
        arrays = [pa.array([r[c.name] for r in rows], type=SCHEMA.arrow_schema().field(c.name).type)
                  for c in SCHEMA.columns]
        session.write(pa.RecordBatch.from_arrays(arrays, schema=SCHEMA.arrow_schema()))
        session.commit(None)
    finally:
        dest.close()


def _read_back(url: str, base: Path) -> list[dict[str, Any]]:
    parsed = parse_url(url, base)
    if parsed.scheme == "parquet":
        import pyarrow.dataset as ds

        assert parsed.path is not None
        table = ds.dataset(str(parsed.path / "alltypes"), format="parquet").to_table()
    else:
        source = open_source(parsed)
        try:
            schema = source.reflect(TableName("alltypes"))
            table = pa.Table.from_batches(list(source.read(schema)), schema=schema.arrow_schema())
        finally:
            source.close()
    return sorted(table.to_pylist(), key=lambda r: r["id"])


def _normal(name: str, value: Any) -> Any:
    """Compare what the mapping promises: exact values, time zones normalised to UTC, json by meaning."""
    if value is None:
        return None
    if name == "j":
        return json.loads(value)
    if name == "u":
        return str(uuid.UUID(str(value)))
    if name == "tstz" and isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
    if name in ("dec", "wide"):
        return Decimal(str(value))
    if name == "bin":
        return bytes(value)
    if name == "b":
        return bool(value)
    if name == "f32":
        return round(float(value), 5)
    return value


@pytest.mark.parametrize("destination", DESTINATIONS)
@pytest.mark.parametrize("source", SOURCES)
def test_every_type_survives_the_copy(tmp_path: Path, request: pytest.FixtureRequest, source: str,
                                      destination: str) -> None:
    src_url = _url(source, tmp_path, request, "source")
    dst_url = _url(destination, tmp_path, request, "destination")
    _make_source(src_url, tmp_path)
    job = write_job(tmp_path / "job.yaml", {
        "job": "types", "source": {"url": src_url}, "destination": {"url": dst_url},
        "copy": {"mode": "full", "update_method": "overwrite"}, "tables": [{"name": "alltypes"}]})
    out = copyjob("run", job)
    assert out.code == 0, out.output
    got = _read_back(dst_url, tmp_path)
    assert len(got) == 2
    for want, row in zip([FULL, NULLS], got, strict=True):
        for c in SCHEMA.columns:
            assert _normal(c.name, row[c.name]) == _normal(c.name, want[c.name]), \
                f"{source}→{destination}: column {c.name}"
