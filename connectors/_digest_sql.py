"""Row counts and digests computed inside a SQL database for ``copyjob verify`` (:class:`RowDigests`).

One implementation, :class:`SqlDigests`, over a small :class:`Dialect` per system: how it quotes, binds,
divides integers, spells each kind's canonical text (``connectors/_canonical.py`` defines the text) and sums
the rows' hashes. A column a dialect cannot spell in SQL (``canonical`` returns None) is fetched with the
key and hashed in Python; the caller makes that choice for both sides alike (``DigestColumn.in_sql``).
Identifiers are always quoted; values are always bound as parameters.

Buckets of an integer key are hashed whole, their rows' texts in key order (``_canonical.ordered_hash``): one
MD5 per bucket instead of one per row (MD5 and reading its hex as an integer were half of PostgreSQL's work).
PostgreSQL reads each bucket through the key's index when there is one (a ``LATERAL`` subquery per bucket:
no sort of the whole table); DuckDB returns a few dozen buckets' texts at a time as Arrow, as stored (no sort),
and they are hashed per bucket in Python (``_digest_ordered``); SQLite streams the texts in key order into
Python.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any

from copyjob.connectors._canonical import (
    MODULUS,
    NULL_MARK,
    SEPARATOR,
    canonical_text,
    hex_hash,
    ordered_hash,
    row_text,
    text_hash,
)
from copyjob.connectors._digest_ordered import bucket_hashes, gathered_bucket_hashes
from copyjob.connectors._sql import qualified, quote_double, render_filters

from copyjob.core.contracts import DigestColumn, KeySpan
from copyjob.core.schema import TableName

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Runs one statement with bound parameters and returns its rows."""
Stream = Callable[[str, Sequence[Any]], Iterator[tuple[Any, ...]]]
"""Runs one statement and yields its rows without holding them all."""
ArrowQuery = Callable[[str, Sequence[Any]], Generator[Any, None, None]]
"""Runs one statement and yields its rows as ``pyarrow.RecordBatch``es (closing it ends the query)."""
ARROW_BATCH_ROWS = 5_000
"""Rows per Arrow batch of a streamed span."""


@dataclass(frozen=True)
class Dialect:
    name: str
    quote: Callable[[str], str]
    placeholder: str
    int_div: str
    """The integer division operator (``/``, ``DIV``, ``//``)."""
    canonical: Callable[[str, DigestColumn], str | None]
    """SQL text of the column's canonical text, from the quoted column; None: hashed in Python."""
    row_hash_sum: Callable[[str], str]
    """An aggregate summing the row hashes of a text expression (any integer result; taken modulo 2**64)."""
    separator: str
    null_mark: str
    concat: Callable[[list[str]], str]
    int_param: str = "{}"
    """A bound integer in arithmetic (PostgreSQL: cast to bigint, else it computes in numeric)."""
    native_row_hash: Callable[[list[str]], str] | None = None
    """Both sides the same system with the same column types: a fast hash of the row's own values."""
    native_types: tuple[str, ...] = ()
    """The native types (prefixes) that hash: a table with another type uses the canonical text."""
    ordered_hash: Callable[[str, str], str] | None = None
    """An aggregate: the MD5 (hex) of a text expression's values joined by U+001D in the order of a key
    expression. None: the texts are fetched in key order and hashed in Python."""
    joined_hash: Callable[[str], str] | None = None
    """An aggregate: the MD5 (hex) of a text expression's values joined by U+001D in the order they come (from
    a subquery ordered by the key: PostgreSQL 15 sorts an aggregate's ``ORDER BY`` input even when it is
    already in order)."""
    bucket_chunk: int = 0
    """Key values per bucket query (0: one query for the whole span)."""
    out_of_memory: Callable[[BaseException], bool] = lambda exc: False
    """Whether a query failed for want of memory: its part is asked again in halves (wide rows)."""


def _same_scale(c: DigestColumn) -> bool:
    """A constrained decimal stored with the scale the canonical text wants: its own text is that text."""
    have = c.have.type
    return have.kind == "decimal" and have.precision is not None and (have.scale or 0) == (c.want.scale or 0)


def _bool_sql(col: str, c: DigestColumn, true: str = "'t'", false: str = "'f'") -> str:
    test = col if c.have.type.kind == "bool" else f"{col} <> 0"
    return f"CASE WHEN {test} THEN {true} WHEN NOT ({test}) THEN {false} END"


# ---------------------------------------------------------------- PostgreSQL

def _pg_canonical(col: str, c: DigestColumn) -> str | None:
    k = c.want
    if k.kind in ("int16", "int32", "int64", "string"):
        return f"CAST({col} AS text)"
    if k.kind == "bool":
        return _bool_sql(col, c)
    if k.kind == "decimal" and k.precision is not None and _same_scale(c):
        return f"CAST({col} AS text)"  # a numeric of that scale prints exactly its decimals
    if k.kind == "decimal" and k.precision is not None and c.have.type.kind in ("decimal", "int16", "int32", "int64"):
        return f"CAST(round(CAST({col} AS numeric), {int(k.scale or 0)}) AS text)"
    # PostgreSQL's own output (sessions run with DateStyle ISO, in UTC: postgres/_connect.py) is the canonical
    # text, at half the cost of to_char
    if k.kind == "date" and c.have.type.kind == "date":
        return f"CAST({col} AS text)"
    if k.kind == "time" and c.have.type.kind == "time":
        return f"CAST({col} AS text)"
    if k.kind in ("timestamp", "timestamptz") and c.have.type.kind == "timestamp":
        return f"CAST({col} AS text)"
    if k.kind in ("timestamp", "timestamptz") and c.have.type.kind == "timestamptz":
        return f"CAST(CAST({col} AS timestamp) AS text)"  # the UTC wall time, without its +00
    if k.kind == "binary" and c.have.type.kind == "binary":
        return f"encode({col}, 'hex')"
    if k.kind == "uuid":
        return f"lower(CAST({col} AS text))"
    return None


def _pg_quote(name: str) -> str:
    # psycopg reads % as a placeholder wherever parameters are bound
    return quote_double(name).replace("%", "%%")


POSTGRES = Dialect(
    name="postgresql", quote=_pg_quote, placeholder="%s", int_div="/", canonical=_pg_canonical,
    # summed as signed bigints (sum(bigint) adds in 128 bits, no numeric per row): the same sum modulo 2**64 as
    # of the unsigned values
    row_hash_sum=lambda t: f"sum(CAST(CAST('x' || substr(md5({t}), 1, 16) AS bit(64)) AS bigint))",
    separator="chr(31)", null_mark="chr(30)", concat=lambda parts: " || ".join(parts),
    int_param="CAST({} AS bigint)",
    native_types=("smallint", "integer", "bigint", "numeric", "real", "double precision", "text", "character",
                  "boolean", "date", "time", "timestamp", "uuid", "bytea", "jsonb", "interval", "inet"),
    native_row_hash=lambda cols: f"sum(hash_record_extended(ROW({', '.join(cols)}), 0))",
    ordered_hash=lambda t, k: f"md5(string_agg({t}, chr(29) ORDER BY {k}))",
    joined_hash=lambda t: f"md5(string_agg({t}, chr(29)))",
)


# ---------------------------------------------------------------- MySQL / MariaDB

def _mysql_canonical(col: str, c: DigestColumn) -> str | None:
    k, have = c.want, c.have.type.kind
    if k.kind in ("int16", "int32", "int64"):
        return f"CAST({col} AS CHAR)"
    if k.kind == "string":
        return f"CONVERT({col} USING utf8mb4)"
    if k.kind == "bool":
        return _bool_sql(col, c)
    if k.kind == "decimal" and k.precision is not None and (k.scale or 0) <= 30 and have != "float64" \
            and have != "float32":
        return f"CAST(CAST({col} AS DECIMAL(65, {int(k.scale or 0)})) AS CHAR)"
    if k.kind == "date" and have == "date":
        return f"DATE_FORMAT({col}, '%Y-%m-%d')"
    if k.kind == "time" and have == "time":
        return _mysql_trimmed(f"TIME_FORMAT({col}, '%H:%i:%s.%f')")
    if k.kind in ("timestamp", "timestamptz") and have in ("timestamp", "timestamptz"):
        return _mysql_trimmed(f"DATE_FORMAT({col}, '%Y-%m-%d %H:%i:%s.%f')")  # sessions run at +00:00 (mysql.py)
    if k.kind == "binary" and have == "binary":
        return f"LOWER(HEX({col}))"
    if k.kind == "uuid":
        return f"LOWER(CONVERT({col} USING utf8mb4))"
    return None


def _mysql_trimmed(text: str) -> str:
    """The fraction without its trailing zeros, and without the point when nothing is left of it."""
    return f"TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {text}))"


def mysql_dialect(placeholder: str) -> Dialect:
    from copyjob.connectors._sql import quote_backtick

    return Dialect(
        name="mysql", quote=quote_backtick, placeholder=placeholder, int_div="DIV", canonical=_mysql_canonical,
        row_hash_sum=lambda t: f"SUM(CAST(CONV(SUBSTRING(MD5({t}), 1, 16), 16, 10) AS UNSIGNED))",
        separator="CHAR(31 USING utf8mb4)", null_mark="CHAR(30 USING utf8mb4)",
        concat=lambda parts: "CONCAT(" + ", ".join(parts) + ")",
        # the separator must be a literal: U+001D itself (sessions lift group_concat_max_len, mysql_digests)
        ordered_hash=lambda t, k: f"MD5(GROUP_CONCAT({t} ORDER BY {k} SEPARATOR '\x1d'))",
    )


# ---------------------------------------------------------------- DuckDB

def _duckdb_canonical(col: str, c: DigestColumn) -> str | None:
    k, have = c.want, c.have.type.kind
    if k.kind in ("int16", "int32", "int64", "string"):
        return f"CAST({col} AS VARCHAR)"
    if k.kind == "bool":
        return _bool_sql(col, c)
    if k.kind == "decimal" and k.precision is not None and _same_scale(c):
        return f"CAST({col} AS VARCHAR)"
    if k.kind == "decimal" and k.precision is not None and k.precision <= 38 and have in (
            "decimal", "int16", "int32", "int64"):
        # DECIMAL(18, s) is a 64-bit integer inside DuckDB: several times cheaper than 128 bits when it fits
        width = 18 if k.precision <= 18 and (c.have.type.precision or 38) <= 18 else 38
        return f"CAST(CAST({col} AS DECIMAL({width}, {int(k.scale or 0)})) AS VARCHAR)"
    # DuckDB prints dates and times as PostgreSQL does: its own output is the canonical text
    if k.kind == "date" and have == "date":
        return f"CAST(CAST({col} AS DATE) AS VARCHAR)"
    if k.kind == "time" and have == "time":
        return f"CAST(CAST({col} AS TIME) AS VARCHAR)"
    if k.kind in ("timestamp", "timestamptz") and have == "timestamptz":
        # the UTC wall time from the instant's microseconds: a third of the cost of a cast through the time zone
        return f"CAST(make_timestamp(epoch_us({col})) AS VARCHAR)"
    if k.kind in ("timestamp", "timestamptz") and have == "timestamp":
        return f"CAST(CAST({col} AS TIMESTAMP) AS VARCHAR)"
    if k.kind == "binary" and have == "binary":
        return f"lower(hex({col}))"
    if k.kind == "uuid":
        return f"lower(CAST({col} AS VARCHAR))"
    return None


DUCKDB = Dialect(
    name="duckdb", quote=quote_double, placeholder="?", int_div="//", canonical=_duckdb_canonical,
    row_hash_sum=lambda t: f"sum(CAST('0x' || substr(md5({t}), 1, 16) AS UBIGINT))",
    # one concat() call builds the row's text in one allocation: a fifth cheaper than a chain of ||
    separator="chr(31)", null_mark="chr(30)", concat=lambda parts: "concat(" + ", ".join(parts) + ")",
    ordered_hash=lambda t, k: f"md5(string_agg({t}, chr(29) ORDER BY {k}))",
    # about 20,000 rows per query: their texts as Arrow (duckdb_digests; 50,000 cost 50 MB more at the peak for
    # 15% less CPU), or an ordered aggregate, which buffers all its rows (several times their text)
    bucket_chunk=20_000, out_of_memory=lambda exc: type(exc).__name__ == "OutOfMemoryException",
)


# ---------------------------------------------------------------- SQLite: the Python definition, in-process

def _sqlite_canonical(col: str, c: DigestColumn) -> str:
    spec = str(c.want).replace("'", "''")
    return f"copyjob_canon('{spec}', {col})"


def sqlite_dialect() -> Dialect:
    return Dialect(
        name="sqlite", quote=quote_double, placeholder="?", int_div="/", canonical=_sqlite_canonical,
        row_hash_sum=lambda t: f"copyjob_digest({t})", separator="char(31)", null_mark="char(30)",
        concat=lambda parts: " || ".join(parts),
    )


class _DigestSum:
    """SQLite aggregate: the sum of the row hashes modulo 2**64, as text (SQLite integers are 64-bit signed)."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, text: str | None) -> None:
        if text is not None:
            self.total = (self.total + text_hash(text)) % MODULUS

    def finalize(self) -> str:
        return str(self.total)


def register_sqlite_functions(con: Any) -> None:
    """The user functions the SQLite dialect calls (``con``: a sqlite3 connection)."""
    from copyjob.connectors._canonical import canonical_by_spec

    con.create_function("copyjob_canon", 2, canonical_by_spec, deterministic=True)
    con.create_aggregate("copyjob_digest", 1, _DigestSum)


# ---------------------------------------------------------------- the engine


class SqlDigests:
    """:class:`copyjob.core.contracts.RowDigests` over one connection of a SQL system."""

    def __init__(self, dialect: Dialect, query: Query, stream: Stream | None = None,
                 bind: Callable[[Any], Any] | None = None, native: bool = False, version: str = "",
                 indexed: Callable[[TableName, str], bool] | None = None,
                 arrow: ArrowQuery | None = None) -> None:
        self._d = dialect
        self._query = query
        self._stream = stream or (lambda sql, params: iter(query(sql, params)))
        self._bind = bind or _bind_value
        self._native = native
        self._version = version
        self._indexed = indexed
        """Whether a key column has an index that reads one bucket on its own (PostgreSQL)."""
        self._arrow = arrow
        """Rows as Arrow (DuckDB): buckets are hashed from their texts as stored, not by an ordered aggregate."""

    def can_canonicalise(self, column: DigestColumn) -> bool:
        return self._d.canonical("x", column) is not None

    def native_hash(self, columns: Sequence[DigestColumn]) -> str | None:
        if self._d.native_row_hash is None or not all(
                c.have.native_type.startswith(self._d.native_types) for c in columns):
            return None
        return f"{self._d.name} {self._version}"

    def with_native_hash(self) -> SqlDigests:
        return SqlDigests(self._d, self._query, self._stream, self._bind, native=True, version=self._version,
                          indexed=self._indexed, arrow=self._arrow)

    def close(self) -> None:
        pass  # the connection belongs to the connector

    # ------------------------------------------------------------ queries

    def key_bounds(self, table: TableName, span: KeySpan) -> tuple[Any, Any, int]:
        key = self._d.quote(span.column)
        where, params = self._where(span)
        row = self._query(f"SELECT MIN({key}), MAX({key}), COUNT(*) FROM {self._table(table)}{where}", params)[0]
        return row[0], row[1], int(row[2] or 0)

    def digest(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan) -> tuple[int, int]:
        where, params = self._where(span)
        row = self._query(f"SELECT COUNT(*), {self._sum(columns)} FROM {self._table(table)}{where}", params)[0]
        count, digest = int(row[0] or 0), int(row[1] or 0)
        python = [c for c in columns if not c.in_sql and not self._native]
        if python:
            for _, texts in self._python_rows(table, python, (), span):
                digest += text_hash(row_text(texts))
        return count, digest % MODULUS

    def bucket_digests(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan,
                       width: int) -> dict[int, tuple[int, int]]:
        text = self._row_text(columns)
        found: dict[int, list[int]]
        if self._native or text is None:
            found = self._summed_buckets(table, columns, span, width)
        elif self._arrow is not None:
            found = self._arrow_buckets(table, text, span, width)
        elif self._d.ordered_hash is None:
            found = self._hashed_here(table, text, span, span.lower, width)
        elif (self._d.joined_hash is not None and self._indexed is not None and span.upper is not None
              and self._indexed(table, span.column)):
            found = self._bucket_by_bucket(table, text, span, width)
        else:
            found = {}
            for part in self._chunks(span, width):
                found.update(self._ordered_part(table, text, part, span.lower, width))
        python = [c for c in columns if not c.in_sql and not self._native]
        if python:
            for keys, texts in self._python_rows(table, python, (span.column,), span):
                entry = found.setdefault((int(keys[0]) - span.lower) // width, [0, 0])
                entry[1] += text_hash(row_text(texts))
        return {b: (count, digest % MODULUS) for b, (count, digest) in found.items()}

    def _summed_buckets(self, table: TableName, columns: Sequence[DigestColumn], span: KeySpan,
                        width: int) -> dict[int, list[int]]:
        """Order-free: the sum of the rows' hashes per bucket (the native row hash, or no column in SQL)."""
        where, params = self._where(span)
        sql = (f"SELECT {self._bucket(span)} AS b, COUNT(*), {self._sum(columns)} FROM {self._table(table)}{where} "
               "GROUP BY 1")
        return {int(b): [int(count), int(digest or 0)]
                for b, count, digest in self._query(sql, [span.lower, width, *params])}

    def _ordered_buckets(self, table: TableName, text: str, span: KeySpan, base: Any,
                         width: int) -> dict[int, list[int]]:
        """One ``GROUP BY`` over the span; buckets numbered from ``base``."""
        assert self._d.ordered_hash is not None
        where, params = self._where(span)
        ordered = self._d.ordered_hash(text, self._d.quote(span.column))
        sql = f"SELECT {self._bucket(span)} AS b, COUNT(*), {ordered} FROM {self._table(table)}{where} GROUP BY 1"
        return {int(b): [int(count), hex_hash(digest)] for b, count, digest in self._query(sql, [base, width, *params])}

    def _arrow_buckets(self, table: TableName, text: str, span: KeySpan, width: int) -> dict[int, list[int]]:
        """The span's rows fetched as Arrow as they are stored and hashed per bucket in Python
        (``_digest_ordered``): nothing sorted in the database, no ordered aggregate holding a part's rows. One
        stream for the whole span, each bucket hashed once its rows (counted first, from the key alone) came;
        rows too far out of key order for that: part by part, each part sorted here."""
        assert self._arrow is not None
        arrow = self._arrow
        key = self._d.quote(span.column)
        where, params = self._where(span)
        counted = f"SELECT {self._bucket(span)} AS b, COUNT(*) FROM {self._table(table)}{where} GROUP BY 1"
        counts = {int(b): int(n) for b, n in self._query(counted, [span.lower, width, *params])}

        def select(part: KeySpan) -> Generator[Any, None, None]:
            where, params = self._where(part)
            sql = f"SELECT {key}, {self._bucket(span)} AS b, {text} FROM {self._table(table)}{where}"
            return arrow(sql, [span.lower, width, *params])

        with closing(select(span)) as batches:
            streamed = gathered_bucket_hashes(batches, counts)
        if streamed is not None:
            return streamed
        found: dict[int, list[int]] = {}
        for part in self._chunks(span, width):
            with closing(select(part)) as batches:
                found.update(bucket_hashes(_whole(batches)))
        return found

    def _bucket_by_bucket(self, table: TableName, text: str, span: KeySpan, width: int) -> dict[int, list[int]]:
        """Each bucket read on its own through the key's index (``LATERAL``): the rows come in key order, and
        the table is never sorted whole. They are hashed as they come from a subquery ordered by the key, which
        the index scan gives without a sort; the aggregate above it is the only step there, so nothing reorders
        them (PostgreSQL's documentation, "Aggregate Expressions", on input from a sorted subquery)."""
        assert self._d.joined_hash is not None and span.lower is not None and span.upper is not None
        key = self._d.quote(span.column)
        where, params = self._where(span)
        n = self._d.int_param.format(self._d.placeholder)
        sql = (f"SELECT b.b, x.n, x.h FROM generate_series(0, {n}) AS b(b) CROSS JOIN LATERAL ("
               f"SELECT COUNT(*) AS n, {self._d.joined_hash('s.t')} AS h FROM (SELECT {text} AS t "
               f"FROM {self._table(table)}{where} AND {key} >= {n} + b.b * {n} AND {key} < {n} + (b.b + 1) * {n} "
               f"ORDER BY {key}) AS s) AS x WHERE x.n > 0")
        buckets = -(-(span.upper - span.lower) // width)
        rows = self._query(sql, [buckets - 1, *params, span.lower, width, span.lower, width])
        return {int(b): [int(count), hex_hash(digest)] for b, count, digest in rows}

    def _ordered_part(self, table: TableName, text: str, span: KeySpan, base: Any,
                      width: int) -> dict[int, list[int]]:
        """:meth:`_ordered_buckets`; a part too big for the database's memory is asked again in halves of
        whole buckets, and a single bucket too big is hashed here."""
        try:
            return self._ordered_buckets(table, text, span, base, width)
        except Exception as exc:
            if not self._d.out_of_memory(exc) or span.lower is None or span.upper is None:
                raise
        buckets = -(-(span.upper - span.lower) // width)
        if buckets <= 1:
            return self._hashed_here(table, text, span, base, width)
        middle = span.lower + width * (buckets // 2)
        return {**self._ordered_part(table, text, replace(span, upper=middle), base, width),
                **self._ordered_part(table, text, replace(span, lower=middle), base, width)}

    def _hashed_here(self, table: TableName, text: str, span: KeySpan, base: Any,
                     width: int) -> dict[int, list[int]]:
        """The rows' texts streamed in key order and hashed per bucket in Python (a dialect without an ordered
        aggregate; a bucket too big for the database's memory); buckets numbered from ``base``."""
        key = self._d.quote(span.column)
        where, params = self._where(span)
        found: dict[int, list[int]] = {}
        texts: list[str] = []
        current: int | None = None

        def close() -> None:
            if current is not None:
                found[current] = [len(texts), ordered_hash(texts)]

        for value, row in self._stream(f"SELECT {key}, {text} FROM {self._table(table)}{where} ORDER BY {key}",
                                       params):
            b = (int(value) - base) // width
            if b != current:
                close()
                current, texts = b, []
            texts.append(row)
        close()
        return found

    def _chunks(self, span: KeySpan, width: int) -> list[KeySpan]:
        if not self._d.bucket_chunk or span.lower is None or span.upper is None:
            return [span]
        step = width * max(1, self._d.bucket_chunk // width)
        return [replace(span, lower=lo, upper=min(lo + step, span.upper)) for lo in range(span.lower, span.upper, step)]

    def _bucket(self, span: KeySpan) -> str:
        n = self._d.int_param.format(self._d.placeholder)
        return f"(({self._d.quote(span.column)} - {n}) {self._d.int_div} {n})"

    def split_points(self, table: TableName, span: KeySpan, parts: int) -> list[Any]:
        _, _, count = self.key_bounds(table, span)
        if count < 2 or parts < 2:
            return []
        key = self._d.quote(span.column)
        where, params = self._where(span)
        step = -(-count // parts)
        n, div = self._d.int_param.format(self._d.placeholder), self._d.int_div
        # every step-th key in key order, in one pass over the key index
        sql = (f"SELECT k FROM (SELECT {key} AS k, ROW_NUMBER() OVER (ORDER BY {key}) AS rn "
               f"FROM {self._table(table)}{where}) AS numbered WHERE rn - (rn {div} {n}) * {n} = 0 ORDER BY k")
        points: list[Any] = []
        for (value,) in self._query(sql, [*params, step, step]):
            if value is not None and (not points or value != points[-1]):
                points.append(value)
        return points[:parts - 1]

    def rows(self, table: TableName, columns: Sequence[DigestColumn], key: Sequence[str],
             span: KeySpan) -> Iterator[tuple[tuple[Any, ...], tuple[str | None, ...]]]:
        exprs = [self._column_sql(c) if c.in_sql else self._d.quote(c.name) for c in columns]
        where, params = self._where(span)
        keys = [self._d.quote(k) for k in key]
        sql = f"SELECT {', '.join(keys + exprs)} FROM {self._table(table)}{where}"
        n = len(keys)
        for row in self._stream(sql, params):
            texts = tuple(v if c.in_sql else canonical_text(c.want, v)
                          for c, v in zip(columns, row[n:], strict=True))
            yield tuple(row[:n]), texts

    # ------------------------------------------------------------ pieces

    def _python_rows(self, table: TableName, columns: Sequence[DigestColumn], key: Sequence[str],
                     span: KeySpan) -> Iterator[tuple[tuple[Any, ...], tuple[str | None, ...]]]:
        return self.rows(table, columns, key, span)

    def _table(self, table: TableName) -> str:
        return qualified(table, self._d.quote)

    def _column_sql(self, c: DigestColumn) -> str:
        expr = self._d.canonical(self._d.quote(c.name), c)
        if expr is None:
            raise AssertionError(f"column {c.name} has no canonical SQL in {self._d.name}")
        return expr

    def _sum(self, columns: Sequence[DigestColumn]) -> str:
        if self._native and self._d.native_row_hash is not None:
            return self._d.native_row_hash([self._d.quote(c.name) for c in columns])
        text = self._row_text(columns)
        return "0" if text is None else self._d.row_hash_sum(text)

    def _row_text(self, columns: Sequence[DigestColumn]) -> str | None:
        """SQL of the row's canonical text over the columns hashed in SQL; None: there are none."""
        parts: list[str] = []
        for c in (c for c in columns if c.in_sql):
            if parts:
                parts.append(self._d.separator)
            parts.append(f"COALESCE({self._column_sql(c)}, {self._d.null_mark})")
        if not parts:
            return None
        return self._d.concat(parts) if len(parts) > 1 else parts[0]

    def _where(self, span: KeySpan) -> tuple[str, list[Any]]:
        text, params = render_filters(span.filters, self._d.quote, self._d.placeholder)
        clauses = [text.removeprefix(" WHERE ")] if text else []
        key = self._d.quote(span.column)
        if span.lower is not None:
            clauses.append(f"{key} >= {self._d.placeholder}")
            params.append(span.lower)
        if span.upper is not None:
            clauses.append(f"{key} < {self._d.placeholder}")
            params.append(span.upper)
        if not clauses:
            return "", []
        return " WHERE " + " AND ".join(clauses), [self._bind(v) for v in params]


def _bind_value(v: Any) -> Any:
    return str(v) if isinstance(v, uuid.UUID) else v


__all__ = ["DUCKDB", "NULL_MARK", "POSTGRES", "SEPARATOR", "Dialect", "SqlDigests", "mysql_dialect",
           "register_sqlite_functions", "sqlite_dialect"]


# ---------------------------------------------------------------- one per connector (their ``digests()`` hooks)

def postgres_digests(conn: Any) -> SqlDigests:
    """Over a psycopg connection."""

    def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(conn.execute(sql, params).fetchall())

    def stream(sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        with conn.cursor() as cur:
            yield from cur.stream(sql, params)

    version = str(conn.info.server_version // 10000)  # the row's text is the same within a major version
    known: dict[tuple[TableName, str], bool] = {}

    def indexed(table: TableName, column: str) -> bool:
        if (table, column) not in known:
            row = query(_PG_KEY_INDEX, [qualified(table, quote_double), column])
            known[(table, column)] = bool(row and row[0][0])
        return known[(table, column)]

    return SqlDigests(POSTGRES, query, stream, version=version, indexed=indexed)


_PG_KEY_INDEX = """SELECT EXISTS (SELECT 1 FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
WHERE i.indrelid = CAST(%s AS regclass) AND a.attname = %s AND am.amname = 'btree' AND i.indisvalid
AND i.indpred IS NULL)"""
"""Whether a valid, whole btree index leads with the column: a bucket of its keys is then read on its own."""


def mysql_digests(query: Query, placeholder: str) -> SqlDigests:
    """Over connectors/mysql.py's ``_query`` on a connection, which binds ``placeholder``."""
    # a bucket's texts joined whole: GROUP_CONCAT must not cut them (1024 bytes by default; 1 GiB is more than
    # a bucket of rows holds, and what MariaDB accepts)
    query("SET SESSION group_concat_max_len = 1073741824", [])
    return SqlDigests(mysql_dialect(placeholder), query)


DUCKDB_MEMORY_LIMIT = "64MB"
"""verify only scans: a small buffer pool keeps its memory bounded (DuckDB caches the blocks it reads up to its
limit, 80% of the machine's memory by default)."""


def duckdb_digests(cursor: Any) -> SqlDigests:
    """Over a DuckDB cursor (each call on a cursor of its own: a streamed result blocks its connection). Sets
    the database's memory limit to :data:`DUCKDB_MEMORY_LIMIT` and lets its threads return rows as they scan
    them rather than in storage order, which buffers what the other threads read ahead (verify's process
    only: each opens its own; the buckets are hashed in any order, ``_digest_ordered``)."""
    setting = cursor.cursor()
    try:
        setting.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
        setting.execute("SET preserve_insertion_order = false")
    finally:
        setting.close()

    def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cur = cursor.cursor()
        try:
            return list(cur.execute(sql, list(params)).fetchall())
        finally:
            cur.close()

    def stream(sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        cur = cursor.cursor()
        try:
            cur.execute(sql, list(params))
            while batch := cur.fetchmany(10_000):
                yield from batch
        finally:
            cur.close()

    def arrow(sql: str, params: Sequence[Any]) -> Generator[Any, None, None]:
        cur = cursor.cursor()
        try:
            yield from cur.sql(sql, params=list(params)).to_arrow_reader(ARROW_BATCH_ROWS)
        finally:
            cur.close()

    return SqlDigests(DUCKDB, query, stream, arrow=arrow)


def _whole(batches: Iterator[Any]) -> Any:
    """A stream's batches as one ``pyarrow.Table`` (none: an empty one)."""
    import pyarrow as pa

    gathered = list(batches)
    return pa.Table.from_batches(gathered) if gathered else pa.table({})


def sqlite_digests(con: Any, bind: Callable[[Any], Any] | None = None) -> SqlDigests:
    """Over a sqlite3 connection: the canonical text and the digest run in-process as user functions; ``bind``
    spells filter values as the table stores them (SQLite compares text with text)."""
    register_sqlite_functions(con)

    def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(con.execute(sql, list(params)).fetchall())

    def stream(sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        yield from con.execute(sql, list(params))

    return SqlDigests(sqlite_dialect(), query, stream, bind=bind)
