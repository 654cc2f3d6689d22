"""A PostgreSQL replication connection (``replication=database``) on psycopg's libpq layer.

psycopg 3 has no replication API, but its ``pq`` module exposes what the streaming replication protocol needs:
simple-protocol commands (``CREATE_REPLICATION_SLOT``, ``START_REPLICATION``) and CopyBoth data. Frames:
``w`` XLogData (start, end, clock, payload), ``k`` primary keepalive (wal end, clock, reply requested); we send
``r`` standby status updates (write, flush, apply, clock, reply requested). Errors are translated into
copyjob's at this boundary, naming the missing privilege or setting.
"""

from __future__ import annotations

import select
import struct
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from copyjob.core.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionFailed,
    ConnectorError,
    CopyjobError,
)
from copyjob.core.urls import redact

PG_EPOCH_S = 946_684_800
KEEPALIVE = struct.Struct(">QQB").unpack_from
"""Primary keepalive after its ``k``: wal end, server clock, reply requested."""
XLOGDATA_HEADER = 25
"""``w``, data start, wal end, server clock: the pgoutput message follows."""
_STATUS = struct.Struct(">cQQQqB")
_AUTH_MARKERS = ("password authentication failed", "no password supplied", "authentication failed")
# The server went away under a command (restart, shutdown, crash): worth another attempt, not a verdict.
_GONE_MARKERS = ("server closed the connection", "terminating connection", "could not receive data",
                 "could not send data", "the database system is shutting down",
                 "the database system is starting up", "the database system is in recovery mode",
                 "connection to server", "no connection to the server", "SSL SYSCALL error")


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def _now_us() -> int:
    return int((time.time() - PG_EPOCH_S) * 1_000_000)


class ReplicationConnection:
    """One replication connection. Not thread-safe: one thread owns it."""

    def __init__(self, params: Mapping[str, Any], where: str) -> None:
        self._where = where
        self._user = str(params.get("user") or "")
        options = f"{params.get('options', '')} -c bytea_output=hex".strip()
        conninfo = make_conninfo(**{**params, "options": options, "replication": "database"})
        self._pg = pq.PGconn.connect(conninfo.encode())
        self._closed = False
        if self._pg.status != pq.ConnStatus.OK:
            message = self._error_text()
            self._pg.finish()
            raise self._connect_error(message)

    # ------------------------------------------------------------ commands

    def command(self, text: str) -> list[tuple[str | None, ...]]:
        """Run one replication command (simple query protocol) and return its rows as text."""
        result = self._pg.exec_(text.encode())
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            raise self.command_error(_result_text(result))
        rows = []
        for r in range(result.ntuples):
            rows.append(tuple(_text(result.get_value(r, c)) for c in range(result.nfields)))
        return rows

    def start(self, slot: str, lsn: int, options: Mapping[str, str]) -> None:
        opts = ", ".join(f"{k} '{v}'" for k, v in options.items())
        text = f'START_REPLICATION SLOT "{slot}" LOGICAL {format_lsn(lsn)} ({opts})'
        result = self._pg.exec_(text.encode())
        if result.status != pq.ExecStatus.COPY_BOTH:
            raise self.command_error(_result_text(result) or self._error_text())
        self._pg.nonblocking = 1

    # ------------------------------------------------------------ streaming

    def read(self) -> bytes | None:
        """The next CopyData frame, or None when none is buffered (see :meth:`wait`)."""
        try:
            size, data = self._pg.get_copy_data(1)
        except psycopg.Error as exc:
            raise self._lost() from exc
        if size > 0:
            return bytes(data)
        if size == 0:
            return None
        if size == -1:
            result = self._pg.get_result()
            text = _result_text(result) if result is not None else ""
            raise ConnectionFailed(f"the server ended replication on {self._where}: {text or 'copy done'}")
        raise self._lost()

    def wait(self, timeout_s: float) -> None:
        """Wait until the socket is readable (or ``timeout_s``), then take in what arrived."""
        readable, _, _ = select.select([self._pg.socket], [], [], max(0.0, timeout_s))
        if readable:
            try:
                self._pg.consume_input()
            except psycopg.Error as exc:
                raise self._lost() from exc

    def send_status(self, write_lsn: int, flush_lsn: int, *, reply: bool = False) -> None:
        """Standby status update: ``flush_lsn`` (and apply) is what the server may release."""
        frame = _STATUS.pack(b"r", write_lsn, flush_lsn, flush_lsn, _now_us(), 1 if reply else 0)
        try:
            sent = self._pg.put_copy_data(frame) == 1 and self._pg.flush() >= 0
        except psycopg.Error as exc:
            raise self._lost() from exc
        if not sent:
            raise self._lost()

    def end_copy(self, timeout_s: float = 5.0) -> None:
        """End streaming politely (CopyDone) and wait for the server's answer: once it has answered, it has
        processed every status update sent before."""
        deadline = time.monotonic() + timeout_s
        try:
            self._pg.put_copy_end()
            self._pg.flush()
            while time.monotonic() < deadline:
                size, _ = self._pg.get_copy_data(1)
                if size == 0:
                    self.wait(0.05)
                elif size < 0:
                    break
            while time.monotonic() < deadline:
                if self._pg.is_busy():
                    self.wait(0.05)
                    continue
                if self._pg.get_result() is None:
                    break
        except (psycopg.Error, CopyjobError):
            pass  # the connection is going away anyway

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pg.finish()

    # ------------------------------------------------------------ errors

    def _error_text(self) -> str:
        return redact(" ".join(self._pg.error_message.decode(errors="replace").split()))

    def _lost(self) -> ConnectionFailed:
        return ConnectionFailed(f"lost the replication connection to {self._where}: {self._error_text()}")

    def _connect_error(self, text: str) -> CopyjobError:
        if "must be superuser or replication role" in text or "permission denied to start WAL sender" in text:
            return ConfigurationError(f"role {self._user or '?'} lacks REPLICATION on {self._where}: "
                                      f"ALTER ROLE {self._user or '<role>'} REPLICATION (or use a role that has it)")
        if any(m in text for m in _AUTH_MARKERS):
            return AuthenticationFailed(f"PostgreSQL rejected the credentials for {self._where}: {text}")
        return ConnectionFailed(f"cannot open a replication connection to {self._where}: {text}")

    def command_error(self, text: str) -> CopyjobError:
        return replication_error(text, self._where)


def replication_error(text: str, where: str) -> CopyjobError:
    """The copyjob error for a failed replication command, with the fix when we know it."""
    if "wal_level" in text:
        return ConfigurationError(f"{where}: logical decoding needs wal_level = logical; set it in "
                                  "postgresql.conf and restart PostgreSQL")
    if "all replication slots are in use" in text:
        return ConfigurationError(f"{where}: all replication slots are in use: raise max_replication_slots or "
                                  "drop unused slots")
    if "is active for PID" in text:
        return ConnectorError(f"{where}: {text} (is another copyjob stream of this job running?)", retriable=True)
    if "does not exist" in text:
        return ConfigurationError(f"{where}: {text}")
    if any(m in text for m in _GONE_MARKERS):
        return ConnectionFailed(f"lost the replication connection to {where}: {text}")
    return ConnectorError(f"replication command failed on {where}: {text}")


def _result_text(result: Any) -> str:
    message = result.error_message if result is not None else b""
    return redact(" ".join(message.decode(errors="replace").split()))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()
