"""Logs: ``--log-format json`` (or ``COPYJOB_LOG_FORMAT=json``) writes one JSON object per line with the job,
run id and table; serve logs a failed run at ERROR with its error (passwords hidden)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from copyjob import logs
from tests.copyjob.test_serve import Served, make_job, runs, serve, wait_until
from tests.helpers import ROOT, copyjob, write_job

pytestmark = pytest.mark.timeout(180)
__all__ = ["serve"]  # the fixture, shared with test_serve


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line parses on its own (the test fails on the first that does not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def failing_job(tmp_path: Path, pg_url: str) -> Path:
    user, rest = pg_url.removeprefix("postgresql://").split("@", 1)
    (tmp_path / "broken").mkdir()
    return write_job(tmp_path / "broken" / "job.yaml", {
        "job": "broken", "source": {"url": f"postgresql://{user.split(':')[0]}:Sekr1t-wrong@{rest}"},
        "destination": {"url": "sqlite:///dst.db"}, "tables": [{"name": "orders"}],
        "schedules": [{"every": "1s"}]})


class JsonServed(Served):
    def __init__(self, tmp_path: Path, *args: str | Path, env: dict[str, str] | None = None,
                 flag: bool = True) -> None:
        self.log = tmp_path / f"serve-{time.monotonic_ns()}.log"
        full = {**os.environ, "COPYJOB_SERVE_TICK": "0.2", "COLUMNS": "200", **(env or {})}
        options = ["--log-format", "json"] if flag else []
        with self.log.open("w") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-m", "copyjob", *options, "serve", *map(str, args)],
                                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, env=full)
        wait_until(lambda: "serving job=" in self.text() or self.proc.poll() is not None, 30, "serve to start")
        assert self.proc.poll() is None, self.text()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_logs_json_lines_with_job_and_run_id(tmp_path: Path, pg_url: str, how: str) -> None:
    good = make_job(tmp_path, {"orders": 20}, schedules=[{"every": "1s"}])
    bad = failing_job(tmp_path, pg_url)
    served = JsonServed(tmp_path, good, bad, flag=how == "flag",
                        env={"COPYJOB_LOG_FORMAT": "json"} if how == "env" else None)
    try:
        wait_until(lambda: any(r["status"] == "ok" for r in runs(tmp_path))
                   and any(r["status"] == "failed" for r in runs(tmp_path / "broken")), 90, "a good and a bad run")
        wait_until(lambda: '"level": "ERROR"' in served.text() and '"event": "run_finished"' in served.text(), 30,
                   "both runs logged")
        assert served.stop() == 0, served.text()
    finally:
        served.kill()
    entries = json_lines(served.text())
    finished = [e for e in entries if e.get("event") == "run_finished" and e.get("job") == "served"]
    assert finished and finished[0]["level"] == "INFO" and finished[0]["rows"] == 20, entries
    assert finished[0]["run_id"] in {r["run_id"] for r in runs(tmp_path)}
    assert {"time", "level", "message"} <= set(finished[0])
    failed = [e for e in entries if e.get("job") == "broken" and e["level"] == "ERROR"]
    assert failed and "password" in failed[0]["error"] and "status=failed" in failed[0]["message"], entries
    assert "Sekr1t-wrong" not in served.text()


def test_serve_logs_a_failed_run_at_error_with_its_error_in_text(tmp_path: Path, pg_url: str,
                                                                  serve: Callable[..., Served]) -> None:
    bad = failing_job(tmp_path, pg_url)
    other = make_job(tmp_path, {"orders": 5}, schedules=[{"every": "1h"}])
    served = serve(bad, other)
    wait_until(lambda: "ERROR job=broken" in served.text(), 90, "the failed run logged")
    assert served.stop() == 0, served.text()
    line = next(li for li in served.text().splitlines() if "ERROR job=broken" in li)
    assert "status=failed" in line and "orders: source:" in line and "password" in line, line
    assert "Sekr1t-wrong" not in served.text()
    assert not [li for li in served.text().splitlines() if "INFO job=broken" in li and "status=failed" in li]


def test_the_log_format_is_checked(tmp_path: Path) -> None:
    result = copyjob("--log-format", "xml", "status", tmp_path / "job.yaml")
    assert result.code == 2 and "--log-format" in result.output, result.output


def test_records_carry_the_context_and_their_own_fields() -> None:
    record = logging.LogRecord("copyjob", logging.WARNING, __file__, 1, "copied %d rows", (5,), None)
    record.rows = 5
    with logs.log_context(job="j", table="t"):
        logs.bind_log_context(run_id="r1")
        logs.ContextFilter().filter(record)
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["job"] == "j" and entry["run_id"] == "r1" and entry["table"] == "t" and entry["rows"] == 5
    assert entry["message"] == "copied 5 rows" and entry["level"] == "WARNING"
    outside = logging.LogRecord("copyjob", logging.INFO, __file__, 1, "x", (), None)
    logs.ContextFilter().filter(outside)
    assert "job" not in json.loads(logs.JsonFormatter().format(outside))
