"""One job file deployed to two environments (``--env dev`` / ``--env prod`` switch the destination through
variables.yaml), one source and one state file: run alternately with changes in between, both destinations
must equal the source, for every mode and transport. Dropping a destination table makes the next run of that
environment copy the table in full.

The state store keys state by the job and its destination's identity; names that live on the source or the
broker (replication slot, publication, server id, consumer group, topics) include the environment."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import copyjob, sqlite_exec, sqlite_rows, write_job
from tests.pg_cdc import drop_slots, execute, rows

_ids = itertools.count(1)


def deploy(tmp_path: Path, job: dict[str, Any], envs: tuple[str, str]) -> Path:
    """The job with ``destination: ${DST}`` and a variables.yaml whose value sets point at two SQLite files."""
    (tmp_path / "variables.yaml").write_text(yaml.safe_dump(
        {env: {"DST": f"sqlite:///{env}.db"} for env in envs}))
    return write_job(tmp_path / "job.yaml", {**job, "destination": {"url": "${DST}"}})


def run_ok(job: Path, env: str) -> None:
    result = copyjob("run", job, "--env", env, "--no-progress")
    assert result.code == 0, result.output


def run(job: Path, env: str) -> dict[str, Any]:
    """Run, then the run's record from ``history`` (a second process: only where the record is checked)."""
    run_ok(job, env)
    runs: list[dict[str, Any]] = json.loads(copyjob("history", job, "--env", env, "--json", "--limit", "1").stdout)
    return runs[0]


def dest_rows(tmp_path: Path, env: str, table: str, columns: str = "id, status") -> list[tuple[Any, ...]]:
    return sqlite_rows(tmp_path / f"{env}.db", f"SELECT {columns} FROM {table} ORDER BY id")


def alternate(tmp_path: Path, job: Path, envs: tuple[str, str], table: str,
              source_rows: Callable[[], list[tuple[Any, ...]]], changes: list[Callable[[], None]]) -> None:
    """Run dev and prod alternately (the order flips each round), a change before each round; after every
    round both destinations equal the source."""
    first, second = envs
    run_ok(job, first)
    run_ok(job, second)
    for n, change in enumerate(changes):
        change()
        order = (second, first) if n % 2 == 0 else (first, second)
        for env in order:
            run_ok(job, env)
        expected = source_rows()
        for env in envs:
            assert dest_rows(tmp_path, env, table) == expected, f"{env} after change {n + 1}"


def drop_and_rerun(tmp_path: Path, job: Path, env: str, table: str,
                   source_rows: Callable[[], list[tuple[Any, ...]]]) -> dict[str, Any]:
    sqlite_exec(tmp_path / f"{env}.db", f"DROP TABLE {table}")
    record = run(job, env)
    assert dest_rows(tmp_path, env, table) == source_rows()
    return record


# ---------------------------------------------------------------- incremental and files


def test_incremental_two_environments(tmp_path: Path) -> None:
    src = tmp_path / "src.db"
    sqlite_exec(src, "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL, seq INTEGER NOT NULL)")
    sqlite_exec(src, "INSERT INTO orders VALUES (?, 'new', ?)", [(i, i) for i in range(1, 301)])
    seq = itertools.count(1000)

    def update(ids: range) -> Callable[[], None]:
        return lambda: sqlite_exec(src, "UPDATE orders SET status = 'changed', seq = ? WHERE id = ?",
                                   [(next(seq), i) for i in ids])

    def insert(ids: range) -> Callable[[], None]:
        return lambda: sqlite_exec(src, "INSERT INTO orders VALUES (?, 'late', ?)", [(i, next(seq)) for i in ids])

    job = deploy(tmp_path, {"job": "orders_inc", "source": {"url": "sqlite:///src.db"},
                            "copy": {"mode": "incremental", "update_method": "merge"},
                            "tables": [{"name": "orders", "incremental_column": "seq"}]}, ("dev", "prod"))

    def source() -> list[tuple[Any, ...]]:
        return sqlite_rows(src, "SELECT id, status FROM orders ORDER BY id")

    alternate(tmp_path, job, ("dev", "prod"), "orders", source,
              [update(range(1, 11)), insert(range(301, 351)), update(range(290, 320)), insert(range(351, 353))])
    # two scopes in the one state file, each with its own watermark and history
    status = {env: json.loads(copyjob("status", job, "--env", env, "--json").stdout) for env in ("dev", "prod")}
    assert status["dev"]["destination"].endswith("/dev.db") and status["prod"]["destination"].endswith("/prod.db")
    record = drop_and_rerun(tmp_path, job, "prod", "orders", source)
    assert record["tables"][0]["mode"] == "full"
    assert record["tables"][0]["rows_written"] == 352
    assert run(job, "dev")["tables"][0]["mode"] == "incremental"  # dev is untouched by prod's full copy


def test_file_set_two_environments(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    counter = itertools.count(1)

    def land(n: int) -> Callable[[], None]:
        def write() -> None:
            name = f"part{next(counter):03d}.csv"
            lines = ["id,status"] + [f"{i},s{i}" for i in range(n * 100, n * 100 + 20)]
            (folder / name).write_text("\n".join(lines) + "\n")
        return write

    land(0)()
    job = deploy(tmp_path, {"job": "files_env", "source": {"url": "file:in"},
                            "copy": {"mode": "incremental", "update_method": "append"},
                            "tables": [{"name": "orders", "pattern": "*.csv"}]}, ("dev", "prod"))

    def source() -> list[tuple[Any, ...]]:
        out = []
        for path in sorted(folder.glob("*.csv")):
            for line in path.read_text().splitlines()[1:]:
                i, status = line.split(",")
                out.append((int(i), status))
        return sorted(out)

    alternate(tmp_path, job, ("dev", "prod"), "orders", source, [land(1), land(2), land(3)])
    record = drop_and_rerun(tmp_path, job, "dev", "orders", source)
    assert record["tables"][0]["rows_written"] == 80


# ---------------------------------------------------------------- change data capture


@pytest.fixture
def pg_shop(pg_url: str) -> Iterator[str]:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL)",
            "INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 200) g")
    yield pg_url
    drop_slots(pg_url)


def pg_changes(url: str) -> list[Callable[[], None]]:
    return [
        lambda: execute(url, "UPDATE orders SET status = 'u1' WHERE id <= 5"),
        lambda: execute(url, "INSERT INTO orders SELECT g, 'late' FROM generate_series(201, 230) g",
                        "DELETE FROM orders WHERE id BETWEEN 50 AND 59"),
        lambda: execute(url, "UPDATE orders SET status = 'u2' WHERE id % 7 = 0"),
    ]


def kafka_section(broker: Any) -> dict[str, Any]:
    return {"transport": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 2}}


@pytest.mark.parametrize("transport", ["direct", "kafka"])
def test_postgres_cdc_two_environments(tmp_path: Path, pg_shop: str, transport: str,
                                       request: pytest.FixtureRequest) -> None:
    n = next(_ids)
    envs = (f"dev{os.getpid()}x{n}", f"prod{os.getpid()}x{n}")  # topics are named after the environment
    extra = kafka_section(request.getfixturevalue("kafka_broker")) if transport == "kafka" else {}
    job = deploy(tmp_path, {"job": f"pgenv{n}", "source": {"url": pg_shop},
                            "copy": {"mode": "cdc", "update_method": "merge"}, "cdc": {"max_batch_delay": "50ms"},
                            "tables": [{"name": "orders"}], **extra}, envs)

    def source() -> list[tuple[Any, ...]]:
        return rows(pg_shop, "SELECT id, status FROM orders ORDER BY id")

    alternate(tmp_path, job, envs, "orders", source, pg_changes(pg_shop))
    slots = {r[0] for r in rows(pg_shop, "SELECT slot_name FROM pg_replication_slots")}
    assert {f"copyjob_pgenv{n}_{env}" for env in envs} <= slots  # one slot per environment
    drop_and_rerun(tmp_path, job, envs[1], "orders", source)
    execute(pg_shop, "UPDATE orders SET status = 'after' WHERE id = 1")
    for env in envs:
        run_ok(job, env)
        assert dest_rows(tmp_path, env, "orders") == source()


@pytest.fixture
def maria_shop(mariadb_server: Any, mariadb_url: str) -> str:
    database = mariadb_url.rsplit("/", 1)[1]
    mariadb_server.execute_all(database, "CREATE TABLE orders (id INT PRIMARY KEY, status VARCHAR(20) NOT NULL) "
                                         "ENGINE=InnoDB",
                               "INSERT INTO orders SELECT seq, 'new' FROM seq_1_to_200")
    return mariadb_url


@pytest.mark.parametrize("transport", ["direct", "kafka"])
def test_mariadb_cdc_two_environments(tmp_path: Path, mariadb_server: Any, maria_shop: str, transport: str,
                                      request: pytest.FixtureRequest) -> None:
    pytest.importorskip("pymysqlreplication")
    n = next(_ids)
    envs = (f"dev{os.getpid()}x{n}", f"prod{os.getpid()}x{n}")
    database = maria_shop.rsplit("/", 1)[1]
    extra = kafka_section(request.getfixturevalue("kafka_broker")) if transport == "kafka" else {}
    job = deploy(tmp_path, {"job": f"myenv{n}", "source": {"url": maria_shop},
                            "copy": {"mode": "cdc", "update_method": "merge"}, "cdc": {"max_batch_delay": "50ms"},
                            "tables": [{"name": "orders"}], **extra}, envs)

    def sql(*statements: str) -> Callable[[], None]:
        return lambda: mariadb_server.execute_all(database, *statements)

    def source() -> list[tuple[Any, ...]]:
        conn = mariadb_server.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT id, status FROM orders ORDER BY id")
                return [tuple(r) for r in cur.fetchall()]
        finally:
            conn.close()

    alternate(tmp_path, job, envs, "orders", source, [
        sql("UPDATE orders SET status = 'u1' WHERE id <= 5"),
        sql("INSERT INTO orders SELECT seq, 'late' FROM seq_201_to_230", "DELETE FROM orders WHERE id < 10"),
        sql("UPDATE orders SET status = 'u2' WHERE id % 7 = 0"),
    ])
    drop_and_rerun(tmp_path, job, envs[0], "orders", source)


def test_state_rows_are_scoped_by_destination(tmp_path: Path) -> None:
    """Both environments' rows sit in the one state file, keyed by job and destination."""
    src = tmp_path / "src.db"
    sqlite_exec(src, "CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT)")
    sqlite_exec(src, "INSERT INTO t VALUES (1, 'a')")
    job = deploy(tmp_path, {"job": "scoped", "source": {"url": "sqlite:///src.db"},
                            "copy": {"mode": "full"}, "tables": [{"name": "t"}]}, ("dev", "prod"))
    run_ok(job, "dev")
    run_ok(job, "prod")
    con = sqlite3.connect(tmp_path / ".copyjob" / "state.db")
    try:
        keys = sorted(r[0] for r in con.execute("SELECT job FROM table_state"))
    finally:
        con.close()
    assert keys == [f"scoped@sqlite://{(tmp_path / env).resolve()}.db" for env in ("dev", "prod")]


def test_a_slot_shared_by_two_environments_fails_loudly(tmp_path: Path, pg_shop: str) -> None:
    """An explicit cdc.slot shared by two environments: once one consumed the slot past the other's
    position, the other's run fails the table with a one-line error naming copyjob reset (never a silent
    gap), and after the reset it copies the table again."""
    n = next(_ids)
    envs = (f"dev{os.getpid()}x{n}", f"prod{os.getpid()}x{n}")
    job = deploy(tmp_path, {"job": f"shared{n}", "source": {"url": pg_shop},
                            "copy": {"mode": "cdc", "update_method": "merge"},
                            "cdc": {"max_batch_delay": "50ms", "slot": f"shared_slot_{n}",
                                    "publication": {"name": f"shared_pub_{n}"}},
                            "tables": [{"name": "orders"}]}, envs)
    run_ok(job, envs[0])
    execute(pg_shop, "UPDATE orders SET status = 'only prod sees this' WHERE id <= 5")
    run_ok(job, envs[1])
    failed = copyjob("run", job, "--env", envs[0], "--no-progress")
    assert failed.code == 1, failed.output
    error = next(line for line in failed.stdout.splitlines() if line.startswith("failed: orders"))
    assert "another process" in error and f"copyjob reset {job} --env {envs[0]} --table orders" in error
    assert copyjob("reset", job, "--env", envs[0]).code == 0
    run_ok(job, envs[0])
    assert dest_rows(tmp_path, envs[0], "orders") == rows(pg_shop, "SELECT id, status FROM orders ORDER BY id")
