"""copyjob: move tables and files between systems from one small YAML job file.

The Python API is :mod:`copyjob.api`, re-exported here and imported on first use, so ``import copyjob``
stays light: it loads neither pydantic, SQLAlchemy, pyarrow nor any driver. (Type checkers see the names
through ``copyjob/__init__.pyi``.)
"""

from __future__ import annotations

import importlib
from typing import Any

_FROM = {**dict.fromkeys(("Job", "RunResult", "StatusResult", "TableResult", "TableStatus", "history", "load_job",
                          "run", "status"), "copyjob.api"),
         **dict.fromkeys(("CopyjobError", "JobFileError"), "copyjob.core.errors")}


def __getattr__(name: str) -> Any:
    if name == "__version__":  # one source: the installed distribution's metadata (pyproject's version)
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("copyjob")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    if name in _FROM:  # imported by name: the package's own imports stay empty (no cycles through it)
        return getattr(importlib.import_module(_FROM[name]), name)
    raise AttributeError(f"module 'copyjob' has no attribute {name!r}")


__all__ = ["CopyjobError", "Job", "JobFileError", "RunResult", "StatusResult", "TableResult", "TableStatus",
           "__version__", "history", "load_job", "run", "status"]
