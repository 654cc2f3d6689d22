"""The monitor's HTTP server: the page, the JSON API, ``/metrics`` and ``/healthz`` (docs/monitor.md).

The stdlib's :class:`~http.server.ThreadingHTTPServer` in a thread of its own: a request never waits for a
run, a state store or a source (the feed and the lag sampler read those in their own threads; handlers read
their last results). Only the two actions touch a state store from a request thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from copyjob.core.errors import CopyjobError, UsageError
from copyjob.core.redaction import redact
from copyjob.monitor.access import Access, Address
from copyjob.monitor.actions import Refused, RunStarter, reset_table
from copyjob.monitor.feed import HISTORY_LIMIT, Feed, Watched, scrub
from copyjob.monitor.lag import DEFAULT_INTERVAL_S, LagSampler
from copyjob.monitor.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("copyjob.monitor")

TOKEN_HEADER = "X-Copyjob-Token"
ACTION_HEADER = "X-Copyjob-Action"
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class MonitorOptions:
    address: Address
    token: str | None = None
    force_token: bool = False
    """Require the token as off loopback even on a loopback address (behind a proxy; tests)."""
    refresh_s: float = 1.0
    lag_interval_s: float = DEFAULT_INTERVAL_S


def _static_files() -> dict[str, bytes]:
    folder = resources.files("copyjob.monitor") / "static"
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")}


class Monitor:
    """The monitor of ``jobs``; ``runs`` starts a run for "run now" (serve's loop, or threads of its own)."""

    def __init__(self, jobs: Sequence[Watched], runs: RunStarter, options: MonitorOptions, *, mode: str) -> None:
        self.jobs = {j.name: j for j in jobs}
        self.runs = runs
        self.options = options
        self.mode = mode
        self.access = Access.of(options.address, options.token, force_token=options.force_token)
        self.metrics = Metrics()
        self.lag = LagSampler(jobs, interval_s=options.lag_interval_s, on_sample=self.metrics.lag,
                              on_consumer_lag=self.metrics.consumer_lag)
        self.feed = Feed(jobs, refresh_s=options.refresh_s, metrics=self.metrics)
        self.static = _static_files()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "started"
        host, port = str(self._httpd.server_address[0]), self._httpd.server_address[1]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> None:
        try:
            httpd = ThreadingHTTPServer((self.options.address.host, self.options.address.port), _handler(self))
        except OSError as exc:
            raise UsageError(f"--http {self.options.address.host}:{self.options.address.port}: {exc.strerror}") \
                from None
        httpd.daemon_threads = True
        self._httpd = httpd
        self.feed.start()
        self.lag.start()
        self._thread = threading.Thread(target=httpd.serve_forever, name="copyjob-monitor-http", daemon=True)
        self._thread.start()
        log.info("monitor on %s%s", self.url, " (token required)" if self.access.reads_need_token else "")

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.lag.stop()
        self.feed.stop()

    # ---- the API (each returns a JSON-able value or raises Refused)

    def info(self) -> dict[str, Any]:
        return {"mode": self.mode, "actions_need_token": self.access.token is not None,
                "reads_need_token": self.access.reads_need_token, "refresh_s": self.options.refresh_s,
                "lag_interval_s": self.options.lag_interval_s, "history_limit": HISTORY_LIMIT}

    def jobs_view(self) -> dict[str, Any]:
        snapshot = self.feed.snapshot
        jobs = [{**job, "cdc": self.lag.latest(job["job"]), "kafka_consumer_lag": self.lag.consumer_lag(job["job"])}
                for job in snapshot.jobs]  # the latest samples
        return {"read_at": snapshot.read_at.isoformat() if snapshot.read_at else None, "jobs": jobs}

    def runs_view(self, job: str, limit: int) -> list[dict[str, Any]]:
        self._job(job)
        return [_summary(r) for r in self.feed.snapshot.runs.get(job, [])[:limit]]

    def run_view(self, run_id: str) -> dict[str, Any]:
        run = self.feed.snapshot.run(run_id)
        if run is None:
            raise Refused(f"no run {run_id} among the last {HISTORY_LIMIT} of each job", 404)
        return run

    def lag_view(self, job: str) -> dict[str, Any]:
        watched = self._job(job)
        samples = self.lag.samples(job)
        consumer = self.lag.consumer_lag(job)
        if samples is None and watched.name not in self.lag.consuming:
            raise Refused(f"job {job} has no cdc tables and applies no kafka topics", 404)
        return {"job": job, "interval_s": self.lag.interval_s, "latest": scrub(self.lag.latest(job)),
                "samples": scrub(samples or []), "kafka_consumer_lag": scrub(consumer)}

    def run_now(self, job: str) -> dict[str, Any]:
        self.runs.run_now(self._job(job))
        self.feed.wake()
        return {"job": job, "started": True}

    def reset(self, job: str, table: str) -> dict[str, Any]:
        try:
            tables = reset_table(self._job(job), table)
        except CopyjobError as exc:
            raise Refused(redact(str(exc)), 503) from None
        self.feed.wake()
        return {"job": job, "reset": tables}

    def _job(self, name: str) -> Watched:
        job = self.jobs.get(name)
        if job is None:
            raise Refused(f"no job {name!r}", 404)
        return job


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "tables"} | {"tables": len(run["tables"])}


# ---------------------------------------------------------------- requests


def _handler(monitor: Monitor) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.monitor = monitor
    return Handler


class _Handler(BaseHTTPRequestHandler):
    monitor: Monitor
    server_version = "copyjob-monitor"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._answer(action=False)

    def do_POST(self) -> None:
        self._answer(action=True)

    def _answer(self, *, action: bool) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            if not action and self._plain(parts):
                return
            if not parts or parts[0] != "api":
                raise Refused("not found", 404)
            self._check(action)
            query = parse_qs(url.query)
            status, body = self._post(parts[1:]) if action else (HTTPStatus.OK, self._get(parts[1:], query))
            self._json(status, scrub(body))
        except Refused as exc:
            self._json(exc.status, {"error": redact(str(exc))})
        except Exception as exc:  # a bug answers 500 and is logged; the server goes on
            log.exception("monitor: %s %s", self.command, self.path)
            self._json(500, {"error": redact(repr(exc))})

    def _plain(self, parts: list[str]) -> bool:
        """The page, its files, /healthz and /metrics (open to all, see copyjob.monitor.access)."""
        if self._foreign_host():
            self._send(421, b"misdirected request\n", "text/plain")
        elif not parts:
            self._send(200, self.monitor.static["index.html"], _TYPES[".html"])
        elif parts == ["healthz"]:
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif parts == ["metrics"]:
            self._send(200, self.monitor.metrics.exposition(), CONTENT_TYPE)
        elif len(parts) == 2 and parts[0] == "static" and parts[1] in self.monitor.static:
            suffix = "." + parts[1].rpartition(".")[2]
            self._send(200, self.monitor.static[parts[1]], _TYPES.get(suffix, "application/octet-stream"))
        else:
            return False
        return True

    def _foreign_host(self) -> bool:
        """Without a token, only a loopback Host is answered: another site's name pointed at 127.0.0.1 (DNS
        rebinding) gets nothing."""
        if self.monitor.access.reads_need_token:
            return False
        host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        return not Address(host, 0).loopback

    def _check(self, action: bool) -> None:
        if self._foreign_host():
            raise Refused("misdirected request", 421)
        if action and self.headers.get(ACTION_HEADER) != "1":
            raise Refused(f"actions need the header {ACTION_HEADER}: 1", 403)
        token = self.headers.get(TOKEN_HEADER)
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        if not self.monitor.access.allows(token, action=action):
            raise Refused("a token is needed (header X-Copyjob-Token or Authorization: Bearer)", 401)

    def _get(self, parts: list[str], query: dict[str, list[str]]) -> Any:
        m = self.monitor
        match parts:
            case ["info"]:
                return m.info()
            case ["jobs"]:
                return m.jobs_view()
            case ["jobs", job, "runs"]:
                return m.runs_view(job, _limit(query))
            case ["jobs", job, "lag"]:
                return m.lag_view(job)
            case ["runs", run_id]:
                return m.run_view(run_id)
        raise Refused("not found", 404)

    def _post(self, parts: list[str]) -> tuple[int, Any]:
        m = self.monitor
        match parts:
            case ["jobs", job, "run"]:
                return HTTPStatus.ACCEPTED, m.run_now(job)
            case ["jobs", job, "tables", table, "reset"]:
                return HTTPStatus.OK, m.reset(job, table)
        raise Refused("not found", 404)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body, default=str).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _limit(query: dict[str, list[str]]) -> int:
    text = (query.get("limit") or [str(HISTORY_LIMIT)])[0]
    if not text.isdigit() or int(text) < 1:
        raise Refused("limit: a positive number", 400)
    return min(int(text), HISTORY_LIMIT)
