"""``copyjob schema``: the job file's JSON Schema describes every key, accepts what the loader accepts (README's
job files, variables in numbers and booleans, six-field crons) and docs/jobfile.schema.json is its output."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from copyjob.jobfile import job_json_schema
from tests.helpers import ROOT, copyjob

DOCS_SCHEMA = ROOT / "docs" / "jobfile.schema.json"
BASE = {"job": "j", "source": {"url": "sqlite:///a.db"}, "destination": {"url": "duckdb:///b.duckdb"},
        "tables": [{"name": "orders"}]}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = job_json_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(validator: Draft202012Validator, doc: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_the_command_prints_a_draft_2020_12_schema(tmp_path: Path) -> None:
    printed = copyjob("schema")
    assert printed.code == 0, printed.output
    schema = json.loads(printed.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] == "copyjob job file"
    written = copyjob("schema", "--output", tmp_path / "s.json")
    assert written.code == 0, written.output
    assert (tmp_path / "s.json").read_text() == printed.stdout


def test_docs_schema_is_current() -> None:
    """docs/jobfile.schema.json is what `copyjob schema` prints: regenerate it after editing copyjob/jobfile.py
    with `copyjob schema --output docs/jobfile.schema.json`."""
    assert DOCS_SCHEMA.exists(), "run: copyjob schema --output docs/jobfile.schema.json"
    assert json.loads(DOCS_SCHEMA.read_text()) == job_json_schema(), \
        "docs/jobfile.schema.json is stale: run copyjob schema --output docs/jobfile.schema.json"


def properties(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for model, body in [("Job", schema), *schema["$defs"].items()]:
        for name, prop in body.get("properties", {}).items():
            yield f"{model}.{name}", prop


def test_every_key_has_a_description() -> None:
    schema = job_json_schema()
    missing = [name for name, prop in properties(schema) if not prop.get("description")]
    assert not missing, f"add Field(description=...) in copyjob/jobfile.py for: {missing}"
    assert all(body.get("description") for body in schema["$defs"].values())


def readme_yaml_blocks() -> list[tuple[int, Any]]:
    text = (ROOT / "README.md").read_text()
    return [(text[:m.start()].count("\n") + 1, yaml.safe_load(m.group(1)))
            for m in re.finditer(r"```yaml\n(.*?)```", text, re.S)]


def test_readme_job_files_validate(validator: Draft202012Validator) -> None:
    """Every YAML block of the README that is a job file, or a part of one (merged onto a small job), is valid."""
    keys = set(job_json_schema()["properties"])
    checked = 0
    for line, doc in readme_yaml_blocks():
        if not isinstance(doc, dict) or not set(doc) <= keys:
            continue  # a variables file
        whole = doc if "job" in doc else {**BASE, **doc}
        assert not problems(validator, whole), f"README.md:{line}: {problems(validator, whole)}"
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("part", [
    {"copy": {"batch_rows": "${ROWS}", "create_tables": "${CREATE}", "mode": "${MODE}", "parallel": "${N:-4}"}},
    {"cdc": {"server_id": "${SERVER_ID}", "max_lag_seconds": "${LAG}", "publication": {"create": "${PUB}"}}},
    {"kafka": {"bootstrap_servers": "${KAFKA}", "topic_prefix": "${PREFIX}", "partitions": "${PARTS}"}},
    {"schedules": [{"cron": "*/10 * * * * *"}, {"every": "15m"}, {"every": 60}, {"cron": "@daily", "timezone": "UTC"}]},
    {"triggers": [{"file_arrival": {"path": "./inbox", "pattern": "*.csv", "debounce": "2s"}}]},
    {"transport": "${TRANSPORT}"},
])
def test_what_the_loader_accepts_is_valid(validator: Draft202012Validator, part: dict[str, Any],
                                          tmp_path: Path) -> None:
    doc = {**BASE, **part}
    assert not problems(validator, doc)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(doc))
    env = {"ROWS": "1000", "CREATE": "true", "MODE": "full", "SERVER_ID": "7", "LAG": "30", "PUB": "false",
           "KAFKA": "localhost:9092", "PREFIX": "shop", "PARTS": "3", "TRANSPORT": "direct"}
    out = copyjob("validate", job, env=env)
    assert out.code == 0, out.output


@pytest.mark.parametrize("part", [
    {"copy": {"mode": "sometimes"}},
    {"copy": {"batch_rows": 10}},
    {"copy": {"batch_rows": "many"}},
    {"tabels": []},
    {"tables": []},
    {"kafka": {"bootstrap_servers": "k:9092", "topic_prefix": "a b"}},
    {"schedules": [{"every": -5}]},
])
def test_what_the_loader_refuses_is_flagged(validator: Draft202012Validator, part: dict[str, Any]) -> None:
    assert problems(validator, {**BASE, **part})
