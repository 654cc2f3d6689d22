"""Log lines that say which job, run and table they are about, as text (the default) or one JSON object per
line (``--log-format json`` or ``COPYJOB_LOG_FORMAT=json``) for log collectors.

The job, run id and table come from a context variable set where a run and a table start
(:func:`log_context`, :func:`bind_log_context`), so no call site passes them; a record's own ``extra``
(``event``, ``rows``, ``error``, or a ``job`` of its own) wins over the context. Each thread starts with an
empty context: serve's worker threads set theirs when their run starts.

Only the standard library is imported here: ``copyjob --help`` loads this module.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
FORMAT_ENV = "COPYJOB_LOG_FORMAT"
CONTEXT_FIELDS = ("job", "run_id", "table")
EXTRA_FIELDS = ("event", "rows", "error")

_context: ContextVar[dict[str, str]] = ContextVar("copyjob_log_context", default={})  # noqa: B039 (never mutated)
_format: LogFormat = "text"


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Add ``fields`` (job=, run_id=, table=) to every record logged inside the block (this thread)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**fields: str) -> None:
    """Add ``fields`` until the enclosing :func:`log_context` ends (e.g. the run id, once it is known)."""
    _context.set({**_context.get(), **fields})


class ContextFilter(logging.Filter):
    """Copies the context's fields onto each record (unless the record brought its own through ``extra``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "job", "run_id", "table", "event", "rows", "error", "message"}`` on one
    line; fields a record does not have are left out."""

    def format(self, record: logging.LogRecord) -> str:
        from copyjob.core.urls import redact

        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        for key in (*CONTEXT_FIELDS, *EXTRA_FIELDS):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = redact(value) if key == "error" and isinstance(value, str) else value
        entry["message"] = redact(record.getMessage())
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def chosen_format(flag: str | None) -> LogFormat:
    """The ``--log-format`` flag, else ``COPYJOB_LOG_FORMAT``, else text."""
    value = (flag or os.environ.get(FORMAT_ENV) or "text").strip().lower()
    if value not in ("text", "json"):
        from copyjob.core.errors import UsageError

        raise UsageError(f"log format {value!r}: use text or json (--log-format, {FORMAT_ENV})")
    return "json" if value == "json" else "text"


def configure(log_format: LogFormat) -> None:
    """Switch the handlers configured so far (the root's, from ``main``) to ``log_format``; handlers added
    later take theirs from :func:`formatter`."""
    global _format
    _format = log_format
    for handler in logging.getLogger().handlers:
        _adopt(handler, handler.formatter)


def formatter(text_format: str) -> logging.Formatter:
    """The formatter for a new handler: ``text_format`` in text mode, JSON otherwise."""
    return JsonFormatter() if _format == "json" else logging.Formatter(text_format)


def handler(text_format: str) -> logging.Handler:
    """A stderr handler in the chosen format, with the run's context on its records."""
    made = logging.StreamHandler()
    _adopt(made, logging.Formatter(text_format))
    return made


def _adopt(target: logging.Handler, text: logging.Formatter | None) -> None:
    if _format == "json":
        target.setFormatter(JsonFormatter())
    elif text is not None:
        target.setFormatter(text)
    if not any(isinstance(f, ContextFilter) for f in target.filters):
        target.addFilter(ContextFilter())


__all__ = ["FORMAT_ENV", "ContextFilter", "JsonFormatter", "bind_log_context", "chosen_format", "configure",
           "formatter", "handler", "log_context"]
