"""Fixtures of the connector tests (the services themselves are started by tests/conftest.py).

``pg_url`` and ``pg_url2`` are overridden here: instead of a new database per test (a CREATE DATABASE each),
the connector tests reuse two databases that are emptied before each test. Nothing here keeps state outside
schemas (no publications, slots or database settings), so an emptied database is as good as a new one.
"""

from __future__ import annotations

import os

import pytest

from tests.services.postgres import PostgresServer


def empty_postgres(url: str) -> str:
    """Empty the database as if new: no other connection left (a failed test's load would hold locks), no
    schema but an empty ``public``. Returns ``url``."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        schemas = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                               "AND nspname <> 'information_schema'").fetchall()
        for (name,) in schemas:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        conn.execute("CREATE SCHEMA public")
    return url


@pytest.fixture(scope="session")
def reused_pg_databases(postgres_server: PostgresServer) -> tuple[str, str]:
    return (postgres_server.create_database(f"connectors_{os.getpid()}_1"),
            postgres_server.create_database(f"connectors_{os.getpid()}_2"))


@pytest.fixture
def pg_url(reused_pg_databases: tuple[str, str]) -> str:
    """URL of an empty PostgreSQL database (emptied, not new: see the module docstring)."""
    return empty_postgres(reused_pg_databases[0])


@pytest.fixture
def pg_url2(reused_pg_databases: tuple[str, str]) -> str:
    """A second empty PostgreSQL database (for PostgreSQL → PostgreSQL copies)."""
    return empty_postgres(reused_pg_databases[1])
