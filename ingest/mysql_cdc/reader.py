"""The binlog reader: row changes of the job's tables from a MySQL or MariaDB binlog, as change batches.

:class:`MysqlBinlogCapture` implements :class:`copyjob.core.contracts.ChangeCapture` over pymysqlreplication's
``BinLogStreamReader``:

1. it starts at the earliest start position of its tables (see :mod:`ingest.mysql_cdc.positions`): by GTID
   position where the server has GTIDs (MariaDB: ``is_mariadb`` and ``auto_position``, because that library
   ignores a file and offset on MariaDB), else by binlog file and offset;
2. it follows transactions (GTID event or ``BEGIN`` … XID or ``COMMIT``) and numbers each table's changes
   within a transaction, so every change has a position, and skips the changes at or before its table's
   start position (a resume inside a multi-row transaction skips exactly the rows already applied);
3. rows become :class:`~copyjob.core.changes.ChangeEvent` s converted to the table's logical types; ``TRUNCATE``
   becomes op ``t``; any other statement naming a table (``ALTER TABLE`` …) reflects that table again, and
   later batches carry the new schema;
4. it reads with server heartbeats, so :meth:`~MysqlBinlogCapture.next_batches` returns within its timeout
   (plus at most one heartbeat) even when nothing happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymysql
from copyjob.ingest.mysql_cdc._sql import ACCESS_DENIED
from copyjob.ingest.mysql_cdc.checks import ServerInfo
from copyjob.ingest.mysql_cdc.positions import (
    OrderKey,
    Position,
    between,
    earliest,
    file_number,
    mariadb_after,
    mysql_after,
    order_key,
)
from copyjob.ingest.mysql_cdc.statements import Statement, classify
from copyjob.ingest.mysql_cdc.values import ConverterFor, row_converter

from copyjob.core.changes import ChangeBatch, ChangeEvent, Op
from copyjob.core.errors import ConfigurationError, ConnectorError, CopyjobError, TableNotFound
from copyjob.core.schema import TableName, TableSchema

log = logging.getLogger(__name__)

_MARIADB_STANDALONE = 0x01  # GTID flag: a DDL or non-transactional statement with no closing COMMIT/XID
_UNNAMED = "UNKNOWN_COL0"  # pymysqlreplication's name for a column the binlog does not name
_BINLOG_GONE = {1236}  # "could not find first log file name / GTID state in binary log"


@dataclass(frozen=True)
class CaptureTable:
    """One table to capture: its name as batches carry it, its schema now (whose table names the database),
    and the position after which its changes are read."""

    table: TableName
    schema: TableSchema
    start: Position


@dataclass
class _Txn:
    file: str
    pos: int
    gtid: str | None
    gtid_before: str | None
    ts_ms: int
    bracketed: bool
    """Ends with XID or COMMIT (a DDL or a MariaDB standalone event group ends with its statement)."""
    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    file_no: int = 0

    def __post_init__(self) -> None:
        self.file_no = file_number(self.file)

    def position(self, key: tuple[str, str]) -> Position:
        self.rows[key] = row = self.rows.get(key, 0) + 1
        out: Position = {"file": self.file, "pos": self.pos, "row": row}
        if self.gtid is not None:
            out["gtid"] = self.gtid
        if self.gtid_before is not None:
            out["gtid_pos"] = self.gtid_before
        return out


@dataclass
class _Captured:
    table: TableName
    schema: TableSchema
    convert: Callable[[Mapping[str, Any]], dict[str, Any]]
    floor: OrderKey
    """Changes at or before this key are skipped: the start position, then the last change handed out."""


@dataclass
class _Run:
    captured: _Captured
    schema: TableSchema
    events: list[ChangeEvent] = field(default_factory=list)


def _default_translate(exc: Exception) -> Exception:
    return ConnectorError(f"binlog: {exc}")


class MysqlBinlogCapture:
    """Change capture from a MySQL/MariaDB binlog (see the module docstring).

    ``connection``: pymysql connection arguments (host, port, user, password, …) for the stream;
    ``reflect``: the table's schema now (called again after a schema change);
    ``converter_for``: the connector's driver value → logical value converter of a column;
    ``translate``: turns a driver error into a copyjob error (the connector's translation).
    """

    def __init__(self, *, connection: Mapping[str, Any], server: ServerInfo, tables: Sequence[CaptureTable],
                 server_id: int, reflect: Callable[[TableName], TableSchema], converter_for: ConverterFor,
                 batch_events: int = 10_000, heartbeat_s: float = 0.5, where: str = "mysql",
                 translate: Callable[[Exception], Exception] = _default_translate,
                 stop_at: Mapping[str, Any] | None = None) -> None:
        if not tables:
            raise ConfigurationError("change capture needs at least one table")
        if server_id == server.server_id:
            raise ConfigurationError(f"{where}: cdc.server_id {server_id} is the source server's own server_id; "
                                     "choose another")
        self._connection = dict(connection)
        self._server = server
        self._server_id = server_id
        self._reflect = reflect
        self._converter_for = converter_for
        self._batch_events = batch_events
        self._heartbeat_s = heartbeat_s
        self._where = where
        self._translate = translate
        self._tables = {(t.schema.table.schema or "", t.schema.table.name): self._captured(t.table, t.schema, t.start)
                        for t in tables}
        self._start = earliest(t.start for t in tables)
        if server.gtid and "gtid_pos" not in self._start:
            raise ConfigurationError(f"{where}: start position {self._start} has no GTID position; reset the "
                                     "tables to take a new snapshot")
        self._gtid_pos: str | None = self._start.get("gtid_pos") if server.gtid else None
        self._file = str(self._start["file"])
        self._point: Position = between(self._file, int(self._start["pos"]), self._gtid_pos)
        self._txn: _Txn | None = None
        self._reader: Any = None
        self._stop_at = dict(stop_at) if stop_at is not None else None
        self.finished = False
        """A bounded stream (``stop_at``) handed out every change before its stop position."""
        self.caught_up_at: float | None = None
        """Wall-clock time when the stream last had nothing more to read (for lag in seconds)."""

    # ---------------------------------------------------------------- ChangeCapture

    @property
    def position(self) -> Position:
        """Where the stream stands between transactions: every change before it has been handed out."""
        return dict(self._point)

    def next_batches(self, timeout_s: float) -> list[ChangeBatch]:
        """Changes read within ``timeout_s`` (at most ``batch_events``), one batch per run of one table.

        A bounded stream reads nothing past its stop position: once there, :attr:`finished` is true."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        runs: list[_Run] = []
        count = 0
        while count < self._batch_events and not self._reached_stop():
            event = self._fetch()
            if event is not None:
                count += self._handle(event, runs)
            if time.monotonic() >= deadline or (event is None and runs):
                break
        return [ChangeBatch(table=r.captured.table, schema=r.schema, events=r.events,
                            position=dict(r.events[-1].position)) for r in runs]

    def ack(self, position: Mapping[str, Any]) -> None:
        """Nothing to release: the server keeps its binlog by its own expiry settings."""

    def _reached_stop(self) -> bool:
        if self._stop_at is not None and not self.finished and self.caught_up(self._stop_at):
            self.finished = True
        return self.finished

    def caught_up(self, end: Mapping[str, Any]) -> bool:
        """Whether every transaction committed before ``end`` (a point from ``current_position``) was read: the
        stream stands at or past it, or is inside a transaction that starts there or later."""
        txn = self._txn
        here = (txn.file_no, txn.pos, 0) if txn is not None else order_key(self._point)
        return here >= order_key(end)

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # a broken stream: nothing left to release
                pass
            self._reader = None

    # ---------------------------------------------------------------- reading

    def _captured(self, table: TableName, schema: TableSchema, start: Position) -> _Captured:
        return _Captured(table, schema, row_converter(schema, self._converter_for), order_key(start))

    def _open(self) -> Any:
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import (
            GtidEvent,
            HeartbeatLogEvent,
            MariadbGtidEvent,
            QueryEvent,
            RotateEvent,
            XidEvent,
        )
        from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

        settings = {**self._connection, "read_timeout": max(30, int(4 * self._heartbeat_s))}
        point = self._resume_point()
        self._txn = None  # an open transaction is read again from its start (its handed-out changes skipped)
        start: dict[str, Any]
        if self._server.gtid:  # an empty GTID position (nothing logged yet): from the oldest binlog
            start = {"auto_position": point.get("gtid_pos") or "", "is_mariadb": self._server.mariadb}
        else:
            start = {"log_file": point["file"], "log_pos": int(point["pos"]), "resume_stream": True}
        log.info("%s: reading the binlog from %s", self._where, point)
        return BinLogStreamReader(
            connection_settings=settings, server_id=self._server_id, blocking=True,
            # freeze_schema: a table map is decoded once per table id, not before every transaction (several
            # times faster for small transactions); _forget_table_maps drops them where ids may change meaning
            slave_heartbeat=self._heartbeat_s, enable_logging=False, freeze_schema=True,
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, GtidEvent, MariadbGtidEvent, XidEvent,
                         QueryEvent, RotateEvent, HeartbeatLogEvent],
            only_schemas=sorted({s for s, _ in self._tables}), only_tables=sorted({n for _, n in self._tables}),
            **start)

    def _resume_point(self) -> Position:
        """Where a (re)connected stream starts: before the open transaction, else where the stream stands."""
        txn = self._txn
        return between(txn.file, txn.pos, txn.gtid_before) if txn is not None else self._point

    def _fetch(self) -> Any:
        """The next event, or None after a heartbeat (nothing new for a heartbeat period)."""
        from pymysqlreplication.event import HeartbeatLogEvent

        try:
            if self._reader is None:
                self._reader = self._open()
            event = self._reader.fetchone()
        except pymysql.err.MySQLError as exc:
            self.close()
            raise self._error(exc) from exc
        if event is None:  # the server ended the stream (non-blocking or shutdown): reconnect next time
            self.close()
            return None
        if isinstance(event, HeartbeatLogEvent):
            if self._txn is None:  # the server is idle: everything it had is read
                self._advance(between(self._file, self._reader.log_pos, self._gtid_pos))
                self.caught_up_at = time.time()
            return None
        return event

    def _error(self, exc: pymysql.err.MySQLError) -> Exception:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if code in _BINLOG_GONE:
            return ConnectorError(f"{self._where}: cannot read the binlog from {self._resume_point()}: {text}; the "
                                  "binlog there was purged (or is another server's): reset the tables to take a "
                                  "new snapshot", retriable=False)
        if code in ACCESS_DENIED:
            return ConfigurationError(f"{self._where}: reading the binlog needs the REPLICATION SLAVE privilege "
                                      f"({text})")
        translated = self._translate(exc)
        return translated if isinstance(translated, CopyjobError) else ConnectorError(str(translated))

    # ---------------------------------------------------------------- events

    def _handle(self, event: Any, runs: list[_Run]) -> int:
        """Fold one binlog event into the transaction state and ``runs``; returns the changes added."""
        from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, RotateEvent, XidEvent

        if isinstance(event, RotateEvent):  # a new file may come from a restarted server, with new table ids
            self._forget_table_maps()
            self._file = event.next_binlog
            if event.timestamp:  # a real rotation (not the stream's first, made-up one)
                self._advance(between(self._file, event.position, self._gtid_pos))
            return 0
        if isinstance(event, MariadbGtidEvent):
            self._begin(event, event.gtid, bracketed=not event.flags & _MARIADB_STANDALONE)
            return 0
        if isinstance(event, GtidEvent):
            self._begin(event, event.gtid, bracketed=False)
            return 0
        if isinstance(event, XidEvent):
            self._end(event)
            return 0
        if isinstance(event, QueryEvent):
            return self._query(event, runs)
        return self._rows(event, runs)

    def _begin(self, event: Any, gtid: str | None, *, bracketed: bool) -> None:
        start = event.packet.log_pos - event.packet.event_size
        self._txn = _Txn(self._file, start, gtid, self._gtid_pos, event.timestamp * 1000, bracketed)

    def _end(self, event: Any) -> None:
        txn, self._txn = self._txn, None
        if txn is not None and txn.gtid is not None and self._gtid_pos is not None:
            self._gtid_pos = (mariadb_after(self._gtid_pos, txn.gtid) if self._server.mariadb
                              else mysql_after(self._gtid_pos, txn.gtid))
        self._advance(between(self._file, event.packet.log_pos, self._gtid_pos))

    def _advance(self, point: Position) -> None:
        if order_key(point) > order_key(self._point):
            self._point = point

    def _query(self, event: Any, runs: list[_Run]) -> int:
        schema = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema or "")
        statement = classify(event.query, schema or None)
        if statement.kind == "begin":
            if self._txn is None:
                self._begin(event, None, bracketed=True)
            else:
                self._txn.bracketed = True
            return 0
        if statement.kind == "commit":
            self._end(event)
            return 0
        if statement.kind == "inside":
            return 0
        if self._txn is None:
            self._begin(event, None, bracketed=False)
        added = self._statement(statement, event, runs)
        if self._txn is not None and not self._txn.bracketed:
            self._end(event)
        return added

    def _statement(self, statement: Statement, event: Any, runs: list[_Run]) -> int:
        if statement.kind == "truncate":
            captured = self._tables.get((statement.schema or "", statement.table or ""))
            if captured is None:
                return 0
            return self._add(captured, "t", None, None, runs)
        for captured in self._tables.values():
            if statement.mentions(captured.table.name):
                self._forget_table_maps()
                self._refresh(captured, statement)
        return 0

    def _forget_table_maps(self) -> None:
        if self._reader is not None:
            self._reader.table_map.clear()

    def _refresh(self, captured: _Captured, statement: Statement) -> None:
        try:
            schema = self._reflect(captured.table)
        except TableNotFound:
            log.warning("%s: %s is gone after %r; its changes stop here", self._where, captured.table,
                        statement.text[:200])
            return
        if schema != captured.schema:
            log.info("%s: %s changed (%s); reading it with its new columns", self._where, captured.table,
                     statement.text[:200])
            captured.schema = schema
            captured.convert = row_converter(schema, self._converter_for)

    def _rows(self, event: Any, runs: list[_Run]) -> int:
        from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent

        captured = self._tables.get((event.schema, event.table))
        if captured is None:
            return 0
        if self._txn is None:  # rows outside a bracket: their own transaction
            self._begin(event, None, bracketed=True)
        added = 0
        rows = event.rows
        if rows and _UNNAMED in (rows[0].get("values") or rows[0].get("before_values") or {}):
            raise ConfigurationError(f"{self._where}: the binlog no longer names the columns of {captured.table}; "
                                     "SET GLOBAL binlog_row_metadata = 'FULL'")
        for row in rows:
            if isinstance(event, UpdateRowsEvent):
                added += self._add(captured, "u", row["before_values"], row["after_values"], runs)
            elif isinstance(event, DeleteRowsEvent):
                added += self._add(captured, "d", row["values"], None, runs)
            else:
                added += self._add(captured, "c", None, row["values"], runs)
        return added

    def _add(self, captured: _Captured, op: Op, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
             runs: list[_Run]) -> int:
        """One change (binlog images, converted here unless it is skipped)."""
        txn = self._txn
        assert txn is not None
        position = txn.position((captured.schema.table.schema or "", captured.schema.table.name))
        key = (txn.file_no, txn.pos, position["row"])
        if key <= captured.floor:
            return 0
        captured.floor = key
        convert = captured.convert
        change = ChangeEvent(op, None if before is None else convert(before), None if after is None else convert(after),
                             position, txn.ts_ms)
        if not runs or runs[-1].captured is not captured or runs[-1].schema is not captured.schema:
            runs.append(_Run(captured, captured.schema))
        runs[-1].events.append(change)
        return 1
