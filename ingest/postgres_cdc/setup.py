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
from collections.abc import Callable, Mapping, Sequence
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
                                                               ELSE i.indisprimary END)),
       has_table_privilege(c.oid, 'SELECT'), current_user
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

    def problems(self, tables: Mapping[TableName, Sequence[str]], *, create_publication: bool) -> list[str]:
        """Every unmet need of change capture for ``tables`` (each with the key its deletes must carry), each
        with its fix: the server, each table, the slot, the publication. Reads the catalogs only: nothing is
        created, so ``copyjob validate --connect`` and ``run`` (before it creates anything) share it."""
        found = self.server_problems()
        for table, key in tables.items():
            found += self.identity_problems(table, key)
        info = self.slot_info()
        found += self.slot_problems(info) if info is not None else self._free_slot_problems()
        return found + self.publication_problems(list(tables), create=create_publication)

    def server_problems(self) -> list[str]:
        """wal_level, the REPLICATION attribute and max_replication_slots, each with its fix."""
        ((level, slots, user, can_replicate),) = self._rows(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, current_user, "
            "(SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)")
        found = []
        if level != "logical":
            found.append(f"{self.where}: wal_level is {level}; set wal_level = logical in postgresql.conf and "
                         "restart PostgreSQL (or ALTER SYSTEM SET wal_level = logical, then restart)")
        if not can_replicate:
            found.append(f"{self.where}: role {user} lacks REPLICATION: ALTER ROLE {user} REPLICATION "
                         "(or use a role that has it)")
        if slots < 1:
            found.append(f"{self.where}: max_replication_slots is 0; raise it in postgresql.conf and restart "
                         "PostgreSQL")
        return found

    def check_server(self) -> None:
        """Raise the first of :meth:`server_problems`."""
        _raise_first(self.server_problems())

    def identity_problems(self, table: TableName, key: Sequence[str]) -> list[str]:
        """The table exists and can be read, and its replica identity lets deletes and updates carry ``key``
        (source column names)."""
        schema = table.schema or "public"
        rows = self._rows(_IDENTITY, (schema, table.name))
        if not rows:
            return [f"source table {table} does not exist on {self.where}"]
        identity, columns, readable, user = rows[0]
        found = [] if readable else [f"role {user} cannot read {table} on {self.where}: GRANT SELECT ON "
                                     f"{schema}.{table.name} TO {user}"]
        full = f"ALTER TABLE {schema}.{table.name} REPLICA IDENTITY FULL"
        if identity == "n" or (identity == "d" and not columns):
            why = "has no primary key" if identity == "d" else "has REPLICA IDENTITY NOTHING"
            return [*found, f"{table} {why}, so its updates and deletes cannot be captured: {full} "
                            "(or add a primary key)"]
        missing = [k for k in key if k not in columns]
        if identity != "f" and missing:
            found.append(f"deletes of {table} carry only its replica identity ({', '.join(columns)}), not the key "
                         f"column(s) {', '.join(missing)}: {full}, or key the job on the identity columns")
        return found

    def check_identity(self, table: TableName, key: Sequence[str]) -> None:
        """Raise the first of :meth:`identity_problems`."""
        _raise_first(self.identity_problems(table, key))

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

    def publication_problems(self, tables: Sequence[TableName], *, create: bool) -> list[str]:
        """What keeps the publication from covering ``tables``: it is missing or lacks tables and copyjob may not
        (``create: false``, or a publication that is not the job's) or cannot (privileges) make it so."""
        wanted = [TableName(t.name, t.schema or "public") for t in tables]
        found = self.publication_tables()
        if found is None:
            if not create:
                return [f"publication {self.publication} does not exist on {self.where}: CREATE PUBLICATION "
                        f"{self.publication} FOR TABLE {', '.join(map(str, wanted))}, or set "
                        "cdc.publication.create: true"]
            return self._create_problems(wanted, new=True)
        all_tables, ours, have, _ = found
        missing = [] if all_tables else [t for t in wanted if t not in have]
        if not missing:
            return []
        if not (ours and create):
            return [f"publication {self.publication} on {self.where} does not include {', '.join(map(str, missing))}"
                    f": ALTER PUBLICATION {self.publication} ADD TABLE {', '.join(map(str, missing))}"]
        return self._create_problems(missing, new=False)

    def _create_problems(self, tables: Sequence[TableName], *, new: bool) -> list[str]:
        """Privileges to create the publication (CREATE on the database) and to publish a table (owning it)."""
        ((can_create, user, database),) = self._rows(
            "SELECT has_database_privilege(current_database(), 'CREATE') OR (SELECT rolsuper FROM "
            "pg_catalog.pg_roles WHERE rolname = current_user), current_user, current_database()")
        found = []
        if new and not can_create:
            found.append(f"role {user} cannot create publication {self.publication} on {self.where}: GRANT CREATE "
                         f"ON DATABASE {database} TO {user}, or have a DBA create it and set "
                         "cdc.publication.create: false")
        owned = {TableName(name, schema) for schema, name, own in self._rows(
            "SELECT n.nspname, c.relname, pg_has_role(c.relowner, 'USAGE') OR (SELECT rolsuper FROM "
            "pg_catalog.pg_roles WHERE rolname = current_user) FROM pg_catalog.pg_class c JOIN "
            "pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE (n.nspname, c.relname) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([t.schema or "public" for t in tables], [t.name for t in tables])) if own}
        foreign = [t for t in tables if t not in owned]
        if foreign:
            found.append(f"role {user} does not own {', '.join(map(str, foreign))} on {self.where}, so it cannot add "
                         f"them to publication {self.publication}: have their owner run "
                         f"{'CREATE' if new else 'ALTER'} PUBLICATION {self.publication} "
                         f"{'FOR' if new else 'ADD'} TABLE {', '.join(map(str, tables))}"
                         + (" and set cdc.publication.create: false" if new else ""))
        return found

    def ensure_publication(self, tables: Sequence[TableName], *, create: bool) -> list[TableName]:
        """Make the publication cover ``tables``; returns the tables it had to add."""
        wanted = [TableName(t.name, t.schema or "public") for t in tables]
        found = self.publication_tables()
        name = sql.Identifier(self.publication)
        listed = sql.SQL(", ").join(sql.Identifier(t.schema or "public", t.name) for t in wanted)
        if found is None:
            if not create:
                _raise_first(self.publication_problems(wanted, create=False))
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
            _raise_first(self.publication_problems(wanted, create=create))
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

    def slot_problems(self, info: SlotInfo) -> list[str]:
        """An existing slot of the job's name that cannot serve it."""
        ((current,),) = self._rows("SELECT current_database()")
        if info.plugin != "pgoutput" or info.database != current:
            return [f"replication slot {self.slot} on {self.where} belongs to database {info.database} with plugin "
                    f"{info.plugin}, not to {current} with pgoutput: set cdc.slot to another name"]
        if info.wal_status == "lost":
            return [f"replication slot {self.slot} on {self.where} has lost WAL it needed (max_slot_wal_keep_size): "
                    "copyjob drop JOB.yaml --yes, then run again to snapshot anew"]
        return []

    def check_slot(self, info: SlotInfo) -> None:
        """Raise the first of :meth:`slot_problems`."""
        _raise_first(self.slot_problems(info))

    def _free_slot_problems(self) -> list[str]:
        """The slot is still to be created: the server must have room for it."""
        ((used, most),) = self._rows("SELECT count(*), current_setting('max_replication_slots')::int "
                                     "FROM pg_catalog.pg_replication_slots")
        if 0 < most <= used:
            return [f"{self.where}: all {most} replication slots are in use, so slot {self.slot} cannot be created: "
                    "raise max_replication_slots in postgresql.conf and restart PostgreSQL, or drop an unused slot "
                    "(SELECT pg_drop_replication_slot(name))"]
        return []

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


def _raise_first(problems: Sequence[str]) -> None:
    if problems:
        raise ConfigurationError(problems[0])


def _text(exc: BaseException) -> str:
    diag: Any = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) or str(exc)
    return " ".join(str(text).split())
