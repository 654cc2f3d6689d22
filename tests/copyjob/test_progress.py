"""Progress of a full copy: a total from the source's row estimate, a percentage and the time left on a
terminal; plain lines with the same figures otherwise."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from copyjob.core.errors import UsageError
from copyjob.progress import PLAIN_EVERY_ENV, Progress, StreamTally, Tally, plain_every_s
from tests.copyjob.test_serve import make_job
from tests.helpers import ROOT, copyjob, write_job
from tests.pg_cdc import drop_slots, execute, rows

pytestmark = pytest.mark.timeout(180)


def test_tally_percent_and_time_left() -> None:
    tally = Tally(total=1000, started=100.0)
    tally.add(250)
    assert tally.percent == 25.0
    assert tally.eta_s(now=110.0) == pytest.approx(30.0)  # 25 rows/s, 750 rows to go
    assert tally.line("orders", now=110.0) == "orders: 250 of 1,000 rows (25%, 25 rows/s, about 30 s left)"
    tally.add(1000)  # the estimate was low: the total follows the count
    assert (tally.total, tally.percent) == (1250, 100.0)
    unknown = Tally(started=0.0)
    unknown.add(10)
    assert unknown.percent is None and unknown.eta_s(now=1.0) is None
    assert unknown.line("t", now=1.0) == "t: 10 rows (10 rows/s)"


def test_plain_lines_carry_the_total(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("copyjob.progress.PLAIN_EVERY_S", 0.0)
    stream = io.StringIO()
    with Progress(stream=stream, live=False).table("orders", total=400) as advance:
        advance(100)
    assert re.fullmatch(r"orders: 100 of 400 rows \(25%, [\d,]+ rows/s, about .+ left\)\n", stream.getvalue())


def test_plain_lines_come_every_10_s_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PLAIN_EVERY_ENV, raising=False)
    assert plain_every_s() == 10.0
    monkeypatch.setenv(PLAIN_EVERY_ENV, "250ms")
    assert plain_every_s() == 0.25
    monkeypatch.setenv(PLAIN_EVERY_ENV, "soon")
    with pytest.raises(UsageError, match=PLAIN_EVERY_ENV):
        plain_every_s()


def read_terminal(args: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run ``copyjob ARGS`` with a pseudo-terminal as its stdout and stderr; (exit code, everything shown)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "copyjob", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower, env=env)
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process ended
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), shown.decode(errors="replace")
    finally:
        proc.kill()
        os.close(leader)


def test_a_full_copy_on_a_terminal_shows_a_percentage_and_the_total(tmp_path: Path) -> None:
    job = make_job(tmp_path, {"big": 3000}, slow=True)  # a copy of a second or two: the bar is drawn
    code, shown = read_terminal(["run", str(job)])
    assert code == 0, shown
    assert re.search(r"\b\d{1,3}%", shown), shown
    assert "/3,000 rows" in shown, shown


def test_stream_tally_line() -> None:
    tally = StreamTally()
    tally.add({"c": 3, "u": 2, "d": 1, "t": 1})
    tally.lag_s = 0.25
    assert tally.line("orders") == "orders: 6 changes applied (3 inserts, 2 updates, 1 deletes), lag 0.2 s"


def test_stream_says_what_it_applied_every_few_seconds_and_history_keeps_it(
        tmp_path: Path, pg_url: str, pg_url2: str) -> None:
    execute(pg_url, "CREATE TABLE orders (id int PRIMARY KEY, note text)",
            "INSERT INTO orders SELECT g, 'n' FROM generate_series(1, 10) g")
    job = write_job(tmp_path / "job.yaml", {
        "job": "streamed", "source": {"url": pg_url}, "destination": {"url": pg_url2},
        "copy": {"mode": "cdc", "update_method": "merge"}, "cdc": {"max_batch_delay": "50ms"},
        "tables": [{"name": "orders"}]})
    log = tmp_path / "stream.log"
    try:
        with log.open("w") as stderr, (tmp_path / "stream.out").open("w") as stdout:
            # a line every 0.5 s instead of 10 s: the same line, sooner
            proc = subprocess.Popen([sys.executable, "-m", "copyjob", "stream", str(job)], cwd=ROOT,
                                    stdout=stdout, stderr=stderr,
                                    env={**os.environ, "COLUMNS": "200", PLAIN_EVERY_ENV: "0.5s"})
        try:
            deadline = time.monotonic() + 90
            while rows(pg_url2, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'orders'") \
                    != [(1,)] or rows(pg_url2, "SELECT count(*) FROM orders") != [(10,)]:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.2)
            execute(pg_url, "INSERT INTO orders SELECT g, 'new' FROM generate_series(11, 40) g",
                    "UPDATE orders SET note = 'changed' WHERE id <= 5", "DELETE FROM orders WHERE id IN (6, 7)")
            wanted = "orders: 37 changes applied (30 inserts, 5 updates, 2 deletes), lag "
            while wanted not in log.read_text():
                assert time.monotonic() < deadline + 60 and proc.poll() is None, log.read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    finally:
        drop_slots(pg_url)
    assert proc.returncode == 0, log.read_text()
    summary = (tmp_path / "stream.out").read_text()
    assert "changes: orders: 30 inserts, 5 updates, 2 deletes" in summary, summary
    listed = json.loads(copyjob("history", job, "--json").stdout)
    assert listed[0]["tables"][0]["changes"] == {"inserts": 30, "updates": 5, "deletes": 2}, listed
