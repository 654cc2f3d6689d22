"""A job's state read without its connection URLs: ``status`` and ``history`` when variables that only feed the
source or destination are not set (a workstation reading the state store of a deployed job).

The state store keys a job's state by ``job@destination`` (:mod:`copyjob.core.scope`). Only ``job:`` and
``state:`` must resolve. When the destination resolves, its one scope is read; when it does not, every scope of
the job in the store is, each labelled by its destination."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copyjob.core.errors import CopyjobError, JobFileError
from copyjob.core.scope import SEPARATOR, split_scope
from copyjob.variables import load_library
from copyjob.yamlfile import read_yaml

if TYPE_CHECKING:
    from copyjob.core.contracts import StateStore, TableState

UNRESOLVED = "unresolved variable"


@dataclass
class StateOnly:
    """What a job file says about where its state is, read without validating the connection sections."""

    job: str
    path: Path
    state: str | None
    destination: str | None
    """The destination's identity, None when its URL does not resolve."""
    unresolved: list[JobFileError] = field(default_factory=list)


def only_unresolved_urls(exc: JobFileError) -> bool:
    """Whether ``exc`` is only unresolved variables outside ``job:`` and ``state:``."""
    return all(UNRESOLVED in str(p) and not (p.field or "").startswith(("job", "state")) for p in exc.problems)


def read_state_only(path: Path, env: str | None, variables: Path | None, unresolved: JobFileError) -> StateOnly:
    """``job:``, ``state:`` and, when it resolves, the destination's identity of the job file at ``path``."""
    from copyjob.core.urls import identity
    from copyjob.filesets import endpoint_url
    from copyjob.jobfile import Endpoint

    path = path.resolve()
    doc, lines = read_yaml(path)
    library = load_library(path, variables, env)

    def text(key: str) -> str | None:
        value = doc.get(key) if isinstance(doc, Mapping) else None
        if value is None:
            return None
        return library.substitute(str(value), file=str(path), line=lines.get((key,)), field_name=key)

    name = text("job")
    if not name:
        raise unresolved
    destination = None
    dest = doc.get("destination")
    try:
        if isinstance(dest, Mapping):
            resolved = {k: _resolved(v, library, path) for k, v in dest.items()}
            destination = identity(endpoint_url(Endpoint.model_validate(resolved), path.parent))
    except (CopyjobError, ValueError):  # a variable unset, or a URL that only names itself once resolved
        destination = None
    return StateOnly(job=name, path=path, state=text("state"), destination=destination,
                     unresolved=list(unresolved.problems))


def _resolved(value: Any, library: Any, path: Path) -> Any:
    if isinstance(value, Mapping):
        return {k: _resolved(v, library, path) for k, v in value.items()}
    if isinstance(value, str):
        return library.substitute(value, file=str(path), line=None, field_name="destination")
    return value


def job_scopes(store: StateStore, job: str) -> list[str]:
    """The scopes of ``job`` in ``store`` (one per destination it ran into), from its states and runs."""
    from sqlalchemy import or_, select, union

    from copyjob.offsets.schema import runs, table_state

    engine = getattr(store, "engine", None)
    if engine is None:
        return []

    def of(table: Any) -> Any:
        return select(table.c.job).where(or_(table.c.job == job, table.c.job.startswith(f"{job}{SEPARATOR}",
                                                                                         autoescape=True)))

    with engine.connect() as conn:
        found = conn.execute(union(of(table_state), of(runs))).scalars().all()
    return sorted(s for s in found if split_scope(s)[0] == job)


def stored_modes(store: StateStore, scope: str, states: Mapping[str, TableState]) -> dict[str, str]:
    """Each table's mode as the definition of its last commit says, else as its latest recorded run names it."""
    from copyjob.offsets.ledger import DEFINITION_KEY

    modes: dict[str, str] = {}
    for label, state in states.items():
        definition = state.extra.get(DEFINITION_KEY)
        if isinstance(definition, Mapping):
            modes[label] = "cdc" if definition.get("mode") == "cdc" else \
                "incremental" if definition.get("incremental_column") else "full"
    if len(modes) < len(states):
        for run in store.history(scope, limit=50):
            for t in run.tables:
                modes.setdefault(t.table, t.mode)
    return {label: modes.get(label, "-") for label in states}
