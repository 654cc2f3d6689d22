"""When an edit of the job file starts a table over, a destination table that cannot take the new shape is
created again (``prepare_target(..., replace=True)``); one that can is kept (and emptied by the load)."""

from __future__ import annotations

from pathlib import Path

from copyjob.apply.target import misfit, prepare_target
from copyjob.connectors.sqlite import SqliteDestination

from copyjob.core.schema import Column, TableName, TableSchema, parse_logical
from copyjob.core.urls import parse_url

INT, TEXT = parse_logical("int64"), parse_logical("string")
TABLE = TableName.parse("events")
MERGE = TableSchema(TABLE, (Column("id", INT, nullable=False), Column("name", TEXT, nullable=False)), ("id",))


def test_a_table_fits_when_its_key_and_required_columns_match() -> None:
    assert misfit(MERGE, MERGE, append=False) is None
    renamed = TableSchema(TABLE, (MERGE.columns[0], Column("label", TEXT, nullable=False)), ("id",))
    assert misfit(MERGE, renamed, append=False) == "NOT NULL column(s) name would get no value"
    assert misfit(MERGE, MERGE, append=True) == "its primary key is id, not none"
    assert misfit(TableSchema(TABLE, MERGE.columns, ()), MERGE, append=False) == "its primary key is none, not id"
    wider = TableSchema(TABLE, (*MERGE.columns, Column("extra", TEXT)), ("id",))
    assert misfit(wider, MERGE, append=False) is None  # a nullable column the rows leave out does no harm


def test_replace_creates_a_misfit_table_again(tmp_path: Path) -> None:
    destination = SqliteDestination(parse_url(f"sqlite:///{tmp_path / 'dst.db'}"))
    try:
        prepare_target(destination, MERGE, create=True, defer_key=False)
        renamed = TableSchema(TABLE, (MERGE.columns[0], Column("label", TEXT, nullable=False)), ("id",))
        kept = prepare_target(destination, renamed, create=True, defer_key=False)
        assert not kept.created and kept.added_columns == ("label",)  # without replace: never dropped
        again = prepare_target(destination, renamed, create=True, defer_key=False, replace=True)
        assert again.created
        reflected = destination.reflect(TABLE)
        assert reflected is not None and [c.name for c in reflected.columns] == ["id", "label"]
        assert not prepare_target(destination, renamed, create=True, defer_key=False, replace=True).created
    finally:
        destination.close()
