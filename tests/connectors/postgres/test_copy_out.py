"""COPY … TO STDOUT read at the libpq level (connectors/postgres/_copy_out.py): the same bytes as psycopg's
reader, usable connections after an early stop, and the server's errors as psycopg raises them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from copyjob.connectors.postgres._copy_out import copy_out_chunks

QUERY = "COPY (SELECT g, 'row ' || g, g / 7.0 FROM generate_series(1, 20000) g) TO STDOUT (FORMAT binary)"


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_url, autocommit=True) as c:
        yield c


def test_the_bytes_equal_psycopgs_and_come_in_large_chunks(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cur, cur.copy(QUERY) as copy:
        expected = b"".join(bytes(block) for block in copy)
    chunks = list(copy_out_chunks(conn, QUERY, chunk_bytes=64 * 1024))
    assert b"".join(chunks) == expected
    assert all(len(c) >= 64 * 1024 for c in chunks[:-1])
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_stopping_early_leaves_the_connection_usable(conn: psycopg.Connection[Any]) -> None:
    chunks = copy_out_chunks(conn, QUERY, chunk_bytes=1024)
    next(chunks)
    chunks.close()  # the consumer stops after the first chunk: the COPY is cancelled and drained
    assert conn.execute("SELECT 2").fetchone() == (2,)
    assert b"".join(copy_out_chunks(conn, QUERY))  # and it can COPY again


def test_server_errors_are_raised_with_their_sqlstate(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        b"".join(copy_out_chunks(conn, "COPY (SELECT 1 / (g - 5000) FROM generate_series(1, 10000) g) "
                                       "TO STDOUT (FORMAT binary)"))
    with pytest.raises(psycopg.errors.UndefinedTable):
        list(copy_out_chunks(conn, "COPY (SELECT * FROM no_such_table) TO STDOUT (FORMAT binary)"))
    assert conn.execute("SELECT 3").fetchone() == (3,)


def test_inside_a_transaction_the_copy_sees_its_snapshot(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:  # not autocommit: the COPY joins the open transaction
        conn.execute("CREATE TEMP TABLE t AS SELECT 42 AS v")
        data = b"".join(copy_out_chunks(conn, "COPY t TO STDOUT"))
        assert data == b"42\n"
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
