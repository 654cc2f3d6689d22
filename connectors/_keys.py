"""What every destination's ``LoadSession.delete_keys`` / ``update_columns`` share: which key a session matches
rows on, checking a batch's columns against it, and the last row of each key.

Order of effects (the same for every destination): each call takes effect on the table as it stands in the
load at that moment, in call order, as if applied immediately:

- ``delete_keys`` removes the target rows with those keys and, in a merge session, the rows of those keys
  staged by earlier ``write`` calls; a ``write`` of the key after the delete stages it again and wins at commit.
- ``update_columns`` changes the given columns of the target rows with those keys and, in a merge session, of
  the rows of those keys staged by earlier ``write`` calls (the update applies on top of the staged row); a
  ``write`` after the update replaces the whole row at commit.
- Both return the number of rows of the table deleted/updated; rows merely staged by ``write`` in a merge
  session are counted by ``write``, not again here. Keys holding a NULL match nothing; keys not in the table
  are ignored. Within one ``update_columns`` batch the last row of a key wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from copyjob.core.errors import ConfigurationError
from copyjob.core.schema import TableName


def match_key(table: TableName | str, *candidates: Sequence[str]) -> tuple[str, ...]:
    """The first non-empty candidate key (the load's key, its deferred key, the table's primary key)."""
    for candidate in candidates:
        if candidate:
            return tuple(candidate)
    raise ConfigurationError(f"deleting or updating rows of {table} by key needs a key: name one for the load "
                             "or give the table a primary key")


def check_delete_batch(batch: pa.RecordBatch | pa.Table, key: Sequence[str], table: TableName | str) -> None:
    """A ``delete_keys`` batch holds exactly the key columns (in any order)."""
    names = list(batch.schema.names)
    if sorted(names) != sorted(key) or len(set(names)) != len(names):
        raise ConfigurationError(f"the keys to delete from {table} have columns {names}, expected the key "
                                 f"columns {list(key)}")


def update_targets(batch: pa.RecordBatch | pa.Table, key: Sequence[str], known: Iterable[str],
                   table: TableName | str) -> list[str]:
    """The non-key columns an ``update_columns`` batch sets (batch order); its key columns must all be there."""
    names = list(batch.schema.names)
    missing = [k for k in key if k not in names]
    if missing:
        raise ConfigurationError(f"the rows to update in {table} lack the key column(s) {missing}")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"the rows to update in {table} repeat a column: {names}")
    known_names = set(known)
    unknown = [n for n in names if n not in known_names]
    if unknown:
        raise ConfigurationError(f"the rows to update in {table} have column(s) {unknown} that the load does not "
                                 "write")
    return [n for n in names if n not in key]


def last_per_key(batch: pa.RecordBatch | pa.Table, key: Sequence[str]) -> pa.Table:
    """The last row of each key, in the order of those last rows (a later row replaces an earlier one)."""
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    if table.num_rows <= 1:
        return table
    position = "__copyjob_position"
    numbered = table.append_column(position, pa.array(range(table.num_rows), pa.int64()))
    last = numbered.group_by(list(key), use_threads=False).aggregate([(position, "max")])
    if last.num_rows == table.num_rows:
        return table
    positions = last[f"{position}_max"].combine_chunks()
    return table.take(positions.take(pc.sort_indices(positions)))


def without_null_keys(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """The rows whose key columns are all non-NULL (a NULL key matches nothing)."""
    mask = None
    for k in key:
        valid = pc.is_valid(table[k])
        mask = valid if mask is None else pc.and_(mask, valid)
    return table if mask is None else table.filter(mask)

