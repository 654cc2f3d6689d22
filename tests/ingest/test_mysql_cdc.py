"""The MySQL/MariaDB binlog capturer against a real MariaDB (ROW binlog, full images and metadata)."""

from __future__ import annotations

import datetime as dt
import decimal
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from copyjob.ingest.mysql_cdc import MysqlBinlogCapture, order_key
from copyjob.ingest.mysql_cdc.positions import file_number, mariadb_after, mysql_after
from copyjob.ingest.mysql_cdc.statements import classify
from copyjob.snapshot import read_table

from copyjob.core.capture import CaptureOptions
from copyjob.core.changes import ChangeEvent
from copyjob.core.errors import ConfigurationError
from copyjob.core.schema import TableName
from copyjob.core.urls import parse_url
from tests.services.mariadb import MariadbServer

pytest.importorskip("pymysqlreplication")
pytestmark = pytest.mark.filterwarnings("ignore:'db' is deprecated:DeprecationWarning")  # inside the library


@dataclass
class Db:
    server: MariadbServer
    name: str
    url: str

    def sql(self, *statements: str) -> None:
        self.server.execute_all(self.name, *statements)

    def cdc(self, **options: Any) -> Any:
        from copyjob.connectors.mysql import MysqlSource
        from copyjob.ingest.mysql_cdc.capture import MysqlCdc

        url = parse_url(self.url)
        cdc = MysqlCdc(url, "test", CaptureOptions(**options), MysqlSource(url))
        cdc.prepare([])
        return cdc


@pytest.fixture
def db(mariadb_server: MariadbServer, mariadb_url: str) -> Db:
    return Db(mariadb_server, mariadb_url.rsplit("/", 1)[1], mariadb_url)


def drain(capture: MysqlBinlogCapture, end: Any, timeout_s: float = 20) -> list[ChangeEvent]:
    """Every change until the stream reached ``end``."""
    events: list[ChangeEvent] = []
    deadline = time.monotonic() + timeout_s
    while not capture.caught_up(end):
        assert time.monotonic() < deadline, f"stream did not reach {end} (at {capture.position})"
        for batch in capture.next_batches(0.5):
            events.extend(batch.events)
    return events


def snapshot_rows(cdc: Any, table: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    def copy(source: Any, position: Any) -> int:
        for b in read_table(source, source.reflect(TableName(table)), (), 1000, 1):
            got.extend(b.to_pylist())
        return len(got)

    result = cdc.snapshot(copy)
    return dict(result.position), got


@pytest.fixture
def capture_of() -> Iterator[Any]:
    opened: list[MysqlBinlogCapture] = []

    def open_(cdc: Any, starts: dict[TableName, Any]) -> MysqlBinlogCapture:
        capture = cdc.capture(starts)
        opened.append(capture)
        return capture

    yield open_
    for c in opened:
        c.close()


# ---------------------------------------------------------------- positions and statements (no server)


def test_positions_order_by_file_number_then_offset_then_row() -> None:
    a = {"file": "binlog.999999", "pos": 900, "row": 3}
    b = {"file": "binlog.1000000", "pos": 4, "row": 0}
    assert order_key(a) < order_key(b)
    assert file_number("mysql-bin.000012") == 12
    assert mariadb_after("0-1-5,1-2-7", "1-2-8") == "0-1-5,1-2-8"
    assert mariadb_after("", "0-1-1") == "0-1-1"
    uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
    assert mysql_after(f"{uuid}:1-4", f"{uuid}:5") == f"{uuid}:1-5"


def test_statements_are_classified() -> None:
    assert classify("BEGIN", None).kind == "begin"
    assert classify("COMMIT", None).kind == "commit"
    assert classify("SAVEPOINT `a`", None).kind == "inside"
    assert classify("ROLLBACK TO SAVEPOINT a", None).kind == "inside"
    t = classify("/* x */ TRUNCATE TABLE `db`.`my``t`", None)
    assert (t.kind, t.schema, t.table) == ("truncate", "db", "my`t")
    assert classify("truncate orders", "shop").schema == "shop"
    alter = classify("ALTER TABLE `orders` ADD COLUMN x INT", "shop")
    assert alter.kind == "ddl" and alter.mentions("orders") and not alter.mentions("order")


# ---------------------------------------------------------------- against MariaDB


def test_stream_matches_what_a_snapshot_reads(db: Db, capture_of: Any) -> None:
    db.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20), ts TIMESTAMP(6) NULL, dt DATETIME(3), "
           "d DECIMAL(30,10), j JSON, b TINYINT(1), e ENUM('a','b'), s SET('x','y','z'), bits BIT(10), "
           "bn BINARY(4), u UUID, tm TIME(6), f FLOAT, big BIGINT UNSIGNED, txt TEXT, blb BLOB, y YEAR)")
    cdc = db.cdc()
    start, rows = snapshot_rows(cdc, "t")
    assert rows == [] and start["row"] == 0 and "gtid_pos" in start
    db.sql("INSERT INTO t VALUES (1, 'é', '2024-01-02 03:04:05.123456', '2024-05-06 07:08:09.5', "
           "'12345678901234567890.0123456789', '{\"a\": [1, 2]}', 1, 'b', 'z,x', b'1000000001', x'0102', "
           "'f47ac10b-58cc-4372-a567-0e02b2c3d479', '12:34:56.789', 1.1, 18446744073709551615, 'long', x'00ff', "
           "2024)", "INSERT INTO t (id) VALUES (2)")
    capture = capture_of(cdc, {TableName("t"): start})
    events = drain(capture, cdc.current_position())
    _, now = snapshot_rows(cdc, "t")
    assert [e.op for e in events] == ["c", "c"]
    assert [dict(e.after or {}) for e in events] == now
    first = events[0].after or {}
    assert first["ts"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert first["d"] == decimal.Decimal("12345678901234567890.0123456789")
    assert first["b"] is True and first["s"] == "x,z" and first["bn"] == b"\x01\x02\x00\x00"
    assert first["u"] == "f47ac10b-58cc-4372-a567-0e02b2c3d479"


def test_multi_row_transaction_resumes_by_gtid_after_the_applied_rows(db: Db, capture_of: Any) -> None:
    db.sql("CREATE TABLE a (id INT PRIMARY KEY, v INT)", "CREATE TABLE b (id INT PRIMARY KEY, v INT)")
    cdc = db.cdc()
    start, _ = snapshot_rows(cdc, "a")
    db.sql("INSERT INTO a VALUES (0, 0)", "FLUSH BINARY LOGS",
           "BEGIN", "INSERT INTO a VALUES (1, 1), (2, 2), (3, 3)", "INSERT INTO b VALUES (1, 1)",
           "UPDATE a SET v = 20 WHERE id = 2", "DELETE FROM a WHERE id = 1", "INSERT INTO b VALUES (2, 2)", "COMMIT")
    end = cdc.current_position()
    first = capture_of(cdc, {TableName("a"): start, TableName("b"): start})
    events = drain(first, end)
    txn = [e for e in events if e.position["file"] != start["file"]]
    assert [(e.op, (e.row or {})["id"]) for e in txn] == [("c", 1), ("c", 2), ("c", 3), ("c", 1), ("u", 2),
                                                          ("d", 1), ("c", 2)]
    assert len({e.position["gtid"] for e in txn}) == 1
    # table a applied up to its 4th change of the transaction (the update), b applied nothing of it
    applied_a = txn[4].position
    assert applied_a["row"] == 4 and applied_a["gtid_pos"] != start["gtid_pos"]
    before_txn = {**txn[0].position, "row": 0}
    del before_txn["gtid"]
    resumed = capture_of(cdc, {TableName("a"): applied_a, TableName("b"): before_txn})
    again = drain(resumed, end)
    assert [(e.op, (e.row or {})["id"], e.position["row"]) for e in again] == [("c", 1, 1), ("d", 1, 5),
                                                                                ("c", 2, 2)]


def test_mariadb_resume_uses_the_gtid_position(db: Db, capture_of: Any) -> None:
    """pymysqlreplication ignores file/offset with is_mariadb: a resume must start from the GTID position."""
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)")
    cdc = db.cdc()
    start, _ = snapshot_rows(cdc, "t")
    db.sql("INSERT INTO t VALUES (1)", "FLUSH BINARY LOGS", "INSERT INTO t VALUES (2)")
    middle, _ = snapshot_rows(cdc, "t")
    db.sql("INSERT INTO t VALUES (3)")
    end = cdc.current_position()
    events = drain(capture_of(cdc, {TableName("t"): middle}), end)
    assert [(e.after or {})["id"] for e in events] == [3]
    # the same with a file and offset that point at the very start of the binlog: the GTID position decides
    misleading = {**middle, "file": start["file"], "pos": 4}
    events = drain(capture_of(cdc, {TableName("t"): misleading}), end)
    assert [(e.after or {})["id"] for e in events] == [3]


def test_locked_snapshot_and_file_offset_resume_without_gtids(db: Db, capture_of: Any) -> None:
    """As MySQL with gtid_mode=OFF: the snapshot under FLUSH TABLES WITH READ LOCK, positions by file and offset."""
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (0)")
    cdc = db.cdc()
    cdc.server = replace(cdc.server, mariadb=False, gtid=False)
    start, rows = snapshot_rows(cdc, "t")
    assert rows == [{"id": 0}] and "gtid_pos" not in start
    db.sql("BEGIN", "INSERT INTO t VALUES (1), (2), (3)", "COMMIT", "INSERT INTO t VALUES (4)")
    end = cdc.current_position()
    events = drain(capture_of(cdc, {TableName("t"): start}), end)
    assert [(e.after or {})["id"] for e in events] == [1, 2, 3, 4]
    assert "gtid_pos" not in events[1].position
    events = drain(capture_of(cdc, {TableName("t"): events[1].position}), end)
    assert [(e.after or {})["id"] for e in events] == [3, 4]


def test_truncate_schema_change_and_other_tables(db: Db, mariadb_server: MariadbServer, capture_of: Any) -> None:
    other_db = mariadb_server.create_database(f"{db.name}_other").rsplit("/", 1)[1]
    mariadb_server.execute(f"CREATE TABLE `{other_db}`.t (id INT PRIMARY KEY)")
    db.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT)", "CREATE TABLE u (id INT PRIMARY KEY)")
    cdc = db.cdc()
    start, _ = snapshot_rows(cdc, "t")
    capture = capture_of(cdc, {TableName("t"): start})
    assert capture.next_batches(0.2) == []
    db.sql("INSERT INTO t VALUES (1, 1)", "INSERT INTO u VALUES (1)", f"INSERT INTO `{other_db}`.t VALUES (1)",
           "TRUNCATE TABLE t", "ALTER TABLE t ADD COLUMN w VARCHAR(5)", "INSERT INTO t VALUES (2, 2, 'x')")
    batches = []
    end = cdc.current_position()
    deadline = time.monotonic() + 20
    while not capture.caught_up(end):
        assert time.monotonic() < deadline
        batches.extend(capture.next_batches(0.5))
    events = [(e.op, e.after) for b in batches for e in b.events]
    assert events == [("c", {"id": 1, "v": 1}), ("t", None), ("c", {"id": 2, "v": 2, "w": "x"})]
    assert batches[-1].schema.column_names == ["id", "v", "w"]
    assert all(b.table == TableName("t") for b in batches)


def test_idle_stream_returns_within_its_timeout(db: Db, capture_of: Any) -> None:
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)")
    cdc = db.cdc(max_batch_delay_s=0.1)
    start, _ = snapshot_rows(cdc, "t")
    capture = capture_of(cdc, {TableName("t"): start})
    began = time.monotonic()
    assert capture.next_batches(0.3) == []
    assert time.monotonic() - began < 2.0
    assert capture.caught_up(cdc.current_position())


# ---------------------------------------------------------------- preconditions


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("binlog_format", "STATEMENT", "binlog_format=ROW (it is STATEMENT)"),
    ("binlog_row_image", "MINIMAL", "binlog_row_image=FULL (it is MINIMAL)"),
    ("binlog_row_metadata", "MINIMAL", "binlog_row_metadata=FULL (it is MINIMAL)"),
])
def test_bad_binlog_settings_are_one_line_errors(db: Db, variable: str, value: str, message: str) -> None:
    (old,) = db.server.execute(f"SELECT @@GLOBAL.{variable}")[0]
    db.server.execute(f"SET GLOBAL {variable} = '{value}'")
    try:
        with pytest.raises(ConfigurationError) as err:
            db.cdc()
    finally:
        db.server.execute(f"SET GLOBAL {variable} = '{old}'")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "copyjob:***@" in str(err.value)


def test_missing_replication_privileges_are_named(db: Db) -> None:
    user = f"{db.name}_ro"[:32]
    db.server.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
    db.server.execute(f"GRANT SELECT ON `{db.name}`.* TO '{user}'@'%'")
    try:
        url = db.url.replace("copyjob:copyjob@", f"{user}:pw@")
        with pytest.raises(ConfigurationError, match="REPLICATION CLIENT"):
            Db(db.server, db.name, url).cdc()
        db.server.execute(f"GRANT BINLOG MONITOR ON *.* TO '{user}'@'%'")
        with pytest.raises(ConfigurationError, match="REPLICATION SLAVE"):
            Db(db.server, db.name, url).cdc()
    finally:
        db.server.execute(f"DROP USER '{user}'@'%'")


def test_server_id_of_the_source_is_refused(db: Db) -> None:
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)")
    cdc = db.cdc(server_id=1)
    start, _ = snapshot_rows(cdc, "t")
    with pytest.raises(ConfigurationError, match="server_id 1 is the source server's own"):
        cdc.capture({TableName("t"): start})


def test_unreadable_values_and_unnamed_columns_stop_the_stream(db: Db, capture_of: Any) -> None:
    from copyjob.core.errors import DataError

    db.sql("CREATE TABLE t (id INT PRIMARY KEY, tm TIME)")
    cdc = db.cdc()
    start, _ = snapshot_rows(cdc, "t")
    db.sql("INSERT INTO t VALUES (1, '30:00:00')")  # a TIME that is no time of day
    with pytest.raises(DataError, match=r"t: column 'tm': a changed value cannot be read"):
        drain(capture_of(cdc, {TableName("t"): start}), cdc.current_position())
    db.sql("DELETE FROM t")
    after_bad, _ = snapshot_rows(cdc, "t")
    db.server.execute("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    try:
        db.sql("INSERT INTO t VALUES (2, '01:00:00')")
    finally:
        db.server.execute("SET GLOBAL binlog_row_metadata = 'FULL'")
    with pytest.raises(ConfigurationError, match="no longer names the columns"):
        drain(capture_of(cdc, {TableName("t"): after_bad}), cdc.current_position())


def test_a_position_the_binlog_no_longer_has_says_to_reset(db: Db, capture_of: Any) -> None:
    from copyjob.core.errors import ConnectorError

    db.sql("CREATE TABLE t (id INT PRIMARY KEY)")
    cdc = db.cdc()
    start, _ = snapshot_rows(cdc, "t")
    gone = {**start, "gtid_pos": "0-1-999999999"}  # as a position on another server, or long purged
    with pytest.raises(ConnectorError, match="reset the tables to take a new snapshot") as err:
        capture_of(cdc, {TableName("t"): gone}).next_batches(1.0)
    assert not err.value.retriable


@pytest.mark.parametrize("gtid", [True, False])
def test_a_reconnect_inside_a_transaction_hands_out_each_change_once(db: Db, capture_of: Any, gtid: bool) -> None:
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)")
    cdc = db.cdc(batch_events=2)
    cdc.server = replace(cdc.server, gtid=gtid)
    start, _ = snapshot_rows(cdc, "t")
    db.sql("BEGIN", *(f"INSERT INTO t VALUES ({i})" for i in range(7)), "COMMIT")
    end = cdc.current_position()
    capture = capture_of(cdc, {TableName("t"): start})
    events: list[ChangeEvent] = []
    while not capture.caught_up(end) or not events:
        for batch in capture.next_batches(0.5):
            events.extend(batch.events)
        capture.close()  # the connection drops after every few changes: the stream reopens where it was
    assert [(e.after or {})["id"] for e in events] == list(range(7))
    assert [e.position["row"] for e in events] == list(range(1, 8))
