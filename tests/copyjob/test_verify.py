"""copyjob verify (and --repair) through the real CLI on real databases: differences made behind copyjob's back
are found with their exact keys and columns and repaired; values equal after the documented type conversions
are not reported; a busy CDC table verifies equal; a table without a key is compared by counts and one hash.
The canonical row text and its hash are the same in PostgreSQL, MariaDB, DuckDB and SQLite."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pymysql
import pytest
from copyjob.connectors import open_source
from copyjob.connectors._canonical import canonical_by_spec, ordered_hash, row_text

from copyjob.core.contracts import DigestColumn, KeySpan
from copyjob.core.schema import TableName
from copyjob.core.urls import parse_url
from tests.helpers import ROOT, copyjob, write_job
from tests.pg_cdc import concurrent_writer, drop_slots, execute, rows

# ---------------------------------------------------------------- helpers


def job_file(path: Path, src: str, dst: str, tables: list[dict[str, Any]], **copy: Any) -> Path:
    return write_job(path / "job.yaml", {
        "job": "verify_" + path.name[-20:].replace("-", "_"), "source": {"url": src}, "destination": {"url": dst},
        "copy": {"mode": "full", "update_method": "merge", **copy}, "cdc": {"max_batch_delay": "50ms"},
        "tables": tables})


def run_ok(job: Path) -> None:
    result = copyjob("run", job, "--no-progress")
    assert result.code == 0, result.output


def verify(job: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = copyjob("verify", job, "--json", *extra)
    assert result.code in (0, 1), result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return result.code, report


def mysql_exec(url: str, *statements: str) -> None:
    conn = pymysql.connect(**_mysql_args(url))
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
    finally:
        conn.close()


# ---------------------------------------------------------------- the canonical text is the same everywhere

VALUES = [
    (1, "plain", "12.50", "2024-02-29 23:59:59.123456", "2024-02-29 21:59:59.5", "2024-02-29", "13:14:15.25",
     True, b"\x00\xff", "0e8b4e7c-0d5c-4f6a-9a39-3f9a1a2b3c4d"),
    (2, "ünïcødé, \"quoted\"", "-0.05", "1999-12-31 00:00:00", "1970-01-01 00:00:00", "0001-01-01", "00:00:00",
     False, b"", "ffffffff-ffff-ffff-ffff-ffffffffffff"),
    (3, None, None, None, None, None, None, None, None, None),
]


def _create_everywhere(tmp_path: Path, pg: str, my: str) -> dict[str, str]:
    execute(pg, "CREATE TABLE v (id int PRIMARY KEY, s text, d numeric(12,2), ts timestamp, tz timestamptz, "
                "dt date, tm time, b boolean, bin bytea, u uuid)")
    with psycopg.connect(pg, autocommit=True) as conn:
        for row in VALUES:
            conn.execute("INSERT INTO v VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", row)
    mysql_exec(my, "CREATE TABLE v (id int PRIMARY KEY, s text, d decimal(12,2), ts datetime(6), tz datetime(6), "
                   "dt date, tm time(6), b boolean, bin blob, u char(36))")
    conn2 = pymysql.connect(**_mysql_args(my))
    with conn2.cursor() as cur:
        cur.executemany("INSERT INTO v VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", VALUES)
    conn2.close()
    db = tmp_path / "v.duckdb"
    con = duckdb.connect(str(db))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE v (id INTEGER PRIMARY KEY, s VARCHAR, d DECIMAL(12,2), ts TIMESTAMP, "
                "tz TIMESTAMPTZ, dt DATE, tm TIME, b BOOLEAN, bin BLOB, u UUID)")
    con.executemany("INSERT INTO v VALUES (?,?,?,?,?,?,?,?,?,?)", VALUES)
    con.close()
    lite = tmp_path / "v.db"
    c = sqlite3.connect(lite)
    c.execute("CREATE TABLE v (id INTEGER PRIMARY KEY, s TEXT, d NUMERIC(12,2), ts TIMESTAMP, tz TIMESTAMPTZ, "
              "dt DATE, tm TIME, b BOOLEAN, bin BLOB, u UUID)")
    c.executemany("INSERT INTO v VALUES (?,?,?,?,?,?,?,?,?,?)", [
        (r[0], r[1], r[2], r[3] and r[3] + ("" if "." in r[3] else ".000000"), r[4] and r[4] + "+00:00", r[5],
         r[6], r[7], r[8], r[9]) for r in VALUES])
    c.commit()
    c.close()
    return {"postgresql": pg, "mysql": my, "duckdb": f"duckdb:///{db}", "sqlite": f"sqlite:///{lite}"}


def _mysql_args(url: str) -> dict[str, Any]:
    u = parse_url(url)
    return dict(host=u.host, port=u.port or 3306, user=u.username or "", password=u.password or "",
                database=u.database, autocommit=True, unix_socket=u.query.get("unix_socket"))


def test_row_texts_and_digests_are_the_same_in_every_database(tmp_path: Path, pg_url: str,
                                                               mariadb_url: str) -> None:
    urls = _create_everywhere(tmp_path, pg_url, mariadb_url)
    want = {c.name: c.type for c in open_source(parse_url(pg_url)).reflect(TableName("v")).columns}
    digests: dict[str, tuple[int, int]] = {}
    texts: dict[str, list[Any]] = {}
    for name, url in urls.items():
        source = open_source(parse_url(url))
        try:
            d = source.digests()
            schema = source.reflect(TableName("v"))
            columns = [DigestColumn(c.name, want[c.name], c) for c in schema.columns]
            assert all(d.can_canonicalise(c) for c in columns), name  # every kind here is spelled in SQL
            digests[name] = d.digest(TableName("v"), columns, KeySpan("id"))
            texts[name] = sorted(t for _, t in d.rows(TableName("v"), columns, ("id",), KeySpan("id")))
            # a bucket is hashed whole: its rows' texts in key order
            ordered = ordered_hash(row_text(t) for t in texts[name])
            assert d.bucket_digests(TableName("v"), columns, KeySpan("id", 1, 4), 10) == {0: (3, ordered)}, name
        finally:
            source.close()
    assert texts["postgresql"][0] == ("1", "plain", "12.50", "2024-02-29 23:59:59.123456",
                                      "2024-02-29 21:59:59.5", "2024-02-29", "13:14:15.25", "t", "00ff",
                                      "0e8b4e7c-0d5c-4f6a-9a39-3f9a1a2b3c4d")
    for name in urls:
        assert texts[name] == texts["postgresql"], name
        assert digests[name] == digests["postgresql"], name
    assert digests["postgresql"][0] == 3


class OutOfMemoryException(Exception):
    """Named like DuckDB's: the DuckDB dialect reads it as a query that wanted more memory."""


def test_buckets_are_hashed_whole_in_key_order_by_every_route(tmp_path: Path, pg_url: str) -> None:
    """One MD5 per bucket over its rows' texts in key order (``_canonical.ordered_hash``), whichever way a
    system computes it: PostgreSQL bucket by bucket through the key's index, or in one sorted GROUP BY without
    one; DuckDB a few buckets per query, halving a part that runs out of memory; SQLite in Python."""
    import dataclasses

    from copyjob.connectors._digest_sql import DUCKDB, SqlDigests

    fill = ("SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'row ' || g END, "
            "timestamp '2024-01-01 00:00:00' + g * interval '1.25 second' FROM generate_series(1, 2500) AS g")
    execute(pg_url, "CREATE TABLE keyed (id bigint PRIMARY KEY, s text, ts timestamp)",
            "CREATE TABLE unkeyed (id bigint, s text, ts timestamp)",
            f"INSERT INTO keyed {fill}", f"INSERT INTO unkeyed {fill} ORDER BY random()")
    db = tmp_path / "b.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE keyed (id BIGINT PRIMARY KEY, s VARCHAR, ts TIMESTAMP)")
    con.executemany("INSERT INTO keyed VALUES (?, ?, ?)", rows(pg_url, "SELECT * FROM keyed ORDER BY random()"))
    con.close()
    lite = tmp_path / "b.db"
    c = sqlite3.connect(lite)
    c.execute("CREATE TABLE keyed (id INTEGER PRIMARY KEY, s TEXT, ts TIMESTAMP)")
    c.executemany("INSERT INTO keyed VALUES (?, ?, ?)",
                  [(i, s, str(t)) for i, s, t in rows(pg_url, "SELECT * FROM keyed")])
    c.commit()
    c.close()
    span, width = KeySpan("id", 1, 2501), 300
    texts: dict[int, list[str]] = {}
    for i, s_, t in rows(pg_url, "SELECT * FROM keyed ORDER BY id"):
        text = row_text([str(i), s_, canonical_by_spec("timestamp", t)])
        texts.setdefault((i - 1) // width, []).append(text)
    want = {b: (len(t), ordered_hash(t)) for b, t in texts.items()}

    def buckets(url: str, table: str, wrap: Any = None) -> dict[int, tuple[int, int]]:
        source = open_source(parse_url(url))
        try:
            d = source.digests()
            if wrap is not None:
                d = wrap(d)
            schema = source.reflect(TableName(table))
            want_types = {"id": "int64", "s": "string", "ts": "timestamp"}
            columns = [DigestColumn(col.name, dataclasses.replace(col.type, kind=want_types[col.name]), col, True)
                       for col in schema.columns]
            return dict(d.bucket_digests(TableName(table), columns, span, width))
        finally:
            source.close()

    asked: list[tuple[Any, Any]] = []

    def starved(d: SqlDigests) -> SqlDigests:
        """DuckDB in parts of 1,000 keys (three buckets), every ordered aggregate wanting more memory than it has:
        parts are halved down to single buckets, which are then streamed and hashed in Python."""
        def query(sql: str, params: Any) -> list[tuple[Any, ...]]:
            lower, upper = params[-2], params[-1]
            asked.append((lower, upper))
            if "GROUP BY" in sql:
                raise OutOfMemoryException("failed to allocate")
            return d._query(sql, params)

        return SqlDigests(dataclasses.replace(DUCKDB, bucket_chunk=1000), query, d._stream)

    assert buckets(pg_url, "keyed") == want  # through the primary key, bucket by bucket
    assert buckets(pg_url, "unkeyed") == want  # no index: one GROUP BY, the rows sorted
    assert buckets(f"duckdb:///{db}", "keyed") == want
    assert buckets(f"duckdb:///{db}", "keyed", starved) == want
    assert asked[:2] == [(1, 901), (1, 301)]
    assert buckets(f"sqlite:///{lite}", "keyed") == want


class _Recording:
    """A DuckDB connection (or cursor) that records the statements run through it."""

    def __init__(self, con: Any, seen: list[str]) -> None:
        self._con, self._seen = con, seen

    def cursor(self) -> _Recording:
        return _Recording(self._con.cursor(), self._seen)

    def execute(self, sql: str, params: Any = None) -> _Recording:
        self._seen.append(sql)
        self._con.execute(sql, params or [])
        return self

    def sql(self, query: str, params: Any = None) -> Any:
        self._seen.append(query)
        return self._con.sql(query, params=params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


@pytest.mark.parametrize("stored", ["in key order", "in runs", "backwards", "shuffled"])
def test_duckdb_hashes_buckets_from_arrow_without_sorting(tmp_path: Path, stored: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB returns a span's row texts as they are stored (no ORDER BY, no ordered aggregate), in batches
    whose ends cut buckets; they are put in key order and joined per bucket in Arrow, and hashed as
    ``_canonical.ordered_hash`` defines. A table in key order, or in runs of rising keys as a parallel copy
    stores it, or backwards, is read in one stream; one further out of order than the rows a stream may hold
    is read again part by part. Each hashes the same as rows in order."""
    import dataclasses

    from copyjob.connectors import _digest_ordered, _digest_sql
    from copyjob.connectors._digest_sql import DUCKDB, SqlDigests, duckdb_digests

    monkeypatch.setattr(_digest_sql, "ARROW_BATCH_ROWS", 70)  # batch ends inside buckets of 300 keys
    monkeypatch.setattr(_digest_ordered, "HELD_ROWS", 1000)
    db = tmp_path / "a.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t (id BIGINT, s VARCHAR, n DECIMAL(9, 2))")
    ids = list(range(1, 2001))
    if stored == "in runs":  # runs of 250 keys, every second pair swapped (buckets split across runs)
        runs = [ids[i:i + 250] for i in range(0, 2000, 250)]
        ids = [i for pair in range(0, 8, 2) for run in (runs[pair + 1], runs[pair]) for i in run]
    elif stored == "backwards":  # the second half first, the first half backwards
        ids = ids[1000:] + ids[:1000][::-1]
    elif stored == "shuffled":
        random.Random(7).shuffle(ids)
    con.executemany("INSERT INTO t VALUES (?, ?, ?)",
                    [(i, None if i % 11 == 0 else f"row ¤ {i}", i / 4) for i in ids])
    con.close()
    source = open_source(parse_url(f"duckdb:///{db}"))
    columns = [DigestColumn(c.name, c.type, c, True) for c in source.reflect(TableName("t")).columns]
    source.close()
    texts: dict[int, list[str]] = {}
    for i in sorted(ids):
        values = [str(i), None if i % 11 == 0 else f"row ¤ {i}", canonical_by_spec("decimal(9,2)", i / 4)]
        texts.setdefault((i - 1) // 300, []).append(row_text(values))
    want = {b: (len(t), ordered_hash(t)) for b, t in texts.items()}
    seen: list[str] = []
    con = duckdb.connect(str(db))
    d = duckdb_digests(_Recording(con, seen))
    span = KeySpan("id", 1, 2001)
    assert d.bucket_digests(TableName("t"), columns, span, 300) == want
    asked = [s for s in seen if s.startswith("SELECT")]
    assert asked and not [s for s in asked if "ORDER BY" in s.upper() or "string_agg" in s]
    # the buckets' counts, the stream, then (given up) the span again as its one part
    assert len(asked) == (3 if stored == "shuffled" else 2)
    # parts of 600 keys (two buckets each), as a 10M-row table is asked 20,000 keys at a time
    parts = SqlDigests(dataclasses.replace(DUCKDB, bucket_chunk=600), d._query, d._stream, arrow=d._arrow)
    assert parts.bucket_digests(TableName("t"), columns, span, 300) == want
    con.close()


# ---------------------------------------------------------------- differences behind copyjob's back


def _shop(url: str, n: int) -> None:
    execute(url, "CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, amount numeric(10,2), "
                 "score double precision, meta jsonb, placed timestamptz)",
            f"INSERT INTO orders SELECT g, 'new', g * 1.5, g / 7.0, jsonb_build_object('n', g, 'tag', 'x'), "
            f"timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(1, {n}) g")


def test_changed_deleted_and_added_rows_are_found_and_repaired(tmp_path: Path, pg_url: str, pg_url2: str) -> None:
    _shop(pg_url, 30_000)
    job = job_file(tmp_path, pg_url, pg_url2, [{"name": "orders", "target": "sales",
                                                 "columns": {"amount": "price"}}])
    run_ok(job)
    code, report = verify(job)
    assert code == 0 and report["equal"], report
    assert report["tables"][0]["rows_source"] == 30_000 and report["tables"][0]["ranges"] >= 3
    assert any("own values (postgresql" in n for n in report["tables"][0]["notes"])  # same types: the fast hash

    execute(pg_url2, "UPDATE sales SET price = price + 1 WHERE id = 17",
            "UPDATE sales SET status = 'edited', score = 0.5 WHERE id = 25000",
            "UPDATE sales SET meta = '{\"n\": 1, \"tag\": \"y\"}' WHERE id = 1",
            "DELETE FROM sales WHERE id IN (2, 29999)",
            "INSERT INTO sales (id, status) VALUES (40000, 'behind our back')")
    code, report = verify(job)
    table = report["tables"][0]
    assert code == 1 and not report["equal"]
    assert table["missing"] == [{"id": 2}, {"id": 29999}]
    assert table["extra"] == [{"id": 40000}]
    assert table["different"] == [{"key": {"id": 1}, "columns": ["meta"]},
                                  {"key": {"id": 17}, "columns": ["price"]},
                                  {"key": {"id": 25000}, "columns": ["status", "score"]}]

    code, report = verify(job, "--repair")
    assert code == 0 and report["tables"][0]["result"] == "repaired" and report["tables"][0]["repaired"] == 6
    code, report = verify(job)
    assert code == 0 and report["equal"], report
    assert rows(pg_url2, "SELECT price, status, meta->>'tag' FROM sales WHERE id IN (1, 17, 25000) ORDER BY id") == \
        rows(pg_url, "SELECT amount, status, meta->>'tag' FROM orders WHERE id IN (1, 17, 25000) ORDER BY id")
    assert rows(pg_url2, "SELECT count(*) FROM sales WHERE id IN (2, 29999, 40000)") == [(2,)]
    history = json.loads(copyjob("history", job, "--json").stdout)
    assert [r["trigger"] for r in history[:4]] == ["verify"] * 4
    status = json.loads(copyjob("status", job, "--json").stdout)["tables"][0]
    assert status["verified"]["result"] == "equal"
    assert "last verified" in copyjob("status", job).stdout


def test_text_keys_are_cut_at_sampled_boundaries(tmp_path: Path, pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE items (code text PRIMARY KEY, qty int)",
            "INSERT INTO items SELECT 'item-' || md5(g::text), g FROM generate_series(1, 25000) g")
    db = tmp_path / "dst.duckdb"
    job = job_file(tmp_path, pg_url, f"duckdb:///{db}", [{"name": "items"}])
    run_ok(job)
    changed = rows(pg_url, "SELECT code FROM items ORDER BY code OFFSET 12345 LIMIT 1")[0][0]
    con = duckdb.connect(str(db))
    con.execute("UPDATE items SET qty = -1 WHERE code = ?", [changed])
    con.execute("INSERT INTO items VALUES ('zzz-extra', 1)")
    con.close()
    code, report = verify(job)
    table = report["tables"][0]
    assert code == 1 and table["different"] == [{"key": {"code": changed}, "columns": ["qty"]}]
    assert table["extra"] == [{"code": "zzz-extra"}] and table["missing"] == []
    code, report = verify(job, "--repair")
    assert code == 0, report
    assert verify(job)[0] == 0


# ---------------------------------------------------------------- equal after the documented conversions


def test_values_equal_after_the_documented_conversions_are_not_reported(tmp_path: Path, pg_url: str,
                                                                         pg_url2: str, mariadb_url: str) -> None:
    execute(pg_url, "CREATE TABLE facts (id int PRIMARY KEY, at timestamptz, price numeric(12,3), ref uuid, "
                    "doc json, ratio real, flag boolean)",
            "INSERT INTO facts VALUES (1, '2024-06-30 23:30:00.25-05', 1.5, 'A1B2C3D4-0000-4000-8000-00000000000F', "
            "'{\"z\": 1, \"a\": {\"y\": [1, 2.5], \"b\": null}}', 1.1, true), "
            "(2, '1999-01-01 00:00:00+14', -0.001, NULL, '[]', 0.3, false), "
            "(3, NULL, 123456789.999, 'ffffffff-0000-4000-8000-000000000000', NULL, NULL, NULL)")
    # jsonb stores the keys re-ordered: the canonical text sorts them
    execute(pg_url2, "CREATE TABLE facts (id int PRIMARY KEY, at timestamptz, price numeric(12,3), ref uuid, "
                     "doc jsonb, ratio real, flag boolean)")
    for name, dst in (("mariadb", mariadb_url), ("sqlite", f"sqlite:///{tmp_path / 'd.db'}"),
                      ("postgres", pg_url2)):
        folder = tmp_path / name
        folder.mkdir()
        job = job_file(folder, pg_url, dst, [{"name": "facts"}])
        run_ok(job)
        code, report = verify(job)
        assert code == 0, (name, report)
        assert report["tables"][0]["rows_destination"] == 3
    # the destination really holds the converted spellings
    assert rows(pg_url2, "SELECT doc::text FROM facts WHERE id = 1") == [('{"a": {"b": null, "y": [1, 2.5]}, "z": 1}',)]
    con = sqlite3.connect(tmp_path / "d.db")
    assert con.execute("SELECT at FROM facts WHERE id = 1").fetchone() == ("2024-07-01 04:30:00.250000+00:00",)
    con.close()


# ---------------------------------------------------------------- a table without a key


def test_a_table_without_a_key_is_compared_by_counts_and_one_hash(tmp_path: Path, pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE events (kind text, n int)",
            "INSERT INTO events SELECT 'k' || (g % 5), g FROM generate_series(1, 3000) g")
    db = tmp_path / "dst.db"
    job = job_file(tmp_path, pg_url, f"sqlite:///{db}", [{"name": "events"}], update_method="append")
    run_ok(job)
    code, report = verify(job)
    assert code == 0, report
    assert any("no key" in n for n in report["tables"][0]["notes"])
    con = sqlite3.connect(db)
    con.execute("UPDATE events SET n = 0 WHERE n = 77")
    con.commit()
    con.close()
    result = copyjob("verify", job)
    assert result.code == 1
    assert "events: different: 3000 rows in the source, 3000 in the destination, whole-table hash differs" \
        in result.stdout
    assert "no key: compared by row counts and one whole-table hash" in result.stdout


# ---------------------------------------------------------------- incremental and cdc tables


def test_an_incremental_table_is_compared_up_to_its_committed_watermark(tmp_path: Path, pg_url: str,
                                                                         pg_url2: str) -> None:
    execute(pg_url, "CREATE TABLE log (id int PRIMARY KEY, seq int NOT NULL, body text)",
            "INSERT INTO log SELECT g, g, 'b' || g FROM generate_series(1, 2000) g")
    job = job_file(tmp_path, pg_url, pg_url2, [{"name": "log", "incremental_column": "seq"}], mode="incremental")
    run_ok(job)
    execute(pg_url, "INSERT INTO log SELECT g, g, 'later' FROM generate_series(2001, 2100) g")  # not copied yet
    code, report = verify(job)
    assert code == 0, report
    assert any("seq <= 2000" in n for n in report["tables"][0]["notes"])
    execute(pg_url2, "UPDATE log SET body = 'x' WHERE id = 1500")
    code, report = verify(job)
    assert code == 1 and report["tables"][0]["different"] == [{"key": {"id": 1500}, "columns": ["body"]}]


def test_a_cdc_table_under_a_concurrent_writer_verifies_equal(tmp_path: Path, pg_url: str, pg_url2: str) -> None:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2))",
            "INSERT INTO orders SELECT g, 'new', g * 1.5 FROM generate_series(1, 20000) g")
    job = job_file(tmp_path, pg_url, pg_url2, [{"name": "orders"}], mode="cdc")
    run_ok(job)
    stream = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(job)], cwd=ROOT,
                              env={**os.environ, "COLUMNS": "200"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        with concurrent_writer(pg_url, keys=20_000, pause_s=0.005) as writes:
            deadline = time.monotonic() + 120
            while writes() < 50 and time.monotonic() < deadline:
                time.sleep(0.1)
            code, report = verify(job, "--settle", "90")
            assert writes() > 50
        assert code == 0, report
        assert report["tables"][0]["missing"] == [] and report["tables"][0]["different"] == []
        result = copyjob("verify", job)  # the writer stopped: the stream catches up with its last changes
        assert result.code == 0, result.output
    finally:
        stream.terminate()
        stream.communicate(timeout=60)
        drop_slots(pg_url)


# ---------------------------------------------------------------- the canonical text in Python


@pytest.mark.parametrize(("spec", "values", "text"), [
    ("float64", [0.1, "0.1"], "0.1"),
    ("float64", [100, 100.0, "1e2"], "100.0"),
    ("float64", [float("nan"), "NaN"], "NaN"),
    ("float64", [float("-inf")], "-Infinity"),
    ("float64", [-0.0, 0], "0.0"),
    ("float32", [1.100000023841858, 1.1], "1.1"),
    ("decimal(10,2)", ["1.5", 1.5, 1.50, "1.500"], "1.50"),
    ("decimal", ["1.500", "1.5"], "1.5"),
    ("json", ['{"b": 1, "a": [1, {"d": null, "c": "é"}]}', {"a": [1, {"c": "é", "d": None}], "b": 1}],
     '{"a":[1,{"c":"é","d":null}],"b":1}'),
    ("timestamptz", ["2024-07-01 04:30:00.250000+00:00", "2024-06-30T23:30:00.25-05:00"],
     "2024-07-01 04:30:00.25"),
    ("uuid", ["A1B2C3D4-0000-4000-8000-00000000000F", "a1b2c3d4-0000-4000-8000-00000000000f"],
     "a1b2c3d4-0000-4000-8000-00000000000f"),
    ("bool", [True, 1, "t", "true"], "t"),
    ("time", ["13:14:15.25", "13:14:15.250000"], "13:14:15.25"),
    ("timestamp", ["2024-07-01 04:30:00", "2024-07-01 04:30:00.000000"], "2024-07-01 04:30:00"),
])
def test_canonical_text_is_the_same_for_equal_values(spec: str, values: list[Any], text: str) -> None:
    from copyjob.connectors._canonical import canonical_by_spec

    assert {canonical_by_spec(spec, v) for v in values} == {text}


def test_a_composite_key_is_reported_whole_and_repaired(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    con = sqlite3.connect(src)
    con.execute("CREATE TABLE pairs (a INTEGER, b TEXT, v REAL, PRIMARY KEY (a, b))")
    con.executemany("INSERT INTO pairs VALUES (?, ?, ?)", [(i % 50, f"b{i}", i / 3) for i in range(4000)])
    con.commit()
    con.close()
    job = job_file(tmp_path, f"sqlite:///{src}", f"sqlite:///{dst}", [{"name": "pairs"}])
    run_ok(job)
    con = sqlite3.connect(dst)
    con.execute("UPDATE pairs SET v = 0.25 WHERE a = 7 AND b = 'b1007'")
    con.execute("DELETE FROM pairs WHERE a = 9 AND b = 'b9'")
    con.commit()
    con.close()
    code, report = verify(job)
    table = report["tables"][0]
    assert code == 1
    assert table["different"] == [{"key": {"a": 7, "b": "b1007"}, "columns": ["v"]}]
    assert table["missing"] == [{"a": 9, "b": "b9"}]
    assert verify(job, "--repair")[0] == 0
    assert verify(job)[0] == 0


def test_text_keys_from_mariadb_are_cut_at_sampled_boundaries(tmp_path: Path, mariadb_url: str) -> None:
    mysql_exec(mariadb_url, "CREATE TABLE items (code varchar(64) PRIMARY KEY, qty int, price decimal(8,3))",
               "INSERT INTO items SELECT CONCAT('Item-', MD5(seq)), seq, seq / 8 FROM seq_1_to_5000")
    db = tmp_path / "dst.db"
    job = job_file(tmp_path, mariadb_url, f"sqlite:///{db}", [{"name": "items"}])
    run_ok(job)
    assert verify(job)[0] == 0
    con = sqlite3.connect(db)
    (changed,) = con.execute("SELECT code FROM items ORDER BY code LIMIT 1 OFFSET 3210").fetchone()
    con.execute("UPDATE items SET price = 1 WHERE code = ?", (changed,))
    con.commit()
    con.close()
    code, report = verify(job)
    assert code == 1 and report["tables"][0]["different"] == [{"key": {"code": changed}, "columns": ["price"]}]
    assert report["tables"][0]["ranges"] > 1


# ---------------------------------------------------------------- Parquet folders


def test_a_parquet_folder_is_compared_through_arrow_and_repaired(tmp_path: Path, pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE readings (id bigint PRIMARY KEY, at timestamptz, v numeric(9,3), ok boolean, "
                    "ratio double precision)",
            "INSERT INTO readings SELECT g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', "
            "g / 3.0, g % 2 = 0, g / 7.0 FROM generate_series(1, 3000) g")
    folder = tmp_path / "lake"
    job = job_file(tmp_path, pg_url, f"parquet:///{folder}", [{"name": "readings"}])
    run_ok(job)
    assert verify(job)[0] == 0
    execute(pg_url, "UPDATE readings SET v = 0 WHERE id = 1234", "DELETE FROM readings WHERE id = 77")
    code, report = verify(job)
    table = report["tables"][0]
    assert code == 1 and table["different"] == [{"key": {"id": 1234}, "columns": ["v"]}]
    assert table["extra"] == [{"id": 77}]
    assert verify(job, "--repair")[0] == 0
    assert verify(job)[0] == 0
