"""A snapshot consistent with a binlog position: the tables are read in one transaction that sees exactly
the transactions before the position, and streaming starts at that position (no gap, no overlap).

:func:`begin_consistent_snapshot` opens that transaction on a connection the caller then reads the tables on
(and rolls back when done). Steps, as logged:

MariaDB (no lock, no extra privilege):
  1. ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` (REPEATABLE READ);
  2. ``SHOW STATUS LIKE 'binlog_snapshot_%'``: the binlog file and position of exactly that snapshot;
  3. ``BINLOG_GTID_POS(file, pos)``: the GTID position there.
MySQL (a global read lock held for milliseconds; needs RELOAD):
  1. ``FLUSH TABLES WITH READ LOCK``: commits stop;
  2. ``START TRANSACTION WITH CONSISTENT SNAPSHOT``;
  3. ``SHOW MASTER STATUS`` (8.4: ``SHOW BINARY LOG STATUS``) and ``@@gtid_executed`` under the lock;
  4. ``UNLOCK TABLES``: writers go on; the transaction keeps its snapshot.
The tables must be transactional (InnoDB) for the read to be consistent.
"""

from __future__ import annotations

import logging
from typing import Any

import pymysql
from copyjob.ingest.mysql_cdc._sql import ACCESS_DENIED, binlog_status, execute, rows, text
from copyjob.ingest.mysql_cdc.checks import ServerInfo
from copyjob.ingest.mysql_cdc.positions import Position, between

from copyjob.core.errors import ConfigurationError

log = logging.getLogger(__name__)


def current_position(conn: Any) -> Position:
    """Where the binlog ends now: a stream that reaches it has seen every transaction committed before. A bound
    to compare with, not a place to resume from: it has no GTID position (on MariaDB that would mean scanning
    the binlog file with BINLOG_GTID_POS)."""
    file, pos, _ = binlog_status(conn)
    return between(file, pos, None)


def begin_consistent_snapshot(conn: Any, server: ServerInfo, where: str) -> Position:
    """Open a consistent-snapshot transaction on ``conn`` and return the binlog position it belongs to."""
    execute(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    if server.mariadb:
        position = _mariadb_snapshot(conn)
        if position is not None:
            return position
        execute(conn, "ROLLBACK")
        log.info("%s: the snapshot's binlog position has no GTID position; taking a read lock instead", where)
    return _locked_snapshot(conn, server, where)


def _mariadb_snapshot(conn: Any) -> Position | None:
    log.info("snapshot step 1: START TRANSACTION WITH CONSISTENT SNAPSHOT")
    execute(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
    log.info("snapshot step 2: the binlog position of the snapshot")
    status = {text(k).lower(): text(v) for k, v in rows(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'")}
    file, pos = status.get("binlog_snapshot_file"), status.get("binlog_snapshot_position")
    if not file or not pos:
        return None
    log.info("snapshot step 3: its GTID position")
    gtid_pos = rows(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, int(pos)))[0][0]
    if gtid_pos is None:
        return None
    return between(file, int(pos), text(gtid_pos))


def _locked_snapshot(conn: Any, server: ServerInfo, where: str) -> Position:
    log.info("snapshot step 1: FLUSH TABLES WITH READ LOCK")
    try:
        execute(conn, "FLUSH TABLES WITH READ LOCK")
    except pymysql.err.MySQLError as exc:
        if exc.args and exc.args[0] in ACCESS_DENIED:
            raise ConfigurationError(f"{where}: a consistent snapshot needs the RELOAD privilege (for FLUSH "
                                     "TABLES WITH READ LOCK); GRANT RELOAD ON *.* to the job's user") from exc
        raise
    try:
        log.info("snapshot step 2: START TRANSACTION WITH CONSISTENT SNAPSHOT")
        execute(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        log.info("snapshot step 3: the binlog position under the lock")
        if server.mariadb:
            file, pos, _ = binlog_status(conn)
            gtid_pos: str | None = text(rows(conn, "SELECT @@GLOBAL.gtid_binlog_pos")[0][0])
        else:
            file, pos, gtid_set = binlog_status(conn)
            gtid_pos = gtid_set if server.gtid else None
    finally:
        log.info("snapshot step 4: UNLOCK TABLES")
        execute(conn, "UNLOCK TABLES")
    return between(file, pos, gtid_pos)
