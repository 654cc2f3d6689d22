"""Passwords never reach output or the state store: a password with unencoded ``@`` and ``!`` connects to the
real PostgreSQL and MariaDB, and no command prints it, nor does any table of the state store hold it, also
after a run that failed with an error naming the URL."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CliResult, copyjob, sqlite_rows, write_job
from tests.services.mariadb import MariadbServer
from tests.services.postgres import PostgresServer

PASSWORD = "S3cr3tPW@at@S3cr3tPW!dst"
SECRET = "S3cr3tPW"


def no_secret(result: CliResult) -> CliResult:
    assert SECRET not in result.output, result.output
    return result


def store_dump(db: Path) -> str:
    """Every row of every table of the SQLite state store, as text."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(f"{t}: {row!r}" for t in tables for row in con.execute(f'SELECT * FROM "{t}"'))
    finally:
        con.close()


@pytest.fixture
def pg_loader(postgres_server: PostgresServer, pg_url: str) -> str:
    """A database with table ``orders`` owned by a role whose password holds unencoded ``@`` and ``!``; its URL
    (unencoded, as users write it)."""
    database = pg_url.rsplit("/", 1)[1]
    role = f"loader_{database}"
    postgres_server.psql(database, f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'; "
                                   f"CREATE TABLE orders (id int PRIMARY KEY, note text); "
                                   f"INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 5) g; "
                                   f"ALTER TABLE orders OWNER TO {role}")
    return f"postgresql://{role}:{PASSWORD}@127.0.0.1:{postgres_server.port}/{database}"


@pytest.fixture
def mariadb_loader(mariadb_server: MariadbServer, mariadb_url: str) -> str:
    database = mariadb_url.rsplit("/", 1)[1]
    user = f"l{database}"[:32]
    mariadb_server.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'")
    mariadb_server.execute(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'")
    mariadb_server.execute_all(database, "CREATE TABLE orders (id INT PRIMARY KEY, note TEXT)",
                               "INSERT INTO orders VALUES (1, 'a'), (2, 'b')")
    return f"mysql://{user}:{PASSWORD}@127.0.0.1:{mariadb_server.port}/{database}"


def job(tmp_path: Path, name: str, source: str, destination: str, **copy: Any) -> Path:
    return write_job(tmp_path / f"{name}.yaml", {
        "job": name, "source": {"url": source}, "destination": {"url": destination}, "copy": copy,
        "tables": [{"name": "orders"}]})


def every_command(job_file: Path, *, ok: bool) -> None:
    for args in (("validate", "--connect"), ("run",), ("status",), ("status", "--json"), ("history",),
                 ("history", "--json")):
        result = no_secret(copyjob(*args, job_file))
        if ok:
            assert result.code == 0, result.output


def test_unencoded_password_connects_and_is_never_shown_or_stored(tmp_path: Path, pg_loader: str,
                                                                   mariadb_loader: str) -> None:
    pg_job = job(tmp_path, "from_pg", pg_loader, "sqlite:///pg_copy.db")
    every_command(pg_job, ok=True)
    assert sqlite_rows(tmp_path / "pg_copy.db", "SELECT count(*) FROM orders") == [(5,)]

    my_job = job(tmp_path, "from_mariadb", mariadb_loader, "sqlite:///my_copy.db")
    every_command(my_job, ok=True)
    assert sqlite_rows(tmp_path / "my_copy.db", "SELECT count(*) FROM orders") == [(2,)]

    # a destination that refuses the run: the error names the URL, in output and in the stored history
    missing = pg_loader.rsplit("/", 1)[0] + "/no_such_database"
    failing = job(tmp_path, "to_missing", "sqlite:///pg_copy.db", missing)
    every_command(failing, ok=False)
    failed = json.loads(copyjob("history", failing, "--json").stdout)
    errors = [t["error"] for run in failed for t in run["tables"]]
    assert errors and all(e and "no_such_database" in e and ":***@127.0.0.1" in e for e in errors), errors

    dump = store_dump(tmp_path / ".copyjob" / "state.db")
    assert "no_such_database" in dump  # the failed run's error is stored, redacted
    assert SECRET not in dump and "dst" not in dump, dump
