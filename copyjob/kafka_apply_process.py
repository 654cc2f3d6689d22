"""The apply side of a ``transport: kafka`` run or stream in a child process, so capture and apply each get a
core (both are CPU-bound Python; in one process they share one GIL). Kafka already sits between them: the
child is an ordinary member of the job's consumer group.

The parent (:class:`ChildApply`) starts ``python -m copyjob.kafka_apply_child <fd> <parent pid>`` with one
end of a socket pair and sends it an :class:`ApplyRequest` (the job as loaded and validated by the parent,
the tables, the run id: data, never a live connection). The child opens its own transport and destination
and applies through the same :class:`copyjob.kafka_pipeline.LocalApply` as the in-process path, so every
commit order is the same: each partition's offset is committed in the destination with its data. Messages:

- parent → child: ``("catch_up", ends)`` apply until the destination holds ``ends``; ``("stop",)``;
- child → parent: ``("result", ApplyResult)`` once, as it ends (per table counts of
  :class:`~copyjob.apply.kafka_apply.TableStats`; the apply's failure as text with its retriable mark).

The child never outlives the parent: it asks Linux to SIGKILL it when its parent dies (``PR_SET_PDEATHSIG``),
and a closed socket (the parent gone, on any system) stops it too. SIGINT and SIGTERM (Ctrl-C reaches the
whole process group) make it finish its batch and report, as the parent's stop does. It holds no run lock,
no replication slot and writes nothing to the state store: what it leaves behind when killed is what a killed
in-process apply leaves (nothing applied twice: the destination's markers say where each partition stands).

``COPYJOB_KAFKA_CHILD=0`` keeps the apply in the parent's process (``1`` forces the child); by default the
child is used when at least :data:`CHILD_MIN_CPUS` CPUs are available to the process (:func:`child_wanted`).
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from copyjob.core.errors import CopyjobError

if TYPE_CHECKING:
    from copyjob.apply.kafka_apply import ApplyTable, TableStats
    from copyjob.loader import LoadedJob

log = logging.getLogger("copyjob.kafka")
CHILD_ENV = "COPYJOB_KAFKA_CHILD"
CHILD_MIN_CPUS = 4
"""On fewer CPUs the broker and the databases, often on the same machine, take the second core: on 2 CPUs the
child measured no faster when quiet and slower when busy (benchmarks/kafka_cdc_bench). A fixed rule, not the
load average, so that a job behaves the same from one run to the next."""
STOP_WAIT_S = 120.0
"""How long the parent waits for a stopped child to finish its batch before killing it."""


def child_wanted() -> bool:
    """``COPYJOB_KAFKA_CHILD`` (0/1), else whether this process has :data:`CHILD_MIN_CPUS` CPUs or more."""
    value = os.environ.get(CHILD_ENV, "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return cpus >= CHILD_MIN_CPUS


@dataclass
class ApplyRequest:
    """What the child needs to rebuild the apply side."""

    loaded: LoadedJob
    tables: list[str]
    """Target names of the tables to apply."""
    run_id: str
    outages: bool
    """Ride out a destination outage (``copyjob stream``) instead of failing at once (``copyjob run``)."""
    log_levels: dict[str, int]
    log_formatters: list[logging.Formatter]
    log_context: dict[str, str] = field(default_factory=dict)


@dataclass
class ApplyResult:
    """What the child reports as it ends: each table's counts, and its failure with its retriable mark."""

    stats: dict[str, TableStats]
    error: str | None = None
    retriable: bool = False


class ChildApply:
    """The apply side in a child process, as the parent drives it (see the module docstring)."""

    def __init__(self, loaded: LoadedJob, tables: list[ApplyTable], run_id: str, *, outages: bool) -> None:
        self.tables = tables
        self.result: ApplyResult | None = None
        ours, theirs = socket.socketpair()
        request = ApplyRequest(loaded, [t.name for t in tables], run_id, outages, *_logging_setup(),
                               log_context=_current_log_context())
        # started from the thread that waits for it to end: Linux's parent-death signal follows that thread
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "copyjob.kafka_apply_child", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=2, close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        try:
            self.conn.send(request)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            self.conn.close()
            raise
        log.debug("apply process %d started", self.proc.pid)

    def follow(self, done: Callable[[], bool], stop: Callable[[], bool]) -> None:
        """Let the child apply until ``done()`` or ``stop()``; raise its failure if it ends meanwhile."""
        while not (done() or stop()):
            if self._ended(0.2):
                self._take(early=True)

    def catch_up(self, ends: dict[tuple[str, int], int], stop: Callable[[], bool]) -> None:
        """Until the destination holds ``ends`` (or ``stop()``): the child's result, its failure raised."""
        self._send(("catch_up", ends))
        asked_stop = False
        while not self._ended(0.2):
            if stop() and not asked_stop:
                self._send(("stop",))
                asked_stop = True
        self._take()

    def finish(self) -> None:
        """Stop the child after its batch and take its result; raise its failure."""
        self._send(("stop",))
        while not self._ended(0.2):
            pass
        self._take()

    def close(self) -> None:
        """Never leaves the child behind: stopped, waited for, killed when it does not end in time."""
        self._send(("stop",))
        try:
            self.proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("the apply process %d did not stop within %.0f s: killed", self.proc.pid, STOP_WAIT_S)
            self.proc.kill()
            self.proc.wait()
        finally:
            self.conn.close()

    # ------------------------------------------------------------ the channel

    def _send(self, message: tuple[Any, ...]) -> None:
        if self.result is not None:
            return  # it has ended
        try:
            self.conn.send(message)
        except OSError:  # the child is gone: _ended says how it ended
            pass

    def _ended(self, timeout_s: float) -> bool:
        """Whether the child has ended (its result taken, or its death noted)."""
        if self.result is not None:
            return True
        try:
            if not self.conn.poll(timeout_s):
                return False
            message = self.conn.recv()
        except (EOFError, OSError):
            self.result = ApplyResult({}, f"the apply process ended unexpectedly (exit code {self.proc.wait()})")
            return True
        if message[0] == "result":
            self.result = message[1]
        return self.result is not None

    def _take(self, *, early: bool = False) -> None:
        """The child's counts into the tables; its failure raised (and ending before it was asked, one too)."""
        result = self.result
        assert result is not None
        for t in self.tables:
            if t.name in result.stats:
                t.stats = result.stats[t.name]
        if result.error is not None:
            raise CopyjobError(result.error, retriable=result.retriable)
        if early:
            raise CopyjobError("the apply process stopped before the capture finished")


def _logging_setup() -> tuple[dict[str, int], list[logging.Formatter]]:
    """The levels and stderr formats of this process's logging, for the child to log as the parent does."""
    root = logging.getLogger()
    levels = {"": root.level}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if name.startswith("copyjob") and isinstance(logger, logging.Logger) and logger.level:
            levels[name] = logger.level
    formatters = [h.formatter or logging.Formatter() for h in root.handlers
                  if type(h) is logging.StreamHandler and getattr(h, "stream", None) is sys.stderr]
    return levels, [f for f in formatters if _picklable(f)]


def _picklable(formatter: logging.Formatter) -> bool:
    try:
        pickle.dumps(formatter)
    except Exception:  # a formatter of someone else's making: the child logs in the default format
        return False
    return True


def _current_log_context() -> dict[str, str]:
    """The job, run id and table this thread's log lines carry (copyjob.logs)."""
    from copyjob.logs import CONTEXT_FIELDS, ContextFilter

    record = logging.LogRecord("", 0, "", 0, "", None, None)
    ContextFilter().filter(record)
    return {k: str(getattr(record, k)) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None}
