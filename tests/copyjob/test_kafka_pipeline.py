"""transport: kafka end to end, through the real CLI, on the session's real broker (no mocks of Kafka).

Each test uses its own topic prefix and job name, so tests share the broker without seeing each other.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, copyjob, duckdb_rows, sqlite_exec, sqlite_script, write_job
from tests.services.kafka import KafkaBroker, start_kafka
from tests.services.postgres import PostgresServer

_ids = itertools.count()
ORDERS = """CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, amount NUMERIC(12,2),
                     status TEXT, updated_at TIMESTAMP);"""


def ts(day: int, second: int = 0) -> str:
    return f"2026-01-{day:02d} 00:00:{second:02d}"


def kafka_job(path: Path, broker: KafkaBroker, source: str, destination: str, tables: list[dict[str, Any]],
              **copy: Any) -> tuple[Path, str]:
    n = next(_ids)
    prefix = f"t{os.getpid()}x{n}"
    kafka = {"bootstrap_servers": broker.bootstrap, "topic_prefix": prefix, **copy.pop("kafka", {})}
    job = {"job": f"k{n}", "source": {"url": source}, "destination": {"url": destination}, "copy": copy,
           "tables": tables, "transport": "kafka", "kafka": kafka}
    return write_job(path / "job.yaml", job), prefix


def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def spawn(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "copyjob", *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})


def make_topics(broker: KafkaBroker, names: list[str], partitions: int = 3) -> None:
    """Create the job's topics as capture would (compacted), before anything is published."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1,
                                            config={"cleanup.policy": "compact"}) for n in names])
    for future in futures.values():
        future.result(timeout=30)


def published(broker: KafkaBroker, topic: str) -> int:
    """Messages on ``topic`` so far (0 while it does not exist)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "copyjob-test-probe"})
    try:
        topics = consumer.list_topics(topic, timeout=10).topics
        if topic not in topics or topics[topic].error is not None:
            return 0
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in topics[topic].partitions)
    except KafkaException:
        return 0  # a topic just created: its partitions' leaders are not known yet
    finally:
        consumer.close()


def group_members(broker: KafkaBroker, group: str) -> int:
    """Members of a consumer group that hold partitions."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except Exception:
        return 0
    return sum(1 for m in described.members if m.assignment and m.assignment.topic_partitions)


def db_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


# ---------------------------------------------------------------- SQLite → Kafka → DuckDB


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    db = tmp_path / "shop.db"
    sqlite_script(db, ORDERS)
    sqlite_exec(db, "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                [(i, i % 7, f"{i}.50", "new", ts(1, i % 60)) for i in range(1, 201)])
    return db


def test_sqlite_to_duckdb_full_then_incremental_merge_with_a_new_column_and_tail(
        tmp_path: Path, shop: Path, kafka_broker: KafkaBroker) -> None:
    j, prefix = kafka_job(tmp_path, kafka_broker, "sqlite:///shop.db", "duckdb:///wh.duckdb",
                          [{"name": "orders", "incremental_column": "updated_at"}],
                          mode="incremental", update_method="merge")
    first = copyjob("run", j)
    assert first.code == 0, first.output
    assert "full" in first.stdout and "200" in first.stdout
    assert duckdb_rows(tmp_path / "wh.duckdb", "SELECT count(*), sum(amount) FROM orders") == [
        (200, sum(__import__("decimal").Decimal(f"{i}.50") for i in range(1, 201)))]
    # a new column at the source: a new schema version, and the consumer handles both
    sqlite_exec(shop, "ALTER TABLE orders ADD COLUMN note TEXT")
    sqlite_exec(shop, "UPDATE orders SET status = 'paid', note = 'n', updated_at = ? WHERE id <= 10", (ts(2),))
    second = copyjob("run", j)
    assert second.code == 0, second.output
    assert "incremental" in second.stdout
    assert duckdb_rows(tmp_path / "wh.duckdb", "SELECT status, count(*), count(note) FROM orders GROUP BY 1 "
                                               "ORDER BY 1") == [("new", 190, 0), ("paid", 10, 10)]
    history = json.loads(copyjob("history", j, "--json").stdout)
    assert history[0]["tables"][0]["rows_read"] == 10 and history[0]["status"] == "ok"
    tail = copyjob("tail", j, "--from-beginning", "--max", "210", "--idle-timeout", "5")
    assert tail.code == 0, tail.output
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert len(events) == 210 and {e["topic"] for e in events} == {f"{prefix}.main.orders"}
    assert {e["op"] for e in events} == {"r", "u"}
    paid = [e for e in events if e["op"] == "u"]
    assert all(e["after"]["note"] == "n" and e["key"] == {"id": e["after"]["id"]} for e in paid)


def test_sqlite_to_duckdb_full_append_in_json(tmp_path: Path, shop: Path, kafka_broker: KafkaBroker) -> None:
    j, _ = kafka_job(tmp_path, kafka_broker, "sqlite:///shop.db", "duckdb:///wh.duckdb", [{"name": "orders"}],
                     mode="full", update_method="append", kafka={"format": "json"})
    assert copyjob("run", j).code == 0
    assert copyjob("run", j).code == 0
    rows = duckdb_rows(tmp_path / "wh.duckdb", "SELECT _op, count(*), count(DISTINCT id) FROM orders GROUP BY 1")
    assert rows == [("r", 400, 200)]  # a full copy appends every row, every run, as a change row
    tail = copyjob("tail", j, "--from-beginning", "--max", "1", "--idle-timeout", "5")
    event = json.loads(tail.stdout)
    assert event["after"]["amount"].endswith(".50") and event["op"] == "r"


def test_overwrite_is_refused_with_the_line(tmp_path: Path, shop: Path, kafka_broker: KafkaBroker) -> None:
    j, _ = kafka_job(tmp_path, kafka_broker, "sqlite:///shop.db", "duckdb:///wh.duckdb", [{"name": "orders"}],
                     update_method="overwrite")
    out = copyjob("run", j)
    assert out.code == 2 and "overwrite" in out.stderr and "job.yaml" in out.stderr


# ---------------------------------------------------------------- PostgreSQL → Kafka → PostgreSQL


def pg_source(server: PostgresServer, url: str, rows: int) -> None:
    server.psql(db_of(url), f"""
        CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, amount numeric(12,2),
                             status text, updated_at timestamptz NOT NULL DEFAULT now());
        INSERT INTO orders SELECT g, g % 7, g + 0.5, 'new', '2026-01-01'::timestamptz + g * interval '1 ms'
        FROM generate_series(1, {rows}) g;
        CREATE TABLE events (id bigint PRIMARY KEY, what text);
        INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, {rows}) g;""")


def same(server: PostgresServer, src: str, dst: str, sql: str) -> None:
    assert server.psql(db_of(src), sql) == server.psql(db_of(dst), sql)


ORDERS_SUM = "SELECT count(*), sum(amount), string_agg(status, ',' ORDER BY id) FROM orders"


def test_pg_to_pg_full_incremental_merge_and_replay(tmp_path: Path, kafka_broker: KafkaBroker,
                                                     postgres_server: PostgresServer, pg_url: str,
                                                     pg_url2: str) -> None:
    pg_source(postgres_server, pg_url, 2000)
    j, _ = kafka_job(tmp_path, kafka_broker, pg_url, pg_url2,
                     [{"name": "public.orders", "target": "orders", "incremental_column": "updated_at"},
                      {"name": "public.events", "target": "events", "mode": "full"}],
                     mode="incremental", update_method="merge")
    assert (r := copyjob("run", j)).code == 0, r.output
    same(postgres_server, pg_url, pg_url2, ORDERS_SUM)
    postgres_server.psql(db_of(pg_url), "UPDATE orders SET status = 'paid', updated_at = '2026-02-01' "
                                        "WHERE id % 100 = 0; INSERT INTO orders VALUES (5000, 1, 1, 'x', '2026-02-02')")
    second = copyjob("run", j)
    assert second.code == 0, second.output
    same(postgres_server, pg_url, pg_url2, ORDERS_SUM)
    runs = json.loads(copyjob("history", j, "--json", "--limit", "1").stdout)
    assert {t["table"]: (t["mode"], t["rows_read"]) for t in runs[0]["tables"]} == {
        "orders": ("incremental", 21), "events": ("full", 2000)}
    # replay rebuilds the table from its topic: damage it, replay, and it equals the source again
    postgres_server.psql(db_of(pg_url2), "DELETE FROM orders WHERE id < 500; UPDATE orders SET status = 'bad'")
    replayed = copyjob("replay", j, "--table", "orders")
    assert replayed.code == 0, replayed.output
    same(postgres_server, pg_url, pg_url2, ORDERS_SUM)
    assert copyjob("run", j).code == 0  # apply consumers go on from the replayed offsets
    same(postgres_server, pg_url, pg_url2, ORDERS_SUM)
    # reset re-snapshots the table into its topic on the next run
    assert copyjob("reset", j, "--table", "orders").code == 0
    again = copyjob("run", j, "--table", "orders")
    assert again.code == 0 and "full" in again.stdout and "2,001" in again.stdout


def test_dead_letter_topic(tmp_path: Path, kafka_broker: KafkaBroker, postgres_server: PostgresServer,
                           pg_url: str, pg_url2: str) -> None:
    pg_source(postgres_server, pg_url, 300)
    postgres_server.psql(db_of(pg_url2), "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, "
                                         "amount numeric(12,2) CHECK (amount < 250), status text, "
                                         "updated_at timestamptz)")
    j, prefix = kafka_job(tmp_path, kafka_broker, pg_url, pg_url2,
                          [{"name": "public.orders", "target": "orders"}], update_method="merge")
    out = copyjob("run", j)
    assert out.code == 1, out.output
    assert "51 events could not be applied" in out.stdout and f"{prefix}.orders.dlq" in out.stdout
    assert postgres_server.psql(db_of(pg_url2), "SELECT count(*), max(id) FROM orders") == "249|249"
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "dlq-check"})
    consumer.assign([TopicPartition(f"{prefix}.orders.dlq", p, 0) for p in range(3)])
    got: list[Any] = []
    deadline = time.monotonic() + 20
    while len(got) < 51 and time.monotonic() < deadline:
        got += [m for m in consumer.consume(100, 0.5) if m.error() is None]
    consumer.close()
    assert len(got) == 51
    headers = dict(got[0].headers() or [])
    error = bytes(headers["copyjob.error"] or b"").lower()
    assert b"amount" in error or b"check" in error
    from copyjob.connectors.kafka import open_decoder

    after = open_decoder(kafka_broker.bootstrap, prefix).decode(got[0].value()).after
    assert after is not None and after["amount"] >= 250


def test_two_consumers_share_partitions_and_a_killed_one_loses_nothing(
        tmp_path: Path, kafka_broker: KafkaBroker, postgres_server: PostgresServer, pg_url: str,
        pg_url2: str) -> None:
    """Two apply members split the partitions; one is SIGKILLed mid-batch; a restarted one finishes. The merge
    table equals the source and the append table has every event exactly once (offsets committed with data)."""
    pg_source(postgres_server, pg_url, 60_000)
    j, prefix = kafka_job(tmp_path, kafka_broker, pg_url, pg_url2,
                          [{"name": "public.orders", "target": "orders", "update_method": "merge"},
                           {"name": "public.events", "target": "events", "update_method": "append"}])
    make_topics(kafka_broker, [f"{prefix}.public.orders", f"{prefix}.public.events"])
    # both members have joined the group before anything is published, so the first member cannot drain every
    # partition alone before the second arrives
    a, b = spawn("apply", j), spawn("apply", j)
    group = "copyjob." + yaml.safe_load(j.read_text())["job"]
    wait_for(lambda: group_members(kafka_broker, group) == 2, what="both apply members in the group")
    captured = copyjob("capture", j)
    assert captured.code == 0, captured.output
    dst = db_of(pg_url2)

    def applied() -> int:
        try:
            return int(postgres_server.psql(dst, "SELECT (SELECT count(*) FROM orders) + "
                                                 "(SELECT count(*) FROM events)"))
        except RuntimeError:
            return 0

    def partitions_applied() -> int:
        try:
            return int(postgres_server.psql(dst, "SELECT count(*) FROM _copyjob_state WHERE table_name LIKE '%#%'"))
        except RuntimeError:
            return 0

    # every partition has a committed batch: both members have applied some (each holds only its own partitions
    # until the other leaves), so the first cannot end up applying everything
    wait_for(lambda: partitions_applied() == 6, what="both consumers to start applying")
    b.send_signal(signal.SIGKILL)
    b.wait(10)
    killed_at = time.monotonic()
    b2 = spawn("apply", j)
    wait_for(lambda: applied() >= 120_000, timeout=120, what="everything applied")
    # the replacement must be running (its SIGTERM handler set) before it is asked to stop: the killed member
    # leaves the group when its session times out (10 s), so two members holding partitions after that are a, b2
    wait_for(lambda: time.monotonic() - killed_at > 11 and group_members(kafka_broker, group) == 2, timeout=60,
             what="the replacement member in the group")
    for p in (a, b2):
        p.send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=30) for p in (a, b2)]
    assert a.returncode == 0 and b2.returncode == 0, outs
    assert all("events" in o for o, _ in outs)
    same(postgres_server, pg_url, pg_url2, ORDERS_SUM)
    assert postgres_server.psql(dst, "SELECT count(*), count(DISTINCT id) FROM events") == "60000|60000"
    # the first member applied only its share: the others (the killed one, then its replacement) the rest
    applied_by_a = sum(int(line.split(": ")[1].split(" events")[0].replace(",", ""))
                       for line in outs[0][0].splitlines() if " events, " in line)
    assert 0 < applied_by_a < 120_000, outs[0][0]


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker for one test: the session's broker holds the topics of every test before, and stopping and
    starting it closes and loads each of their partitions (many times the seconds of a fresh broker)."""
    broker = start_kafka(tmp_path_factory.mktemp("kafka_restart"))
    yield broker
    broker.kill()


def test_broker_restart_during_a_run(tmp_path: Path, own_broker: KafkaBroker, postgres_server: PostgresServer,
                                     pg_url: str, pg_url2: str) -> None:
    pg_source(postgres_server, pg_url, 100_000)
    j, prefix = kafka_job(tmp_path, own_broker, pg_url, pg_url2, [{"name": "public.orders", "target": "orders"}],
                          update_method="merge")
    run = spawn("run", j)
    wait_for(lambda: run.poll() is not None or published(own_broker, f"{prefix}.public.orders") > 0,
             timeout=180, what="the first events")
    own_broker.restart()  # down for the seconds the broker takes to stop and start again
    out, errors = run.communicate(timeout=240)
    assert run.returncode == 0, out + errors
    same(postgres_server, pg_url, pg_url2, ORDERS_SUM)


def test_stream_until_sigterm(tmp_path: Path, shop: Path, kafka_broker: KafkaBroker) -> None:
    j, _ = kafka_job(tmp_path, kafka_broker, "sqlite:///shop.db", "sqlite:///wh.db",
                     [{"name": "orders", "incremental_column": "updated_at"}],
                     mode="incremental", update_method="merge")
    proc = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(j), "--poll-interval", "0.2"], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wh = tmp_path / "wh.db"

    def count(sql: str) -> Any:
        import sqlite3

        try:
            con = sqlite3.connect(wh)
            return con.execute(sql).fetchone()[0]
        except sqlite3.Error:
            return None

    wait_for(lambda: count("SELECT count(*) FROM orders") == 200, what="the first pass")
    sqlite_exec(shop, "UPDATE orders SET status = 'late', updated_at = ? WHERE id = 5", (ts(3),))
    wait_for(lambda: count("SELECT status FROM orders WHERE id = 5") == "late", what="the change to arrive")
    proc.send_signal(signal.SIGTERM)
    out, errors = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + errors
    assert "stopping" in errors
