"""The variable library: ``${NAME}`` in a job file resolves from a ``variables.yaml`` value set, then from the
process environment.

``variables.yaml`` (beside the job file, or ``--variables FILE``)::

    default:            # used by every environment
      PG_HOST: localhost
    prod:               # chosen with --env prod; overrides default
      PG_HOST: db.internal

``${NAME:-fallback}`` gives a fallback; ``$${`` writes a literal ``${``.
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
DEFAULT_FILE = "variables.yaml"


@dataclass
class VariableLibrary:
    values: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def lookup(self, name: str) -> str | None:
        if name in self.values:
            return self.values[name]
        return self.environ.get(name)

    def substitute(self, text: str, *, file: str, line: int | None, field_name: str) -> str:
        """Replace every reference in ``text``; an unknown name is a JobFileError naming it and where."""

        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, fallback = m.group(1), m.group(2)
            value = self.lookup(name)
            if value is None:
                if fallback is not None:
                    return fallback
                where = f" (looked in {self.source} and the environment)" if self.source else \
                    " (no variables.yaml; looked in the environment)"
                raise JobFileError(f"unresolved variable ${{{name}}}{where}", file=file, line=line,
                                   field=field_name)
            return value

        return _REFERENCE.sub(replace, text)


def load_library(job_file: Path, variables_file: Path | None, env: str | None) -> VariableLibrary:
    """Load the value sets: ``default`` first, then the set named by ``env`` on top."""
    path = variables_file or job_file.parent / DEFAULT_FILE
    if not path.exists():
        if variables_file is not None:
            raise JobFileError("variables file not found", file=str(path))
        if env:
            raise JobFileError(f"--env {env} given but there is no {DEFAULT_FILE} beside the job file",
                               file=str(path))
        return VariableLibrary()
    doc, _lines = read_yaml(path)
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise JobFileError("expected value sets (default:, dev:, prod: …) at the top level", file=str(path),
                           line=1)
    values: dict[str, str] = {}
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
            raise JobFileError("a value set maps NAME: value", file=str(path), line=_lines.get((set_name,)),
                               field=set_name)
        values.update({str(k): "" if v is None else str(v) for k, v in entries.items()})
    return VariableLibrary(values=values, source=str(path))
