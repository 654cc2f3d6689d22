"""transport: kafka publishes a table again from its beginning only under a new epoch (offsets.ledger), so the
apply side replaces what it holds instead of keeping rows twice or keeping rows deleted meanwhile: after the
job's replication slot was lost, and after a first capture that failed half-way. Through the real CLI, on the
session's PostgreSQL and Kafka; the destination is compared with the source row by row."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.copyjob.test_kafka_pipeline import published
from tests.helpers import copyjob, sqlite_exec, sqlite_rows, sqlite_script, write_job
from tests.pg_cdc import drop_slots, execute, rows, table_fingerprint
from tests.services.kafka import KafkaBroker

_ids = itertools.count()
BIG = "SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 100000) g"
"""About 3.2 MB of hex digits: over a 1 MiB kafka.max_message_bytes whatever the compression."""


@pytest.fixture(autouse=True)
def _slots(pg_url: str) -> Iterator[None]:
    yield
    drop_slots(pg_url)


@pytest.fixture
def shop(pg_url: str) -> str:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2))",
            "INSERT INTO orders SELECT g, 'new', g * 1.5 FROM generate_series(1, 2000) g",
            "CREATE TABLE notes (id int PRIMARY KEY, v text)",
            "INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 50) g")
    return pg_url


def job_file(tmp_path: Path, broker: KafkaBroker, src: str, dst: str, method: str,
             tables: list[str] | None = None, kafka: dict[str, Any] | None = None, **copy: Any) -> tuple[Path, str]:
    n = next(_ids)
    prefix = f"ep{os.getpid()}x{n}"
    return write_job(tmp_path / f"job{n}.yaml", {
        "job": f"epochs{n}", "source": {"url": src}, "destination": {"url": dst},
        "copy": {"mode": "cdc", "update_method": method, **copy}, "cdc": {"max_batch_delay": "50ms"},
        "tables": [{"name": name} for name in tables or ["orders"]], "transport": "kafka",
        "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": prefix, **(kafka or {})}}), prefix


def ok(command: str, job: Path, *extra: str) -> None:
    result = copyjob(command, job, *extra)
    assert result.code == 0, result.output


def equal(src: str, dst: str, table: str = "orders") -> None:
    assert table_fingerprint(dst, table) == table_fingerprint(src, table)


def snapshots(dst: str, table: str = "orders") -> list[tuple[int, int]]:
    """Per snapshot (its position) in an append table: its rows and distinct keys."""
    found = rows(dst, f"SELECT count(*), count(DISTINCT id) FROM {table} WHERE _op = 'r' GROUP BY _position")
    return sorted((int(a), int(b)) for a, b in found)


# ---------------------------------------------------------------- the change stream lost


def test_a_lost_slot_replaces_a_merge_table(tmp_path: Path, kafka_broker: KafkaBroker, shop: str,
                                            pg_url2: str) -> None:
    """Rows deleted while the slot was gone are gone from the destination too: the new snapshot comes under
    a new epoch and replaces the table."""
    job, _ = job_file(tmp_path, kafka_broker, shop, pg_url2, "merge")
    ok("run", job)
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id <= 10")
    ok("run", job)
    drop_slots(shop)  # while stopped: what follows never reaches the job's change stream
    execute(shop, "DELETE FROM orders WHERE id BETWEEN 100 AND 199",
            "UPDATE orders SET status = 'late' WHERE id > 1990",
            "INSERT INTO orders SELECT g, 'gap', 1 FROM generate_series(3001, 3010) g")
    ok("run", job)
    equal(shop, pg_url2)
    execute(shop, "DELETE FROM orders WHERE id = 1", "INSERT INTO orders VALUES (4001, 'after', 2)")
    ok("run", job)  # and it streams on from the new snapshot
    equal(shop, pg_url2)


def test_a_lost_slot_adds_a_snapshot_to_a_change_table(tmp_path: Path, kafka_broker: KafkaBroker, shop: str,
                                                       pg_url2: str) -> None:
    """Under append the table keeps its history (as after a reset, and as without Kafka) and gets the new
    snapshot's rows once each."""
    job, _ = job_file(tmp_path, kafka_broker, shop, pg_url2, "append")
    ok("run", job)
    execute(shop, "UPDATE orders SET status = 'paid' WHERE id <= 10")
    ok("run", job)
    drop_slots(shop)
    execute(shop, "DELETE FROM orders WHERE id BETWEEN 100 AND 199")
    ok("run", job)
    assert snapshots(pg_url2) == [(1900, 1900), (2000, 2000)]
    assert rows(pg_url2, "SELECT count(*) FROM orders WHERE _op = 'u'") == [(10,)]


def test_a_snapshot_after_a_lost_slot_killed_half_way_is_taken_again(tmp_path: Path, kafka_broker: KafkaBroker,
                                                                     shop: str, pg_url2: str) -> None:
    """The lost slot's new snapshot is decided durably: a capture killed in it snapshots again, under yet another
    epoch, instead of streaming from a position that belongs to the lost slot."""
    job, prefix = job_file(tmp_path, kafka_broker, shop, pg_url2, "merge", ["orders", "notes"], parallel=1,
                           batch_rows=5000)
    ok("run", job)
    drop_slots(shop)
    execute(shop, "DELETE FROM orders WHERE id <= 100")
    before = published(kafka_broker, f"{prefix}.public.orders")
    killed = copyjob("capture", job, env={"COPYJOB_FAULT": "snapshot-batch:2"})  # in notes: orders is on its topic
    assert killed.code == -signal.SIGKILL, killed.output
    assert published(kafka_broker, f"{prefix}.public.orders") == before + 1900
    execute(shop, "DELETE FROM orders WHERE id <= 200", "UPDATE notes SET v = 'x' WHERE id = 1")
    ok("run", job)
    equal(shop, pg_url2)
    equal(shop, pg_url2, "notes")


# ---------------------------------------------------------------- a first capture that failed half-way


def test_a_first_snapshot_killed_half_way_is_replaced(tmp_path: Path, kafka_broker: KafkaBroker, shop: str,
                                                      pg_url2: str) -> None:
    """orders is on its topic when the capture dies in notes; rows deleted before the next attempt are not
    kept by the destination."""
    job, prefix = job_file(tmp_path, kafka_broker, shop, pg_url2, "merge", ["orders", "notes"], parallel=1,
                           batch_rows=5000)
    killed = copyjob("capture", job, env={"COPYJOB_FAULT": "snapshot-batch:2"})
    assert killed.code == -signal.SIGKILL, killed.output
    assert published(kafka_broker, f"{prefix}.public.orders") == 2000
    assert published(kafka_broker, f"{prefix}.public.notes") == 0
    execute(shop, "DELETE FROM orders WHERE id <= 100", "UPDATE orders SET status = 'later' WHERE id > 1990")
    ok("run", job)
    equal(shop, pg_url2)
    equal(shop, pg_url2, "notes")


def test_a_first_snapshot_that_failed_on_a_row_is_not_doubled(tmp_path: Path, kafka_broker: KafkaBroker,
                                                              pg_url: str, pg_url2: str) -> None:
    """Under append: the rows published before the row that could not be published come once, after the cause
    is fixed and the table is captured again."""
    execute(pg_url, "CREATE TABLE docs (id int PRIMARY KEY, body text)",
            "INSERT INTO docs SELECT g, 'small' FROM generate_series(1, 300) g",
            f"INSERT INTO docs VALUES (301, ({BIG}))")
    job, prefix = job_file(tmp_path, kafka_broker, pg_url, pg_url2, "append", ["docs"], parallel=1,
                           batch_rows=100, kafka={"max_message_bytes": 2**20})
    failed = copyjob("run", job)
    assert failed.code == 1 and "kafka.max_message_bytes" in failed.output, failed.output
    assert published(kafka_broker, f"{prefix}.public.docs") > 0
    execute(pg_url, "UPDATE docs SET body = 'fixed' WHERE id = 301")
    ok("run", job)
    assert snapshots(pg_url2, "docs") == [(301, 301)]


def test_a_first_polled_capture_killed_before_its_commit_is_not_doubled(tmp_path: Path,
                                                                        kafka_broker: KafkaBroker) -> None:
    """Killed after the broker acknowledged every row, before the position was saved: the next capture publishes
    the rows again, under a new epoch, and an append table holds each once."""
    src = tmp_path / "src.db"
    sqlite_script(src, "CREATE TABLE events (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, name TEXT);")
    sqlite_exec(src, "INSERT INTO events VALUES (?, ?, ?)", [(i, 1000 + i, f"n{i}") for i in range(1, 21)])
    n = next(_ids)
    job = write_job(tmp_path / "job.yaml", {
        "job": f"epochs{n}", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "incremental", "update_method": "append"},
        "tables": [{"name": "events", "incremental_column": "ts"}], "transport": "kafka",
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic_prefix": f"ep{os.getpid()}x{n}"}})
    killed = copyjob("capture", job, env={"COPYJOB_FAULT": "published:1"})
    assert killed.code == -signal.SIGKILL, killed.output
    ok("run", job)
    sqlite_exec(src, "INSERT INTO events VALUES (?, ?, ?)", [(21, 1021, "n21")])
    ok("run", job)
    copied = "SELECT id, ts, name FROM events ORDER BY id"
    assert sqlite_rows(tmp_path / "dst.db", copied) == sqlite_rows(src, copied)
