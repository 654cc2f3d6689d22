"""What change capture needs from a MySQL or MariaDB server, checked before anything is read.

Each unmet need is one line that says what to change:

- the binlog on (``log_bin``), rows logged as rows (``binlog_format=ROW``) with every column in both images
  (``binlog_row_image=FULL``) and the column names and types beside them (``binlog_row_metadata=FULL``,
  MySQL 8.0.14+ / MariaDB 10.5+: the binlog reader names columns from it);
- MySQL only: no partial JSON updates (``binlog_row_value_options``) and no compressed transactions
  (``binlog_transaction_compression``), which the binlog reader cannot decode;
- privileges: REPLICATION SLAVE to read the binlog, REPLICATION CLIENT (MariaDB 10.5+: BINLOG MONITOR) to read
  its position; a MySQL snapshot also needs RELOAD (see :mod:`ingest.mysql_cdc.snapshot`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pymysql
from copyjob.ingest.mysql_cdc._sql import ACCESS_DENIED, binlog_status, rows, text

from copyjob.core.errors import ConfigurationError

_VARIABLES = ("log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata", "gtid_mode",
              "binlog_row_value_options", "binlog_transaction_compression", "server_id")


@dataclass(frozen=True)
class ServerInfo:
    """The source server as change capture sees it."""

    mariadb: bool
    gtid: bool
    """Positions carry GTIDs and streams resume by GTID (always on MariaDB; MySQL with ``gtid_mode=ON``)."""
    server_id: int
    version: str


def server_info(conn: Any, where: str) -> ServerInfo:
    """Check the binlog settings and privileges on ``conn``; ``where`` names the server in messages.

    Raises ConfigurationError naming every unmet need (see :func:`server_problems`).
    """
    info, problems = server_problems(conn, where)
    if problems:
        raise ConfigurationError("; ".join(problems))
    return info


def server_problems(conn: Any, where: str) -> tuple[ServerInfo, list[str]]:
    """The server as change capture sees it, and every unmet need, each a line that says what to change.
    Reads variables and grants only: ``copyjob validate --connect`` and ``run`` share it."""
    names = ", ".join(f"'{n}'" for n in _VARIABLES)
    found = {text(k).lower(): text(v) for k, v in rows(conn, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")}
    version = text(rows(conn, "SELECT VERSION()")[0][0])
    mariadb = "mariadb" in version.lower()
    problems = [str(p) for p in _settings_problems(found, mariadb, where)]
    problems += [str(p) for p in _privilege_problems(conn, where, binlog_on=_binlog_on(found))]
    gtid = mariadb or found.get("gtid_mode", "OFF").upper() == "ON"
    info = ServerInfo(mariadb=mariadb, gtid=gtid, server_id=int(found.get("server_id") or 0), version=version)
    return info, problems


def _need(where: str, what: str, fix: str) -> ConfigurationError:
    return ConfigurationError(f"{where}: change capture needs {what}; {fix}")


def _binlog_on(found: dict[str, str]) -> bool:
    return found.get("log_bin", "OFF").upper() in ("ON", "1")


def _settings_problems(found: dict[str, str], mariadb: bool, where: str) -> list[ConfigurationError]:
    needs = []
    if not _binlog_on(found):
        needs.append(_need(where, "the binary log", "start the server with log_bin (and binlog_format=ROW)"))
    fmt = found.get("binlog_format", "").upper()
    if fmt != "ROW":
        needs.append(_need(where, f"binlog_format=ROW (it is {fmt or 'unset'})",
                           "SET GLOBAL binlog_format = 'ROW' and set it in the server configuration"))
    image = found.get("binlog_row_image", "FULL").upper()
    if image != "FULL":
        needs.append(_need(where, f"binlog_row_image=FULL (it is {image})",
                           "SET GLOBAL binlog_row_image = 'FULL' and set it in the server configuration"))
    metadata = found.get("binlog_row_metadata")
    if metadata is None:
        needs.append(_need(where, "binlog_row_metadata, which this server lacks",
                           "use MySQL 8.0.14+ or MariaDB 10.5+"))
    elif metadata.upper() != "FULL":
        needs.append(_need(where, f"binlog_row_metadata=FULL (it is {metadata.upper()})",
                           "SET GLOBAL binlog_row_metadata = 'FULL' and set it in the server configuration"))
    if not mariadb and "PARTIAL_JSON" in found.get("binlog_row_value_options", "").upper():
        needs.append(_need(where, "full JSON row images (binlog_row_value_options is PARTIAL_JSON)",
                           "SET GLOBAL binlog_row_value_options = ''"))
    if not mariadb and found.get("binlog_transaction_compression", "OFF").upper() in ("ON", "1"):
        needs.append(_need(where, "uncompressed binlog transactions",
                           "SET GLOBAL binlog_transaction_compression = OFF"))
    return needs


_REPLICATION_GRANT = re.compile(r"GRANT ALL PRIVILEGES ON \*\.\*|\bREPLICATION (SLAVE|REPLICA)\b", re.I)
_ROLE_GRANT = re.compile(r"^GRANT\s+[`'\"]?[\w-]+[`'\"]?(@\S+)?\s+TO\b", re.I)


def _privilege_problems(conn: Any, where: str, *, binlog_on: bool) -> list[ConfigurationError]:
    needs = []
    try:
        binlog_status(conn)
    except ConfigurationError:
        if binlog_on:  # else already reported as a setting
            raise
    except pymysql.err.MySQLError as exc:
        if not (exc.args and exc.args[0] in ACCESS_DENIED):
            raise
        needs.append(_need(where, "the REPLICATION CLIENT privilege (MariaDB 10.5+: BINLOG MONITOR)",
                           "GRANT REPLICATION CLIENT ON *.* (MariaDB 10.5+: GRANT BINLOG MONITOR ON *.*) to the "
                           "job's user"))
    grants = [text(r[0]) for r in rows(conn, "SHOW GRANTS FOR CURRENT_USER()")]
    if any(_REPLICATION_GRANT.search(g) for g in grants) or any(_ROLE_GRANT.match(g) for g in grants):
        return needs  # a role may hold it: the binlog dump itself says so if not
    needs.append(_need(where, "the REPLICATION SLAVE privilege", "GRANT REPLICATION SLAVE ON *.* to the job's user"))
    return needs
