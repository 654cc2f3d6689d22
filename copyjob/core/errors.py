"""The one error hierarchy of copyjob.

::

    CopyjobError                      every error we raise; ``retriable`` says whether trying again may help
    ├── JobFileError                  the job file or a variable library is wrong (exit 2); names file, line, field
    │   └── JobFileProblems           several of them, found in one pass: one line each
    ├── UsageError                    a command line that cannot be carried out (exit 2)
    ├── ConfigurationError            the job is valid YAML but does not fit the systems (exit 2): a missing
    │                                 table, an unknown key column, an unsupported update method
    ├── ConnectorError                a failure inside a source or destination system
    │   ├── ConnectionFailed          cannot reach a system (retriable)
    │   ├── TransactionConflict       the server rolled a transaction back against another one (deadlock,
    │   │                             lock wait timeout, serialization failure): the same one again succeeds
    │   ├── AuthenticationFailed      wrong credentials (terminal: never retried)
    │   ├── TableNotFound             a table named in the job does not exist
    │   └── DataError                 a value the destination refused; names the table and, where known, the row
    │       └── BadFile               a source file that cannot be read (bad row, broken file, encoding): file:line
    ├── StateError                    the state store cannot be read or written
    └── MissingDependency             an optional package is not installed; says which extra to install

Exceptions from the libraries underneath are translated at the boundary with ``raise X(...) from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_TABLE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_SKIPPED = 3
EXIT_INTERRUPTED = 130


class CopyjobError(Exception):
    """Base of every copyjob error. ``retriable`` tells the runner whether a retry may succeed."""

    retriable: bool = False
    exit_code: int = EXIT_TABLE_FAILED

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class JobFileError(CopyjobError):
    """The job file (or variable library) is malformed. Formats as ``file:line: field: problem``."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.line = line
        self.field = field
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")

    @property
    def problems(self) -> tuple[JobFileError, ...]:
        """Each problem found, one ``file:line: field: problem`` line each (this error alone)."""
        return (self,)

    @staticmethod
    def of(problems: Sequence[JobFileError]) -> JobFileError:
        """One error for ``problems`` (at least one): itself when alone, else :class:`JobFileProblems`."""
        flat = [p for problem in problems for p in problem.problems]
        return flat[0] if len(flat) == 1 else JobFileProblems(flat)


class JobFileProblems(JobFileError):
    """Several problems found in one pass, ordered by file (as first met) then line; ``str`` is one line per
    problem, and ``file``, ``line`` and ``field`` are the first one's."""

    def __init__(self, problems: Sequence[JobFileError]) -> None:
        files = list(dict.fromkeys(p.file for p in problems))
        self._problems = tuple(sorted(problems, key=lambda p: (files.index(p.file), p.line or 0)))
        first = self._problems[0]
        self.file, self.line, self.field = first.file, first.line, first.field
        CopyjobError.__init__(self, "\n".join(str(p) for p in self._problems))

    @property
    def problems(self) -> tuple[JobFileError, ...]:
        return self._problems


class UsageError(CopyjobError):
    exit_code = 2


class ConfigurationError(CopyjobError):
    exit_code = 2


class ConnectorError(CopyjobError):
    pass


class ConnectionFailed(ConnectorError):
    retriable = True


class TransactionConflict(ConnectorError):
    """The server rolled the transaction back to settle a conflict with another one (two apply members writing
    one table; a deadlock, a lock wait timeout, a serialization failure): nothing of it was committed, and the
    same transaction tried again succeeds (``copyjob.core.retry.on_conflict``)."""

    retriable = True


class AuthenticationFailed(ConnectorError):
    retriable = False


class TableNotFound(ConnectorError):
    exit_code = 2


class DataError(ConnectorError):
    """``table``: the table whose value it is, when raised where several tables' values pass (a change capture
    decoding a log they share): the CDC orchestrator then fails that table alone."""

    def __init__(self, message: str, *, retriable: bool | None = None, table: object | None = None) -> None:
        super().__init__(message, retriable=retriable)
        self.table = table


class BadFile(DataError):
    """A source file that cannot be read: a row with the wrong number of fields, a broken Parquet file, bytes
    that do not decode. Formats as ``file:line: problem`` (``file: problem`` when the line is unknown)."""

    def __init__(self, problem: str, *, file: str, line: int | None = None) -> None:
        self.file = file
        self.line = line
        self.problem = problem
        super().__init__(f"{file}:{line}: {problem}" if line else f"{file}: {problem}")


class StateError(CopyjobError):
    retriable = True


class MissingDependency(CopyjobError, ImportError):
    exit_code = 2


def is_retriable(exc: BaseException) -> bool:
    """Walk the cause chain: the first copyjob error decides; authentication failures never retry."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, CopyjobError):
            return current.retriable
        current = current.__cause__ or current.__context__
    return False


def require(module: str, extra: str) -> None:
    """Raise MissingDependency naming the extra when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependency(f"{module} is not installed: pip install 'copyjob[{extra}]'")


def error_text(exc: BaseException) -> str:
    """The one-line text of a failure as runs report it: our errors by their message, others with their type
    (they are bugs or surprises), passwords in URLs redacted."""
    from copyjob.core.redaction import redact

    return redact(str(exc) if isinstance(exc, CopyjobError) else f"{type(exc).__name__}: {exc}")
