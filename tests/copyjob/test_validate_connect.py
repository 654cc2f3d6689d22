"""``copyjob validate --connect`` runs the checks ``run`` runs before it writes or creates anything, reports
every problem in one pass (exit 2) and creates nothing: tables and columns (with "did you mean"), and for cdc
tables what change capture needs at the source (PostgreSQL: wal_level, REPLICATION, replica identity, the
publication; MySQL/MariaDB: the binlog settings and the replication grants)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CliResult, copyjob, write_job
from tests.pg_cdc import execute, rows
from tests.services.mariadb import MariadbServer
from tests.services.postgres import PostgresServer


def job(tmp_path: Path, source: str, tables: list[dict[str, Any]], **copy: Any) -> Path:
    return write_job(tmp_path / "job.yaml", {
        "job": "checked", "source": {"url": source}, "destination": {"url": "sqlite:///out.db"},
        "copy": {"mode": "cdc", "update_method": "merge", **copy}, "tables": tables})


def validate(job_file: Path) -> CliResult:
    return copyjob("validate", "--connect", job_file)


def errors(result: CliResult) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


# ---------------------------------------------------------------- PostgreSQL


def test_postgres_lists_every_problem_and_creates_nothing(tmp_path: Path, replica_only: PostgresServer) -> None:
    url = replica_only.create_database("shop")
    execute(url, "CREATE ROLE weak LOGIN PASSWORD 'weak'",
            "CREATE TABLE orders (id int PRIMARY KEY, status text)", "CREATE TABLE lines (id int, qty int)",
            "ALTER TABLE orders OWNER TO weak", "ALTER TABLE lines OWNER TO weak")
    weak = replica_only.url("shop", user="weak", password="weak")
    job_file = job(tmp_path, weak, [{"name": "orders"}, {"name": "lines", "key": ["id"]}])

    result = validate(job_file)

    assert result.code == 2, result.output
    found = errors(result)
    assert any("wal_level is replica" in e and "ALTER SYSTEM SET wal_level = logical" in e and "restart" in e
               for e in found), found
    assert any("role weak lacks REPLICATION: ALTER ROLE weak REPLICATION" in e for e in found), found
    assert any("lines has no primary key" in e and "ALTER TABLE public.lines REPLICA IDENTITY FULL" in e
               for e in found), found
    assert any("cannot create publication copyjob_checked" in e and "GRANT CREATE ON DATABASE shop TO weak" in e
               for e in found), found
    assert len(found) == 4, found
    assert "ok" not in result.stdout
    assert rows(url, "SELECT count(*) FROM pg_publication") == [(0,)]
    assert rows(url, "SELECT count(*) FROM pg_replication_slots") == [(0,)]
    assert not (tmp_path / ".copyjob").exists()

    # run stops at the same checks (one implementation), before it creates anything
    ran = copyjob("run", "--no-progress", job_file)
    assert ran.code != 0
    assert "wal_level is replica" in ran.output and "lacks REPLICATION" in ran.output
    assert rows(url, "SELECT count(*) FROM pg_publication") == [(0,)]


def test_postgres_correct_setup_is_ok_and_nothing_is_created(tmp_path: Path, pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text)",
            "CREATE TABLE lines (id int, qty int)", "ALTER TABLE lines REPLICA IDENTITY FULL")
    job_file = job(tmp_path, pg_url, [{"name": "orders"}, {"name": "lines", "key": ["id"]}])

    result = validate(job_file)

    assert result.code == 0, result.output
    assert result.stdout.startswith("ok:"), result.output
    assert rows(pg_url, "SELECT count(*) FROM pg_publication") == [(0,)]
    assert rows(pg_url, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'copyjob_checked'") == [(0,)]


def test_misspelled_tables_and_columns_get_did_you_mean_all_at_once(tmp_path: Path, pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text, updated_at timestamptz)",
            "CREATE TABLE customers (id int PRIMARY KEY, name text)")
    job_file = job(tmp_path, pg_url, [
        {"name": "ordres"},
        {"name": "customers", "key": ["idd"], "columns": {"nmae": "customer_name"}},
        {"name": "orders", "target": "orders_inc", "mode": "incremental", "incremental_column": "updated"},
    ])

    result = validate(job_file)

    assert result.code == 2, result.output
    found = errors(result)
    assert any("tables[0].name" in e and "'ordres' does not exist (did you mean 'orders'?" in e for e in found), found
    assert any("tables[1].key" in e and "'idd'" in e and "did you mean 'id'?" in e for e in found), found
    assert any("tables[1].columns" in e and "did you mean 'name'?" in e for e in found), found
    assert any("tables[2].incremental_column" in e and "did you mean 'updated_at'?" in e for e in found), found
    assert len(found) == 4, found


# ---------------------------------------------------------------- MariaDB


@pytest.fixture
def statement_binlog(mariadb_server: MariadbServer) -> Iterator[None]:
    """The session's server with binlog_format = STATEMENT and binlog_row_image = MINIMAL for one test (only new
    sessions see it; restored afterwards)."""
    mariadb_server.execute("SET GLOBAL binlog_format = 'STATEMENT'")
    mariadb_server.execute("SET GLOBAL binlog_row_image = 'MINIMAL'")
    try:
        yield
    finally:
        mariadb_server.execute("SET GLOBAL binlog_format = 'ROW'")
        mariadb_server.execute("SET GLOBAL binlog_row_image = 'FULL'")


def test_mariadb_lists_every_binlog_and_grant_problem(tmp_path: Path, mariadb_server: MariadbServer,
                                                       mariadb_url: str, statement_binlog: None) -> None:
    database = mariadb_url.rsplit("/", 1)[1]
    user = f"w{database}"[:32]
    mariadb_server.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
    mariadb_server.execute(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'")
    mariadb_server.execute_all(database, "CREATE TABLE orders (id INT PRIMARY KEY, status TEXT)")
    weak = mariadb_server.url(database, user=user, password="pw")

    result = validate(job(tmp_path, weak, [{"name": "orders"}]))

    assert result.code == 2, result.output
    found = errors(result)
    assert any("binlog_format=ROW (it is STATEMENT)" in e for e in found), found
    assert any("binlog_row_image=FULL (it is MINIMAL)" in e for e in found), found
    assert any("REPLICATION CLIENT" in e for e in found), found
    assert any("REPLICATION SLAVE" in e for e in found), found
    assert len(found) == 4, found


def test_mariadb_correct_setup_is_ok(tmp_path: Path, mariadb_server: MariadbServer, mariadb_url: str) -> None:
    mariadb_server.execute_all(mariadb_url.rsplit("/", 1)[1], "CREATE TABLE orders (id INT PRIMARY KEY, v TEXT)")
    result = validate(job(tmp_path, mariadb_url, [{"name": "orders"}]))
    assert result.code == 0, result.output
    assert result.stdout.startswith("ok:"), result.output
