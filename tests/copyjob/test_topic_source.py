"""A ``kafka://`` source (copyjob.topic_source): one job publishes with transport kafka, another job, knowing only
the broker and the topics, applies them, in each of copyjob's formats; and the job file is checked at the line of
the key to change. On the session's real broker, through the CLI."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, copyjob, duckdb_rows, sqlite_exec, sqlite_rows, sqlite_script, write_job
from tests.services.kafka import KafkaBroker

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
    sub = write_job(tmp_path / "apply.yaml", {
        "job": f"late{next(_ids)}", "source": {"url": f"kafka://{kafka_broker.bootstrap}",
                                               "options": {"format": "json", "topic_prefix": prefix,
                                                           "start": "latest"}},
        "destination": {"url": "sqlite:///wh.db"}, "copy": {"mode": "cdc", "update_method": "append"},
        "tables": [{"name": f"{prefix}.main.orders", "target": "orders"}]})
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
