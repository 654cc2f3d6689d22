"""The web monitor's API, /metrics and access rules, through real ``copyjob serve --http`` and ``copyjob monitor``
processes (tests/copyjob/test_monitor_browser.py drives the page itself in Chromium).

Every wait is for a condition (a run in the API, a sample in the lag series), with generous deadlines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from copyjob.core.errors import UsageError
from copyjob.monitor.access import Access, Address
from tests.helpers import ROOT, copyjob, sqlite_script, write_job
from tests.pg_cdc import drop_slots, execute

pytestmark = pytest.mark.timeout(180)

SECRET = "Mon1t0r-S3cret!pw"
WAIT_S = 90


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Process:
    """``copyjob serve|monitor … --http 127.0.0.1:0`` in the background; ``url`` is where its monitor listens."""

    def __init__(self, tmp_path: Path, *args: str | Path, env: dict[str, str] | None = None) -> None:
        self.log = tmp_path / f"monitor-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "COPYJOB_SERVE_TICK": "0.2", "COLUMNS": "200", **(env or {})}
        with self.log.open("w") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-m", "copyjob", *map(str, args)], cwd=ROOT,
                                         stdout=subprocess.DEVNULL, stderr=stderr, env=full_env)
        found = wait_until(lambda: re.search(r"monitor on (http://\S+)", self.text()) or self.proc.poll() is not None,
                           "the monitor to listen", timeout=60)
        assert self.proc.poll() is None, self.text()
        assert isinstance(found, re.Match)
        self.url = found.group(1)
        if str(args[0]) == "serve":  # the monitor listens before serve watches: a file landing between is missed
            wait_until(lambda: "serving job=" in self.text() or self.proc.poll() is not None, "serve to watch",
                       timeout=60)

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # ---- HTTP

    def request(self, path: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get(self, path: str, **headers: str) -> Any:
        status, body = self.request(path, headers=headers)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def post(self, path: str, **headers: str) -> tuple[int, Any]:
        status, body = self.request(path, method="POST", headers={"X-Copyjob-Action": "1", **headers})
        return status, json.loads(body)

    def runs(self, job: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.get(f"/api/jobs/{job}/runs")
        return runs

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.request("/metrics")
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def file_job(tmp_path: Path, rows: int = 300) -> Path:
    """A SQLite → SQLite job run by CSV files landing in ./inbox."""
    (tmp_path / "inbox").mkdir(exist_ok=True)
    sqlite_script(tmp_path / "src.db", "CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT); "
                  f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows}) "
                  "INSERT INTO orders SELECT i, 'v' || i FROM s;")
    return write_job(tmp_path / "job.yaml", {
        "job": "watched", "source": {"url": "sqlite:///src.db"}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "full", "update_method": "overwrite"}, "tables": [{"name": "orders"}],
        "triggers": [{"file_arrival": {"path": "./inbox", "pattern": "*.csv", "debounce": "0.2s"}}]})


def sample(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


# ---------------------------------------------------------------- serve --http


def test_serve_http_shows_runs_and_counts_them_in_metrics(tmp_path: Path, start: Callable[..., Process]) -> None:
    job = file_job(tmp_path, rows=300)
    served = start("serve", job, "--http", "127.0.0.1:0")
    assert served.request("/healthz") == (200, b"ok\n")
    jobs = served.get("/api/jobs")["jobs"]
    assert [(j["job"], j["modes"], j["transport"], j["last_run"]) for j in jobs] == [
        ("watched", ["full"], "direct", None)]
    assert jobs[0]["triggers"] == [{"path": "./inbox", "pattern": "*.csv", "debounce": "0.2s"}]

    (tmp_path / "inbox" / "a.csv").write_text("id\n1\n")
    first = wait_until(lambda: [r for r in served.runs("watched") if r["status"] == "ok"], "the triggered run")
    assert first[0]["trigger"] == "trigger: file_arrival inbox/a.csv"
    assert (first[0]["rows_read"], first[0]["rows_written"], first[0]["tables"]) == (300, 300, 1)

    status, body = served.post("/api/jobs/watched/run")
    assert status == 202, body
    runs = wait_until(lambda: [r for r in served.runs("watched") if r["status"] == "ok"][1:] and
                      served.runs("watched"), "the second run")
    assert [r["trigger"] for r in runs] == ["manual: monitor", "trigger: file_arrival inbox/a.csv"]

    detail = served.get(f"/api/runs/{runs[0]['run_id']}")
    table = detail["tables"][0]
    assert (table["table"], table["mode"], table["status"], table["rows_read"], table["rows_written"]) == (
        "orders", "full", "ok", 300, 300)
    assert table["duration_s"] >= 0 and "rows_per_s" in table and "watermark_after" in table

    # /metrics, parsed with prometheus_client's parser, agrees with the runs that happened
    metrics = wait_until(lambda: (m := served.metrics()) and sample(m, "copyjob_runs_total", job="watched",
                                                                     status="ok") == 2 and m, "both runs counted")
    assert sample(metrics, "copyjob_rows_read_total", job="watched", table="orders") == 600
    assert sample(metrics, "copyjob_rows_written_total", job="watched", table="orders") == 600
    assert sample(metrics, "copyjob_run_duration_seconds_count", job="watched") == 2
    assert sample(metrics, "copyjob_table_duration_seconds_count", job="watched", table="orders") == 2
    last_end = datetime.fromisoformat(runs[0]["finished_at"]).timestamp()
    assert sample(metrics, "copyjob_last_success_timestamp_seconds", job="watched") == pytest.approx(last_end)
    assert sample(metrics, "copyjob_table_last_success_timestamp_seconds", job="watched",
                  table="orders") == pytest.approx(last_end)
    assert sample(metrics, "copyjob_quarantined_files", job="watched", table="orders") == 0
    assert sample(metrics, "copyjob_runs_total", job="watched", status="failed") is None

    view = served.get("/api/jobs")["jobs"][0]
    assert view["last_run"]["run_id"] == runs[0]["run_id"] and view["last_run"]["status"] == "ok"
    assert served.stop() == 0, served.text()


def test_run_now_while_the_job_runs_is_refused(tmp_path: Path, start: Callable[..., Process]) -> None:
    job = file_job(tmp_path, rows=10)
    served = start("serve", job, "--http", "127.0.0.1:0")
    assert served.post("/api/jobs/nope/run")[0] == 404
    assert served.post("/api/jobs/watched/tables/nope/reset")[0] == 404
    status, body = served.post("/api/jobs/watched/tables/orders/reset")
    assert (status, body) == (200, {"job": "watched", "reset": ["orders"]})
    assert served.stop() == 0, served.text()


# ---------------------------------------------------------------- access


def test_address_and_token_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COPYJOB_TOKEN", raising=False)
    assert Address.parse("127.0.0.1:8080") == Address("127.0.0.1", 8080)
    assert Address.parse(":9000") == Address("127.0.0.1", 9000)
    assert Address.parse("[::1]:9000") == Address("::1", 9000)
    assert [Address.parse(a).loopback for a in ("127.0.0.1:1", "127.0.0.2:1", "localhost:1", "[::1]:1",
                                                "0.0.0.0:1", "10.1.2.3:1", "monitor.example.com:1")] == [
        True, True, True, True, False, False, False]
    with pytest.raises(UsageError, match="HOST:PORT"):
        Address.parse("127.0.0.1:http")

    open_ = Access.of(Address("127.0.0.1", 1), None)
    assert open_.allows(None, action=True) and open_.allows(None, action=False)
    actions_only = Access.of(Address("127.0.0.1", 1), "t0k")
    assert not actions_only.allows(None, action=True) and not actions_only.allows("bad", action=True)
    assert actions_only.allows("t0k", action=True) and actions_only.allows(None, action=False)
    with pytest.raises(UsageError, match=r"not a loopback address.*token"):
        Access.of(Address("0.0.0.0", 1), None)
    monkeypatch.setenv("COPYJOB_TOKEN", "from-env")
    exposed = Access.of(Address("0.0.0.0", 1), None)
    assert exposed.reads_need_token and exposed.allows("from-env", action=False)
    assert not exposed.allows(None, action=False)


def test_off_loopback_without_a_token_does_not_start(tmp_path: Path) -> None:
    job = file_job(tmp_path)
    for command in ("serve", "monitor"):
        result = copyjob(command, job, "--http", "0.0.0.0:0", env={"COPYJOB_TOKEN": ""})
        assert result.code == 2, result.output
        assert "not a loopback address" in result.output and "--token or COPYJOB_TOKEN" in result.output


def test_token_mode_guards_reads_and_actions(tmp_path: Path, start: Callable[..., Process]) -> None:
    """--require-token behaves as off loopback (only 127.0.0.1 is reachable here)."""
    job = file_job(tmp_path, rows=5)
    watched = start("monitor", job, "--http", "127.0.0.1:0", "--require-token", env={"COPYJOB_TOKEN": "let-me-in"})
    assert watched.request("/healthz")[0] == 200
    assert watched.request("/metrics")[0] == 200
    assert watched.request("/")[0] == 200 and watched.request("/static/monitor.js")[0] == 200
    assert watched.request("/api/jobs")[0] == 401
    assert watched.request("/api/jobs", headers={"X-Copyjob-Token": "wrong"})[0] == 401
    info = watched.get("/api/info", **{"X-Copyjob-Token": "let-me-in"})
    assert info["actions_need_token"] and info["reads_need_token"] and info["mode"] == "monitor"
    assert watched.post("/api/jobs/watched/run")[0] == 401
    assert watched.request("/api/jobs/watched/run", method="POST",
                           headers={"Authorization": "Bearer let-me-in"})[0] == 403  # not from the page
    status, _ = watched.post("/api/jobs/watched/run", Authorization="Bearer let-me-in")
    assert status == 202
    runs = wait_until(lambda: [r for r in watched.get("/api/jobs/watched/runs", **{"X-Copyjob-Token": "let-me-in"})
                               if r["status"] == "ok"], "the run started from the monitor")
    assert runs[0]["trigger"] == "manual: monitor" and runs[0]["rows_written"] == 5
    assert watched.stop() == 0, watched.text()


def test_loopback_answers_only_loopback_host_names(tmp_path: Path, start: Callable[..., Process]) -> None:
    """Without a token, a request naming another host (DNS rebinding) gets nothing; a form post (without the
    action header) acts on nothing."""
    watched = start("monitor", file_job(tmp_path), "--http", "127.0.0.1:0")
    assert watched.request("/api/jobs", headers={"Host": "evil.example.com"})[0] == 421
    assert watched.request("/api/jobs", headers={"Host": "localhost:1234"})[0] == 200
    assert watched.request("/api/jobs/watched/run", method="POST")[0] == 403
    assert watched.get("/api/info")["actions_need_token"] is False
    assert watched.stop() == 0


# ---------------------------------------------------------------- secrets


def every_response(p: Process, job: str) -> str:
    """The page, its files, every API answer and the metrics, as one text."""
    texts = [p.request(path)[1].decode() for path in
             ("/", "/static/monitor.js", "/static/monitor.css", "/metrics", "/api/info", "/api/jobs",
              f"/api/jobs/{job}/runs", f"/api/jobs/{job}/lag")]
    texts += [p.request(f"/api/runs/{r['run_id']}")[1].decode() for r in p.runs(job)]
    return "\n".join(texts)


def test_no_secret_in_any_response(tmp_path: Path, start: Callable[..., Process], pg_url: str) -> None:
    """A destination URL with a password that fails the run: its error names the URL; the monitor shows the
    failure but never the password."""
    sqlite_script(tmp_path / "src.db", "CREATE TABLE orders (id INTEGER PRIMARY KEY); INSERT INTO orders VALUES (1)")
    host = pg_url.split("@", 1)[1].rsplit("/", 1)[0]
    job = write_job(tmp_path / "secret.yaml", {
        "job": "secretive", "source": {"url": "sqlite:///src.db"},
        "destination": {"url": f"postgresql://nobody:{SECRET}@{host}/no_such_database"},
        "tables": [{"name": "orders"}]})
    watched = start("monitor", job, "--http", "127.0.0.1:0")
    assert watched.post("/api/jobs/secretive/run")[0] == 202
    failed = wait_until(lambda: [r for r in watched.runs("secretive") if r["status"] == "failed"], "the failed run")
    assert "no_such_database" in failed[0]["error"] and ":***@" in failed[0]["error"]
    wait_until(lambda: (m := watched.metrics()) and sample(m, "copyjob_runs_total", job="secretive",
                                                           status="failed") == 1, "the failed run counted")
    text = every_response(watched, "secretive")
    assert "no_such_database" in text
    assert SECRET not in text and SECRET.replace("!", "%21") not in text
    assert watched.stop() == 0


# ---------------------------------------------------------------- CDC lag


@pytest.fixture
def cdc_source(pg_url: str) -> Iterator[str]:
    execute(pg_url, "CREATE TABLE items (id int PRIMARY KEY, name text)",
            "INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20) g")
    yield pg_url
    drop_slots(pg_url)


def test_cdc_lag_is_sampled_for_the_chart_and_the_gauges(tmp_path: Path, start: Callable[..., Process],
                                                         cdc_source: str) -> None:
    job = write_job(tmp_path / "cdc.yaml", {
        "job": "changes", "source": {"url": cdc_source}, "destination": {"url": "sqlite:///dst.db"},
        "copy": {"mode": "cdc"}, "tables": [{"name": "items", "key": ["id"]}]})
    first = copyjob("run", job)  # the snapshot; the slot is created and kept
    assert first.code == 0, first.output
    execute(cdc_source, "INSERT INTO items SELECT g, 'late' FROM generate_series(21, 500) g")  # WAL to lag by
    watched = start("monitor", job, "--http", "127.0.0.1:0")
    lag = wait_until(lambda: (s := watched.get("/api/jobs/changes/lag"))["samples"] and s, "a lag sample")
    point = lag["samples"][-1]
    assert point["error"] is None and point["lag_bytes"] > 0 and point["lag_seconds"] is not None
    assert lag["latest"]["slot"] and lag["latest"]["exists"] is True
    metrics = watched.metrics()
    assert (sample(metrics, "copyjob_cdc_lag_bytes", job="changes") or 0) > 0
    assert sample(metrics, "copyjob_cdc_lag_seconds", job="changes") is not None
    job_view = wait_until(lambda: (j := watched.get("/api/jobs")["jobs"][0])["cdc"] and j, "the lag in the job")
    assert job_view["modes"] == ["cdc"] and job_view["cdc"]["lag_bytes"] > 0
    assert watched.request("/api/jobs/nope/lag")[0] == 404
    assert watched.stop() == 0
