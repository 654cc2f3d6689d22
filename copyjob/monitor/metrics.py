"""Prometheus metrics of the monitored jobs, in a registry of their own (never prometheus_client's global one).

Counters and histograms count the runs that finished while this process watched (the feed hands each one over
once); gauges tell the current state: last successes (also of runs from before the process started), CDC lag
and quarantined files.

=========================================================  ==========  ===============  =========================
name                                                       type        labels           what
=========================================================  ==========  ===============  =========================
``copyjob_runs_total``                                     counter     job, status      finished runs
``copyjob_rows_read_total``                                counter     job, table       rows read
``copyjob_rows_written_total``                             counter     job, table       rows written
``copyjob_run_duration_seconds``                           histogram   job              a run, start to end
``copyjob_table_duration_seconds``                         histogram   job, table       one table of a run
``copyjob_last_success_timestamp_seconds``                 gauge       job              end of the last ok run
``copyjob_table_last_success_timestamp_seconds``           gauge       job, table       end of the table's last ok
``copyjob_cdc_lag_bytes`` / ``copyjob_cdc_lag_seconds``    gauge       job              the slot's lag
``copyjob_quarantined_files``                              gauge       job, table       files waiting for a fix
``copyjob_failed_tables_total``                            counter     job, table       table copies that failed
``copyjob_dead_letters_total``                             counter     job, table       events dead-lettered
``copyjob_kafka_consumer_lag_messages``                    gauge       job, topic,      apply group's unconsumed
                                                                       partition        messages (kafka:// source:
                                                                                        not in the destination)
=========================================================  ==========  ===============  =========================
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from copyjob.core.contracts import RunRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter("copyjob_runs_total", "Finished runs by job and status.", ["job", "status"],
                            registry=registry)
        self.rows_read = Counter("copyjob_rows_read_total", "Rows read by job and table.", ["job", "table"],
                                 registry=registry)
        self.rows_written = Counter("copyjob_rows_written_total", "Rows written by job and table.",
                                    ["job", "table"], registry=registry)
        self.failed_tables = Counter("copyjob_failed_tables_total", "Table copies that failed.", ["job", "table"],
                                     registry=registry)
        self.dead_letters = Counter("copyjob_dead_letters_total", "Events a kafka apply sent to the table's "
                                    "dead-letter topic.", ["job", "table"], registry=registry)
        self.run_duration = Histogram("copyjob_run_duration_seconds", "Duration of runs.", ["job"],
                                      buckets=DURATION_BUCKETS, registry=registry)
        self.table_duration = Histogram("copyjob_table_duration_seconds", "Duration of one table's copy in a run.",
                                        ["job", "table"], buckets=DURATION_BUCKETS, registry=registry)
        self.last_success = Gauge("copyjob_last_success_timestamp_seconds",
                                  "Unix time the job's last successful run ended.", ["job"], registry=registry)
        self.table_last_success = Gauge("copyjob_table_last_success_timestamp_seconds",
                                        "Unix time of the end of the last run that copied the table successfully.",
                                        ["job", "table"], registry=registry)
        self.lag_bytes = Gauge("copyjob_cdc_lag_bytes", "WAL the source keeps for the job's replication slot.",
                               ["job"], registry=registry)
        self.lag_seconds = Gauge("copyjob_cdc_lag_seconds", "How long ago the destination was last current.",
                                 ["job"], registry=registry)
        self.consumer_lag_messages = Gauge(
            "copyjob_kafka_consumer_lag_messages", "Messages of a partition the job's apply consumer group has "
            "not consumed: the high watermark less the group's committed offset (a kafka:// source: less the "
            "offset the destination's marker holds).", ["job", "topic", "partition"],
            registry=registry)
        self._consumer_labels: dict[str, set[tuple[str, str]]] = {}
        self.quarantined = Gauge("copyjob_quarantined_files", "Files of a file set that could not be read and "
                                 "wait until they change.", ["job", "table"], registry=registry)

    def run_finished(self, job: str, run: RunRecord) -> None:
        """Count a run that ended while the monitor watched (called once per run)."""
        self.runs.labels(job, run.status).inc()
        if run.status == "skipped":
            return
        if run.finished_at is not None:
            self.run_duration.labels(job).observe(max(0.0, (run.finished_at - run.started_at).total_seconds()))
        for t in run.tables:
            if t.status == "skipped":
                continue
            self.rows_read.labels(job, t.table).inc(t.rows_read)
            self.rows_written.labels(job, t.table).inc(t.rows_written)
            self.table_duration.labels(job, t.table).observe(t.duration_s)
            if t.status == "failed":
                self.failed_tables.labels(job, t.table).inc()
            if t.dead_letters is not None:
                self.dead_letters.labels(job, t.table).inc(t.dead_letters)

    def successes(self, job: str, runs: list[RunRecord]) -> None:
        """Set the last-success gauges from the runs in the history (newest first)."""
        ok = next((r for r in runs if r.status == "ok" and r.finished_at), None)
        if ok is not None and ok.finished_at is not None:
            self.last_success.labels(job).set(ok.finished_at.timestamp())
        seen: set[str] = set()
        for run in runs:
            for t in run.tables:
                if t.table not in seen and t.status == "ok" and run.finished_at is not None:
                    seen.add(t.table)
                    self.table_last_success.labels(job, t.table).set(run.finished_at.timestamp())

    def job_view(self, view: dict[str, Any]) -> None:
        """The gauges the feed's job view carries (quarantined files per table)."""
        for table in view["tables"]:
            self.quarantined.labels(view["job"], table["table"]).set(table["quarantined_files"])

    def lag(self, job: str, info: dict[str, Any]) -> None:
        for gauge, key in ((self.lag_bytes, "lag_bytes"), (self.lag_seconds, "lag_seconds")):
            value = info.get(key)
            if value is None:  # unknown (source unreachable, no slot yet): no sample rather than a stale one
                gauge.remove(job)
            else:
                gauge.labels(job).set(float(value))

    def consumer_lag(self, job: str, info: dict[str, Any]) -> None:
        """Set the per-partition gauges from a sample; partitions no longer read (or all, when the broker did
        not answer) lose their sample rather than keep a stale one."""
        now = {(p["topic"], str(p["partition"])): float(p["lag"]) for p in info["partitions"]}
        for topic, partition in self._consumer_labels.get(job, set()) - now.keys():
            self.consumer_lag_messages.remove(job, topic, partition)
        for (topic, partition), lag in now.items():
            self.consumer_lag_messages.labels(job, topic, partition).set(lag)
        self._consumer_labels[job] = set(now)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
