"""File paths stay inside their roots, file URLs follow RFC 8089, and what copyjob writes is private.

- a pattern with ``..`` or an absolute pattern is a job-file error at its line (validate and run, exit 2);
- symbolic links leading outside the source folder are skipped with a warning (a file, a folder, under
  ``**``), when listing and when opening; ``follow_symlinks_outside: true`` reads them; links inside work;
- ``file:///abs`` is the absolute folder; ``file:rel``, ``./rel`` and ``rel/`` are beside the job file;
  another host is refused; an old ``file:///rel`` is named with the fix;
- outputs and the folders copyjob creates are 0600/0700, never looser than the umask allows.
"""

from __future__ import annotations

import logging
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from copyjob.connectors.files.filesystem import list_files, open_root, open_stream

from copyjob.core.errors import ConfigurationError, JobFileError
from copyjob.core.urls import identity, parse_url
from copyjob.loader import load_job
from tests.copyjob.test_file_copy import T0, csv_rows, put, run_ok
from tests.helpers import copyjob, duckdb_rows, sqlite_rows, write_job


def make_job(tmp_path: Path, tables: list[dict[str, Any]], source: dict[str, Any] | str = "./in",
             destination: dict[str, Any] | str = "sqlite:///out.db", **extra: Any) -> Path:
    src = source if isinstance(source, dict) else {"url": source}
    dst = destination if isinstance(destination, dict) else {"url": destination}
    return write_job(tmp_path / "job.yaml", {"job": "paths", "source": src, "destination": dst, "tables": tables,
                                             **extra})


def line_of(job_file: Path, text: str) -> int:
    return next(i for i, line in enumerate(job_file.read_text().splitlines(), 1) if text in line)


def ids(db: Path, table: str = "t") -> list[int]:
    """The ids copied into ``table`` ([] when no file made it)."""
    if not sqlite_rows(db, f"SELECT name FROM sqlite_master WHERE name = '{table}'"):
        return []
    return [r[0] for r in sqlite_rows(db, f"SELECT id FROM {table} ORDER BY id")]


# ---------------------------------------------------------------- patterns stay inside the root


@pytest.mark.parametrize("pattern", ["../secret.csv", "../../x/*.csv", "./../secret.csv", "sub/../../secret.csv",
                                     "/etc/*.csv", "~/secret.csv"])
def test_a_pattern_that_leaves_the_folder_is_a_job_file_error(tmp_path: Path, pattern: str) -> None:
    put(tmp_path, "secret.csv", csv_rows(range(1, 3)))
    put(tmp_path / "in", "a.csv", csv_rows(range(5, 6)))
    job = make_job(tmp_path, [{"name": "t", "pattern": pattern, "format": "csv"}])
    where = f"{job}:{line_of(job, 'pattern:')}: tables[0].pattern:"
    with pytest.raises(JobFileError) as caught:
        load_job(job)
    assert caught.value.field == "tables[0].pattern" and str(caught.value).startswith(where)
    for command in ("validate", "run"):
        out = copyjob(command, job)
        assert out.code == 2 and where in out.output, out.output
    assert not (tmp_path / "out.db").exists()


def test_a_trigger_pattern_that_leaves_its_folder_is_a_job_file_error(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    job = make_job(tmp_path, [{"name": "t", "pattern": "*.csv"}],
                   triggers=[{"file_arrival": {"path": "./inbox", "pattern": "../other/*.csv"}}])
    out = copyjob("validate", job)
    assert out.code == 2, out.output
    assert f"{job}:{line_of(job, 'pattern: ../other')}: triggers[0].file_arrival.pattern:" in out.output
    assert "leaves the trigger folder" in out.output


def test_listing_refuses_an_escaping_pattern_and_ignores_dot_segments(tmp_path: Path) -> None:
    put(tmp_path, "secret.csv", "x\n")
    put(tmp_path / "in", "a.csv", "x\n")
    root = open_root(parse_url(str(tmp_path / "in")))
    with pytest.raises(ConfigurationError, match=r"may not contain '\.\.'"):
        list_files(root, "../secret.csv")
    assert [f.path for f in list_files(root, "./a.csv")] == ["a.csv"]
    assert [f.path for f in list_files(root, "./*.csv")] == ["a.csv"]


# ---------------------------------------------------------------- symbolic links


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """``in/`` with files of its own, links to files and a folder outside it, a link inside it, and loops."""
    outside = tmp_path / "secret"
    put(outside, "s.csv", csv_rows(range(100, 102)))
    put(outside, "d/x.csv", csv_rows(range(200, 202)))
    src = tmp_path / "in"
    put(src, "a.csv", csv_rows(range(1, 3)), T0)
    put(src, "sub/b.csv", csv_rows(range(3, 5)), T0)
    put(src, "data/c.csv", csv_rows(range(5, 6)), T0)
    (src / "link.csv").symlink_to(outside / "s.csv")
    (src / "linkdir").symlink_to(outside / "d")
    (src / "sub" / "rel.csv").symlink_to("../../secret/s.csv")  # relative, through ..
    (src / "c_link.csv").symlink_to("data/c.csv")  # inside: followed
    (src / "loop").symlink_to("..")  # outside (the parent of the root)
    (src / "sub" / "up").symlink_to("..")  # inside, but a parent of itself: not descended again
    return tmp_path


@pytest.mark.parametrize(("pattern", "expected"), [
    ("link.csv", []),
    ("linkdir/*.csv", []),
    ("*.csv", [1, 2, 5]),
    ("**/*.csv", [1, 2, 3, 4, 5, 5]),
])
def test_links_outside_the_folder_are_skipped_with_a_warning(linked: Path, pattern: str,
                                                            expected: list[int]) -> None:
    job = make_job(linked, [{"name": "t", "pattern": pattern, "format": "csv"}])
    out = copyjob("run", job)
    assert out.code == 0, out.output
    assert "skipped: a symbolic link to" in out.output and "follow_symlinks_outside" in out.output
    assert ids(linked / "out.db") == expected


def test_follow_symlinks_outside_reads_them(linked: Path, caplog: pytest.LogCaptureFixture) -> None:
    job = make_job(linked, [{"name": "t", "pattern": "**/*.csv", "format": "csv"}],
                   source={"url": "./in", "follow_symlinks_outside": True})
    with caplog.at_level(logging.WARNING, logger="copyjob"):
        run_ok(job)
    # link.csv, sub/rel.csv and loop/secret/s.csv; linkdir/x.csv and loop/secret/d/x.csv (loop/in is the root)
    assert ids(linked / "out.db") == [1, 2, 3, 4, 5, 5, 100, 100, 100, 101, 101, 101, 200, 200, 201, 201]
    assert "symbolic link" not in caplog.text


def test_follow_symlinks_outside_is_for_a_local_file_source(tmp_path: Path) -> None:
    job = make_job(tmp_path, [{"name": "t", "pattern": "*.csv"}],
                   destination={"url": "./out", "follow_symlinks_outside": True})
    with pytest.raises(JobFileError) as caught:
        load_job(job)
    assert caught.value.field == "destination.follow_symlinks_outside"
    job = make_job(tmp_path, [{"name": "t"}], source={"url": "sqlite:///s.db", "follow_symlinks_outside": True})
    with pytest.raises(JobFileError) as caught:
        load_job(job)
    assert caught.value.field == "source.follow_symlinks_outside"


def test_opening_checks_the_file_actually_opened(linked: Path) -> None:
    """A file listed inside the folder and swapped for a link to outside before it is read is not read."""
    root = open_root(parse_url(str(linked / "in")))
    (linked / "in" / "a.csv").unlink()
    (linked / "in" / "a.csv").symlink_to(linked / "secret" / "s.csv")
    with pytest.raises(PermissionError, match="outside the source folder"):
        open_stream(root, "a.csv")
    with open_stream(root, "c_link.csv") as f:
        assert f.read().startswith(b"id,name")
    follow = open_root(parse_url(f"file://{linked / 'in'}?follow_symlinks_outside=true"))
    with open_stream(follow, "a.csv") as f:
        assert b"100" in f.read()


def test_a_fifo_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "p.csv")
    root = open_root(parse_url(str(tmp_path / "in")))
    assert list_files(root, "*.csv") == []
    with pytest.raises(PermissionError, match="not a regular file"):
        open_stream(root, "p.csv")


# ---------------------------------------------------------------- file URLs (RFC 8089)


def test_file_urls_follow_rfc_8089(tmp_path: Path) -> None:
    base = tmp_path
    assert parse_url("file:///data/in").path == Path("/data/in")
    assert parse_url("file://localhost/data/in").path == Path("/data/in")
    assert parse_url("FILE://LOCALHOST/data/in").path == Path("/data/in")
    assert parse_url("file:////data/in").path == Path("/data/in")  # the old absolute spelling still is
    assert parse_url("file:/data/in").path == Path("/data/in")
    assert parse_url("file:///data/my%20in?format=csv").path == Path("/data/my in")
    assert parse_url("file:///data/in?format=csv").query == {"format": "csv"}
    for rel in ("file:inbox", "./inbox", "inbox/", "./inbox/"):
        url = parse_url(rel, base)
        assert url.scheme == "file" and url.path is not None and url.path.resolve() == base / "inbox", rel
    assert parse_url("../up", base).path == base / ".." / "up"
    with pytest.raises(ConfigurationError, match="names the machine 'server'"):
        parse_url("file://server/share/in")
    with pytest.raises(ConfigurationError, match="not a URL"):
        parse_url("inbox", base)
    assert identity(parse_url("file:///data/x/../in")) == "file:///data/in"
    assert identity(parse_url("file:in", base)) == identity(parse_url("./in", base)) == f"file://{base / 'in'}"
    # database files keep SQLAlchemy's convention, as SQLAlchemy and DuckDB's dialect spell them
    assert parse_url("sqlite:///shop.db", base).path == base / "shop.db"
    assert parse_url("duckdb:////abs/w.duckdb", base).path == Path("/abs/w.duckdb")


def test_file_url_with_three_slashes_reads_the_absolute_folder(tmp_path: Path) -> None:
    data = tmp_path / "data" / "in"
    put(data, "a.csv", csv_rows(range(1, 4)))
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    job = write_job(jobs / "job.yaml", {"job": "abs", "source": {"url": f"file://{data}"},
                                        "destination": {"url": "sqlite:///out.db"},
                                        "tables": [{"name": "t", "pattern": "*.csv"}]})
    run_ok(job)
    assert ids(jobs / "out.db") == [1, 2, 3]


@pytest.mark.parametrize("url", ["file:in", "./in", "in/"])
def test_relative_folders_are_beside_the_job_file(tmp_path: Path, url: str) -> None:
    put(tmp_path / "in", "a.csv", csv_rows(range(1, 3)))
    run_ok(make_job(tmp_path, [{"name": "t", "pattern": "*.csv"}], source=url))
    assert ids(tmp_path / "out.db") == [1, 2]


def test_an_old_relative_file_url_says_how_to_write_it(tmp_path: Path) -> None:
    name = f"in-{uuid.uuid4().hex[:8]}"
    assert not Path(f"/{name}").exists()
    put(tmp_path / name, "a.csv", csv_rows(range(1, 3)))
    job = make_job(tmp_path, [{"name": "t", "pattern": "*.csv"}], source=f"file:///{name}")
    with pytest.raises(JobFileError) as caught:
        load_job(job)
    assert caught.value.field == "source.url" and caught.value.line == line_of(job, "url: file:")
    assert f"./{name} or file:{name}" in str(caught.value) and "RFC 8089" in str(caught.value)
    dest = make_job(tmp_path, [{"name": "t", "pattern": "*.csv"}], source=f"./{name}",
                    destination=f"file:///{name}")
    with pytest.raises(JobFileError) as caught:
        load_job(dest)
    assert caught.value.field == "destination.url"


def test_a_file_url_naming_another_host_is_a_job_file_error(tmp_path: Path) -> None:
    job = make_job(tmp_path, [{"name": "t", "pattern": "*.csv"}], source="file://inbox/")
    with pytest.raises(JobFileError) as caught:
        load_job(job)
    assert caught.value.field == "source.url" and "./inbox/ (file:inbox/)" in str(caught.value)


# ---------------------------------------------------------------- private outputs


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def created(top: Path) -> Iterator[Path]:
    yield top
    yield from top.rglob("*")


@pytest.mark.parametrize("destination", [
    {"url": "file:out", "format": "csv"}, {"url": "file:out"}, {"url": "./out/", "format": "jsonl"},
    {"url": "parquet:///out"}, {"url": "sqlite:///out/db/o.db"}, {"url": "duckdb:///out/db/o.duckdb"},
], ids=["csv", "parquet", "jsonl", "parquet-folder", "sqlite", "duckdb"])
def test_outputs_and_their_folders_are_private(tmp_path: Path, umask: int, destination: dict[str, str]) -> None:
    put(tmp_path / "in", "sales/a.csv", csv_rows(range(1, 4)))
    run_ok(make_job(tmp_path, [{"name": "t", "pattern": "**/*.csv"}], destination=destination))
    paths = list(created(tmp_path / "out"))
    assert len(paths) > 2
    for path in paths:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), (path, oct(mode(path)))
    if "duckdb" in destination["url"]:
        assert duckdb_rows(tmp_path / "out" / "db" / "o.duckdb", "SELECT count(*) FROM t") == [(3,)]


def test_folders_that_exist_keep_their_modes(tmp_path: Path, umask: int) -> None:
    put(tmp_path / "in", "a.csv", csv_rows(range(1, 4)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o755)
    run_ok(make_job(tmp_path, [{"name": "t", "pattern": "*.csv"}], destination="./out"))
    assert mode(tmp_path / "out") == 0o755
    assert mode(tmp_path / "out" / "t") == 0o700 and mode(tmp_path / "out" / "t" / "a.parquet") == 0o600


def test_the_command_keeps_what_it_creates_private(tmp_path: Path) -> None:
    """The copyjob command adds 077 to the umask, so what libraries create behind its back (DuckDB's .wal,
    the demo's SQLite shop) is private too; a stricter umask stays."""
    from copyjob.core.private import private_umask

    before = os.umask(0o022)
    try:
        assert private_umask() == 0o022 and os.umask(0o027) == 0o077
        assert private_umask() == 0o027 and os.umask(0o022) == 0o077
        os.umask(0o277)
        assert private_umask() == 0o277 and os.umask(0o022) == 0o277
        out = copyjob("demo", "--dir", tmp_path / "demo")
    finally:
        os.umask(before)
    assert out.code == 0, out.output
    for name in ("shop.db", "warehouse.duckdb", "shop-to-warehouse.yaml"):
        assert mode(tmp_path / "demo" / name) == 0o600, name
