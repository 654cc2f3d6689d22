"""The destination contract (copyjob.core.contracts: Destination, LoadSession), the same tests over every
destination of tests/connectors/destinations.py.

What a destination declares it cannot do is skipped from its capabilities (``require``): merge, and the
keyed row operations ``delete_keys`` / ``update_columns`` that merge and change capture rest on, need
``supports_merge``; a commit that fails half-way rolls data and marker back only where ``transactional``.
Everything else must behave the same everywhere. What belongs to one system (type mappings, native bulk
paths, quirks) is tested in that connector's own file.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from copyjob.core.contracts import Destination, StateMarker, UpdateMethod
from copyjob.core.errors import ConfigurationError, DataError
from copyjob.core.schema import Column, LogicalType, TableName, TableSchema
from tests.connectors.destinations import FACTORIES, DestinationCase, mark_known_bug, require

UTC = dt.UTC
T = LogicalType
T0 = dt.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=list(FACTORIES))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DestinationCase]:
    mark_known_bug(request, request.param)
    case = FACTORIES[request.param](request, tmp_path)
    yield case
    case.close()


# ---------------------------------------------------------------- helpers


def simple(name: str = "t") -> TableSchema:
    return TableSchema(TableName(name), (Column("id", T("int64"), False), Column("v", T("string")),
                                         Column("at", T("timestamptz"))), primary_key=("id",))


def batch(schema: TableSchema, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema.arrow_schema())


def part(schema: TableSchema, names: list[str], rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    """A batch of some of the schema's columns (keys to delete, columns to update)."""
    return pa.RecordBatch.from_pylist([dict(zip(names, r, strict=True)) for r in rows],
                                      schema=schema.select(names).arrow_schema())


def load(dest: Destination, schema: TableSchema, rows: list[dict[str, Any]], method: UpdateMethod = "append",
         key: tuple[str, ...] = (), truncate: bool = False, marker: StateMarker | None = None) -> None:
    session = dest.begin_load(schema, method, key, truncate=truncate)
    session.write(batch(schema, rows))
    session.commit(marker)


def pairs(target: DestinationCase, schema: TableSchema) -> list[tuple[Any, Any]]:
    return sorted((r["id"], r["v"]) for r in target.rows(schema.select(["id", "v"])))


def ids(target: DestinationCase, schema: TableSchema) -> list[int]:
    return sorted(r["id"] for r in target.rows(schema.select(["id"])))


def three(target: DestinationCase, primary_key: bool = True) -> TableSchema:
    """``t`` holding ids 1, 2, 3 (v1, v2, v3, all at T0)."""
    schema = simple()
    target.destination.create_table(schema, primary_key=primary_key)
    load(target.destination, schema, [{"id": i, "v": f"v{i}", "at": T0} for i in (1, 2, 3)])
    return schema


def types(schema: TableSchema) -> list[tuple[str, str, bool]]:
    return [(c.name, str(c.type), c.nullable) for c in schema.columns]


def methods(target: DestinationCase) -> list[UpdateMethod]:
    """The update methods the destination supports."""
    return ["append", "overwrite", "merge"] if target.destination.capabilities.supports_merge else \
        ["append", "overwrite"]


# ---------------------------------------------------------------- tables


PORTABLE = TableSchema(
    TableName("every type"),
    (Column("id", T("int64"), nullable=False), Column("i16", T("int16")), Column("i32", T("int32")),
     Column("f32", T("float32")), Column("f64", T("float64")), Column("dec", T("decimal", precision=12, scale=2)),
     Column("s", T("string")), Column("b", T("bool")), Column("d", T("date")), Column("tm", T("time")),
     Column("ts", T("timestamp")), Column("bin", T("binary")), Column("j", T("json"))),
    primary_key=("id",),
)
"""Logical types every destination creates and reflects back unchanged (the others are mapped per system:
see each connector's tests)."""


def test_create_table_then_reflect_gives_the_same_schema(target: DestinationCase) -> None:
    dest = target.destination
    assert dest.reflect(PORTABLE.table) is None
    dest.create_table(PORTABLE)
    reflected = dest.reflect(PORTABLE.table)
    assert reflected is not None
    assert types(reflected) == types(PORTABLE)
    assert reflected.primary_key == ("id",)
    assert target.rows(PORTABLE) == []  # an empty table reads
    assert dest.reflect(TableName("nope")) is None


def test_create_without_primary_key_and_with_a_composite_key(target: DestinationCase) -> None:
    dest = target.destination
    schema = TableSchema(TableName("k"), (Column("a", T("int32"), False), Column("b", T("string"), False),
                                          Column("c", T("int64"))), primary_key=("a", "b"))
    dest.create_table(schema, primary_key=False)
    assert dest.reflect(schema.table).primary_key == ()  # type: ignore[union-attr]
    dest.create_table(TableSchema(TableName("k2"), schema.columns, ("a", "b")))
    assert dest.reflect(TableName("k2")).primary_key == ("a", "b")  # type: ignore[union-attr]


def test_add_columns_then_write_with_them(target: DestinationCase) -> None:
    dest = target.destination
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "v": "a"}])
    extra = (Column("amount", T("decimal", precision=10, scale=2), nullable=False), Column("day", T("date")))
    dest.add_columns(schema.table, extra)
    reflected = dest.reflect(schema.table)
    assert reflected is not None
    # added columns are nullable: the rows already there have no value for them
    assert types(reflected)[-2:] == [("amount", "decimal(10,2)", True), ("day", "date", True)]
    wider = TableSchema(schema.table, schema.columns + extra, schema.primary_key)
    load(dest, wider, [{"id": 2, "v": "b", "amount": Decimal("9.99"), "day": dt.date(2024, 1, 1)}])
    got = sorted(target.rows(wider.select(["id", "amount", "day"])), key=lambda r: r["id"])
    assert got == [{"id": 1, "amount": None, "day": None},
                   {"id": 2, "amount": Decimal("9.99"), "day": dt.date(2024, 1, 1)}]
    if dest.capabilities.supports_merge:
        load(dest, wider, [{"id": 1, "v": "c", "amount": Decimal("1.00")}], method="merge", key=("id",))
        got = sorted(target.rows(wider.select(["id", "v", "amount"])), key=lambda r: r["id"])
        assert [tuple(r.values()) for r in got] == [(1, "c", Decimal("1.00")), (2, "b", Decimal("9.99"))]


def test_identifiers_with_spaces_quotes_and_upper_case(target: DestinationCase) -> None:
    dest = target.destination
    schema = TableSchema(TableName('My "odd" Table'), (Column("Key Col", T("int64"), False),
                                                       Column('say "hi"', T("string")), Column("UPPER", T("bool"))),
                         primary_key=("Key Col",))
    dest.create_table(schema)
    method: UpdateMethod = "merge" if dest.capabilities.supports_merge else "append"
    row = {"Key Col": 1, 'say "hi"': "x", "UPPER": True}
    marker = StateMarker("job", str(schema.table), "r", {})
    load(dest, schema, [row], method=method, key=("Key Col",), marker=marker)
    reflected = dest.reflect(schema.table)
    assert reflected is not None
    assert reflected.column_names == schema.column_names and reflected.primary_key == ("Key Col",)
    assert target.rows(schema) == [row]
    assert dest.read_marker("job", str(schema.table)) == marker


# ---------------------------------------------------------------- append, overwrite, truncate


def test_append_adds_rows(target: DestinationCase) -> None:
    dest = target.destination
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "v": "a"}])
    session = dest.begin_load(schema, "append", ())
    assert session.write(batch(schema, [{"id": 2, "v": "b"}, {"id": 3, "v": None}])) == 2
    assert session.write(batch(schema, [])) == 0
    session.commit(None)
    assert pairs(target, schema) == [(1, "a"), (2, "b"), (3, None)]


def test_overwrite_replaces_every_row(target: DestinationCase) -> None:
    dest = target.destination
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    load(dest, schema, [{"id": 3, "v": "c"}, {"id": 1, "v": "again"}], method="overwrite")  # a key kept: fine
    assert pairs(target, schema) == [(1, "again"), (3, "c")]
    load(dest, schema, [], method="overwrite")
    assert pairs(target, schema) == []


def test_truncate_empties_the_table_inside_the_load(target: DestinationCase) -> None:
    dest = target.destination
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    load(dest, schema, [{"id": 2, "v": "new"}, {"id": 4, "v": "d"}], truncate=True)
    assert pairs(target, schema) == [(2, "new"), (4, "d")]


def test_uncommitted_writes_are_not_seen_by_readers(target: DestinationCase) -> None:
    dest = target.destination
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "v": "a"}])
    session = dest.begin_load(schema, "append", ())
    session.write(batch(schema, [{"id": 2, "v": "b"}]))
    assert pairs(target, schema) == [(1, "a")]  # another connection, or a reader of the published files
    session.commit(None)
    assert pairs(target, schema) == [(1, "a"), (2, "b")]


def test_write_binary_is_refused_without_postgres_binary(target: DestinationCase) -> None:
    if target.destination.capabilities.postgres_binary:
        pytest.skip(f"{target.name} accepts binary COPY streams (tested with its connector)")
    schema = simple()
    target.destination.create_table(schema)
    session = target.destination.begin_load(schema, "append", ())
    with pytest.raises(ConfigurationError):
        session.write_binary(iter([b""]))
    session.abort()


# ---------------------------------------------------------------- merge


def test_merge_last_row_of_a_key_wins(target: DestinationCase) -> None:
    require(target, "supports_merge")
    dest = target.destination
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": i, "v": f"old{i}"} for i in (1, 2, 3)])
    session = dest.begin_load(schema, "merge", ("id",))
    session.write(batch(schema, [{"id": 2, "v": "first"}, {"id": 4, "v": "new"}, {"id": 2, "v": "second"}]))
    session.write(batch(schema, [{"id": 2, "v": "last"}, {"id": 3, "v": None}]))  # a NULL value wins too
    session.commit(None)
    assert pairs(target, schema) == [(1, "old1"), (2, "last"), (3, None), (4, "new")]


def test_merge_needs_no_key_constraint_and_takes_composite_keys(target: DestinationCase) -> None:
    require(target, "supports_merge")
    dest = target.destination
    schema = simple()
    dest.create_table(schema, primary_key=False)
    load(dest, schema, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}])
    session = dest.begin_load(schema, "merge", ("id",))
    session.write(batch(schema, [{"id": 2, "v": "b1"}, {"id": 5, "v": "e"}, {"id": 2, "v": "b2"}]))
    session.write(batch(schema, [{"id": 5, "v": "e2"}, {"id": 3, "v": None}]))
    session.commit(None)
    assert pairs(target, schema) == [(1, "a"), (2, "b2"), (3, None), (5, "e2")]

    composite = TableSchema(TableName("pairs"), (Column("a", T("int32")), Column("b", T("string")),
                                                 Column("v", T("int64"))))
    dest.create_table(composite)
    # into an empty table: the last row of a key still wins
    load(dest, composite, [{"a": 1, "b": "y", "v": 0}, {"a": 1, "b": "y", "v": 2}], method="merge", key=("a", "b"))
    assert [tuple(r.values()) for r in target.rows(composite)] == [(1, "y", 2)]
    load(dest, composite, [{"a": 1, "b": "x", "v": 1}])
    load(dest, composite, [{"a": 1, "b": "y", "v": 20}, {"a": 2, "b": "y", "v": 3}, {"a": 1, "b": "y", "v": 21}],
         method="merge", key=("a", "b"))
    assert sorted(tuple(r.values()) for r in target.rows(composite)) == [(1, "x", 1), (1, "y", 21), (2, "y", 3)]


def test_merge_needs_a_key(target: DestinationCase) -> None:
    require(target, "supports_merge")
    dest = target.destination
    schema = simple()
    dest.create_table(schema, primary_key=False)
    with pytest.raises(ConfigurationError):  # neither named for the load nor the schema's primary key
        dest.begin_load(TableSchema(schema.table, schema.columns), "merge", ())
    # no key named but the schema has a primary key: refused, or merged on that key (never appended)
    try:
        session = dest.begin_load(schema, "merge", ())
    except ConfigurationError:
        return
    session.write(batch(schema, [{"id": 1, "v": "a"}, {"id": 1, "v": "b"}]))
    session.commit(None)
    assert pairs(target, schema) == [(1, "b")]


def test_merge_on_a_key_that_is_not_a_column_is_refused(target: DestinationCase) -> None:
    require(target, "supports_merge")
    dest = target.destination
    schema = three(target)
    session = None
    with pytest.raises(ConfigurationError, match="nokey"):  # when the load begins, at the latest at commit
        session = dest.begin_load(schema, "merge", ("nokey",))
        session.write(batch(schema, [{"id": 4, "v": "v4"}, {"id": 5, "v": "v5"}]))
        session.commit(None)
    if session is not None:
        session.abort()
    assert pairs(target, schema) == [(1, "v1"), (2, "v2"), (3, "v3")]


def test_merge_is_refused_where_unsupported(target: DestinationCase) -> None:
    if target.destination.capabilities.supports_merge:
        pytest.skip(f"{target.name} supports merge")
    schema = simple()
    target.destination.create_table(schema)
    with pytest.raises(ConfigurationError, match="merge"):
        target.destination.begin_load(schema, "merge", ("id",))


# ---------------------------------------------------------------- state markers


def test_commit_with_a_marker_then_read_marker_returns_it(target: DestinationCase) -> None:
    dest = target.destination
    schema = simple()
    dest.create_table(schema)
    assert dest.read_marker("job", "t") is None  # nothing committed yet (no state table either)
    marker = StateMarker("job", "t", "run-1", {"watermark": "2024-01-01T00:00:00+00:00", "n": 1, "none": None})
    load(dest, schema, [{"id": 1}], marker=marker)
    assert dest.read_marker("job", "t") == marker
    assert ids(target, schema) == [1]
    assert dest.read_marker("other job", "t") is None
    assert dest.read_marker("job", "other table") is None
    load(dest, schema, [{"id": 2}])  # a commit without a marker leaves the last one
    assert dest.read_marker("job", "t") == marker


def test_a_later_marker_replaces_an_earlier_one(target: DestinationCase) -> None:
    dest = target.destination
    schema, other = simple(), simple("u")
    dest.create_table(schema)
    dest.create_table(other)
    load(dest, other, [{"id": 9}], marker=StateMarker("job", "u", "run-1", {"n": 9}))
    for n, method in enumerate(methods(target), start=1):
        marker = StateMarker("job", "t", f"run-{n}", {"n": n})
        load(dest, schema, [{"id": n}], method=method, key=("id",), marker=marker)
        assert dest.read_marker("job", "t") == marker
    assert dest.read_marker("job", "u") == StateMarker("job", "u", "run-1", {"n": 9})  # other tables untouched


def test_write_marker_commits_a_marker_alone_without_its_table(target: DestinationCase) -> None:
    """For positions past records that changed no table (Kafka apply's dead letters before the table exists)."""
    require(target, "markers_alone")
    dest = target.destination
    marker = StateMarker("job", "nowhere#0", "run-1", {"offset": 8, "without_table": True})
    dest.write_marker(marker)  # no table, no state table yet
    assert dest.read_marker("job", "nowhere#0") == marker
    assert dest.reflect(TableName("nowhere")) is None
    later = StateMarker("job", "nowhere#0", "run-2", {"offset": 9})
    dest.write_marker(later)
    assert dest.read_marker("job", "nowhere#0") == later


def test_abort_leaves_neither_data_nor_marker(target: DestinationCase) -> None:
    dest = target.destination
    schema = simple()
    dest.create_table(schema)
    for method in methods(target):  # a first load that is aborted: no marker appears
        session = dest.begin_load(schema, method, ("id",))
        session.write(batch(schema, [{"id": 1, "v": "never"}]))
        session.abort()
    assert pairs(target, schema) == [] and dest.read_marker("job", "t") is None

    marker = StateMarker("job", "t", "run-1", {"n": 1})
    load(dest, schema, [{"id": 1, "v": "keep"}], marker=marker)
    for method in methods(target):
        session = dest.begin_load(schema, method, ("id",))
        first = 2 if method == "append" else 1  # append would refuse the existing key 1
        session.write(batch(schema, [{"id": first, "v": "changed"}, {"id": 3, "v": "new"}]))
        session.abort()
        session.abort()  # harmless
    assert pairs(target, schema) == [(1, "keep")]
    assert dest.read_marker("job", "t") == marker


def test_a_refused_row_fails_the_load_and_commits_nothing(target: DestinationCase) -> None:
    dest = target.destination
    schema = TableSchema(TableName("refused"), (Column("id", T("int64"), False), Column("v", T("string"), False)),
                         ("id",))
    dest.create_table(schema)
    marker = StateMarker("job", "refused", "run-1", {})
    load(dest, schema, [{"id": 1, "v": "keep"}], marker=marker)
    null_v = pa.RecordBatch.from_pylist([{"id": 3, "v": None}],
                                        schema=pa.schema([("id", pa.int64()), ("v", pa.string())]))
    for method in methods(target):
        session = dest.begin_load(schema, method, ("id",))
        session.write(batch(schema, [{"id": 2, "v": "in the same load"}]))
        with pytest.raises(DataError):  # NULL into NOT NULL: when written, at the latest at commit
            session.write(null_v)
            session.commit(StateMarker("job", "refused", "run-2", {}))
        session.abort()
    assert pairs(target, schema) == [(1, "keep")]
    assert dest.read_marker("job", "refused") == marker


def test_a_data_error_names_the_table(target: DestinationCase) -> None:
    dest = target.destination
    schema = TableSchema(TableName("named"), (Column("id", T("int64"), False), Column("v", T("string"), False)))
    dest.create_table(schema)
    session = dest.begin_load(schema, "append", ())
    with pytest.raises(DataError, match="named"):
        session.write(pa.RecordBatch.from_pylist([{"id": 1, "v": None}],
                                                 schema=pa.schema([("id", pa.int64()), ("v", pa.string())])))
        session.commit(None)
    session.abort()


def test_a_null_key_is_refused(target: DestinationCase) -> None:
    dest = target.destination
    schema = simple()
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "v": "keep"}])
    null_id = pa.RecordBatch.from_pylist([{"id": None, "v": "x", "at": None}],
                                         schema=pa.schema([("id", pa.int64()), ("v", pa.string()),
                                                           ("at", pa.timestamp("us", tz="UTC"))]))
    for method in methods(target):
        session = dest.begin_load(schema, method, ("id",))
        with pytest.raises(DataError):
            session.write(null_id)
            session.commit(None)
        session.abort()
    assert pairs(target, schema) == [(1, "keep")]


def test_a_duplicate_primary_key_is_refused(target: DestinationCase) -> None:
    require(target, "enforces_primary_key")
    dest = target.destination
    schema = simple("dups")
    dest.create_table(schema)
    load(dest, schema, [{"id": 1}])
    session = dest.begin_load(schema, "append", ())
    session.write(batch(schema, [{"id": 2}]))
    with pytest.raises(DataError, match="dups"):
        session.write(batch(schema, [{"id": 1}]))
        session.commit(StateMarker("job", "dups", "r", {}))
    session.abort()
    assert ids(target, schema) == [1]
    assert dest.read_marker("job", "dups") is None


def test_duplicates_of_a_deferred_key_fail_the_load(target: DestinationCase) -> None:
    require(target, "enforces_primary_key")
    dest = target.destination
    schema = simple("dups")
    dest.create_table(schema, primary_key=False)
    session = dest.begin_load(schema, "append", (), deferred_key=("id",))
    with pytest.raises(DataError, match="dups"):  # when the key is added: before the rows, or at commit
        session.write(batch(schema, [{"id": 2, "v": "b"}, {"id": 1, "v": "a"}, {"id": 2, "v": "again"}]))
        session.commit(StateMarker("job", "dups", "run-1", {}))
    session.abort()
    assert pairs(target, schema) == []
    assert dest.read_marker("job", "dups") is None


def test_a_failing_commit_rolls_back_data_and_marker_together(target: DestinationCase) -> None:
    """Merged on a column that is not the primary key, the rows collide with the key when the merge is
    applied (at commit, where merges are staged): data and marker roll back together."""
    require(target, "transactional", "enforces_primary_key", "supports_merge")
    dest = target.destination
    schema = simple("keyed")
    dest.create_table(schema)
    marker = StateMarker("job", "keyed", "run-1", {"n": 1})
    load(dest, schema, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 4, "v": "d"}], marker=marker)
    session = dest.begin_load(schema, "merge", ("v",))
    with pytest.raises(DataError, match="keyed"):
        assert session.delete_keys(part(schema, ["v"], [("d",)])) == 1  # applied to the table at once
        session.write(batch(schema, [{"id": 3, "v": "b"}, {"id": 1, "v": "new"}]))  # id 1 is a's
        session.commit(StateMarker("job", "keyed", "run-2", {}))
    session.abort()
    assert pairs(target, schema) == [(1, "a"), (2, "b"), (4, "d")]
    assert dest.read_marker("job", "keyed") == marker


# ---------------------------------------------------------------- tables created for append


def test_a_table_created_for_append_keeps_every_version_of_a_key(target: DestinationCase) -> None:
    """Append keeps history: the table it creates has no primary key but an ordinary index on the key, and
    the same rows appended twice are there twice."""
    from copyjob.apply.target import prepare_target

    dest = target.destination
    schema = TableSchema(TableName("history"), (Column("a", T("int32"), False), Column("b", T("string"), False),
                                                Column("v", T("string"))), primary_key=("a", "b"))
    assert prepare_target(dest, schema, create=True, defer_key=True, append=True).created
    reflected = dest.reflect(schema.table)
    assert reflected is not None and reflected.primary_key == ()
    if target.indexes is not None:
        assert target.indexes(target, schema.table) == {(("a", "b"), False)}
    rows = [{"a": 1, "b": "x", "v": "first"}, {"a": 2, "b": "y", "v": None}]
    for _ in range(2):
        load(dest, schema, rows)
    assert sorted(target.rows(schema), key=lambda r: (r["a"], str(r["v"]))) == [rows[0], rows[0], rows[1], rows[1]]


def test_a_table_created_for_merge_or_overwrite_keeps_its_primary_key(target: DestinationCase) -> None:
    from copyjob.apply.target import prepare_target

    dest = target.destination
    schema = simple("kept")
    prepare_target(dest, schema, create=True, defer_key=False)
    reflected = dest.reflect(schema.table)
    assert reflected is not None and reflected.primary_key == ("id",)
    if target.indexes is not None:
        assert target.indexes(target, schema.table) == {(("id",), True)}


def test_a_duplicate_key_under_append_says_how_to_keep_going(target: DestinationCase) -> None:
    """A table the user created with a primary key refuses a key appended again: the error names the table
    and the key and points at merge, overwrite and truncate_before_full_load."""
    require(target, "enforces_primary_key")
    dest = target.destination
    schema = simple("orders")
    dest.create_table(schema)
    load(dest, schema, [{"id": 7, "v": "a"}])
    session = dest.begin_load(schema, "append", ())
    with pytest.raises(DataError) as caught:
        session.write(batch(schema, [{"id": 7, "v": "again"}]))
        session.commit(None)
    session.abort()
    text = str(caught.value)
    assert "orders" in text and "id" in text
    for way_out in ("update_method: merge", "update_method: overwrite", "truncate_before_full_load: true"):
        assert way_out in text
    assert pairs(target, schema) == [(7, "a")]


# ---------------------------------------------------------------- deferred primary key


def test_deferred_primary_key_is_added_at_commit(target: DestinationCase) -> None:
    dest = target.destination
    schema = simple()
    dest.create_table(schema, primary_key=False)
    before = dest.reflect(schema.table)
    assert before is not None and before.primary_key == ()
    session = dest.begin_load(schema, "append", (), deferred_key=("id",))
    session.write(batch(schema, [{"id": 2, "v": "b"}, {"id": 1, "v": "a"}]))
    session.commit(StateMarker("job", "t", "r", {}))
    reflected = dest.reflect(schema.table)
    assert reflected is not None and reflected.primary_key == ("id",)
    assert types(reflected) == types(before)  # the columns are kept as they were
    assert pairs(target, schema) == [(1, "a"), (2, "b")]


# ---------------------------------------------------------------- deletes and column updates by key


def events() -> TableSchema:
    return TableSchema(TableName("ev"), (Column("code", T("string"), False), Column("at", T("timestamptz"), False),
                                         Column("u", T("uuid")), Column("v", T("int32"))), primary_key=("code", "at"))


def test_delete_keys_by_single_key(target: DestinationCase) -> None:
    require(target, "supports_merge")
    schema = three(target)
    session = target.destination.begin_load(schema, "merge", ("id",))
    assert session.delete_keys(part(schema, ["id"], [(2,), (9,), (None,)])) == 1  # missing and NULL: no match
    assert session.delete_keys(part(schema, ["id"], [(7,), (8,)])) == 0
    assert session.delete_keys(part(schema, ["id"], [])) == 0
    assert session.delete_keys(part(schema, ["id"], [(2,)])) == 0  # already deleted in this load
    assert pairs(target, schema) == [(1, "v1"), (2, "v2"), (3, "v3")]  # seen by others at commit only
    session.commit(StateMarker("j", "t", "r", {}))
    assert pairs(target, schema) == [(1, "v1"), (3, "v3")]
    assert target.destination.read_marker("j", "t") == StateMarker("j", "t", "r", {})


def test_delete_keys_by_composite_text_and_timestamp_key(target: DestinationCase) -> None:
    require(target, "supports_merge")
    dest = target.destination
    schema = events()
    dest.create_table(schema)
    u = str(uuid.UUID(int=5))
    load(dest, schema, [{"code": c, "at": T0 + dt.timedelta(seconds=s), "u": u, "v": s}
                        for c in ("x", "X", "it's") for s in (0, 1)])
    keys = pa.RecordBatch.from_pylist(
        [{"at": T0, "code": "x"}, {"at": T0 + dt.timedelta(seconds=1), "code": "it's"},
         {"at": T0 + dt.timedelta(seconds=5), "code": "X"}, {"at": None, "code": "X"}],  # other order: by name
        schema=pa.schema([pa.field("at", pa.timestamp("us", tz="UTC")), pa.field("code", pa.string())]))
    session = dest.begin_load(schema, "append", ())  # append without a key: the table's primary key
    assert session.delete_keys(keys) == 2
    session.commit(None)
    left = target.rows(schema.select(["code", "v"]))
    assert sorted((r["code"], r["v"]) for r in left) == [("X", 0), ("X", 1), ("it's", 0), ("x", 1)]

    uu = TableSchema(TableName("byu"), (Column("u", T("uuid")), Column("v", T("int32"))))  # no primary key
    dest.create_table(uu)
    u1, u2 = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    load(dest, uu, [{"u": u1, "v": 1}, {"u": u2, "v": 2}, {"u": u1, "v": 3}])
    session = dest.begin_load(uu, "append", ("u",))  # the key named for the load
    assert session.delete_keys(part(uu, ["u"], [(u1,)])) == 2
    session.commit(None)
    assert [r["v"] for r in target.rows(uu.select(["v"]))] == [2]


def test_delete_keys_needs_a_key(target: DestinationCase) -> None:
    require(target, "supports_merge")
    schema = three(target, primary_key=False)
    unkeyed = TableSchema(schema.table, schema.columns)
    session = target.destination.begin_load(unkeyed, "append", ())
    with pytest.raises(ConfigurationError, match="needs a key"):
        session.delete_keys(part(schema, ["id"], [(1,)]))
    session.abort()
    session = target.destination.begin_load(schema, "append", ("id",))
    with pytest.raises(ConfigurationError, match="key columns"):
        session.delete_keys(part(schema, ["id", "v"], [(1, "v1")]))
    session.abort()
    assert len(pairs(target, schema)) == 3


def test_delete_keys_uses_the_table_primary_key(target: DestinationCase) -> None:
    require(target, "supports_merge")
    schema = three(target)
    session = target.destination.begin_load(TableSchema(schema.table, schema.columns), "overwrite", ())
    session.write(batch(schema, [{"id": 5, "v": "v5"}, {"id": 6, "v": "v6"}]))
    assert session.delete_keys(part(schema, ["id"], [(6,), (1,)])) == 1  # a row of this load; 1 was emptied
    session.commit(None)
    assert pairs(target, schema) == [(5, "v5")]


def test_delete_and_write_in_one_merge_session(target: DestinationCase) -> None:
    require(target, "supports_merge")
    schema = three(target)
    session = target.destination.begin_load(schema, "merge", ("id",))
    session.write(batch(schema, [{"id": 3, "v": "staged"}]))
    assert session.delete_keys(part(schema, ["id"], [(1,), (3,)])) == 2  # 3 staged before: deleted too
    session.write(batch(schema, [{"id": 4, "v": "v4"}, {"id": 1, "v": "again"}]))  # after its delete: wins
    session.commit(None)
    assert pairs(target, schema) == [(1, "again"), (2, "v2"), (4, "v4")]


def test_deletes_and_updates_in_an_append_load_touch_rows_written_before_them(target: DestinationCase) -> None:
    require(target, "supports_merge")
    schema = three(target, primary_key=False)
    session = target.destination.begin_load(schema, "append", ("id",))
    session.write(batch(schema, [{"id": 4, "v": "v4", "at": T0}, {"id": 5, "v": "v5", "at": T0}]))
    assert session.delete_keys(part(schema, ["id"], [(1,), (4,)])) == 2  # an old row and a row of this load
    assert session.update_columns(part(schema, ["id", "v"], [(5, "u5"), (2, "u2")])) == 2
    session.write(batch(schema, [{"id": 4, "v": "again"}, {"id": 5, "v": "later"}]))  # untouched: written after
    session.commit(None)
    assert pairs(target, schema) == [(2, "u2"), (3, "v3"), (4, "again"), (5, "later"), (5, "u5")]
    assert {r["at"] for r in target.rows(schema) if r["id"] in (2, 3)} == {T0}


def test_merge_with_truncate_replaces_the_old_rows(target: DestinationCase) -> None:
    require(target, "supports_merge")
    schema = three(target)
    session = target.destination.begin_load(schema, "merge", ("id",), truncate=True)
    session.write(batch(schema, [{"id": 9, "v": "v9"}, {"id": 2, "v": "new"}]))
    assert session.delete_keys(part(schema, ["id"], [(1,)])) == 0  # the table is emptied by this load
    session.commit(None)
    assert pairs(target, schema) == [(2, "new"), (9, "v9")]


def test_update_columns_keeps_the_other_columns(target: DestinationCase) -> None:
    require(target, "supports_merge")
    dest = target.destination
    schema = three(target)
    session = dest.begin_load(schema, "merge", ("id",))
    updated = session.update_columns(part(schema, ["id", "v"], [(1, "a1"), (9, "nobody"), (2, "b1"), (2, "b2"),
                                                                (3, "v3")]))
    assert updated == 3  # 9 is nowhere; 3 matched although unchanged; the last row of 2 wins
    assert session.update_columns(part(schema, ["id"], [(3,)])) == 1  # nothing to set: the rows matched
    session.commit(None)
    rows = sorted(target.rows(schema), key=lambda r: r["id"])
    assert [(r["id"], r["v"]) for r in rows] == [(1, "a1"), (2, "b2"), (3, "v3")]
    assert {r["at"] for r in rows} == {T0}
    later = T0 + dt.timedelta(days=1)
    session = dest.begin_load(schema, "append", ())  # by the table's primary key, columns in another order
    assert session.update_columns(part(schema, ["at", "id"], [(later, 3)])) == 1
    session.commit(None)
    assert sorted(target.rows(schema), key=lambda r: r["id"])[2] == {"id": 3, "v": "v3", "at": later}


def test_update_columns_applies_to_the_rows_a_merge_staged(target: DestinationCase) -> None:
    """Without a key constraint every destination stages merge rows (PostgreSQL COPYs them straight into a
    keyed table, and then counts them: tests/connectors/postgres/test_direct_inserts.py)."""
    require(target, "supports_merge")
    dest = target.destination
    schema = three(target, primary_key=False)
    session = dest.begin_load(schema, "merge", ("id",))
    session.write(batch(schema, [{"id": 5, "v": "v5", "at": T0}, {"id": 6, "v": "v6", "at": T0}]))
    # staged rows are counted by write, not again here; the update applies on top of the staged row
    assert session.update_columns(part(schema, ["id", "v"], [(5, "e1"), (6, "f1"), (1, "a1")])) == 1
    session.write(batch(schema, [{"id": 6, "v": "w6"}]))  # written after the update: the whole row wins
    session.commit(None)
    rows = sorted(target.rows(schema), key=lambda r: r["id"])
    assert [(r["id"], r["v"], r["at"]) for r in rows] == [(1, "a1", T0), (2, "v2", T0), (3, "v3", T0),
                                                          (5, "e1", T0), (6, "w6", None)]


def test_abort_rolls_back_writes_deletes_and_updates(target: DestinationCase) -> None:
    require(target, "supports_merge")
    dest = target.destination
    schema = three(target)
    for method in methods(target):
        session = dest.begin_load(schema, method, ("id",))
        session.write(batch(schema, [{"id": 7, "v": "v7"}]))
        session.delete_keys(part(schema, ["id"], [(1,)]))
        session.update_columns(part(schema, ["id", "v"], [(2, "zzz")]))
        session.abort()
    assert pairs(target, schema) == [(1, "v1"), (2, "v2"), (3, "v3")]
    assert dest.read_marker("j", "t") is None


def test_update_columns_refuses_a_bad_value(target: DestinationCase) -> None:
    require(target, "supports_merge")
    dest = target.destination
    schema = TableSchema(TableName("notes"), (Column("id", T("int64"), False), Column("v", T("string"), False)),
                         ("id",))
    dest.create_table(schema)
    load(dest, schema, [{"id": 1, "v": "a"}])
    session = dest.begin_load(schema, "merge", ("id",))
    with pytest.raises(DataError, match=r"notes.*\bv\b"):  # NULL into a NOT NULL column: table and column named
        session.update_columns(pa.RecordBatch.from_pydict({"id": [1], "v": [None]},
                                                          schema=pa.schema([("id", pa.int64()), ("v", pa.string())])))
        session.commit(None)
    session.abort()
    assert pairs(target, schema) == [(1, "a")]


def test_apply_changes_end_to_end(target: DestinationCase) -> None:
    from copyjob.apply.changes import apply_changes

    from copyjob.core.changes import UNCHANGED_TOAST, ChangeBatch, ChangeEvent

    require(target, "supports_merge")
    dest = target.destination
    schema = three(target)
    later = T0 + dt.timedelta(hours=1)
    changes = [
        ChangeEvent("c", None, {"id": 4, "v": "d", "at": later}),
        ChangeEvent("u", {"id": 1}, {"id": 1, "v": "a2", "at": UNCHANGED_TOAST}),  # at kept
        ChangeEvent("d", {"id": 2, "v": None, "at": None}, None),
        ChangeEvent("u", {"id": 3}, {"id": 3, "v": "c2", "at": later}),
        ChangeEvent("c", None, {"id": 5, "v": "e", "at": None}),
        ChangeEvent("d", {"id": 5, "v": None, "at": None}, None),
    ]
    marker = StateMarker("j", "t", "r1", {"pos": 42})
    result = apply_changes(dest, schema, ChangeBatch(schema.table, schema, changes), method="merge", key=["id"],
                           rename={}, marker=lambda: marker)
    assert (result.upserted, result.deleted) == (3, 1)
    assert sorted(target.rows(schema), key=lambda r: r["id"]) == [
        {"id": 1, "v": "a2", "at": T0}, {"id": 3, "v": "c2", "at": later}, {"id": 4, "v": "d", "at": later}]
    assert dest.read_marker("j", "t") == marker


def test_drop_table_makes_room_for_another_shape(target: DestinationCase) -> None:
    """An edit of the job file that starts a table over in a shape it cannot take (copyjob.apply.target)."""
    dest = target.destination
    schema = three(target)
    dest.drop_table(schema.table)
    assert dest.reflect(schema.table) is None
    other = TableSchema(schema.table, (Column("id", T("int64"), False), Column("w", T("string"))), ())
    dest.create_table(other)
    reflected = dest.reflect(schema.table)
    assert reflected is not None and types(reflected) == types(other) and reflected.primary_key == ()
    assert target.rows(other) == []
    dest.drop_table(TableName("never there"))  # nothing to drop
