"""The monitor's Kafka figures (issue 12): dead letters per table on the run record, in history and /metrics;
the apply consumer group's lag per partition; and the CDC and merge counts in text ``copyjob history``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.copyjob.test_kafka_pipeline import db_of, kafka_job, pg_source
from tests.copyjob.test_monitor import Process, sample, wait_until
from tests.helpers import copyjob, sqlite_script, write_job
from tests.pg_cdc import drop_slots, execute
from tests.services.kafka import KafkaBroker
from tests.services.postgres import PostgresServer

pytestmark = pytest.mark.timeout(300)

FAST = {"COPYJOB_MONITOR_LAG_INTERVAL": "0.5s"}


def job_name(job: Path) -> str:
    name: str = yaml.safe_load(job.read_text())["job"]
    return name


def published(broker: KafkaBroker, topic: str) -> dict[int, int]:
    """Messages in each partition of ``topic`` (high less low watermark), read by the test's own consumer."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lag-check"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                 for p in parts}
    finally:
        consumer.close()
    return {p: high - low for p, (low, high) in marks.items()}


def test_a_dead_letter_is_counted_on_the_run_in_history_and_metrics(
        tmp_path: Path, start: Callable[..., Process], kafka_broker: KafkaBroker, postgres_server: PostgresServer,
        pg_url: str, pg_url2: str) -> None:
    pg_source(postgres_server, pg_url, 250)  # amounts 1.5 … 250.5: only id 250 breaks the destination's CHECK
    postgres_server.psql(db_of(pg_url2), "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, "
                                         "amount numeric(12,2) CHECK (amount < 250), status text, "
                                         "updated_at timestamptz)")
    job, _ = kafka_job(tmp_path, kafka_broker, pg_url, pg_url2, [{"name": "public.orders", "target": "orders"}],
                       update_method="merge")
    name = job_name(job)
    watched = start("monitor", job, "--http", "127.0.0.1:0", env=FAST)
    # the feed has read the store once: a run ending after this is counted
    wait_until(lambda: watched.get("/api/jobs")["read_at"], "a first read")
    out = copyjob("run", job)
    assert out.code == 1, out.output
    assert "dead letters: public.orders → orders: 1 event went to the dead-letter topic" in out.stdout, out.output
    listed = json.loads(copyjob("history", job, "--json").stdout)
    table = listed[0]["tables"][0]
    assert (table["table"], table["dead_letters"], table["rows_written"]) == ("orders", 1, 249), table
    text = copyjob("history", job)
    assert f"{listed[0]['run_id']} public.orders → orders: 1 dead letter" in text.stdout, text.output
    # the monitor reads the store every second: a turn during the run saw it running, without its tables
    run = wait_until(lambda: next((r for r in watched.runs(name) if r["run_id"] == listed[0]["run_id"]
                                   and r["status"] != "running"), None) and
                     watched.get(f"/api/runs/{listed[0]['run_id']}"), "the finished run in the monitor")
    assert run["tables"][0]["dead_letters"] == 1, run
    counted = wait_until(lambda: sample(watched.metrics(), "copyjob_dead_letters_total", job=name, table="orders"),
                         "the dead-letter counter")
    assert counted == 1.0
    assert watched.stop() == 0, watched.text()


def test_the_apply_consumer_lag_is_a_gauge_per_partition(
        tmp_path: Path, start: Callable[..., Process], kafka_broker: KafkaBroker, postgres_server: PostgresServer,
        pg_url: str, pg_url2: str) -> None:
    pg_source(postgres_server, pg_url, 400)
    job, prefix = kafka_job(tmp_path, kafka_broker, pg_url, pg_url2, [{"name": "public.orders", "target": "orders"}],
                            update_method="merge")
    name, topic = job_name(job), f"{prefix}.public.orders"
    captured = copyjob("capture", job)  # published, nothing applied
    assert captured.code == 0, captured.output
    waiting = published(kafka_broker, topic)
    assert sum(waiting.values()) == 400, waiting
    watched = start("monitor", job, "--http", "127.0.0.1:0", env=FAST)

    def gauges() -> dict[int, float] | None:
        metrics = watched.metrics()
        found = {p: sample(metrics, "copyjob_kafka_consumer_lag_messages", job=name, topic=topic, partition=str(p))
                 for p in waiting}
        return None if None in found.values() else {p: v for p, v in found.items() if v is not None}

    assert wait_until(gauges, "the consumer lag gauges") == {p: float(n) for p, n in waiting.items()}
    api = wait_until(lambda: watched.get(f"/api/jobs/{name}/lag")["kafka_consumer_lag"], "the lag in the API")
    assert api["error"] is None and api["group"] == f"copyjob.{name}", api
    assert sum(p["lag"] for p in api["partitions"] if p["topic"] == topic) == 400, api
    job_view = watched.get("/api/jobs")["jobs"][0]
    assert job_view["kafka_consumer_lag"]["partitions"], job_view
    applied = copyjob("apply", job, "--until-caught-up")
    assert applied.code == 0, applied.output
    # the group's committed offsets reach the end: nothing left
    wait_until(lambda: (g := gauges()) is not None and set(g.values()) == {0.0}, "the lag to reach 0")
    assert watched.stop() == 0, watched.text()


def test_text_history_shows_cdc_changes_and_rows_read_again(tmp_path: Path, pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE items (id int PRIMARY KEY, name text)",
            "INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 10) g")
    try:
        cdc = write_job(tmp_path / "cdc.yaml", {
            "job": "changes", "source": {"url": pg_url}, "destination": {"url": "sqlite:///cdc.db"},
            "copy": {"mode": "cdc"}, "tables": [{"name": "items", "key": ["id"]}]})
        assert (first := copyjob("run", cdc)).code == 0, first.output
        execute(pg_url, "INSERT INTO items SELECT g, 'new' FROM generate_series(11, 14) g",
                "UPDATE items SET name = 'changed' WHERE id <= 3", "DELETE FROM items WHERE id = 10")
        assert (second := copyjob("run", cdc)).code == 0, second.output
    finally:
        drop_slots(pg_url)
    latest = json.loads(copyjob("history", cdc, "--json").stdout)[0]
    text = copyjob("history", cdc)
    assert text.code == 0, text.output
    assert f"{latest['run_id']} items: 4 inserts, 3 updates, 1 deletes" in text.stdout, text.output

    sqlite_script(tmp_path / "src.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, ts INTEGER);"
                                       "INSERT INTO t VALUES (1, 1), (2, 2), (3, 2);")
    merged = write_job(tmp_path / "merge.yaml", {
        "job": "merged", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "incremental", "update_method": "merge"},
        "tables": [{"name": "t", "incremental_column": "ts", "key": ["id"]}]})
    assert copyjob("run", merged).code == 0
    sqlite_script(tmp_path / "src.db", "INSERT INTO t VALUES (4, 3)")
    assert (again := copyjob("run", merged)).code == 0, again.output
    latest = json.loads(copyjob("history", merged, "--json").stdout)[0]
    text = copyjob("history", merged)
    assert f"{latest['run_id']} t: 2 rows re-read at the watermark" in text.stdout, text.output


def test_a_kafka_source_lag_is_what_its_destination_has_not_applied(
        tmp_path: Path, start: Callable[..., Process], kafka_broker: KafkaBroker) -> None:
    """A ``kafka://`` source: per partition, the end offset less the offset in the destination's marker."""
    sqlite_script(tmp_path / "shop.db", "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT)")
    sqlite_script(tmp_path / "shop.db",
                  "INSERT INTO orders VALUES " + ", ".join(f"({i}, 'new')" for i in range(1, 301)))
    prefix = f"mlag{os.getpid()}"
    pub = write_job(tmp_path / "pub.yaml", {
        "job": "mlagpub", "source": {"url": "sqlite:///shop.db"}, "destination": {"url": "sqlite:///unused.db"},
        "copy": {"mode": "full", "update_method": "merge"}, "tables": [{"name": "orders"}], "transport": "kafka",
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic_prefix": prefix, "format": "json"}})
    assert (captured := copyjob("capture", pub)).code == 0, captured.output
    topic = f"{prefix}.main.orders"
    waiting = published(kafka_broker, topic)
    assert sum(waiting.values()) == 300, waiting
    job = write_job(tmp_path / "sub.yaml", {
        "job": "mlagsub", "source": {"url": f"kafka://{kafka_broker.bootstrap}",
                                     "options": {"format": "json", "topic_prefix": prefix}},
        "destination": {"url": "sqlite:///wh.db"}, "copy": {"mode": "cdc", "update_method": "merge"},
        "tables": [{"name": f"^{prefix}\\.main\\..*", "target": "${source.table}"}]})
    watched = start("monitor", job, "--http", "127.0.0.1:0", env=FAST)

    def gauges() -> dict[int, float] | None:
        metrics = watched.metrics()
        found = {p: sample(metrics, "copyjob_kafka_consumer_lag_messages", job="mlagsub", topic=topic,
                           partition=str(p)) for p in waiting}
        return None if None in found.values() else {p: v for p, v in found.items() if v is not None}

    assert wait_until(gauges, "the lag gauges") == {p: float(n) for p, n in waiting.items()}
    api = wait_until(lambda: watched.get("/api/jobs/mlagsub/lag")["kafka_consumer_lag"], "the lag in the API")
    assert api["error"] is None and {p["committed"] for p in api["partitions"]} == {None}, api
    assert (ran := copyjob("run", job)).code == 0, ran.output
    # the destination holds every partition up to its end: nothing left
    wait_until(lambda: (g := gauges()) is not None and set(g.values()) == {0.0}, "the lag to reach 0")
    api = watched.get("/api/jobs/mlagsub/lag")["kafka_consumer_lag"]
    assert sorted(p["committed"] for p in api["partitions"]) == sorted(waiting_end(kafka_broker, topic)), api
    assert watched.stop() == 0, watched.text()


def waiting_end(broker: KafkaBroker, topic: str) -> list[int]:
    """The end offset of each partition of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lag-check"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in parts]
    finally:
        consumer.close()
