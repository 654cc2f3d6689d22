"""Reading a job file is bounded and ``validate`` finds every problem in one pass, before anything runs:
alias bombs and oversized files, variables that refer to themselves, URLs no connector opens, crons that never
fire, invalid slot and publication names, and several mistakes at once."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from copyjob.core.errors import JobFileError
from copyjob.jobfile import SLOT_NAME
from copyjob.loader import load_job
from copyjob.yamlfile import MAX_ALIAS_VALUES, MAX_BYTES, read_yaml
from tests.helpers import ROOT, CliResult, copyjob

pytestmark = pytest.mark.timeout(120)

JOB = """\
job: j
source: {url: 'sqlite:///a.db'}
destination: {url: 'sqlite:///b.db'}
tables: [{name: t}]
"""

BOMB = """\
job: bomb
source: {url: 'sqlite:///a.db'}
destination: {url: 'sqlite:///b.db'}
tables: [{name: t}]
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def lines(result: CliResult) -> list[str]:
    return result.stderr.strip().splitlines()


def validate_within(limit_bytes: int, *args: str | Path) -> CliResult:
    """``copyjob validate`` in a process that may not use more than ``limit_bytes`` of address space."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    proc = subprocess.run([sys.executable, "-m", "copyjob", "validate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=110, preexec_fn=limit)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


# ---------------------------------------------------------------- bounded parsing


def test_an_alias_bomb_is_refused_within_little_memory(tmp_path: Path) -> None:
    bomb = write(tmp_path / "job.yaml", BOMB)
    out = validate_within(1024 * 2**20, bomb)  # a billion values would need gigabytes
    assert out.code == 2, out.output
    assert lines(out) == [f"error: {bomb}:8: aliases of the anchor here repeat more than {MAX_ALIAS_VALUES:,} "
                          "values (an alias bomb?): write the values out"]


def test_aliases_for_small_shared_pieces_still_work(tmp_path: Path) -> None:
    loaded = load_job(write(tmp_path / "job.yaml", """\
        job: j
        source: {url: 'sqlite:///a.db'}
        destination: {url: 'sqlite:///b.db'}
        tables:
          - &orders {name: orders, key: [id], update_method: merge}
          - <<: *orders
            name: orders_archive
            target: archive
        """))
    assert [(t.name, t.spec.target_name, t.update_method) for t in loaded.tables] == \
        [("orders", "orders", "merge"), ("orders_archive", "archive", "merge")]
    assert loaded.line_of(("tables", 1, "target")) == 8


def test_a_recursive_alias_and_a_key_given_twice_are_errors(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="refers to its own anchor") as info:
        read_yaml(write(tmp_path / "a.yaml", "a: &x [1, *x]\n"))
    assert info.value.line == 1
    with pytest.raises(JobFileError, match=r"given twice \(first at line 1\)") as info:
        read_yaml(write(tmp_path / "b.yaml", "job: a\nsource: {}\njob: b\n"))
    assert (info.value.line, info.value.field) == (3, "job")


@pytest.mark.parametrize("name", ["job.yaml", "variables.yaml"])
def test_an_oversized_job_or_variables_file_is_refused(tmp_path: Path, name: str) -> None:
    write(tmp_path / "job.yaml", JOB)
    big = tmp_path / name
    big.write_text(big.read_text() if big.exists() else "default: {}\n")
    with big.open("a") as f:
        f.write("# " + "x" * MAX_BYTES + "\n")
    out = copyjob("validate", tmp_path / "job.yaml")
    assert out.code == 2, out.output
    assert lines(out) == [f"error: {big}: larger than 8 MiB ({MAX_BYTES:,} bytes), the most a job or variables "
                          "file may be: split the job into several files"]


def test_plain_values_follow_yaml_1_2(tmp_path: Path) -> None:
    doc, _ = read_yaml(write(tmp_path / "a.yaml", "a: yes\nb: 'on'\nc: 1:30\nd: 010\ne: 2024-01-01\nf: true\n"
                                                  "g: ~\nh: 0x1F\ni: 1.5\n"))
    assert doc == {"a": "yes", "b": "on", "c": "1:30", "d": 10, "e": "2024-01-01", "f": True, "g": None,
                   "h": 31, "i": 1.5}


# ---------------------------------------------------------------- variables


@pytest.mark.parametrize(("library", "line", "field", "words"), [
    ("default:\n  A: ${A}\n", 2, "default.A", "${A} refers to itself"),
    ("default:\n  A: x${B}\n  B: ${A}y\n", 2, "default.A", "variables refer to each other in a cycle: A → B → A"),
    ("default:\n  A: '${B}'\nprod:\n  B: ${A}\n", 2, "default.A", "A → B → A"),
    ("default:\n  HOST: {name: db}\n", 2, "default.HOST", "not a mapping"),
    ("default:\n  HOST: [a, b]\n", 2, "default.HOST", "not a list"),
])
def test_a_variable_that_refers_to_itself_or_is_not_text_is_an_error(tmp_path: Path, library: str, line: int,
                                                                     field: str, words: str) -> None:
    variables = write(tmp_path / "variables.yaml", library)
    job = write(tmp_path / "job.yaml", JOB.replace("sqlite:///a.db", "sqlite:///${A}.db"))
    out = copyjob("validate", job, "--env", "prod") if "prod:" in library else copyjob("validate", job)
    assert out.code == 2, out.output
    assert lines(out)[0].startswith(f"error: {variables}:{line}: {field}: "), out.stderr
    assert words in out.stderr


def test_a_variable_may_use_others_and_is_the_text_written(tmp_path: Path) -> None:
    write(tmp_path / "variables.yaml", """\
        default:
          DB: shop
          FILE: ${DB}_v${VERSION}.db
          VERSION: 1.10
          PASSWORD: pa$$word$${x}
        """)
    job = write(tmp_path / "job.yaml", JOB.replace("sqlite:///a.db", "sqlite:///${FILE}")
                .replace("tables: [{name: t}]", "tables: [{name: t, target: '${PASSWORD}'}]"))
    loaded = load_job(job)
    assert loaded.job.source.url == "sqlite:///shop_v1.10.db"
    assert loaded.job.tables[0].target == "pa$$word${x}"


def test_an_unresolved_variable_inside_a_variable_names_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    variables = write(tmp_path / "variables.yaml", "default:\n  A: x\n  FILE: ${NOPE}.db\n")
    job = write(tmp_path / "job.yaml", JOB.replace("sqlite:///a.db", "sqlite:///${FILE}"))
    with pytest.raises(JobFileError) as info:
        load_job(job)
    assert (info.value.line, info.value.field) == (2, "source.url")
    assert f"unresolved variable ${{NOPE}} in the value of FILE ({variables}:3)" in str(info.value)


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize(("url", "words"), [
    ("oracle://scott@db/wh", "unknown URL scheme 'oracle' (known: duckdb://, file://, kafka://, mariadb://, mysql://, "
                             "parquet://, postgresql://, s3://, sqlite://)"),
    ("warehouse.db", "not a URL: expected scheme://… (known: duckdb://"),
    ("postgresql://app@db:port/shop", "bad port"),
])
def test_a_url_no_connector_opens_is_refused_at_load(tmp_path: Path, url: str, words: str) -> None:
    job = write(tmp_path / "job.yaml", JOB.replace("sqlite:///b.db", url))
    out = copyjob("validate", job)
    assert out.code == 2, out.output
    assert len(lines(out)) == 1 and lines(out)[0].startswith(f"error: {job}:3: destination.url: {words}"), out.stderr


@pytest.mark.parametrize("folder", ["./inbox", "inbox/"])
def test_a_plain_relative_folder_is_still_a_file_source(tmp_path: Path, folder: str) -> None:
    (tmp_path / "inbox").mkdir()
    job = write(tmp_path / "job.yaml", f"""\
        job: j
        source: {{url: '{folder}'}}
        destination: {{url: 'sqlite:///b.db'}}
        tables: [{{name: orders, pattern: '*.csv'}}]
        """)
    out = copyjob("validate", job)
    assert out.code == 0, out.output


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize(("cron", "words"), [
    ("0 0 31 2 *", "'0 0 31 2 *' never fires (no such date, such as 31 February)"),
    ("0 0 * * * 30 2030", "'0 0 * * * 30 2030' has 7 fields: a cron expression has five"),
    ("0 0 * *", "'0 0 * *' has 4 fields"),
])
def test_a_cron_that_never_fires_or_is_not_five_fields_is_refused_at_its_line(tmp_path: Path, cron: str,
                                                                              words: str) -> None:
    job = write(tmp_path / "job.yaml", JOB + f"schedules:\n  - every: 1h\n  - cron: '{cron}'\n")
    out = copyjob("validate", job)
    assert out.code == 2, out.output
    assert lines(out)[0].startswith(f"error: {job}:7: schedules[1].cron: ") and words in lines(out)[0], out.stderr
    status = copyjob("status", job)
    assert status.code == 2 and "Traceback" not in status.output, status.output


# ---------------------------------------------------------------- slot and publication names

CDC_JOB = """\
job: shop-sync
source: {url: 'postgresql://app@db/shop'}
destination: {url: 'sqlite:///b.db'}
copy: {mode: cdc, update_method: merge}
tables: [{name: public.orders, key: [id]}]
"""


@pytest.mark.parametrize(("cdc", "field", "words"), [
    ("cdc: {slot: Shop-Sync}", "cdc.slot", "'Shop-Sync': a replication slot name is lower case letters, digits"),
    ("cdc: {slot: " + "s" * 64 + "}", "cdc.slot", "at most 63 bytes"),
    ("cdc: {publication: {name: 'shop pub'}}", "cdc.publication.name",
     "'shop pub': a publication name is letters, digits and _, not starting with a digit, at most 63 bytes"),
])
def test_an_invalid_slot_or_publication_name_is_refused_at_load(tmp_path: Path, cdc: str, field: str,
                                                                words: str) -> None:
    job = write(tmp_path / "job.yaml", CDC_JOB + cdc + "\n")
    out = copyjob("validate", job)
    assert out.code == 2, out.output
    assert lines(out)[0].startswith(f"error: {job}:6: {field}: ") and words in lines(out)[0], out.stderr


def test_default_names_stay_as_they_were_and_keep_the_environment(tmp_path: Path) -> None:
    from copyjob.ingest.postgres_cdc import default_name

    write(tmp_path / "variables.yaml", "default: {}\nprod-EU: {}\n")
    job = write(tmp_path / "job.yaml", CDC_JOB)
    loaded = load_job(job, env="prod-EU")
    assert default_name(loaded.stream_name) == "copyjob_shop_sync_prod_eu"  # as before: valid, not renamed
    assert SLOT_NAME.match(default_name(loaded.stream_name))
    long_job = write(tmp_path / "job.yaml", CDC_JOB.replace("shop-sync", "s" * 56))
    load_job(long_job)  # without --env a long name is cut as before
    with pytest.raises(JobFileError, match="longer than PostgreSQL's 63 bytes") as info:
        load_job(long_job, env="prod-EU")
    assert (info.value.line, info.value.field) == (1, "cdc.slot")
    write(long_job, CDC_JOB.replace("shop-sync", "s" * 56) + "cdc: {slot: s_prod, publication: {name: s_prod}}\n")
    assert load_job(long_job, env="prod-EU").job.cdc.slot == "s_prod"


# ---------------------------------------------------------------- every problem in one pass


def test_every_mistake_is_reported_in_one_validate(tmp_path: Path) -> None:
    job = write(tmp_path / "job.yaml", """\
        job: j
        source: {url: 'oracle://scott@db/wh'}
        destination: {url: 'sqlite:///b.db'}
        tables:
          - name: t
            incremental_colum: updated_at
        schedules: [{cron: '0 0 31 2 *'}]
        """)
    out = copyjob("validate", job)
    assert out.code == 2, out.output
    assert [line.split(": ")[1:3] for line in lines(out)] == [
        [f"{job}:2", "source.url"],
        [f"{job}:6", "tables[0].incremental_colum"],
        [f"{job}:7", "schedules[0].cron"],
    ], out.stderr
    assert "unknown key (did you mean incremental_column?)" in lines(out)[1]
    run = copyjob("run", job)
    assert run.code == 2 and lines(run) == lines(out), run.output


def test_checks_across_fields_are_all_reported_too(tmp_path: Path) -> None:
    job = write(tmp_path / "job.yaml", """\
        job: j
        source: {url: 'sqlite:///a.db'}
        destination: {url: 'sqlite:///b.db'}
        tables:
          - {name: a, target: t}
          - {name: b, target: t}
          - {name: c, mode: incremental}
          - {name: d, columns: {x: y, z: y}}
        """)
    with pytest.raises(JobFileError) as info:
        load_job(job)
    assert [(p.line, p.field) for p in info.value.problems] == [
        (6, "tables[1].target"), (7, "tables[2].incremental_column"), (8, "tables[3].columns")]
    assert str(info.value).count("\n") == 2


def test_a_misspelled_section_is_one_mistake(tmp_path: Path) -> None:
    job = write(tmp_path / "job.yaml", JOB.replace("destination:", "destinaton:"))
    with pytest.raises(JobFileError) as info:
        load_job(job)
    assert [str(p).split(": ", 1)[1] for p in info.value.problems] == \
        ["destinaton: unknown key (did you mean destination?)"]
