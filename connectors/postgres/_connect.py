"""Opening psycopg connections from a ConnectionUrl and translating psycopg errors into copyjob's.

Every message names the server by ``url.redacted``; the password never reaches a message.
"""

from __future__ import annotations

from typing import Any

import psycopg

from copyjob.core.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionFailed,
    ConnectorError,
    CopyjobError,
    DataError,
    TableNotFound,
    TransactionConflict,
)
from copyjob.core.schema import TableName
from copyjob.core.urls import ConnectionUrl, redact

# libpq reports these only as text on connect (no SQLSTATE reaches the client)
_AUTH_MARKERS = ("password authentication failed", "no password supplied", "authentication failed",
                 "role \"", "pg_hba.conf rejects")
_SESSION_SETTINGS = "-c TimeZone=UTC -c DateStyle=ISO"


def connection_params(url: ConnectionUrl) -> dict[str, Any]:
    """libpq keyword parameters for ``url``, with the session in UTC and ISO dates (also used by change
    capture to open replication connections)."""
    params: dict[str, Any] = {"connect_timeout": 10, "application_name": "copyjob", **url.query}
    params["options"] = f"{params.get('options', '')} {_SESSION_SETTINGS}".strip()
    for key, value in (("host", url.host), ("port", url.port), ("user", url.username),
                       ("password", url.password), ("dbname", url.database)):
        if value is not None:
            params[key] = value
    return params


def connect(url: ConnectionUrl, *, autocommit: bool) -> psycopg.Connection[Any]:
    """A connection in UTC (timestamptz values come back as UTC datetimes)."""
    params = connection_params(url)
    try:
        return psycopg.connect(autocommit=autocommit, **params)
    except psycopg.ProgrammingError as exc:  # e.g. an unknown ?option= in the URL
        raise ConfigurationError(f"bad PostgreSQL URL {url.redacted}: {_text(exc)}") from exc
    except psycopg.Error as exc:
        raise connect_error(exc, url) from exc


def connect_error(exc: psycopg.Error, url: ConnectionUrl) -> CopyjobError:
    text = _text(exc)
    if any(m in text for m in _AUTH_MARKERS):
        return AuthenticationFailed(f"PostgreSQL rejected the credentials for {url.redacted}: {text}")
    if "does not exist" in text:  # the database: trying again will not create it
        return ConnectionFailed(f"cannot connect to {url.redacted}: {text}", retriable=False)
    return ConnectionFailed(f"cannot connect to {url.redacted}: {text}")


def translate(exc: BaseException, url: ConnectionUrl, table: TableName | None = None) -> CopyjobError:
    """The copyjob error for a failure while working with ``table``; use as ``raise translate(...) from``."""
    if isinstance(exc, CopyjobError):
        return exc
    where = f"{table} on {url.redacted}" if table else url.redacted
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return TableNotFound(f"table {table or '?'} does not exist on {url.redacted}: {_text(exc)}")
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        if state.startswith("28"):
            return AuthenticationFailed(f"PostgreSQL rejected the credentials for {url.redacted}: {_text(exc)}")
        if state.startswith(("22", "23")):
            return DataError(f"PostgreSQL refused a value for {where}: {_text(exc)}")
        if not state and isinstance(exc, psycopg.DataError):  # the driver could not convert a value
            return DataError(f"a value of {where} cannot be converted: {_text(exc)}")
        if state.startswith("40"):  # serialization failure, deadlock: the server asks us to try again
            return TransactionConflict(f"PostgreSQL gave up a transaction on {where}: {_text(exc)}")
        if isinstance(exc, psycopg.OperationalError) and (not state or state.startswith(("08", "53", "57"))):
            during = f" while working on {table}" if table else ""
            return ConnectionFailed(f"connection to {url.redacted} failed or was interrupted{during}: {_text(exc)}")
        return ConnectorError(f"PostgreSQL error on {where}: {_text(exc)}")
    if isinstance(exc, (ValueError, TypeError, OverflowError)):  # converting a value (Arrow, Python)
        return DataError(f"a value of {where} cannot be converted: {type(exc).__name__}: {exc}")
    return ConnectorError(f"error on {where}: {type(exc).__name__}: {exc}")


def _text(exc: BaseException) -> str:
    """The server's message, its detail and where it happened (COPY line and column), passwords redacted."""
    diag: Any = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        return redact(" ".join(str(exc).split()))
    text = primary
    for extra in (diag.message_detail, diag.context):
        if extra:
            text += f" [{extra.strip()}]"
    return redact(" ".join(text.split()))
