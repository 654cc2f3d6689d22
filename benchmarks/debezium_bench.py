"""Debezium's PostgreSQL connector against copyjob on the CDC benchmark's workload, into the same Kafka broker.

    .venv/bin/python -m benchmarks.debezium_bench [--rows 1000000] [--txn-rows 1000] [--updates 200000]
                                                  [--skip-copyjob-direct] [--skip-copyjob-kafka]
    .venv/bin/python -m benchmarks.run --debezium          (the same, from the main benchmark script)

One throwaway PostgreSQL 15 (tests/services/postgres.py) and one Kafka 4.4 broker (tests/services/kafka.py).
The workload is benchmarks/cdc_bench.py's: ``--rows`` inserts in ``--txn-rows``-row transactions, and
separately ``--updates`` single-row UPDATE transactions over 100,000 existing rows.

1. *Debezium* 3.6 (``io.debezium.connector.postgresql.PostgresConnector``, pgoutput, JSON without schemas) in
   a Kafka Connect standalone worker (``ConnectStandalone``, jars from Maven Central with
   ``benchmarks/debezium/pom.xml`` into the git-ignored ``.cache/debezium/lib``; worker and connector settings
   from ``benchmarks/debezium/*.properties``), ``snapshot.mode=no_data`` so only streaming is measured:
   - *live*: once a marker row's event is in the topic (streaming has started), the workload is committed
     while the connector runs; time from the first statement until the topic's end offsets (summed over its
     partitions) hold one event per change. Bound below by the source's own commit time (reported too).
   - *backlog* (like cdc_bench, which catches up on changes committed while no capture runs): the worker is
     stopped after the marker, the workload committed, the worker started again; time from the JVM's launch
     (and, separately, from the first new event) until every event is in the topic.
   The JVM's peak RSS is sampled every 0.2 s; live runs also report the JVM's CPU (every thread) per change
   from streaming's start to the last event: on a loaded machine a rate depends on the CPU share each process
   gets (a JVM's many threads get more of it than one Python process), CPU per change does much less.
2. *copyjob, capture to Kafka* (``mode: cdc`` + ``transport: kafka``, ``format: json`` or ``--format``;
   ``debezium`` without schemas, as the Debezium side writes; 3 partitions like the Debezium topic): a first
   ``copyjob capture`` creates the slot, the workload is committed, a second ``copyjob capture`` catches up
   (backlog): time of that process until it exits, its peak RSS, and the events it added to the topic, and
   its CPU per change (the whole process: start, imports and connections too).
3. *copyjob, direct* PostgreSQL → PostgreSQL: benchmarks/cdc_bench.py's throughput scenarios, run here
   (decode, fold, merge into the destination).

Prints a markdown table (changes/s, ratio copyjob ÷ Debezium) and writes ``benchmarks/results/debezium.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from benchmarks.cdc_bench import GENERATE, TABLE, database, sql
from benchmarks.kafka_bench import KAFKA_CLI, watch
from tests.services._process import free_port, maven_jars
from tests.services.kafka import KafkaBroker, start_kafka
from tests.services.kafka_connect import LOG4J
from tests.services.postgres import PASSWORD, SUPERUSER, PostgresServer, start_postgres

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "debezium"
POM = HERE / "pom.xml"
LIB = Path(os.environ.get("COPYJOB_DEBEZIUM_LIB", ROOT / ".cache" / "debezium" / "lib"))
RESULTS = ROOT / "benchmarks" / "results" / "debezium.json"
SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min"}
PARTITIONS = 3
# kafka-run-class.sh's defaults for connect-standalone.sh: heap 256 MB .. 2 GB, G1
JVM = ["-Xms256m", "-Xmx2g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
       "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true"]
MARKER = "INSERT INTO bench (id, v, note) VALUES (-1, 0, 'marker')"


def say(message: str) -> None:
    print(f"[debezium-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_jars(lib: Path = LIB) -> Path:
    """Debezium's and Kafka Connect's jars in ``lib``, fetched from Maven Central when missing."""
    return maven_jars(POM, lib, ["debezium-connector-postgres-*.jar", "connect-runtime-*.jar"], "Debezium's")


def jar_version(prefix: str) -> str | None:
    for jar in LIB.glob(f"{prefix}-*.jar"):
        return jar.name.removeprefix(prefix + "-").removesuffix(".jar")
    return None


# ---------------------------------------------------------------- Kafka


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def end_offsets(bootstrap: str, topic: str) -> int:
    """The topic's end offsets summed over its partitions (0 when it does not exist yet)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "debezium-bench", "log_level": 0})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions)
    finally:
        consumer.close()


class Offsets:
    """Polls a topic's summed end offsets with one long-lived consumer."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "debezium-bench", "log_level": 0})
        self.partitions: list[int] = []

    def total(self) -> int:
        from confluent_kafka import TopicPartition

        if not self.partitions:
            meta = self.consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if meta is None or meta.error is not None:
                return 0
            self.partitions = sorted(meta.partitions)
        return sum(self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10, cached=False)[1]
                   for p in self.partitions)

    def wait_for(self, target: int, timeout_s: float, alive: Callable[[], bool] = lambda: True,
                 first_above: int | None = None) -> tuple[float, float | None]:
        """Poll until the total reaches ``target``: (monotonic time it did, time it first exceeded
        ``first_above``)."""
        deadline = time.monotonic() + timeout_s
        first: float | None = None
        while True:
            now = time.monotonic()
            total = self.total()
            if first_above is not None and first is None and total > first_above:
                first = now
            if total >= target:
                return now, first
            if now > deadline:
                raise TimeoutError(f"{self.topic}: {total:,} of {target:,} events after {timeout_s:.0f}s")
            if not alive():
                raise RuntimeError(f"the capturing process exited; {self.topic} holds {total:,} of {target:,}")
            time.sleep(0.05)

    def close(self) -> None:
        self.consumer.close()


# ---------------------------------------------------------------- Debezium


@dataclass
class Worker:
    """One Kafka Connect standalone worker running Debezium's connector."""

    work: Path
    process: subprocess.Popen[bytes] | None = None
    peak: dict[str, float] | None = None
    launched: float = 0.0

    def start(self) -> None:
        log = (self.work / "connect.out").open("ab")
        cmd = ["java", *JVM, f"-Dlog4j2.configurationFile={self.work / 'log4j2.properties'}",
               "-cp", f"{LIB}/*", "org.apache.kafka.connect.cli.ConnectStandalone",
               str(self.work / "worker.properties"), str(self.work / "connector.properties")]
        self.launched = time.monotonic()
        try:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=self.work, start_new_session=True)
        finally:
            log.close()
        peak = watch(self.process)  # type: ignore[arg-type]  # any Popen: only pid and poll() are used
        if self.peak is None:
            self.peak = peak
        else:  # a restart: keep the highest of both runs
            previous = self.peak

            def merged() -> None:
                while self.process is not None and self.process.poll() is None:
                    previous["rss_mb"] = max(previous["rss_mb"], peak["rss_mb"])
                    time.sleep(0.2)

            threading.Thread(target=merged, daemon=True).start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_s(self) -> float:
        """CPU seconds (user + system, every thread) the JVM has used so far."""
        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM: the worker stops the task and flushes its offsets; SIGKILL when it takes too long."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("connect.out", "connect.log"):
            path = self.work / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text


def fill(template: str, target: Path, **values: Any) -> None:
    target.write_text(string.Template((HERE / template).read_text()).substitute(values))


def wait_slot_active(url: str, slot: str, worker: Worker, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = sql(url, f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'")
        if row and row[0]:
            return
        if not worker.alive():
            raise RuntimeError(f"Kafka Connect exited while starting:\n{worker.log_tail()}")
        time.sleep(0.2)
    raise TimeoutError(f"slot {slot} not active after {timeout_s:.0f}s:\n{worker.log_tail()}")


def debezium(pg: PostgresServer, broker: KafkaBroker, tmp: Path, name: str, prepare: str, workload: str,
             changes: int, backlog: bool, timeout_s: float, extra: dict[str, str]) -> dict[str, Any]:
    """One Debezium scenario: ``prepare`` runs before the connector starts (not captured: no snapshot);
    ``extra`` connector settings are added to benchmarks/debezium/postgres-connector.properties."""
    label = f"dbz_{name}_{'backlog' if backlog else 'live'}"
    url = database(pg.url(), label)
    sql(url, TABLE, GENERATE, prepare)
    topic = f"{label}.public.bench"
    create_topic(broker.bootstrap, topic)
    work = tmp / label
    work.mkdir()
    fill("worker.properties", work / "worker.properties", bootstrap=broker.bootstrap,
         offsets=work / "offsets.dat", rest_port=free_port())
    fill("postgres-connector.properties", work / "connector.properties", name=label, port=pg.port, user=SUPERUSER,
         password=PASSWORD, dbname=label, prefix=label, slot=label)
    with (work / "connector.properties").open("a") as props:
        props.writelines(f"{key}={value}\n" for key, value in extra.items())
    (work / "log4j2.properties").write_text(LOG4J.format(log=work / "connect.log"))
    worker = Worker(work)
    offsets = Offsets(broker.bootstrap, topic)
    result: dict[str, Any] = {"changes": changes, "mode": "backlog" if backlog else "live"}
    try:
        worker.start()
        wait_slot_active(url, label, worker)
        sql(url, MARKER)
        offsets.wait_for(1, 120, worker.alive)  # the marker's event: streaming has started
        result["startup_to_streaming_s"] = round(time.monotonic() - worker.launched, 2)
        base = offsets.total()
        cpu_before = worker.cpu_s()
        if backlog:
            worker.stop()
            started = time.monotonic()
            sql(url, workload)
            result["source_commit_s"] = round(time.monotonic() - started, 2)
            worker.start()
            done, first = offsets.wait_for(base + changes, timeout_s, worker.alive, first_above=base)
            seconds = done - worker.launched
            assert first is not None
            result["from_first_event_s"] = round(done - first, 2)
            result["changes_per_s_from_first_event"] = round(changes / max(done - first, 1e-6))
        else:
            committed: dict[str, float] = {}

            def commit() -> None:
                sql(url, workload)
                committed["at"] = time.monotonic()

            started = time.monotonic()
            writer = threading.Thread(target=commit, daemon=True)
            writer.start()
            done, _ = offsets.wait_for(base + changes, timeout_s, worker.alive)
            writer.join()
            seconds = done - started
            result["source_commit_s"] = round(committed["at"] - started, 2)
            result["drain_after_commit_s"] = round(max(0.0, done - committed["at"]), 2)
            result["cpu_us_per_change"] = round((worker.cpu_s() - cpu_before) / changes * 1e6, 1)
        time.sleep(1)
        result["events"] = offsets.total() - base
        result.update(seconds=round(seconds, 2), changes_per_s=round(changes / seconds))
    finally:
        offsets.close()
        worker.stop()
        result["peak_rss_mb"] = round(worker.peak["rss_mb"]) if worker.peak else None
        with_slot = sql(pg.url(), f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{label}'")
        if with_slot and with_slot[0]:
            sql(pg.url(), f"SELECT pg_drop_replication_slot('{label}')")
        sql(pg.url(), f"DROP DATABASE IF EXISTS {label} WITH (FORCE)")
    say(f"  {label}: {result}")
    return result


# ---------------------------------------------------------------- copyjob → Kafka


def copyjob_kafka(pg: PostgresServer, broker: KafkaBroker, tmp: Path, name: str, prepare: str, workload: str,
                  changes: int, timeout_s: float, fmt: str = "json") -> dict[str, Any]:
    """``copyjob capture`` of a ``mode: cdc`` + ``transport: kafka`` job: catch-up time of the backlog."""
    label = f"cj_{name}"
    url = database(pg.url(), label)
    dst = database(pg.url(), f"{label}_dst")  # the job names one; capture does not write there
    sql(url, TABLE, GENERATE, prepare)
    job = tmp / f"{label}.yaml"
    job.write_text(yaml.safe_dump({
        "job": label, "source": {"url": url}, "destination": {"url": dst},
        "copy": {"mode": "cdc", "update_method": "merge"}, "tables": [{"name": "public.bench"}],
        "transport": "kafka",
        "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": label, "format": fmt,
                  "partitions": PARTITIONS,
                  # what Debezium writes here (JsonConverter without schemas)
                  **({"debezium": {"schemas": False}} if fmt == "debezium" else {})}}))
    topic = f"{label}.public.bench"

    def capture() -> dict[str, Any]:
        import resource

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", KAFKA_CLI, "capture", str(job)], cwd=tmp, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        peak = watch(proc)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(f"copyjob capture failed ({proc.returncode}): {(out + err).strip()[-1500:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the capture process, reaped by communicate()
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        return {"seconds": seconds, "peak_rss_mb": round(peak["rss_mb"]), "cpu_s": cpu}

    try:
        capture()  # the snapshot (published as op r) and the slot the changes below are read from
        base = end_offsets(broker.bootstrap, topic)
        started = time.monotonic()
        sql(url, workload)
        source_commit = time.monotonic() - started
        run = capture()
        events = end_offsets(broker.bootstrap, topic) - base
        result = {"changes": changes, "mode": "backlog", "source_commit_s": round(source_commit, 2),
                  "seconds": round(run["seconds"], 2), "changes_per_s": round(changes / run["seconds"]),
                  "events": events, "peak_rss_mb": run["peak_rss_mb"],
                  "cpu_us_per_change": round(run["cpu_s"] / changes * 1e6, 1)}
    finally:
        slot = sql(pg.url(), f"SELECT slot_name FROM pg_replication_slots WHERE database = '{label}'")
        if slot:
            sql(pg.url(), f"SELECT pg_drop_replication_slot('{slot[0]}')")
        for db in (label, f"{label}_dst"):
            sql(pg.url(), f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    say(f"  {label}: {result}")
    return result


# ---------------------------------------------------------------- report




def guarded(report: dict[str, Any], key: str, step: Callable[[], dict[str, Any]]) -> None:
    say(f"{key} …")
    try:
        report[key] = step()
    except Exception as exc:  # one failing scenario does not lose the others
        report[key] = {"error": f"{type(exc).__name__}: {exc}"[-3000:]}
        say(f"  {key} FAILED: {report[key]['error']}")


def table(report: dict[str, Any], rows: int, txn_rows: int, updates: int) -> str:
    """One line per tool and scenario; copyjob's lines divided by Debezium's live rate and by its backlog rate
    from the first new event (the JVM's start left out)."""
    scenarios = {"inserts": f"{rows:,} inserts in {txn_rows:,}-row txns", "updates": f"{updates:,} single-row updates"}
    lines = ["| tool | scenario | how | changes/s | peak RSS MB | CPU µs/change | copyjob ÷ Debezium live | "
             "copyjob ÷ Debezium backlog (from 1st event) |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for scenario, text in scenarios.items():
        live = report.get(f"debezium_{scenario}_live", {}).get("changes_per_s")
        backlog = report.get(f"debezium_{scenario}_backlog", {}).get("changes_per_s_from_first_event")
        for key, tool, how in (
                (f"debezium_{scenario}_live", "Debezium 3.6 → Kafka", "live: committed while streaming"),
                (f"debezium_{scenario}_backlog", "Debezium 3.6 → Kafka", "backlog: from JVM launch"),
                (f"copyjob_kafka_{scenario}", "copyjob capture → Kafka", "backlog: from process start"),
                (f"copyjob_direct_{scenario}", "copyjob PG → PG (direct, merge)", "backlog: `copyjob run`")):
            entry = report.get(key)
            if entry is None:
                continue
            if "error" in entry:
                lines.append(f"| {tool} | {text} | {how} | failed | - | - | - | - |")
                continue
            rate = entry["changes_per_s"]
            rss = entry.get("peak_rss_mb")
            rss_text = str(rss) if rss is not None else "-"
            cpu = entry.get("cpu_us_per_change")
            rss_text += f" | {cpu}" if cpu is not None else " | -"
            if key.startswith("copyjob"):
                ratios = [f"{rate / base:.2f}×" if base else "-" for base in (live, backlog)]
            else:
                ratios = ["-", "-"]
            lines.append(f"| {tool} | {text} | {how} | {rate:,.0f} | {rss_text} | {' | '.join(ratios)} |")
            if key.endswith("_backlog") and "changes_per_s_from_first_event" in entry:
                lines.append(f"| {tool} | {text} | backlog: from its first new event | "
                             f"{entry['changes_per_s_from_first_event']:,.0f} | {rss_text} | - | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.debezium_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--txn-rows", type=int, default=1_000)
    p.add_argument("--updates", type=int, default=200_000)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for one scenario's events")
    p.add_argument("--skip-backlog", action="store_true", help="only Debezium's live runs")
    p.add_argument("--skip-copyjob-kafka", action="store_true")
    p.add_argument("--skip-copyjob-direct", action="store_true")
    p.add_argument("--format", choices=["json", "avro", "debezium"], default="json",
                   help="copyjob's kafka.format (debezium: without schemas, as the Debezium side writes)")
    p.add_argument("--connector-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra Debezium connector setting (repeatable), e.g. statistics.metrics.enabled=false")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, properties, jobs)")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    extra = dict(setting.split("=", 1) for setting in args.connector_setting)
    ensure_jars()
    tmp = Path(tempfile.mkdtemp(prefix="copyjob-debezium-bench-"))
    report: dict[str, Any] = {
        "rows": args.rows, "txn_rows": args.txn_rows, "updates": args.updates, "cpus": os.cpu_count(),
        "copyjob_format": args.format,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {"debezium": jar_version("debezium-connector-postgres"),
                     "kafka_connect": jar_version("connect-runtime"), "postgresql_jdbc": jar_version("postgresql")},
        "debezium_extra_settings": extra}
    workloads = {
        "inserts": ("SELECT 1", f"CALL generate({args.rows}, {args.txn_rows})", args.rows),
        "updates": ("CALL generate(100000, 10000)", f"CALL update_each({args.updates}, 1)", args.updates)}
    pg = broker = None
    try:
        pg = start_postgres(tmp / "pg", settings=SETTINGS)
        broker = start_kafka(tmp / "kafka", heap="1g")
        report["postgres"] = sql(pg.url(), "SHOW server_version")[0]
        say(f"PostgreSQL {report['postgres']} on {pg.port}, Kafka on {broker.bootstrap}; working in {tmp}")
        for scenario, (prepare, workload, changes) in workloads.items():
            for backlog in (False, True):
                if backlog and args.skip_backlog:
                    continue
                mode = "backlog" if backlog else "live"
                guarded(report, f"debezium_{scenario}_{mode}", functools.partial(
                    debezium, pg, broker, tmp, scenario, prepare, workload, changes, backlog, args.timeout, extra))
            if not args.skip_copyjob_kafka:
                guarded(report, f"copyjob_kafka_{scenario}", functools.partial(
                    copyjob_kafka, pg, broker, tmp, scenario, prepare, workload, changes, args.timeout,
                    args.format))
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if not args.skip_copyjob_direct:
        guarded(report, "copyjob_direct", lambda: copyjob_direct(args))
        direct = report["copyjob_direct"]
        if "error" not in direct:
            report["copyjob_direct_inserts"] = {"mode": "backlog", **direct["transactions"]}
            report["copyjob_direct_updates"] = {"mode": "backlog", **direct["single_row_updates"]}
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str))
    print(table(report, args.rows, args.txn_rows, args.updates))
    print(f"\nload average {report['load_average_at_start']} → {report['load_average_at_end']} on "
          f"{report['cpus']} CPUs; wrote {args.output}")
    return 0


def copyjob_direct(args: argparse.Namespace) -> dict[str, Any]:
    """benchmarks/cdc_bench.py's two throughput scenarios on their own server (its latency run is skipped)."""
    from benchmarks import cdc_bench

    work = Path(tempfile.mkdtemp(prefix="copyjob-cdc-bench-"))
    server = start_postgres(work / "pg", settings=cdc_bench.SETTINGS)
    try:
        base = server.url()
        out = {"transactions": cdc_bench.throughput(base, work, "txns", f"CALL generate({args.rows}, "
                                                    f"{args.txn_rows})", args.rows),
               "single_row_updates": cdc_bench.throughput(base, work, "updates", f"CALL update_each("
                                                          f"{args.updates}, 1)", args.updates)}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    for entry in out.values():
        entry["seconds"] = round(entry["seconds"], 2)
        entry["changes_per_s"] = round(entry["changes_per_s"])
    return out


if __name__ == "__main__":
    sys.exit(main())
