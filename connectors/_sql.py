"""SQL text shared by the SQL connectors: identifier quoting and rendering row filters with parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from copyjob.core.contracts import RowFilter
from copyjob.core.schema import TableName

STATE_TABLE = "_copyjob_state"
"""Destination table holding the state marker committed with each load (job, table, run_id, state json)."""


def quote_double(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_backtick(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def qualified(table: TableName, quote: Callable[[str], str]) -> str:
    return f"{quote(table.schema)}.{quote(table.name)}" if table.schema else quote(table.name)


def render_filters(filters: Sequence[RowFilter], quote: Callable[[str], str],
                   placeholder: str = "%s") -> tuple[str, list[Any]]:
    """`` WHERE …`` (or "") and its parameters for the filters, ANDed together."""
    clauses: list[str] = []
    params: list[Any] = []
    for f in filters:
        col = quote(f.column)
        if f.only_nulls:
            clauses.append(f"{col} IS NULL")
            continue
        if f.lower is not None:
            clauses.append(f"{col} {'>=' if f.lower.inclusive else '>'} {placeholder}")
            params.append(f.lower.value)
        if f.upper is not None:
            clauses.append(f"{col} {'<=' if f.upper.inclusive else '<'} {placeholder}")
            params.append(f.upper.value)
    if not clauses:
        return "", []
    return " WHERE " + " AND ".join(clauses), params
