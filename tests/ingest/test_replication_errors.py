"""How a failed replication command is classified: a server that went away is worth another attempt."""

import pytest
from copyjob.ingest.postgres_cdc._replication import replication_error

from copyjob.core.errors import ConfigurationError, ConnectionFailed


@pytest.mark.parametrize("text", [
    "server closed the connection unexpectedly This probably means the server terminated abnormally",
    "FATAL: terminating connection due to administrator command",
    "FATAL: the database system is shutting down",
    "FATAL: the database system is starting up",
])
def test_a_server_that_went_away_is_retriable(text: str) -> None:
    error = replication_error(text, "127.0.0.1:5432/shop")
    assert isinstance(error, ConnectionFailed) and error.retriable
    assert "127.0.0.1:5432/shop" in str(error)


def test_a_missing_slot_is_a_configuration_error() -> None:
    error = replication_error('replication slot "copyjob_x" does not exist', "db")
    assert isinstance(error, ConfigurationError) and not error.retriable


def test_an_unknown_failure_is_not_retried() -> None:
    assert not replication_error("syntax error at or near", "db").retriable
