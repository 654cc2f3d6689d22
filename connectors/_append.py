"""Tables created for append, which keeps every row it is given (history): no primary key, so a key can be
there many times, but an ordinary (non-unique) index on the key columns so that finding a key's rows stays
cheap. And the error when a table that does have a unique key refuses an appended row (no pyarrow here: the
PostgreSQL pass-through path imports it)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from copyjob.core.errors import DataError
from copyjob.core.schema import TableName

MAX_INDEX_NAME = 60
"""Within PostgreSQL's 63 and MySQL's 64 characters."""


def key_index_name(table: TableName) -> str:
    """The key index's name: the table's name and ``_copyjob_key``, shortened with a hash when too long (index
    names share one namespace per schema in PostgreSQL, SQLite and DuckDB)."""
    name = f"{table.name}_copyjob_key"
    if len(name) <= MAX_INDEX_NAME:
        return name
    digest = hashlib.sha256(table.name.encode()).hexdigest()[:10]
    return f"{table.name[:MAX_INDEX_NAME - 24]}_{digest}_copyjob_key"


def key_index_sql(table: TableName, key: Sequence[str], quote: Callable[[str], str]) -> str:
    """``CREATE INDEX`` on ``key`` of ``table`` (the index lands in the table's schema)."""
    index = quote(key_index_name(table))
    target = f"{quote(table.schema)}.{quote(table.name)}" if table.schema else quote(table.name)
    return f"CREATE INDEX {index} ON {target} ({', '.join(quote(k) for k in key)})"


def duplicate_key_error(table: TableName | str, detail: str, key: Sequence[str] = ()) -> DataError:
    """An appended row whose key the table already holds, refused by the table's primary key or unique index
    (``detail``: the database's words, which name the key's value or index; ``key``: its columns when known)."""
    columns = f" (key {', '.join(key)})" if key else ""
    return DataError(
        f"{table}: {detail}{columns}. update_method: append adds every row it reads, and this table has a primary key "
        "or unique index that refuses a key it already holds. Use update_method: merge (update rows by key), "
        "update_method: overwrite (replace the table on each run) or truncate_before_full_load: true (empty it "
        "before each full load), or drop the table's unique key to keep every version")
