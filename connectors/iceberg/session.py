"""One load into an Iceberg table, committed as one catalog commit together with the state marker.

A load holds its rows in memory (Arrow) until ``commit``, which builds one pyiceberg transaction:

- append: the rows are appended;
- overwrite / truncate: the table's rows are replaced (``Transaction.overwrite``: delete all, then append);
- merge, and any load that called ``delete_keys`` / ``update_columns``: the rows whose key may be touched (a
  filter on the key columns' values) are read, the remembered calls and the merge rows are applied to them in
  Arrow, and the transaction deletes those rows by the same filter and appends their new state plus the load's
  rows (copy-on-write: the files holding them are rewritten).

Every snapshot of the transaction carries the marker in its summary (:mod:`.markers`), and the catalog swaps
the table's metadata pointer once: data and marker land together or not at all.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from copyjob.connectors._key_ops import KeyOp, apply_ops, hits, without_keys
from copyjob.connectors._keys import check_delete_batch, last_per_key, match_key, update_targets, without_null_keys
from copyjob.connectors.iceberg.markers import with_marker
from copyjob.connectors.iceberg.types import (
    METRICS_PROPERTY,
    beyond_python,
    columns_of,
    to_logical_arrow,
    to_table_arrow,
)

from copyjob.core.contracts import StateMarker, UpdateMethod
from copyjob.core.errors import ConfigurationError, DataError
from copyjob.core.schema import Column, TableName, TableSchema

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table, Transaction

PRIMARY_KEY_PROPERTY = "copyjob.primary-key"
MAX_IN_VALUES = 1000
"""Above this many keys, the rows a load touches are found by the keys' range rather than by their values:
pyiceberg evaluates a long IN list slowly."""
_FILTERABLE = ("int16", "int32", "int64", "string", "date", "decimal", "timestamp", "timestamptz", "bool")


def key_filter(rows: pa.Table, key: Sequence[str], columns: Sequence[Column]) -> BooleanExpression:
    """A filter that matches at least every row whose key is among ``rows``' (NULL-free) keys: each key column
    of a type Iceberg filters on must be among its values (or within their range, for many); other key columns
    are not filtered on. The caller reads the rows the filter matches, decides in Arrow which are hit, and
    deletes and re-appends exactly the rows the filter matches."""
    import pyiceberg.expressions

    ex: Any = pyiceberg.expressions  # its constructors' signatures are pydantic's, which mypy misreads

    kinds = {c.name: c.type for c in columns}
    expression: BooleanExpression = ex.AlwaysTrue()
    for k in key:
        t = kinds.get(k)
        if t is None or t.kind not in _FILTERABLE or (t.kind == "decimal" and (t.precision or 99) > 38):
            continue
        column = rows[k].combine_chunks()
        try:
            if len(column) > MAX_IN_VALUES:  # a range: cheap to evaluate; the rows in between are rewritten unchanged
                bounds = pc.min_max(column)
                term = ex.And(ex.GreaterThanOrEqual(k, bounds["min"].as_py()),
                              ex.LessThanOrEqual(k, bounds["max"].as_py()))
            else:
                term = ex.In(k, set(pc.unique(column).to_pylist()))
        except (TypeError, ValueError, OverflowError):  # no Python value (infinity, BC): not filtered on
            continue
        expression = term if isinstance(expression, ex.AlwaysTrue) else ex.And(expression, term)
    return expression


class IcebergLoadSession:
    def __init__(self, table: Table, schema: TableSchema, method: UpdateMethod, key: tuple[str, ...],
                 replace_all: bool, deferred_key: tuple[str, ...], table_key: tuple[str, ...],
                 before_commit: Callable[[StateMarker], None]) -> None:
        self._table, self._schema, self._method, self._key = table, schema, method, key
        self._before_commit = before_commit
        self._replace_all, self._deferred_key, self._table_key = replace_all, deferred_key, table_key
        self._arrow_schema = schema.arrow_schema()
        self._staged: list[pa.Table] = []
        self._written = 0
        self._ops: list[KeyOp] = []
        self._done = False

    @property
    def name(self) -> TableName:
        return self._schema.table

    def write(self, batch: pa.RecordBatch) -> int:
        self._check_open()
        data = pa.Table.from_batches([batch])
        arrays = []
        for f in self._arrow_schema:
            if f.name not in data.column_names:
                raise DataError(f"Iceberg table {self.name}: the batch has no column {f.name!r}")
            column = data[f.name]
            if not f.nullable and column.null_count:
                row = column.combine_chunks().is_null().to_pylist().index(True) + 1
                raise DataError(f"Iceberg table {self.name}: column {f.name!r} is NOT NULL but row {row} of the "
                                "batch holds NULL")
            try:
                arrays.append(column if column.type == f.type else column.cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(f"Iceberg table {self.name}: column {f.name!r}: {exc}") from exc
        for k in self._key if self._method == "merge" else ():
            if data[k].null_count:
                raise DataError(f"Iceberg table {self.name}: the key column {k!r} holds NULL")
        self._staged.append(pa.Table.from_arrays(arrays, schema=self._arrow_schema))
        self._written += batch.num_rows
        return int(batch.num_rows)

    def write_binary(self, chunks: Iterator[bytes]) -> int:
        raise ConfigurationError("Iceberg does not accept a PostgreSQL binary COPY stream")

    # ------------------------------------------------------------ deletes and column updates by key

    def delete_keys(self, keys: pa.RecordBatch) -> int:
        """Remember to delete the rows with these keys; returns the rows of the table it deletes."""
        key = self._match_key()
        check_delete_batch(keys, key, self.name)
        rows = self._op_rows(pa.Table.from_batches([keys]), key, key)
        if rows.num_rows == 0:
            return 0
        op = KeyOp("delete", key, rows, (), self._written)
        found = self._matches_now(op)
        self._ops.append(op)
        return found

    def update_columns(self, rows: pa.RecordBatch) -> int:
        """Remember to set the non-key columns of ``rows`` on the rows with their keys; returns the rows of the
        table it updates."""
        key = self._match_key()
        others = update_targets(rows, key, self._schema.column_names, self.name)
        table = self._op_rows(pa.Table.from_batches([rows]), key, (*key, *others))
        if table.num_rows == 0:
            return 0
        for name in others:
            if not self._arrow_schema.field(name).nullable and table[name].null_count:
                raise DataError(f"Iceberg table {self.name}: column {name!r} is NOT NULL but the rows to update hold "
                                "NULLs")
        op = KeyOp("update", key, table, tuple(others), self._written)
        found = self._matches_now(op)
        self._ops.append(op)
        return found

    def _check_open(self) -> None:
        if self._done:
            raise ConfigurationError("this load was already committed or aborted")

    def _match_key(self) -> tuple[str, ...]:
        self._check_open()
        key = match_key(self.name, self._key, self._deferred_key, self._table_key)
        unknown = [k for k in key if self._schema.column(k) is None]
        if unknown:
            raise ConfigurationError(f"key column(s) {unknown} of {self.name} are not among the columns loaded")
        return key

    def _op_rows(self, table: pa.Table, key: Sequence[str], names: Sequence[str]) -> pa.Table:
        schema = pa.schema([self._arrow_schema.field(n).with_nullable(True) for n in names])
        try:
            columns = [table[n].cast(schema.field(n).type) for n in names]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"Iceberg table {self.name}: {exc}") from exc
        return last_per_key(without_null_keys(pa.Table.from_arrays(columns, schema=schema), key), key)

    def _matches_now(self, op: KeyOp) -> int:
        """Rows of the table as it stands in the load now with a key of ``op``: the committed rows (unless the
        load replaces them) and, except in a merge (whose rows are staged), the rows written so far; earlier
        deletes taken into account (updates never change keys)."""
        deletes = [o for o in self._ops if o.kind == "delete"]
        found = 0
        if not self._replace_all:
            old, _ = self._read_old(op.rows, op.key, list(op.key))
            kept, _ = apply_ops(old, deletes, None)
            found += hits(kept, op)
        if self._method != "merge" and self._staged:
            staged = pa.concat_tables(self._staged).select(list(op.key))
            kept, _ = apply_ops(staged, deletes, pa.array(range(staged.num_rows), pa.int64()))
            found += hits(kept, op)
        return found

    def _read_old(self, keys: pa.Table, key: Sequence[str],
                  names: Sequence[str] | None = None) -> tuple[pa.Table, BooleanExpression]:
        """The committed rows that the key filter of ``keys`` matches (a superset of the rows with those keys),
        as logical Arrow, and the filter."""
        columns = columns_of(self._table.schema())
        expression = key_filter(keys, key, columns)
        if self._table.current_snapshot() is None:
            wanted = [c for c in columns if names is None or c.name in names]
            return to_logical_arrow(pa.table({}), wanted), expression
        selected = ("*",) if names is None else tuple(names)
        scanned = self._table.scan(row_filter=expression, selected_fields=selected).to_arrow()
        wanted = [c for c in columns if names is None or c.name in names]
        return to_logical_arrow(scanned, wanted), expression

    # ------------------------------------------------------------ commit

    def commit(self, marker: StateMarker | None) -> None:
        """1. the load's rows, with the remembered calls applied (each to the rows written before it) and, for
        merge, the last row of each key; 2. the committed rows those touch, read and changed in Arrow; 3. one
        transaction: the deferred key, then delete + append (or overwrite, or append) with the marker in every
        snapshot's summary; 4. the catalog commit."""
        self._check_open()
        try:
            self._commit(marker)
        finally:
            self._done = True
            self._staged, self._ops = [], []

    def _commit(self, marker: StateMarker | None) -> None:
        target = self._table.schema().as_arrow()
        missing = [n for n in self._schema.column_names if n not in target.names]
        if missing:  # never drop a value silently: add_columns first (schema evolution)
            raise ConfigurationError(f"Iceberg table {self.name} has no column(s) {', '.join(missing)}: add them "
                                     "before loading them")
        loaded = pa.concat_tables(self._staged) if self._staged else self._arrow_schema.empty_table()
        if self._ops:
            loaded, _ = apply_ops(loaded, self._ops, pa.array(range(loaded.num_rows), pa.int64()))
        if self._method == "merge":
            loaded = last_per_key(loaded, self._key)
        touched = self._touched_keys(loaded)
        if marker is not None:
            self._before_commit(marker)
        props = with_marker(self._table, marker)
        txn: Transaction = self._table.transaction()
        if self._deferred_key:
            txn.set_properties({PRIMARY_KEY_PROPERTY: json.dumps(list(self._deferred_key))})
        expression = None
        if self._replace_all or touched is None or self._table.current_snapshot() is None:
            new = to_table_arrow(loaded, target, self.name)
        else:
            keys, key = touched
            old, expression = self._read_old(keys, key)
            old, _ = apply_ops(old, self._ops, None)
            if self._method == "merge":
                old = without_keys(old, loaded.select(list(self._key)), self._key)
            new = pa.concat_tables([to_table_arrow(old, target, self.name), to_table_arrow(loaded, target, self.name)])
        counts_only = {METRICS_PROPERTY + n: "counts" for n in beyond_python(new)
                       if self._table.properties.get(METRICS_PROPERTY + n) != "counts"}
        if counts_only:
            txn.set_properties(counts_only)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "delete did not match any records": fine
            if self._replace_all:
                txn.overwrite(new, snapshot_properties=props)
            else:
                if expression is not None:
                    txn.delete(expression, snapshot_properties=props)
                txn.append(new, snapshot_properties=props)
        txn.commit_transaction()

    def _touched_keys(self, loaded: pa.Table) -> tuple[pa.Table, tuple[str, ...]] | None:
        """The keys whose committed rows this load changes (the merge rows' and the remembered calls'; one key
        for all: the load's, else its deferred key, else the table's); None when it changes none."""
        parts: list[pa.Table] = [op.rows.select(list(op.key)) for op in self._ops]
        if self._method == "merge" and loaded.num_rows:
            parts.append(loaded.select(list(self._key)))
        if not parts:
            return None
        key = self._ops[0].key if self._ops else self._key
        return pa.concat_tables([p.cast(parts[0].schema) for p in parts]), key

    def abort(self) -> None:
        """Forget the load: nothing was written to the table."""
        self._staged, self._ops = [], []
        self._done = True

