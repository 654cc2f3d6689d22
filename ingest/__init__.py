"""Change capturers: the watermark poller for incremental copies, the file-set planner and watcher, and the
log sources (PostgreSQL: :mod:`~ingest.postgres_cdc`, MySQL/MariaDB: :mod:`~ingest.mysql_cdc`), opened by URL
scheme with :func:`open_log_source`. A log source's module is imported only when one is opened
(``copyjob --help`` imports no database driver)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from copyjob.ingest.watermark import IncrementPlan, plan_full, plan_incremental

from copyjob.core.errors import ConfigurationError

if TYPE_CHECKING:
    from copyjob.core.capture import CaptureOptions, LogSource
    from copyjob.core.contracts import Source, StreamPositions
    from copyjob.core.urls import ConnectionUrl

LOG_SOURCES = {
    "postgresql": "copyjob.ingest.postgres_cdc.capture:PostgresCdc",
    "mysql": "copyjob.ingest.mysql_cdc.capture:MysqlCdc",
    "mariadb": "copyjob.ingest.mysql_cdc.capture:MysqlCdc",
}
"""URL scheme → the :class:`~copyjob.core.capture.LogSource` class (``module:Class``), constructed as
``Class(url, name, options, source, positions)``."""


def open_log_source(url: ConnectionUrl, name: str, options: CaptureOptions, source: Source,
                    positions: StreamPositions | None = None) -> LogSource:
    """The log source of ``url``. ``name`` names the defaults the options leave open (slot and publication
    ``copyjob_<name>``, MySQL server id); ``source`` is the snapshot's source connection; ``positions`` is where
    the job records how far it confirmed the stream (to notice another consumer of a shared slot)."""
    entry = LOG_SOURCES.get(url.scheme)
    if entry is None:
        raise ConfigurationError(f"cdc needs a PostgreSQL or MySQL/MariaDB source, not {url.scheme}://")
    module, _, cls = entry.partition(":")
    log_source: LogSource = getattr(importlib.import_module(module), cls)(url, name, options, source, positions)
    return log_source


__all__ = ["LOG_SOURCES", "IncrementPlan", "open_log_source", "plan_full", "plan_incremental"]
