"""Checks every destination's ``begin_load`` makes before anything is written (no pyarrow: the PostgreSQL
pass-through path must not import it)."""

from __future__ import annotations

from collections.abc import Sequence

from copyjob.core.errors import ConfigurationError
from copyjob.core.schema import TableSchema


def check_load_key(schema: TableSchema, method: str, key: Sequence[str]) -> None:
    """What ``Destination.begin_load`` refuses before anything is written: a merge without a key, and key columns
    that are not columns of the load (SQLite would read an unknown double-quoted name as a string literal and
    match every row)."""
    if method == "merge" and not key:
        raise ConfigurationError(f"merge into {schema.table} needs a key")
    names = set(schema.column_names)
    unknown = [k for k in key if k not in names]
    if unknown:
        raise ConfigurationError(f"{schema.table}: key column {', '.join(map(repr, unknown))} is not a column of "
                                 f"the load (columns: {', '.join(schema.column_names)})")
