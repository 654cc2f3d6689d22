"""The fidelity matrix (declared in ``fidelity_cases``): a wide PostgreSQL table of every type and its edge
values, copied by the real CLI into every destination in every mode, each value read back and compared with
what the declaration promises. One run per destination × mode; the values a destination refuses are each in
a table of their own in one more job, whose run must name every one of them."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import os
import sqlite3
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.string import TextLoader

from tests.copyjob import fidelity_cases as fc
from tests.helpers import copyjob, write_job
from tests.pg_cdc import drop_slots, execute

STREAMED = 100
"""CDC: rows ``id + STREAMED`` are inserted after the snapshot, so every value also goes through the stream."""
_jobs = count()


@pytest.fixture
def source(pg_url: str) -> Iterator[str]:
    """The source database, whose sessions default to a zone far from UTC."""
    database = pg_url.rsplit("/", 1)[1]
    execute(pg_url, f"ALTER DATABASE {database} SET timezone = 'America/St_Johns'", fc.SETUP_SQL)
    yield pg_url
    drop_slots(pg_url)


def _create(url: str, table: str, cases: list[fc.Case]) -> None:
    columns = "".join(f", {c.column} {c.pg_type}" for c in cases)
    execute(url, f"CREATE TABLE {table} (id integer PRIMARY KEY{columns})")


def _insert(url: str, table: str, cases: list[fc.Case], offset: int = 0) -> None:
    """Row i holds each case's i-th value (NULL past its last one); the last row is all NULL."""
    rows = max(len(c.values) for c in cases) + 1
    for i in range(rows):
        values = "".join(f", ({c.values[i] if i < len(c.values) else 'NULL'})::{c.pg_type}" for c in cases)
        execute(url, f"INSERT INTO {table} VALUES ({offset + i + 1}{values})")


def _source_text(url: str, table: str, cases: list[fc.Case]) -> dict[int, dict[str, str | None]]:
    """Every value as PostgreSQL prints it (its output function, in UTC)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET timezone = 'UTC'")
        cur = conn.cursor()
        cur.execute(f"SELECT * FROM {table} LIMIT 0")
        for column in cur.description or ():
            cur.adapters.register_loader(column.type_code, TextLoader)
        names = ["id", *(c.column for c in cases)]
        found = cur.execute(f"SELECT {', '.join(names)} FROM {table}").fetchall()
    return {int(r[0]): dict(zip(names[1:], r[1:], strict=True)) for r in found}


# ------------------------------------------------------------ the destinations, read back as text


def _text(value: Any) -> str | None:
    """A value a driver handed out, as text PostgreSQL parses back into the source column's type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else "Infinity" if value == math.inf else \
            "-Infinity" if value == -math.inf else repr(value)
    if isinstance(value, dt.timedelta):  # MySQL TIME
        seconds = int(value.total_seconds())
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{value.microseconds:06d}"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def _read_postgresql(url: str, folder: Path) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET timezone = 'UTC'")
        cur = conn.cursor()
        cur.execute("SELECT * FROM fidelity LIMIT 0")
        for column in cur.description or ():
            cur.adapters.register_loader(column.type_code, TextLoader)
        cur.execute("SELECT * FROM fidelity")
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _read_mariadb(url: str, folder: Path) -> list[dict[str, Any]]:
    import pymysql
    from pymysql.cursors import DictCursor

    from copyjob.core.urls import parse_url

    parsed = parse_url(url)
    conn = pymysql.connect(host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password,
                           database=parsed.database, charset="utf8mb4", cursorclass=DictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("SELECT column_name AS name, data_type AS type FROM information_schema.columns "
                        "WHERE table_schema = DATABASE() AND table_name = 'fidelity' ORDER BY ordinal_position")
            # FLOAT through the text protocol has 6 digits: read its exact value as a DOUBLE
            exprs = [f"CAST(`{c['name']}` AS DOUBLE) AS `{c['name']}`" if c["type"] == "float" else f"`{c['name']}`"
                     for c in cur.fetchall()]
            cur.execute(f"SELECT {', '.join(exprs)} FROM fidelity")
            return [{k: _text(v) for k, v in row.items()} for row in cur.fetchall()]
    finally:
        conn.close()


def _read_sqlite(url: str, folder: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(folder / "dst.db")
    try:
        cur = con.execute("SELECT * FROM fidelity")
        names = [d[0] for d in cur.description]
        return [{k: _text(v) for k, v in zip(names, row, strict=True)} for row in cur]
    finally:
        con.close()


def _duckdb_rows(con: Any, relation: str) -> list[dict[str, Any]]:
    """Every column as DuckDB prints it (blobs as hex), so that infinity and BC survive the reading."""
    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    exprs = [f"'\\x' || lower(hex(\"{name}\"))" if kind == "BLOB" else f"\"{name}\"::VARCHAR"
             for name, kind, *_ in described]
    names = [d[0] for d in described]
    rows = con.execute(f"SELECT {', '.join(exprs)} FROM {relation}").fetchall()
    return [{n: (None if v is None else v.replace(" (BC)", " BC")) for n, v in zip(names, r, strict=True)}
            for r in rows]


def _read_duckdb(url: str, folder: Path) -> list[dict[str, Any]]:
    import duckdb

    con = duckdb.connect(str(folder / "dst.duckdb"), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return _duckdb_rows(con, "fidelity")
    finally:
        con.close()


def _arrow_text(column: Any) -> list[str | None]:
    """An Arrow column as text: decimals as Arrow prints them (every digit), dates, times and timestamps in
    PostgreSQL's spelling where Python has no value for them (copyjob's infinity: see ``core.temporal``)."""
    import pyarrow as pa

    from copyjob.core import temporal

    if pa.types.is_decimal(column.type):
        return column.cast(pa.string()).to_pylist()
    if pa.types.is_date(column.type) or pa.types.is_time(column.type) or pa.types.is_timestamp(column.type):
        return temporal.as_pg_text(column).to_pylist()
    return [_text(v) for v in column.to_pylist()]


def _read_parquet(url: str, folder: Path) -> list[dict[str, Any]]:
    """Parquet through pyarrow (DuckDB reads decimals wider than 38 digits as doubles)."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for path in sorted((folder / "lake" / "fidelity").rglob("*.parquet")):
        if path.name.startswith((".", "_")):
            continue
        table = pq.read_table(path)
        columns = {name: _arrow_text(table.column(name).combine_chunks()) for name in table.column_names}
        rows.extend({name: values[i] for name, values in columns.items()} for i in range(table.num_rows))
    return rows


def _read_csv(url: str, folder: Path) -> list[dict[str, Any]]:
    """CSV as Arrow writes it: NULL is an empty unquoted field, a string is quoted."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rows = []
    for path in sorted((folder / "out" / "fidelity").rglob("*.csv")):
        header = path.read_text(encoding="utf-8").splitlines()[0]
        names = [n.strip('"') for n in header.split(",")]
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, null_values=[""], strings_can_be_null=True,
            quoted_strings_can_be_null=False))
        rows.extend(table.to_pylist())
    return rows


def _read_jsonl(url: str, folder: Path) -> list[dict[str, Any]]:
    binary = {c.column for c in fc.CASES if c.pg_type == "bytea"}
    rows = []
    for path in sorted((folder / "out" / "fidelity").rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)  # strict: no bare NaN
            rows.append({k: ("\\x" + base64.b64decode(v).hex() if k in binary and v is not None else
                             v if isinstance(v, str) else _text(v)) for k, v in doc.items()})
    return rows


def _read_iceberg(url: str, folder: Path) -> list[dict[str, Any]]:
    """Iceberg through pyiceberg's own scan (a catalog of its own on the destination's SQLite catalog)."""
    from pyiceberg.catalog.sql import SqlCatalog

    lake = folder / "lake"
    catalog = SqlCatalog("copyjob", uri=f"sqlite:///{lake / 'catalog.db'}", warehouse=lake.as_uri())
    table = catalog.load_table(("copyjob", "fidelity")).scan().to_arrow()
    columns = {name: _arrow_text(table.column(name).combine_chunks()) for name in table.column_names}
    return [{name: values[i] for name, values in columns.items()} for i in range(table.num_rows)]


def _read_delta(url: str, folder: Path) -> list[dict[str, Any]]:
    """Delta through deltalake's own query engine; columns back in their logical types from the tags copyjob keeps in
    the Delta schema (time is stored as microseconds since midnight)."""
    import pyarrow as pa
    from copyjob.connectors.delta.types import from_storage, schema_from_delta
    from deltalake import DeltaTable, QueryBuilder

    from copyjob.core.schema import TableName

    table = DeltaTable(str(folder / "lake" / "fidelity"))
    schema = schema_from_delta(TableName("fidelity"), table.schema().to_json(), {})
    # its query engine: to_pyarrow_table parses file statistics with Python dates, which stop at year 1
    read = from_storage(pa.table(QueryBuilder().register("t", table).execute("SELECT * FROM t").read_all()), schema)
    columns = {name: _arrow_text(read.column(name).combine_chunks()) for name in read.column_names}
    return [{name: values[i] for name, values in columns.items()} for i in range(read.num_rows)]


_READERS = {"postgresql": _read_postgresql, "mariadb": _read_mariadb, "sqlite": _read_sqlite,
            "duckdb": _read_duckdb, "parquet": _read_parquet, "csv": _read_csv, "jsonl": _read_jsonl,
            "iceberg": _read_iceberg, "delta": _read_delta}


def _destination(name: str, request: pytest.FixtureRequest, folder: Path) -> dict[str, Any]:
    if name == "postgresql":
        url = request.getfixturevalue("pg_url2")
        execute(url, f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET timezone = 'Asia/Kathmandu'")
        return {"url": url}
    if name == "mariadb":
        return {"url": request.getfixturevalue("mariadb_url")}
    if name in ("csv", "jsonl"):
        return {"url": "file:out", "format": name}
    if name in ("iceberg", "delta"):
        return {"url": "./lake", "format": name}
    return {"url": {"sqlite": "sqlite:///dst.db", "duckdb": "duckdb:///dst.duckdb",
                    "parquet": "parquet:///lake"}[name]}


# ------------------------------------------------------------ comparing, through PostgreSQL


def _normalised(url: str, case: fc.Case, expectation: str, pairs: list[tuple[str | None, str | None]]
                ) -> list[tuple[str | None, str | None]] | str:
    """(expected, found) per pair, both cast to the compared type and printed; or the error that casting hit."""
    conversion = fc.CONVERSIONS.get(expectation)
    compare_as = (conversion.compare_as if conversion else None) or case.pg_type
    expected = (conversion.expected if conversion else "{v}").format(v=f"src::{case.pg_type}")
    # a numeric's scale belongs to its column: compare values (1.50 = 1.5)
    shown = "trim_scale(({})::numeric)::text" if compare_as.startswith("numeric") else "({})::text"
    query = (f"SELECT {shown.format(f'({expected})::{compare_as}')}, {shown.format(f'dst::{compare_as}')} "
             "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS u(src, dst, n) ORDER BY n")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET timezone = 'UTC'")
            return [tuple(r) for r in conn.execute(query, ([s for s, _ in pairs], [d for _, d in pairs]))]
    except psycopg.Error as exc:
        return f"{exc}".strip()


def _mismatches(url: str, destination: str, mode: str, cases: list[fc.Case],
                want: dict[int, dict[str, str | None]], got: list[dict[str, Any]]) -> list[str]:
    by_id = {int(str(r["id"])): r for r in got}
    problems = [f"row id={i} missing" for i in want if i not in by_id]
    ids = [i for i in want if i in by_id]
    for case in cases:
        pairs = [(want[i][case.column], by_id[i].get(case.column)) for i in ids]
        compared = _normalised(url, case, fc.expectation(case, destination, mode), pairs)
        if isinstance(compared, str):
            problems.append(f"{case.column} ({case.pg_type}): {compared}: {pairs}")
            continue
        for i, (raw, (expected, found)) in zip(ids, zip(pairs, compared, strict=True), strict=True):
            if expected != found:
                problems.append(f"{case.column} ({case.pg_type}) id={i}: source {raw[0]!r} → {raw[1]!r}, "
                                f"expected {expected!r}, found {found!r}")
    return problems


# ------------------------------------------------------------ the runs


def _job(tmp_path: Path, source: str, destination: dict[str, Any], mode: str, tables: list[str],
         kafka: Any = None) -> Path:
    files = destination.get("format") in ("csv", "jsonl")
    copy: dict[str, Any] = {"mode": "cdc" if mode == "kafka" else mode,
                            "update_method": "append" if mode == "full" or files else "merge"}
    job: dict[str, Any] = {"job": f"fidelity{os.getpid()}x{next(_jobs)}", "source": {"url": source},
                           "destination": destination, "copy": copy,
                           "tables": [{"name": t, **({"incremental_column": "id"} if mode == "incremental" else {})}
                                      for t in tables]}
    if mode in ("cdc", "kafka"):
        job["cdc"] = {"max_batch_delay": "50ms"}
    if mode == "kafka":
        job["transport"] = "kafka"
        job["kafka"] = {"bootstrap_servers": kafka.bootstrap, "topic_prefix": job["job"]}
    return write_job(tmp_path / "job.yaml", job)


def _run(job: Path) -> None:
    result = copyjob("run", job, "--no-progress")
    assert result.code == 0, result.output


CELLS = [(d, m) for d in fc.DESTINATIONS for m in ("full", "incremental", "cdc")
         if not (m == "incremental" and d in ("csv", "jsonl"))] + \
    [(d, "kafka") for d in ("postgresql", "sqlite", "jsonl")]
"""Every destination in the direct modes (csv and jsonl append, so their incremental run would repeat the full
one); change capture through Kafka for a representative few (the Kafka leg carries the same Arrow batches to
every destination, and each of its decoding paths is taken: batch into a database, message by message into
files)."""


@pytest.mark.parametrize(("destination", "mode"), CELLS)
def test_every_value_arrives_as_declared(tmp_path: Path, request: pytest.FixtureRequest, source: str,
                                         destination: str, mode: str) -> None:
    cases = fc.cases_for(destination, mode, errors=False)
    _create(source, "fidelity", cases)
    _insert(source, "fidelity", cases)
    kafka = request.getfixturevalue("kafka_broker") if mode == "kafka" else None
    job = _job(tmp_path, source, _destination(destination, request, tmp_path), mode, ["fidelity"], kafka)
    _run(job)
    if mode in ("cdc", "kafka"):  # the same values again, through the stream
        _insert(source, "fidelity", cases, offset=STREAMED)
        _run(job)
    got = _READERS[destination](_job_url(job), tmp_path)
    problems = _mismatches(source, destination, mode, cases, _source_text(source, "fidelity", cases), got)
    assert not problems, f"{destination} × {mode}:\n" + "\n".join(problems)


def _job_url(job: Path) -> str:
    import yaml

    return str(yaml.safe_load(job.read_text())["destination"]["url"])


_READ_SIDE = {c.column for c in fc.CASES if all(fc.expectation(c, d) == "error" for d in fc.DESTINATIONS)}
"""Values the source's reader refuses, whatever the destination: checked once, into PostgreSQL."""
REFUSING = [(d, "incremental") for d in fc.DESTINATIONS
            if d == "postgresql" or {c.column for c in fc.cases_for(d, "incremental", errors=True)} - _READ_SIDE]
"""One run per destination with every value it refuses, each in a table of its own. Incremental: a full append
into PostgreSQL whose column types all match passes the binary COPY stream through undecoded (a numeric(p,s)
NaN included); the wide table of the other test, with types PostgreSQL destinations do not share (enum), does
not."""


@pytest.mark.parametrize(("destination", "mode"), REFUSING)
def test_refused_values_fail_their_table_by_name(tmp_path: Path, request: pytest.FixtureRequest, source: str,
                                                 destination: str, mode: str) -> None:
    refused = [c for c in fc.cases_for(destination, mode, errors=True)
               if destination == "postgresql" or c.column not in _READ_SIDE]
    for case in refused:
        _create(source, f"refused_{case.column}", [case])
        _insert(source, f"refused_{case.column}", [case])
    job = _job(tmp_path, source, _destination(destination, request, tmp_path), mode,
               [f"refused_{c.column}" for c in refused])
    result = copyjob("run", job, "--no-progress")
    assert result.code == 1, result.output
    for case in refused:
        at = result.output.find(f"failed: refused_{case.column}:")
        assert at >= 0 and case.column in result.output[at + 16 + len(case.column):at + 400], \
            f"{case.column}: {result.output}"


@pytest.mark.parametrize("destination", fc.DESTINATIONS)
def test_the_docs_show_the_declared_matrix(destination: str) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    assert fc.documented(destination, docs) == fc.render_markdown(destination), \
        f"docs/{fc.DOC_PAGES[destination]}: run `python -m tests.copyjob.fidelity_cases`"


def test_every_expectation_is_declared_once() -> None:
    columns = [c.column for c in fc.CASES]
    assert len(columns) == len(set(columns))
    assert set(fc.EXPECT) <= set(columns)
    for cells in fc.EXPECT.values():
        assert set(cells) <= set(fc.DESTINATIONS)
        assert set(cells.values()) <= set(fc.CONVERSIONS)
