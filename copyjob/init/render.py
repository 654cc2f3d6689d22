"""The files ``init`` writes: the job file, commented so that a reader sees why each choice was made, and a
``variables.yaml`` holding the connection parts (host, port, user, database) under ``default:``.

Passwords and other secrets are never written: the URL names them as ``${SOURCE_PASSWORD}`` (or
``${DESTINATION_…}``), which copyjob reads from the environment. The job file's first line points editors
(yaml-language-server) at the job file's JSON Schema: the project's ``docs/jobfile.schema.json`` by a path
relative to the job file when the job is written inside a copyjob checkout, else ``jobfile.schema.json`` that
init writes beside the job.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from copyjob.core.redaction import split_userinfo
from copyjob.core.urls import ConnectionUrl, redact
from copyjob.init.proposal import TableProposal

NETWORK_SCHEMES = frozenset({"postgresql", "mysql", "mariadb"})
PATH_SCHEMES = frozenset({"sqlite", "duckdb", "parquet"})
SCHEMA_FILE = "jobfile.schema.json"
_SECRET_QUERY = re.compile(r"(?i)(ssl)?password|passwd|pwd|secret|token|api_?key|access_key")


@dataclass
class Endpoint:
    """An endpoint URL as the job file writes it, and the variables it uses."""

    url: str
    variables: dict[str, str] = field(default_factory=dict)
    """Written into variables.yaml under ``default:``."""
    secrets: dict[str, str] = field(default_factory=dict)
    """Read from the environment (name → the value given on the command line, used only for the check)."""


def endpoint(raw: str, prefix: str, url: ConnectionUrl, job_dir: Path) -> Endpoint:
    """``raw`` with its connection parts as ``${PREFIX_HOST}`` … and its secrets as environment variables;
    a local path made relative to the job file's folder (job files resolve paths from there)."""
    if url.scheme in NETWORK_SCHEMES:
        return _network(raw, prefix, url)
    if url.scheme in PATH_SCHEMES and url.path is not None and str(url.path) != ":memory:":
        return Endpoint(f"{url.scheme}:///{_relative(url.path, job_dir)}")
    if url.scheme == "file" and url.path is not None:
        rel = _relative(url.path, job_dir)
        return Endpoint(rel if rel.startswith("/") else ("./" + rel if not rel.startswith(".") else rel))
    return _secret_query(raw, prefix, Endpoint(raw))


def _network(raw: str, prefix: str, url: ConnectionUrl) -> Endpoint:
    head, rest = raw.split("://", 1)
    userinfo, _ = split_userinfo(rest)
    out = Endpoint("")
    text = f"{head}://"
    if url.username:
        out.variables[f"{prefix}_USER"] = url.username
        text += f"${{{prefix}_USER}}"
        if userinfo is not None and ":" in userinfo:
            out.secrets[f"{prefix}_PASSWORD"] = userinfo.partition(":")[2]
            text += f":${{{prefix}_PASSWORD}}"
        text += "@"
    if url.host:
        out.variables[f"{prefix}_HOST"] = url.host
        text += f"${{{prefix}_HOST}}"
    if url.port:
        out.variables[f"{prefix}_PORT"] = str(url.port)
        text += f":${{{prefix}_PORT}}"
    if url.database:
        out.variables[f"{prefix}_DATABASE"] = url.database
        text += f"/${{{prefix}_DATABASE}}"
    query = rest.split("?", 1)[1] if "?" in rest else ""
    out.url = text + (f"?{query}" if query else "")
    return _secret_query(out.url, prefix, out)


def _secret_query(raw: str, prefix: str, out: Endpoint) -> Endpoint:
    """Secret-looking query parameters (``sslpassword=``, ``secret_key=``) become environment variables."""
    if "?" not in raw:
        out.url = raw
        return out
    base, query = raw.split("?", 1)
    parts = []
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if eq and _SECRET_QUERY.search(key):
            name = prefix + "_" + re.sub(r"\W", "_", key).upper()
            out.secrets[name] = unquote(value)
            value = f"${{{name}}}"
        parts.append(f"{key}{eq}{value}")
    out.url = f"{base}?{'&'.join(parts)}"
    return out


def _relative(path: Path, job_dir: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), job_dir.resolve()).replace(os.sep, "/")
    except ValueError:  # another drive
        return path.resolve().as_posix()


def schema_reference(job_dir: Path) -> str | None:
    """The project's docs/jobfile.schema.json relative to ``job_dir`` when an enclosing folder has it; None
    when the job is written outside a copyjob checkout (then :data:`SCHEMA_FILE` is written beside it)."""
    for folder in (job_dir.resolve(), *job_dir.resolve().parents):
        candidate = folder / "docs" / SCHEMA_FILE
        if candidate.is_file():
            return _relative(candidate, job_dir)
    return None


def _q(value: str) -> str:
    """A YAML scalar: JSON's double-quoted string is valid YAML and quotes what needs quoting."""
    return value if re.fullmatch(r"[A-Za-z_][\w.\-/]*", value) and value.lower() not in (
        "true", "false", "yes", "no", "on", "off", "null", "y", "n") else json.dumps(value)


def job_yaml(*, job: str, source: Endpoint, destination: Endpoint, source_display: str, schema_ref: str,
             mode: str, update_method: str, proposals: Sequence[TableProposal], job_file: str,
             cdc_problems: Sequence[str] = ()) -> str:
    secrets = [*source.secrets, *destination.secrets]
    lines = [
        f"# yaml-language-server: $schema={schema_ref}",
        f"# Written by `copyjob init` from {redact(source_display)}.",
        "# Connection parts (host, port, user, database) are in variables.yaml, per environment.",
    ]
    if secrets:
        lines.append("# Secrets are read from the environment, never written here: "
                     + ", ".join(f"export {s}=…" for s in secrets))
    lines += [f"# Check: copyjob validate --connect {job_file}    Run: copyjob run {job_file}", ""]
    for problem in cdc_problems:
        lines.append(f"# CDC not ready: {problem}")
    if cdc_problems:
        lines.append("")
    lines += [
        f"job: {_q(job)}",
        "source:",
        f"  url: {_q(source.url)}",
        "destination:",
        f"  url: {_q(destination.url)}",
        "copy:",
        f"{f'  mode: {mode}':<30}# full | incremental | cdc (a table may set its own)",
        f"{f'  update_method: {update_method}':<30}# append | overwrite | merge (a table may set its own)",
        "tables:",
    ]
    for p in proposals:
        lines += ["", *(f"  # {c}" for c in _comments(p)), f"  - name: {_q(p.table.name)}"]
        if p.table.pattern is not None:
            lines.append(f"    pattern: {_q(p.table.pattern)}")
            lines.append(f"    format: {p.table.format}")
        if p.key:
            lines.append(f"    key: [{', '.join(_q(k) for k in p.key)}]")
        if p.incremental_column:
            lines.append(f"    incremental_column: {_q(p.incremental_column)}")
        if p.mode != mode:
            lines.append(f"    mode: {p.mode}")
        if p.update_method != update_method:
            lines.append(f"    update_method: {p.update_method}")
    return "\n".join(lines) + "\n"


def _comments(p: TableProposal) -> list[str]:
    t = p.table
    if t.pattern is not None:
        size = f"{t.files} file{'s' if t.files != 1 else ''}"
        first = f"{t.name}: {size} ({t.format}); incremental copies {p.incremental_reason}"
    else:
        rows = "row count unknown (not analyzed yet)" if t.rows is None else \
            f"~{t.rows:,} row{'' if t.rows == 1 else 's'}"
        key = t.schema.primary_key if t.schema is not None and t.schema.primary_key else p.key
        first = f"{t.name}: {rows}; key: " + (f"{', '.join(key)} ({p.key_reason})" if key else p.key_reason)
    out = [first]
    if t.pattern is None:
        out.append(f"incremental column: {p.incremental_column or 'none'} ({p.incremental_reason})"
                   if p.incremental_column or p.incremental_reason else "")
    return [c for c in out + list(p.notes) if c]


def variables_yaml(source: Endpoint, destination: Endpoint) -> str:
    values = {**source.variables, **destination.variables}
    secrets = [*source.secrets, *destination.secrets]
    lines = [
        "# Variables of the job file, per environment: `default:` is always used; add a section (e.g. `prod:`)",
        "# with the values that differ there and run with --env prod.",
    ]
    if secrets:
        lines.append("# Not here on purpose, read from the environment: " + ", ".join(secrets))
    lines.append("default:" if values else "default: {}")
    lines += [f"  {name}: {_q(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def variable_conflicts(existing: str, *endpoints: Endpoint) -> list[str]:
    """The names ``endpoints`` use that the ``default:`` section of ``existing`` (a variables.yaml's text)
    gives another value."""
    current = _defaults(existing)
    return [n for e in endpoints for n, v in e.variables.items() if n in current and str(current[n]) != v]


def merged_variables(existing: str, *endpoints: Endpoint) -> str:
    """``existing`` (a variables.yaml's text; other jobs of the folder use it) with the variables it lacks
    added under ``default:``, its comments and other sections kept."""
    current = _defaults(existing)
    missing = [f"{n}: {_q(v)}" for e in endpoints for n, v in e.variables.items() if n not in current]
    if not missing:
        return existing
    lines = existing.splitlines()
    at = next((i for i, line in enumerate(lines) if re.match(r"default:\s*(\{\s*\})?\s*(#.*)?$", line)), None)
    if at is None:
        return existing.rstrip("\n") + "\ndefault:\n" + "".join(f"  {m}\n" for m in missing)
    following = lines[at + 1] if at + 1 < len(lines) else ""
    indent = following[: len(following) - len(following.lstrip())] if following[:1] in (" ", "\t") else "  "
    lines[at] = "default:"
    lines[at + 1:at + 1] = [f"{indent}{m}" for m in missing]
    return "\n".join(lines) + "\n"


def _defaults(text: str) -> dict[str, object]:
    import yaml

    document = yaml.safe_load(text) or {}
    current = document.get("default") if isinstance(document, dict) else None
    return current if isinstance(current, dict) else {}
