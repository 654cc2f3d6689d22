"""The pgoutput decoder on real messages: the test server encodes them (``pg_logical_slot_get_binary_changes``
with pgoutput, protocol version 1), the decoder turns them into change events. Every test runs row-wise and
column-wise (``columnar=True``: runs of inserts as Arrow columns), and the columns must hold the row-wise values."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from copyjob.connectors.postgres._catalog import logical_type
from copyjob.ingest.postgres_cdc import PgOutputDecoder
from copyjob.ingest.postgres_cdc._types import BUILTIN_TYPES

from copyjob.core.changes import UNCHANGED_TOAST, ChangeEvent, ColumnarInserts
from copyjob.core.schema import LogicalType, TableName
from tests.pg_cdc import drop_slots

T = TableName("t", "public")
U = TableName("u", "public")


def types(oid: int, typmod: int) -> LogicalType:
    return logical_type(BUILTIN_TYPES.get(oid, "text"), typmod)


class Slot:
    """A pgoutput slot on the test database, read through the SQL interface."""

    def __init__(self, url: str, columnar: bool = False) -> None:
        self.columnar = columnar
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SET synchronous_commit = on")  # logical decoding reads flushed WAL only
        self.conn.execute("CREATE PUBLICATION p FOR ALL TABLES")
        self.conn.execute("SELECT pg_create_logical_replication_slot('s_' || current_database(), 'pgoutput')")

    def sql(self, *statements: str) -> None:
        for statement in statements:
            self.conn.execute(statement)

    def messages(self) -> list[bytes]:
        return [bytes(r[0]) for r in self.conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes('s_' || current_database(), NULL, NULL, "
            "'proto_version', '1', 'publication_names', 'p', 'messages', 'true')")]

    def events(self, decoder: PgOutputDecoder | None = None) -> list[tuple[TableName, ChangeEvent]]:
        decoder = decoder or PgOutputDecoder(types, {T: ("id",)}, columnar=self.columnar)
        for message in self.messages():
            decoder.decode(message)
        taken = decoder.take()
        for _, events in taken:
            if isinstance(events, ColumnarInserts):  # the Arrow columns hold what the row-wise images hold
                assert events.rows.equals(pa.RecordBatch.from_pylist(events.images(), schema=events.rows.schema))
        return [(rel.table, e) for rel, events in taken for e in events]


@pytest.fixture(params=[False, True], ids=["rows", "columns"])
def slot(pg_url: str, request: pytest.FixtureRequest) -> Iterator[Slot]:
    s = Slot(pg_url, columnar=request.param)
    try:
        yield s
    finally:
        s.conn.close()
        drop_slots(pg_url)


def test_values_are_converted_by_type(slot: Slot) -> None:
    slot.sql("CREATE TABLE t (id int PRIMARY KEY, i2 smallint, i8 bigint, f4 real, f8 float8, n numeric(10,2), "
             "nu numeric, s text, vc varchar(5), b bool, d date, tm time, ts timestamp, tz timestamptz, "
             "by bytea, u uuid, j jsonb, arr int[], nothing text)",
             "INSERT INTO t VALUES (1, -2, 9000000000, 1.5, 2.25, 12.30, 1e30, 'héllo', 'abc', true, '2024-02-29', "
             "'12:34:56.789', '2024-01-01 10:00:00.123456', '2024-01-01 10:00:00+02', '\\x00ff', "
             "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2]}', '{1,2}', NULL)")
    ((table, event),) = slot.events()
    assert table == T and event.op == "c" and event.before is None
    assert event.after == {
        "id": 1, "i2": -2, "i8": 9_000_000_000, "f4": 1.5, "f8": 2.25, "n": decimal.Decimal("12.30"),
        "nu": "1000000000000000000000000000000", "s": "héllo", "vc": "abc", "b": True, "d": dt.date(2024, 2, 29),
        "tm": dt.time(12, 34, 56, 789000), "ts": dt.datetime(2024, 1, 1, 10, 0, 0, 123456),
        "tz": dt.datetime(2024, 1, 1, 8, 0, tzinfo=dt.UTC), "by": b"\x00\xff",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "j": '{"k": [1, 2]}', "arr": "{1,2}", "nothing": None}
    assert event.ts_ms > 1_600_000_000_000


def test_values_python_cannot_hold_become_arrow_integers(slot: Slot) -> None:
    """infinity, BC and 24:00 (which the snapshot reads exactly) are not refused by the stream either."""
    from copyjob.core import temporal

    slot.sql("SET timezone = 'UTC'", "CREATE TABLE t (id int PRIMARY KEY, d date, tm time, ts timestamp, "
             "tz timestamptz)",
             "INSERT INTO t VALUES (1, 'infinity', '24:00:00', '-infinity', '0044-03-15 12:30:00.5 BC')")
    ((_, event),) = slot.events()
    assert event.after == {"id": 1, "d": temporal.DATE_INFINITY, "tm": temporal.TIME_24,
                           "ts": -temporal.TIMESTAMP_INFINITY, "tz": -63_517_778_999_500_000}

def test_one_transaction_many_events_one_lsn(slot: Slot) -> None:
    slot.sql("CREATE TABLE t (id int PRIMARY KEY, v text)", "CREATE TABLE u (id int PRIMARY KEY)",
             "BEGIN", "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 5) g", "INSERT INTO u VALUES (1)",
             "DELETE FROM t WHERE id = 2", "COMMIT", "INSERT INTO t VALUES (10, 'next')")
    events = sorted(slot.events(), key=lambda te: (te[1].position["lsn"], te[1].position["seq"]))
    first = [e for _, e in events[:7]]
    assert len({e.position["lsn"] for e in first}) == 1  # one transaction: one commit LSN
    assert [e.position["seq"] for e in first] == list(range(7))  # every change message numbered, both tables
    assert [(t.name, e.op) for t, e in events] == [("t", "c")] * 5 + [("u", "c"), ("t", "d"), ("t", "c")]
    assert events[-1][1].position == {"lsn": events[-1][1].position["lsn"], "seq": 0}
    assert events[-1][1].position["lsn"] > first[0].position["lsn"]


def test_update_without_and_with_replica_identity_full(slot: Slot) -> None:
    slot.sql("CREATE TABLE t (id int PRIMARY KEY, v text, w int)", "INSERT INTO t VALUES (1, 'a', 1)",
             "UPDATE t SET v = 'b' WHERE id = 1", "ALTER TABLE t REPLICA IDENTITY FULL",
             "UPDATE t SET v = 'c' WHERE id = 1")
    events = [e for _, e in slot.events()]
    assert [e.op for e in events] == ["c", "u", "u"]
    assert events[1].before is None and events[1].after == {"id": 1, "v": "b", "w": 1}
    assert events[2].before == {"id": 1, "v": "b", "w": 1} and events[2].after == {"id": 1, "v": "c", "w": 1}


def test_key_change_becomes_delete_then_insert(slot: Slot) -> None:
    slot.sql("CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')",
             "UPDATE t SET id = 2 WHERE id = 1", "DELETE FROM t WHERE id = 2")
    events = [e for _, e in slot.events()]
    assert [e.op for e in events] == ["c", "d", "c", "d"]
    assert events[1].before is not None and events[1].before["id"] == 1
    assert events[2].after == {"id": 2, "v": "a"}
    assert events[1].position == events[2].position  # one message, one position
    assert events[3].before == {"id": 2, "v": None}  # default identity: the key only


def test_unchanged_toast_is_a_placeholder_never_a_value(slot: Slot) -> None:
    slot.sql("CREATE TABLE t (id int PRIMARY KEY, big text, v int)",
             "ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL",
             "INSERT INTO t VALUES (1, repeat('x', 5000), 1)", "UPDATE t SET v = 2 WHERE id = 1")
    events = [e for _, e in slot.events()]
    assert events[0].after is not None and events[0].after["big"] == "x" * 5000
    assert events[1].after == {"id": 1, "big": UNCHANGED_TOAST, "v": 2}


def test_truncate_names_every_table(slot: Slot) -> None:
    slot.sql("CREATE TABLE t (id int PRIMARY KEY)", "CREATE TABLE u (id int PRIMARY KEY)",
             "INSERT INTO t VALUES (1)", "INSERT INTO u VALUES (1)", "TRUNCATE t, u")
    events = slot.events()
    truncates = [(table, e) for table, e in events if e.op == "t"]
    assert sorted(t.name for t, _ in truncates) == ["t", "u"]
    assert truncates[0][1].position == truncates[1][1].position


def test_a_changed_relation_ends_the_batch(slot: Slot) -> None:
    slot.sql("CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')")
    decoder = PgOutputDecoder(types, {T: ("id",)})
    for m in slot.messages():
        decoder.decode(m)
    assert not decoder.schema_changed
    slot.sql("ALTER TABLE t ADD COLUMN w int", "INSERT INTO t VALUES (2, 'b', 7)")
    changed: list[Any] = []
    for m in slot.messages():
        decoder.decode(m)
        if decoder.schema_changed:  # the capture ends the chunk here: events before follow the old columns
            changed.append([(rel.schema.column_names, [e.after for e in events]) for rel, events in decoder.take()])
    assert changed == [[(["id", "v"], [{"id": 1, "v": "a"}])]]
    ((relation, events),) = decoder.take()
    assert relation.schema.column_names == ["id", "v", "w"] and events[0].after == {"id": 2, "v": "b", "w": 7}


def test_tables_of_other_jobs_count_in_seq_but_are_not_emitted(slot: Slot) -> None:
    slot.sql("CREATE TABLE t (id int PRIMARY KEY)", "CREATE TABLE u (id int PRIMARY KEY)",
             "BEGIN", "INSERT INTO u VALUES (1)", "INSERT INTO t VALUES (1)", "COMMIT")
    events = slot.events(PgOutputDecoder(types, {T: ("id",)}, tables={T}))
    assert [(t, e.position["seq"]) for t, e in events] == [(T, 1)]


def test_logical_messages_and_commit_positions(slot: Slot) -> None:
    slot.sql("CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)",
             "SELECT pg_logical_emit_message(false, 'copyjob.stop', 'abc')",
             "INSERT INTO t VALUES (2)")  # a message writes no commit: this commit flushes it to disk
    decoder = PgOutputDecoder(types)
    kinds = []
    for m in slot.messages():
        kinds.append(chr(decoder.decode(m)))
        if kinds[-1] == "M":
            break
    assert kinds == ["B", "R", "I", "C", "M"]
    assert decoder.message is not None and decoder.message[:2] == ("copyjob.stop", b"abc")
    assert decoder.end_lsn > decoder.lsn and decoder.message[2] >= decoder.end_lsn
    assert not decoder.in_transaction


def test_a_value_that_does_not_convert_names_its_table_column_and_text(slot: Slot) -> None:
    """A converter that refuses a value: DataError naming the table, the column and the value's text (the
    decoder reads each value's bytes once; the message must still show the one that failed)."""
    from copyjob.core.errors import DataError

    slot.sql("CREATE TABLE t (id int PRIMARY KEY, note text, n int)", "INSERT INTO t VALUES (7, 'fine', 12345)")

    def wrong(oid: int, typmod: int) -> LogicalType:
        return LogicalType("int64") if oid == 25 else types(oid, typmod)  # text read as a number: fails

    with pytest.raises(DataError) as failed:
        slot.events(PgOutputDecoder(wrong, {T: ("id",)}, columnar=slot.columnar))
    assert "b'fine'" in str(failed.value) and "'note'" in str(failed.value) and failed.value.table == T


def test_a_run_of_inserts_comes_column_wise_until_another_change_of_its_table(pg_url: str) -> None:
    """Column-wise, every type of the matrix (NULLs, values Arrow parses and values it refuses) is one
    ColumnarInserts whose columns hold the row-wise values; an update in the same chunk turns the table's run
    into events (in order), and another table's run stays column-wise."""
    slot = Slot(pg_url, columnar=True)
    try:
        slot.sql("SET timezone = 'Asia/Kolkata'",
                 "CREATE TABLE t (id int PRIMARY KEY, i2 smallint, i8 bigint, f8 float8, n numeric(10,2), s text, "
                 "b bool, d date, ts timestamp, tz timestamptz, by bytea, j jsonb)",
                 "CREATE TABLE u (id int PRIMARY KEY, tz timestamptz)",
                 "INSERT INTO t VALUES (1, -2, 9000000000, '-Infinity', 12.30, 'héllo', true, '2024-02-29', "
                 "'2024-01-01 10:00:00.5', '2024-01-01 10:00:00+02', '\\x00ff', '{\"k\": 1}'), "
                 "(2, NULL, NULL, NULL, NULL, NULL, false, 'infinity', '-infinity', '0044-03-15 12:30:00 BC', "
                 "NULL, NULL)",
                 "INSERT INTO u VALUES (1, '2024-06-01 00:00:00+05:30'), (2, NULL)")
        decoder = PgOutputDecoder(types, {T: ("id",)}, columnar=True)
        rowwise = PgOutputDecoder(types, {T: ("id",)})
        messages = slot.messages()
        for message in messages:
            decoder.decode(message)
            rowwise.decode(message)
        taken = {rel.table: events for rel, events in decoder.take()}
        expected = {rel.table: list(events) for rel, events in rowwise.take()}
        for table in (T, U):
            run = taken[table]
            assert isinstance(run, ColumnarInserts) and len(run) == 2
            assert list(run) == expected[table]  # positions, commit times and images
            assert run.rows.equals(pa.RecordBatch.from_pylist([e.after for e in expected[table]],
                                                              schema=run.rows.schema))
        assert taken[U].rows.column("tz").to_pylist()[0] == dt.datetime(2024, 5, 31, 18, 30, tzinfo=dt.UTC)

        slot.sql("INSERT INTO t (id) VALUES (3)", "UPDATE t SET s = 'new' WHERE id = 1",
                 "INSERT INTO t (id) VALUES (4)")
        for message in slot.messages():
            decoder.decode(message)
        ((_, events),) = decoder.take()
        assert not isinstance(events, ColumnarInserts)
        assert [(e.op, (e.after or {}).get("id")) for e in events] == [("c", 3), ("u", 1), ("c", 4)]
    finally:
        slot.conn.close()
        drop_slots(pg_url)
