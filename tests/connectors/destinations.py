"""The destinations that the contract suite (test_destination_contract.py) runs over: one small factory per
system that opens a fresh, empty destination and can read a table back, as dlt's ``destinations_configs``.

A new destination proves itself by adding its factory here and passing the suite. What a destination cannot
do is read from its ``capabilities`` (see ``require``); the one trait the capabilities record does not carry,
whether the system refuses a duplicate primary key, is declared by the factory (``enforces_primary_key``).
Contract tests that a destination is known to fail run as strict xfails, each bug named in ``KNOWN_BUGS``:
the day the connector is fixed, its entry must go.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from copyjob.connectors import open_destination, open_source

from copyjob.core.contracts import Destination, Source
from copyjob.core.schema import TableName, TableSchema
from copyjob.core.urls import ConnectionUrl, parse_url


@dataclass
class DestinationCase:
    """A fresh destination under test, and a reader of what it holds (another connection or a file reader,
    so that only committed data is seen)."""

    name: str
    url: ConnectionUrl
    destination: Destination
    read_batches: Callable[[DestinationCase, TableSchema], list[pa.RecordBatch]]
    enforces_primary_key: bool = True
    """A row whose primary key is already in the table is refused (databases yes, folders of files no)."""
    indexes: Callable[[DestinationCase, TableName], set[tuple[tuple[str, ...], bool]]] | None = None
    """The table's indexes as (columns, unique), the primary key's among them; None: the system has none."""
    _sources: list[Source] = field(default_factory=list)
    cleanup: ExitStack = field(default_factory=ExitStack)
    """Closed first by ``close``."""

    def rows(self, schema: TableSchema) -> list[dict[str, Any]]:
        """The committed rows of ``schema.table`` (``schema.columns`` only), in no particular order."""
        return [row for batch in self.read_batches(self, schema) for row in batch.to_pylist()]

    def source(self) -> Source:
        """A source on the same database, opened on first use (for SQL destinations)."""
        if not self._sources:
            self._sources.append(open_source(self.url))
        return self._sources[0]

    def close(self) -> None:
        self.cleanup.close()
        for source in self._sources:
            source.close()
        self.destination.close()


def _read_with_source(case: DestinationCase, schema: TableSchema) -> list[pa.RecordBatch]:
    return list(case.source().read(schema))


def _folder_reader(locate: Callable[[Any, TableSchema], str]) -> Callable[[DestinationCase, TableSchema],
                                                                           list[pa.RecordBatch]]:
    """What any reader of a table's folder sees: pyarrow.dataset over the published Parquet files (hidden
    files skipped), with the table's current (possibly widened) schema."""

    def read(case: DestinationCase, schema: TableSchema) -> list[pa.RecordBatch]:
        import pyarrow.dataset as ds

        current = case.destination.reflect(schema.table)
        assert current is not None, f"{schema.table} does not exist"
        dataset = ds.dataset(locate(case.destination, schema), format="parquet", schema=current.arrow_schema())
        return dataset.to_table(columns=schema.column_names).to_batches()

    return read


_read_parquet = _folder_reader(lambda dest, schema: str(dest.folder(schema.table)))
_read_file_outputs = _folder_reader(lambda dest, schema: dest.root.full(dest.folder(schema.table)))


IndexReader = Callable[[DestinationCase, TableName], set[tuple[tuple[str, ...], bool]]]


def _sqlite_indexes(case: DestinationCase, table: TableName) -> set[tuple[tuple[str, ...], bool]]:
    import sqlite3

    assert case.url.path is not None
    with sqlite3.connect(case.url.path) as con:
        found = set()
        for _, name, unique, *_ in con.execute("SELECT * FROM pragma_index_list(?)", (table.name,)).fetchall():
            columns = [r[2] for r in con.execute("SELECT * FROM pragma_index_info(?)", (name,)).fetchall()]
            found.add((tuple(columns), bool(unique)))
        # a lone INTEGER PRIMARY KEY is the rowid, which pragma_index_list does not list
        rowid = [r[1] for r in con.execute("SELECT * FROM pragma_table_info(?)", (table.name,)).fetchall()
                 if r[5] == 1 and r[2].upper() == "INTEGER"]
        pk_count = sum(1 for r in con.execute("SELECT * FROM pragma_table_info(?)", (table.name,)).fetchall()
                       if r[5])
        if rowid and pk_count == 1:
            found.add(((rowid[0],), True))
    return found


def _duckdb_indexes(case: DestinationCase, table: TableName) -> set[tuple[tuple[str, ...], bool]]:
    cur = case.source()._cur  # type: ignore[attr-defined]
    found = {(tuple(c.strip() for c in expressions.strip("[]").split(",")), bool(unique))
             for expressions, unique in cur.execute(
                 "SELECT expressions, is_unique FROM duckdb_indexes() WHERE table_name = ?", [table.name]).fetchall()}
    for (columns,) in cur.execute("SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
                                  "AND constraint_type = 'PRIMARY KEY'", [table.name]).fetchall():
        found.add((tuple(columns), True))
    return found


def _postgresql_indexes(case: DestinationCase, table: TableName) -> set[tuple[tuple[str, ...], bool]]:
    import psycopg

    sql = """SELECT array_agg(a.attname ORDER BY k.n), i.indisunique
             FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = to_regclass(%s) GROUP BY i.indexrelid, i.indisunique"""
    with psycopg.connect(case.url.raw) as conn:
        return {(tuple(columns), unique) for columns, unique in
                conn.execute(sql, ('"' + table.name.replace('"', '""') + '"',)).fetchall()}


def _mariadb_indexes(case: DestinationCase, table: TableName) -> set[tuple[tuple[str, ...], bool]]:
    sql = ("SELECT GROUP_CONCAT(column_name ORDER BY seq_in_index SEPARATOR ','), MIN(non_unique) = 0 "
           "FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = %s "
           "GROUP BY index_name")
    source: Any = case.source()
    with (source._pinned or source._conn).cursor() as cur:
        cur.execute(sql, (table.name,))
        return {(tuple(str(columns).split(",")), bool(unique)) for columns, unique in cur.fetchall()}


def _open(name: str, url: str, reader: Callable[[DestinationCase, TableSchema], list[pa.RecordBatch]],
          enforces_primary_key: bool = True, indexes: IndexReader | None = None) -> DestinationCase:
    parsed = parse_url(url)
    return DestinationCase(name, parsed, open_destination(parsed), reader, enforces_primary_key, indexes)


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> DestinationCase:
    return _open("sqlite", f"sqlite:///{tmp_path / 'db.sqlite'}", _read_with_source, indexes=_sqlite_indexes)


def _duckdb(request: pytest.FixtureRequest, tmp_path: Path) -> DestinationCase:
    return _open("duckdb", f"duckdb:///{tmp_path / 'db.duckdb'}", _read_with_source, indexes=_duckdb_indexes)


def _postgresql(request: pytest.FixtureRequest, tmp_path: Path) -> DestinationCase:
    return _open("postgresql", request.getfixturevalue("pg_url"), _read_with_source, indexes=_postgresql_indexes)


def _mariadb(request: pytest.FixtureRequest, tmp_path: Path) -> DestinationCase:
    case = _open("mariadb", request.getfixturevalue("mariadb_url"), _read_with_source, indexes=_mariadb_indexes)
    # every read on one connection: a new pymysql connection costs ~25 ms (it builds an SSL context each time)
    case.cleanup.enter_context(case.source().pinned())  # type: ignore[attr-defined]
    return case


def _parquet(request: pytest.FixtureRequest, tmp_path: Path) -> DestinationCase:
    # two rows a file, so that merges, deletes and updates always span several files
    return _open("parquet", f"parquet:///{tmp_path / 'lake'}?rows_per_file=2", _read_parquet,
                 enforces_primary_key=False)


def _files(request: pytest.FixtureRequest, tmp_path: Path) -> DestinationCase:
    return _open("files", f"file://{tmp_path / 'out'}?format=parquet", _read_file_outputs, enforces_primary_key=False)


def _read_iceberg(case: DestinationCase, schema: TableSchema) -> list[pa.RecordBatch]:
    """pyiceberg's own scan of the committed table, through a catalog of its own."""
    from copyjob.connectors.iceberg.types import columns_of, to_logical_arrow
    from pyiceberg.catalog.sql import SqlCatalog

    assert case.url.path is not None
    catalog = SqlCatalog("copyjob", uri=f"sqlite:///{case.url.path / 'catalog.db'}", warehouse=case.url.path.as_uri())
    try:
        table = catalog.load_table((schema.table.schema or "copyjob", schema.table.name))
        wanted = [c for c in columns_of(table.schema()) if c.name in schema.column_names]
        return to_logical_arrow(table.scan().to_arrow(), wanted).to_batches()
    finally:
        catalog.engine.dispose()


def _iceberg(request: pytest.FixtureRequest, tmp_path: Path) -> DestinationCase:
    return _open("iceberg", f"file://{tmp_path / 'lake'}?format=iceberg", _read_iceberg, enforces_primary_key=False)


def _read_delta(case: DestinationCase, schema: TableSchema) -> list[pa.RecordBatch]:
    """deltalake's own reader at the table's latest version, in the columns' logical types."""
    from copyjob.connectors.delta.types import from_storage
    from deltalake import DeltaTable

    current = case.destination.reflect(schema.table)
    assert current is not None, f"{schema.table} does not exist"
    uri = case.destination.lake.uri(str(schema.table))  # type: ignore[attr-defined]
    stored = pa.table(DeltaTable(uri).to_pyarrow_table(columns=schema.column_names))
    return from_storage(stored, current.select(schema.column_names)).to_batches()


def _delta(request: pytest.FixtureRequest, tmp_path: Path) -> DestinationCase:
    return _open("delta", f"file://{tmp_path / 'lake'}?format=delta", _read_delta, enforces_primary_key=False)


FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], DestinationCase]] = {
    "sqlite": _sqlite,
    "duckdb": _duckdb,
    "postgresql": _postgresql,
    "mariadb": _mariadb,
    "parquet": _parquet,
    "files": _files,
    "iceberg": _iceberg,
    "delta": _delta,
}


KNOWN_BUGS: dict[tuple[str, str], tuple[str, type[BaseException]]] = {
    # (destination, contract test) -> (the bug, how the test fails); a strict xfail until the connector is fixed
}


def mark_known_bug(request: pytest.FixtureRequest, destination: str) -> None:
    """Run a contract test that a destination is known to fail as a strict xfail (see KNOWN_BUGS)."""
    bug = KNOWN_BUGS.get((destination, request.node.originalname))
    if bug is not None:
        reason, raises = bug
        request.applymarker(pytest.mark.xfail(reason=reason, raises=raises, strict=True))


def require(case: DestinationCase, *capabilities: str) -> None:
    """Skip the test unless the destination declares every one of ``capabilities`` (fields of
    DestinationCapabilities, or ``enforces_primary_key``)."""
    for name in capabilities:
        declared = getattr(case, name) if name == "enforces_primary_key" else \
            getattr(case.destination.capabilities, name)
        if not declared:
            pytest.skip(f"{case.name} does not declare {name}")
