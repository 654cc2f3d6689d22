"""The per-job run lock: two runs of one job never overlap, across processes and (on PostgreSQL) machines.

The lock is one row of the ``locks`` table, keyed by job. Taking it is one write transaction:

1. insert the row, ignoring a conflict; one inserted row means the lock is ours;
2. otherwise read the current row; if its holder is alive, the lock is refused;
3. if the holder is gone (its ``expires_at`` has passed, or it ran on this host and its pid is dead), replace
   the row with a conditional update keyed by the old holder's token: of two processes racing for a stale
   lock only one update matches.

A held :class:`RunLock` renews ``expires_at`` from a background thread every third of its TTL, so a long run
keeps its lock while a crashed one loses it after at most one TTL (at once when the crash was on this host).
Expiry compares the clocks of the machines involved: keep them in sync (NTP) and the TTL well above any skew.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol

from copyjob.offsets.schema import locks
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from copyjob.core.errors import StateError

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60.0
"""A holder that has not renewed its lock for this long is presumed dead."""
POLL_INTERVAL_S = 0.25
HOSTNAME = socket.gethostname()


class Transactions(Protocol):
    """What the lock needs from the store: short transactions whose errors are already StateErrors."""

    def reading(self, action: str) -> AbstractContextManager[Connection]: ...

    def writing(self, action: str) -> AbstractContextManager[Connection]: ...


@dataclass(frozen=True)
class LockInfo:
    """Who holds a job's run lock (for messages such as "job already running")."""

    job: str
    holder: str
    pid: int
    hostname: str
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime

    def describe(self) -> str:
        since = self.acquired_at.isoformat(sep=" ", timespec="seconds")
        return f"held by {self.holder} (pid {self.pid} on {self.hostname}) since {since}"


class RunLock:
    """A held run lock. Use it as a context manager: it is released on exit.

    ``check()`` raises StateError when the lock was lost (it expired while this process was stalled and
    another run took it): call it before committing anything that relies on running alone.
    """

    def __init__(self, tx: Transactions, info: LockInfo, token: str, ttl_s: float,
                 auto_heartbeat: bool) -> None:
        self.info = info
        self._tx = tx
        self._token = token
        self._ttl = timedelta(seconds=ttl_s)
        self._released = False
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if auto_heartbeat:
            self._thread = threading.Thread(
                target=self._renew_until_stopped, args=(ttl_s / 3,), name=f"copyjob-lock-{info.job}",
                daemon=True,
            )
            self._thread.start()

    @property
    def job(self) -> str:
        return self.info.job

    @property
    def holder(self) -> str:
        return self.info.holder

    @property
    def held(self) -> bool:
        return not self._released and self._lost is None

    def check(self) -> None:
        """Raise StateError if the lock has been released or lost."""
        if self._lost is not None:
            raise StateError(self._lost, retriable=False)
        if self._released:
            raise StateError(f"run lock of job {self.job!r} was already released", retriable=False)

    def heartbeat(self) -> None:
        """Push the expiry one TTL into the future; StateError if another run has taken the lock meanwhile."""
        self.check()
        now = _now()
        with self._tx.writing(f"renew the run lock of job {self.job!r}") as conn:
            renewed = conn.execute(
                update(locks).where(locks.c.job == self.job, locks.c.token == self._token)
                .values(heartbeat_at=now, expires_at=now + self._ttl)
            ).rowcount
        if renewed != 1:
            self._lost = f"run lock of job {self.job!r} was lost: another run took it over after it expired"
            raise StateError(self._lost, retriable=False)

    def release(self) -> None:
        """Stop renewing and delete the row (only if it is still ours). Releasing twice is harmless."""
        if self._released:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._released = True
        with self._tx.writing(f"release the run lock of job {self.job!r}") as conn:
            conn.execute(delete(locks).where(locks.c.job == self.job, locks.c.token == self._token))

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.release()
        except StateError as err:
            if exc is None:
                raise
            # do not hide the error that ended the run; the lock expires after its TTL anyway
            log.warning("could not release the run lock of job %r: %s", self.job, err)

    def _renew_until_stopped(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.heartbeat()
            except StateError as err:
                if self._lost is not None:
                    log.error("%s", err)
                    return
                log.warning("could not renew the run lock of job %r (will retry): %s", self.job, err)


def acquire(tx: Transactions, job: str, holder: str, *, wait_s: float = 0.0, ttl_s: float = DEFAULT_TTL_S,
            auto_heartbeat: bool = True) -> RunLock | None:
    """Take the run lock of ``job``, waiting up to ``wait_s`` seconds; None when another live run holds it."""
    if wait_s < 0 or ttl_s <= 0:
        raise ValueError(f"wait_s must be >= 0 and ttl_s > 0 (got wait_s={wait_s}, ttl_s={ttl_s})")
    deadline = time.monotonic() + wait_s
    while True:
        taken = _try_acquire(tx, job, holder, ttl_s)
        if taken is not None:
            info, token = taken
            return RunLock(tx, info, token, ttl_s, auto_heartbeat)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(POLL_INTERVAL_S, remaining))


def read_lock(tx: Transactions, job: str) -> LockInfo | None:
    """The current holder of the job's lock, or None (an expired row is still shown: it is not yet taken)."""
    with tx.reading(f"read the run lock of job {job!r}") as conn:
        row = conn.execute(select(locks).where(locks.c.job == job)).mappings().first()
    return _info(row) if row is not None else None


def break_lock(tx: Transactions, job: str) -> bool:
    """Delete the job's lock whoever holds it (an operator's escape hatch); True when there was one."""
    with tx.writing(f"break the run lock of job {job!r}") as conn:
        return conn.execute(delete(locks).where(locks.c.job == job)).rowcount > 0


def _try_acquire(tx: Transactions, job: str, holder: str, ttl_s: float) -> tuple[LockInfo, str] | None:
    """One attempt, in one transaction (steps 1-3 of the module docstring)."""
    now = _now()
    token = uuid.uuid4().hex
    row: dict[str, Any] = {
        "job": job, "holder": holder, "token": token, "pid": os.getpid(), "hostname": HOSTNAME,
        "acquired_at": now, "heartbeat_at": now, "expires_at": now + timedelta(seconds=ttl_s),
    }
    with tx.writing(f"take the run lock of job {job!r}") as conn:
        for _ in range(3):  # the row may vanish between our insert and our read (PostgreSQL): try again
            if _insert_if_absent(conn, row):
                return _info(row), token
            current = conn.execute(select(locks).where(locks.c.job == job)).mappings().first()
            if current is None:
                continue
            if not _is_stale(current, now):
                return None
            if _replace(conn, current["token"], row):
                log.warning("took over the stale run lock of job %r (%s)", job, _info(current).describe())
                return _info(row), token
            return None
    return None


def _insert_if_absent(conn: Connection, row: dict[str, Any]) -> bool:
    insert: Callable[..., Any] = sqlite_insert
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # only then: a CLI start pays less

        insert = pg_insert
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT DO NOTHING
    stmt = insert(locks).values(**row).on_conflict_do_nothing(index_elements=["job"]).returning(locks.c.token)
    return conn.execute(stmt).first() is not None


def _replace(conn: Connection, old_token: str, row: dict[str, Any]) -> bool:
    """Conditional update: succeeds only if the stale holder's row is still there unchanged."""
    values = {key: value for key, value in row.items() if key != "job"}
    stmt = update(locks).where(locks.c.job == row["job"], locks.c.token == old_token).values(**values)
    return conn.execute(stmt).rowcount == 1


def _is_stale(row: Mapping[Any, Any], now: datetime) -> bool:
    """The holder stopped renewing, or it ran on this host and its process is gone."""
    if row["expires_at"] <= now:
        return True
    return row["hostname"] == HOSTNAME and not pid_alive(row["pid"])


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (True when we cannot tell)."""
    if pid <= 0 or os.name == "nt":  # on Windows os.kill(pid, 0) would terminate the process
        return pid > 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to another user
        return True
    return True


def _info(row: Mapping[Any, Any]) -> LockInfo:
    return LockInfo(
        job=row["job"], holder=row["holder"], pid=row["pid"], hostname=row["hostname"],
        acquired_at=row["acquired_at"], heartbeat_at=row["heartbeat_at"], expires_at=row["expires_at"],
    )


def _now() -> datetime:
    return datetime.now(UTC)
