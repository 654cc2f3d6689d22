"""Helpers for the PostgreSQL change capture tests: SQL on a test database, and dropping the replication slots
a test left behind (slots belong to the whole server, and it has only a few)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg


def execute(url: str, *statements: str, params: Any = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement, params)


def rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def drop_slots(url: str) -> None:
    """Drop every replication slot of ``url``'s database (ending the sessions still using them)."""
    deadline = time.monotonic() + 20
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            found = conn.execute("SELECT slot_name, active_pid FROM pg_replication_slots "
                                 "WHERE database = current_database()").fetchall()
            if not found:
                return
            for name, pid in found:
                if pid is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                else:
                    try:
                        conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                    except psycopg.errors.ObjectInUse:
                        pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"replication slots still in use: {found}")
            time.sleep(0.1)


def table_fingerprint(url: str, table: str, columns: str = "*") -> list[tuple[Any, ...]]:
    """Every row, ordered by the first column: a full-table comparison."""
    return rows(url, f"SELECT {columns} FROM {table} ORDER BY 1")


@contextmanager
def concurrent_writer(url: str, keys: int, pause_s: float = 0.0) -> Iterator[Callable[[], int]]:
    """A thread that commits transactions one after another while the block runs, each inserting a new id
    (200,001 on), updating one and deleting one of ids 1 … ``keys``. Yields the count of committed ones."""
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        with psycopg.connect(url, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                with conn.transaction():
                    conn.execute("INSERT INTO orders (id, status) VALUES (%s, 'live')", (200_000 + i,))
                    conn.execute("UPDATE orders SET status = 'touched', amount = amount + 1 WHERE id = %s",
                                 ((i * 7919) % keys + 1,))
                    conn.execute("DELETE FROM orders WHERE id = %s", ((i * 104729) % keys + 1,))
                writes += 1
                time.sleep(pause_s)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        yield lambda: writes
    finally:
        stop.set()
        thread.join()
