"""``copyjob schema``: the JSON Schema of the job file, for editors (yaml-language-server, VS Code, JetBrains).

The schema is made from the job file's model (:func:`copyjob.jobfile.job_json_schema`); docs/jobfile.schema.json
is this command's output, and a test keeps it current.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command(epilog="Examples: copyjob schema > docs/jobfile.schema.json · "
                       "copyjob schema --output jobfile.schema.json")(schema)


def schema(output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the schema to this file instead of printing it.")] = None) -> None:
    """Print the JSON Schema of the job file, for editor completion and checks.

    Start a job file with `# yaml-language-server: $schema=PATH/jobfile.schema.json` for VS Code's YAML
    extension and other editors using yaml-language-server."""
    from copyjob.jobfile import job_json_schema

    text = json.dumps(job_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
