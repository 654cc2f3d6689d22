"""Fixtures of the connector tests (the services themselves are started by tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

from tests.services.postgres import PostgresServer


@pytest.fixture(scope="session")
def pg_contract_url(postgres_server: PostgresServer) -> str:
    """One PostgreSQL database for the destination contract suite, emptied before each of its tests
    (``destinations.empty_postgres``): much cheaper than a fresh database per test."""
    return postgres_server.create_database(f"contract_{os.getpid()}")
