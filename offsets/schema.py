"""The state store's tables, defined once for SQLite and PostgreSQL (SQLAlchemy Core).

``meta`` holds one ``schema_version`` row so that a later copyjob can migrate an older store and an older
copyjob refuses a newer one instead of misreading it. Timestamps go through :class:`UtcDateTime` so that both
backends hand back aware UTC datetimes that compare and sort the same way (SQLite has no timezone type).
Watermark columns hold JSON text written by :func:`encode_watermark`, which keeps the value's Python type.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

from copyjob.core.values import decode_value, encode_value

SCHEMA_VERSION = 1
"""Bump when the tables change, and add the migration step to ``store._migrate``."""


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time stored as UTC; read back as an aware UTC datetime.

    Naive datetimes are taken as local time (Python's rule for ``astimezone``). On SQLite the value is stored
    as fixed-width text, so comparisons in SQL (lock expiry) still order correctly.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = value.astimezone(UTC)
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

table_state = Table(
    "table_state", metadata,
    Column("job", String(255), primary_key=True),
    Column("table_name", String(512), primary_key=True),
    Column("watermark", Text),
    Column("watermark_type", String(64)),
    Column("last_run_id", String(128)),
    Column("last_run_at", UtcDateTime),
    Column("last_status", String(32)),
    Column("last_error", Text),
    Column("needs_full", Boolean, nullable=False, default=True),
    Column("extra", Text, nullable=False, default="{}"),
)

runs = Table(
    "runs", metadata,
    Column("run_id", String(128), primary_key=True),
    Column("job", String(255), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("status", String(32), nullable=False),
    Column("trigger", String(64), nullable=False),
    Index("ix_runs_job_started", "job", "started_at"),
)

run_tables = Table(
    "run_tables", metadata,
    Column("run_id", String(128), ForeignKey("runs.run_id"), primary_key=True),
    # the order the tables were reported in; a table may appear twice (e.g. CDC snapshot, then stream)
    Column("position", Integer, primary_key=True),
    Column("table_name", String(512), nullable=False),
    Column("mode", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("rows_read", BigInteger, nullable=False, default=0),
    Column("rows_written", BigInteger, nullable=False, default=0),
    Column("duration_s", Float, nullable=False, default=0.0),
    Column("watermark_before", Text),
    Column("watermark_after", Text),
    Column("null_watermark_rows", BigInteger, nullable=False, default=0),
    Column("error", Text),
)

job_meta = Table(
    # small named values per job (serve: each schedule's last fire time). Added without a schema version bump:
    # a store made before it gets the table on first use, and an older copyjob simply ignores it.
    "job_meta", metadata,
    Column("job", String(255), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
)

run_notes = Table(
    # why a table of a run started over (an edit of the job file). Added without a schema version bump, like
    # job_meta: a store made before it gets the table on first use, and an older copyjob simply ignores it.
    "run_notes", metadata,
    Column("run_id", String(128), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("note", Text, nullable=False),
)

run_counts = Table(
    # more figures of a table's run, JSON: a CDC table's changes by kind ({"changes": {"inserts": n, "updates":
    # n, "deletes": n}}), a merge's rows re-read at the watermark ({"reread_rows": n}), a kafka apply's events
    # dead-lettered ({"dead_letters": n}). Added without a schema version bump, like run_notes.
    "run_counts", metadata,
    Column("run_id", String(128), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("counts", Text, nullable=False),
)

locks = Table(
    "locks", metadata,
    Column("job", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),
    # identifies this acquisition: holders may reuse a label, a token is never reused
    Column("token", String(64), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("heartbeat_at", UtcDateTime, nullable=False),
    # heartbeat_at + the holder's TTL: anyone may take the lock over once this has passed
    Column("expires_at", UtcDateTime, nullable=False),
)


def encode_watermark(value: Any) -> str | None:
    """JSON text that remembers the value's type: ``{"type": "datetime", "value": "2024-…"}``.

    The type travels inside the JSON (not in a side column) because run history keeps watermarks before and
    after each run with no type column of their own.
    """
    if value is None:
        return None
    encoded, type_name = encode_value(value)
    return json.dumps({"type": type_name, "value": encoded})


def decode_watermark(text: str | None) -> Any:
    """The Python value :func:`encode_watermark` stored (int, Decimal, datetime, date, str, …)."""
    if text is None:
        return None
    data = json.loads(text)
    return decode_value(data["value"], data["type"])


def watermark_type_name(value: Any) -> str | None:
    """The name copyjob.core.values gives the value's type (``int``, ``datetime``, …), or None."""
    return encode_value(value)[1]
