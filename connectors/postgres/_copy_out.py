"""``COPY … TO STDOUT`` as a stream of large byte chunks, read at the libpq level.

The server sends one CopyData message per row. psycopg's ``Copy.read`` hands each one out through its
generator and wait machinery, which for a million rows costs as much as the server takes to produce them;
asking libpq directly (non-blocking, waiting on the socket with the GIL released) halves the reader's time,
and the pass-through reader shares the GIL with the writer thread.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import pq

CHUNK_BYTES = 1 << 20
"""Chunks handed out are about this size."""


def copy_out_chunks(conn: psycopg.Connection[Any], query: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The raw output of ``query`` (a ``COPY … TO STDOUT``) in chunks of about ``chunk_bytes``.

    Steps: 1. send the query and expect COPY_OUT; 2. take every CopyData message, waiting on the socket when
    none is buffered; 3. read the final result and raise the server's error as psycopg would. A consumer that
    stops early cancels the COPY and the connection is drained, so it can be used again.
    """
    with conn.lock:
        pgconn = conn.pgconn
        pgconn.send_query(query.encode())
        first = _next_result(pgconn)
        if first is None or first.status != pq.ExecStatus.COPY_OUT:
            _drain_results(pgconn)
            _expect(conn, first, pq.ExecStatus.COPY_OUT)
        finished = False
        try:
            yield from _chunks(pgconn, chunk_bytes)
            finished = True
        finally:
            if not finished:
                _cancel_and_drain(conn)
        last = _next_result(pgconn)
        _drain_results(pgconn)
        _expect(conn, last, pq.ExecStatus.COMMAND_OK)


def _chunks(pgconn: Any, chunk_bytes: int) -> Iterator[bytes]:
    get, consume, socket = pgconn.get_copy_data, pgconn.consume_input, pgconn.socket
    buffer = bytearray()
    while True:
        size, data = get(1)
        if size > 0:
            buffer += data
            if len(buffer) >= chunk_bytes:
                yield bytes(buffer)
                buffer.clear()
        elif size == 0:  # nothing buffered: wait for the socket (select releases the GIL)
            select.select([socket], [], [])
            consume()
        elif size == -1:  # the COPY is done
            break
        else:
            raise psycopg.OperationalError(pgconn.error_message.decode(errors="replace").strip())
    if buffer:
        yield bytes(buffer)


def _next_result(pgconn: Any) -> Any:
    """The next result, waiting on the socket (GIL released) while libpq is busy."""
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            return pgconn.get_result()
        select.select([pgconn.socket], [], [])


def _drain_results(pgconn: Any) -> None:
    """Read the results left (libpq wants every one read before the next query)."""
    while _next_result(pgconn) is not None:
        pass


def _expect(conn: psycopg.Connection[Any], result: Any, status: pq.ExecStatus) -> None:
    if result is None:
        raise psycopg.OperationalError("the server sent no result for COPY")
    if result.status != status:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        raise psycopg.OperationalError(f"unexpected result for COPY: {pq.ExecStatus(result.status).name}")


def _cancel_and_drain(conn: psycopg.Connection[Any]) -> None:
    """Stop a COPY in flight and consume what is left, so the connection can run the next statement."""
    pgconn = conn.pgconn
    try:
        conn.cancel_safe()
        while True:
            size, _ = pgconn.get_copy_data(1)
            if size == 0:
                select.select([pgconn.socket], [], [])
                pgconn.consume_input()
            elif size < 0:
                break
        _drain_results(pgconn)
    except (psycopg.Error, OSError):
        conn.close()  # the connection is of no further use; the server ends the COPY itself
