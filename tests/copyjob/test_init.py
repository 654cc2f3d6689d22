"""``copyjob init SOURCE --destination URL``: looks at the source, proposes per table the key and the
incremental column (or says none fits and proposes full), writes a commented job file and variables.yaml with
no password in them, and the job it writes passes ``validate --connect`` and runs with the password taken from
the environment. With --mode cdc it reports what change capture lacks at the source, creating nothing."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, CliResult, copyjob, sqlite_rows, sqlite_script
from tests.pg_cdc import execute, rows
from tests.services.mariadb import MariadbServer
from tests.services.postgres import PostgresServer

PG_SECRET = "Pg-init-secret-42"
MARIA_SECRET = "Maria-init-secret-7"


def init(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> CliResult:
    """``copyjob init`` run in ``cwd``: relative paths on its command line are relative to it."""
    return copyjob("init", *args, cwd=cwd, env=env)


def tables_of(job_file: Path) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in yaml.safe_load(job_file.read_text())["tables"]}


def assert_no_secret(folder: Path, secret: str, result: CliResult) -> None:
    for path in folder.rglob("*.yaml"):
        assert secret not in path.read_text(), path
    assert secret not in result.output


def pg_app_database(server: PostgresServer, name: str) -> tuple[str, str]:
    """A database owned by a login role with a distinctive password: (superuser URL, the role's URL)."""
    admin = server.create_database(name)
    execute(admin, f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN "
                   f"CREATE ROLE app LOGIN PASSWORD '{PG_SECRET}'; END IF; END $$",
            f'ALTER DATABASE "{name}" OWNER TO app')
    return admin, server.url(name, user="app", password=PG_SECRET)


# ---------------------------------------------------------------- PostgreSQL


def test_postgres_proposals_files_validate_and_run(tmp_path: Path, postgres_server: PostgresServer) -> None:
    admin, url = pg_app_database(postgres_server, "init_shop")
    execute(url,
            "CREATE TABLE customers (id int PRIMARY KEY, name text)",
            "CREATE TABLE products (sku text NOT NULL, title text)",
            "CREATE UNIQUE INDEX products_sku ON products (sku)",
            "CREATE TABLE notes (body text)",
            "CREATE TABLE orders (id int PRIMARY KEY, status text, created date, updated_at timestamptz NOT NULL)",
            "CREATE INDEX orders_updated ON orders (updated_at)",
            "CREATE TABLE events (seq bigint GENERATED ALWAYS AS IDENTITY, payload text)",
            "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 30) g",
            "INSERT INTO products VALUES ('a', 'A'), ('b', 'B')",
            "INSERT INTO notes VALUES ('x')",
            "INSERT INTO orders SELECT g, 'new', current_date, now() FROM generate_series(1, 5) g",
            "INSERT INTO events (payload) VALUES ('p1'), ('p2'), ('p3')",
            "ANALYZE")
    job_file = tmp_path / "jobs" / "shop.yaml"

    result = init(url, "--destination", "sqlite:///out.db", "-o", job_file, cwd=tmp_path)

    assert result.code == 0, result.output
    tables = tables_of(job_file)
    assert set(tables) == {"customers", "products", "notes", "orders", "events"}
    assert tables["orders"]["incremental_column"] == "updated_at"  # indexed timestamp before the integer key
    assert "key" not in tables["orders"]  # the primary key is the default
    assert tables["customers"]["incremental_column"] == "id"
    assert tables["products"] == {"name": "products", "key": ["sku"], "mode": "full"}
    assert tables["notes"] == {"name": "notes", "mode": "full", "update_method": "overwrite"}
    assert tables["events"] == {"name": "events", "incremental_column": "seq", "update_method": "append"}
    text = job_file.read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    assert "# customers: ~30 rows; key: id (primary key)" in text
    assert "no primary key and no unique index on NOT NULL columns" in text
    assert "unique index products_sku" in text
    document = yaml.safe_load(text)
    assert document["copy"] == {"mode": "incremental", "update_method": "merge"}
    assert document["source"]["url"] == ("postgresql://${SOURCE_USER}:${SOURCE_PASSWORD}@${SOURCE_HOST}:"
                                         "${SOURCE_PORT}/${SOURCE_DATABASE}")
    variables = yaml.safe_load((tmp_path / "jobs" / "variables.yaml").read_text())
    assert variables == {"default": {"SOURCE_USER": "app", "SOURCE_HOST": "127.0.0.1",
                                     "SOURCE_PORT": str(postgres_server.port), "SOURCE_DATABASE": "init_shop"}}
    assert_no_secret(tmp_path, PG_SECRET, result)
    assert "SOURCE_PASSWORD" in result.stdout

    # the password comes from the environment only
    assert copyjob("validate", "--connect", job_file).code == 2
    env = {"SOURCE_PASSWORD": PG_SECRET}
    checked = copyjob("validate", "--connect", job_file, env=env)
    assert checked.code == 0, checked.output
    ran = copyjob("run", "--no-progress", job_file, env=env)
    assert ran.code == 0, ran.output
    out_db = tmp_path / "out.db"
    assert sqlite_rows(out_db, "SELECT count(*) FROM customers") == [(30,)]
    assert sqlite_rows(out_db, "SELECT count(*) FROM events") == [(3,)]
    assert sqlite_rows(out_db, "SELECT sku FROM products ORDER BY sku") == [("a",), ("b",)]
    assert rows(admin, "SELECT count(*) FROM pg_publication") == [(0,)]


def test_postgres_cdc_readiness_is_reported_with_fixes(tmp_path: Path, replica_only: PostgresServer) -> None:
    admin, url = pg_app_database(replica_only, "init_cdc")
    execute(url, "CREATE TABLE orders (id int PRIMARY KEY, status text)")

    result = init(url, "-d", "sqlite:///out.db", "--mode", "cdc", "--yes", "-o", tmp_path / "job.yaml", cwd=tmp_path)

    assert result.code == 0, result.output
    assert "wal_level is replica" in result.stderr and "ALTER SYSTEM SET wal_level = logical" in result.stderr
    assert "role app lacks REPLICATION: ALTER ROLE app REPLICATION" in result.stderr
    text = (tmp_path / "job.yaml").read_text()
    assert "# CDC not ready:" in text and "wal_level = logical" in text
    assert yaml.safe_load(text)["copy"]["mode"] == "cdc"
    assert_no_secret(tmp_path, PG_SECRET, result)
    assert rows(admin, "SELECT count(*) FROM pg_publication") == [(0,)]
    assert rows(admin, "SELECT count(*) FROM pg_replication_slots") == [(0,)]


# ---------------------------------------------------------------- MariaDB


def test_mariadb_source(tmp_path: Path, mariadb_server: MariadbServer) -> None:
    database = "init_maria"
    mariadb_server.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    mariadb_server.execute_all(
        database,
        "CREATE TABLE orders (id int AUTO_INCREMENT PRIMARY KEY, total int, updated_at datetime NOT NULL, "
        "INDEX by_updated (updated_at))",
        "CREATE TABLE tags (code varchar(20) NOT NULL, label text, UNIQUE KEY tag_code (code))",
        "CREATE TABLE audit (id int AUTO_INCREMENT, what text, KEY (id))",
        "CREATE TABLE raw_lines (line text)",
        "INSERT INTO orders (total, updated_at) VALUES (1, NOW()), (2, NOW())",
        "INSERT INTO tags VALUES ('a', 'A')",
        "INSERT INTO audit (what) VALUES ('x')",
        "ANALYZE TABLE orders, tags, audit, raw_lines",
        f"CREATE USER IF NOT EXISTS 'reader'@'%' IDENTIFIED BY '{MARIA_SECRET}'",
        f"GRANT SELECT ON {database}.* TO 'reader'@'%'")
    url = mariadb_server.url(database, user="reader", password=MARIA_SECRET)
    job_file = tmp_path / "job.yaml"

    result = init(url, "--destination", "duckdb:///wh.duckdb", "-o", job_file, "--tables", "orders,tags",
                  "--tables", "a*", "--tables", "raw_*", cwd=tmp_path)

    assert result.code == 0, result.output
    tables = tables_of(job_file)
    assert tables["orders"] == {"name": "orders", "incremental_column": "updated_at"}
    assert tables["tags"] == {"name": "tags", "key": ["code"], "mode": "full"}
    assert tables["audit"] == {"name": "audit", "incremental_column": "id", "update_method": "append"}
    assert tables["raw_lines"] == {"name": "raw_lines", "mode": "full", "update_method": "overwrite"}
    assert "# orders: ~2 rows; key: id (primary key)" in job_file.read_text()
    assert_no_secret(tmp_path, MARIA_SECRET, result)
    env = {"SOURCE_PASSWORD": MARIA_SECRET}
    checked = copyjob("validate", "--connect", job_file, env=env)
    assert checked.code == 0, checked.output
    ran = copyjob("run", "--no-progress", job_file, env=env)
    assert ran.code == 0, ran.output

    # a second job in the same folder, from another database: its values get names of its own
    mariadb_server.execute("CREATE DATABASE IF NOT EXISTS init_maria2")
    mariadb_server.execute_all("init_maria2", "CREATE TABLE t (id int PRIMARY KEY)",
                               "GRANT SELECT ON init_maria2.* TO 'reader'@'%'")
    second = init(mariadb_server.url("init_maria2", user="reader", password=MARIA_SECRET), "-d",
                  "sqlite:///two.db", "-o", tmp_path / "two.yaml", cwd=tmp_path)
    assert second.code == 0, second.output
    variables = yaml.safe_load((tmp_path / "variables.yaml").read_text())["default"]
    assert variables["SOURCE_DATABASE"] == database and variables["INIT_MARIA2_SOURCE_DATABASE"] == "init_maria2"
    assert "${INIT_MARIA2_SOURCE_PASSWORD}" in (tmp_path / "two.yaml").read_text()
    assert_no_secret(tmp_path, MARIA_SECRET, second)
    for job, secret_name in ((job_file, "SOURCE_PASSWORD"), (tmp_path / "two.yaml", "INIT_MARIA2_SOURCE_PASSWORD")):
        checked = copyjob("validate", "--connect", job, env={secret_name: MARIA_SECRET})
        assert checked.code == 0, checked.output


def test_mariadb_cdc_readiness_names_the_missing_grants(tmp_path: Path, mariadb_server: MariadbServer) -> None:
    database = "init_maria_cdc"
    mariadb_server.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    mariadb_server.execute_all(
        database, "CREATE TABLE orders (id int PRIMARY KEY, total int)",
        f"CREATE USER IF NOT EXISTS 'reader'@'%' IDENTIFIED BY '{MARIA_SECRET}'",
        f"GRANT SELECT ON {database}.* TO 'reader'@'%'")
    url = mariadb_server.url(database, user="reader", password=MARIA_SECRET)

    result = init(url, "-d", "sqlite:///out.db", "--mode", "cdc", "-o", tmp_path / "job.yaml", cwd=tmp_path)

    assert result.code == 0, result.output
    assert "GRANT REPLICATION SLAVE ON *.*" in result.stderr, result.output
    assert "# CDC not ready:" in (tmp_path / "job.yaml").read_text()
    assert_no_secret(tmp_path, MARIA_SECRET, result)


# ---------------------------------------------------------------- SQLite, DuckDB, folders


def shop_sqlite(path: Path) -> Path:
    sqlite_script(path, """
        CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, updated_at TIMESTAMP);
        CREATE INDEX orders_updated ON orders (updated_at);
        CREATE TABLE lines (code TEXT NOT NULL, qty INT);
        CREATE UNIQUE INDEX lines_code ON lines (code);
        CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE logs (msg TEXT);
        INSERT INTO orders VALUES (1, 'a', '2024-01-01 00:00:00'), (2, 'b', '2024-01-02 00:00:00');
        INSERT INTO lines VALUES ('x', 1);
        INSERT INTO items VALUES (1, 'i');
        INSERT INTO logs VALUES ('m');
    """)
    return path


def test_sqlite_source(tmp_path: Path) -> None:
    source = shop_sqlite(tmp_path / "shop.db")
    job_file = tmp_path / "jobs" / "job.yaml"

    result = init(f"sqlite:///{source}", "-d", f"sqlite:///{tmp_path / 'out.db'}", "-o", job_file,
                  "--update-method", "append", cwd=tmp_path)

    assert result.code == 0, result.output
    tables = tables_of(job_file)
    assert tables["orders"] == {"name": "orders", "incremental_column": "updated_at"}
    assert tables["items"] == {"name": "items", "incremental_column": "id"}  # INTEGER PRIMARY KEY: the rowid
    assert tables["lines"] == {"name": "lines", "key": ["code"], "mode": "full"}
    assert tables["logs"] == {"name": "logs", "mode": "full"}
    document = yaml.safe_load(job_file.read_text())
    assert document["copy"]["update_method"] == "append"
    assert document["source"]["url"] == "sqlite:///../shop.db"  # relative to the job file
    assert "# orders: ~2 rows" in job_file.read_text()
    checked = copyjob("validate", "--connect", job_file)
    assert checked.code == 0, checked.output
    ran = copyjob("run", "--no-progress", job_file)
    assert ran.code == 0, ran.output
    assert sqlite_rows(tmp_path / "out.db", "SELECT count(*) FROM orders") == [(2,)]


def test_duckdb_source(tmp_path: Path) -> None:
    import duckdb

    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, amount INTEGER)")
    con.execute("CREATE TABLE codes (code VARCHAR NOT NULL UNIQUE, n INTEGER)")
    con.execute("INSERT INTO sales VALUES (1, 10), (2, 20)")
    con.close()

    job_file = tmp_path / "job.yaml"
    result = init("duckdb:///wh.duckdb", "-d", "sqlite:///copy.db", "-o", job_file, "--yes", cwd=tmp_path)
    assert result.code == 0, result.output
    tables = tables_of(job_file)
    assert tables["sales"] == {"name": "sales", "incremental_column": "id"}
    assert tables["codes"] == {"name": "codes", "key": ["code"], "mode": "full"}
    assert "# sales: ~2 rows" in job_file.read_text()
    ran = copyjob("run", "--no-progress", job_file)
    assert ran.code == 0, ran.output
    assert sqlite_rows(tmp_path / "copy.db", "SELECT count(*) FROM sales") == [(2,)]


def test_folder_of_csvs(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "events").mkdir(parents=True)
    (inbox / "orders_2024-01.csv").write_text("id,total\n1,10\n2,20\n")
    (inbox / "orders_2024-02.csv").write_text("id,total\n3,30\n")
    (inbox / "customers.csv").write_text("id,name\n1,Ann\n")
    (inbox / "events" / "day1.jsonl").write_text('{"id": 1}\n')
    (inbox / "events" / "day2.jsonl").write_text('{"id": 2}\n')
    (inbox / "readme.txt").write_text("not data\n")
    job_file = tmp_path / "job.yaml"

    result = init("./inbox", "-d", "sqlite:///out.db", "-o", job_file, cwd=tmp_path)

    assert result.code == 0, result.output
    tables = tables_of(job_file)
    assert tables == {
        "customers": {"name": "customers", "pattern": "customers.csv", "format": "csv"},
        "events_day": {"name": "events_day", "pattern": "events/day*.jsonl", "format": "jsonl"},
        "orders": {"name": "orders", "pattern": "orders*.csv", "format": "csv"},
    }
    document = yaml.safe_load(job_file.read_text())
    assert document["copy"] == {"mode": "incremental", "update_method": "append"}
    assert document["source"]["url"] == "./inbox"
    assert "# orders: 2 files (csv)" in job_file.read_text()
    assert job_file.read_text().startswith("# yaml-language-server: $schema=jobfile.schema.json\n")
    assert (tmp_path / "jobfile.schema.json").is_file()
    checked = copyjob("validate", "--connect", job_file)
    assert checked.code == 0, checked.output
    ran = copyjob("run", "--no-progress", job_file)
    assert ran.code == 0, ran.output
    assert sqlite_rows(tmp_path / "out.db", "SELECT count(*) FROM orders") == [(3,)]
    assert sqlite_rows(tmp_path / "out.db", "SELECT count(*) FROM events_day") == [(2,)]


# ---------------------------------------------------------------- scripts and existing files


def test_without_a_terminal_it_never_asks(tmp_path: Path) -> None:
    source = shop_sqlite(tmp_path / "shop.db")
    job_file = tmp_path / "job.yaml"

    missing = init(f"sqlite:///{source}", "-o", job_file, cwd=tmp_path)  # stdin and stdout are pipes here

    assert missing.code == 2, missing.output
    assert "--destination is required" in missing.stderr
    assert "?" not in missing.stdout and "[" not in missing.stdout  # no prompt was shown
    assert not job_file.exists()
    done = init(f"sqlite:///{source}", "-d", "sqlite:///out.db", "-o", job_file, "--mode", "full", cwd=tmp_path)
    assert done.code == 0, done.output
    assert yaml.safe_load(job_file.read_text())["copy"]["mode"] == "full"
    bad = init(f"sqlite:///{source}", "-d", "sqlite:///out.db", "-o", tmp_path / "x.yaml", "--mode", "fast",
               cwd=tmp_path)
    assert bad.code == 2 and "--mode 'fast'" in bad.stderr
    no_log = init(f"sqlite:///{source}", "-d", "sqlite:///out.db", "-o", tmp_path / "x.yaml", "--mode", "cdc",
                  cwd=tmp_path)
    assert no_log.code == 2 and "--mode cdc needs a PostgreSQL or MySQL/MariaDB source" in no_log.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_an_existing_job_file_is_kept_without_force(tmp_path: Path) -> None:
    source = shop_sqlite(tmp_path / "shop.db")
    job_file = tmp_path / "job.yaml"
    job_file.write_text("# mine\n")

    refused = init(f"sqlite:///{source}", "-d", "sqlite:///out.db", "-o", job_file, cwd=tmp_path)

    assert refused.code == 2, refused.output
    assert "exists already" in refused.stderr and "--force" in refused.stderr
    assert job_file.read_text() == "# mine\n"
    assert not (tmp_path / "variables.yaml").exists()
    forced = init(f"sqlite:///{source}", "-d", "sqlite:///out.db", "-o", job_file, "--force", cwd=tmp_path)
    assert forced.code == 0, forced.output
    assert "tables:" in job_file.read_text()


def test_unreachable_source_exits_like_other_commands(tmp_path: Path) -> None:
    result = init("sqlite:///missing.db", "-d", "sqlite:///out.db", "-o", tmp_path / "job.yaml", cwd=tmp_path)
    assert result.code == 1, result.output
    assert not (tmp_path / "job.yaml").exists()




def test_on_a_terminal_it_asks_with_defaults(tmp_path: Path) -> None:
    """Tables, mode, update method and destination are asked, each with a default (Enter takes it)."""
    source = shop_sqlite(tmp_path / "shop.db")
    answers = {"Tables to copy": "orders,items", "Mode": "", "Update method": "append", "Destination URL": ""}

    code, screen = on_terminal([sys.executable, "-m", "copyjob", "init", f"sqlite:///{source}", "-o", "job.yaml"],
                               tmp_path, answers)

    assert code == 0, screen
    assert "Tables to copy (globs, comma-separated) [*]" in screen and "Destination URL [duckdb:///shop.duckdb]" \
        in screen
    document = yaml.safe_load((tmp_path / "job.yaml").read_text())
    assert [t["name"] for t in document["tables"]] == ["items", "orders"]
    assert document["copy"] == {"mode": "incremental", "update_method": "append"}
    assert document["destination"]["url"] == "duckdb:///shop.duckdb"


def on_terminal(argv: list[str], cwd: Path, answers: dict[str, str], deadline_s: float = 120) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal, typing each answer once its prompt appears; (exit code, screen)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True,
                            env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})
    os.close(terminal)
    screen, pending, end = "", dict(answers), time.monotonic() + deadline_s
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk.decode(errors="replace")
            for prompt in list(pending):
                if screen.rstrip().endswith(":") and prompt in screen.rsplit("\n", 1)[-1]:
                    os.write(controller, (pending.pop(prompt) + "\n").encode())
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=max(1.0, end - time.monotonic())), screen
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)


def test_s3_prefix_with_credentials_in_the_url(tmp_path: Path) -> None:
    """Files under an S3 prefix are grouped into sets; keys given in the URL's query become environment
    variables of the job, never written."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    import pyarrow.fs as pafs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = "http://{}:{}".format(*server.get_host_and_port())
        fs = pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http", access_key="k",
                               secret_key="s3-init-secret", region="us-east-1", allow_bucket_creation=True)
        bucket = f"init-{uuid.uuid4().hex[:12]}"  # moto keeps every bucket of the process: one of our own
        fs.create_dir(bucket)
        for name in ("in/sales_1.csv", "in/sales_2.csv"):
            with fs.open_output_stream(f"{bucket}/{name}") as f:
                f.write(b"id,amount\n1,2\n")
        url = f"s3://{bucket}/in?endpoint_url={endpoint}&region=us-east-1&access_key=k&secret_key=s3-init-secret"

        result = init(url, "-d", "sqlite:///out.db", "-o", tmp_path / "job.yaml", cwd=tmp_path)

        assert result.code == 0, result.output
        job_file = tmp_path / "job.yaml"
        assert tables_of(job_file) == {"sales": {"name": "sales", "pattern": "sales*.csv", "format": "csv"}}
        assert "${SOURCE_SECRET_KEY}" in yaml.safe_load(job_file.read_text())["source"]["url"]
        assert_no_secret(tmp_path, "s3-init-secret", result)
        env = {"SOURCE_SECRET_KEY": "s3-init-secret", "SOURCE_ACCESS_KEY": "k"}
        ran = copyjob("run", "--no-progress", job_file, env=env)
        assert ran.code == 0, ran.output
        assert sqlite_rows(tmp_path / "out.db", "SELECT count(*) FROM sales") == [(2,)]
    finally:
        server.stop()


def test_tables_that_match_no_pattern_are_an_error(tmp_path: Path) -> None:
    source = shop_sqlite(tmp_path / "shop.db")
    result = init(f"sqlite:///{source}", "-d", "sqlite:///out.db", "--tables", "nothing*", cwd=tmp_path)
    assert result.code == 2, result.output
    assert "has no tables matching nothing*" in result.stderr
    assert not (tmp_path / "job.yaml").exists()


def test_variables_are_added_to_a_shared_file_keeping_its_comments_and_sections() -> None:
    from copyjob.init.render import Endpoint, merged_variables, variable_conflicts

    existing = ("# shared by the jobs of this folder\ndefault:\n    SOURCE_HOST: db  # the primary\n"
                "prod:\n  SOURCE_HOST: p\n")
    source = Endpoint("", {"SOURCE_HOST": "db", "SOURCE_PORT": "5432"})

    merged = merged_variables(existing, source, Endpoint("duckdb:///w.duckdb"))

    assert merged.startswith("# shared by the jobs of this folder\ndefault:\n    SOURCE_PORT: \"5432\"\n")
    assert "SOURCE_HOST: db  # the primary" in merged and "prod:\n  SOURCE_HOST: p" in merged
    assert yaml.safe_load(merged)["default"] == {"SOURCE_HOST": "db", "SOURCE_PORT": "5432"}
    assert variable_conflicts(existing, Endpoint("", {"SOURCE_HOST": "other"})) == ["SOURCE_HOST"]
    assert merged_variables("default: {}\n", source) == "default:\n  SOURCE_HOST: db\n  SOURCE_PORT: \"5432\"\n"


def test_schema_line_points_at_the_project_schema_inside_a_checkout(tmp_path: Path) -> None:
    from copyjob.init.render import schema_reference

    assert schema_reference(ROOT / "jobs" / "nightly") == "../../docs/jobfile.schema.json"
    assert schema_reference(tmp_path) is None  # outside: init writes jobfile.schema.json beside the job
