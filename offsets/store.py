"""The state store on SQLAlchemy Core: one implementation for SQLite (the default, a file next to the job) and
PostgreSQL (a shared deployment where several machines run jobs).

:class:`Database` owns the engine: it turns URLs into engines, sets SQLite up for several processes (WAL, a
busy timeout, ``BEGIN IMMEDIATE`` for writes so two writers queue instead of failing), creates the tables on
first open and translates every database error into a StateError that names the redacted URL.
:class:`SqlStateStore` implements :class:`copyjob.core.contracts.StateStore` on it, plus the run lock
(:mod:`offsets.lock`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from copyjob.offsets import lock as run_lock
from copyjob.offsets.schema import (
    SCHEMA_VERSION,
    decode_watermark,
    encode_watermark,
    job_meta,
    meta,
    metadata,
    run_counts,
    run_notes,
    run_tables,
    runs,
    table_state,
    watermark_type_name,
)
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import StaticPool

from copyjob.core.contracts import RunRecord, TableRunRecord, TableState
from copyjob.core.errors import ConfigurationError, MissingDependency, StateError
from copyjob.core.private import create_private_file, make_private_folder
from copyjob.core.urls import SCHEME_ALIASES, parse_url, redact

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's transaction before giving up."""
_IMMEDIATE = "copyjob_sqlite_immediate"
_DDL_LOCK_KEY = 0x636F70796A6F62  # "copyjob": serialises table creation between PostgreSQL clients


# ---------------------------------------------------------------- engine and transactions


def engine_url(url: str) -> URL:
    """The SQLAlchemy URL for a state store URL or a bare file path (SQLite); relative paths use the cwd."""
    if "://" not in url:
        return _sqlite_url(Path(url).expanduser().resolve())
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = parse_url(url).path
        return _sqlite_url(path if path is not None else Path(":memory:"))
    if SCHEME_ALIASES.get(scheme, scheme) == "postgresql":
        # parsed by copyjob.core.urls, not SQLAlchemy's make_url: that splits the userinfo at the first '@'
        parsed = parse_url(url)
        return URL.create("postgresql+psycopg", username=parsed.username, password=parsed.password,
                          host=parsed.host, port=parsed.port, database=parsed.database, query=parsed.query)
    raise ConfigurationError(
        f"state store URL {redact(url)!r} is not supported: use sqlite:///path/state.db, a file path "
        "or postgresql://user:password@host/database"
    )


def _sqlite_url(path: Path) -> URL:
    return URL.create("sqlite") if str(path) == ":memory:" else URL.create("sqlite", database=str(path))


class Database:
    """An engine plus short transactions whose errors come out as StateError naming the redacted URL."""

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        self.engine = _translated_call(self.url, "open the state store",
                                       lambda: _create_engine(engine_url(url)))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def reading(self, action: str) -> Iterator[Connection]:
        """A read transaction (on SQLite a snapshot that never blocks writers)."""
        with self.translated(action), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def writing(self, action: str) -> Iterator[Connection]:
        """A write transaction: all or nothing, durable when the block exits without an exception."""
        with self.translated(action), self.engine.connect() as conn:
            conn.execution_options(**{_IMMEDIATE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise state_error(self.url, action, exc) from exc

    def upsert(self, conn: Connection, table: Table, row: Mapping[Any, Any]) -> None:
        """Insert ``row`` or, when its primary key exists, overwrite the other columns."""
        keys = [column.name for column in table.primary_key.columns]
        changes = {name: value for name, value in row.items() if name not in keys}
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert  # only then: a CLI start pays less

            pg_stmt = pg_insert(table).values(**row)
            conn.execute(pg_stmt.on_conflict_do_update(index_elements=keys, set_=changes))
        else:
            lite_stmt = sqlite_insert(table).values(**row)
            conn.execute(lite_stmt.on_conflict_do_update(index_elements=keys, set_=changes))

    def ensure_schema(self) -> None:
        """Create the tables on first open; refuse a store written by a newer copyjob."""
        with self.reading("open the state store") as conn:
            version = _stored_version(conn)
        if version is None or version < SCHEMA_VERSION:
            version = self._create_or_migrate()
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state store {self.url} has schema version {version}, newer than this copyjob understands "
                f"({SCHEMA_VERSION}): upgrade copyjob", retriable=False,
            )

    def _create_or_migrate(self) -> int:
        """Under a lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock): concurrent opens are safe."""
        with self.writing("create the state tables") as conn:
            if self.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_DDL_LOCK_KEY)))
            version = _stored_version(conn)
            if version is not None and version >= SCHEMA_VERSION:
                return version  # another process got here first
            metadata.create_all(conn, checkfirst=True)
            if version is not None:
                _migrate(conn, version)
            self.upsert(conn, meta, {"key": "schema_version", "value": str(SCHEMA_VERSION)})
            log.debug("state store %s: tables at schema version %d", self.url, SCHEMA_VERSION)
            return SCHEMA_VERSION

    def close(self) -> None:
        self.engine.dispose()


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    try:
        return create_engine(url, pool_pre_ping=True)  # pre-ping: a scheduler keeps the store open for days
    except ImportError as exc:
        raise MissingDependency("psycopg is not installed: pip install 'psycopg[binary]'") from exc


def _sqlite_engine(url: URL) -> Engine:
    if url.database in (None, "", ":memory:"):  # tests and throwaway runs: one shared connection
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        _configure_sqlite(engine, wal=False)
        return engine
    path = Path(url.database or "")
    make_private_folder(path.parent)
    _ignore_in_git(path.parent)
    create_private_file(path)  # before SQLite creates it with 0644; its -wal and -shm files copy this mode
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    _configure_sqlite(engine, wal=True)
    return engine


def _ignore_in_git(folder: Path) -> None:
    """Keep the default ``.copyjob/`` folder out of version control: it holds run state, not configuration."""
    marker = folder / ".gitignore"
    if folder.name == ".copyjob" and not marker.exists():
        marker.write_text("*\n")


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    """WAL lets readers work while a writer commits; BEGIN IMMEDIATE makes writers queue on the busy timeout
    instead of failing with "database is locked" when a read transaction tries to become a write."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver must not open transactions itself; _on_begin does
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        if wal:
            _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_IMMEDIATE) else "BEGIN")


def _switch_to_wal(cursor: Any) -> None:
    """Put the file in WAL mode (a lasting property of the file, so usually already done).

    Switching needs an exclusive lock and SQLite answers "database is locked" at once, without the busy
    handler, when another process opens the new file at the same moment: retry until the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _stored_version(conn: Connection) -> int | None:
    if not inspect(conn).has_table(meta.name):
        return None
    value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    return int(value) if value is not None else None


def _migrate(conn: Connection, from_version: int) -> None:
    """Bring an older store up to SCHEMA_VERSION (version 1 is the first: nothing to do yet)."""
    log.info("migrating state store tables from schema version %d to %d", from_version, SCHEMA_VERSION)


def state_error(url: str, action: str, exc: BaseException) -> StateError:
    """A StateError naming the store and what we were doing; never shows a password."""
    detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
    transient = isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout)
    if "authentication failed" in detail.lower():
        transient = False
    return StateError(redact(f"state store {url}: cannot {action}: {detail}"), retriable=transient)


def _translated_call(url: str, action: str, fn: Callable[[], Engine]) -> Engine:
    try:
        return fn()
    except (SQLAlchemyError, OSError) as exc:
        raise state_error(url, action, exc) from exc


# ---------------------------------------------------------------- the store


class SqlStateStore:
    """The job state store (:class:`copyjob.core.contracts.StateStore`) plus the per-job run lock.

    Every method is one short transaction, so several processes (and, on PostgreSQL, machines) can share a
    store. Watermarks keep their Python type (int, Decimal, aware or naive datetime, date, str, …); the
    timestamps of runs and states come back as aware UTC datetimes.
    """

    def __init__(self, url: str) -> None:
        self._db = Database(url)
        self._held: list[run_lock.RunLock] = []
        self._job_meta_ready = False
        try:
            self._db.ensure_schema()
        except BaseException:
            self._db.close()
            raise

    @property
    def url(self) -> str:
        """The store's URL with any password replaced by ``***``."""
        return self._db.url

    @property
    def engine(self) -> Engine:
        return self._db.engine

    # ---- table state

    def load(self, job: str, table: str) -> TableState:
        """The table's state; a table that never ran needs a full copy and has no watermark."""
        with self._db.reading(f"load the state of {job}/{table}") as conn:
            row = conn.execute(select(table_state).where(
                table_state.c.job == job, table_state.c.table_name == table)).mappings().first()
        return _table_state(row) if row is not None else TableState(table=table)

    def load_all(self, job: str) -> dict[str, TableState]:
        with self._db.reading(f"load the state of job {job!r}") as conn:
            rows = conn.execute(select(table_state).where(table_state.c.job == job)
                                .order_by(table_state.c.table_name)).mappings().all()
        return {row["table_name"]: _table_state(row) for row in rows}

    def save(self, job: str, state: TableState) -> None:
        """Write one table's state atomically (insert or replace)."""
        row = _state_row(job, state)
        with self._db.writing(f"save the state of {job}/{state.table}") as conn:
            self._db.upsert(conn, table_state, row)

    def reset(self, job: str, tables: Sequence[str] | None) -> list[str]:
        """Mark tables (all of the job's when None) for a full copy and forget their watermarks.

        Names that never ran are accepted and returned too: their next run is a full copy anyway.
        """
        stmt = sql_update(table_state).where(table_state.c.job == job).values(
            needs_full=True, watermark=None, watermark_type=None)
        with self._db.writing(f"reset the state of job {job!r}") as conn:
            if tables is None:
                names = list(conn.execute(select(table_state.c.table_name).where(table_state.c.job == job)
                                          .order_by(table_state.c.table_name)).scalars())
                conn.execute(stmt)
                return names
            names = list(dict.fromkeys(tables))
            if names:
                conn.execute(stmt.where(table_state.c.table_name.in_(names)))
            return names

    # ---- runs

    def start_run(self, run: RunRecord) -> None:
        """Record a run as started (its table records are written by :meth:`finish_run`)."""
        with self._db.writing(f"record the start of run {run.run_id}") as conn:
            conn.execute(insert(runs).values(**_run_row(run)))

    def finish_run(self, run: RunRecord) -> None:
        """Write the run and all its table records in one transaction (also for a run never started here)."""
        self._ensure_job_meta()
        with self._db.writing(f"record the end of run {run.run_id}") as conn:
            self._db.upsert(conn, runs, _run_row(run))
            conn.execute(delete(run_tables).where(run_tables.c.run_id == run.run_id))
            conn.execute(delete(run_notes).where(run_notes.c.run_id == run.run_id))
            conn.execute(delete(run_counts).where(run_counts.c.run_id == run.run_id))
            if run.tables:
                conn.execute(insert(run_tables), [
                    _run_table_row(run.run_id, position, record) for position, record in enumerate(run.tables)
                ])
            notes = [{"run_id": run.run_id, "position": position, "note": redact(record.note)}
                     for position, record in enumerate(run.tables) if record.note]
            if notes:
                conn.execute(insert(run_notes), notes)
            counts = [{"run_id": run.run_id, "position": position, "counts": json.dumps(_counts(record))}
                      for position, record in enumerate(run.tables) if _counts(record)]
            if counts:
                conn.execute(insert(run_counts), counts)

    def history(self, job: str, limit: int = 20) -> list[RunRecord]:
        """The job's runs, newest first, each with its table records in the order they were reported."""
        if limit <= 0:
            return []
        self._ensure_job_meta()
        with self._db.reading(f"read the run history of job {job!r}") as conn:
            run_rows = conn.execute(select(runs).where(runs.c.job == job)
                                    .order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
                                    .limit(limit)).mappings().all()
            ids = [row["run_id"] for row in run_rows]
            table_rows = conn.execute(select(run_tables).where(run_tables.c.run_id.in_(ids))
                                      .order_by(run_tables.c.run_id, run_tables.c.position)).mappings().all()
            notes = {(row.run_id, row.position): row.note for row in conn.execute(
                select(run_notes).where(run_notes.c.run_id.in_(ids)))}
            counts = {(row.run_id, row.position): json.loads(row.counts) for row in conn.execute(
                select(run_counts).where(run_counts.c.run_id.in_(ids)))}
        records = {row["run_id"]: _run_record(row) for row in run_rows}
        for row in table_rows:
            record = _table_run_record(row)
            record.note = notes.get((row["run_id"], row["position"]))
            extra = counts.get((row["run_id"], row["position"]), {})
            record.changes, record.reread_rows = extra.get("changes"), extra.get("reread_rows")
            record.dead_letters = extra.get("dead_letters")
            records[row["run_id"]].tables.append(record)
        return list(records.values())

    def adopt_unscoped(self, job: str, scope: str) -> bool:
        """A store written before state was keyed by destination holds a job's rows under its bare name: the
        first scope of the job that opens the store takes them over, once (later scopes start from their own
        destination's markers). Returns whether it did."""
        def found(conn: Connection, name: str) -> bool:
            return conn.execute(select(table_state.c.job).where(table_state.c.job == name).limit(1)).first() \
                is not None

        with self._db.reading(f"look for unscoped state of job {job!r}") as conn:
            if not found(conn, job) or found(conn, scope):
                return False
        self._ensure_job_meta()
        with self._db.writing(f"move the state of job {job!r} to {scope!r}") as conn:
            if not found(conn, job) or found(conn, scope):
                return False
            for table in (table_state, runs, job_meta):
                conn.execute(sql_update(table).where(table.c.job == job).values(job=scope))
        return True

    # ---- small per-job values

    def get_meta(self, job: str, key: str) -> str | None:
        """The value stored under ``key`` for ``job`` (e.g. a schedule's last fire time), or None."""
        self._ensure_job_meta()
        with self._db.reading(f"read {key!r} of job {job!r}") as conn:
            value = conn.execute(select(job_meta.c.value).where(
                job_meta.c.job == job, job_meta.c.key == key)).scalar()
        return None if value is None else str(value)

    def set_meta(self, job: str, key: str, value: str) -> None:
        """Store ``value`` under ``key`` for ``job`` (insert or replace)."""
        self._ensure_job_meta()
        with self._db.writing(f"save {key!r} of job {job!r}") as conn:
            self._db.upsert(conn, job_meta, {"job": job, "key": key, "value": value})

    def _ensure_job_meta(self) -> None:
        """``job_meta`` and ``run_notes`` came after schema version 1 without a bump: create them in an older
        store on first use."""
        if self._job_meta_ready:
            return
        with self._db.writing("create the job_meta and run_notes tables") as conn:
            if self._db.dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_DDL_LOCK_KEY)))
            job_meta.create(conn, checkfirst=True)
            run_notes.create(conn, checkfirst=True)
            run_counts.create(conn, checkfirst=True)
        self._job_meta_ready = True

    # ---- run lock

    def acquire_lock(self, job: str, holder: str, *, wait_s: float = 0.0,
                     ttl_s: float = run_lock.DEFAULT_TTL_S,
                     auto_heartbeat: bool = True) -> run_lock.RunLock | None:
        """Take the job's run lock, waiting up to ``wait_s``; None when another live run holds it.

        ``holder`` labels the owner in messages (e.g. the run id). The lock is renewed in the background every
        ``ttl_s / 3`` and presumed dead ``ttl_s`` after its last renewal. See :mod:`offsets.lock`.
        """
        lock = run_lock.acquire(self._db, job, holder, wait_s=wait_s, ttl_s=ttl_s,
                                auto_heartbeat=auto_heartbeat)
        self._held = [held for held in self._held if held.held]
        if lock is not None:
            self._held.append(lock)
            self.interrupt_orphans(job)
        return lock

    def interrupt_orphans(self, job: str) -> list[str]:
        """Mark the job's ``running`` runs ``interrupted``: call it holding the job's run lock, which every run
        holds while it runs, so a run still ``running`` then is one whose process died (SIGKILL, a crash, a
        power cut). Returns their run ids."""
        from datetime import UTC, datetime

        with self._db.writing(f"mark the orphaned runs of job {job!r} interrupted") as conn:
            ids = list(conn.execute(select(runs.c.run_id).where(
                runs.c.job == job, runs.c.status == "running")).scalars())
            if ids:
                conn.execute(sql_update(runs).where(runs.c.run_id.in_(ids), runs.c.status == "running")
                             .values(status="interrupted", finished_at=datetime.now(UTC)))
        for run_id in ids:
            log.warning("job %s: run %s was still marked running with no process behind it: interrupted",
                        job, run_id)
        return ids

    def lock_info(self, job: str) -> run_lock.LockInfo | None:
        """Who holds the job's run lock, or None."""
        return run_lock.read_lock(self._db, job)

    def break_lock(self, job: str) -> bool:
        """Remove the job's run lock whoever holds it; True when there was one."""
        return run_lock.break_lock(self._db, job)

    # ---- lifetime

    def close(self) -> None:
        """Release the locks this store still holds and close its connections."""
        for lock in self._held:
            try:
                lock.release()
            except StateError as err:
                log.warning("%s", err)
        self._held = []
        self._db.close()

    def __enter__(self) -> SqlStateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlStateStore({self.url!r})"


# ---------------------------------------------------------------- rows <-> records


def _state_row(job: str, state: TableState) -> dict[str, Any]:
    try:
        extra = json.dumps(state.extra)
    except (TypeError, ValueError) as exc:
        raise StateError(f"state of {job}/{state.table}: extra must be JSON-serialisable: {exc}",
                         retriable=False) from exc
    return {
        "job": job, "table_name": state.table,
        "watermark": encode_watermark(state.watermark),
        "watermark_type": state.watermark_type or watermark_type_name(state.watermark),
        "last_run_id": state.last_run_id, "last_run_at": state.last_run_at,
        "last_status": state.last_status, "last_error": _redacted(state.last_error),
        "needs_full": bool(state.needs_full), "extra": extra,
    }


def _counts(record: TableRunRecord) -> dict[str, Any]:
    """The figures of ``record`` kept in ``run_counts`` (none: no row)."""
    counts: dict[str, Any] = {}
    if record.changes is not None:
        counts["changes"] = record.changes
    if record.reread_rows is not None:
        counts["reread_rows"] = record.reread_rows
    if record.dead_letters is not None:
        counts["dead_letters"] = record.dead_letters
    return counts


def _redacted(text: str | None) -> str | None:
    """Errors may quote a connection URL: the store never keeps a password, whoever forgot to redact."""
    return None if text is None else redact(text)


def _table_state(row: Mapping[Any, Any]) -> TableState:
    return TableState(
        table=row["table_name"], watermark=decode_watermark(row["watermark"]),
        watermark_type=row["watermark_type"], last_run_id=row["last_run_id"], last_run_at=row["last_run_at"],
        last_status=row["last_status"], last_error=row["last_error"], needs_full=bool(row["needs_full"]),
        extra=json.loads(row["extra"] or "{}"),
    )


def _run_row(run: RunRecord) -> dict[str, Any]:
    return {"run_id": run.run_id, "job": run.job, "started_at": run.started_at,
            "finished_at": run.finished_at, "status": run.status, "trigger": run.trigger}


def _run_record(row: Mapping[Any, Any]) -> RunRecord:
    return RunRecord(run_id=row["run_id"], job=row["job"], started_at=row["started_at"],
                     finished_at=row["finished_at"], status=row["status"], trigger=row["trigger"])


def _run_table_row(run_id: str, position: int, record: TableRunRecord) -> dict[str, Any]:
    return {
        "run_id": run_id, "position": position, "table_name": record.table, "mode": record.mode,
        "status": record.status, "rows_read": record.rows_read, "rows_written": record.rows_written,
        "duration_s": record.duration_s, "watermark_before": encode_watermark(record.watermark_before),
        "watermark_after": encode_watermark(record.watermark_after),
        "null_watermark_rows": record.null_watermark_rows, "error": _redacted(record.error),
    }


def _table_run_record(row: Mapping[Any, Any]) -> TableRunRecord:
    return TableRunRecord(
        table=row["table_name"], mode=row["mode"], status=row["status"], rows_read=row["rows_read"],
        rows_written=row["rows_written"], duration_s=row["duration_s"],
        watermark_before=decode_watermark(row["watermark_before"]),
        watermark_after=decode_watermark(row["watermark_after"]),
        null_watermark_rows=row["null_watermark_rows"], error=row["error"],
    )
