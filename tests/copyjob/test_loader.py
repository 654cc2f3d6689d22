"""The job file: good files load with defaults; every bad input is one line naming file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from copyjob.core.errors import JobFileError
from copyjob.loader import load_job

GOOD = """\
job: shop-to-warehouse
source:      {url: "postgresql://app:s3cret@${PG_HOST}:5432/shop"}
destination: {url: "duckdb:///warehouse.duckdb"}
copy:
  mode: incremental
  update_method: merge
tables:
  - name: public.orders
    target: orders
    incremental_column: updated_at
    key: [id]
    columns: {customer_id: cust_id}
  - name: public.products
    mode: full
    update_method: overwrite
"""


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, **kwargs: object) -> JobFileError:
    with pytest.raises(JobFileError) as info:
        load_job(path, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_good_job_loads_with_defaults_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_HOST", "db.example")
    loaded = load_job(write(tmp_path, GOOD))
    job = loaded.job
    assert job.source.url == "postgresql://app:s3cret@db.example:5432/shop"
    orders, products = loaded.tables
    assert (orders.mode, orders.update_method, orders.spec.target_name) == ("incremental", "merge", "orders")
    assert orders.spec.columns == {"customer_id": "cust_id"}
    assert (products.mode, products.update_method, products.spec.target_name) == \
        ("full", "overwrite", "public.products")
    assert job.copy_settings.create_tables is True and job.copy_settings.truncate_before_full_load is False


def test_variables_file_default_and_named_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_HOST", "from-environment")
    write(tmp_path, "default: {PG_HOST: localhost}\nprod: {PG_HOST: db.prod}\n", "variables.yaml")
    job_file = write(tmp_path, GOOD)
    assert "localhost" in load_job(job_file).job.source.url
    assert "db.prod" in load_job(job_file, env="prod").job.source.url


def test_environment_fills_what_the_library_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "default: {OTHER: x}\n", "vars.yaml")
    monkeypatch.setenv("PG_HOST", "env-host")
    loaded = load_job(write(tmp_path, GOOD), variables=tmp_path / "vars.yaml")
    assert "env-host" in loaded.job.source.url


def test_unresolved_variable_names_it_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PG_HOST", raising=False)
    path = write(tmp_path, GOOD)
    e = error_of(path)
    assert "${PG_HOST}" in str(e) and e.line == 2 and e.field == "source.url"
    assert str(e).startswith(f"{path}:2: source.url:")
    assert "s3cret" not in str(e)


def test_unknown_env_set_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_HOST", "h")
    write(tmp_path, "default: {PG_HOST: localhost}\n", "variables.yaml")
    assert "no value set 'staging'" in str(error_of(write(tmp_path, GOOD), env="staging"))


@pytest.mark.parametrize(("edit", "line", "field", "words"), [
    (("    key: [id]\n", "    key: [id]\n    colour: red\n"), 12, "tables[0].colour", "unknown key"),
    (("  mode: incremental\n", "  mode: sometimes\n"), 5, "copy.mode", "'full', 'incremental' or 'cdc'"),
    (("  update_method: merge\n", "  update_method: merge\n  create_tables: maybe\n"), 7,
     "copy.create_tables", "boolean"),
    (("    incremental_column: updated_at\n", ""), 8, "tables[0].incremental_column", "required"),
    (("    key: [id]\n", "    key: []\n"), 11, "tables[0].key", "at least one"),
    (("job: shop-to-warehouse\n", "job: shop to warehouse\n"), 1, "job", "letters"),
    (("    update_method: overwrite\n", "    update_method: overwrite\n    target: orders\n"), 16,
     "tables[1].target",
     "same target"),
])
def test_bad_job_files_name_file_line_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                edit: tuple[str, str], line: int, field: str,
                                                words: str) -> None:
    monkeypatch.setenv("PG_HOST", "h")
    assert edit[0] in GOOD
    path = write(tmp_path, GOOD.replace(edit[0], edit[1], 1))
    e = error_of(path)
    assert (e.field, e.line) == (field, line), str(e)
    assert words in str(e)
    assert "\n" not in str(e)
    assert e.exit_code == 2


def test_missing_required_section(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, "job: j\nsource: {url: 'sqlite:///a.db'}\ntables: [{name: t}]\n"))
    assert e.field == "destination" and "required" in str(e)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, "job: j\nsource: {url: 'x'\ntables: [\n"))
    assert e.line is not None and "invalid YAML" in str(e)


def test_missing_file(tmp_path: Path) -> None:
    assert "file not found" in str(error_of(tmp_path / "nope.yaml"))


def test_incremental_with_overwrite_is_refused(tmp_path: Path) -> None:
    e = error_of(write(tmp_path, """\
        job: j
        source: {url: 'sqlite:///a.db'}
        destination: {url: 'sqlite:///b.db'}
        copy: {mode: incremental, update_method: overwrite}
        tables:
          - {name: t, incremental_column: u}
        """))
    assert e.field == "copy.update_method" and e.line == 4


def test_a_bare_number_in_a_duration_is_seconds(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    path = write(tmp_path, """\
        job: d
        source: {url: "sqlite:///a.db"}
        destination: {url: "sqlite:///b.db"}
        schedules: [{every: 60}]
        triggers: [{file_arrival: {path: ./inbox, debounce: 1.5}}]
        copy: {max_outage: 300}
        tables: [{name: t}]
        """)
    job = load_job(path).job
    assert job.schedules[0].every == "60"
    assert job.triggers[0].file_arrival.debounce == "1.5"
    assert job.copy_settings.max_outage_s(streaming=True) == 300.0
    zero = write(tmp_path, path.read_text().replace("every: 60", "every: 0"), "zero.yaml")
    assert "every" in str(error_of(zero))
