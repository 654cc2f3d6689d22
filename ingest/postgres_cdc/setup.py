"""What logical replication needs on the source server, checked and created the way a DBA would.

- the server: ``wal_level = logical``, a role with REPLICATION (or superuser), free replication slots;
- the tables: a replica identity that lets updates and deletes name their row (a primary key, or
  ``REPLICA IDENTITY FULL``), which covers the job's merge key;
- the publication (default ``copyjob_<job>``): created when missing and ``publication: {create: true}``,
  ``FOR TABLE`` the job's tables and publishing insert, update, delete and truncate, with a comment that
  marks it as the job's (only such publications are extended with new tables, or dropped by
  ``copyjob drop``);
- the slot (default ``copyjob_<job>``): information (lag, activity) and dropping; creating it is the
  snapshot handoff (:mod:`ingest.postgres_cdc.handoff`).

Every problem is one ConfigurationError line naming the setting, privilege or statement that fixes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from copyjob.core.errors import ConfigurationError, ConnectorError
from copyjob.core.schema import TableName

COMMENT_PREFIX = "created by copyjob for job "
_NAME = re.compile(r"[^a-z0-9_]")


def default_name(job: str) -> str:
    """``copyjob_<job>`` as a valid slot name: lower case letters, digits and ``_``, at most 63 bytes."""
    return _NAME.sub("_", f"copyjob_{job}".lower())[:63]


@dataclass(frozen=True)
class SlotInfo:
    name: str
    plugin: str | None
    database: str | None
    active_pid: int | None
    confirmed_flush: int | None
    lag_bytes: int | None
    """``pg_current_wal_lsn() - confirmed_flush_lsn``: WAL the server keeps for this slot."""
    wal_status: str | None


_SLOT = """
SELECT plugin, database, active_pid, pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, wal_status
FROM pg_catalog.pg_replication_slots WHERE slot_name = %s"""
_IDENTITY = """
SELECT c.relreplident,
       ARRAY(SELECT a.attname FROM pg_catalog.pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) AS k(attnum)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = c.oid AND (CASE c.relreplident WHEN 'i' THEN i.indisreplident
                                                               ELSE i.indisprimary END))
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s"""
_BASE_TYPE = """
SELECT bt.typname, CASE WHEN t.typtype = 'd' THEN t.typtypmod END
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE t.oid = %s"""


class ReplicationSetup:
    """Catalog work for one job's slot and publication, on an ordinary (autocommit) connection."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], where: str, *, slot: str,
                 publication: str, job: str) -> None:
        self._connect = connect
        self._conn: psycopg.Connection[Any] | None = None
        self.where = where
        self.slot = slot
        self.publication = publication
        self.job = job

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _rows(self, query: str | sql.Composed, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigurationError(f"{self.where}: {_text(exc)}") from exc
        except psycopg.Error as exc:
            raise ConnectorError(f"PostgreSQL error on {self.where}: {_text(exc)}",
                                 retriable=isinstance(exc, psycopg.OperationalError)) from exc

    # ------------------------------------------------------------ server

    def check_server(self) -> None:
        """wal_level, the REPLICATION attribute and max_replication_slots, each with its fix."""
        ((level, slots, user, can_replicate),) = self._rows(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, current_user, "
            "(SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)")
        if level != "logical":
            raise ConfigurationError(f"{self.where}: wal_level is {level}; set wal_level = logical in "
                                     "postgresql.conf and restart PostgreSQL")
        if not can_replicate:
            raise ConfigurationError(f"{self.where}: role {user} lacks REPLICATION: ALTER ROLE {user} REPLICATION "
                                     "(or use a role that has it)")
        if slots < 1:
            raise ConfigurationError(f"{self.where}: max_replication_slots is 0; raise it in postgresql.conf "
                                     "and restart PostgreSQL")

    def check_identity(self, table: TableName, key: Sequence[str]) -> None:
        """The table's replica identity lets deletes and updates carry ``key`` (source column names)."""
        schema = table.schema or "public"
        rows = self._rows(_IDENTITY, (schema, table.name))
        if not rows:
            raise ConfigurationError(f"source table {table} does not exist on {self.where}")
        identity, columns = rows[0]
        full = f"ALTER TABLE {schema}.{table.name} REPLICA IDENTITY FULL"
        if identity == "n" or (identity == "d" and not columns):
            why = "has no primary key" if identity == "d" else "has REPLICA IDENTITY NOTHING"
            raise ConfigurationError(f"{table} {why}, so its updates and deletes cannot be captured: {full} "
                                     "(or add a primary key)")
        missing = [k for k in key if k not in columns]
        if identity != "f" and missing:
            raise ConfigurationError(f"deletes of {table} carry only its replica identity ({', '.join(columns)}), "
                                     f"not the key column(s) {', '.join(missing)}: {full}, or key the job on the "
                                     "identity columns")

    def base_type(self, oid: int) -> tuple[str, int | None]:
        """A type's base type name (domains: one level) and the domain's typmod, for types not built in."""
        rows = self._rows(_BASE_TYPE, (oid,))
        return (rows[0][0], rows[0][1]) if rows else ("text", None)

    def emit_message(self, prefix: str, content: str) -> int:
        """A non-transactional logical decoding message; its LSN (everything committed before is before it)."""
        ((lsn,),) = self._rows("SELECT pg_wal_lsn_diff(pg_logical_emit_message(false, %s, %s), '0/0')::bigint",
                               (prefix, content))
        return int(lsn)

    # ------------------------------------------------------------ publication

    def publication_tables(self) -> tuple[bool, bool, set[TableName], str | None] | None:
        """(all tables?, created by copyjob for this job?, tables, comment), or None when missing."""
        rows = self._rows("SELECT p.oid, p.puballtables, obj_description(p.oid, 'pg_publication') "
                          "FROM pg_catalog.pg_publication p WHERE p.pubname = %s", (self.publication,))
        if not rows:
            return None
        _, all_tables, comment = rows[0]
        tables = {TableName(name, schema) for schema, name in self._rows(
            "SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = %s",
            (self.publication,))}
        return all_tables, comment == COMMENT_PREFIX + self.job, tables, comment

    def ensure_publication(self, tables: Sequence[TableName], *, create: bool) -> list[TableName]:
        """Make the publication cover ``tables``; returns the tables it had to add."""
        wanted = [TableName(t.name, t.schema or "public") for t in tables]
        found = self.publication_tables()
        name = sql.Identifier(self.publication)
        listed = sql.SQL(", ").join(sql.Identifier(t.schema or "public", t.name) for t in wanted)
        if found is None:
            if not create:
                raise ConfigurationError(f"publication {self.publication} does not exist on {self.where}: "
                                         f"CREATE PUBLICATION {self.publication} FOR TABLE "
                                         f"{', '.join(map(str, wanted))}, or set cdc.publication.create: true")
            self._ddl(sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish = 'insert, update, delete, "
                              "truncate')").format(name, listed),
                      sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(name,
                                                                          sql.Literal(COMMENT_PREFIX + self.job)))
            return wanted
        all_tables, ours, have, _ = found
        missing = [] if all_tables else [t for t in wanted if t not in have]
        if not missing:
            return []
        if not (ours and create):
            raise ConfigurationError(f"publication {self.publication} on {self.where} does not include "
                                     f"{', '.join(map(str, missing))}: ALTER PUBLICATION {self.publication} "
                                     f"ADD TABLE {', '.join(map(str, missing))}")
        self._ddl(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
            name, sql.SQL(", ").join(sql.Identifier(t.schema or "public", t.name) for t in missing)))
        return missing

    def _ddl(self, *statements: sql.Composed) -> None:
        try:
            with self.conn.transaction():
                for statement in statements:
                    self.conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigurationError(f"cannot create or change publication {self.publication} on {self.where}: "
                                     f"{_text(exc)} (it needs CREATE on the database and ownership of the "
                                     "tables; or have a DBA create it and set cdc.publication.create: false)"
                                     ) from exc
        except psycopg.Error as exc:
            raise ConnectorError(f"PostgreSQL error on {self.where}: {_text(exc)}") from exc

    # ------------------------------------------------------------ slot

    def slot_info(self) -> SlotInfo | None:
        rows = self._rows(_SLOT, (self.slot,))
        if not rows:
            return None
        plugin, database, pid, flushed, lag, wal_status = rows[0]
        return SlotInfo(self.slot, plugin, database, pid, flushed, lag, wal_status)

    def check_slot(self, info: SlotInfo) -> None:
        ((current,),) = self._rows("SELECT current_database()")
        if info.plugin != "pgoutput" or info.database != current:
            raise ConfigurationError(f"replication slot {self.slot} on {self.where} belongs to database "
                                     f"{info.database} with plugin {info.plugin}, not to {current} with pgoutput: "
                                     "set cdc.slot to another name")
        if info.wal_status == "lost":
            raise ConfigurationError(f"replication slot {self.slot} on {self.where} has lost WAL it needed "
                                     "(max_slot_wal_keep_size): copyjob drop JOB.yaml --yes, then run again to "
                                     "snapshot anew")

    def drop(self) -> list[str]:
        """Drop the slot, and the publication when this job created it; returns what was dropped."""
        dropped = []
        info = self.slot_info()
        if info is not None:
            if info.active_pid is not None:
                raise ConfigurationError(f"replication slot {self.slot} is in use by process {info.active_pid} "
                                         f"on {self.where}: stop the stream first")
            self._rows("SELECT pg_drop_replication_slot(%s)", (self.slot,))
            dropped.append(f"replication slot {self.slot}")
        found = self.publication_tables()
        if found is not None and found[1]:
            self._ddl(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(self.publication)))
            dropped.append(f"publication {self.publication}")
        return dropped


def _text(exc: BaseException) -> str:
    diag: Any = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) or str(exc)
    return " ".join(str(text).split())
