"""The benchmark's PostgreSQL data: generating source tables server-side, and checking what a tool wrote.

Checks compare a destination table with its source by
- row count;
- column types as ``format_type()`` prints them (``numeric(12,2)``, ``timestamp with time zone``);
- primary key columns;
- a fingerprint: aggregates over every column (sums, hashes, NULL counts, min/max), equal when the rows are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

ORDERS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "bigint NOT NULL"),
    ("customer_id", "integer"),
    ("name", "text"),
    ("amount", "numeric(12,2)"),
    ("status", "text"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)

# ~1 in 97 names is NULL; names are 17-40 characters; amounts 0.00-99,999.99; timestamps one second apart.
# (%% is a literal %: the statement has bound parameters)
_FILL_ORDERS = """
INSERT INTO {table}
SELECT g,
       (g * 7919) %% 100000,
       CASE WHEN g %% 97 = 0 THEN NULL ELSE 'customer ' || left(md5(g::text), (8 + g %% 24)::int) END,
       ((g * 104729) %% 10000000) / 100.0,
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled'])[(1 + g %% 5)::int],
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' + (g %% 86400) * interval '1 millisecond'
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""
FILL_CHUNK = 1_000_000  # rows per INSERT: keeps generate_series' tuplestore small

_COLUMN_TYPES = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_PRIMARY_KEY = """
SELECT a.attname
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s::regclass AND i.indisprimary
ORDER BY k.ord
"""
# robust to a tool that widened a type: every column is cast to a canonical form before aggregating
_ORDERS_FINGERPRINT = """
SELECT count(*), sum(id), sum(customer_id), sum(amount::numeric)::text, count(name),
       sum(hashtext(name)::bigint), sum(hashtext(status)::bigint),
       sum(extract(epoch FROM created_at::timestamptz))::text, min(created_at::timestamptz)::text,
       sum(extract(epoch FROM updated_at::timestamptz))::text, max(updated_at::timestamptz)::text
FROM {table}
"""


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC")


def orders_ddl(table: str = "public.orders", *, primary_key: bool = True,
               overrides: dict[str, str] | None = None) -> str:
    """``CREATE TABLE`` for the orders table; ``overrides`` replaces some column types."""
    types = {name: (overrides or {}).get(name, sql) for name, sql in ORDERS_COLUMNS}
    columns = [f"{name} {sql}" for name, sql in types.items()]
    if primary_key:
        columns.append("PRIMARY KEY (id)")
    return f"CREATE TABLE {table} (\n    " + ",\n    ".join(columns) + "\n)"


def create_orders(url: str, rows: int, table: str = "public.orders") -> None:
    """Create and fill the orders table (with its primary key), then VACUUM ANALYZE it."""
    with connect(url) as conn:
        conn.execute(orders_ddl(table))
        for first in range(1, rows + 1, FILL_CHUNK):
            last = min(first + FILL_CHUNK - 1, rows)
            conn.execute(_FILL_ORDERS.format(table=table), {"first": first, "last": last})
        conn.execute(f"VACUUM ANALYZE {table}")


def create_small_tables(url: str, count: int, rows: int) -> list[str]:
    """``count`` tables ``public.items_NN`` of ``rows`` rows each (id primary key, updated_at watermark)."""
    names = [f"public.items_{i:02d}" for i in range(count)]
    with connect(url) as conn:
        for name in names:
            conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, name text, amount numeric(12,2), "
                         "updated_at timestamptz NOT NULL)")
            conn.execute(f"INSERT INTO {name} SELECT g, 'item ' || g, g / 10.0, "
                         "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' "
                         "FROM generate_series(1, %s) AS g", (rows,))
        conn.execute("VACUUM ANALYZE")
    return names


def exec_sql(url: str, *statements: str) -> None:
    with connect(url) as conn:
        for statement in statements:
            conn.execute(statement)


def scalar(url: str, query: str) -> Any:
    with connect(url) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


@dataclass
class TableFacts:
    """What a table looks like: row count, column types, primary key and (for orders) a fingerprint."""

    exists: bool
    rows: int = 0
    types: dict[str, str] = field(default_factory=dict)
    primary_key: list[str] = field(default_factory=list)
    fingerprint: tuple[Any, ...] | None = None


def table_facts(url: str, table: str = "public.orders", *, fingerprint: bool = True) -> TableFacts:
    with connect(url) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            return TableFacts(exists=False)
        types = {str(n): str(t) for n, t in conn.execute(_COLUMN_TYPES, (table,)).fetchall()}
        key = [str(r[0]) for r in conn.execute(_PRIMARY_KEY, (table,)).fetchall()]
        if fingerprint:
            row = conn.execute(_ORDERS_FINGERPRINT.format(table=table)).fetchone()
            assert row is not None
            return TableFacts(True, int(row[0]), types, key, tuple(row))
        count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert count is not None
        return TableFacts(True, int(count[0]), types, key)


@dataclass
class Verdict:
    """The outcome of comparing a destination table with what it should be."""

    ok: bool
    summary: str  # short, for the table: "rows ✓ types ✓ pk ✓ data ✓"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def compare(source: TableFacts, dest: TableFacts, *, expect_types: dict[str, str] | None,
            expect_pk: bool, strict: bool = True) -> Verdict:
    """Compare ``dest`` with ``source``: rows and data must match. Types (and, with ``expect_pk``, the primary
    key) are problems when ``strict``, only notes otherwise: other tools do not promise them."""
    if not dest.exists:
        return Verdict(False, "table missing", ["the destination table does not exist"])
    problems: list[str] = []
    notes: list[str] = []
    marks: list[str] = []

    rows_ok = dest.rows == source.rows
    marks.append("rows ✓" if rows_ok else "rows ✗")
    if not rows_ok:
        problems.append(f"{dest.rows:,} rows, expected {source.rows:,}")

    wanted = expect_types if expect_types is not None else source.types
    diffs = [f"{c}: {dest.types.get(c, 'missing')} (expected {t})" for c, t in wanted.items()
             if dest.types.get(c) != t]
    extra = [c for c in dest.types if c not in wanted]
    marks.append("types ✓" if not diffs else "types ✗" if strict else "types ≠")
    if diffs:
        (problems if strict else notes).append("column types differ: " + "; ".join(diffs))
    if extra:
        notes.append("extra columns: " + ", ".join(extra))

    pk_ok = dest.primary_key == source.primary_key
    if expect_pk and strict:
        marks.append("pk ✓" if pk_ok else "pk ✗")
        if not pk_ok:
            problems.append(f"primary key {dest.primary_key or 'none'}, expected {source.primary_key}")
    elif expect_pk:
        marks.append("pk ✓" if pk_ok else "no pk")
        if not pk_ok:
            notes.append(f"primary key {dest.primary_key or 'none'} (source: {source.primary_key})")
    elif dest.primary_key:
        notes.append(f"primary key {dest.primary_key}")

    if source.fingerprint is not None and dest.fingerprint is not None:
        data_ok = source.fingerprint == dest.fingerprint
        marks.append("data ✓" if data_ok else "data ✗")
        if not data_ok:
            problems.append(f"fingerprint differs: {dest.fingerprint} vs source {source.fingerprint}")
    return Verdict(not problems, " ".join(marks), problems, notes)
