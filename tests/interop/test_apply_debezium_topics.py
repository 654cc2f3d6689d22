"""copyjob applies what Debezium published: Debezium's PostgreSQL connector (pgoutput, on Kafka Connect standalone,
jars from Maven Central) publishes a table; a job whose source is ``kafka://`` applies its topic into PostgreSQL
and DuckDB through the real CLI, which then equal the source row by row. With JsonConverter schemas enabled the
column types come from the messages; with schemas off, from the destination table created first. A SIGKILLed
apply, restarted, loses and doubles nothing.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.copyjob.test_kafka_pipeline import published
from tests.helpers import ROOT, copyjob, duckdb_rows, write_job
from tests.services.kafka import KafkaBroker
from tests.services.kafka_connect import KafkaConnect
from tests.services.postgres import PostgresServer

_ids = itertools.count()
ITEMS = """CREATE TABLE items (id int PRIMARY KEY, big bigint, name text, amount numeric(12,2), at_tz timestamptz,
                                at timestamp, day date, flag bool, ref uuid, doc jsonb, blob bytea)"""
COLUMNS = "id, big, name, amount, at_tz, at, day, flag, ref, doc, blob"
SEED = """INSERT INTO items SELECT g, g * 10000000000, 'name ' || g, g + 0.25,
            '2026-03-01 10:11:12.123456+00'::timestamptz + g * interval '1 hour',
            '2026-03-01 10:11:12.5'::timestamp - g * interval '1 day', date '2026-03-01' + g, g % 2 = 0,
            md5(g::text)::uuid, jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g)),
            decode(lpad(to_hex(g), 8, '0'), 'hex')
          FROM generate_series(1, {n}) g"""
# a text column stored out of line (TOAST): an update that leaves it alone publishes Debezium's placeholder
TOASTED = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g)"
CHANGES = [
    "INSERT INTO items VALUES (100, -1, 'new', -12.5, '2026-06-30 23:59:59.999999+00', '1999-12-31 23:59:59', "
    "'2000-02-29', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, null, \"x\"]}', '\\x00ff')",
    "INSERT INTO items (id, name) VALUES (101, NULL)",
    "UPDATE items SET amount = 99.99, flag = NOT flag, doc = '[]' WHERE id = 2",
    f"UPDATE items SET name = {TOASTED} WHERE id = 3",
    "UPDATE items SET flag = NOT flag WHERE id = 3",  # name unchanged: __debezium_unavailable_value
    "DELETE FROM items WHERE id = 4",
    "UPDATE items SET id = 200 WHERE id = 5",  # a key change: delete, tombstone, create
    "UPDATE items SET at = NULL, day = NULL, blob = NULL WHERE id = 6",
]
EVENTS = 10 + 2 + 1 + 1 + 1 + 2 + 3 + 1
"""Messages Debezium publishes for SEED (10 rows) and CHANGES: deletes and a key change add tombstones."""


def db_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def wait_for(check: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Debezium:
    """One Debezium PostgreSQL connector on the session's worker, with its own slot, publication and topics."""

    def __init__(self, connect: KafkaConnect, server: PostgresServer, url: str, *, schemas: bool) -> None:
        n = next(_ids)
        self.connect, self.server, self.db = connect, server, db_of(url)
        self.name = f"dbz_{os.getpid()}_{n}"
        self.prefix = f"dbz{os.getpid()}x{n}"
        self.topic = f"{self.prefix}.public.items"
        converter = "org.apache.kafka.connect.json.JsonConverter"
        self.config = {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "plugin.name": "pgoutput", "database.hostname": "127.0.0.1", "database.port": str(server.port),
            "database.user": "postgres", "database.password": "postgres", "database.dbname": self.db,
            "topic.prefix": self.prefix, "table.include.list": "public.items",
            "slot.name": self.name, "publication.name": self.name, "publication.autocreate.mode": "filtered",
            "key.converter": converter, "value.converter": converter,
            "key.converter.schemas.enable": str(schemas).lower(),
            "value.converter.schemas.enable": str(schemas).lower(),
            "topic.creation.default.replication.factor": "1", "topic.creation.default.partitions": "3",
        }

    def __enter__(self) -> Debezium:
        self.connect.add(self.name, self.config)
        self.connect.wait_running(self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        self.connect.delete(self.name)
        # the slot is free once the task stopped; a slot left behind would keep the server's WAL forever
        wait_for(lambda: self._drop_slot(), timeout=60, what=f"slot {self.name} released")

    def _drop_slot(self) -> bool:
        try:
            self.server.psql(self.db, f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                      f"WHERE slot_name = '{self.name}'")
            return True
        except RuntimeError:
            return False  # still active

    def wait_published(self, broker: KafkaBroker, events: int) -> None:
        wait_for(lambda: published(broker, self.topic) >= events, timeout=180,
                 what=f"{events} events on {self.topic}")
        assert not self.connect.failures(self.name)


def topic_job(path: Path, broker: KafkaBroker, dbz: Debezium, destination: str, *, method: str = "merge",
              job: str | None = None) -> Path:
    return write_job(path, {
        "job": job or f"apply_{dbz.name}", "state": str(path.parent / f"{path.stem}.state.db"),
        "source": {"url": f"kafka://{broker.bootstrap}", "options": {"format": "debezium",
                                                                     "topic_prefix": dbz.prefix}},
        "destination": {"url": destination}, "copy": {"mode": "cdc", "update_method": method},
        "tables": [{"name": dbz.topic, "target": "items"}]})


# ---------------------------------------------------------------- comparing tables


def normal(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row as comparable Python values, whichever database it came from."""
    out: list[Any] = []
    for v in row:
        if isinstance(v, memoryview | bytearray):
            v = bytes(v)
        elif isinstance(v, uuid.UUID):
            v = str(v)
        elif isinstance(v, dt.datetime) and v.tzinfo is not None:
            v = v.astimezone(dt.UTC)
        elif isinstance(v, str) and v[:1] in "[{":
            v = json.loads(v)
        out.append(v)
    return tuple(out)


def pg_rows(url: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as con:
        return [normal(r) for r in con.execute(f"SELECT {COLUMNS} FROM items ORDER BY id").fetchall()]


def duck_rows(path: Path) -> list[tuple[Any, ...]]:
    quoted = ", ".join(f'"{c}"' for c in COLUMNS.split(", "))  # day and at are keywords in DuckDB
    return [normal(r) for r in duckdb_rows(path, f"SELECT {quoted} FROM items ORDER BY id")]


def pg_count(url: str, sql: str = "SELECT count(*) FROM items") -> int:
    import psycopg

    try:
        with psycopg.connect(url) as con:
            found = con.execute(sql).fetchone()
            return int(found[0]) if found else 0
    except psycopg.errors.UndefinedTable:
        return 0


def make_changes(server: PostgresServer, url: str) -> None:
    for sql in CHANGES:
        server.psql(db_of(url), sql)


@pytest.fixture
def source(postgres_server: PostgresServer, pg_url: str) -> Iterator[str]:
    postgres_server.psql(db_of(pg_url), f"{ITEMS}; {SEED.format(n=10)}")
    yield pg_url


# ---------------------------------------------------------------- the tests


def test_schemas_on_run_into_postgres_and_apply_into_duckdb(
        tmp_path: Path, kafka_broker: KafkaBroker, kafka_connect: KafkaConnect, postgres_server: PostgresServer,
        source: str, pg_url2: str) -> None:
    with Debezium(kafka_connect, postgres_server, source, schemas=True) as dbz:
        dbz.wait_published(kafka_broker, 10)  # the snapshot
        make_changes(postgres_server, source)
        dbz.wait_published(kafka_broker, EVENTS)
        expected = pg_rows(source)
        assert len(expected) == 10 - 1 + 2 and expected[2][2] is not None and len(expected[2][2]) == 12_800

        pg_job = topic_job(tmp_path / "pg.yaml", kafka_broker, dbz, pg_url2)
        ran = copyjob("validate", pg_job)
        assert ran.code == 0, ran.output
        ran = copyjob("run", pg_job)
        assert ran.code == 0, ran.output
        assert pg_rows(pg_url2) == expected
        types = postgres_server.psql(db_of(pg_url2), "SELECT string_agg(data_type, ',' ORDER BY ordinal_position) "
                                                     "FROM information_schema.columns WHERE table_name = 'items'")
        assert types == ("integer,bigint,text,numeric,timestamp with time zone,timestamp without time zone,date,"
                         "boolean,uuid,jsonb,bytea")
        assert postgres_server.psql(db_of(pg_url2), "SELECT numeric_precision, numeric_scale FROM "
                                    "information_schema.columns WHERE column_name = 'amount'") == "12|2"

        duck = tmp_path / "wh.duckdb"
        duck_job = topic_job(tmp_path / "duck.yaml", kafka_broker, dbz, f"duckdb:///{duck}")
        applied = copyjob("apply", duck_job, "--until-caught-up")
        assert applied.code == 0, applied.output
        assert duck_rows(duck) == expected

        # more changes later: a second run applies only those (offsets are in the destination)
        postgres_server.psql(db_of(source), "UPDATE items SET amount = amount + 1 WHERE id IN (1, 100); "
                                            "DELETE FROM items WHERE id = 200")
        dbz.wait_published(kafka_broker, EVENTS + 2 + 2)
        ran = copyjob("run", pg_job)
        assert ran.code == 0, ran.output
        assert pg_rows(pg_url2) == pg_rows(source)
        assert "events" in copyjob("apply", duck_job, "--until-caught-up").stdout
        assert duck_rows(duck) == pg_rows(source)


def test_schemas_off_types_come_from_the_destination_table(
        tmp_path: Path, kafka_broker: KafkaBroker, kafka_connect: KafkaConnect, postgres_server: PostgresServer,
        source: str, pg_url2: str) -> None:
    with Debezium(kafka_connect, postgres_server, source, schemas=False) as dbz:
        make_changes(postgres_server, source)
        dbz.wait_published(kafka_broker, EVENTS)
        job = topic_job(tmp_path / "pg.yaml", kafka_broker, dbz, pg_url2)
        # without the table there are no types to go by: the run fails naming the topic, and skips nothing
        ran = copyjob("run", job)
        assert ran.code == 1 and dbz.topic in ran.output and "does not exist" in ran.output, ran.output
        postgres_server.psql(db_of(pg_url2), ITEMS)
        ran = copyjob("run", job)
        assert ran.code == 0, ran.output
        assert pg_rows(pg_url2) == pg_rows(source)


def test_a_killed_apply_restarts_without_losing_or_doubling(
        tmp_path: Path, kafka_broker: KafkaBroker, kafka_connect: KafkaConnect, postgres_server: PostgresServer,
        pg_url: str, pg_url2: str) -> None:
    rows = 10_000  # the first write is small (a trickle goes at once), the next ones hold thousands: room to kill
    postgres_server.psql(db_of(pg_url), f"{ITEMS}; {SEED.format(n=rows)}")
    with Debezium(kafka_connect, postgres_server, pg_url, schemas=True) as dbz:
        dbz.wait_published(kafka_broker, rows)
        merge = topic_job(tmp_path / "merge.yaml", kafka_broker, dbz, pg_url2, job=f"m_{dbz.name}")
        append = topic_job(tmp_path / "append.yaml", kafka_broker, dbz, pg_url2, method="append",
                           job=f"a_{dbz.name}")
        append.write_text(append.read_text().replace("target: items", "target: items_log"))
        for job, table in ((merge, "items"), (append, "items_log")):
            apply = subprocess.Popen([sys.executable, "-m", "copyjob", "apply", str(job), "--until-caught-up"],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

            def partly(table: str = table) -> bool:
                return 0 < pg_count(pg_url2, f"SELECT count(*) FROM {table}") < rows

            # killed once the destination holds some but not all of the topic: between or inside batches
            wait_for(partly, what=f"{table} partly applied")
            apply.send_signal(signal.SIGKILL)
            out = apply.communicate(timeout=30)
            assert apply.returncode == -signal.SIGKILL, out  # killed, not finished
            again = copyjob("apply", job, "--until-caught-up")
            assert again.code == 0, again.output
        assert pg_rows(pg_url2) == pg_rows(pg_url)
        assert postgres_server.psql(db_of(pg_url2), "SELECT count(*), count(DISTINCT id) FROM items_log") \
            == f"{rows}|{rows}"
