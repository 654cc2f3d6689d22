"""``copyjob init``: connect to a source, propose a job for its tables and write it (with variables.yaml).

On a terminal it asks what the flags leave open (tables, mode, update method, destination), each with a
default; with ``--yes``, or when stdin or stdout is not a terminal, it never asks, so scripts and CI can use it.
Exit codes as every command: 2 for a command line that cannot be carried out (an existing job file without
--force, a missing --destination), 1 when the source cannot be reached.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, get_args

import typer

from copyjob.cli.common import err, examples, guard, out
from copyjob.core.contracts import CopyMode, UpdateMethod
from copyjob.core.errors import UsageError

if TYPE_CHECKING:
    from copyjob.core.urls import ConnectionUrl
    from copyjob.init.discovery import FoundTable
    from copyjob.init.proposal import TableProposal
    from copyjob.init.render import Endpoint

MODES: tuple[str, ...] = get_args(CopyMode)
METHODS: tuple[str, ...] = get_args(UpdateMethod)
CDC_SCHEMES = frozenset({"postgresql", "mysql", "mariadb"})


def register(app: typer.Typer) -> None:
    app.command(epilog=examples(
        "copyjob init postgresql://app@db:5432/shop --destination duckdb:///warehouse.duckdb",
        "copyjob init mysql://app@db/shop -d postgresql://etl@dw/shop --mode cdc --tables 'orders*' --yes",
        "copyjob init ./inbox -d parquet:///lake -o inbox.yaml"))(init)


def init(source: Annotated[str, typer.Argument(help="The source URL (a database, a folder or s3://…).",
                                               show_default=False)],
         destination: Annotated[str | None, typer.Option("--destination", "-d", help="The destination URL.",
                                                         show_default=False)] = None,
         mode: Annotated[str | None, typer.Option("--mode", metavar="full|incremental|cdc",
                                                  help="Copy mode (default incremental; a table nothing fits "
                                                       "incrementally is copied full).", show_default=False)] = None,
         tables: Annotated[list[str] | None, typer.Option("--tables", metavar="PATTERN", help="Only tables "
                                                          "matching this glob (repeatable, or comma-separated).",
                                                          show_default=False)] = None,
         update_method: Annotated[str | None, typer.Option("--update-method", metavar="append|overwrite|merge",
                                                           help="Default: merge for tables with a key.",
                                                           show_default=False)] = None,
         output: Annotated[Path, typer.Option("--output", "-o", help="The job file to write (variables.yaml "
                                              "goes beside it).")] = Path("job.yaml"),
         job: Annotated[str | None, typer.Option("--job", help="The job's name (default: from the source).",
                                                 show_default=False)] = None,
         yes: Annotated[bool, typer.Option("--yes", "-y", help="Ask nothing: take the flags and the "
                                           "defaults.")] = False,
         force: Annotated[bool, typer.Option("--force", help="Overwrite an existing job file and "
                                             "variables.yaml.")] = False) -> None:
    """Look at a source and write a job file for it: tables, keys and incremental columns proposed.

    Connects to the source, lists its tables with row estimates, proposes per table the key and an
    incremental column, checks change capture readiness with --mode cdc, and writes a commented job file plus
    variables.yaml (connection parts; passwords stay in environment variables)."""
    ask = not yes and sys.stdin.isatty() and sys.stdout.isatty()

    def body() -> int:
        return _init(source, destination, mode, _patterns(tables), update_method, output, job, ask, force)

    raise typer.Exit(guard(body))


def _patterns(tables: list[str] | None) -> list[str]:
    return [p.strip() for t in tables or () for p in t.split(",") if p.strip()]


def _init(source_raw: str, destination_raw: str | None, mode: str | None, patterns: list[str],
          update_method: str | None, output: Path, job: str | None, ask: bool, force: bool) -> int:
    from copyjob.connectors import destination_capabilities, open_source
    from copyjob.init.discovery import discover
    from copyjob.init.proposal import propose

    _choice("--mode", mode, MODES)
    _choice("--update-method", update_method, METHODS)
    if output.exists() and not force:
        raise UsageError(f"{output} exists already: choose another file with -o, or overwrite it with --force")
    url = _parse(source_raw)
    modes = MODES if url.scheme in CDC_SCHEMES else tuple(m for m in MODES if m != "cdc")
    if mode == "cdc" and url.scheme not in CDC_SCHEMES:
        raise UsageError(f"--mode cdc needs a PostgreSQL or MySQL/MariaDB source, not {url.scheme}: use --mode "
                         "full or incremental")
    src = open_source(url)
    try:
        found = discover(src, url, patterns)
    finally:
        src.close()
    if not found:
        what = "files copyjob can read" if url.scheme in ("file", "s3") else "tables"
        raise UsageError(f"{url.redacted} has no {what}" + (f" matching {', '.join(patterns)}" if patterns else ""))
    if ask:
        _show(found)
        patterns = patterns or _patterns([typer.prompt("Tables to copy (globs, comma-separated)", default="*")])
    chosen = [t for t in found if not patterns or _matches(t.name, patterns)]
    if not chosen:
        raise UsageError(f"no table matches {', '.join(patterns)} (tables: {', '.join(t.name for t in found)})")
    if ask and mode is None:
        mode = _ask_choice("Mode", "incremental", modes)
    if ask and update_method is None:
        update_method = _ask_choice("Update method (natural: merge with a key, else overwrite or append)",
                                    "natural", ("natural", *METHODS))
        update_method = None if update_method == "natural" else update_method
    if destination_raw is None:
        if not ask:
            raise UsageError("--destination is required (e.g. --destination duckdb:///warehouse.duckdb)")
        destination_raw = typer.prompt("Destination URL", default=f"duckdb:///{_job_name(url, job)}.duckdb")
    destination_url = _parse(destination_raw)
    merge_ok = destination_capabilities(destination_url).supports_merge
    copy_mode: CopyMode = mode or "incremental"  # type: ignore[assignment]
    asked_method: UpdateMethod | None = update_method  # type: ignore[assignment]
    if asked_method == "merge" and not merge_ok:
        raise UsageError(f"{destination_url.redacted} does not support merge: --update-method append or overwrite")
    proposals = [propose(t, copy_mode, asked_method or (None if merge_ok else "append")) for t in chosen]
    return _write(url, destination_url, source_raw, destination_raw, proposals, copy_mode, asked_method,
                  output, _job_name(url, job), force)


def _write(url: ConnectionUrl, destination_url: ConnectionUrl, source_raw: str, destination_raw: str,
           proposals: list[TableProposal], mode: CopyMode, method: UpdateMethod | None, output: Path,
           job: str, force: bool) -> int:
    from copyjob.init.render import SCHEMA_FILE, job_yaml, schema_reference

    job_dir = output.parent
    job_dir.mkdir(parents=True, exist_ok=True)
    source, destination = _endpoints(source_raw, url, destination_raw, destination_url, job, job_dir)
    schema_ref = schema_reference(job_dir)
    if schema_ref is None:
        _write_schema(job_dir / SCHEMA_FILE)
        schema_ref = SCHEMA_FILE
    job_method: UpdateMethod = method or _most_common([p.update_method for p in proposals])
    job_mode: CopyMode = mode if any(p.mode == mode for p in proposals) else proposals[0].mode

    def render(problems: list[str]) -> str:
        return job_yaml(job=job, source=source, destination=destination, source_display=source_raw,
                        schema_ref=schema_ref, mode=job_mode, update_method=job_method, proposals=proposals,
                        job_file=output.name, cdc_problems=problems)

    _write_variables(job_dir / "variables.yaml", source, destination, force)
    output.write_text(render([]), encoding="utf-8")
    _print_proposals(proposals)
    problems = _cdc_problems(output, source, destination) if any(p.mode == "cdc" for p in proposals) else []
    if problems:
        output.write_text(render(problems), encoding="utf-8")
        err.print(f"change capture is not ready at the source ({len(problems)} to fix; nothing was created):",
                  highlight=False, markup=False)
        for problem in problems:
            err.print(f"  - {problem}", highlight=False, markup=False, soft_wrap=True)
    secrets = [*source.secrets, *destination.secrets]
    out.print(f"wrote {output} and {job_dir / 'variables.yaml'}", highlight=False, markup=False)
    if secrets:
        out.print(f"set {', '.join(secrets)} in the environment, then: copyjob validate --connect {output}",
                  highlight=False, markup=False)
    else:
        out.print(f"next: copyjob validate --connect {output}", highlight=False, markup=False)
    return 0


def _write_variables(path: Path, source: Endpoint, destination: Endpoint, force: bool) -> None:
    """A new variables.yaml, or the one there (other jobs of the folder use it) with the missing variables
    added; one that gives a variable another value is replaced only with --force."""
    from copyjob.init.render import merged_variables, variable_conflicts, variables_yaml

    if not path.exists():
        path.write_text(variables_yaml(source, destination), encoding="utf-8")
        return
    existing = path.read_text(encoding="utf-8")
    conflicts = variable_conflicts(existing, source, destination)
    if conflicts and not force:
        raise UsageError(f"{path} gives {', '.join(conflicts)} other values: use another folder (-o) or "
                         "replace the file with --force")
    path.write_text(variables_yaml(source, destination) if conflicts else merged_variables(
        existing, source, destination), encoding="utf-8")


def _endpoints(source_raw: str, url: ConnectionUrl, destination_raw: str, destination_url: ConnectionUrl,
               job: str, job_dir: Path) -> tuple[Endpoint, Endpoint]:
    """The endpoints with SOURCE_…/DESTINATION_… variables, or, for one whose values differ from those the
    folder's variables.yaml holds (another job's), with names of this job's own (SHOP_SOURCE_HOST)."""
    from copyjob.init.render import endpoint, variable_conflicts

    existing = (job_dir / "variables.yaml").read_text(encoding="utf-8") \
        if (job_dir / "variables.yaml").exists() else ""
    own = re.sub(r"\W+", "_", job).strip("_").upper()
    found = []
    for raw, parsed, role in ((source_raw, url, "SOURCE"), (destination_raw, destination_url, "DESTINATION")):
        made = endpoint(raw, role, parsed, job_dir)
        if existing and variable_conflicts(existing, made):
            made = endpoint(raw, f"{own}_{role}", parsed, job_dir)
        found.append(made)
    return found[0], found[1]


def _cdc_problems(job_file: Path, source: Endpoint, destination: Endpoint) -> list[str]:
    """The pre-flight checks of ``run`` on the written job (tables, keys, what change capture needs),
    creating nothing. The secrets given on the command line stand in for the environment meanwhile."""
    from copyjob.connectors import destination_capabilities, open_source
    from copyjob.filesets import endpoint_url
    from copyjob.loader import load_job
    from copyjob.preflight import capture_problems, table_problems

    secrets = {**source.secrets, **destination.secrets}
    saved = {name: os.environ.get(name) for name in secrets}
    os.environ.update({k: v for k, v in secrets.items() if k not in os.environ})
    try:
        loaded = load_job(job_file)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
    src = open_source(endpoint_url(loaded.job.source, loaded.base_dir))
    try:
        plans, errors = table_problems(loaded, loaded.tables, src,
                                       destination_capabilities(endpoint_url(loaded.job.destination,
                                                                             loaded.base_dir)))
        return [str(e) for e in errors] + capture_problems(loaded, plans, src)
    finally:
        src.close()


def _write_schema(path: Path) -> None:
    import json

    from copyjob.jobfile import job_json_schema

    path.write_text(json.dumps(job_json_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _show(found: list[FoundTable]) -> None:
    from rich.table import Table

    from copyjob.init.proposal import find_key, incremental_column

    table = Table("table", "rows / files", "key", "incremental column", box=None)
    for t in found:
        if t.pattern is not None:
            table.add_row(t.name, f"{t.files} files", "-", "file modification time")
            continue
        key, _, _ = find_key(t)
        column, _ = incremental_column(t)
        table.add_row(t.name, "?" if t.rows is None else f"~{t.rows:,}", ", ".join(key) or "none",
                      column or "none")
    out.print(table)


def _print_proposals(proposals: list[TableProposal]) -> None:
    from copyjob.init.proposal import find_key

    for p in proposals:
        what = p.mode + (f" by {p.incremental_column}" if p.incremental_column else "")
        key = "" if p.table.pattern is not None else f"; key {', '.join(find_key(p.table)[0]) or 'none'}"
        notes = "".join(f"; {n}" for n in p.notes)
        out.print(f"{p.table.name}: {what}, {p.update_method}{key}{notes}", highlight=False, markup=False)


def _parse(raw: str) -> ConnectionUrl:
    from copyjob.core.urls import is_plain_path, parse_file_url, parse_url

    return parse_file_url(raw) if is_plain_path(raw) else parse_url(raw)


def _job_name(url: ConnectionUrl, given: str | None) -> str:
    if given:
        return given
    base = url.database or (url.path.stem if url.path is not None and url.path.stem else None) or url.scheme
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("_.-") or "job"


def _matches(name: str, patterns: list[str]) -> bool:
    from copyjob.init.discovery import selected

    return selected(name, patterns)


def _choice(option: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise UsageError(f"{option} {value!r}: one of {', '.join(allowed)}")


def _ask_choice(text: str, default: str, allowed: tuple[str, ...]) -> str:
    while True:
        answer = str(typer.prompt(f"{text} ({'/'.join(allowed)})", default=default)).strip()
        if answer in allowed:
            return answer
        err.print(f"one of {', '.join(allowed)}", highlight=False, markup=False)


def _most_common(values: list[UpdateMethod]) -> UpdateMethod:
    return max(dict.fromkeys(values), key=values.count)
