"""The examples/ folder: every job validates (against the JSON Schema, and with ``copyjob validate`` for each
environment of its variables.yaml) and every example with a database or S3 is run against the test services,
its variables pointed at them with ``--variables``. A new example folder is checked by the first tests as it
is; one with connections also needs a scenario in ``RUNS``."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from jsonschema import Draft202012Validator

from copyjob.jobfile import job_json_schema
from tests.helpers import ROOT, copyjob, duckdb_rows, sqlite_script
from tests.pg_cdc import drop_slots, execute, rows

EXAMPLES = ROOT / "examples"
FOLDERS = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())
SCHEMA_LINE = "# yaml-language-server: $schema=../../docs/jobfile.schema.json"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def job_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.yaml") if p.name != "variables.yaml")


def environments(folder: Path) -> list[str | None]:
    library = folder / "variables.yaml"
    if not library.exists():
        return [None]
    return [name for name in yaml.safe_load(library.read_text()) if name != "default"]


def secrets(folder: Path) -> dict[str, str]:
    """The variables the example leaves to the process environment (passwords), set to a placeholder."""
    library = folder / "variables.yaml"
    known: set[str] = set()
    if library.exists():
        for values in yaml.safe_load(library.read_text()).values():
            known |= set(values)
    used = {name for path in [*job_files(folder), library] if path.exists()
            for name in _VARIABLE.findall(path.read_text())}
    return {name: "not-a-password" for name in used - known}


def test_there_are_examples() -> None:
    assert len(FOLDERS) >= 6


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_example_is_documented_and_valid(folder: Path) -> None:
    assert (folder / "README.md").exists(), f"{folder.name}: add a README.md"
    jobs = job_files(folder)
    assert jobs, f"{folder.name}: no job file"
    validator = Draft202012Validator(job_json_schema())
    for job in jobs:
        text = job.read_text()
        assert text.splitlines()[0] == SCHEMA_LINE, f"{job}: start with {SCHEMA_LINE}"
        problems = [e.message for e in validator.iter_errors(yaml.safe_load(text))]
        assert not problems, f"{job}: {problems}"
        for env in environments(folder):
            out = copyjob("validate", job, *(["--env", env] if env else []), env=secrets(folder))
            assert out.code == 0, f"{job} --env {env}: {out.output}"


def connects(folder: Path) -> bool:
    """An example naming a database or S3 (its URLs come from variables)."""
    files = [*job_files(folder), folder / "variables.yaml"]
    return any(re.search(r"(postgresql|mysql|mariadb|s3)://", p.read_text()) for p in files if p.exists())


# ---------------------------------------------------------------- running the examples


def url_parts(url: str, prefix: str) -> dict[str, str]:
    u = urlsplit(url)
    return {f"{prefix}_USER": unquote(u.username or ""), f"{prefix}_PASSWORD": unquote(u.password or ""),
            f"{prefix}_HOST": u.hostname or "", f"{prefix}_PORT": str(u.port), f"{prefix}_DATABASE": u.path[1:]}


def workdir(tmp_path: Path, name: str, variables: dict[str, str]) -> tuple[Path, Path]:
    """The example copied into ``tmp_path`` (what it writes stays there) and a variables file for the test
    services."""
    work = tmp_path / name
    shutil.copytree(EXAMPLES / name, work)
    library = tmp_path / "test-variables.yaml"
    library.write_text(yaml.safe_dump({"default": variables}))
    return work / "job.yaml", library


def ok(*args: str | Path, env: dict[str, str] | None = None) -> str:
    result = copyjob(*args, env=env)
    assert result.code == 0, result.output
    return result.stdout


def run_postgres_to_duckdb(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    src: str = request.getfixturevalue("pg_url")
    execute(src, "CREATE TABLE customers (id int PRIMARY KEY, name text, updated_at timestamptz NOT NULL)",
            "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, amount numeric(10,2), "
            "updated_at timestamptz NOT NULL)",
            "INSERT INTO customers SELECT g, 'c' || g, '2026-01-01'::timestamptz + g * interval '1 minute' "
            "FROM generate_series(1, 50) g",
            "INSERT INTO orders SELECT g, g % 50 + 1, g * 1.5, '2026-01-01'::timestamptz + g * interval '1 minute' "
            "FROM generate_series(1, 500) g")
    warehouse = tmp_path / "warehouse.duckdb"
    job, library = workdir(tmp_path, "postgres-to-duckdb", {**url_parts(src, "PG"), "WAREHOUSE": str(warehouse)})
    ok("run", job, "--variables", library)
    assert duckdb_rows(warehouse, "SELECT count(*), count(cust_id) FROM orders") == [(500, 500)]
    execute(src, "UPDATE orders SET amount = 0, updated_at = '2026-02-01' WHERE id <= 10",
            "INSERT INTO orders VALUES (501, 1, 1, '2026-02-01')")
    ok("run", job, "--variables", library)
    assert duckdb_rows(warehouse, "SELECT count(*), count(*) FILTER (WHERE amount = 0) FROM orders") == [(501, 10)]
    assert duckdb_rows(warehouse, "SELECT count(*) FROM customers") == [(50,)]


def run_postgres_cdc_to_postgres(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    src: str = request.getfixturevalue("pg_url")
    dst: str = request.getfixturevalue("pg_url2")
    execute(src, "CREATE TABLE customers (id int PRIMARY KEY, name text)",
            "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status text)",
            "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 20) g",
            "INSERT INTO orders SELECT g, g % 20 + 1, 'new' FROM generate_series(1, 300) g")
    job, library = workdir(tmp_path, "postgres-cdc-to-postgres", {**url_parts(src, "SRC"), **url_parts(dst, "DST")})
    try:
        ok("run", job, "--variables", library)  # the snapshot
        execute(src, "UPDATE orders SET status = 'paid' WHERE id <= 30", "DELETE FROM orders WHERE id > 290",
                "INSERT INTO customers VALUES (21, 'new customer')")
        ok("run", job, "--variables", library)  # the changes, from the WAL
        assert rows(dst, "SELECT count(*), count(*) FILTER (WHERE status = 'paid') FROM orders") == [(290, 30)]
        assert rows(dst, "SELECT name FROM customers WHERE id = 21") == [("new customer",)]
    finally:
        copyjob("drop", job, "--variables", library, "--yes")
        drop_slots(src)


def run_mariadb_cdc_kafka_postgres(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The README's commands: the capture publishes, two apply members share the partitions."""
    mariadb = request.getfixturevalue("mariadb_server")
    src: str = request.getfixturevalue("mariadb_url")
    dst: str = request.getfixturevalue("pg_url")
    broker = request.getfixturevalue("kafka_broker")
    database = urlsplit(src).path[1:]
    mariadb.execute_all(database,
                        "CREATE TABLE customers (id int PRIMARY KEY, name varchar(40)) ENGINE=InnoDB",
                        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status varchar(20)) ENGINE=InnoDB",
                        "INSERT INTO customers VALUES " + ", ".join(f"({i}, 'c{i}')" for i in range(1, 21)),
                        "INSERT INTO orders VALUES " + ", ".join(f"({i}, {i % 20 + 1}, 'new')" for i in range(1, 401)))
    mariadb_parts = {k.replace("SRC_", "MARIADB_"): v for k, v in url_parts(src, "SRC").items()}
    job, library = workdir(tmp_path, "mariadb-cdc-kafka-postgres",
                           {**mariadb_parts, **url_parts(dst, "PG"), "KAFKA": broker.bootstrap,
                            "KAFKA_REPLICATION": "1"})
    # one broker serves every test of the session: topics of their own
    text = job.read_text().replace("  format: avro", f"  topic_prefix: example{tmp_path.name[-8:].replace('_', '')}\n"
                                   "  format: avro")
    job.write_text(text)
    ok("capture", job, "--variables", library)  # the snapshot
    mariadb.execute_all(database, "UPDATE orders SET status = 'paid' WHERE id <= 40",
                        "DELETE FROM orders WHERE id > 390", "INSERT INTO customers VALUES (21, 'late')")
    ok("capture", job, "--variables", library)  # the changes, from the binlog
    members = [subprocess.Popen([sys.executable, "-m", "copyjob", "apply", str(job), "--variables", str(library),
                                 "--until-caught-up"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    try:
        outs = [m.communicate(timeout=240) for m in members]
    finally:
        for m in members:
            if m.poll() is None:
                m.send_signal(signal.SIGKILL)
                m.wait(10)
    assert [m.returncode for m in members] == [0, 0], outs
    assert rows(dst, "SELECT count(*), count(*) FILTER (WHERE status = 'paid') FROM orders") == [(390, 40)]
    assert rows(dst, "SELECT name FROM customers WHERE id = 21") == [("late",)]


def run_s3_to_postgres(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 example")
    import pyarrow.fs as pafs

    dst: str = request.getfixturevalue("pg_url")
    execute(dst, "CREATE SCHEMA raw")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        bucket = "example-exports"
        fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", access_key="k", secret_key="s",
                               region="us-east-1", allow_bucket_creation=True)
        fs.create_dir(bucket)
        files = {"exports/events/2026/05/10/part-0001.jsonl":
                 "".join(f'{{"event_id": {i}, "kind": "click"}}\n' for i in range(1, 101)),
                 "exports/customers/customers.csv": "id;name\n1;alice\n2;bob\n"}
        for name, body in files.items():
            with fs.open_output_stream(f"{bucket}/{name}") as f:
                f.write(body.encode())
        job, library = workdir(tmp_path, "s3-to-postgres", {**url_parts(dst, "PG"), "S3_BUCKET": bucket,
                                                            "S3_REGION": "us-east-1"})
        env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
        ok("run", job, "--variables", library, env=env)
    finally:
        server.stop()
    assert rows(dst, "SELECT count(*), count(_source_file) FROM raw.events") == [(100, 100)]
    assert rows(dst, "SELECT id, name FROM raw.customers ORDER BY id") == [(1, "alice"), (2, "bob")]


def run_dev_and_prod(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """--env dev as shipped (SQLite → DuckDB beside the job); prod's variables pointed at PostgreSQL."""
    work = tmp_path / "dev-and-prod"
    shutil.copytree(EXAMPLES / "dev-and-prod", work)
    (work / "dev").mkdir()
    sqlite_script(work / "dev" / "shop.db", "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, "
                  "updated_at TEXT); INSERT INTO orders VALUES (1, 'tea', '2026-01-01 09:00:00'), "
                  "(2, 'cake', '2026-01-01 10:00:00')")
    ok("run", work / "job.yaml", "--env", "dev")
    assert duckdb_rows(work / "dev" / "warehouse.duckdb", "SELECT count(*) FROM orders") == [(2,)]
    src: str = request.getfixturevalue("pg_url")
    dst: str = request.getfixturevalue("pg_url2")
    execute(src, "CREATE TABLE orders (id int PRIMARY KEY, item text, updated_at timestamptz)",
            "INSERT INTO orders VALUES (1, 'tea', now()), (2, 'cake', now()), (3, 'jam', now())")
    library = tmp_path / "prod-variables.yaml"
    library.write_text(yaml.safe_dump({"default": {"BATCH_ROWS": "50000", "SCHEMA": "public.",
                                                   "SOURCE_URL": src, "DESTINATION_URL": dst}}))
    ok("run", work / "job.yaml", "--variables", library)
    assert rows(dst, "SELECT count(*) FROM orders") == [(3,)]


def run_csv_to_parquet(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import pyarrow.dataset as ds

    work = tmp_path / "csv-to-parquet"
    shutil.copytree(EXAMPLES / "csv-to-parquet", work)
    ok("run", work / "job.yaml")
    table = ds.dataset(work / "lake" / "orders", format="parquet").to_table()
    assert sorted(table.column("id").to_pylist()) == [1, 2, 3]
    assert table.column("amount").null_count == 1


RUNS: dict[str, Callable[[Path, pytest.FixtureRequest], Any]] = {
    "postgres-to-duckdb": run_postgres_to_duckdb,
    "postgres-cdc-to-postgres": run_postgres_cdc_to_postgres,
    "mariadb-cdc-kafka-postgres": run_mariadb_cdc_kafka_postgres,
    "s3-to-postgres": run_s3_to_postgres,
    "dev-and-prod": run_dev_and_prod,
    "csv-to-parquet": run_csv_to_parquet,
}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_example_runs(folder: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    scenario = RUNS.get(folder.name)
    if scenario is None:
        assert not connects(folder), f"{folder.name} names a database or S3: add a scenario to RUNS that runs it"
        pytest.skip("no systems to run against")
    scenario(tmp_path, request)


def test_every_scenario_has_its_example() -> None:
    assert set(RUNS) <= {p.name for p in FOLDERS}

