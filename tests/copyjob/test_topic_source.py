"""A ``kafka://`` source (copyjob.topic_source): one job publishes with transport kafka, another job, knowing only
the broker and the topics, applies them, in each of copyjob's formats; and the job file is checked at the line of
the key to change. On the session's real broker, through the CLI."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, copyjob, duckdb_rows, sqlite_exec, sqlite_rows, sqlite_script, write_job
from tests.services.kafka import KafkaBroker
from tests.services.postgres import PostgresServer, start_postgres

_ids = itertools.count()
ORDERS = "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount NUMERIC(12,2), status TEXT, updated_at TIMESTAMP)"


def publisher(tmp_path: Path, broker: KafkaBroker, fmt: str) -> tuple[Path, str]:
    """A job that publishes shop.db's orders (full, as snapshot events) in ``fmt`` and applies nothing."""
    n = next(_ids)
    prefix = f"ts{os.getpid()}x{n}"
    job = write_job(tmp_path / "publish.yaml", {
        "job": f"pub{n}", "source": {"url": "sqlite:///shop.db"}, "destination": {"url": "duckdb:///unused.duckdb"},
        "copy": {"mode": "full", "update_method": "merge"}, "tables": [{"name": "orders"}],
        "transport": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": prefix,
                                        "format": fmt}})
    return job, prefix


def consumer(tmp_path: Path, broker: KafkaBroker, options: dict[str, str], topic: str,
             **table: Any) -> Path:
    n = next(_ids)
    return write_job(tmp_path / "apply.yaml", {
        "job": f"sub{n}", "source": {"url": f"kafka://{broker.bootstrap}", "options": options},
        "destination": {"url": "duckdb:///wh.duckdb"}, "copy": {"mode": "cdc", "update_method": "merge"},
        "tables": [{"name": topic, "target": "orders", **table}]})


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    db = tmp_path / "shop.db"
    sqlite_script(db, ORDERS)
    sqlite_exec(db, "INSERT INTO orders VALUES (?, ?, ?, ?)",
                [(i, f"{i}.50", "new", f"2026-01-01 00:00:{i % 60:02d}") for i in range(1, 101)])
    return db


@pytest.mark.parametrize("fmt", ["avro", "json", "debezium"])
def test_one_job_publishes_another_applies_with_only_a_job_file(
        tmp_path: Path, shop: Path, kafka_broker: KafkaBroker, fmt: str) -> None:
    pub, prefix = publisher(tmp_path, kafka_broker, fmt)
    published = copyjob("capture", pub)
    assert published.code == 0, published.output
    options = {"format": fmt, "topic_prefix": prefix}
    sub = consumer(tmp_path, kafka_broker, options, f"{prefix}.main.orders", columns={"status": "state"})
    ran = copyjob("run", sub)
    assert ran.code == 0, ran.output
    wh = tmp_path / "wh.duckdb"
    assert duckdb_rows(wh, "SELECT count(*), sum(amount), min(state) FROM orders") == [
        (100, sum(Decimal(f"{i}.50") for i in range(1, 101)), "new")]
    assert duckdb_rows(wh, "SELECT updated_at FROM orders WHERE id = 7")[0][0].isoformat() == "2026-01-01T00:00:07"
    # the publisher runs again (full: every row once more, ten of them changed): only the new events apply
    sqlite_exec(shop, "UPDATE orders SET status = 'paid' WHERE id <= 10")
    assert copyjob("capture", pub).code == 0
    ran = copyjob("run", sub)
    assert ran.code == 0, ran.output
    assert duckdb_rows(wh, "SELECT state, count(*) FROM orders GROUP BY 1 ORDER BY 1") == [("new", 90), ("paid", 10)]


def test_a_stream_starting_latest_applies_only_what_is_published_from_then_on(
        tmp_path: Path, shop: Path, kafka_broker: KafkaBroker) -> None:
    pub, prefix = publisher(tmp_path, kafka_broker, "json")
    assert copyjob("capture", pub).code == 0  # 100 events before the apply side starts: never applied
    sub = latest_job(tmp_path, kafka_broker, prefix)
    wh = tmp_path / "wh.db"
    ran = copyjob("run", sub, timeout=120)  # a bounded run: what was there counts as reached
    assert ran.code == 0 and applied_rows(wh) == 0, ran.output
    apply = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(sub)], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        group = "copyjob." + yaml.safe_load(sub.read_text())["job"]
        wait_for(lambda: group_members(kafka_broker, group) == 1, what="the stream in its group")
        sqlite_exec(shop, "UPDATE orders SET status = 'paid' WHERE id <= 10")
        assert copyjob("capture", pub).code == 0  # 100 more, published while it runs: applied
        wait_for(lambda: applied_rows(wh) == 100, what="the new events applied")
    finally:
        apply.send_signal(signal.SIGTERM)
        out = apply.communicate(timeout=60)
    assert apply.returncode == 0, out
    assert "100 rows written" in out[0], out
    assert sqlite_rows(wh, "SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1") == [("new", 90), ("paid", 10)]


def test_a_job_starting_latest_goes_on_from_where_its_first_run_began(
        tmp_path: Path, shop: Path, kafka_broker: KafkaBroker) -> None:
    """``start: latest`` is resolved once: the first run stores each partition's end as its marker, so what is
    published between two runs is applied by the second, not skipped as "before the start"."""
    pub, prefix = publisher(tmp_path, kafka_broker, "json")
    assert copyjob("capture", pub).code == 0  # before the job's first run: never applied
    sub = latest_job(tmp_path, kafka_broker, prefix)
    wh = tmp_path / "wh.db"
    ran = copyjob("run", sub)
    assert ran.code == 0 and applied_rows(wh) == 0, ran.output
    assert copyjob("capture", pub).code == 0  # between the runs: applied by the next one
    ran = copyjob("run", sub)
    assert ran.code == 0, ran.output
    assert applied_rows(wh) == 100


def latest_job(tmp_path: Path, broker: KafkaBroker, prefix: str) -> Path:
    """A job that appends the publisher's json topic into wh.db, from its end (``start: latest``)."""
    return write_job(tmp_path / "apply.yaml", {
        "job": f"late{next(_ids)}", "source": {"url": f"kafka://{broker.bootstrap}",
                                               "options": {"format": "json", "topic_prefix": prefix,
                                                           "start": "latest"}},
        "destination": {"url": "sqlite:///wh.db"}, "copy": {"mode": "cdc", "update_method": "append"},
        "tables": [{"name": f"{prefix}.main.orders", "target": "orders"}]})


def applied_rows(db: Path) -> int:
    try:
        return int(sqlite_rows(db, "SELECT count(*) FROM orders")[0][0])
    except sqlite3.OperationalError:
        return 0  # no table yet


def wait_for(check: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def group_members(broker: KafkaBroker, group: str) -> int:
    """Members of a consumer group that hold partitions."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except Exception:
        return 0
    return sum(1 for m in described.members if m.assignment and m.assignment.topic_partitions)


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize(("options", "table", "field", "marker", "words"), [
    ({"format": "protobuf"}, {"target": "orders"}, "source.options.format", "format: protobuf",
     ["'debezium', 'avro' or 'json'"]),
    ({"start": "middle"}, {"target": "orders"}, "source.options.start", "start: middle", ["'earliest' or 'latest'"]),
    ({"colour": "red"}, {"target": "orders"}, "source.options.colour", "colour: red", ["unknown key"]),
    ({}, {}, "tables[0].target", "name: dbz.public.orders", ["required for a kafka:// source", "dbz.public.orders"]),
    ({}, {"target": "orders", "mode": "full"}, "tables[0].mode", "mode: full", ["a kafka source does not support "
                                                                               "full", "use mode cdc"]),
])
def test_validate_names_the_line_of_the_key(tmp_path: Path, options: dict[str, str], table: dict[str, str],
                                            field: str, marker: str, words: list[str]) -> None:
    path = write_job(tmp_path / "job.yaml", {
        "job": "j", "source": {"url": "kafka://127.0.0.1:9092", "options": options},
        "destination": {"url": "duckdb:///wh.duckdb"}, "copy": {"mode": "cdc", "update_method": "merge"},
        "tables": [{"name": "dbz.public.orders", **table}]})
    out = copyjob("validate", path)
    assert out.code == 2, out.output
    assert out.stderr.startswith(f"error: {path}:{line_of(path, marker)}: {field}: "), out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


def test_validate_connect_finds_the_topics_on_the_broker(tmp_path: Path, shop: Path,
                                                         kafka_broker: KafkaBroker) -> None:
    pub, prefix = publisher(tmp_path, kafka_broker, "avro")
    assert copyjob("capture", pub).code == 0
    sub = consumer(tmp_path, kafka_broker, {"format": "avro", "topic_prefix": prefix}, f"{prefix}.main.order")
    out = copyjob("validate", sub, "--connect")
    assert out.code == 2, out.output
    assert f"no topic '{prefix}.main.order' on the broker (did you mean {prefix}.main.orders?)" in out.stderr
    assert f"{sub}:{line_of(sub, 'main.order')}: tables[0].name" in out.stderr, out.stderr
    sub = consumer(tmp_path, kafka_broker, {"format": "avro", "topic_prefix": prefix}, f"{prefix}.main.orders")
    out = copyjob("validate", sub, "--connect")
    assert out.code == 0 and "reached both ends" in out.stdout, out.output


def test_kafka_is_no_destination_and_a_kafka_source_has_nothing_to_capture(tmp_path: Path) -> None:
    as_destination = write_job(tmp_path / "out.yaml", {
        "job": "j", "source": {"url": "sqlite:///shop.db"}, "destination": {"url": "kafka://127.0.0.1:9092"},
        "tables": [{"name": "orders"}]})
    out = copyjob("validate", as_destination)
    assert out.code == 2 and "kafka cannot be a destination" in out.stderr, out.output
    source = write_job(tmp_path / "in.yaml", {
        "job": "j", "source": {"url": "kafka://127.0.0.1:9092"}, "destination": {"url": "duckdb:///wh.duckdb"},
        "copy": {"mode": "cdc", "update_method": "merge"}, "tables": [{"name": "t", "target": "orders"}]})
    assert copyjob("validate", source).code == 0
    out = copyjob("capture", source)
    assert out.code == 2 and "nothing to capture" in out.stderr, out.output


# ---------------------------------------------------------------- topic patterns

ITEMS = "CREATE TABLE items (sku TEXT PRIMARY KEY, qty INTEGER)"


def pattern_job(tmp_path: Path, broker: KafkaBroker, prefix: str, destination: str, **options: str) -> Path:
    """One entry for every table ``prefix``'s job publishes: ``^<prefix>\\.main\\..*`` into ``${source.table}``."""
    return write_job(tmp_path / "pattern.yaml", {
        "job": f"pat{next(_ids)}", "source": {"url": f"kafka://{broker.bootstrap}",
                                              "options": {"format": "json", "topic_prefix": prefix, **options}},
        "destination": {"url": destination}, "copy": {"mode": "cdc", "update_method": "merge"},
        "tables": [{"name": f"^{re.escape(prefix)}\\.main\\..*", "target": "${source.table}"}]})


def publish_tables(tmp_path: Path, broker: KafkaBroker, prefix: str, tables: list[str], name: str) -> None:
    job = write_job(tmp_path / f"{name}.yaml", {
        "job": name, "source": {"url": "sqlite:///shop.db"}, "destination": {"url": "duckdb:///unused.duckdb"},
        "copy": {"mode": "full", "update_method": "merge"}, "tables": [{"name": t} for t in tables],
        "transport": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": prefix,
                                        "format": "json"}})
    published = copyjob("capture", job)
    assert published.code == 0, published.output


def test_one_pattern_entry_applies_every_table_a_job_publishes(tmp_path: Path, shop: Path,
                                                                kafka_broker: KafkaBroker) -> None:
    sqlite_script(shop, ITEMS)
    sqlite_exec(shop, "INSERT INTO items VALUES (?, ?)", [(f"s{i}", i) for i in range(40)])
    prefix = f"tp{os.getpid()}x{next(_ids)}"
    publish_tables(tmp_path, kafka_broker, prefix, ["orders", "items"], "pubboth")
    sub = pattern_job(tmp_path, kafka_broker, prefix, "duckdb:///wh.duckdb")
    ran = copyjob("run", sub)
    assert ran.code == 0, ran.output
    assert f"{prefix}.main.orders → orders" in ran.stdout and f"{prefix}.main.items → items" in ran.stdout, ran.output
    wh = tmp_path / "wh.duckdb"
    assert duckdb_rows(wh, "SELECT count(*), sum(amount) FROM orders") == [
        (100, sum(Decimal(f"{i}.50") for i in range(1, 101)))]
    assert duckdb_rows(wh, "SELECT sku, qty FROM items ORDER BY qty") == [(f"s{i}", i) for i in range(40)]
    # each matched topic is a table of its own: in history and status, named by its topic
    history = copyjob("history", sub)
    assert f"{prefix}.main.items → items" in history.stdout, history.output
    status = json.loads(copyjob("status", sub, "--json").stdout)
    assert {t["table"]: t["last_outcome"] for t in status["tables"]} == {"orders": "ok", "items": "ok"}, status
    # run again: nothing new, nothing doubled
    again = copyjob("run", sub)
    assert again.code == 0, again.output
    assert duckdb_rows(wh, "SELECT count(*) FROM items") == [(40,)]
    # copyjob apply takes the pattern's topics too
    sqlite_exec(shop, "UPDATE items SET qty = qty + 100 WHERE qty < 5")
    publish_tables(tmp_path, kafka_broker, prefix, ["orders", "items"], "pubboth")
    applied = copyjob("apply", sub, "--until-caught-up")
    assert applied.code == 0, applied.output
    assert duckdb_rows(wh, "SELECT count(*), sum(qty) FROM items") == [(40, sum(range(40)) + 500)]


def test_a_stream_picks_up_a_topic_created_while_it_runs(tmp_path: Path, shop: Path,
                                                         kafka_broker: KafkaBroker) -> None:
    sqlite_script(shop, ITEMS)
    sqlite_exec(shop, "INSERT INTO items VALUES (?, ?)", [(f"s{i}", i) for i in range(25)])
    prefix = f"tp{os.getpid()}x{next(_ids)}"
    publish_tables(tmp_path, kafka_broker, prefix, ["orders"], "puborders")
    sub = pattern_job(tmp_path, kafka_broker, prefix, "sqlite:///wh.db", pattern_refresh="1s")
    wh = tmp_path / "wh.db"
    stream = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(sub)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: applied_rows(wh) == 100, what="the first topic applied")
        publish_tables(tmp_path, kafka_broker, prefix, ["items"], "pubitems")  # a new topic
        wait_for(lambda: rows_of(wh, "items") == 25, what="the new topic applied")
    finally:
        stream.send_signal(signal.SIGTERM)
        out = stream.communicate(timeout=60)
    assert stream.returncode == 0, out
    assert f"{prefix}.main.items → items" in out[0], out
    assert sqlite_rows(wh, "SELECT sum(qty) FROM items") == [(sum(range(25)),)]


def rows_of(db: Path, table: str) -> int:
    try:
        return int(sqlite_rows(db, f"SELECT count(*) FROM {table}")[0][0])
    except sqlite3.OperationalError:
        return 0


def create_topics(broker: KafkaBroker, *names: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names]).values():
        future.result(timeout=30)


def test_two_topics_into_one_target_is_an_error_naming_both(tmp_path: Path, kafka_broker: KafkaBroker) -> None:
    prefix = f"tc{os.getpid()}x{next(_ids)}"
    create_topics(kafka_broker, f"{prefix}.a.orders", f"{prefix}.b.orders", f"{prefix}.a.orders.dlq",
                  f"{prefix}.transaction")
    job = write_job(tmp_path / "job.yaml", {
        "job": f"col{next(_ids)}", "source": {"url": f"kafka://{kafka_broker.bootstrap}"},
        "destination": {"url": "duckdb:///wh.duckdb"}, "copy": {"mode": "cdc", "update_method": "merge"},
        "tables": [{"name": f"^{prefix}\\..*", "target": "${source.table}"}]})
    out = copyjob("run", job)
    assert out.code == 2, out.output
    assert f"{job}:{line_of(job, 'target:')}: tables[0].target: topics '{prefix}.a.orders' and " \
           f"'{prefix}.b.orders' would both be applied into 'orders'" in out.stderr, out.output
    assert copyjob("validate", job, "--connect").code == 2
    # told apart by the template: both apply (the dead letters and the transaction topic are never matched)
    job.write_text(job.read_text().replace("${source.table}", "${source.schema}_${source.table}"))
    out = copyjob("run", job)
    assert out.code == 0, out.output
    assert f"{prefix}.a.orders → a_orders" in out.stdout and f"{prefix}.b.orders → b_orders" in out.stdout, out.output
    assert "dlq" not in out.stdout and "transaction" not in out.stdout, out.output


@pytest.mark.parametrize(("name", "target", "field", "marker", "words"), [
    ("^shop\\.(public", "${source.table}", "tables[0].name", "name:", ["not a regular expression", "missing )"]),
    ("^shop\\..*", "orders", "tables[0].target", "target:", ["needs a placeholder"]),
    ("^shop\\..*", "${source.db}", "tables[0].target", "target:", ["unknown placeholder ${source.db}"]),
    ("shop.public.orders", "${topic}", "tables[0].target", "target:", ["placeholder of a topic pattern"]),
])
def test_validate_checks_patterns_and_templates_at_their_line(tmp_path: Path, name: str, target: str, field: str,
                                                              marker: str, words: list[str]) -> None:
    path = write_job(tmp_path / "job.yaml", {
        "job": "j", "source": {"url": "kafka://127.0.0.1:9092"}, "destination": {"url": "duckdb:///wh.duckdb"},
        "copy": {"mode": "cdc", "update_method": "merge"}, "tables": [{"name": name, "target": target}]})
    out = copyjob("validate", path)
    assert out.code == 2, out.output
    assert out.stderr.startswith(f"error: {path}:{line_of(path, marker)}: {field}: "), out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


def test_a_pattern_target_with_topic_is_no_variable(tmp_path: Path) -> None:
    path = write_job(tmp_path / "job.yaml", {
        "job": "j", "source": {"url": "kafka://127.0.0.1:9092"}, "destination": {"url": "duckdb:///wh.duckdb"},
        "copy": {"mode": "cdc", "update_method": "merge"}, "tables": [{"name": "^shop\\..*", "target": "${topic}"}]})
    out = copyjob("validate", path)
    assert out.code == 0, out.output


# ---------------------------------------------------------------- a destination outage


@pytest.fixture(scope="module")
def outage_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own: the test stops it (never the session's shared one)."""
    server = start_postgres(tmp_path_factory.mktemp("pg_topic_outage"))
    yield server
    server.stop()


def pg_count(server: PostgresServer, db: str, sql: str) -> int | None:
    try:
        return int(server.psql(db, sql) or 0)
    except RuntimeError:
        return None  # no table yet, or the server is away


def test_a_stream_rides_out_a_destination_outage(tmp_path: Path, shop: Path, kafka_broker: KafkaBroker,
                                                 outage_pg: PostgresServer) -> None:
    pub, prefix = publisher(tmp_path, kafka_broker, "json")
    assert copyjob("capture", pub).code == 0  # 100 events
    db = f"topics{next(_ids)}"
    sub = write_job(tmp_path / "apply.yaml", {
        "job": f"out{next(_ids)}", "source": {"url": f"kafka://{kafka_broker.bootstrap}",
                                              "options": {"format": "json", "topic_prefix": prefix}},
        "destination": {"url": outage_pg.create_database(db)}, "copy": {"mode": "cdc", "update_method": "append"},
        "tables": [{"name": f"{prefix}.main.orders", "target": "orders"}]})
    log = tmp_path / "stream.log"
    with log.open("w") as out:
        stream = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(sub)], cwd=ROOT, stdout=out,
                                  stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})

    def running(condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            assert stream.poll() is None, log.read_text()
            return condition()
        return check

    count = "SELECT count(*) FROM orders"
    try:
        wait_for(running(lambda: pg_count(outage_pg, db, count) == 100), what="the first events applied")
        outage_pg.halt()
        try:
            sqlite_exec(shop, "UPDATE orders SET status = 'paid' WHERE id <= 10")
            sqlite_exec(shop, "INSERT INTO orders VALUES (?, ?, ?, ?)",
                        [(i, "1.00", "late", "2026-01-02 00:00:00") for i in range(101, 151)])
            assert copyjob("capture", pub).code == 0  # 150 more, published while the destination is away
            wait_for(running(lambda: "waiting for destination (attempt 3" in log.read_text()),
                     what="three attempts to reach the destination")
            status = json.loads(copyjob("status", sub, "--json").stdout)
            waits = [t["waiting"] for t in status["tables"]]
            assert waits and all(w and w["for"] == "destination" and w["error"] for w in waits), status
        finally:
            outage_pg.start_again()
        wait_for(running(lambda: pg_count(outage_pg, db, count) == 250), what="every event applied once")
    finally:
        stream.send_signal(signal.SIGTERM)
        code = stream.wait(timeout=120)
    assert code == 0, log.read_text()
    # every event once: nothing lost, nothing applied twice
    per_id = "SELECT count(*) FROM (SELECT id FROM orders GROUP BY id HAVING count(*) = {}) x"
    assert (pg_count(outage_pg, db, per_id.format(2)), pg_count(outage_pg, db, per_id.format(1))) == (100, 50)
    assert pg_count(outage_pg, db, "SELECT count(*) FROM orders WHERE status = 'paid'") == 10
    assert pg_count(outage_pg, db, "SELECT count(*) FROM orders WHERE status = 'late'") == 50
    status = json.loads(copyjob("status", sub, "--json").stdout)
    assert [t["waiting"] for t in status["tables"]] == [None], status
