"""The child process of :class:`copyjob.kafka_apply_process.ChildApply` (see there): ``python -m
copyjob.kafka_apply_child <fd> <parent pid>`` applies a ``transport: kafka`` job's topics as its parent asks,
through the same :class:`copyjob.kafka_pipeline.LocalApply` as the in-process path, and reports once."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from copyjob.kafka_apply_process import ApplyResult
from copyjob.logs import ContextFilter, log_context

if TYPE_CHECKING:
    from copyjob.kafka_apply_process import ApplyRequest

log = logging.getLogger("copyjob.kafka")
_PR_SET_PDEATHSIG = 1


class _Inbox:
    """The parent's messages, read on a thread of their own; a signal or the parent's going away stops."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.ends: dict[tuple[str, int], int] | None = None
        self.stopped = threading.Event()
        self.message = threading.Event()
        threading.Thread(target=self._read, name="apply-inbox", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.stopped.set()
                self.message.set()
                return
            if message[0] == "catch_up":
                self.ends = message[1]
            else:
                self.stopped.set()
            self.message.set()

    def on_signal(self, _signum: int, _frame: Any) -> None:
        self.stopped.set()
        self.message.set()


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _configure_logging(request: ApplyRequest) -> None:
    root = logging.getLogger()
    for formatter in request.log_formatters:
        handler = logging.StreamHandler()
        handler.setFormatter(formatter)
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
    for name, level in request.log_levels.items():
        logging.getLogger(name or None).setLevel(level)


def serve_parent(conn: Connection) -> None:
    """The child's life: apply as asked, report once."""
    # imported once the child dies with its parent (main): loading Arrow and the drivers takes a while
    from copyjob.core.errors import error_text, is_retriable
    from copyjob.kafka_pipeline import LocalApply, Sides, apply_tables, open_transport

    try:
        request: ApplyRequest = conn.recv()
    except (EOFError, OSError):
        return  # the parent went away before it asked anything
    _configure_logging(request)
    inbox = _Inbox(conn)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, inbox.on_signal)
    loaded = request.loaded
    tables = apply_tables(loaded, [t for t in loaded.tables if t.spec.target_name in request.tables])
    error: str | None = None
    retriable = False
    with log_context(**request.log_context):
        sides: Sides | None = None
        try:
            sides = Sides(open_transport(loaded))
            side = LocalApply(loaded, tables, sides, request.run_id, inbox.stopped, outages=request.outages)
            side.follow(inbox.message.is_set, inbox.stopped.is_set)
            if inbox.ends is not None and not inbox.stopped.is_set():
                side.catch_up(inbox.ends, inbox.stopped.is_set)
        except Exception as exc:
            error, retriable = error_text(exc), is_retriable(exc)
        finally:
            if sides is not None:
                try:
                    sides.close()
                except Exception as exc:
                    error = error or error_text(exc)
    try:
        conn.send(("result", ApplyResult({t.name: t.stats for t in tables}, error, retriable)))
    except OSError:
        pass  # the parent is gone


def main(argv: list[str]) -> None:
    fd, parent = int(argv[0]), int(argv[1])
    _die_with_parent(parent)
    started = time.monotonic()
    serve_parent(Connection(fd))
    log.debug("apply process %d ended after %.1f s", os.getpid(), time.monotonic() - started)
    # what it opened is closed; the interpreter's teardown would only cost time (as copyjob.cli's exit)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
