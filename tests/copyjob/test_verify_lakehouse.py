"""copyjob verify through the real CLI where the destination is a lakehouse table, Delta and Iceberg alike:
equal after a copy of types these formats store differently (timestamptz as UTC, decimals narrow and wider than
38 digits, uuid, json, time); a row changed, deleted and added behind copyjob's back (written with deltalake /
pyiceberg) found with exact keys and columns and repaired in one table commit that moves no watermark; a CDC
table lagging its source re-checked (the newer snapshot read) until a run commits the changes; a file set into
tables on S3 (a moto server), the merge table repaired and the append table reported, not repaired."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.helpers import ROOT, copyjob, write_job
from tests.pg_cdc import drop_slots, execute
from tests.services._process import free_port, stop_process

FORMATS = ["delta", "iceberg"]
S3 = {"endpoint_url": "", "access_key": "k", "secret_key": "s", "region": "us-east-1"}


@pytest.fixture(params=FORMATS)
def fmt(request: pytest.FixtureRequest) -> str:
    pytest.importorskip("deltalake" if request.param == "delta" else "pyiceberg")
    return str(request.param)


@pytest.fixture
def items(pg_url: str) -> str:
    """A table of the types Delta and Iceberg hold differently from PostgreSQL."""
    execute(pg_url, "CREATE TABLE items (id bigint PRIMARY KEY, at timestamptz NOT NULL, amount numeric(12,3), "
                    "wide numeric(50,10), u uuid, doc jsonb, t time, day date, ratio double precision, "
                    "small smallint, flag boolean, raw bytea, note text)",
            "INSERT INTO items SELECT g, timestamptz '2024-03-31 01:30:00.5+02' + g * interval '37 min 0.123456 s', "
            "g * 1.125, g * 10000000000000000000.0000000001, md5(g::text)::uuid, "
            "jsonb_build_object('zeta', g, 'alpha', 'x' || g, 'nested', jsonb_build_object('b', 1, 'a', 2)), "
            "time '00:00:00.000001' + g * interval '17 s', date '2024-01-01' + g, g / 7.0, (g % 300)::smallint, "
            "g % 2 = 0, decode(md5(g::text), 'hex'), CASE WHEN g % 5 = 0 THEN NULL ELSE 'note ' || g END "
            "FROM generate_series(1, 3000) g")
    return pg_url


def job_file(tmp_path: Path, source: str, fmt: str, table: dict[str, Any], *, mode: str, method: str,
             dst: str = "./lake", options: dict[str, str] | None = None, more: list[dict[str, Any]] | None = None
             ) -> Path:
    job: dict[str, Any] = {
        "job": f"vl_{fmt}", "source": {"url": source},
        "destination": {"url": dst, "format": fmt, **({"options": options} if options else {})},
        "copy": {"mode": mode, "update_method": method}, "tables": [table, *(more or [])]}
    if mode == "cdc":
        job["cdc"] = {"max_batch_delay": "50ms"}
    return write_job(tmp_path / "job.yaml", job)


def run_ok(job: Path) -> None:
    result = copyjob("run", job, "--no-progress")
    assert result.code == 0, result.output


def verify_all(job: Path, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """The exit code and each table's report."""
    result = copyjob("verify", job, "--json", *extra)
    assert result.code in (0, 1) and result.stdout.startswith("{"), result.output
    return result.code, {t["table"]: t for t in json.loads(result.stdout)["tables"]}


def verify(job: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, reports = verify_all(job, *extra)
    (report,) = reports.values()
    return code, report


# ---------------------------------------------------------------- writing behind copyjob's back


class Lake:
    """One table of a Delta or Iceberg destination, written directly with deltalake / pyiceberg."""

    def __init__(self, fmt: str, root: str, name: str, s3: dict[str, str] | None = None,
                 catalog_db: Path | None = None) -> None:
        self.fmt, self.root, self.name, self.s3 = fmt, root, name, s3
        self.catalog_db = catalog_db or Path(root) / "catalog.db"

    def _delta(self) -> Any:
        from deltalake import DeltaTable

        return DeltaTable(f"{self.root}/{self.name}", storage_options=self._delta_options())

    def _delta_options(self) -> dict[str, str] | None:
        if self.s3 is None:
            return None
        return {"AWS_ENDPOINT_URL": self.s3["endpoint_url"], "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

    def _iceberg(self) -> Any:
        from pyiceberg.catalog.sql import SqlCatalog

        warehouse = self.root if self.s3 else Path(self.root).as_uri()
        props = {} if self.s3 is None else {"s3.endpoint": self.s3["endpoint_url"], "s3.access-key-id": "k",
                                            "s3.secret-access-key": "s", "s3.region": "us-east-1"}
        catalog = SqlCatalog("copyjob", uri=f"sqlite:///{self.catalog_db}", warehouse=warehouse, **props)
        return catalog.load_table(("copyjob", self.name))

    def rows(self, ids: list[int]) -> pa.Table:
        found = pa.table(self._delta().to_pyarrow_table()) if self.fmt == "delta" else self._iceberg().scan().to_arrow()
        return found.filter(pc.is_in(found["id"], pa.array(ids, found.schema.field("id").type)))

    def delete(self, ids: list[int]) -> None:
        listed = ", ".join(map(str, ids))
        if self.fmt == "delta":
            self._delta().delete(f"id IN ({listed})")
        else:
            self._iceberg().delete(f"id IN ({listed})")

    def append(self, rows: pa.Table) -> None:
        if self.fmt == "delta":
            from deltalake import write_deltalake

            write_deltalake(f"{self.root}/{self.name}", rows, mode="append", storage_options=self._delta_options())
        else:
            self._iceberg().append(rows)

    def edit(self, changed: dict[int, dict[str, Any]], deleted: list[int], added: dict[int, int]) -> None:
        """Rows ``changed`` ({id: {column: value}}), ``deleted``, and ``added`` ({new id: id copied}), each in a
        commit of its own, as another tool would."""
        old = self.rows(sorted(changed))
        self.delete(sorted(changed) + deleted)
        ids = old["id"].to_pylist()
        for column, _ in {c: 0 for values in changed.values() for c in values}.items():
            values = [changed[i].get(column, v) for i, v in zip(ids, old[column].to_pylist(), strict=True)]
            at = old.schema.get_field_index(column)
            old = old.set_column(at, old.schema.field(at), pa.array(values).cast(old.schema.field(at).type))
        self.append(old)
        for new, copied in added.items():
            row = self.rows([copied])
            self.append(row.set_column(row.schema.get_field_index("id"), row.schema.field("id"),
                                       pa.array([new], row.schema.field("id").type)))


# ---------------------------------------------------------------- a database into a lakehouse table


@pytest.mark.parametrize(("spec", "value", "text"), [
    ("decimal(50,10)", "10000000000000000000.0000000001", "10000000000000000000.0000000001"),
    ("decimal(50,10)", "1E+30", "1000000000000000000000000000000.0000000000"),
    ("decimal", "1234567890123456789.1234567890123450", "1234567890123456789.123456789012345"),
])
def test_decimals_wider_than_28_digits_keep_every_digit(spec: str, value: str, text: str) -> None:
    """Both formats keep such decimals as text, hashed in Python: no digit may be rounded away."""
    from copyjob.connectors._canonical import canonical_by_spec

    assert canonical_by_spec(spec, value) == text


def test_equal_then_edits_found_exactly_and_repaired(tmp_path: Path, items: str, fmt: str) -> None:
    job = job_file(tmp_path, items, fmt, {"name": "items", "incremental_column": "id"}, mode="incremental",
                   method="merge")
    run_ok(job)
    execute(items, "INSERT INTO items (id, at) VALUES (3001, now()), (3002, now())")  # not copied yet
    code, report = verify(job)
    assert code == 0, report  # the types stored differently compare equal
    assert report["rows_source"] == report["rows_destination"] == 3000
    assert "compared up to the committed watermark id <= 3000" in report["notes"], report
    assert report["notes"][0].startswith("Delta version " if fmt == "delta" else "Iceberg snapshot "), report
    assert report["notes"][0].endswith(" read (3000 rows)"), report

    lake = Lake(fmt, str(tmp_path / "lake"), "items")
    lake.edit(changed={17: {"note": "edited"}, 10: {"amount": None}}, deleted=[2, 2999], added={0: 5})
    code, report = verify(job, "--repair")
    assert report["missing"] == [{"id": 2}, {"id": 2999}]
    assert report["extra"] == [{"id": 0}]
    assert report["different"] == [{"key": {"id": 10}, "columns": ["amount"]},
                                   {"key": {"id": 17}, "columns": ["note"]}]
    assert code == 0 and report["result"] == "repaired" and report["repaired"] == 5, report

    code, report = verify(job)
    assert code == 0 and report["rows_destination"] == 3000, report
    # the repair committed no marker: the watermark is where the last run left it
    assert "compared up to the committed watermark id <= 3000" in report["notes"], report


@pytest.fixture
def slots(pg_url: str) -> Iterator[None]:
    yield
    drop_slots(pg_url)


@pytest.mark.usefixtures("slots")
def test_a_cdc_table_is_rechecked_until_the_stream_brings_the_changes(tmp_path: Path, items: str,
                                                                      fmt: str) -> None:
    job = job_file(tmp_path, items, fmt, {"name": "items"}, mode="cdc", method="merge")
    run_ok(job)
    execute(items, "UPDATE items SET note = 'paid', doc = '{\"b\": [1, 2], \"a\": null}' WHERE id % 100 = 0",  # 30
            "DELETE FROM items WHERE id BETWEEN 500 AND 510",  # 11, 500 updated too
            "INSERT INTO items (id, at, u) VALUES (5000, now(), gen_random_uuid())")
    # the table lags the source: verify reads its snapshot again until a run commits the changes
    checking = subprocess.Popen([sys.executable, "-m", "copyjob", "verify", str(job), "--json", "--settle", "120"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert checking.stderr is not None
        waiting = ""
        for line in checking.stderr:  # verify has compared the lagging snapshot and waits
            if "re-checking" in line:
                waiting = line
                break
        assert "items: 41 key(s) differ" in waiting, waiting
        run_ok(job)
        out, err = checking.communicate(timeout=120)
    finally:
        if checking.poll() is None:
            checking.kill()
            checking.communicate()
    report = json.loads(out)["tables"][0]
    assert checking.returncode == 0, (report, err)
    assert report["rechecked"] == 41 and report["rows_source"] == 2990, report
    assert report["missing"] == report["extra"] == report["different"] == [], report


# ---------------------------------------------------------------- a file set into a table on S3


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto server for the module, in a process of its own (delta-rs holds the GIL while it waits for S3)."""
    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(server, 30)


def test_a_file_set_into_tables_on_s3_merge_repaired_append_reported(tmp_path: Path, fmt: str,
                                                                      s3_endpoint: str) -> None:
    import pyarrow.fs as pafs

    pafs.S3FileSystem(endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http", access_key="k",
                      secret_key="s", region="us-east-1", allow_bucket_creation=True).create_dir(f"lake-{fmt}")
    (tmp_path / "in").mkdir()
    for name, ids in (("a.csv", range(1, 301)), ("b.csv", range(250, 401))):  # 250-300 again: the last wins
        (tmp_path / "in" / name).write_text("id,name,amount\n" + "".join(f"{i},{name} {i},{i}.5\n" for i in ids))
    options = {**S3, "endpoint_url": s3_endpoint}
    if fmt == "iceberg":
        options["catalog_uri"] = f"sqlite:///{tmp_path / 'catalog.db'}"
    tables = [{"name": "sales", "pattern": "*.csv", "format": "csv", "key": ["id"]},
              {"name": "events", "pattern": "a.csv", "format": "csv", "key": ["id"], "update_method": "append"}]
    job = job_file(tmp_path, "./in", fmt, tables[0], mode="incremental", method="merge",
                   dst=f"s3://lake-{fmt}/tables", options=options, more=tables[1:])
    run_ok(job)
    code, reports = verify_all(job)
    assert code == 0, reports
    assert reports["sales"]["rows_source"] == reports["sales"]["rows_destination"] == 400, reports
    assert reports["events"]["rows_destination"] == 300, reports

    Lake(fmt, f"s3://lake-{fmt}/tables", "sales", options, tmp_path / "catalog.db").edit(
        changed={260: {"name": "edited"}}, deleted=[3], added={})
    Lake(fmt, f"s3://lake-{fmt}/tables", "events", options, tmp_path / "catalog.db").delete([7])
    code, reports = verify_all(job, "--repair")
    assert code == 1, reports  # the append table is not repaired
    sales, events = reports["sales"], reports["events"]
    assert sales["missing"] == [{"id": 3}] and sales["different"] == [{"key": {"id": 260}, "columns": ["name"]}]
    assert sales["result"] == "repaired" and sales["repaired"] == 2, sales
    assert events["missing"] == [{"id": 7}], events
    assert any("an append table is reported, not repaired" in n for n in events["notes"]), events
    code, reports = verify_all(job, "--table", "sales")
    assert code == 0, reports
