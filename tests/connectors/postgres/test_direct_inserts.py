"""Merge loads that COPY new keys straight into a table with a unique key (connectors/postgres/_direct.py): the
table ends the same as through staging, whatever mix of new keys, existing keys and repeats a batch holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from copyjob.connectors.postgres._direct import MAX_SKIP, DirectInserts
from copyjob.connectors.postgres._load import PostgresLoadSession
from copyjob.connectors.postgres.destination import PostgresDestination

from copyjob.core.contracts import StateMarker
from copyjob.core.urls import parse_url
from tests.connectors.test_postgres import DOCS, db_of, docs_batch, make_docs, table_rows
from tests.services.postgres import PostgresServer


@pytest.fixture
def dest(pg_url: str) -> Iterator[PostgresDestination]:
    d = PostgresDestination(parse_url(pg_url))
    yield d
    d.close()


def merge(dest: PostgresDestination, *batches: list[tuple[object, ...]]) -> None:
    session = dest.begin_load(DOCS, "merge", ["id"])
    for rows in batches:
        session.write(docs_batch(rows))
    session.commit(StateMarker(job="j", table="docs", run_id="r", state={"n": len(batches)}))


@pytest.mark.parametrize("key", [True, False], ids=["unique key", "no unique key"])
def test_merge_results_do_not_depend_on_the_path(postgres_server: PostgresServer, pg_url: str,
                                                 dest: PostgresDestination, key: bool) -> None:
    make_docs(postgres_server, pg_url, key=key)
    merge(dest, [(10, "new", "x"), (11, "new", "y")])  # only new keys
    merge(dest, [(12, "new", "z"), (2, "upd", "b2")])  # one existing key
    merge(dest, [(13, "a", "1"), (13, "b", "2")])  # a key twice in a batch: the last wins
    merge(dest, [(14, "first", "1")], [(14, "second", "2")], [(15, "third", "3")])  # a later batch repeats a key
    assert table_rows(postgres_server, pg_url, "docs") == [
        "1|a|big1", "2|upd|b2", "3|c|big3", "10|new|x", "11|new|y", "12|new|z", "13|b|2", "14|second|2",
        "15|third|3"]
    assert dest.read_marker("j", "docs").state == {"n": 3}  # type: ignore[union-attr]


def test_a_refused_batch_leaves_nothing_behind_and_deletes_still_apply(postgres_server: PostgresServer, pg_url: str,
                                                                       dest: PostgresDestination) -> None:
    make_docs(postgres_server, pg_url)
    session = dest.begin_load(DOCS, "merge", ["id"])
    session.write(docs_batch([(20, "n", "1"), (21, "n", "2")]))  # goes straight in
    assert session.delete_keys(docs_batch([(20,)], ("id",))) == 1  # the row is in the table already
    session.write(docs_batch([(22, "n", "3"), (1, "u", "4")]))  # refused (key 1 exists): staged instead
    session.write(docs_batch([(23, "n", "5")]))  # after a staged batch, staged too (order of keys holds)
    session.commit(None)
    assert table_rows(postgres_server, pg_url, "docs") == [
        "1|u|4", "2|b|big2", "3|c|big3", "21|n|2", "22|n|3", "23|n|5"]
    session = dest.begin_load(DOCS, "merge", ["id"])
    session.write(docs_batch([(30, "n", "1")]))
    session.abort()
    assert "30|n|1" not in table_rows(postgres_server, pg_url, "docs")


def test_a_table_with_conflicts_backs_off_and_recovers() -> None:
    direct = DirectInserts()
    assert direct.should_try()
    skipped = []
    for _ in range(8):  # every attempt refused: the pauses double up to MAX_SKIP
        direct.refused()
        pause = 0
        while not direct.should_try():
            pause += 1
        skipped.append(pause)
    assert skipped == [1, 2, 4, 8, 16, 32, MAX_SKIP, MAX_SKIP]
    direct.accepted()
    direct.refused()
    assert not direct.should_try() and direct.should_try()  # back to a pause of one


def test_a_deferred_unique_constraint_is_not_used(postgres_server: PostgresServer, pg_url: str,
                                                  dest: PostgresDestination) -> None:
    """A deferred constraint would refuse the batch at COPY time only at commit: such tables stage."""
    postgres_server.psql(db_of(pg_url), "CREATE TABLE docs (id bigint, name text, body text, "
                                        "UNIQUE (id) DEFERRABLE INITIALLY DEFERRED); "
                                        "INSERT INTO docs VALUES (1,'a','big1')")
    merge(dest, [(1, "u", "x"), (2, "n", "y")])
    assert table_rows(postgres_server, pg_url, "docs") == ["1|u|x", "2|n|y"]


def test_update_columns_counts_the_rows_that_went_straight_in(postgres_server: PostgresServer, pg_url: str,
                                                              dest: PostgresDestination) -> None:
    """A merge batch COPYed straight into the table is in the table, so update_columns counts its rows (the
    contract allows it: a destination that writes a merge batch straight into the table counts its rows again)."""
    make_docs(postgres_server, pg_url)
    session = dest.begin_load(DOCS, "merge", ["id"])
    session.write(docs_batch([(5, "e", "big5")]))
    updated = session.update_columns(docs_batch([(1, "a1"), (9, "nobody"), (2, "b1"), (2, "b2"), (5, "e1")],
                                                ("id", "name")))
    assert updated == 3  # 1, 2 (its last row) and 5; 9 is nowhere
    session.commit(None)
    assert table_rows(postgres_server, pg_url, "docs") == ["1|a1|big1", "2|b2|big2", "3|c|big3", "5|e1|big5"]


def test_a_load_whose_rows_all_go_straight_in_makes_no_staging_table(postgres_server: PostgresServer, pg_url: str,
                                                                     dest: PostgresDestination) -> None:
    """Making the staging table costs two DDL statements and a sequence per transaction (measured: a 300-row
    merge of new keys 9–24 ms with it, 3–7 ms without): it is made when a first row is staged."""
    make_docs(postgres_server, pg_url)
    session = cast(PostgresLoadSession, dest.begin_load(DOCS, "merge", ["id"]))
    staged = "SELECT to_regclass('pg_temp._copyjob_stage') IS NOT NULL"
    session.write(docs_batch([(10, "n", "x"), (11, "n", "y")]))  # new keys: straight in
    assert session.delete_keys(docs_batch([(11,)], ("id",))) == 1
    assert session._conn.execute(staged).fetchone() == (False,)
    session.write(docs_batch([(1, "u", "z")]))  # an existing key: refused, staged
    assert session._conn.execute(staged).fetchone() == (True,)
    session.commit(None)
    assert table_rows(postgres_server, pg_url, "docs") == ["1|u|z", "2|b|big2", "3|c|big3", "10|n|x"]
