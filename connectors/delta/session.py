"""One load into a Delta table, committed as ONE Delta commit together with its state marker.

The session buffers the load: ``write`` keeps the rows (:class:`.spool.Spool`: in memory while few, then in a
temporary file, streamed into the commit; a merge holds them in memory to keep the last row per key), and
``delete_keys`` / ``update_columns`` take effect at once on the rows written before them (connectors/_keys.py's
order of effects) and are remembered for the table's own rows. ``commit`` then makes one commit:

1. a deferred primary key is recorded (a table property: Delta has no constraint to build);
2. overwrite and truncate: ``mode=overwrite`` with the load's rows (the last row per key under merge);
   an append with no deletes or updates: ``mode=append``;
   otherwise one MERGE whose source holds, per row, an operation: ``u`` upsert (merge's rows, the last per
   key), ``i`` insert (append's rows, which never match), ``d`` delete and ``p`` partial update of the table's
   rows (the net effect per key of the remembered calls in call order; ``p`` sets only the columns flagged);
3. the commit carries the marker (:mod:`.markers`), so data and marker land together or not at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
from copyjob.connectors._key_ops import KeyOp, apply_ops, hits
from copyjob.connectors._keys import check_delete_batch, last_per_key, match_key, update_targets, without_null_keys
from copyjob.connectors.delta.errors import deltalake, translated
from copyjob.connectors.delta.markers import commit_properties
from copyjob.connectors.delta.spool import Spool
from copyjob.connectors.delta.types import check_storable, from_storage, storage_schema, to_storage
from copyjob.connectors.parquet import _conform, _without_keys

from copyjob.core.contracts import StateMarker, UpdateMethod
from copyjob.core.errors import ConfigurationError, DataError
from copyjob.core.schema import TableSchema

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from copyjob.connectors.delta.destination import DeltaDestination

OP = "__copyjob_op"
SET = "__copyjob_set_"


def quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class DeltaLoadSession:
    def __init__(self, dest: DeltaDestination, schema: TableSchema, current: TableSchema, method: UpdateMethod,
                 key: tuple[str, ...], replace_all: bool, deferred_key: tuple[str, ...]) -> None:
        self._dest, self._schema, self._current, self._method = dest, schema, current, method
        self._key, self._replace_all, self._deferred_key = key, replace_all, deferred_key
        self._table = dest.table(schema.table)
        self._arrow_schema = schema.arrow_schema()
        self._rows = Spool(self._arrow_schema)
        self._table_ops: list[KeyOp] = []  # deletes/updates of the table's own rows, in call order
        self._done = False

    # ------------------------------------------------------------ writes

    def write(self, batch: pa.RecordBatch) -> int:
        self._check_open()
        batch = _conform(batch, self._arrow_schema, table=self._schema.table)
        check_storable(batch, self._schema.table)
        if batch.num_rows:
            self._rows.add(batch)
        return int(batch.num_rows)

    def write_binary(self, chunks: Iterator[bytes]) -> int:
        raise ConfigurationError("a Delta table does not accept a PostgreSQL binary COPY stream")

    def delete_keys(self, keys: pa.RecordBatch) -> int:
        key = self._match_key()
        check_delete_batch(keys, key, self._schema.table)
        rows = self._op_rows(pa.Table.from_batches([keys]), key, key)
        return self._remember(KeyOp("delete", key, rows, (), 0)) if rows.num_rows else 0

    def update_columns(self, rows: pa.RecordBatch) -> int:
        key = self._match_key()
        others = update_targets(rows, key, self._schema.column_names, self._schema.table)
        table = self._op_rows(pa.Table.from_batches([rows]), key, (*key, *others))
        if not table.num_rows:
            return 0
        for name in others:
            if not self._arrow_schema.field(name).nullable and table[name].null_count:
                raise DataError(f"Delta table {self._schema.table}: column {name!r} is NOT NULL but the rows to "
                                "update hold NULLs", table=self._schema.table)
        return self._remember(KeyOp("update", key, table, tuple(others), 0))

    def _remember(self, op: KeyOp) -> int:
        """Apply ``op`` to the rows written so far and remember it for the table's rows; the count is of the
        table's rows as they stand now (and the rows this load added, except merge's, which are staged)."""
        found = self._table_hits(op)
        if self._rows:
            loaded = self._rows.table()
            if self._method != "merge":
                found += hits(loaded, op)
            changed, _ = apply_ops(loaded, [op], None)
            self._rows.replace(changed)
        if not self._replace_all:
            self._table_ops.append(op)
        return found

    def _table_hits(self, op: KeyOp) -> int:
        """How many of the table's rows (as this load leaves them so far) have a key of ``op``."""
        if self._replace_all or self._table is None:
            return 0
        key = list(op.key)
        found = from_storage(self._read_columns(key), self._current.select(key))
        deletes = [o for o in self._table_ops if o.kind == "delete"]
        found, _ = apply_ops(found, deletes, None)
        return hits(found, op)

    def _read_columns(self, names: Sequence[str]) -> pa.Table:
        """The table's columns ``names`` at the version this load started from, read with delta-rs's own query
        engine (its pyarrow dataset parses file statistics with Python dates, which fails on BC dates)."""
        lake = deltalake()
        query = "SELECT " + ", ".join('"' + n.replace('"', '""') + '"' for n in names) + " FROM t"
        return translated(lambda: pa.table(lake.QueryBuilder().register("t", self._table).execute(query).read_all()),
                          self._schema.table)

    def _match_key(self) -> tuple[str, ...]:
        self._check_open()
        return self._key_columns()

    def _key_columns(self) -> tuple[str, ...]:
        """The load's key, else its deferred key, else the table's primary key."""
        key = match_key(self._schema.table, self._key, self._deferred_key, self._current.primary_key)
        unknown = [k for k in key if self._schema.column(k) is None]
        if unknown:
            raise ConfigurationError(f"key column(s) {unknown} of {self._schema.table} are not among the columns "
                                     "loaded")
        return key

    def _op_rows(self, table: pa.Table, key: Sequence[str], names: Sequence[str]) -> pa.Table:
        """The columns ``names`` in the load's types, without NULL keys, the last row of each key only."""
        schema = pa.schema([self._arrow_schema.field(n).with_nullable(True) for n in names])
        try:
            columns = [table[n].cast(schema.field(n).type) for n in names]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"Delta table {self._schema.table}: {exc}", table=self._schema.table) from exc
        return last_per_key(without_null_keys(pa.Table.from_arrays(columns, schema=schema), key), key)

    def _check_open(self) -> None:
        if self._done:
            raise ConfigurationError("this load was already committed or aborted")

    # ------------------------------------------------------------ commit

    def commit(self, marker: StateMarker | None) -> None:
        """The one commit of the module docstring's steps."""
        self._check_open()
        self._done = True
        table = self._schema.table
        try:
            if self._deferred_key:
                self._dest.set_primary_key(table, self._deferred_key)
                translated(self._table.update_incremental, table)  # the commit builds on that version
            props = commit_properties(self._table, marker)
            translated(lambda: self._commit(props), table)  # Arrow casts too: a DataError naming the table
        finally:
            self._rows.discard()
            self._table_ops = []

    def _commit(self, props: Any) -> None:
        if self._replace_all and self._method == "merge":
            self._write("overwrite", self._stored([last_per_key(self._rows.table(), self._key)]), props)
        elif self._replace_all or (self._method == "append" and not self._table_ops):
            self._write("overwrite" if self._replace_all else "append", self._stored(self._rows.batches()), props)
        else:
            self._merge(self._rows.table(), props)

    def abort(self) -> None:
        """Forget the load: nothing was written to the table before ``commit``."""
        self._rows.discard()
        self._table_ops = []
        self._done = True

    def _stored(self, parts: Iterable[pa.RecordBatch | pa.Table]) -> pa.RecordBatchReader:
        """The load's rows as a stream in the table's storage schema (full width)."""
        schema = storage_schema(self._current)

        def batches() -> Iterator[pa.RecordBatch]:
            for part in parts:
                table = part if isinstance(part, pa.Table) else pa.Table.from_batches([part])
                yield from self._full_width(table).to_batches()

        return pa.RecordBatchReader.from_batches(schema, batches())

    def _full_width(self, rows: pa.Table) -> pa.Table:
        """The rows in the table's storage schema; columns the load does not write are NULL."""
        schema = storage_schema(self._current)
        present = [f.name for f in schema if f.name in rows.column_names]
        stored = to_storage(rows.select(present), pa.schema([schema.field(n) for n in present]))
        arrays = []
        for f in schema:
            if f.name in present:
                arrays.append(stored[f.name])
            elif not f.nullable and rows.num_rows:
                raise DataError(f"Delta table {self._schema.table}: the load has no value for the NOT NULL column "
                                f"{f.name!r}", table=self._schema.table)
            else:
                arrays.append(pa.nulls(rows.num_rows, f.type))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _write(self, mode: str, data: pa.RecordBatchReader, props: Any) -> None:
        translated(lambda: deltalake().write_deltalake(self._table, data, mode=mode, commit_properties=props),
                   self._schema.table)

    def _merge(self, rows: pa.Table, props: Any) -> None:
        key = self._key_columns()
        if self._method == "merge":
            rows = last_per_key(rows, key)
        effects, set_columns = self._net_effects(key)
        if self._method == "merge" and rows.num_rows and effects.num_rows:  # a row written last replaces it all
            effects = _without_keys(effects.combine_chunks().to_batches()[0], rows.select(list(key)), key)
        source = self._source(rows, "u" if self._method == "merge" else "i", effects, set_columns)
        if source.num_rows == 0:
            self._write("append", self._stored([rows]), props)  # still one commit: the marker
            return
        s, t = "s.", "t."
        predicate = " AND ".join(f"{t}{quoted(k)} = {s}{quoted(k)}" for k in key)
        if self._method != "merge" and rows.num_rows:
            # appended rows must never match; only a plain key equality lets delta-rs skip the files the
            # source's key range cannot touch, so the condition is added only when there are such rows
            predicate += f" AND {s}{OP} <> 'i'"
        columns = self._schema.column_names
        merger = translated(lambda: self._table.merge(source, predicate, source_alias="s", target_alias="t",
                                                      commit_properties=props), self._schema.table)
        merger = merger.when_matched_delete(f"{s}{OP} = 'd'")
        if set_columns:
            merger = merger.when_matched_update(
                {quoted(c): f"CASE WHEN {s}{quoted(SET + str(i))} THEN {s}{quoted(c)} ELSE {t}{quoted(c)} END"
                 for i, c in enumerate(set_columns)}, f"{s}{OP} = 'p'")
        every = {quoted(c): f"{s}{quoted(c)}" for c in columns}
        merger = merger.when_matched_update(every, f"{s}{OP} = 'u'")
        merger = merger.when_not_matched_insert(every, f"{s}{OP} IN ('u', 'i')")
        translated(merger.execute, self._schema.table)

    def _net_effects(self, key: tuple[str, ...]) -> tuple[pa.Table, list[str]]:
        """Per key, what the remembered calls do to the table's rows, folded in call order: ``d`` (deleted;
        a later update finds nothing) or ``p`` with the columns set (a later update of a column wins)."""
        state: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
        for op in self._table_ops:
            for row in op.rows.to_pylist():
                k = tuple(row[c] for c in key)
                before = state.get(k)
                if op.kind == "delete":
                    state[k] = ("d", {})
                elif before is None:
                    state[k] = ("p", {c: row[c] for c in op.columns})
                elif before[0] == "p":
                    before[1].update({c: row[c] for c in op.columns})
        set_columns = [c for c in self._schema.column_names if c not in key
                       and any(c in values for _, values in state.values())]
        fields = [self._arrow_schema.field(c).with_nullable(True) for c in (*key, *set_columns)]
        records = []
        for k, (kind, values) in state.items():
            record: dict[str, Any] = dict(zip(key, k, strict=True))
            record.update({c: values.get(c) for c in set_columns})
            record[OP] = kind
            record.update({SET + str(i): c in values for i, c in enumerate(set_columns)})
            records.append(record)
        schema = pa.schema([*fields, pa.field(OP, pa.string()),
                            *(pa.field(SET + str(i), pa.bool_()) for i in range(len(set_columns)))])
        return pa.Table.from_pylist(records, schema=schema), set_columns

    def _source(self, rows: pa.Table, kind: str, effects: pa.Table, set_columns: list[str]) -> pa.Table:
        """The MERGE's source: the load's rows (op ``kind``) then the effects, every column in its storage type
        (nullable: a delete has only its key), one op column and one flag per partially updated column."""
        storage = pa.schema([f.with_nullable(True) for f in storage_schema(self._current)
                             if f.name in self._schema.column_names])
        flags = [pa.field(SET + str(i), pa.bool_()) for i in range(len(set_columns))]
        schema = pa.schema([*storage, pa.field(OP, pa.string()), *flags])

        def shaped(part: pa.Table, op: pa.Array) -> pa.Table:
            arrays = []
            for f in storage:
                arrays.append(to_storage(part.select([f.name]), pa.schema([f]))[f.name] if f.name in
                              part.column_names else pa.nulls(part.num_rows, f.type))
            arrays.append(op)
            for f in flags:
                arrays.append(part[f.name] if f.name in part.column_names else pa.repeat(False, part.num_rows))
            return pa.Table.from_arrays(arrays, schema=schema)

        parts = [shaped(rows, pa.repeat(pa.scalar(kind, pa.string()), rows.num_rows))]
        if effects.num_rows:
            parts.append(shaped(effects, effects[OP].combine_chunks()))
        return pa.concat_tables(parts)
