"""Shared fixtures for the real services. PostgreSQL and MariaDB are started once per test session on free
ports under a temporary folder (installed from Debian's packages when missing); each test gets fresh
databases. SQLite and DuckDB run in-process.

At the end of the session the services are killed rather than shut down cleanly: their data is thrown away,
and clean shutdowns (a Kafka controlled shutdown, checkpoints, flushes) cost the suite seconds."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.kafka import KafkaBroker, start_kafka
from tests.services.kafka_connect import KafkaConnect, start_connect
from tests.services.mariadb import MariadbServer, start_mariadb
from tests.services.postgres import PostgresServer, start_postgres

_counter = itertools.count()


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def postgres_server(services_dir: Path) -> Iterator[PostgresServer]:
    server = start_postgres(services_dir / "pg")
    yield server
    server.stop(keep=False)


@pytest.fixture(scope="session")
def replica_only(services_dir: Path) -> Iterator[PostgresServer]:
    """A second PostgreSQL server, with wal_level = replica: logical decoding is off. Tests must not change
    the server itself (it is shared by every module that asks for it)."""
    server = start_postgres(services_dir / "pg_replica", settings={"wal_level": "replica"})
    yield server
    server.stop(keep=False)


@pytest.fixture(scope="session")
def mariadb_server(services_dir: Path) -> Iterator[MariadbServer]:
    server = start_mariadb(services_dir / "mariadb")
    yield server
    server.stop(keep=False)


@pytest.fixture(scope="session")
def kafka_broker(services_dir: Path) -> Iterator[KafkaBroker]:
    """A single-node Apache Kafka broker (KRaft) for the session; its jars are fetched when missing."""
    broker = start_kafka(services_dir / "kafka")
    yield broker
    broker.kill()


@pytest.fixture(scope="session")
def kafka_connect(kafka_broker: KafkaBroker, services_dir: Path) -> Iterator[KafkaConnect]:
    """A Kafka Connect standalone worker with Debezium's PostgreSQL connector and JDBC sink, for the session.
    Tests add connectors under unique names and delete them when done."""
    connect = start_connect(kafka_broker, services_dir / "kafka-connect")
    yield connect
    connect.stop(keep=False)


def _fresh_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}"


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """URL of a fresh, empty PostgreSQL database."""
    return postgres_server.create_database(_fresh_name("t"))


@pytest.fixture
def pg_url2(postgres_server: PostgresServer) -> str:
    """A second fresh PostgreSQL database (for PostgreSQL → PostgreSQL copies)."""
    return postgres_server.create_database(_fresh_name("u"))


@pytest.fixture
def mariadb_url(mariadb_server: MariadbServer) -> str:
    """URL of a fresh, empty MariaDB database (scheme mysql://)."""
    return mariadb_server.create_database(_fresh_name("m"))
