"""The support matrix: unsupported combinations are refused at load time with the line of the key to change and
what would work; every supported combination validates; the matrix agrees with the connectors and cdc code."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from copyjob import matrix
from copyjob.core.errors import JobFileError
from copyjob.jobfile import Job
from copyjob.loader import load_job
from copyjob.matrix import SUPPORTED, Combination, Row, check, combinations, kind_of, render_markdown
from tests.helpers import copyjob, write_job

URLS = {
    "postgresql": "postgresql://app@db.example/shop", "mysql": "mariadb://app@db.example/shop",
    "sqlite": "sqlite:///shop.db", "duckdb": "duckdb:///wh.duckdb", "files": "./landing",
    "parquet": "parquet:///lake", "delta": "./lake", "iceberg": "./lake", "kafka": "kafka://localhost:9092",
}
FORMATS = {"delta": "delta", "iceberg": "iceberg"}
"""Destination kinds that are a file URL with a table format."""
KAFKA = "kafka: {bootstrap_servers: 'localhost:9092'}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, marker: str) -> int:
    """The (only) line of the job file that contains ``marker``."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if marker in line]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


# ---------------------------------------------------------------- refused, through the CLI

CDC_FROM_SQLITE = """\
    job: j
    source: {url: 'sqlite:///shop.db'}
    destination: {url: 'duckdb:///wh.duckdb'}
    tables:
      - name: orders
        mode: cdc
        update_method: merge
    """
UNSUPPORTED = [
    pytest.param(CDC_FROM_SQLITE, "tables[0].mode", "mode: cdc",
        ["a sqlite source does not support cdc", "postgresql, mysql/mariadb or kafka source",
         "use mode full or incremental"],
        id="cdc-from-sqlite"),
    pytest.param("""\
        job: j
        source: {url: './landing'}
        destination: {url: 'postgresql://app@db/wh'}
        copy:
          mode: cdc
        tables:
          - {name: sales, pattern: '*.csv'}
        """, "copy.mode", "mode: cdc",
        ["a file/s3 source does not support cdc", "use mode full or incremental"], id="cdc-from-files"),
    pytest.param("""\
        job: j
        source: {url: 'sqlite:///shop.db'}
        destination: {url: 'duckdb:///wh.duckdb'}
        transport: kafka
        """ + KAFKA + """\
        tables:
          - {name: customers}
          - {name: orders, update_method: overwrite}
        """, "tables[1].update_method", "update_method: overwrite",
        ["transport kafka does not support overwrite", "use update_method append or merge"], id="overwrite-kafka"),
    pytest.param("""\
        job: j
        source: {url: 'postgresql://app@db/shop'}
        destination: {url: 'file:lake', format: csv}
        copy: {mode: full,
               update_method: merge}
        tables:
          - {name: orders, key: [id]}
        """, "copy.update_method", "update_method: merge",
        ["a file/s3 destination does not support merge", "use update_method append or overwrite"],
        id="merge-into-files"),
    pytest.param("""\
        job: j
        source: {url: 'mysql://app@db/shop'}
        destination: {url: 'sqlite:///wh.db'}
        copy:
          mode: incremental
          update_method: overwrite
        tables:
          - {name: orders, incremental_column: updated_at}
        """, "copy.update_method", "update_method: overwrite",
        ["mode incremental does not support overwrite", "needs mode full", "use update_method append or merge"],
        id="incremental-overwrite"),
    pytest.param("""\
        job: j
        source: {url: 'sqlite:///shop.db'}
        destination: {url: 'duckdb:///wh.duckdb'}
        copy: {update_method: overwrite}
        tables:
          - name: orders
            mode: cdc
        """, "tables[0].mode", "mode: cdc",
        ["a sqlite source and update_method overwrite do not support cdc", "use mode full"],
        id="cdc-overwrite-from-sqlite"),
    pytest.param("""\
        job: j
        source: {url: 'parquet:///lake'}
        destination: {url: 'duckdb:///wh.duckdb'}
        tables:
          - {name: orders}
        """, "source.url", "parquet:///lake",
        ["parquet cannot be a source", "use a postgresql, mysql/mariadb, sqlite, duckdb, file/s3 or kafka source"],
        id="parquet-source"),
    pytest.param("""\
        job: j
        source: {url: 'sqlite:///shop.db'}
        destination:
          url: 'oracle://scott@db/wh'
        tables:
          - {name: orders}
        """, "destination.url", "oracle://",
        ["unknown URL scheme 'oracle'", "known: "], id="unknown-scheme"),
]


@pytest.mark.parametrize(("text", "field", "marker", "words"), UNSUPPORTED)
def test_validate_refuses_with_the_line_of_the_key_and_what_is_supported(
        tmp_path: Path, text: str, field: str, marker: str, words: list[str]) -> None:
    path = write(tmp_path, text)
    out = copyjob("validate", path)
    assert out.code == 2, out.output
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.output
    assert out.stderr.startswith(f"error: {path}:{line_of(path, marker)}: {field}: "), out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


def test_run_refuses_before_anything_is_opened_or_written(tmp_path: Path) -> None:
    path = write(tmp_path, CDC_FROM_SQLITE)  # the source file does not even exist
    out = copyjob("run", path)
    assert out.code == 2 and f"{path}:{line_of(path, 'mode: cdc')}: tables[0].mode:" in out.stderr, out.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]  # no state, no destination, no source


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        job: j
        source: {url: 'sqlite:///shop.db'}
        destination: {url: './lake'}
        tables:
          - {name: a, mode: cdc}
          - {name: b, update_method: merge, key: [id]}
          - {name: c, mode: cdc}
        """)
    with pytest.raises(JobFileError) as info:
        load_job(path)
    assert [(p.line, p.field) for p in info.value.problems] == \
        [(5, "tables[0].mode"), (6, "tables[1].update_method"), (7, "tables[2].mode")]


def test_a_transport_that_cannot_carry_the_source_blames_the_transport_line(tmp_path: Path) -> None:
    """A matrix without Kafka from files (the state before it was built): transport is the key to change."""
    rows = []
    for row in SUPPORTED:
        for transport in row.transport:
            sources = row.source if transport == "direct" else tuple(s for s in row.source if s != "files")
            rows.append(Row(row.mode, sources, row.destination, (transport,), row.update_method))
    path = write(tmp_path, """\
        job: j
        source: {url: 'file:landing'}
        destination: {url: 'duckdb:///wh.duckdb'}
        transport: kafka
        """ + KAFKA + """\
        tables:
          - {name: sales, pattern: '*.csv'}
        """)
    loaded = load_job(path)  # supported by the real matrix
    problems = check(loaded.job, rows)
    assert [p.key for p in problems] == [("transport",)]
    assert loaded.line_of(problems[0].key) == 4
    assert problems[0].message == ("a file/s3 source does not support transport kafka (transport kafka needs a "
                                   "postgresql, mysql/mariadb, sqlite or duckdb source); use transport direct")


# ---------------------------------------------------------------- supported, through the CLI


def supported_jobs(tmp_path: Path) -> dict[tuple[str, str, str], Path]:
    """One job file per source, destination and transport, with a table for each supported mode and method."""
    groups: dict[tuple[str, str, str], list[Combination]] = defaultdict(list)
    for c in combinations():
        groups[(c.source, c.destination, c.transport)].append(c)
    paths = {}
    for n, ((source, destination, transport), combos) in enumerate(sorted(groups.items())):
        tables: list[dict[str, Any]] = []
        for i, c in enumerate(combos):
            table: dict[str, Any] = {"name": f"t{i}", "mode": c.mode, "update_method": c.update_method}
            if source == "files":
                table["pattern"] = f"t{i}/*.csv"
            elif source == "kafka":
                table["target"] = f"t{i}"  # a kafka source's entry names a topic
            elif c.mode == "incremental":
                table["incremental_column"] = "updated_at"
            if c.update_method == "merge":
                table["key"] = ["id"]
            tables.append(table)
        doc: dict[str, Any] = {"job": f"j{n}", "source": {"url": URLS[source]},
                               "destination": {"url": URLS[destination]}, "tables": tables}
        if destination in FORMATS:
            doc["destination"]["format"] = FORMATS[destination]
        if transport == "kafka":
            doc |= {"transport": "kafka", "kafka": {"bootstrap_servers": "localhost:9092"}}
        paths[(source, destination, transport)] = write_job(tmp_path / f"job{n}.yaml", doc)
    return paths


def test_every_supported_combination_validates(tmp_path: Path) -> None:
    """All of them through the loader that ``copyjob validate`` runs (60 processes would take 15 s), and a direct
    and a kafka job through the command itself."""
    paths = supported_jobs(tmp_path)
    # every source kind × destination kind × transport has something supported; a kafka source: keyed, direct
    assert len(paths) == 5 * 8 * 2 + 7
    assert sum(len(load_job(p).tables) for p in paths.values()) == len(combinations())
    cli = [paths[("postgresql", "parquet", "kafka")], paths[("mysql", "files", "direct")]]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda p: copyjob("validate", p), cli))
    for r in results:
        assert r.code == 0 and "job file is valid" in r.stdout, r.output


def test_check_refuses_exactly_what_the_matrix_leaves_out() -> None:
    kinds = list(URLS)
    modes, transports, methods = ("full", "incremental", "cdc"), ("direct", "kafka"), ("append", "overwrite", "merge")
    allowed = set(combinations())
    for mode, source, destination, transport, method in product(modes, kinds, kinds, transports, methods):
        table: dict[str, Any] = {"name": "t", "mode": mode, "update_method": method}
        target: dict[str, Any] = {"url": URLS[destination]}
        if destination in FORMATS:
            target["format"] = FORMATS[destination]
        origin: dict[str, Any] = {"url": URLS[source]}
        if source in FORMATS:
            origin["format"] = FORMATS[source]
        job = Job.model_validate({"job": "j", "source": origin,
                                  "destination": target, "tables": [table],
                                  "transport": transport, "kafka": {"bootstrap_servers": "k:9092"}})
        problems = check(job)
        c = Combination(mode, source, destination, transport, method)
        assert (not problems) == (c in allowed), (c, problems)
        for p in problems:
            assert "; use " in p.message, (c, p.message)  # says what would work instead


# ---------------------------------------------------------------- the matrix agrees with the code


def test_kinds_cover_the_connector_registry_and_its_roles() -> None:
    from copyjob.connectors import REGISTRY, can_be

    from copyjob.core.urls import SCHEME_ALIASES, parse_url

    assert set(matrix.KIND_OF_SCHEME) == set(REGISTRY)
    for scheme in REGISTRY:
        url = parse_url(f"{scheme}://localhost/db")
        kind = kind_of(url.raw)
        assert can_be(url, "source") == any(kind in r.source for r in SUPPORTED), scheme
        assert can_be(url, "destination") == any(kind in r.destination for r in SUPPORTED), scheme
    for alias, scheme in SCHEME_ALIASES.items():
        assert kind_of(f"{alias}://h/db") == kind_of(f"{scheme}://h/db") is not None
    assert kind_of("POSTGRES://h/db") == "postgresql" and kind_of("shop.db") is None and kind_of("x://y") is None


def test_cdc_sources_are_those_with_a_change_log_reader() -> None:
    from copyjob.ingest import LOG_SOURCES

    # and a kafka:// source, whose topics are change events already (copyjob.topic_source)
    assert {s for r in SUPPORTED if "cdc" in r.mode for s in r.source} == \
        {kind_of(f"{s}://h/d") for s in LOG_SOURCES} | {"kafka"}


def test_merge_goes_exactly_where_the_destination_supports_it() -> None:
    from copyjob.connectors import REGISTRY, can_be, destination_capabilities

    from copyjob.core.urls import parse_url

    for scheme in REGISTRY:
        url = parse_url(f"{scheme}://host/db" if scheme in ("postgresql", "mysql", "mariadb", "s3")
                        else f"{scheme}:///x")
        if not can_be(url, "destination"):
            continue  # kafka://: a source only
        kind = kind_of(url.raw)
        merges = any(kind in r.destination and "merge" in r.update_method for r in SUPPORTED)
        assert merges == destination_capabilities(url).supports_merge, scheme


def test_rendered_markdown_has_a_row_per_matrix_row() -> None:
    text = render_markdown()
    lines = text.splitlines()
    assert lines[0] == "| mode | source | destination | transport | update_method | notes |"
    assert lines[1].startswith("| --- |")
    body = [line for line in lines[2:] if line.startswith("| ")]
    assert len(body) == len(SUPPORTED)
    assert any(line.startswith("| cdc | postgresql, mysql/mariadb | postgresql, mysql/mariadb, sqlite, duckdb, "
                               "parquet, delta, iceberg | direct, kafka | append, merge |") for line in body)
    assert body[-1].startswith("| cdc | kafka | postgresql, mysql/mariadb, sqlite, duckdb, parquet, delta, iceberg "
                               "| direct | append, merge |")
    assert "`mariadb://`" in text and "`s3://`" in text


def test_public_api() -> None:
    assert matrix.__all__ == ["KIND_OF_SCHEME", "SUPPORTED", "Combination", "Problem", "Row", "check",
                                      "combinations", "kind_of", "render_markdown", "supported"]


def test_the_architecture_page_shows_this_matrix() -> None:
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert render_markdown().strip() in page, "docs/architecture.md: paste copyjob.matrix.render_markdown()"
