"""Getting the destination table ready: create it from the source schema, or add the columns the source
gained since the last run. A table is dropped only when an edit of the job file makes it start over and it
cannot take the new shape (``replace``); nothing here empties one."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from copyjob.core.contracts import Destination
from copyjob.core.errors import ConfigurationError
from copyjob.core.schema import TableSchema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedTarget:
    schema: TableSchema
    """The columns this load writes, named and typed as in the destination table."""
    created: bool
    added_columns: tuple[str, ...] = ()
    existing: TableSchema | None = None


def prepare_target(destination: Destination, wanted: TableSchema, *, create: bool,
                   defer_key: bool, append: bool = False, replace: bool = False) -> PreparedTarget:
    """Create ``wanted.table`` when missing (without its key when ``defer_key``: the load adds it at the
    end) or add the columns it lacks.

    ``append``: the table keeps every row it is given, several of one key among them, so it gets no primary
    key but an ordinary index on the key columns (``defer_key`` does not apply). ``replace``: the load
    replaces what the table holds (an edit of the job file started it over, ``offsets.ledger``); a table
    whose shape does not fit ``wanted`` (:func:`misfit`) is dropped and created again."""
    existing = destination.reflect(wanted.table)
    reason = misfit(existing, wanted, append) if replace and existing is not None and create else None
    if reason is not None:
        log.warning("%s: the table is created again: %s", wanted.table, reason)
        destination.drop_table(wanted.table)
        existing = None
    if existing is None:
        if not create:
            raise ConfigurationError(
                f"destination table {wanted.table} does not exist and create_tables is false")
        if append:
            destination.create_table(wanted, primary_key=False, key_index=True)
        else:
            destination.create_table(wanted, primary_key=not defer_key)
        return PreparedTarget(schema=wanted, created=True, existing=destination.reflect(wanted.table))
    have = {c.name.lower() for c in existing.columns}
    missing = [c for c in wanted.columns if c.name.lower() not in have]
    if missing:
        destination.add_columns(wanted.table, missing)
        existing = destination.reflect(wanted.table) or existing
    return PreparedTarget(schema=wanted, created=False, added_columns=tuple(c.name for c in missing),
                          existing=existing)


def misfit(existing: TableSchema, wanted: TableSchema, append: bool) -> str | None:
    """Why ``existing`` cannot hold ``wanted`` as a table created for it would: another primary key (an append
    table has none), or a NOT NULL column the rows no longer carry (a column renamed by the mapping)."""
    key = () if append else wanted.primary_key
    if tuple(k.lower() for k in existing.primary_key) != tuple(k.lower() for k in key):
        return f"its primary key is {', '.join(existing.primary_key) or 'none'}, not {', '.join(key) or 'none'}"
    names = {c.name.lower() for c in wanted.columns}
    left = [c.name for c in existing.columns if not c.nullable and not c.generated and c.name.lower() not in names]
    if left:
        return f"NOT NULL column(s) {', '.join(left)} would get no value"
    return None


def check_computed(prepared: PreparedTarget) -> None:
    """For change capture: a column generated at the source never comes with a change (pgoutput leaves it out),
    so the destination must compute it; a destination table where it is a plain column would get NULL."""
    computed = {c.name for c in prepared.existing.columns if c.generated} if prepared.existing else set()
    plain = [c.name for c in prepared.schema.columns if c.generated and c.name not in computed]
    if plain:
        raise ConfigurationError(
            f"{prepared.schema.table}: column(s) {', '.join(plain)} are generated at the source but plain columns "
            "in the destination table, and the change stream does not carry them (rows changed later would get "
            "NULL): drop the destination table so that copyjob creates them generated, or make them GENERATED "
            "ALWAYS AS (…) STORED there")
