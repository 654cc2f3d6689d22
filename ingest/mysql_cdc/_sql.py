"""Small helpers on a DB-API connection to the source server (pymysql)."""

from __future__ import annotations

from typing import Any

import pymysql

from copyjob.core.errors import ConfigurationError

ACCESS_DENIED = {1227, 1044, 1045, 1142, 1143}
_PARSE_ERROR = 1064


def rows(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def execute(conn: Any, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def binlog_status(conn: Any) -> tuple[str, int, str]:
    """``(file, position, executed GTID set)`` of the binlog's end (the set is empty on MariaDB)."""
    try:
        found = rows(conn, "SHOW BINARY LOG STATUS")
    except pymysql.err.ProgrammingError as exc:
        if not exc.args or exc.args[0] != _PARSE_ERROR:
            raise
        found = rows(conn, "SHOW MASTER STATUS")
    if not found:
        raise ConfigurationError("change capture needs the binary log; start the server with log_bin")
    row = found[0]
    gtid_set = text(row[4]).replace("\n", "") if len(row) > 4 and row[4] is not None else ""
    return text(row[0]), int(row[1]), gtid_set
