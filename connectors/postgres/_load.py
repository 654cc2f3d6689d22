"""One load into one PostgreSQL table: binary COPY inside a transaction that also carries the state marker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from copyjob.connectors._append import duplicate_key_error
from copyjob.connectors._sql import STATE_TABLE, qualified, quote_double
from copyjob.connectors.postgres import _catalog
from copyjob.connectors.postgres._catalog import NativeColumn, column_list
from copyjob.connectors.postgres._connect import _text, translate
from copyjob.connectors.postgres._direct import DirectInserts

from copyjob.core.contracts import StateMarker, UpdateMethod
from copyjob.core.errors import ConfigurationError, ConnectorError, DataError
from copyjob.core.schema import TableName
from copyjob.core.urls import ConnectionUrl

if TYPE_CHECKING:  # Arrow and the modules built on it load with the first batch: a binary pass-through never needs them
    import pyarrow as pa
    from copyjob.connectors.postgres import _wire

STAGE = 'pg_temp."_copyjob_stage"'
SEQ = quote_double("__copyjob_seq")
_UPSERT_MARKER = f"""
INSERT INTO {quote_double(STATE_TABLE)} (job, table_name, run_id, state, committed_at)
VALUES (%s, %s, %s, %s::jsonb, now())
ON CONFLICT (job, table_name) DO UPDATE
SET run_id = EXCLUDED.run_id, state = EXCLUDED.state, committed_at = EXCLUDED.committed_at"""


class PostgresLoadSession:
    """Steps: 1. the constructor opens the transaction (TRUNCATE for overwrite; a staging table for merge);
    2. ``write``/``write_binary`` COPY batches in; ``delete_keys``/``update_columns`` change the target (and
    the merge staging) by key at once, in call order; 3. ``commit`` applies the merge, adds the deferred key,
    upserts the marker and commits, all in that one transaction. ``abort`` rolls everything back."""

    def __init__(self, conn: psycopg.Connection[Any], url: ConnectionUrl, table: TableName,
                 columns: Sequence[NativeColumn], *, method: UpdateMethod, key: tuple[str, ...],
                 truncate: bool, deferred_key: tuple[str, ...], ensure_state_table: Callable[[], None],
                 release: Callable[[psycopg.Connection[Any]], None] | None = None,
                 direct: DirectInserts | None = None) -> None:
        self._conn = conn
        self._release = release
        self._url = url
        self._table = table
        # columns the server generates are never written: ``write`` drops their values from each batch
        self._given = len(columns)
        self._keep = [i for i, c in enumerate(columns) if not c.generated]
        self._columns = [columns[i] for i in self._keep]
        self._method = method
        self._key = key
        self._deferred_key = deferred_key
        self._primary_key: tuple[str, ...] | None = None  # looked up when delete/update by key needs it
        self._ensure_state_table = ensure_state_table
        self._target = qualified(table, quote_double)
        self._cols_sql = column_list([c.name for c in self._columns])
        self._wires: dict[pa.Schema, list[_wire.Wire]] = {}
        self._direct = direct if method == "merge" else None  # see _direct.py
        self._staged = False  # once a merge stages a row, later rows must follow it (the last row of a key wins)
        self._stage_made = False
        self._into: str | None = None
        self._open = True
        self._check_keys()
        self._guard(self._start, truncate)

    # ------------------------------------------------------------ step 1

    def _check_keys(self) -> None:
        names = {c.name for c in self._columns}
        unknown = [k for k in (*self._key, *self._deferred_key) if k not in names]
        if unknown:
            raise ConfigurationError(f"key column(s) {unknown} are not among the columns loaded into {self._table}")

    def _start(self, truncate: bool) -> None:
        if truncate:
            self._conn.execute(f"TRUNCATE {self._target}")

    def _make_stage(self) -> None:
        """The merge's staging table, made when a first row is staged: a load whose rows all go straight in
        (_direct.py: a stream of inserts, one small transaction each) needs none, and making it costs two DDL
        statements, a sequence and their catalog rows per transaction."""
        if self._stage_made:
            return
        # same column types as the target (so the same COPY types), plus the arrival order
        self._conn.execute(f"CREATE TEMP TABLE {STAGE} ON COMMIT DROP AS "
                           f"SELECT {self._cols_sql} FROM {self._target} WITH NO DATA")
        self._conn.execute(f"ALTER TABLE {STAGE} ADD COLUMN {SEQ} bigint GENERATED ALWAYS AS IDENTITY")
        self._stage_made = True

    # ------------------------------------------------------------ step 2

    def write(self, batch: pa.RecordBatch) -> int:
        if batch.num_columns != self._given:
            raise ConfigurationError(f"batch for {self._table} has {batch.num_columns} columns, "
                                     f"expected {self._given}")
        if batch.num_rows == 0:
            return 0
        if len(self._keep) != self._given:
            batch = batch.select(self._keep)
        direct = self._direct if not self._staged else None
        if direct is not None and direct.should_try() and self._guard(self._write_direct, batch, direct):
            return batch.num_rows
        self._staged = self._method == "merge"
        if self._staged:
            self._guard(self._make_stage)
        self._guard(self._write_batch, batch)
        return batch.num_rows

    def _write_direct(self, batch: pa.RecordBatch, direct: DirectInserts) -> bool:
        """COPY a merge batch straight into the table when none of its keys is there yet (see _direct.py);
        False, with nothing written, when the unique index refused one."""
        self._conn.execute("SAVEPOINT copyjob_direct")
        self._into = self._target
        try:
            self._write_batch(batch)
        except psycopg.errors.UniqueViolation:
            self._conn.execute("ROLLBACK TO SAVEPOINT copyjob_direct")
            direct.refused()
            return False
        finally:
            self._into = None
        self._conn.execute("RELEASE SAVEPOINT copyjob_direct")
        direct.accepted()
        return True

    def _write_batch(self, batch: pa.RecordBatch) -> None:

        wires = self._wires_for(batch.schema)
        columns = [self._planned(c, a, w) for c, a, w in zip(self._columns, batch.columns, wires, strict=True)]
        self._copy_rows([w.copy_type for w in wires], columns)

    @staticmethod
    def _planned(column: NativeColumn, array: pa.Array, wire: _wire.Wire) -> _wire.Planned:
        """The column as ``_copy_rows`` takes it: the Arrow values with their plan (Python values are made
        there only for what _binary_rows cannot encode vectorised)."""
        from copyjob.connectors.postgres import _wire

        return _wire.Planned(column, array, wire)

    def _copy_rows(self, copy_types: list[str], columns: Sequence[_wire.Planned], copy_sql: str | None = None) -> None:
        """Binary COPY of the columns: encoded a whole batch at a time (_binary_rows.py) and written in large
        chunks; when a value cannot be encoded that way, the batch goes row by row through psycopg's
        ``write_row``, which names the row and column that do not fit."""
        from copyjob.connectors.postgres import _binary_rows, _wire
        from psycopg.types.json import set_json_dumps

        num_rows = len(columns[0].array) if columns else 0
        with self._conn.cursor() as cur:
            set_json_dumps(_wire.as_is, context=cur)  # json arrives as JSON text: send it untouched
            fields = _binary_rows.encode(columns, cur)
            values = None if fields is not None else [_wire.python_values(c, self._row_error) for c in columns]
            with cur.copy(copy_sql or self._copy_in_sql()) as copy:
                if fields is not None:
                    for chunk in _binary_rows.chunks(fields, num_rows):
                        copy.write(chunk)
                    return
                copy.set_types(copy_types)
                write_row = copy.write_row
                row_no = 0
                try:
                    # row_no is read by the error message below
                    for row_no, row in enumerate(zip(*values or [], strict=True)):  # noqa: B007
                        write_row(row)
                except (ValueError, TypeError, OverflowError, psycopg.DataError) as exc:
                    raise self._row_error(row_no, f"{type(exc).__name__}: {exc}") from exc

    def _row_error(self, index: int, what: str) -> DataError:
        return DataError(f"cannot write row {index + 1} of the batch into {self._table}: {what}")

    def write_binary(self, chunks: Iterator[bytes]) -> int:
        self._staged = self._method == "merge"
        if self._staged:
            self._guard(self._make_stage)
        return int(self._guard(self._copy_binary, chunks))

    def _copy_binary(self, chunks: Iterator[bytes]) -> int:
        with self._conn.cursor() as cur:
            with cur.copy(self._copy_in_sql()) as copy:
                for chunk in chunks:
                    copy.write(chunk)
            return cur.rowcount

    def _copy_in_sql(self) -> str:
        into = self._into or (STAGE if self._method == "merge" else self._target)
        return f"COPY {into} ({self._cols_sql}) FROM STDIN (FORMAT binary)"

    def _wires_for(self, schema: pa.Schema) -> list[_wire.Wire]:
        from copyjob.connectors.postgres import _wire

        found = self._wires.get(schema)
        if found is None:
            found = [_wire.plan(c, f.type) for c, f in zip(self._columns, schema, strict=True)]
            self._wires[schema] = found
        return found

    # ------------------------------------------------------------ step 2b: deletes and column updates by key

    def delete_keys(self, keys: pa.RecordBatch) -> int:
        """Delete the target rows whose key equals a row of ``keys`` (the key columns only), now, inside the
        transaction; in a merge session also the rows of those keys staged so far, so that a later ``write`` of
        a key wins and an earlier one loses (effects in call order, see connectors/_keys.py). Returns the target
        rows deleted. The keys are binary-COPied into a temporary table and joined: ``DELETE … USING``."""
        from copyjob.connectors._keys import check_delete_batch

        key = self._match_key()
        check_delete_batch(keys, key, self._table)
        if keys.num_rows == 0:
            return 0
        return int(self._guard(self._delete_keys, keys, key))

    def _delete_keys(self, keys: pa.RecordBatch, key: tuple[str, ...]) -> int:
        temp = self._stage_columns(keys, key)
        match = " AND ".join(f"t.{quote_double(k)} = k.{quote_double(k)}" for k in key)  # NULL matches nothing
        if self._stage_made:
            self._conn.execute(f"DELETE FROM {STAGE} AS t USING {temp} AS k WHERE {match}")
        deleted = self._conn.execute(f"DELETE FROM {self._target} AS t USING {temp} AS k WHERE {match}").rowcount
        self._conn.execute(f"DROP TABLE {temp}")
        return deleted

    def update_columns(self, rows: pa.RecordBatch) -> int:
        """Set the non-key columns of ``rows`` on the target rows with the same key (other columns untouched;
        keys not in the table are ignored; the last row of a key in ``rows`` wins), now, inside the
        transaction; in a merge session also on the rows of those keys staged so far (the update applies on
        top of the staged row). Returns the target rows updated (including rows this load wrote straight
        into the table, see _direct.py). Staged through a temporary table:
        ``UPDATE … FROM``."""
        from copyjob.connectors._keys import update_targets

        key = self._match_key()
        others = update_targets(rows, key, (c.name for c in self._columns), self._table)
        if rows.num_rows == 0:
            return 0
        return int(self._guard(self._update_columns, rows, key, others))

    def _update_columns(self, rows: pa.RecordBatch, key: tuple[str, ...], others: list[str]) -> int:
        from copyjob.connectors._keys import last_per_key

        unique = last_per_key(rows, key).combine_chunks()
        batch = unique.to_batches()[0] if unique.num_rows else rows.slice(0, 0)
        temp = self._stage_columns(batch, (*key, *others))
        match = " AND ".join(f"t.{quote_double(k)} = u.{quote_double(k)}" for k in key)
        if not others:  # nothing to set: the rows that would have been updated
            found = self._conn.execute(f"SELECT count(*) FROM {self._target} AS t "
                                       f"WHERE EXISTS (SELECT FROM {temp} AS u WHERE {match})").fetchone()
            updated = int(found[0]) if found else 0
        else:
            sets = ", ".join(f"{quote_double(c)} = u.{quote_double(c)}" for c in others)
            if self._stage_made:
                self._conn.execute(f"UPDATE {STAGE} AS t SET {sets} FROM {temp} AS u WHERE {match}")
            updated = self._conn.execute(f"UPDATE {self._target} AS t SET {sets} FROM {temp} AS u "
                                         f"WHERE {match}").rowcount
        self._conn.execute(f"DROP TABLE {temp}")
        return updated

    def _match_key(self) -> tuple[str, ...]:
        """The columns delete_keys/update_columns match on: the load's key, else its deferred key, else the
        table's primary key; ConfigurationError when there is none."""
        if not (self._key or self._deferred_key) and self._primary_key is None:
            found = self._guard(_catalog.reflect_native, self._conn, self._table)
            self._primary_key = found[1] if found else ()
        from copyjob.connectors._keys import match_key

        key = match_key(self._table, self._key, self._deferred_key, self._primary_key or ())
        loaded = {c.name for c in self._columns}
        unknown = [k for k in key if k not in loaded]
        if unknown:
            raise ConfigurationError(f"key column(s) {unknown} of {self._table} are not among the columns loaded")
        return key

    def _stage_columns(self, batch: pa.RecordBatch, names: Sequence[str]) -> str:
        """COPY the columns ``names`` of ``batch`` into a new temporary table with the target's types for them
        (values bound by binary COPY, as ``write`` does); returns the table's name."""
        temp = f'pg_temp.{quote_double(f"_copyjob_rows_{uuid.uuid4().hex[:12]}")}'
        cols_sql = column_list(names)
        self._conn.execute(f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS "
                           f"SELECT {cols_sql} FROM {self._target} WITH NO DATA")
        by_name = {c.name: c for c in self._columns}
        columns = [by_name[n] for n in names]
        arrays = [batch.column(n) for n in names]
        from copyjob.connectors.postgres import _wire

        wires = [_wire.plan(c, a.type) for c, a in zip(columns, arrays, strict=True)]
        values = [self._planned(c, a, w) for c, a, w in zip(columns, arrays, wires, strict=True)]
        self._copy_rows([w.copy_type for w in wires], values, f"COPY {temp} ({cols_sql}) FROM STDIN (FORMAT binary)")
        self._conn.execute(f"ANALYZE {temp}")  # temp tables are never auto-analysed; the join needs stats
        return temp

    # ------------------------------------------------------------ step 3

    def commit(self, marker: StateMarker | None) -> None:
        """1. merge the staged rows; 2. add the deferred primary key; 3. upsert the marker; 4. COMMIT."""
        if marker is not None:
            self._guard(self._ensure_state_table)
        self._guard(self._finish, marker)
        self._close(reusable=True)

    def _finish(self, marker: StateMarker | None) -> None:
        if self._staged:
            self._apply_merge()
        if self._deferred_key:
            self._conn.execute(f"ALTER TABLE {self._target} ADD PRIMARY KEY ({column_list(self._deferred_key)})")
        if marker is not None:
            self._conn.execute(_UPSERT_MARKER, (marker.job, marker.table, marker.run_id, json.dumps(marker.state)))
        self._conn.commit()

    def _apply_merge(self) -> None:
        """Delete the target rows whose key was loaded, then insert the last staged row per key: needs no
        unique constraint on the target, and the last write of a key within the load wins."""
        keys = column_list(self._key)
        match = " AND ".join(f"t.{quote_double(k)} = s.{quote_double(k)}" for k in self._key)
        self._conn.execute(f"ANALYZE {STAGE}")  # temp tables are never auto-analysed; the join needs stats
        self._conn.execute(f"DELETE FROM {self._target} AS t USING {STAGE} AS s WHERE {match}")
        self._conn.execute(f"INSERT INTO {self._target} ({self._cols_sql}) "
                           f"SELECT DISTINCT ON ({keys}) {self._cols_sql} FROM {STAGE} "
                           f"ORDER BY {keys}, {SEQ} DESC")

    def abort(self) -> None:
        if not self._open:
            return
        try:
            self._conn.rollback()
        except psycopg.Error:
            pass  # the connection is gone: the server rolls back on its own
        finally:
            self._close()

    # ------------------------------------------------------------ plumbing

    def _guard(self, step: Callable[..., Any], *args: Any) -> Any:
        """Run one step; on failure roll back and close (the transaction is lost anyway) and translate."""
        if not self._open:
            raise ConnectorError(f"the load into {self._table} is already committed or aborted")
        try:
            return step(*args)
        except psycopg.errors.UniqueViolation as exc:
            self.abort()
            if self._method == "append":
                raise duplicate_key_error(self._table, f"PostgreSQL: {_text(exc)}") from exc
            raise translate(exc, self._url, self._table) from exc
        except (psycopg.Error, ValueError, TypeError, OverflowError) as exc:
            self.abort()
            raise translate(exc, self._url, self._table) from exc
        except BaseException:
            self.abort()
            raise

    def _close(self, reusable: bool = False) -> None:
        """Hand a cleanly committed connection back for the next load (saves a connect and authentication
        per table); close it otherwise."""
        self._open = False
        idle = self._conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if reusable and idle and self._release is not None:
            self._release(self._conn)
        else:
            self._conn.close()
