"""Full loads (copyjob.snapshot.full_load): a table read whole as record batches, cut into key ranges read in
parallel by clones of the source. Real SQLite files under tmp_path (and PostgreSQL once); sources that fail or
never end are small fakes. No test sleeps: it waits on conditions, with a deadline."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from copyjob.connectors.postgres import PostgresSource
from copyjob.connectors.sqlite import SqliteSource
from copyjob.snapshot import key_chunks, read_binary, read_table
from copyjob.snapshot.full_load import MIN_ROWS_PER_CHUNK

from copyjob.core.contracts import Bound, RowFilter, Source
from copyjob.core.errors import DataError
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from copyjob.core.urls import parse_url
from tests.services.postgres import PostgresServer

DEADLINE_S = 30.0
LOW, HIGH = -150_000, 160_000  # a key span wide enough to be cut (MIN_ROWS_PER_CHUNK)


def make_table(path: Path, ids: Sequence[int | None], table: str = "t",
               key: str = "id INTEGER PRIMARY KEY") -> None:
    with sqlite3.connect(path) as con:
        con.execute(f"CREATE TABLE {table} ({key}, v TEXT, g INTEGER)")
        con.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)",
                        [(i, None if i is not None and i % 5 == 0 else f"v{i}", None if i is None else i % 7)
                         for i in ids])
    con.close()


def chunk_edges(parallel: int) -> list[int]:
    """Where key_chunks cuts [LOW, HIGH] into ``parallel`` ranges."""
    step = (HIGH - LOW) // parallel + 1
    return [LOW + i * step for i in range(parallel)]


def sparse_ids(parallel: int) -> list[int]:
    """Every 997th key, the ends of the span, and the keys on both sides of every cut."""
    ids = set(range(LOW, HIGH + 1, 997)) | {LOW, HIGH}
    for edge in chunk_edges(parallel):
        ids |= {edge - 1, edge, edge + 1}
    return sorted(i for i in ids if LOW <= i <= HIGH)


def expected_rows(ids: Sequence[int | None]) -> Counter[tuple[Any, ...]]:
    return Counter((i, None if i is not None and i % 5 == 0 else f"v{i}", None if i is None else i % 7)
                   for i in ids)


def row_set(batches: Sequence[pa.RecordBatch]) -> Counter[tuple[Any, ...]]:
    """The rows read, each with how many times it was read."""
    return Counter(tuple(r.values()) for b in batches for r in b.to_pylist())


class Tracked:
    """A source that counts its clones and whether they were closed (read_table must close each)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.capabilities = source.capabilities
        self.clones: list[Tracked] = []
        self.closed = False

    def reflect(self, table: TableName) -> TableSchema:
        return self.source.reflect(table)

    def key_range(self, table: TableName, column: str) -> tuple[Any, Any]:
        return self.source.key_range(table, column)

    def read(self, schema: TableSchema, filters: Sequence[RowFilter] = (),
             batch_rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        return self.source.read(schema, filters, batch_rows)

    def clone(self) -> Tracked:
        clone = Tracked(self.source.clone())
        self.clones.append(clone)
        return clone

    def close(self) -> None:
        self.closed = True
        self.source.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "source.sqlite"


def open_sqlite(db: Path) -> Tracked:
    return Tracked(SqliteSource(parse_url(f"sqlite:///{db}")))


# ---------------------------------------------------------------- key ranges


@pytest.mark.parametrize("parallel", [2, 3, 4, 7])
def test_key_chunks_tile_the_key_span(db: Path, parallel: int) -> None:
    make_table(db, [LOW, HIGH])
    src = open_sqlite(db)
    schema = src.reflect(TableName("t"))
    chunks = key_chunks(src, schema, parallel)  # type: ignore[arg-type]
    assert len(chunks) == parallel
    assert all(c.column == "id" and c.lower and c.lower.inclusive and c.upper and not c.upper.inclusive
               for c in chunks)
    assert chunks[0].lower == Bound(LOW, True) and chunks[-1].upper == Bound(HIGH + 1, False)
    assert all(a.upper.value == b.lower.value for a, b in itertools.pairwise(chunks))  # type: ignore[union-attr]
    assert [c.lower.value for c in chunks] == chunk_edges(parallel)  # type: ignore[union-attr]
    src.close()


def test_what_is_not_cut(tmp_path: Path) -> None:
    narrow, empty, text_key, pair_key = (tmp_path / f"{n}.sqlite" for n in ("narrow", "empty", "text", "pair"))
    make_table(narrow, [0, MIN_ROWS_PER_CHUNK - 1])
    make_table(empty, [])
    make_table(text_key, [], key="id TEXT PRIMARY KEY")
    with sqlite3.connect(pair_key) as con:
        con.execute("CREATE TABLE t (id INTEGER, k INTEGER, PRIMARY KEY (id, k))")
    con.close()
    for path in (narrow, empty, text_key, pair_key):
        src = open_sqlite(path)
        schema = src.reflect(TableName("t"))
        assert key_chunks(src, schema, 4) == [], path.name  # type: ignore[arg-type]
        src.close()
    src = open_sqlite(narrow)
    wide = src.reflect(TableName("t"))
    assert key_chunks(src, wide, 1) == []  # type: ignore[arg-type]
    assert key_chunks(src, TableSchema(wide.table, wide.columns), 4) == []  # type: ignore[arg-type]
    src.close()


# ---------------------------------------------------------------- every row once


@pytest.mark.parametrize(("parallel", "batch_rows"), [(1, 64), (2, 1), (4, 50), (7, 33)])
def test_every_row_is_read_exactly_once(db: Path, parallel: int, batch_rows: int) -> None:
    ids = sparse_ids(max(parallel, 2))
    make_table(db, ids)
    src = open_sqlite(db)
    schema = src.reflect(TableName("t"))
    batches = list(read_table(src, schema, batch_rows=batch_rows, parallel=parallel))  # type: ignore[arg-type]
    assert row_set(batches) == expected_rows(ids)  # no row missing, none twice
    assert all(b.schema == schema.arrow_schema() for b in batches)
    chunks = key_chunks(src, schema, parallel)  # type: ignore[arg-type]
    assert len(src.clones) == len(chunks)  # one clone per range (none when not cut) …
    assert all(c.closed for c in src.clones)  # … each closed when the read is done
    src.close()


def test_batch_sizes_are_respected(db: Path) -> None:
    ids = sparse_ids(4)
    make_table(db, ids)
    src = open_sqlite(db)
    schema = src.reflect(TableName("t"))
    one_reader = list(read_table(src, schema, batch_rows=40, parallel=1))  # type: ignore[arg-type]
    full, rest = divmod(len(ids), 40)
    assert [b.num_rows for b in one_reader] == [40] * full + ([rest] if rest else [])  # in order, one reader
    four = list(read_table(src, schema, batch_rows=40, parallel=4))  # type: ignore[arg-type]
    sizes = [b.num_rows for b in four]
    assert sum(sizes) == len(ids) and max(sizes) == 40
    assert sum(1 for n in sizes if n < 40) <= 4  # only the last batch of each range may be short
    assert all(n > 0 for n in sizes)
    src.close()


@pytest.mark.parametrize("parallel", [1, 4])
def test_filters_are_respected(db: Path, parallel: int) -> None:
    ids = sparse_ids(4)
    make_table(db, ids)
    src = open_sqlite(db)
    schema = src.reflect(TableName("t"))

    def read(*filters: RowFilter) -> Counter[tuple[Any, ...]]:
        return row_set(list(read_table(src, schema, filters, batch_rows=25, parallel=parallel)))  # type: ignore[arg-type]

    assert read(RowFilter("g", lower=Bound(2, True), upper=Bound(4, False))) == \
        expected_rows([i for i in ids if i % 7 in (2, 3)])
    assert read(RowFilter("v", only_nulls=True)) == expected_rows([i for i in ids if i % 5 == 0])
    # a filter on the key itself, across several of the ranges
    assert read(RowFilter("id", lower=Bound(-1000, False), upper=Bound(90_000, True)),
                RowFilter("g", upper=Bound(0, True))) == \
        expected_rows([i for i in ids if -1000 < i <= 90_000 and i % 7 == 0])
    assert read(RowFilter("id", lower=Bound(HIGH, False))) == Counter()
    src.close()


@pytest.mark.parametrize("parallel", [1, 4])
def test_an_empty_table_gives_no_batches(db: Path, parallel: int) -> None:
    make_table(db, [])
    src = open_sqlite(db)
    assert list(read_table(src, src.reflect(TableName("t")), parallel=parallel)) == []  # type: ignore[arg-type]
    src.close()


def test_ranges_without_rows_give_no_batches(db: Path) -> None:
    make_table(db, [LOW, LOW + 1, HIGH])  # the middle ranges are empty
    src = open_sqlite(db)
    batches = list(read_table(src, src.reflect(TableName("t")), parallel=7))  # type: ignore[arg-type]
    assert [b.num_rows for b in batches if b.num_rows == 0] == []
    assert sorted(r[0] for r in row_set(batches)) == [LOW, LOW + 1, HIGH]
    src.close()


def test_a_null_key_in_a_sqlite_primary_key_is_read_too(db: Path) -> None:
    ids: list[int | None] = [*sparse_ids(4), None]
    make_table(db, ids, key="id BIGINT PRIMARY KEY")  # not INTEGER: not the rowid, so NULL is allowed
    src = open_sqlite(db)
    schema = src.reflect(TableName("t"))
    assert row_set(list(read_table(src, schema, parallel=1))) == expected_rows(ids)  # one reader: all there
    assert row_set(list(read_table(src, schema, parallel=4))) == expected_rows(ids)  # type: ignore[arg-type]
    src.close()


# ---------------------------------------------------------------- errors and memory (fake sources)


SCHEMA = TableSchema(TableName("f"), (Column("id", LogicalType("int64"), nullable=False),), ("id",))


class FakeSource:
    """A table whose key spans [0, 10**6]; each clone reads its range as endless batches of 10 rows (or fails
    after ``fail_after`` batches when its range starts at ``fail_at``). Counts the batches made."""

    capabilities: Any = None

    def __init__(self, fail_at: int | None = None, fail_after: int = 0, shared: FakeSource | None = None) -> None:
        self.fail_at, self.fail_after = fail_at, fail_after
        self.root = shared or self
        if shared is None:
            self.cond = threading.Condition()
            self.made = 0
            self.clones: list[FakeSource] = []
        self.closed = False

    def key_range(self, table: TableName, column: str) -> tuple[int, int]:
        return 0, 10**6

    def clone(self) -> FakeSource:
        clone = FakeSource(self.fail_at, self.fail_after, shared=self.root)
        with self.root.cond:
            self.root.clones.append(clone)
        return clone

    def read(self, schema: TableSchema, filters: Sequence[RowFilter] = (),
             batch_rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        if any(f.only_nulls for f in filters):
            return  # the key holds no NULL
        start = next((f.lower.value for f in filters if f.lower is not None), 0)
        n = 0
        while True:
            if start == self.fail_at and n == self.fail_after:
                raise DataError(f"f: a bad row after {n} batches")
            with self.root.cond:
                self.root.made += 1
                self.root.cond.notify_all()
            yield pa.RecordBatch.from_pydict({"id": list(range(start + n * 10, start + n * 10 + 10))},
                                             schema=schema.arrow_schema())
            n += 1

    def close(self) -> None:
        self.closed = True

    def wait_for(self, what: str, predicate: Any) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout=DEADLINE_S), f"timed out waiting for {what}"


@pytest.mark.parametrize("parallel", [2, 4])
def test_an_error_in_a_reader_thread_reaches_the_caller(parallel: int) -> None:
    src = FakeSource(fail_at=0, fail_after=3)  # the first range fails after three batches
    seen = 0
    with pytest.raises(DataError, match="a bad row after 3 batches"):
        for _ in read_table(src, SCHEMA, parallel=parallel):  # type: ignore[arg-type]
            seen += 1
    assert seen >= 3
    assert len(src.clones) == parallel and all(c.closed for c in src.clones)


def test_an_error_of_a_single_reader_reaches_the_caller() -> None:
    src = FakeSource(fail_at=0, fail_after=0)
    with pytest.raises(DataError, match="a bad row after 0 batches"):
        list(read_table(src, TableSchema(SCHEMA.table, SCHEMA.columns)))  # type: ignore[arg-type]
    assert src.clones == []  # not cut: the source itself is read


@pytest.mark.parametrize("parallel", [2, 4])
def test_reading_ahead_is_bounded(parallel: int) -> None:
    """The readers run ahead of a slow writer only until the queue (parallel + 1 batches) is full and each reader
    holds the one batch it cannot hand over: memory stays bounded, however long the table."""
    src = FakeSource()
    stream = read_table(src, SCHEMA, parallel=parallel)  # type: ignore[arg-type]
    for consumed in range(1, 4):
        next(stream)
        bound = consumed + (parallel + 1) + parallel
        src.wait_for("the readers to fill the queue", lambda bound=bound: src.made >= bound)
        with src.cond:
            assert src.made == bound  # every reader blocked: nothing more is read until a batch is taken
    stream.close()  # the writer stops early: the readers stop and their connections are closed
    assert len(src.clones) == parallel and all(c.closed for c in src.clones)


# ---------------------------------------------------------------- PostgreSQL


def test_parallel_ranges_and_binary_copy_on_postgresql(postgres_server: PostgresServer, pg_url: str) -> None:
    database = parse_url(pg_url).database or "postgres"
    postgres_server.psql(database, """
        CREATE TABLE big (id bigint PRIMARY KEY, v text, g int);
        INSERT INTO big SELECT i * 37, CASE WHEN i % 5 = 0 THEN NULL ELSE 'v' || i END, (i + 7000) % 7
        FROM generate_series(-4000, 5000) i""")
    src = Tracked(PostgresSource(parse_url(pg_url)))
    try:
        schema = src.reflect(TableName("big"))
        assert len(key_chunks(src, schema, 4)) == 4  # type: ignore[arg-type]
        batches = list(read_table(src, schema, batch_rows=500, parallel=4))  # type: ignore[arg-type]
        expected = Counter((i * 37, None if i % 5 == 0 else f"v{i}", (i + 7000) % 7) for i in range(-4000, 5001))
        assert row_set(batches) == expected
        assert max(b.num_rows for b in batches) == 500
        assert len(src.clones) == 4 and all(c.closed for c in src.clones)
        filters = [RowFilter("id", lower=Bound(0, True))]
        through_thread = b"".join(read_binary(src.source, schema, filters))
        assert through_thread == b"".join(src.source.copy_out_binary(schema, filters))
        assert through_thread.startswith(b"PGCOPY\n\xff\r\n\x00")
    finally:
        src.close()
