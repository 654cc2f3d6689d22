"""A throwaway Kafka Connect standalone worker with Debezium's connectors, for interoperability tests (no pytest
imports, no Docker).

``start_connect(broker, base_dir)`` fetches the jars from Maven Central when missing (``mvn
dependency:copy-dependencies`` on ``tests/services/kafka_connect/pom.xml`` into ``.cache/kafka-connect/lib``,
git-ignored): Kafka Connect's runtime and JSON converter, Debezium's PostgreSQL source connector and Debezium's
JDBC sink connector. It runs ``org.apache.kafka.connect.cli.ConnectStandalone`` with a worker file only, on a free
127.0.0.1 REST port, and connectors are added and inspected through the REST API (:meth:`KafkaConnect.add`,
:meth:`KafkaConnect.status`, :meth:`KafkaConnect.wait_running`).

Converters are set per connector (``key.converter``/``value.converter`` in its config), so one worker can run a
source without schemas and a sink with them. Waits are for conditions (a task RUNNING, a FAILED trace, the REST
port answering) with generous deadlines, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.services._process import LOG4J_FILE, free_port, log_tail, maven_jars, stop_process
from tests.services.kafka import KafkaBroker

ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "kafka_connect" / "pom.xml"
LIB = Path(os.environ.get("COPYJOB_KAFKA_CONNECT_LIB", ROOT / ".cache" / "kafka-connect" / "lib"))
REQUIRED = ["connect-runtime-*.jar", "debezium-connector-postgres-*.jar", "debezium-connector-jdbc-*.jar",
            "hibernate-agroal-*.jar"]
START_TIMEOUT_S = 180.0
JVM = ["-Xms128m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
LOG4J = LOG4J_FILE + """\
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
logger.hibernate.name = org.hibernate
logger.hibernate.level = WARN
"""


def ensure_jars(lib: Path = LIB) -> Path:
    """Kafka Connect's and Debezium's jars in ``lib``, fetched from Maven Central when missing."""
    return maven_jars(POM, lib, REQUIRED, "Kafka Connect and Debezium")


def jar_version(prefix: str, lib: Path = LIB) -> str | None:
    """The version of the jar named ``<prefix>-<version>.jar`` in ``lib`` (``debezium-connector-postgres``)."""
    for jar in lib.glob(f"{prefix}-*.jar"):
        return jar.name.removeprefix(prefix + "-").removesuffix(".jar")
    return None


@dataclass
class KafkaConnect:
    """One running standalone worker; :meth:`stop` ends it (SIGTERM, then SIGKILL)."""

    work: Path
    rest_port: int
    process: subprocess.Popen[bytes] | None = None
    connectors: list[str] = field(default_factory=list)

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(log_tail(self.work / name, lines) for name in ("connect.out", "connect.log")
                         if (self.work / name).exists())

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.rest + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def add(self, name: str, config: dict[str, str]) -> None:
        """Create connector ``name`` (its ``connector.class`` and settings in ``config``)."""
        self.request("PUT", f"/connectors/{name}/config", {**config, "name": name})
        self.connectors.append(name)

    def delete(self, name: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self.request("DELETE", f"/connectors/{name}")

    def status(self, name: str) -> dict[str, Any]:
        """The REST status of the connector: ``{"connector": {"state"}, "tasks": [{"state", "trace"?}]}``."""
        found: dict[str, Any] = self.request("GET", f"/connectors/{name}/status")
        return found

    def failures(self, name: str) -> list[str]:
        """The traces of the connector's FAILED tasks (and of the connector itself when it failed)."""
        try:
            status = self.status(name)
        except urllib.error.HTTPError:
            return []
        traces = [t.get("trace", "FAILED") for t in status.get("tasks", []) if t.get("state") == "FAILED"]
        if status.get("connector", {}).get("state") == "FAILED":
            traces.append(status["connector"].get("trace", "connector FAILED"))
        return traces

    def wait_running(self, name: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the connector and each of its tasks is RUNNING; raises with the trace when one FAILED."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            failed = self.failures(name)
            if failed:
                raise RuntimeError(f"connector {name} failed:\n{failed[0][:4000]}")
            with contextlib.suppress(urllib.error.URLError, urllib.error.HTTPError, ConnectionError):
                status = self.status(name)
                tasks = status.get("tasks", [])
                if (status.get("connector", {}).get("state") == "RUNNING" and tasks
                        and all(t.get("state") == "RUNNING" for t in tasks)):
                    return
            time.sleep(0.2)
        raise TimeoutError(f"connector {name} not RUNNING after {timeout_s:.0f}s:\n{self.log_tail()}")

    def _check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"Kafka Connect exited:\n{self.log_tail()}")

    def stop(self, *, keep: bool = True) -> None:
        """SIGTERM (connectors stop and flush their offsets), SIGKILL when it does not end in time; with
        ``keep=False`` SIGKILL at once, for a worker whose offsets are thrown away."""
        if self.process is not None:
            stop_process(self.process, 60, signal.SIGTERM if keep else signal.SIGKILL)
            self.process = None


def start_connect(broker: KafkaBroker, base_dir: Path, settings: dict[str, str] | None = None) -> KafkaConnect:
    """A standalone worker on ``broker``, its offsets and logs in ``base_dir``; the REST port answers on return.

    ``settings`` are added to (or replace) the worker's properties. Converters default to JSON without schemas;
    set them per connector to change that.
    """
    lib = ensure_jars()
    base_dir.mkdir(parents=True, exist_ok=True)
    connect = KafkaConnect(work=base_dir, rest_port=free_port())
    worker = {
        "bootstrap.servers": broker.bootstrap,
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": "false",
        "offset.storage.file.filename": str(base_dir / "offsets.dat"),
        "offset.flush.interval.ms": "500",
        "listeners": f"http://127.0.0.1:{connect.rest_port}",
        # plugins found from their ServiceLoader manifests (every jar here has them): a start in less than half
        # the time of scanning every class of the classpath (only_scan)
        "plugin.discovery": "service_load",
        **(settings or {}),
    }
    (base_dir / "worker.properties").write_text("".join(f"{k}={v}\n" for k, v in worker.items()))
    (base_dir / "log4j2.properties").write_text(LOG4J.format(log=base_dir / "connect.log"))
    cmd = ["java", *JVM, f"-Dlog4j2.configurationFile={base_dir / 'log4j2.properties'}", "-cp", f"{lib}/*",
           "org.apache.kafka.connect.cli.ConnectStandalone", str(base_dir / "worker.properties")]
    with (base_dir / "connect.out").open("ab") as out:
        connect.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           cwd=base_dir, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not connect.alive():
            raise RuntimeError(f"Kafka Connect did not start:\n{connect.log_tail()}")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, OSError):
            connect.request("GET", "/connectors")
            return connect
        time.sleep(0.2)
    connect.stop()
    raise TimeoutError(f"Kafka Connect's REST port did not answer in {START_TIMEOUT_S:.0f}s:\n{connect.log_tail()}")
