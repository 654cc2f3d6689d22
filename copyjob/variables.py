"""The variable library: ``${NAME}`` in a job file resolves from a ``variables.yaml`` value set, then from the
process environment.

``variables.yaml`` (beside the job file, or ``--variables FILE``)::

    default:            # used by every environment
      PG_HOST: localhost
    prod:               # chosen with --env prod; overrides default
      PG_HOST: db.internal

``${NAME:-fallback}`` gives a fallback; ``$${`` writes a literal ``${``. A value in ``variables.yaml`` may
refer to other variables (``PG_URL: postgresql://${PG_USER}@${PG_HOST}/shop``) and is the text as written
(``1.10`` stays ``1.10``, ``true`` stays ``true``); a value that refers to itself (``A: ${A}``, or through
others: ``A → B → A``) and a value that is a mapping or a list are errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from copyjob.core.errors import JobFileError
from copyjob.yamlfile import read_yaml

_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_VALUE_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
"""In a library value: ``${NAME}`` (another variable), ``$${`` (a literal ``${``); any other ``$`` is kept as
written (passwords hold ``$$``)."""
DEFAULT_FILE = "variables.yaml"


@dataclass
class VariableLibrary:
    values: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    origins: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    """Where each value is written: its value set and line in :attr:`source`."""
    other_sets: dict[str, list[str]] = field(default_factory=dict)
    """Names defined only in value sets not chosen (``dev``, ``prod``): which ones, for the unresolved message."""

    def lookup(self, name: str) -> str | None:
        """The value of ``name``: from the library (its own references resolved), else the environment."""
        if name not in self.values:
            return self.environ.get(name)

        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            ref, fallback = m.group(1), m.group(2)
            value = self.lookup(ref)  # no cycles: load_library refused them
            if value is None:
                if fallback is not None:
                    return fallback
                raise _Unresolved(ref, used_by=name)
            return value

        return _VALUE_REFERENCE.sub(replace, self.values[name])

    def substitute(self, text: str, *, file: str, line: int | None, field_name: str) -> str:
        """Replace every reference in ``text``; an unknown name is a JobFileError naming it and where."""

        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, fallback = m.group(1), m.group(2)
            try:
                value = self.lookup(name)
            except _Unresolved as exc:
                raise self._unresolved(exc.name, exc.used_by, file, line, field_name) from None
            if value is None:
                if fallback is not None:
                    return fallback
                raise self._unresolved(name, None, file, line, field_name)
            return value

        return _REFERENCE.sub(replace, text)

    def _unresolved(self, name: str, used_by: str | None, file: str, line: int | None,
                    field_name: str) -> JobFileError:
        where = f" (looked in {self.source} and the environment)" if self.source else \
            " (no variables.yaml; looked in the environment)"
        if used_by is not None:
            at = self.origins.get(used_by, ("", None))[1]
            where = f" in the value of {used_by} ({self.source}:{at}){where}"
        sets = self.other_sets.get(name)
        if sets:
            where += f"; it is defined for {', '.join(f'--env {s}' for s in sets)}"
        return JobFileError(f"unresolved variable ${{{name}}}{where}", file=file, line=line, field=field_name)


class _Unresolved(Exception):
    def __init__(self, name: str, used_by: str) -> None:
        super().__init__(name)
        self.name = name
        self.used_by = used_by


def load_library(job_file: Path, variables_file: Path | None, env: str | None) -> VariableLibrary:
    """Load the value sets: ``default`` first, then the set named by ``env`` on top. A value may refer to other
    variables (``${NAME}``); values that refer to themselves, directly or in a cycle, and values that are not
    text (a mapping, a list) are errors naming the variable and its line."""
    path = variables_file or job_file.parent / DEFAULT_FILE
    if not path.exists():
        if variables_file is not None:
            raise JobFileError("variables file not found", file=str(path))
        if env:
            raise JobFileError(f"--env {env} given but there is no {DEFAULT_FILE} beside the job file",
                               file=str(path))
        return VariableLibrary()
    doc, lines = read_yaml(path, text_scalars=True)
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise JobFileError("expected value sets (default:, dev:, prod: …) at the top level", file=str(path),
                           line=1)
    values: dict[str, str] = {}
    origins: dict[str, tuple[str, int | None]] = {}
    problems: list[JobFileError] = []
    for set_name in ("default", env):
        if set_name is None:
            continue
        if set_name not in doc:
            if set_name == "default":
                continue
            known = ", ".join(str(k) for k in doc) or "none"
            raise JobFileError(f"no value set {set_name!r} (sets: {known})", file=str(path), field="--env")
        entries = doc[set_name] or {}
        if not isinstance(entries, Mapping):
            raise JobFileError("a value set maps NAME: value", file=str(path), line=lines.get((set_name,)),
                               field=set_name)
        for k, v in entries.items():
            name, line = str(k), lines.get((set_name, str(k)))
            if isinstance(v, Mapping | list):
                kind = "a mapping" if isinstance(v, Mapping) else "a list"
                problems.append(JobFileError(f"a variable's value is text (or a number, true, false), not {kind}",
                                             file=str(path), line=line, field=f"{set_name}.{name}"))
                continue
            values[name] = "" if v is None else str(v)
            origins[name] = (set_name, line)
    problems += _cycles(values, origins, str(path))
    if problems:
        raise JobFileError.of(problems)
    other_sets: dict[str, list[str]] = {}
    for set_name, entries in doc.items():
        if set_name not in ("default", env) and isinstance(entries, Mapping):
            for k in entries:
                if str(k) not in values:
                    other_sets.setdefault(str(k), []).append(str(set_name))
    return VariableLibrary(values=values, source=str(path), origins=origins, other_sets=other_sets)


def _cycles(values: Mapping[str, str], origins: Mapping[str, tuple[str, int | None]],
            file: str) -> list[JobFileError]:
    """One problem per cycle of references between library values (``A: ${A}``, ``A → B → A``)."""
    refs = {name: [m.group(1) for m in _VALUE_REFERENCE.finditer(text) if m.group(1) in values]
            for name, text in values.items()}
    done: set[str] = set()
    problems = []

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name):]
            set_name, line = origins[cycle[0]]
            what = f"${{{name}}} refers to itself" if len(cycle) == 1 else \
                "variables refer to each other in a cycle: " + " → ".join([*cycle, cycle[0]])
            problems.append(JobFileError(what, file=file, line=line, field=f"{set_name}.{cycle[0]}"))
            return
        if name in done:
            return
        for ref in refs[name]:
            visit(ref, [*path, name])
        done.add(name)

    for name in values:
        visit(name, [])
    return problems
