"""Writing PostgreSQL tables: DDL from logical types, and loads that commit with their state marker."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from copyjob.connectors._append import key_index_sql
from copyjob.connectors._load_checks import check_load_key
from copyjob.connectors._sql import STATE_TABLE, qualified, quote_double
from copyjob.connectors.postgres import _catalog
from copyjob.connectors.postgres._connect import connect, translate
from copyjob.connectors.postgres._direct import DirectInserts
from copyjob.connectors.postgres._load import _UPSERT_MARKER, PostgresLoadSession

from copyjob.core.contracts import DestinationCapabilities, RowDigests, StateMarker, UpdateMethod
from copyjob.core.errors import ConfigurationError, TableNotFound
from copyjob.core.schema import Column, TableName, TableSchema
from copyjob.core.urls import ConnectionUrl

_CREATE_STATE = f"""
CREATE TABLE IF NOT EXISTS {quote_double(STATE_TABLE)} (
    job text NOT NULL,
    table_name text NOT NULL,
    run_id text NOT NULL,
    state jsonb NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, table_name)
)"""
_READ_MARKER = f"SELECT run_id, state FROM {quote_double(STATE_TABLE)} WHERE job = %s AND table_name = %s"


class PostgresDestination:
    """A PostgreSQL destination: one autocommit connection for DDL and markers; one connection per load."""

    capabilities = DestinationCapabilities(transactional=True, supports_merge=True, postgres_binary=True,
                                           generated_columns=True, markers_alone=True)

    def __init__(self, url: ConnectionUrl) -> None:
        self._url = url
        self._conn = connect(url, autocommit=True)
        self._spare: psycopg.Connection[Any] | None = None
        self._state_table_ready = False
        self._lock = threading.Lock()  # loads may begin from several threads
        self._direct: dict[tuple[TableName, tuple[str, ...]], DirectInserts] = {}

    def reflect(self, table: TableName) -> TableSchema | None:
        try:
            return _catalog.reflect(self._conn, table)
        except psycopg.Error as exc:
            raise translate(exc, self._url, table) from exc

    def create_table(self, schema: TableSchema, *, primary_key: bool = True, key_index: bool = False) -> None:
        table = _catalog.with_schema(schema.table)
        assert table.schema is not None
        index = ([key_index_sql(table, schema.primary_key, quote_double)]
                 if key_index and not primary_key and schema.primary_key else [])
        self._run(table, f"CREATE SCHEMA IF NOT EXISTS {quote_double(table.schema)}",
                  _catalog.create_table_sql(schema, primary_key), *index)

    def add_columns(self, table: TableName, columns: Sequence[Column]) -> None:
        if not columns:
            return
        # nullable whatever the source says: the rows already there have no value for them
        adds = ", ".join(f"ADD COLUMN {quote_double(c.name)} {_catalog.type_sql(c.type)}"
                         f"{f' GENERATED ALWAYS AS ({c.generated}) STORED' if c.generated else ''}" for c in columns)
        self._run(table, f"ALTER TABLE {qualified(_catalog.with_schema(table), quote_double)} {adds}")

    def drop_table(self, table: TableName) -> None:
        self._run(table, f"DROP TABLE IF EXISTS {qualified(_catalog.with_schema(table), quote_double)}")

    def begin_load(self, schema: TableSchema, method: UpdateMethod, key: Sequence[str],
                   truncate: bool = False, deferred_key: Sequence[str] = ()) -> PostgresLoadSession:
        check_load_key(schema, method, key)
        target = self._target_columns(schema)
        with self._lock:
            conn, self._spare = self._spare, None
        conn = conn or connect(self._url, autocommit=False)
        try:
            return PostgresLoadSession(
                conn, self._url, _catalog.with_schema(schema.table), target, method=method, key=tuple(key),
                truncate=truncate or method == "overwrite", deferred_key=tuple(deferred_key),
                ensure_state_table=self._ensure_state_table, release=self._keep_spare,
                direct=self._direct_inserts(schema.table, key) if method == "merge" and not deferred_key else None,
            )
        except BaseException:
            conn.close()
            raise

    def _direct_inserts(self, table: TableName, key: Sequence[str]) -> DirectInserts | None:
        """The attempt schedule for COPYing merge batches straight into ``table`` (see _direct.py), or None
        when no unique index on the key would refuse an existing key."""
        try:
            if not _catalog.has_unique_key(self._conn, table, key):
                return None
        except psycopg.Error as exc:
            raise translate(exc, self._url, table) from exc
        with self._lock:
            return self._direct.setdefault((_catalog.with_schema(table), tuple(sorted(key))), DirectInserts())

    def read_marker(self, job: str, table: str) -> StateMarker | None:
        try:
            if self._conn.execute("SELECT to_regclass(%s)", (quote_double(STATE_TABLE),)).fetchone() == (None,):
                return None
            row = self._conn.execute(_READ_MARKER, (job, table)).fetchone()
        except psycopg.Error as exc:
            raise translate(exc, self._url) from exc
        if row is None:
            return None
        return StateMarker(job=job, table=table, run_id=row[0], state=row[1])

    def write_marker(self, marker: StateMarker) -> None:
        self._ensure_state_table()
        try:  # the autocommit connection: the statement is its own transaction
            self._conn.execute(_UPSERT_MARKER, (marker.job, marker.table, marker.run_id, json.dumps(marker.state)))
        except psycopg.Error as exc:
            raise translate(exc, self._url) from exc

    def _keep_spare(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            if self._spare is None:
                self._spare = conn
                return
        conn.close()

    def digests(self) -> RowDigests:
        """Row counts and hashes computed in the database (``copyjob verify``)."""
        from copyjob.connectors._digest_sql import postgres_digests

        return postgres_digests(self._conn)

    def close(self) -> None:
        if self._spare is not None:
            self._spare.close()
            self._spare = None
        self._conn.close()

    # ------------------------------------------------------------ helpers

    def _target_columns(self, schema: TableSchema) -> list[_catalog.NativeColumn]:
        """The destination's own column types, in ``schema.columns`` order: binary COPY must send exactly
        those types, whatever the source's types were."""
        try:
            found = _catalog.reflect_native(self._conn, schema.table)
        except psycopg.Error as exc:
            raise translate(exc, self._url, schema.table) from exc
        if found is None:
            raise TableNotFound(f"table {_catalog.with_schema(schema.table)} does not exist on "
                                f"{self._url.redacted}")
        by_name = {c.name: c for c in found[0]}
        missing = [n for n in schema.column_names if n not in by_name]
        if missing:
            raise ConfigurationError(f"{schema.table} on {self._url.redacted} has no column(s) {missing}")
        return [by_name[n] for n in schema.column_names]

    def _ensure_state_table(self) -> None:
        """Create ``_copyjob_state`` once, outside the loads' transactions (two loads creating it at once in
        their own transactions would collide on the catalog)."""
        with self._lock:
            if self._state_table_ready:
                return
            try:
                self._conn.execute(_CREATE_STATE)
            except psycopg.errors.UniqueViolation:
                pass  # another process created it between our check and our create
            except psycopg.Error as exc:
                raise translate(exc, self._url) from exc
            self._state_table_ready = True

    def _run(self, table: TableName, *statements: str) -> None:
        try:
            with self._conn.transaction():
                for statement in statements:
                    self._conn.execute(statement)
        except psycopg.Error as exc:
            raise translate(exc, self._url, table) from exc
