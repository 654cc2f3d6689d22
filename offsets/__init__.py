"""offsets: the job's state — per-table watermarks and outcomes, run history and the per-job run lock.

One implementation (:class:`SqlStateStore`) serves SQLite, the default file ``<job dir>/.copyjob/state.db``,
and PostgreSQL for a shared deployment::

    with open_state_store(default_state_url(job_file)) as store:
        lock = store.acquire_lock(job, holder=run_id)
        if lock is None:
            ...  # already running: store.lock_info(job).describe() says by whom
        with lock:
            state = store.load(job, "public.orders")
            ...
            lock.check()  # still ours: safe to commit
            store.save(job, state)

SQLAlchemy is imported on first use, not with this package, so the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from copyjob.offsets.lock import LockInfo, RunLock
    from copyjob.offsets.store import SqlStateStore

__all__ = ["LockInfo", "RunLock", "SqlStateStore", "default_state_url", "open_state_store"]

STATE_DIR = ".copyjob"
STATE_FILE = "state.db"


def default_state_url(job_file: Path) -> str:
    """``sqlite:////abs/job/dir/.copyjob/state.db``: the state lives next to the job, whatever the cwd."""
    path = (Path(job_file).expanduser().resolve().parent / STATE_DIR / STATE_FILE).as_posix()
    return f"sqlite:///{path}"


def open_state_store(url: str) -> SqlStateStore:
    """Open (creating folder and tables on first use) the store at ``url``.

    ``url`` is ``sqlite:///relative.db``, ``sqlite:////absolute.db``, a bare file path (SQLite) or
    ``postgresql://user:password@host:5432/database``. Raises ConfigurationError for another scheme and
    StateError when the store cannot be opened.
    """
    from copyjob.offsets.store import SqlStateStore

    return SqlStateStore(url)


def __getattr__(name: str) -> Any:
    """Lazy exports: importing ``offsets`` must not import SQLAlchemy."""
    if name in ("LockInfo", "RunLock"):
        from copyjob.offsets import lock

        return getattr(lock, name)
    if name == "SqlStateStore":
        from copyjob.offsets.store import SqlStateStore

        return SqlStateStore
    raise AttributeError(f"module 'copyjob.offsets' has no attribute {name!r}")
